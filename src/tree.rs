//! Finding and signalling every descendant of a child, for `ProcessTransport::kill_tree`.
//!
//! Who belongs to the tree is read from `/proc/<pid>/stat` (parent pid, process group, start
//! time): the child's descendants, by parentage, and the members of its process group. This
//! process is never a member and is never walked through, so nothing is reached only by
//! being a child of ours. The group counts only while it can be shown to be the child's:
//!
//! - never when it is this process's own group (the child joined us; `signal_group` refuses
//!   it for the same reason);
//! - while the child is unreaped, if the child founded it (the child's pid keeps the number
//!   taken) or is in it now (its membership keeps the number taken);
//! - once the child is reaped, only if the child founded it and no process has that pid: a
//!   process with that pid is a newcomer (the founder was reaped), so the number was reused.
//!
//! The children of group members are walked only in a group the child founded; in a group
//! it joined, the other members' children are not the child's.
//!
//! The tree is stopped with SIGSTOP round by round until a scan finds no new member, so
//! nothing forks its way out; then every member gets the signal, then SIGCONT (a stopped
//! process would not act on SIGTERM). A scan can go stale before the signal: a member may
//! die and its pid be taken by a stranger. So each member is first held by a pidfd, then its
//! stat is read again and must still show the start time the scan saw, and either the group
//! or the same parent, that parent being held (the child, or a member held before it) and
//! still alive after the read. A process that is alive keeps its pid, so a check made while
//! the holder is alive is about the held process. Every signal then goes through the pidfd.
//! Where the kernel has no `pidfd_open` (before 5.3), members are signalled by pid after the
//! same checks: the window between check and signal is narrowed, not closed. A member that
//! cannot be held (out of fds) is not signalled at all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys;

/// How many scans a freeze may take before the tree is signalled as it stands.
const MAX_ROUNDS: usize = 16;

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

/// Where a scan starts from and what it may walk.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// The child, if it is held (unreaped).
    root: Option<i32>,
    /// The group, if it can be shown to be the child's (see [`usable_group`]).
    group: Option<i32>,
    /// Whether the children of group members belong to the tree (a group the child founded).
    walk_group: bool,
    /// This process: never a member, never walked through.
    me: i32,
}

/// The members of the tree in `procs`: descendants of the root, then group members and (if
/// `walk_group`) their descendants. Neither the root nor `scope.me` is included, and nothing
/// is found through `scope.me`. A member found through its parent comes after that parent.
fn members(procs: &[Proc], scope: &Scope) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut seen: HashSet<i32> = HashSet::from([scope.me]);
    let mut found: Vec<Proc> = Vec::new();
    let mut queue: VecDeque<i32> = VecDeque::new();
    let walk = |queue: &mut VecDeque<i32>, seen: &mut HashSet<i32>, found: &mut Vec<Proc>| {
        while let Some(pid) = queue.pop_front() {
            for &child in children.get(&pid).into_iter().flatten() {
                if seen.insert(child.pid) {
                    found.push(*child);
                    queue.push_back(child.pid);
                }
            }
        }
    };
    // The root's descendants first: in a joined group they are still walked in full.
    if let Some(root) = scope.root
        && seen.insert(root)
    {
        queue.push_back(root);
        walk(&mut queue, &mut seen, &mut found);
    }
    if let Some(group) = scope.group {
        for p in procs.iter().filter(|p| p.pgrp == group) {
            if seen.insert(p.pid) {
                found.push(*p);
                if scope.walk_group {
                    queue.push_back(p.pid);
                }
            }
        }
        walk(&mut queue, &mut seen, &mut found);
    }
    found
}

