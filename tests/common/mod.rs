//! Helpers shared by the integration tests, one file per concern:
//!
//! - [`events`]: draining a transport while recording every event ([`Outcome`]) and checking
//!   the ordering guarantees on the way;
//! - [`procfs`]: reading `/proc/<pid>/stat` and `/proc/<pid>/status` (process states,
//!   parents, groups, zombies, signal masks);
//! - [`fds`]: fd accounting in this process and in children, RLIMIT_NOFILE, test pipes;
//! - [`scripts`]: the child commands the tests run (`sh`, Python) and files they exec;
//! - [`rerun`] and [`pidns`]: running one test again in a fresh process or pid namespace;
//! - here: the one hang timeout ([`LIMIT`]), polling, and running tests one at a time.
//!
//! Everything is re-exported here, so a helper is `common::NAME` whichever file holds it.
//! Each test binary uses a subset, hence the `dead_code` and `unused_imports` allowances.

#![allow(dead_code, unused_imports)]

pub mod events;
pub mod fds;
pub mod pidns;
pub mod procfs;
pub mod rerun;
pub mod scripts;

pub use events::*;
pub use fds::*;
pub use procfs::*;
pub use scripts::*;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

/// How long any single wait of a test (a child to finish, a stream to end, a process to
/// change state) may take before the test calls it a hang. Only ever a bound on something
/// expected to happen, so its size costs time only when a test fails; generous, because the
/// machines that run these tests are often loaded.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test (instead of hanging) if it takes longer than [`LIMIT`].
/// Takes anything awaitable, a `ProcessTransport` included.
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Whether this run forces the reaper's SIGCHLD fallback (`PROCESS_TRANSPORT_REAPER=sigchld`,
/// as CI does for the reaping tests), where no child has a pidfd.
pub fn forced_sigchld() -> bool {
    std::env::var_os("PROCESS_TRANSPORT_REAPER").is_some_and(|v| v == "sigchld")
}

/// Says loudly that `test` checked nothing here, and why: straight to stderr, past the test
/// harness's capture, so a skip never passes for a pass in the log.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
}

/// `true`, said loudly, when `test` needs pidfds and this run forces the SIGCHLD fallback.
pub fn skip_without_pidfds(test: &str) -> bool {
    let skip = forced_sigchld();
    if skip {
        skipped(
            test,
            "needs pidfds; PROCESS_TRANSPORT_REAPER=sigchld is set",
        );
    }
    skip
}

/// A current-thread runtime with I/O and time.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A multi-thread runtime with `workers` workers and every driver.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `fut` as a task on `rt` (a task, not `block_on`: on a multi-thread runtime only a
/// task watches its child's exit in its own reactor) and returns its output.
pub fn in_a_task<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async { tokio::spawn(fut).await.unwrap() })
}

/// Polls `cond` every 10 ms (blocking the thread) until it holds; false after `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every 10 ms (yielding to the runtime) until it holds; false after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Holds off the other tests of this binary that take it (or run [`serially`]), surviving a
/// panic in one of them.
pub fn serial_lock() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `test` alone among the tests of its binary that use this too, on a fresh runtime
/// from `runtime` that is gone before the next such test starts. For tests that count fds
/// or children of the whole process (a runtime's own fds would otherwise come and go during
/// another test's count).
pub fn serially<F: std::future::Future>(
    runtime: &mut tokio::runtime::Builder,
    test: F,
) -> F::Output {
    let _serial = serial_lock();
    let rt = runtime.enable_all().build().unwrap();
    let output = rt.block_on(test);
    drop(rt);
    output
}

/// Whether this process may change credentials (the uid tests need root).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}
