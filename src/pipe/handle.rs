//! Standalone handles for one child pipe, taken out of a transport: `AsyncRead` / `Stream` for
//! pipes the parent reads, `AsyncWrite` / `Sink` for pipes the parent writes. They plug into
//! tokio-util codecs, `BufReader::lines`, `tokio::io::copy` and the like.
//!
//! A taken pipe leaves the transport's event stream (no `Data`/`Closed` events for it), but
//! the transport's `Ended` still waits until the pipe is done: the handle is dropped, a
//! reader reached end of file or failed, a writer was shut down or failed (a broken pipe).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ReadOutcome, Reader, Reads, TakenPipe, Writer};

/// A child pipe the parent reads, taken out with
/// [`ProcessTransport::take_reader`](crate::ProcessTransport::take_reader).
///
/// Reads as `AsyncRead` (EOF when the child's side closes; on a pty, the terminal's EIO is
/// EOF too), or as a `Stream` of `Bytes` chunks without copying. Dropping it closes the pipe.
/// Once it has reached end of file (or failed), the transport's
/// [`Ended`](crate::Event::Ended) no longer waits for it, even while it is kept.
pub struct PipeReader {
    child_fd: i32,
    /// What the transport had read from the pipe and not handed out when it was taken: read
    /// before anything newer.
    read_before: VecDeque<Bytes>,
    reader: Reader,
    taken: Arc<TakenPipe>,
}

impl PipeReader {
    /// The handle of the reader taken out at `child_fd`, closing `taken` when done.
    pub(super) fn new(child_fd: i32, reader: Reader, taken: Arc<TakenPipe>) -> Self {
        PipeReader {
            child_fd,
            read_before: VecDeque::new(),
            reader,
            taken,
        }
    }

    /// The same handle, reading `data` (read from the pipe by the transport) first.
    pub(crate) fn with_read_before(mut self, data: VecDeque<Bytes>) -> Self {
        self.read_before = data;
        self
    }

    /// The child fd this pipe is connected to.
    pub fn child_fd(&self) -> i32 {
        self.child_fd
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(front) = this.read_before.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            if front.is_empty() {
                this.read_before.pop_front();
            }
            return Poll::Ready(Ok(()));
        }
        let (room, filled) = (buf.remaining(), buf.filled().len());
        let result = ready!(this.reader.poll_read_buf(cx, buf));
        // Nothing read into a buffer with room is end of file: the pipe is done, whether or
        // not the handle is kept, and so is a pipe that failed.
        if result.is_err() || (room > 0 && buf.filled().len() == filled) {
            this.taken.close();
        }
        Poll::Ready(result)
    }
}

impl Stream for PipeReader {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(data) = this.read_before.pop_front() {
            return Poll::Ready(Some(Ok(data)));
        }
        let end = match ready!(this.reader.poll_read(cx, Reads::All)) {
            ReadOutcome::Data(data) => return Poll::Ready(Some(Ok(data))),
            ReadOutcome::Eof => None,
            // The read's own error, errno and all: it was never shared.
            ReadOutcome::Failed(e) => Some(Err(e)),
        };
        this.taken.close();
        Poll::Ready(end)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.taken.close();
    }
}

impl std::fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeReader")
            .field("child_fd", &self.child_fd)
            .finish()
    }
}

/// A child pipe the parent writes, taken out with
/// [`ProcessTransport::take_writer`](crate::ProcessTransport::take_writer).
///
/// Anything still queued on the transport for this fd is written first. `AsyncWrite` writes
/// go straight to the pipe (vectored writes use `writev`); `shutdown` flushes and closes, and
/// the child sees EOF. As a `Sink<Bytes>` it queues whole buffers without copying, and
/// `poll_ready` applies backpressure at the transport's high-water mark.
///
/// A write to a pipe the child has closed fails with the OS error (`EPIPE`, kind
/// [`BrokenPipe`](io::ErrorKind::BrokenPipe)). Once shut down, or failed so, the pipe is
/// done: the transport's [`Ended`](crate::Event::Ended) no longer waits for it, even while
/// the handle is kept.
pub struct PipeWriter {
    child_fd: i32,
    writer: Option<Writer>,
    taken: Arc<TakenPipe>,
}

impl PipeWriter {
    /// The handle of the writer taken out at `child_fd`, closing `taken` when done.
    pub(super) fn new(child_fd: i32, writer: Writer, taken: Arc<TakenPipe>) -> Self {
        PipeWriter {
            child_fd,
            writer: Some(writer),
            taken,
        }
    }

    /// The child fd this pipe is connected to.
    pub fn child_fd(&self) -> i32 {
        self.child_fd
    }

    fn writer(&mut self) -> io::Result<&mut Writer> {
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the pipe was shut down"))
    }

    /// Runs `op` on the writer. A pipe write fails only when the pipe is broken (or the fd is
    /// unusable), so an error makes the pipe count as closed for the transport.
    fn with_writer<T>(
        &mut self,
        op: impl FnOnce(&mut Writer) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let result = ready!(op(self.writer()?));
        if result.is_err() {
            self.taken.close();
        }
        Poll::Ready(result)
    }

    fn poll_close_pipe(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(writer) = &mut self.writer {
            let flushed = ready!(writer.poll_flush(cx));
            self.writer = None;
            self.taken.close();
            flushed?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .with_writer(|w| w.poll_write_slices(cx, &[io::IoSlice::new(buf)]))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .with_writer(|w| w.poll_write_slices(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with_writer(|w| w.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_pipe(cx)
    }
}

impl Sink<Bytes> for PipeWriter {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with_writer(|writer| {
            while writer.queued() > writer.high_water {
                ready!(writer.poll_flush_some(cx))?;
            }
            Poll::Ready(Ok(()))
        })
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> io::Result<()> {
        let this = self.get_mut();
        let pushed = this.writer()?.push(item);
        if pushed.is_err() {
            this.taken.close();
        }
        pushed
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().with_writer(|w| w.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_pipe(cx)
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.taken.close();
    }
}

impl std::fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeWriter")
            .field("child_fd", &self.child_fd)
            .field("queued", &self.writer.as_ref().map_or(0, Writer::queued))
            .finish()
    }
}
