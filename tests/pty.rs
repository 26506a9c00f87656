//! PTY mode. fds 0, 1 and 2 on a new pseudo-terminal that is the child's controlling terminal; the
//! parent reads the master as child fd 1 and writes it as child fd 0.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{ChildFd, CloseReason, Command, Event, PtySize};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use common::rerun::in_own_process;
use common::{LIMIT, current_thread_runtime, own_cpu_time, read_until, run_to_end, stat};

fn pty_sh(script: &str, size: PtySize) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]).pty(size);
    c
}

fn default_size() -> PtySize {
    PtySize::default()
}

// ----- the terminal itself --------------------------------------------------------------------

#[tokio::test]
async fn fds_0_1_2_are_a_terminal_and_dev_tty_opens() {
    let script = "test -t 0 && test -t 1 && test -t 2 && echo all-ttys; \
                  echo via-dev-tty > /dev/tty && echo opened; tty";
    let mut child = pty_sh(script, default_size()).spawn().unwrap();
    let run = run_to_end(&mut child).await;
    assert!(
        run.status().success(),
        "{:?}: {:?}",
        run.status(),
        run.text(1)
    );
    assert!(run.text(1).contains("all-ttys\r\n"), "{:?}", run.text(1));
    assert!(
        run.text(1).contains("via-dev-tty\r\nopened\r\n"),
        "{:?}",
        run.text(1)
    );
    assert!(run.text(1).contains("/dev/pts/"), "{:?}", run.text(1));
}

