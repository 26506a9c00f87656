//! Exit latency: from the moment the parent closes `cat`'s stdin (so `cat` exits) to the
//! moment the awaited status is in hand, one child at a time. Each `cat` first echoes a line,
//! so it is running (not still loading) when the clock starts. The floor is a blocking
//! `waitpid` on the spawning thread. Measured from `block_on` and inside a task of the
//! two-worker runtime, and from `block_on` of a current-thread runtime (`#[tokio::main(flavor =
//! "current_thread")]`, `#[tokio::test]`), whose one thread both awaits and drives the reactor.

use std::ffi::CStr;
use std::future::Future;
use std::pin::Pin;
use std::io::{Read, Write};
use std::process::Stdio;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use std::time::Instant;

use tokio::runtime::Runtime;

use crate::Config;
use crate::common::piped_cat;
use crate::harness::{Role, contender};
use crate::raw;
use crate::report::Report;

const CAT: [&CStr; 1] = [c"/bin/cat"];

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== exit latency");
    // From `block_on`, and awaited in a task on the runtime's workers as a service would:
    // `block_on` runs the future on the calling thread, which the exit reaches through a
    // worker.
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for shape in [Shape::BlockOn, Shape::InATask, Shape::CurrentThread] {
        let run = |fut: fn() -> Pin<Box<dyn Future<Output = f64> + Send>>| match shape {
            Shape::BlockOn => rt.block_on(fut()),
            Shape::InATask => rt.block_on(async { tokio::spawn(fut()).await.expect("task") }),
            Shape::CurrentThread => current_thread.block_on(fut()),
        };
        let contenders = vec![
            contender(Role::Ours, "process-transport", || run(|| Box::pin(ours()))),
            contender(Role::Tokio, "tokio::process", || run(|| Box::pin(tokio()))),
            contender(Role::Std, "std::process", std),
            contender(Role::Floor, "posix_spawn + waitpid", floor),
        ];
        let shape = match shape {
            Shape::BlockOn => "",
            Shape::InATask => ", in a task",
            Shape::CurrentThread => ", current-thread runtime",
        };
        let scenario = format!("exit latency: close cat's stdin -> status in hand{shape}");
        report.race(&scenario, "µs", false, cfg.spawn, contenders);
    }
}

/// Where the awaiting future runs.
#[derive(Clone, Copy)]
enum Shape {
    BlockOn,
    InATask,
    CurrentThread,
}

fn since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

async fn ours() -> f64 {
    let mut child = process_transport::Command::new("/bin/cat")
        .spawn()
        .expect("spawn cat");
    child.write_stdin(&b"x\n"[..]).expect("write");
    loop {
        match child.next().await {
            Some(process_transport::Event::Data { fd: 1, .. }) => break,
            Some(_) => {}
            None => panic!("cat ended"),
        }
    }
    let start = Instant::now();
    child.close_stdin().expect("close");
    assert!(child.wait().await.expect("wait").success());
    since(start)
}

async fn tokio() -> f64 {
    let mut child = tokio::process::Command::from(piped_cat(Stdio::piped()))
        .spawn()
        .expect("spawn cat");
    let mut line = [0u8; 2];
    let input = child.stdin.as_mut().expect("stdin");
    input.write_all(b"x\n").await.expect("write");
    let output = child.stdout.as_mut().expect("stdout");
    output.read_exact(&mut line).await.expect("read");
    let start = Instant::now();
    drop(child.stdin.take());
    assert!(child.wait().await.expect("wait").success());
    since(start)
}

fn std() -> f64 {
    let mut child = piped_cat(Stdio::piped()).spawn().expect("spawn cat");
    let mut line = [0u8; 2];
    child.stdin.as_mut().expect("stdin").write_all(b"x\n").expect("write");
    child.stdout.as_mut().expect("stdout").read_exact(&mut line).expect("read");
    let start = Instant::now();
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    since(start)
}

fn floor() -> f64 {
    let mut child = raw::spawn(&CAT, true, false);
    let mut line = [0u8; 2];
    let mut input = std::fs::File::from(child._parent_ends[0].try_clone().expect("dup"));
    input.write_all(b"x\n").expect("write");
    drop(input);
    let mut output = std::fs::File::from(child._parent_ends[1].try_clone().expect("dup"));
    output.read_exact(&mut line).expect("read");
    let start = Instant::now();
    // The first parent end is stdin's write end.
    drop(child._parent_ends.remove(0));
    assert_eq!(raw::wait(child.pid), 0);
    since(start)
}
