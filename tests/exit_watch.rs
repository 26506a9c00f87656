//! A transport awaited in a task, or on a current-thread runtime, hears of its child's exit
//! in its own runtime's reactor, which reaps it there even when nothing awaits it any more;
//! whatever keeps that reactor from hearing it (a handle waiting instead, the transport
//! dropped or moved to another runtime, its runtime gone, without I/O or not driven, a
//! foreign executor blocking it, a fork) leaves the exit to the reaper thread: at once, or
//! within its deferred check (a second) where the runtime is not driven. Its status reaches
//! everyone who asks, nothing panics and the reaper never spins.
//!
//! Hangs fail after a limit instead of blocking. The tests that fork or set a panic hook run
//! in a fresh process (see `common::rerun`). Under the forced SIGCHLD fallback there is no
//! pidfd to watch; the tests that need one return.

mod common;

use std::time::{Duration, Instant};

use process_transport::{ChildFd, Command, Error, ProcessTransport};

use common::rerun::{in_own_process, is_inner, syscalls_of};
use common::{
    LIMIT, assert_reaper_thread_idles, current_thread_runtime, in_a_task, multi_thread_runtime,
    process_state, reaper_thread_cpu_ns, reaper_thread_switches, skip_without_pidfds, wait_until,
    within,
};

/// A child that runs for `secs`, with its stdio on pipes.
fn sleep_for(secs: &str) -> ProcessTransport {
    Command::new("sleep").arg(secs).spawn().unwrap()
}

/// Polls `child.wait()` once (it must still be pending), so the transport watches the exit.
async fn poll_once(child: &mut ProcessTransport) {
    let polled = tokio::time::timeout(Duration::from_millis(1), child.wait()).await;
    assert!(polled.is_err(), "the child exited before it was watched");
}

/// A child spawned and polled once in a task on `rt`, handed back watched.
fn watched_in(rt: &tokio::runtime::Runtime, secs: &'static str) -> ProcessTransport {
    in_a_task(rt, async move {
        let mut child = sleep_for(secs);
        poll_once(&mut child).await;
        child
    })
}

/// Runs `f` on a thread of its own and returns what it returns, failing instead of hanging
/// (for futures driven where no Tokio timer can run).
fn no_hang<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(LIMIT)
        .expect("still waiting after the limit")
}

/// Whether to go on with a test `name` that needs pidfds and a fresh process: `false` under
/// the forced SIGCHLD fallback, and in the outer process once the inner run has passed.
fn inner_run_with_pidfds(name: &str) -> bool {
    !skip_without_pidfds(name) && in_own_process(name)
}

#[test]
fn exits_awaited_in_a_task_or_on_a_current_thread_runtime_do_not_wake_the_reaper_thread() {
    if !inner_run_with_pidfds(
        "exits_awaited_in_a_task_or_on_a_current_thread_runtime_do_not_wake_the_reaper_thread",
    ) {
        return;
    }
    let rt = current_thread_runtime();
    // The first spawn starts the reaper; count from a settled thread.
    in_a_task(&rt, async { sleep_for("0").wait().await.unwrap() });
    std::thread::sleep(Duration::from_millis(100));
    let (before, started) = (reaper_thread_switches(), Instant::now());
    in_a_task(&rt, async {
        for _ in 0..40 {
            assert!(
                within("the exit", sleep_for("0.02").wait())
                    .await
                    .unwrap()
                    .success()
            );
        }
    });
    // Watched in one task, then awaited in another, which takes the watch over.
    for _ in 0..20 {
        let mut child = watched_in(&rt, "0.05");
        let status = in_a_task(&rt, async move { within("the exit", child.wait()).await });
        assert!(status.unwrap().success());
    }
    // Awaited outside any task, by the thread that drives the runtime.
    for _ in 0..20 {
        let status = rt.block_on(async { within("the exit", sleep_for("0.02").wait()).await });
        assert!(status.unwrap().success());
    }
    let woken = reaper_thread_switches() - before;
    // The thread checks the deferred exits at most every 100 ms, and backs off while the
    // checks find none (these exits are all reaped where they are awaited): a handful of
    // wake-ups in these ~2.5 s (5 measured). Were it woken by the exits of any one of the
    // three ways of awaiting above, that would be 20 more.
    assert!(
        woken < 15,
        "the reaper thread woke {woken} times for 80 awaited exits in {:?}",
        started.elapsed()
    );
}

