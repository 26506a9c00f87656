//! Finding and signalling every descendant of a child, for `ProcessTransport::kill_tree`.
//!
//! Descendants are found from `/proc/<pid>/stat` (parent pid and process group). The tree is
//! stopped with SIGSTOP round by round until no new member appears, so nothing can fork its
//! way out while it is being signalled; then every member gets the signal, then SIGCONT (a
//! stopped process would not act on SIGTERM).

use std::collections::{BTreeSet, HashMap};

use crate::sys;

/// One process as a `/proc` scan saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub(crate) start: u64,
}

/// Every process in `/proc`.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        read_stat(pid)
    })
    .collect()
}

/// `pid` as `/proc/<pid>/stat` describes it now.
fn read_stat(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// Parent pid, process group and start time from the text of `/proc/<pid>/stat`. The command
/// name may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // Field 3 (the state) comes first after the name.
    let mut fields = rest.split_whitespace().skip(1);
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Fields 6 to 21 lie between the group and the start time.
    let start = fields.nth(16)?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        pgrp,
        start,
    })
}

/// The pids descending from `root` (not `root` itself), plus every member of `group`.
pub(crate) fn members(procs: &[Proc], root: Option<i32>, group: Option<i32>) -> BTreeSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut found: BTreeSet<i32> = procs
        .iter()
        .filter(|p| Some(p.pgrp) == group)
        .map(|p| p.pid)
        .collect();
    let mut stack: Vec<i32> = root.into_iter().chain(found.iter().copied()).collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if found.insert(child) {
                stack.push(child);
            }
        }
    }
    if let Some(root) = root {
        found.remove(&root);
    }
    // Never stop ourselves (the child may have joined our own group).
    found.remove(&(std::process::id() as i32));
    found
}

/// Stops the tree under `root` (and `group`), sends `sig` to all of it, and lets it run again.
/// Returns how many descendants were signalled.
pub(crate) fn signal_tree(
    root: Option<i32>,
    group: Option<i32>,
    sig: i32,
    signal_root: impl Fn(i32),
) -> usize {
    signal_tree_with(&mut processes, root, group, sig, &signal_root)
}

/// [`signal_tree`] with the `/proc` scan supplied by the caller, so a test can hand it a
/// table that went stale between the scan and the signal.
pub(crate) fn signal_tree_with(
    scan: &mut dyn FnMut() -> Vec<Proc>,
    root: Option<i32>,
    group: Option<i32>,
    sig: i32,
    signal_root: &dyn Fn(i32),
) -> usize {
    let mut stopped: BTreeSet<i32> = BTreeSet::new();
    signal_root(libc::SIGSTOP);
    for _round in 0..16 {
        let fresh: Vec<i32> = members(&scan(), root, group)
            .into_iter()
            .filter(|pid| !stopped.contains(pid))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            let _ = sys::signal::send(pid, None, libc::SIGSTOP);
            stopped.insert(pid);
        }
    }
    for &pid in &stopped {
        let _ = sys::signal::send(pid, None, sig);
    }
    signal_root(sig);
    for &pid in &stopped {
        let _ = sys::signal::send(pid, None, libc::SIGCONT);
    }
    signal_root(libc::SIGCONT);
    stopped.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            start: 1000 + pid as u64,
        }
    }

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 4 5";
        assert_eq!(
            parse_stat(42, stat),
            Some(Proc {
                pid: 42,
                ppid: 7,
                pgrp: 42,
                start: 98765
            })
        );
        assert_eq!(parse_stat(42, "42 (a) S 7 42"), None);
    }

    #[test]
    fn start_time_matches_the_kernel_field() {
        // Field 22 of our own stat, counted independently of `parse_stat`.
        let me = std::process::id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let field22: u64 = after_name.split(' ').nth(22 - 3).unwrap().parse().unwrap();
        assert_eq!(read_stat(me).map(|p| p.start), Some(field22));
        assert!(field22 > 0);
    }

    #[test]
    fn members_are_descendants_and_group_mates() {
        // 10 is the root; 11, 12 its children; 13 a grandchild; 20 reparented to 1 but still in
        // group 10; 30 unrelated. Descendants of group members belong to the tree too.
        let procs = [
            p(1, 0, 1),
            p(10, 1, 10),
            p(11, 10, 10),
            p(12, 10, 12),
            p(13, 12, 12),
            p(20, 1, 10),
            p(21, 20, 21),
            p(30, 1, 30),
        ];
        let got: Vec<i32> = members(&procs, Some(10), Some(10)).into_iter().collect();
        assert_eq!(got, [11, 12, 13, 20, 21]);
        let only_group: Vec<i32> = members(&procs, None, Some(10)).into_iter().collect();
        assert_eq!(only_group, [10, 11, 12, 13, 20, 21]);
    }
}
