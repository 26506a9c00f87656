//! Duplex fds: a socket pair at a child fd, read as events and written on the same fd
//! number, or taken out as a `tokio::net::UnixStream`. Checked from inside the child.
//!
//! One test counts this process's fds, so the tests run one at a time.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use common::{Outcome, current_thread_runtime, open_fds, py, run_to_end, within};
use futures::StreamExt;
use process_transport::{
    ChildFd, Collect, Error, Event, InvalidInput, ProcessTransport, SpawnError,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Held by each test: see the module's doc.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Python that opens fd 3 as the socket it must be, as `sock`, with a line reader `lines`.
const OPEN_FD3: &str = "\
import os, socket, stat, sys
assert stat.S_ISSOCK(os.fstat(3).st_mode), 'fd 3 is not a socket'
sock = socket.socket(fileno=3)
lines = sock.makefile('rb')
";

#[tokio::test]
async fn both_directions_go_through_events_on_one_fd() {
    let _serial = SERIAL.lock().await;
    // The child doubles each number it reads on fd 3 and answers on fd 3, until "end".
    let script = format!(
        "{OPEN_FD3}
for line in lines:
    if line == b'end\\n':
        break
    sock.sendall(b'%d\\n' % (2 * int(line)))
sys.stdout.write('done\\n')
"
    );
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    child.write(3, "21\n").unwrap();
    let mut out = Outcome::default();
    within("the conversation ends", async {
        while let Some(event) = child.next().await {
            // Each answer is one short line, read in one go on an idle machine or not: the
            // child sends it only after reading the question.
            if let Event::Data { fd: 3, data } = &event {
                match &data[..] {
                    b"42\n" => child.write(3, "100\n").map(|_| ()).unwrap(),
                    b"200\n" => child.write(3, "end\n").map(|_| ()).unwrap(),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            if out.record(event) {
                break;
            }
        }
    })
    .await;
    assert_eq!(out.text(3), "42\n200\n");
    assert_eq!(out.text(1), "done\n");
    assert_eq!(out.close_reason(3), "Eof");
    assert!(out.status().success());
    out.assert_well_ordered(&[0, 1, 2, 3]);
}

#[tokio::test]
async fn the_child_shutting_down_its_side_ends_only_the_read_side() {
    let _serial = SERIAL.lock().await;
    // The child says it is ready, shuts down its sending side, says so on fd 1, and reports
    // what it then reads.
    let script = format!(
        "{OPEN_FD3}
sock.sendall(b'ready\\n')
sock.shutdown(socket.SHUT_WR)
sys.stdout.write('shut\\n')
sys.stdout.flush()
sys.stdout.write('read: %r\\n' % lines.read())
"
    );
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    let mut out = Outcome::default();
    within("the child has shut down its side", async {
        while out.text(3) != "ready\n" || out.text(1) != "shut\n" {
            let event = child.next().await.unwrap();
            out.record(event);
        }
    })
    .await;
    // The end of what the child sends is readable now: the transport reads it while polled,
    // and that ends the read side alone, without an event.
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(1), child.next()).await;
    assert!(quiet.is_err(), "an event came: {quiet:?}");
    assert!(!out.is_closed(3));
    assert_eq!(child.open_fds().collect::<Vec<_>>(), [0, 1, 2, 3]);
    child.write(3, "after your eof\n").unwrap();
    child.close_child_fd(3).unwrap();
    out.extend(run_to_end(&mut child).await);
    assert_eq!(out.text(1), "shut\nread: b'after your eof\\n'\n");
    // One close for the fd, the parent's.
    assert_eq!(out.closes().iter().filter(|(fd, _)| *fd == 3).count(), 1);
    assert_eq!(out.close_reason(3), "Closed");
    assert!(out.status().success());
}

#[tokio::test]
async fn closing_the_fd_closes_both_directions() {
    let _serial = SERIAL.lock().await;
    // After the end of its input, the child's own write must fail: the socket is gone.
    let script = format!(
        "{OPEN_FD3}
got = lines.read()
try:
    sock.sendall(b'too late\\n')
    sys.stdout.write('%r, write ok\\n' % got)
except BrokenPipeError:
    sys.stdout.write('%r, EPIPE\\n' % got)
"
    );
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    child.write(3, "last words\n").unwrap();
    child.close_child_fd(3).unwrap();
    assert!(matches!(child.write(3, "more"), Err(Error::PipeClosed(3))));
    let out = run_to_end(&mut child).await;
    assert_eq!(out.text(1), "b'last words\\n', EPIPE\n");
    assert_eq!(out.text(3), "");
    assert_eq!(out.close_reason(3), "Closed");
    assert!(out.status().success());
}

#[tokio::test]
async fn wait_closes_a_duplex_so_a_child_reading_it_to_the_end_exits() {
    let _serial = SERIAL.lock().await;
    let script = format!("{OPEN_FD3}\nlines.read()\nsys.exit(7)\n");
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    let status = within("wait returns", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(7));
}

#[tokio::test]
async fn taken_out_as_a_unix_stream() {
    let _serial = SERIAL.lock().await;
    // The child answers each line upper-cased; at the end of its input it says bye.
    let script = format!(
        "{OPEN_FD3}
for line in lines:
    sock.sendall(line.upper())
sock.sendall(b'bye\\n')
"
    );
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    // Queued before the take: written first.
    child.write(3, "queued first\n").unwrap();
    let stream = within("take_duplex", child.take_duplex(3)).await.unwrap();
    assert!(matches!(child.write(3, "x"), Err(Error::PipeTaken(3))));
    assert!(matches!(
        within("take again", child.take_duplex(3)).await,
        Err(Error::PipeTaken(3))
    ));
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    within("the first answer", async {
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("QUEUED FIRST")
        );
        write.write_all(b"through the stream\n").await.unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("THROUGH THE STREAM")
        );
        // Shutting down the parent's sending side is the child's end of input.
        write.shutdown().await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("bye"));
        assert_eq!(lines.next_line().await.unwrap(), None);
    })
    .await;
    // The stream halves are still held: the transport does not wait for them.
    let out = run_to_end(&mut child).await;
    assert!(!out.is_closed(3), "no events for a socket taken out");
    assert!(out.status().success());
    drop((lines, write));
}

