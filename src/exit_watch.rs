//! A child's exit seen from the awaiting task's own reactor.
//!
//! The reaper thread hears of every exit, but a task woken by it pays a second wake-up: the
//! child's exit wakes the reaper thread, which wakes the task's worker. On a 2-vCPU VM each
//! wake-up of an idle CPU costs tens of µs, so an awaited exit took about 150 µs where a
//! blocking `waitpid` took 105 (close `cat`'s stdin, status in hand; Tokio, whose SIGCHLD
//! lands in its own reactor, 125). With the child's pidfd also registered in the task's
//! reactor, the exit wakes the task's worker directly and the task reaps there: 110 µs.
//!
//! While a task watches, the reaper thread does not: two threads woken by one exit race for
//! the reaper's table and, on a 2-CPU machine, for the CPUs (measured: 160-180 µs with both
//! watching, 135-145 with the task alone). The reaper takes the pidfd back when the watch
//! ends without the exit (the transport dropped, the reactor gone) and whenever a handle
//! waits, so nothing depends on the transport being polled again.

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
    Watching {
        pidfd: AsyncFd<Arc<OwnedFd>>,
        slot: Arc<ExitSlot>,
    },
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
                    WatchState::Watching {
                        pidfd,
                        slot: slot.clone(),
                    }
                }
                None => WatchState::Off,
            };
        }
        if let WatchState::Watching { pidfd, .. } = &self.state
            && let Poll::Ready(ready) = pidfd.poll_read_ready(cx)
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
        if let WatchState::Watching { slot, .. } =
            std::mem::replace(&mut self.state, WatchState::Off)
        {
            slot.watch_from_reaper();
        }
    }
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            WatchState::Unset => "ExitWatch::Unset",
            WatchState::Watching { .. } => "ExitWatch::Watching",
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
        // `block_on` on a multi-thread runtime: this thread does not drive the reactor, so
        // the exit would reach it through a worker, a hop as long as the reaper thread's
        // (measured: 10-15 % slower with the registration's syscalls on top).
        return None;
    }
    let register = || sys::fd::register_shared(pidfd, Interest::READABLE);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(register))
        .ok()?
        .ok()
}
