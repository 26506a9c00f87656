//! The spawn engine: a `clone(CLONE_VM | CLONE_VFORK)` child that runs a prepared
//! [`ChildProgram`] and execs.
//!
//! Why not `fork`: fork copies the parent's page tables, so its cost grows with the parent's
//! memory (hundreds of milliseconds for a 4 GiB parent). Why not `posix_spawn`: it cannot
//! close the gaps between sparse target fds, change credentials, or say *which* step failed.
//! A vfork-style clone costs the same as glibc's `posix_spawn` (which is built the same way)
//! and runs exactly the steps we planned.
//!
//! The child shares the parent's memory while the calling thread is suspended, so everything
//! it does must be async-signal-safe: it reads the prepared program, makes raw syscalls, and
//! writes its failure (step, errno) into memory the parent reads after `clone` returns. It
//! never allocates, locks, logs or panics. It runs on its own stack, with every signal
//! blocked until it has reset every disposition (to the default, or to ignored for the
//! ignored signals the caller keeps), so no parent handler can run on it.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use crate::error::SpawnStep;
use crate::fd_plan::FdStep;

/// How the child joins a session or process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// Stay in the parent's session and group.
    Inherit,
    /// `setsid()`: a new session and group, no controlling terminal.
    New,
    /// `setpgid(0, pgid)`: `0` makes a new group led by the child.
    Group(libc::pid_t),
}

/// What the child does with its supplementary groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Groups<'a> {
    /// Keep the parent's.
    Inherit,
    /// Drop them all where the kernel lets us; `EPERM` (no `CAP_SETGID`, or a user namespace
    /// with setgroups denied) leaves them as they are.
    ClearIfPermitted,
    /// Exactly this list; failing to set it fails the spawn.
    Set(&'a [libc::gid_t]),
}

/// User and group the child switches to before exec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Credentials<'a> {
    pub(crate) groups: Groups<'a>,
    pub(crate) gid: Option<libc::gid_t>,
    pub(crate) uid: Option<libc::uid_t>,
}

/// Everything the child does between clone and exec, prepared by the parent. Pointers are to
/// NUL-terminated strings and NULL-terminated arrays owned by the caller.
pub(crate) struct ChildProgram<'a> {
    pub(crate) fd_steps: &'a [FdStep],
    pub(crate) argv: &'a [*const c_char],
    pub(crate) envp: &'a [*const c_char],
    /// Paths to try in order (the PATH lookup, resolved in the parent).
    pub(crate) exec_paths: &'a [*const c_char],
    pub(crate) cwd: Option<&'a CStr>,
    pub(crate) session: Session,
    pub(crate) parent_death_signal: c_int,
    pub(crate) parent_pid: libc::pid_t,
    pub(crate) controlling_tty: Option<c_int>,
    pub(crate) credentials: Credentials<'a>,
    /// Signals the child leaves ignored (bit `n - 1` for signal `n`); every other one is
    /// reset to its default action.
    pub(crate) keep_ignored: u64,
}

/// A child that exists and has exec'd.
pub(crate) struct Spawned {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: Option<OwnedFd>,
}

/// Spawns the child and returns once it has exec'd, or with the step that failed (the failed
/// child already reaped).
pub(crate) fn spawn(program: &ChildProgram<'_>) -> Result<Spawned, (SpawnStep, io::Error)> {
    let shared = Shared {
        program,
        failure: Failure::default(),
    };
    // A thread-local destructor may spawn after this thread's stack slot is gone; `with`
    // would panic there, and a panic in a TLS destructor aborts the process.
    let reused = STACK.try_with(|slot| -> Result<Spawned, (SpawnStep, io::Error)> {
        let mut slot = slot.borrow_mut();
        let stack = match &mut *slot {
            Some(stack) => stack,
            empty => empty.insert(ChildStack::new().map_err(|e| (SpawnStep::Clone, e))?),
        };
        spawn_on(&shared, stack)
    });
    match reused {
        Ok(result) => result,
        Err(_) => {
            // A one-off stack, unmapped when it drops at the end of this call.
            let stack = ChildStack::new().map_err(|e| (SpawnStep::Clone, e))?;
            spawn_on(&shared, &stack)
        }
    }
}

