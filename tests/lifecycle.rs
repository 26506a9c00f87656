//! Lifecycle control. Process groups and sessions, group signals, killing a whole tree, graceful
//! terminate, kill-on-drop, the wait delay, rusage, race-free signals and the parent-death signal.
//!
//! Tests that look at other processes only look at pids (or process groups) they created, so
//! they can run in parallel with everything else.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{
    ChildFd, CloseReason, Command, Error, Event, ExitStatus, ProcessTransport, SpawnError,
};
use tokio::time::timeout;

use common::{LIMIT, all_events, all_pids, eventually, read_until, stat};

// ----- /proc helpers --------------------------------------------------------------------------

/// Live (not zombie) processes in process group `pgid`.
fn live_members_of_group(pgid: i32) -> Vec<i32> {
    members_of_group(pgid, false)
}

/// Processes in process group `pgid`, zombies included if `zombies`.
fn members_of_group(pgid: i32, zombies: bool) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid)
                .is_some_and(|s| s.pgrp == pgid && (zombies || (s.state != 'Z' && s.state != 'X')))
        })
        .collect()
}

/// Whether the process that had `pid` and started at `start_time` still has a /proc entry
/// (running or zombie).
fn exists(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time)
}

fn is_running(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

fn our_pgrp() -> i32 {
    // SAFETY: getpgrp has no preconditions.
    unsafe { libc::getpgrp() }
}

fn our_sid() -> i32 {
    // SAFETY: getsid(0) has no preconditions.
    unsafe { libc::getsid(0) }
}

fn pid_of(t: &ProcessTransport) -> i32 {
    t.pid().expect("child not yet reaped") as i32
}

fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("30")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)]);
    c
}

// ----- process groups and sessions ------------------------------------------------------------

