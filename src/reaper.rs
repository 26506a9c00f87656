//! The reaper: one background thread that collects the exit status of every child this crate
//! spawned, and only those.
//!
//! It lives on its own thread, not in a Tokio runtime, so it outlives runtimes (every
//! `#[tokio::test]` has its own) and works the same under any scheduler. A SIGCHLD handler
//! (installed through `signal-hook-registry`, which chains with Tokio's and others') writes a
//! byte to a self-pipe; the thread wakes and runs a pass:
//!
//! 1. Peek with `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: the kernel names one exited child
//!    without reaping it.
//! 2. If that pid is ours, reap it with `wait4` (status and rusage) and peek again. One exit
//!    costs two syscalls, however many children are alive.
//! 3. If a *foreign* zombie stands first (a child of `tokio::process`, `std::process`, ...),
//!    the peek cannot see past it, so scan our own pids with `wait4(pid, WNOHANG)`. Never
//!    `waitpid(-1)`: other code keeps its children's statuses.
//!
//! A child someone else reaped (a foreign `waitpid(-1)`, `SIGCHLD` set to `SIG_IGN`) shows up
//! as a signal with nothing to reap. The pass counts signals against reaps; a signal that no
//! reap accounts for triggers a scan, where `wait4` answers `ECHILD` and the child ends with
//! [`WaitError::ReapedElsewhere`] instead of hanging. A scan every second covers the case
//! where another library replaced our SIGCHLD handler; after a minute without children the
//! thread sleeps until the next spawn wakes it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::error::WaitError;
use crate::exit_status::{ExitStatus, ResourceUsage};
use crate::sys;

/// How often live children are scanned even without a SIGCHLD, in milliseconds.
const SAFETY_SCAN_MS: i32 = 1000;

/// After this long with no child, the reaper sleeps until woken (no periodic wake-ups in a
/// process that stopped spawning); `register` wakes it.
const DEEP_SLEEP_AFTER: Duration = Duration::from_secs(60);

/// The shared state of one child: running (with its pidfd) or reaped (with its status).
pub(crate) struct ExitSlot {
    state: Mutex<SlotState>,
    waker: AtomicWaker,
}

enum SlotState {
    Running {
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
    },
    Done(Result<ExitStatus, WaitError>),
}

impl ExitSlot {
    /// The pid while the child has not been reaped.
    pub(crate) fn pid(&self) -> Option<u32> {
        match *self.lock() {
            SlotState::Running { pid, .. } => Some(pid as u32),
            SlotState::Done(_) => None,
        }
    }

    /// The exit result once reaped, registering `cx` to be woken otherwise.
    pub(crate) fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<Result<ExitStatus, WaitError>> {
        self.waker.register(cx.waker());
        match *self.lock() {
            SlotState::Done(result) => Poll::Ready(result),
            SlotState::Running { .. } => Poll::Pending,
        }
    }

    /// The exit result if the child has been reaped.
    pub(crate) fn try_exit(&self) -> Option<Result<ExitStatus, WaitError>> {
        match *self.lock() {
            SlotState::Done(result) => Some(result),
            SlotState::Running { .. } => None,
        }
    }

