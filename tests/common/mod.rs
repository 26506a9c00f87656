//! Helpers shared by the integration tests: driving a transport to its end while recording
//! every event (two styles: [`run_to_end`] checks the ordering guarantees on the way,
//! [`collect`] just drains with a deadline), checking the ordering guarantees, looking at
//! fds, processes and zombies through `/proc`, running tests one at a time, and changing
//! RLIMIT_NOFILE.
//!
//! Each test binary uses a subset, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod pidns;
pub mod rerun;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::IntoFuture;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{CloseReason, Command, Event, ExitStatus, ProcessTransport, WaitError};

/// How long any single child may take before a test calls it a hang.
pub const LIMIT: Duration = Duration::from_secs(15);

/// Awaits `fut`, failing the test (instead of hanging) if it takes longer than [`LIMIT`].
/// Takes anything awaitable, a `ProcessTransport` included.
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// A Python interpreter for children that `sh` cannot express. Prefers the system one (the
/// pyenv shim is a bash script that is slower to start).
pub fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A Python snippet that writes the fds open in the (Python) child, space separated, to
/// `out_fd`. `listdir` opens (and closes) an fd of its own, so only fds still open after the
/// listing are kept.
pub fn py_list_fds(out_fd: i32) -> String {
    let script = r#"
import os
def is_open(f):
    try:
        os.fstat(f)
        return True
    except OSError:
        return False
fds = sorted(f for f in map(int, os.listdir('/proc/self/fd')) if is_open(f))
os.write(OUT_FD, ' '.join(map(str, fds)).encode())
"#;
    script.replace("OUT_FD", &out_fd.to_string())
}

/// What happened, in order, without the payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    Data(i32, usize),
    Closed(i32, String),
    Exited(Result<ExitStatus, WaitError>),
    Ended(Result<ExitStatus, WaitError>),
    Other(String),
}

/// Everything a transport reported, collected by [`run_to_end`].
#[derive(Debug, Default)]
pub struct Outcome {
    pub log: Vec<Rec>,
    pub data: BTreeMap<i32, Vec<u8>>,
    pub closes: BTreeMap<i32, String>,
}

impl Outcome {
    /// The bytes the child wrote on `fd`, as text.
    pub fn text(&self, fd: i32) -> String {
        String::from_utf8_lossy(self.data.get(&fd).map(Vec::as_slice).unwrap_or(b"")).into_owned()
    }

    /// The final status (from `Ended`).
    pub fn status(&self) -> ExitStatus {
        match self.log.last() {
            Some(Rec::Ended(Ok(status))) => *status,
            other => panic!("last event is not a successful Ended: {other:?}"),
        }
    }

    /// The close reason of `fd`, as `Debug` text.
    pub fn close_reason(&self, fd: i32) -> &str {
        self.closes
            .get(&fd)
            .unwrap_or_else(|| panic!("fd {fd} never closed: {:?}", self.log))
    }

    /// Asserts the documented ordering guarantees: per fd, data before its single close;
    /// `Exited` exactly once; `Ended` exactly once, last, after `Exited` and after the close of
    /// every pipe in `pipes`.
    pub fn assert_well_ordered(&self, pipes: &[i32]) {
        let mut closed = BTreeSet::new();
        let mut exited = 0;
        for (i, rec) in self.log.iter().enumerate() {
            match rec {
                Rec::Data(fd, n) => {
                    assert!(*n > 0, "empty Data event on fd {fd}");
                    assert!(
                        !closed.contains(fd),
                        "data on fd {fd} after its close: {:?}",
                        self.log
                    );
                    assert!(pipes.contains(fd), "data on fd {fd}, which is not a pipe");
                }
                Rec::Closed(fd, _) => {
                    assert!(closed.insert(*fd), "fd {fd} closed twice: {:?}", self.log);
                    assert!(pipes.contains(fd), "close of fd {fd}, which is not a pipe");
                }
                Rec::Exited(_) => exited += 1,
                Rec::Other(_) => {}
                Rec::Ended(status) => {
                    assert_eq!(i, self.log.len() - 1, "Ended is not last: {:?}", self.log);
                    assert_eq!(exited, 1, "Ended before Exited: {:?}", self.log);
                    let exit = self.log.iter().find_map(|r| match r {
                        Rec::Exited(s) => Some(*s),
                        _ => None,
                    });
                    assert_eq!(exit, Some(*status), "Ended and Exited disagree");
                }
            }
        }
        assert_eq!(exited, 1, "Exited must come exactly once: {:?}", self.log);
        let expected: BTreeSet<i32> = pipes.iter().copied().collect();
        assert_eq!(
            closed, expected,
            "every pipe closes exactly once: {:?}",
            self.log
        );
        assert!(
            matches!(self.log.last(), Some(Rec::Ended(_))),
            "no Ended: {:?}",
            self.log
        );
    }
}

