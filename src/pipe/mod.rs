//! The parent ends of a child's pipes: a [`Reader`] that turns readiness into `Bytes`, a
//! [`Writer`] with a queue of `Bytes` flushed by `writev`, a [`Duplex`] socket that is both,
//! the [`PipeSet`] a transport keeps them in, and the standalone handles ([`PipeReader`], [`PipeWriter`]) a pipe becomes when it
//! is taken out of its transport.

mod duplex;
mod handle;
mod reader;
mod set;
mod writer;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;

use futures_util::task::AtomicWaker;
use tokio::io::unix::AsyncFd;

use crate::sys;

pub(crate) use duplex::{Duplex, Half};
pub use handle::{PipeReader, PipeWriter};
pub(crate) use reader::{ReadOutcome, Reader, Reads};
pub(crate) use set::PipeSet;
pub use writer::WriteFlow;
pub(crate) use writer::{DEFAULT_HIGH_WATER, FlowChange, WriteLimits, Writer};

/// A new pipe's capacity on Linux. (Past `pipe-user-pages-soft` the kernel gives smaller
/// pipes; reads are sized from this, so smaller pipes only make reads shorter.)
pub(crate) const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;

/// Which way data flows through a pipe, seen from the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The child writes, the parent reads.
    ParentReads,
    /// The parent writes, the child reads.
    ParentWrites,
    /// A pty master read as fd 1: EIO means the terminal's other side is gone, a clean close.
    PtyMaster,
    /// A socket both sides read and write.
    Duplex,
}

/// How big a pipe is, and whether it may grow when busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capacity {
    /// The kernel's default size, which nobody asked for: the pipe grows once if it keeps
    /// being full (see [`Command::pipe_capacity`](crate::Command::pipe_capacity)).
    Default,
    /// A size that stays: one the user chose, or a terminal's, which cannot be resized.
    Fixed(usize),
}

impl Capacity {
    /// The size in bytes.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Capacity::Default => DEFAULT_PIPE_CAPACITY,
            Capacity::Fixed(bytes) => bytes,
        }
    }
}

/// One pipe of a transport, identified by its fd number in the child.
#[derive(Debug)]
pub(crate) struct Pipe {
    child_fd: i32,
    dir: Direction,
    pub(crate) state: PipeState,
    /// Reading is paused: the pipe is not read, and its data already queued is held back.
    /// Kept apart from the reader, so that it outlives a close while paused.
    pub(crate) paused: bool,
}

/// Where one pipe of a transport stands.
#[derive(Debug)]
pub(crate) enum PipeState {
    /// Read by the transport.
    Reader(Reader),
    /// Written by the transport (and flushed, then closed, once `closing`).
    Writer(Writer),
    /// Read and written by the transport, until both halves have ended. Boxed: it holds a
    /// reader and a writer, and every pipe's state is as large as its largest kind.
    Duplex(Box<Duplex>),
    /// Handed out by `take_reader`/`take_writer`; `ended` waits for the handle to close it.
    Taken(Arc<TakenPipe>),
    /// Closed by either side; its `Closed` event has been queued.
    Closed,
}

impl Pipe {
    /// The pipe at `child_fd` the parent writes, registered with the reactor as `fd`; its
    /// writer starts with `limits`.
    pub(crate) fn writer(
        child_fd: i32,
        fd: AsyncFd<OwnedFd>,
        capacity: Capacity,
        limits: WriteLimits,
    ) -> Self {
        let writer = Writer::new(fd, capacity, limits);
        Pipe::with_state(child_fd, Direction::ParentWrites, PipeState::Writer(writer))
    }

    /// The pipe at `child_fd` the parent reads, registered with the reactor as `fd`.
    pub(crate) fn reader(child_fd: i32, fd: AsyncFd<OwnedFd>, capacity: Capacity) -> Self {
        let reader = Reader::new(fd, capacity);
        Pipe::with_state(child_fd, Direction::ParentReads, PipeState::Reader(reader))
    }

    /// The pty master read at `child_fd`: `master` itself, and its
    /// [`watch_set`](crate::sys::pty::watch_set) registered with the reactor.
    pub(crate) fn terminal(child_fd: i32, watch_set: AsyncFd<OwnedFd>, master: OwnedFd) -> Self {
        let reader = Reader::terminal(watch_set, master);
        Pipe::with_state(child_fd, Direction::PtyMaster, PipeState::Reader(reader))
    }