#[tokio::test]
async fn default_child_stays_in_our_group_and_session() {
    let mut child = sleeper().spawn().unwrap();
    let s = stat(pid_of(&child)).unwrap();
    assert_eq!(s.pgrp, our_pgrp());
    assert_eq!(s.session, our_sid());
    assert_eq!(child.process_group(), None);
    assert!(matches!(
        child.signal_group(libc::SIGKILL),
        Err(Error::NoProcessGroup)
    ));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn process_group_zero_makes_the_child_a_group_leader() {
    let mut child = sleeper().process_group(0).spawn().unwrap();
    let pid = pid_of(&child);
    let s = stat(pid).unwrap();
    assert_eq!(s.pgrp, pid, "child leads a new group");
    assert_eq!(s.session, our_sid(), "but stays in our session");
    assert_eq!(child.process_group(), Some(pid));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn process_group_joins_an_existing_group() {
    let mut leader = sleeper().process_group(0).spawn().unwrap();
    let pgid = pid_of(&leader);
    let mut member = sleeper().process_group(pgid).spawn().unwrap();
    let s = stat(pid_of(&member)).unwrap();
    assert_eq!(s.pgrp, pgid);
    assert_eq!(member.process_group(), Some(pgid));

    // One group signal reaches both.
    member.signal_group(libc::SIGTERM).unwrap();
    let a = timeout(LIMIT, leader.wait()).await.unwrap().unwrap();
    let b = timeout(LIMIT, member.wait()).await.unwrap().unwrap();
    assert_eq!(a.signal(), Some(libc::SIGTERM));
    assert_eq!(b.signal(), Some(libc::SIGTERM));
}

#[tokio::test]
async fn joining_a_missing_group_fails_at_spawn() {
    // No process group has this id (it is above any pid_max), so setpgid fails in the child.
    let err = sleeper().process_group(i32::MAX - 7).spawn().unwrap_err();
    match err {
        SpawnError::Spawn { step, source, .. } => {
            assert_eq!(step, process_transport::SpawnStep::SetProcessGroup);
            assert_eq!(source.raw_os_error(), Some(libc::EPERM));
        }
        other => panic!("expected a SetProcessGroup spawn error, got {other:?}"),
    }
}

#[tokio::test]
async fn new_session_makes_the_child_a_session_and_group_leader_without_a_tty() {
    let mut child = sleeper().new_session().spawn().unwrap();
    let pid = pid_of(&child);
    let s = stat(pid).unwrap();
    assert_eq!(s.session, pid, "child leads a new session");
    assert_eq!(s.pgrp, pid, "and a new group");
    assert_eq!(s.tty_nr, 0, "with no controlling terminal");
    assert_eq!(child.process_group(), Some(pid));
    child.signal_group(libc::SIGKILL).unwrap();
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

// ----- group signals and process trees --------------------------------------------------------

/// A shell that starts `n` background sleepers, prints their pids and a marker, and waits.
fn tree(n: usize, leader_exits: bool) -> Command {
    let mut script = String::new();
    for _ in 0..n {
        script.push_str("sleep 30 & echo $!; ");
    }
    script.push_str("echo started; ");
    if !leader_exits {
        script.push_str("wait");
    }
    let mut c = Command::new("sh");
    c.args(["-c", &script]).process_group(0);
    c
}

fn pids_in(out: &str) -> Vec<i32> {
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test]
async fn signal_group_reaches_every_member() {
    let mut child = tree(3, false).spawn().unwrap();
    let pgid = child.process_group().unwrap();
    let out = read_until(&mut child, "started\n").await;
    let sleepers = pids_in(&out);
    assert_eq!(sleepers.len(), 3);
    for &pid in &sleepers {
        assert_eq!(stat(pid).unwrap().pgrp, pgid);
    }
    let starts: Vec<u64> = sleepers
        .iter()
        .map(|&p| stat(p).unwrap().start_time)
        .collect();

    child.signal_group(libc::SIGTERM).unwrap();
    let events = all_events(&mut child, LIMIT).await;
    let Some(Event::Ended(Ok(status))) = events.last() else {
        panic!("no Ended: {events:?}")
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // `Ended` needs every pipe closed, and the sleepers held them: they are dying too (a
    // process closes its files a moment before it turns into a zombie).
    for (&pid, &start) in sleepers.iter().zip(&starts) {
        let died = eventually(LIMIT, || !is_running(pid, start)).await;
        assert!(died, "sleeper {pid} survived SIGTERM to its group");
    }
}

#[tokio::test]
async fn a_process_tree_killed_through_its_group_leaves_no_survivor() {
    let mut child = tree(4, false).spawn().unwrap();
    let pgid = child.process_group().unwrap();
    read_until(&mut child, "started\n").await;
    // The shell and its four sleepers.
    assert_eq!(
        live_members_of_group(pgid).len(),
        5,
        "{:?}",
        live_members_of_group(pgid)
    );

    child.signal_group(libc::SIGKILL).unwrap();
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let none_left = eventually(LIMIT, || live_members_of_group(pgid).is_empty()).await;
    assert!(none_left, "survivors: {:?}", live_members_of_group(pgid));
    // Once the orphaned sleepers' zombies are reaped too, there is nothing left to signal.
    // Where nothing reaps orphans (a container without an init) they stay, so this waits a
    // while rather than the full hang timeout, and checks only if they went.
    let reaped_window = Duration::from_secs(10);
    if eventually(reaped_window, || members_of_group(pgid, true).is_empty()).await {
        assert!(matches!(
            child.signal_group(libc::SIGKILL),
            Err(Error::AlreadyExited)
        ));
    }
}

#[tokio::test]
async fn signal_group_reaches_descendants_after_the_leader_exited() {
    // The shell exits at once; its sleepers stay in the group holding the pipes.
    let mut child = tree(2, true).spawn().unwrap();
    let pgid = child.process_group().unwrap();
    let mut exited = None;
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            if let Event::Exited(s) = e {
                exited = Some(s.unwrap());
                break;
            }
        }
    })
    .await
    .unwrap();
    assert!(exited.unwrap().success());
    assert_eq!(child.pid(), None);
    assert_eq!(live_members_of_group(pgid).len(), 2);

    // The group is still there and reachable.
    child.signal_group(libc::SIGKILL).unwrap();
    let events = all_events(&mut child, LIMIT).await;
    assert!(
        matches!(events.last(), Some(Event::Ended(Ok(_)))),
        "{events:?}"
    );
    assert!(eventually(LIMIT, || live_members_of_group(pgid).is_empty()).await);
}

// ----- terminate and kill ---------------------------------------------------------------------

#[tokio::test]
async fn terminate_kills_a_child_that_ignores_sigterm_after_the_grace() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .process_group(0)
        .spawn()
        .unwrap();
    // The trap must be in place before the signal.
    read_until(&mut child, "ready\n").await;
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let status = timeout(LIMIT, child.terminate(grace))
        .await
        .unwrap()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        took >= grace,
        "SIGKILL came before the grace was over: {took:?}"
    );
    assert!(took < grace + Duration::from_secs(2), "took {took:?}");
    assert_eq!(child.pid(), None);
    // The loop's sleep (which ignores TERM as well) may still be around for 50 ms.
    let _ = child.signal_group(libc::SIGKILL);
}