/// Awaits a 0.3 s child while a 1 ms ticker wakes the awaiting future again and again;
/// returns how often `wait()` was polled.
async fn wait_polled_often() -> u32 {
    let mut child = sleep_for("0.3");
    let mut wait = std::pin::pin!(child.wait());
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let mut polls = 0;
    loop {
        tokio::select! {
            status = &mut wait => {
                assert!(status.unwrap().success());
                return polls;
            }
            _ = ticks.tick() => polls += 1,
        }
    }
}

#[test]
fn a_watch_is_set_up_once_however_often_the_wait_is_polled() {
    let name = "a_watch_is_set_up_once_however_often_the_wait_is_polled";
    if skip_without_pidfds(name) {
        return;
    }
    const CHILDREN: u64 = 2;
    if is_inner(name) {
        // A current-thread `block_on` and a task of a multi-thread runtime.
        let polls = current_thread_runtime().block_on(wait_polled_often())
            + in_a_task(&multi_thread_runtime(2), wait_polled_often());
        assert!(polls >= 200, "wait() polled only {polls} times");
        return;
    }
    let Some(epoll_ctls) = syscalls_of(name, &["epoll_ctl"]) else {
        return;
    };
    // Each child: its three pipes in and out of the reactor, its pidfd into the reactor and
    // between the reaper's sets; the runtimes' own few. Each poll setting the watch up again
    // would add four.
    assert!(
        epoll_ctls <= 20 * CHILDREN,
        "{epoll_ctls} epoll_ctl calls for {CHILDREN} children"
    );
}

#[test]
fn the_deferred_check_backs_off_yet_still_reaps_an_exit_nobody_hears() {
    let name = "the_deferred_check_backs_off_yet_still_reaps_an_exit_nobody_hears";
    if !inner_run_with_pidfds(name) {
        return;
    }
    let rt = current_thread_runtime();
    // Watched and left alone: its pidfd stays deferred, checked 0.1, 0.3, 0.7, 1.5, 2.5 s
    // (and every second after) after the watch began.
    let child = watched_in(&rt, "100");
    std::thread::sleep(Duration::from_millis(200));
    let (woken, cpu) = (reaper_thread_switches(), reaper_thread_cpu_ns());
    std::thread::sleep(Duration::from_secs(3));
    let (woken, cpu) = (
        reaper_thread_switches() - woken,
        reaper_thread_cpu_ns() - cpu,
    );
    // Four checks of a few µs each (every 100 ms would be 30; a check that spins until it
    // is due costs ~1 ms each).
    assert!(woken <= 7, "the reaper thread woke {woken} times in 3 s");
    assert!(
        cpu < 6_000_000,
        "the reaper thread used {cpu} ns of CPU in 3 s"
    );
    // Right after a backed-off check (the thread's switch count moves), a child deferred now
    // and heard by nobody is reaped at the next check, a second away at most.
    let switches = reaper_thread_switches();
    assert!(wait_until(LIMIT, || reaper_thread_switches() > switches));
    let brief = watched_in(&rt, "0.05");
    let deferred = Instant::now();
    let brief_pid = brief.spawned_pid();
    assert!(wait_until(LIMIT, || process_state(brief_pid).is_none()));
    let reaped = deferred.elapsed();
    assert!(
        reaped < Duration::from_millis(1500),
        "a child deferred after the checks backed off was reaped {reaped:?} later"
    );
    // Backed off, the checks still come: an exit nobody polls for (the runtime watching it
    // is not driven) is reaped at the next, at most a second away (3.5 s; without a
    // longest interval, 6.3 s).
    let pid = child.spawned_pid();
    child.signal(libc::SIGKILL).unwrap();
    let killed = Instant::now();
    assert!(wait_until(LIMIT, || process_state(pid).is_none()));
    let reaped = killed.elapsed();
    assert!(
        reaped < Duration::from_millis(1500),
        "reaped {reaped:?} after the kill"
    );
    assert_eq!(
        child.try_status().unwrap().unwrap().signal(),
        Some(libc::SIGKILL)
    );
}

#[test]
fn a_handle_sees_the_exit_while_the_watching_transport_is_left_alone() {
    let rt = current_thread_runtime();
    let child = watched_in(&rt, "0.2");
    // The transport is never polled again; the handle must not depend on it.
    let status = in_a_task(&rt, {
        let handle = child.handle();
        async move { within("the exit", handle.exited()).await.unwrap() }
    });
    assert!(status.success());
    assert_eq!(child.try_status().unwrap(), Some(status));
}

