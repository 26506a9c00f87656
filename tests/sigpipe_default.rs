//! The parent is never killed by SIGPIPE, even in a host where SIGPIPE is at its default
//! action (Rust binaries ignore it; C hosts and `#[unix_sigpipe]` users may not). Its own test
//! binary, because it changes a process-wide disposition.

mod common;

use process_transport::CloseReason;

use common::write_past_a_closed_stdin;

#[tokio::test]
async fn writing_to_a_closed_pipe_with_sigpipe_at_default_returns_epipe() {
    // SAFETY: setting a standard signal's disposition; no other test runs in this binary.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);

    // The child reads one line, closes stdin and lingers; the rest of our write hits EPIPE.
    let (_child, reason) = write_past_a_closed_stdin(b"one line\n", common::LIMIT).await;
    // Still alive: reaching this line is the point of the test.
    match reason {
        CloseReason::Error(e) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected EPIPE, got {other:?}"),
    }
}
