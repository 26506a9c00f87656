//! The parent end of one child pipe: a reader that turns readiness into `Bytes`, or a writer
//! with a queue of `Bytes` flushed by `writev`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::event::CloseReason;
use crate::sys;

/// Which way data flows through a pipe, seen from the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ParentReads,
    ParentWrites,
    /// A pty master read as fd 1: EIO means the terminal's other side is gone, a clean close.
    PtyMaster,
}

/// The smallest read the parent makes; larger pipes get reads as large as the pipe.
const MIN_READ: usize = 64 * 1024;

/// One pipe of a transport, identified by its fd number in the child.
pub(crate) struct Pipe {
    child_fd: i32,
    pub(crate) state: PipeState,
}

pub(crate) enum PipeState {
    Reader(Reader),
    Writer(Writer),
    /// Handed out by `take_reader`/`take_writer`; `ended` waits for the handle to close it.
    Taken(Arc<TakenPipe>),
    Closed,
}

impl Pipe {
    pub(crate) fn new(child_fd: i32, dir: Direction, fd: AsyncFd<OwnedFd>, capacity: usize) -> Self {
        let state = match dir {
            Direction::ParentWrites => PipeState::Writer(Writer::new(fd)),
            Direction::ParentReads | Direction::PtyMaster => PipeState::Reader(Reader {
                fd,
                buf: BytesMut::new(),
                read_size: capacity.max(MIN_READ),
                paused: false,
                pty: dir == Direction::PtyMaster,
            }),
        };
        Pipe { child_fd, state }
    }

    pub(crate) fn child_fd(&self) -> i32 {
        self.child_fd
    }

    /// Whether this pipe still keeps `ended` from arriving.
    pub(crate) fn is_open(&self) -> bool {
        match &self.state {
            PipeState::Reader(_) | PipeState::Writer(_) => true,
            PipeState::Taken(taken) => !taken.is_closed(),
            PipeState::Closed => false,
        }
    }
}

/// What one read produced.
pub(crate) enum ReadOutcome {
    Data(Bytes),
    Closed(CloseReason),
}

pub(crate) struct Reader {
    fd: AsyncFd<OwnedFd>,
    buf: BytesMut,
    read_size: usize,
    pub(crate) paused: bool,
    pty: bool,
}

impl Reader {
    /// Reads whatever is ready, up to one read's worth, into a fresh `Bytes` that shares the
    /// reader's buffer (no copy after the kernel's).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<ReadOutcome> {
        loop {
            let mut guard = match ready!(self.fd.poll_read_ready(cx)) {
                Ok(guard) => guard,
                Err(e) => return Poll::Ready(ReadOutcome::Closed(CloseReason::Error(e))),
            };
            match sys::fd::read_into(guard.get_inner().as_fd(), &mut self.buf, self.read_size) {
                Ok(0) => return Poll::Ready(ReadOutcome::Closed(CloseReason::Eof)),
                Ok(n) => {
                    // A short read drained the pipe; the next write by the child raises a new
                    // edge, so skip the read that would only say EAGAIN.
                    if n < self.read_size {
                        guard.clear_ready();
                    }
                    return Poll::Ready(ReadOutcome::Data(self.buf.split().freeze()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) if self.pty && e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(ReadOutcome::Closed(CloseReason::Eof));
                }
                Err(e) => return Poll::Ready(ReadOutcome::Closed(CloseReason::Error(e))),
            }
        }
    }

    pub(crate) fn into_fd(self) -> AsyncFd<OwnedFd> {
        self.fd
    }
}

pub(crate) struct Writer {
    fd: AsyncFd<OwnedFd>,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Close once the queue has drained.
    pub(crate) closing: bool,
}

impl Writer {
    fn new(fd: AsyncFd<OwnedFd>) -> Self {
        Writer {
            fd,
            queue: VecDeque::new(),
            queued: 0,
            closing: false,
        }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        self.fd.get_ref()
    }

    /// Bytes accepted but not yet in the pipe.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `data`, writing as much as the pipe takes right away when nothing is queued
    /// ahead of it. An error means the pipe is broken.
    pub(crate) fn push(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.queued += data.len();
        self.queue.push_back(data);
        if self.queue.len() == 1 {
            self.write_now()?;
        }
        Ok(())
    }

    /// One `writev` of the queue, if the reactor believes the pipe writable.
    fn write_now(&mut self) -> io::Result<()> {
        let queue = &self.queue;
        match self
            .fd
            .try_io(Interest::WRITABLE, |fd| sys::fd::writev(fd.as_fd(), queue.iter()))
        {
            Ok(n) => {
                self.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else { break };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    /// Writes until the queue is empty. An error means the pipe is broken.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| sys::fd::writev(fd.get_ref().as_fd(), self.queue.iter())) {
                Ok(Ok(n)) => self.advance(n),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes, then waits for the child to close its end (the pipe's write end then reports
    /// an error condition). Ready with the reason the pipe is done, when it is.
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Err(e) = ready!(self.poll_flush(cx)) {
            return Poll::Ready(CloseReason::Error(e));
        }
        if self.closing {
            return Poll::Ready(CloseReason::Closed);
        }
        loop {
            let mut guard = match ready!(self.fd.poll_write_ready(cx)) {
                Ok(guard) => guard,
                Err(e) => return Poll::Ready(CloseReason::Error(e)),
            };
            if guard.ready().is_write_closed() {
                return Poll::Ready(CloseReason::Eof);
            }
            guard.clear_ready();
        }
    }

    pub(crate) fn into_parts(self) -> (AsyncFd<OwnedFd>, VecDeque<Bytes>) {
        (self.fd, self.queue)
    }
}

/// The link between a transport and a pipe handed out as a standalone handle.
#[derive(Default)]
pub(crate) struct TakenPipe {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl TakenPipe {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Called by the handle when it closes its fd.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}
