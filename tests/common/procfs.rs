//! Looking at processes through `/proc`: one reader of `/proc/<pid>/stat` ([`stat`]), which
//! every state, parent and group check goes through, and one of `/proc/<pid>/status`
//! ([`parse_status`]), for credentials, groups and signal masks.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use process_transport::Command;

use super::{LIMIT, collect};

// ----- /proc/<pid>/stat -----------------------------------------------------------------------

/// The fields of `/proc/<pid>/stat` that the tests use (see proc(5); field numbers there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: the state letter (`R`, `S`, `T`, `Z`, ...).
    pub state: char,
    /// Field 4: the parent pid.
    pub ppid: i32,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 6: the session.
    pub session: i32,
    /// Field 7: the controlling terminal (0 for none).
    pub tty_nr: i32,
    /// Field 8: the foreground process group of the controlling terminal.
    pub tpgid: i32,
    /// Field 22: the start time, which tells a process from a later one with the same pid.
    pub start_time: u64,
}

impl Stat {
    /// `true` unless the process is a zombie or dead.
    pub fn is_alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// `/proc/<pid>/stat` of `pid`, or `None` if it is gone.
pub fn stat(pid: impl Display) -> Option<Stat> {
    let f = stat_fields(pid)?;
    let field = |i: usize| f.get(i).map(String::as_str);
    Some(Stat {
        state: field(0)?.chars().next()?,
        ppid: field(1)?.parse().ok()?,
        pgrp: field(2)?.parse().ok()?,
        session: field(3)?.parse().ok()?,
        tty_nr: field(4)?.parse().ok()?,
        tpgid: field(5)?.parse().ok()?,
        start_time: field(19)?.parse().ok()?,
    })
}

/// The raw fields of `/proc/<pid>/stat` from field 3 (the state letter) on, or `None` if the
/// process is gone: what [`stat`] parses. Index `i` here is field `i + 3` of proc(5).
pub fn stat_fields(pid: impl Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The CPU time this process has used so far (user and system, in clock ticks of 10 ms):
/// meaningful for one test alone in its process (see `rerun`).
pub fn own_cpu_time() -> Duration {
    let fields = stat_fields("self").unwrap();
    let ticks = |i: usize| fields[i].parse::<u64>().unwrap();
    // Fields 14 and 15 of proc(5): utime and stime.
    Duration::from_millis(10 * (ticks(11) + ticks(12)))
}

/// The state letter of `pid`, or `None` once it is gone.
pub fn process_state(pid: impl Display) -> Option<char> {
    Some(stat(pid)?.state)
}

/// `true` while `pid` exists and is neither a zombie nor dead.
pub fn is_alive(pid: impl Display) -> bool {
    stat(pid).is_some_and(|s| s.is_alive())
}

/// The state letter and parent pid of `pid`, or `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let s = stat(pid)?;
    Some((s.state, u32::try_from(s.ppid).ok()?))
}

/// `true` if `pid` is an unreaped (zombie) child of this process.
pub fn is_our_zombie(pid: u32) -> bool {
    matches!(proc_state(pid), Some(('Z', ppid)) if ppid == std::process::id())
}

/// The command name of `pid` (`/proc/<pid>/comm`), or `None` once it is gone.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
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

// ----- /proc/<pid>/status ---------------------------------------------------------------------

/// A `/proc/<pid>/status` text as `field -> value` (values trimmed).
pub fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// This process's `/proc/self/status`.
pub fn own_status() -> BTreeMap<String, String> {
    parse_status(&std::fs::read_to_string("/proc/self/status").unwrap())
}

/// `/proc/self/status` as the child `cmd` (a `cat`, given the path as its last argument)
/// sees it, asserting that it succeeded.
pub async fn child_status(cmd: &mut Command) -> BTreeMap<String, String> {
    let mut child = cmd
        .arg("/proc/self/status")
        .stdin(process_transport::ChildFd::Null)
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    parse_status(std::str::from_utf8(outcome.out(1)).unwrap())
}

/// The numbers of a status value such as `Uid` or `Groups`.
pub fn ids(value: &str) -> Vec<u32> {
    value
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

/// The signal mask in a status field (`SigIgn`, `SigBlk`, `SigCgt`, `SigPnd`, ...).
pub fn signal_mask(status: &BTreeMap<String, String>, field: &str) -> u64 {
    let value = status
        .get(field)
        .unwrap_or_else(|| panic!("{field} missing from the status"));
    u64::from_str_radix(value, 16).unwrap()
}

/// The bit for signal `sig` in a status signal mask.
pub fn signal_bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// This process's resident set size, from `VmRSS` in `/proc/self/status`.
pub fn vm_rss_bytes() -> u64 {
    let status = own_status();
    let kib: u64 = status["VmRSS"]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

// ----- the reaper thread ----------------------------------------------------------------------

/// The crate's reaper thread's directory under `/proc/self/task`.
pub fn reaper_thread() -> std::path::PathBuf {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("process-transp") {
            return dir;
        }
    }
    panic!("no reaper thread in /proc/self/task");
}

/// Asserts that the reaper thread stays idle for the next half second (at most 5 ticks of
/// CPU: a thread spinning on a ready fd uses all 50).
pub fn assert_reaper_thread_idles() {
    let before = reaper_thread_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let spent = reaper_thread_ticks() - before;
    assert!(
        spent <= 5,
        "the reaper thread used {spent} ticks while idle"
    );
}

/// CPU ticks (user + system) the reaper thread has used so far.
pub fn reaper_thread_ticks() -> u64 {
    let stat = std::fs::read_to_string(reaper_thread().join("stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU time the reaper thread has used so far, in nanoseconds (finer than its ticks).
pub fn reaper_thread_cpu_ns() -> u64 {
    let schedstat = std::fs::read_to_string(reaper_thread().join("schedstat")).unwrap();
    schedstat
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Context switches of the reaper thread so far: each is one wake-up and sleep.
pub fn reaper_thread_switches() -> u64 {
    let status = std::fs::read_to_string(reaper_thread().join("status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}
