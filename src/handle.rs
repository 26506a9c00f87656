//! `ProcessHandle`: the child's identity, shared, for tasks other than the one reading it.

use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::TreeCgroup;
use crate::error::Error;
use crate::exit_status::ExitStatus;
use crate::kill_target::{KillTarget, Reach, sent_or_gone};
use crate::reaper::ExitSlot;
use crate::signal::Signal;
use crate::transport::ProcessTransport;

/// A cheap, shareable handle on a spawned child: signal it, stop it or wait for its exit from
/// any task, while the [`ProcessTransport`] itself is read elsewhere.
///
/// It holds the child's pidfd identity (never a bare pid), so a signal can never reach a
/// process that took the number after the child was reaped: once reaped, signalling fails
/// with [`Error::AlreadyExited`]. Clones share that identity; it is `Clone`, `Send` and
/// `Sync`, and works after the transport is dropped.
///
/// The handle has no pipes. Whoever reads the transport's events drains them; if nobody
/// does, a child that fills a pipe blocks (SIGKILL still ends it). A child in a process
/// group of its own keeps its zombie, and with it the group's number, while a handle lives,
/// so that [`signal_group`](ProcessHandle::signal_group) stays safe: drop handles you no
/// longer need.
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
/// use process_transport::{Command, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut child = Command::new("sleep").arg("30").spawn()?;
/// let handle = child.handle();
///
/// // One task reads the events to the end; this one decides when the child stops.
/// let reader = tokio::spawn(async move {
///     let mut last = None;
///     while let Some(event) = child.next().await {
///         last = Some(event);
///     }
///     last
/// });
/// assert_eq!(handle.try_status()?, None);
/// let status = handle.terminate(Duration::from_secs(5)).await?;
/// assert_eq!(status.signal(), Some(libc::SIGTERM));
/// assert_eq!(reader.await.unwrap(), Some(Event::Ended(Ok(status))));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProcessHandle {
    exit: Arc<ExitSlot>,
    spawned_pid: libc::pid_t,
    process_group: Option<libc::pid_t>,
    kill_target: KillTarget,
    cgroup: Option<TreeCgroup>,
}

impl ProcessTransport {
    /// A [`ProcessHandle`] on this child, for other tasks to signal it, stop it or await its
    /// exit while this transport is read.
    pub fn handle(&self) -> ProcessHandle {
        ProcessHandle {
            exit: self.exit.clone(),
            spawned_pid: self.spawned_pid() as libc::pid_t,
            process_group: self.process_group(),
            kill_target: self.kill_target,
            cgroup: self.cgroup_tree().cloned(),
        }
    }

    /// The exit status if the child has been reaped, `None` while it runs; never waits. It
    /// may be known before the stream yields [`Event::Exited`](crate::Event::Exited).
    ///
    /// # Errors
    ///
    /// [`Error::Wait`] if the status was lost (the child was reaped by someone else).
    pub fn try_status(&self) -> Result<Option<ExitStatus>, Error> {
        self.exit.try_exit().transpose().map_err(Error::Wait)
    }
}

impl ProcessHandle {
    fn reach(&self) -> Reach<'_> {
        Reach {
            exit: &self.exit,
            spawned_pid: self.spawned_pid,
            process_group: self.process_group,
            cgroup: self.cgroup.as_ref(),
        }
    }

    /// The child's pid, or `None` once it has been reaped (as
    /// [`ProcessTransport::pid`]).
    pub fn pid(&self) -> Option<u32> {
        self.exit.pid().map(|pid| pid as u32)
    }

    /// The pid the child was spawned with, reaped or not; for logging only.
    pub fn spawned_pid(&self) -> u32 {
        self.spawned_pid as u32
    }

    /// The process group the child leads or joined, if any (as
    /// [`ProcessTransport::process_group`]).
    pub fn process_group(&self) -> Option<i32> {
        self.process_group
    }

    /// The processes [`terminate`](ProcessHandle::terminate) signals (see
    /// [`Command::kill_target`](crate::Command::kill_target)).
    pub fn kill_target(&self) -> KillTarget {
        self.kill_target
    }

    /// Sends `sig` to the child, through its pidfd.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExited`] once the child has been reaped; [`Error::Io`] if the kernel
    /// refuses the signal.
    pub fn signal(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.exit.signal(sig.into().number())
    }

    /// Sends `sig` to the child's process group, as
    /// [`ProcessTransport::signal_group`] does.
    ///
    /// # Errors
    ///
    /// [`Error::NoProcessGroup`] if the child has no group of its own (or joined this
    /// process's); [`Error::AlreadyExited`] once the group's number is no longer held by the
    /// child; [`Error::Io`] if the kernel refuses the signal.
    pub fn signal_group(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.reach().signal_group(sig.into().number())
    }

    /// Sends `sig` to the child and everything descending from it or sharing its group, as
    /// [`ProcessTransport::kill_tree`] does, and returns how many besides the child were
    /// signalled.
    pub fn kill_tree(&self, sig: impl Into<Signal>) -> usize {
        self.reach().kill_tree(sig.into().number())
    }

    /// Sends SIGTERM to the [kill target](ProcessHandle::kill_target), waits up to `grace`
    /// for the child to exit, then sends SIGKILL to the target, and returns the exit status.
    /// With [`KillTarget::Group`] or [`KillTarget::Tree`], the child's exit ends the grace:
    /// what is left of the target then gets SIGKILL at once.
    ///
    /// Unlike [`ProcessTransport::terminate`], it reads no pipe: whoever consumes the
    /// transport's events keeps draining them meanwhile. A child that blocks on a full pipe
    /// nobody reads is killed when the grace runs out. Needs the runtime's timer.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel refuses a signal; [`Error::Wait`] if the exit status was
    /// lost. A child that is already gone is not an error: its status is returned.
    pub async fn terminate(&self, grace: Duration) -> Result<ExitStatus, Error> {
        let reach = self.reach();
        sent_or_gone(reach.signal_target(self.kill_target, libc::SIGTERM))?;
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(result) => {
                if self.kill_target != KillTarget::Child {
                    // The child is gone: what is left of its group or tree is swept.
                    let _ = reach.signal_target(self.kill_target, libc::SIGKILL);
                }
                result
            }
            Err(_elapsed) => {
                sent_or_gone(reach.signal_target(self.kill_target, libc::SIGKILL))?;
                self.exited().await
            }
        }
    }

    /// The exit status if the child has been reaped, `None` while it runs; never waits.
    ///
    /// # Errors
    ///
    /// [`Error::Wait`] if the status was lost (the child was reaped by someone else).
    pub fn try_status(&self) -> Result<Option<ExitStatus>, Error> {
        self.exit.try_exit().transpose().map_err(Error::Wait)
    }

    /// Waits until the child has been reaped and returns its status. Any number of tasks may
    /// await it at once, alongside the transport's own reader; cancel-safe. It does not wait
    /// for the pipes to close, and reads none of them.
    ///
    /// # Errors
    ///
    /// [`Error::Wait`] if the status was lost (the child was reaped by someone else).
    pub async fn exited(&self) -> Result<ExitStatus, Error> {
        self.exit.exited().await.map_err(Error::Wait)
    }
}

impl std::fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.pid())
            .field("spawned_pid", &self.spawned_pid)
            .field("process_group", &self.process_group)
            .field("kill_target", &self.kill_target)
            .finish()
    }
}
