//! Helpers shared by the reliability, fault and security tests: collecting a transport's
//! events with a deadline, counting fds, finding zombies, and changing RLIMIT_NOFILE.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{CloseReason, Event, ExitStatus, ProcessTransport, WaitError};

/// A python3 that is a real binary (not a shell shim), so that the child runs nothing else.
pub fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Everything a transport reported, in order.
#[derive(Debug, Default)]
pub struct Outcome {
    pub data: BTreeMap<i32, Vec<u8>>,
    /// Closes in order, with a short description of the reason.
    pub closed: Vec<(i32, String)>,
    pub exited: Vec<Result<ExitStatus, WaitError>>,
    pub ended: Vec<Result<ExitStatus, WaitError>>,
    /// A compact log: "data 1", "closed 1", "exited", "ended".
    pub log: Vec<String>,
}

impl Outcome {
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

pub fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Eof => "eof".into(),
        CloseReason::Closed => "closed".into(),
        CloseReason::WaitDelay => "wait-delay".into(),
        CloseReason::Error(e) => format!("error {:?}", e.raw_os_error()),
        other => format!("{other:?}"),
    }
}

/// Records one event into `outcome`.
pub fn record(outcome: &mut Outcome, event: Event) {
    match event {
        Event::Data { fd, data } => {
            outcome.data.entry(fd).or_default().extend_from_slice(&data);
            outcome.log.push(format!("data {fd}"));
        }
        Event::Closed { fd, reason } => {
            outcome.closed.push((fd, describe(&reason)));
            outcome.log.push(format!("closed {fd}"));
        }
        Event::Exited(r) => {
            outcome.exited.push(r);
            outcome.log.push("exited".into());
        }
        Event::Ended(r) => {
            outcome.ended.push(r);
            outcome.log.push("ended".into());
        }
        _ => {}
    }
}

/// Drains the transport until its stream ends; panics after `limit`.
pub async fn collect(transport: &mut ProcessTransport, limit: Duration) -> Outcome {
    let mut outcome = Outcome::default();
    let drain = async {
        while let Some(event) = transport.next().await {
            record(&mut outcome, event);
        }
    };
    if tokio::time::timeout(limit, drain).await.is_err() {
        panic!("the transport did not end within {limit:?}");
    }
    outcome
}

/// The fds open in this process (not counting the one used to list them).
pub fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // SAFETY: F_GETFD only reads flags; the listing's own fd is closed by now (EBADF).
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
    fds.sort_unstable();
    fds
}

/// The pids of this process's children that are zombies, from /proc/*/stat.
pub fn zombie_children() -> Vec<i32> {
    children_in_state(|state| state == 'Z')
}

/// The pids of all children of this process (any state).
pub fn children() -> Vec<i32> {
    children_in_state(|_| true)
}

fn children_in_state(want: impl Fn(char) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the
        // last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let ppid = fields.next().and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(me) && state.is_some_and(&want) {
            found.push(pid);
        }
    }
    found
}

/// The state letter of `pid` from /proc, or `None` once it is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Polls `cond` every 10 ms until it holds; false after `limit`.
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