    /// Sends `sig`, unless the child has been reaped. Reaping takes the same lock, so the pid
    /// cannot be reused while the signal is on its way; the pidfd guards against a child that
    /// someone else reaped.
    pub(crate) fn signal(&self, sig: i32) -> Result<(), crate::Error> {
        match &*self.lock() {
            SlotState::Done(_) => Err(crate::Error::AlreadyExited),
            SlotState::Running { pid, pidfd } => {
                sys::signal::send(*pid, pidfd.as_ref().map(|fd| fd.as_fd()), sig).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        crate::Error::AlreadyExited
                    } else {
                        crate::Error::Io(e)
                    }
                })
            }
        }
    }

    /// Reaps the child if it has exited; `true` once it is done. Called by the reaper only,
    /// with the table locked.
    fn try_reap(&self) -> bool {
        let mut state = self.lock();
        let SlotState::Running { pid, .. } = *state else {
            return true;
        };
        let result = match sys::wait::reap(pid, false) {
            Ok(None) => return false,
            Ok(Some((raw, usage))) => Ok(ExitStatus::new(raw, ResourceUsage::from_rusage(&usage))),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Err(WaitError::ReapedElsewhere),
            Err(e) => Err(WaitError::Os(e.raw_os_error().unwrap_or(0))),
        };
        match &result {
            Ok(status) => tracing::debug!(pid, %status, "child reaped"),
            Err(error) => tracing::debug!(pid, %error, "child lost"),
        }
        // Dropping the pidfd here frees the fd as soon as the child is gone.
        *state = SlotState::Done(result);
        drop(state);
        self.waker.wake();
        true
    }

    /// Ends a slot that is still running with `result`, without waiting.
    fn finish(&self, result: Result<ExitStatus, WaitError>) {
        let mut state = self.lock();
        if let SlotState::Running { .. } = *state {
            *state = SlotState::Done(result);
            drop(state);
            self.waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A poisoned lock only means a panic elsewhere; the state itself is always whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The process-wide reaper.
pub(crate) struct Reaper {
    table: Mutex<HashMap<libc::pid_t, Arc<ExitSlot>>>,
    wake_read: OwnedFd,
    /// The self-pipe's write end, written by the SIGCHLD handler and by `register`.
    wake_write: RawFd,
    /// The reaper sleeps without a timeout (see [`DEEP_SLEEP_AFTER`]).
    sleeping_deeply: AtomicBool,
}

static REAPER: OnceLock<io::Result<Reaper>> = OnceLock::new();

impl Reaper {
    /// The reaper, started on first use.
    pub(crate) fn get() -> io::Result<&'static Reaper> {
        match REAPER.get_or_init(Reaper::start) {
            Ok(reaper) => Ok(reaper),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    fn start() -> io::Result<Reaper> {
        let (wake_read, wake_write) = sys::fd::pipe()?;
        sys::fd::set_nonblocking(wake_read.as_fd())?;
        sys::fd::set_nonblocking(wake_write.as_fd())?;
        // The write end lives as long as the process: the handler may run at any time.
        let wake_write: &'static OwnedFd = Box::leak(Box::new(wake_write));
        sys::signal::on_child_exit(wake_write.as_raw_fd())?;
        std::thread::Builder::new()
            .name("process-transport-reaper".into())
            .spawn(|| match Reaper::get() {
                Ok(reaper) => reaper.run(),
                Err(e) => tracing::error!(error = %e, "reaper failed to start"),
            })?;
        Ok(Reaper {
            table: Mutex::new(HashMap::new()),
            wake_read,
            wake_write: wake_write.as_raw_fd(),
            sleeping_deeply: AtomicBool::new(false),
        })
    }

    /// Starts tracking `pid`. The child may already have exited, its SIGCHLD consumed before
    /// it was in the table, so check it once here.
    pub(crate) fn register(&self, pid: libc::pid_t, pidfd: Option<OwnedFd>) -> Arc<ExitSlot> {
        let slot = Arc::new(ExitSlot {
            state: Mutex::new(SlotState::Running { pid, pidfd }),
            waker: AtomicWaker::new(),
        });
        let mut table = self.lock_table();
        if let Some(stale) = table.insert(pid, slot.clone()) {
            // The pid was reused, so its earlier holder was reaped by someone else.
            stale.finish(Err(WaitError::ReapedElsewhere));
        }
        if sys::wait::has_exited(pid).unwrap_or(true) && slot.try_reap() {
            table.remove(&pid);
        } else if self.sleeping_deeply.swap(false, Ordering::Relaxed) {
            // The reaper sleeps without a timeout after a long idle spell; wake it so the
            // periodic safety scan covers this child too.
            sys::fd::write_byte(self.wake_write);
        }
        slot
    }

    fn run(&self) {
        sys::signal::unblock_sigchld_in_this_thread();
        // Reaps that no signal has accounted for yet (signals coalesce, so one SIGCHLD can
        // stand for several exits).
        let mut unclaimed_reaps: u64 = 0;
        let mut idle_since: Option<Instant> = None;
        loop {
            let timeout = {
                // Decided under the table lock, so `register` sees `sleeping_deeply` set
                // exactly when this sleep has no timeout.
                let table = self.lock_table();
                if !table.is_empty() {
                    idle_since = None;
                } else if idle_since.is_none() {
                    idle_since = Some(Instant::now());
                }
                let deep = idle_since.is_some_and(|since| since.elapsed() >= DEEP_SLEEP_AFTER);
                self.sleeping_deeply.store(deep, Ordering::Relaxed);
                if deep { -1 } else { SAFETY_SCAN_MS }
            };
            let signals = self.wait_for_signal(timeout);
            let mut table = self.lock_table();
            if signals == 0 {
                scan(&mut table);
                continue;
            }
            let (reaped, must_scan) = peek_and_reap(&mut table);
            unclaimed_reaps += reaped;
            if must_scan || signals > unclaimed_reaps {
                // A signal with no reap behind it: a foreign child, or one of ours reaped by
                // someone else. Only a scan tells them apart.
                scan(&mut table);
                unclaimed_reaps = 0;
            } else {
                unclaimed_reaps -= signals;
            }
        }
    }

    /// Blocks until SIGCHLD arrives or `timeout_ms` passes; returns how many wake-ups came.
    fn wait_for_signal(&self, timeout_ms: i32) -> u64 {
        if sys::fd::poll_readable(self.wake_read.as_fd(), timeout_ms) {
            sys::fd::drain(self.wake_read.as_fd())
        } else {
            0
        }
    }

    fn lock_table(&self) -> MutexGuard<'_, HashMap<libc::pid_t, Arc<ExitSlot>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reaps our exited children one peek at a time. Returns how many were reaped, and whether a
/// scan is needed because a foreign zombie hides the rest.
fn peek_and_reap(table: &mut HashMap<libc::pid_t, Arc<ExitSlot>>) -> (u64, bool) {
    let mut reaped = 0;
    loop {
        match sys::wait::peek_any_exited() {
            Ok(Some(pid)) => match table.get(&pid) {
                Some(slot) => {
                    if slot.try_reap() {
                        table.remove(&pid);
                        reaped += 1;
                    } else {
                        return (reaped, true);
                    }
                }
                None => return (reaped, !table.is_empty()),
            },
            Ok(None) => return (reaped, false),
            // ECHILD: no children at all, so any pid still in the table was reaped elsewhere.
            Err(_) => return (reaped, !table.is_empty()),
        }
    }
}

/// Checks every child in the table with `wait4(pid, WNOHANG)`.
fn scan(table: &mut HashMap<libc::pid_t, Arc<ExitSlot>>) {
    table.retain(|_, slot| !slot.try_reap());
}
