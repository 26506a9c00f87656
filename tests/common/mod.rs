//! Helpers shared by the core integration tests: driving a transport to its end while
//! recording every event, checking the ordering guarantees, and looking at fds and zombies
//! through `/proc`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use futures::StreamExt;
use process_transport::{CloseReason, Event, ExitStatus, ProcessTransport, WaitError};

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

/// The fds open in this process right now.
pub fn open_fds() -> BTreeSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The state letter and parent pid of `pid` from `/proc/<pid>/stat`, or `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
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

/// Every zombie child of this process right now.
pub fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_state(pid), Some(('Z', ppid)) if ppid == me))
        .collect()
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
) -> Result<ProcessTransport, process_transport::Error> {
    for _ in 0..100 {
        match command.spawn() {
            Err(process_transport::Error::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
    panic!("exec kept failing with ETXTBSY");
}
