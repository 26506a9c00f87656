//! `spawn_process`: validate, prepare everything the child needs, clone, and wrap the parent
//! ends. All allocation happens here, before the clone.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;

use tokio::io::Interest;

use crate::command::{ChildFd, Command, SessionOption};
use crate::error::{Field, InvalidInput, SpawnError, SpawnStep};
use crate::fd_plan;
use crate::fd_slots;
use crate::pipe::{Capacity, DEFAULT_PIPE_CAPACITY, Direction, Pipe, PipeSet, WriteLimits};
use crate::reaper::{Reaper, Zombie};
use crate::sys;
use crate::sys::child::{
    ChildProgram, ChildStep, Credentials, Groups, KernelRlimit, ResourceLimit, Session,
    SpawnFailure,
};
use crate::transport::{ProcessTransport, Settings};

/// Spawns the child described by `command` and returns its transport once the child has
/// exec'd.
///
/// Must be called inside a Tokio runtime with I/O enabled. Bad input is rejected before
/// anything is spawned ([`SpawnError::InvalidInput`]); a failed step (a missing program, a
/// bad working directory, a failed `setuid`, ...) is returned as [`SpawnError::Spawn`] naming
/// the step and the OS error, with every fd closed and the failed child reaped. No user code
/// runs inside this function.
///
/// The [`timeout`](Command::timeout) of `command` bounds [`Command::output`] and
/// [`Command::status`] only: a spawned transport runs until its child exits or is signalled.
/// The first spawn in a process also reserves 33 low fd numbers (open on `/dev/null`)
/// that every spawn uses to hand the child its fds; they stay for the life of the process
/// (see the README's "How it works").
pub fn spawn_process(command: &Command) -> Result<ProcessTransport, SpawnError> {
    let span = tracing::debug_span!("spawn", program = ?command.program);
    let _entered = span.enter();
    spawn(command).map_err(|mut e| {
        if let SpawnError::Spawn { program, .. } = &mut e {
            program.clone_from(&command.program);
        }
        e
    })
}

/// A spawn failure at `step`; `spawn_process` fills in the program.
fn failed(step: SpawnStep) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Spawn {
        program: OsString::new(),
        step,
        source,
    }
}