#[tokio::test]
async fn the_child_leads_a_new_session_with_the_terminal_as_controlling_tty() {
    let mut child = pty_sh("echo ready; sleep 30", default_size())
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    read_until(&mut child, "ready").await;
    let s = stat(pid).expect("the child is alive");
    let pid = pid as i32;
    assert_eq!(s.session, pid, "session leader");
    assert_eq!(s.pgrp, pid, "group leader");
    assert_ne!(s.tty_nr, 0, "has a controlling terminal");
    assert_eq!(s.tpgid, pid, "its group is the terminal's foreground group");
    assert_eq!(child.process_group(), Some(pid));
    child.signal_group(libc::SIGKILL).unwrap();
    let run = run_to_end(&mut child).await;
    assert_eq!(run.status().signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn input_is_echoed_and_newlines_become_crlf() {
    let mut child = Command::new("cat").pty(default_size()).spawn().unwrap();
    // ^D at the start of a line is end of file for cat; it is not echoed.
    child.write_stdin(&b"hello\n\x04"[..]).unwrap();
    // The terminal echoes the line, then cat writes it back: both with "\r\n".
    let run = run_to_end(&mut child).await;
    assert_eq!(run.text(1), "hello\r\nhello\r\n");
    // Not asserted here: GNU cat closes its stdio before it exits, and under load the
    // transport may hang up the terminal in that window (see
    // `closing_the_terminal_before_exiting_is_not_a_hangup`).
}

#[tokio::test]
async fn closing_the_terminal_before_exiting_is_not_a_hangup() {
    // The child closes fds 0, 1 and 2 (its last handles on the terminal), works a little
    // longer, and exits 0. The master reports EIO at once, but as long as the child lives the
    // parent must not close the master: that hangs the terminal up and SIGHUPs the session
    // leader, i.e. the child.
    let mut child = pty_sh("exec 0<&- 1>&- 2>&-; sleep 0.3; exit 0", default_size())
        .spawn()
        .unwrap();
    let run = run_to_end(&mut child).await;
    assert!(
        run.status().success(),
        "the child was hung up: {:?} {:?}",
        run.status(),
        run.log
    );
}

#[tokio::test]
async fn output_written_after_the_child_reopens_its_terminal_arrives() {
    // The child closes its last handles on the terminal (the master reads EIO), then opens
    // it again by name and writes: a little, then more than the terminal buffers. Nothing is
    // lost and the child is never left blocked on a terminal nobody reads.
    let script = "exec 0<&- 1>&- 2>&-; sleep 0.2; \
                  echo late > /dev/tty; seq 1 20000 > /dev/tty; echo done > /dev/tty";
    let mut child = pty_sh(script, default_size()).spawn().unwrap();
    let run = run_to_end(&mut child).await;
    assert!(run.status().success(), "{:?}", run.status());
    let out = run.text(1);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        lines.len(),
        20003,
        "first lines: {:?}",
        &lines[..lines.len().min(3)]
    );
    assert_eq!(lines[0], "late");
    assert_eq!(lines[20000], "20000");
    assert_eq!(lines[20001], "done");
}

#[tokio::test]
async fn waiting_for_a_child_writing_to_its_reopened_terminal_does_not_deadlock() {
    let script = "exec 0<&- 1>&- 2>&-; sleep 0.2; seq 1 20000 > /dev/tty";
    let mut child = pty_sh(script, default_size()).spawn().unwrap();
    // wait() reads (and discards) the terminal while the child lives, hung up or not.
    let status = timeout(LIMIT, child.wait())
        .await
        .expect("wait() deadlocked");
    assert!(status.unwrap().success());
    // The stream after it ends: the master's end after the reap is seen.
    run_to_end(&mut child).await;
}

#[test]
fn a_terminal_nobody_holds_costs_no_cpu_while_the_child_lives() {
    let name = "a_terminal_nobody_holds_costs_no_cpu_while_the_child_lives";
    // Alone in a process of its own: the CPU time measured is this test's.
    if !in_own_process(name) {
        return;
    }
    // The master reports a hang-up for as long as nobody has the terminal open; waiting for
    // news of it must not turn into polling it, from the stream or from wait().
    let used = current_thread_runtime().block_on(async {
        let mut child = pty_sh("exec 0<&- 1>&- 2>&-; sleep 1.2", default_size())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu = own_cpu_time();
        let events = timeout(Duration::from_millis(500), async {
            let mut seen = 0;
            while child.next().await.is_some() {
                seen += 1;
            }
            seen
        })
        .await;
        assert!(events.is_err(), "the stream ended while the child lives");
        assert!(
            timeout(LIMIT, child.wait())
                .await
                .unwrap()
                .unwrap()
                .success()
        );
        own_cpu_time() - cpu
    });
    assert!(
        used < Duration::from_millis(150),
        "{used:?} of CPU for a 1 s wait"
    );
}

#[tokio::test]
async fn a_terminal_reader_taken_out_ends_at_its_first_eio_read_either_way() {
    // Taken out, the reader does not hear of the reap, so the terminal's first EIO is its
    // end, whether it is read as a Stream or with AsyncRead; the transport's stream ends too.
    let mut child = pty_sh("echo hello", default_size()).spawn().unwrap();
    let mut reader = child.take_reader(1).unwrap();
    let drained = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(chunk) = reader.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        got
    });
    run_to_end(&mut child).await;
    let got = timeout(LIMIT, drained)
        .await
        .expect("the taken Stream never ended");
    assert_eq!(got.unwrap(), b"hello\r\n");

    let mut child = pty_sh("echo hello", default_size()).spawn().unwrap();
    let mut reader = child.take_reader(1).unwrap();
    let mut got = Vec::new();
    timeout(LIMIT, reader.read_to_end(&mut got))
        .await
        .expect("the taken AsyncRead never ended")
        .unwrap();
    assert_eq!(got, b"hello\r\n");
}

#[tokio::test]
async fn interactive_round_trips_through_the_terminal() {
    // Write, read the answer, write again: what every interactive session does. Each write
    // after the first comes after the transport was polled.
    let mut child = Command::new("cat").pty(default_size()).spawn().unwrap();
    for i in 0..3 {
        child.write_stdin(format!("line{i}\n")).unwrap();
        let want = format!("line{i}\r\nline{i}\r\n");
        let got = read_until(&mut child, &want).await;
        assert_eq!(got, want);
    }
    child.write_stdin(&b"\x04"[..]).unwrap();
    let run = run_to_end(&mut child).await;
    assert!(run.status().success(), "{:?}", run.status());
}

