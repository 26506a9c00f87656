//! A minimal epoll set for the reaper thread: pidfds and a wake pipe, each with a `u64` token.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, cvt_retry};

/// An epoll instance, close-on-exec.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

/// One ready entry: the token it was added with.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Ready(libc::epoll_event);

impl Ready {
    pub(crate) const EMPTY: Ready = Ready(libc::epoll_event { events: 0, u64: 0 });

    pub(crate) fn token(&self) -> u64 {
        self.0.u64
    }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 with a flag; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            // SAFETY: a new fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability (level-triggered) under `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open; `event` is a valid epoll_event the kernel copies.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })
        .map(drop)
    }

    /// Stops watching `fd` (closing the fd also does, once no copy of it is left).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // DEL ignores the event, but kernels before 2.6.9 wanted a non-null pointer.
        let mut unused = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both fds are open; `unused` is a valid epoll_event.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut unused,
            )
        })
        .map(drop)
    }

    /// Waits up to `timeout_ms` (-1: forever) and returns the ready entries.
    pub(crate) fn wait<'a>(&self, ready: &'a mut [Ready], timeout_ms: i32) -> &'a [Ready] {
        let max = ready.len().min(i32::MAX as usize) as i32;
        // SAFETY: `ready` is a writable array of `max` epoll_event-sized entries (`Ready` is a
        // transparent-layout wrapper).
        let got = cvt_retry(|| unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                ready.as_mut_ptr().cast::<libc::epoll_event>(),
                max,
                timeout_ms,
            )
        });
        match got {
            Ok(n) => &ready[..(n as usize).min(ready.len())],
            // Only EINTR (retried) is expected; anything else reads as "nothing ready".
            Err(_) => &ready[..0],
        }
    }
}