#[tokio::test]
async fn terminate_returns_the_sigterm_status_of_a_normal_child_quickly() {
    let mut child = sleeper().spawn().unwrap();
    let start = Instant::now();
    let status = timeout(LIMIT, child.terminate(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn terminate_after_the_child_exited_returns_its_status() {
    let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    let first = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    let again = timeout(LIMIT, child.terminate(Duration::from_millis(100)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.code(), Some(3));
    assert_eq!(again, first);
}

#[tokio::test]
async fn kill_returns_the_sigkill_status() {
    let mut child = sleeper().spawn().unwrap();
    let pid = pid_of(&child);
    let start_time = stat(pid).unwrap().start_time;
    let status = timeout(LIMIT, child.kill()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.code(), None);
    assert!(
        !exists(pid, start_time),
        "kill().await returns after the reap"
    );
    // Twice is fine.
    assert_eq!(timeout(LIMIT, child.kill()).await.unwrap().unwrap(), status);
}

// ----- drop policy ----------------------------------------------------------------------------

#[tokio::test]
async fn kill_on_drop_kills_and_reaps_the_child() {
    let child = sleeper().kill_on_drop(true).spawn().unwrap();
    let pid = pid_of(&child);
    let start_time = stat(pid).unwrap().start_time;
    drop(child);
    // Gone from /proc means dead *and* reaped: a zombie would still have its entry.
    assert!(
        eventually(LIMIT, || !exists(pid, start_time)).await,
        "child {pid} still there after drop: {:?}",
        stat(pid)
    );
}

#[tokio::test]
async fn without_kill_on_drop_the_child_survives_and_is_reaped_later() {
    for explicit in [false, true] {
        let mut command = sleeper();
        if explicit {
            command.kill_on_drop(false);
        }
        let child = command.spawn().unwrap();
        let pid = pid_of(&child);
        let start_time = stat(pid).unwrap().start_time;
        drop(child);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            is_running(pid, start_time),
            "child died with its transport (explicit={explicit})"
        );

        // SAFETY: signalling a child we spawned, which has not been reaped (checked above).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert!(
            eventually(LIMIT, || !exists(pid, start_time)).await,
            "no one reaped {pid}: {:?}",
            stat(pid)
        );
    }
}

#[tokio::test]
async fn a_dropped_child_that_exits_on_its_own_leaves_no_zombie() {
    let child = Command::new("sleep").arg("0.1").spawn().unwrap();
    let pid = pid_of(&child);
    let start_time = stat(pid).unwrap().start_time;
    drop(child);
    assert!(is_running(pid, start_time));
    assert!(
        eventually(LIMIT, || !exists(pid, start_time)).await,
        "{:?}",
        stat(pid)
    );
}

#[tokio::test]
async fn a_child_that_exits_before_spawn_returns_is_reaped_at_once() {
    // `true` may be gone before the transport exists; then it is reaped right away and the
    // transport has no pid.
    let mut child = Command::new("true").spawn().unwrap();
    if let Some(pid) = child.pid() {
        // Still there, unless the reaper took it in between (then `pid()` says so).
        assert!(stat(pid as i32).is_some() || child.pid().is_none());
    }
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert_eq!(child.pid(), None);
}

// ----- wait delay -----------------------------------------------------------------------------

/// A shell that leaves a grandchild holding fds 1, 2 and 3, prints "started" and exits.
fn leaves_a_grandchild() -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "sleep 30 & echo started"])
        .fd(3, ChildFd::ParentWrites)
        .process_group(0);
    c
}

