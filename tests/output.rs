//! Collecting output: every fd the parent reads, a per-fd cap that keeps draining, deadlines
//! that keep partial output, `Command::status`, and cancellation.

use std::time::{Duration, Instant};

use process_transport::{ChildFd, Collect, Command, RunError, SpawnError, SpawnStep};
use tokio::time::timeout;

/// Far above what any step here takes, even on a loaded machine.
const LIMIT: Duration = Duration::from_secs(60);

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

#[tokio::test]
async fn output_collects_fds_1_2_and_3() {
    let out = timeout(
        LIMIT,
        sh("head -c 300000 /dev/zero; echo err >&2; seq 1 20000 >&3; exit 5")
            .fd(3, ChildFd::ParentReads)
            .fd(4, ChildFd::ParentReads)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(!out.timed_out);
    assert_eq!(out.stdout().len(), 300_000);
    assert!(out.stdout().iter().all(|&b| b == 0));
    assert_eq!(out.stderr(), b"err\n");
    let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    assert_eq!(out.fd(3), expected.as_bytes());
    // An fd the child never wrote is there, empty; one the parent does not read is not.
    assert_eq!(out.fds.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(out.fd(4).is_empty());
    assert!(out.truncated.is_empty());
}

/// The output of `script` (with fd 3 read too) run with `deadline` and `grace`, and how long
/// collecting it took.
async fn output_past_deadline(
    script: &str,
    deadline: Duration,
    grace: Duration,
) -> (process_transport::Output, Duration) {
    let started = Instant::now();
    let out = timeout(
        LIMIT,
        sh(script)
            .fd(3, ChildFd::ParentReads)
            .timeout(deadline)
            .timeout_grace(grace)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    (out, started.elapsed())
}

#[tokio::test]
async fn a_deadline_keeps_the_partial_output_of_fds_1_2_and_3() {
    let (deadline, grace) = (Duration::from_secs(3), Duration::from_secs(5));
    let (out, took) = output_past_deadline(
        "echo out; echo err >&2; echo three >&3; exec sleep 30",
        deadline,
        grace,
    )
    .await;
    assert!(out.timed_out);
    assert_eq!(out.stdout(), b"out\n");
    assert_eq!(out.stderr(), b"err\n");
    assert_eq!(out.fd(3), b"three\n");
    // SIGTERM was enough: no wait for the grace.
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{}", out.status);
    assert!(took >= deadline, "{took:?}");
    assert!(took < deadline + grace, "{took:?}");
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace_and_its_output_kept() {
    let (deadline, grace) = (Duration::from_secs(3), Duration::from_millis(500));
    let (out, took) = output_past_deadline(
        "trap '' TERM; echo out; echo three >&3; while :; do sleep 0.05; done",
        deadline,
        grace,
    )
    .await;
    assert!(out.timed_out);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.status);
    assert_eq!(out.stdout(), b"out\n");
    assert_eq!(out.fd(3), b"three\n");
    assert!(took >= deadline + grace, "{took:?}");
}

#[tokio::test]
async fn the_cap_truncates_and_keeps_draining() {
    // Far more than the pipes hold: a collector that stopped reading at the cap would leave
    // the child blocked on a full pipe, and this would time out.
    let out = timeout(
        LIMIT,
        sh("head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&3; echo done >&2")
            .fd(3, ChildFd::ParentReads)
            .output_limit(1000)
            .output(),
    )
    .await
    .expect("the child blocked")
    .unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.stdout().len(), 1000);
    assert_eq!(out.fd(3).len(), 1000);
    assert_eq!(out.stderr(), b"done\n");
    assert_eq!(out.truncated.get(&1), Some(&4_999_000));
    assert_eq!(out.truncated.get(&3), Some(&2_999_000));
    assert_eq!(out.truncated.get(&2), None);
}

#[tokio::test]
async fn status_returns_the_exit_and_honours_the_deadline() {
    let status = timeout(LIMIT, sh("seq 1 100000; exit 7").status())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(7));

    let started = Instant::now();
    let status = timeout(
        LIMIT,
        Command::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .status(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn status_returns_at_the_exit_while_a_background_process_holds_the_pipes() {
    // The shell exits at once; its background `sleep` keeps stdout and stderr open. With a
    // deadline that never comes too.
    let mut with_deadline = sh("sleep 3 & exit 4");
    with_deadline.timeout(Duration::from_secs(30));
    for command in [sh("sleep 3 & exit 4"), with_deadline] {
        let started = Instant::now();
        let status = timeout(LIMIT, command.status()).await.unwrap().unwrap();
        assert_eq!(status.code(), Some(4));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "waited for the pipes: {took:?}"
        );
    }
}

#[tokio::test]
async fn status_leaves_a_background_process_nothing_broken_to_write_to() {
    let mark = std::env::temp_dir().join(format!("pt-status-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    // The background job writes on stdout and stderr after the shell has exited, then says
    // how its writes went.
    let script = format!(
        "(sleep 0.3; echo out; echo err >&2; echo \"$?\" > {}) & exit 0",
        mark.display()
    );
    let status = timeout(LIMIT, sh(&script).status()).await.unwrap().unwrap();
    assert!(status.success());
    let mut written = None;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Ok(text) = std::fs::read_to_string(&mark)
            && text.ends_with('\n')
        {
            written = Some(text);
            break;
        }
    }
    let _ = std::fs::remove_file(&mark);
    assert_eq!(
        written.as_deref(),
        Some("0\n"),
        "the background job's writes failed (or it died of SIGPIPE before saying so)"
    );
}

#[tokio::test]
async fn output_flushes_queued_input_and_closes_stdin() {
    let mut child = Command::new("cat").spawn().unwrap();
    child.write_stdin("hello ").unwrap();
    child.write_stdin("world").unwrap();
    let out = timeout(LIMIT, child.output(Collect::new()))
        .await
        .expect("cat never saw end of file")
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout(), b"hello world");
}

#[tokio::test]
async fn a_spawn_failure_is_a_typed_error() {
    let err = Command::new("/nonexistent/program")
        .timeout(Duration::from_secs(1))
        .output()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Spawn(SpawnError::Spawn {
                step: SpawnStep::Exec,
                ..
            })
        ),
        "{err:?}"
    );
    let err = Command::new("").status().await.unwrap_err();
    assert!(
        matches!(err, RunError::Spawn(SpawnError::InvalidInput(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_cancelled_collection_leaves_the_transport_usable() {
    let mut child = sh("echo one; sleep 1; echo two; exit 2").spawn().unwrap();
    // Cancelled by another select! branch: nothing hangs, nothing is signalled.
    tokio::select! {
        out = child.output(Collect::new()) => panic!("finished early: {out:?}"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    assert_eq!(child.try_status().unwrap(), None);
    let out = timeout(LIMIT, child.output(Collect::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // What the cancelled call had read is gone with it (on a machine slow enough that it
    // read nothing, "one" comes now); what came after is all here.
    let stdout = out.stdout();
    assert!(stdout == b"two\n" || stdout == b"one\ntwo\n", "{stdout:?}");
}

#[tokio::test]
async fn a_collection_stopped_through_a_handle_keeps_everything() {
    let mut child = sh("echo first; echo second >&2; exec sleep 30")
        .spawn()
        .unwrap();
    let handle = child.handle();
    let pid = child.spawned_pid();
    // Once the shell has exec'd the sleep, both lines are written.
    let written = async {
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let collect = child.output(Collect::new());
    tokio::pin!(collect);
    let out = tokio::select! {
        out = &mut collect => panic!("finished early: {out:?}"),
        _ = written => {
            handle.signal(libc::SIGTERM).unwrap();
            timeout(LIMIT, collect).await.unwrap().unwrap()
        }
    };
    assert!(!out.timed_out);
    assert_eq!(out.stdout(), b"first\n");
    assert_eq!(out.stderr(), b"second\n");
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
}

#[tokio::test]
async fn a_deadline_ends_the_collection_when_a_grandchild_holds_the_pipe() {
    // The child exits at once; the sleep it leaves keeps stdout open. Without a deadline the
    // collection would wait for that sleep.
    let mut child = sh("sleep 30 & echo $!").spawn().unwrap();
    let deadline = Duration::from_millis(500);
    let grace = Duration::from_millis(500);
    let started = Instant::now();
    let out = timeout(
        LIMIT,
        child.output(Collect::new().timeout(deadline).grace(grace)),
    )
    .await
    .expect("the collection waited for the grandchild")
    .unwrap();
    // Well before the grandchild's 30 s, which LIMIT alone would let through.
    let took = started.elapsed();
    assert!(took < deadline + grace + Duration::from_secs(5), "{took:?}");
    assert!(out.timed_out);
    assert!(out.status.success(), "{}", out.status);
    let pid: u32 = String::from_utf8_lossy(out.stdout())
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 0);
    assert!(started.elapsed() >= deadline);
    // The child's target was the child alone, so the sleep still runs; sweep it.
    drop(child);
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

#[test]
fn the_collecting_futures_can_be_spawned() {
    fn send<T: Send>(_: &T) {}
    let command = Command::new("true");
    send(&command.output());
    send(&command.status());
}

#[tokio::test]
async fn the_transport_collection_can_be_spawned() {
    let mut child = Command::new("true").spawn().unwrap();
    let out = tokio::spawn(async move { child.output(Collect::new()).await })
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn status_refuses_what_spawn_refuses() {
    let mut command = Command::new("true");
    command.pipe_capacity(1, 1 << 40);
    let spawned = command.spawn().unwrap_err();
    let status = timeout(LIMIT, command.status()).await.unwrap().unwrap_err();
    for err in [RunError::Spawn(spawned), status] {
        assert!(
            matches!(
                err,
                RunError::Spawn(SpawnError::Spawn {
                    step: SpawnStep::SetPipeCapacity(1),
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