fn spawn(command: &Command) -> Result<ProcessTransport, SpawnError> {
    tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;

    let strings = Strings::new(command)?;
    let mut fds = ChildFds::open(command)?;
    // The child reads its sources under low, reserved numbers where they fit (see
    // `fd_slots`), one slot kept for the cgroup directory opened below.
    let sources: Vec<i32> = fds.mappings.iter().map(|&(_, source)| source).collect();
    let reserve = usize::from(command.cgroup != crate::command::CgroupOption::None);
    let mut lease = fd_slots::Lease::new(&sources, reserve);
    let fd_steps = match &lease {
        Some(lease) => {
            let moved: Vec<(i32, i32)> = fds
                .mappings
                .iter()
                .map(|&(child_fd, source)| (child_fd, lease.source(source)))
                .collect();
            fd_plan::plan(&moved)
        }
        None => fd_plan::plan(&fds.mappings),
    }?;
    let pipes = fds.register_parent_ends(WriteLimits {
        high_water: command.write_high_water,
        limit: command.write_buffer_limit,
    })?;
    let cgroup =
        crate::cgroup::Prepared::new(&command.cgroup).map_err(failed(SpawnStep::PrepareCgroup))?;
    let rlimits: Vec<ResourceLimit> = command
        .rlimits
        .iter()
        .map(|(&resource, &(soft, hard))| ResourceLimit {
            resource,
            limit: KernelRlimit { soft, hard },
        })
        .collect();
    let reaper = Reaper::get().map_err(failed(SpawnStep::StartReaper))?;
    sys::signal::refresh_sigpipe_disposition();

    let cgroup_dir = cgroup.as_ref().map(|c| match &mut lease {
        Some(lease) => lease.late(c.dir_fd()),
        None => c.dir_fd(),
    });

    let argv = pointers(&strings.argv);
    let envp = strings.env.envp();
    let exec_paths: Vec<*const c_char> = strings.exec_paths.iter().map(|s| s.as_ptr()).collect();
    let program = ChildProgram {
        fd_steps: &fd_steps,
        argv: &argv,
        envp: &envp,
        exec_paths: &exec_paths,
        cwd: strings.cwd.as_deref(),
        session: session(command),
        parent_death_signal: command.parent_death_signal.unwrap_or(0),
        // The reaper was just checked to be this process's: its owner is our pid.
        parent_pid: reaper.owner(),
        controlling_tty: command.pty.map(|_| 0),
        credentials: Credentials {
            // Not only when euid is 0: a parent with CAP_SETGID alone must not hand its
            // groups to a child it switches to another identity.
            groups: match &command.groups {
                Some(list) => Groups::Set(list),
                None if command.uid.is_some() || command.gid.is_some() => Groups::ClearIfPermitted,
                None => Groups::Inherit,
            },
            gid: command.gid,
            uid: command.uid,
        },
        // SIGPIPE is always reset, as std does: Rust's runtime ignores it in every Rust
        // program, so it being ignored says nothing about what the caller wants.
        keep_ignored: if command.keep_ignored_signals {
            sys::child::ignored_signals() & !(1 << (libc::SIGPIPE - 1))
        } else {
            0
        },
        cgroup_dir,
        umask: command.umask.map(|mask| (mask & 0o777) as libc::mode_t),
        rlimits: &rlimits,
        no_new_privs: command.no_new_privs,
        fds_below: lease.as_ref().map(|lease| lease.first_unneeded()),
    };

    // Just before the clone, and undone (by dropping the lease) right after it, so that no
    // slot holds a child end any longer than that.
    if let Some(lease) = &mut lease {
        lease.place().map_err(failed(SpawnStep::Clone))?;
    }
    let spawned = sys::child::spawn(&program);
    drop(lease);
    let spawned = spawned.map_err(|failure| {
        let (step, source) = match failure {
            SpawnFailure::Clone(source) => (SpawnStep::Clone, source),
            SpawnFailure::Child {
                step,
                detail,
                error,
            } => (spawn_step(step, detail), error),
        };
        tracing::debug!(%step, error = %source, "spawn failed");
        failed(step)(source)
    })?;
    // The child has its copies; the parent must not hold the child ends, or EOF never comes.
    let pty_master = fds.pty_master.take();
    drop(fds);
    let pid = spawned.pid;
    // A process group's number stays reserved only while a member lives or is an unreaped
    // zombie: keep ours while the transport lives, so `signal_group` cannot hit a stranger.
    let zombie = match program.session {
        Session::Inherit => Zombie::Release,
        Session::New | Session::Group(_) => Zombie::KeepForGroup,
    };
    // Pipes registered with this runtime's reactor prove it has I/O: the one runtime an exit
    // watch may register with.
    let home = pipes
        .any_open()
        .then(|| tokio::runtime::Handle::try_current().ok())
        .flatten()
        .map(|runtime| runtime.id());
    let exit = reaper.register(pid, spawned.pidfd, zombie, home);
    tracing::debug!(pid, "spawned");
    let settings = Settings {
        pid,
        process_group: process_group(program.session, pid),
        kill_on_drop: command.kill_on_drop,
        kill_target: command.kill_target,
        wait_delay: command.wait_delay,
        cgroup: cgroup.and_then(|c| c.started(command.kill_on_drop)),
    };
    Ok(ProcessTransport::new(settings, exit, pipes, pty_master))
}

/// Where the child goes: a pty needs a session of its own, whatever the command says.
fn session(command: &Command) -> Session {
    match (command.pty.is_some(), command.session) {
        (true, _) | (false, SessionOption::NewSession) => Session::New,
        (false, SessionOption::ProcessGroup(pgid)) => Session::Group(pgid),
        (false, SessionOption::Inherit) => Session::Inherit,
    }
}

/// The process group a child spawned with pid `pid` into `session` leads or joined.
fn process_group(session: Session, pid: libc::pid_t) -> Option<libc::pid_t> {
    match session {
        Session::New | Session::Group(0) => Some(pid),
        Session::Group(pgid) => Some(pgid),
        Session::Inherit => None,
    }
}

