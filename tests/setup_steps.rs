//! umask, resource limits and no_new_privs, each checked from inside the child, and each
//! failure reported as its own step. (That a child failing at any step is reaped is the spawn
//! engine's, tested with the other steps in `spawn_errors`.)

use std::time::Duration;

use futures::StreamExt;
use process_transport::{Command, Event, ProcessTransport, SpawnError, SpawnStep};

/// Says a test is skipped on the real stderr: the test harness captures `eprintln!`, but
/// not direct writes, so the skip shows even in a passing run.
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Stdout of a child that must succeed.
async fn stdout_of(command: &Command) -> String {
    let mut child: ProcessTransport = command.spawn().unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        let mut status = None;
        while let Some(event) = child.next().await {
            match event {
                Event::Data { fd: 1, data } => out.extend_from_slice(&data),
                Event::Data { fd: 2, data } => err.extend_from_slice(&data),
                Event::Ended(s) => status = Some(s.unwrap()),
                _ => {}
            }
        }
        status.unwrap()
    })
    .await
    .expect("the child ends");
    assert!(
        status.success(),
        "child failed: {status:?} {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8(out).unwrap()
}

/// The step and errno of a spawn that must fail.
fn failure(result: Result<ProcessTransport, SpawnError>) -> (SpawnStep, Option<i32>) {
    match result {
        Err(SpawnError::Spawn { step, source, .. }) => (step, source.raw_os_error()),
        other => panic!("expected a spawn failure, got {other:?}"),
    }
}

/// `(soft, hard)` of a `/proc/<pid>/limits` row, as text (`unlimited` stays a word).
fn limits_row(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} missing from {limits}"));
    let mut fields = line[name.len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn umask_is_the_childs() {
    let out = stdout_of(
        sh("umask; touch \"$0\"; stat -c %a \"$0\"; rm -f \"$0\"")
            .arg(std::env::temp_dir().join(format!("pt-umask-{}", std::process::id())))
            .umask(0o027),
    )
    .await;
    assert_eq!(out, "0027\n640\n", "the mask, and a file created under it");
    // Only the permission bits count, as with umask(2).
    let out = stdout_of(sh("umask").umask(0o7077)).await;
    assert_eq!(out, "0077\n");
}

#[tokio::test]
async fn resource_limits_soft_and_hard_are_the_childs() {
    let limits = stdout_of(
        Command::new("cat")
            .arg("/proc/self/limits")
            .rlimit(libc::RLIMIT_NOFILE, 100, 200)
            .rlimit(libc::RLIMIT_CORE, 0, libc::RLIM_INFINITY)
            .rlimit(libc::RLIMIT_CPU, 30, 60)
            // A later call for the same resource replaces the earlier one.
            .rlimit(libc::RLIMIT_CPU, 40, 50),
    )
    .await;
    assert_eq!(
        limits_row(&limits, "Max open files"),
        ("100".into(), "200".into())
    );
    assert_eq!(
        limits_row(&limits, "Max core file size"),
        ("0".into(), "unlimited".into())
    );
    assert_eq!(
        limits_row(&limits, "Max cpu time"),
        ("40".into(), "50".into())
    );
}

#[tokio::test]
async fn a_refused_resource_limit_names_the_resource() {
    // Soft above hard, and a resource the kernel does not know.
    let (step, errno) = failure(
        Command::new("true")
            .rlimit(libc::RLIMIT_NOFILE, 200, 100)
            .spawn(),
    );
    assert_eq!(
        step,
        SpawnStep::SetResourceLimit(libc::RLIMIT_NOFILE as i32)
    );
    assert_eq!(errno, Some(libc::EINVAL));
    let (step, errno) = failure(Command::new("true").rlimit(999, 1, 1).spawn());
    assert_eq!(
        (step, errno),
        (SpawnStep::SetResourceLimit(999), Some(libc::EINVAL))
    );
}

#[tokio::test]
async fn resource_limits_are_set_before_the_uid_changes() {
    // CAP_SYS_RESOURCE (bit 24) is what lets a root parent raise a hard limit; containers
    // often drop it.
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if unsafe { libc::geteuid() } != 0 || cap_eff & (1 << 24) == 0 {
        skipped!(
            "SKIPPED resource_limits_are_set_before_the_uid_changes: needs root with \
             CAP_SYS_RESOURCE"
        );
        return;
    }
    // Raising a hard limit needs privilege: it works only because the limit is set while
    // the child is still root. RLIMIT_NOFILE, whose hard limit is finite (at most nr_open).
    let hard: u64 = limits_row(
        &std::fs::read_to_string("/proc/self/limits").unwrap(),
        "Max open files",
    )
    .1
    .parse()
    .unwrap();
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if hard >= nr_open {
        skipped!("SKIPPED resource_limits_are_set_before_the_uid_changes: hard NOFILE at nr_open");
        return;
    }
    let raised = hard + 1;
    let limits = stdout_of(
        Command::new("cat")
            .arg("/proc/self/limits")
            .uid(65534)
            .gid(65534)
            .rlimit(libc::RLIMIT_NOFILE, raised, raised),
    )
    .await;
    assert_eq!(
        limits_row(&limits, "Max open files"),
        (raised.to_string(), raised.to_string())
    );
}

#[tokio::test]
async fn no_new_privs_is_set_in_the_child_only_when_asked() {
    let flag = |out: String| {
        out.lines()
            .find_map(|l| l.strip_prefix("NoNewPrivs:"))
            .map(|v| v.trim().to_owned())
            .expect("NoNewPrivs in /proc/self/status")
    };
    let on = stdout_of(
        Command::new("cat")
            .arg("/proc/self/status")
            .no_new_privs(true),
    )
    .await;
    assert_eq!(flag(on), "1");
    let off = stdout_of(Command::new("cat").arg("/proc/self/status")).await;
    assert_eq!(flag(off), "0", "off by default");
}

#[test]
fn the_setup_options_read_back() {
    let mut command = Command::new("true");
    assert_eq!(command.get_umask(), None);
    assert!(!command.get_no_new_privs());
    assert_eq!(command.get_rlimits().len(), 0);
    command
        .umask(0o022)
        .no_new_privs(true)
        .rlimit(libc::RLIMIT_NOFILE, 10, 20)
        .rlimit(libc::RLIMIT_CORE, 0, 0)
        .rlimit(libc::RLIMIT_NOFILE, 30, 40)
        .cgroup("/a");
    assert_eq!(command.get_umask(), Some(0o022));
    assert!(command.get_no_new_privs());
    let core = libc::RLIMIT_CORE as i32;
    let nofile = libc::RLIMIT_NOFILE as i32;
    let mut expected = vec![(core, 0, 0), (nofile, 30, 40)];
    expected.sort();
    assert_eq!(command.get_rlimits().collect::<Vec<_>>(), expected);
    assert_eq!(command.get_cgroup(), Some(std::path::Path::new("/a")));
    assert_eq!(command.get_transient_cgroup(), None);
    command.transient_cgroup("/b");
    assert_eq!(command.get_cgroup(), None, "one replaces the other");
    assert_eq!(
        command.get_transient_cgroup(),
        Some(std::path::Path::new("/b"))
    );
}
