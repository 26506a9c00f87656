//! A socket the parent both reads and writes at one child fd: a [`Reader`] and a [`Writer`]
//! on two copies of the parent's end, each registered with the reactor for its own
//! direction, that end one at a time.

use std::os::fd::OwnedFd;

use super::{Reader, Writer};
use crate::event::CloseReason;

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
            Half::Write => self.writer = None,
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
