//! `kill_tree` reaches every descendant, including ones that left the child's process group
//! and ones whose parent already exited, and never anything else: not the caller, not the
//! caller's other children, not what descends from foreign members of a group the child
//! joined, not a group whose number was reused after the child was reaped.

mod common;

use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event, ProcessTransport};

use common::{is_alive, pidns, process_state, stat, within};

/// Reads whitespace-separated pids from the child's stdout until there are `count` of them.
async fn read_pids(child: &mut ProcessTransport, count: usize) -> Vec<i32> {
    let mut text = Vec::new();
    loop {
        let pids: Vec<i32> = String::from_utf8_lossy(&text)
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        if pids.len() >= count && text.ends_with(b"\n") {
            assert_eq!(pids.len(), count, "unexpected output: {pids:?}");
            return pids;
        }
        match tokio::time::timeout(common::LIMIT, child.next()).await {
            Ok(Some(Event::Data { fd: 1, data })) => text.extend_from_slice(&data),
            Ok(Some(_)) => {}
            other => panic!("no pids from the child: {other:?}"),
        }
    }
}

/// Waits until none of `pids` is alive; panics naming the survivors otherwise.
async fn assert_all_die(pids: &[i32]) {
    let all_dead = common::eventually(common::LIMIT, || !pids.iter().any(|&p| is_alive(p))).await;
    let survivors: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(all_dead, "descendants survived: {survivors:?}");
}

/// `true` while `pid` runs and is not stopped.
fn runs(pid: u32) -> bool {
    is_alive(pid) && process_state(pid) != Some('T')
}

/// The process group of `pid`, from `/proc`.
fn pgrp(pid: i32) -> Option<i32> {
    Some(stat(pid)?.pgrp)
}

/// A `sleep` started with std: a child of the test process that `kill_tree` must never touch.
fn std_sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap()
}

fn stop(mut sleeper: std::process::Child) {
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[tokio::test]
async fn kill_tree_reaches_children_grandchildren_and_orphans() {
    // In order: a child; a child in a session of its own (outside the group); a grandchild
    // under a shell that stays; an orphan left in the group; an orphan left in the group
    // whose own child moved to a session of its own.
    let script = r#"
        sleep 100 & echo $!
        setsid sleep 100 & echo $!
        sh -c 'sleep 100 & echo $!; wait' &
        sh -c 'sleep 100 & echo $!'
        sh -c 'sh -c "setsid sleep 100 & echo \$!; exec sleep 100" & echo $!'
        exec sleep 100
    "#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let pids = read_pids(&mut child, 6).await;
    assert!(pids.iter().all(|&p| is_alive(p)), "{pids:?}");

    let signalled = child.kill_tree(libc::SIGKILL);
    // The six, and the shell above the grandchild; the inner shells may still be there.
    assert!(signalled >= 7, "signalled {signalled}");
    let status = within("the child", child).await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_all_die(&pids).await;
}

static CAUGHT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn kill_tree_in_the_callers_group_spares_the_caller_and_its_other_children() {
    // Any SIGUSR2 or SIGCONT this process gets is counted.
    for sig in [libc::SIGUSR2, libc::SIGCONT] {
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, count_signal as *const () as libc::sighandler_t) };
    }
    let own_pgid = pgrp(std::process::id() as i32).unwrap();
    let mut sibling = std_sleeper();
    let mut child = Command::new("sh")
        .args(["-c", "sleep 100 & echo $!; exec sleep 100"])
        .process_group(own_pgid)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    assert_eq!(child.process_group(), Some(own_pgid));
    let grandchild = read_pids(&mut child, 1).await[0];

    let signalled = child.kill_tree(libc::SIGUSR2);
    let status = within("the child", child.wait()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sibling_ran = runs(sibling.id()) && sibling.try_wait().unwrap().is_none();
    stop(sibling);
    assert_eq!(status.unwrap().signal(), Some(libc::SIGUSR2));
    assert_all_die(&[grandchild]).await;
    assert!(sibling_ran, "the caller's other child was signalled");
    assert_eq!(CAUGHT.load(Ordering::SeqCst), 0, "the caller was signalled");
    assert_eq!(signalled, 1, "only the grandchild is a descendant");
}

#[tokio::test]
async fn kill_tree_in_a_joined_group_spares_what_descends_from_its_other_members() {
    // A group led by a process of our own, whose child left for a session of its own.
    let mut leader = std::process::Command::new("sh")
        .args(["-c", "setsid sleep 100 & echo $!; exec sleep 100"])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(leader.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let leaders_child: i32 = line.trim().parse().unwrap();
    // Until its `setsid` has run it is still a member of the group (and fair game).
    let left_the_group = || pgrp(leaders_child) == Some(leaders_child);
    assert!(common::eventually(common::LIMIT, left_the_group).await);
    let mut child = Command::new("sh")
        .args(["-c", "sleep 100 & echo $!; exec sleep 100"])
        .process_group(leader.id() as i32)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let grandchild = read_pids(&mut child, 1).await[0];

    let signalled = child.kill_tree(libc::SIGKILL);
    let status = within("the child", child.wait()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spared = runs(leaders_child as u32);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &leaders_child.to_string()])
        .status();
    // The leader is a member of the child's group, so it is signalled as `signal_group`
    // would signal it.
    let leader_status = leader.wait().unwrap();
    assert_eq!(status.unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&leader_status),
        Some(libc::SIGKILL)
    );
    assert_all_die(&[grandchild]).await;
    assert!(
        spared,
        "a descendant of a foreign group member was signalled (state {:?})",
        process_state(leaders_child)
    );
    assert_eq!(signalled, 2, "the grandchild and the group's leader");
}

#[tokio::test(flavor = "current_thread")]
async fn kill_tree_after_reaping_spares_a_new_group_on_the_reused_number() {
    if !pidns::enter("kill_tree_after_reaping_spares_a_new_group_on_the_reused_number") {
        return;
    }
    let mut child = Command::new("true").process_group(0).spawn().unwrap();
    let pgid = child.process_group().unwrap();
    assert!(within("true", child.wait()).await.unwrap().success());
    assert!(!is_alive(pgid));
    // A stranger tries to take the number and found a group with it: the child's zombie,
    // kept while the transport lives, keeps the number ours.
    pidns::set_next_pid(pgid);
    let stranger = std::process::Command::new("sleep")
        .arg("100")
        .process_group(0)
        .spawn()
        .unwrap();
    assert_ne!(
        stranger.id() as i32,
        pgid,
        "the group's number was free while the transport lives"
    );

    let signalled = child.kill_tree(libc::SIGKILL);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spared = runs(stranger.id());
    stop(stranger);
    assert!(
        spared,
        "a new group on the child's reused group number was signalled"
    );
    assert_eq!(signalled, 0);
}