#[tokio::test]
async fn wait_delay_closes_pipes_held_by_a_grandchild() {
    let delay = Duration::from_millis(300);
    let mut child = leaves_a_grandchild().wait_delay(delay).spawn().unwrap();
    let pgid = child.process_group().unwrap();

    let mut exited_at = None;
    let mut ended_at = None;
    let mut closes = Vec::new();
    let mut out = Vec::new();
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            match e {
                Event::Data { fd: 1, data } => out.extend_from_slice(&data),
                Event::Exited(s) => {
                    assert!(s.unwrap().success());
                    exited_at = Some(Instant::now());
                }
                Event::Closed { fd, reason } => closes.push((fd, reason, Instant::now())),
                Event::Ended(s) => {
                    assert!(s.unwrap().success());
                    ended_at = Some(Instant::now());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("Ended never came although the wait delay was set");
    let _ = child.signal_group(libc::SIGKILL);

    assert_eq!(out, b"started\n");
    let (exited_at, ended_at) = (exited_at.unwrap(), ended_at.unwrap());
    let waited = ended_at - exited_at;
    assert!(
        waited >= delay - Duration::from_millis(20),
        "Ended after {waited:?}"
    );
    assert!(
        waited < delay + Duration::from_secs(2),
        "Ended after {waited:?}"
    );

    // fds 1, 2 (read) and 3 (written) were held by the grandchild: closed by force, after the
    // exit. fd 0 was not (a background job's stdin is /dev/null), so it closed normally.
    for fd in [1, 2, 3] {
        let (_, reason, at) = closes
            .iter()
            .find(|(f, _, _)| *f == fd)
            .unwrap_or_else(|| panic!("no Closed for fd {fd}: {closes:?}"));
        assert!(
            matches!(reason, CloseReason::WaitDelay),
            "fd {fd}: {reason:?}"
        );
        assert!(*at >= exited_at);
    }
    let (_, reason, _) = closes
        .iter()
        .find(|(f, _, _)| *f == 0)
        .expect("fd 0 closed");
    assert!(matches!(reason, CloseReason::Eof), "fd 0: {reason:?}");
    assert!(eventually(LIMIT, || live_members_of_group(pgid).is_empty()).await);
}

#[tokio::test]
async fn without_wait_delay_a_grandchild_keeps_ended_away() {
    let mut child = leaves_a_grandchild().spawn().unwrap();
    // Exited arrives...
    timeout(LIMIT, async {
        while let Some(e) = child.next().await {
            if let Event::Exited(s) = e {
                assert!(s.unwrap().success());
                return;
            }
        }
        panic!("stream ended before Exited");
    })
    .await
    .unwrap();
    // ...but Ended does not, as long as the grandchild holds the pipes.
    let wait_for_end = async {
        while let Some(e) = child.next().await {
            if let Event::Ended(_) = e {
                return;
            }
        }
    };
    assert!(
        timeout(Duration::from_millis(600), wait_for_end)
            .await
            .is_err(),
        "Ended arrived while a grandchild still held the pipes"
    );
    // Killing the grandchild ends it, with ordinary closes.
    child.signal_group(libc::SIGKILL).unwrap();
    let events = all_events(&mut child, LIMIT).await;
    assert!(
        matches!(events.last(), Some(Event::Ended(Ok(_)))),
        "{events:?}"
    );
    for e in &events {
        if let Event::Closed { fd, reason } = e {
            assert!(
                !matches!(reason, CloseReason::WaitDelay),
                "fd {fd} closed by wait delay"
            );
        }
    }
}

#[tokio::test]
async fn wait_delay_does_not_hold_up_a_child_that_closes_its_pipes() {
    let start = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", "echo hi"])
        .wait_delay(Duration::from_secs(5))
        .spawn()
        .unwrap();
    let events = all_events(&mut child, LIMIT).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    for e in &events {
        if let Event::Closed { fd, reason } = e {
            assert!(matches!(reason, CloseReason::Eof), "fd {fd}: {reason:?}");
        }
    }
}

// ----- resource usage -------------------------------------------------------------------------

fn cpu(status: &ExitStatus) -> Duration {
    let u = status.resource_usage();
    u.user_time + u.system_time
}

#[tokio::test]
async fn rusage_of_a_busy_child_shows_cpu_time() {
    // About 0.2 s of shell arithmetic.
    let status = Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
        .spawn()
        .unwrap();
    let status = timeout(LIMIT, status).await.unwrap().unwrap();
    assert!(status.success());
    let usage = status.resource_usage();
    assert!(usage.user_time > Duration::from_millis(20), "{usage:?}");
    assert!(cpu(&status) > Duration::from_millis(50), "{usage:?}");
    assert!(usage.max_rss_bytes > 0, "{usage:?}");
}

#[tokio::test]
async fn rusage_of_sleep_is_near_zero_cpu() {
    let start = Instant::now();
    let status = timeout(LIMIT, Command::new("sleep").arg("0.2").spawn().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(status.success());
    let usage = status.resource_usage();
    assert!(cpu(&status) < Duration::from_millis(50), "{usage:?}");
    assert!(usage.max_rss_bytes > 0, "{usage:?}");
    assert!(usage.voluntary_context_switches > 0, "{usage:?}");
}

#[tokio::test]
async fn rusage_max_rss_is_in_bytes() {
    // dd with a 32 MiB block size holds a 32 MiB buffer and touches all of it.
    let status = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=32M", "count=1"])
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .spawn()
        .unwrap();
    let status = timeout(LIMIT, status).await.unwrap().unwrap();
    assert!(status.success());
    let rss = status.resource_usage().max_rss_bytes;
    assert!(
        rss >= 32 << 20,
        "max_rss_bytes {rss} below the 32 MiB buffer"
    );
    assert!(rss < 4 << 30, "max_rss_bytes {rss} implausibly large");
}

#[tokio::test]
async fn rusage_of_a_killed_child_is_reported_too() {
    let mut child = sleeper().spawn().unwrap();
    let status = timeout(LIMIT, child.kill()).await.unwrap().unwrap();
    assert!(status.resource_usage().max_rss_bytes > 0);
}

// ----- no pid reuse ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reaped_child_is_never_signalled() {
    let mut child = Command::new("sleep").arg("0.1").spawn().unwrap();
    assert!(child.pid().is_some());
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert_eq!(child.pid(), None);
    for sig in [0, libc::SIGTERM, libc::SIGKILL] {
        assert!(
            matches!(child.signal(sig), Err(Error::AlreadyExited)),
            "signal {sig} after the reap: {:?}",
            child.signal(sig)
        );
    }
}

#[tokio::test]
async fn a_zombie_not_yet_seen_can_still_be_signalled_harmlessly() {
    // Before the reap, signalling a child that already exited is not an error that matters:
    // either Ok (the zombie is still there) or AlreadyExited (it was reaped).
    let mut child = Command::new("true").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match child.signal(libc::SIGTERM) {
        Ok(()) | Err(Error::AlreadyExited) => {}
        Err(e) => panic!("{e:?}"),
    }
    let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

// ----- parent-death signal --------------------------------------------------------------------

/// Spawns `sleep 30` from a dedicated thread running its own current-thread runtime, returns
/// the transport once that thread has exited.
///
/// THE THREAD CAVEAT: Linux sends the parent-death signal when the *thread* that spawned the
/// child exits, not when the process does. Spawning from a short-lived thread (such as a
/// worker of a multi-thread runtime that retires) therefore signals the child early. This
/// test relies on exactly that to observe the signal without killing the test process: the
/// spawning thread exits and the child must get the signal. The child has no pipes (every fd
/// is /dev/null), so its transport holds nothing tied to the dead thread's runtime and can be
/// awaited from the test's own runtime.
fn spawn_from_a_thread_that_exits(pdeathsig: Option<i32>) -> ProcessTransport {
    spawn_from_a_thread_that_exits_with(pdeathsig, |_| {})
}

fn spawn_from_a_thread_that_exits_with(
    pdeathsig: Option<i32>,
    configure: impl FnOnce(&mut Command) + Send + 'static,
) -> ProcessTransport {
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut command = sleeper();
            if let Some(sig) = pdeathsig {
                command.parent_death_signal(sig);
            }
            configure(&mut command);
            command.spawn().unwrap()
        })
    });
    handle.join().unwrap()
}

