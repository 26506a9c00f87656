//! `KillTarget`: `kill_on_drop`, `terminate` (on the transport and on a handle) and the
//! deadline of an output collection each reach exactly the chosen processes: the child, its
//! process group, or its whole tree; never a process outside it.

use std::time::Duration;

use futures::StreamExt;
use process_transport::{Collect, Command, Event, KillTarget, ProcessTransport};
use tokio::time::timeout;

/// Far above what any step here takes, even on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

/// The child (a shell, leading its group) starts a helper that stays in its group and a
/// descendant in a session of its own, prints their pids once the descendant has left the
/// group (field 5 of its stat, the group, is its own pid), and waits.
const SCRIPT: &str = r#"
    sleep 100 & echo $!
    setsid sleep 100 & e=$!
    while [ "$(cut -d' ' -f5 /proc/$e/stat)" != "$e" ]; do sleep 0.01; done
    echo $e
    wait
"#;

#[derive(Debug, Clone, Copy)]
enum Stop {
    KillOnDrop,
    TransportTerminate,
    HandleTerminate,
    OutputDeadline,
}

/// `true` while `pid` exists and is neither a zombie nor dead.
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// Reads the two pids the script prints.
async fn read_pids(child: &mut ProcessTransport) -> (u32, u32) {
    let mut text = Vec::new();
    loop {
        let pids: Vec<u32> = String::from_utf8_lossy(&text)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.len() == 2 && text.ends_with(b"\n") {
            return (pids[0], pids[1]);
        }
        match timeout(LIMIT, child.next()).await.unwrap() {
            Some(Event::Data { fd: 1, data }) => text.extend_from_slice(&data),
            Some(_) => {}
            None => panic!("no pids: {:?}", String::from_utf8_lossy(&text)),
        }
    }
}

/// Spawns the script with `target`, stops it by `stop`, and checks who is left.
async fn check(target: KillTarget, stop: Stop) {
    let mut command = Command::new("sh");
    command.args(["-c", SCRIPT]).kill_on_drop(true);
    if target != KillTarget::Group {
        command.process_group(0);
    }
    command.kill_target(target);
    // Group implies a group of the child's own.
    assert_eq!(command.get_process_group(), Some(0));

    let mut outsider = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let mut child = command.spawn().unwrap();
    assert_eq!(child.kill_target(), target);
    let shell = child.spawned_pid();
    let (helper, escaped) = read_pids(&mut child).await;
    let handle = child.handle();
    assert_eq!(handle.kill_target(), target);

    match stop {
        Stop::KillOnDrop => drop(child),
        Stop::TransportTerminate => {
            let status = timeout(LIMIT, child.terminate(LIMIT))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        }
        Stop::HandleTerminate => {
            let status = timeout(LIMIT, handle.terminate(LIMIT))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        }
        Stop::OutputDeadline => {
            let collect = Collect::new()
                .timeout(Duration::from_millis(200))
                .grace(Duration::from_secs(1));
            let out = timeout(LIMIT, child.output(collect))
                .await
                .unwrap()
                .unwrap();
            assert!(out.timed_out);
            assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{}", out.status);
        }
    }
    let status = timeout(LIMIT, handle.exited()).await.unwrap().unwrap();
    assert!(status.signal().is_some(), "{target:?} {stop:?}: {status}");
    assert!(!is_alive(shell));

    let (helper_dies, escaped_dies) = match target {
        KillTarget::Child => (false, false),
        KillTarget::Group => (true, false),
        _ => (true, true),
    };
    let dying: Vec<u32> = [(helper, helper_dies), (escaped, escaped_dies)]
        .iter()
        .filter(|(_, dies)| *dies)
        .map(|(pid, _)| *pid)
        .collect();
    assert!(
        eventually(|| dying.iter().all(|&pid| !is_alive(pid))).await,
        "{target:?} {stop:?}: survivors among {dying:?}"
    );
    // Give a wrong signal time to land before looking at who must survive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let survivors = [(helper, !helper_dies), (escaped, !escaped_dies)];
    for (pid, survives) in survivors {
        if survives {
            assert!(is_alive(pid), "{target:?} {stop:?}: {pid} was reached");
            kill9(pid);
        }
    }
    assert!(
        outsider.try_wait().unwrap().is_none(),
        "{target:?} {stop:?}: the outsider was reached"
    );
    let _ = outsider.kill();
    let _ = outsider.wait();
}

async fn each_target(stop: Stop) {
    for target in [KillTarget::Child, KillTarget::Group, KillTarget::Tree] {
        check(target, stop).await;
    }
}

#[tokio::test]
async fn kill_on_drop_reaches_exactly_the_target() {
    each_target(Stop::KillOnDrop).await;
}

#[tokio::test]
async fn terminate_on_the_transport_reaches_exactly_the_target() {
    each_target(Stop::TransportTerminate).await;
}

#[tokio::test]
async fn terminate_on_a_handle_reaches_exactly_the_target() {
    each_target(Stop::HandleTerminate).await;
}

#[tokio::test]
async fn an_output_deadline_reaches_exactly_the_target() {
    each_target(Stop::OutputDeadline).await;
}

#[test]
fn group_target_keeps_an_explicit_group_or_session() {
    let mut command = Command::new("true");
    command.process_group(1234).kill_target(KillTarget::Group);
    assert_eq!(command.get_process_group(), Some(1234));
    let mut command = Command::new("true");
    command.new_session().kill_target(KillTarget::Group);
    assert!(command.get_new_session());
    let mut command = Command::new("true");
    command.kill_target(KillTarget::Tree);
    assert_eq!(command.get_process_group(), None);
    assert_eq!(Command::new("true").get_kill_target(), KillTarget::Child);
}
