//! Drives an interactive `sh -i` on a pseudo-terminal, the way a terminal emulator or an
//! `expect` script would: send a command, read until the prompt comes back, repeat, then
//! `exit`. Runs by itself and prints the transcript. Run with
//! `cargo run --example pty_shell`.
//!
//! The terminal's output (echo of what we type, the commands' output and the prompts, all
//! with `\r\n` line ends) arrives as `Data` events on child fd 1. Input goes to the master
//! through child fd 0; here it is taken out as an `AsyncWrite` handle so that ordinary
//! `tokio::io` writes can be used.

use std::time::Duration;

use futures::StreamExt;
use process_transport::{Command, Event, ProcessTransport, PtySize};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const PROMPT: &str = "demo$ ";

/// Reads terminal output until it ends with the prompt; returns what was read.
async fn read_until_prompt(shell: &mut ProcessTransport) -> Result<String, String> {
    let mut out = String::new();
    let read = async {
        while let Some(event) = shell.next().await {
            match event {
                Event::Data { fd: 1, data } => {
                    out.push_str(&String::from_utf8_lossy(&data));
                    if out.ends_with(PROMPT) {
                        return Ok(());
                    }
                }
                Event::Ended(status) => return Err(format!("shell ended early: {status:?}")),
                _ => {}
            }
        }
        Err("stream ended".to_string())
    };
    match timeout(Duration::from_secs(10), read).await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(format!("{e}; output so far: {out:?}")),
        Err(_) => Err(format!("no prompt within 10 s; output so far: {out:?}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut shell = Command::new("sh")
        .arg("-i")
        .env("PS1", PROMPT)
        .env_remove("ENV")
        .pty(PtySize {
            rows: 30,
            cols: 100,
        })
        // If anything below fails, do not leave the shell behind.
        .kill_on_drop(true)
        .spawn()?;
    let mut input = shell.take_writer(0)?;
    let mut transcript = read_until_prompt(&mut shell).await?;

    for command in [
        "echo \"hello from $0, TERM=$TERM\"",
        "stty size",
        "test -t 0 && echo 'stdin is a terminal'",
        "for i in 1 2 3; do printf '%s ' $i; done; echo",
        "false || echo \"last status: $?\"",
    ] {
        input.write_all(format!("{command}\n").as_bytes()).await?;
        transcript.push_str(&read_until_prompt(&mut shell).await?);
    }

    // Leave: the shell exits, the terminal reports EIO (a clean close), and once the input
    // handle is gone too the transport ends.
    input.write_all(b"exit\n").await?;
    drop(input);
    let status = timeout(Duration::from_secs(10), async {
        let mut status = None;
        while let Some(event) = shell.next().await {
            match event {
                Event::Data { fd: 1, data } => transcript.push_str(&String::from_utf8_lossy(&data)),
                Event::Ended(s) => status = Some(s),
                _ => {}
            }
        }
        status
    })
    .await?
    .ok_or("no Ended event")??;

    println!("----- transcript -----");
    print!("{}", transcript.replace("\r\n", "\n"));
    println!("\n----- shell {status} -----");
    assert!(transcript.contains("stdin is a terminal"));
    assert!(transcript.contains("30 100"));
    if !status.success() {
        return Err(format!("shell failed: {status}").into());
    }
    Ok(())
}
