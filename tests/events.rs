//! Three ways to consume the same transport (await, Stream, ProcessProtocol) and the ordering
//! guarantees: per fd data before its close; `Exited` exactly once when the child is reaped;
//! `Ended` exactly once and last; `pid()` is `None` once reaped. A chatty child never deadlocks a
//! caller that only awaits, and a slow consumer holds the child back instead of buffering its
//! output.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use process_transport::{
    ChildFd, CloseReason, Command, Event, ExitStatus, ProcessProtocol, ProcessTransport, WaitError,
};

use common::rerun::in_own_process;
use common::{
    Outcome, Rec, in_a_task, multi_thread_runtime, own_cpu_time, py, record, run_to_end, sh, within,
};

const OUT_ERR_EXIT_4: &str = "echo out; echo err >&2; exit 4";

// ----- three consumption styles ----------------------------------------------------------

#[tokio::test]
async fn awaiting_the_transport_gives_the_exit_status() {
    let child = sh(OUT_ERR_EXIT_4).spawn().unwrap();
    let status: ExitStatus = within("await", child).await.unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(status.signal(), None);
    assert!(!status.success());
    assert_eq!(status.raw(), 4 << 8);
    assert_eq!(status.to_string(), "exit code 4");
}

#[tokio::test]
async fn wait_gives_the_exit_status_and_can_be_repeated() {
    let mut child = sh("exit 0").spawn().unwrap();
    assert!(within("wait", child.wait()).await.unwrap().success());
    assert!(within("wait again", child.wait()).await.unwrap().success());
}

#[tokio::test]
async fn after_wait_the_stream_still_tells_of_the_exit_and_of_each_pipe_s_end() {
    let mut child = sh(OUT_ERR_EXIT_4).spawn().unwrap();
    assert_eq!(within("wait", child.wait()).await.unwrap().code(), Some(4));
    // wait left the readers open: their ends, the exit and the end come after it, each once,
    // and so does the close of stdin, which wait itself closed.
    let after = run_to_end(&mut child).await;
    after.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(after.close_reason(0), "Closed");
    assert_eq!(after.close_reason(1), "Eof");
    assert_eq!(after.close_reason(2), "Eof");
    assert_eq!(after.status().code(), Some(4));
}

#[test]
fn exited_comes_once_after_wait_even_when_the_exit_lands_inside_its_poll() {
    // The reaper thread reaps (a handle waits, so the pidfd is the reaper's), possibly
    // between wait's own look at the exit and the event poll it makes next, which then
    // yields `Exited` itself: wait must not discard it. Raced 200 times (it took 21-47 runs
    // to lose it when wait did).
    let rt = multi_thread_runtime(2);
    for run in 0..200 {
        let after = in_a_task(&rt, async {
            let mut child = Command::new("head")
                .args(["-c", "400000", "/dev/zero"])
                .spawn()
                .unwrap();
            let handle = child.handle();
            let waiter = tokio::spawn(async move { handle.exited().await });
            // Queued on stdin, so that wait's event poll has writing to do first.
            let _ = child.write_stdin(vec![b'x'; 200_000]);
            within("wait", child.wait()).await.unwrap();
            let _ = waiter.await;
            run_to_end(&mut child).await
        });
        assert_eq!(after.exits().count(), 1, "run {run}: {:?}", after.log);
    }
}

#[tokio::test]
async fn wait_leaves_what_a_pipe_closed_by_the_child_still_holds_for_the_events_after_it() {
    // wait drains pipes only so that the child cannot block on a full one; one the child has
    // closed can block nobody, so its last output is not thrown away.
    let mut child = sh("printf tail; exec 1>&-; echo closed >&2; sleep 0.3")
        .spawn()
        .unwrap();
    child.pause_reading_fd(1).unwrap();
    while !matches!(
        within("stderr", child.next()).await,
        Some(Event::Data { fd: 2, .. })
    ) {}
    assert!(within("wait", child.wait()).await.unwrap().success());
    let after = run_to_end(&mut child).await;
    assert_eq!(after.text(1), "tail");
    assert_eq!(after.close_reason(1), "Eof");
    assert!(after.status().success());
}

