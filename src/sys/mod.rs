//! The thin layer of syscalls. Every `unsafe` block of the crate lives under here.
//!
//! Parent-side calls go through nix's safe wrappers. Raw libc is left for the child between
//! clone and exec (`child`: nix's `execve` allocates, and its credential calls go through
//! glibc's all-thread broadcast), and for calls nix lacks or cannot make as we need them;
//! each module says which and why.

pub(crate) mod cgroup;
pub(crate) mod child;
pub(crate) mod epoll;
pub(crate) mod fd;
pub(crate) mod pty;
pub(crate) mod signal;
pub(crate) mod wait;

use std::io;

/// Turns a `-1` return into the thread's last OS error.
pub(crate) fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Runs a nix call again for as long as it fails with `EINTR`.
pub(crate) fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Like [`cvt`], retrying on `EINTR`.
pub(crate) fn cvt_retry<T: PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