/// The group whose members belong to the tree: `group` if it can be shown to be the child's
/// (see the module doc), else `None`. `root_now` is the child as re-read while held, `None`
/// once it is reaped; `reserved` says whether the child's zombie is kept (by the reaper, for
/// its group), which keeps the group's number ours; `pid_taken` tells whether a process with a
/// given pid exists now.
fn usable_group(
    group: Option<i32>,
    spawned: i32,
    own_group: i32,
    root_now: Option<&Proc>,
    reserved: bool,
    pid_taken: impl FnOnce(i32) -> bool,
) -> Option<i32> {
    let group = group.filter(|&g| g > 0 && g != own_group)?;
    let founded = group == spawned;
    let usable = match root_now {
        Some(root) => founded || root.pgrp == group,
        None => reserved || (founded && !pid_taken(group)),
    };
    usable.then_some(group)
}

/// Whether `now` (re-read while held) is the process the scan saw as `seen`: the same start
/// time, and in `group` or under the same parent, for which `parent_held` must confirm it is
/// held and still alive.
fn still_matches(
    seen: &Proc,
    now: &Proc,
    group: Option<i32>,
    parent_held: impl FnOnce(i32) -> bool,
) -> bool {
    now.pid == seen.pid
        && now.start == seen.start
        && (group == Some(now.pgrp) || (now.ppid == seen.ppid && parent_held(now.ppid)))
}

/// A process held for signalling: by a pidfd, or by its bare pid where the kernel has no
/// `pidfd_open`.
struct Held {
    proc: Proc,
    pidfd: Option<OwnedFd>,
}

impl Held {
    /// A handle on whatever process has `pid` now: `Some(Some(pidfd))`, or `Some(None)` where
    /// the kernel has no `pidfd_open` (the bare pid is all there is); `None` if there is no
    /// such process or it cannot be held.
    fn open(pid: i32) -> Option<Option<OwnedFd>> {
        match sys::signal::pidfd_open(pid) {
            Ok(pidfd) => Some(pidfd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
            Err(error) => {
                tracing::warn!(pid, %error, "kill_tree: cannot hold a member; it is not signalled");
                None
            }
        }
    }

    /// Sends `sig` through the pidfd (by pid only where there is none).
    fn send(&self, sig: i32) -> io::Result<()> {
        sys::signal::send(self.proc.pid, self.pidfd.as_ref().map(|fd| fd.as_fd()), sig)
    }

    /// Whether the held process is not reaped yet (so its pid is still its own).
    fn alive(&self) -> bool {
        match self.send(0) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::EPERM),
        }
    }
}

/// Holds the child, if it is unreaped. The slot still reporting it unreaped after the open
/// and the read means both saw our child.
fn hold_root(root: &Root<'_>, me: i32) -> Option<Held> {
    let pid = (root.pid)()?;
    let pidfd = Held::open(pid)?;
    let held = Held {
        proc: read_stat(pid)?,
        pidfd,
    };
    ((root.pid)() == Some(pid) && held.proc.ppid == me && held.alive()).then_some(held)
}

/// Holds the member `seen` if the process now at its pid is the one the scan saw (see
/// [`still_matches`]); `parent_held` checks the parent after the re-read.
fn hold_member(
    seen: &Proc,
    group: Option<i32>,
    parent_held: impl FnOnce(i32) -> bool,
) -> Option<Held> {
    let pidfd = Held::open(seen.pid)?;
    let now = read_stat(seen.pid)?;
    let held = Held { proc: now, pidfd };
    // Alive after the read, so the read was about the held process.
    (held.alive() && still_matches(seen, &now, group, parent_held)).then_some(held)
}

/// The child at the top of the tree, seen through its transport.
pub(crate) struct Root<'a> {
    /// The child's pid while it is unreaped.
    pub(crate) pid: &'a dyn Fn() -> Option<i32>,
    /// Signals the child through its own handle, which never reaches a reused pid.
    pub(crate) signal: &'a dyn Fn(i32),
    /// The pid the child was spawned with: the id of the group it founded, if it did.
    pub(crate) spawned: i32,
    /// Whether the child, alive or a kept zombie, still holds its group's number.
    pub(crate) group_reserved: &'a dyn Fn() -> bool,
}

