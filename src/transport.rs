//! `ProcessTransport`: one running child, its pipes and its exit, driven by polling.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;

use crate::command::{Command, SessionOption};
use crate::error::{Error, WaitError};
use crate::event::{CloseReason, Event};
use crate::exit_status::ExitStatus;
use crate::io::{PipeReader, PipeWriter};
use crate::pipe::{FlowChange, Pipe, PipeState, ReadOutcome, TakenPipe, WriteFlow, same_os_error};
use crate::reaper::ExitSlot;
use crate::signal::Signal;
use crate::sys;

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
/// Dropping the transport closes its pipes. The child keeps running (unless
/// [`Command::kill_on_drop`] was set) and is reaped in the background when it exits.
pub struct ProcessTransport {
    spawned_pid: u32,
    exit: Arc<ExitSlot>,
    pipes: Vec<Pipe>,
    pending: VecDeque<Event>,
    exit_seen: Option<Result<ExitStatus, WaitError>>,
    ended: bool,
    next_reader: usize,
    process_group: Option<i32>,
    kill_on_drop: bool,
    wait_delay: Option<Duration>,
    wait_delay_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A spare pty master: resizes go through it, and it keeps the terminal from hanging up
    /// the child when the pipes close before the child exits. Dropped once the child is
    /// reaped, on `lose_connection`, or with the transport.
    pty_master: Option<OwnedFd>,
    is_pty: bool,
    pub(crate) cgroup: Option<crate::cgroup::Containment>,
}

impl ProcessTransport {
    pub(crate) fn new(
        pid: i32,
        exit: Arc<ExitSlot>,
        mut pipes: Vec<Pipe>,
        pty_master: Option<OwnedFd>,
        command: &Command,
    ) -> Self {
        for pipe in &mut pipes {
            if let PipeState::Writer(w) = &mut pipe.state {
                w.high_water = command.write_high_water;
                w.limit = command.write_buffer_limit;
            }
        }
        let process_group = match command.session {
            _ if command.pty.is_some() => Some(pid),
            SessionOption::NewSession | SessionOption::ProcessGroup(0) => Some(pid),
            SessionOption::ProcessGroup(pgid) => Some(pgid),
            SessionOption::Inherit => None,
        };
        ProcessTransport {
            spawned_pid: pid as u32,
            exit,
            pipes,
            pending: VecDeque::new(),
            exit_seen: None,
            ended: false,
            next_reader: 0,
            process_group,
            kill_on_drop: command.kill_on_drop,
            wait_delay: command.wait_delay,
            wait_delay_timer: None,
            is_pty: pty_master.is_some(),
            pty_master,
            cgroup: None,
        }
    }

    /// The child's pid, or `None` once it has been reaped (a reaped pid may belong to another
    /// process already). The background reaper may reap a quick child before you look: to log
    /// the pid, use [`spawned_pid`](ProcessTransport::spawned_pid).
    pub fn pid(&self) -> Option<u32> {
        self.exit.pid()
    }

    /// The pid the child was spawned with, whether or not it has been reaped since. For
    /// logging and correlation only: once reaped, the number may belong to another process.
    pub fn spawned_pid(&self) -> u32 {
        self.spawned_pid
    }

    /// The process group the child leads or joined, if it was spawned with
    /// [`Command::process_group`], [`Command::new_session`] or [`Command::pty`].
    pub fn process_group(&self) -> Option<i32> {
        self.process_group
    }

