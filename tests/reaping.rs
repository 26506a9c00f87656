//! The reaper collects only this crate's children. Children of `tokio::process` and `std::process`
//! keep their statuses; a child someone else reaped ends with `WaitError::ReapedElsewhere` instead
//! of hanging; children that exit before anyone awaits them and dropped transports leave no zombie;
//! and the reaper outlives runtimes of both flavors.
//!
//! Zombie checks here look only at the pids a test spawned itself, so tests can run in
//! parallel.

mod common;

use std::time::{Duration, Instant};

use process_transport::{ChildFd, Command, Error, WaitError};

use common::{
    LIMIT, assert_reaped_eventually, is_our_zombie, proc_state, run_to_end, sh, wait_until, within,
};

/// Waits (blocking, up to [`LIMIT`]) until `pid` is a zombie.
fn wait_until_zombie(pid: u32) {
    assert!(
        wait_until(LIMIT, || is_our_zombie(pid)),
        "pid {pid} never became a zombie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn std_and_tokio_children_keep_their_statuses_alongside_ours() {
    // Foreign children that exit first and stay zombies: the reaper must leave them alone.
    let mut std_child = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let mut tokio_child = tokio::process::Command::new("sh")
        .args(["-c", "exit 9"])
        .spawn()
        .unwrap();
    wait_until_zombie(std_child.id());

    // Ours, exiting while the foreign ones sit there, plus a tokio child exiting among them.
    let mut ours = Vec::new();
    for code in 0..10 {
        ours.push((code, sh(&format!("exit {code}")).spawn().unwrap()));
    }
    let mut late_tokio = tokio::process::Command::new("sh")
        .args(["-c", "sleep 0.1; exit 11"])
        .spawn()
        .unwrap();
    for (code, child) in ours {
        let status = within("our child", child).await.unwrap();
        assert_eq!(status.code(), Some(code));
    }

    assert_eq!(
        within("tokio child", tokio_child.wait())
            .await
            .unwrap()
            .code(),
        Some(9)
    );
    assert_eq!(
        within("late tokio child", late_tokio.wait())
            .await
            .unwrap()
            .code(),
        Some(11)
    );
    assert_eq!(
        std_child.wait().unwrap().code(),
        Some(7),
        "std's child was not stolen"
    );
}

#[tokio::test]
async fn std_child_status_survives_many_of_our_exits() {
    let mut foreign = std::process::Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    wait_until_zombie(foreign.id());
    // A foreign zombie stands first in the kernel's list: our exits must still be seen.
    for round in 0..20 {
        let status = within(
            "ours behind a foreign zombie",
            Command::new("true").fds([]).spawn().unwrap(),
        )
        .await
        .unwrap();
        assert!(status.success(), "round {round}");
    }
    assert!(
        is_our_zombie(foreign.id()),
        "the foreign zombie is still there for its owner"
    );
    assert_eq!(foreign.wait().unwrap().code(), Some(3));
}

#[tokio::test]
async fn std_output_works_while_our_children_run() {
    // `output()` waits with waitpid(pid) itself; it must not get ECHILD.
    let mut ours = Command::new("sleep").arg("0.3").fds([]).spawn().unwrap();
    for _ in 0..5 {
        let out = std::process::Command::new("sh")
            .args(["-c", "echo std; exit 4"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(out.stdout, b"std\n");
    }
    assert!(within("ours", ours.wait()).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_reaped_by_someone_else_ends_with_reaped_elsewhere() {
    // A thread of the test blocks in waitpid(pid) on our child, then the child is killed. The
    // thread is woken by the kernel directly and nearly always wins the race against the
    // reaper; whoever wins, the transport must end (never hang) with a consistent result.
    let mut stolen = 0;
    for _ in 0..10 {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.pid().unwrap() as libc::pid_t;
        let thief = std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer.
            let got = unsafe { libc::waitpid(pid, &mut status, 0) };
            (got, status)
        });
        std::thread::sleep(Duration::from_millis(30));
        child.signal(libc::SIGKILL).unwrap();
        let out = run_to_end(&mut child).await;
        out.assert_well_ordered(&[0, 1, 2]);
        let (got, status) = thief.join().unwrap();
        let ended = out.log.last().cloned();
        if got == pid {
            stolen += 1;
            assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
            assert_eq!(
                ended,
                Some(common::Rec::Ended(Err(WaitError::ReapedElsewhere)))
            );
            assert!(matches!(
                within("wait after the end", child.wait()).await,
                Err(Error::Wait(WaitError::ReapedElsewhere))
            ));
            assert!(matches!(
                child.signal(libc::SIGTERM),
                Err(Error::AlreadyExited)
            ));
            break;
        }
        // The reaper won this round: the thief saw ECHILD and we got the real status.
        assert_eq!(got, -1);
        assert_eq!(out.status().signal(), Some(libc::SIGKILL));
    }
    assert!(
        stolen > 0,
        "the test never managed to reap the child itself"
    );
}

#[tokio::test]
async fn child_that_exits_before_anyone_awaits_is_reaped_without_polling() {
    let child = Command::new("sleep").arg("0.05").fds([]).spawn().unwrap();
    let pid = child.pid().expect("pid while running");
    // Block this (only) runtime thread: nothing polls the transport, yet the reaper reaps.
    let deadline = Instant::now() + LIMIT;
    while child.pid().is_some() {
        assert!(Instant::now() < deadline, "never reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!is_our_zombie(pid), "no zombie left");
    let status = within("await after the reap", child).await.unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn exit_status_is_kept_for_a_late_await() {
    let child = sh("exit 42").spawn().unwrap();
    // The child may even be reaped before spawn returns; either way it is gone soon.
    if let Some(pid) = child.pid() {
        assert_reaped_eventually(pid).await;
    }
    assert_eq!(child.pid(), None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(within("late await", child).await.unwrap().code(), Some(42));
}

#[tokio::test]
async fn dropped_transport_of_a_running_child_is_reaped_when_the_child_exits() {
    let child = Command::new("sleep").arg("0.2").spawn().unwrap();
    let pid = child.pid().unwrap();
    drop(child);
    assert!(
        proc_state(pid).is_some_and(|(state, _)| state != 'Z'),
        "still running"
    );
    assert_reaped_eventually(pid).await;
}

#[tokio::test]
async fn dropped_transport_of_an_exited_child_leaves_no_zombie() {
    let child = Command::new("sleep").arg("0.2").fds([]).spawn().unwrap();
    let pid = child.pid().expect("sleeping");
    std::thread::sleep(Duration::from_millis(400));
    drop(child);
    assert_reaped_eventually(pid).await;
}

#[tokio::test]
async fn dropping_the_transport_closes_its_pipes_so_a_writing_child_ends() {
    // `yes` would write forever; with the read end gone it dies of SIGPIPE and is reaped.
    let child = Command::new("yes").fd(0, ChildFd::Null).spawn().unwrap();
    let pid = child.pid().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(child);
    assert_reaped_eventually(pid).await;
}

#[test]
fn reaper_keeps_working_as_runtimes_of_both_flavors_come_and_go() {
    let mut lingering = Vec::new();
    for round in 0..8 {
        let runtime = if round % 2 == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        runtime.block_on(async {
            let status = within(
                "child in a fresh runtime",
                sh(&format!("exit {round}")).spawn().unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(status.code(), Some(round));
            // One child outlives its runtime, transport dropped.
            let child = Command::new("sleep").arg("0.1").fds([]).spawn().unwrap();
            lingering.push(child.pid().unwrap());
        });
        drop(runtime);
    }
    // No runtime exists any more; the reaper still collects the children that outlived theirs.
    let deadline = Instant::now() + LIMIT;
    for pid in lingering {
        while proc_state(pid).is_some_and(|(_, ppid)| ppid == std::process::id()) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} never reaped: {:?}",
                proc_state(pid)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn reaping_works_on_a_current_thread_runtime() {
    for code in [0, 1, 2] {
        let status = within(
            "current thread",
            sh(&format!("exit {code}")).spawn().unwrap(),
        )
        .await;
        assert_eq!(status.unwrap().code(), Some(code));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn reaping_works_on_a_multi_thread_runtime_from_many_tasks() {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let child = sh(&format!("exit {}", i % 5)).spawn().unwrap();
                (i, within("task child", child).await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        assert_eq!(status.code(), Some(i % 5));
    }
}
