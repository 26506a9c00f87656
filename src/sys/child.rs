//! The spawn engine: a `clone(CLONE_VM | CLONE_VFORK)` child that runs a prepared
//! [`ChildProgram`] and execs.
//!
//! Why not `fork`: fork copies the parent's page tables, so its cost grows with the parent's
//! memory (hundreds of milliseconds for a 4 GiB parent). Why not `posix_spawn`: it cannot
//! close the gaps between sparse target fds, change credentials, or say *which* step failed.
//! A vfork-style clone costs the same as glibc's `posix_spawn` (which is built the same way)
//! and runs exactly the steps we planned.
//!
//! Why `CLONE_FILES`: copying the fd table costs time in proportion to the parent's highest
//! fd, so where it can the child shares the table and then keeps only the low fds it reads
//! (see [`spawn`] and `crate::fd_slots`).
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
    /// A cgroup v2 directory the parent opened: the child starts in it (`clone3` with
    /// `CLONE_INTO_CGROUP`), or else moves itself there first thing (see [`spawn`]).
    pub(crate) cgroup_dir: Option<c_int>,
    pub(crate) umask: Option<libc::mode_t>,
    pub(crate) rlimits: &'a [ResourceLimit],
    pub(crate) no_new_privs: bool,
    /// `Some(first)`: every fd the child reads (the fd plan's sources, the cgroup directory)
    /// is below `first`, so the child may share the parent's fd table at clone and copy only
    /// that part of it (see [`spawn`]). `None`: it copies the whole table.
    pub(crate) fds_below: Option<u32>,
}

/// One resource limit to set, in the layout `prlimit64` reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceLimit {
    pub(crate) resource: c_int,
    pub(crate) limit: KernelRlimit,
}

/// The kernel's `struct rlimit64`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelRlimit {
    pub(crate) soft: u64,
    pub(crate) hard: u64,
}

/// A step the child runs between clone and exec, as it reports a failure. The codes are what
/// crosses from the child to the parent; [`ChildStep::from_code`] is the only way back.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildStep {
    /// `setsid`.
    SetSid = 1,
    /// `setpgid`.
    SetProcessGroup = 2,
    /// `prctl(PR_SET_PDEATHSIG)`, or the parent already gone.
    ParentDeathSignal = 3,
    /// `close_range` over the unmapped fds.
    CloseFds = 4,
    /// `ioctl(TIOCSCTTY)`.
    ControllingTerminal = 5,
    /// `chdir`.
    Chdir = 6,
    /// `setgroups`.
    SetGroups = 7,
    /// `setgid`.
    SetGid = 8,
    /// `setuid`.
    SetUid = 9,
    /// `execve`, after the PATH lookup.
    Exec = 10,
    /// A `dup2`/`dup3` of the fd plan; the failure's `detail` is the destination fd.
    PlaceFd = 11,
    /// Writing `0` to the cgroup's `cgroup.procs`.
    JoinCgroup = 12,
    /// `prlimit64`; the failure's `detail` is the resource.
    SetResourceLimit = 13,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs = 14,
    /// `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`, the child's first step when it shares
    /// the parent's fd table. A refusal is retried without sharing, never reported.
    UnshareFds = 15,
}

impl ChildStep {
    /// The step a code written by [`ChildStep`]`as u32` stands for; `None` for anything else.
    pub(crate) fn from_code(code: u32) -> Option<ChildStep> {
        const ALL: [ChildStep; 15] = [
            ChildStep::SetSid,
            ChildStep::SetProcessGroup,
            ChildStep::ParentDeathSignal,
            ChildStep::CloseFds,
            ChildStep::ControllingTerminal,
            ChildStep::Chdir,
            ChildStep::SetGroups,
            ChildStep::SetGid,
            ChildStep::SetUid,
            ChildStep::Exec,
            ChildStep::PlaceFd,
            ChildStep::JoinCgroup,
            ChildStep::SetResourceLimit,
            ChildStep::NoNewPrivs,
            ChildStep::UnshareFds,
        ];
        ALL.into_iter().find(|step| *step as u32 == code)
    }
}