#[test]
fn a_wait_pending_on_pipes_the_child_closed_does_not_spin() {
    let name = "a_wait_pending_on_pipes_the_child_closed_does_not_spin";
    // Alone in a process of its own: the CPU time measured is this test's.
    if !in_own_process(name) {
        return;
    }
    // wait leaves those pipes unread with their readiness set; it must not poll them in a
    // loop for the second the child still runs.
    let (used, after) = in_a_task(&multi_thread_runtime(2), async {
        let mut child = sh("echo x; echo y >&2; exec 1>&- 2>&-; sleep 1")
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu = own_cpu_time();
        assert!(within("wait", child.wait()).await.unwrap().success());
        let used = own_cpu_time() - cpu;
        (used, run_to_end(&mut child).await)
    });
    assert!(
        used < Duration::from_millis(150),
        "{used:?} of CPU in a 1 s wait"
    );
    assert_eq!((after.text(1), after.text(2)), ("x\n".into(), "y\n".into()));
    assert_eq!(after.exits().count(), 1, "{:?}", after.log);
}

#[tokio::test]
async fn stream_yields_data_closes_exited_and_ended() {
    let mut child = sh(OUT_ERR_EXIT_4).spawn().unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(out.text(1), "out\n");
    assert_eq!(out.text(2), "err\n");
    assert_eq!(out.status().code(), Some(4));
    assert_eq!(out.close_reason(1), "Eof");
    assert_eq!(out.close_reason(2), "Eof");
}

/// Records every callback, Twisted-style.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    out: Vec<u8>,
    err: Vec<u8>,
    pid_at_connection: Option<u32>,
    pid_at_exit: Option<Option<u32>>,
}

impl ProcessProtocol for Recorder {
    fn connection_made(&mut self, transport: &mut ProcessTransport) {
        self.calls.push("made".into());
        self.pid_at_connection = transport.pid();
        transport.write_stdin(&b"ping\n"[..]).unwrap();
        transport.close_stdin().unwrap();
    }
    fn out_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
        self.calls.push("out".into());
        self.out.extend_from_slice(&data);
    }
    fn err_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
        self.calls.push("err".into());
        self.err.extend_from_slice(&data);
    }
    fn in_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.calls.push("in-lost".into());
    }
    fn out_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.calls.push("out-lost".into());
    }
    fn err_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.calls.push("err-lost".into());
    }
    fn process_exited(
        &mut self,
        transport: &mut ProcessTransport,
        status: Result<ExitStatus, WaitError>,
    ) {
        self.calls
            .push(format!("exited {:?}", status.map(|s| s.code())));
        self.pid_at_exit = Some(transport.pid());
    }
    fn process_ended(&mut self, status: Result<ExitStatus, WaitError>) {
        self.calls
            .push(format!("ended {:?}", status.map(|s| s.code())));
    }
}

fn position(calls: &[String], what: &str) -> usize {
    calls
        .iter()
        .position(|c| c == what)
        .unwrap_or_else(|| panic!("no {what}: {calls:?}"))
}

