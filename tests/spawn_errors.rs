//! Exec and setup failures come back from spawn itself as typed errors naming the step and the
//! errno (never as "exit code 127"), and bad input is rejected before anything is spawned.

mod common;

use std::io;
use std::os::fd::AsRawFd;

use process_transport::{ChildFd, Command, Field, InvalidInput, PtySize, SpawnError, SpawnStep};

use common::{run_to_end, scratch_dir, sh, spawn_fresh_file, write_file};

/// Unwraps a spawn error into (step, errno), failing on anything else.
fn spawn_failure(
    result: Result<process_transport::ProcessTransport, SpawnError>,
) -> (SpawnStep, i32) {
    match result {
        Err(SpawnError::Spawn { step, source, .. }) => {
            (step, source.raw_os_error().expect("an OS error"))
        }
        Err(other) => panic!("expected a spawn error, got {other:?}"),
        Ok(t) => {
            let _ = t.signal(libc::SIGKILL);
            panic!("expected a spawn error, but the child started: {t:?}")
        }
    }
}

fn invalid_input(result: Result<process_transport::ProcessTransport, SpawnError>) -> InvalidInput {
    match result {
        Err(SpawnError::InvalidInput(e)) => e,
        Err(other) => panic!("expected invalid input, got {other:?}"),
        Ok(t) => panic!("expected invalid input, but the child started: {t:?}"),
    }
}

// ----- exec failures ---------------------------------------------------------------------

#[tokio::test]
async fn missing_program_path_is_exec_enoent() {
    let err = Command::new("/nonexistent-dir/program").spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::ENOENT));
}

#[tokio::test]
async fn program_not_found_on_path_is_exec_enoent() {
    let err = Command::new("pt-core-no-such-program-anywhere").spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::ENOENT));
}

#[tokio::test]
async fn file_without_execute_permission_is_exec_eacces() {
    let dir = scratch_dir("eacces");
    let path = dir.join("not-executable");
    write_file(&path, b"#!/bin/sh\nexit 0\n", 0o644);
    let err = spawn_fresh_file(&Command::new(&path));
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::EACCES));
}

#[tokio::test]
async fn directory_as_program_is_exec_eacces() {
    let err = Command::new("/tmp").spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::EACCES));
}

#[tokio::test]
async fn executable_garbage_is_exec_enoexec_with_no_shell_fallback() {
    let dir = scratch_dir("enoexec");
    let path = dir.join("garbage");
    write_file(
        &path,
        b"\x7fNOT-ELF\x00\x01\x02 this is no program\n",
        0o755,
    );
    let err = spawn_fresh_file(&Command::new(&path));
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::ENOEXEC));
}

#[tokio::test]
async fn missing_working_directory_is_chdir_enoent() {
    let err = Command::new("true")
        .current_dir("/nonexistent-dir/cwd")
        .spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::Chdir, libc::ENOENT));
}

#[tokio::test]
async fn working_directory_that_is_a_file_is_chdir_enotdir() {
    let err = Command::new("true").current_dir("/etc/passwd").spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::Chdir, libc::ENOTDIR));
}

#[tokio::test]
async fn invalid_uid_is_a_setuid_failure() {
    // (uid_t)-1 is rejected by setuid(2) with EINVAL, even for root.
    let err = Command::new("true").uid(u32::MAX).spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::SetUid, libc::EINVAL));
}

#[tokio::test]
async fn invalid_gid_is_a_setgid_failure() {
    let err = Command::new("true").gid(u32::MAX).spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::SetGid, libc::EINVAL));
}

#[tokio::test]
async fn uid_is_changed_before_exec_so_a_root_only_program_is_eacces() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = scratch_dir("root-only");
    let path = dir.join("root-only-program");
    write_file(&path, b"#!/bin/sh\nexit 0\n", 0o700);
    // As root it runs ...
    let mut child = spawn_fresh_file(&Command::new(&path)).unwrap();
    assert!(run_to_end(&mut child).await.status().success());
    // ... as nobody the exec itself is refused.
    let err = spawn_fresh_file(Command::new(&path).uid(65534).gid(65534));
    assert_eq!(spawn_failure(err), (SpawnStep::Exec, libc::EACCES));
}