#[tokio::test]
async fn an_fd_passed_over_the_socket_works_in_the_child() {
    let _serial = SERIAL.lock().await;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

    // The child receives one fd with SCM_RIGHTS and writes through it.
    let script = format!(
        "{OPEN_FD3}
msg, fds, _, _ = socket.recv_fds(sock, 64, 1)
os.write(fds[0], b'written by the child through ' + msg)
os.close(fds[0])
sock.sendall(b'sent\\n')
"
    );
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    let mut stream = within("take_duplex", child.take_duplex(3)).await.unwrap();
    let (mut read_end, write_end) = std::io::pipe().unwrap();
    let write_end = OwnedFd::from(write_end);
    within("the fd is sent", async {
        stream.writable().await.unwrap();
        let fds = [write_end.as_raw_fd()];
        let sent = sendmsg::<()>(
            stream.as_raw_fd(),
            &[std::io::IoSlice::new(b"a passed fd")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(sent, 11);
    })
    .await;
    // Only the child's copy is left, so the pipe's end of file proves it closed it.
    drop(write_end);
    let mut ack = [0u8; 5];
    within("the child's ack", stream.read_exact(&mut ack))
        .await
        .unwrap();
    assert_eq!(&ack, b"sent\n");
    let mut passed = String::new();
    read_end.read_to_string(&mut passed).unwrap();
    assert_eq!(passed, "written by the child through a passed fd");
    let out = run_to_end(&mut child).await;
    assert!(out.status().success(), "{:?}", out.text(2));
}

#[tokio::test]
async fn a_duplex_is_taken_only_whole_and_other_pipes_not_as_one() {
    let _serial = SERIAL.lock().await;
    let mut child = py("import sys; sys.stdin.read()")
        .fd(3, ChildFd::Duplex)
        .spawn()
        .unwrap();
    assert!(matches!(child.take_reader(3), Err(Error::Duplex(3))));
    assert!(matches!(child.take_writer(3), Err(Error::Duplex(3))));
    assert!(matches!(
        child.take_duplex(1).await,
        Err(Error::NotWritable(1))
    ));
    assert!(matches!(
        child.take_duplex(0).await,
        Err(Error::NotReadable(0))
    ));
    assert!(matches!(
        child.take_duplex(5).await,
        Err(Error::NoSuchPipe(5))
    ));
    // Reading a duplex pauses like reading a pipe.
    child.pause_reading_fd(3).unwrap();
    child.resume_reading_fd(3).unwrap();
    child.close_stdin().unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    assert_eq!(out.close_reason(3), "Eof");
}

#[tokio::test]
async fn bad_input_with_a_duplex_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    // A first spawn starts the reaper and its fds, which stay: count after it.
    let warm_up = py("pass").fd(3, ChildFd::Duplex).spawn().unwrap();
    assert!(
        within("the warm-up child", warm_up)
            .await
            .unwrap()
            .success()
    );
    let before = open_fds();
    let mut command = py("pass");
    command.fd(3, ChildFd::Duplex).pipe_capacity(3, 1 << 20);
    assert!(matches!(
        command.spawn(),
        Err(SpawnError::InvalidInput(
            InvalidInput::PipeCapacityWithoutPipe(3)
        ))
    ));
    let mut missing = process_transport::Command::new("/nonexistent/program");
    missing.fd(3, ChildFd::Duplex);
    assert!(matches!(missing.spawn(), Err(SpawnError::Spawn { .. })));
    assert_eq!(open_fds(), before, "fds leaked");
    assert_eq!(ChildFd::Duplex, ChildFd::Duplex);
    assert_ne!(ChildFd::Duplex, ChildFd::ParentReads);
}

#[tokio::test]
async fn taking_a_duplex_out_first_writes_what_is_queued_for_it() {
    let _serial = SERIAL.lock().await;
    // The child counts what it reads on fd 3 until the end, and says how much on fd 1.
    let script = format!("{OPEN_FD3}\nsys.stdout.write('%d\\n' % len(lines.read()))\n");
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    let size = 4 << 20;
    child.write(3, vec![b'x'; size]).unwrap();
    // Far more than a socket buffer holds: most of it waits in the transport's queue.
    assert!(child.queued_len(3) > 0);
    let mut stream = within("take_duplex", child.take_duplex(3)).await.unwrap();
    within("shutdown", stream.shutdown()).await.unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.text(1), format!("{size}\n"));
    assert!(out.status().success());
}