/// Clones the child onto `stack` and collects its outcome.
fn spawn_on(shared: &Shared<'_>, stack: &ChildStack) -> Result<Spawned, (SpawnStep, io::Error)> {
    let (pid, pidfd) = clone_child(shared, stack.top()).map_err(|e| (SpawnStep::Clone, e))?;
    match shared.failure.get() {
        None => Ok(Spawned { pid, pidfd }),
        Some((step, errno)) => {
            // The child has called _exit: collect it so no zombie is left.
            let _ = super::wait::reap(pid, true);
            Err((step, io::Error::from_raw_os_error(errno)))
        }
    }
}

static PIDFD_SUPPORTED: AtomicBool = AtomicBool::new(true);

fn clone_child(
    shared: &Shared<'_>,
    stack_top: *mut c_void,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: fill a full set and swap it in as this thread's mask, keeping the old one.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    let mut retried = false;
    let result = loop {
        let with_pidfd = PIDFD_SUPPORTED.load(Ordering::Relaxed) && !retried;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if with_pidfd {
            flags |= libc::CLONE_PIDFD;
        }
        let mut pidfd: c_int = -1;
        // SAFETY: `child_main` only reads `shared`, which outlives the child's use of it
        // because CLONE_VFORK suspends this thread until the child execs or exits; the child
        // runs on its own stack (`stack_top`), and with all signals blocked.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack_top,
                flags,
                shared as *const Shared<'_> as *mut c_void,
                &mut pidfd as *mut c_int,
            )
        };
        if pid == -1 {
            let err = io::Error::last_os_error();
            if with_pidfd && err.raw_os_error() == Some(libc::EINVAL) {
                // Kernels before 5.2 have no CLONE_PIDFD; signal by pid from now on.
                PIDFD_SUPPORTED.store(false, Ordering::Relaxed);
                continue;
            }
            if with_pidfd && err.raw_os_error() == Some(libc::EMFILE) && !retried {
                // No fd left for the pidfd: this child is signalled by pid (still race-free
                // under the reaper's lock).
                retried = true;
                continue;
            }
            break Err(err);
        }
        // SAFETY: with CLONE_PIDFD the kernel stored a new fd that nothing else owns.
        let pidfd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        break Ok((pid, pidfd));
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    result
}

/// What the parent hands the child: the program and a slot for the failure.
struct Shared<'a> {
    program: &'a ChildProgram<'a>,
    failure: Failure,
}

/// The step that failed in the child and its errno, written by the child before `_exit`.
#[derive(Default)]
struct Failure {
    step: AtomicU32,
    errno: AtomicI32,
}

const NO_FAILURE: u32 = 0;

impl Failure {
    fn record(&self, step: u32, errno: i32) {
        self.errno.store(errno, Ordering::Relaxed);
        self.step.store(step, Ordering::Release);
    }

    fn get(&self) -> Option<(SpawnStep, i32)> {
        let code = self.step.load(Ordering::Acquire);
        let step = match code {
            NO_FAILURE => return None,
            1 => SpawnStep::SetSid,
            2 => SpawnStep::SetProcessGroup,
            3 => SpawnStep::ParentDeathSignal,
            4 => SpawnStep::CloseFds,
            5 => SpawnStep::ControllingTerminal,
            6 => SpawnStep::Chdir,
            7 => SpawnStep::SetGroups,
            8 => SpawnStep::SetGid,
            9 => SpawnStep::SetUid,
            10 => SpawnStep::Exec,
            // Codes from 1000 up carry the destination fd of a failed dup.
            fd => SpawnStep::PlaceFd(fd.saturating_sub(1000) as i32),
        };
        Some((step, self.errno.load(Ordering::Relaxed)))
    }
}