#[tokio::test]
async fn target_fd_beyond_the_fd_limit_is_a_place_fd_failure() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let Ok(fd) = i32::try_from(limit.rlim_cur) else {
        eprintln!("skipped: unlimited fds");
        return;
    };
    let err = Command::new("true").fd(fd, ChildFd::Null).spawn();
    assert_eq!(spawn_failure(err), (SpawnStep::PlaceFd(fd), libc::EBADF));
}

#[tokio::test]
async fn exec_failure_is_typed_on_every_spawn_path() {
    let (_read, write) = common::cloexec_pipe();
    let mut variants: Vec<(&str, Command)> = Vec::new();
    let base = || Command::new("/nonexistent-dir/program");
    variants.push(("default map", base()));
    variants.push(("empty map", {
        let mut c = base();
        c.fds([]);
        c
    }));
    variants.push(("high and inherited fds", {
        let mut c = base();
        c.fd(1000, ChildFd::ParentReads)
            .fd(7, ChildFd::Inherit(write.as_raw_fd()))
            .fd(8, ChildFd::Null);
        c
    }));
    variants.push(("new session", {
        let mut c = base();
        c.new_session();
        c
    }));
    variants.push(("process group", {
        let mut c = base();
        c.process_group(0);
        c
    }));
    variants.push(("cwd and credentials", {
        let mut c = base();
        c.current_dir("/").uid(0).gid(0);
        c
    }));
    variants.push(("cleared env", {
        let mut c = base();
        c.env_clear();
        c
    }));
    variants.push(("pty", {
        let mut c = base();
        c.pty(PtySize::default());
        c
    }));
    for (name, command) in &variants {
        match command.spawn() {
            Err(SpawnError::Spawn { step, source, .. }) => {
                assert_eq!(step, SpawnStep::Exec, "{name}");
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{name}");
            }
            other => panic!("{name}: expected an exec error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn spawn_error_names_the_step_and_the_os_error() {
    let err = Command::new("true")
        .current_dir("/nonexistent-dir/cwd")
        .spawn()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("chdir"), "{text}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("No such file")),
        "{source:?}"
    );
    let io_err: io::Error = err.into();
    assert_eq!(io_err.raw_os_error(), Some(libc::ENOENT));
}

#[tokio::test]
async fn a_real_exit_code_127_is_an_exit_status_not_a_spawn_error() {
    let mut child = sh("exit 127").spawn().unwrap();
    let out = run_to_end(&mut child).await;
    assert_eq!(out.status().code(), Some(127));
}

#[test]
fn spawn_outside_a_runtime_is_a_typed_error() {
    assert!(matches!(
        Command::new("true").spawn(),
        Err(SpawnError::NoRuntime)
    ));
}

// ----- bad input, rejected before spawning -----------------------------------------------

#[tokio::test]
async fn empty_program_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("").spawn()),
        InvalidInput::EmptyProgram
    );
}

#[tokio::test]
async fn nul_in_program_is_rejected_as_the_program() {
    assert_eq!(
        invalid_input(Command::new("tr\0ue").spawn()),
        InvalidInput::NulByte {
            field: Field::Program
        }
    );
}

#[tokio::test]
async fn nul_in_program_with_a_custom_arg0_is_rejected_as_the_program() {
    assert_eq!(
        invalid_input(Command::new("tr\0ue").arg0("true").spawn()),
        InvalidInput::NulByte {
            field: Field::Program
        }
    );
}

#[tokio::test]
async fn nul_in_arg0_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("true").arg0("a\0b").spawn()),
        InvalidInput::NulByte { field: Field::Arg0 }
    );
}

#[tokio::test]
async fn nul_in_an_argument_is_rejected_with_its_index() {
    assert_eq!(
        invalid_input(
            Command::new("true")
                .args(["ok", "also ok", "b\0ad"])
                .spawn()
        ),
        InvalidInput::NulByte {
            field: Field::Arg(2)
        }
    );
}