/// The public name of a step that failed in the child; `detail` is the step's subject.
fn spawn_step(step: ChildStep, detail: i32) -> SpawnStep {
    match step {
        ChildStep::SetSid => SpawnStep::SetSid,
        ChildStep::SetProcessGroup => SpawnStep::SetProcessGroup,
        ChildStep::ParentDeathSignal => SpawnStep::ParentDeathSignal,
        ChildStep::CloseFds | ChildStep::UnshareFds => SpawnStep::CloseFds,
        ChildStep::ControllingTerminal => SpawnStep::ControllingTerminal,
        ChildStep::Chdir => SpawnStep::Chdir,
        ChildStep::SetGroups => SpawnStep::SetGroups,
        ChildStep::SetGid => SpawnStep::SetGid,
        ChildStep::SetUid => SpawnStep::SetUid,
        ChildStep::Exec => SpawnStep::Exec,
        ChildStep::PlaceFd => SpawnStep::PlaceFd(detail),
        ChildStep::JoinCgroup => SpawnStep::JoinCgroup,
        ChildStep::SetResourceLimit => SpawnStep::SetResourceLimit(detail),
        ChildStep::NoNewPrivs => SpawnStep::NoNewPrivs,
    }
}

/// NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The C strings the child needs: argv, the environment, the PATH candidates and the cwd.
struct Strings {
    argv: Vec<CString>,
    env: EnvBlock,
    exec_paths: Vec<CString>,
    cwd: Option<CString>,
}

impl Strings {
    fn new(command: &Command) -> Result<Self, InvalidInput> {
        let program = command.program.as_bytes();
        if program.is_empty() {
            return Err(InvalidInput::EmptyProgram);
        }
        // The program first: without an explicit argv[0] it is argv[0] too, and a NUL in it
        // must be reported as the program's.
        if program.contains(&0) {
            return Err(InvalidInput::NulByte {
                field: Field::Program,
            });
        }
        let arg0 = command.arg0.as_deref().unwrap_or(&command.program);
        let mut argv = Vec::with_capacity(command.args.len() + 1);
        argv.push(c_string(arg0.as_bytes(), Field::Arg0)?);
        for (i, arg) in command.args.iter().enumerate() {
            argv.push(c_string(arg.as_bytes(), Field::Arg(i))?);
        }

        let env = child_env(command)?;
        let exec_paths = exec_paths(program, env.path.as_deref().map(OsStr::from_bytes));
        let cwd = command
            .cwd
            .as_ref()
            .map(|p| c_string(p.as_os_str().as_bytes(), Field::CurrentDir))
            .transpose()?;
        Ok(Strings {
            argv,
            env,
            exec_paths,
            cwd,
        })
    }
}

fn c_string(bytes: &[u8], field: Field) -> Result<CString, InvalidInput> {
    CString::new(bytes).map_err(|_| InvalidInput::NulByte { field })
}

/// The child's environment: inherited (unless cleared) with the command's changes applied.
fn child_env(command: &Command) -> Result<EnvBlock, InvalidInput> {
    for (key, value) in &command.env {
        let k = key.as_bytes();
        if k.is_empty() || k.contains(&b'=') {
            return Err(InvalidInput::BadEnvKey {
                key: key.to_string_lossy().into_owned(),
            });
        }
        if k.contains(&0) {
            return Err(InvalidInput::NulByte {
                field: Field::EnvKey,
            });
        }
        if value.as_ref().is_some_and(|v| v.as_bytes().contains(&0)) {
            return Err(InvalidInput::NulByte {
                field: Field::EnvValue,
            });
        }
    }
    let mut env = EnvBlock::default();
    if !command.env_clear {
        // Copied under std's lock of the environment, so that a `set_var` in another
        // thread cannot free a string the child is still to read. (Passing libc's own
        // strings, as `std::process` does under that lock, would save the copy.)
        for (key, value) in std::env::vars_os() {
            if !command.env.contains_key(&key) {
                env.push(key.as_bytes(), value.as_bytes());
            }
        }
    }
    for (key, value) in &command.env {
        if let Some(value) = value {
            env.push(key.as_bytes(), value.as_bytes());
        }
    }
    if command.pty.is_some() && !env.has_term {
        env.push(b"TERM", b"xterm");
    }
    Ok(env)
}

