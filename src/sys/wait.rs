//! Waiting: peeking at zombies without reaping them, and reaping one pid with its rusage.

use std::io;
use std::mem::MaybeUninit;

use super::cvt_retry;

/// The pid of some zombie child of this process, left unreaped (`WNOWAIT`); `None` if no child
/// has exited. `ECHILD` (no children at all) is returned as an error.
pub(crate) fn peek_any_exited() -> io::Result<Option<libc::pid_t>> {
    peek(libc::P_ALL, 0)
}

/// Whether `pid` has exited, without reaping it.
pub(crate) fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    Ok(peek(libc::P_PID, pid as libc::id_t)?.is_some())
}

fn peek(idtype: libc::idtype_t, id: libc::id_t) -> io::Result<Option<libc::pid_t>> {
    // waitid leaves si_pid untouched when no child is ready, so start from zero.
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid, zeroed siginfo_t for waitid to fill.
    cvt_retry(|| unsafe { libc::waitid(idtype, id, info.as_mut_ptr(), flags) })?;
    // SAFETY: zero-initialised or filled by waitid; reading si_pid is defined for SIGCHLD info.
    let pid = unsafe { info.assume_init().si_pid() };
    Ok((pid != 0).then_some(pid))
}

/// Reaps `pid` if it has exited: `Some((raw status, rusage))`, or `None` if it still runs.
pub(crate) fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<(i32, libc::rusage)>> {
    let mut status = 0;
    let mut usage = MaybeUninit::<libc::rusage>::zeroed();
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: valid out-pointers for the status and rusage of one pid.
    let got = cvt_retry(|| unsafe { libc::wait4(pid, &mut status, flags, usage.as_mut_ptr()) })?;
    // SAFETY: zero-initialised, and filled by wait4 when it reaped the child.
    Ok((got == pid).then(|| (status, unsafe { usage.assume_init() })))
}
