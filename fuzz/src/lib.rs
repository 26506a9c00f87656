//! The checks behind the fuzz targets, in a library so that they can run under libFuzzer
//! (`cargo fuzz run <target>`) or under any other driver that hands them bytes.
//!
//! Both checks panic, and so report a finding, when the library under test panics, gives
//! an answer the oracle here disagrees with, or leaks an fd.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use process_transport::fuzz::{FdStep, SimFd, plan, simulate};
use process_transport::{ChildFd, Command, InvalidInput, SpawnError, SpawnStep};

/// An fd number, biased towards numbers that collide with each other.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FdNum {
    /// 0..16: dense, so cycles, swaps and fan-out are common.
    Small(u8),
    /// 1020..1040: around the old `select` limit.
    High(u8),
    /// Anything at all, negative and huge included.
    Raw(i32),
}

impl FdNum {
    pub fn get(self) -> i32 {
        match self {
            FdNum::Small(n) => i32::from(n % 16),
            FdNum::High(n) => 1020 + i32::from(n % 20),
            FdNum::Raw(n) => n,
        }
    }
}

/// Input of the `fd_plan` target.
#[derive(Arbitrary, Debug)]
pub struct PlanInput {
    /// (child fd, parent fd) pairs, in the order given to `plan`.
    pub mappings: Vec<(FdNum, FdNum)>,
    /// Whether each source is close-on-exec in the parent (cycled over the sources).
    pub source_cloexec: Vec<bool>,
    /// Other fds open in the parent, and whether each is close-on-exec.
    pub other_open: Vec<(FdNum, bool)>,
}

/// `plan` then `simulate` must give exactly the requested map, or the typed error the map
/// deserves; scratch fds must stay low so that they fit under any fd limit that fits the map.
pub fn check_plan(input: &PlanInput) {
    let mappings: Vec<(i32, i32)> = input
        .mappings
        .iter()
        .map(|&(t, s)| (t.get(), s.get()))
        .collect();
    let expected_error = {
        let mut seen = BTreeSet::new();
        mappings.iter().find_map(|&(t, s)| {
            if t < 0 {
                Some(InvalidInput::NegativeChildFd(t))
            } else if s < 0 {
                Some(InvalidInput::InheritedFdNotOpen {
                    child_fd: t,
                    parent_fd: s,
                })
            } else if !seen.insert(t) {
                Some(InvalidInput::DuplicateChildFd(t))
            } else {
                None
            }
        })
    };
    let steps = match (plan(&mappings), expected_error) {
        (Err(got), Some(want)) => {
            assert_eq!(got, want, "wrong error for {mappings:?}");
            return;
        }
        (Err(InvalidInput::ChildFdOutOfRange(fd)), None) => {
            // Only acceptable when some fd in play is too large to be opened by any process.
            assert!(
                fd >= 1 << 30,
                "ChildFdOutOfRange({fd}) for a plannable map {mappings:?}"
            );
            return;
        }
        (Err(got), None) => panic!("unexpected {got:?} for {mappings:?}"),
        (Ok(steps), Some(want)) => panic!("expected {want:?}, got a plan {steps:?}"),
        (Ok(steps), None) => steps,
    };

    // The parent's table: every source open (identity = its number), plus other fds.
    let mut open: BTreeMap<i32, SimFd> = BTreeMap::new();
    for &(fd, cloexec) in &input.other_open {
        let fd = fd.get();
        if fd >= 0 {
            open.insert(
                fd,
                SimFd {
                    file: fd as u64,
                    cloexec,
                },
            );
        }
    }
    for (i, &(_, source)) in mappings.iter().enumerate() {
        let cloexec = if input.source_cloexec.is_empty() {
            true
        } else {
            input.source_cloexec[i % input.source_cloexec.len()]
        };
        open.insert(
            source,
            SimFd {
                file: source as u64,
                cloexec,
            },
        );
    }
    let got = simulate(&open, &steps)
        .unwrap_or_else(|| panic!("plan for {mappings:?} reads a closed fd: {steps:?}"));
    let want: BTreeMap<i32, u64> = mappings.iter().map(|&(t, s)| (t, s as u64)).collect();
    assert_eq!(got, want, "map {mappings:?} planned as {steps:?}");

    // Scratch copies must be numbered low: a map whose own fds fit under RLIMIT_NOFILE must
    // not fail because a scratch copy was numbered above it.
    let in_play: BTreeSet<i32> = mappings.iter().flat_map(|&(t, s)| [t, s]).collect();
    for step in &steps {
        if let FdStep::Dup {
            to, cloexec: true, ..
        } = *step
        {
            assert!(
                to >= 0 && (to as usize) < 2 * in_play.len() + 1,
                "scratch fd {to} for {mappings:?} is not among the lowest free numbers"
            );
            assert!(!in_play.contains(&to), "scratch fd {to} is in play");
        }
    }
}