/// Records one event into `out`; returns `true` for `Ended`.
pub fn record(out: &mut Outcome, event: Event) -> bool {
    match event {
        Event::Data { fd, data } => {
            out.log.push(Rec::Data(fd, data.len()));
            out.data.entry(fd).or_default().extend_from_slice(&data);
        }
        Event::Closed { fd, reason } => {
            let reason = format!("{reason:?}");
            out.log.push(Rec::Closed(fd, reason.clone()));
            out.closes.insert(fd, reason);
        }
        Event::Exited(status) => out.log.push(Rec::Exited(status)),
        Event::Ended(status) => {
            out.log.push(Rec::Ended(status));
            return true;
        }
        // Flow-control and later additions: logged, not part of the core guarantees.
        other => out.log.push(Rec::Other(format!("{other:?}"))),
    }
    false
}

/// Consumes the transport's event stream to its end (with a timeout), checking on the way
/// that `pid()` is `None` once `Exited` was seen and that the stream finishes after `Ended`.
pub async fn run_to_end(transport: &mut ProcessTransport) -> Outcome {
    within("event stream to end", async {
        let mut out = Outcome::default();
        while let Some(event) = transport.next().await {
            let exited = matches!(event, Event::Exited(_));
            let ended = record(&mut out, event);
            if exited {
                assert_eq!(transport.pid(), None, "pid() must be None once reaped");
            }
            if ended {
                assert!(
                    transport.next().await.is_none(),
                    "the stream goes on after Ended"
                );
                return out;
            }
        }
        panic!("stream finished without Ended: {:?}", out.log);
    })
    .await
}

/// `true` for a close reason that is `CloseReason::Eof`.
pub fn is_eof(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Eof)
}

/// A close-on-exec pipe made by the test itself: `(read end, write end)`.
pub fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two ints.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads `fd` to EOF with blocking reads (on a blocking thread).
pub async fn read_to_end(fd: OwnedFd) -> Vec<u8> {
    within(
        "reading a test pipe to EOF",
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::from(fd);
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).expect("read test pipe");
            buf
        }),
    )
    .await
    .expect("reader thread")
}

/// The fds open in this process right now (not counting the one used to list them).
pub fn open_fds() -> BTreeSet<RawFd> {
    let mut fds: BTreeSet<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // SAFETY: F_GETFD only reads flags; the listing's own fd is closed by now (EBADF).
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
    fds
}

/// Asserts that this process holds exactly the fds of `fds_before` again and has no zombie
/// child.
pub fn assert_nothing_leaked(fds_before: &BTreeSet<RawFd>) {
    assert_eq!(&open_fds(), fds_before, "fds leaked");
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies left");
}

// ----- /proc/<pid>/stat -----------------------------------------------------------------------

/// The fields of `/proc/<pid>/stat` from field 3 (the state letter) on, or `None` if the
/// process is gone. Index `i` here is field `i + 3` of proc(5).
pub fn stat_fields(pid: impl Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The state letter of `pid` from /proc, or `None` once it is gone.
pub fn process_state(pid: impl Display) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// `true` while `pid` exists and is neither a zombie nor dead.
pub fn is_alive(pid: impl Display) -> bool {
    process_state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// Every pid in /proc right now.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The state letter and parent pid of `pid` from `/proc/<pid>/stat`, or `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let fields = stat_fields(pid)?;
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    Some((state, ppid))
}

/// `true` if `pid` is an unreaped (zombie) child of this process.
pub fn is_our_zombie(pid: u32) -> bool {
    matches!(proc_state(pid), Some(('Z', ppid)) if ppid == std::process::id())
}

/// Waits (polling, up to [`LIMIT`]) until `pid` is no longer a process of ours: neither
/// running as our child nor a zombie. Panics if that does not happen.
pub async fn assert_reaped_eventually(pid: u32) {
    let me = std::process::id();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match proc_state(pid) {
            None => return,
            Some((_, ppid)) if ppid != me => return,
            Some(state) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "pid {pid} still ours after {LIMIT:?}: {state:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pids of this process's children that are zombies right now.
pub fn zombie_children() -> Vec<i32> {
    children_in_state(|state| state == 'Z')
}

/// The pids of all children of this process (any state).
pub fn children() -> Vec<i32> {
    children_in_state(|_| true)
}

fn children_in_state(want: impl Fn(char) -> bool) -> Vec<i32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            matches!(proc_state(pid as u32), Some((state, ppid)) if ppid == me && want(state))
        })
        .collect()
}

