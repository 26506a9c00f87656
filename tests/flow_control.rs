//! Flow control and I/O: bounded buffers, backpressure both ways, vectored writes, standalone
//! AsyncRead/AsyncWrite handles, closed ends and pipe capacity.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use process_transport::{
    ChildFd, CloseReason, Command, Error, Event, ProcessTransport, SpawnError, SpawnStep, WriteFlow,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use common::{LIMIT, comm, run_to_end, vm_rss_bytes, write_past_a_closed_stdin};

/// A deterministic pseudo-random byte pattern, so corruption or reordering is detected.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Everything the child writes on fd 1 until its stream ends (recorded, and so checked, as
/// [`run_to_end`] does).
async fn stdout_to_end(child: &mut ProcessTransport) -> Vec<u8> {
    run_to_end(child).await.out(1).to_vec()
}

fn cat() -> Command {
    Command::new("cat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_through_cat_with_random_pauses_arrives_intact() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 256 << 10;
    let input = pattern(TOTAL, 7);
    let mut child = cat().spawn().unwrap();
    let mut sent = 0;
    let mut received = Vec::with_capacity(TOTAL);
    let mut rng = 0x9e37_79b9_u32;
    let mut paused = false;
    let mut pauses = 0;

    let run = async {
        loop {
            // Keep at most a few chunks queued.
            while sent < TOTAL && child.queued_len(0) < 2 * CHUNK {
                let end = (sent + CHUNK).min(TOTAL);
                child
                    .write(0, Bytes::copy_from_slice(&input[sent..end]))
                    .unwrap();
                sent = end;
                if sent == TOTAL {
                    child.close_stdin().unwrap();
                }
            }
            // While paused nothing is read, the child blocks on its full stdout, and no event
            // comes: a timer resumes reading.
            let event = tokio::select! {
                event = child.next() => event.expect("stream ended without Ended"),
                _ = tokio::time::sleep(Duration::from_millis(1)), if paused => {
                    child.resume_reading();
                    paused = false;
                    continue;
                }
            };
            match event {
                Event::Data { fd: 1, data } => received.extend_from_slice(&data),
                Event::Ended(status) => {
                    assert!(status.unwrap().success());
                    break;
                }
                _ => {}
            }
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            if !paused && rng.is_multiple_of(5) {
                child.pause_reading();
                paused = true;
                pauses += 1;
            }
        }
    };
    timeout(LIMIT, run).await.expect("echo stalled");
    assert!(
        pauses > 10,
        "the test should pause often, paused {pauses} times"
    );
    assert_eq!(received.len(), TOTAL);
    assert!(received == input, "echoed bytes differ from the input");
}

#[tokio::test]
async fn a_slow_consumer_keeps_parent_memory_bounded() {
    // The child writes 256 MiB as fast as it can; the consumer is slow. Reads happen only when
    // the consumer asks, so the child blocks on a full pipe instead of the parent buffering.
    const TOTAL: u64 = 256 << 20;
    let mut child = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=256", "status=none"])
        .spawn()
        .unwrap();
    let baseline = vm_rss_bytes();
    let mut peak = baseline;
    let mut got = 0u64;
    let mut events = 0u64;
    let run = async {
        while let Some(event) = child.next().await {
            if let Event::Data { fd: 1, data } = event {
                got += data.len() as u64;
                events += 1;
                if events.is_multiple_of(64) {
                    peak = peak.max(vm_rss_bytes());
                    // Slower than dd: let it fill the pipe and block.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    };
    timeout(LIMIT, run).await.expect("stalled");
    assert_eq!(got, TOTAL);
    let growth = peak.saturating_sub(baseline);
    eprintln!("parent RSS growth while streaming 256 MiB to a slow consumer: {growth} bytes");
    assert!(growth < 16 << 20, "parent RSS grew by {growth} bytes");
}

#[tokio::test]
async fn twisted_echo_shape_eight_writes_then_a_sequence() {
    let mut child = cat().spawn().unwrap();
    let mut expected = Vec::new();
    for i in 0..8u8 {
        let chunk = vec![b'a' + i; 7007];
        expected.extend_from_slice(&chunk);
        child.write(0, chunk).unwrap();
    }
    let tail = [
        Bytes::from_static(b"hello, "),
        Bytes::from_static(b"world\n"),
    ];
    expected.extend_from_slice(b"hello, world\n");
    child.write_sequence(0, tail).unwrap();
    child.close_stdin().unwrap();
    let mut out = Vec::new();
    let run = async {
        while let Some(event) = child.next().await {
            if let Event::Data { fd: 1, data } = event {
                out.extend_from_slice(&data);
            }
        }
    };
    timeout(LIMIT, run).await.unwrap();
    assert_eq!(out, expected);
}

#[tokio::test]
async fn buffered_writes_report_the_high_water_mark_and_resume_after_draining() {
    // `sleep` never reads its stdin, so the 64 KiB pipe fills and the rest queues.
    let mut child = Command::new("sh")
        .args(["-c", "sleep 0.3; cat >/dev/null"])
        .write_high_water(100_000)
        .spawn()
        .unwrap();
    let mut flows = Vec::new();
    for _ in 0..6 {
        flows.push(child.write(0, vec![0u8; 50_000]).unwrap());
    }
    assert_eq!(flows[0], WriteFlow::Open);
    assert_eq!(*flows.last().unwrap(), WriteFlow::Paused);
    child.close_stdin().unwrap();
    let mut seen = Vec::new();
    let run = async {
        while let Some(event) = child.next().await {
            match event {
                Event::WritePaused { fd } => seen.push(("paused", fd)),
                Event::WriteResumed { fd } => seen.push(("resumed", fd)),
                _ => {}
            }
        }
    };
    timeout(LIMIT, run).await.unwrap();
    assert_eq!(seen, [("paused", 0), ("resumed", 0)]);
}

#[tokio::test]
async fn a_write_buffer_limit_refuses_writes_instead_of_growing() {
    let mut child = Command::new("sleep")
        .arg("5")
        .write_buffer_limit(200_000)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Give the reactor a turn so the pipe is known writable; then fill pipe and queue.
    let mut accepted = 0;
    loop {
        match child.write(0, vec![1u8; 50_000]) {
            Ok(_) => accepted += 50_000,
            Err(Error::WriteBufferFull(0)) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(
            accepted <= 200_000 + 65_536,
            "the queue grew past its limit"
        );
    }
    assert!(child.queued_len(0) <= 200_000);
}

#[tokio::test]
async fn async_write_all_completes_when_bytes_are_in_the_pipe() {
    let mut child = Command::new("sh")
        .args(["-c", "head -c 300000 >/dev/null; echo done"])
        .spawn()
        .unwrap();
    timeout(LIMIT, child.write_all(0, vec![9u8; 300_000]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.queued_len(0), 0);
    let out = stdout_to_end(&mut child).await;
    assert_eq!(out, b"done\n");
}

#[tokio::test]
async fn pausing_one_fd_leaves_the_others_flowing() {
    let mut child = Command::new("sh")
        .args(["-c", "echo out; echo err >&2; sleep 0.3; echo out2"])
        .spawn()
        .unwrap();
    child.pause_reading_fd(1).unwrap();
    let first = timeout(LIMIT, child.next()).await.unwrap().unwrap();
    assert!(
        matches!(&first, Event::Data { fd: 2, data } if &data[..] == b"err\n"),
        "got {first:?}"
    );
    // Nothing from fd 1 while it is paused, even though the child wrote to it.
    let quiet = timeout(Duration::from_millis(150), child.next()).await;
    assert!(quiet.is_err(), "got {quiet:?} while fd 1 was paused");
    child.resume_reading_fd(1).unwrap();
    let out = stdout_to_end(&mut child).await;
    assert_eq!(out, b"out\nout2\n");
    assert!(matches!(
        child.pause_reading_fd(0),
        Err(Error::NotReadable(0))
    ));
}

#[tokio::test]
async fn a_child_closing_its_stdin_is_noticed_without_any_write() {
    let mut child = Command::new("sh")
        .args(["-c", "exec 0<&-; echo closed; sleep 5"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let closed = timeout(Duration::from_secs(3), async {
        loop {
            match child.next().await.unwrap() {
                Event::Closed { fd: 0, reason } => return reason,
                Event::Exited(_) => panic!("the child exited first"),
                _ => {}
            }
        }
    })
    .await
    .expect("the close of stdin was not noticed while the child ran");
    assert!(matches!(closed, CloseReason::Eof), "got {closed:?}");
    assert!(child.pid().is_some(), "the child should still be running");
}

#[tokio::test]
async fn a_write_meeting_epipe_becomes_a_closed_event_with_the_error() {
    // The child reads one line, closes stdin and lingers; the rest of our write hits EPIPE.
    let (mut child, reason) = write_past_a_closed_stdin(b"first line\n", LIMIT).await;
    match reason {
        CloseReason::Error(e) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected EPIPE, got {other:?}"),
    }
    assert!(matches!(child.write(0, "more"), Err(Error::PipeClosed(0))));
}

#[tokio::test]
async fn closing_a_reader_makes_the_childs_next_write_fail() {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys,time,os\n\
             time.sleep(0.3)\n\
             try:\n    os.write(1, b'x')\nexcept BrokenPipeError:\n    sys.exit(32)\n\
             sys.exit(0)",
        ])
        .spawn()
        .unwrap();
    child.close_stdout().unwrap();
    let status = timeout(LIMIT, child).await.unwrap().unwrap();
    assert_eq!(
        status.code(),
        Some(32),
        "the child's write should get EPIPE"
    );
}

#[tokio::test]
async fn a_taken_fd_reads_line_records_through_a_codec() {
    use tokio_util::codec::{FramedRead, LinesCodec};
    let mut child = Command::new("sh")
        .args([
            "-c",
            "for i in 1 2 3 4 5; do echo \"record $i\" >&3; done; echo out",
        ])
        .fd(3, ChildFd::ParentReads)
        .spawn()
        .unwrap();
    let records = FramedRead::new(child.take_reader(3).unwrap(), LinesCodec::new());
    let reading =
        tokio::spawn(async move { records.map(|r| r.unwrap()).collect::<Vec<_>>().await });
    let mut saw_fd3 = false;
    let mut out = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        match event {
            Event::Data { fd: 3, .. } | Event::Closed { fd: 3, .. } => saw_fd3 = true,
            Event::Data { fd: 1, data } => out.extend_from_slice(&data),
            _ => {}
        }
    }
    let records = reading.await.unwrap();
    assert_eq!(
        records,
        (1..=5).map(|i| format!("record {i}")).collect::<Vec<_>>()
    );
    assert!(!saw_fd3, "a taken fd must leave the event stream");
    assert_eq!(out, b"out\n");
}

#[tokio::test]
async fn ended_waits_for_a_taken_reader_to_be_dropped() {
    let mut child = Command::new("true").spawn().unwrap();
    let reader = child.take_reader(1).unwrap();
    let early = timeout(Duration::from_millis(300), async {
        while let Some(event) = child.next().await {
            if let Event::Ended(_) = event {
                return;
            }
        }
    })
    .await;
    assert!(
        early.is_err(),
        "Ended arrived while the taken reader was alive"
    );
    drop(reader);
    let ended = timeout(LIMIT, async {
        while let Some(event) = child.next().await {
            if let Event::Ended(status) = event {
                return status;
            }
        }
        panic!("stream finished without Ended");
    })
    .await
    .unwrap();
    assert!(ended.unwrap().success());
}

#[tokio::test]
async fn a_taken_writer_works_with_tokio_io_copy_and_shutdown_gives_eof() {
    let mut child = cat().spawn().unwrap();
    child.write(0, "queued first|").unwrap();
    let mut writer = child.take_writer(0).unwrap();
    let mut reader = child.take_reader(1).unwrap();
    let input = pattern(1 << 20, 3);
    let mut src = &input[..];
    let writing = async {
        tokio::io::copy(&mut src, &mut writer).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut out = Vec::new();
    let reading = reader.read_to_end(&mut out);
    let (_, read) = timeout(LIMIT, async { tokio::join!(writing, reading) })
        .await
        .unwrap();
    read.unwrap();
    assert_eq!(&out[..13], b"queued first|");
    assert!(out[13..] == input[..]);
    let status = timeout(LIMIT, child).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_taken_writer_is_a_sink_of_bytes() {
    let mut child = Command::new("wc").arg("-c").spawn().unwrap();
    let mut sink = child.take_writer(0).unwrap();
    for _ in 0..100 {
        sink.feed(Bytes::from(vec![b'z'; 10_000])).await.unwrap();
    }
    sink.close().await.unwrap();
    let out = stdout_to_end(&mut child).await;
    assert_eq!(String::from_utf8(out).unwrap().trim(), "1000000");
}

#[tokio::test]
async fn taking_needs_the_right_kind_of_pipe() {
    let mut child = cat().kill_on_drop(true).spawn().unwrap();
    assert!(matches!(child.take_reader(0), Err(Error::NotReadable(0))));
    assert!(matches!(child.take_writer(1), Err(Error::NotWritable(1))));
    assert!(matches!(child.take_reader(9), Err(Error::NoSuchPipe(9))));
    let _r = child.take_reader(1).unwrap();
    assert!(matches!(child.take_reader(1), Err(Error::PipeTaken(1))));
    assert!(matches!(child.write(1, "x"), Err(Error::NotWritable(1))));
}

#[tokio::test]
async fn pipe_capacity_is_set_per_fd() {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl\nprint(fcntl.fcntl(1, 1032), fcntl.fcntl(2, 1032))",
        ])
        .pipe_capacity(1, 1 << 20)
        .spawn()
        .unwrap();
    let out = stdout_to_end(&mut child).await;
    assert_eq!(String::from_utf8(out).unwrap().trim(), "1048576 65536");
}

#[tokio::test]
async fn a_refused_pipe_capacity_is_a_typed_spawn_error() {
    let err = Command::new("true")
        .pipe_capacity(1, usize::MAX)
        .spawn()
        .unwrap_err();
    assert!(
        matches!(
            err,
            SpawnError::Spawn {
                step: SpawnStep::SetPipeCapacity(1),
                ..
            }
        ),
        "got {err}"
    );
    let err = Command::new("true")
        .pipe_capacity(5, 1 << 20)
        .spawn()
        .unwrap_err();
    assert!(matches!(err, SpawnError::InvalidInput(_)), "got {err}");
}

/// A child writes 128 MiB on fd 1, then reports its stdout pipe's capacity on fd 2.
async fn stdout_capacity_after_a_busy_stream(command: &mut Command) -> String {
    let mut child = command
        .args([
            "-c",
            "import os, fcntl\n\
             block = b'x' * 65536\n\
             for _ in range(2048):\n    os.write(1, block)\n\
             os.write(2, str(fcntl.fcntl(1, 1032)).encode())",
        ])
        .spawn()
        .unwrap();
    let (mut got, mut err) = (0usize, Vec::new());
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        match event {
            Event::Data { fd: 1, data } => {
                got += data.len();
                if got % (8 << 20) < data.len() {
                    // Now and then the consumer is slow, so the pipe is found full.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Event::Data { fd: 2, data } => err.extend_from_slice(&data),
            _ => {}
        }
    }
    assert_eq!(got, 128 << 20);
    String::from_utf8(err).unwrap()
}

#[tokio::test]
async fn a_busy_default_pipe_grows_to_a_mebibyte() {
    let capacity = stdout_capacity_after_a_busy_stream(&mut Command::new("python3")).await;
    assert_eq!(capacity, "1048576");
}

#[tokio::test]
async fn a_pipe_with_a_chosen_capacity_keeps_it() {
    let capacity =
        stdout_capacity_after_a_busy_stream(Command::new("python3").pipe_capacity(1, 65536)).await;
    assert_eq!(capacity, "65536");
}

#[tokio::test]
async fn closing_an_idle_writer_gives_eof_without_polling_the_transport() {
    let mut child = cat().spawn().unwrap();
    child.write_stdin(&b"hello\n"[..]).unwrap();
    assert_eq!(
        child.queued_len(0),
        0,
        "a small write goes straight into the pipe"
    );
    child.close_stdin().unwrap();
    // Only the taken reader is polled from here on, never the transport.
    let mut out = child.take_reader(1).unwrap();
    let mut buf = Vec::new();
    let read = timeout(Duration::from_secs(5), out.read_to_end(&mut buf)).await;
    let _ = child.kill().await;
    assert!(
        read.is_ok(),
        "cat never saw EOF: close_stdin waited for a poll"
    );
    assert_eq!(buf, b"hello\n");
}

#[tokio::test]
async fn no_event_for_an_fd_comes_after_its_close() {
    // fd 0 gets WritePaused, then its queue drains and it closes while nobody polls: the
    // WriteResumed that the drain causes must come before Closed { fd: 0 }, never after.
    let mut child = Command::new("sh")
        .args(["-c", "exec >&-; sleep 0.3; exec cat >/dev/null"])
        .write_high_water(1024)
        .spawn()
        .unwrap();
    child.write_stdin(vec![b'x'; 72 * 1024]).unwrap();
    assert!(child.queued_len(0) > 1024);
    child.close_stdin().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut events = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        events.push(format!("{event:?}"));
    }
    let closed = events
        .iter()
        .position(|e| e.starts_with("Closed { fd: 0"))
        .expect("fd 0 closed");
    let after: Vec<_> = events[closed + 1..]
        .iter()
        .filter(|e| e.contains("fd: 0"))
        .collect();
    assert!(
        after.is_empty(),
        "events for fd 0 after its close: {after:?} in {events:?}"
    );
}

#[tokio::test]
async fn kept_small_chunks_do_not_pin_read_buffers() {
    // 2,000 small lines, every chunk kept: the parent must not hold a 64 KiB buffer per chunk.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); sleep 0.0001; done",
        ])
        .spawn()
        .unwrap();
    let mut kept = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        if let Event::Data { fd: 1, data } = event {
            kept.push(data);
        }
    }
    let bytes: usize = kept.iter().map(Bytes::len).sum();
    assert!(
        kept.len() > 100,
        "the test wants many separate chunks, got {}",
        kept.len()
    );
    // The buffer behind each small chunk: its capacity shows what the chunk keeps alive.
    let pinned: Vec<usize> = kept
        .into_iter()
        .filter(|chunk| chunk.len() < 1024)
        .filter_map(|chunk| chunk.try_into_mut().ok().map(|buf| buf.capacity()))
        .collect();
    let owning = pinned.iter().filter(|&&cap| cap < 4096).count();
    assert!(
        owning > 100,
        "small chunks pin big read buffers ({bytes} bytes kept): {:?}",
        &pinned[..pinned.len().min(5)]
    );
}

/// Streams 64 MiB into a child that reads slowly now and then, and returns the capacity of its
/// stdin pipe as the child saw it at the end.
async fn stdin_capacity_after_a_busy_stream(command: &mut Command) -> String {
    let mut child = command
        .args([
            "-c",
            "import os, fcntl, time\n\
             n = 0\n\
             while True:\n    b = os.read(0, 65536)\n    if not b: break\n    n += len(b)\n    \
             if n % (8 << 20) < len(b): time.sleep(0.005)\n\
             print(n, fcntl.fcntl(0, 1032))",
        ])
        .spawn()
        .unwrap();
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    for _ in 0..64 {
        timeout(LIMIT, child.write_all(0, chunk.clone()))
            .await
            .unwrap()
            .unwrap();
    }
    child.close_stdin().unwrap();
    let out = stdout_to_end(&mut child).await;
    String::from_utf8(out).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_busy_default_stdin_pipe_grows_to_a_mebibyte() {
    let report = stdin_capacity_after_a_busy_stream(&mut Command::new("python3")).await;
    assert_eq!(report, format!("{} 1048576", 64 << 20));
}

#[tokio::test]
async fn a_stdin_pipe_with_a_chosen_capacity_keeps_it() {
    let report =
        stdin_capacity_after_a_busy_stream(Command::new("python3").pipe_capacity(0, 65536)).await;
    assert_eq!(report, format!("{} 65536", 64 << 20));
}

// ----- writes to a pipe that is already broken --------------------------------------------

/// A child that has closed its stdin (and execs `sleep`, to linger), once it has done so.
async fn child_with_a_closed_stdin() -> ProcessTransport {
    let child = Command::new("sh")
        .args(["-c", "exec 0<&-; exec sleep 30"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    let closed = common::eventually(LIMIT, || comm(pid).as_deref() == Some("sleep")).await;
    assert!(closed, "the child never got to close its stdin");
    child
}

/// Asserts that `e` is the OS's own EPIPE.
fn assert_epipe(e: &std::io::Error) {
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "got {e:?}");
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "got {e:?}");
}

/// Kills the child and checks what the stream reports for fd 0 after a write found the pipe
/// broken: exactly one `Closed` with EPIPE, and no `WritePaused`.
async fn assert_fd0_closed_with_epipe_and_never_paused(mut child: ProcessTransport) {
    child.signal(libc::SIGKILL).unwrap();
    let mut closes = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        match event {
            Event::Closed { fd: 0, reason } => closes.push(reason),
            Event::WritePaused { fd: 0 } => panic!("WritePaused for a broken pipe"),
            _ => {}
        }
    }
    match &closes[..] {
        [CloseReason::Error(e)] => assert_epipe(e),
        other => panic!("expected one Closed with EPIPE for fd 0, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_to_an_already_broken_pipe_fails_with_epipe() {
    let mut child = child_with_a_closed_stdin().await;
    // Above the high-water mark, which used to report `Paused`.
    match child.write(0, vec![b'x'; 200_000]) {
        Err(Error::Io(e)) => assert_epipe(&e),
        other => panic!("expected EPIPE, got {other:?}"),
    }
    assert!(matches!(child.write(0, "more"), Err(Error::PipeClosed(0))));
    assert_fd0_closed_with_epipe_and_never_paused(child).await;
}

#[tokio::test]
async fn a_small_write_to_an_already_broken_pipe_fails_with_epipe() {
    let mut child = child_with_a_closed_stdin().await;
    match child.write_stdin("x") {
        Err(Error::Io(e)) => assert_epipe(&e),
        other => panic!("expected EPIPE, got {other:?}"),
    }
    assert_fd0_closed_with_epipe_and_never_paused(child).await;
}

#[tokio::test]
async fn a_write_sequence_to_an_already_broken_pipe_fails_with_epipe() {
    let mut child = child_with_a_closed_stdin().await;
    let chunks = [
        Bytes::from(vec![1u8; 100_000]),
        Bytes::from(vec![2u8; 100_000]),
    ];
    match child.write_sequence(0, chunks) {
        Err(Error::Io(e)) => assert_epipe(&e),
        other => panic!("expected EPIPE, got {other:?}"),
    }
    assert_fd0_closed_with_epipe_and_never_paused(child).await;
}

#[tokio::test]
async fn write_all_to_an_already_broken_pipe_fails_with_epipe() {
    let mut child = child_with_a_closed_stdin().await;
    let written = timeout(LIMIT, child.write_all(0, vec![b'x'; 200_000]))
        .await
        .unwrap();
    match written {
        Err(Error::Io(e)) => assert_epipe(&e),
        other => panic!("expected EPIPE, got {other:?}"),
    }
    assert_fd0_closed_with_epipe_and_never_paused(child).await;
}

#[tokio::test]
async fn write_all_meeting_epipe_while_flushing_keeps_the_os_error() {
    // The child takes 1000 bytes, then closes its stdin: the rest of the write is queued
    // when the pipe breaks.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "dd bs=1000 count=1 of=/dev/null status=none; exec 0<&-; exec sleep 30",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let written = timeout(LIMIT, child.write_all(0, vec![b'x'; 1 << 20]))
        .await
        .unwrap();
    match written {
        Err(Error::Io(e)) => {
            assert_epipe(&e);
            // What converts the crate's error into an `io::Error` keeps it as well.
            assert_epipe(&std::io::Error::from(Error::Io(e)));
        }
        other => panic!("expected EPIPE, got {other:?}"),
    }
    child.signal(libc::SIGKILL).unwrap();
    let mut reasons = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        if let Event::Closed { fd: 0, reason } = event {
            reasons.push(reason);
        }
    }
    match &reasons[..] {
        [CloseReason::Error(e)] => assert_epipe(e),
        other => panic!("expected one Closed with EPIPE for fd 0, got {other:?}"),
    }
}

#[tokio::test]
async fn a_taken_writer_reports_an_already_broken_pipe_and_no_longer_holds_back_ended() {
    let mut child = child_with_a_closed_stdin().await;
    let mut writer = child.take_writer(0).unwrap();
    let err = writer.write_all(&[b'x'; 200_000]).await.unwrap_err();
    assert_epipe(&err);
    let err = writer
        .send(Bytes::from_static(b"as a sink"))
        .await
        .unwrap_err();
    assert_epipe(&err);
    // The handle is still held, but its pipe is done: the stream ends once the child does.
    child.signal(libc::SIGKILL).unwrap();
    let ended = timeout(Duration::from_secs(10), async {
        while let Some(event) = child.next().await {
            if let Event::Ended(status) = event {
                return status;
            }
        }
        panic!("the stream finished without Ended");
    })
    .await
    .expect("Ended held back by a taken writer whose pipe is broken");
    assert_eq!(ended.unwrap().signal(), Some(libc::SIGKILL));
    drop(writer);
}

// ----- pausing holds back what was already read --------------------------------------------

/// A child that closes its stdin, writes `out` on fd 1 (and, with `close_stdout`, closes it),
/// then lingers; returned once it has done all that and the reactor has seen it, so that the
/// transport's first poll queues `Closed { fd: 0 }` and then reads fd 1.
async fn child_that_closed_stdin_and_wrote(close_stdout: bool) -> ProcessTransport {
    let script = if close_stdout {
        "exec 0<&-; echo out; exec 1>&-; exec sleep 30"
    } else {
        "exec 0<&-; echo out; exec sleep 30"
    };
    let child = Command::new("sh")
        .args(["-c", script])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    let ready = common::eventually(LIMIT, || comm(pid).as_deref() == Some("sleep")).await;
    assert!(ready, "the child never got to sleep");
    tokio::time::sleep(Duration::from_millis(100)).await;
    child
}

/// The next event, or `None` if none comes within `wait`.
async fn next_within(child: &mut ProcessTransport, wait: Duration) -> Option<Event> {
    timeout(wait, child.next()).await.ok().flatten()
}

#[tokio::test]
async fn pause_reading_holds_back_a_chunk_already_read() {
    let mut child = child_that_closed_stdin_and_wrote(false).await;
    // One poll notices the closed stdin and reads fd 1; the close comes out first.
    let first = timeout(LIMIT, child.next()).await.unwrap().unwrap();
    assert!(
        matches!(first, Event::Closed { fd: 0, .. }),
        "expected stdin's close first, got {first:?}"
    );
    child.pause_reading();
    let held = next_within(&mut child, Duration::from_millis(500)).await;
    assert!(held.is_none(), "got {held:?} after pause_reading returned");
    child.resume_reading();
    let next = timeout(LIMIT, child.next()).await.unwrap().unwrap();
    assert!(
        matches!(&next, Event::Data { fd: 1, data } if &data[..] == b"out\n"),
        "the held chunk should come first after resuming, got {next:?}"
    );
}

#[tokio::test]
async fn pause_reading_fd_holds_back_a_chunk_and_the_close_behind_it() {
    let mut child = child_that_closed_stdin_and_wrote(true).await;
    let first = timeout(LIMIT, child.next()).await.unwrap().unwrap();
    assert!(
        matches!(first, Event::Closed { fd: 0, .. }),
        "expected stdin's close first, got {first:?}"
    );
    child.pause_reading_fd(1).unwrap();
    // Closing the paused fd queues its Closed behind the held chunk.
    child.close_stdout().unwrap();
    child.signal(libc::SIGKILL).unwrap();
    let mut while_paused = Vec::new();
    while let Some(event) = next_within(&mut child, Duration::from_millis(500)).await {
        while_paused.push(format!("{event:?}"));
    }
    assert!(
        while_paused.iter().all(|e| !e.contains("fd: 1")),
        "events for the paused fd 1: {while_paused:?}"
    );
    assert!(
        !while_paused.iter().any(|e| e.starts_with("Ended")),
        "Ended came while fd 1 still had events held: {while_paused:?}"
    );
    child.resume_reading_fd(1).unwrap();
    let mut after = Vec::new();
    while let Some(event) = timeout(LIMIT, child.next()).await.unwrap() {
        after.push(event);
    }
    assert!(
        matches!(&after[0], Event::Data { fd: 1, data } if &data[..] == b"out\n"),
        "got {after:?}"
    );
    assert!(
        matches!(
            &after[1],
            Event::Closed {
                fd: 1,
                reason: CloseReason::Closed
            }
        ),
        "got {after:?}"
    );
    assert!(
        matches!(after.last(), Some(Event::Ended(_))),
        "got {after:?}"
    );
}

#[tokio::test]
async fn closing_a_paused_fd_with_nothing_held_reports_the_close_at_once() {
    let mut child = Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child.pause_reading_fd(1).unwrap();
    child.close_stdout().unwrap();
    let event = timeout(LIMIT, child.next()).await.unwrap().unwrap();
    assert!(
        matches!(
            event,
            Event::Closed {
                fd: 1,
                reason: CloseReason::Closed
            }
        ),
        "got {event:?}"
    );
}

// ----- taken pipes that are done ------------------------------------------------------------

/// The transport's stream, consumed to `Ended` within a few seconds while the caller still
/// holds a taken handle.
async fn ended_within_a_few_seconds(child: &mut ProcessTransport, what: &str) -> ExitStatusOf {
    timeout(Duration::from_secs(10), async {
        while let Some(event) = child.next().await {
            if let Event::Ended(status) = event {
                return status;
            }
        }
        panic!("the stream finished without Ended");
    })
    .await
    .unwrap_or_else(|_| panic!("Ended held back: {what}"))
}

type ExitStatusOf = Result<process_transport::ExitStatus, process_transport::WaitError>;

#[tokio::test]
async fn a_taken_reader_read_to_eof_no_longer_holds_back_ended() {
    let mut child = Command::new("sh")
        .args(["-c", "echo hello"])
        .spawn()
        .unwrap();
    let mut reader = child.take_reader(1).unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, reader.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"hello\n");
    let status = ended_within_a_few_seconds(&mut child, "reader at EOF still held").await;
    assert!(status.unwrap().success());
    drop(reader);
}

#[tokio::test]
async fn a_taken_reader_streamed_to_its_end_no_longer_holds_back_ended() {
    let mut child = Command::new("sh")
        .args(["-c", "echo hello"])
        .spawn()
        .unwrap();
    let mut reader = child.take_reader(1).unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = timeout(LIMIT, reader.next()).await.unwrap() {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out, b"hello\n");
    let status =
        ended_within_a_few_seconds(&mut child, "reader stream at its end still held").await;
    assert!(status.unwrap().success());
    drop(reader);
}

#[tokio::test]
async fn a_taken_writer_that_was_shut_down_no_longer_holds_back_ended() {
    let mut child = cat().spawn().unwrap();
    let mut writer = child.take_writer(0).unwrap();
    timeout(LIMIT, writer.write_all(b"bye\n"))
        .await
        .unwrap()
        .unwrap();
    timeout(LIMIT, writer.shutdown()).await.unwrap().unwrap();
    let out = timeout(Duration::from_secs(10), async {
        let mut out = Vec::new();
        while let Some(event) = child.next().await {
            match event {
                Event::Data { fd: 1, data } => out.extend_from_slice(&data),
                Event::Ended(status) => {
                    assert!(status.unwrap().success());
                    return out;
                }
                _ => {}
            }
        }
        panic!("the stream finished without Ended");
    })
    .await
    .expect("Ended held back by a shut-down writer");
    assert_eq!(out, b"bye\n");
    drop(writer);
}

/// A child that writes `before` on fd 1 and exits, with its other fds at /dev/null, after
/// one event: the poll that saw the exit also read the data, which is queued behind it.
async fn data_queued_behind_the_exit() -> ProcessTransport {
    let mut child = Command::new("sh")
        .args(["-c", "printf before"])
        .fds([
            (0, ChildFd::Null),
            (1, ChildFd::ParentReads),
            (2, ChildFd::Null),
        ])
        .spawn()
        .unwrap();
    // Until the child is reaped, then once more through the reactor, so that the pipe's
    // readiness is known too: the next poll then finds both the exit and the data.
    while child.pid().is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = timeout(LIMIT, child.next()).await.unwrap();
    assert!(matches!(first, Some(Event::Exited(_))), "{first:?}");
    child
}

#[tokio::test]
async fn a_reader_taken_out_reads_first_what_the_transport_had_read() {
    for paused in [false, true] {
        let mut child = data_queued_behind_the_exit().await;
        if paused {
            child.pause_reading_fd(1).unwrap();
        }
        let mut reader = child.take_reader(1).unwrap();
        let mut got = String::new();
        timeout(LIMIT, reader.read_to_string(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, "before", "paused: {paused}");
        // No data event comes for it any more, and nothing holds `Ended` back.
        let rest: Vec<Event> = timeout(LIMIT, child.collect()).await.unwrap();
        assert!(
            matches!(rest.as_slice(), [Event::Ended(Ok(_))]),
            "paused: {paused}: {rest:?}"
        );
    }
}
