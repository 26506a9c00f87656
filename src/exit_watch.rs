//! A child's exit seen from the awaiting task's own reactor.
//!
//! Through the reaper thread an awaited exit costs two wake-ups: the exit wakes the reaper
//! thread, which wakes the task's worker. On this 2-vCPU VM a wake-up of an idle CPU costs
//! tens of µs. With the child's pidfd registered in the task's reactor instead, the exit
//! wakes the worker directly and the task reaps there. Measured with `cargo bench --bench
//! compare -- --only exit_latency` (close `cat`'s stdin, status in hand, awaited in a task):
//! 0.76-0.80x Tokio's latency through the reaper thread, 0.92-1.02x with this watch.
//!
//! While a task watches, the reaper thread does not: two threads woken by one exit race for
//! the reaper's table and, on two CPUs, for the CPUs (measured: 15-20 µs more per exit with
//! both watching). The reaper takes the pidfd back when the watch ends without the exit (the
//! transport dropped, the reactor gone) and whenever a handle waits, so nothing depends on
//! the transport being polled again.
//!
//! A future driven by `block_on` on a multi-thread runtime does not watch: its thread does
//! not drive the reactor, so the exit would reach it through a worker anyway, a hop as long
//! as the reaper thread's, and the registration would only add syscalls.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::RuntimeFlavor;

use crate::error::WaitError;
use crate::exit_status::ExitStatus;
use crate::reaper::ExitSlot;
use crate::sys;

/// A registration of the pidfd, and the slot to hand back to the reaper when it ends.
struct Watching {
    pidfd: AsyncFd<Arc<OwnedFd>>,
    slot: Arc<ExitSlot>,
}

/// The awaiting side of one child's exit: its pidfd in the reactor of the runtime the task is
/// polled in, registered on the first poll that finds the child running.
#[derive(Default)]
pub(crate) struct ExitWatch {
    state: WatchState,
}

#[derive(Default)]
enum WatchState {
    /// Not polled while the child runs yet.
    #[default]
    Unset,
    /// Boxed: every transport carries an `ExitWatch` and idle ones never watch, so they pay
    /// two words, not the registration's size.
    Watching(Box<Watching>),
    /// No pidfd, no reactor, or done: the reaper thread reaps.
    Off,
}

impl ExitWatch {
    /// Polls `slot`'s exit, reaping on this thread as soon as the pidfd says the child exited.
    pub(crate) fn poll_exit(
        &mut self,
        slot: &Arc<ExitSlot>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ExitStatus, WaitError>> {
        if let WatchState::Unset = self.state {
            self.state = match slot.exit_watch().and_then(register_in_this_reactor) {
                Some(pidfd) => {
                    slot.watch_from_task();
                    WatchState::Watching(Box::new(Watching {
                        pidfd,
                        slot: slot.clone(),
                    }))
                }
                None => WatchState::Off,
            };
        }
        if let WatchState::Watching(watching) = &self.state
            && let Poll::Ready(ready) = watching.pidfd.poll_read_ready(cx)
        {
            if ready.is_ok() {
                // Readable: the child has exited.
                slot.reap_now();
            }
            // Either way (an error means the reactor is gone) the reaper takes over whatever
            // is left.
            self.stop();
        }
        let exit = slot.poll_exit(cx);
        if exit.is_ready() {
            self.stop();
        }
        exit
    }

    /// Ends the watch, handing the child back to the reaper if it still runs.
    fn stop(&mut self) {
        if let WatchState::Watching(watching) = std::mem::replace(&mut self.state, WatchState::Off)
        {
            watching.slot.watch_from_reaper();
        }
    }
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            WatchState::Unset => "ExitWatch::Unset",
            WatchState::Watching(_) => "ExitWatch::Watching",
            WatchState::Off => "ExitWatch::Off",
        })
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registers `pidfd` for reading with the reactor of the runtime the caller is polled in;
/// `None` outside a runtime or in one without I/O (Tokio panics there, hence the catch).
fn register_in_this_reactor(pidfd: Arc<OwnedFd>) -> Option<AsyncFd<Arc<OwnedFd>>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    if runtime.runtime_flavor() == RuntimeFlavor::MultiThread && tokio::task::try_id().is_none() {
        // `block_on` on a multi-thread runtime (see the module docs; measured 5-15 % slower
        // with a watch).
        return None;
    }
    let register = || sys::fd::register_shared(pidfd, Interest::READABLE);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(register))
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::ExitWatch;

    #[test]
    fn an_exit_watch_that_never_watches_costs_two_words() {
        assert!(std::mem::size_of::<ExitWatch>() <= 2 * std::mem::size_of::<usize>());
    }
}