#[tokio::test]
async fn protocol_defaults_route_fd_1_and_2_to_out_and_err_and_drop_other_fds() {
    let child = sh("read x; echo \"out:$x\"; echo \"err:$x\" >&2; echo three >&3; exit 5")
        .fd(3, ChildFd::ParentReads)
        .spawn()
        .unwrap();
    let pid = child.pid();
    let (rec, status) = within("protocol run", child.run(Recorder::default())).await;
    assert_eq!(status.unwrap().code(), Some(5));
    assert_eq!(rec.out, b"out:ping\n", "fd 1 went to out_received");
    assert_eq!(
        rec.err, b"err:ping\n",
        "fd 2 went to err_received; fd 3 went nowhere"
    );
    assert_eq!(
        rec.pid_at_connection, pid,
        "connection_made sees the running child"
    );
    assert_eq!(
        rec.pid_at_exit,
        Some(None),
        "pid() is None in process_exited"
    );

    let calls = &rec.calls;
    assert_eq!(calls[0], "made", "connection_made first: {calls:?}");
    assert_eq!(
        calls.last().unwrap(),
        "ended Ok(Some(5))",
        "process_ended last: {calls:?}"
    );
    for once in [
        "in-lost",
        "out-lost",
        "err-lost",
        "exited Ok(Some(5))",
        "ended Ok(Some(5))",
    ] {
        assert_eq!(
            calls.iter().filter(|c| *c == once).count(),
            1,
            "{once} once: {calls:?}"
        );
    }
    let last_out = calls.iter().rposition(|c| c == "out").unwrap();
    let last_err = calls.iter().rposition(|c| c == "err").unwrap();
    assert!(last_out < position(calls, "out-lost"), "{calls:?}");
    assert!(last_err < position(calls, "err-lost"), "{calls:?}");
}

/// Overrides the per-fd callbacks to see every fd, including 3.
#[derive(Default)]
struct AllFds {
    data: Vec<(i32, Vec<u8>)>,
    lost: Vec<(i32, bool)>,
}

impl ProcessProtocol for AllFds {
    fn child_data_received(&mut self, _: &mut ProcessTransport, fd: i32, data: Bytes) {
        self.data.push((fd, data.to_vec()));
    }
    fn child_connection_lost(&mut self, _: &mut ProcessTransport, fd: i32, reason: CloseReason) {
        self.lost.push((fd, matches!(reason, CloseReason::Eof)));
    }
}

#[tokio::test]
async fn protocol_can_take_over_every_fd() {
    let child = sh("echo three >&3; echo one")
        .fds([(1, ChildFd::ParentReads), (3, ChildFd::ParentReads)])
        .spawn()
        .unwrap();
    let (p, status) = within("protocol run", child.run(AllFds::default())).await;
    assert!(status.unwrap().success());
    let mut data = p.data.clone();
    data.sort();
    assert_eq!(data, [(1, b"one\n".to_vec()), (3, b"three\n".to_vec())]);
    let mut lost = p.lost.clone();
    lost.sort();
    assert_eq!(lost, [(1, true), (3, true)]);
}

#[tokio::test]
async fn the_three_styles_agree_on_the_same_command() {
    let awaited = within("await", sh(OUT_ERR_EXIT_4).spawn().unwrap())
        .await
        .unwrap();
    let streamed = run_to_end(&mut sh(OUT_ERR_EXIT_4).spawn().unwrap())
        .await
        .status();
    let (_, protocol) = within(
        "run",
        sh(OUT_ERR_EXIT_4).spawn().unwrap().run(AllFds::default()),
    )
    .await;
    assert_eq!(awaited.raw(), streamed.raw());
    assert_eq!(awaited.raw(), protocol.unwrap().raw());
}

// ----- ordering guarantees ---------------------------------------------------------------

#[tokio::test]
async fn pid_is_the_running_child_until_it_is_reaped() {
    let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
    let pid = child.pid().expect("running");
    let (state, ppid) = common::proc_state(pid).expect("the pid exists");
    assert_eq!(ppid, std::process::id(), "it is our child");
    assert_ne!(state, 'Z');
    let out = run_to_end(&mut child).await; // checks pid() is None right after Exited
    assert!(out.status().success());
    assert_eq!(child.pid(), None);
}

const INTERLEAVED_CHILD: &str = r#"
import os
for i in range(200):
    fd = (1, 2, 3, 4)[i % 4]
    if fd == 3 and i > 100:
        continue
    os.write(fd, b"%d:%03d;" % (fd, i))
    if i == 101:
        os.close(3)
os.close(2)
for i in range(50):
    os.write(1, b"tail%02d;" % i)
    os.write(4, b"tail%02d;" % i)
"#;