#[tokio::test]
async fn output_collects_what_the_child_sends_on_a_duplex() {
    let script = "import os, socket\ns = socket.socket(fileno=3)\ns.sendall(b'over the socket')\n";
    let out = within("output", py(script).fd(3, ChildFd::Duplex).output())
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.fd(3), b"over the socket");

    // Listed like every fd the parent reads, even when the child sent nothing on it.
    let out = within("output", py("pass").fd(3, ChildFd::Duplex).output())
        .await
        .unwrap();
    assert_eq!(out.fds.get(&3).map(|b| b.len()), Some(0), "{:?}", out.fds);
}

#[tokio::test]
async fn output_ends_the_write_half_so_a_child_reading_to_the_end_exits() {
    let _serial = SERIAL.lock().await;
    // The child sends back what it read on fd 3, once it has read to the end.
    let script = format!("{OPEN_FD3}\nsock.sendall(lines.read())\nsys.stdout.write('done\\n')\n");
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    child.write(3, "ping\n").unwrap();
    let out = within("output", child.output(Collect::new()))
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.fd(3), b"ping\n");
    assert_eq!(out.stdout(), b"done\n");

    let out = within("output", py(&script).fd(3, ChildFd::Duplex).output())
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout(), b"done\n");
}

#[tokio::test]
async fn a_paused_duplex_taken_out_holds_back_neither_its_data_nor_ended() {
    let _serial = SERIAL.lock().await;
    let script = format!("{OPEN_FD3}\nsock.sendall(b'before')\n");
    let quiet = [(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)];
    let mut child = py(&script)
        .fds(quiet)
        .fd(3, ChildFd::Duplex)
        .spawn()
        .unwrap();
    // Until the exit and the data are there for one poll to find: the data is queued
    // behind the exit.
    while child.pid().is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let first = within("the exit", child.next()).await;
    assert!(matches!(first, Some(Event::Exited(_))), "{first:?}");
    child.pause_reading_fd(3).unwrap();
    let _stream = within("take_duplex", child.take_duplex(3)).await.unwrap();
    let rest: Vec<Event> = within("the rest", child.collect()).await;
    assert!(
        matches!(
            rest.as_slice(),
            [Event::Data { fd: 3, data }, Event::Ended(Ok(_))] if &data[..] == b"before"
        ),
        "{rest:?}"
    );
}

