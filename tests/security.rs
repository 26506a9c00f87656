//! Security: credential drops that leave no supplementary group behind, environments that are
//! really empty, no shell between the caller and the program, and fds that C code opened
//! without `O_CLOEXEC` never reaching the child.

mod common;

use common::{
    LIMIT, Outcome, child_status, collect, fd_report_script, ids, is_root, parse_fd_report,
    proc_state, python,
};
use process_transport::{ChildFd, Command, SpawnError, SpawnStep};

async fn run(cmd: &mut Command) -> Outcome {
    let mut child = cmd.spawn().unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    outcome
}

/// Runs as root only: gives this process supplementary groups, then checks that children
/// dropped to another uid and/or gid keep none of them.
#[tokio::test]
async fn credential_drop_clears_supplementary_groups() {
    if !is_root() {
        eprintln!("note: not root, skipping credential_drop_clears_supplementary_groups");
        return;
    }
    let extra: [libc::gid_t; 3] = [4242, 4243, 0];
    // SAFETY: setgroups with a valid array (glibc applies it to every thread).
    assert_eq!(unsafe { libc::setgroups(extra.len(), extra.as_ptr()) }, 0);
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(mine.contains("4242"), "the parent's groups did not change");

    // Without a drop the child inherits them (so the checks below can fail).
    let plain = child_status(&mut Command::new("/bin/cat")).await;
    assert_eq!(ids(&plain["Groups"]), [0, 4242, 4243]);

    let both = child_status(Command::new("/bin/cat").uid(65534).gid(65533)).await;
    assert_eq!(
        both["Groups"], "",
        "supplementary groups survived: {both:?}"
    );
    assert_eq!(ids(&both["Uid"]), [65534; 4]);
    assert_eq!(ids(&both["Gid"]), [65533; 4]);
    assert_eq!(both["CapEff"], "0000000000000000");

    let uid_only = child_status(Command::new("/bin/cat").uid(65534)).await;
    assert_eq!(uid_only["Groups"], "");
    assert_eq!(ids(&uid_only["Uid"]), [65534; 4]);
    assert_eq!(ids(&uid_only["Gid"]), [0; 4]);

    let gid_only = child_status(Command::new("/bin/cat").gid(65533)).await;
    assert_eq!(gid_only["Groups"], "");
    assert_eq!(ids(&gid_only["Uid"]), [0; 4]);
    assert_eq!(ids(&gid_only["Gid"]), [65533; 4]);

    // The parent's own credentials never change.
    // SAFETY: plain getters.
    unsafe {
        assert_eq!((libc::getuid(), libc::getgid()), (0, 0));
    }
    // SAFETY: restore an empty supplementary list.
    unsafe { libc::setgroups(0, std::ptr::null()) };
}

#[tokio::test]
async fn dropped_child_cannot_regain_root() {
    if !is_root() {
        eprintln!("note: not root, skipping dropped_child_cannot_regain_root");
        return;
    }
    // python tries setuid(0) after the drop: it must fail with EPERM.
    let script = "import os\ntry:\n    os.setuid(0)\n    print('regained')\nexcept PermissionError:\n    print('refused')";
    let outcome = run(Command::new(python())
        .args(["-I", "-S", "-c", script])
        .uid(65534)
        .gid(65534))
    .await;
    assert_eq!(outcome.out(1), b"refused\n");
}

#[tokio::test]
async fn cleared_env_is_really_empty() {
    let outcome = run(Command::new("/usr/bin/env")
        .env_clear()
        .stdin(ChildFd::Null))
    .await;
    assert_eq!(
        outcome.out(1),
        b"",
        "{:?}",
        String::from_utf8_lossy(outcome.out(1))
    );
    let environ = run(Command::new("/bin/cat")
        .arg("/proc/self/environ")
        .env_clear()
        .stdin(ChildFd::Null))
    .await;
    assert_eq!(environ.out(1), b"");
}

#[tokio::test]
async fn no_shell_is_involved() {
    let marker = std::env::temp_dir().join(format!("pt-security-pwned-{}", std::process::id()));
    let m = marker.display().to_string();
    let nasty = [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        format!("| touch {m}"),
        format!("&& touch {m}"),
        format!("> {m}"),
        "*".to_string(),
        "~".to_string(),
        "$HOME".to_string(),
        "'\"\\".to_string(),
    ];
    let outcome = run(Command::new("/usr/bin/printf")
        .arg("%s\\0")
        .args(&nasty)
        .stdin(ChildFd::Null))
    .await;
    let got: Vec<String> = outcome
        .out(1)
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    assert_eq!(got, nasty);

    // A "program" that is a shell command line is looked up as a file name, not run.
    let line = format!("true; touch {m}");
    match Command::new(&line).spawn() {
        Err(SpawnError::Spawn {
            step: SpawnStep::Exec,
            source,
            ..
        }) => assert_eq!(source.raw_os_error(), Some(libc::ENOENT)),
        other => panic!("{other:?}"),
    }
    assert!(!marker.exists(), "a shell ran the metacharacters");

    // The process spawned is the program itself, our direct child, with exactly our argv.
    let script = "import time; time.sleep(5)";
    let mut child = Command::new(python())
        .args(["-I", "-S", "-c", script, "; echo hi"])
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, std::fs::canonicalize(python()).unwrap());
    // The child is exec'd when spawn returns, but the kernel fills in the new argv just
    // after releasing the parent, so /proc may briefly show it empty.
    let mut cmdline = Vec::new();
    common::wait_until(LIMIT, || {
        cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        !cmdline.is_empty()
    });
    let want = format!("{}\0-I\0-S\0-c\0{script}\0; echo hi\0", python());
    assert_eq!(cmdline, want.as_bytes());
    let (_, ppid) = proc_state(pid).expect("the child exists");
    assert_eq!(ppid, std::process::id());
    child.kill().await.unwrap();
}

/// What fds a python child has, reported on fd 1.
async fn child_fds() -> Vec<i32> {
    let outcome = run(Command::new(python()).args(["-I", "-S", "-c", &fd_report_script(1)])).await;
    parse_fd_report(outcome.out(1)).into_keys().collect()
}

#[tokio::test]
async fn fds_opened_without_cloexec_never_reach_the_child() {
    // SAFETY: plain fd syscalls, the way C code makes inheritable fds.
    let leaky = unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        let copy = libc::dup(1);
        let mut pipe = [0; 2];
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let sock = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        let high = libc::dup2(null, 1500);
        let mut all = vec![null, copy, pipe[0], pipe[1], sock, high];
        all.retain(|&fd| fd >= 0);
        for &fd in &all {
            assert_eq!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
        }
        all
    };
    let got = child_fds().await;
    for fd in leaky {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
    assert_eq!(got, [0, 1, 2]);
}

/// The race that hurts fork-based spawners: another thread opens inheritable fds while
/// children are being spawned. The child closes every fd it was not given, so none leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inheritable_fds_opened_concurrently_never_reach_children() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut opened = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: open without O_CLOEXEC, hold briefly, close.
                unsafe {
                    let fds: Vec<i32> = (0..8)
                        .map(|_| libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY))
                        .collect();
                    for fd in fds {
                        libc::close(fd);
                    }
                }
                opened += 8;
            }
            opened
        })
    };
    for _ in 0..30 {
        let got = child_fds().await;
        assert_eq!(got, [0, 1, 2]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(opener.join().unwrap() > 0);
}