#[tokio::test]
async fn every_fd_gets_all_its_data_then_exactly_one_close() {
    let mut child = py(INTERLEAVED_CHILD)
        .fds([
            (1, ChildFd::ParentReads),
            (2, ChildFd::ParentReads),
            (3, ChildFd::ParentReads),
            (4, ChildFd::ParentReads),
        ])
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[1, 2, 3, 4]);
    assert!(out.status().success(), "{:?}", out.log);
    for fd in [1, 2, 3, 4] {
        let mut expected: String = (0..200)
            .filter(|i| [1, 2, 3, 4][i % 4] == fd && !(fd == 3 && *i > 100))
            .map(|i| format!("{fd}:{i:03};"))
            .collect();
        if fd == 1 || fd == 4 {
            expected.extend((0..50).map(|i| format!("tail{i:02};")));
        }
        assert_eq!(out.text(fd), expected, "fd {fd}");
        assert_eq!(out.close_reason(fd), "Eof");
    }
}

#[tokio::test]
async fn a_pipe_the_child_closes_early_is_closed_while_the_child_still_runs() {
    // The child closes its stdin without reading it, then waits on fd 3.
    let mut child = sh("exec 0<&-; echo stdin-closed; read x <&3; echo got-$x")
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    let mut out = Outcome::default();
    within("Closed(0) while running", async {
        while !out.is_closed(0) {
            let event = child.next().await.expect("stream ended early");
            assert!(!record(&mut out, event));
        }
    })
    .await;
    assert!(
        !out.log.iter().any(|r| matches!(r, Rec::Exited(_))),
        "{:?}",
        out.log
    );
    assert!(child.pid().is_some(), "the child still runs");
    assert_eq!(out.close_reason(0), "Eof", "noticed without writing to it");
    child.write(3, &b"go\n"[..]).unwrap();
    let rest = run_to_end(&mut child).await;
    assert!(rest.status().success());
    assert_eq!(
        format!("{}{}", out.text(1), rest.text(1)),
        "stdin-closed\ngot-go\n"
    );
}

#[tokio::test]
async fn grandchild_holding_the_pipes_delays_ended_but_not_exited() {
    // The child exits at once; a grandchild keeps fds 1, 2 and 3 until it reads a line on 3.
    // (stdin is /dev/null: sh gives background jobs /dev/null as stdin, so a stdin pipe would
    // close at a moment that depends on scheduling.)
    let mut child = sh("echo early; (read x <&3; echo \"late $x\") & exit 6")
        .stdin(ChildFd::Null)
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    let mut out = Outcome::default();
    within("Exited while the grandchild holds the pipes", async {
        // Data may come after Exited, so wait for both.
        while !out.log.iter().any(|r| matches!(r, Rec::Exited(_))) || out.text(1) != "early\n" {
            let event = child.next().await.expect("stream ended early");
            assert!(
                !record(&mut out, event),
                "Ended came while the pipes are open"
            );
        }
    })
    .await;
    assert_eq!(child.pid(), None);
    assert!(!out.is_closed(1), "stdout is still open: {:?}", out.log);
    // Nothing more comes while the grandchild waits: in particular no Ended.
    match tokio::time::timeout(Duration::from_millis(300), child.next()).await {
        Err(_elapsed) => {}
        Ok(event) => panic!("unexpected event while the pipes are held: {event:?}"),
    }
    child.write(3, &b"now\n"[..]).unwrap();
    within("the rest", async {
        while let Some(event) = child.next().await {
            if record(&mut out, event) {
                break;
            }
        }
    })
    .await;
    out.assert_well_ordered(&[1, 2, 3]);
    assert_eq!(
        out.status().code(),
        Some(6),
        "Ended carries the child's status"
    );
    assert_eq!(out.text(1), "early\nlate now\n");
}