#[test]
fn a_trickle_of_awaited_exits_beside_a_long_lived_child_wakes_the_reaper_only_at_its_checks() {
    let name =
        "a_trickle_of_awaited_exits_beside_a_long_lived_child_wakes_the_reaper_only_at_its_checks";
    if !inner_run_with_pidfds(name) {
        return;
    }
    let rt = current_thread_runtime();
    // The long-lived child keeps the deferred set busy; its checks back off to a second.
    let _long = watched_in(&rt, "100");
    std::thread::sleep(Duration::from_millis(2500));
    let before = reaper_thread_switches();
    for _ in 0..20 {
        in_a_task(&rt, async {
            assert!(sleep_for("0.01").wait().await.unwrap().success());
        });
        std::thread::sleep(Duration::from_millis(150));
    }
    let woken = reaper_thread_switches() - before;
    // About 3.3 s: three or four checks. Checks every 100 ms would be 33; a thread woken
    // by each child joining the deferred set, 20 more.
    assert!(
        woken <= 8,
        "the reaper thread woke {woken} times for 20 awaited exits"
    );
}

#[test]
fn a_handle_waiting_on_a_watched_child_hears_its_exit_at_once() {
    if skip_without_pidfds("a_handle_waiting_on_a_watched_child_hears_its_exit_at_once") {
        return;
    }
    let rt = current_thread_runtime();
    for _ in 0..5 {
        let child = watched_in(&rt, "100");
        let handle = child.handle();
        let heard = in_a_task(&rt, async move {
            let waiter = tokio::spawn(async move {
                let status = within("the exit", handle.exited()).await.unwrap();
                (status, Instant::now())
            });
            tokio::time::sleep(Duration::from_millis(30)).await;
            let killed = Instant::now();
            child.signal(libc::SIGKILL).unwrap();
            let (status, heard) = waiter.await.unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            heard - killed
        });
        // Not at the reaper's next check of the exits tasks watch (every 100 ms or more): a
        // waiting handle has the reaper thread woken by the exit itself.
        assert!(
            heard < Duration::from_millis(50),
            "the handle heard of the exit {heard:?} after the kill"
        );
    }
}

#[test]
fn a_watched_child_awaited_from_a_multi_thread_block_on_hears_its_exit_at_once() {
    let name = "a_watched_child_awaited_from_a_multi_thread_block_on_hears_its_exit_at_once";
    if skip_without_pidfds(name) {
        return;
    }
    let rt = multi_thread_runtime(1);
    for _ in 0..5 {
        let mut child = watched_in(&rt, "100");
        let handle = child.handle();
        // `block_on` of a multi-thread runtime does not drive its reactor, so the watch
        // hands the child back to the reaper thread.
        let heard = rt.block_on(async move {
            let killer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                handle.signal(libc::SIGKILL).unwrap();
                Instant::now()
            });
            let status = within("the exit", child.wait()).await.unwrap();
            let heard = Instant::now();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            heard - killer.await.unwrap()
        });
        assert!(
            heard < Duration::from_millis(50),
            "block_on heard of the exit {heard:?} after the kill"
        );
    }
}

/// Spawns a long sleeper, gives up waiting for it after 20 ms (the wait cancelled, as
/// `select!` or `timeout` do), does other work on the same runtime for long enough that the
/// reaper's deferred check has backed off, then kills it: returns how long until
/// `try_status` knows the exit.
async fn heard_after_a_cancelled_wait() -> Duration {
    let mut child = sleep_for("100");
    let waited = tokio::time::timeout(Duration::from_millis(20), child.wait()).await;
    assert!(waited.is_err(), "the sleeper exited");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    child.signal(libc::SIGKILL).unwrap();
    let killed = Instant::now();
    while child.try_status().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    killed.elapsed()
}

#[test]
fn a_child_whose_wait_was_cancelled_is_reaped_at_its_exit() {
    if skip_without_pidfds("a_child_whose_wait_was_cancelled_is_reaped_at_its_exit") {
        return;
    }
    // The watch outlives the cancelled wait (it belongs to the transport); the reactor that
    // hears the exit reaps it there, though nobody awaits it. Found by a review: the exit
    // waited for the reaper's deferred check, up to a second.
    let from_block_on = current_thread_runtime().block_on(heard_after_a_cancelled_wait());
    let in_a_task = in_a_task(&multi_thread_runtime(2), heard_after_a_cancelled_wait());
    for (how, heard) in [("block_on", from_block_on), ("a task", in_a_task)] {
        assert!(
            heard < Duration::from_millis(50),
            "the exit was known {heard:?} after the kill (wait cancelled in {how})"
        );
    }
}

