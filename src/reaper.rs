//! The reaper: one background thread that collects the exit status of every child this crate
//! spawned, and only those.
//!
//! It lives on its own thread, not in a Tokio runtime, so it outlives runtimes (every
//! `#[tokio::test]` has its own) and works the same under any scheduler.
//!
//! A child's identity is its pidfd, never its pid number. The thread sleeps in `epoll_wait`
//! on every child's pidfd (readable once that process has exited) and reaps each ready one
//! with `waitid(P_PIDFD)`: one exit costs one wait syscall, whatever else the host process
//! does (thousands of live children, a foreign zombie nobody waits for, foreign children
//! exiting all the time, orphans adopted as a subreaper). A child someone else reaped answers
//! `ECHILD` on its own pidfd and ends with [`WaitError::ReapedElsewhere`]; its number is never
//! looked at, so the status of whatever process got the number next cannot be taken for it.
//! No SIGCHLD handler is installed while every child has a pidfd, and nothing wakes
//! periodically but the deferred check below, while a runtime's reactor watches a child (and
//! that check backs off while it finds nothing).
//!
//! A transport awaited in a task (or on a current-thread runtime) watches its child's pidfd
//! in its runtime's own reactor, so the exit wakes the thread driving that reactor directly
//! and it reaps there (see [`crate::exit_watch`]). Meanwhile the pidfd sits in the reaper's
//! second, *deferred* set, which the thread does not sleep on but checks now and then (see
//! [`CheckSchedule`]): so the reaper thread is not woken by that exit, yet an exit the
//! reactor does not hear of (the runtime not driven, a fork that deregistered the shared
//! pidfd) is still reaped within [`DEFERRED_CHECK_MAX_MS`]. The pidfd moves back when the
//! watch ends, and for good once a handle waits.
//!
//! A child that leads or joined a process group keeps its zombie while the transport lives:
//! the status is read with `WNOWAIT` and the zombie is released when the last owner of its
//! [`ExitSlot`] lets go. A zombie member keeps the group's number from being reused, so
//! `signal_group` can never reach a stranger's group (unless foreign code reaps our zombie
//! with `waitpid(-1)`, which no pidfd can prevent).
//!
//! Children without a pidfd (kernels before 5.4, a spawn that found no fd left for one, or
//! `PROCESS_TRANSPORT_REAPER=sigchld`) fall back to SIGCHLD: a handler (installed through
//! `signal-hook-registry`, chaining with Tokio's) writes to a self-pipe in the same epoll set,
//! and the thread peeks with `waitid(P_ALL, WNOWAIT)`, reaps our pids with `wait4`, and scans
//! them when a foreign zombie stands first or a signal has no reap behind it (a child reaped
//! elsewhere answers `ECHILD`). A scan every second covers a replaced SIGCHLD handler.
//!
//! The reaper belongs to the process that started it. After a `fork` the new process starts
//! its own on its next spawn (the thread was not copied, and the old epoll set and pipe are
//! shared with the parent), and the inherited handler no longer writes to the parent's pipe.
//! A reaper that failed to start (no fd left, no thread) is retried on the next spawn and
//! leaves nothing installed.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::error::WaitError;
use crate::exit_status::{ExitStatus, ResourceUsage};
use crate::sys;
use crate::sys::epoll::{Epoll, Ready};
use crate::sys::wait::PidfdWait;

/// How often children without a pidfd are scanned even without a SIGCHLD, in milliseconds.
const SAFETY_SCAN_MS: i32 = 1000;

/// How soon the deferred set (pidfds that reactors watch) is checked again after a check found an
/// exit there, in milliseconds.
const DEFERRED_CHECK_MS: i32 = 100;

/// The longest interval between checks of the deferred set, in milliseconds, which checks
/// that find nothing back off to: the longest an exit no reactor hears of waits for the
/// reaper. A service with a long-lived child watched from a runtime costs the thread a
/// wake-up a second, not ten.
const DEFERRED_CHECK_MAX_MS: i32 = 1000;

/// The epoll token of the wake pipe; pidfd tokens are fd numbers, never this.
const WAKE_TOKEN: u64 = u64::MAX;

