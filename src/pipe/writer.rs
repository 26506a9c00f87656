//! The writing end: a queue of `Bytes` written with `writev`, with flow control.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Capacity, Growth};
use crate::event::CloseReason;
use crate::sys;

/// The default high-water mark of a writer's queue.
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// How far a writer's queue may grow: the command's settings, decided once at spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteLimits {
    /// Above this many queued bytes the writer reports [`WriteFlow::Paused`].
    pub(crate) high_water: usize,
    /// Queued bytes beyond which a write is refused, if set.
    pub(crate) limit: Option<usize>,
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits {
            high_water: DEFAULT_HIGH_WATER,
            limit: None,
        }
    }
}

/// The parent's writing end of one pipe.
pub(crate) struct Writer {
    fd: AsyncFd<OwnedFd>,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Close once the queue has drained.
    pub(crate) closing: bool,
    /// Above this many queued bytes the writer reports [`WriteFlow::Paused`].
    pub(crate) high_water: usize,
    /// Queued bytes beyond which a write is refused, if set.
    pub(crate) limit: Option<usize>,
    /// The queue went above the high-water mark and has not drained to the low-water mark.
    paused: bool,
    /// The reactor's readiness was cleared while the pipe was writable (see [`poll_writev`]).
    readiness_stale: bool,
    /// Grows a default pipe that the child keeps letting fill up.
    growth: Growth,
}

/// What a buffered write says about the writer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFlow {
    /// The queue is at or below its high-water mark: keep writing.
    Open,
    /// The queue is above its high-water mark: stop producing until
    /// [`Event::WriteResumed`](crate::Event::WriteResumed) for this fd.
    Paused,
}

/// What happened to a writer's flow state in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowChange {
    None,
    Paused,
    Resumed,
}

impl Writer {
    /// A writer of `fd`, a pipe of `capacity`, whose queue starts with `limits`.
    pub(super) fn new(fd: AsyncFd<OwnedFd>, capacity: Capacity, limits: WriteLimits) -> Self {
        Writer {
            growth: Growth::new(capacity),
            fd,
            queue: VecDeque::new(),
            queued: 0,
            closing: false,
            high_water: limits.high_water,
            limit: limits.limit,
            paused: false,
            readiness_stale: true,
        }
    }

    /// Whether `more` bytes fit under the writer's limit.
    pub(crate) fn accepts(&self, more: usize) -> bool {
        self.limit
            .is_none_or(|limit| self.queued.saturating_add(more) <= limit)
    }

    /// Marks the writer paused if the queue went above the high-water mark.
    pub(crate) fn check_paused(&mut self) -> FlowChange {
        if !self.paused && self.queued > self.high_water {
            self.paused = true;
            FlowChange::Paused
        } else {
            FlowChange::None
        }
    }

    /// Marks the writer resumed once the queue drained to a quarter of the high-water mark.
    pub(crate) fn check_resumed(&mut self) -> FlowChange {
        if self.paused && self.queued <= self.high_water / 4 {
            self.paused = false;
            FlowChange::Resumed
        } else {
            FlowChange::None
        }
    }

    /// The flow state the last check left.
    pub(crate) fn flow(&self) -> WriteFlow {
        if self.paused {
            WriteFlow::Paused
        } else {
            WriteFlow::Open
        }
    }