/// The child's environment being built: its `KEY=VALUE` C strings one after another in one
/// buffer (one allocation, not one per variable: a C string each was ~6 µs of every spawn).
#[derive(Default)]
struct EnvBlock {
    /// Every entry, each ending in NUL.
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`.
    starts: Vec<usize>,
    /// The child's `PATH`, for the program lookup.
    path: Option<Vec<u8>>,
    has_term: bool,
}

impl EnvBlock {
    /// Adds `key=value`. Neither holds a NUL: the command's own variables were checked, and
    /// the inherited ones came from C strings.
    fn push(&mut self, key: &[u8], value: &[u8]) {
        match key {
            b"PATH" => self.path = Some(value.to_vec()),
            b"TERM" => self.has_term = true,
            _ => {}
        }
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(key);
        self.bytes.push(b'=');
        self.bytes.extend_from_slice(value);
        self.bytes.push(0);
    }

    /// The NULL-terminated array `execve` takes, pointing into this block, which must stay
    /// as it is while the array is used.
    fn envp(&self) -> Vec<*const c_char> {
        let base = self.bytes.as_ptr();
        self.starts
            .iter()
            .map(|&start| base.wrapping_add(start).cast())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    }
}

/// The paths to try for `program`, following the PATH rule documented on [`Command`].
fn exec_paths(program: &[u8], path: Option<&OsStr>) -> Vec<CString> {
    if program.contains(&b'/') {
        return CString::new(program).into_iter().collect();
    }
    let path = path.map(OsStr::as_bytes).unwrap_or(b"/bin:/usr/bin");
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut full = Vec::with_capacity(dir.len() + program.len() + 1);
            full.extend_from_slice(dir);
            full.push(b'/');
            full.extend_from_slice(program);
            CString::new(full).ok()
        })
        .collect()
}

/// The parent's end of one pipe, before it is registered with the reactor.
struct ParentEnd {
    child_fd: i32,
    dir: Direction,
    /// Non-blocking.
    fd: OwnedFd,
    capacity: Capacity,
}

/// Whether the terminal of [`Command::pty`] takes the place of `child_fd` in the map.
fn pty_replaces(command: &Command, child_fd: i32) -> bool {
    command.pty.is_some() && child_fd <= 2
}

/// The fds the child will get: `mappings` (child fd, fd in the parent), the child ends the
/// parent holds until the spawn, and the parent ends of the pipes.
struct ChildFds {
    mappings: Vec<(i32, i32)>,
    child_ends: Vec<OwnedFd>,
    parent_ends: Vec<ParentEnd>,
    /// A spare copy of the pty master, for resizing and so that closing the pipes does not
    /// hang up the terminal under a running child.
    pty_master: Option<OwnedFd>,
}

impl ChildFds {
    fn open(command: &Command) -> Result<Self, SpawnError> {
        if let Some(e) = &command.fd_error {
            return Err(e.clone().into());
        }
        let mut fds = ChildFds {
            mappings: Vec::with_capacity(command.fds.len()),
            child_ends: Vec::new(),
            parent_ends: Vec::new(),
            pty_master: None,
        };
        // Check every inherited fd before opening anything: a pipe or /dev/null opened below
        // could take the number of a closed parent fd, and the child would silently get this
        // crate's own fd (e.g. the parent end of another pipe) instead of an error.
        for (&child_fd, what) in &command.fds {
            if let ChildFd::Inherit(parent_fd) = *what
                && !pty_replaces(command, child_fd)
                && !sys::fd::is_open(parent_fd)
            {
                return Err(InvalidInput::InheritedFdNotOpen {
                    child_fd,
                    parent_fd,
                }
                .into());
            }
        }
        // Likewise a capacity for an fd that is not a pipe is bad input, whatever happens
        // when the pipes are made (a refused capacity for another fd must not hide it).
        for &child_fd in command.pipe_capacity.keys() {
            let is_pipe = matches!(
                command.fds.get(&child_fd),
                Some(ChildFd::ParentReads | ChildFd::ParentWrites)
            ) && !pty_replaces(command, child_fd);
            if !is_pipe {
                return Err(InvalidInput::PipeCapacityWithoutPipe(child_fd).into());
            }
        }
        let mut dev_null: Option<i32> = None;
        for (&child_fd, what) in &command.fds {
            if pty_replaces(command, child_fd) {
                continue;
            }
            let source = match what {
                ChildFd::Inherit(parent_fd) => *parent_fd,
                // The command keeps it open for the whole spawn (it is borrowed meanwhile).
                ChildFd::Owned(fd) => fd.as_raw_fd(),
                // Resolved below, once every fd it may name has its source.
                ChildFd::SameAs(_) => continue,
                ChildFd::Null => match dev_null {
                    Some(fd) => fd,
                    None => {
                        let null =
                            sys::fd::open_dev_null().map_err(failed(SpawnStep::OpenDevNull))?;
                        let fd = fds.keep_child_end(null);
                        dev_null = Some(fd);
                        fd
                    }
                },
                ChildFd::Duplex => {
                    let (parent, child) =
                        sys::fd::socketpair().map_err(failed(SpawnStep::CreatePipe))?;
                    sys::fd::set_nonblocking(parent.as_fd())
                        .map_err(failed(SpawnStep::CreatePipe))?;
                    fds.parent_ends.push(ParentEnd {
                        child_fd,
                        dir: Direction::Duplex,
                        fd: parent,
                        capacity: Capacity::Fixed(DEFAULT_PIPE_CAPACITY),
                    });
                    fds.keep_child_end(child)
                }
                ChildFd::ParentReads | ChildFd::ParentWrites => {
                    let (read, write) = sys::fd::pipe().map_err(failed(SpawnStep::CreatePipe))?;
                    let (dir, parent, child) = if *what == ChildFd::ParentReads {
                        (Direction::ParentReads, read, write)
                    } else {
                        (Direction::ParentWrites, write, read)
                    };
                    let capacity = match command.pipe_capacity.get(&child_fd) {
                        Some(&bytes) => Capacity::Fixed(
                            sys::fd::set_pipe_capacity(parent.as_fd(), bytes)
                                .map_err(failed(SpawnStep::SetPipeCapacity(child_fd)))?,
                        ),
                        None => Capacity::Default,
                    };
                    // Part of making the pipe: a pipe whose end cannot be made non-blocking
                    // is of no use to the parent.
                    sys::fd::set_fresh_pipe_nonblocking(parent.as_fd())
                        .map_err(failed(SpawnStep::CreatePipe))?;
                    fds.parent_ends.push(ParentEnd {
                        child_fd,
                        dir,
                        fd: parent,
                        capacity,
                    });
                    fds.keep_child_end(child)
                }
            };
            fds.mappings.push((child_fd, source));
        }
        if let Some(size) = command.pty {
            let pty = sys::pty::open(size.rows, size.cols).map_err(failed(SpawnStep::OpenPty))?;
            let slave = fds.keep_child_end(pty.slave);
            fds.mappings.extend([(0, slave), (1, slave), (2, slave)]);
            let writer = pty.master.try_clone().map_err(failed(SpawnStep::OpenPty))?;
            let spare = pty.master.try_clone().map_err(failed(SpawnStep::OpenPty))?;
            fds.pty_master = Some(spare);
            // The master's non-blocking flag is shared by its copies.
            sys::fd::set_nonblocking(pty.master.as_fd()).map_err(failed(SpawnStep::OpenPty))?;
            for (child_fd, dir, fd) in [
                (1, Direction::PtyMaster, pty.master),
                (0, Direction::ParentWrites, writer),
            ] {
                // A terminal's buffer cannot be resized.
                fds.parent_ends.push(ParentEnd {
                    child_fd,
                    dir,
                    fd,
                    capacity: Capacity::Fixed(DEFAULT_PIPE_CAPACITY),
                });
            }
        }
        let shared = fds.resolve_same_as(command)?;
        fds.mappings.extend(shared);
        Ok(fds)
    }

    /// The mappings of the [`ChildFd::SameAs`] fds: each gets the source of the fd it names,
    /// following chains of `SameAs`. One that names an unmapped fd, or a chain that loops,
    /// fails as a bad dup would, before anything is spawned.
    fn resolve_same_as(&self, command: &Command) -> Result<Vec<(i32, i32)>, SpawnError> {
        let mut shared = Vec::new();
        for (&child_fd, what) in &command.fds {
            let ChildFd::SameAs(mut named) = *what else {
                continue;
            };
            if pty_replaces(command, child_fd) {
                continue;
            }
            let mut hops = 0;
            let source = loop {
                if let Some(&(_, source)) = self.mappings.iter().find(|(fd, _)| *fd == named) {
                    break Some(source);
                }
                match command.fds.get(&named) {
                    Some(ChildFd::SameAs(next)) if hops < command.fds.len() => {
                        named = *next;
                        hops += 1;
                    }
                    _ => break None,
                }
            };
            let source = source.ok_or_else(|| {
                failed(SpawnStep::PlaceFd(child_fd))(std::io::Error::from_raw_os_error(libc::EBADF))
            })?;
            shared.push((child_fd, source));
        }
        Ok(shared)
    }

    fn keep_child_end(&mut self, fd: OwnedFd) -> i32 {
        let raw = fd.as_raw_fd();
        self.child_ends.push(fd);
        raw
    }

    /// Registers the parent ends with the runtime's reactor. Done before the clone, so that no
    /// failure can come after the child exists.
    /// Writers start with `limits`.
    fn register_parent_ends(&mut self, limits: WriteLimits) -> Result<PipeSet, SpawnError> {
        let mut pipes = Vec::with_capacity(self.parent_ends.len());
        for end in self.parent_ends.drain(..) {
            let ParentEnd {
                child_fd,
                dir,
                fd,
                capacity,
            } = end;
            // AsyncFd panics in a runtime built without I/O; report that as a typed error.
            let register = |fd, interest| {
                std::panic::catch_unwind(AssertUnwindSafe(|| sys::fd::register(fd, interest)))
                    .map_err(|_| SpawnError::NoRuntime)?
                    .map_err(failed(SpawnStep::RegisterPipe(child_fd)))
            };
            let pipe = match dir {
                Direction::ParentWrites => Pipe::writer(
                    child_fd,
                    register(fd, Interest::WRITABLE)?,
                    capacity,
                    limits,
                ),
                Direction::ParentReads => {
                    Pipe::reader(child_fd, register(fd, Interest::READABLE)?, capacity)
                }
                Direction::PtyMaster => {
                    let watch_set = sys::pty::watch_set(fd.as_fd())
                        .map_err(failed(SpawnStep::RegisterPipe(child_fd)))?;
                    Pipe::terminal(child_fd, register(watch_set, Interest::READABLE)?, fd)
                }
                Direction::Duplex => {
                    // A second copy of the same socket, so that each direction has its own
                    // registration (epoll keys them by fd number) and its own readiness.
                    let write = fd
                        .try_clone()
                        .map_err(failed(SpawnStep::RegisterPipe(child_fd)))?;
                    let read = register(fd, Interest::READABLE)?;
                    let write = register(write, Interest::WRITABLE)?;
                    Pipe::duplex(child_fd, read, write, limits)
                }
            };
            pipes.push(pipe);
        }
        Ok(PipeSet::new(pipes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(program: &str, path: Option<&str>) -> Vec<String> {
        exec_paths(program.as_bytes(), path.map(OsStr::new))
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect()
    }

    #[test]
    fn path_lookup_rule() {
        assert_eq!(paths("/bin/sh", Some("/x")), ["/bin/sh"]);
        assert_eq!(paths("./run", None), ["./run"]);
        assert_eq!(paths("sh", Some("/a:/b")), ["/a/sh", "/b/sh"]);
        assert_eq!(paths("sh", Some("/a::/b")), ["/a/sh", "./sh", "/b/sh"]);
        assert_eq!(paths("sh", None), ["/bin/sh", "/usr/bin/sh"]);
    }

    #[test]
    fn the_process_group_follows_the_session() {
        assert_eq!(process_group(Session::New, 42), Some(42));
        assert_eq!(process_group(Session::Group(0), 42), Some(42));
        assert_eq!(process_group(Session::Group(7), 42), Some(7));
        assert_eq!(process_group(Session::Inherit, 42), None);
        // A pty needs a session of its own, whatever the command says.
        let mut c = Command::new("true");
        c.process_group(7)
            .pty(crate::PtySize { rows: 24, cols: 80 });
        assert_eq!(session(&c), Session::New);
        let mut c = Command::new("true");
        c.process_group(7);
        assert_eq!(session(&c), Session::Group(7));
        assert_eq!(session(&Command::new("true")), Session::Inherit);
    }

    #[tokio::test]
    async fn a_pipe_the_reactor_refuses_names_its_step() {
        // epoll refuses regular files (EPERM), which stands in for a pipe it cannot watch.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let mut fds = ChildFds {
            mappings: Vec::new(),
            child_ends: Vec::new(),
            parent_ends: vec![ParentEnd {
                child_fd: 5,
                dir: Direction::ParentReads,
                fd: OwnedFd::from(file),
                capacity: Capacity::Default,
            }],
            pty_master: None,
        };
        match fds.register_parent_ends(WriteLimits::default()) {
            Err(SpawnError::Spawn { step, source, .. }) => {
                assert_eq!(step, SpawnStep::RegisterPipe(5));
                assert_eq!(source.raw_os_error(), Some(libc::EPERM));
            }
            Err(other) => panic!("expected a RegisterPipe spawn error, got {other:?}"),
            Ok(pipes) => panic!("a regular file was registered: {pipes:?}"),
        }
    }

    #[tokio::test]
    async fn a_kernel_refusing_to_unshare_the_fd_table_is_detected_and_the_spawn_retried() {
        use std::sync::atomic::Ordering;
        if !sys::child::fd_table_sharing_supported() {
            eprintln!("fd table sharing is off here; nothing to detect");
            return;
        }
        // An undefined close_range flag: the kernel refuses the child's unshare with EINVAL,
        // as one without CLOSE_RANGE_UNSHARE does.
        sys::child::UNSHARE_EXTRA_FLAGS.store(1 << 30, Ordering::Relaxed);
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo three >&3"])
            .fd(3, ChildFd::ParentReads);
        let output = c.output().await;
        sys::child::UNSHARE_EXTRA_FLAGS.store(0, Ordering::Relaxed);
        let detected = !sys::child::fd_table_sharing_supported();
        sys::child::enable_fd_table_sharing();
        let output = output.unwrap();
        assert!(output.status.success());
        assert_eq!(output.fd(1), b"out\n");
        assert_eq!(output.fd(3), b"three\n");
        assert!(detected, "the refusal was not remembered");
    }

    #[test]
    fn env_validation() {
        let mut c = Command::new("true");
        c.env("A=B", "x");
        assert!(matches!(child_env(&c), Err(InvalidInput::BadEnvKey { .. })));
        let mut c = Command::new("true");
        c.env("", "x");
        assert!(matches!(child_env(&c), Err(InvalidInput::BadEnvKey { .. })));
        let mut c = Command::new("true");
        c.env("A", "x\0y");
        assert_eq!(
            child_env(&c).err(),
            Some(InvalidInput::NulByte {
                field: Field::EnvValue
            })
        );
    }

    #[test]
    fn cleared_env_keeps_only_what_is_set() {
        let mut c = Command::new("true");
        c.env_clear().env("ONLY", "1");
        let env = child_env(&c).unwrap();
        assert_eq!(env.bytes, b"ONLY=1\0");
        assert_eq!(env.path, None);
    }

    #[test]
    fn the_env_block_points_at_each_entry_and_ends_in_null() {
        let mut env = EnvBlock::default();
        env.push(b"A", b"1");
        env.push(b"PATH", b"/bin");
        env.push(b"EMPTY", b"");
        assert_eq!(env.bytes, b"A=1\0PATH=/bin\0EMPTY=\0");
        assert_eq!(env.path.as_deref(), Some(&b"/bin"[..]));
        let envp = env.envp();
        assert_eq!(envp.len(), 4);
        assert!(envp[3].is_null());
        let base = env.bytes.as_ptr().cast::<c_char>();
        assert_eq!(
            envp[..3],
            [base, base.wrapping_add(4), base.wrapping_add(14)]
        );
    }
}
