//! Faults: failed execs, children killed or closing their fds mid-stream, transports dropped
//! mid-stream, and runtimes shut down under live children. Each ends in a typed error or a
//! documented outcome, with no fd left open in the parent and no zombie left behind.
//!
//! EMFILE during spawn lowers the process's fd limit, so it lives in its own binary
//! (`tests/faults_emfile.rs`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{
    LIMIT, Outcome, Rec, assert_nothing_leaked, collect, open_fds, process_state, record,
    wait_until, zombie_children,
};
use futures::StreamExt;
use process_transport::{ChildFd, Command, Error, InvalidInput, SpawnError, SpawnStep};

/// Every test here counts fds and children of the whole process, so they run one at a time,
/// each on its own current-thread runtime (see [`common::serially`]).
fn serially<F: std::future::Future>(test: F) -> F::Output {
    common::serially(&mut tokio::runtime::Builder::new_current_thread(), test)
}

/// Starts the reaper (its fds live as long as the process) so fd counts are comparable.
async fn warm_up() {
    Command::new("/bin/true").spawn().unwrap().await.unwrap();
}

/// Asserts that spawning `cmd` fails at `step` with `errno`, leaking nothing.
async fn spawn_fails(cmd: &Command, step: SpawnStep, errno: i32) {
    warm_up().await;
    let before = open_fds();
    match cmd.spawn() {
        Err(SpawnError::Spawn {
            step: got,
            ref source,
            ..
        }) => {
            assert_eq!(got, step, "{source}");
            assert_eq!(source.raw_os_error(), Some(errno), "{source}");
        }
        other => panic!("expected a {step:?} failure, got {other:?}"),
    }
    assert_eq!(open_fds(), before, "fds leaked by a failed spawn");
    assert_eq!(
        zombie_children(),
        Vec::<i32>::new(),
        "failed child left a zombie"
    );
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pt-faults-{}-{name}", std::process::id()))
}

#[test]
fn exec_failures_are_typed() {
    serially(async {
        spawn_fails(
            &Command::new("/nonexistent/program"),
            SpawnStep::Exec,
            libc::ENOENT,
        )
        .await;
        spawn_fails(
            Command::new("no-such-program-anywhere").env("PATH", "/bin:/usr/bin"),
            SpawnStep::Exec,
            libc::ENOENT,
        )
        .await;
        spawn_fails(&Command::new("/tmp"), SpawnStep::Exec, libc::EACCES).await;

        let not_executable = temp_path("not-executable");
        std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
        spawn_fails(
            &Command::new(&not_executable),
            SpawnStep::Exec,
            libc::EACCES,
        )
        .await;

        let garbage = temp_path("garbage");
        std::fs::write(&garbage, [0x7f, b'E', b'L', b'F', 0, 0, 1, 2, 3]).unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
        spawn_fails(&Command::new(&garbage), SpawnStep::Exec, libc::ENOEXEC).await;

        spawn_fails(
            Command::new("/bin/true").current_dir("/nonexistent/dir"),
            SpawnStep::Chdir,
            libc::ENOENT,
        )
        .await;
        std::fs::remove_file(not_executable).ok();
        std::fs::remove_file(garbage).ok();
    });
}

#[test]
fn child_killed_mid_write() {
    serially(async {
        warm_up().await;
        let before = open_fds();
        let mut child = Command::new("/usr/bin/yes")
            .arg("0123456789")
            .stdin(ChildFd::Null)
            .spawn()
            .unwrap();
        let mut seen = Outcome::default();
        let read_some = async {
            while seen.out(1).len() < 1 << 20 {
                record(&mut seen, child.next().await.expect("ended early"));
            }
        };
        tokio::time::timeout(LIMIT, read_some).await.unwrap();
        child.signal(libc::SIGKILL).unwrap();
        let rest = collect(&mut child, LIMIT).await;
        let status = rest.status();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Everything read is the child's output, in order, cut anywhere.
        let mut all = seen.out(1).to_vec();
        all.extend_from_slice(rest.out(1));
        let pattern = b"0123456789\n";
        assert!(
            all.chunks(pattern.len()).all(|c| c == &pattern[..c.len()]),
            "corrupted output"
        );
        assert!(rest.closes().contains(&(1, "Eof")), "{rest:?}");
        drop(child);
        assert_nothing_leaked(&before);
    });
}

#[test]
fn child_killed_while_the_parent_writes() {
    serially(async {
        warm_up().await;
        let before = open_fds();
        // The child never reads: 8 MiB cannot all fit in the pipe.
        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        child.write_stdin(vec![7u8; 8 << 20]).unwrap();
        assert!(child.queued_len(0) > 0);
        let mut seen = Outcome::default();
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(e) = child.next().await {
                record(&mut seen, e);
            }
        })
        .await;
        child.signal(libc::SIGKILL).unwrap();
        let rest = collect(&mut child, LIMIT).await;
        assert_eq!(rest.status().signal(), Some(libc::SIGKILL));
        // The stdin pipe closes with an error (EPIPE) or as the child's end going away.
        let stdin_close = rest
            .closes()
            .into_iter()
            .find(|(fd, _)| *fd == 0)
            .map(|(_, why)| why);
        assert!(
            matches!(stdin_close, Some("Eof") | Some("Error(Some(32))")),
            "stdin closed as {stdin_close:?}"
        );
        drop(child);
        assert_nothing_leaked(&before);
    });
}