#[tokio::test]
async fn ctrl_c_interrupts_the_foreground_group() {
    // Not `sh -c`: dash catches SIGINT under -c and can lose it when it execs its last
    // command. cat keeps the default action.
    // spawn returns after exec, so the terminal's foreground group is already cat's.
    let mut child = Command::new("cat").pty(default_size()).spawn().unwrap();
    child.write_stdin(&b"\x03"[..]).unwrap();
    let run = run_to_end(&mut child).await;
    assert_eq!(
        run.status().signal(),
        Some(libc::SIGINT),
        "{:?}",
        run.status()
    );
}

#[tokio::test]
async fn stty_size_reports_the_size_set_at_spawn() {
    let size = PtySize {
        rows: 33,
        cols: 101,
    };
    let mut child = Command::new("stty").arg("size").pty(size).spawn().unwrap();
    let run = run_to_end(&mut child).await;
    assert!(run.status().success());
    assert_eq!(run.text(1), "33 101\r\n");
}

#[tokio::test]
async fn the_default_size_is_24_by_80() {
    let mut child = Command::new("stty")
        .arg("size")
        .pty(PtySize::default())
        .spawn()
        .unwrap();
    let run = run_to_end(&mut child).await;
    assert_eq!(run.text(1), "24 80\r\n");
}

#[tokio::test]
async fn a_resize_reaches_the_child_as_sigwinch() {
    let script =
        r#"trap 'echo "winch $(stty size)"' WINCH; echo ready; while :; do sleep 0.05; done"#;
    let mut child = pty_sh(script, PtySize { rows: 10, cols: 20 })
        .spawn()
        .unwrap();
    read_until(&mut child, "ready").await;

    child.resize_pty(40, 120).unwrap();
    read_until(&mut child, "winch 40 120").await;
    child.resize_pty(50, 132).unwrap();
    read_until(&mut child, "winch 50 132").await;

    let status = timeout(LIMIT, child.kill()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn resize_pty_without_a_pty_is_an_error() {
    let mut child = Command::new("true")
        .fds([(1, ChildFd::ParentReads)])
        .spawn()
        .unwrap();
    assert!(child.resize_pty(10, 10).is_err());
    timeout(LIMIT, child.wait()).await.unwrap().unwrap();
}

// ----- environment ----------------------------------------------------------------------------

#[tokio::test]
async fn term_is_set_unless_the_command_sets_it() {
    let mut child = pty_sh("echo \"TERM=$TERM\"", default_size())
        .env_remove("TERM")
        .spawn()
        .unwrap();
    assert_eq!(run_to_end(&mut child).await.text(1), "TERM=xterm\r\n");

    let mut child = pty_sh("echo \"TERM=$TERM\"", default_size())
        .env("TERM", "vt100")
        .spawn()
        .unwrap();
    assert_eq!(run_to_end(&mut child).await.text(1), "TERM=vt100\r\n");

    let mut child = Command::new("/bin/sh")
        .args(["-c", "echo \"TERM=$TERM\""])
        .env_clear()
        .pty(default_size())
        .spawn()
        .unwrap();
    assert_eq!(run_to_end(&mut child).await.text(1), "TERM=xterm\r\n");
}

#[tokio::test]
async fn without_a_pty_term_is_not_added() {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "echo \"TERM=${TERM-unset}\""])
        .env_clear()
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            if let Event::Data { fd: 1, data } = e {
                out.extend_from_slice(&data);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(out, b"TERM=unset\n");
}

// ----- extra fds ------------------------------------------------------------------------------

#[tokio::test]
async fn extra_fds_work_alongside_the_terminal() {
    let script = r#"
        test -t 3 || echo "fd3 is a pipe" >&3
        read line <&4
        echo "got $line"
        echo "status done" >&3
    "#;
    let mut child = pty_sh(script, default_size())
        .fd(3, ChildFd::ParentReads)
        .fd(4, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    child.write(4, &b"from-fd4\n"[..]).unwrap();
    child.close_child_fd(4).unwrap();

    let mut tty = Vec::new();
    let mut fd3 = Vec::new();
    let mut events = Vec::new();
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            match e {
                Event::Data { fd: 1, data } => tty.extend_from_slice(&data),
                Event::Data { fd: 3, data } => fd3.extend_from_slice(&data),
                other => events.push(other),
            }
        }
    })
    .await
    .unwrap();
    // fd 3 is a plain pipe: no "\r\n" translation.
    assert_eq!(fd3, b"fd3 is a pipe\nstatus done\n");
    assert_eq!(String::from_utf8_lossy(&tty), "got from-fd4\r\n");
    assert!(
        matches!(events.last(), Some(Event::Ended(Ok(s))) if s.success()),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_inherited_extra_fd_and_null_work_alongside_the_terminal() {
    let (read, write) = std::io::pipe().unwrap();
    use std::os::fd::AsRawFd;
    let mut child = pty_sh(
        "echo inherited >&5; echo x >&6 && echo null-ok",
        default_size(),
    )
    .fd(5, ChildFd::Inherit(write.as_raw_fd()))
    .fd(6, ChildFd::Null)
    .spawn()
    .unwrap();
    drop(write);
    let run = run_to_end(&mut child).await;
    assert_eq!(run.text(1), "null-ok\r\n");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut { read }, &mut got).unwrap();
    assert_eq!(got, "inherited\n");
}