#[tokio::test]
async fn nul_in_an_env_key_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("true").env("A\0B", "v").spawn()),
        InvalidInput::NulByte {
            field: Field::EnvKey
        }
    );
}

#[tokio::test]
async fn nul_in_an_env_value_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("true").env("KEY", "v\0v").spawn()),
        InvalidInput::NulByte {
            field: Field::EnvValue
        }
    );
}

#[tokio::test]
async fn equals_sign_in_an_env_key_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("true").env("A=B", "v").spawn()),
        InvalidInput::BadEnvKey { key: "A=B".into() }
    );
}

#[tokio::test]
async fn empty_env_key_is_rejected() {
    assert!(matches!(
        invalid_input(Command::new("true").env("", "v").spawn()),
        InvalidInput::BadEnvKey { .. }
    ));
}

#[tokio::test]
async fn nul_in_the_working_directory_is_rejected() {
    assert_eq!(
        invalid_input(Command::new("true").current_dir("/t\0mp").spawn()),
        InvalidInput::NulByte {
            field: Field::CurrentDir
        }
    );
}

#[tokio::test]
async fn duplicate_child_fd_is_rejected() {
    let cmd = Command::new("true")
        .fds([
            (1, ChildFd::ParentReads),
            (3, ChildFd::Null),
            (1, ChildFd::Null),
        ])
        .spawn();
    assert_eq!(invalid_input(cmd), InvalidInput::DuplicateChildFd(1));
}

#[tokio::test]
async fn negative_child_fd_is_rejected_from_fd_and_from_fds() {
    assert_eq!(
        invalid_input(Command::new("true").fd(-1, ChildFd::Null).spawn()),
        InvalidInput::NegativeChildFd(-1)
    );
    assert_eq!(
        invalid_input(
            Command::new("true")
                .fds([(-3, ChildFd::ParentReads)])
                .spawn()
        ),
        InvalidInput::NegativeChildFd(-3)
    );
}

#[tokio::test]
async fn inheriting_a_parent_fd_that_is_not_open_is_rejected() {
    // A high number no other test will be given: fds are allocated lowest-first, so a number
    // freed by closing a pipe here could be reused by a concurrent test at once.
    let closed = 19_876;
    // SAFETY: F_GETFD only queries the fd.
    assert_eq!(
        unsafe { libc::fcntl(closed, libc::F_GETFD) },
        -1,
        "fd {closed} is open"
    );
    assert_eq!(
        invalid_input(Command::new("true").fd(4, ChildFd::Inherit(closed)).spawn()),
        InvalidInput::InheritedFdNotOpen {
            child_fd: 4,
            parent_fd: closed
        }
    );
    assert!(matches!(
        invalid_input(Command::new("true").fd(5, ChildFd::Inherit(-7)).spawn()),
        InvalidInput::InheritedFdNotOpen { .. } | InvalidInput::NegativeChildFd(_)
    ));
}

#[tokio::test]
async fn bad_input_is_reported_even_when_the_program_does_not_exist() {
    // Validation runs before the child exists: a missing program would otherwise be the error.
    let err = Command::new("/nonexistent-dir/program")
        .env("A=B", "v")
        .spawn();
    assert!(matches!(invalid_input(err), InvalidInput::BadEnvKey { .. }));
    let err = Command::new("/nonexistent-dir/program")
        .fd(-2, ChildFd::Null)
        .spawn();
    assert_eq!(invalid_input(err), InvalidInput::NegativeChildFd(-2));
}

#[tokio::test]
async fn a_spawn_error_names_the_program_step_and_errno() {
    let err = Command::new("/nonexistent-dir/named-program")
        .spawn()
        .unwrap_err();
    match &err {
        SpawnError::Spawn { program, .. } => assert_eq!(program, "/nonexistent-dir/named-program"),
        other => panic!("expected a spawn error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent-dir/named-program") && message.contains("exec"),
        "{message}"
    );
    // The errno is the source, not part of the message (a chain printer shows it once).
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.as_deref().is_some_and(|s| s.contains("os error 2")),
        "{source:?}"
    );
}
