//! Transport operations. Writing to child fd N and to stdin, closing a child fd (a writer flushes
//! first, then the child sees EOF), closing stdin/stdout/stderr, `lose_connection`, signals with a
//! typed "already exited" error once reaped, and typed errors for writing where the parent cannot
//! write.

mod common;

use std::time::Duration;

use futures::StreamExt;
use process_transport::{ChildFd, Command, Error};

use common::{cloexec_pipe, run_to_end, sh, within};

#[tokio::test]
async fn write_to_an_extra_fd_reaches_the_child_and_close_gives_it_eof() {
    let mut child = sh("cat <&3; echo eof-on-3")
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    child.write(3, &b"hello "[..]).unwrap();
    child.write(3, b"fd 3\n".to_vec()).unwrap();
    child.close_child_fd(3).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2, 3]);
    assert!(out.status().success());
    assert_eq!(out.text(1), "hello fd 3\neof-on-3\n");
    assert_eq!(out.close_reason(3), "Closed");
}

#[tokio::test]
async fn write_stdin_and_close_stdin_feed_cat() {
    let mut child = Command::new("cat").spawn().unwrap();
    child.write_stdin(&b"line one\n"[..]).unwrap();
    child.write_stdin(String::from("line two\n")).unwrap();
    child.close_stdin().unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert!(out.status().success());
    assert_eq!(out.text(1), "line one\nline two\n");
    assert_eq!(out.close_reason(0), "Closed");
}

#[tokio::test]
async fn write_after_the_transport_was_polled_idle_reaches_the_child() {
    let mut child = Command::new("cat").spawn().unwrap();
    // Poll while nothing happens: the stdin writer is idle and writable.
    let idle = tokio::time::timeout(Duration::from_millis(100), child.next()).await;
    assert!(idle.is_err(), "no event from an idle cat: {idle:?}");
    child.write_stdin(&b"written late\n"[..]).unwrap();
    child.close_stdin().unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    assert_eq!(out.text(1), "written late\n");
}

#[tokio::test]
async fn write_in_reply_to_output_reaches_the_child() {
    // Request/response over stdin/stdout: the second write comes after events were consumed.
    let mut child = sh("read a; echo \"got $a\"; read b; echo \"got $b\"")
        .spawn()
        .unwrap();
    child.write_stdin(&b"first\n"[..]).unwrap();
    let mut text = String::new();
    within("request/response", async {
        while let Some(event) = child.next().await {
            if let process_transport::Event::Data { fd: 1, data } = event {
                text.push_str(std::str::from_utf8(&data).unwrap());
                if text == "got first\n" {
                    child.write_stdin(&b"second\n"[..]).unwrap();
                }
            }
            if text == "got first\ngot second\n" {
                break;
            }
        }
    })
    .await;
    assert!(within("exit", child.wait()).await.unwrap().success());
}

#[tokio::test]
async fn close_child_fd_flushes_everything_queued_before_closing() {
    // More than a pipe holds, queued and closed at once: the child still gets every byte.
    let mut child = Command::new("wc").arg("-c").spawn().unwrap();
    let big = vec![b'x'; 1024 * 1024];
    child.write_stdin(big).unwrap();
    child.write_stdin(&b"11 more....."[..11]).unwrap();
    child.close_stdin().unwrap();
    assert!(matches!(
        child.write_stdin(&b"too late"[..]),
        Err(Error::PipeClosed(0))
    ));
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(out.text(1).trim(), "1048587");
    assert_eq!(out.close_reason(0), "Closed");
}

#[tokio::test]
async fn write_all_returns_once_the_data_is_in_the_pipe() {
    let mut child = Command::new("wc").arg("-c").spawn().unwrap();
    within("write_all", child.write_all(0, vec![7u8; 300 * 1024]))
        .await
        .unwrap();
    assert_eq!(child.queued_len(0), 0);
    child.close_stdin().unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.text(1).trim(), (300 * 1024).to_string());
}

#[tokio::test]
async fn close_stdout_closes_at_once_and_the_childs_next_write_fails() {
    // The write is retried: a child another test spawns at the same moment holds a copy of
    // every parent fd between its clone and its close_range, which keeps the pipe readable for
    // that instant.
    let mut child =
        sh("read go; while echo to-closed-stdout; do sleep 0.01; done; echo not-reached >&2")
            .spawn()
            .unwrap();
    child.close_stdout().unwrap();
    assert_eq!(child.open_fds().collect::<Vec<_>>(), [0, 2]);
    child.write_stdin(&b"go\n"[..]).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(out.close_reason(1), "Closed");
    assert_eq!(out.status().signal(), Some(libc::SIGPIPE), "{:?}", out.log);
    assert_eq!(out.text(2), "", "the shell died at the write");
}

#[tokio::test]
async fn close_stderr_leaves_stdout_working() {
    // Retried for the reason given in the test above.
    let mut child = sh("read go; echo out; while echo err >&2; do sleep 0.01; done")
        .spawn()
        .unwrap();
    child.close_stderr().unwrap();
    child.write_stdin(&b"go\n"[..]).unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(out.text(1), "out\n");
    assert_eq!(out.close_reason(2), "Closed");
    assert_eq!(out.status().signal(), Some(libc::SIGPIPE));
}

