//! The pipes of one transport, by child fd: lookups that say why a pipe cannot be used,
//! pausing, round-robin reading, and taking pipes out as standalone handles.

use std::sync::Arc;
use std::task::{Context, Poll};

use std::os::fd::OwnedFd;

use super::{Half, Pipe, PipeReader, PipeState, PipeWriter, ReadOutcome, Reads, TakenPipe, Writer};
use crate::error::Error;
use crate::event::CloseReason;

/// The pipes of one transport, sorted by child fd (each fd at most once).
#[derive(Debug)]
pub(crate) struct PipeSet {
    pipes: Vec<Pipe>,
    /// Where the next round of reads starts, so that a busy pipe cannot starve the others.
    next_reader: usize,
}

/// The direction a pipe is taken out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    Reader,
    Writer,
}

impl PipeSet {
    /// The set of `pipes`, in any order; the spawn gives each child fd once.
    pub(crate) fn new(mut pipes: Vec<Pipe>) -> Self {
        pipes.sort_by_key(Pipe::child_fd);
        PipeSet {
            pipes,
            next_reader: 0,
        }
    }

    /// The pipe at child fd `fd`, if there is one.
    pub(crate) fn get(&self, fd: i32) -> Option<&Pipe> {
        let i = self.pipes.binary_search_by_key(&fd, Pipe::child_fd).ok()?;
        self.pipes.get(i)
    }

    /// The pipe at child fd `fd`, if there is one.
    pub(crate) fn get_mut(&mut self, fd: i32) -> Option<&mut Pipe> {
        let i = self.pipes.binary_search_by_key(&fd, Pipe::child_fd).ok()?;
        self.pipes.get_mut(i)
    }

    /// The pipe at child fd `fd`, or [`Error::NoSuchPipe`].
    fn find_mut(&mut self, fd: i32) -> Result<&mut Pipe, Error> {
        self.get_mut(fd).ok_or(Error::NoSuchPipe(fd))
    }

