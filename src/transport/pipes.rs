//! Operations on the transport's pipes: writing with flow control, flushing, closing,
//! pausing reads, and taking pipes out as standalone handles.

use bytes::Bytes;
use std::collections::VecDeque;
use std::task::Poll;

use super::ProcessTransport;
use crate::error::Error;
use crate::event::{CloseReason, Event};
use crate::pipe::{FlowChange, Half, PipeReader, PipeState, PipeWriter, WriteFlow, same_os_error};

impl ProcessTransport {
    // ----- writing -------------------------------------------------------------------------

    /// Queues `data` for child fd `fd` and writes as much as the pipe takes now; the rest is
    /// written while the transport is polled. Usable from protocol callbacks. Never copies
    /// `data`.
    ///
    /// Returns [`WriteFlow::Paused`] once the queue is above the writer's high-water mark
    /// (64 KiB unless set with [`Command::write_high_water`](crate::Command::write_high_water));
    /// an [`Event::WritePaused`] is also queued then, and [`Event::WriteResumed`] follows when
    /// the queue drains to a quarter of the mark. The queue keeps growing if you ignore this,
    /// unless [`Command::write_buffer_limit`](crate::Command::write_buffer_limit) is set: then
    /// a write that would go past the limit fails with [`Error::WriteBufferFull`] and queues
    /// nothing.
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
    ///
    /// No SIGPIPE reaches the parent for such a write, even where SIGPIPE's action is the
    /// default (fatal) one: the crate then blocks it around each write. That action is read
    /// at each spawn, so set it before spawning: one changed to the default while children
    /// run is not guarded against until the next spawn.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use process_transport::{Command, Event, WriteFlow};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut cat = Command::new("cat").spawn()?;
    /// let chunk = vec![b'x'; 16 * 1024];
    /// let mut sent = 0;
    /// // Produce until the queue passes its high-water mark...
    /// while cat.write_stdin(chunk.clone())? == WriteFlow::Open {
    ///     sent += chunk.len();
    /// }
    /// sent += chunk.len();
    /// // ...then read the echo while the queue drains, and resume on WriteResumed.
    /// let mut echoed = 0;
    /// while echoed < sent {
    ///     match cat.next().await {
    ///         Some(Event::Data { fd: 1, data }) => echoed += data.len(),
    ///         Some(Event::WriteResumed { fd: 0 }) => {} // room again: produce more here
    ///         Some(_) => {}
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(echoed, sent);
    /// cat.close_stdin()?;
    /// assert!(cat.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As listed above: [`Error::NoSuchPipe`], [`Error::NotWritable`], [`Error::PipeClosed`],
    /// [`Error::PipeTaken`], [`Error::WriteBufferFull`], or [`Error::Io`] for a broken pipe.
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
        let total = chunks.iter().map(Bytes::len).fold(0, usize::saturating_add);
        self.queue(fd, total, chunks)
    }

    /// Queues `chunks` (`total` bytes) on the writer at `fd`, if its limit allows all of them.
    fn queue(
        &mut self,
        fd: i32,
        total: usize,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<WriteFlow, Error> {
        let writer = self.pipes.writer(fd)?;
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
        let writer = self.pipes.writer(fd)?;
        if was_idle && let Err(e) = writer.write_now() {
            // Both the caller and the `Closed` event get the OS error, with its errno.
            let returned = same_os_error(&e);
            self.end_half(fd, Half::Write, CloseReason::Error(e.into()));
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
        self.pipes.queued_len(fd)
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
        self.pipes.writer(fd)?.high_water = bytes;
        Ok(())
    }

    /// Returns once everything queued for child fd `fd` is in the pipe. A broken pipe fails
    /// it with [`Error::Io`] holding the OS error (`EPIPE`) and closes the pipe, with a
    /// [`Closed`](Event::Closed) event carrying the same error.
    pub async fn flush(&mut self, fd: i32) -> Result<(), Error> {
        std::future::poll_fn(|cx| {
            let writer = match self.pipes.writer(fd) {
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
                    self.end_half(fd, Half::Write, CloseReason::Error(e.into()));
                    Poll::Ready(Err(Error::Io(returned)))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    // ----- closing -------------------------------------------------------------------------

    /// Closes the pipe at child fd `fd`. A writer first flushes what is queued, then closes,
    /// and the child sees EOF (at once if nothing is queued; otherwise while the transport is
    /// polled, as all flushing is). A reader closes at once; the child's next write to it fails
    /// with `EPIPE`. Either way a [`Closed`](Event::Closed) event with
    /// [`CloseReason::Closed`] follows. Closing an already closed pipe does nothing.
    ///
    /// A [`Duplex`](crate::ChildFd::Duplex) socket closes both ways: it is not read any
    /// more, and it closes once what is queued for it is written; the child then reads end
    /// of file, and its writes fail with `EPIPE`.
    pub fn close_child_fd(&mut self, fd: i32) -> Result<(), Error> {
        // Nothing to flush: close now, so the child sees EOF even if nobody polls.
        if self.pipes.begin_close(fd)? {
            self.close_pipe(fd, CloseReason::Closed);
        }
        Ok(())
    }

    /// Ends what the parent writes at child fd `fd` once what is queued is written, so the
    /// child reads end of file: a pipe closes; a socket's write half shuts down
    /// (`shutdown(SHUT_WR)`) and the child can still send. Nothing for a pipe the parent
    /// reads or one taken out.
    pub(crate) fn end_writing(&mut self, fd: i32) {
        let is_pipe = |pipe: &crate::pipe::Pipe| matches!(pipe.state, PipeState::Writer(_));
        if self.pipes.get(fd).is_some_and(is_pipe) {
            let _ = self.close_child_fd(fd);
        } else if self.pipes.begin_close_write(fd) {
            // A socket's write half, with nothing queued.
            self.end_half(fd, Half::Write, CloseReason::Closed);
        }
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
        for fd in self.pipes.fds() {
            let _ = self.close_child_fd(fd);
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
        self.pipes.set_paused(None, true);
    }

    /// Resumes reading every pipe; what the pause held back comes before anything newer.
    pub fn resume_reading(&mut self) {
        self.pipes.set_paused(None, false);
    }

    /// Stops reading child fd `fd`, holding back its data already read as
    /// [`pause_reading`](ProcessTransport::pause_reading) does.
    pub fn pause_reading_fd(&mut self, fd: i32) -> Result<(), Error> {
        self.pipes.check_reader(fd)?;
        self.pipes.set_paused(Some(fd), true);
        Ok(())
    }

    /// Resumes reading child fd `fd`; what the pause held back comes before anything newer.
    pub fn resume_reading_fd(&mut self, fd: i32) -> Result<(), Error> {
        self.pipes.check_reader(fd)?;
        self.pipes.set_paused(Some(fd), false);
        Ok(())
    }

    // ----- taking pipes out ----------------------------------------------------------------

    /// Takes the pipe the parent reads at child fd `fd` out of the transport, as an
    /// `AsyncRead` + `Stream` handle. Its data no longer appears as events (nor does its
    /// close): what the transport had read from it and not handed out yet (queued, or held
    /// back by a pause) is read from the handle first. [`Event::Ended`] still waits until the
    /// handle has read to end of file (or failed) or is dropped.
    ///
    /// The pipes left in the transport are read only while it is polled (its event stream,
    /// [`wait`](Self::wait), [`run`](Self::run)): a child that writes more than a pipe holds
    /// to one of them (its stderr, say) blocks until then. Poll the transport in a task of its
    /// own, take those pipes too, or give the child [`ChildFd::Null`](crate::ChildFd::Null)
    /// there.
    ///
    /// With a codec from `tokio-util`, line records from fd 3:
    ///
    /// ```
    /// use futures::StreamExt;
    /// use process_transport::{ChildFd, Command};
    /// use tokio_util::codec::{FramedRead, LinesCodec};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut child = Command::new("sh")
    ///     .args(["-c", "echo one >&3; echo two >&3"])
    ///     .fd(3, ChildFd::ParentReads)
    ///     .spawn()?;
    /// let mut lines = FramedRead::new(child.take_reader(3)?, LinesCodec::new());
    /// let mut got = Vec::new();
    /// while let Some(line) = lines.next().await {
    ///     got.push(line?);
    /// }
    /// assert_eq!(got, ["one", "two"]);
    /// assert!(child.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchPipe`] if `fd` is no pipe of this transport, [`Error::NotReadable`] for
    /// a pipe the parent writes, [`Error::PipeTaken`] if it was taken already,
    /// [`Error::PipeClosed`] once it is closed, [`Error::Duplex`] for a duplex (see
    /// [`take_duplex`](Self::take_duplex)).
    pub fn take_reader(&mut self, fd: i32) -> Result<PipeReader, Error> {
        let reader = self.pipes.take_reader(fd)?;
        Ok(reader.with_read_before(self.take_queued_data(fd)))
    }

    /// The data events of child fd `fd` still queued (held back by a pause or not), taken
    /// out of the queue in order.
    fn take_queued_data(&mut self, fd: i32) -> VecDeque<Bytes> {
        let mut taken = VecDeque::new();
        self.pending.retain(|event| match event {
            Event::Data { fd: of, data } if *of == fd => {
                taken.push_back(data.clone());
                false
            }
            _ => true,
        });
        taken
    }

    /// Takes the socket at child fd `fd` (a [`ChildFd::Duplex`](crate::ChildFd::Duplex)) out
    /// of the transport, as a `tokio::net::UnixStream` on the parent's end, once the bytes
    /// queued for it have been written. Over it the parent reads and writes with
    /// `AsyncRead`/`AsyncWrite`, shuts down one direction with `shutdown`, and can pass fds
    /// with `SCM_RIGHTS` (through the stream's raw fd and `sendmsg`).
    ///
    /// From here the socket is the caller's: no more events come for it (data read before
    /// and not yet consumed still comes as [`Event::Data`], even if the socket was paused),
    /// and [`Event::Ended`] no longer waits for it. The child sees the socket close when the stream is dropped (and any
    /// other copy of it, as in the child's own descendants, is closed).
    ///
    /// Fails with [`Error::NotWritable`] for a pipe the parent only reads,
    /// [`Error::NotReadable`] for one it only writes, [`Error::PipeTaken`] once taken,
    /// [`Error::PipeClosed`] once closed or closing, and [`Error::Io`] if flushing meets a
    /// broken socket (the write half then ends as on any failed write), or outside a Tokio
    /// runtime with I/O. Cancel-safe: until it returns, the socket stays in the transport.
    /// (A runtime built without I/O is told, as for spawning, only by Tokio's panic, which
    /// the panic hook prints: see [`SpawnError::NoRuntime`](crate::SpawnError::NoRuntime).
    /// The socket stays because a copy of it is registered first; with no fd free for the
    /// copy, the socket itself is, and such a refusal closes it.)
    pub async fn take_duplex(&mut self, fd: i32) -> Result<tokio::net::UnixStream, Error> {
        self.pipes.check_duplex(fd)?;
        // Asked before flushing too: outside any runtime a flush would wait for good.
        tokio::runtime::Handle::try_current().map_err(|_| no_io_for_take_duplex())?;
        if self.pipes.queued_len(fd) > 0 {
            self.flush(fd).await?;
        }
        let stream = match self.pipes.duplex_socket(fd) {
            // Registered from a copy first: should the runtime refuse it, the socket stays.
            Ok(copy) => {
                let stream = register_socket(copy.into())?;
                drop(self.pipes.take_duplex(fd)?);
                stream
            }
            // No fd to spare for a copy (EMFILE): the socket itself goes into the reactor, as
            // it had to anyway (the runtime is known to be there).
            Err(_) => register_socket(self.pipes.take_duplex(fd)?.into())?,
        };
        // What was read before and is still queued is no longer held back by a pause: no
        // resume could come for a socket that is gone, and `Ended` waits behind it.
        self.pipes.set_paused(Some(fd), false);
        Ok(stream)
    }

    /// Takes the pipe the parent writes at child fd `fd` out of the transport, as an
    /// `AsyncWrite` + `Sink<Bytes>` handle; bytes still queued are written first. Its close
    /// no longer appears as an event, but [`Event::Ended`] still waits until the handle is
    /// shut down, has failed (a broken pipe) or is dropped.
    ///
    /// [`wait`](Self::wait) does not close a taken writer: a child reading to end of file
    /// (`cat`) exits only once the handle is shut down or dropped. The pipes left in the
    /// transport are read only while it is polled, as [`take_reader`](Self::take_reader)
    /// says.
    pub fn take_writer(&mut self, fd: i32) -> Result<PipeWriter, Error> {
        self.pipes.take_writer(fd)
    }
}

/// `socket` in the reactor of the runtime polling this.
fn register_socket(
    socket: std::os::unix::net::UnixStream,
) -> Result<tokio::net::UnixStream, Error> {
    // Tokio panics when the runtime has no I/O driver; report it instead.
    std::panic::catch_unwind(|| tokio::net::UnixStream::from_std(socket))
        .map_err(|_| no_io_for_take_duplex())?
        .map_err(Error::Io)
}

fn no_io_for_take_duplex() -> Error {
    Error::Io(std::io::Error::other(
        "take_duplex needs a Tokio runtime with I/O enabled",
    ))
}
