//! Waiting: reaping one child through its pidfd, and (for children without one) peeking at
//! zombies without reaping them and reaping one pid, each with its rusage.
//!
//! All raw libc, as nix cannot serve here: it has no `wait4`, its `waitid` returns no rusage
//! (the raw syscall's fifth argument), and it turns the status into its `Signal` enum, which
//! has no real-time signals, so a child killed by `SIGRTMIN + n` would make the peek fail.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// What `waitid` on a pidfd found.
pub(crate) enum PidfdWait {
    /// The child has exited: its raw wait status (as `wait4` reports it) and rusage.
    Exited(i32, libc::rusage),
    /// Still running (or not yet waitable, e.g. while a tracer holds it).
    Running,
}

/// Collects the child behind `pidfd` if it has exited, with `waitid(P_PIDFD)`. With `keep`,
/// the status is read but the zombie stays (`WNOWAIT`), so its pid, process group and session
/// numbers stay reserved; a later call without `keep` releases it. `ECHILD` means someone else
/// reaped it.
pub(crate) fn reap_pidfd(pidfd: BorrowedFd<'_>, keep: bool) -> io::Result<PidfdWait> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let mut usage = MaybeUninit::<libc::rusage>::zeroed();
    let mut flags = libc::WEXITED | libc::WNOHANG;
    if keep {
        flags |= libc::WNOWAIT;
    }
    // SAFETY: the raw waitid takes (idtype, id, siginfo*, options, rusage*); both out-pointers
    // are valid and zeroed, and the pidfd is open for the call.
    cvt_retry(|| unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::P_PIDFD,
            pidfd.as_raw_fd(),
            info.as_mut_ptr(),
            flags,
            usage.as_mut_ptr(),
        )
    })?;
    // SAFETY: zeroed, then filled by waitid if a child was waitable.
    let info = unsafe { info.assume_init() };
    // SAFETY: si_pid and si_status are defined for SIGCHLD information (and zero if unset).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(PidfdWait::Running);
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        // WEXITED only reports the three above; anything else is not an exit.
        _ => return Ok(PidfdWait::Running),
    };
    // SAFETY: zeroed, then filled by waitid together with the status.
    Ok(PidfdWait::Exited(raw, unsafe { usage.assume_init() }))
}

/// Whether this kernel waits on pidfds (`P_PIDFD`, Linux 5.4). Asked with `not_a_pidfd`, an
/// open fd that is not a pidfd: `EBADF` means the id type is known, `EINVAL` that it is not.
pub(crate) fn pidfd_waits_supported(not_a_pidfd: BorrowedFd<'_>) -> bool {
    match reap_pidfd(not_a_pidfd, true) {
        Err(e) => e.raw_os_error() != Some(libc::EINVAL),
        Ok(_) => true,
    }
}