/// Set to `sigchld` to spawn without pidfds and reap through the SIGCHLD fallback (to test
/// it, or to compare the two designs).
const REAPER_ENV: &str = "PROCESS_TRANSPORT_REAPER";

/// Whether a reaped child's zombie is kept while its transport lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zombie {
    /// Reap at once.
    Release,
    /// Read the status but keep the zombie while the slot has an owner besides the reaper, so
    /// the child's process group number stays reserved.
    KeepForGroup,
}

/// The shared state of one child: running (with its pidfd) or reaped (with its status).
pub(crate) struct ExitSlot {
    state: Mutex<SlotState>,
    /// Set, under the lock, when `state` becomes `Done`: a poll of a running child (one per
    /// event of a busy stream) reads this instead of taking the lock.
    done: AtomicBool,
    waker: AtomicWaker,
    /// Handles awaiting the exit: any number of them, besides the transport's task.
    handle_waiters: Notify,
    /// A handle has waited: the pidfd is the reaper's for good (see [`Watcher::ReaperOnly`]).
    handle_waits: AtomicBool,
    zombie: Zombie,
    /// The reaper that tracks this child, and the child's epoll token there (its pidfd's
    /// number) when it is tracked through its pidfd.
    reaper: &'static Reaper,
    token: Option<RawFd>,
    /// The runtime whose reactor the transport's pipes were registered with, which proves it
    /// has I/O: the only one an exit watch registers with.
    home: Option<tokio::runtime::Id>,
}

/// Which of the reaper's sets holds a running child's pidfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watcher {
    /// The main set: the reaper thread wakes on the exit.
    Reaper,
    /// The deferred set: the awaiting future watches in its runtime's reactor, the reaper
    /// checks now and then.
    Reactor,
    /// The main set, for good: a handle waits (it must be woken at once, whatever tasks do).
    ReaperOnly,
}

/// A pidfd is shared (reference-counted), not duplicated, between the reaper and a runtime's
/// reactor watching it: the file is never closed under either, so its number (the
/// reaper's token) cannot be reused while anyone can see it.
enum SlotState {
    Running {
        pid: libc::pid_t,
        pidfd: Option<Arc<OwnedFd>>,
        /// Which set holds the pidfd (meaningful only with a token).
        watcher: Watcher,
    },
    Done {
        result: Result<ExitStatus, WaitError>,
        /// The pidfd of a zombie kept for its process group, released on drop.
        kept_zombie: Option<Arc<OwnedFd>>,
    },
}

impl ExitSlot {
    /// The pid while the child has not been reaped.
    pub(crate) fn pid(&self) -> Option<libc::pid_t> {
        match *self.lock() {
            SlotState::Running { pid, .. } => Some(pid),
            SlotState::Done { .. } => None,
        }
    }

    /// The exit result once reaped, registering `cx` to be woken otherwise.
    pub(crate) fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<Result<ExitStatus, WaitError>> {
        self.waker.register(cx.waker());
        match self.try_exit() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    /// Wakes the task that last polled [`poll_exit`](Self::poll_exit), as a reap would.
    pub(crate) fn wake_poller(&self) {
        self.waker.wake();
    }

    /// Waits for the exit on behalf of a handle: any number of them at once, besides the
    /// transport's own poll, none taking another's waker. A waiter that is dropped (a
    /// `select!` or `timeout` that gave up) leaves nothing behind: its task is not kept alive
    /// until the exit, however many tasks have waited.
    pub(crate) async fn exited(&self) -> Result<ExitStatus, WaitError> {
        if !self.handle_waits.swap(true, Ordering::SeqCst) {
            // A handle is woken at once, whatever the transport's task does.
            self.move_to(Watcher::ReaperOnly);
        }
        loop {
            let mut notified = std::pin::pin!(self.handle_waiters.notified());
            // Listening before the state is read: a reap after that read wakes this waiter.
            notified.as_mut().enable();
            if let Some(result) = self.try_exit() {
                return result;
            }
            notified.await;
        }
    }

    /// Wakes the transport's task and every handle's.
    ///
    /// A waker that panics (an executor's bug) is passed over: this runs on the reaper
    /// thread, which must outlive it, or no later exit would be reaped.
    fn wake_all(&self) {
        let quietly = |wake: &dyn Fn()| {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(wake)).is_err() {
                tracing::error!("a waker panicked when told of a child's exit");
            }
        };
        quietly(&|| self.waker.wake());
        quietly(&|| self.handle_waiters.notify_waiters());
    }