/// Stops the tree under `root` (and `group`), sends `sig` to all of it, and lets it run again.
/// Returns how many processes besides the child were signalled.
pub(crate) fn signal_tree(root: &Root<'_>, group: Option<i32>, sig: i32) -> usize {
    signal_tree_with(&mut processes, root, group, sig)
}

/// [`signal_tree`] with the `/proc` scan supplied by the caller, so a test can hand it a
/// table that went stale between the scan and the signal.
pub(crate) fn signal_tree_with(
    scan: &mut dyn FnMut() -> Vec<Proc>,
    root: &Root<'_>,
    group: Option<i32>,
    sig: i32,
) -> usize {
    let me = std::process::id() as i32;
    let own_group = sys::signal::own_process_group();
    (root.signal)(libc::SIGSTOP);
    // Stopped, the child can neither fork nor change its group while it is held.
    let held_root = hold_root(root, me);
    let mut held: Vec<Held> = Vec::new();
    let mut by_pid: HashMap<i32, usize> = HashMap::new();
    let mut refused: HashSet<(i32, u64)> = HashSet::new();
    for _round in 0..MAX_ROUNDS {
        let procs = scan();
        let root_now = held_root
            .as_ref()
            .filter(|h| h.alive() && (root.pid)() == Some(h.proc.pid));
        let reserved = (root.group_reserved)();
        let group = usable_group(
            group,
            root.spawned,
            own_group,
            root_now.map(|h| &h.proc),
            reserved,
            |pid| read_stat(pid).is_some(),
        );
        // A kept zombie is still the child: never counted as a member.
        let kept_zombie = (root_now.is_none() && reserved).then_some(root.spawned);
        let scope = Scope {
            root: root_now.map(|h| h.proc.pid).or(kept_zombie),
            group,
            walk_group: group == Some(root.spawned),
            me,
        };
        let fresh: Vec<Proc> = members(&procs, &scope)
            .into_iter()
            .filter(|p| !refused.contains(&(p.pid, p.start)))
            .filter(|p| {
                by_pid
                    .get(&p.pid)
                    .is_none_or(|&i| held[i].proc.start != p.start)
            })
            .collect();
        if fresh.is_empty() {
            break;
        }
        for seen in fresh {
            let parent_held = |ppid: i32| match (root_now, by_pid.get(&ppid)) {
                (Some(r), _) if r.proc.pid == ppid => r.alive() && (root.pid)() == Some(ppid),
                (_, Some(&i)) => held[i].alive(),
                _ => false,
            };
            match hold_member(&seen, group, parent_held) {
                Some(member) => {
                    let _ = member.send(libc::SIGSTOP);
                    by_pid.insert(member.proc.pid, held.len());
                    held.push(member);
                }
                None => {
                    refused.insert((seen.pid, seen.start));
                }
            }
        }
    }
    let signalled = held.iter().filter(|h| h.send(sig).is_ok()).count();
    (root.signal)(sig);
    for member in &held {
        let _ = member.send(libc::SIGCONT);
    }
    (root.signal)(libc::SIGCONT);
    signalled
}