/// Why a spawn failed.
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    /// Before the child existed: its stack, or `clone` itself.
    Clone(io::Error),
    /// A step in the child; the child has been reaped.
    Child {
        step: ChildStep,
        /// The step's subject where it has one (the destination fd of
        /// [`ChildStep::PlaceFd`]), else 0.
        detail: i32,
        error: io::Error,
    },
}

/// A child that exists and has exec'd.
pub(crate) struct Spawned {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: Option<OwnedFd>,
}

/// Spawns the child and returns once it has exec'd, or with the step that failed (the failed
/// child already reaped).
///
/// Where the program allows ([`ChildProgram::fds_below`]) the child is cloned with
/// `CLONE_FILES` and unshares the table as its first step, keeping only the fds below
/// `first`: the kernel then never touches the parent's other fds, however many there are.
/// Until then the table is shared with the parent's other threads, so the child touches no fd
/// before it. A kernel that refuses the step (before 5.9, or a seccomp filter) makes the child
/// exit at once, having done nothing; the spawn is then made again with a copied table, and
/// every later one too.
pub(crate) fn spawn(program: &ChildProgram<'_>) -> Result<Spawned, SpawnFailure> {
    let share = program
        .fds_below
        .filter(|_| FD_TABLE_SHARING_SUPPORTED.load(Ordering::Relaxed));
    match spawn_sharing(program, share) {
        Err(SpawnFailure::Child {
            step: ChildStep::UnshareFds,
            ..
        }) if share.is_some() => {
            FD_TABLE_SHARING_SUPPORTED.store(false, Ordering::Relaxed);
            spawn_sharing(program, None)
        }
        other => other,
    }
}

/// Whether children may share the fd table at clone: true until a kernel refuses
/// `CLOSE_RANGE_UNSHARE`, or sharing is turned off.
static FD_TABLE_SHARING_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// Whether children still share the fd table at clone (see [`spawn`]).
pub(crate) fn fd_table_sharing_supported() -> bool {
    FD_TABLE_SHARING_SUPPORTED.load(Ordering::Relaxed)
}

/// Has every later child copy the whole fd table (the path for kernels that refuse
/// `CLOSE_RANGE_UNSHARE`, forced).
pub(crate) fn disable_fd_table_sharing() {
    FD_TABLE_SHARING_SUPPORTED.store(false, Ordering::Relaxed);
}

/// Lets children share the fd table again (after a test forced a refusal).
#[cfg(test)]
pub(crate) fn enable_fd_table_sharing() {
    FD_TABLE_SHARING_SUPPORTED.store(true, Ordering::Relaxed);
}

/// Extra `close_range` flags for the child's unshare step; tests set an undefined one so the
/// kernel refuses the step as an old kernel would.
#[cfg(test)]
pub(crate) static UNSHARE_EXTRA_FLAGS: AtomicU32 = AtomicU32::new(0);

/// One spawn, sharing the fd table below `share` if given.
fn spawn_sharing(program: &ChildProgram<'_>, share: Option<u32>) -> Result<Spawned, SpawnFailure> {
    let shared = Shared {
        program,
        share_fds_below: share,
        failure: Failure::default(),
        born_in_cgroup: AtomicBool::new(false),
    };
    // A thread-local destructor may spawn after this thread's stack slot is gone; `with`
    // would panic there, and a panic in a TLS destructor aborts the process.
    let reused = STACK.try_with(|slot| -> Result<Spawned, SpawnFailure> {
        let mut slot = slot.borrow_mut();
        let stack = match &mut *slot {
            Some(stack) => stack,
            empty => empty.insert(ChildStack::new().map_err(SpawnFailure::Clone)?),
        };
        spawn_on(&shared, stack)
    });
    match reused {
        Ok(result) => result,
        Err(_) => {
            // A one-off stack, unmapped when it drops at the end of this call.
            let stack = ChildStack::new().map_err(SpawnFailure::Clone)?;
            spawn_on(&shared, &stack)
        }
    }
}

