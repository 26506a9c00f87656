//! A socket the parent both reads and writes at one child fd: a [`Reader`] and a [`Writer`]
//! on two copies of the parent's end, each registered with the reactor for its own
//! direction, that end one at a time.

use std::io;
use std::os::fd::OwnedFd;

use super::{Reader, Writer};
use crate::event::CloseReason;
use crate::sys;

/// One half of a [`Duplex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    /// What the child sends.
    Read,
    /// What the parent sends.
    Write,
}

/// The parent's end of a socket pair, read as events and written like a pipe.
///
/// The two halves end apart: the child shutting down its sending side ends the read half
/// alone (the parent may still write), and a failed write ends the write half alone (data
/// the child sent before can still be read). The socket closes once both have ended.
#[derive(Debug)]
pub(crate) struct Duplex {
    /// `None` once the read half has ended.
    pub(crate) reader: Option<Reader>,
    /// `None` once the write half has ended.
    pub(crate) writer: Option<Writer>,
    /// Why the half that ended first ended, for the `Closed` event.
    first_end: Option<CloseReason>,
}

impl Duplex {
    /// Both halves of one socket: `reader` and `writer` hold copies of the same fd.
    pub(super) fn new(reader: Reader, writer: Writer) -> Self {
        Duplex {
            reader: Some(reader),
            writer: Some(writer),
            first_end: None,
        }
    }

    /// Ends `half` for `reason`. Once both halves have ended, returns the reason the socket
    /// as a whole closed: an error of either half (the first), otherwise why the last one
    /// ended.
    pub(crate) fn end(&mut self, half: Half, reason: CloseReason) -> Option<CloseReason> {
        match half {
            Half::Read => self.reader = None,
            Half::Write => {
                if let Some(writer) = self.writer.take()
                    && self.reader.is_some()
                {
                    // The reader's copy keeps the socket open: only a shutdown tells the child
                    // that nothing more comes (it may already be gone: nothing to tell then).
                    let _ = sys::fd::shutdown_write(writer.as_fd());
                }
            }
        }
        let first = match self.first_end.take() {
            Some(first) if first.is_error() => first,
            _ => reason,
        };
        if self.reader.is_some() || self.writer.is_some() {
            self.first_end = Some(first);
            None
        } else {
            Some(first)
        }
    }

    /// A new copy of the parent's end of the socket (close-on-exec).
    pub(crate) fn copy_fd(&self) -> io::Result<OwnedFd> {
        match (&self.writer, &self.reader) {
            (Some(writer), _) => writer.as_fd().try_clone_to_owned(),
            (None, Some(reader)) => reader.as_fd().try_clone_to_owned(),
            (None, None) => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// The parent's end of the socket, for taking it out; the other copy closes. Anything
    /// still queued on the writer is dropped, so the caller flushes first.
    pub(crate) fn into_fd(self) -> Option<OwnedFd> {
        let Duplex { reader, writer, .. } = self;
        match (writer, reader) {
            (Some(writer), _) => Some(writer.into_fd()),
            (None, Some(reader)) => Some(reader.into_fd()),
            (None, None) => None,
        }
    }
}