    /// The exit result if the child has been reaped.
    pub(crate) fn try_exit(&self) -> Option<Result<ExitStatus, WaitError>> {
        if !self.done.load(Ordering::Acquire) {
            return None;
        }
        match *self.lock() {
            SlotState::Done { result, .. } => Some(result),
            SlotState::Running { .. } => None,
        }
    }

    /// The pidfd, for a future of the slot's home runtime to watch in its reactor, while the
    /// child runs and is tracked through it; see [`crate::exit_watch`]. `None` in a forked
    /// process, whose reaper this is not.
    pub(crate) fn exit_watch(&self) -> Option<Arc<OwnedFd>> {
        self.token?;
        if !self.reaper.is_ours() {
            return None;
        }
        match &*self.lock() {
            SlotState::Running { pidfd, .. } => pidfd.clone(),
            SlotState::Done { .. } => None,
        }
    }

    /// The runtime an exit watch may register with (see the field).
    pub(crate) fn home(&self) -> Option<tokio::runtime::Id> {
        self.home
    }

    /// A future now watches the pidfd in its runtime's reactor: it moves to the reaper's
    /// deferred set, so the exit wakes only that future (which reaps with
    /// [`reap_now`](Self::reap_now)).
    pub(crate) fn watch_from_reactor(&self) {
        self.move_to(Watcher::Reactor);
    }

    /// A reactor's watch ended without the exit: the pidfd goes back to the reaper's main set
    /// (an exit that came meanwhile is reported at once: level-triggered).
    pub(crate) fn return_to_reaper(&self) {
        self.move_to(Watcher::Reaper);
    }

    /// Moves the pidfd to the set `to` says, unless it is the reaper's for good.
    fn move_to(&self, to: Watcher) {
        let Some(token) = self.token else { return };
        if !self.reaper.is_ours() {
            // A forked process: the sets are shared with the parent's reaper (and the slot's
            // lock may have been held by a thread that is not in this process).
            return;
        }
        let mut state = self.lock();
        let SlotState::Running {
            pid,
            pidfd: Some(pidfd),
            watcher,
        } = &mut *state
        else {
            return;
        };
        if *watcher == Watcher::ReaperOnly || *watcher == to {
            return;
        }
        if (*watcher == Watcher::Reactor) != (to == Watcher::Reactor) {
            let (from_set, to_set) = (self.reaper.set_of(*watcher), self.reaper.set_of(to));
            // Into the new set before out of the old one: never in neither.
            if let Err(e) = to_set.add(pidfd.as_fd(), token as u64) {
                tracing::warn!(error = %e, pid, "pidfd not moved between the reaper's sets");
                return;
            }
            let _ = from_set.delete(pidfd.as_fd());
            if to == Watcher::Reactor {
                self.reaper.deferred_added();
            } else {
                self.reaper.deferred_len.fetch_sub(1, Ordering::SeqCst);
            }
        }
        *watcher = to;
    }

    /// Reaps the child now if it has exited, as the reaper thread would on the same news.
    pub(crate) fn reap_now(&self) {
        let Some(token) = self.token else { return };
        if !self.reaper.is_ours() {
            // A forked process: not its children, and the table's lock may have been held by
            // a thread that is not in this process.
            return;
        }
        let mut table = self.reaper.lock_table();
        let is_this = table
            .by_pidfd
            .get(&token)
            .is_some_and(|slot| std::ptr::eq(Arc::as_ptr(slot), self));
        if is_this {
            reap_pidfd_child(&mut table, token);
        }
    }

    /// Sends `sig`, unless the child has been reaped. Through the pidfd where there is one;
    /// otherwise by pid under the slot's lock, which reaping takes too, so the pid cannot be
    /// reused while the signal is on its way.
    pub(crate) fn signal(&self, sig: i32) -> Result<(), crate::Error> {
        match &*self.lock() {
            SlotState::Done { .. } => Err(crate::Error::AlreadyExited),
            SlotState::Running { pid, pidfd, .. } => {
                sys::signal::send(*pid, pidfd.as_ref().map(|fd| fd.as_fd()), sig)
                    .map_err(already_exited_or_io)
            }
        }
    }

