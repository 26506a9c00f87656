//! What a transport reports: data and closes per child fd, the exit, and the end.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::WaitError;
use crate::exit_status::ExitStatus;

/// One thing that happened to a child, as yielded by the transport's `Stream`.
///
/// Guarantees: per fd, all [`Data`](Event::Data) comes before its [`Closed`](Event::Closed);
/// [`Exited`](Event::Exited) comes exactly once, when the child is reaped (data and closes may
/// come before or after it); [`Ended`](Event::Ended) comes exactly once and last, after
/// `Exited` and after every pipe has closed. Fds of different pipes are not ordered among
/// themselves.
///
/// Events are cheap to clone (the data is a shared [`Bytes`], an error a shared
/// `io::Error`) and compare by value; see [`CloseReason`] for how errors compare.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Bytes the child wrote to child fd `fd`.
    Data {
        /// The child fd.
        fd: i32,
        /// The bytes, as read in one go.
        data: Bytes,
    },
    /// The pipe at child fd `fd` is closed; no more events come for it.
    Closed {
        /// The child fd.
        fd: i32,
        /// Why it closed.
        reason: CloseReason,
    },
    /// The writer at child fd `fd` went above its high-water mark: stop producing.
    WritePaused {
        /// The child fd.
        fd: i32,
    },
    /// The writer at child fd `fd` drained to a quarter of its high-water mark after a
    /// [`WritePaused`](Event::WritePaused): produce again.
    WriteResumed {
        /// The child fd.
        fd: i32,
    },
    /// The child has been reaped. Pipes may still be open (a grandchild can hold them).
    Exited(Result<ExitStatus, WaitError>),
    /// The child has been reaped and every pipe is closed. The last event.
    Ended(Result<ExitStatus, WaitError>),
}

/// Why a pipe closed.
///
/// Two reasons are equal when they are the same variant and, for [`Error`](CloseReason::Error),
/// when the errors have the same [`ErrorKind`](io::ErrorKind) and the same raw OS error (or
/// both have none); the message of a non-OS error is not compared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// The child's side is gone: end of file on a pipe the parent reads, or the child closed
    /// the read end of a pipe the parent writes (noticed even when the parent is not writing).
    Eof,
    /// The parent closed it (`close_child_fd`, `lose_connection`), after flushing a writer.
    Closed,
    /// The child exited and the pipe stayed open past the command's wait delay, so the parent
    /// closed it.
    WaitDelay,
    /// A read or write failed, for example with `EPIPE` when the child closed its read end
    /// while the parent was writing. Shared, so that the reason can be cloned.
    Error(Arc<io::Error>),
}

impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CloseReason::Eof, CloseReason::Eof)
            | (CloseReason::Closed, CloseReason::Closed)
            | (CloseReason::WaitDelay, CloseReason::WaitDelay) => true,
            // `io::Error` is not comparable; its kind and errno are what callers match on.
            (CloseReason::Error(a), CloseReason::Error(b)) => {
                a.kind() == b.kind() && a.raw_os_error() == b.raw_os_error()
            }
            _ => false,
        }
    }
}

impl Eq for CloseReason {}

impl CloseReason {
    /// `true` for [`CloseReason::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, CloseReason::Error(_))
    }
}
