//! The reading end: each read becomes one `Bytes`, with no copy after the kernel's for
//! reads that fill at least half of their buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;

use super::{Capacity, Growth};
use crate::sys;

/// The smallest read the parent makes (see [`read_size_for`]), but for [`TAIL_READ`].
const MIN_READ: usize = 64 * 1024;

/// The first read after the child's end closed, when no read buffer is at hand: what is left
/// is often nothing (every exit closes stdout and stderr), and a read buffer of
/// [`MIN_READ`] or more allocated for it and freed with the reader moves the heap's top
/// (`brk`) up and down again at every exit.
const TAIL_READ: usize = 4096;

/// What one read produced.
pub(crate) enum ReadOutcome {
    Data(Bytes),
    /// End of file: the child's side is closed (on a pty, the terminal's EIO too).
    Eof,
    /// The read failed; the pipe is done.
    Failed(io::Error),
}

/// A pty master, read directly but waited on through an epoll set of its own (see
/// [`sys::pty::watch_set`]).
struct Terminal {
    master: OwnedFd,
    /// EIO was read: no process has the terminal open; the child may open it again.
    hung_up: bool,
    /// EIO is the end of the output: the child has been reaped, or the reader was taken out
    /// of the transport (it does not hear of the reap).
    hangup_is_end: bool,
}

impl Terminal {
    /// Whether to read once more without waiting: the reap came after a hang-up used up the
    /// readiness, and only a read can tell the end from a terminal a grandchild still holds.
    fn take_look_after_reap(&mut self) -> bool {
        let look = self.hung_up && self.hangup_is_end;
        if look {
            self.hung_up = false;
        }
        look
    }

    /// The terminal read EIO: whether that is the end of its output. If not, it is noted, and
    /// the reader waits for news of the terminal or for the reap.
    fn ends_at_eio(&mut self) -> bool {
        if !self.hangup_is_end {
            self.hung_up = true;
        }
        self.hangup_is_end
    }
}

/// The fd a reader reads: its pipe, or its terminal's master (the fd in the reactor being the
/// master's watch set).
fn source<'a>(fd: &'a AsyncFd<OwnedFd>, terminal: &'a Option<Terminal>) -> BorrowedFd<'a> {
    match terminal {
        Some(terminal) => terminal.master.as_fd(),
        None => fd.get_ref().as_fd(),
    }
}

/// Whether `e` is the EIO of a terminal (a pipe's EIO is an error like any other).
fn is_terminal_eio(e: &io::Error, terminal: &Option<Terminal>) -> bool {
    terminal.is_some() && e.raw_os_error() == Some(libc::EIO)
}

/// Which readers a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Every ready reader: data, then the end of file.
    All,
    /// Only readers whose child end is still open, which the child could block on when they
    /// fill up. Waiting for the exit needs no more: a child end closed just before the exit
    /// (every exit closes stdout and stderr) would cost that poll a read, a deregistration
    /// and a close per pipe while the exit is on its way.
    UntilHangup,
}

/// The parent's reading end of one pipe (or pty master).
pub(crate) struct Reader {
    /// The pipe in the reactor; for a terminal, its watch set.
    fd: AsyncFd<OwnedFd>,
    /// The buffer of the next read: empty, and never split, so that its capacity is all of
    /// the allocation a chunk handed over from it would hold on to.
    buf: BytesMut,
    capacity: usize,
    read_size: usize,
    terminal: Option<Terminal>,
    /// Grows a default pipe that the child keeps filling up.
    growth: Growth,
    /// The child's end was seen closed and a [`TAIL_READ`] was made.
    tail_read: bool,
}

/// The largest read: bigger reads into a fresh buffer run out of cache and are slower than
/// several of this size (measured with the `compare` bench on a 1 MiB pipe).
const MAX_READ: usize = 256 * 1024;

/// The size of one read: more than a pipe of `capacity` holds, so that a read that drained
/// the pipe is short (and the `EAGAIN` read after it is skipped), but at most [`MAX_READ`].
fn read_size_for(capacity: usize) -> usize {
    (capacity.max(MIN_READ) + 4096).min(MAX_READ)
}

impl Reader {
    /// A reader of `fd`, a pipe of `capacity`.
    pub(super) fn new(fd: AsyncFd<OwnedFd>, capacity: Capacity) -> Self {
        Reader {
            fd,
            buf: BytesMut::new(),
            capacity: capacity.bytes(),
            read_size: read_size_for(capacity.bytes()),
            terminal: None,
            growth: Growth::new(capacity),
            tail_read: false,
        }
    }

    /// A reader of the pty master `master`, waited on through `watch_set` (its
    /// [`sys::pty::watch_set`], in the reactor).
    pub(super) fn terminal(watch_set: AsyncFd<OwnedFd>, master: OwnedFd) -> Self {
        let mut reader = Reader::new(watch_set, Capacity::Default);
        reader.terminal = Some(Terminal {
            master,
            hung_up: false,
            hangup_is_end: false,
        });
        reader
    }

    /// From now on a terminal's EIO is the end of its output: the child has been reaped, or
    /// the reader is being taken out of the transport, where it does not hear of the reap.
    pub(crate) fn end_at_hangup(&mut self) {
        if let Some(terminal) = &mut self.terminal {
            terminal.hangup_is_end = true;
        }
    }