/// Clones the child onto `stack` and collects its outcome.
fn spawn_on(shared: &Shared<'_>, stack: &ChildStack) -> Result<Spawned, SpawnFailure> {
    let (pid, pidfd) = clone_child(shared, stack).map_err(SpawnFailure::Clone)?;
    match shared.failure.get() {
        None => Ok(Spawned { pid, pidfd }),
        Some(recorded) => {
            // The child has called _exit: collect it so no zombie is left.
            let _ = super::wait::reap(pid, true);
            Err(match ChildStep::from_code(recorded.code) {
                Some(step) => SpawnFailure::Child {
                    step,
                    detail: recorded.detail,
                    error: io::Error::from_raw_os_error(recorded.errno),
                },
                // Only `fail` writes the code, and only from a `ChildStep`.
                None => SpawnFailure::Clone(io::Error::other(format!(
                    "the child reported an unknown step {}",
                    recorded.code
                ))),
            })
        }
    }
}

static PIDFD_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// Creates the child (inside its cgroup, where that works), with every signal blocked in
/// this thread meanwhile so that nothing runs on the child's stack before `child_main`.
fn clone_child(
    shared: &Shared<'_>,
    stack: &ChildStack,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: fills a set we own through a valid out-pointer.
    unsafe { libc::sigfillset(all.as_mut_ptr()) };
    // SAFETY: swaps in the full set as this thread's mask (initialised just above) and keeps
    // the old one in a valid out-pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr()) };
    let born_in_cgroup = match shared.program.cgroup_dir {
        Some(dir) if CLONE_INTO_CGROUP_SUPPORTED.load(Ordering::Relaxed) => {
            clone_into_cgroup(shared, stack, dir)
        }
        _ => None,
    };
    let result = match born_in_cgroup {
        Some(born) => Ok(born),
        None => clone_plain(shared, stack.top()),
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    result
}

/// `clone` onto `stack_top`, with a pidfd where the kernel and the fd limit allow. Called with
/// every signal blocked.
fn clone_plain(
    shared: &Shared<'_>,
    stack_top: *mut c_void,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let mut retried = false;
    loop {
        let with_pidfd = PIDFD_SUPPORTED.load(Ordering::Relaxed) && !retried;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if shared.share_fds_below.is_some() {
            flags |= libc::CLONE_FILES;
        }
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
            return Err(err);
        }
        // SAFETY: with CLONE_PIDFD the kernel stored a new fd that nothing else owns.
        let pidfd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        return Ok((pid, pidfd));
    }
}

/// `clone3` with `CLONE_INTO_CGROUP` works here, as far as we know (5.7 on, and not refused
/// by a seccomp filter).
static CLONE_INTO_CGROUP_SUPPORTED: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Creates the child directly inside the cgroup `dir` (`clone3` with `CLONE_INTO_CGROUP`), so
/// it never runs anywhere else and skips the costly move of a running process (a migration
/// takes a lock that waits for an RCU grace period). `None` when this did not work, for
/// whatever reason: the caller then clones as usual and the child moves itself, which
/// reports a failure at the step it happens in. A kernel without the call (before 5.7, or a
/// seccomp filter that says `ENOSYS`) is remembered and not asked again.
fn clone_into_cgroup(
    shared: &Shared<'_>,
    stack: &ChildStack,
    dir: c_int,
) -> Option<(libc::pid_t, Option<OwnedFd>)> {
    let with_pidfd = PIDFD_SUPPORTED.load(Ordering::Relaxed);
    let mut pidfd: c_int = -1;
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP;
    if shared.share_fds_below.is_some() {
        flags |= libc::CLONE_FILES as u64;
    }
    if with_pidfd {
        flags |= libc::CLONE_PIDFD as u64;
    }
    let args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.lowest() as u64,
        stack_size: STACK_SIZE as u64,
        cgroup: dir as u64,
        ..CloneArgs::default()
    };
    shared.born_in_cgroup.store(true, Ordering::Relaxed);
    let ret = raw_clone3(&args, shared);
    if ret < 0 {
        shared.born_in_cgroup.store(false, Ordering::Relaxed);
        let errno = ret.unsigned_abs() as c_int;
        if matches!(errno, libc::ENOSYS | libc::E2BIG | libc::EINVAL) {
            CLONE_INTO_CGROUP_SUPPORTED.store(false, Ordering::Relaxed);
        }
        return None;
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new fd that nothing else owns.
    let pidfd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Some((ret as libc::pid_t, pidfd))
}