#[tokio::test]
async fn parent_death_signal_fires_when_the_spawning_thread_exits() {
    let mut child = spawn_from_a_thread_that_exits(Some(libc::SIGUSR1));
    let status = timeout(LIMIT, child.wait())
        .await
        .expect("the child did not get its parent-death signal")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGUSR1), "{status:?}");
}

#[tokio::test]
async fn without_parent_death_signal_the_child_outlives_the_spawning_thread() {
    let mut child = spawn_from_a_thread_that_exits(None);
    let pid = pid_of(&child);
    assert!(
        timeout(Duration::from_millis(400), child.wait())
            .await
            .is_err(),
        "the child died with its spawning thread"
    );
    assert!(stat(pid).is_some_and(|s| s.state != 'Z'));
    let status = timeout(LIMIT, child.kill()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[tokio::test]
async fn parent_death_signal_is_not_sent_while_the_spawning_thread_lives() {
    // The test's own (current-thread) runtime thread spawns and stays alive.
    let mut child = sleeper()
        .parent_death_signal(libc::SIGKILL)
        .spawn()
        .unwrap();
    assert!(
        timeout(Duration::from_millis(300), child.wait())
            .await
            .is_err()
    );
    let s = stat(pid_of(&child)).unwrap();
    assert_eq!(s.ppid as u32, std::process::id());
    let status = timeout(LIMIT, child.terminate(Duration::from_secs(2)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[tokio::test]
async fn parent_death_signal_survives_a_change_of_credentials() {
    // The kernel clears the parent-death signal when the effective uid or gid changes, so it
    // must be set after the child switches user. Needs root to switch.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to change credentials");
        return;
    }
    let mut child = spawn_from_a_thread_that_exits_with(Some(libc::SIGUSR1), |c| {
        c.uid(65534).gid(65534);
    });
    let result = timeout(Duration::from_secs(3), child.wait()).await;
    if result.is_err() {
        let _ = child.kill().await;
        panic!("the parent-death signal was lost when the child changed user");
    }
    let status = result.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGUSR1), "{status:?}");
}
