//! Control of the child: signals (to it, its group, its tree), the terminal's size, and
//! waiting for the exit (plainly, after SIGKILL, or after SIGTERM and a grace period).

use std::os::fd::AsFd;
use std::task::{Context, Poll};
use std::time::Duration;

use super::ProcessTransport;
use crate::error::Error;
use crate::event::Event;
use crate::exit_status::ExitStatus;
use crate::kill_target::Reach;
use crate::pipe::Reads;
use crate::signal::Signal;
use crate::sys;

impl ProcessTransport {
    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the child. Fails with
    /// [`Error::AlreadyExited`] once the child has been reaped; never signals a reused pid.
    pub fn signal(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.exit.signal(sig.into().number())
    }

    /// Sends `sig` to the child's whole process group (see
    /// [`process_group`](ProcessTransport::process_group)), which reaches the descendants
    /// that stayed in it even after the child itself has exited: the child's zombie keeps the
    /// group's number for as long as the transport (or a handle) lives, so the signal can
    /// never reach a new group that took the number.
    ///
    /// ```
    /// use process_transport::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A shell and the helpers it starts, all in one new group.
    /// let mut child = Command::new("sh")
    ///     .args(["-c", "sleep 30 & sleep 30 & wait"])
    ///     .process_group(0)
    ///     .spawn()?;
    /// child.signal_group(libc::SIGTERM)?;
    /// assert_eq!(child.wait().await?.signal(), Some(libc::SIGTERM));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoProcessGroup`] without a group of the child's own (or one that is this
    /// process's); [`Error::AlreadyExited`] once the number is no longer held (only without a
    /// pidfd, see the crate's reaping notes); [`Error::Io`] if the kernel refuses the signal.
    pub fn signal_group(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.reach().signal_group(sig.into().number())
    }

    /// Sends `sig` to the child and every process descending from it or sharing its process
    /// group, and returns how many besides the child were signalled.
    ///
    /// The tree is first frozen with SIGSTOP (until a `/proc` scan finds no new member, so
    /// nothing forks its way out), then signalled, then sent SIGCONT. Each member is held by a
    /// pidfd and checked again (start time, and its group or its held parent) before the
    /// first signal, and every signal goes through that pidfd, so a pid reused after the scan
    /// is never hit. On kernels without `pidfd_open` (before 5.3) members are signalled by
    /// pid after the same checks, which narrows that window without closing it.
    ///
    /// This process is never signalled, nor anything reached only through it. If the child
    /// joined this process's own group, the group is left out (as
    /// [`signal_group`](ProcessTransport::signal_group) refuses it) and only the child's
    /// descendants are signalled. In a group the child joined, the other members are
    /// signalled (as `signal_group` would) but not their children. Descendants whose parent
    /// already exited are found only through the group, so spawn with
    /// [`Command::process_group`](crate::Command::process_group)`(0)` (or a new session) to be
    /// sure to reach them; that works after the child was reaped too, since its zombie keeps
    /// the group's number for as long as the transport (or a handle) lives.
    ///
    /// With a [`transient_cgroup`](crate::Command::transient_cgroup) none of this is needed:
    /// the cgroup holds the whole tree, daemons that left every group included, and SIGKILL
    /// goes through `cgroup.kill` (other signals to each member of the frozen cgroup).
    ///
    /// ```
    /// use process_transport::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut child = Command::new("sh")
    ///     .args(["-c", "sleep 30 & sleep 30 & wait"])
    ///     .process_group(0)
    ///     .spawn()?;
    /// # tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    /// let others = child.kill_tree(libc::SIGKILL);
    /// assert!(others >= 1, "the sleeps besides the shell");
    /// assert_eq!(child.wait().await?.signal(), Some(libc::SIGKILL));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A number that is not a signal the kernel takes reaches no one, and the count is 0;
    /// [`signal`](Self::signal) reports it as an error.
    pub fn kill_tree(&self, sig: impl Into<Signal>) -> usize {
        self.reach().kill_tree(sig.into().number())
    }

