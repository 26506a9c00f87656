//! A child that talks both ways on one fd: a socket pair at fd 3, answered line by line.
//! Run with `cargo run --example duplex`.

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event};

/// Answers every line it reads on fd 3 on fd 3, until the end of its input.
const SCRIPT: &str = r#"
while read -r line <&3; do
    echo "echo: $line" >&3
done
echo "fd 3 reached its end" >&2
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT])
        .fd(3, ChildFd::Duplex)
        .spawn()?;
    child.write(3, "hello\n")?;

    while let Some(event) = child.next().await {
        match event {
            Event::Data { fd: 3, data } => {
                let answer = String::from_utf8_lossy(&data);
                print!("[fd 3] {answer}");
                // Each answer brings the next line; the last one closes both directions.
                if answer.contains("echo: hello") {
                    child.write(3, "bye\n")?;
                } else if answer.contains("echo: bye") {
                    child.close_child_fd(3)?;
                }
            }
            Event::Data { fd, data } => print!("[fd {fd}] {}", String::from_utf8_lossy(&data)),
            Event::Closed { fd, reason } => println!("fd {fd} closed: {reason:?}"),
            Event::Ended(status) => println!("ended: {}", status?),
            _ => {}
        }
    }
    Ok(())
}