    /// Bytes accepted but not yet in the pipe.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `data` without writing it.
    pub(crate) fn enqueue(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.queued += data.len();
            self.queue.push_back(data);
        }
    }

    /// Queues `data`, writing as much as the pipe takes right away when nothing is queued
    /// ahead of it. An error means the pipe is broken.
    pub(crate) fn push(&mut self, data: Bytes) -> io::Result<()> {
        let was_idle = self.queue.is_empty();
        self.enqueue(data);
        if was_idle { self.write_now() } else { Ok(()) }
    }

    /// One `writev` of the queue, straight away. A would-block leaves the queue for
    /// [`poll_flush`](Writer::poll_flush).
    pub(crate) fn write_now(&mut self) -> io::Result<()> {
        let queue = &self.queue;
        let bufs = || queue.iter().map(|b| &b[..]);
        let wanted = writev_len(bufs());
        let written = if self.readiness_stale {
            let result = sys::fd::writev(self.fd.get_ref().as_fd(), bufs());
            if is_would_block(&result) {
                self.readiness_stale = false;
            }
            result
        } else {
            self.fd
                .try_io(Interest::WRITABLE, |fd| sys::fd::writev(fd.as_fd(), bufs()))
        };
        match written {
            Ok(n) => {
                self.advance(n);
                self.note_write(n < wanted);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.note_write(true);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Notes whether a write found the pipe full, and grows a pipe that keeps being full.
    fn note_write(&mut self, full: bool) {
        if self.growth.observe(full) {
            self.growth.grow(self.fd.get_ref().as_fd());
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
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
            ready!(self.poll_flush_some(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Makes progress on the queue: one successful `writev` (or nothing to do).
    pub(crate) fn poll_flush_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queue.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let queue = &self.queue;
        let (n, full) = ready!(poll_writev(&self.fd, &mut self.readiness_stale, cx, || {
            queue.iter().map(|b| &b[..])
        }))?;
        self.advance(n);
        self.note_write(full);
        Poll::Ready(Ok(()))
    }

    /// Flushes, then waits for the child to close its end (the pipe's write end then reports
    /// an error condition). Ready with the reason the pipe is done, when it is.
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Err(e) = ready!(self.poll_flush(cx)) {
            return Poll::Ready(CloseReason::Error(e.into()));
        }
        if self.closing {
            return Poll::Ready(CloseReason::Closed);
        }
        loop {
            let mut guard = match ready!(self.fd.poll_write_ready(cx)) {
                Ok(guard) => guard,
                Err(e) => return Poll::Ready(CloseReason::Error(e.into())),
            };
            if guard.ready().is_write_closed() {
                return Poll::Ready(CloseReason::Eof);
            }
            // Cleared while the pipe is still writable, to wait for the close edge: no edge
            // will set it again until the pipe has been full, so writes must not trust it.
            guard.clear_ready();
            self.readiness_stale = true;
        }
    }

    /// The fd written.
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// The fd, out of the reactor, for a handle of another kind. Whatever is still queued is
    /// dropped.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd.into_inner()
    }

    /// Flushes the queue, then writes from `bufs` directly (one `writev`).
    pub(crate) fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(cx))?;
        let (n, full) = ready!(poll_writev(&self.fd, &mut self.readiness_stale, cx, || {
            bufs.iter().map(|b| &b[..])
        }))?;
        self.note_write(full);
        Poll::Ready(Ok(n))
    }
}

/// One `writev` of `bufs()`.
///
/// Normally the reactor's readiness says when to try, and a short write (the pipe is full)
/// clears it, so no write is wasted on `EAGAIN`. But an idle writer clears readiness while the
/// pipe is still writable, to watch for the child closing its end, and a writable pipe raises
/// no new edge: while `stale`, the syscall is tried first, until an `EAGAIN` shows the
/// cleared readiness is true again.
fn poll_writev<'a, I>(
    fd: &AsyncFd<OwnedFd>,
    stale: &mut bool,
    cx: &mut Context<'_>,
    bufs: impl Fn() -> I,
) -> Poll<io::Result<(usize, bool)>>
where
    I: Iterator<Item = &'a [u8]>,
{
    let wanted = writev_len(bufs());
    if *stale {
        match sys::fd::writev(fd.get_ref().as_fd(), bufs()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *stale = false,
            result => return Poll::Ready(result.map(|n| (n, n < wanted))),
        }
    }
    loop {
        let mut guard = ready!(fd.poll_write_ready(cx))?;
        match guard.try_io(|fd| sys::fd::writev(fd.get_ref().as_fd(), bufs())) {
            Ok(Ok(n)) => {
                if n < wanted {
                    guard.clear_ready();
                }
                return Poll::Ready(Ok((n, n < wanted)));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => {}
        }
    }
}

/// What one `writev` is handed (the same filter and cap as `sys::fd::writev`): only a write
/// shorter than that means the pipe is full.
fn writev_len<'a>(bufs: impl Iterator<Item = &'a [u8]>) -> usize {
    bufs.filter(|b| !b.is_empty())
        .take(sys::fd::MAX_IOVECS)
        .map(<[u8]>::len)
        .sum()
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("fd", self.fd.get_ref())
            .field("queued", &self.queued)
            .field("closing", &self.closing)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

fn is_would_block<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
