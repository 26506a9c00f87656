//! What the child is given, observed from inside it: argv[0], the environment (inherited, set,
//! removed, cleared), the working directory, uid/gid, the PATH lookup rule, and default signal
//! dispositions with an empty signal mask.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use process_transport::Command;

use common::{
    parse_status, run_to_end, scratch_dir, sh, signal_bit, signal_mask, spawn_fresh_file,
    write_file,
};

async fn stdout_of(command: &Command) -> String {
    let mut child = spawn_fresh_file(command).unwrap();
    let out = run_to_end(&mut child).await;
    assert!(
        out.status().success(),
        "child failed: {:?} {}",
        out.status(),
        out.text(2)
    );
    out.text(1)
}

#[tokio::test]
async fn arguments_are_passed_verbatim() {
    let out = stdout_of(Command::new("printf").args(["[%s]", "a b", "", "*", "$HOME", "é"])).await;
    assert_eq!(out, "[a b][][*][$HOME][é]");
}

#[tokio::test]
async fn arg0_can_be_set_apart_from_the_program() {
    let out = stdout_of(Command::new("cat").arg0("my-cat").arg("/proc/self/cmdline")).await;
    assert_eq!(out, "my-cat\0/proc/self/cmdline\0");
    let out = stdout_of(Command::new("cat").arg("/proc/self/cmdline")).await;
    assert_eq!(
        out, "cat\0/proc/self/cmdline\0",
        "argv[0] defaults to the program as given"
    );
}

#[tokio::test]
async fn environment_is_inherited_by_default() {
    let path = std::env::var_os("PATH").expect("the test has a PATH");
    let out = stdout_of(Command::new("printenv").arg("PATH")).await;
    assert_eq!(out.trim_end().as_bytes(), path.as_bytes());
}

#[tokio::test]
async fn environment_set_and_remove_apply_on_top_of_the_inherited_one() {
    let out = stdout_of(
        Command::new("/usr/bin/env")
            .env("PT_CORE_A", "one")
            .envs([("PT_CORE_B", "two=2"), ("PT_CORE_C", "")])
            .env_remove("PATH"),
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"PT_CORE_A=one"), "{out}");
    assert!(lines.contains(&"PT_CORE_B=two=2"), "{out}");
    assert!(lines.contains(&"PT_CORE_C="), "{out}");
    assert!(
        !lines.iter().any(|l| l.starts_with("PATH=")),
        "PATH was removed: {out}"
    );
    if std::env::var_os("HOME").is_some() {
        assert!(
            lines.iter().any(|l| l.starts_with("HOME=")),
            "HOME inherited: {out}"
        );
    }
}

#[tokio::test]
async fn cleared_environment_holds_only_what_was_set() {
    let out = stdout_of(
        Command::new("/usr/bin/env")
            .env("DROPPED", "x")
            .env_clear()
            .env("ONLY", "1"),
    )
    .await;
    assert_eq!(out, "ONLY=1\n");
}

#[tokio::test]
async fn environment_values_may_hold_any_bytes_but_nul() {
    let value = OsStr::from_bytes(b"\xff\xfe bytes \n newline");
    let mut child = Command::new("/usr/bin/env")
        .env_clear()
        .env("RAW", value)
        .spawn()
        .unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.data[&1], b"RAW=\xff\xfe bytes \n newline\n");
}

#[tokio::test]
async fn working_directory_is_set() {
    let dir = scratch_dir("cwd");
    let out = stdout_of(Command::new("pwd").current_dir(&dir)).await;
    assert_eq!(out.trim_end(), dir.to_str().unwrap());
    let here = std::env::current_dir().unwrap();
    let out = stdout_of(&Command::new("pwd")).await;
    assert_eq!(
        out.trim_end(),
        here.to_str().unwrap(),
        "inherited by default"
    );
}

#[tokio::test]
async fn uid_and_gid_are_changed_and_supplementary_groups_cleared() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let out = stdout_of(sh("id -u; id -g; id -G").uid(65534).gid(65534)).await;
    assert_eq!(out, "65534\n65534\n65534\n");
    let out = stdout_of(sh("id -u; id -g").gid(12345)).await;
    assert_eq!(out, "0\n12345\n", "gid alone keeps the uid");
}

