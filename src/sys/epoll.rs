//! A minimal epoll set for the reaper thread: pidfds and a wake pipe, each with a `u64` token.

use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::epoll::{self, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// An epoll instance, close-on-exec.
pub(crate) struct Epoll(epoll::Epoll);

/// The most entries one [`Epoll::wait`] returns.
pub(crate) const MAX_READY: usize = 64;

/// One ready entry: the token it was added with.
#[derive(Clone, Copy)]
pub(crate) struct Ready(EpollEvent);

impl Ready {
    pub(crate) const EMPTY: Ready = Ready(EpollEvent::new(EpollFlags::empty(), 0));

    pub(crate) fn token(&self) -> u64 {
        self.0.data()
    }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Epoll(epoll::Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?))
    }

    /// Watches `fd` for readability (level-triggered) under `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        Ok(self
            .0
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    /// Stops watching `fd` (closing the fd also does, once no copy of it is left).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(self.0.delete(fd)?)
    }

    /// Waits up to `timeout_ms` (-1: forever) and returns the ready entries, at most
    /// [`MAX_READY`] at a time.
    pub(crate) fn wait<'a>(&self, ready: &'a mut [Ready], timeout_ms: i32) -> &'a [Ready] {
        let timeout = EpollTimeout::try_from(timeout_ms).unwrap_or(EpollTimeout::NONE);
        let mut events = [EpollEvent::empty(); MAX_READY];
        let len = ready.len().min(MAX_READY);
        // Only EINTR (retried) is expected; anything else reads as "nothing ready".
        let got = super::retry(|| self.0.wait(&mut events[..len], timeout)).unwrap_or(0);
        let got = got.min(len);
        for (slot, event) in ready.iter_mut().zip(&events[..got]) {
            *slot = Ready(*event);
        }
        &ready[..got]
    }
}