// Shared with the integration tests, which need its items `pub`.
#[cfg(test)]
#[allow(unreachable_pub)]
#[path = "../tests/common/pidns.rs"]
mod pidns;

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            start: 1000 + pid as u64,
        }
    }

    /// This process in the tables below.
    const ME: i32 = 5;

    fn scope(root: Option<i32>, group: Option<i32>, walk_group: bool) -> Scope {
        Scope {
            root,
            group,
            walk_group,
            me: ME,
        }
    }

    fn pids(found: Vec<Proc>) -> Vec<i32> {
        let mut pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
        pids.sort();
        pids
    }

    #[test]
    fn members_never_include_nor_walk_through_the_caller() {
        // The caller (5) is in group 10 with the root (10, its child); 6 is the caller's
        // other child and 7 its grandchild, in groups of their own; 40 is another member of
        // the group, with a child 41 elsewhere. Even with the group handed over, the caller
        // is no member, and what only hangs under the caller is not reached.
        let procs = [
            p(1, 0, 1),
            p(ME, 1, 10),
            p(6, ME, 6),
            p(7, 6, 7),
            p(10, ME, 10),
            p(11, 10, 10),
            p(40, 1, 10),
            p(41, 40, 41),
        ];
        let got = pids(members(&procs, &scope(Some(10), Some(10), true)));
        assert_eq!(got, [11, 40, 41]);
        // Without the group (what `usable_group` decides for our own group): the root's
        // descendants only.
        assert_eq!(pids(members(&procs, &scope(Some(10), None, true))), [11]);
        // A caller that is somehow the root's descendant is not walked through.
        let below = [p(10, 1, 10), p(ME, 10, ME), p(6, ME, 6), p(11, 10, 10)];
        assert_eq!(pids(members(&below, &scope(Some(10), None, false))), [11]);
    }

    #[test]
    fn in_a_joined_group_the_other_members_children_are_not_walked() {
        // The child (10) joined group 30, led by 30 whose child 31 left the group. The child's
        // own child 11 stays in group 30 and has a child 12 elsewhere.
        let procs = [
            p(1, 0, 1),
            p(30, 1, 30),
            p(31, 30, 31),
            p(10, 1, 30),
            p(11, 10, 30),
            p(12, 11, 12),
        ];
        assert_eq!(
            pids(members(&procs, &scope(Some(10), Some(30), false))),
            [11, 12, 30]
        );
        assert_eq!(
            pids(members(&procs, &scope(Some(10), Some(30), true))),
            [11, 12, 30, 31]
        );
    }

    #[test]
    fn members_come_after_the_parent_they_were_found_through() {
        let procs = [
            p(13, 12, 13),
            p(12, 11, 12),
            p(11, 10, 11),
            p(10, 1, 10),
            p(21, 20, 21),
            p(20, 1, 10),
        ];
        let order: Vec<i32> = members(&procs, &scope(Some(10), Some(10), true))
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(order, [11, 12, 13, 20, 21]);
    }

    #[test]
    fn the_group_counts_only_while_it_is_provably_the_childs() {
        let root_in = |pgrp| p(10, ME, pgrp);
        let never = |_| panic!("the pid need not be looked up");
        // Our own group: never, whatever else holds.
        assert_eq!(
            usable_group(Some(3), 10, 3, Some(&root_in(3)), false, never),
            None
        );
        assert_eq!(
            usable_group(Some(10), 10, 10, Some(&root_in(10)), false, never),
            None
        );
        // No group, or a number that is no group.
        assert_eq!(
            usable_group(None, 10, 3, Some(&root_in(10)), false, never),
            None
        );
        assert_eq!(
            usable_group(Some(0), 10, 3, Some(&root_in(0)), false, never),
            None
        );
        assert_eq!(
            usable_group(Some(-4), 10, 3, Some(&root_in(-4)), false, never),
            None
        );
        // Founded by the unreaped child: its pid keeps the number, wherever it is now.
        assert_eq!(
            usable_group(Some(10), 10, 3, Some(&root_in(10)), false, never),
            Some(10)
        );
        assert_eq!(
            usable_group(Some(10), 10, 3, Some(&root_in(44)), false, never),
            Some(10)
        );
        // Joined: while the child is in it.
        assert_eq!(
            usable_group(Some(30), 10, 3, Some(&root_in(30)), false, never),
            Some(30)
        );
        assert_eq!(
            usable_group(Some(30), 10, 3, Some(&root_in(44)), false, never),
            None
        );
        // Reaped: a founded group whose number no process has taken, nothing else.
        assert_eq!(
            usable_group(Some(10), 10, 3, None, false, |_| false),
            Some(10)
        );
        assert_eq!(
            usable_group(Some(10), 10, 3, None, false, |pid| pid == 10),
            None
        );
        assert_eq!(usable_group(Some(30), 10, 3, None, false, |_| false), None);
        // A zombie kept for the group keeps either kind of group ours after the reap.
        assert_eq!(
            usable_group(Some(10), 10, 3, None, true, |pid| pid == 10),
            Some(10)
        );
        assert_eq!(
            usable_group(Some(30), 10, 3, None, true, |_| true),
            Some(30)
        );
    }

    #[test]
    fn a_re_read_stat_matches_only_the_process_the_scan_saw() {
        let seen = p(20, 10, 12);
        let held = |pid| pid == 10;
        let nobody = |_| false;
        // Unchanged, under a held parent.
        assert!(still_matches(&seen, &seen, None, held));
        // The parent is not held (or no longer alive): only the group can vouch.
        assert!(!still_matches(&seen, &seen, None, nobody));
        assert!(still_matches(&seen, &seen, Some(12), nobody));
        // Another start time: another process, whatever its parent or group.
        let reborn = Proc {
            start: seen.start + 1,
            ..seen
        };
        assert!(!still_matches(&seen, &reborn, None, held));
        assert!(!still_matches(&seen, &reborn, Some(12), held));
        // Same start tick, but another parent: a stranger that took the pid quickly.
        let stranger = Proc { ppid: 1, ..seen };
        assert!(!still_matches(&seen, &stranger, None, |_| true));
        // Reparented after its parent died, yet still in the group.
        let orphan = Proc { ppid: 1, ..seen };
        assert!(still_matches(&seen, &orphan, Some(12), nobody));
        // Moved out of the group, with its held parent: still the same process.
        let moved = Proc { pgrp: 50, ..seen };
        assert!(still_matches(&seen, &moved, Some(12), held));
        // A different pid is never the same process.
        assert!(!still_matches(&seen, &p(21, 10, 12), Some(12), held));
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
        let got = pids(members(&procs, &scope(Some(10), Some(10), true)));
        assert_eq!(got, [11, 12, 13, 20, 21]);
        let only_group = pids(members(&procs, &scope(None, Some(10), true)));
        assert_eq!(only_group, [10, 11, 12, 13, 20, 21]);
    }

    /// A scan the test can make stale: the first call returns `first`, later ones read /proc.
    fn stale_then_live(first: Vec<Proc>) -> impl FnMut() -> Vec<Proc> {
        let mut first = Some(first);
        move || first.take().unwrap_or_else(processes)
    }

    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_member_pid_reused_after_the_scan_is_not_signalled() {
        if !pidns::enter("tree::tests::a_member_pid_reused_after_the_scan_is_not_signalled") {
            return;
        }
        // The root starts a member, prints its pid, reaps it once it dies, and stays.
        let mut root_child = std::process::Command::new("sh")
            .args(["-c", "sleep 100 & echo $!; wait $!; exec sleep 100"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let root_pid = root_child.id() as i32;
        let mut line = String::new();
        std::io::BufReader::new(root_child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let member: i32 = line.trim().parse().unwrap();

        // The scan sees the member...
        let stale = processes();
        assert!(stale.iter().any(|p| p.pid == member && p.ppid == root_pid));
        // ...which then dies, and a process that has nothing to do with the tree takes its pid.
        sys::signal::send(member, None, libc::SIGKILL).unwrap();
        wait_for("the member to be reaped", || state(member).is_none());
        pidns::set_next_pid(member);
        let mut stranger = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        assert_eq!(
            stranger.id() as i32,
            member,
            "the stranger did not get the pid"
        );

        let root = Root {
            pid: &|| Some(root_pid),
            signal: &|sig| {
                let _ = sys::signal::send(root_pid, None, sig);
            },
            spawned: root_pid,
            group_reserved: &|| false,
        };
        let signalled = signal_tree_with(&mut stale_then_live(stale), &root, None, libc::SIGKILL);

        let status = root_child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            stranger.try_wait().unwrap(),
            None,
            "the stranger holding a reused pid was killed"
        );
        assert_ne!(state(member), Some('T'), "the stranger was left stopped");
        assert_eq!(signalled, 0);
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