    /// What signalling this child's processes needs (shared with [`ProcessHandle`]s).
    ///
    /// [`ProcessHandle`]: crate::ProcessHandle
    pub(crate) fn reach(&self) -> Reach<'_> {
        Reach {
            exit: &self.exit,
            spawned_pid: self.spawned_pid,
            process_group: self.process_group,
            cgroup: self.cgroup_tree.as_ref(),
        }
    }

    /// Changes the window size of the child's terminal (spawned with
    /// [`Command::pty`](crate::Command::pty)); the child gets SIGWINCH.
    ///
    /// Works until the child is reaped or [`lose_connection`](ProcessTransport::lose_connection)
    /// is called, whatever became of fds 0 and 1; then it fails with
    /// [`Error::PipeClosed`]`(0)`. Without a pty it fails with [`Error::NoSuchPipe`]`(0)`.
    pub fn resize_pty(&self, rows: u16, cols: u16) -> Result<(), Error> {
        let master = match &self.pty_master {
            Some(master) => master,
            None if self.is_pty => return Err(Error::PipeClosed(0)),
            None => return Err(Error::NoSuchPipe(0)),
        };
        sys::pty::set_window_size(master.as_fd(), rows, cols).map_err(Error::Io)
    }

    /// Waits for the child to be reaped and returns its status.
    ///
    /// Before waiting it resumes reading and closes every writer (after flushing), as Tokio's
    /// `wait` closes stdin: a child waiting for EOF would otherwise never exit. A duplex
    /// socket's write half is shut down, and what the child sends on it afterwards is read
    /// and discarded like a pipe's output. A writer taken out with
    /// [`take_writer`](ProcessTransport::take_writer) is yours to shut down or drop first.
    /// Output read meanwhile is discarded, so a child writing more than a pipe holds cannot
    /// block; every other event it comes across (the `Closed` of the writers it closes, say)
    /// stays for the stream, in order (pipes taken out with
    /// [`take_reader`](ProcessTransport::take_reader) are yours to drain). A pipe whose child
    /// end has closed can block no one and is not read: what it still holds, its `Closed`, the
    /// `Exited` and the `Ended` are there for the stream after `wait` (its end stays open
    /// until then, or until the transport is dropped: closing it would hold up the status).
    /// Cancel-safe: cancelling loses no exit status, but those changes stay.
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.resume_reading();
        for fd in self.pipes.writer_fds() {
            self.end_writing(fd);
        }
        std::future::poll_fn(|cx| self.poll_exit_status(cx)).await
    }

    /// Puts `event`, which a wait came across, back for the stream, behind the others it left.
    fn keep_for_the_stream(&mut self, event: Event) {
        self.pending.insert(self.passed_over as usize, event);
        self.passed_over += 1;
    }

    fn poll_exit_status(&mut self, cx: &mut Context<'_>) -> Poll<Result<ExitStatus, Error>> {
        loop {
            // The exit first: once it is known, what is left in the pipes is discarded anyway,
            // so the status does not wait for their ends to be read and closed.
            self.poll_reaped(cx);
            if let Some(result) = self.exit_seen {
                return Poll::Ready(result.map_err(Error::Wait));
            }
            // Pipes whose child end closed are left for later: the exit is on its way.
            match self.poll_event_reading(cx, Reads::UntilHangup) {
                Poll::Ready(Some(Event::Exited(result))) => {
                    // The exit came during this poll: its event stays for the stream.
                    self.keep_for_the_stream(Event::Exited(result));
                    return Poll::Ready(result.map_err(Error::Wait));
                }
                Poll::Ready(Some(Event::Data { .. })) => continue,
                Poll::Ready(Some(event)) => self.keep_for_the_stream(event),
                Poll::Ready(None) => return Poll::Ready(self.final_status().map_err(Error::Wait)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends SIGKILL (unless the child was already reaped) and waits for the exit status.
    pub async fn kill(&mut self) -> Result<ExitStatus, Error> {
        match self.signal(libc::SIGKILL) {
            Ok(()) | Err(Error::AlreadyExited) => {}
            Err(e) => return Err(e),
        }
        self.wait().await
    }

    /// Sends SIGTERM to the [kill target](crate::Command::kill_target), waits up to `grace`
    /// for the child to exit (reading and discarding output, as [`wait`](Self::wait) does),
    /// then sends SIGKILL to the target, and returns the final status. With
    /// [`KillTarget::Group`](crate::KillTarget) or `Tree`, the child's exit ends the grace:
    /// what is left of the target then gets SIGKILL at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use process_transport::Command;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A child that ignores SIGTERM gets SIGKILL after the grace.
    /// let mut stubborn = Command::new("sh")
    ///     .args(["-c", "trap '' TERM; sleep 30"])
    ///     .spawn()?;
    /// # tokio::time::sleep(Duration::from_millis(100)).await;
    /// let status = stubborn.terminate(Duration::from_millis(200)).await?;
    /// assert_eq!(status.signal(), Some(libc::SIGKILL));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel refuses a signal; [`Error::Wait`] if the status was lost
    /// (the child was reaped by someone else).
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        self.terminate_kill_target(grace).await
    }
}