/// `CLONE_INTO_CGROUP` (not in every libc).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A raw `clone3` whose child runs `child_main(shared)` on the stack given in `args`; returns
/// the child's pid or `-errno` in the parent, and never returns in the child.
///
/// glibc 2.36 has no wrapper for this: a raw `clone3` returns into the child on its new,
/// empty stack, in the middle of whatever function made the call, so the child's first
/// instructions after the syscall must switch to `child_main` without touching the stack
/// frame they are in. Hence the assembly.
#[cfg(target_arch = "x86_64")]
fn raw_clone3(args: &CloneArgs, shared: &Shared<'_>) -> libc::c_long {
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: libc::c_long;
    // SAFETY: `args` describes a stack of our own that no one else uses (the thread-local or
    // one-off child stack) and CLONE_VM | CLONE_VFORK, so this thread is suspended until the
    // child execs or exits and `shared` outlives the child's use of it, as with `clone`. In
    // the parent the syscall clobbers only rax (the result), rcx and r11. In the child
    // (rax 0) the kernel has set rsp to the top of the new, 16-byte aligned stack; the child
    // calls `child_main(shared)` there and, should it return, exits: it never comes back to
    // Rust code in this frame. All signals are blocked by the caller, so nothing runs on the
    // new stack before `child_main`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") shared as *const Shared<'_> as *mut c_void,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Other architectures have no assembly here: report `ENOSYS`, and the child moves itself.
#[cfg(not(target_arch = "x86_64"))]
fn raw_clone3(_args: &CloneArgs, _shared: &Shared<'_>) -> libc::c_long {
    -libc::c_long::from(libc::ENOSYS)
}

/// What the parent hands the child: the program and a slot for the failure.
struct Shared<'a> {
    program: &'a ChildProgram<'a>,
    /// Cloned with `CLONE_FILES`; the child keeps the fds below this.
    share_fds_below: Option<u32>,
    failure: Failure,
    /// The child was created inside `program.cgroup_dir` and need not move itself.
    born_in_cgroup: AtomicBool,
}

/// The step that failed in the child, its errno and its subject (see
/// [`SpawnFailure::Child`]), written by the child before `_exit`.
#[derive(Default)]
struct Failure {
    code: AtomicU32,
    errno: AtomicI32,
    detail: AtomicI32,
}

/// What [`Failure`] held once the child was gone.
struct Recorded {
    code: u32,
    errno: i32,
    detail: i32,
}

impl Failure {
    fn record(&self, step: ChildStep, detail: i32, errno: i32) {
        self.errno.store(errno, Ordering::Relaxed);
        self.detail.store(detail, Ordering::Relaxed);
        // Release: the parent that sees the code sees the errno and detail too.
        self.code.store(step as u32, Ordering::Release);
    }

    fn get(&self) -> Option<Recorded> {
        let code = self.code.load(Ordering::Acquire);
        (code != 0).then(|| Recorded {
            code,
            errno: self.errno.load(Ordering::Relaxed),
            detail: self.detail.load(Ordering::Relaxed),
        })
    }
}

