//! A child's exit heard in the awaiting future's own reactor.
//!
//! Through the reaper thread an awaited exit costs two wake-ups: the exit wakes the reaper
//! thread, which wakes the awaiting thread; on this 2-vCPU VM a wake-up of an idle CPU costs
//! tens of µs. With the child's pidfd registered in the runtime's reactor, the exit wakes the
//! thread that drives the reactor, which reaps the child right there (see [`ReapOnWake`])
//! and then polls the awaiting future.
//!
//! Meanwhile the reaper keeps the pidfd in its deferred set, checked now and then rather
//! than slept on (see [`crate::reaper`]): were the thread woken by the same exit, it would
//! race the awaiting thread for the reaper's table and, on two CPUs, for the CPUs, which
//! undid the gain (measured with `cargo bench --bench compare -- --only exit_latency`,
//! against Tokio's latency: awaited in a task, 0.76-0.80x without a watch, 0.77-0.78x with
//! the reaper also woken, 0.89-0.91x with it deferred; on a current-thread runtime,
//! 0.81-0.93x, 0.85-0.87x and 0.96-0.97x). An exit the reactor does not hear of is still
//! reaped within that check: the runtime not driven (a foreign executor blocking its thread,
//! a `Handle::block_on` while no thread is in `Runtime::block_on`), or a fork that
//! deregistered the shared pidfd. The pidfd goes back to the reaper's main set when the
//! watch ends without the exit (the transport dropped, the reactor gone, the transport
//! polled from elsewhere) and for good once a handle waits.
//!
//! A future watches only where the reactor that would hear the exit is its runtime's and is
//! normally driven: in a task of the runtime the transport's pipes were registered with
//! (registering pipes there proved the runtime has I/O; registering in a runtime without
//! I/O panics inside Tokio), or anywhere under that runtime when it is a current-thread one,
//! whose single thread both polls and drives the reactor (`#[tokio::main(flavor =
//! "current_thread")]`, `#[tokio::test]`). Under `block_on` of a multi-thread runtime the
//! exit would reach the caller through a worker anyway, so the reaper thread keeps it.
//!
//! The watch belongs to the transport, not to one `wait()`: it follows the transport from
//! task to task within that runtime, outlives a cancelled wait, and ends when the transport
//! is polled anywhere else. Where is told by the runtime and task, not by comparing wakers:
//! `Waker::will_wake` is false for two clones of a current-thread `block_on`'s waker, which
//! would register the pidfd again at every poll.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::WaitError;
use crate::exit_status::ExitStatus;
use crate::reaper::ExitSlot;
use crate::sys;

/// A registration of the pidfd, and the waker it holds.
struct Watching {
    pidfd: AsyncFd<Arc<OwnedFd>>,
    /// `reap_on_wake` as a waker.
    reaping_waker: Waker,
    reap_on_wake: Arc<ReapOnWake>,
}

/// The waker the pidfd's registration holds. It reaps the child where the reactor hears the
/// exit, on the thread driving it, which wakes the task that polled the slot last: so the
/// child is reaped at once even when that task no longer awaits it (a `wait()` cancelled by
/// `select!` or `timeout`, the transport left idle), rather than at the reaper's deferred
/// check. Its slot is the one the watch hands back to the reaper when it ends.
struct ReapOnWake {
    slot: Arc<ExitSlot>,
    /// Woken since the registration was last polled (at first: never polled). Until then
    /// it holds this waker and has nothing to say, so a poll of the transport (one per event
    /// of a busy stream) skips it.
    woken: AtomicBool,
}

impl Wake for ReapOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.slot.reap_now();
        // Also woken when the reactor shuts down, with nothing to reap: the poll this asks
        // for hands the child back to the reaper thread. (After a reap, a no-op.)
        self.slot.wake_poller();
    }
}

/// The awaiting side of one child's exit: its pidfd in the reactor of its home runtime,
/// registered on the first poll near that reactor (see the module's header) that finds the
/// child running.
///
/// Boxed: every transport carries an `ExitWatch` and idle ones never watch, so they pay a
/// pointer, not the registration's size.
#[derive(Default)]
pub(crate) struct ExitWatch(Option<Box<Watching>>);

impl ExitWatch {
    /// Polls `slot`'s exit, reaping on this thread as soon as the pidfd says the child exited.
    pub(crate) fn poll_exit(
        &mut self,
        slot: &Arc<ExitSlot>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ExitStatus, WaitError>> {
        // Asked at every poll, even by the same task: a task of a `LocalSet` keeps its id
        // under whichever runtime drives the set.
        if !may_watch_from_here(slot.home()) {
            // Polled from elsewhere now: another runtime or none, a multi-thread runtime's
            // `block_on`.
            self.stop();
        } else if self.0.is_none()
            && let Some(pidfd) = slot.exit_watch()
            && let Ok(pidfd) = sys::fd::register_shared(pidfd, Interest::READABLE)
        {
            slot.watch_from_reactor();
            let reap_on_wake = Arc::new(ReapOnWake {
                slot: slot.clone(),
                woken: AtomicBool::new(true),
            });
            self.0 = Some(Box::new(Watching {
                pidfd,
                reaping_waker: Waker::from(reap_on_wake.clone()),
                reap_on_wake,
            }));
        }
        // Reaped already (by the reactor's wake-up, most often): nothing more to ask. This also
        // makes `cx` the task that a wake-up of the registration wakes.
        if let Poll::Ready(exit) = slot.poll_exit(cx) {
            self.0 = None;
            return Poll::Ready(exit);
        }
        let Some(watching) = &self.0 else {
            return Poll::Pending;
        };
        if !watching.reap_on_wake.woken.swap(false, Ordering::SeqCst) {
            // Still armed with the reaping waker, which has not fired.
            return Poll::Pending;
        }
        let mut reaping = Context::from_waker(&watching.reaping_waker);
        let Poll::Ready(ready) = watching.pidfd.poll_read_ready(&mut reaping) else {
            return Poll::Pending;
        };
        if ready.is_ok() {
            // Readable: the child has exited (the wake-up that said so may have come before
            // the registration held the reaping waker).
            slot.reap_now();
        }
        let exit = slot.poll_exit(cx);
        if exit.is_ready() {
            // Reaped: nothing to hand back.
            self.0 = None;
        } else {
            // Readiness without an exit: the reactor is gone; the reaper thread takes over.
            self.stop();
        }
        exit
    }

    /// Ends the watch, handing the child back to the reaper's main set if it still runs.
    fn stop(&mut self) {
        if let Some(watching) = self.0.take() {
            watching.reap_on_wake.slot.return_to_reaper();
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "ExitWatch::Watching",
            None => "ExitWatch::Idle",
        })
    }
}

/// Whether a future polled here may watch in the reactor of runtime `home`: in a task of it,
/// or anywhere under it if it is a current-thread runtime (see the module's header for why,
/// and for what happens where that reactor is not driven after all).
fn may_watch_from_here(home: Option<tokio::runtime::Id>) -> bool {
    let Some(home) = home else { return false };
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.id() == home
            && (tokio::task::try_id().is_some()
                || runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
    })
}

#[cfg(test)]
mod tests {
    use super::ExitWatch;

    #[test]
    fn an_exit_watch_that_never_watches_costs_a_pointer() {
        assert_eq!(
            std::mem::size_of::<ExitWatch>(),
            std::mem::size_of::<usize>()
        );
    }
}
