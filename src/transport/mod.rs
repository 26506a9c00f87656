//! `ProcessTransport`: one running child, its pipes and its exit, driven by polling.
//!
//! The state and the trait impls live here; the event machine in [`poll`], the operations on
//! the pipes in [`pipes`], and signals, waiting and resizing in [`control`].

mod control;
mod pipes;
mod poll;

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use crate::error::{Error, WaitError};
use crate::event::Event;
use crate::exit_status::ExitStatus;
use crate::exit_watch::ExitWatch;
use crate::pipe::PipeSet;
use crate::reaper::ExitSlot;

/// What a transport keeps of its command, decided once by the spawn.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The child's pid.
    pub(crate) pid: libc::pid_t,
    /// The process group the child leads or joined, if it was spawned into one of its own
    /// choosing (a new group or session, a given group, or a pty's session).
    pub(crate) process_group: Option<libc::pid_t>,
    /// SIGKILL the kill target when the transport is dropped.
    pub(crate) kill_on_drop: bool,
    /// What `kill_on_drop`, `terminate` and output deadlines signal.
    pub(crate) kill_target: crate::KillTarget,
    /// The child's transient cgroup, if it was spawned into one.
    pub(crate) cgroup: Option<crate::cgroup::Containment>,
    /// How long pipes may stay open after the child exited before they are closed.
    pub(crate) wait_delay: Option<Duration>,
}

/// A running child process and the parent ends of its pipes.
///
/// Nothing happens in the background except reaping: data is read, queued writes are
/// flushed and closes are noticed while the transport is polled, in one of three ways:
///
/// - as a [`Stream`] of [`Event`]s;
/// - by [`run`](ProcessTransport::run)ning a [`ProcessProtocol`](crate::ProcessProtocol);
/// - by awaiting the exit status ([`wait`](ProcessTransport::wait), or `.await` on the
///   transport itself), which discards output so a chatty child can never block.
///
/// Reads happen only when the consumer asks for the next event, so a slow consumer makes the
/// child block on a full pipe instead of growing the parent's memory.
///
/// The pipes are in the reactor of the runtime the child was spawned in, so poll the
/// transport under that runtime (any of its tasks, or its `block_on`). Should that runtime
/// shut down first, each pipe still open closes with a [`CloseReason::Error`](crate::CloseReason::Error)
/// at the next poll, wherever that is (the child then sees its pipes close); the exit status
/// is still reaped and reported.
///
/// Dropping the transport closes its pipes. The child keeps running (unless
/// [`Command::kill_on_drop`](crate::Command::kill_on_drop) was set) and is reaped in the
/// background when it exits.
///
/// Every operation fails with [`Error`]; only spawning fails with
/// [`SpawnError`](crate::SpawnError).
pub struct ProcessTransport {
    spawned_pid: libc::pid_t,
    pub(crate) exit: Arc<ExitSlot>,
    pipes: PipeSet,
    /// Events ready for the consumer, some perhaps held back by a pause.
    pending: VecDeque<Event>,
    /// How many events at the front of `pending` a [`wait`](ProcessTransport::wait) came
    /// across and left for the stream (all but data, which it discards): the stream hands
    /// them out first, and the event machine looks past them. A count, not a queue of their
    /// own: every transport carries it, and almost all of them never use it.
    passed_over: u32,
    exit_seen: Option<Result<ExitStatus, WaitError>>,
    ended: bool,
    process_group: Option<libc::pid_t>,
    kill_on_drop: bool,
    pub(crate) kill_target: crate::KillTarget,
    pub(crate) cgroup: Option<crate::cgroup::Containment>,
    /// The same cgroup, as the tree to signal (shared with handles).
    cgroup_tree: Option<crate::cgroup::TreeCgroup>,
    wait_delay: Option<Duration>,
    wait_delay_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The child's pidfd in this task's reactor, to reap on exit without a thread hop.
    exit_watch: ExitWatch,
    /// A spare pty master: resizes go through it, and it keeps the terminal from hanging up
    /// the child when the pipes close before the child exits. Dropped once the child is
    /// reaped, on `lose_connection`, or with the transport.
    pty_master: Option<OwnedFd>,
    is_pty: bool,
}

/// A pid as the public API gives it. Pids are positive, so nothing is lost.
fn public_pid(pid: libc::pid_t) -> u32 {
    pid.unsigned_abs()
}

impl ProcessTransport {
    /// The transport of a child spawned as `settings` say, with its `pipes`, its reaper
    /// `exit` slot and, for a pty, a spare master.
    pub(crate) fn new(
        settings: Settings,
        exit: Arc<ExitSlot>,
        pipes: PipeSet,
        pty_master: Option<OwnedFd>,
    ) -> Self {
        ProcessTransport {
            spawned_pid: settings.pid,
            exit,
            pending: VecDeque::new(),
            passed_over: 0,
            exit_seen: None,
            ended: false,
            process_group: settings.process_group,
            kill_on_drop: settings.kill_on_drop,
            kill_target: settings.kill_target,
            cgroup_tree: settings.cgroup.as_ref().map(|c| c.tree()),
            cgroup: settings.cgroup,
            wait_delay: settings.wait_delay,
            wait_delay_timer: None,
            exit_watch: ExitWatch::default(),
            pipes,
            is_pty: pty_master.is_some(),
            pty_master,
        }
    }

    /// The child's pid, or `None` once it has been reaped (a reaped pid may belong to another
    /// process already). The background reaper may reap a quick child before you look: to log
    /// the pid, use [`spawned_pid`](ProcessTransport::spawned_pid).
    pub fn pid(&self) -> Option<u32> {
        self.exit.pid().map(public_pid)
    }

    /// The pid the child was spawned with, whether or not it has been reaped since. For
    /// logging and correlation only: once reaped, the number may belong to another process.
    pub fn spawned_pid(&self) -> u32 {
        public_pid(self.spawned_pid)
    }

    /// The process group the child leads or joined, if it was spawned with
    /// [`Command::process_group`](crate::Command::process_group),
    /// [`Command::new_session`](crate::Command::new_session) or
    /// [`Command::pty`](crate::Command::pty).
    pub fn process_group(&self) -> Option<i32> {
        self.process_group
    }

    /// The child fds that are pipes of this transport and still open, in ascending order.
    pub fn open_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.pipes.open_fds()
    }

    /// The exit result as far as it is known (the stream has `Exited` before it ends).
    pub(crate) fn final_status(&self) -> Result<ExitStatus, WaitError> {
        self.exit_seen
            .or_else(|| self.exit.try_exit())
            .unwrap_or(Err(WaitError::Os(libc::EAGAIN)))
    }
}

impl Stream for ProcessTransport {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl IntoFuture for ProcessTransport {
    type Output = Result<ExitStatus, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    /// Awaiting the transport is [`wait`](ProcessTransport::wait).
    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move { self.wait().await })
    }
}

impl ProcessTransport {
    /// The child's transient cgroup as the tree to signal, for handles.
    pub(crate) fn cgroup_tree(&self) -> Option<&crate::cgroup::TreeCgroup> {
        self.cgroup_tree.as_ref()
    }

    /// The pipes, for the output collector.
    pub(crate) fn pipes(&self) -> &PipeSet {
        &self.pipes
    }
}

impl Drop for ProcessTransport {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.signal_kill_target(libc::SIGKILL);
        }
    }
}

impl std::fmt::Debug for ProcessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTransport")
            .field("pid", &self.pid())
            .field("open_fds", &self.open_fds().collect::<Vec<_>>())
            .field("ended", &self.ended)
            .finish()
    }
}
