//! File descriptor syscalls: pipes, flags, reads and vectored writes.
//!
//! Through nix where it serves. Raw libc where it cannot: reads into uninitialised buffers
//! (nix reads only into initialised `&mut [u8]`), whether a bare fd *number* is open (nix
//! wants a `BorrowedFd`, which promises it is), and the signal handler's one-byte write (its
//! fd is a number read from an atomic).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::BytesMut;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::Mode;
use tokio::io::ReadBuf;

use super::{cvt_retry, retry};

/// A pipe with both ends close-on-exec and blocking: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// A connected `AF_UNIX` stream socket pair, both ends close-on-exec and blocking:
/// `(parent end, child end)`. A stream, not datagrams, so that it reads and writes like a
/// pipe, and `AF_UNIX` so that fds can travel over it (`SCM_RIGHTS`).
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    Ok(nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Opens `/dev/null` read-write, close-on-exec.
pub(crate) fn open_dev_null() -> io::Result<OwnedFd> {
    retry(|| {
        nix::fcntl::open(
            c"/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    })
}

/// Puts the open file description behind `fd` in non-blocking mode.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Makes a pipe end this crate just created non-blocking, in one syscall: a fresh pipe end
/// has no other status flags to keep.
pub(crate) fn set_fresh_pipe_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A close-on-exec copy of `fd` at the lowest free number.
pub(crate) fn dup_lowest(fd: &OwnedFd) -> io::Result<OwnedFd> {
    fd.try_clone()
}

/// Makes fd number `to` (one this crate owns) a close-on-exec copy of fd number `from`,
/// in one step, so that `to` is never free for another thread to take.
///
/// Raw libc: nix's `dup3` wants the destination as an `OwnedFd` it consumes.
pub(crate) fn dup_onto(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup3 on fd numbers; `to` belongs to the caller, who means to replace what it
    // refers to, and a bad `from` gives EBADF.
    cvt_retry(|| unsafe { libc::dup3(from, to, libc::O_CLOEXEC) })?;
    Ok(())
}

/// Whether `fd` is open in this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd's flags; an unopened fd gives EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// Shuts down the sending direction of socket `fd`: the peer reads end of file, and can still
/// send. Every copy of the socket is affected, as the shutdown is the socket's.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown on a borrowed, open fd with a constant `how`.
    super::cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// Sets a pipe's capacity (`F_SETPIPE_SZ`) and returns the capacity the kernel chose.
pub(crate) fn set_pipe_capacity(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let bytes =
        libc::c_int::try_from(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let got = fcntl(fd, FcntlArg::F_SETPIPE_SZ(bytes))?;
    Ok(got as usize)
}

/// Reads at most `max` bytes into the spare capacity of `buf`, extending its length.
pub(crate) fn read_into(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is writable memory of at least `len` bytes owned by `buf`.
    let n = cvt_retry(|| unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), len) })?;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// The most buffers one `writev` is handed.
pub(crate) const MAX_IOVECS: usize = 64;

/// Reads into the unfilled part of `buf` (without zeroing it first) and advances it.
pub(crate) fn read_buf(fd: BorrowedFd<'_>, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: the slice is only written by read(2), never de-initialised.
    let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
    // SAFETY: `unfilled` is writable memory of `unfilled.len()` bytes.
    let n = cvt_retry(|| unsafe {
        libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
    })? as usize;
    // SAFETY: read(2) initialised the first `n` unfilled bytes.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(())
}

/// Writes as much of `bufs` as the pipe takes with one `writev`, without ever raising SIGPIPE
/// in this process (see [`super::signal::SigpipeGuard`]).
pub(crate) fn writev<'a>(
    fd: BorrowedFd<'_>,
    bufs: impl Iterator<Item = &'a [u8]>,
) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for (slot, buf) in iov.iter_mut().zip(bufs.filter(|b| !b.is_empty())) {
        *slot = IoSlice::new(buf);
        count += 1;
    }
    let Some(iov) = iov.get(..count).filter(|iov| !iov.is_empty()) else {
        return Ok(0);
    };
    let _guard = super::signal::SigpipeGuard::new();
    match iov {
        // The common small message: write(2) skips writev's import of the vector.
        [one] => retry(|| nix::unistd::write(fd, one)),
        _ => retry(|| nix::sys::uio::writev(fd, iov)),
    }
}

/// Registers `fd` with the current runtime's reactor for `interest`.
///
/// Panics (inside Tokio) when called in a runtime built without I/O; callers catch that.
pub(crate) fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open, owned by the AsyncFd from here on, and always reports the
    // same fd number.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// [`register`] for an fd shared with others (a pidfd the reaper also holds).
pub(crate) fn register_shared(
    fd: Arc<OwnedFd>,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<Arc<OwnedFd>>> {
    // SAFETY: the AsyncFd holds a reference, so the fd stays open on the same file until it
    // is dropped, and an Arc always reports its OwnedFd's one number.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Reads a non-blocking fd until it is empty; returns how many bytes there were.
pub(crate) fn drain(fd: BorrowedFd<'_>) -> u64 {
    let mut count = 0;
    let mut buf = [0u8; 256];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(_) => return count,
            Ok(n) => count += n as u64,
        }
    }
}

/// Writes one byte to a self-pipe, ignoring errors (a full pipe already means "wake up").
/// Async-signal-safe.
pub(crate) fn write_byte(fd: RawFd) {
    // SAFETY: write(2) of one byte from a static buffer; async-signal-safe.
    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
}