/// The child. Async-signal-safe only: raw syscalls through libc, no allocation, no panics
/// (no indexing, no arithmetic that can overflow).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` the parent passed to clone; it stays valid while the
    // parent is suspended (CLONE_VFORK).
    let shared = unsafe { &*(arg as *const Shared<'_>) };
    let program = shared.program;
    let fail = |step: u32| -> c_int {
        // SAFETY: reading errno of the (shared) thread-local area is a plain load.
        let errno = unsafe { *libc::__errno_location() };
        shared.failure.record(step, errno);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };

    // SAFETY (whole block): every call below is an async-signal-safe syscall wrapper taking
    // plain integers or pointers into the prepared program.
    unsafe {
        // No parent handler may run here, and the new program starts with default dispositions
        // (including signals the parent ignores, SIGPIPE above all, unless the caller asked
        // to keep those) and an empty mask. A kept signal is set to SIG_IGN again rather than
        // skipped: a handler installed by another thread since the parent looked must not
        // survive here. The raw syscall, not glibc's sigaction: glibc refuses to touch its
        // internal signals 32 and 33 (EINVAL), so one the parent inherited as ignored would
        // stay ignored in the new program.
        let dfl = KernelSigaction::with_handler(libc::SIG_DFL);
        let ign = KernelSigaction::with_handler(libc::SIG_IGN);
        for bit in 0..64u32 {
            let sig = bit.wrapping_add(1) as c_int;
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let action = if program.keep_ignored.wrapping_shr(bit) & 1 == 1 {
                &ign
            } else {
                &dfl
            };
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET_BYTES,
            );
        }
        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());

        match program.session {
            Session::Inherit => {}
            Session::New => {
                if libc::setsid() == -1 {
                    return fail(1);
                }
            }
            Session::Group(pgid) => {
                if libc::setpgid(0, pgid) == -1 {
                    return fail(2);
                }
            }
        }

        for step in program.fd_steps {
            match *step {
                FdStep::Dup { from, to, cloexec } => {
                    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
                    let ret = if cloexec {
                        libc::dup3(from, to, flags)
                    } else {
                        libc::dup2(from, to)
                    };
                    if ret == -1 {
                        return fail(1000u32.saturating_add(to as u32));
                    }
                }
                FdStep::CloseRange { first, last } => {
                    if close_range(first, last) == -1 {
                        return fail(4);
                    }
                }
            }
        }

        if let Some(tty) = program.controlling_tty
            && libc::ioctl(tty, libc::TIOCSCTTY, 0) == -1
        {
            return fail(5);
        }

        if let Some(cwd) = program.cwd
            && libc::chdir(cwd.as_ptr()) == -1
        {
            return fail(6);
        }

        // Raw syscalls: glibc's wrappers would broadcast the change to the parent's threads,
        // which share our memory.
        let creds = program.credentials;
        match creds.groups {
            Groups::Inherit => {}
            Groups::ClearIfPermitted => {
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == -1
                    && *libc::__errno_location() != libc::EPERM
                {
                    return fail(7);
                }
            }
            Groups::Set(list) => {
                if libc::syscall(libc::SYS_setgroups, list.len(), list.as_ptr()) == -1 {
                    return fail(7);
                }
            }
        }
        if let Some(gid) = creds.gid
            && libc::syscall(libc::SYS_setgid, gid) == -1
        {
            return fail(8);
        }
        if let Some(uid) = creds.uid
            && libc::syscall(libc::SYS_setuid, uid) == -1
        {
            return fail(9);
        }

        // After the credential change: the kernel clears the parent-death signal when the
        // effective uid or gid changes.
        if program.parent_death_signal != 0 {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                program.parent_death_signal as libc::c_ulong,
            ) == -1
            {
                return fail(3);
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != program.parent_pid {
                *libc::__errno_location() = libc::ESRCH;
                return fail(3);
            }
        }

        // The PATH lookup, execvp-style: ENOENT-like misses go on to the next candidate, an
        // EACCES is remembered and reported if nothing else works.
        let mut saw_eacces = false;
        for &path in program.exec_paths {
            libc::execve(path, program.argv.as_ptr(), program.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENAMETOOLONG => {}
                libc::EACCES => saw_eacces = true,
                _ => return fail(10),
            }
        }
        if saw_eacces {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(10)
    }
}

