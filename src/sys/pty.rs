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
