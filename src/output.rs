//! Collecting everything a child writes, on every fd the parent reads, with an optional
//! per-fd cap and a deadline that keeps what was read before it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::command::{ChildFd, Command};
use crate::error::{Error, RunError};
use crate::event::Event;
use crate::exit_status::ExitStatus;
use crate::kill_target::{KillTarget, sent_or_gone};
use crate::transport::ProcessTransport;

/// How long the kill target gets between SIGTERM and SIGKILL after a timeout, unless set.
const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// How [`ProcessTransport::output`] collects: a deadline, the grace the child gets after it,
/// and a cap on what is kept of each fd. The default has no deadline and no cap.
///
/// ```
/// use std::time::Duration;
/// use process_transport::Collect;
///
/// let options = Collect::new()
///     .timeout(Duration::from_secs(30))
///     .grace(Duration::from_secs(1))
///     .max_bytes_per_fd(1 << 20);
/// assert_eq!(options.get_timeout(), Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collect {
    timeout: Option<Duration>,
    grace: Duration,
    max_bytes_per_fd: Option<usize>,
}

impl Default for Collect {
    fn default() -> Self {
        Collect::new()
    }
}

impl Collect {
    /// No deadline, no cap, and a grace of 2 seconds should a deadline be set.
    pub const fn new() -> Self {
        Collect {
            timeout: None,
            grace: DEFAULT_GRACE,
            max_bytes_per_fd: None,
        }
    }

    /// A deadline, counted from the start of the collection. When it passes, the
    /// [kill target](Command::kill_target) gets SIGTERM, then SIGKILL if the child has not
    /// exited within the [grace](Collect::grace) (with `Group` or `Tree`, what is left of the
    /// target gets SIGKILL as soon as the child has exited). Output keeps being read all
    /// along, and once the child has exited what is still in the pipes is read for at most
    /// the grace again (a process outside the target may hold them open); then the
    /// collection ends with [`Output::timed_out`] set and everything read so far. Needs the
    /// runtime's timer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long the target gets between SIGTERM and SIGKILL after a timeout (2 seconds
    /// unless set), and how long pipes are read after the child's exit then.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Keeps at most `bytes` of each fd. What comes past the cap is still read, so the child
    /// never blocks on a full pipe, and thrown away; [`Output::truncated`] counts it.
    pub fn max_bytes_per_fd(mut self, bytes: usize) -> Self {
        self.max_bytes_per_fd = Some(bytes);
        self
    }

    /// The deadline set with [`timeout`](Collect::timeout), if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The grace set with [`grace`](Collect::grace).
    pub fn get_grace(&self) -> Duration {
        self.grace
    }

    /// The cap set with [`max_bytes_per_fd`](Collect::max_bytes_per_fd), if any.
    pub fn get_max_bytes_per_fd(&self) -> Option<usize> {
        self.max_bytes_per_fd
    }
}

/// Everything a child wrote to the fds the parent reads, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The child's exit status. After a timeout, usually death by SIGTERM or SIGKILL.
    pub status: ExitStatus,
    /// What was kept of each fd the parent reads (1 and 2, and any other mapped with
    /// [`ChildFd::ParentReads`](crate::ChildFd::ParentReads)), by child fd; an fd that got
    /// nothing maps to empty bytes. Pipes taken out with
    /// [`take_reader`](ProcessTransport::take_reader) are not collected.
    pub fds: BTreeMap<i32, Bytes>,
    /// The bytes read and thrown away past the [cap](Collect::max_bytes_per_fd), by child
    /// fd; only fds that went past it are listed.
    pub truncated: BTreeMap<i32, u64>,
    /// `true` if the [deadline](Collect::timeout) passed before the child had exited and
    /// closed its pipes: the child was stopped (if it still ran) and the output is what was
    /// read until then.
    pub timed_out: bool,
}

impl Output {
    /// What was kept of child fd `fd` (empty if the parent did not read it).
    pub fn fd(&self, fd: i32) -> &[u8] {
        self.fds.get(&fd).map_or(&[], |bytes| bytes.as_ref())
    }

    /// What was kept of child fd 1.
    pub fn stdout(&self) -> &[u8] {
        self.fd(1)
    }