// ----- end of output --------------------------------------------------------------------------

#[tokio::test]
async fn eio_at_the_end_of_output_is_a_clean_close() {
    let mut child = pty_sh("echo bye", default_size()).spawn().unwrap();
    let run = run_to_end(&mut child).await;
    assert_eq!(run.text(1), "bye\r\n");
    let mut closed = Vec::new();
    let mut exited = false;
    for e in &run.events {
        match e {
            Event::Closed { fd, reason } => {
                assert!(
                    matches!(reason, CloseReason::Eof),
                    "fd {fd} closed with {reason:?}, not a clean Eof"
                );
                closed.push(*fd);
            }
            Event::Exited(s) => {
                assert!(s.as_ref().unwrap().success());
                exited = true;
            }
            _ => {}
        }
    }
    closed.sort();
    assert_eq!(closed, [0, 1], "both directions of the master close");
    assert!(exited);
    assert_eq!(child.open_fds().count(), 0);
}

#[tokio::test]
async fn no_output_is_lost_before_eio() {
    let mut child = Command::new("seq")
        .args(["1", "20000"])
        .pty(default_size())
        .spawn()
        .unwrap();
    let run = run_to_end(&mut child).await;
    assert!(run.status().success());
    let out = run.text(1);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        lines.len(),
        20001,
        "last lines: {:?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    assert_eq!(lines[0], "1");
    assert_eq!(lines[19999], "20000");
    assert_eq!(lines[20000], "");
}

