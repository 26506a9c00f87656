//! The `Command` builder: what to run, and what each child fd is.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::InvalidInput;
use crate::signal::Signal;

/// What a child fd is connected to.
///
/// Not `Copy`: [`Owned`](ChildFd::Owned) holds an fd. Non-exhaustive, so a new kind of fd is
/// not a breaking change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChildFd {
    /// A pipe the child writes and the parent reads: data arrives as events (Twisted's `'r'`).
    ParentReads,
    /// A pipe the child reads and the parent writes (Twisted's `'w'`).
    ParentWrites,
    /// This parent fd *number*, duplicated into the child. The caller keeps ownership and must
    /// keep it open until `spawn_process` returns: if it was closed and the number reused in
    /// the meantime, the child silently gets whatever file has the number then. Prefer
    /// [`Owned`](ChildFd::Owned) (see [`ChildFd::owned`]), which cannot go stale. Its open
    /// file description is shared with the child, so its flags (such as `O_NONBLOCK`) are the
    /// parent's.
    Inherit(RawFd),
    /// An fd the [`Command`] owns, duplicated into the child at each spawn. The command (and
    /// its clones) keeps it open; the parent's copy closes when the last of them is dropped.
    /// Like [`Inherit`](ChildFd::Inherit), the open file description (and its flags) is
    /// shared with the child. To pass a borrowed fd, hand over a copy:
    /// `ChildFd::owned(fd.try_clone_to_owned()?)`.
    Owned(Arc<OwnedFd>),
    /// Whatever the child fd given here gets, shared: the same pipe, file or `/dev/null`.
    /// `stderr(ChildFd::SameAs(1))` is the shell's `2>&1`: both fds write into one pipe, so
    /// their output arrives interleaved, in the order written, as fd 1's events (there are no
    /// events for fd 2). The fd named must be mapped (to anything but another `SameAs`
    /// that leads back here), or the spawn fails with
    /// [`SpawnStep::PlaceFd`](crate::SpawnStep::PlaceFd) and `EBADF`.
    SameAs(RawFd),
    /// `/dev/null`, opened read-write.
    Null,
    /// One end of a connected `AF_UNIX` stream socket pair (Node's `'pipe'`), for helpers
    /// that talk both ways on one fd: IPC channels, `WAYLAND_SOCKET`, Xwayland's `-wm`.
    ///
    /// What the child sends arrives as [`Data`](crate::Event::Data) events for this fd, and
    /// [`write`](crate::ProcessTransport::write) (and the rest of the writing API, flow
    /// control included) sends on the same fd number. Or
    /// [`take_duplex`](crate::ProcessTransport::take_duplex) hands the parent's end out as a
    /// `tokio::net::UnixStream`, over which fds can also be passed (`SCM_RIGHTS`).
    ///
    /// The two directions end apart. The child shutting down its sending side
    /// (`shutdown(SHUT_WR)`) ends the read side only: the parent can still write. A failed
    /// write ends the write side only: what the child sent can still be read. One
    /// [`Closed`](crate::Event::Closed) event comes once both have ended, typically when the
    /// child closes the socket or exits; its reason is the first error of either side, or
    /// else why the last side ended. [`close_child_fd`](crate::ProcessTransport::close_child_fd)
    /// closes both directions (after flushing).
    ///
    /// A socket is not a pipe: [`Command::pipe_capacity`] does not apply to it, and a failure
    /// to make it is reported as [`SpawnStep::CreatePipe`](crate::SpawnStep::CreatePipe).
    Duplex,
}

impl ChildFd {
    /// [`ChildFd::Owned`] from anything that converts into an [`OwnedFd`] (a `File`, a
    /// `UnixStream`, a std pipe end, ...).
    pub fn owned(fd: impl Into<OwnedFd>) -> Self {
        ChildFd::Owned(Arc::new(fd.into()))
    }
}