#[tokio::test]
async fn uid_change_applies_after_chdir_into_a_root_only_directory() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // chdir happens before the uid change, as in Twisted: the child starts inside a
    // directory it could not enter itself, and its uid really is nobody.
    let dir = scratch_dir("root-only-cwd");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = stdout_of(
        sh("id -u; pwd; ls . >/dev/null 2>&1 || echo cannot-list")
            .current_dir(&dir)
            .uid(65534),
    )
    .await;
    assert_eq!(out, format!("65534\n{}\ncannot-list\n", dir.display()));
}

#[tokio::test]
async fn path_lookup_uses_the_childs_path_in_order_skipping_unrunnable_entries() {
    let dir = scratch_dir("path");
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    // In `first` the name exists but is not executable; `second` has the runnable one.
    write_file(
        &first.join("pt-core-tool"),
        b"#!/bin/sh\necho from-first\n",
        0o644,
    );
    write_file(
        &second.join("pt-core-tool"),
        b"#!/bin/sh\necho from-second\n",
        0o755,
    );
    let path = format!(
        "/nonexistent-dir:{}:{}:/usr/bin:/bin",
        first.display(),
        second.display()
    );
    let out = stdout_of(Command::new("pt-core-tool").env("PATH", &path)).await;
    assert_eq!(out, "from-second\n");

    // With only the unrunnable one, the permission error is what is reported.
    let path = format!("{}:/nonexistent-dir", first.display());
    match spawn_fresh_file(Command::new("pt-core-tool").env("PATH", &path)) {
        Err(process_transport::SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, process_transport::SpawnStep::Exec);
            assert_eq!(source.raw_os_error(), Some(libc::EACCES));
        }
        other => panic!("expected EACCES, got {other:?}"),
    }
}

#[tokio::test]
async fn program_with_a_slash_is_not_looked_up() {
    let dir = scratch_dir("slash");
    write_file(&dir.join("tool"), b"#!/bin/sh\necho relative\n", 0o755);
    let out = stdout_of(
        Command::new("./tool")
            .current_dir(&dir)
            .env("PATH", "/nonexistent-dir"),
    )
    .await;
    assert_eq!(
        out, "relative\n",
        "relative to the child's cwd, with no PATH search"
    );
}

#[tokio::test]
async fn ignored_signals_are_reset_and_the_signal_mask_is_empty_in_the_child() {
    // The parent: Rust's runtime ignores SIGPIPE; ignore SIGUSR2 as well and block SIGUSR1 and
    // SIGTERM in the spawning thread (a current-thread runtime spawns from this thread).
    // SAFETY: changing a disposition and this thread's mask; restored below.
    let old_usr2 = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask);
    }
    let parent = parse_status(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
    let child = Command::new("cat").arg("/proc/self/status").spawn();
    // SAFETY: restores what was saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, old_usr2);
    }

    // The parent really had them ignored and blocked, so the test means something.
    assert_ne!(
        signal_mask(&parent, "SigIgn") & signal_bit(libc::SIGPIPE),
        0
    );
    assert_ne!(
        signal_mask(&parent, "SigIgn") & signal_bit(libc::SIGUSR2),
        0
    );
    assert_ne!(
        signal_mask(&parent, "SigBlk") & signal_bit(libc::SIGUSR1),
        0
    );

    let mut child = child.unwrap();
    let out = run_to_end(&mut child).await;
    assert!(out.status().success());
    let status = out.text(1);
    let fields = parse_status(&status);
    assert_eq!(
        signal_mask(&fields, "SigIgn"),
        0,
        "nothing ignored in the child:\n{status}"
    );
    assert_eq!(
        signal_mask(&fields, "SigBlk"),
        0,
        "nothing blocked in the child:\n{status}"
    );
    assert_eq!(
        signal_mask(&fields, "SigPnd"),
        0,
        "nothing pending in the child:\n{status}"
    );
}

#[tokio::test]
async fn sigpipe_kills_a_child_writing_to_a_closed_pipe() {
    // SIGPIPE is at its default in the child, so `yes` dies of it when the parent closes the
    // read end, instead of spinning on EPIPE.
    let mut child = sh("read go; exec yes").spawn().unwrap();
    child.close_stdout().unwrap();
    child.write_stdin(&b"go\n"[..]).unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.status().signal(), Some(libc::SIGPIPE), "{:?}", out.log);
}
