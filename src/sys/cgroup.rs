//! The syscalls behind cgroup containment that std does not wrap: telling a cgroup v2
//! directory from anything else, waiting for `cgroup.events` to change, and signalling a
//! member by pid.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// Whether `fd` (a directory or a file in it) lives on a cgroup v2 filesystem.
pub(crate) fn is_cgroup2(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct through a valid out-pointer; `fd` is borrowed open.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), stat.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded, so the struct is initialised.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_type as u64 == libc::CGROUP2_SUPER_MAGIC as u64)
}

/// Waits until `wake` is readable or one of `watched` reports a change (a kernfs file such
/// as `cgroup.events` signals one with `POLLPRI`), for at most `timeout_ms` (`-1`: no
/// limit). Returns whether `wake` is readable.
pub(crate) fn poll(
    wake: BorrowedFd<'_>,
    watched: &[BorrowedFd<'_>],
    timeout_ms: i32,
) -> io::Result<bool> {
    let mut fds: Vec<libc::pollfd> = std::iter::once(libc::pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    })
    .chain(watched.iter().map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    }))
    .collect();
    // SAFETY: poll reads and writes exactly `fds.len()` entries of a live vector.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(fds
        .first()
        .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLHUP) != 0))
}

/// Makes `fd` non-blocking, so a wake-up write never stalls a spawn.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a borrowed open fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: F_SETFL with the flags just read plus O_NONBLOCK.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// `kill(pid, sig)`, for members of a frozen cgroup (they cannot exit, so the pid cannot be
/// reused, while the cgroup stays frozen).
pub(crate) fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill with integers; the caller made sure `pid` is a member that cannot exit.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}
