//! A child's exit seen from the awaiting task's own reactor.
//!
//! Through the reaper thread an awaited exit costs two wake-ups: the exit wakes the reaper
//! thread, which wakes the task's worker; on this 2-vCPU VM a wake-up of an idle CPU costs
//! tens of µs. With the child's pidfd registered in the task's reactor, the exit wakes the
//! task's worker directly and the task reaps there.
//!
//! Meanwhile the reaper keeps the pidfd in its deferred set, checked now and then rather
//! than slept on (see [`crate::reaper`]): were the thread woken by the same exit, it would
//! race the task for the reaper's table and, on two CPUs, for the CPUs, which undid the gain
//! (measured with `cargo bench --bench compare -- --only exit_latency`, awaited in a task:
//! 0.76-0.80x Tokio's latency without a watch, 0.77-0.78x with the reaper also woken,
//! 0.89-0.91x with it deferred). Yet an exit the task does not hear of (the task busy
//! elsewhere, a foreign executor blocking it, a fork that deregistered the shared pidfd) is
//! still reaped within that check. The pidfd goes back to the reaper's main set when the
//! watch ends without the exit (the transport dropped, the reactor gone, another task
//! polling it, which then watches from its own reactor) and for good once a handle waits.
//!
//! Only a task watches (a future under `block_on` may sit in a reactor nobody drives, and on
//! a multi-thread runtime its exit would reach it through a worker anyway), and only in the
//! runtime the transport's pipes were registered with: that proves the runtime has I/O
//! (registering in one without panics inside Tokio).

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

/// The awaiting side of one child's exit: its pidfd in the reactor of its home runtime,
/// registered on the first poll in a task of that runtime that finds the child running.
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
        if self
            .0
            .as_ref()
            .is_some_and(|watching| !watching.waker.will_wake(cx.waker()))
        {
            // Another task polls now, perhaps in another runtime.
            self.stop();
        }
        if self.0.is_none()
            && in_a_task_of(slot.home())
            && let Some(pidfd) = slot.exit_watch()
            && let Ok(pidfd) = sys::fd::register_shared(pidfd, Interest::READABLE)
        {
            slot.watch_from_task();
            self.0 = Some(Box::new(Watching {
                pidfd,
                waker: cx.waker().clone(),
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

/// Whether the caller is a task of the runtime `home`.
fn in_a_task_of(home: Option<tokio::runtime::Id>) -> bool {
    let Some(home) = home else { return false };
    tokio::task::try_id().is_some()
        && tokio::runtime::Handle::try_current().is_ok_and(|runtime| runtime.id() == home)
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
