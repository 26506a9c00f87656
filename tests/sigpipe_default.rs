//! The parent is never killed by SIGPIPE, even in a host where SIGPIPE is at its default
//! action (Rust binaries ignore it; C hosts and `#[unix_sigpipe]` users may not). Its own test
//! binary, because it changes a process-wide disposition.

use std::time::Duration;

use futures::StreamExt;
use process_transport::{CloseReason, Command, Event};

#[tokio::test]
async fn writing_to_a_closed_pipe_with_sigpipe_at_default_returns_epipe() {
    // SAFETY: setting a standard signal's disposition; no other test runs in this binary.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);

    let mut child = Command::new("sh")
        .args(["-c", "read line; exec 0<&-; sleep 2"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut data = b"one line\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 1 << 20));
    child.write(0, data).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::Closed { fd: 0, reason } = child.next().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    // Still alive: reaching this line is the point of the test.
    match reason {
        CloseReason::Error(e) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected EPIPE, got {other:?}"),
    }
}