#[tokio::test]
async fn lose_connection_flushes_then_closes_every_pipe_without_signalling() {
    // The queued line is delivered; `read` then sees EOF; the exit code proves no signal.
    let mut child = sh("read x; read y || exit ${#x}")
        .fd(3, ChildFd::ParentReads)
        .spawn()
        .unwrap();
    child.write_stdin(&b"12345\n"[..]).unwrap();
    child.lose_connection();
    assert!(matches!(
        child.write_stdin(&b"x"[..]),
        Err(Error::PipeClosed(0))
    ));
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2, 3]);
    for fd in [0, 1, 2, 3] {
        assert_eq!(out.close_reason(fd), "Closed", "fd {fd}");
    }
    assert_eq!(out.status().code(), Some(5));
    assert_eq!(child.open_fds().count(), 0);
}

#[tokio::test]
async fn writing_where_the_parent_cannot_write_is_a_typed_error() {
    let (_read, write) = cloexec_pipe();
    let mut child = Command::new("sleep")
        .arg("5")
        .fds([
            (0, ChildFd::ParentWrites),
            (1, ChildFd::ParentReads),
            (5, ChildFd::Inherit(std::os::fd::AsRawFd::as_raw_fd(&write))),
            (6, ChildFd::Null),
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(matches!(
        child.write(1, &b"x"[..]),
        Err(Error::NotWritable(1))
    ));
    assert!(matches!(
        child.write(5, &b"x"[..]),
        Err(Error::NoSuchPipe(5))
    ));
    assert!(matches!(
        child.write(6, &b"x"[..]),
        Err(Error::NoSuchPipe(6))
    ));
    assert!(matches!(
        child.write(7, &b"x"[..]),
        Err(Error::NoSuchPipe(7))
    ));
    assert!(matches!(
        child.write(-1, &b"x"[..]),
        Err(Error::NoSuchPipe(-1))
    ));
    assert!(matches!(child.close_child_fd(9), Err(Error::NoSuchPipe(9))));
    child.close_stdin().unwrap();
    child.close_stdin().unwrap(); // closing twice does nothing
    assert!(matches!(
        child.write_stdin(&b"x"[..]),
        Err(Error::PipeClosed(0))
    ));
    child.signal(libc::SIGKILL).unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.status().signal(), Some(libc::SIGKILL));
    assert!(matches!(
        child.write(1, &b"x"[..]),
        Err(Error::NotWritable(1) | Error::PipeClosed(1))
    ));
    assert!(matches!(
        child.write_stdin(&b"x"[..]),
        Err(Error::PipeClosed(0))
    ));
}

#[tokio::test]
async fn writing_to_a_pipe_the_child_closed_reports_a_close_and_never_kills_the_parent() {
    let mut child = sh("exec 0<&-; read x <&3")
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SIGPIPE in the parent would kill the test binary here if it were not handled.
    let _ = child.write_stdin(vec![0u8; 256 * 1024]);
    let mut closed0 = None;
    within("Closed(0)", async {
        while closed0.is_none() {
            let event = child.next().await.expect("stream ended early");
            if let process_transport::Event::Closed { fd: 0, reason } = event {
                closed0 = Some(reason);
            }
        }
    })
    .await;
    let reason = closed0.unwrap();
    assert!(
        matches!(reason, process_transport::CloseReason::Eof)
            || matches!(&reason, process_transport::CloseReason::Error(e) if e.raw_os_error() == Some(libc::EPIPE)),
        "{reason:?}"
    );
    assert!(matches!(
        child.write_stdin(&b"x"[..]),
        Err(Error::PipeClosed(0))
    ));
    child.close_child_fd(3).unwrap();
    assert!(within("exit", child.wait()).await.is_ok());
}

#[tokio::test]
async fn signal_reaches_the_child_and_is_already_exited_once_reaped() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    child.signal(0).unwrap(); // probing a live child works
    child.signal(libc::SIGTERM).unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.status().signal(), Some(libc::SIGTERM));
    assert!(matches!(
        child.signal(libc::SIGTERM),
        Err(Error::AlreadyExited)
    ));
    assert!(matches!(child.signal(0), Err(Error::AlreadyExited)));
    // kill() after the reap still reports the status.
    assert_eq!(
        within("kill", child.kill()).await.unwrap().signal(),
        Some(libc::SIGTERM)
    );
}

#[tokio::test]
async fn signal_with_user_signals_is_observed_by_the_child() {
    let mut child =
        sh("trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.01; done")
            .spawn()
            .unwrap();
    let first = within("ready", child.next()).await;
    assert!(
        matches!(first, Some(process_transport::Event::Data { fd: 1, .. })),
        "{first:?}"
    );
    child.signal(libc::SIGUSR1).unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    assert_eq!(out.text(1), "got-usr1\n");
}

#[tokio::test]
async fn invalid_signal_number_is_an_os_error_not_already_exited() {
    let mut child = Command::new("sleep")
        .arg("5")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    match child.signal(1000) {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
        other => panic!("expected EINVAL, got {other:?}"),
    }
    assert_eq!(
        within("kill", child.kill()).await.unwrap().signal(),
        Some(libc::SIGKILL)
    );
}
