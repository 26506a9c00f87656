//! The reaper only ever observes its own children, by identity rather than by number, at a
//! cost per exit that nothing else in the host process can inflate; and it survives the
//! process it lives in failing to start it, or forking.
//!
//! Several tests run in a fresh process (see `common::rerun`) or a fresh pid namespace (see
//! `common::pidns`), because they change rlimits, fork, count syscalls from outside, or steer
//! pid numbers. This binary also runs with `PROCESS_TRANSPORT_REAPER=sigchld` in CI, where the
//! tests that need pidfds say so and return.

mod common;

use std::future::Future as _;
use std::time::Duration;

use process_transport::{ChildFd, Command, Error, ProcessTransport, SpawnError, WaitError};

use common::rerun::{in_own_process, is_inner, syscalls_of};
use common::{
    LIMIT, assert_reaper_thread_idles, current_thread_runtime, forced_sigchld, pidns,
    process_state, skip_without_pidfds, wait_until,
};

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)]);
    cmd
}

/// A `std::process` child that has exited and is not waited for until the caller does.
fn foreign_zombie() -> std::process::Child {
    let zombie = std::process::Command::new("true").spawn().unwrap();
    let pid = zombie.id();
    assert!(wait_until(LIMIT, || process_state(pid) == Some('Z')));
    zombie
}

const CHILDREN: usize = 300;

/// Spawns [`CHILDREN`] sleepers, runs `meanwhile` while they live, then kills and awaits each
/// (each exit of ours reaped exactly once, so the count is deterministic).
async fn with_sleepers(meanwhile: impl FnOnce()) {
    let mut children: Vec<ProcessTransport> =
        (0..CHILDREN).map(|_| sleeper().spawn().unwrap()).collect();
    meanwhile();
    for child in &mut children {
        let status = child.kill().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}

/// The outer side of the counting tests: runs `test` under perf and checks that the wait
/// syscalls stay within twice `exits` (one wait per exit, with room for retried calls). The
/// SIGCHLD design made tens of thousands here. Skipped (the fallback scans beside foreign
/// children, by design) under the forced fallback, and loudly without perf.
fn assert_one_wait_per_exit(test: &str, exits: usize, what: &str) {
    if skip_without_pidfds(test) {
        return;
    }
    let Some(waits) = syscalls_of(test, &["wait4", "waitid"]) else {
        return;
    };
    assert!(
        waits <= 2 * exits as u64,
        "{waits} wait syscalls for {exits} exits ({what})"
    );
}

#[test]
fn one_exit_costs_a_few_wait_syscalls_even_beside_a_foreign_zombie() {
    let name = "one_exit_costs_a_few_wait_syscalls_even_beside_a_foreign_zombie";
    if is_inner(name) {
        // Older than every child of ours, so it stands first in the kernel's list of children.
        let mut zombie = foreign_zombie();
        current_thread_runtime().block_on(with_sleepers(|| {}));
        let kept = zombie.wait().unwrap();
        assert!(kept.success(), "the foreign status was kept");
        return;
    }
    // Ours, and the foreign zombie's own wait.
    assert_one_wait_per_exit(name, CHILDREN + 1, "beside a foreign zombie");
}

#[test]
fn foreign_exits_cost_the_reaper_nothing_however_many_children_live() {
    let name = "foreign_exits_cost_the_reaper_nothing_however_many_children_live";
    const FOREIGN: usize = 100;
    if is_inner(name) {
        current_thread_runtime().block_on(with_sleepers(|| {
            for _ in 0..FOREIGN {
                let status = std::process::Command::new("true").status().unwrap();
                assert!(status.success());
            }
        }));
        return;
    }
    // std's own waitpid for each foreign child, one waitid for each of ours, nothing else.
    assert_one_wait_per_exit(name, FOREIGN + CHILDREN, "foreign exits beside ours");
}

#[test]
fn signal_group_never_reaches_a_new_group_that_took_the_number() {
    let name = "signal_group_never_reaches_a_new_group_that_took_the_number";
    if skip_without_pidfds(name) || !pidns::enter(name) {
        return;
    }
    current_thread_runtime().block_on(async {
        let mut leader = Command::new("true");
        leader.process_group(0);
        let mut leader = leader.spawn().unwrap();
        let pgid = leader.process_group().unwrap();
        assert!(leader.wait().await.unwrap().success());

        // Try hard to give a stranger the number, as a group leader of its own.
        pidns::set_next_pid(pgid);
        let mut stranger = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut stranger, 0);
        let mut stranger = stranger.arg("30").spawn().unwrap();
        assert_ne!(
            stranger.id() as i32,
            pgid,
            "the number was free while the transport lives"
        );

        // The group is still ours (its zombie leader), so signalling it is allowed, and the
        // stranger is not in it.
        leader.signal_group(libc::SIGKILL).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "the stranger was hit"
        );

        // Once the transport is gone, the zombie is released and the number is free again.
        drop(leader);
        assert!(wait_until(LIMIT, || process_state(pgid).is_none()));
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    });
}