// ----- waiting --------------------------------------------------------------------------------

/// Polls `cond` every 10 ms (blocking the thread) until it holds; false after `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every 10 ms (yielding to the runtime) until it holds; false after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Holds off the other tests of this binary that take it (or run [`serially`]), surviving a
/// panic in one of them.
pub fn serial_lock() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `test` alone among the tests of its binary that use this too, on a fresh runtime
/// from `runtime` that is gone before the next such test starts. For tests that count fds
/// or children of the whole process (a runtime's own fds would otherwise come and go during
/// another test's count).
pub fn serially<F: std::future::Future>(
    runtime: &mut tokio::runtime::Builder,
    test: F,
) -> F::Output {
    let _serial = serial_lock();
    let rt = runtime.enable_all().build().unwrap();
    let output = rt.block_on(test);
    drop(rt);
    output
}

/// Whether this process may change credentials (the uid tests need root).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `script` with Python in isolated mode (`-I -S`: no site, no user env).
pub fn py(script: &str) -> process_transport::Command {
    let mut command = process_transport::Command::new(python());
    command.args(["-I", "-S", "-c", script]);
    command
}

/// A command running `script` with `sh -c`.
pub fn sh(script: &str) -> process_transport::Command {
    let mut command = process_transport::Command::new("sh");
    command.args(["-c", script]);
    command
}