/// What a fuzzed child fd is.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FdKind {
    ParentReads,
    ParentWrites,
    Null,
    Inherit(FdNum),
}

impl FdKind {
    fn child_fd(self) -> ChildFd {
        match self {
            FdKind::ParentReads => ChildFd::ParentReads,
            FdKind::ParentWrites => ChildFd::ParentWrites,
            FdKind::Null => ChildFd::Null,
            FdKind::Inherit(fd) => ChildFd::Inherit(fd.get()),
        }
    }
}

/// One change to the environment, applied in order.
#[derive(Arbitrary, Debug)]
pub enum EnvOp {
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Clear,
}

/// A pipe capacity request.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Capacity {
    /// Up to 1 MiB.
    Small(u16),
    /// Beyond what `F_SETPIPE_SZ` takes.
    Huge(u32),
}

/// Input of the `command_input` target.
#[derive(Arbitrary, Debug)]
pub struct CommandInput {
    /// `None`: the empty program. Otherwise a name under a directory that does not exist
    /// (any `/` replaced), so that nothing is ever run.
    pub program: Option<Vec<u8>>,
    pub arg0: Option<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<EnvOp>,
    pub cwd: Option<Vec<u8>>,
    /// `Some`: replace the whole map with [`Command::fds`].
    pub fd_map: Option<Vec<(FdNum, FdKind)>>,
    /// Then these, one [`Command::fd`] each.
    pub fd_calls: Vec<(FdNum, FdKind)>,
    pub pipe_capacity: Vec<(FdNum, Capacity)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub new_session: bool,
    pub process_group: Option<i32>,
    pub parent_death_signal: Option<i8>,
}

/// Which rule an input breaks; the oracle for `InvalidInput`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Violation {
    EmptyProgram,
    Nul,
    BadEnvKey,
    NegativeChildFd,
    DuplicateChildFd,
    InheritedFdNotOpen,
    PipeCapacityWithoutPipe,
}

fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads flags; an unopened fd gives EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Start the reaper (its fds live for the whole process) before counting fds.
        let _guard = rt.enter();
        let _ = Command::new("/nonexistent-process-transport-fuzz/warm-up").spawn();
        rt
    })
}