#[test]
fn a_local_set_task_moved_to_another_runtime_hears_the_exit_at_once() {
    if skip_without_pidfds("a_local_set_task_moved_to_another_runtime_hears_the_exit_at_once") {
        return;
    }
    // A task of a LocalSet keeps its id under whichever runtime drives the set, so the
    // same task polling again is not proof of the same runtime (found by a review: a
    // shortcut that assumed it left the watch in a runtime nobody drove any more).
    let (first, second) = (current_thread_runtime(), current_thread_runtime());
    let local = tokio::task::LocalSet::new();
    let (go, went) = tokio::sync::oneshot::channel::<()>();
    let task = local.spawn_local(async move {
        let mut child = sleep_for("0.35");
        poll_once(&mut child).await;
        went.await.unwrap();
        // Driven by the second runtime from here on.
        within("the exit", child.wait()).await.unwrap();
        Instant::now()
    });
    let spawned = Instant::now();
    first.block_on(local.run_until(async { tokio::time::sleep(Duration::from_millis(50)).await }));
    let heard = second.block_on(local.run_until(async move {
        go.send(()).unwrap();
        within("the task", task).await.unwrap()
    }));
    let late = heard.duration_since(spawned + Duration::from_millis(350));
    assert!(
        late < Duration::from_millis(100),
        "the exit was heard {late:?} after it happened"
    );
}

#[test]
fn a_handle_waiting_before_the_transport_watches_still_sees_the_exit() {
    let rt = current_thread_runtime();
    let status = in_a_task(&rt, async {
        let mut child = sleep_for("0.3");
        let handle = child.handle();
        let waiter = tokio::spawn(async move { within("the exit", handle.exited()).await });
        // The handle waits first; then the transport is polled once and left alone.
        tokio::time::sleep(Duration::from_millis(20)).await;
        poll_once(&mut child).await;
        let status = waiter.await.unwrap().unwrap();
        drop(child);
        status
    });
    assert!(status.success());
}

#[test]
fn a_watched_child_is_reaped_once_its_transport_is_dropped() {
    let rt = current_thread_runtime();
    let child = watched_in(&rt, "0.2");
    let pid = child.pid().unwrap();
    drop(child);
    assert!(
        wait_until(LIMIT, || process_state(pid).is_none()),
        "the child is left a zombie (state {:?})",
        process_state(pid)
    );
}

#[test]
fn try_status_knows_the_exit_of_a_watched_child_nobody_polls() {
    let rt = current_thread_runtime();
    let child = watched_in(&rt, "0.1");
    assert!(
        wait_until(LIMIT, || child.try_status().unwrap().is_some()),
        "no status while the transport is not polled"
    );
    assert!(child.try_status().unwrap().unwrap().success());
    assert_eq!(child.pid(), None);
}

