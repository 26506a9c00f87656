//! The parent end of one child pipe: a [`Reader`] that turns readiness into `Bytes`, or a
//! [`Writer`] with a queue of `Bytes` flushed by `writev`; and the bookkeeping they share.

mod reader;
mod writer;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;

use futures_util::task::AtomicWaker;
use tokio::io::unix::AsyncFd;

use crate::sys;

pub(crate) use reader::{ReadOutcome, Reader};
pub use writer::WriteFlow;
pub(crate) use writer::{DEFAULT_HIGH_WATER, FlowChange, Writer};

/// Which way data flows through a pipe, seen from the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ParentReads,
    ParentWrites,
    /// A pty master read as fd 1: EIO means the terminal's other side is gone, a clean close.
    PtyMaster,
}

/// One pipe of a transport, identified by its fd number in the child.
pub(crate) struct Pipe {
    child_fd: i32,
    dir: Direction,
    pub(crate) state: PipeState,
    /// Reading is paused: the pipe is not read, and its data already queued is held back.
    /// Kept apart from the reader, so that it outlives a close while paused.
    pub(crate) paused: bool,
}

pub(crate) enum PipeState {
    Reader(Reader),
    Writer(Writer),
    /// Handed out by `take_reader`/`take_writer`; `ended` waits for the handle to close it.
    Taken(Arc<TakenPipe>),
    Closed,
}

impl Pipe {
    /// `may_grow`: the pipe has the default capacity and may be grown when busy.
    pub(crate) fn new(
        child_fd: i32,
        dir: Direction,
        fd: AsyncFd<OwnedFd>,
        capacity: usize,
        may_grow: bool,
    ) -> Self {
        let state = match dir {
            Direction::ParentWrites => PipeState::Writer(Writer::new(fd, may_grow)),
            Direction::ParentReads => PipeState::Reader(Reader::new(fd, capacity, may_grow, false)),
            Direction::PtyMaster => PipeState::Reader(Reader::new(fd, capacity, false, true)),
        };
        Pipe {
            child_fd,
            dir,
            state,
            paused: false,
        }
    }

    pub(crate) fn child_fd(&self) -> i32 {
        self.child_fd
    }

    /// Whether the parent writes this pipe (open, closed or taken alike).
    pub(crate) fn parent_writes(&self) -> bool {
        self.dir == Direction::ParentWrites
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

/// A second `io::Error` for one that has to be reported twice (to a caller and in a `Closed`
/// event): rebuilt from its errno, so that `raw_os_error` still gives it; only an error
/// without one is reduced to its kind.
pub(crate) fn same_os_error(e: &io::Error) -> io::Error {
    e.raw_os_error()
        .map_or_else(|| io::Error::from(e.kind()), io::Error::from_raw_os_error)
}

/// After this many reads (or writes) in a row find a default pipe full, the child and parent
/// wake each other per 64 KiB: the pipe grows to [`GROWN_CAPACITY`] so each wake-up moves more.
const FULL_IN_A_ROW_BEFORE_GROWING: u8 = 4;

/// What a busy pipe grows to: the default `/proc/sys/fs/pipe-max-size`.
const GROWN_CAPACITY: usize = 1 << 20;
/// Counts transfers in a row that found a default-sized pipe full, to grow it once.
pub(crate) struct Growth {
    /// `None` once grown, or when the pipe must keep its size.
    full_in_a_row: Option<u8>,
}

impl Growth {
    pub(crate) fn new(may_grow: bool) -> Self {
        Growth {
            full_in_a_row: may_grow.then_some(0),
        }
    }

    /// Records one transfer; `true` when the pipe should grow now.
    pub(crate) fn observe(&mut self, full: bool) -> bool {
        let Some(count) = &mut self.full_in_a_row else {
            return false;
        };
        *count = if full { *count + 1 } else { 0 };
        *count >= FULL_IN_A_ROW_BEFORE_GROWING
    }

    /// Grows the pipe once; a refusal (the per-user pipe memory limit) leaves it as it is.
    pub(crate) fn grow(&mut self, fd: BorrowedFd<'_>) -> Option<usize> {
        self.full_in_a_row = None;
        let grown = sys::fd::set_pipe_capacity(fd, GROWN_CAPACITY).ok();
        tracing::trace!(?grown, "grew a busy pipe");
        grown
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
