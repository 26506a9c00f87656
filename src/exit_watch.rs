//! A child's exit seen from the awaiting future's own reactor.
//!
//! Through the reaper thread an awaited exit costs two wake-ups: the exit wakes the reaper
//! thread, which wakes the awaiting thread; on this 2-vCPU VM a wake-up of an idle CPU costs
//! tens of µs. With the child's pidfd registered in the runtime's reactor, the exit wakes the
//! thread that drives it, which polls the awaiting future and reaps there.
//!
//! Meanwhile the reaper keeps the pidfd in its deferred set, checked now and then rather
//! than slept on (see [`crate::reaper`]): were the thread woken by the same exit, it would
//! race the awaiting thread for the reaper's table and, on two CPUs, for the CPUs, which
//! undid the gain (measured with `cargo bench --bench compare -- --only exit_latency`,
//! against Tokio's latency: awaited in a task, 0.76-0.80x without a watch, 0.77-0.78x with
//! the reaper also woken, 0.89-0.91x with it deferred; on a current-thread runtime,
//! 0.81-0.93x, 0.85-0.87x and 0.96-0.97x). Yet an exit the future does not hear of (its task
//! busy elsewhere, a foreign executor blocking the thread, a fork that deregistered the
//! shared pidfd) is still reaped within that check. The pidfd goes back to the reaper's main
//! set when the watch ends without the exit (the transport dropped, the reactor gone, the
//! transport polled from elsewhere) and for good once a handle waits.
//!
//! Only a future polled where its runtime's reactor would wake it watches: a task of the
//! runtime the transport's pipes were registered with (which proves the runtime has I/O;
//! registering in one without panics inside Tokio), or any future under that runtime when it
//! is a current-thread one, whose single thread both polls and drives the reactor
//! (`#[tokio::main(flavor = "current_thread")]`, `#[tokio::test]`). Under `block_on` of a
//! multi-thread runtime the exit would reach the caller through a worker anyway, so the
//! reaper thread keeps it. A future of a current-thread runtime that nobody drives (a
//! `Handle::block_on` or a foreign executor while no thread is in `Runtime::block_on`, where
//! Tokio's own I/O stalls) hears its child's exit at the reaper's deferred check.
//!
//! The watch follows the transport from task to task within that runtime (the reactor wakes
//! whichever polled last) and ends when it is polled anywhere else. Where is told by the
//! runtime and task, not by comparing wakers: `Waker::will_wake` is false for two clones of
//! a current-thread `block_on`'s waker, which would register the pidfd again at every poll.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::WaitError;
use crate::exit_status::ExitStatus;
use crate::reaper::ExitSlot;
use crate::sys;

/// A registration of the pidfd and the slot to hand back to the reaper when it ends.
struct Watching {
    pidfd: AsyncFd<Arc<OwnedFd>>,
    slot: Arc<ExitSlot>,
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
        if !near_the_reactor_of(slot.home()) {
            // Polled from elsewhere now (another runtime, a multi-thread runtime's `block_on`).
            self.stop();
        } else if self.0.is_none()
            && let Some(pidfd) = slot.exit_watch()
            && let Ok(pidfd) = sys::fd::register_shared(pidfd, Interest::READABLE)
        {
            slot.watch_from_reactor();
            self.0 = Some(Box::new(Watching {
                pidfd,
                slot: slot.clone(),
            }));
        }
        let mut heard = false;
        if let Some(watching) = &self.0
            && let Poll::Ready(ready) = watching.pidfd.poll_read_ready(cx)
        {
            if ready.is_ok() {
                // Readable: the child has exited.
                slot.reap_now();
            }
            heard = true;
        }
        let exit = slot.poll_exit(cx);
        if exit.is_ready() {
            // Reaped: nothing to hand back.
            self.0 = None;
        } else if heard {
            // The reactor is gone: the reaper thread takes over.
            self.stop();
        }
        exit
    }

    /// Ends the watch, handing the child back to the reaper's main set if it still runs.
    fn stop(&mut self) {
        if let Some(watching) = self.0.take() {
            watching.slot.return_to_reaper();
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

/// Whether a future polled here would be woken by the reactor of runtime `home`: in a task
/// of it, or anywhere under it if it is a current-thread runtime (see the module's header).
fn near_the_reactor_of(home: Option<tokio::runtime::Id>) -> bool {
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