    /// What was kept of child fd 2.
    pub fn stderr(&self) -> &[u8] {
        self.fd(2)
    }
}

impl Command {
    /// A deadline for [`output`](Command::output) and [`status`](Command::status), counted
    /// from the spawn: see [`Collect::timeout`]. Streams and `wait` are not bounded by it.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.collect = self.collect.timeout(timeout);
        self
    }

    /// The grace between SIGTERM and SIGKILL after a [`timeout`](Command::timeout) (2
    /// seconds unless set): see [`Collect::grace`].
    pub fn timeout_grace(&mut self, grace: Duration) -> &mut Self {
        self.collect = self.collect.grace(grace);
        self
    }

    /// Keeps at most `bytes` of each fd in [`output`](Command::output): see
    /// [`Collect::max_bytes_per_fd`].
    pub fn output_limit(&mut self, bytes: usize) -> &mut Self {
        self.collect = self.collect.max_bytes_per_fd(bytes);
        self
    }

    /// The collection settings made with [`timeout`](Command::timeout),
    /// [`timeout_grace`](Command::timeout_grace) and [`output_limit`](Command::output_limit).
    pub fn get_collect(&self) -> Collect {
        self.collect
    }

    /// Spawns the child, closes its stdin (every pipe the parent writes, so that it sees end
    /// of file), and collects everything it writes on every fd the parent reads until it has
    /// exited and closed them, or the [`timeout`](Command::timeout) passes: see
    /// [`ProcessTransport::output`].
    ///
    /// Dropping the future drops the transport: the child is killed only with
    /// [`kill_on_drop`](Command::kill_on_drop), and is reaped in the background either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use process_transport::{ChildFd, Command};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), process_transport::RunError> {
    /// let out = Command::new("sh")
    ///     .args(["-c", "echo out; echo err >&2; echo three >&3"])
    ///     .fd(3, ChildFd::ParentReads)
    ///     .output()
    ///     .await?;
    /// assert!(out.status.success());
    /// assert_eq!(out.stdout(), b"out\n");
    /// assert_eq!(out.stderr(), b"err\n");
    /// assert_eq!(out.fd(3), b"three\n");
    ///
    /// // A deadline keeps what was read before it.
    /// let out = Command::new("sh")
    ///     .args(["-c", "echo started; exec sleep 30"])
    ///     .timeout(Duration::from_secs(2))
    ///     .output()
    ///     .await?;
    /// assert!(out.timed_out);
    /// assert_eq!(out.stdout(), b"started\n");
    /// assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Whatever [`spawn`](Command::spawn) fails with (nothing is left behind then), or what
    /// [`ProcessTransport::output`] fails with.
    pub async fn output(&self) -> Result<Output, RunError> {
        let mut child = self.spawn()?;
        Ok(child.output(self.collect).await?)
    }

    /// Spawns the child with `/dev/null` in place of every pipe (so it reads end of file on
    /// stdin and its output goes nowhere: `stdout(ChildFd::Inherit(1))` and
    /// `stderr(ChildFd::Inherit(2))` let it through, as std's and Tokio's `status` do), and
    /// returns its exit status as soon as it has exited. A background process it leaves
    /// behind neither holds the status up nor is broken by a closed pipe when it writes
    /// later. Three kinds of fd stay what they are: fds 0-2 under a [`pty`](Command::pty)
    /// (the terminal, drained until the exit), a pipe given a
    /// [`pipe_capacity`](Command::pipe_capacity), and a [`Duplex`](ChildFd::Duplex) socket
    /// (the child may need a socket there): these close when the status is in, and a
    /// process writing to them later gets `EPIPE`. Once the
    /// [`timeout`](Command::timeout) passes, the [kill target](Command::kill_target) is
    /// stopped as [`terminate`](ProcessTransport::terminate) does (SIGTERM, the
    /// [grace](Command::timeout_grace), SIGKILL) and the status tells the signal.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), process_transport::RunError> {
    /// let status = process_transport::Command::new("sh").args(["-c", "exit 7"]).status().await?;
    /// assert_eq!(status.code(), Some(7));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Whatever [`spawn`](Command::spawn) fails with (nothing is left behind then), or what
    /// [`ProcessTransport::wait`] and [`ProcessTransport::terminate`] fail with.
    pub async fn status(&self) -> Result<ExitStatus, RunError> {
        // Nothing is read or written, so the pipes become /dev/null, which the child sees the
        // same way (end of file on stdin, writes that go nowhere) and which cannot break
        // under a background process of its that writes after the status is in. Not fds 0-2
        // under a pty (its terminal stands for them and must be drained), nor a pipe given a
        // capacity (asked for as such, and checked by the spawn as such).
        let mut quiet = self.clone();
        for (fd, what) in self.get_fds() {
            let keep = (self.pty.is_some() && fd <= 2) || self.pipe_capacity.contains_key(&fd);
            if matches!(what, ChildFd::ParentReads | ChildFd::ParentWrites) && !keep {
                quiet.fd(fd, ChildFd::Null);
            }
        }
        let mut child = quiet.spawn()?;
        let Some(deadline) = self.collect.get_timeout() else {
            return Ok(child.wait().await?);
        };
        match tokio::time::timeout(deadline, child.wait()).await {
            Ok(status) => Ok(status?),
            // `wait` is cancel-safe: an exit it was about to report is the terminate's.
            Err(_elapsed) => Ok(child.terminate(self.collect.get_grace()).await?),
        }
    }
}

