//! The pipes of one transport, by child fd: lookups that say why a pipe cannot be used,
//! pausing, round-robin reading, and taking pipes out as standalone handles.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Pipe, PipeReader, PipeState, PipeWriter, ReadOutcome, TakenPipe, Writer};
use crate::error::Error;

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

    /// The child fds of the writers the transport itself still holds (closing or not).
    pub(crate) fn writer_fds(&self) -> Vec<i32> {
        self.fds_where(|p| matches!(p.state, PipeState::Writer(_)))
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
        if !pipe.parent_writes() {
            return Err(Error::NotWritable(fd));
        }
        match &mut pipe.state {
            PipeState::Writer(w) if w.closing => Err(Error::PipeClosed(fd)),
            PipeState::Writer(w) => Ok(w),
            PipeState::Reader(_) => Err(Error::NotWritable(fd)),
            PipeState::Taken(_) => Err(Error::PipeTaken(fd)),
            PipeState::Closed => Err(Error::PipeClosed(fd)),
        }
    }

    /// Bytes queued for child fd `fd` (0 for anything but a writer the transport holds).
    pub(crate) fn queued_len(&self, fd: i32) -> usize {
        match self.get(fd).map(|p| &p.state) {
            Some(PipeState::Writer(w)) => w.queued(),
            _ => 0,
        }
    }

    /// Starts closing the pipe at child fd `fd`: `Ok(true)` when it is to close at once (a
    /// reader, or a writer with nothing queued), `Ok(false)` when there is nothing to do now
    /// (a writer flushes first, and a closed pipe stays closed).
    pub(crate) fn begin_close(&mut self, fd: i32) -> Result<bool, Error> {
        match &mut self.find_mut(fd)?.state {
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
    pub(crate) fn poll_read_next(&mut self, cx: &mut Context<'_>) -> Poll<(i32, ReadOutcome)> {
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
            let PipeState::Reader(reader) = &mut pipe.state else {
                continue;
            };
            if let Poll::Ready(outcome) = reader.poll_read(cx) {
                if matches!(outcome, ReadOutcome::Data(_)) {
                    self.next_reader = (i + 1) % count;
                }
                return Poll::Ready((fd, outcome));
            }
        }
        Poll::Pending
    }

    /// Takes the pipe the parent reads at child fd `fd` out, as a standalone handle.
    pub(crate) fn take_reader(&mut self, fd: i32) -> Result<PipeReader, Error> {
        let (state, taken) = self.take(fd, Take::Reader)?;
        match state {
            PipeState::Reader(reader) => Ok(PipeReader::new(fd, reader, taken)),
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

    /// Swaps an open pipe of the wanted direction for a `Taken` marker, returning its state.
    fn take(&mut self, fd: i32, want: Take) -> Result<(PipeState, Arc<TakenPipe>), Error> {
        let pipe = self.find_mut(fd)?;
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

    /// A pipe at `child_fd` going `dir`, with the other end kept open in `keep`.
    fn pipe(child_fd: i32, dir: Direction, keep: &mut Vec<OwnedFd>) -> Pipe {
        let (read, write) = sys::fd::pipe().unwrap();
        let (parent, child, interest) = match dir {
            Direction::ParentWrites => (write, read, Interest::WRITABLE),
            Direction::ParentReads | Direction::PtyMaster => (read, write, Interest::READABLE),
        };
        sys::fd::set_nonblocking(parent.as_fd()).unwrap();
        keep.push(child);
        let fd = sys::fd::register(parent, interest).unwrap();
        Pipe::new(child_fd, dir, fd, Capacity::Default, WriteLimits::default())
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