impl From<OwnedFd> for ChildFd {
    /// [`ChildFd::Owned`].
    fn from(fd: OwnedFd) -> Self {
        ChildFd::owned(fd)
    }
}

impl PartialEq for ChildFd {
    /// Owned fds are equal when they are the same shared fd (clones of one `ChildFd`), not
    /// merely the same number or file.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ChildFd::ParentReads, ChildFd::ParentReads)
            | (ChildFd::ParentWrites, ChildFd::ParentWrites)
            | (ChildFd::Duplex, ChildFd::Duplex)
            | (ChildFd::Null, ChildFd::Null) => true,
            (ChildFd::Inherit(a), ChildFd::Inherit(b))
            | (ChildFd::SameAs(a), ChildFd::SameAs(b)) => a == b,
            (ChildFd::Owned(a), ChildFd::Owned(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ChildFd {}

/// How the child is placed among sessions and process groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SessionOption {
    #[default]
    Inherit,
    NewSession,
    ProcessGroup(i32),
}

/// Which cgroup the child starts in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum CgroupOption {
    /// The parent's.
    #[default]
    None,
    /// This existing cgroup v2 directory.
    Join(PathBuf),
    /// A new cgroup made under this cgroup v2 directory, one per child.
    Transient(PathBuf),
}

/// Terminal settings for [`Command::pty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    /// Rows of text.
    pub rows: u16,
    /// Columns of text.
    pub cols: u16,
}

impl Default for PtySize {
    fn default() -> Self {
        PtySize { rows: 24, cols: 80 }
    }
}

/// A description of a child process, in the style of `std::process::Command`, plus a map
/// from child fd numbers to [`ChildFd`]s.
///
/// The default map is fd 0 written by the parent and fds 1 and 2 read by the parent. Only the
/// fds in the map exist in the child: every other fd is closed there, including fds opened
/// without `O_CLOEXEC` and 0, 1 or 2 when unmapped. [`fd`](Command::fd) adds to the map (the
/// defaults stay); [`fds`](Command::fds) replaces it (the defaults go unless listed).
///
/// The environment is inherited, with [`env`](Command::env),
/// [`env_remove`](Command::env_remove) and [`env_clear`](Command::env_clear) applied on top.
///
/// **PATH lookup**: a program containing `/` is run as is. Otherwise each directory of the
/// `PATH` the *child* will have is tried in order (`/bin:/usr/bin` if the child has no `PATH`),
/// as `execvp` does: missing files are skipped, and a permission error is reported only if no
/// directory has a runnable program. There is no shell fallback for scripts without `#!`.
///
/// **Signals**: the child starts with an empty signal mask and, by default, with *every*
/// signal at its default action, those the parent ignores included (as Twisted and libuv
/// do): a program started from a daemon that ignores `SIGHUP` or `SIGINT` can still be
/// stopped by them. [`keep_ignored_signals(true)`](Command::keep_ignored_signals) keeps the
/// signals the parent ignores ignored in the child instead, as a plain `exec` does (and std
/// and Go), which is what `nohup`-style supervisors expect. Either way signals with a handler
/// in the parent are reset (the handler is the parent's code), and `SIGPIPE` is reset.
#[derive(Debug, Clone)]
pub struct Command {
    pub(crate) program: OsString,
    pub(crate) arg0: Option<OsString>,
    pub(crate) args: Vec<OsString>,
    pub(crate) env_clear: bool,
    pub(crate) env: BTreeMap<OsString, Option<OsString>>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) groups: Option<Vec<u32>>,
    pub(crate) fds: BTreeMap<i32, ChildFd>,
    pub(crate) fd_error: Option<InvalidInput>,
    pub(crate) pipe_capacity: BTreeMap<i32, usize>,
    pub(crate) session: SessionOption,
    pub(crate) parent_death_signal: Option<i32>,
    pub(crate) keep_ignored_signals: bool,
    pub(crate) kill_on_drop: bool,
    pub(crate) wait_delay: Option<Duration>,
    pub(crate) pty: Option<PtySize>,
    pub(crate) umask: Option<u32>,
    pub(crate) rlimits: BTreeMap<i32, (u64, u64)>,
    pub(crate) no_new_privs: bool,
    pub(crate) cgroup: CgroupOption,
    pub(crate) write_high_water: usize,
    pub(crate) write_buffer_limit: Option<usize>,
    pub(crate) kill_target: crate::KillTarget,
    pub(crate) collect: crate::Collect,
}

