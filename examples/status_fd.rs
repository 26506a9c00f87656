//! A child that writes its output on fd 1 and progress reports on fd 3, consumed as a stream
//! of events. Run with `cargo run --example status_fd`.

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event};

const SCRIPT: &str = r#"
for step in 1 2 3; do
    echo "working on step $step"
    echo "progress $step/3" >&3
done
echo "done" >&3
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT])
        .fd(3, ChildFd::ParentReads)
        .spawn()?;
    println!("spawned pid {}", child.spawned_pid());

    while let Some(event) = child.next().await {
        match event {
            Event::Data { fd: 1, data } => print!("[stdout] {}", String::from_utf8_lossy(&data)),
            Event::Data { fd: 3, data } => print!("[status] {}", String::from_utf8_lossy(&data)),
            Event::Data { fd, data } => print!("[fd {fd}] {}", String::from_utf8_lossy(&data)),
            Event::Closed { fd, reason } => println!("fd {fd} closed: {reason:?}"),
            Event::Exited(status) => println!("exited: {status:?}"),
            Event::Ended(status) => println!("ended: {}", status?),
            _ => {}
        }
    }
    Ok(())
}
