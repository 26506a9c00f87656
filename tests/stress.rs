//! Stress: many sequential spawns, thousands of live children at once, and hundreds awaited
//! through cancelled waits from task to task, checking that every byte and every exit status
//! arrives (each exit once), no fd is left open in the parent, and no zombie is left behind.
//!
//! The default tests are sized for CI (a few seconds on 2 cores). The full sizes run with
//!
//! ```text
//! cargo test --release --test stress -- --ignored
//! ```

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{LIMIT, Outcome, assert_nothing_leaked, collect, open_fds, set_nofile_soft};
use process_transport::{ChildFd, Command, ProcessTransport};

/// Every test here counts fds and children of the whole process, so they run one at a time,
/// each on its own two-worker runtime (see [`common::serially`]).
fn serially<F: std::future::Future>(test: F) -> F::Output {
    common::serially(
        tokio::runtime::Builder::new_multi_thread().worker_threads(2),
        test,
    )
}

/// Child `i` of the sequential runs: even ones print `i` with `/bin/echo` (exit 0), odd ones
/// print it with a shell and exit with `i % 256`.
fn numbered(i: usize) -> (Command, Vec<u8>, i32) {
    if i.is_multiple_of(2) {
        let mut cmd = Command::new("/bin/echo");
        cmd.arg(i.to_string()).stdin(ChildFd::Null);
        (cmd, format!("{i}\n").into_bytes(), 0)
    } else {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "printf 'n=%s' \"$0\"; exit $(($0 % 256))"])
            .arg(i.to_string())
            .stdin(ChildFd::Null);
        (cmd, format!("n={i}").into_bytes(), (i % 256) as i32)
    }
}

fn check(i: usize, outcome: &Outcome, out: &[u8], code: i32) {
    assert_eq!(outcome.out(1), out, "child {i}: {outcome:?}");
    assert!(outcome.out(2).is_empty(), "child {i}: {outcome:?}");
    assert_eq!(outcome.status().code(), Some(code), "child {i}");
}

/// Spawns `n` children one after another, each consumed to its end before the next.
async fn sequential(n: usize) {
    // Warm up: the reaper's fds are opened once for the life of the process.
    Command::new("/bin/true").spawn().unwrap().await.unwrap();
    let fds_before = open_fds();
    let started = Instant::now();
    for i in 0..n {
        let (cmd, out, code) = numbered(i);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {i}: {e}"));
        let outcome = collect(&mut child, LIMIT).await;
        check(i, &outcome, &out, code);
        assert_eq!(child.pid(), None);
    }
    eprintln!("{n} sequential spawns in {:?}", started.elapsed());
    assert_nothing_leaked(&fds_before);
}

#[test]
fn two_thousand_sequential_spawns() {
    serially(async {
        sequential(2_000).await;
    });
}

/// 100,000 sequential spawns. Run with
/// `cargo test --release --test stress -- --ignored`.
#[test]
#[ignore = "long: cargo test --release --test stress -- --ignored"]
fn hundred_thousand_sequential_spawns() {
    serially(async {
        sequential(100_000).await;
    });
}

/// Child `i` of the concurrent runs, with what it is sent, what it must print and its exit
/// code. Most are a shell that echoes one line and exits `i % 256`; every 50th is `cat` with
/// 256 KiB each way, more than a pipe holds, so both directions must be driven together.
fn concurrent_child(i: usize) -> (Command, Vec<u8>, Vec<u8>, i32) {
    if i.is_multiple_of(50) {
        let mut cmd = Command::new("/bin/cat");
        let data: Vec<u8> = (0..256 * 1024).map(|k| (k * 31 + i) as u8).collect();
        cmd.stderr(ChildFd::Null);
        (cmd, data.clone(), data, 0)
    } else {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "read line; printf '%s|%s' \"$line\" \"$0\"; exit $(($0 % 256))",
        ])
        .arg(i.to_string());
        let line = format!("hello child {i}");
        (
            cmd,
            format!("{line}\n").into_bytes(),
            format!("{line}|{i}").into_bytes(),
            (i % 256) as i32,
        )
    }
}