#[test]
fn a_child_reaped_elsewhere_never_takes_the_status_of_the_number_s_next_holder() {
    let name = "a_child_reaped_elsewhere_never_takes_the_status_of_the_number_s_next_holder";
    if skip_without_pidfds(name) || !pidns::enter(name) {
        return;
    }
    current_thread_runtime().block_on(async {
        // The foreign reap races the reaper; try until the foreign side wins once.
        for _attempt in 0..50 {
            let mut ours = sleeper().spawn().unwrap();
            let pid = ours.pid().unwrap() as i32;
            ours.signal(libc::SIGKILL).unwrap();
            // SAFETY: waitpid on a pid of this process with a valid status pointer.
            let taken = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            if taken != pid {
                continue; // The reaper got there first: not the case under test.
            }
            // The number's next holder is another child of ours that exits with 42.
            pidns::set_next_pid(pid);
            let mut next = std::process::Command::new("sh")
                .args(["-c", "exit 42"])
                .spawn()
                .unwrap();
            let status = tokio::time::timeout(LIMIT, ours.wait()).await.unwrap();
            match status {
                Err(Error::Wait(WaitError::ReapedElsewhere)) => {}
                other => panic!("expected ReapedElsewhere, got {other:?}"),
            }
            assert_eq!(next.wait().unwrap().code(), Some(42), "its status was kept");
            return;
        }
        eprintln!("the reaper won every race; nothing to check");
    });
}

#[test]
fn a_process_group_child_keeps_its_zombie_until_the_transport_is_dropped() {
    current_thread_runtime().block_on(async {
        let mut grouped = Command::new("true");
        grouped.process_group(0);
        let mut grouped = grouped.spawn().unwrap();
        let pid = grouped.spawned_pid();
        assert!(grouped.wait().await.unwrap().success());
        if !forced_sigchld() {
            assert_eq!(process_state(pid), Some('Z'), "the group's zombie is kept");
        }
        drop(grouped);
        assert!(wait_until(LIMIT, || process_state(pid).is_none()));

        // Without a process group nothing is kept.
        let mut plain = Command::new("true").spawn().unwrap();
        let pid = plain.spawned_pid();
        assert!(plain.wait().await.unwrap().success());
        assert!(wait_until(LIMIT, || process_state(pid).is_none()));
        drop(plain);
    });
}

/// Sets RLIMIT_NOFILE's soft limit, returning the old one.
fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        old
    }
}

fn sigchld_is_default() -> bool {
    // SAFETY: queries the action only, into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old);
        old.sa_sigaction == libc::SIG_DFL
    }
}

#[test]
fn a_reaper_that_could_not_start_is_retried_on_the_next_spawn() {
    let name = "a_reaper_that_could_not_start_is_retried_on_the_next_spawn";
    if !in_own_process(name) {
        return;
    }
    current_thread_runtime().block_on(async {
        // Every fd taken before the first spawn: the reaper cannot even make its epoll set.
        let old = set_nofile(64);
        let mut hogs = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hogs.push(f);
        }
        let mut cmd = Command::new("true");
        cmd.fds([]);
        let err = cmd.spawn().unwrap_err();
        let SpawnError::Spawn { source, .. } = &err else {
            panic!("expected a spawn error, got {err:?}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{err:?}");
        if !forced_sigchld() {
            assert!(
                sigchld_is_default(),
                "a failed start left a SIGCHLD handler"
            );
        }
        drop(hogs);
        set_nofile(old);
        // The next spawn starts the reaper for real.
        let status = tokio::time::timeout(LIMIT, cmd.spawn().unwrap()).await;
        assert!(status.unwrap().unwrap().success());
    });
}