#[test]
fn a_duplex_that_cannot_be_taken_out_stays_in_the_transport() {
    let rt = current_thread_runtime();
    let _serial = rt.block_on(SERIAL.lock());
    // The child doubles the number it reads on fd 3.
    let script = format!("{OPEN_FD3}\nsock.sendall(b'%d\\n' % (2 * int(lines.readline())))\n");
    let mut child = spawn_duplex_in(&rt, &script);
    // Outside any runtime: refused, and nothing is lost.
    let refused = futures::executor::block_on(child.take_duplex(3));
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    rt.block_on(async {
        let stream = within("take_duplex", child.take_duplex(3)).await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(b"21\n").await.unwrap();
        let mut answer = String::new();
        within("the answer", BufReader::new(read).read_line(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer, "42\n");
        assert!(within("wait", child.wait()).await.unwrap().success());
    });
}

#[tokio::test]
async fn wait_lets_a_child_answer_after_the_end_of_what_it_reads() {
    let _serial = SERIAL.lock().await;
    // The child reads fd 3 to the end, then answers on it: wait shuts down only the
    // parent's sending side.
    let script = format!("{OPEN_FD3}\nlines.read()\nsock.sendall(b'reply')\nsys.exit(7)\n");
    let mut child = py(&script).fd(3, ChildFd::Duplex).spawn().unwrap();
    child.write(3, "question\n").unwrap();
    let status = within("wait", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(7), "the answer failed: {status:?}");
}

#[test]
fn take_duplex_outside_a_runtime_fails_at_once_with_bytes_queued() {
    let rt = current_thread_runtime();
    let _serial = rt.block_on(SERIAL.lock());
    // The child reads nothing until told: most of what is written stays queued.
    let script = format!("{OPEN_FD3}\nlines.read()\n");
    let mut child = spawn_duplex_in(&rt, &script);
    child.write(3, vec![b'x'; 4 << 20]).unwrap();
    assert!(child.queued_len(3) > 0);
    // On a thread of its own, so that a take that waits for good fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let refused = futures::executor::block_on(child.take_duplex(3)).map(drop);
        let _ = tx.send((refused, child));
    });
    let (refused, mut child) = rx
        .recv_timeout(common::LIMIT)
        .expect("take_duplex outside a runtime waited to flush");
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    rt.block_on(async {
        assert!(child.queued_len(3) > 0, "the queue was dropped");
        assert!(within("wait", child.wait()).await.unwrap().success());
    });
}

/// Python `script` with a duplex at fd 3, spawned in `rt`, for tests that step outside it.
fn spawn_duplex_in(rt: &tokio::runtime::Runtime, script: &str) -> ProcessTransport {
    rt.block_on(async { py(script).fd(3, ChildFd::Duplex).spawn().unwrap() })
}

#[test]
fn a_duplex_is_taken_out_even_with_no_fd_to_spare() {
    let rt = current_thread_runtime();
    let _serial = rt.block_on(SERIAL.lock());
    let script = format!("{OPEN_FD3}\nsock.sendall(b'%d\\n' % (2 * int(lines.readline())))\n");
    let mut child = spawn_duplex_in(&rt, &script);
    // Every fd number below the limit taken: taking the socket out must not need a new one.
    let old = common::nofile_limit().0;
    let highest = *open_fds().iter().max().unwrap() as u64;
    common::set_nofile_soft(highest + 8);
    let mut hogs = Vec::new();
    while let Ok(hog) = std::fs::File::open("/dev/null") {
        hogs.push(hog);
    }
    let taken = rt.block_on(child.take_duplex(3));
    drop(hogs);
    common::set_nofile_soft(old);
    let stream = taken.expect("take_duplex at EMFILE");
    rt.block_on(async {
        let (read, mut write) = stream.into_split();
        write.write_all(b"21\n").await.unwrap();
        let mut answer = String::new();
        within("the answer", BufReader::new(read).read_line(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer, "42\n");
        assert!(within("wait", child.wait()).await.unwrap().success());
    });
}