/// Builds a [`Command`] from arbitrary input and spawns it. The program never exists, so a
/// valid command must end in `SpawnError::Spawn` (usually at exec) and an invalid one in the
/// `InvalidInput` the oracle expects. Never a panic, never a leaked fd.
pub fn check_command(input: &CommandInput) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut violations = BTreeSet::new();

    let program: OsString = match &input.program {
        None => {
            violations.insert(Violation::EmptyProgram);
            OsString::new()
        }
        Some(name) => {
            let mut bytes = b"/nonexistent-process-transport-fuzz/".to_vec();
            bytes.extend(name.iter().map(|&b| if b == b'/' { b'_' } else { b }));
            if bytes.contains(&0) {
                violations.insert(Violation::Nul);
            }
            OsString::from_vec(bytes)
        }
    };
    let mut cmd = Command::new(&program);
    if let Some(arg0) = &input.arg0 {
        if arg0.contains(&0) {
            violations.insert(Violation::Nul);
        }
        cmd.arg0(OsString::from_vec(arg0.clone()));
    }
    for arg in &input.args {
        if arg.contains(&0) {
            violations.insert(Violation::Nul);
        }
        cmd.arg(OsString::from_vec(arg.clone()));
    }
    let mut env: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for op in &input.env {
        match op {
            EnvOp::Set(k, v) => {
                env.insert(k.clone(), Some(v.clone()));
                cmd.env(OsString::from_vec(k.clone()), OsString::from_vec(v.clone()));
            }
            EnvOp::Remove(k) => {
                env.insert(k.clone(), None);
                cmd.env_remove(OsString::from_vec(k.clone()));
            }
            EnvOp::Clear => {
                env.clear();
                cmd.env_clear();
            }
        }
    }
    for (k, v) in &env {
        if k.is_empty() || k.contains(&b'=') {
            violations.insert(Violation::BadEnvKey);
        } else if k.contains(&0) || v.as_ref().is_some_and(|v| v.contains(&0)) {
            violations.insert(Violation::Nul);
        }
    }
    if let Some(cwd) = &input.cwd {
        if cwd.contains(&0) {
            violations.insert(Violation::Nul);
        }
        cmd.current_dir(OsString::from_vec(cwd.clone()));
    }

    let mut map: BTreeMap<i32, FdKind> = BTreeMap::from([
        (0, FdKind::ParentWrites),
        (1, FdKind::ParentReads),
        (2, FdKind::ParentReads),
    ]);
    if let Some(pairs) = &input.fd_map {
        map.clear();
        let pairs: Vec<(i32, ChildFd)> = pairs
            .iter()
            .map(|&(fd, kind)| {
                let fd = fd.get();
                if fd < 0 {
                    violations.insert(Violation::NegativeChildFd);
                } else if map.insert(fd, kind).is_some() {
                    violations.insert(Violation::DuplicateChildFd);
                }
                (fd, kind.child_fd())
            })
            .collect();
        cmd.fds(pairs);
    }
    for &(fd, kind) in &input.fd_calls {
        let fd = fd.get();
        if fd < 0 {
            violations.insert(Violation::NegativeChildFd);
        } else {
            map.insert(fd, kind);
        }
        cmd.fd(fd, kind.child_fd());
    }
    for (&child_fd, &kind) in &map {
        if let FdKind::Inherit(parent) = kind
            && !is_open(parent.get())
        {
            let _ = child_fd;
            violations.insert(Violation::InheritedFdNotOpen);
        }
    }
    for &(fd, capacity) in &input.pipe_capacity {
        let fd = fd.get();
        if !matches!(
            map.get(&fd),
            Some(FdKind::ParentReads | FdKind::ParentWrites)
        ) {
            violations.insert(Violation::PipeCapacityWithoutPipe);
        }
        cmd.pipe_capacity(
            fd,
            match capacity {
                Capacity::Small(n) => usize::from(n) * 16,
                Capacity::Huge(n) => usize::MAX - n as usize,
            },
        );
    }
    if let Some(uid) = input.uid {
        cmd.uid(uid);
    }
    if let Some(gid) = input.gid {
        cmd.gid(gid);
    }
    if input.new_session {
        cmd.new_session();
    }
    if let Some(pgid) = input.process_group {
        cmd.process_group(pgid);
    }
    if let Some(sig) = input.parent_death_signal {
        cmd.parent_death_signal(i32::from(sig));
    }

    let before = open_fd_count();
    let result = cmd.spawn();
    let outcome = match result {
        Ok(transport) => panic!("spawned a program that does not exist: {transport:?}"),
        Err(e) => e,
    };
    let after = open_fd_count();
    assert_eq!(before, after, "fd leak after {outcome:?}");

    match outcome {
        SpawnError::InvalidInput(e) => {
            let kind = match e {
                InvalidInput::EmptyProgram => Violation::EmptyProgram,
                InvalidInput::NulByte { .. } => Violation::Nul,
                InvalidInput::BadEnvKey { .. } => Violation::BadEnvKey,
                InvalidInput::NegativeChildFd(_) => Violation::NegativeChildFd,
                InvalidInput::DuplicateChildFd(_) => Violation::DuplicateChildFd,
                InvalidInput::InheritedFdNotOpen { .. } => Violation::InheritedFdNotOpen,
                InvalidInput::PipeCapacityWithoutPipe(_) => Violation::PipeCapacityWithoutPipe,
                InvalidInput::ChildFdOutOfRange(fd) => {
                    assert!(
                        violations.is_empty() && fd >= 1 << 20,
                        "ChildFdOutOfRange({fd}) with violations {violations:?}"
                    );
                    return;
                }
                other => panic!("unknown InvalidInput {other:?}"),
            };
            assert!(
                violations.contains(&kind),
                "got {e:?}, but the input breaks only {violations:?}"
            );
        }
        SpawnError::Spawn {
            program: failed,
            step,
            source,
        } => {
            assert!(
                violations.is_empty(),
                "spawn went ahead ({step:?}: {source}) despite {violations:?}"
            );
            assert_eq!(failed, program, "the error names another program");
            // Which step fails depends on the input (a huge child fd, a bad cwd, a refused
            // uid...), but every failure must carry an OS error.
            assert!(source.raw_os_error().is_some(), "{step:?} without errno");
            if step == SpawnStep::Exec {
                assert!(
                    matches!(
                        source.raw_os_error(),
                        Some(libc::ENOENT | libc::ENAMETOOLONG | libc::EACCES | libc::E2BIG)
                    ),
                    "exec of a missing program failed with {source}"
                );
            }
        }
        other => panic!("unexpected error {other:?}"),
    }
}