    /// Sends `sig` to process group `pgid`, which the child leads or joined, as long as a
    /// member of ours proves the number still names that group: the child is alive or an
    /// unreaped zombie (reaping takes this lock), or its zombie is kept for the group.
    pub(crate) fn signal_group(&self, pgid: libc::pid_t, sig: i32) -> Result<(), crate::Error> {
        match &*self.lock() {
            SlotState::Running { .. }
            | SlotState::Done {
                kept_zombie: Some(_),
                ..
            } => sys::signal::send_to_group(pgid, sig).map_err(already_exited_or_io),
            SlotState::Done {
                kept_zombie: None, ..
            } => Err(crate::Error::AlreadyExited),
        }
    }

    /// Whether the child still holds its process group's number: not yet reaped, or its
    /// zombie kept (see [`Zombie::KeepForGroup`]).
    pub(crate) fn group_reserved(&self) -> bool {
        matches!(
            &*self.lock(),
            SlotState::Running { .. }
                | SlotState::Done {
                    kept_zombie: Some(_),
                    ..
                }
        )
    }

    /// Reaps the child if it has exited; `true` once it is done. Called with the reaper's
    /// table locked. `shared` says whether anyone besides the reaper holds the slot.
    fn try_reap(&self, shared: bool) -> bool {
        let mut state = self.lock();
        let SlotState::Running { pid, pidfd, .. } = &*state else {
            return true;
        };
        let pid = *pid;
        let keep = shared && self.zombie == Zombie::KeepForGroup;
        let (result, kept) = match pidfd {
            Some(pidfd) => match sys::wait::reap_pidfd(pidfd.as_fd(), keep) {
                Ok(PidfdWait::Running) => return false,
                Ok(PidfdWait::Exited(raw, usage)) => (Ok(status(raw, &usage)), keep),
                Err(e) => (Err(wait_error(e)), false),
            },
            None => match sys::wait::reap(pid, false) {
                Ok(None) => return false,
                Ok(Some((raw, usage))) => (Ok(status(raw, &usage)), false),
                Err(e) => (Err(wait_error(e)), false),
            },
        };
        match &result {
            Ok(status) => tracing::debug!(pid, %status, kept, "child reaped"),
            Err(error) => tracing::debug!(pid, %error, "child lost"),
        }
        let (pidfd, watcher) = match &mut *state {
            SlotState::Running { pidfd, watcher, .. } => (pidfd.take(), *watcher),
            SlotState::Done { .. } => (None, Watcher::Reaper),
        };
        if let Some(pidfd) = &pidfd {
            if watcher == Watcher::Reactor {
                // Out of the deferred set in any case: the reactor's copy keeps the file open.
                let _ = self.reaper.deferred.delete(pidfd.as_fd());
                self.reaper.deferred_len.fetch_sub(1, Ordering::SeqCst);
            } else if kept || Arc::strong_count(pidfd) > 1 {
                // The file stays open (a kept zombie, or a copy in a reactor), so it
                // would stay in the main set, readable for good: the reaper would spin on it.
                let _ = self.reaper.epoll.delete(pidfd.as_fd());
            }
        }
        let (kept_zombie, closing) = if kept { (pidfd, None) } else { (None, pidfd) };
        // Closed (unless shared) before the exit is published, which also takes it out of
        // the set: whoever learns of the exit (a `wait()` returning) finds no fd of the
        // child's left but its own. Closing a pidfd is quick, even under the lock.
        drop(closing);
        *state = SlotState::Done {
            result,
            kept_zombie,
        };
        self.done.store(true, Ordering::Release);
        drop(state);
        self.wake_all();
        true
    }

    /// Ends a slot that is still running with `result`, without waiting.
    fn finish(&self, result: Result<ExitStatus, WaitError>) {
        let mut state = self.lock();
        if let SlotState::Running { .. } = *state {
            *state = SlotState::Done {
                result,
                kept_zombie: None,
            };
            self.done.store(true, Ordering::Release);
            drop(state);
            self.wake_all();
        }
    }

