//! Finding and signalling every descendant of a child, for `ProcessTransport::kill_tree`.
//!
//! Descendants are found from `/proc/<pid>/stat` (parent pid and process group). The tree is
//! stopped with SIGSTOP round by round until no new member appears, so nothing can fork its
//! way out while it is being signalled; then every member gets the signal, then SIGCONT (a
//! stopped process would not act on SIGTERM).

use std::collections::{BTreeSet, HashMap};

use crate::sys;

/// `(pid, parent pid, process group)` of every process, read from `/proc`.
fn processes() -> Vec<(i32, i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat).map(|(ppid, pgrp)| (pid, ppid, pgrp))
    })
    .collect()
}

/// Parent pid and process group from the text of `/proc/<pid>/stat`. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(1);
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// The pids descending from `root` (not `root` itself), plus every member of `group`.
pub(crate) fn members(
    procs: &[(i32, i32, i32)],
    root: Option<i32>,
    group: Option<i32>,
) -> BTreeSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for &(pid, ppid, _) in procs {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found: BTreeSet<i32> = procs
        .iter()
        .filter(|&&(_, _, pgrp)| Some(pgrp) == group)
        .map(|&(pid, _, _)| pid)
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
    let mut stopped: BTreeSet<i32> = BTreeSet::new();
    signal_root(libc::SIGSTOP);
    for _round in 0..16 {
        let fresh: Vec<i32> = members(&processes(), root, group)
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

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1";
        assert_eq!(parse_stat(stat), Some((7, 42)));
    }

    #[test]
    fn members_are_descendants_and_group_mates() {
        // 10 is the root; 11, 12 its children; 13 a grandchild; 20 reparented to 1 but still in
        // group 10; 30 unrelated. Descendants of group members belong to the tree too.
        let procs = [
            (1, 0, 1),
            (10, 1, 10),
            (11, 10, 10),
            (12, 10, 12),
            (13, 12, 12),
            (20, 1, 10),
            (21, 20, 21),
            (30, 1, 30),
        ];
        let got: Vec<i32> = members(&procs, Some(10), Some(10)).into_iter().collect();
        assert_eq!(got, [11, 12, 13, 20, 21]);
        let only_group: Vec<i32> = members(&procs, None, Some(10)).into_iter().collect();
        assert_eq!(only_group, [10, 11, 12, 13, 20, 21]);
    }
}
