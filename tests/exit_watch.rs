//! An awaited transport hears of its child's exit in its own runtime, without the reaper
//! thread; and whatever stops awaiting it (a handle waiting instead, the transport dropped,
//! its runtime gone) leaves the child to the reaper again, so it is still reaped and its
//! status still reaches everyone who asks.
//!
//! The reaper thread is shared by the whole test binary, so the test that counts its
//! wake-ups runs in a fresh process (see `common::rerun`). Under the forced SIGCHLD fallback
//! there is no pidfd to watch and the tests that need one return.

mod common;

use std::future::Future;
use std::time::Duration;

use process_transport::{ChildFd, Command, ProcessTransport};

use common::rerun::{is_inner, rerun};
use common::{LIMIT, process_state, wait_until};

fn forced_sigchld() -> bool {
    std::env::var_os("PROCESS_TRANSPORT_REAPER").is_some_and(|v| v == "sigchld")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A child that runs for `secs`, with null stdio.
fn sleep_for(secs: &str) -> ProcessTransport {
    Command::new("sleep")
        .arg(secs)
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .spawn()
        .unwrap()
}

/// Polls `child.wait()` once (it must still be pending), so the transport watches the exit.
async fn poll_once(child: &mut ProcessTransport) {
    let polled = tokio::time::timeout(Duration::from_millis(1), child.wait()).await;
    assert!(polled.is_err(), "the child exited before it was watched");
}

/// Awaits `fut`, failing instead of hanging.
async fn within_limit<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("still waiting after the limit")
}

/// Context switches of the reaper thread so far: each is one wake-up and sleep.
fn reaper_thread_switches() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("process-transp") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            return status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
                .sum();
        }
    }
    panic!("no reaper thread in /proc/self/task");
}

#[test]
fn awaited_exits_do_not_wake_the_reaper_thread() {
    let name = "awaited_exits_do_not_wake_the_reaper_thread";
    if forced_sigchld() {
        return;
    }
    if !is_inner(name) {
        rerun(name, &[]);
        return;
    }
    runtime().block_on(async {
        // The first spawn starts the reaper; count from a settled thread.
        assert!(sleep_for("0").wait().await.unwrap().success());
        std::thread::sleep(Duration::from_millis(100));
        let before = reaper_thread_switches();
        for _ in 0..40 {
            let status = within_limit(sleep_for("0.02").wait()).await.unwrap();
            assert!(status.success());
        }
        let woken = reaper_thread_switches() - before;
        // Were the reaper watching too, each exit would wake it: 40 or more.
        assert!(
            woken <= 4,
            "the reaper thread woke {woken} times for 40 awaited exits"
        );
    });
}

#[test]
fn a_handle_sees_the_exit_while_the_watching_transport_is_left_alone() {
    runtime().block_on(async {
        let mut child = sleep_for("0.2");
        poll_once(&mut child).await;
        // The transport is never polled again; the handle must not depend on it.
        let status = within_limit(child.handle().exited()).await.unwrap();
        assert!(status.success());
        assert_eq!(child.try_status().unwrap(), Some(status));
    });
}

#[test]
fn a_watched_child_is_reaped_once_its_transport_is_dropped() {
    runtime().block_on(async {
        let mut child = sleep_for("0.2");
        poll_once(&mut child).await;
        let pid = child.pid().unwrap();
        drop(child);
        assert!(
            wait_until(LIMIT, || process_state(pid).is_none()),
            "the child is left a zombie (state {:?})",
            process_state(pid)
        );
    });
}

#[test]
fn try_status_knows_the_exit_of_a_watched_child_nobody_polls() {
    if forced_sigchld() {
        return;
    }
    runtime().block_on(async {
        let mut child = sleep_for("0.1");
        poll_once(&mut child).await;
        let pid = child.pid().unwrap();
        assert!(wait_until(LIMIT, || process_state(pid) == Some('Z')));
        let status = child.try_status().unwrap().expect("the child has exited");
        assert!(status.success());
        assert_eq!(child.pid(), None, "reaped by try_status");
    });
}

#[test]
fn a_transport_outlives_the_runtime_that_watched_its_child() {
    let mut child = runtime().block_on(async {
        let mut child = sleep_for("0.2");
        poll_once(&mut child).await;
        child
    });
    // That runtime, and the reactor the exit was registered with, are gone.
    let status = runtime().block_on(within_limit(child.wait())).unwrap();
    assert!(status.success());
}