#[tokio::test]
async fn ended_waits_for_both_the_reap_and_the_master_to_close() {
    // The shell exits at once, leaving a grandchild that ignores the hangup and keeps the
    // terminal open for a while.
    let script = "trap '' HUP; sleep 0.5 & echo started";
    let mut child = pty_sh(script, default_size()).spawn().unwrap();
    let start = Instant::now();
    let mut exited_at = None;
    let mut eof_at = None;
    let mut ended_at = None;
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            match e {
                Event::Exited(s) => {
                    assert!(s.unwrap().success());
                    exited_at = Some(start.elapsed());
                }
                Event::Closed { fd: 1, reason } => {
                    assert!(matches!(reason, CloseReason::Eof), "{reason:?}");
                    eof_at = Some(start.elapsed());
                }
                Event::Ended(_) => ended_at = Some(start.elapsed()),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    let (exited_at, eof_at, ended_at) = (exited_at.unwrap(), eof_at.unwrap(), ended_at.unwrap());
    assert!(
        exited_at < Duration::from_millis(400),
        "exited at {exited_at:?}"
    );
    assert!(
        eof_at >= Duration::from_millis(450),
        "master closed at {eof_at:?}"
    );
    assert!(ended_at >= eof_at && ended_at >= exited_at);
}

#[tokio::test]
async fn awaiting_a_pty_child_gives_its_status() {
    let status = timeout(LIMIT, pty_sh("exit 4", default_size()).spawn().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(4));
}

#[tokio::test]
async fn a_pty_child_that_reads_stdin_gets_eof_from_ctrl_d_and_answers() {
    // `read` on a terminal: the line discipline delivers a line at a time.
    let mut child = pty_sh(
        "read a; read b; echo \"[$a|$b]\"; read c || echo eof",
        default_size(),
    )
    .spawn()
    .unwrap();
    child.write_stdin(&b"one\ntwo\n"[..]).unwrap();
    read_until(&mut child, "[one|two]").await;
    child.write_stdin(&b"\x04"[..]).unwrap();
    let run = run_to_end(&mut child).await;
    assert!(run.status().success());
    assert!(run.text(1).contains("eof\r\n"), "{:?}", run.text(1));
}

// ----- resizing does not depend on the input side ---------------------------------------------

/// A shell that reports every SIGWINCH with the new size.
fn winch_reporter() -> Command {
    let script =
        r#"trap 'echo "winch $(stty size)"' WINCH; echo ready; while :; do sleep 0.05; done"#;
    pty_sh(script, PtySize { rows: 10, cols: 20 })
}

#[tokio::test]
async fn resize_still_works_after_the_input_side_is_closed() {
    // Closing fd 0 closes only the parent's writing handle of the master; the terminal (and
    // the reading handle) stays, and so must the ability to resize it.
    let mut child = winch_reporter().spawn().unwrap();
    read_until(&mut child, "ready").await;
    child.close_stdin().unwrap();
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            if let Event::Closed { fd: 0, .. } = e {
                return;
            }
        }
    })
    .await
    .expect("fd 0 never reported closed");
    let resized = child.resize_pty(40, 120);
    assert!(resized.is_ok(), "resize after close_stdin: {resized:?}");
    read_until(&mut child, "winch 40 120").await;
    timeout(LIMIT, child.kill()).await.unwrap().unwrap();
}

#[tokio::test]
async fn resize_still_works_after_the_input_side_is_taken() {
    let mut child = winch_reporter().spawn().unwrap();
    let input = child.take_writer(0).unwrap();
    read_until(&mut child, "ready").await;
    let resized = child.resize_pty(40, 120);
    assert!(resized.is_ok(), "resize after take_writer(0): {resized:?}");
    read_until(&mut child, "winch 40 120").await;
    drop(input);
    timeout(LIMIT, child.kill()).await.unwrap().unwrap();
}

#[tokio::test]
async fn wait_delay_closes_a_terminal_held_by_a_grandchild() {
    let delay = Duration::from_millis(300);
    let mut child = pty_sh("trap '' HUP; sleep 30 & echo started", default_size())
        .wait_delay(delay)
        .spawn()
        .unwrap();
    let group = child.process_group().unwrap();
    let mut exited_at = None;
    let mut ended_at = None;
    let mut fd1_reason = None;
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            match e {
                Event::Exited(_) => exited_at = Some(Instant::now()),
                Event::Closed { fd: 1, reason } => fd1_reason = Some(reason),
                Event::Ended(_) => ended_at = Some(Instant::now()),
                _ => {}
            }
        }
    })
    .await
    .expect("Ended never came although the wait delay was set");
    // The grandchild stayed in the child's group.
    let _ = child.signal_group(libc::SIGKILL);
    let waited = ended_at.unwrap() - exited_at.unwrap();
    assert!(
        waited >= delay - Duration::from_millis(20),
        "ended {waited:?} after the exit"
    );
    assert!(
        matches!(fd1_reason, Some(CloseReason::WaitDelay)),
        "{fd1_reason:?} (group {group})"
    );
}
