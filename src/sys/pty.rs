//! Pseudo-terminals: a master for the parent and a slave for the child.
//!
//! Opened through nix. Setting the window size stays a raw `ioctl(TIOCSWINSZ)`: nix has no
//! safe wrapper for it (only a macro that generates an unsafe one).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use super::{cvt, retry};

/// A new pseudo-terminal pair, both ends close-on-exec.
pub(crate) struct Pty {
    pub(crate) master: OwnedFd,
    pub(crate) slave: OwnedFd,
}

/// Opens a pseudo-terminal with the given window size.
pub(crate) fn open(rows: u16, cols: u16) -> io::Result<Pty> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = retry(|| nix::fcntl::open(name.as_str(), flags, Mode::empty()))?;
    let master = OwnedFd::from(master);
    set_window_size(master.as_fd(), rows, cols)?;
    Ok(Pty { master, slave })
}

/// An epoll set watching `master` alone, for the reactor to watch in its place.
///
/// When no process has the terminal open any more (the child closed fds 0-2), the master
/// reports a hang-up, which Tokio keeps as a readiness that never clears; yet the child may
/// open the terminal again by name (`/dev/tty`) and write. The set itself never hangs up: it
/// turns readable at each wake-up of the master (data, the terminal closed or reopened), so
/// the reader can wait for news of a hung-up terminal instead of ending there or spinning.
pub(crate) fn watch_set(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    let set = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    set.add(
        master,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
    )?;
    Ok(set.0)
}

/// Sets the terminal's window size; the kernel sends SIGWINCH to its foreground group.
pub(crate) fn set_window_size(master: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(drop)
}
