//! Collecting a child's output the service way: every fd it writes (not just 1 and 2), a cap
//! per fd, a deadline that stops the whole process group gracefully and still returns what
//! was read, and a handle that stops a child from another task while its events are read.
//! Run with `cargo run --example collect`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event, KillTarget};

/// A job that reports progress on fd 3, logs on 2, writes results on 1, starts a helper in
/// its group, and would run for a minute.
const JOB: &str = r#"
sleep 60 &
echo "helper $!" >&2
for step in 1 2 3; do
    echo "result $step"
    echo "progress $step/100" >&3
    sleep 0.1
done
sleep 60
"#;

fn show(name: &str, bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {name}: {line}");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A deadline that keeps partial output. The group is the kill target, so the helper
    //    the job started goes too.
    let started = Instant::now();
    let out = Command::new("sh")
        .args(["-c", JOB])
        .fd(3, ChildFd::ParentReads)
        .kill_target(KillTarget::Group)
        .timeout(Duration::from_secs(1))
        .timeout_grace(Duration::from_secs(2))
        .output()
        .await?;
    println!(
        "job: {} after {:.1?}, timed out: {}",
        out.status,
        started.elapsed(),
        out.timed_out
    );
    show("fd 1", out.stdout());
    show("fd 2", out.stderr());
    show("fd 3", out.fd(3));
    assert!(out.timed_out);

    // 2. A cap: a chatty child keeps running to its end, only the first bytes are kept.
    let out = Command::new("sh")
        .args(["-c", "seq 1 1000000; echo done >&2"])
        .output_limit(20)
        .output()
        .await?;
    println!(
        "chatty: {}; kept {:?}, dropped {} bytes of fd 1; fd 2: {:?}",
        out.status,
        String::from_utf8_lossy(out.stdout()),
        out.truncated.get(&1).copied().unwrap_or(0),
        String::from_utf8_lossy(out.stderr()),
    );
    assert!(out.status.success());

    // 3. A handle: one task reads the events, another decides when the child stops.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap 'echo stopping; exit 0' TERM; echo serving; while :; do sleep 0.05; done",
        ])
        .spawn()?;
    let handle = child.handle();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Some(event) = child.next().await {
            match event {
                Event::Data { data, .. } => {
                    print!("    server: {}", String::from_utf8_lossy(&data));
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                Event::Ended(status) => println!("    server ended: {status:?}"),
                _ => {}
            }
        }
    });
    ready_rx.await?;
    println!(
        "server pid {:?}, running: {}",
        handle.pid(),
        handle.try_status()?.is_none()
    );
    let status = handle.terminate(Duration::from_secs(5)).await?;
    reader.await?;
    println!("server: {status}");
    assert!(status.success());
    Ok(())
}