impl Command {
    /// A command running `program` with no arguments, the inherited environment and the
    /// default fd map.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Command {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            env_clear: false,
            env: BTreeMap::new(),
            cwd: None,
            uid: None,
            gid: None,
            groups: None,
            fds: BTreeMap::from([
                (0, ChildFd::ParentWrites),
                (1, ChildFd::ParentReads),
                (2, ChildFd::ParentReads),
            ]),
            fd_error: None,
            pipe_capacity: BTreeMap::new(),
            session: SessionOption::Inherit,
            parent_death_signal: None,
            keep_ignored_signals: false,
            kill_on_drop: false,
            wait_delay: None,
            pty: None,
            umask: None,
            rlimits: BTreeMap::new(),
            no_new_privs: false,
            cgroup: CgroupOption::None,
            write_high_water: crate::pipe::DEFAULT_HIGH_WATER,
            write_buffer_limit: None,
            kill_target: crate::KillTarget::Child,
            collect: crate::Collect::new(),
        }
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets argv\[0\] (by default the program as given).
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables in the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts the child's environment empty instead of inherited; variables set with
    /// [`env`](Command::env) still apply.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Runs the child as this user id. The group id stays the parent's unless
    /// [`gid`](Command::gid) is set too (as in std): set both to drop root's group.
    ///
    /// Unless [`groups`](Command::groups) gives a list, the child's supplementary groups are
    /// cleared whenever the parent may do so (it is root, or holds `CAP_SETGID`), so they do
    /// not outlive the change of identity. Where the kernel refuses (`EPERM`: no
    /// `CAP_SETGID`, or a user namespace that denies `setgroups`) the child keeps the
    /// parent's groups and the spawn goes on, as in std.
    pub fn uid(&mut self, uid: u32) -> &mut Self {
        self.uid = Some(uid);
        self
    }

    /// Runs the child with this group id. Supplementary groups are cleared as described for
    /// [`uid`](Command::uid).
    pub fn gid(&mut self, gid: u32) -> &mut Self {
        self.gid = Some(gid);
        self
    }

    /// Gives the child exactly these supplementary groups (an empty list gives it none),
    /// instead of keeping the parent's or clearing them on [`uid`](Command::uid) or
    /// [`gid`](Command::gid). Setting them needs `CAP_SETGID`; a list the kernel refuses fails
    /// the spawn with [`SpawnStep::SetGroups`](crate::SpawnStep::SetGroups).
    pub fn groups(&mut self, groups: &[u32]) -> &mut Self {
        self.groups = Some(groups.to_vec());
        self
    }

    /// Maps child fd `child_fd` to `what`, keeping the rest of the map (the default fds 0, 1
    /// and 2 included); only an earlier mapping of `child_fd` itself is replaced.
    ///
    /// ```
    /// use process_transport::{ChildFd, Command};
    ///
    /// // gpg writes machine-readable status lines to the fd named by --status-fd.
    /// let mut gpg = Command::new("gpg");
    /// gpg.args(["--status-fd", "3", "--verify", "file.sig"])
    ///     .fd(3, ChildFd::ParentReads)
    ///     .stdin(ChildFd::Null);
    /// assert_eq!(gpg.get_fds().count(), 4); // 0 (null), 1, 2 (pipes) and 3
    /// ```
    pub fn fd(&mut self, child_fd: RawFd, what: ChildFd) -> &mut Self {
        if child_fd < 0 {
            self.fd_error
                .get_or_insert(InvalidInput::NegativeChildFd(child_fd));
        } else {
            self.fds.insert(child_fd, what);
        }
        self
    }

    /// Replaces the whole fd map, dropping the default fds 0, 1 and 2 unless `map` lists them:
    /// the child gets exactly these fds. To add fds to the map instead, call
    /// [`fd`](Command::fd) for each.
    ///
    /// An empty map gives a child with no fds at all. A child fd listed twice is an error at
    /// spawn.
    ///
    /// ```
    /// use process_transport::{ChildFd, Command};
    ///
    /// let mut command = Command::new("prog");
    /// command.fds([(3, ChildFd::ParentReads)]);
    /// // No stdin, stdout or stderr any more: only fd 3.
    /// assert_eq!(command.get_fds().collect::<Vec<_>>(), [(3, ChildFd::ParentReads)]);
    /// ```
    pub fn fds<I>(&mut self, map: I) -> &mut Self
    where
        I: IntoIterator<Item = (RawFd, ChildFd)>,
    {
        self.fds.clear();
        self.fd_error = None;
        for (child_fd, what) in map {
            if child_fd < 0 {
                self.fd_error
                    .get_or_insert(InvalidInput::NegativeChildFd(child_fd));
            } else if self.fds.insert(child_fd, what).is_some() {
                self.fd_error
                    .get_or_insert(InvalidInput::DuplicateChildFd(child_fd));
            }
        }
        self
    }

    /// Shorthand for [`fd(0, what)`](Command::fd).
    pub fn stdin(&mut self, what: ChildFd) -> &mut Self {
        self.fd(0, what)
    }

    /// Shorthand for [`fd(1, what)`](Command::fd).
    pub fn stdout(&mut self, what: ChildFd) -> &mut Self {
        self.fd(1, what)
    }

    /// Shorthand for [`fd(2, what)`](Command::fd).
    pub fn stderr(&mut self, what: ChildFd) -> &mut Self {
        self.fd(2, what)
    }

    /// Sets the kernel capacity of the pipe at `child_fd` (`F_SETPIPE_SZ`). The kernel rounds
    /// it up to a power-of-two number of pages; above `/proc/sys/fs/pipe-max-size` an
    /// unprivileged parent gets a [`SpawnStep::SetPipeCapacity`](crate::SpawnStep) error.
    ///
    /// Without it, a pipe starts at the kernel default (64 KiB) and grows once to 1 MiB if
    /// several reads (or writes) in a row find it full, that is when the two sides keep
    /// waking each other per 64 KiB; if the kernel refuses (the per-user pipe memory limit),
    /// it stays as it is.
    pub fn pipe_capacity(&mut self, child_fd: RawFd, bytes: usize) -> &mut Self {
        self.pipe_capacity.insert(child_fd, bytes);
        self
    }

    /// Runs the child in a new session (`setsid`): it leads a new process group and has no
    /// controlling terminal.
    pub fn new_session(&mut self) -> &mut Self {
        self.session = SessionOption::NewSession;
        self
    }

    /// Puts the child in process group `pgid`; `0` makes it the leader of a new group whose
    /// id is its pid (see [`ProcessTransport::signal_group`](crate::ProcessTransport::signal_group)).
    ///
    /// The leader of a new group stays a zombie after its exit status is read, until the
    /// transport and every [`ProcessHandle`](crate::ProcessHandle) are dropped: while it
    /// stands, the group's number cannot be reused, so signalling the group never reaches
    /// a stranger.
    pub fn process_group(&mut self, pgid: i32) -> &mut Self {
        self.session = SessionOption::ProcessGroup(pgid);
        self
    }

    /// Sends `signal` to the child when the *thread* that spawned it exits
    /// (`PR_SET_PDEATHSIG`). Linux ties this to the spawning thread, not the process: spawn
    /// from a thread that lives as long as the child (for example the main thread of a
    /// current-thread runtime), or the child may be signalled when a worker thread retires
    /// (Tokio's `spawn_blocking` threads retire when idle). It is set after [`uid`](Command::uid)
    /// and [`gid`](Command::gid) take effect, so it survives them, but the kernel still
    /// clears it when the child execs a set-user-ID or set-group-ID program.
    ///
    /// Takes a number or a `nix::sys::signal::Signal` (see [`Signal`]).
    pub fn parent_death_signal(&mut self, signal: impl Into<Signal>) -> &mut Self {
        self.parent_death_signal = Some(signal.into().number());
        self
    }

    /// Whether signals the parent ignores (`SIG_IGN`) stay ignored in the child. Off by
    /// default: the child gets every signal at its default action, as Twisted and libuv give
    /// it. On, the child keeps the parent's ignored signals, as `exec` alone (and std, and Go)
    /// would, for example a `SIGHUP` that `nohup` ignored. Signals with a handler are reset
    /// to the default either way, and so is `SIGPIPE` (as std does): Rust's runtime ignores
    /// it in every Rust program, and a child that inherits it ignored gets `EPIPE` errors
    /// instead of quietly dying when its reader goes away.
    ///
    /// Finding out what is ignored costs one syscall per signal at each spawn, so only
    /// spawns with this option pay it. A signal the parent starts ignoring while the spawn
    /// runs may or may not be kept.
    pub fn keep_ignored_signals(&mut self, keep: bool) -> &mut Self {
        self.keep_ignored_signals = keep;
        self
    }

    /// Sends SIGKILL to the [kill target](Command::kill_target) (by default the child alone)
    /// when its [`ProcessTransport`](crate::ProcessTransport) is dropped: to the child if it
    /// was not reaped yet, to what is left of its group or tree otherwise. Off by default, as
    /// in std and Tokio. Either way the child is reaped in the background: dropping never
    /// leaves a zombie. A [`ProcessHandle`](crate::ProcessHandle) that outlives the transport
    /// does not delay this.
    /// With a [`transient_cgroup`](Command::transient_cgroup), the whole tree is killed on
    /// drop (`cgroup.kill`), even after the child itself has exited.
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Self {
        self.kill_on_drop = kill;
        self
    }

    /// After the child exits, waits at most `delay` for its pipes to close (a grandchild may
    /// hold them), then closes them from the parent side so that `Ended` arrives. Pipes
    /// closed this way report [`CloseReason::WaitDelay`](crate::CloseReason::WaitDelay).
    /// The delay counts from the first poll of the transport after the exit (when `Exited`
    /// is produced), and needs the runtime's timer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use process_transport::{CloseReason, Command, Event};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // The shell exits at once, but the background sleep keeps its stdout open.
    /// let mut child = Command::new("sh")
    ///     .args(["-c", "sleep 2 & exit 0"])
    ///     .wait_delay(Duration::from_millis(100))
    ///     .spawn()?;
    /// let mut forced = false;
    /// while let Some(event) = child.next().await {
    ///     if let Event::Closed { reason: CloseReason::WaitDelay, .. } = event {
    ///         forced = true;
    ///     }
    /// }
    /// assert!(forced, "Ended came 100 ms after the exit, not 2 s later");
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_delay(&mut self, delay: Duration) -> &mut Self {
        self.wait_delay = Some(delay);
        self
    }

    /// Runs the child on a new pseudo-terminal of this size: fds 0, 1 and 2 are the terminal,
    /// the child leads a new session with it as controlling terminal, and the parent reads
    /// and writes the master as child fd 1 (reads) and fd 0 (writes). Other fds in the map
    /// (3 and up) work as usual. `TERM` is set to `xterm` unless the environment sets it.
    ///
    /// A terminal is one device both ways: closing fd 0 does not give the child end of file
    /// (write `\x04`, ^D, for that), and the end of output shows up as `EIO` on the master,
    /// reported as a clean [`CloseReason::Eof`](crate::CloseReason::Eof) on fd 1. As the
    /// child may close the terminal and open it again by name (`/dev/tty`), fd 1 ends only
    /// once the child has been reaped and nobody has the terminal open: its `Closed` comes
    /// after `Exited`. (A reader taken out with
    /// [`take_reader(1)`](crate::ProcessTransport::take_reader) does not hear of the reap and
    /// ends at the first `EIO`.)
    pub fn pty(&mut self, size: PtySize) -> &mut Self {
        self.pty = Some(size);
        self
    }

    /// The high-water mark of every writer's queue (default 64 KiB): above it, buffered
    /// writes report [`WriteFlow::Paused`](crate::WriteFlow) and an
    /// [`Event::WritePaused`](crate::Event::WritePaused) is queued.
    pub fn write_high_water(&mut self, bytes: usize) -> &mut Self {
        self.write_high_water = bytes;
        self
    }

    /// A hard cap on every writer's queue: a buffered write that would go past it fails with
    /// [`Error::WriteBufferFull`](crate::Error::WriteBufferFull). Unlimited by default.
    pub fn write_buffer_limit(&mut self, bytes: usize) -> &mut Self {
        self.write_buffer_limit = Some(bytes);
        self
    }

    /// Sets the child's file mode creation mask (`umask(2)`), for example `0o077`. Only the
    /// permission bits (`0o777`) count, as with `umask` itself. Without it the child inherits
    /// the parent's.
    pub fn umask(&mut self, mask: u32) -> &mut Self {
        self.umask = Some(mask);
        self
    }

    /// Sets a resource limit of the child (`prlimit`): `resource` is a `libc::RLIMIT_*`
    /// constant, `soft` and `hard` the limits (`libc::RLIM_INFINITY`, that is `u64::MAX`, for
    /// none). Set before the uid and gid change, so a privileged parent can raise a hard
    /// limit for an unprivileged child. Setting the same resource again replaces it.
    ///
    /// A limit the kernel refuses (an unknown resource, `soft` above `hard`, raising a hard
    /// limit without `CAP_SYS_RESOURCE`, `RLIMIT_NOFILE` above `fs.nr_open`) fails the spawn
    /// with [`SpawnStep::SetResourceLimit`](crate::SpawnStep::SetResourceLimit) naming the
    /// resource.
    pub fn rlimit(&mut self, resource: impl TryInto<i32>, soft: u64, hard: u64) -> &mut Self {
        // A resource number that does not even fit is one the kernel refuses (-1: EINVAL).
        let resource = resource.try_into().unwrap_or(-1);
        self.rlimits.insert(resource, (soft, hard));
        self
    }

    /// Sets the child's `no_new_privs` flag (`PR_SET_NO_NEW_PRIVS`) just before exec: neither
    /// the program nor anything it runs can gain privileges through set-user-ID or
    /// set-group-ID bits or file capabilities. The flag cannot be cleared and is inherited
    /// by every descendant. A kernel that refuses it fails the spawn with
    /// [`SpawnStep::NoNewPrivs`](crate::SpawnStep::NoNewPrivs).
    pub fn no_new_privs(&mut self, on: bool) -> &mut Self {
        self.no_new_privs = on;
        self
    }

    /// Starts the child in this existing cgroup v2 directory (for example one with
    /// `memory.max` or `pids.max` set): the child moves itself there before exec, so the
    /// program and everything it starts run inside. Replaces an earlier
    /// [`transient_cgroup`](Command::transient_cgroup).
    ///
    /// The directory must be on a cgroup v2 mount the parent may write to (see
    /// [`cgroup2_mount`](crate::cgroup2_mount)); otherwise the spawn fails with
    /// [`SpawnStep::PrepareCgroup`](crate::SpawnStep::PrepareCgroup), or with
    /// [`SpawnStep::JoinCgroup`](crate::SpawnStep::JoinCgroup) when the kernel refuses the
    /// move (a cgroup with controllers enabled for its children, or permissions).
    pub fn cgroup(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cgroup = CgroupOption::Join(dir.as_ref().to_owned());
        self
    }

    /// Contains the child's whole process tree in a new cgroup v2 of its own, made under
    /// `parent_dir` at each spawn and removed once the tree is gone. Replaces an earlier
    /// [`cgroup`](Command::cgroup).
    ///
    /// With it, [`kill_tree`](crate::ProcessTransport::kill_tree) reaches every descendant
    /// (through `cgroup.kill` for `SIGKILL`, atomically), even daemons that double-forked and
    /// left the session; [`cgroup_usage`](crate::ProcessTransport::cgroup_usage) reports the
    /// tree's CPU time (and peak memory where the memory controller is enabled); and
    /// [`kill_on_drop`](Command::kill_on_drop) kills the whole tree.
    ///
    /// The cgroup is named `process-transport-<parent pid>-<n>` and is removed by a
    /// background thread as soon as it has no process left, whether or not the transport
    /// still exists (the transport keeps the last usage figures). It is not removed while
    /// any process of the tree lives: a transport dropped without `kill_on_drop` leaves it
    /// until the tree ends. If the parent process dies first, the cgroup stays behind, empty
    /// or with the survivors of the tree (a [`parent_death_signal`](Command::parent_death_signal)
    /// reaches only the child); whoever cleans up can write `1` to its `cgroup.kill` and
    /// remove it with `rmdir`.
    ///
    /// Making the cgroup costs each spawn a `mkdir` and two opens (0.15 to 0.2 ms in all,
    /// measured with `cargo bench --bench compare -- --only setup`); removing it happens on the background thread.
    ///
    /// `parent_dir` must be on a cgroup v2 mount (see [`cgroup2_mount`](crate::cgroup2_mount))
    /// and writable; otherwise the spawn fails with
    /// [`SpawnStep::PrepareCgroup`](crate::SpawnStep::PrepareCgroup) and nothing is left
    /// behind.
    pub fn transient_cgroup(&mut self, parent_dir: impl AsRef<Path>) -> &mut Self {
        self.cgroup = CgroupOption::Transient(parent_dir.as_ref().to_owned());
        self
    }

    /// The program to run.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// argv\[0\], if set with [`arg0`](Command::arg0) (otherwise the child gets the program).
    pub fn get_arg0(&self) -> Option<&OsStr> {
        self.arg0.as_deref()
    }

    /// The arguments after argv\[0\], in order, as std's `Command::get_args`.
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> + DoubleEndedIterator {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The environment changes made on this command, sorted by name: `(name, Some(value))`
    /// for a variable set, `(name, None)` for one removed. As std's `Command::get_envs`, the
    /// inherited environment is not included, and after [`env_clear`](Command::env_clear)
    /// only the variables set since are (see [`get_env_clear`](Command::get_env_clear)).
    pub fn get_envs(&self) -> impl ExactSizeIterator<Item = (&OsStr, Option<&OsStr>)> {
        self.env
            .iter()
            .map(|(key, value)| (key.as_os_str(), value.as_deref()))
    }

    /// `true` if [`env_clear`](Command::env_clear) was called: the child starts from an empty
    /// environment rather than the parent's.
    pub fn get_env_clear(&self) -> bool {
        self.env_clear
    }

    /// The working directory set with [`current_dir`](Command::current_dir), if any.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The user id set with [`uid`](Command::uid), if any.
    pub fn get_uid(&self) -> Option<u32> {
        self.uid
    }

    /// The group id set with [`gid`](Command::gid), if any.
    pub fn get_gid(&self) -> Option<u32> {
        self.gid
    }

    /// The supplementary groups set with [`groups`](Command::groups), if any.
    pub fn get_groups(&self) -> Option<&[u32]> {
        self.groups.as_deref()
    }

    /// The process group set with [`process_group`](Command::process_group), unless
    /// [`new_session`](Command::new_session) was called after it (each replaces the other).
    pub fn get_process_group(&self) -> Option<i32> {
        match self.session {
            SessionOption::ProcessGroup(pgid) => Some(pgid),
            SessionOption::Inherit | SessionOption::NewSession => None,
        }
    }

    /// `true` if [`new_session`](Command::new_session) was called and no
    /// [`process_group`](Command::process_group) after it.
    pub fn get_new_session(&self) -> bool {
        self.session == SessionOption::NewSession
    }

    /// The signal set with [`parent_death_signal`](Command::parent_death_signal), if any.
    pub fn get_parent_death_signal(&self) -> Option<Signal> {
        self.parent_death_signal.map(Signal::from)
    }

    /// The fd map, sorted by child fd. In [`pty`](Command::pty) mode the terminal takes fds
    /// 0, 1 and 2 at spawn whatever the map says about them.
    pub fn get_fds(&self) -> impl ExactSizeIterator<Item = (RawFd, ChildFd)> {
        self.fds
            .iter()
            .map(|(&child_fd, what)| (child_fd, what.clone()))
    }

    /// The mask set with [`umask`](Command::umask), if any.
    pub fn get_umask(&self) -> Option<u32> {
        self.umask
    }

    /// The resource limits set with [`rlimit`](Command::rlimit), as `(resource, soft, hard)`,
    /// sorted by resource.
    pub fn get_rlimits(&self) -> impl ExactSizeIterator<Item = (i32, u64, u64)> + '_ {
        self.rlimits
            .iter()
            .map(|(&resource, &(soft, hard))| (resource, soft, hard))
    }

    /// Whether [`no_new_privs`](Command::no_new_privs) is on.
    pub fn get_no_new_privs(&self) -> bool {
        self.no_new_privs
    }

    /// The directory given to [`cgroup`](Command::cgroup), unless
    /// [`transient_cgroup`](Command::transient_cgroup) replaced it.
    pub fn get_cgroup(&self) -> Option<&Path> {
        match &self.cgroup {
            CgroupOption::Join(dir) => Some(dir),
            CgroupOption::None | CgroupOption::Transient(_) => None,
        }
    }

    /// The parent directory given to [`transient_cgroup`](Command::transient_cgroup), unless
    /// [`cgroup`](Command::cgroup) replaced it.
    pub fn get_transient_cgroup(&self) -> Option<&Path> {
        match &self.cgroup {
            CgroupOption::Transient(parent) => Some(parent),
            CgroupOption::None | CgroupOption::Join(_) => None,
        }
    }

    /// Spawns the child: shorthand for [`spawn_process(self)`](crate::spawn_process).
    pub fn spawn(&self) -> Result<crate::ProcessTransport, crate::SpawnError> {
        crate::spawn_process(self)
    }
}

impl From<&std::process::Command> for Command {
    /// A command with everything std's `Command` lets one read back: the program, the
    /// arguments, the environment changes (variables set and removed) and the working
    /// directory. The fd map is the default one.
    ///
    /// **Not carried**, because std has no stable getter for them: [`env_clear`](Command::env_clear)
    /// (a std command that cleared its environment gives one that inherits the parent's, plus
    /// the variables it set: call `env_clear` again and set them back if that matters), and
    /// from `std::os::unix::process::CommandExt` the `arg0`, `uid`, `gid`, `groups`,
    /// `process_group` and `pre_exec` settings; nor std's `stdin`/`stdout`/`stderr`.
    ///
    /// For a `tokio::process::Command`, convert its `as_std()`.
    fn from(std_command: &std::process::Command) -> Self {
        let mut command = Command::new(std_command.get_program());
        command.args(std_command.get_args());
        for (key, value) in std_command.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = std_command.get_current_dir() {
            command.current_dir(dir);
        }
        command
    }
}