/// A fresh directory for one test's files, removed and recreated.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pt-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `content` to `path` with permission bits `mode`.
pub fn write_file(path: &std::path::Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Spawns `command`, retrying while exec says `ETXTBSY`: a file this test just wrote can be
/// held open for writing for a moment by a child that another test thread is forking.
pub fn spawn_fresh_file(
    command: &process_transport::Command,
) -> Result<ProcessTransport, process_transport::SpawnError> {
    for _ in 0..100 {
        match command.spawn() {
            Err(process_transport::SpawnError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
    panic!("exec kept failing with ETXTBSY");
}

// ----- draining a transport -------------------------------------------------------------------

/// Reads fd 1 until it holds `needle` (up to 10 s), returning everything read so far.
pub async fn read_until(t: &mut ProcessTransport, needle: &str) -> String {
    let mut out = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = t.next().await {
            if let Event::Data { fd: 1, data } = event {
                out.extend_from_slice(&data);
                if String::from_utf8_lossy(&out).contains(needle) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(found, Ok(true), "never saw {needle:?} on fd 1; got {out:?}");
    out
}

/// Drains the transport until its stream ends, returning every event; panics after `limit`.
pub async fn all_events(t: &mut ProcessTransport, limit: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    let drain = async {
        while let Some(event) = t.next().await {
            events.push(event);
        }
    };
    if tokio::time::timeout(limit, drain).await.is_err() {
        panic!("the transport did not end within {limit:?}");
    }
    events
}

/// Everything a transport reported, as collected by [`collect`] (a looser record than
/// [`Outcome`]: no ordering checks on the way, a compact log).
#[derive(Debug, Default)]
pub struct Collected {
    pub data: BTreeMap<i32, Vec<u8>>,
    /// Closes in order, with a short description of the reason (see [`describe_close`]).
    pub closed: Vec<(i32, String)>,
    pub exited: Vec<Result<ExitStatus, WaitError>>,
    pub ended: Vec<Result<ExitStatus, WaitError>>,
    /// A compact log: "data 1", "closed 1", "exited", "ended".
    pub log: Vec<String>,
}

impl Collected {
    pub fn out(&self, fd: i32) -> &[u8] {
        self.data.get(&fd).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The final status, asserting that `Exited` and `Ended` came exactly once each, agree,
    /// and `Ended` was last.
    pub fn status(&self) -> ExitStatus {
        assert_eq!(self.exited.len(), 1, "Exited events: {:?}", self.log);
        assert_eq!(self.ended.len(), 1, "Ended events: {:?}", self.log);
        assert_eq!(self.log.last().map(String::as_str), Some("ended"));
        let ended = self.ended[0].expect("ended with a wait error");
        assert_eq!(self.exited[0], Ok(ended));
        ended
    }
}

/// A short description of a close reason: "eof", "closed", "wait-delay", "error <errno>".
pub fn describe_close(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Eof => "eof".into(),
        CloseReason::Closed => "closed".into(),
        CloseReason::WaitDelay => "wait-delay".into(),
        CloseReason::Error(e) => format!("error {:?}", e.raw_os_error()),
        other => format!("{other:?}"),
    }
}

/// Records one event into `collected`.
pub fn collect_event(collected: &mut Collected, event: Event) {
    match event {
        Event::Data { fd, data } => {
            collected
                .data
                .entry(fd)
                .or_default()
                .extend_from_slice(&data);
            collected.log.push(format!("data {fd}"));
        }
        Event::Closed { fd, reason } => {
            collected.closed.push((fd, describe_close(&reason)));
            collected.log.push(format!("closed {fd}"));
        }
        Event::Exited(r) => {
            collected.exited.push(r);
            collected.log.push("exited".into());
        }
        Event::Ended(r) => {
            collected.ended.push(r);
            collected.log.push("ended".into());
        }
        _ => {}
    }
}

/// Drains the transport until its stream ends; panics after `limit`.
pub async fn collect(transport: &mut ProcessTransport, limit: Duration) -> Collected {
    let mut collected = Collected::default();
    for event in all_events(transport, limit).await {
        collect_event(&mut collected, event);
    }
    collected
}

/// Spawns a child that reads one line, closes its stdin and lingers, writes it
/// `first_line` followed by 1 MiB, and returns the child with the reason stdin closed
/// (expected: EPIPE), waited for up to `limit`.
pub async fn write_past_a_closed_stdin(
    first_line: &[u8],
    limit: Duration,
) -> (ProcessTransport, CloseReason) {
    let mut child = Command::new("sh")
        .args(["-c", "read line; exec 0<&-; sleep 2"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut data = first_line.to_vec();
    data.extend(std::iter::repeat_n(b'x', 1 << 20));
    child.write(0, data).unwrap();
    let reason = tokio::time::timeout(limit, async {
        loop {
            if let Event::Closed { fd: 0, reason } = child.next().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    (child, reason)
}

// ----- fd limits and fd identities ------------------------------------------------------------

/// RLIMIT_NOFILE as (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

/// Sets the soft RLIMIT_NOFILE (capped at the hard limit); returns the soft limit in force.
pub fn set_nofile_soft(soft: u64) -> u64 {
    let (_, hard) = nofile_limit();
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit with a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    nofile_limit().0
}

/// (device, inode) of a parent fd.
pub fn identity(fd: i32) -> (u64, u64) {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat into a valid out-pointer.
    assert_eq!(unsafe { libc::fstat(fd, st.as_mut_ptr()) }, 0, "fstat {fd}");
    // SAFETY: filled by fstat.
    let st = unsafe { st.assume_init() };
    (st.st_dev, st.st_ino)
}

/// A python program that writes "fd dev ino" for each of its open fds to fd `report`.
pub fn fd_report_script(report: i32) -> String {
    format!(
        "import os\n\
         lines = []\n\
         for name in sorted(os.listdir('/proc/self/fd'), key=int):\n\
         \x20   try:\n\
         \x20       st = os.fstat(int(name))\n\
         \x20   except OSError:\n\
         \x20       continue\n\
         \x20   lines.append('%s %d %d' % (name, st.st_dev, st.st_ino))\n\
         os.write({report}, ('\\n'.join(lines) + '\\n').encode())\n"
    )
}

/// Parses the report of [`fd_report_script`], leaving out the fd python used to list the
/// directory (already closed, so fstat failed and it is absent).
pub fn parse_fd_report(report: &[u8]) -> BTreeMap<i32, (u64, u64)> {
    String::from_utf8_lossy(report)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            let fd = it.next().unwrap() as i32;
            (fd, (it.next().unwrap(), it.next().unwrap()))
        })
        .collect()
}