#[test]
fn a_forked_process_reaps_the_children_it_spawns() {
    let name = "a_forked_process_reaps_the_children_it_spawns";
    if !in_own_process(name) {
        return;
    }
    // The reaper starts here, in the parent.
    current_thread_runtime().block_on(async {
        assert!(
            Command::new("true")
                .spawn()
                .unwrap()
                .await
                .unwrap()
                .success()
        );
    });
    // SAFETY: fork in a process whose other threads (the reaper, blocking-pool leftovers)
    // the child never touches; the child only runs the code below and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = current_thread_runtime().block_on(async {
            // Still running when it is registered, so only a reaper can collect it.
            let child = Command::new("sh").args(["-c", "sleep 0.2; exit 7"]).spawn();
            let Ok(child) = child else { return false };
            let status = tokio::time::timeout(LIMIT, child).await;
            matches!(status, Ok(Ok(s)) if s.code() == Some(7))
        });
        // SAFETY: leaves the forked process at once, without running the test harness's
        // exit path.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the forked process, a child of this one, with a valid pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked process could not spawn and reap (status {status:#x})"
    );
    // And the parent's reaper still works.
    current_thread_runtime().block_on(async {
        assert!(
            Command::new("true")
                .spawn()
                .unwrap()
                .await
                .unwrap()
                .success()
        );
    });
}

#[test]
fn the_reaper_does_not_spin_after_an_exit_while_a_transport_still_watches() {
    let name = "the_reaper_does_not_spin_after_an_exit_while_a_transport_still_watches";
    if !in_own_process(name) {
        return;
    }
    current_thread_runtime().block_on(async {
        let mut child = Command::new("sleep").arg("0.1").spawn().unwrap();
        // Polled once: the transport now watches the child's exit in this runtime.
        let polled = tokio::time::timeout(Duration::from_millis(1), child.wait()).await;
        assert!(polled.is_err(), "sleep 0.1 is still running");
        // The child exits while nobody polls the transport that watches it.
        std::thread::sleep(Duration::from_millis(300));
        assert_reaper_thread_idles();
        assert!(child.wait().await.unwrap().success());
    });
}

#[test]
fn orphans_adopted_as_a_subreaper_cost_the_reaper_nothing() {
    let name = "orphans_adopted_as_a_subreaper_cost_the_reaper_nothing";
    const ORPHANS: usize = 20;
    if is_inner(name) {
        // SAFETY: prctl with integer arguments; makes this process adopt its descendants'
        // orphans (as service managers and container inits do).
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
            0
        );
        current_thread_runtime().block_on(async {
            // Each shell leaves an orphan that this process adopts and nobody ever waits for:
            // zombies standing first in the kernel's list of children.
            for _ in 0..ORPHANS {
                let mut orphaner = Command::new("sh");
                orphaner.args(["-c", "true & exit 0"]);
                assert!(orphaner.spawn().unwrap().await.unwrap().success());
            }
            with_sleepers(|| {}).await;
        });
        return;
    }
    assert_one_wait_per_exit(name, ORPHANS + CHILDREN, "beside adopted orphans");
}

/// A waker that panics (an executor's bug).
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("a waker that panics");
    }
}

#[test]
fn a_waker_that_panics_does_not_take_the_reaper_thread_with_it() {
    let name = "a_waker_that_panics_does_not_take_the_reaper_thread_with_it";
    // Alone in a process of its own: the panic is printed, and a dead reaper would stay dead.
    if !in_own_process(name) {
        return;
    }
    let quiet = [(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)];
    let rt = current_thread_runtime();
    let mut child = rt.block_on(async {
        Command::new("sleep")
            .arg("0.2")
            .fds(quiet.clone())
            .spawn()
            .unwrap()
    });
    // Polled once outside any runtime: the reaper thread is the one to wake that waker.
    let waker = std::task::Waker::from(std::sync::Arc::new(PanickingWaker));
    let mut wait = Box::pin(child.wait());
    let polled = wait
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    assert!(polled.is_pending());
    drop(wait);
    std::thread::sleep(Duration::from_millis(500));
    // A later child left to the reaper thread (a multi-thread runtime's block_on).
    let status = common::multi_thread_runtime(1).block_on(async {
        let mut later = Command::new("true").fds(quiet).spawn().unwrap();
        tokio::time::timeout(LIMIT, later.wait()).await
    });
    assert!(
        status
            .expect("the later child was never reaped")
            .unwrap()
            .success()
    );
    assert!(child.try_status().unwrap().unwrap().success());
}