/// Where a collection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the deadline (if any).
    Running,
    /// The deadline passed and the target got SIGTERM: waiting up to the grace for the exit.
    Grace,
    /// The target got SIGKILL: waiting for the exit.
    Killed,
    /// The child exited after the deadline: reading what is left for at most the grace.
    Draining,
}

/// The bytes kept per fd so far.
struct Buffers {
    cap: Option<usize>,
    fds: BTreeMap<i32, BytesMut>,
    truncated: BTreeMap<i32, u64>,
}

impl Buffers {
    fn push(&mut self, fd: i32, data: &[u8]) {
        let kept = self.fds.entry(fd).or_default();
        let room = self
            .cap
            .map_or(usize::MAX, |cap| cap.saturating_sub(kept.len()));
        let keep = data.len().min(room);
        // Copied rather than kept as slices, which would pin whole read buffers.
        kept.extend_from_slice(data.get(..keep).unwrap_or_default());
        if keep < data.len() {
            *self.truncated.entry(fd).or_default() += (data.len() - keep) as u64;
        }
    }
}

impl ProcessTransport {
    /// Collects everything the child writes on every fd the parent reads (not just 1 and 2)
    /// until the child has exited and every pipe is closed ([`Event::Ended`]), within the
    /// limits of `options`: a per-fd cap (what comes past it is read and thrown away, so the
    /// child never blocks) and a deadline that stops the
    /// [kill target](crate::Command::kill_target) gracefully and keeps the output read
    /// before it (see [`Collect::timeout`]).
    ///
    /// Like [`wait`](ProcessTransport::wait), it first resumes reading and closes every
    /// writer (after flushing what is queued), so a child reading its stdin to the end
    /// finishes. Data the stream had already yielded is not included; events other than data
    /// are consumed. A pipe held open by a process that outlives the child keeps it waiting
    /// (unless there is a deadline, or a [`wait_delay`](crate::Command::wait_delay)).
    ///
    /// **Cancellation.** Dropping the future never hangs or leaks anything: the transport
    /// stays usable where the collection stopped (unread events are still there, the writers
    /// stay closed, the child is not signalled), but the bytes this call had collected are
    /// dropped with it. To stop a collection early *and keep its output*, don't cancel it:
    /// signal the child (say from a [`ProcessHandle`](crate::ProcessHandle), or another
    /// `select!` branch while the collection future stays pinned) and let the collection
    /// finish, or give it a deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use process_transport::{Collect, Command};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut child = Command::new("sh").args(["-c", "echo ready; exec sleep 30"]).spawn()?;
    /// let handle = child.handle();
    /// let collect = child.output(Collect::new());
    /// tokio::pin!(collect);
    /// let out = tokio::select! {
    ///     out = &mut collect => out?,
    ///     _ = tokio::time::sleep(Duration::from_secs(1)) => {
    ///         // Shutting down: stop the child, and still take everything it wrote.
    ///         handle.signal(libc::SIGTERM)?;
    ///         collect.await?
    ///     }
    /// };
    /// assert_eq!(out.stdout(), b"ready\n");
    /// assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Wait`] if the exit status was lost (the child was reaped by someone else);
    /// [`Error::Io`] if the kernel refuses a signal after the deadline.
    pub async fn output(&mut self, options: Collect) -> Result<Output, Error> {
        self.resume_reading();
        let fds: Vec<i32> = self.open_fds().collect();
        let mut buffers = Buffers {
            cap: options.max_bytes_per_fd,
            fds: BTreeMap::new(),
            truncated: BTreeMap::new(),
        };
        for fd in fds {
            match self.pipes().get(fd).map(|pipe| pipe.parent_writes()) {
                // A pipe taken out is its holder's to close.
                Some(true) => self.end_writing(fd),
                Some(false) if self.is_own_reader(fd) => {
                    buffers.fds.insert(fd, BytesMut::new());
                    // A socket's write half ends as a pipe would: the child reads end of
                    // file, and its data is still collected.
                    self.end_writing(fd);
                }
                _ => {}
            }
        }
        let grace = options.grace;
        let mut phase = Phase::Running;
        let mut timed_out = false;
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> =
            options.timeout.map(|t| Box::pin(tokio::time::sleep(t)));

        let result = std::future::poll_fn(|cx| {
            loop {
                if matches!(phase, Phase::Grace | Phase::Killed) && self.exit.try_exit().is_some() {
                    if phase == Phase::Grace && self.kill_target != KillTarget::Child {
                        // The child is gone: what is left of its group or tree is swept.
                        let _ = self.signal_kill_target(libc::SIGKILL);
                    }
                    phase = Phase::Draining;
                    timer = Some(Box::pin(tokio::time::sleep(grace)));
                }
                if let Some(sleep) = timer.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    timer = None;
                    match phase {
                        Phase::Running => {
                            timed_out = true;
                            match self.signal_kill_target(libc::SIGTERM) {
                                Ok(()) => {
                                    phase = Phase::Grace;
                                    timer = Some(Box::pin(tokio::time::sleep(grace)));
                                }
                                // Nothing left to stop: read what the pipes still hold.
                                Err(Error::AlreadyExited) => {
                                    phase = Phase::Draining;
                                    timer = Some(Box::pin(tokio::time::sleep(grace)));
                                }
                                Err(e) => return Poll::Ready(Err(e)),
                            }
                        }
                        Phase::Grace => {
                            if let Err(e) = sent_or_gone(self.signal_kill_target(libc::SIGKILL)) {
                                return Poll::Ready(Err(e));
                            }
                            phase = Phase::Killed;
                        }
                        Phase::Killed => {}
                        Phase::Draining => {
                            return Poll::Ready(self.final_status().map_err(Error::Wait));
                        }
                    }
                    continue;
                }
                match self.poll_event(cx) {
                    Poll::Ready(Some(Event::Data { fd, data })) => buffers.push(fd, &data),
                    Poll::Ready(Some(Event::Ended(result))) => {
                        return Poll::Ready(result.map_err(Error::Wait));
                    }
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) => {
                        return Poll::Ready(self.final_status().map_err(Error::Wait));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        let status = result?;
        Ok(Output {
            status,
            fds: buffers
                .fds
                .into_iter()
                .map(|(fd, bytes)| (fd, bytes.freeze()))
                .collect(),
            truncated: buffers.truncated,
            timed_out,
        })
    }

    /// Whether the pipe the parent reads at `fd` is still the transport's (not taken out).
    /// A [duplex](crate::ChildFd::Duplex) counts: its data is collected like a pipe's (its
    /// parent side stays open for writing until the child ends).
    fn is_own_reader(&self, fd: i32) -> bool {
        self.pipes().get(fd).is_some_and(|pipe| {
            matches!(
                pipe.state,
                crate::pipe::PipeState::Reader(_) | crate::pipe::PipeState::Duplex(_)
            )
        })
    }
}