    /// Adds the running child's pidfd to `epoll`, with the pidfd's number as the token.
    /// `None` if there is no pidfd or it could not be added.
    fn watch(&self, epoll: &Epoll) -> Option<RawFd> {
        let state = self.lock();
        let SlotState::Running {
            pid,
            pidfd: Some(pidfd),
            ..
        } = &*state
        else {
            return None;
        };
        let token = pidfd.as_raw_fd();
        // Level-triggered: a child that has exited already is reported at once.
        match epoll.add(pidfd.as_fd(), token as u64) {
            Ok(()) => Some(token),
            Err(e) => {
                tracing::warn!(error = %e, pid, "pidfd not watched; falling back to SIGCHLD");
                None
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A poisoned lock only means a panic elsewhere; the state itself is always whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ExitSlot {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let SlotState::Done {
            kept_zombie: Some(pidfd),
            ..
        } = state
        {
            // The status was read already; this only releases the zombie (ECHILD if foreign
            // code reaped it meanwhile).
            let _ = sys::wait::reap_pidfd(pidfd.as_fd(), false);
        }
    }
}

fn status(raw: i32, usage: &libc::rusage) -> ExitStatus {
    ExitStatus::new(raw, ResourceUsage::from_rusage(usage))
}

fn wait_error(e: io::Error) -> WaitError {
    if e.raw_os_error() == Some(libc::ECHILD) {
        WaitError::ReapedElsewhere
    } else {
        WaitError::Os(e.raw_os_error().unwrap_or(0))
    }
}

fn already_exited_or_io(e: io::Error) -> crate::Error {
    if e.raw_os_error() == Some(libc::ESRCH) {
        crate::Error::AlreadyExited
    } else {
        crate::Error::Io(e)
    }
}

/// The children being waited for.
#[derive(Default)]
struct Table {
    /// Children with a pidfd, by the pidfd's number (their epoll token).
    by_pidfd: HashMap<RawFd, Arc<ExitSlot>>,
    /// Children without one, by pid: the SIGCHLD fallback.
    by_pid: HashMap<libc::pid_t, Arc<ExitSlot>>,
}

/// The reaper of this process.
pub(crate) struct Reaper {
    /// The process that started it; after a fork, another process's reaper.
    owner: libc::pid_t,
    epoll: Epoll,
    /// Pidfds that reactors watch: checked now and then (see [`CheckSchedule`]), never slept on.
    deferred: Epoll,
    /// How many pidfds the deferred set holds.
    deferred_len: AtomicUsize,
    wake_read: OwnedFd,
    /// Written by the SIGCHLD handler, and by `register` to end a deep sleep.
    wake_write: OwnedFd,
    table: Mutex<Table>,
    /// Whether pidfds can be waited on (`waitid(P_PIDFD)`, Linux 5.4) and are wanted.
    pidfd_waits: bool,
    /// The thread sleeps without a timeout (no child lacks a pidfd, none is deferred).
    sleeping_deeply: AtomicBool,
}

/// This process's reaper once started (leaked: `&'static` references are handed out). Held
/// only to copy the reference out, or to start one.
static REAPER: Mutex<Option<&'static Reaper>> = Mutex::new(None);

impl Reaper {
    /// This process's reaper, started on first use (and again in a forked process). A failure
    /// to start is returned with its OS error, leaves nothing behind, and is retried on the
    /// next call.
    pub(crate) fn get() -> io::Result<&'static Reaper> {
        let this_process = std::process::id() as libc::pid_t;
        let mut current = REAPER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reaper) = *current
            && reaper.owner == this_process
        {
            return Ok(reaper);
        }
        if current.is_some() {
            // Inherited through fork: its thread is not in this process, and its epoll set
            // and pipe are shared with the parent's. It is left alone and never used again.
            tracing::debug!("starting a new reaper after fork");
        }
        let reaper = Arc::new(Reaper::new(this_process)?);
        let for_thread = reaper.clone();
        // On failure the closure, and with it the reaper and its fds, is dropped.
        std::thread::Builder::new()
            .name("process-transport-reaper".into())
            .spawn(move || for_thread.run())?;
        let reaper: &'static Reaper = Box::leak(Box::new(reaper));
        *current = Some(reaper);
        Ok(reaper)
    }

    fn new(owner: libc::pid_t) -> io::Result<Reaper> {
        let epoll = Epoll::new()?;
        let (wake_read, wake_write) = sys::fd::pipe()?;
        sys::fd::set_nonblocking(wake_read.as_fd())?;
        sys::fd::set_nonblocking(wake_write.as_fd())?;
        epoll.add(wake_read.as_fd(), WAKE_TOKEN)?;
        let forced_fallback = std::env::var_os(REAPER_ENV).is_some_and(|v| v == "sigchld");
        if forced_fallback {
            sys::child::disable_pidfds();
        }
        let pidfd_waits = !forced_fallback && sys::wait::pidfd_waits_supported(wake_read.as_fd());
        Ok(Reaper {
            owner,
            epoll,
            deferred: Epoll::new()?,
            deferred_len: AtomicUsize::new(0),
            wake_read,
            wake_write,
            table: Mutex::new(Table::default()),
            pidfd_waits,
            sleeping_deeply: AtomicBool::new(false),
        })
    }

    /// Starts tracking a child. Cannot fail: the child exists already.
    pub(crate) fn register(
        &'static self,
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
        zombie: Zombie,
        home: Option<tokio::runtime::Id>,
    ) -> Arc<ExitSlot> {
        let mut slot = ExitSlot {
            state: Mutex::new(SlotState::Running {
                pid,
                pidfd: pidfd.map(Arc::new),
                watcher: Watcher::Reaper,
            }),
            done: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            handle_waiters: Notify::new(),
            handle_waits: AtomicBool::new(false),
            zombie,
            reaper: self,
            token: None,
            home,
        };
        // The table stays locked until the child is in it, so the reaper cannot take an
        // event for it before it can find it.
        let mut table = self.lock_table();
        if self.pidfd_waits {
            slot.token = slot.watch(&self.epoll);
        }
        let slot = Arc::new(slot);
        match slot.token {
            Some(token) => {
                table.by_pidfd.insert(token, slot.clone());
            }
            None => self.register_fallback(&mut table, pid, &slot),
        }
        slot
    }

    /// Tracks a child without a (watched) pidfd through SIGCHLD and its pid.
    fn register_fallback(&self, table: &mut Table, pid: libc::pid_t, slot: &Arc<ExitSlot>) {
        if let Err(e) = sys::signal::wake_on_child_exit(self.wake_write.as_raw_fd()) {
            tracing::warn!(error = %e, "no SIGCHLD handler; children are scanned every second");
        }
        if let Some(stale) = table.by_pid.insert(pid, slot.clone()) {
            // The pid was reused, so its earlier holder was reaped by someone else.
            stale.finish(Err(WaitError::ReapedElsewhere));
        }
        // The child may have exited before the handler was there, its SIGCHLD lost.
        if sys::wait::has_exited(pid).unwrap_or(true) && slot.try_reap(true) {
            table.by_pid.remove(&pid);
        } else if self.sleeping_deeply.swap(false, Ordering::Relaxed) {
            // The thread sleeps without a timeout; wake it so the periodic scan (which covers
            // a SIGCHLD handler replaced by other code) runs for this child.
            sys::fd::write_byte(self.wake_write.as_raw_fd());
        }
    }

    fn run(&self) {
        sys::signal::unblock_sigchld_in_this_thread();
        let mut ready = [Ready::EMPTY; 64];
        let mut fallback = Fallback::default();
        let mut checks = CheckSchedule::new(Instant::now());
        loop {
            let timeout = self.timeout(&checks);
            let events = self.epoll.wait(&mut ready, timeout);
            let mut signals = 0;
            let mut table = self.lock_table();
            for event in events {
                if event.token() == WAKE_TOKEN {
                    signals += sys::fd::drain(self.wake_read.as_fd());
                } else {
                    reap_pidfd_child(&mut table, event.token() as RawFd);
                }
            }
            let now = Instant::now();
            if checks.is_due(now) {
                // Exits that the watching reactors have not collected (yet).
                let mut deferred = [Ready::EMPTY; 64];
                let found = self.deferred.wait(&mut deferred, 0);
                for event in found {
                    reap_pidfd_child(&mut table, event.token() as RawFd);
                }
                checks.checked(now, !found.is_empty());
            }
            if !table.by_pid.is_empty() && (signals > 0 || events.is_empty()) {
                fallback.pass(&mut table.by_pid, signals);
            }
        }
    }

    /// How long to sleep: forever, unless children without a pidfd need the periodic scan or
    /// the deferred set its next check.
    fn timeout(&self, checks: &CheckSchedule) -> i32 {
        // Decided under the table lock, so `register` sees `sleeping_deeply` set exactly when
        // this sleep has no timeout. Set before the deferred set is looked at, so a watch that
        // defers a pidfd meanwhile sees it set and wakes the thread (`deferred_added`).
        let table = self.lock_table();
        self.sleeping_deeply.store(true, Ordering::SeqCst);
        let deferred = self.deferred_len.load(Ordering::SeqCst) > 0;
        if table.by_pid.is_empty() && !deferred {
            return -1;
        }
        self.sleeping_deeply.store(false, Ordering::SeqCst);
        let until_check = checks.millis_until(Instant::now());
        match (table.by_pid.is_empty(), deferred) {
            (false, true) => SAFETY_SCAN_MS.min(until_check),
            (false, false) => SAFETY_SCAN_MS,
            (true, _) => until_check,
        }
    }

    /// The epoll set of pidfds watched by `watcher`.
    fn set_of(&self, watcher: Watcher) -> &Epoll {
        match watcher {
            Watcher::Reactor => &self.deferred,
            Watcher::Reaper | Watcher::ReaperOnly => &self.epoll,
        }
    }

    /// Counts a pidfd newly deferred, waking the thread from a sleep without a timeout so that
    /// it checks the deferred set at all.
    fn deferred_added(&self) {
        self.deferred_len.fetch_add(1, Ordering::SeqCst);
        if self.sleeping_deeply.swap(false, Ordering::SeqCst) {
            sys::fd::write_byte(self.wake_write.as_raw_fd());
        }
    }

    fn lock_table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process that started this reaper.
    pub(crate) fn owner(&self) -> libc::pid_t {
        self.owner
    }

    /// Whether this is the reaper of the calling process (not one inherited through fork).
    fn is_ours(&self) -> bool {
        self.owner == std::process::id() as libc::pid_t
    }
}

/// When the reaper thread checks the deferred set next: [`DEFERRED_CHECK_MS`] after a check
/// that found an exit (others may follow: a blocked runtime hears none of its children), then
/// at intervals that double, up to [`DEFERRED_CHECK_MAX_MS`], while checks find nothing. An
/// exit no reactor hears of is rare (a runtime not driven, a fork), and a long-lived child is
/// watched for as long as it lives: checking it ten times a second woke the thread for
/// nothing. A pidfd joining the set does not wake the thread (unless it sleeps
/// without a timeout): a run of spawns awaited in tasks would wake it at every exit.
#[derive(Debug)]
struct CheckSchedule {
    interval: Duration,
    next: Instant,
}

impl CheckSchedule {
    const FIRST: Duration = Duration::from_millis(DEFERRED_CHECK_MS as u64);
    const LONGEST: Duration = Duration::from_millis(DEFERRED_CHECK_MAX_MS as u64);

