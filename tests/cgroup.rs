//! cgroup v2 placement and containment, checked from inside the child (`/proc/self/cgroup`)
//! and from the outside (the daemon a tree left behind, the directory once the tree is gone).
//!
//! Needs a writable cgroup v2 hierarchy, found through `/proc/self/mountinfo`; every test
//! says SKIPPED on stderr when there is none.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use process_transport::{
    ChildFd, Command, Event, KillTarget, ProcessTransport, SpawnError, SpawnStep, cgroup2_mount,
};

/// Says a test is skipped on the real stderr: the test harness captures `eprintln!`, but
/// not direct writes, so the skip shows even in a passing run.
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A fresh directory for one test under the cgroup v2 mount, removed on drop, or `None`
/// (said loudly) where cgroup v2 is missing or read-only.
struct TestCgroup {
    dir: PathBuf,
    mount: PathBuf,
}

impl TestCgroup {
    fn new(test: &str) -> Option<TestCgroup> {
        let Some(mount) = cgroup2_mount() else {
            skipped!("SKIPPED {test}: no cgroup v2 mount in /proc/self/mountinfo");
            return None;
        };
        let dir = mount.join(format!("pt-test-{}-{test}", std::process::id()));
        let _ = remove_all(&dir);
        if let Err(e) = std::fs::create_dir(&dir) {
            skipped!(
                "SKIPPED {test}: cannot make a cgroup under {}: {e}",
                mount.display()
            );
            return None;
        }
        Some(TestCgroup { dir, mount })
    }

    /// `dir` as `/proc/<pid>/cgroup` shows it (relative to the hierarchy's root).
    fn as_seen(&self, dir: &Path) -> String {
        format!("0::/{}", dir.strip_prefix(&self.mount).unwrap().display())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Whatever is left inside is the test's failure; kill it so the directory can go.
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while remove_all(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn remove_all(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_all(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The child-made cgroups under `dir`.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Stdout and exit code, to the end.
async fn finish(child: &mut ProcessTransport) -> (String, Option<i32>) {
    let mut out = Vec::new();
    let mut code = None;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = child.next().await {
            match event {
                Event::Data { fd: 1, data } => out.extend_from_slice(&data),
                Event::Ended(status) => code = status.unwrap().code(),
                _ => {}
            }
        }
    })
    .await
    .expect("the child ends");
    (String::from_utf8(out).unwrap(), code)
}

/// Reads fd 1 until a full line arrived.
async fn first_line(child: &mut ProcessTransport) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !out.contains(&b'\n') {
            match child.next().await {
                Some(Event::Data { fd: 1, data }) => out.extend_from_slice(&data),
                Some(_) => {}
                None => panic!("the child ended before a line"),
            }
        }
    })
    .await
    .expect("a line from the child");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// Running (not gone, not a zombie).
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// A tree whose child prints the pid of a daemon it double-forked into a session of its own
/// (its parent exits, so it is re-parented away from the tree), then sleeps.
fn tree_with_daemon() -> Command {
    let mut command =
        sh("(setsid sh -c 'sleep 600' </dev/null >/dev/null 2>&1 & echo $!); sleep 600");
    command.stderr(ChildFd::Null);
    command
}

#[tokio::test]
async fn a_child_joins_an_existing_cgroup_before_exec() {
    let Some(test) = TestCgroup::new("join") else {
        return;
    };
    let mut child = Command::new("cat")
        .arg("/proc/self/cgroup")
        .cgroup(&test.dir)
        .spawn()
        .unwrap();
    let (out, code) = finish(&mut child).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines().any(|l| l == test.as_seen(&test.dir)),
        "{out:?} lacks {}",
        test.as_seen(&test.dir)
    );
}