/// Starts `n` children from worker tasks, waits until all of them are alive at once, then
/// feeds each its input and checks its output and status.
async fn concurrent(n: usize) {
    let soft = set_nofile_soft(u64::MAX);
    assert!(
        soft as usize > n * 4 + 200,
        "RLIMIT_NOFILE {soft} too low for {n} children"
    );
    Command::new("/bin/true").spawn().unwrap().await.unwrap();
    let fds_before = open_fds();
    let started = Instant::now();
    let all_alive = Arc::new(tokio::sync::Barrier::new(n + 1));
    let go = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let all_alive = all_alive.clone();
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            let (cmd, input, out, code) = concurrent_child(i);
            let mut child: ProcessTransport =
                cmd.spawn().unwrap_or_else(|e| panic!("spawn {i}: {e}"));
            let pid = child.pid().unwrap();
            all_alive.wait().await;
            go.wait().await;
            child.write_stdin(input).unwrap();
            child.close_stdin().unwrap();
            let outcome = collect(&mut child, 2 * LIMIT).await;
            check(i, &outcome, &out, code);
            pid
        }));
    }
    tokio::time::timeout(2 * LIMIT, all_alive.wait())
        .await
        .expect("children did not all start");
    let alive = common::children().len();
    assert!(alive >= n, "only {alive} of {n} children alive at once");
    eprintln!("{n} children alive after {:?}", started.elapsed());
    go.wait().await;
    let mut pids = Vec::with_capacity(n);
    for task in tasks {
        pids.push(task.await.unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), n, "pids reused among live children");
    eprintln!("{n} concurrent children done in {:?}", started.elapsed());
    assert_nothing_leaked(&fds_before);
}

#[test]
fn five_hundred_concurrent_children() {
    serially(async {
        concurrent(500).await;
    });
}

/// 3,000 children alive at once on a 2-worker runtime. Run with
/// `cargo test --release --test stress -- --ignored`.
#[test]
#[ignore = "long: cargo test --release --test stress -- --ignored"]
fn three_thousand_concurrent_children() {
    serially(async {
        concurrent(3_000).await;
    });
}

/// A small xorshift, so each run of the test below varies the same way.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Awaits child `i`'s exit the way services do: `wait()` under short timeouts that give up,
/// now and then handing the transport to a fresh task, with a handle awaiting it beside for
/// every third child. Returns the status and the events that came after `wait()`.
async fn awaited_with_cancellations(
    i: u64,
    mut child: ProcessTransport,
) -> (i32, Vec<process_transport::Event>) {
    use futures::StreamExt;
    let handle = child.handle();
    let beside = i
        .is_multiple_of(3)
        .then(|| tokio::spawn(async move { handle.exited().await }));
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ (i + 1));
    let status = loop {
        let limit = std::time::Duration::from_micros(dice.below(4000));
        if let Ok(status) = tokio::time::timeout(limit, child.wait()).await {
            break status.unwrap();
        }
        if dice.below(3) == 0 {
            // Hop: the next waits come from another task.
            child = tokio::spawn(async move { child }).await.unwrap();
        }
    };
    if let Some(beside) = beside {
        assert_eq!(
            beside.await.unwrap().unwrap(),
            status,
            "child {i}: the handle"
        );
    }
    let after = tokio::time::timeout(LIMIT, child.collect::<Vec<_>>()).await;
    (
        status.code().unwrap(),
        after.expect("the stream after wait() ended"),
    )
}

#[test]
fn three_hundred_children_awaited_through_cancelled_waits_each_exit_once() {
    serially(async {
        let children: Vec<_> = (0..300u64)
            .map(|i| {
                let delay = Dice(i + 7).below(50);
                let child = Command::new("sh")
                    .args(["-c", "sleep 0.0$1; exit $(($2 % 200))", "sh"])
                    .args([format!("{delay:02}"), i.to_string()])
                    .spawn()
                    .unwrap();
                tokio::spawn(awaited_with_cancellations(i, child))
            })
            .collect();
        for (i, task) in children.into_iter().enumerate() {
            let (code, after) = tokio::time::timeout(LIMIT, task)
                .await
                .unwrap_or_else(|_| panic!("child {i}: never heard of"))
                .unwrap();
            assert_eq!(code, (i % 200) as i32, "child {i}");
            let exits = after
                .iter()
                .filter(|e| matches!(e, process_transport::Event::Exited(_)))
                .count();
            assert_eq!(exits, 1, "child {i}: {after:?}");
            assert!(
                matches!(after.last(), Some(process_transport::Event::Ended(Ok(s))) if s.code() == Some(code)),
                "child {i}: {after:?}"
            );
        }
    });
}