#[test]
fn child_closing_its_fds_early() {
    serially(async {
        warm_up().await;
        let before = open_fds();
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exec 0<&- 1>&- 2>&- 3>&-; sleep 0.3; exit 5"])
            .fd(3, ChildFd::ParentReads)
            .spawn()
            .unwrap();
        let outcome = collect(&mut child, LIMIT).await;
        assert_eq!(outcome.status().code(), Some(5));
        let mut closed: Vec<i32> = outcome.closes().iter().map(|(fd, _)| *fd).collect();
        closed.sort_unstable();
        assert_eq!(closed, [0, 1, 2, 3], "{outcome:?}");
        // Every close is seen before the exit: the child lingers 300 ms with them closed.
        let exited = outcome
            .log
            .iter()
            .position(|r| matches!(r, Rec::Exited(_)))
            .unwrap();
        assert_eq!(exited, 4, "{:?}", outcome.log);
        assert!(outcome.data.is_empty());
        // Writing to the closed stdin is refused, not a crash.
        assert!(matches!(
            child.write_stdin(&b"late"[..]),
            Err(Error::PipeClosed(0))
        ));
        drop(child);
        assert_nothing_leaked(&before);
    });
}

#[test]
fn transport_dropped_mid_stream() {
    serially(async {
        warm_up().await;
        let before = open_fds();
        // A child with SIGPIPE at its default dies of it; one that handles EPIPE exits on its
        // own (code 3 here). Both are reaped in the background with nobody waiting.
        let mut pids = Vec::new();
        for program in [
            vec!["/usr/bin/yes"],
            vec![
                common::python(),
                "-I",
                "-S",
                "-c",
                "import os\ntry:\n    while True: os.write(1, b'x' * 4096)\nexcept BrokenPipeError:\n    raise SystemExit(3)",
            ],
        ] {
            let mut child = Command::new(program[0])
                .args(&program[1..])
                .stdin(ChildFd::Null)
                .spawn()
                .unwrap();
            let first = tokio::time::timeout(LIMIT, child.next()).await.unwrap();
            assert!(matches!(
                first,
                Some(process_transport::Event::Data { fd: 1, .. })
            ));
            pids.push(child.pid().unwrap() as i32);
            drop(child);
        }
        for pid in pids {
            assert!(
                wait_until(LIMIT, || process_state(pid).is_none()),
                "child {pid} still there as {:?}",
                process_state(pid)
            );
        }
        assert_eq!(zombie_children(), Vec::<i32>::new());
        assert_eq!(open_fds(), before, "fds leaked after dropping transports");
    });
}

#[test]
fn runtime_shut_down_with_live_children() {
    let _serial = common::serial_lock();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(warm_up());
    let before = open_fds();

    // One runtime owns children inside its tasks; another hands a transport out past its
    // own lifetime.
    let inner = common::multi_thread_runtime(2);
    let (task_pids, kept) = inner.block_on(async {
        let mut pids = Vec::new();
        for _ in 0..5 {
            let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
            pids.push(child.pid().unwrap() as i32);
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        let kept = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
        (pids, kept)
    });
    drop(inner);
    let kept_pid = kept.pid().unwrap() as i32;
    for pid in task_pids.iter().copied().chain([kept_pid]) {
        assert!(
            process_state(pid).is_some(),
            "child {pid} died with the runtime"
        );
    }
    // No runtime drives them now: the reaper thread alone collects them.
    for pid in task_pids.iter().copied().chain([kept_pid]) {
        assert!(
            wait_until(LIMIT, || process_state(pid).is_none()),
            "child {pid} not reaped: {:?}",
            process_state(pid)
        );
    }
    // The surviving transport knows its child is gone, and dropping it without its runtime
    // is quiet.
    assert!(wait_until(LIMIT, || kept.pid().is_none()));
    assert!(matches!(
        kept.signal(libc::SIGTERM),
        Err(Error::AlreadyExited)
    ));
    drop(kept);
    assert_nothing_leaked(&before);
}

/// Found by fuzzing: an `Inherit` of a closed fd number was checked only after earlier
/// pipes were made, so it could name one of them and hand the child this crate's own fd.
#[test]
fn inherit_of_a_closed_fd_is_rejected_even_if_a_pipe_would_take_its_number() {
    serially(async {
        warm_up().await;
        // The lowest free number is the next one a pipe gets.
        // SAFETY: open and close /dev/null to learn the lowest free fd.
        let free = unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            libc::close(fd);
            fd
        };
        let before = open_fds();
        let result = Command::new("/bin/true")
            .fds([(3, ChildFd::ParentReads), (9, ChildFd::Inherit(free))])
            .spawn();
        assert!(
            matches!(
                result,
                Err(SpawnError::InvalidInput(InvalidInput::InheritedFdNotOpen { child_fd: 9, parent_fd })) if parent_fd == free
            ),
            "{result:?}"
        );
        assert_eq!(open_fds(), before);
    });
}

/// Found by fuzzing: a capacity for a non-pipe fd was reported as a failed `F_SETPIPE_SZ`
/// on another fd when that one came first.
#[test]
fn pipe_capacity_for_a_non_pipe_is_bad_input_first() {
    serially(async {
        let result = Command::new("/bin/true")
            .pipe_capacity(0, usize::MAX)
            .pipe_capacity(7, 4096)
            .spawn();
        assert!(
            matches!(
                result,
                Err(SpawnError::InvalidInput(
                    InvalidInput::PipeCapacityWithoutPipe(7)
                ))
            ),
            "{result:?}"
        );
    });
}