    /// Every pipe, in ascending child fd order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pipe> {
        self.pipes.iter_mut()
    }

    /// The child fds of pipes that still keep `Ended` back, in ascending order.
    pub(crate) fn open_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.pipes
            .iter()
            .filter(|p| p.is_open())
            .map(Pipe::child_fd)
    }

    /// Whether any pipe still keeps `Ended` back.
    pub(crate) fn any_open(&self) -> bool {
        self.pipes.iter().any(Pipe::is_open)
    }

    /// The child fds of every pipe, whatever its state.
    pub(crate) fn fds(&self) -> Vec<i32> {
        self.pipes.iter().map(Pipe::child_fd).collect()
    }

    /// The child fds of the pipes the transport itself still reads or writes.
    pub(crate) fn live_fds(&self) -> Vec<i32> {
        self.fds_where(Pipe::is_live)
    }

    /// The child fds of the writers the transport itself still holds (closing or not),
    /// sockets with a write half included.
    pub(crate) fn writer_fds(&self) -> Vec<i32> {
        self.fds_where(|p| match &p.state {
            PipeState::Writer(_) => true,
            PipeState::Duplex(d) => d.writer.is_some(),
            _ => false,
        })
    }

    fn fds_where(&self, keep: impl Fn(&Pipe) -> bool) -> Vec<i32> {
        self.pipes
            .iter()
            .filter(|p| keep(p))
            .map(Pipe::child_fd)
            .collect()
    }

    /// The writer at child fd `fd`, or why there is none to write to.
    pub(crate) fn writer(&mut self, fd: i32) -> Result<&mut Writer, Error> {
        let pipe = self.find_mut(fd)?;
        if !pipe.parent_writes() && !pipe.is_duplex() {
            return Err(Error::NotWritable(fd));
        }
        match &mut pipe.state {
            PipeState::Writer(w) if w.closing => Err(Error::PipeClosed(fd)),
            PipeState::Writer(w) => Ok(w),
            PipeState::Duplex(d) => match &mut d.writer {
                Some(w) if !w.closing => Ok(w),
                _ => Err(Error::PipeClosed(fd)),
            },
            PipeState::Reader(_) => Err(Error::NotWritable(fd)),
            PipeState::Taken(_) => Err(Error::PipeTaken(fd)),
            PipeState::Closed => Err(Error::PipeClosed(fd)),
        }
    }

    /// Bytes queued for child fd `fd` (0 for anything but a writer the transport holds).
    pub(crate) fn queued_len(&self, fd: i32) -> usize {
        match self.get(fd).map(|p| &p.state) {
            Some(PipeState::Writer(w)) => w.queued(),
            Some(PipeState::Duplex(d)) => d.writer.as_ref().map_or(0, Writer::queued),
            _ => 0,
        }
    }

    /// Starts closing the pipe at child fd `fd`: `Ok(true)` when it is to close at once (a
    /// reader, or a writer with nothing queued), `Ok(false)` when there is nothing to do now
    /// (a writer flushes first, and a closed pipe stays closed). A socket stops being read at
    /// once and closes when its write half has flushed.
    pub(crate) fn begin_close(&mut self, fd: i32) -> Result<bool, Error> {
        match &mut self.find_mut(fd)?.state {
            PipeState::Duplex(d) => match &mut d.writer {
                Some(w) if w.queued() > 0 => {
                    w.closing = true;
                    // The write half is still there, so this cannot be the last half.
                    let _ = d.end(Half::Read, CloseReason::Closed);
                    Ok(false)
                }
                _ => Ok(true),
            },
            PipeState::Writer(w) if w.queued() == 0 => Ok(true),
            PipeState::Writer(w) => {
                w.closing = true;
                Ok(false)
            }
            PipeState::Reader(_) => Ok(true),
            PipeState::Taken(_) => Err(Error::PipeTaken(fd)),
            PipeState::Closed => Ok(false),
        }
    }

    /// Starts ending the write half of the socket at child fd `fd`, its read half going on:
    /// `true` when it is to end at once (nothing queued), `false` when it ends once flushed
    /// or there is no write half to end.
    pub(crate) fn begin_close_write(&mut self, fd: i32) -> bool {
        match self.get_mut(fd).map(|pipe| &mut pipe.state) {
            Some(PipeState::Duplex(d)) => match &mut d.writer {
                Some(w) => {
                    w.closing = true;
                    w.queued() == 0
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Closes the pipe at child fd `fd` if the transport still reads or writes it; `true` if
    /// it did (and a `Closed` event is due).
    pub(crate) fn close(&mut self, fd: i32) -> bool {
        match self.get_mut(fd) {
            Some(pipe) if pipe.is_live() => {
                pipe.state = PipeState::Closed;
                true
            }
            _ => false,
        }
    }

    /// Ends one half of the pipe at child fd `fd` for `reason`, if the transport still
    /// holds it. Returns the reason for the pipe's `Closed` event when that closed the pipe:
    /// at once for a one-way pipe, once both halves have ended for a socket.
    pub(crate) fn end_half(
        &mut self,
        fd: i32,
        half: Half,
        reason: CloseReason,
    ) -> Option<CloseReason> {
        let pipe = self.get_mut(fd)?;
        let closed = match &mut pipe.state {
            PipeState::Duplex(d) => d.end(half, reason)?,
            PipeState::Reader(_) | PipeState::Writer(_) => reason,
            PipeState::Taken(_) | PipeState::Closed => return None,
        };
        pipe.state = PipeState::Closed;
        Some(closed)
    }

    /// Fails unless child fd `fd` is a pipe the parent reads (in any state).
    pub(crate) fn check_reader(&self, fd: i32) -> Result<(), Error> {
        match self.get(fd) {
            None => Err(Error::NoSuchPipe(fd)),
            Some(pipe) if pipe.parent_writes() => Err(Error::NotReadable(fd)),
            Some(_) => Ok(()),
        }
    }

    /// Pauses or resumes the pipes the parent reads (the one at `fd`, or all), whatever their
    /// state: a closed pipe can still have data queued from before.
    pub(crate) fn set_paused(&mut self, fd: Option<i32>, paused: bool) {
        for pipe in &mut self.pipes {
            if fd.is_none_or(|fd| fd == pipe.child_fd()) && !pipe.parent_writes() {
                pipe.paused = paused;
            }
        }
    }

    /// Whether reading child fd `fd` is paused.
    pub(crate) fn is_paused(&self, fd: i32) -> bool {
        self.get(fd).is_some_and(|p| p.paused)
    }

    /// Reads from the next ready reader that is not paused, starting after the one that last
    /// gave data. Ready with the reader's child fd and what it read, or pending when no reader
    /// has anything.
    pub(crate) fn poll_read_next(
        &mut self,
        cx: &mut Context<'_>,
        reads: Reads,
    ) -> Poll<(i32, ReadOutcome)> {
        let count = self.pipes.len();
        for k in 0..count {
            let i = (self.next_reader + k) % count;
            let Some(pipe) = self.pipes.get_mut(i) else {
                continue;
            };
            let fd = pipe.child_fd();
            if pipe.paused {
                continue;
            }
            let reader = match &mut pipe.state {
                PipeState::Reader(reader) => reader,
                PipeState::Duplex(d) => match &mut d.reader {
                    Some(reader) => reader,
                    None => continue,
                },
                _ => continue,
            };
            if let Poll::Ready(outcome) = reader.poll_read(cx, reads) {
                if matches!(outcome, ReadOutcome::Data(_)) {
                    self.next_reader = (i + 1) % count;
                }
                return Poll::Ready((fd, outcome));
            }
        }
        Poll::Pending
    }

    /// The child has been reaped (see [`Reader::end_at_hangup`]).
    pub(crate) fn child_reaped(&mut self) {
        for pipe in &mut self.pipes {
            if let PipeState::Reader(reader) = &mut pipe.state {
                reader.end_at_hangup();
            }
        }
    }

    /// Takes the pipe the parent reads at child fd `fd` out, as a standalone handle.
    pub(crate) fn take_reader(&mut self, fd: i32) -> Result<PipeReader, Error> {
        let (state, taken) = self.take(fd, Take::Reader)?;
        match state {
            PipeState::Reader(mut reader) => {
                reader.end_at_hangup();
                Ok(PipeReader::new(fd, reader, taken))
            }
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// Takes the pipe the parent writes at child fd `fd` out, as a standalone handle.
    pub(crate) fn take_writer(&mut self, fd: i32) -> Result<PipeWriter, Error> {
        let (state, taken) = self.take(fd, Take::Writer)?;
        match state {
            PipeState::Writer(writer) => Ok(PipeWriter::new(fd, writer, taken)),
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// A new copy of the parent's end of the socket at child fd `fd`, which stays in the set.
    pub(crate) fn duplex_socket(&self, fd: i32) -> Result<OwnedFd, Error> {
        self.check_duplex(fd)?;
        match self.get(fd).map(|pipe| &pipe.state) {
            Some(PipeState::Duplex(d)) => d.copy_fd().map_err(Error::Io),
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// Takes the socket at child fd `fd` out, as the parent's end of it. Anything still
    /// queued on its write half is dropped: the caller flushes first.
    pub(crate) fn take_duplex(&mut self, fd: i32) -> Result<OwnedFd, Error> {
        self.check_duplex(fd)?;
        let pipe = self.find_mut(fd)?;
        // The transport cannot see when a socket handed out closes: it no longer waits for it.
        match std::mem::replace(&mut pipe.state, PipeState::Taken(TakenPipe::released())) {
            PipeState::Duplex(d) => d.into_fd().ok_or(Error::PipeClosed(fd)),
            other => {
                pipe.state = other;
                Err(Error::PipeClosed(fd))
            }
        }
    }

    /// Fails unless child fd `fd` is a socket the transport still reads or writes.
    pub(crate) fn check_duplex(&self, fd: i32) -> Result<(), Error> {
        let pipe = self.get(fd).ok_or(Error::NoSuchPipe(fd))?;
        match &pipe.state {
            _ if pipe.parent_writes() => Err(Error::NotReadable(fd)),
            _ if !pipe.is_duplex() => Err(Error::NotWritable(fd)),
            PipeState::Taken(_) => Err(Error::PipeTaken(fd)),
            // Closing: it has stopped being read and goes once flushed.
            PipeState::Duplex(d) if d.writer.as_ref().is_some_and(|w| w.closing) => {
                Err(Error::PipeClosed(fd))
            }
            PipeState::Duplex(d) if d.reader.is_some() || d.writer.is_some() => Ok(()),
            _ => Err(Error::PipeClosed(fd)),
        }
    }

    /// Swaps an open pipe of the wanted direction for a `Taken` marker, returning its state.
    fn take(&mut self, fd: i32, want: Take) -> Result<(PipeState, Arc<TakenPipe>), Error> {
        let pipe = self.find_mut(fd)?;
        if pipe.is_duplex() {
            return Err(Error::Duplex(fd));
        }
        match (&pipe.state, pipe.parent_writes(), want) {
            (_, false, Take::Writer) => return Err(Error::NotWritable(fd)),
            (_, true, Take::Reader) => return Err(Error::NotReadable(fd)),
            (PipeState::Taken(_), _, _) => return Err(Error::PipeTaken(fd)),
            (PipeState::Reader(_), _, _) => {}
            (PipeState::Writer(w), _, _) if !w.closing => {}
            _ => return Err(Error::PipeClosed(fd)),
        }
        let taken = Arc::new(TakenPipe::default());
        let state = std::mem::replace(&mut pipe.state, PipeState::Taken(taken.clone()));
        Ok((state, taken))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};

    use tokio::io::Interest;

    use super::*;
    use crate::pipe::{Capacity, Direction, WriteLimits};
    use crate::sys;

    /// A pipe at `child_fd` going `dir` (a reader unless the parent writes), with the other
    /// end kept open in `keep`.
    fn pipe(child_fd: i32, dir: Direction, keep: &mut Vec<OwnedFd>) -> Pipe {
        let (read, write) = sys::fd::pipe().unwrap();
        let (parent, child, interest) = match dir {
            Direction::ParentWrites => (write, read, Interest::WRITABLE),
            _ => (read, write, Interest::READABLE),
        };
        sys::fd::set_nonblocking(parent.as_fd()).unwrap();
        keep.push(child);
        let fd = sys::fd::register(parent, interest).unwrap();
        match dir {
            Direction::ParentWrites => {
                Pipe::writer(child_fd, fd, Capacity::Default, WriteLimits::default())
            }
            _ => Pipe::reader(child_fd, fd, Capacity::Default),
        }
    }

    /// A socket at `child_fd`, with the child's end kept open in `keep`.
    fn duplex(child_fd: i32, keep: &mut Vec<OwnedFd>) -> Pipe {
        let (parent, child) = sys::fd::socketpair().unwrap();
        sys::fd::set_nonblocking(parent.as_fd()).unwrap();
        keep.push(child);
        let write = parent.try_clone().unwrap();
        let read = sys::fd::register(parent, Interest::READABLE).unwrap();
        let write = sys::fd::register(write, Interest::WRITABLE).unwrap();
        Pipe::duplex(child_fd, read, write, WriteLimits::default())
    }

    #[tokio::test]
    async fn a_socket_closes_once_both_halves_have_ended() {
        let mut keep = Vec::new();
        let mut pipes = PipeSet::new(vec![
            duplex(3, &mut keep),
            pipe(1, Direction::ParentReads, &mut keep),
        ]);
        assert!(pipes.writer(3).is_ok());
        assert!(pipes.check_reader(3).is_ok());
        assert_eq!(pipes.writer_fds(), [3]);
        assert!(matches!(pipes.take_reader(3), Err(Error::Duplex(3))));
        assert!(matches!(pipes.take_writer(3), Err(Error::Duplex(3))));
        assert!(matches!(pipes.check_duplex(1), Err(Error::NotWritable(1))));

        // The read half ending leaves the write half usable, and the pipe open.
        assert_eq!(pipes.end_half(3, Half::Read, CloseReason::Eof), None);
        assert!(pipes.writer(3).is_ok());
        assert_eq!(pipes.open_fds().collect::<Vec<_>>(), [1, 3]);
        // An error of the first half is what the close reports.
        let broken = CloseReason::Error(Arc::new(std::io::Error::from_raw_os_error(libc::EPIPE)));
        let mut other = PipeSet::new(vec![duplex(4, &mut keep)]);
        assert_eq!(other.end_half(4, Half::Write, broken.clone()), None);
        assert!(matches!(other.writer(4), Err(Error::PipeClosed(4))));
        assert_eq!(
            other.end_half(4, Half::Read, CloseReason::Eof),
            Some(broken)
        );
        assert_eq!(other.end_half(4, Half::Read, CloseReason::Eof), None);

        // Otherwise the reason of the last half; a one-way pipe closes at once.
        assert_eq!(
            pipes.end_half(3, Half::Write, CloseReason::Closed),
            Some(CloseReason::Closed)
        );
        assert_eq!(
            pipes.end_half(1, Half::Read, CloseReason::Eof),
            Some(CloseReason::Eof)
        );
        assert!(!pipes.any_open());
        assert!(matches!(pipes.check_duplex(3), Err(Error::PipeClosed(3))));
    }

    #[tokio::test]
    async fn a_socket_taken_out_no_longer_holds_the_set_open() {
        let mut keep = Vec::new();
        let mut pipes = PipeSet::new(vec![duplex(3, &mut keep)]);
        let fd = pipes.take_duplex(3).unwrap();
        assert!(!pipes.any_open());
        assert!(matches!(pipes.take_duplex(3), Err(Error::PipeTaken(3))));
        assert!(matches!(pipes.writer(3), Err(Error::PipeTaken(3))));
        // The parent's end of the same socket: what goes in reaches the child's end.
        std::io::Write::write_all(&mut std::fs::File::from(fd), b"x").unwrap();
        let mut got = [0u8; 1];
        std::io::Read::read_exact(&mut std::fs::File::from(keep.remove(0)), &mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    /// Writers at 0 and 4, readers at 1 and 3, given out of order.
    fn set(keep: &mut Vec<OwnedFd>) -> PipeSet {
        PipeSet::new(vec![
            pipe(3, Direction::ParentReads, keep),
            pipe(0, Direction::ParentWrites, keep),
            pipe(4, Direction::ParentWrites, keep),
            pipe(1, Direction::ParentReads, keep),
        ])
    }

    #[tokio::test]
    async fn finds_pipes_by_child_fd_whatever_order_they_came_in() {
        let mut keep = Vec::new();
        let mut pipes = set(&mut keep);
        assert_eq!(pipes.fds(), [0, 1, 3, 4]);
        assert_eq!(pipes.open_fds().collect::<Vec<_>>(), [0, 1, 3, 4]);
        for fd in [0, 1, 3, 4] {
            assert_eq!(pipes.get(fd).map(Pipe::child_fd), Some(fd));
            assert_eq!(pipes.get_mut(fd).map(|p| p.child_fd()), Some(fd));
        }
        assert!(pipes.get(2).is_none());
        assert!(matches!(pipes.writer(2), Err(Error::NoSuchPipe(2))));
        assert!(matches!(pipes.check_reader(-1), Err(Error::NoSuchPipe(-1))));
        assert_eq!(pipes.writer_fds(), [0, 4]);
    }

    #[tokio::test]
    async fn the_writer_for_an_fd_says_why_there_is_none() {
        let mut keep = Vec::new();
        let mut pipes = set(&mut keep);
        assert!(pipes.writer(0).is_ok());
        assert!(matches!(pipes.writer(1), Err(Error::NotWritable(1))));
        assert!(pipes.check_reader(1).is_ok());
        assert!(matches!(pipes.check_reader(0), Err(Error::NotReadable(0))));

        // Closing: a writer with nothing queued closes at once, and stays closed.
        assert!(matches!(pipes.begin_close(0), Ok(true)));
        assert!(pipes.close(0));
        assert!(!pipes.close(0));
        assert!(matches!(pipes.begin_close(0), Ok(false)));
        assert!(matches!(pipes.writer(0), Err(Error::PipeClosed(0))));
        // A closed writer is still one the parent writes.
        assert!(matches!(pipes.check_reader(0), Err(Error::NotReadable(0))));
        assert!(matches!(pipes.take_reader(0), Err(Error::NotReadable(0))));
        assert!(matches!(pipes.take_writer(0), Err(Error::PipeClosed(0))));

        // A writer with bytes queued is only marked closing, and refuses more.
        pipes
            .writer(4)
            .unwrap()
            .enqueue(bytes::Bytes::from_static(b"queued"));
        assert_eq!(pipes.queued_len(4), 6);
        assert!(matches!(pipes.begin_close(4), Ok(false)));
        assert!(matches!(pipes.writer(4), Err(Error::PipeClosed(4))));
        assert!(matches!(pipes.take_writer(4), Err(Error::PipeClosed(4))));
        assert_eq!(pipes.writer_fds(), [4]);
        assert_eq!(pipes.queued_len(1), 0);
    }

    #[tokio::test]
    async fn a_taken_pipe_is_out_of_the_set_until_its_handle_closes() {
        let mut keep = Vec::new();
        let mut pipes = set(&mut keep);
        assert!(matches!(pipes.take_writer(3), Err(Error::NotWritable(3))));
        let reader = pipes.take_reader(3).unwrap();
        assert_eq!(reader.child_fd(), 3);
        assert!(matches!(pipes.take_reader(3), Err(Error::PipeTaken(3))));
        assert!(matches!(pipes.begin_close(3), Err(Error::PipeTaken(3))));
        assert!(!pipes.close(3));
        assert_eq!(pipes.live_fds(), [0, 1, 4]);
        assert_eq!(pipes.open_fds().collect::<Vec<_>>(), [0, 1, 3, 4]);
        drop(reader);
        assert_eq!(pipes.open_fds().collect::<Vec<_>>(), [0, 1, 4]);

        let writer = pipes.take_writer(0).unwrap();
        assert!(matches!(pipes.writer(0), Err(Error::PipeTaken(0))));
        drop(writer);
        assert_eq!(pipes.open_fds().collect::<Vec<_>>(), [1, 4]);
        assert!(pipes.any_open());
    }

    #[tokio::test]
    async fn pausing_touches_only_readers() {
        let mut keep = Vec::new();
        let mut pipes = set(&mut keep);
        pipes.set_paused(None, true);
        assert!(pipes.is_paused(1) && pipes.is_paused(3));
        assert!(!pipes.is_paused(0) && !pipes.is_paused(4));
        pipes.set_paused(Some(3), false);
        assert!(pipes.is_paused(1) && !pipes.is_paused(3));
        // A reader closed while paused stays paused, so its held data stays held.
        assert!(pipes.close(1));
        assert!(pipes.is_paused(1));
        assert!(!pipes.is_paused(9));
    }
}
