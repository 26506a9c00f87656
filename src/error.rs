//! The crate's two errors: [`SpawnError`], what spawning a child can fail with, and [`Error`],
//! what operations on a running transport can fail with.
//!
//! Neither converts into the other. Both convert into [`io::Error`], and both are
//! `Send + Sync + 'static`, so a function that spawns and then waits can return `io::Error`,
//! `Box<dyn std::error::Error + Send + Sync>` or an `anyhow::Error` and use `?` on both.
//!
//! Display and [`source`](std::error::Error::source) never say the same thing twice, so a
//! reporter that prints the whole chain (anyhow's `{:#}`, `tracing`'s error fields) shows each
//! OS error once.

use std::ffi::OsString;
use std::fmt;
use std::io;

/// Why [`spawn_process`](crate::spawn_process) (or [`Command::spawn`](crate::Command::spawn))
/// failed. Whichever it is, nothing is left behind: no fd stays open and no child is left
/// unreaped.
///
/// [`Spawn`](SpawnError::Spawn) displays the program and the step and returns the OS error as
/// its [`source`](std::error::Error::source); the other variants have no source.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// The [`Command`](crate::Command) cannot be spawned as described. Nothing was spawned.
    InvalidInput(InvalidInput),
    /// A step of spawning failed, in the parent or in the child before exec.
    Spawn {
        /// The program that was being spawned, as given to [`Command::new`](crate::Command::new).
        program: OsString,
        /// The step that failed.
        step: SpawnStep,
        /// The OS error of that step, returned by [`source`](std::error::Error::source) and
        /// not repeated in the `Display` text.
        source: io::Error,
    },
    /// Spawning was attempted outside a Tokio runtime, or in one built without I/O.
    ///
    /// Tokio tells the second case only by panicking when the first pipe is registered: the
    /// panic is caught and becomes this error, but the panic hook has printed it by then,
    /// and under `panic = "abort"` the process aborts. Build the runtime with
    /// `enable_io` (or `enable_all`).
    NoRuntime,
}

/// Why an operation on a running [`ProcessTransport`](crate::ProcessTransport) failed.
///
/// [`Io`](Error::Io) is transparent: it displays the OS error and has no source of its own.
/// The other variants have no source.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The child has already been reaped, so it cannot be signalled.
    AlreadyExited,
    /// No pipe is mapped at this child fd (it is inherited, `/dev/null`, or unmapped).
    NoSuchPipe(i32),
    /// The pipe at this child fd is one the parent reads; it cannot be written.
    NotWritable(i32),
    /// The pipe at this child fd is one the parent writes; it cannot be read.
    NotReadable(i32),
    /// The pipe at this child fd is already closed.
    PipeClosed(i32),
    /// The pipe at this child fd was taken out with `take_reader`/`take_writer` (or
    /// `take_duplex`).
    PipeTaken(i32),
    /// The fd is a [`ChildFd::Duplex`](crate::ChildFd::Duplex) socket, which is taken out
    /// whole with [`take_duplex`](crate::ProcessTransport::take_duplex), not as one direction.
    Duplex(i32),
    /// The write would take the writer's queue past its
    /// [limit](crate::Command::write_buffer_limit); nothing was queued.
    WriteBufferFull(i32),
    /// The child was not spawned in a process group of its own, so there is no group to signal.
    NoProcessGroup,
    /// Waiting for the child failed.
    Wait(WaitError),
    /// Any other OS error (e.g. from `kill`, or `EPIPE` from a write). Displayed as the OS
    /// error itself, which is therefore not also returned by
    /// [`source`](std::error::Error::source).
    Io(io::Error),
}

/// Input that is rejected before anything is spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The program is an empty string.
    EmptyProgram,
    /// A NUL byte in the program, an argument, argv\[0\], an env key or value, or the cwd.
    NulByte {
        /// Where the NUL byte is.
        field: Field,
    },
    /// An environment variable name that is empty or contains `=`.
    BadEnvKey {
        /// The offending key, lossily decoded.
        key: String,
    },
    /// A child fd below zero.
    NegativeChildFd(i32),
    /// A child fd listed twice in [`Command::fds`](crate::Command::fds).
    DuplicateChildFd(i32),
    /// An fd number too large to plan around.
    ChildFdOutOfRange(i32),
    /// A parent fd to be inherited that is not open.
    InheritedFdNotOpen {
        /// The child fd it was mapped to.
        child_fd: i32,
        /// The parent fd.
        parent_fd: i32,
    },
    /// A pipe capacity was requested for a child fd that is not a pipe.
    PipeCapacityWithoutPipe(i32),
}