#[tokio::test]
async fn a_transient_cgroup_holds_the_child_and_goes_once_the_tree_ends() {
    let Some(test) = TestCgroup::new("transient") else {
        return;
    };
    let mut child = sh("cat /proc/self/cgroup; i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done")
        .transient_cgroup(&test.dir)
        .spawn()
        .unwrap();
    let made = child
        .cgroup_path()
        .expect("a transient cgroup while the child runs");
    assert_eq!(made.parent(), Some(test.dir.as_path()));
    let (out, code) = finish(&mut child).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines().any(|l| l == test.as_seen(&made)),
        "{out:?} lacks {}",
        test.as_seen(&made)
    );
    assert!(
        eventually(Duration::from_secs(10), || !made.exists()).await,
        "the empty cgroup is removed while the transport still lives"
    );
    assert_eq!(child.cgroup_path(), None);
    // The figures outlive the directory: the busy loop used CPU time.
    let usage = child.cgroup_usage().unwrap();
    assert!(usage.cpu > Duration::ZERO, "{usage:?}");
    assert!(usage.cpu >= usage.user, "{usage:?}");
}

/// Waits until `daemon` left the child's session: it is a daemon now, out of reach of groups.
async fn wait_daemonized(child: &ProcessTransport, daemon: i32) {
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{daemon}/stat"))
                .ok()
                .and_then(|s| {
                    let f: Vec<String> = s
                        .rsplit_once(") ")?
                        .1
                        .split(' ')
                        .map(String::from)
                        .collect();
                    // Leads its own session, and its parent (the subshell) is gone.
                    Some(
                        f.get(3)? == &daemon.to_string()
                            && f.get(1)? != &child.spawned_pid().to_string(),
                    )
                })
                .unwrap_or(false)
        })
        .await,
        "the daemon leads a session of its own, re-parented away from the child"
    );
    assert!(is_running(daemon));
}

#[tokio::test]
async fn a_handle_and_the_tree_kill_target_go_through_the_cgroup_too() {
    let Some(test) = TestCgroup::new("handle") else {
        return;
    };
    let mut child = tree_with_daemon()
        .transient_cgroup(&test.dir)
        .kill_target(KillTarget::Tree)
        .spawn()
        .unwrap();
    let daemon: i32 = first_line(&mut child).await.trim().parse().unwrap();
    wait_daemonized(&child, daemon).await;
    let handle = child.handle();
    // From another task, while this one reads the events to the end.
    let stopper = tokio::spawn(async move { handle.terminate(Duration::from_secs(5)).await });
    let (_, code) = finish(&mut child).await;
    assert_eq!(code, None, "the child was signalled");
    stopper.await.unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !is_running(daemon)).await,
        "the daemon, out of every group, is reached through the cgroup"
    );
}

#[tokio::test]
async fn kill_tree_reaches_a_double_forked_daemon_through_the_cgroup() {
    let Some(test) = TestCgroup::new("kill") else {
        return;
    };
    let mut child = tree_with_daemon()
        .transient_cgroup(&test.dir)
        .spawn()
        .unwrap();
    let daemon: i32 = first_line(&mut child).await.trim().parse().unwrap();
    let made = child.cgroup_path().unwrap();
    wait_daemonized(&child, daemon).await;
    let others = child.kill_tree(libc::SIGKILL);
    assert!(others >= 1, "the daemon is counted: {others}");
    assert!(
        eventually(Duration::from_secs(10), || !is_running(daemon)).await,
        "the daemon is killed"
    );
    let (_, code) = finish(&mut child).await;
    assert_eq!(code, None, "the child was killed too");
    assert!(eventually(Duration::from_secs(10), || !made.exists()).await);
}

#[tokio::test]
async fn kill_tree_with_another_signal_reaches_the_daemon_too() {
    let Some(test) = TestCgroup::new("term") else {
        return;
    };
    let mut child = tree_with_daemon()
        .transient_cgroup(&test.dir)
        .spawn()
        .unwrap();
    let daemon: i32 = first_line(&mut child).await.trim().parse().unwrap();
    // Let the daemon's setsid run, so it is out of the child's group.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let others = child.kill_tree(libc::SIGTERM);
    assert!(others >= 1, "{others}");
    assert!(
        eventually(Duration::from_secs(10), || !is_running(daemon)).await,
        "SIGTERM reached the daemon"
    );
    finish(&mut child).await;
}

