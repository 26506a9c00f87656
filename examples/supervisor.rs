//! A small supervisor: starts two workers, each in a process group of its own, lets them run,
//! stops them with `terminate(grace)` (SIGTERM, then SIGKILL once the grace is over), sweeps
//! whatever they left behind in their group, and reports what each one cost (CPU time and
//! peak memory, from `wait4`). Run with `cargo run --example supervisor`.
//!
//! - `polite` handles SIGTERM: it cleans up and exits 0 well within the grace.
//! - `stubborn` ignores SIGTERM, so it is killed when the grace runs out.
//!
//! Both start a helper process (`sleep`) that stays in their group; `signal_group` stops it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{Command, Event, ProcessTransport};
use tokio::time::timeout;

const POLITE: &str = r#"
trap 'rm -f "$tmp"; exit 0' TERM
tmp=$(mktemp)
i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done   # some CPU work
sleep 30 &                                           # a helper in our group
echo ready
wait
"#;

const STUBBORN: &str = r#"
trap '' TERM
sleep 30 &
echo ready
while :; do sleep 0.1; done
"#;

/// Reads the worker's output until it says "ready", echoing it.
async fn until_ready(name: &str, worker: &mut ProcessTransport) -> Result<(), String> {
    let mut out = String::new();
    let read = async {
        while let Some(event) = worker.next().await {
            if let Event::Data { data, .. } = event {
                out.push_str(&String::from_utf8_lossy(&data));
                if out.contains("ready\n") {
                    return true;
                }
            }
        }
        false
    };
    match timeout(Duration::from_secs(10), read).await {
        Ok(true) => {
            println!("[{name}] ready");
            Ok(())
        }
        _ => Err(format!("[{name}] never got ready: {out:?}")),
    }
}

async fn supervise(name: &'static str, script: &str, grace: Duration) -> Result<(), String> {
    let mut worker = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("[{name}] spawn: {e}"))?;
    let pgid = worker
        .process_group()
        .expect("spawned with a process group");
    println!(
        "[{name}] pid {} in process group {pgid}",
        worker.spawned_pid()
    );

    until_ready(name, &mut worker).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    println!("[{name}] terminate, grace {grace:?}");
    let started = Instant::now();
    let status = worker
        .terminate(grace)
        .await
        .map_err(|e| format!("[{name}] terminate: {e}"))?;
    let took = started.elapsed();

    // Like `wait`, `terminate` discards output that arrives meanwhile: a supervisor that
    // wants the last words reads events instead. The worker is gone; its helper may not
    // be. Stop the whole group, then let the stream finish (it ends once the helper has
    // closed the pipes it inherited).
    match worker.signal_group(libc::SIGKILL) {
        Ok(()) => println!("[{name}] swept the rest of group {pgid}"),
        Err(e) => println!("[{name}] nothing left in group {pgid} ({e})"),
    }
    timeout(Duration::from_secs(10), async {
        while let Some(event) = worker.next().await {
            if let Event::Ended(_) = event {
                println!("[{name}] ended: pipes closed, child reaped");
            }
        }
    })
    .await
    .map_err(|_| format!("[{name}] pipes still open after the sweep"))?;

    let usage = status.resource_usage();
    println!(
        "[{name}] {status} after {took:.2?}; cpu user {:?} sys {:?}; max rss {} KiB",
        usage.user_time,
        usage.system_time,
        usage.max_rss_bytes / 1024
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let (polite, stubborn) = tokio::join!(
        supervise("polite", POLITE, Duration::from_secs(2)),
        supervise("stubborn", STUBBORN, Duration::from_millis(500)),
    );
    polite?;
    stubborn?;
    Ok(())
}
