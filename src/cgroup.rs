//! cgroup v2 placement and containment: joining an existing cgroup, or a transient cgroup per
//! child that `kill_tree` empties with `cgroup.kill`, that reports the tree's resource use,
//! and that a background janitor removes once no process is left in it.
//!
//! **How the child gets in.** On x86-64 the child is created inside the cgroup, with
//! `clone3(CLONE_INTO_CGROUP)` (5.7) on a directory fd the parent opened; `sys::child`
//! carries the few lines of assembly a raw `clone3` with a new stack needs, since glibc 2.36
//! has no wrapper. Born there, nothing of the child runs or is accounted outside the cgroup,
//! and the cgroup's limits (`pids.max`) apply to its very creation. The other way, the child
//! moving itself by writing `0` to `cgroup.procs` through the directory fd as its first step
//! after clone, is the path for kernels before 5.7, for a seccomp filter that refuses
//! `clone3`, for other architectures, and after any `clone3` failure (so that a refusal is
//! reported as [`SpawnStep::JoinCgroup`](crate::SpawnStep::JoinCgroup) rather than as a failed
//! clone). Either way the program starts inside the cgroup. The choice is for the placement,
//! not for speed: measured here (x86-64, 6.x, `cargo bench --bench compare -- --only setup`), both ways add about
//! 30-45 µs to a spawn at the 10th percentile (medians on the loaded test machine are too
//! noisy to tell them apart), and a transient cgroup adds its `mkdir`, the opening of two
//! files and a first placement, 150-220 µs in all; its removal happens off the spawning
//! thread.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::command::CgroupOption;
use crate::error::Error;
use crate::sys;
use crate::transport::ProcessTransport;

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`, or `None` if
/// there is none (or `/proc` is not mounted).
///
/// On a unified system it is usually `/sys/fs/cgroup`; on a hybrid one (v1 controllers plus
/// a v2 hierarchy) it is elsewhere, often `/sys/fs/cgroup/unified`. Give a directory under it
/// to [`Command::transient_cgroup`](crate::Command::transient_cgroup) or
/// [`Command::cgroup`](crate::Command::cgroup): best one delegated to this process, or
/// the cgroup this process is in (see `/proc/self/cgroup`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // "id parent major:minor root mount-point options [optional...] - fstype source ..."
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(unescape_mount_path)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Resource use of a [transient cgroup](crate::Command::transient_cgroup): the whole tree,
/// the processes that already exited included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CgroupUsage {
    /// CPU time, user and system (`cpu.stat`'s `usage_usec`).
    pub cpu: Duration,
    /// User CPU time (`user_usec`).
    pub user: Duration,
    /// System CPU time (`system_usec`).
    pub system: Duration,
    /// The most memory the tree used at once, in bytes (`memory.peak`), where the memory
    /// controller is enabled for the cgroup (and the kernel is 5.19 or later).
    pub memory_peak: Option<u64>,
}

impl CgroupUsage {
    fn read(dir: &Path) -> io::Result<CgroupUsage> {
        let stat = std::fs::read_to_string(dir.join("cpu.stat"))?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .map(Duration::from_micros)
                .unwrap_or_default()
        };
        let memory_peak = std::fs::read_to_string(dir.join("memory.peak"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(CgroupUsage {
            cpu: field("usage_usec"),
            user: field("user_usec"),
            system: field("system_usec"),
            memory_peak,
        })
    }
}

/// A cgroup prepared for one spawn: what the child writes itself into, and, for a transient
/// cgroup, the cgroup itself (removed again if the spawn fails).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The cgroup's directory, which the child is created in (or moves itself into).
    dir: File,
    transient: Option<Arc<Inner>>,
}

/// Set to `move` to have every child move itself into its cgroup rather than be created in
/// it (the path for kernels without `CLONE_INTO_CGROUP`, forced, to test it).
const ENTRY_ENV: &str = "PROCESS_TRANSPORT_CGROUP_ENTRY";

impl Prepared {
    /// Opens or makes the cgroup `option` asks for; `None` for none.
    pub(crate) fn new(option: &CgroupOption) -> io::Result<Option<Prepared>> {
        if *option == CgroupOption::None {
            return Ok(None);
        }
        static ENTRY_CHECKED: std::sync::Once = std::sync::Once::new();
        ENTRY_CHECKED.call_once(|| {
            if std::env::var_os(ENTRY_ENV).is_some_and(|v| v == "move") {
                sys::child::disable_clone_into_cgroup();
            }
        });
        let (dir, transient) = match option {
            CgroupOption::None => return Ok(None),
            CgroupOption::Join(dir) => (dir.clone(), false),
            CgroupOption::Transient(parent) => (make_transient(parent)?, true),
        };
        let opened = (|| {
            let dir_file = File::open(&dir)?;
            if !sys::cgroup::is_cgroup2(dir_file.as_fd())? {
                return Err(not_cgroup2(&dir));
            }
            let events = if transient {
                Some(File::open(dir.join("cgroup.events"))?)
            } else {
                None
            };
            Ok((dir_file, events))
        })();
        let (dir_file, events) = match opened {
            Ok(files) => files,
            Err(e) => {
                if transient {
                    let _ = std::fs::remove_dir(&dir);
                }
                return Err(e);
            }
        };
        let transient = events.map(|events| {
            Arc::new(Inner {
                dir,
                events,
                state: Mutex::new(State::default()),
            })
        });
        Ok(Some(Prepared {
            dir: dir_file,
            transient,
        }))
    }

    /// The directory's fd, for the child.
    pub(crate) fn dir_fd(&self) -> i32 {
        self.dir.as_raw_fd()
    }

    /// The child is in: hands the transient cgroup (if any) to the janitor and to the
    /// transport.
    pub(crate) fn started(mut self, kill_on_drop: bool) -> Option<Containment> {
        let inner = self.transient.take()?;
        janitor_watch(&inner);
        Some(Containment {
            inner,
            kill_on_drop,
        })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // The spawn failed: the child (if any) has been reaped, so the cgroup is empty.
        if let Some(inner) = self.transient.take() {
            let _ = inner.remove();
        }
    }
}

fn not_cgroup2(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{} is not on a cgroup v2 mount", dir.display()),
    )
}

/// Makes a new, uniquely named cgroup under `parent`.
fn make_transient(parent: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Checked first, so that a directory elsewhere is refused rather than filled with
    // subdirectories.
    let parent_dir = File::open(parent)?;
    if !sys::cgroup::is_cgroup2(parent_dir.as_fd())? {
        return Err(not_cgroup2(parent));
    }
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("process-transport-{pid}-{n}"));
        match std::fs::create_dir(&dir) {
            // A leftover of an earlier process with our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(dir),
        }
    }
}

/// A transient cgroup, shared by its transport and the janitor.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// `cgroup.events`, opened before the child joined, so that every change of `populated`
    /// after that shows as `POLLPRI`.
    events: File,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The directory is gone; `last` holds the usage read just before.
    removed: bool,
    last: Option<CgroupUsage>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `cgroup.events` says no process is left (in it or below).
    fn is_empty(&self) -> io::Result<bool> {
        let mut buf = [0u8; 256];
        // Reading from the start re-arms the change notification.
        let n = self.events.read_at(&mut buf, 0)?;
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
        Ok(text.lines().any(|l| l == "populated 0"))
    }

    /// Keeps the final usage and removes the cgroup (and any the tree made inside it).
    fn remove(&self) -> io::Result<()> {
        let mut state = self.state();
        if state.removed {
            return Ok(());
        }
        if let Ok(usage) = CgroupUsage::read(&self.dir) {
            state.last = Some(usage);
        }
        remove_tree(&self.dir)?;
        state.removed = true;
        Ok(())
    }

    /// The usage now, or the last one read if the cgroup is gone.
    fn usage(&self) -> io::Result<CgroupUsage> {
        let state = self.state();
        if state.removed {
            return state.last.ok_or_else(|| {
                io::Error::other("the cgroup was removed before its usage was read")
            });
        }
        CgroupUsage::read(&self.dir)
    }

    /// The pids in the cgroup and below it.
    fn members(&self) -> io::Result<Vec<i32>> {
        let mut pids = Vec::new();
        collect_members(&self.dir, &mut pids)?;
        Ok(pids)
    }

    /// Writes `value` to one of the cgroup's control files, unless it is gone already
    /// (`Ok(false)`).
    fn write(&self, file: &str, value: &[u8]) -> io::Result<bool> {
        let state = self.state();
        if state.removed {
            return Ok(false);
        }
        File::options()
            .write(true)
            .open(self.dir.join(file))?
            .write_all(value)?;
        Ok(true)
    }
}

fn collect_members(dir: &Path, pids: &mut Vec<i32>) -> io::Result<()> {
    let mut text = String::new();
    File::open(dir.join("cgroup.procs"))?.read_to_string(&mut text)?;
    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_members(&entry.path(), pids)?;
        }
    }
    Ok(())
}

/// `rmdir` of `dir` after every cgroup below it, deepest first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The transient cgroup of one transport.
#[derive(Debug)]
pub(crate) struct Containment {
    inner: Arc<Inner>,
    kill_on_drop: bool,
}

impl Containment {
    /// What signalling the tree needs, for the transport and each of its handles.
    pub(crate) fn tree(&self) -> TreeCgroup {
        TreeCgroup(self.inner.clone())
    }
}

/// A transient cgroup seen as the child's tree, to signal all of it.
#[derive(Debug, Clone)]
pub(crate) struct TreeCgroup(Arc<Inner>);

impl TreeCgroup {
    /// `kill_tree` through the cgroup: SIGKILL with `cgroup.kill` (atomic, every descendant);
    /// any other signal to each member of the frozen cgroup, the child through
    /// `signal_child`. Returns how many besides the child were signalled; `None` sends the
    /// caller to the `/proc` walk (no freezer).
    pub(crate) fn kill_tree(
        &self,
        child: libc::pid_t,
        signal_child: impl Fn(i32),
        sig: i32,
    ) -> Option<usize> {
        let inner = &self.0;
        let others = |pids: &[i32]| pids.iter().filter(|&&p| p != child).count();
        if sig == libc::SIGKILL {
            let members = inner.members().unwrap_or_default();
            match inner.write("cgroup.kill", b"1") {
                Ok(true) => return Some(others(&members)),
                // Gone: nothing is left to kill.
                Ok(false) => return Some(0),
                // No cgroup.kill before 5.14: freeze and signal each instead.
                Err(_) => {}
            }
        }
        // Frozen, no member can fork or exit (short of a SIGKILL from elsewhere), so the
        // list is complete and no pid in it can be reused before the signal lands.
        match inner.write("cgroup.freeze", b"1") {
            Ok(true) => {}
            Ok(false) => return Some(0),
            Err(_) => return None,
        }
        let frozen = wait_frozen(inner, Duration::from_secs(2));
        let members = inner.members().unwrap_or_default();
        let mut count = 0;
        for &pid in &members {
            if pid == child {
                signal_child(sig);
            } else if sys::cgroup::kill(pid, sig).is_ok() {
                count += 1;
            }
        }
        let _ = inner.write("cgroup.freeze", b"0");
        if !frozen {
            tracing::debug!(dir = %inner.dir.display(), "kill_tree: the cgroup did not report frozen in time");
        }
        Some(count)
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        if self.kill_on_drop {
            // The janitor removes the cgroup once the tree has died.
            let _ = self.inner.write("cgroup.kill", b"1");
        } else if self.inner.is_empty().unwrap_or(false) {
            // Already over: remove it now rather than on the janitor's next turn (and even
            // without a janitor).
            let _ = self.inner.remove();
        }
    }
}

// ----- the janitor ---------------------------------------------------------------------------

/// The thread that removes transient cgroups once empty: it waits in `poll` on each one's
/// `cgroup.events` and on a wake-up pipe through which new cgroups are announced.
struct Janitor {
    /// The process it runs in: after a `fork` the thread is gone and a new one is needed.
    pid: u32,
    watched: Arc<Mutex<Vec<Arc<Inner>>>>,
    wake: File,
}

static JANITOR: Mutex<Option<Janitor>> = Mutex::new(None);

/// Hands `inner` to the janitor (started on first use). If no thread can be started, the
/// cgroup is removed when the transport drops, if it is empty by then.
fn janitor_watch(inner: &Arc<Inner>) {
    let mut janitor = JANITOR.lock().unwrap_or_else(|e| e.into_inner());
    if janitor.as_ref().is_none_or(|j| j.pid != std::process::id()) {
        *janitor = start_janitor().ok();
    }
    match janitor.as_mut() {
        Some(j) => {
            j.watched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(inner.clone());
            // Non-blocking: a full pipe already holds a wake-up.
            let _ = j.wake.write(&[1]);
        }
        None => tracing::warn!(
            dir = %inner.dir.display(),
            "no cgroup janitor thread: the cgroup is removed only if empty when its transport drops"
        ),
    }
}

fn start_janitor() -> io::Result<Janitor> {
    let (read, write) = std::io::pipe()?;
    let write = OwnedFd::from(write);
    sys::cgroup::set_nonblocking(write.as_fd())?;
    let watched: Arc<Mutex<Vec<Arc<Inner>>>> = Arc::default();
    let list = watched.clone();
    let read = OwnedFd::from(read);
    std::thread::Builder::new()
        .name("process-transport-cgroups".into())
        .spawn(move || janitor_loop(File::from(read), &list))?;
    Ok(Janitor {
        pid: std::process::id(),
        watched,
        wake: File::from(write),
    })
}

fn janitor_loop(mut wake: File, list: &Mutex<Vec<Arc<Inner>>>) {
    loop {
        let watched: Vec<Arc<Inner>> = list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Every cgroup is checked after every wake-up: a handful of small reads, and no
        // change can be missed between announcing a cgroup and polling it.
        let mut done = Vec::new();
        let mut retry = false;
        for inner in &watched {
            match inner.is_empty() {
                Ok(true) => match inner.remove() {
                    Ok(()) => done.push(Arc::as_ptr(inner)),
                    // Still busy for a moment (a member between exit and release): again soon.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => retry = true,
                    Err(e) => {
                        tracing::warn!(dir = %inner.dir.display(), error = %e, "removing a cgroup failed");
                        done.push(Arc::as_ptr(inner));
                    }
                },
                Ok(false) => {}
                // Removed from outside: nothing left to do.
                Err(_) => done.push(Arc::as_ptr(inner)),
            }
        }
        if !done.is_empty() {
            list.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|i| !done.contains(&Arc::as_ptr(i)));
        }
        let watched: Vec<Arc<Inner>> = list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fds: Vec<_> = watched.iter().map(|i| i.events.as_fd()).collect();
        let timeout = if retry { 20 } else { -1 };
        match sys::cgroup::poll(wake.as_fd(), &fds, timeout) {
            Ok(true) => {
                let mut buf = [0u8; 64];
                let _ = wake.read(&mut buf);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cgroup janitor poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

// ----- the transport's side ------------------------------------------------------------------

impl ProcessTransport {
    /// The child's [transient cgroup](crate::Command::transient_cgroup), while it exists
    /// (`None` without one, or once it has been removed).
    pub fn cgroup_path(&self) -> Option<PathBuf> {
        let inner = &self.cgroup.as_ref()?.inner;
        (!inner.state().removed).then(|| inner.dir.clone())
    }

    /// The resource use of the child's whole tree, from its
    /// [transient cgroup](crate::Command::transient_cgroup): live while the tree runs, and
    /// the final figures once the cgroup has been removed.
    ///
    /// Fails with an [`Error::Io`] of kind `Unsupported` for a child spawned without a
    /// transient cgroup.
    pub fn cgroup_usage(&self) -> Result<CgroupUsage, Error> {
        let containment = self.cgroup.as_ref().ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "the child was spawned without a transient cgroup",
            ))
        })?;
        containment.inner.usage().map_err(Error::Io)
    }
}

/// Waits until `cgroup.events` says `frozen 1`, at most `limit`.
fn wait_frozen(inner: &Inner, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let mut buf = [0u8; 256];
        let frozen = inner.events.read_at(&mut buf, 0).is_ok_and(|n| {
            String::from_utf8_lossy(buf.get(..n).unwrap_or_default())
                .lines()
                .any(|l| l == "frozen 1")
        });
        if frozen || start.elapsed() > limit {
            return frozen;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mount_path(r"/sys/fs/cgroup/a\040b\134c"),
            PathBuf::from("/sys/fs/cgroup/a b\\c")
        );
        assert_eq!(unescape_mount_path(r"/x\04"), PathBuf::from(r"/x\04"));
    }
}