/// The calling thread's errno slot. In the child that is the suspended parent thread's slot,
/// which nothing else touches until the child is gone.
fn errno_slot() -> *mut c_int {
    // SAFETY: `__errno_location` takes nothing, is async-signal-safe and cannot fail.
    unsafe { libc::__errno_location() }
}

fn errno() -> c_int {
    // SAFETY: the slot is this thread's own errno, valid for the thread's life.
    unsafe { *errno_slot() }
}

fn set_errno(value: c_int) {
    // SAFETY: as in `errno`; a plain store into this thread's slot.
    unsafe { *errno_slot() = value };
}

/// The child. Async-signal-safe only: raw syscalls through libc, no allocation, no panics
/// (no indexing, no arithmetic that can overflow).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` the parent passed to clone; it stays valid while the
    // parent is suspended (CLONE_VFORK).
    let shared = unsafe { &*(arg as *const Shared<'_>) };
    let fail = |step: ChildStep, detail: i32| -> c_int {
        shared.failure.record(step, detail, errno());
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };
    // First of all: until this returns the fd table is the parent's, which its other threads
    // keep using, so nothing may open, close or dup an fd before it.
    if let Some(first) = shared.share_fds_below
        && unshare_fds(first) == -1
    {
        return fail(ChildStep::UnshareFds, 0);
    }
    match run_child(
        shared.program,
        shared.born_in_cgroup.load(Ordering::Relaxed),
    ) {
        Err((step, detail)) => fail(step, detail),
        // `run_child` returns only when every exec failed.
        Ok(never) => match never {},
    }
}

/// The steps of the child, in order; returns the failed step and its detail. Never returns
/// `Ok`: success is an exec.
fn run_child(
    program: &ChildProgram<'_>,
    born_in_cgroup: bool,
) -> Result<std::convert::Infallible, (ChildStep, i32)> {
    // No parent handler may run here, and the new program starts with default dispositions
    // (including signals the parent ignores, SIGPIPE above all, unless the caller asked to keep
    // those) and an empty mask. A kept signal is set to SIG_IGN again rather than skipped: a
    // handler installed by another thread since the parent looked must not survive here. The
    // raw syscall, not glibc's sigaction: glibc refuses to touch its internal signals 32 and
    // 33 (EINVAL), so one the parent inherited as ignored would stay ignored in the new
    // program.
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
        // SAFETY: rt_sigaction with a valid action of the kernel's layout and no old-action
        // pointer; async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET_BYTES,
            )
        };
    }
    let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: fills a set on our own stack through a valid out-pointer.
    unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
    // SAFETY: installs the (initialised) empty mask; async-signal-safe.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) };

    // First, so that every later step and the program run inside the cgroup; before the fd
    // plan, which closes this fd.
    if let Some(dir) = program.cgroup_dir
        && !born_in_cgroup
    {
        // Writing `0` to `cgroup.procs` moves the writer.
        // SAFETY: openat with a directory fd the parent keeps open and a static C string.
        let procs = unsafe {
            libc::openat(
                dir,
                c"cgroup.procs".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        if procs == -1 {
            return Err((ChildStep::JoinCgroup, 0));
        }
        // SAFETY: writes one byte from a static buffer to the fd just opened.
        let written = unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) };
        let write_errno = errno();
        // SAFETY: closes the fd opened above, which nothing else knows of.
        unsafe { libc::close(procs) };
        if written != 1 {
            set_errno(write_errno);
            return Err((ChildStep::JoinCgroup, 0));
        }
    }

    match program.session {
        Session::Inherit => {}
        Session::New => {
            // SAFETY: setsid takes no arguments; async-signal-safe.
            if unsafe { libc::setsid() } == -1 {
                return Err((ChildStep::SetSid, 0));
            }
        }
        Session::Group(pgid) => {
            // SAFETY: setpgid with integers; async-signal-safe.
            if unsafe { libc::setpgid(0, pgid) } == -1 {
                return Err((ChildStep::SetProcessGroup, 0));
            }
        }
    }

    for step in program.fd_steps {
        match *step {
            FdStep::Dup { from, to, cloexec } => {
                let ret = if cloexec {
                    // SAFETY: dup3 with integers; async-signal-safe.
                    unsafe { libc::dup3(from, to, libc::O_CLOEXEC) }
                } else {
                    // SAFETY: dup2 with integers; async-signal-safe.
                    unsafe { libc::dup2(from, to) }
                };
                if ret == -1 {
                    return Err((ChildStep::PlaceFd, to));
                }
            }
            FdStep::CloseRange { first, last } => {
                if close_range(first, last) == -1 {
                    return Err((ChildStep::CloseFds, 0));
                }
            }
        }
    }

    if let Some(tty) = program.controlling_tty {
        // SAFETY: TIOCSCTTY takes an integer argument; async-signal-safe.
        if unsafe { libc::ioctl(tty, libc::TIOCSCTTY, 0) } == -1 {
            return Err((ChildStep::ControllingTerminal, 0));
        }
    }

    if let Some(cwd) = program.cwd {
        // SAFETY: chdir with a NUL-terminated string the parent keeps alive.
        if unsafe { libc::chdir(cwd.as_ptr()) } == -1 {
            return Err((ChildStep::Chdir, 0));
        }
    }

    if let Some(mask) = program.umask {
        // SAFETY: umask takes an integer and cannot fail.
        unsafe { libc::umask(mask) };
    }

    // Before the credential change, so a privileged parent can raise a hard limit for an
    // unprivileged child.
    for limit in program.rlimits {
        // SAFETY: prlimit64 on ourselves (pid 0) reading a struct of the kernel's layout the
        // parent keeps alive; no old-limit pointer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                limit.resource,
                &limit.limit as *const KernelRlimit,
                std::ptr::null_mut::<KernelRlimit>(),
            )
        };
        if ret == -1 {
            return Err((ChildStep::SetResourceLimit, limit.resource));
        }
    }

    // Raw syscalls: glibc's wrappers would broadcast the change to the parent's threads,
    // which share our memory.
    let creds = program.credentials;
    match creds.groups {
        Groups::Inherit => {}
        Groups::ClearIfPermitted => {
            // SAFETY: setgroups with an empty list; the pointer is never read.
            let ret =
                unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) };
            if ret == -1 && errno() != libc::EPERM {
                return Err((ChildStep::SetGroups, 0));
            }
        }
        Groups::Set(list) => {
            // SAFETY: setgroups reads `list.len()` ids from a slice the parent keeps alive.
            if unsafe { libc::syscall(libc::SYS_setgroups, list.len(), list.as_ptr()) } == -1 {
                return Err((ChildStep::SetGroups, 0));
            }
        }
    }
    if let Some(gid) = creds.gid {
        // SAFETY: setgid with an integer, as a raw syscall (see above).
        if unsafe { libc::syscall(libc::SYS_setgid, gid) } == -1 {
            return Err((ChildStep::SetGid, 0));
        }
    }
    if let Some(uid) = creds.uid {
        // SAFETY: setuid with an integer, as a raw syscall (see above).
        if unsafe { libc::syscall(libc::SYS_setuid, uid) } == -1 {
            return Err((ChildStep::SetUid, 0));
        }
    }

    // After the credential change: the kernel clears the parent-death signal when the
    // effective uid or gid changes.
    if program.parent_death_signal != 0 {
        let sig = program.parent_death_signal as libc::c_ulong;
        // SAFETY: prctl with integer arguments; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig) } == -1 {
            return Err((ChildStep::ParentDeathSignal, 0));
        }
        // The parent may have died before the prctl took effect.
        // SAFETY: getppid takes no arguments and cannot fail.
        if unsafe { libc::getppid() } != program.parent_pid {
            set_errno(libc::ESRCH);
            return Err((ChildStep::ParentDeathSignal, 0));
        }
    }

    if program.no_new_privs {
        // SAFETY: prctl with integer arguments; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            return Err((ChildStep::NoNewPrivs, 0));
        }
    }

    // The PATH lookup, execvp-style: ENOENT-like misses go on to the next candidate, an
    // EACCES is remembered and reported if nothing else works.
    let mut saw_eacces = false;
    for &path in program.exec_paths {
        // SAFETY: NUL-terminated path and NULL-terminated argv/envp arrays the parent keeps
        // alive; returns only on failure.
        unsafe { libc::execve(path, program.argv.as_ptr(), program.envp.as_ptr()) };
        match errno() {
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENAMETOOLONG => {}
            libc::EACCES => saw_eacces = true,
            _ => return Err((ChildStep::Exec, 0)),
        }
    }
    if saw_eacces {
        set_errno(libc::EACCES);
    }
    Err((ChildStep::Exec, 0))
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