/// The size of the kernel's signal set, which `rt_sigaction` insists on.
const KERNEL_SIGSET_BYTES: usize = if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
    16
} else {
    8
};

/// The kernel's `struct sigaction` as `rt_sigaction` reads and writes it. Only the handler is
/// ever looked at; it comes first except on MIPS, where the flags lead. The zeroed tail (no
/// flags, empty mask, no restorer) is larger than the rest of any kernel's struct, so the
/// kernel never writes past it.
#[repr(C)]
struct KernelSigaction {
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    flags: libc::c_uint,
    handler: libc::sighandler_t,
    tail: [u64; 6],
}

impl KernelSigaction {
    const fn with_handler(handler: libc::sighandler_t) -> Self {
        KernelSigaction {
            #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
            flags: 0,
            handler,
            tail: [0; 6],
        }
    }
}

/// The signals this process ignores right now, as a mask with bit `n - 1` for signal `n`
/// (1 to 64). One `rt_sigaction` query per signal: the raw syscall, because glibc refuses to
/// report its internal signals 32 and 33.
pub(crate) fn ignored_signals() -> u64 {
    let mut mask = 0u64;
    for sig in 1..=64 {
        let mut old = KernelSigaction::with_handler(libc::SIG_DFL);
        // SAFETY: a query only (act = NULL); `old` is larger than the kernel's struct.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                KERNEL_SIGSET_BYTES,
            )
        };
        if ret == 0 && old.handler == libc::SIG_IGN {
            mask |= 1 << (sig - 1);
        }
    }
    mask
}

/// `close_range(first, last)`, or a loop of `close` up to the fd limit on kernels before 5.9.
///
/// # Safety
/// Async-signal-safe; closes fds of the calling process.
unsafe fn close_range(first: u32, last: u32) -> c_int {
    // SAFETY: close_range with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    // SAFETY: reading errno.
    if ret == 0 || unsafe { *libc::__errno_location() } != libc::ENOSYS {
        return ret as c_int;
    }
    let mut limit = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit into a valid out-pointer.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, limit.as_mut_ptr()) } == 0 {
        // SAFETY: filled by getrlimit.
        unsafe { limit.assume_init() }.rlim_cur.min(u32::MAX as u64) as u32
    } else {
        65536
    };
    let mut fd = first;
    while fd <= last && fd < max {
        // SAFETY: closing an fd number; EBADF for unopened ones is expected and ignored.
        unsafe { libc::close(fd as c_int) };
        fd += 1;
    }
    0
}

const STACK_SIZE: usize = 128 * 1024;
const GUARD_SIZE: usize = 4096;

thread_local! {
    /// One child stack per spawning thread, reused: spawns on a thread never overlap.
    static STACK: RefCell<Option<ChildStack>> = const { RefCell::new(None) };
}

/// An mmap'd stack for the child, with a guard page below it.
struct ChildStack {
    base: *mut c_void,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE + GUARD_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of our own mapping becomes the guard.
        unsafe { libc::mprotect(base, GUARD_SIZE, libc::PROT_NONE) };
        Ok(ChildStack { base })
    }

    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping; stacks grow down from here.
        unsafe { self.base.cast::<u8>().add(STACK_SIZE + GUARD_SIZE).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no child runs on it any more.
        unsafe { libc::munmap(self.base, STACK_SIZE + GUARD_SIZE) };
    }
}

/// Spawns every later child without a pidfd (the reaper's SIGCHLD fallback, forced).
pub(crate) fn disable_pidfds() {
    PIDFD_SUPPORTED.store(false, Ordering::Relaxed);
}
