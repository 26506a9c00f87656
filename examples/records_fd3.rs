//! Line-delimited records on an extra fd, read through a tokio-util codec, while stdout is
//! consumed as events. Run with `cargo run --example records_fd3`.

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event};
use tokio_util::codec::{FramedRead, LinesCodec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Like `gpg --status-fd 3`: machine-readable status lines on fd 3, text on stdout.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "for n in 1 2 3; do echo \"[STATUS] STEP $n\" >&3; echo \"human text $n\"; done; \
             echo '[STATUS] DONE' >&3",
        ])
        .fd(3, ChildFd::ParentReads)
        .spawn()?;

    let mut status_lines = FramedRead::new(child.take_reader(3)?, LinesCodec::new());
    let records = tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(line) = status_lines.next().await {
            records.push(line?);
        }
        Ok::<_, tokio_util::codec::LinesCodecError>(records)
    });

    while let Some(event) = child.next().await {
        match event {
            Event::Data { fd: 1, data } => print!("stdout: {}", String::from_utf8_lossy(&data)),
            Event::Ended(status) => println!("ended: {}", status?),
            _ => {}
        }
    }
    for record in records.await?? {
        println!("record: {record}");
    }
    Ok(())
}