/// Which input field held a NUL byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The program.
    Program,
    /// argv\[0\].
    Arg0,
    /// The argument at this index (0 is the first after argv\[0\]).
    Arg(usize),
    /// An environment variable name.
    EnvKey,
    /// An environment variable value.
    EnvValue,
    /// The working directory.
    CurrentDir,
}

/// The step of spawning that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnStep {
    /// Creating a pipe in the parent.
    CreatePipe,
    /// Opening `/dev/null` in the parent.
    OpenDevNull,
    /// Opening the pseudo-terminal in the parent.
    OpenPty,
    /// Setting a pipe's capacity (`F_SETPIPE_SZ`) for this child fd.
    SetPipeCapacity(i32),
    /// Registering the parent's end of the pipe at this child fd with the Tokio reactor.
    RegisterPipe(i32),
    /// Starting the background reaper.
    StartReaper,
    /// Creating the child (`clone`).
    Clone,
    /// Placing an fd in the child (`dup2`); the destination fd.
    PlaceFd(i32),
    /// Closing unmapped fds in the child.
    CloseFds,
    /// `setsid` in the child.
    SetSid,
    /// `setpgid` in the child.
    SetProcessGroup,
    /// `prctl(PR_SET_PDEATHSIG)` in the child.
    ParentDeathSignal,
    /// Making the terminal the child's controlling terminal.
    ControllingTerminal,
    /// Changing to the working directory in the child.
    Chdir,
    /// `setgroups` in the child: setting the list of
    /// [`Command::groups`](crate::Command::groups), or clearing the groups on a uid or gid
    /// change (where only an error other than `EPERM` fails the spawn).
    SetGroups,
    /// `setgid` in the child.
    SetGid,
    /// `setuid` in the child.
    SetUid,
    /// Executing the program (after PATH lookup).
    Exec,
    /// Setting this resource limit (`prlimit`, a `libc::RLIMIT_*` number) in the child.
    SetResourceLimit(i32),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` in the child.
    NoNewPrivs,
    /// Preparing the child's cgroup in the parent: finding or making the directory (not on a
    /// cgroup v2 mount, not writable, ...) and opening its files.
    PrepareCgroup,
    /// The child moving itself into its cgroup (writing to `cgroup.procs`).
    JoinCgroup,
}

/// Why no exit status could be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// Something else in this process reaped the child (`ECHILD`): another `waitpid(-1)`,
    /// or `SIGCHLD` set to `SIG_IGN`. The status is lost.
    ReapedElsewhere,
    /// `wait4` failed with this errno.
    Os(i32),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::InvalidInput(e) => write!(f, "invalid command: {e}"),
            // The OS error is the source; printing it here too would show it twice in a chain.
            SpawnError::Spawn { program, step, .. } => {
                write!(f, "spawning {} failed at {step}", program.to_string_lossy())
            }
            SpawnError::NoRuntime => f.write_str(
                "spawning needs a Tokio runtime with I/O enabled (enable_io or enable_all)",
            ),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Spawn { source, .. } => Some(source),
            SpawnError::InvalidInput(_) | SpawnError::NoRuntime => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyExited => f.write_str("the child has already exited and been reaped"),
            Error::NoSuchPipe(fd) => write!(f, "child fd {fd} is not a pipe of this transport"),
            Error::NotWritable(fd) => write!(f, "child fd {fd} is read by the parent, not written"),
            Error::NotReadable(fd) => write!(f, "child fd {fd} is written by the parent, not read"),
            Error::PipeClosed(fd) => write!(f, "the pipe at child fd {fd} is closed"),
            Error::PipeTaken(fd) => write!(f, "the pipe at child fd {fd} was taken out"),
            Error::Duplex(fd) => write!(f, "child fd {fd} is a socket, taken out only whole"),
            Error::WriteBufferFull(fd) => {
                write!(f, "the write buffer of child fd {fd} is at its limit")
            }
            Error::NoProcessGroup => {
                f.write_str("the child was not spawned in a process group of its own")
            }
            Error::Wait(e) => write!(f, "waiting for the child failed: {e}"),
            Error::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the Display text already is this error, so only what lies below it
            // is the source.
            Error::Io(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidInput::EmptyProgram => f.write_str("the program is empty"),
            InvalidInput::NulByte { field } => write!(f, "{field:?} contains a NUL byte"),
            InvalidInput::BadEnvKey { key } => {
                write!(f, "environment key {key:?} is empty or contains '='")
            }
            InvalidInput::NegativeChildFd(fd) => write!(f, "child fd {fd} is negative"),
            InvalidInput::DuplicateChildFd(fd) => write!(f, "child fd {fd} is mapped twice"),
            InvalidInput::ChildFdOutOfRange(fd) => write!(f, "fd {fd} is out of range"),
            InvalidInput::InheritedFdNotOpen {
                child_fd,
                parent_fd,
            } => write!(
                f,
                "parent fd {parent_fd} (for child fd {child_fd}) is not open"
            ),
            InvalidInput::PipeCapacityWithoutPipe(fd) => {
                write!(
                    f,
                    "a pipe capacity was set for child fd {fd}, which is not a pipe"
                )
            }
        }
    }
}

impl fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnStep::CreatePipe => f.write_str("pipe creation"),
            SpawnStep::OpenDevNull => f.write_str("opening /dev/null"),
            SpawnStep::OpenPty => f.write_str("opening a pseudo-terminal"),
            SpawnStep::SetPipeCapacity(fd) => {
                write!(f, "setting the pipe capacity of child fd {fd}")
            }
            SpawnStep::RegisterPipe(fd) => {
                write!(f, "registering the pipe of child fd {fd} with the runtime")
            }
            SpawnStep::StartReaper => f.write_str("starting the reaper"),
            SpawnStep::Clone => f.write_str("clone"),
            SpawnStep::PlaceFd(fd) => write!(f, "placing child fd {fd}"),
            SpawnStep::CloseFds => f.write_str("closing unmapped fds"),
            SpawnStep::SetSid => f.write_str("setsid"),
            SpawnStep::SetProcessGroup => f.write_str("setpgid"),
            SpawnStep::ParentDeathSignal => f.write_str("setting the parent-death signal"),
            SpawnStep::ControllingTerminal => f.write_str("acquiring the controlling terminal"),
            SpawnStep::Chdir => f.write_str("chdir"),
            SpawnStep::SetGroups => f.write_str("setgroups"),
            SpawnStep::SetGid => f.write_str("setgid"),
            SpawnStep::SetUid => f.write_str("setuid"),
            SpawnStep::Exec => f.write_str("exec"),
            SpawnStep::SetResourceLimit(resource) => {
                write!(f, "setting resource limit {resource}")
            }
            SpawnStep::NoNewPrivs => f.write_str("setting no_new_privs"),
            SpawnStep::PrepareCgroup => f.write_str("preparing the cgroup"),
            SpawnStep::JoinCgroup => f.write_str("joining the cgroup"),
        }
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::ReapedElsewhere => {
                f.write_str("the child was reaped by someone else in this process (ECHILD)")
            }
            WaitError::Os(errno) => io::Error::from_raw_os_error(*errno).fmt(f),
        }
    }
}

impl std::error::Error for WaitError {}

/// What [`Command::output`](crate::Command::output) and
/// [`Command::status`](crate::Command::status), which spawn the child and then run it to its
/// end, fail with: the error of whichever step failed, as it is. Transparent: it displays as
/// the inner error and has the inner error's source.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// Spawning failed; nothing was left behind.
    Spawn(SpawnError),
    /// The child was spawned; collecting its output or status failed.
    Run(Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spawn(e) => e.fmt(f),
            RunError::Run(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Spawn(e) => e.source(),
            RunError::Run(e) => e.source(),
        }
    }
}

impl From<SpawnError> for RunError {
    fn from(e: SpawnError) -> Self {
        RunError::Spawn(e)
    }
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Run(e)
    }
}

impl From<RunError> for io::Error {
    /// As the inner error converts.
    fn from(e: RunError) -> Self {
        match e {
            RunError::Spawn(e) => e.into(),
            RunError::Run(e) => e.into(),
        }
    }
}

impl From<InvalidInput> for SpawnError {
    fn from(e: InvalidInput) -> Self {
        SpawnError::InvalidInput(e)
    }
}

impl From<WaitError> for Error {
    fn from(e: WaitError) -> Self {
        Error::Wait(e)
    }
}

impl From<SpawnError> for io::Error {
    /// A failed step becomes its OS error itself, so `raw_os_error` still answers (the program
    /// and the step are dropped: keep the [`SpawnError`] to report them); bad input becomes an
    /// error of kind [`InvalidInput`](io::ErrorKind::InvalidInput), anything else of kind
    /// [`Other`](io::ErrorKind::Other), each wrapping the `SpawnError`.
    fn from(e: SpawnError) -> Self {
        match e {
            SpawnError::Spawn { source, .. } => source,
            SpawnError::InvalidInput(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            SpawnError::NoRuntime => io::Error::other(e),
        }
    }
}

impl From<Error> for io::Error {
    /// [`Error::Io`] becomes the OS error itself; anything else an error of kind
    /// [`Other`](io::ErrorKind::Other) wrapping the `Error`.
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}
