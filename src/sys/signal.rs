//! Signals: sending them (through a pidfd where the kernel has one) and keeping SIGPIPE away
//! from the parent.
//!
//! Signal masks go through nix. Raw libc stays where nix cannot serve: `pidfd_open` and
//! `pidfd_send_signal` (nix has neither); `kill` and `killpg`, because nix's take its `Signal`
//! enum, which has no real-time signals (a caller's `SIGRTMIN + n` could not be sent);
//! querying SIGPIPE's action without changing it (nix's `sigaction` always installs one); and
//! `sigtimedwait` (nix has none).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use super::cvt;

/// Sends `sig` through the child's pidfd, falling back to `kill(pid)` where the pidfd syscall
/// is missing. With a pidfd a reaped (or reused) pid can never be hit.
pub(crate) fn send(pid: libc::pid_t, pidfd: Option<BorrowedFd<'_>>, sig: i32) -> io::Result<()> {
    if let Some(pidfd) = pidfd {
        // SAFETY: pidfd_send_signal with a borrowed pidfd, no siginfo and no flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match cvt(ret) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other.map(drop),
        }
    }
    // SAFETY: kill with integer arguments; the caller guarantees `pid` is not yet reaped.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Opens a pidfd on process `pid`: signals sent through it reach that process or nobody, even
/// once the number is reused. `Ok(None)` where the kernel has no `pidfd_open` (before 5.3).
/// The fd is close-on-exec.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open with integer arguments (no flags); it only returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    match cvt(ret) {
        // The syscall returns a long; an fd always fits in an int.
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends `sig` to every process in the group `pgid`.
pub(crate) fn send_to_group(pgid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: killpg with integer arguments.
    cvt(unsafe { libc::killpg(pgid, sig) }).map(drop)
}

/// Whether SIGPIPE was at its default (fatal) action when last checked.
static SIGPIPE_IS_FATAL: AtomicBool = AtomicBool::new(true);

/// Re-reads SIGPIPE's disposition; called once per spawn so writes need no syscall for it.
pub(crate) fn refresh_sigpipe_disposition() {
    let mut old = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: querying the action only (act = NULL) into a valid out-pointer.
    let ret = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded and filled `old`.
    let fatal = ret != 0 || unsafe { old.assume_init() }.sa_sigaction == libc::SIG_DFL;
    SIGPIPE_IS_FATAL.store(fatal, Ordering::Relaxed);
}

/// Blocks SIGPIPE in this thread for the length of one write when SIGPIPE would kill the
/// process, and swallows the SIGPIPE that write raised. Does nothing (no syscall) in the usual
/// case where SIGPIPE is ignored, as Rust's runtime arranges.
pub(crate) struct SigpipeGuard {
    old_mask: Option<SigSet>,
}

impl SigpipeGuard {
    pub(crate) fn new() -> Self {
        if !SIGPIPE_IS_FATAL.load(Ordering::Relaxed) {
            return SigpipeGuard { old_mask: None };
        }
        let mut old = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigpipe_set()), Some(&mut old));
        SigpipeGuard {
            old_mask: blocked.is_ok().then_some(old),
        }
    }
}

impl Drop for SigpipeGuard {
    fn drop(&mut self) {
        let Some(old) = self.old_mask else { return };
        if !old.contains(Signal::SIGPIPE) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: consume a SIGPIPE our write left pending, without waiting; the set is a
            // valid sigset_t and the info pointer may be null.
            unsafe { libc::sigtimedwait(sigpipe_set().as_ref(), std::ptr::null_mut(), &zero) };
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

fn sigpipe_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    set
}

/// Unblocks SIGCHLD in the calling thread, so the reaper thread always receives it even when
/// the process was started with SIGCHLD blocked.
pub(crate) fn unblock_sigchld_in_this_thread() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_unblock();
}

/// The process group of this process.
pub(crate) fn own_process_group() -> libc::pid_t {
    nix::unistd::getpgrp().as_raw()
}

/// Where the SIGCHLD handler writes, and for which process. The handler survives `fork`, so
/// it checks the pid first: in a forked process it must not wake the parent's reaper through
/// the pipe they share.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_OWNER: AtomicI32 = AtomicI32::new(0);
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Makes SIGCHLD write a byte to `wake_fd` when a child of this process has exited (stops and
/// continues are not exits and wake nobody). The handler is installed once, through
/// `signal-hook-registry`, which chains with other users of SIGCHLD such as Tokio; later calls
/// (a reaper started afresh after a fork) only move where it writes.
pub(crate) fn wake_on_child_exit(wake_fd: RawFd) -> io::Result<()> {
    WAKE_FD.store(wake_fd, Ordering::Relaxed);
    WAKE_OWNER.store(std::process::id() as i32, Ordering::Release);
    if HANDLER_INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: the action reads the siginfo and two atomics and calls getpid(2) and write(2),
    // all async-signal-safe; the fd it writes to is never closed while it is the current one.
    unsafe {
        signal_hook_registry::register_sigaction(libc::SIGCHLD, |info: &libc::siginfo_t| {
            let exited = matches!(
                info.si_code,
                libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
            );
            if exited && WAKE_OWNER.load(Ordering::Acquire) == std::process::id() as i32 {
                super::fd::write_byte(WAKE_FD.load(Ordering::Relaxed));
            }
        })
    }?;
    HANDLER_INSTALLED.store(true, Ordering::Release);
    Ok(())
}