#[tokio::test]
async fn lose_connection_ends_a_transport_whose_grandchild_holds_the_pipes() {
    let mut child = sh("(read x <&3; echo never-read) & exit 0")
        .fd(3, ChildFd::ParentWrites)
        .spawn()
        .unwrap();
    let mut out = Outcome::default();
    within("Exited", async {
        while !out.log.iter().any(|r| matches!(r, Rec::Exited(_))) {
            let event = child.next().await.expect("stream ended early");
            assert!(!record(&mut out, event));
        }
    })
    .await;
    // Closing fd 3 from the parent also lets the grandchild finish (EOF on its read).
    child.lose_connection();
    within("Ended after lose_connection", async {
        while let Some(event) = child.next().await {
            if record(&mut out, event) {
                break;
            }
        }
    })
    .await;
    out.assert_well_ordered(&[0, 1, 2, 3]);
    for fd in [1, 2, 3] {
        assert_eq!(
            out.close_reason(fd),
            "Closed",
            "fd {fd} closed by the parent"
        );
    }
}

// ----- exit statuses ---------------------------------------------------------------------

#[tokio::test]
async fn death_by_signal_is_reported_as_the_signal() {
    let mut child = sh("kill -TERM $$; sleep 5").spawn().unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    let status = out.status();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(status.code(), None);
    assert!(!status.success());
    assert!(!status.core_dumped());
    assert_eq!(status.raw() & 0x7f, libc::SIGTERM);
    assert_eq!(status.to_string(), "killed by signal 15");
}

#[tokio::test]
async fn exit_codes_are_reported_exactly() {
    for code in [0, 1, 2, 100, 255] {
        let status = within("exit code", sh(&format!("exit {code}")).spawn().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(code));
        assert_eq!(status.success(), code == 0);
        assert_eq!(status.raw(), code << 8);
    }
}

// ----- volume and backpressure -----------------------------------------------------------

const TEN_MIB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn awaiting_only_never_deadlocks_on_a_child_writing_10_mib_to_stdout_and_stderr() {
    let child = sh("head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2; exit 3")
        .spawn()
        .unwrap();
    let status = within("10 MiB on each of fds 1 and 2, awaited", child)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_10_mib_delivers_every_byte() {
    let mut child = Command::new("dd")
        .args(["if=/dev/zero", "bs=1048576", "count=10"])
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[0, 1, 2]);
    assert!(out.status().success());
    assert_eq!(out.data[&1].len(), TEN_MIB);
    assert!(out.data[&1].iter().all(|&b| b == 0));
    assert!(
        out.text(2).contains("10485760 bytes"),
        "dd's report on fd 2: {}",
        out.text(2)
    );
}

#[tokio::test]
async fn a_slow_consumer_holds_the_child_back_instead_of_buffering() {
    let mut child = sh("head -c 10485760 /dev/zero; echo finished >&2")
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    // Nobody reads for a while: the child must block on the full pipe, not run to the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.pid().is_some(), "the child could not have finished");
    assert!(!common::is_our_zombie(pid));
    let mut total = 0;
    let mut max_chunk = 0;
    let mut out = Outcome::default();
    within("slow consumer", async {
        while let Some(event) = child.next().await {
            if let Event::Data { fd: 1, data } = &event {
                total += data.len();
                max_chunk = max_chunk.max(data.len());
                if total % (1024 * 1024) < data.len() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
            if record(&mut out, event) {
                break;
            }
        }
    })
    .await;
    assert_eq!(total, TEN_MIB);
    assert!(
        max_chunk <= 1024 * 1024,
        "one event holds at most a bounded read: {max_chunk}"
    );
    assert_eq!(out.text(2), "finished\n");
}

#[tokio::test]
async fn a_cancelled_wait_leaves_its_events_for_the_stream_in_order() {
    let mut child = sh("sleep 0.2; echo out").spawn().unwrap();
    // Cancelled: it has closed stdin, and its Closed waits for the stream.
    let cancelled = tokio::time::timeout(Duration::from_millis(20), child.wait()).await;
    assert!(cancelled.is_err());
    let out = run_to_end(&mut child).await;
    assert!(
        matches!(out.log.first(), Some(Rec::Closed(0, _))),
        "{:?}",
        out.log
    );
    out.assert_well_ordered(&[0, 1, 2]);
    assert_eq!(out.text(1), "out\n");
}