    /// The child fds that are pipes of this transport and still open, in ascending order.
    pub fn open_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.pipes
            .iter()
            .filter(|p| p.is_open())
            .map(Pipe::child_fd)
    }

    // ----- writing -------------------------------------------------------------------------

    /// Queues `data` for child fd `fd` and writes as much as the pipe takes now; the rest is
    /// written while the transport is polled. Usable from protocol callbacks. Never copies
    /// `data`.
    ///
    /// Returns [`WriteFlow::Paused`] once the queue is above the writer's high-water mark
    /// (64 KiB unless set with [`Command::write_high_water`]); an
    /// [`Event::WritePaused`] is also queued then, and [`Event::WriteResumed`] follows when
    /// the queue drains to a quarter of the mark. The queue keeps growing if you ignore this,
    /// unless [`Command::write_buffer_limit`] is set: then a write that would go past the
    /// limit fails with [`Error::WriteBufferFull`] and queues nothing.
    ///
    /// Fails with [`Error::NotWritable`] for a pipe the parent reads, [`Error::NoSuchPipe`]
    /// for an fd that is not a pipe, and [`Error::PipeClosed`] once the pipe is closed or
    /// closing.
    ///
    /// A write that goes out at once (nothing was queued ahead of it) and finds the pipe
    /// broken, because the child closed its end, fails with [`Error::Io`] holding the OS
    /// error (`EPIPE`, kind [`BrokenPipe`](std::io::ErrorKind::BrokenPipe)): nothing stays
    /// queued, no [`Event::WritePaused`] is queued, and the pipe closes with a
    /// [`Closed`](Event::Closed) event carrying the same error. A pipe that breaks while
    /// queued bytes wait for room is reported by that `Closed` event alone.
    pub fn write(&mut self, fd: i32, data: impl Into<Bytes>) -> Result<WriteFlow, Error> {
        let data = data.into();
        self.queue(fd, data.len(), std::iter::once(data))
    }

    /// Queues several buffers for child fd `fd`; they go out together with `writev`, without
    /// being copied into one buffer. Flow control as in [`write`](ProcessTransport::write);
    /// the limit applies to the whole sequence.
    pub fn write_sequence<I>(&mut self, fd: i32, data: I) -> Result<WriteFlow, Error>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let chunks: Vec<Bytes> = data.into_iter().collect();
        let total = chunks.iter().map(Bytes::len).sum();
        self.queue(fd, total, chunks)
    }

    /// Queues `chunks` (`total` bytes) on the writer at `fd`, if its limit allows all of them.
    fn queue(
        &mut self,
        fd: i32,
        total: usize,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<WriteFlow, Error> {
        let writer = self.writer(fd)?;
        if !writer.accepts(total) {
            return Err(Error::WriteBufferFull(fd));
        }
        let was_idle = writer.queued() == 0;
        chunks.into_iter().for_each(|chunk| writer.enqueue(chunk));
        self.after_enqueue(fd, was_idle)
    }

    /// Writes at once what the pipe takes, if nothing was queued before (otherwise the pipe
    /// is full and the poll loop flushes), and reports the writer's flow state.
    ///
    /// A write that finds the pipe broken fails, and the pipe closes: there is no flow to
    /// report, and a `WritePaused` would never be followed by a `WriteResumed`.
    fn after_enqueue(&mut self, fd: i32, was_idle: bool) -> Result<WriteFlow, Error> {
        let writer = self.writer(fd)?;
        if was_idle && let Err(e) = writer.write_now() {
            // Both the caller and the `Closed` event get the OS error, with its errno.
            let returned = same_os_error(&e);
            self.close_pipe(fd, CloseReason::Error(e.into()));
            return Err(Error::Io(returned));
        }
        let change = writer.check_paused();
        let flow = writer.flow();
        if change == FlowChange::Paused {
            self.pending.push_back(Event::WritePaused { fd });
        }
        Ok(flow)
    }

    /// [`write`](ProcessTransport::write) to child fd 0.
    pub fn write_stdin(&mut self, data: impl Into<Bytes>) -> Result<WriteFlow, Error> {
        self.write(0, data)
    }

    /// Bytes queued for child fd `fd` and not yet in the pipe (0 for anything but an open
    /// writer).
    pub fn queued_len(&self, fd: i32) -> usize {
        match self.pipe(fd).map(|p| &p.state) {
            Some(PipeState::Writer(w)) => w.queued(),
            _ => 0,
        }
    }

    /// Writes `data` to child fd `fd` and returns once all of it is in the pipe. A broken
    /// pipe fails it with [`Error::Io`] holding the OS error (`EPIPE`), found by the write
    /// or while flushing.
    ///
    /// While this waits, the transport reads nothing: a child that blocks writing its output
    /// while the parent blocks writing its input would deadlock. To stream both ways at once,
    /// use buffered [`write`](ProcessTransport::write)s while consuming events.
    pub async fn write_all(&mut self, fd: i32, data: impl Into<Bytes>) -> Result<(), Error> {
        self.write(fd, data)?;
        self.flush(fd).await
    }

    /// Sets the high-water mark of the writer at child fd `fd` (see
    /// [`write`](ProcessTransport::write)).
    pub fn set_write_high_water(&mut self, fd: i32, bytes: usize) -> Result<(), Error> {
        self.writer(fd)?.high_water = bytes;
        Ok(())
    }

    /// Returns once everything queued for child fd `fd` is in the pipe. A broken pipe fails
    /// it with [`Error::Io`] holding the OS error (`EPIPE`) and closes the pipe, with a
    /// [`Closed`](Event::Closed) event carrying the same error.
    pub async fn flush(&mut self, fd: i32) -> Result<(), Error> {
        std::future::poll_fn(|cx| {
            let writer = match self.writer(fd) {
                Ok(w) => w,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match writer.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    if writer.check_resumed() == FlowChange::Resumed {
                        self.pending.push_back(Event::WriteResumed { fd });
                    }
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => {
                    let returned = same_os_error(&e);
                    self.close_pipe(fd, CloseReason::Error(e.into()));
                    Poll::Ready(Err(Error::Io(returned)))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn writer(&mut self, fd: i32) -> Result<&mut crate::pipe::Writer, Error> {
        let pipe = self.pipe_mut(fd).ok_or(Error::NoSuchPipe(fd))?;
        if !pipe.parent_writes() {
            return Err(Error::NotWritable(fd));
        }
        match &mut pipe.state {
            PipeState::Writer(w) if w.closing => Err(Error::PipeClosed(fd)),
            PipeState::Writer(w) => Ok(w),
            PipeState::Reader(_) => Err(Error::NotWritable(fd)),
            PipeState::Taken(_) => Err(Error::PipeTaken(fd)),
            PipeState::Closed => Err(Error::PipeClosed(fd)),
        }
    }

    // ----- closing -------------------------------------------------------------------------

    /// Closes the pipe at child fd `fd`. A writer first flushes what is queued, then closes,
    /// and the child sees EOF (at once if nothing is queued; otherwise while the transport is
    /// polled, as all flushing is). A reader closes at once; the child's next write to it fails
    /// with `EPIPE`. Either way a [`Closed`](Event::Closed) event with
    /// [`CloseReason::Closed`] follows. Closing an already closed pipe does nothing.
    pub fn close_child_fd(&mut self, fd: i32) -> Result<(), Error> {
        let pipe = self.pipe_mut(fd).ok_or(Error::NoSuchPipe(fd))?;
        match &mut pipe.state {
            // Nothing to flush: close now, so the child sees EOF even if nobody polls.
            PipeState::Writer(w) if w.queued() == 0 => self.close_pipe(fd, CloseReason::Closed),
            PipeState::Writer(w) => w.closing = true,
            PipeState::Reader(_) => self.close_pipe(fd, CloseReason::Closed),
            PipeState::Taken(_) => return Err(Error::PipeTaken(fd)),
            PipeState::Closed => {}
        }
        Ok(())
    }

    /// Closes child fd 0 (after flushing).
    pub fn close_stdin(&mut self) -> Result<(), Error> {
        self.close_child_fd(0)
    }

    /// Closes child fd 1.
    pub fn close_stdout(&mut self) -> Result<(), Error> {
        self.close_child_fd(1)
    }

    /// Closes child fd 2.
    pub fn close_stderr(&mut self) -> Result<(), Error> {
        self.close_child_fd(2)
    }

    /// Closes every pipe of the transport (writers after flushing). The child is not signalled.
    pub fn lose_connection(&mut self) {
        // On a pty, the spare master must go too, or the terminal never hangs up.
        self.pty_master = None;
        let fds: Vec<i32> = self.pipes.iter().map(Pipe::child_fd).collect();
        for fd in fds {
            let _ = self.close_child_fd(fd);
        }
    }

    fn close_pipe(&mut self, fd: i32, reason: CloseReason) {
        if let Some(pipe) = self.pipe_mut(fd)
            && matches!(pipe.state, PipeState::Reader(_) | PipeState::Writer(_))
        {
            pipe.state = PipeState::Closed;
            tracing::trace!(fd, ?reason, "pipe closed");
            self.pending.push_back(Event::Closed { fd, reason });
        }
    }

    // ----- reading -------------------------------------------------------------------------

    /// Stops reading every pipe (Twisted's `pauseProducing`). The child blocks once a pipe is
    /// full; nothing is lost.
    ///
    /// From the moment this returns until reading resumes, no [`Data`](Event::Data) event
    /// comes for a paused pipe, not even for data read before the pause and not yet
    /// delivered: that is held back, in order, and comes after the resume, and so does the
    /// pipe's [`Closed`](Event::Closed) if it is queued behind such data (say the pipe was
    /// closed with [`close_child_fd`](ProcessTransport::close_child_fd) meanwhile).
    /// [`Event::Ended`] waits for what is held. Other events keep coming.
    pub fn pause_reading(&mut self) {
        self.set_paused(None, true);
    }

    /// Resumes reading every pipe; what the pause held back comes before anything newer.
    pub fn resume_reading(&mut self) {
        self.set_paused(None, false);
    }

    /// Stops reading child fd `fd`, holding back its data already read as
    /// [`pause_reading`](ProcessTransport::pause_reading) does.
    pub fn pause_reading_fd(&mut self, fd: i32) -> Result<(), Error> {
        self.reader_exists(fd)?;
        self.set_paused(Some(fd), true);
        Ok(())
    }

    /// Resumes reading child fd `fd`; what the pause held back comes before anything newer.
    pub fn resume_reading_fd(&mut self, fd: i32) -> Result<(), Error> {
        self.reader_exists(fd)?;
        self.set_paused(Some(fd), false);
        Ok(())
    }

    fn reader_exists(&self, fd: i32) -> Result<(), Error> {
        match self.pipe(fd) {
            None => Err(Error::NoSuchPipe(fd)),
            Some(pipe) if pipe.parent_writes() => Err(Error::NotReadable(fd)),
            Some(_) => Ok(()),
        }
    }

    /// Pauses or resumes the pipes the parent reads (one, or all), whatever their state: a
    /// closed pipe can still have data queued from before.
    fn set_paused(&mut self, fd: Option<i32>, paused: bool) {
        for pipe in &mut self.pipes {
            if fd.is_none_or(|fd| fd == pipe.child_fd()) && !pipe.parent_writes() {
                pipe.paused = paused;
            }
        }
    }

    /// Whether the queued event at `i` is held back: data of a paused pipe, and that pipe's
    /// `Closed` when such data is queued ahead of it (it must stay behind its data).
    fn is_held(&self, i: usize) -> bool {
        let paused = |fd: i32| self.pipe(fd).is_some_and(|p| p.paused);
        match &self.pending[i] {
            Event::Data { fd, .. } => paused(*fd),
            Event::Closed { fd, .. } => {
                paused(*fd)
                    && self
                        .pending
                        .range(..i)
                        .any(|e| matches!(e, Event::Data { fd: data_fd, .. } if data_fd == fd))
            }
            _ => false,
        }
    }

    /// The first queued event that is not held back. What is held of a pipe is its first
    /// events, so each pipe's events keep their order.
    fn next_pending(&mut self) -> Option<Event> {
        let i = (0..self.pending.len()).find(|&i| !self.is_held(i))?;
        self.pending.remove(i)
    }

    // ----- signals and exit ----------------------------------------------------------------

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the child. Fails with
    /// [`Error::AlreadyExited`] once the child has been reaped; never signals a reused pid.
    pub fn signal(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        self.exit.signal(sig.into().number())
    }

    /// Sends `sig` to the child's whole process group (see
    /// [`process_group`](ProcessTransport::process_group)), which reaches the descendants
    /// that stayed in it even after the child itself has exited.
    pub fn signal_group(&self, sig: impl Into<Signal>) -> Result<(), Error> {
        let sig = sig.into().number();
        let pgid = self.process_group.ok_or(Error::NoProcessGroup)?;
        if pgid == sys::signal::own_process_group() {
            // The child joined this process's own group: signalling it would hit us too.
            return Err(Error::NoProcessGroup);
        }
        self.exit.signal_group(pgid, sig)
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
    /// signalled (as `signal_group` would) but not their children, and once the child is
    /// reaped such a group is left out. Descendants whose parent already exited are found only
    /// through the group, so spawn with [`Command::process_group`]`(0)` (or a new session) to
    /// be sure to reach them; that works after the child was reaped too, unless a new process
    /// has taken the group's number.
    pub fn kill_tree(&self, sig: impl Into<Signal>) -> usize {
        let sig = sig.into().number();
        if let Some(others) = self.kill_tree_in_cgroup(sig) {
            return others;
        }
        let pid = || self.exit.pid().map(|pid| pid as i32);
        let signal = |s| {
            let _ = self.exit.signal(s);
        };
        let root = crate::tree::Root {
            pid: &pid,
            signal: &signal,
            spawned: self.spawned_pid as i32,
            group_reserved: &|| self.exit.group_reserved(),
        };
        crate::tree::signal_tree(&root, self.process_group, sig)
    }

    /// Changes the window size of the child's terminal (spawned with [`Command::pty`]); the
    /// child gets SIGWINCH.
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
    /// `wait` closes stdin: a child waiting for EOF would otherwise never exit. Output read
    /// meanwhile is discarded, so a child writing more than a pipe holds cannot block
    /// (pipes taken out with [`take_reader`](ProcessTransport::take_reader) are yours to
    /// drain). Cancel-safe: cancelling loses no exit status, but those changes stay.
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.resume_reading();
        let writers: Vec<i32> = self
            .pipes
            .iter()
            .filter(|p| matches!(p.state, PipeState::Writer(_)))
            .map(Pipe::child_fd)
            .collect();
        for fd in writers {
            let _ = self.close_child_fd(fd);
        }
        std::future::poll_fn(|cx| self.poll_exit_status(cx)).await
    }

    fn poll_exit_status(&mut self, cx: &mut Context<'_>) -> Poll<Result<ExitStatus, Error>> {
        loop {
            if let Some(result) = self.exit_seen {
                return Poll::Ready(result.map_err(Error::Wait));
            }
            match self.poll_event(cx) {
                Poll::Ready(Some(_discarded)) => continue,
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

    /// Sends SIGTERM, waits up to `grace` for the child to exit, then sends SIGKILL, and
    /// returns the final status.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        match self.signal(libc::SIGTERM) {
            Ok(()) | Err(Error::AlreadyExited) => {}
            Err(e) => return Err(e),
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(result) => result,
            Err(_elapsed) => self.kill().await,
        }
    }

    // ----- the event machine ---------------------------------------------------------------

    /// Polls for the next event: flushes writers, notices closes and the exit, reads one
    /// chunk from the next ready reader (round robin), and yields `Ended` last, then `None`.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.next_pending() {
                return Poll::Ready(Some(event));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            // Whatever is queued now is held back by a pause.
            let held = self.pending.len();
            self.poll_writers(cx);
            self.poll_reaped(cx);
            if let Some(event) = self.poll_readers(cx) {
                self.pending.push_back(event);
            }
            self.poll_wait_delay(cx);
            if self.pending.len() == held {
                // Held events keep `Ended` back: it comes last.
                if held == 0 && self.exit_seen.is_some() && !self.pipes.iter().any(Pipe::is_open) {
                    self.ended = true;
                    let result = self.final_status();
                    tracing::debug!(?result, "process ended");
                    return Poll::Ready(Some(Event::Ended(result)));
                }
                return Poll::Pending;
            }
        }
    }

    fn poll_writers(&mut self, cx: &mut Context<'_>) {
        for i in 0..self.pipes.len() {
            let fd = self.pipes[i].child_fd();
            let (done, change) = match &mut self.pipes[i].state {
                PipeState::Writer(w) => (w.poll_done(cx), w.check_resumed()),
                PipeState::Taken(taken) => {
                    taken.register(cx);
                    continue;
                }
                _ => continue,
            };
            if change == FlowChange::Resumed {
                self.pending.push_back(Event::WriteResumed { fd });
            }
            if let Poll::Ready(reason) = done {
                self.close_pipe(fd, reason);
            }
        }
    }

    // ----- taking pipes out ----------------------------------------------------------------

    /// Takes the pipe the parent reads at child fd `fd` out of the transport, as an
    /// `AsyncRead` + `Stream` handle. Its data no longer appears as events (nor does its
    /// close), but [`Event::Ended`] still waits until the handle has read to end of file (or
    /// failed) or is dropped.
    pub fn take_reader(&mut self, fd: i32) -> Result<PipeReader, Error> {
        let (state, taken) = self.take_pipe(fd, false)?;
        match state {
            PipeState::Reader(reader) => Ok(PipeReader::new(fd, reader, taken)),
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// Takes the pipe the parent writes at child fd `fd` out of the transport, as an
    /// `AsyncWrite` + `Sink<Bytes>` handle; bytes still queued are written first. Its close
    /// no longer appears as an event, but [`Event::Ended`] still waits until the handle is
    /// shut down, has failed (a broken pipe) or is dropped.
    pub fn take_writer(&mut self, fd: i32) -> Result<PipeWriter, Error> {
        let (state, taken) = self.take_pipe(fd, true)?;
        match state {
            PipeState::Writer(writer) => Ok(PipeWriter::new(fd, writer, taken)),
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// Swaps an open pipe of the wanted direction for a `Taken` marker, returning its state.
    fn take_pipe(&mut self, fd: i32, writer: bool) -> Result<(PipeState, Arc<TakenPipe>), Error> {
        let pipe = self.pipe_mut(fd).ok_or(Error::NoSuchPipe(fd))?;
        match (&pipe.state, pipe.parent_writes()) {
            (_, false) if writer => return Err(Error::NotWritable(fd)),
            (_, true) if !writer => return Err(Error::NotReadable(fd)),
            (PipeState::Taken(_), _) => return Err(Error::PipeTaken(fd)),
            (PipeState::Reader(_), _) => {}
            (PipeState::Writer(w), _) if !w.closing => {}
            _ => return Err(Error::PipeClosed(fd)),
        }
        let taken = Arc::new(TakenPipe::default());
        let state = std::mem::replace(&mut pipe.state, PipeState::Taken(taken.clone()));
        Ok((state, taken))
    }

    fn poll_reaped(&mut self, cx: &mut Context<'_>) {
        if self.exit_seen.is_some() {
            return;
        }
        if let Poll::Ready(result) = self.exit.poll_exit(cx) {
            self.exit_seen = Some(result);
            self.pty_master = None;
            tracing::debug!(?result, "process exited");
            self.pending.push_back(Event::Exited(result));
        }
    }

    fn poll_readers(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        let count = self.pipes.len();
        for k in 0..count {
            let i = (self.next_reader + k) % count;
            let fd = self.pipes[i].child_fd();
            if self.pipes[i].paused {
                continue;
            }
            let PipeState::Reader(reader) = &mut self.pipes[i].state else {
                continue;
            };
            match reader.poll_read(cx) {
                Poll::Pending => continue,
                Poll::Ready(ReadOutcome::Data(data)) => {
                    self.next_reader = (i + 1) % count;
                    return Some(Event::Data { fd, data });
                }
                Poll::Ready(ReadOutcome::Closed(reason)) => {
                    // Queued behind what this poll queued before it, keeping the order.
                    self.close_pipe(fd, reason);
                    return None;
                }
            }
        }
        None
    }

    fn poll_wait_delay(&mut self, cx: &mut Context<'_>) {
        let Some(delay) = self.wait_delay else { return };
        if self.exit_seen.is_none() || !self.pipes.iter().any(Pipe::is_open) {
            return;
        }
        let timer = self
            .wait_delay_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        if timer.as_mut().poll(cx).is_ready() {
            let open: Vec<i32> = self
                .pipes
                .iter()
                .filter(|p| matches!(p.state, PipeState::Reader(_) | PipeState::Writer(_)))
                .map(Pipe::child_fd)
                .collect();
            for fd in open {
                self.close_pipe(fd, CloseReason::WaitDelay);
            }
            self.wait_delay = None;
        }
    }

    /// The exit result as far as it is known (the stream has `Exited` before it ends).
    pub(crate) fn final_status(&self) -> Result<ExitStatus, WaitError> {
        self.exit_seen
            .or_else(|| self.exit.try_exit())
            .unwrap_or(Err(WaitError::Os(libc::EAGAIN)))
    }

    pub(crate) fn pipe(&self, fd: i32) -> Option<&Pipe> {
        self.pipes
            .binary_search_by_key(&fd, Pipe::child_fd)
            .ok()
            .map(|i| &self.pipes[i])
    }

    pub(crate) fn pipe_mut(&mut self, fd: i32) -> Option<&mut Pipe> {
        self.pipes
            .binary_search_by_key(&fd, Pipe::child_fd)
            .ok()
            .map(|i| &mut self.pipes[i])
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

impl Drop for ProcessTransport {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.exit.signal(libc::SIGKILL);
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