/// Gives the child a table of its own holding only the fds below `first`:
/// `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`. Async-signal-safe.
fn unshare_fds(first: u32) -> c_int {
    #[cfg(test)]
    let flags = libc::CLOSE_RANGE_UNSHARE | UNSHARE_EXTRA_FLAGS.load(Ordering::Relaxed);
    #[cfg(not(test))]
    let flags = libc::CLOSE_RANGE_UNSHARE;
    // SAFETY: close_range with integer arguments; with CLOSE_RANGE_UNSHARE it closes only
    // in the child's new copy of the table, never in the parent's.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) as c_int }
}

/// `close_range(first, last)`, or a loop of `close` up to the fd limit on kernels before 5.9.
///
/// Async-signal-safe. Called in the child only, once its fd table is its own copy (never
/// shared, or unshared first), so closing never pulls an fd from under the parent's owners.
fn close_range(first: u32, last: u32) -> c_int {
    // SAFETY: close_range with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if ret == 0 || errno() != libc::ENOSYS {
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

    /// The lowest usable byte, just above the guard page.
    fn lowest(&self) -> *mut c_void {
        // SAFETY: inside our own mapping (the guard page is its first page).
        unsafe { self.base.cast::<u8>().add(GUARD_SIZE).cast() }
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

/// Has every later child move itself into its cgroup instead of being created there (the
/// path for kernels without `CLONE_INTO_CGROUP`, forced).
pub(crate) fn disable_clone_into_cgroup() {
    CLONE_INTO_CGROUP_SUPPORTED.store(false, Ordering::Relaxed);
}

/// Spawns every later child without a pidfd (the reaper's SIGCHLD fallback, forced).
pub(crate) fn disable_pidfds() {
    PIDFD_SUPPORTED.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_code_converts_back_and_nothing_else_does() {
        let mut seen = 0;
        for code in 0..=64u32 {
            if let Some(step) = ChildStep::from_code(code) {
                assert_eq!(step as u32, code);
                seen += 1;
            }
        }
        assert_eq!(seen, 15, "one code per step");
        assert_eq!(ChildStep::from_code(0), None, "0 means no failure");
        assert_eq!(ChildStep::from_code(1000 + 3), None, "no fd-carrying codes");
    }

    #[test]
    fn clone_args_have_the_kernels_size_with_the_cgroup_field() {
        // CLONE_ARGS_SIZE_VER2: the first size that has `cgroup`.
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
        assert_eq!(std::mem::offset_of!(CloneArgs, cgroup), 80);
    }

    #[test]
    fn failure_record_carries_the_fd_apart_from_the_step() {
        let failure = Failure::default();
        assert!(failure.get().is_none());
        failure.record(ChildStep::PlaceFd, i32::MAX, libc::EBADF);
        let got = failure.get().unwrap();
        assert_eq!(ChildStep::from_code(got.code), Some(ChildStep::PlaceFd));
        assert_eq!((got.detail, got.errno), (i32::MAX, libc::EBADF));
    }
}