    /// Reads whatever is ready, up to one read's worth, into a fresh `Bytes` that shares the
    /// reader's buffer (no copy after the kernel's). With [`Reads::UntilHangup`], a reader
    /// whose child end has closed is left alone (`Pending`, nothing read).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, reads: Reads) -> Poll<ReadOutcome> {
        loop {
            let mut guard = if self
                .terminal
                .as_mut()
                .is_some_and(Terminal::take_look_after_reap)
            {
                None
            } else {
                match ready!(self.fd.poll_read_ready(cx)) {
                    Ok(guard) => Some(guard),
                    Err(e) => return Poll::Ready(ReadOutcome::Failed(e)),
                }
            };
            // Never for a terminal: its watch set does not hang up.
            let read_closed = guard.as_ref().is_some_and(|g| g.ready().is_read_closed());
            if reads == Reads::UntilHangup && read_closed {
                // The readiness stays set: a later poll reads what is left, and the EOF.
                return Poll::Pending;
            }
            let size = if read_closed && self.buf.capacity() == 0 && !self.tail_read {
                self.tail_read = true;
                TAIL_READ
            } else {
                self.read_size
            };
            match sys::fd::read_into(source(&self.fd, &self.terminal), &mut self.buf, size) {
                Ok(0) => return Poll::Ready(ReadOutcome::Eof),
                Ok(n) => {
                    // A short read drained the pipe; the next write by the child raises a new
                    // edge, so skip the read that would only say EAGAIN. Not a terminal's:
                    // it hands out a line-discipline buffer (4 KiB) per read, and after the
                    // last one only a read tells (EIO) that the child closed it, which may
                    // have been signalled long before.
                    if n < size
                        && self.terminal.is_none()
                        && let Some(guard) = &mut guard
                    {
                        guard.clear_ready();
                    }
                    self.maybe_grow(n);
                    return Poll::Ready(ReadOutcome::Data(self.take_chunk(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(guard) = &mut guard {
                        guard.clear_ready();
                    }
                }
                Err(e) if is_terminal_eio(&e, &self.terminal) => {
                    if self.terminal.as_mut().is_some_and(Terminal::ends_at_eio) {
                        return Poll::Ready(ReadOutcome::Eof);
                    }
                    // The child closed its last handle on the terminal but may open it again
                    // and write.
                    if let Some(guard) = &mut guard {
                        guard.clear_ready();
                    }
                }
                Err(e) => return Poll::Ready(ReadOutcome::Failed(e)),
            }
        }
    }

    /// The `n` bytes just read, as `Bytes`.
    ///
    /// A chunk the consumer keeps holds on to the whole allocation it points into, so it is
    /// handed over without a copy only when it fills at least half of the read buffer: then
    /// the chunk takes the buffer along (the next read gets a fresh one), and never pins more
    /// than twice its size. A shorter chunk is copied into an allocation of its own size and
    /// the buffer stays for the next read. Full reads of a busy pipe are the large ones, so
    /// bulk transfers stay zero-copy.
    fn take_chunk(&mut self, n: usize) -> Bytes {
        debug_assert_eq!(self.buf.len(), n);
        if n.saturating_mul(2) >= self.buf.capacity() {
            std::mem::take(&mut self.buf).freeze()
        } else {
            let chunk = Bytes::copy_from_slice(&self.buf);
            self.buf.clear();
            chunk
        }
    }

    /// Grows a default pipe that keeps being full when read.
    fn maybe_grow(&mut self, n: usize) {
        if self.terminal.is_none()
            && self.growth.observe(n >= self.capacity)
            && let Some(capacity) = self.growth.grow(self.fd.get_ref().as_fd())
        {
            self.capacity = capacity;
            self.read_size = read_size_for(capacity);
        }
    }

    /// The fd read (a terminal's master, not its watch set).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        source(&self.fd, &self.terminal)
    }

    /// The fd, out of the reactor, for a handle of another kind.
    pub(crate) fn into_fd(self) -> OwnedFd {
        match self.terminal {
            Some(terminal) => terminal.master,
            None => self.fd.into_inner(),
        }
    }

    /// Reads whatever is ready into `buf` (an `AsyncRead` read).
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let (room, before) = (buf.remaining(), buf.filled().len());
            match sys::fd::read_buf(source(&self.fd, &self.terminal), buf) {
                Ok(()) => {
                    // As in `poll_read`: a short read drained the pipe, so the next read
                    // waits for the child's next write instead of finding EAGAIN first.
                    let n = buf.filled().len() - before;
                    if n > 0 && n < room && self.terminal.is_none() {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) if is_terminal_eio(&e, &self.terminal) => {
                    if self.terminal.as_mut().is_some_and(Terminal::ends_at_eio) {
                        return Poll::Ready(Ok(()));
                    }
                    guard.clear_ready();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("fd", self.fd.get_ref())
            .field("capacity", &self.capacity)
            .field(
                "terminal",
                &self.terminal.as_ref().map(|t| t.master.as_raw_fd()),
            )
            .finish_non_exhaustive()
    }
}
