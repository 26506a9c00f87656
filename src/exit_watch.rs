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
//! both watching). The reaper takes the pidfd back, so nothing depends on the transport being
//! polled again, when the watch ends without the exit (the transport dropped, the reactor
//! gone, or another task polling it, perhaps in another runtime, which then watches in its
//! own reactor), and for good once a handle waits.
//!
//! Only a task watches, and only one whose transport's spawn registered pipes with a
//! reactor. A task's runtime drives its reactor whenever the task can run; a future under
//! `block_on` or a foreign executor may sit in a runtime nobody drives (and on a multi-thread
//! runtime the exit would reach it through a worker anyway, a hop as long as the reaper
//! thread's). The pipes prove that the runtime has I/O: a registration in a runtime without
//! panics inside Tokio.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::WaitError;
use crate::exit_status::ExitStatus;
use crate::reaper::ExitSlot;
use crate::sys;

/// A registration of the pidfd, the task it wakes, and the slot to hand back to the reaper
/// when it ends.
struct Watching {
    pidfd: AsyncFd<Arc<OwnedFd>>,
    waker: Waker,
    slot: Arc<ExitSlot>,
}

/// The awaiting side of one child's exit: its pidfd in the reactor of the runtime whose task
/// polls the transport, registered on the first poll in a task that finds the child running
/// (and again from another task, once a watch has ended).
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
        if let Some(watching) = &self.0
            && !watching.waker.will_wake(cx.waker())
        {
            // Another task polls now, perhaps in another runtime, whose reactor is not the
            // one watching.
            self.stop();
        }
        // Only a task: its runtime's reactor is driven whenever the task can run. A future
        // under `block_on` or a foreign executor may sit in a reactor nobody drives (and on a
        // multi-thread runtime the exit would reach it through a worker anyway).
        if self.0.is_none()
            && tokio::task::try_id().is_some()
            && let Some(pidfd) = slot.exit_watch()
        {
            match register_in_this_reactor(pidfd) {
                Some(pidfd) => {
                    slot.watch_from_task();
                    self.0 = Some(Box::new(Watching {
                        pidfd,
                        waker: cx.waker().clone(),
                        slot: slot.clone(),
                    }));
                }
                None => slot.reaper_only(),
            }
        }
        if let Some(watching) = &self.0
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
        if let Some(watching) = self.0.take() {
            watching.slot.return_to_reaper();
        }
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

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registers `pidfd` for reading with the reactor of the runtime the caller is polled in.
/// `None` if that fails, or in a runtime without I/O (possible only if the transport moved
/// into one after its spawn; Tokio panics there, hence the catch, after which the child is
/// left to the reaper for good).
fn register_in_this_reactor(pidfd: Arc<OwnedFd>) -> Option<AsyncFd<Arc<OwnedFd>>> {
    let register = || sys::fd::register_shared(pidfd, Interest::READABLE);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(register))
        .ok()?
        .ok()
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
