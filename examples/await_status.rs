//! The simplest style: spawn and await the exit status. Output the child writes to its pipes
//! is read and discarded, so a chatty child never blocks; stdin is closed. Run with
//! `cargo run --example await_status`.

use process_transport::{ChildFd, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `.await` on the transport itself.
    let status = Command::new("sh")
        .args(["-c", "seq 1 100000; echo 'to stderr' >&2; exit 3"])
        .spawn()?
        .await?;
    println!("sh: {status} (code {:?})", status.code());
    assert_eq!(status.code(), Some(3));

    // A child with no pipes at all: every fd it has is /dev/null.
    let status = Command::new("true")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .spawn()?
        .await?;
    println!("true: {status}, success: {}", status.success());
    assert!(status.success());

    // `wait()` keeps the transport, so its pid and group can still be asked for afterwards;
    // the status carries what the child cost.
    let mut busy = Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done"])
        .spawn()?;
    println!("busy child pid {}", busy.spawned_pid());
    let status = busy.wait().await?;
    let usage = status.resource_usage();
    println!(
        "busy: {status}; user {:?}, system {:?}, max rss {} KiB; pid now {:?}",
        usage.user_time,
        usage.system_time,
        usage.max_rss_bytes / 1024,
        busy.pid()
    );

    // A child killed by a signal.
    let mut sleeper = Command::new("sleep").arg("30").spawn()?;
    sleeper.signal(libc::SIGTERM)?;
    let status = sleeper.wait().await?;
    println!("sleep: {status} (signal {:?})", status.signal());
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    Ok(())
}