#[tokio::test]
async fn kill_on_drop_kills_the_whole_tree_and_the_cgroup_goes() {
    let Some(test) = TestCgroup::new("drop") else {
        return;
    };
    let mut child = tree_with_daemon()
        .transient_cgroup(&test.dir)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let daemon: i32 = first_line(&mut child).await.trim().parse().unwrap();
    let made = child.cgroup_path().unwrap();
    drop(child);
    assert!(
        eventually(Duration::from_secs(10), || !is_running(daemon)).await,
        "the daemon died with the transport"
    );
    assert!(
        eventually(Duration::from_secs(10), || !made.exists()).await,
        "the cgroup is removed after the tree died"
    );
}

#[tokio::test]
async fn a_tree_outliving_its_transport_keeps_the_cgroup_until_it_ends() {
    let Some(test) = TestCgroup::new("outlive") else {
        return;
    };
    let mut child = sh("sleep 0.5 & echo started")
        .transient_cgroup(&test.dir)
        .spawn()
        .unwrap();
    let made = child.cgroup_path().unwrap();
    assert_eq!(first_line(&mut child).await, "started");
    drop(child);
    assert!(made.exists(), "the sleep still runs in it");
    assert!(
        eventually(Duration::from_secs(10), || !made.exists()).await,
        "removed by the janitor once the sleep ended, with no transport left"
    );
}

#[tokio::test]
async fn no_cgroup_v2_there_is_a_typed_error_and_nothing_left_behind() {
    let dir = std::env::temp_dir().join(format!("pt-not-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    match Command::new("true").transient_cgroup(&dir).spawn() {
        Err(SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, SpawnStep::PrepareCgroup);
            assert_eq!(source.kind(), std::io::ErrorKind::Unsupported, "{source}");
        }
        other => panic!("expected PrepareCgroup, got {other:?}"),
    }
    assert!(
        subdirs(&dir).is_empty(),
        "no directory made outside cgroup v2"
    );
    match Command::new("true").cgroup(&dir).spawn() {
        Err(SpawnError::Spawn { step, .. }) => assert_eq!(step, SpawnStep::PrepareCgroup),
        other => panic!("expected PrepareCgroup, got {other:?}"),
    }
    match Command::new("true")
        .transient_cgroup(dir.join("missing"))
        .spawn()
    {
        Err(SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, SpawnStep::PrepareCgroup);
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected PrepareCgroup, got {other:?}"),
    }
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn a_cgroup_the_kernel_refuses_fails_at_the_named_step_and_is_cleaned_up() {
    let Some(test) = TestCgroup::new("refused") else {
        return;
    };
    // No more cgroups may be made below: mkdir fails (EAGAIN), in the parent.
    std::fs::write(test.dir.join("cgroup.max.descendants"), "0").unwrap();
    match Command::new("true").transient_cgroup(&test.dir).spawn() {
        Err(SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, SpawnStep::PrepareCgroup);
            assert_eq!(source.raw_os_error(), Some(libc::EAGAIN));
        }
        other => panic!("expected PrepareCgroup, got {other:?}"),
    }
    std::fs::write(test.dir.join("cgroup.max.descendants"), "max").unwrap();
    // A cgroup inside a threaded subtree that is not threaded itself ("domain invalid")
    // takes no process: the child's own write fails.
    let threaded = test.dir.join("dom/thr");
    std::fs::create_dir_all(&threaded).unwrap();
    std::fs::write(threaded.join("cgroup.type"), "threaded").unwrap();
    let invalid = threaded.join("invalid");
    std::fs::create_dir(&invalid).unwrap();
    match Command::new("true").cgroup(&invalid).spawn() {
        Err(SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, SpawnStep::JoinCgroup, "{source}");
        }
        other => panic!("expected JoinCgroup, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_spawn_removes_its_transient_cgroup() {
    let Some(test) = TestCgroup::new("failed") else {
        return;
    };
    match Command::new("/nonexistent/program")
        .transient_cgroup(&test.dir)
        .spawn()
    {
        Err(SpawnError::Spawn { step, .. }) => assert_eq!(step, SpawnStep::Exec),
        other => panic!("expected an exec failure, got {other:?}"),
    }
    assert_eq!(
        subdirs(&test.dir),
        Vec::<PathBuf>::new(),
        "the cgroup made for the failed child is gone at once"
    );
}
