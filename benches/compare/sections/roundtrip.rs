//! Round trips of small messages: one 64-byte line written to `cat` and read back, many times
//! in a row on one child, as a request/response helper (a language server, a JSON-RPC tool)
//! sees it. Our event stream and our taken pipes against Tokio's ChildStdin/ChildStdout and a
//! blocking std thread (the floor).

use std::io::{Read, Write};
use std::process::Stdio;

use futures::StreamExt;
use process_transport::{Event, ProcessTransport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::Config;
use crate::common::piped_cat;
use crate::harness::{Budget, Role, contender, micros};
use crate::report::Report;

const LINE: &[u8; 64] =
    b"0123456789abcdef0123456789abcdef0123456789abcdef012345678901234\n";

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== round trips of 64-byte lines through cat");
    let trips = cfg.roundtrips;
    let per_trip = move |total_us: f64| total_us / trips as f64;
    let ours: [OursPath; 2] = [
        ("process-transport events", "64 B line through cat", |n| Box::pin(ours_events(n))),
        ("process-transport taken pipes", "taken PipeWriter/PipeReader", |n| {
            Box::pin(ours_taken(n))
        }),
    ];
    for (name, what, trip) in ours {
        let contenders = vec![
            contender(Role::Ours, name, || per_trip(rt.block_on(trip(trips)))),
            contender(Role::Tokio, "tokio::process", || {
                per_trip(rt.block_on(tokio_pipes(trips)))
            }),
            contender(Role::Floor, "blocking std thread", || {
                per_trip(blocking(trips))
            }),
        ];
        let scenario = format!("round trip, {what}, {trips} in a row");
        report.race(&scenario, "µs/trip", false, Budget::fixed(cfg.rounds), contenders);
    }
}

/// Microseconds for a number of round trips, as a future the runtime drives.
type Trips = std::pin::Pin<Box<dyn std::future::Future<Output = f64>>>;

/// One of our paths: its contender name, what the scenario calls it, and the trips.
type OursPath = (&'static str, &'static str, fn(usize) -> Trips);

fn cat() -> ProcessTransport {
    let mut cmd = process_transport::Command::new("cat");
    cmd.stderr(process_transport::ChildFd::Null);
    cmd.spawn().expect("spawn cat")
}

/// Microseconds for `trips` round trips through the event stream.
async fn ours_events(trips: usize) -> f64 {
    let mut child = cat();
    let start = std::time::Instant::now();
    for _ in 0..trips {
        child.write_stdin(&LINE[..]).expect("write");
        let mut got = 0;
        while got < LINE.len() {
            match child.next().await {
                Some(Event::Data { fd: 1, data }) => got += data.len(),
                Some(Event::Data { .. } | Event::WritePaused { .. } | Event::WriteResumed { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let took = start.elapsed().as_secs_f64() * 1e6;
    child.close_stdin().expect("close");
    assert!(child.wait().await.expect("wait").success());
    took
}

async fn ours_taken(trips: usize) -> f64 {
    let mut child = cat();
    let mut input = child.take_writer(0).expect("writer");
    let mut output = child.take_reader(1).expect("reader");
    let took = async_trips(&mut input, &mut output, trips).await;
    drop(input);
    assert!(child.wait().await.expect("wait").success());
    took
}

/// Microseconds for `trips` lines written to `input` and read back from `output`.
async fn async_trips(
    input: &mut (impl AsyncWrite + Unpin),
    output: &mut (impl AsyncRead + Unpin),
    trips: usize,
) -> f64 {
    let mut buf = [0u8; 64];
    let start = std::time::Instant::now();
    for _ in 0..trips {
        input.write_all(LINE).await.expect("write");
        output.read_exact(&mut buf).await.expect("read");
    }
    start.elapsed().as_secs_f64() * 1e6
}

async fn tokio_pipes(trips: usize) -> f64 {
    let mut child = tokio::process::Command::from(piped_cat(Stdio::null()))
        .spawn()
        .expect("spawn cat");
    let mut input = child.stdin.take().expect("stdin");
    let mut output = child.stdout.take().expect("stdout");
    let took = async_trips(&mut input, &mut output, trips).await;
    drop(input);
    assert!(child.wait().await.expect("wait").success());
    took
}

fn blocking(trips: usize) -> f64 {
    let mut child = piped_cat(Stdio::null()).spawn().expect("spawn cat");
    let mut input = child.stdin.take().expect("stdin");
    let mut output = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 64];
    let took = micros(|| {
        for _ in 0..trips {
            input.write_all(LINE).expect("write");
            output.read_exact(&mut buf).expect("read");
        }
    });
    drop(input);
    assert!(child.wait().expect("wait").success());
    took
}