    /// The socket at `child_fd`: `read` and `write` are two copies of the parent's end,
    /// registered for reading and for writing; the writer starts with `limits`.
    pub(crate) fn duplex(
        child_fd: i32,
        read: AsyncFd<OwnedFd>,
        write: AsyncFd<OwnedFd>,
        limits: WriteLimits,
    ) -> Self {
        // A socket's buffers are not a pipe's and cannot be resized with F_SETPIPE_SZ: fixed.
        let capacity = Capacity::Fixed(DEFAULT_PIPE_CAPACITY);
        let duplex = Duplex::new(
            Reader::new(read, capacity),
            Writer::new(write, capacity, limits),
        );
        Pipe::with_state(
            child_fd,
            Direction::Duplex,
            PipeState::Duplex(Box::new(duplex)),
        )
    }

    fn with_state(child_fd: i32, dir: Direction, state: PipeState) -> Self {
        Pipe {
            child_fd,
            dir,
            state,
            paused: false,
        }
    }

    /// The fd number the child has this pipe at.
    pub(crate) fn child_fd(&self) -> i32 {
        self.child_fd
    }

    /// Whether the parent writes this pipe and does not read it (open, closed or taken
    /// alike).
    pub(crate) fn parent_writes(&self) -> bool {
        self.dir == Direction::ParentWrites
    }

    /// Whether this is a socket the parent both reads and writes (open, closed or taken
    /// alike).
    pub(crate) fn is_duplex(&self) -> bool {
        self.dir == Direction::Duplex
    }

    /// Whether this pipe still keeps `ended` from arriving.
    pub(crate) fn is_open(&self) -> bool {
        match &self.state {
            PipeState::Reader(_) | PipeState::Writer(_) | PipeState::Duplex(_) => true,
            PipeState::Taken(taken) => !taken.is_closed(),
            PipeState::Closed => false,
        }
    }

    /// Whether the transport itself still reads or writes this pipe (it is neither closed
    /// nor taken out).
    pub(crate) fn is_live(&self) -> bool {
        matches!(
            self.state,
            PipeState::Reader(_) | PipeState::Writer(_) | PipeState::Duplex(_)
        )
    }
}

/// A second `io::Error` for one that has to be reported twice (to a caller and in a `Closed`
/// event), made from its errno, so that `raw_os_error` gives the same answer for both. An
/// error without an errno keeps only its kind: its message is never copied into a new error.
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
#[derive(Debug)]
pub(crate) struct Growth {
    /// `None` once grown, or when the pipe must keep its size.
    full_in_a_row: Option<u8>,
}

impl Growth {
    /// Growth for a pipe of `capacity`: only a default-sized pipe may grow.
    pub(crate) fn new(capacity: Capacity) -> Self {
        Growth {
            full_in_a_row: (capacity == Capacity::Default).then_some(0),
        }
    }

    /// Records one transfer; `true` when the pipe should grow now.
    pub(crate) fn observe(&mut self, full: bool) -> bool {
        let Some(count) = &mut self.full_in_a_row else {
            return false;
        };
        *count = if full { count.saturating_add(1) } else { 0 };
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
#[derive(Debug, Default)]
pub(crate) struct TakenPipe {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl TakenPipe {
    /// Whether the handle has closed the pipe (or was dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Has the transport's task woken when the handle closes the pipe.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// A link whose handle is already done: for a pipe handed out as a handle of another
    /// kind (a socket), which the transport cannot follow.
    pub(crate) fn released() -> Arc<Self> {
        let taken = Arc::new(TakenPipe::default());
        taken.close();
        taken
    }

    /// Called by the handle when it closes its fd.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle child holds one `Pipe` per pipe: a kind that grows every pipe (a duplex held
    /// inline once took it from 112 to 216 bytes, +0.3 KiB per child with three pipes) shows
    /// up in the memory-per-child benchmark against Tokio.
    #[test]
    fn a_pipe_stays_small() {
        assert!(
            std::mem::size_of::<Pipe>() <= 128,
            "{}",
            std::mem::size_of::<Pipe>()
        );
    }

    #[test]
    fn only_a_default_sized_pipe_grows() {
        let mut default = Growth::new(Capacity::Default);
        for _ in 1..FULL_IN_A_ROW_BEFORE_GROWING {
            assert!(!default.observe(true));
        }
        assert!(default.observe(true));
        // A transfer that finds room starts the count again.
        let mut interrupted = Growth::new(Capacity::Default);
        for _ in 1..FULL_IN_A_ROW_BEFORE_GROWING {
            assert!(!interrupted.observe(true));
        }
        assert!(!interrupted.observe(false));
        assert!(!interrupted.observe(true));

        let mut fixed = Growth::new(Capacity::Fixed(DEFAULT_PIPE_CAPACITY));
        for _ in 0..3 * FULL_IN_A_ROW_BEFORE_GROWING {
            assert!(!fixed.observe(true));
        }
        assert_eq!(Capacity::Default.bytes(), DEFAULT_PIPE_CAPACITY);
        assert_eq!(Capacity::Fixed(4096).bytes(), 4096);
    }
}