#[test]
fn a_transport_outlives_the_runtime_that_watched_its_child() {
    let mut child = watched_in(&current_thread_runtime(), "0.2");
    // That runtime, and the reactor the exit was registered with, are gone.
    let status = current_thread_runtime()
        .block_on(within("the exit", child.wait()))
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_transport_moved_to_another_runtime_while_the_first_idles_is_still_reaped() {
    for (to, runtime) in [
        ("current-thread", current_thread_runtime()),
        ("multi-thread", multi_thread_runtime(1)),
    ] {
        let first = current_thread_runtime();
        let mut child = watched_in(&first, "0.2");
        // `first` lives on, but nothing drives its reactor any more.
        let status = in_a_task(
            &runtime,
            async move { within("the exit", child.wait()).await },
        );
        assert!(status.unwrap().success(), "moved to a {to} runtime");
        drop(first);
    }
}

#[test]
fn a_future_driven_outside_tokio_in_an_entered_runtime_is_still_reaped() {
    let rt = current_thread_runtime();
    let handle = rt.handle().clone();
    // Nothing drives this runtime (not even its timers).
    let (status, took) = no_hang(move || {
        let _entered = handle.enter();
        let mut child = sleep_for("0.2");
        let started = Instant::now();
        (futures::executor::block_on(child.wait()), started.elapsed())
    });
    assert!(status.unwrap().success());
    // The transport watches in the reactor of its current-thread runtime, which nobody
    // drives here: the reaper's deferred check (at most a second apart) hears the exit.
    assert!(
        took < Duration::from_millis(1800),
        "reaped {took:?} after the spawn"
    );
}

#[test]
fn a_foreign_executor_inside_a_task_still_sees_the_exit() {
    for runtime in [current_thread_runtime(), multi_thread_runtime(1)] {
        // A sync helper called from async code (a `Drop`, a callback) blocks the task's
        // thread, so the task's runtime does not run meanwhile.
        let status = no_hang(move || {
            in_a_task(&runtime, async {
                let mut child = sleep_for("0.1");
                futures::executor::block_on(child.wait())
            })
        });
        assert!(status.unwrap().success());
    }
}

#[test]
fn a_wait_on_the_blocking_pool_of_an_idle_runtime_still_sees_the_exit() {
    let status = no_hang(|| {
        let rt = current_thread_runtime();
        let mut child = rt.block_on(async { sleep_for("0.1") });
        let waiting = rt.spawn_blocking(move || futures::executor::block_on(child.wait()));
        futures::executor::block_on(waiting).unwrap()
    });
    assert!(status.unwrap().success());
}

#[test]
fn a_child_exiting_while_its_task_blocks_the_runtime_is_reaped_within_a_second() {
    let rt = current_thread_runtime();
    let (pid, state, handle_pid, signal) = in_a_task(&rt, async {
        let mut child = sleep_for("0.1");
        let handle = child.handle();
        // As in a `select!` on `wait()` and something else, which won.
        poll_once(&mut child).await;
        let pid = child.spawned_pid();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The task goes on with other work (still not polling the transport), blocking the
        // runtime's one thread: the reaper's deferred check, with room for a loaded machine.
        let reaped = wait_until(Duration::from_millis(1500), || process_state(pid).is_none());
        assert!(
            reaped,
            "child {pid} left a zombie while its task did other work"
        );
        (
            child.pid(),
            process_state(pid),
            handle.pid(),
            child.signal(libc::SIGTERM),
        )
    });
    assert_eq!(pid, None);
    assert_eq!(state, None);
    assert_eq!(handle_pid, None);
    assert!(matches!(signal, Err(Error::AlreadyExited)), "{signal:?}");
}

#[test]
fn waiting_in_a_runtime_without_io_panics_nowhere() {
    let name = "waiting_in_a_runtime_without_io_panics_nowhere";
    if !in_own_process(name) {
        return;
    }
    // A panic caught inside the crate would still run the hook (and abort under
    // `panic = "abort"`).
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic hook ran: {info}");
        std::process::abort();
    }));
    let time_only = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    };
    // Spawned there without pipes, and spawned with pipes elsewhere and awaited there.
    let null_stdio = in_a_task(&time_only(), async {
        let mut child = Command::new("sleep")
            .arg("0.05")
            .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
            .spawn()
            .unwrap();
        within("the exit", child.wait()).await
    });
    assert!(null_stdio.unwrap().success());
    let mut piped = current_thread_runtime().block_on(async { sleep_for("0.05") });
    let piped = in_a_task(&time_only(), async move {
        within("the exit", piped.wait()).await
    });
    assert!(piped.unwrap().success());
}

#[test]
fn a_fork_dropping_a_watched_transport_leaves_the_parent_s_wait_and_reaper_alone() {
    if !inner_run_with_pidfds(
        "a_fork_dropping_a_watched_transport_leaves_the_parent_s_wait_and_reaper_alone",
    ) {
        return;
    }
    let rt = current_thread_runtime();
    let status = in_a_task(&rt, async {
        // A group leader: its zombie is kept, its pidfd stays readable.
        let mut child = Command::new("sleep")
            .arg("0.3")
            .process_group(0)
            .spawn()
            .unwrap();
        poll_once(&mut child).await;
        // SAFETY: the forked process only drops the transport and leaves with `_exit`.
        let forked = unsafe { libc::fork() };
        if forked == 0 {
            // Its drop deregisters the pidfd from the epoll set the fork shares with us.
            drop(child);
            // SAFETY: leaves the forked process at once, running nothing of the parent's.
            unsafe { libc::_exit(0) };
        }
        let mut raw = 0;
        // SAFETY: waits for the process just forked, ours.
        assert_eq!(unsafe { libc::waitpid(forked, &mut raw, 0) }, forked);
        // The same task, so the same watch: the exit must come all the same.
        let status = within("the exit", child.wait()).await.unwrap();
        assert_reaper_thread_idles();
        status
    });
    assert!(status.success());
}