    fn new(now: Instant) -> Self {
        CheckSchedule {
            interval: Self::FIRST,
            next: now + Self::FIRST,
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A check ran at `now`; `found` says whether it found an exit.
    fn checked(&mut self, now: Instant, found: bool) {
        self.interval = if found {
            Self::FIRST
        } else {
            (self.interval * 2).min(Self::LONGEST)
        };
        self.next = now + self.interval;
    }

    /// Milliseconds from `now` to the next check, rounded up: rounded down, the sleep would
    /// end just before the check is due and the thread would spin with zero timeouts until
    /// it is.
    fn millis_until(&self, now: Instant) -> i32 {
        let millis = self
            .next
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000);
        i32::try_from(millis).unwrap_or(DEFERRED_CHECK_MAX_MS)
    }
}

/// Reaps the child whose pidfd is ready (a stale token finds nothing and does nothing).
fn reap_pidfd_child(table: &mut Table, token: RawFd) {
    let Some(slot) = table.by_pidfd.get(&token) else {
        return;
    };
    // The table's reference is one; any other is a transport or handle.
    let shared = Arc::strong_count(slot) > 1;
    if slot.try_reap(shared) {
        table.by_pidfd.remove(&token);
    }
}

/// The SIGCHLD fallback's bookkeeping.
#[derive(Default)]
struct Fallback {
    /// Reaps that no signal has accounted for yet (signals coalesce, so one SIGCHLD can stand
    /// for several exits).
    unclaimed_reaps: u64,
}

impl Fallback {
    /// One pass after `signals` wake-ups (0: the periodic scan).
    fn pass(&mut self, by_pid: &mut HashMap<libc::pid_t, Arc<ExitSlot>>, signals: u64) {
        if signals == 0 {
            scan(by_pid);
            return;
        }
        let (reaped, must_scan) = peek_and_reap(by_pid);
        self.unclaimed_reaps += reaped;
        if must_scan || signals > self.unclaimed_reaps {
            // A signal with no reap behind it: a foreign child, or one of ours reaped by
            // someone else. Only a scan tells them apart.
            scan(by_pid);
            self.unclaimed_reaps = 0;
        } else {
            self.unclaimed_reaps -= signals;
        }
    }
}

/// Reaps our exited children one peek at a time. Returns how many were reaped, and whether a
/// scan is needed because a foreign zombie hides the rest.
fn peek_and_reap(by_pid: &mut HashMap<libc::pid_t, Arc<ExitSlot>>) -> (u64, bool) {
    let mut reaped = 0;
    loop {
        match sys::wait::peek_any_exited() {
            Ok(Some(pid)) => match by_pid.get(&pid) {
                Some(slot) => {
                    if slot.try_reap(true) {
                        by_pid.remove(&pid);
                        reaped += 1;
                    } else {
                        return (reaped, true);
                    }
                }
                None => return (reaped, !by_pid.is_empty()),
            },
            Ok(None) => return (reaped, false),
            // ECHILD: no children at all, so any pid still in the table was reaped elsewhere.
            Err(_) => return (reaped, !by_pid.is_empty()),
        }
    }
}

/// Checks every child without a pidfd with `wait4(pid, WNOHANG)`.
fn scan(by_pid: &mut HashMap<libc::pid_t, Arc<ExitSlot>>) {
    by_pid.retain(|_, slot| !slot.try_reap(true));
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::CheckSchedule;

    const MS: Duration = Duration::from_millis(1);

    /// The intervals between checks that find nothing, starting at `start`.
    fn idle_intervals(schedule: &mut CheckSchedule, start: Instant, count: usize) -> Vec<u128> {
        let mut now = start;
        (0..count)
            .map(|_| {
                let before = now;
                now = schedule.next;
                assert!(schedule.is_due(now) && !schedule.is_due(now - MS));
                schedule.checked(now, false);
                (now - before).as_millis()
            })
            .collect()
    }

    /// A schedule after `count` checks that found nothing.
    fn after_idle_checks(count: usize) -> CheckSchedule {
        let start = Instant::now();
        let mut schedule = CheckSchedule::new(start);
        idle_intervals(&mut schedule, start, count);
        schedule
    }

    #[test]
    fn checks_that_find_nothing_back_off_to_a_second() {
        let start = Instant::now();
        let mut schedule = CheckSchedule::new(start);
        assert_eq!(
            idle_intervals(&mut schedule, start, 7),
            [100, 200, 400, 800, 1000, 1000, 1000]
        );
    }

    #[test]
    fn a_check_that_finds_an_exit_starts_over() {
        let mut schedule = after_idle_checks(4);
        let now = schedule.next;
        schedule.checked(now, true);
        assert_eq!(schedule.next - now, 100 * MS);
    }

    #[test]
    fn the_sleep_until_a_check_is_rounded_up() {
        let start = Instant::now();
        let schedule = CheckSchedule::new(start);
        assert_eq!(schedule.millis_until(start + 99 * MS + MS / 2), 1);
        assert_eq!(schedule.millis_until(start + 200 * MS), 0);
    }
}
