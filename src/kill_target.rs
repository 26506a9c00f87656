//! Which processes a stop reaches: the child, its process group, or its whole tree. One
//! choice, made on the [`Command`], used alike by `kill_on_drop`, `terminate` (on the
//! transport and on a [`ProcessHandle`](crate::ProcessHandle)) and the timeout of an output
//! collection.

use std::time::Duration;

use crate::cgroup::TreeCgroup;
use crate::command::{Command, SessionOption};
use crate::error::Error;
use crate::exit_status::ExitStatus;
use crate::reaper::ExitSlot;
use crate::signal::Signal;
use crate::sys;
use crate::transport::ProcessTransport;

/// The processes that [`Command::kill_on_drop`], `terminate` and a
/// [timeout](Command::timeout) signal.
///
/// Plain [`signal`](ProcessTransport::signal), [`signal_group`](ProcessTransport::signal_group),
/// [`kill_tree`](ProcessTransport::kill_tree) and [`kill`](ProcessTransport::kill) keep
/// reaching what their names say, whatever the target.
///
/// ```
/// use process_transport::{Command, KillTarget};
///
/// let mut command = Command::new("make");
/// // A build stops with every compiler it started, which stay in its group.
/// command.kill_target(KillTarget::Group).kill_on_drop(true);
/// assert_eq!(command.get_process_group(), Some(0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KillTarget {
    /// The child alone, through its pidfd (the default, as in std, Tokio and Go).
    /// Descendants keep running, and may keep the pipes open.
    #[default]
    Child,
    /// The child's process group, as [`signal_group`](ProcessTransport::signal_group) does:
    /// helpers that stayed in the group are reached, even after the child itself has exited,
    /// and a descendant that moved to a group or session of its own is not. Setting it on a
    /// command without a group of its own also makes the child lead a new one, as
    /// [`Command::process_group`]`(0)` does. A child that joined this process's own group has
    /// no group this process may signal: then only the child is.
    Group,
    /// The child, every descendant and its group's members, as
    /// [`kill_tree`](ProcessTransport::kill_tree) finds them (freezing the tree first). The
    /// most thorough, and the most costly: each signal scans `/proc`.
    Tree,
}

impl Command {
    /// Chooses the processes that [`kill_on_drop`](Command::kill_on_drop), `terminate` and a
    /// [`timeout`](Command::timeout) signal (see [`KillTarget`]); [`KillTarget::Child`] by
    /// default. [`KillTarget::Group`] on a command that has no process group of its own (no
    /// [`process_group`](Command::process_group), [`new_session`](Command::new_session) or
    /// [`pty`](Command::pty)) also makes the child lead a new group, so that there is a group
    /// to signal that is not this process's.
    pub fn kill_target(&mut self, target: KillTarget) -> &mut Self {
        self.kill_target = target;
        if target == KillTarget::Group && self.session == SessionOption::Inherit {
            self.session = SessionOption::ProcessGroup(0);
        }
        self
    }

    /// The target set with [`kill_target`](Command::kill_target).
    pub fn get_kill_target(&self) -> KillTarget {
        self.kill_target
    }
}

/// What it takes to signal a child's processes: held by the transport and by every handle.
pub(crate) struct Reach<'a> {
    pub(crate) exit: &'a ExitSlot,
    pub(crate) spawned_pid: libc::pid_t,
    pub(crate) process_group: Option<libc::pid_t>,
    /// The child's transient cgroup, which `kill_tree` goes through when there is one.
    pub(crate) cgroup: Option<&'a TreeCgroup>,
}

impl Reach<'_> {
    /// `signal_group`: the group, unless there is none or it is this process's own.
    pub(crate) fn signal_group(&self, sig: i32) -> Result<(), Error> {
        let pgid = self.process_group.ok_or(Error::NoProcessGroup)?;
        if pgid == sys::signal::own_process_group() {
            // The child joined this process's own group: signalling it would hit us too.
            return Err(Error::NoProcessGroup);
        }
        self.exit.signal_group(pgid, sig)
    }

    /// `kill_tree`: how many besides the child were signalled.
    pub(crate) fn kill_tree(&self, sig: i32) -> usize {
        if let Some(cgroup) = self.cgroup {
            let signal_child = |s| {
                let _ = self.exit.signal(s);
            };
            if let Some(others) = cgroup.kill_tree(self.spawned_pid, signal_child, sig) {
                return others;
            }
        }
        let pid = || self.exit.pid();
        let signal = |s| {
            let _ = self.exit.signal(s);
        };
        let root = crate::tree::Root {
            pid: &pid,
            signal: &signal,
            spawned: self.spawned_pid,
            group_reserved: &|| self.exit.group_reserved(),
        };
        crate::tree::signal_tree(&root, self.process_group, sig)
    }

    /// Sends `sig` to `target`. [`Error::AlreadyExited`] when nothing was left to signal.
    pub(crate) fn signal_target(&self, target: KillTarget, sig: i32) -> Result<(), Error> {
        match target {
            KillTarget::Child => self.exit.signal(sig),
            KillTarget::Group => match self.signal_group(sig) {
                Err(Error::NoProcessGroup) => self.exit.signal(sig),
                other => other,
            },
            KillTarget::Tree => {
                let child_alive = self.exit.pid().is_some();
                let others = self.kill_tree(sig);
                if child_alive || others > 0 {
                    Ok(())
                } else {
                    Err(Error::AlreadyExited)
                }
            }
        }
    }
}

/// `Ok` for a signal that was sent or found nothing left; other errors are returned.
pub(crate) fn sent_or_gone(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Ok(()) | Err(Error::AlreadyExited) => Ok(()),
        Err(e) => Err(e),
    }
}

impl ProcessTransport {
    /// The processes that `kill_on_drop`, [`terminate`](ProcessTransport::terminate) and a
    /// [timeout](Command::timeout) signal, as set with [`Command::kill_target`].
    pub fn kill_target(&self) -> KillTarget {
        self.kill_target
    }

    /// Sends `sig` to the kill target.
    pub(crate) fn signal_kill_target(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.reach()
            .signal_target(self.kill_target, sig.into().number())
    }

    /// `terminate` through the kill target, reading (and discarding) output meanwhile.
    pub(crate) async fn terminate_kill_target(
        &mut self,
        grace: Duration,
    ) -> Result<ExitStatus, Error> {
        sent_or_gone(self.signal_kill_target(libc::SIGTERM))?;
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => {
                if self.kill_target != KillTarget::Child {
                    // The child is gone: what is left of its group or tree is swept.
                    let _ = self.signal_kill_target(libc::SIGKILL);
                }
                result
            }
            Err(_elapsed) => {
                sent_or_gone(self.signal_kill_target(libc::SIGKILL))?;
                self.wait().await
            }
        }
    }
}
