//! The public API's small promises: error chains that print each OS error once, comparable
//! and clonable events, reusable protocol routing, std interop and signal arguments.

mod common;

use std::error::Error as StdError;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use process_transport::{
    ChildFd, CloseReason, Command, Error, Event, ProcessProtocol, ProcessTransport, Signal,
    SpawnError, SpawnStep, WaitError, route_child_connection_lost, route_child_data,
};

/// Prints `error` the way anyhow's `{:#}` does: its Display text, then `: ` and the Display
/// text of each source in turn.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        text.push_str(": ");
        text.push_str(&source.to_string());
        next = source.source();
    }
    text
}

/// Asserts that the chain of `error` names the OS error `errno` exactly once.
fn assert_errno_once(error: &(dyn StdError + 'static), errno: i32) {
    let printed = chain(error);
    let needle = format!("(os error {errno})");
    assert_eq!(
        printed.matches(&needle).count(),
        1,
        "{needle} should appear once in {printed:?}"
    );
}

#[tokio::test]
async fn a_spawn_error_chain_shows_the_errno_once() {
    let err = match Command::new("/nonexistent-dir/no-such-program").spawn() {
        Err(e) => e,
        Ok(_) => panic!("a missing program was spawned"),
    };
    assert!(
        matches!(&err, SpawnError::Spawn { step: SpawnStep::Exec, source, .. }
            if source.raw_os_error() == Some(libc::ENOENT)),
        "{err:?}"
    );
    assert_errno_once(&err, libc::ENOENT);
    // The top line still says what failed, and the chain still reaches the OS error.
    let top = err.to_string();
    assert!(top.contains("/nonexistent-dir/no-such-program"), "{top}");
    assert!(top.contains("exec"), "{top}");
    let source = err.source().expect("the OS error is the source");
    let io = source.downcast_ref::<io::Error>().expect("an io::Error");
    assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
}

#[tokio::test]
async fn an_io_error_chain_shows_the_errno_once() {
    // Signal 1000 does not exist: kill fails with EINVAL, reported as `Error::Io`.
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let err = child.signal(1000).unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.raw_os_error() == Some(libc::EINVAL)),
        "{err:?}"
    );
    assert_errno_once(&err, libc::EINVAL);
    common::within("kill", child.kill()).await.unwrap();
}

#[test]
fn no_error_variant_prints_its_errno_twice() {
    let spawn_errors = [(
        SpawnError::Spawn {
            program: "prog".into(),
            step: SpawnStep::Chdir,
            source: io::Error::from_raw_os_error(libc::EACCES),
        },
        libc::EACCES,
    )];
    let errors = [
        (
            Error::Io(io::Error::from_raw_os_error(libc::EPERM)),
            libc::EPERM,
        ),
        (Error::Wait(WaitError::Os(libc::EIO)), libc::EIO),
    ];
    for (err, errno) in &spawn_errors {
        assert_errno_once(err, *errno);
    }
    for (err, errno) in &errors {
        assert_errno_once(err, *errno);
    }
    // Converted to an io::Error (as `?` in an io function does), still once.
    let converted = spawn_errors
        .into_iter()
        .map(|(err, errno)| (io::Error::from(err), errno))
        .chain(
            errors
                .into_iter()
                .map(|(err, errno)| (io::Error::from(err), errno)),
        );
    for (io, errno) in converted {
        let printed = chain(&io);
        let needle = format!("(os error {errno})");
        assert_eq!(printed.matches(&needle).count(), 1, "{printed:?}");
    }
}

// ----- comparable, clonable events ---------------------------------------------------------------

#[tokio::test]
async fn events_clone_and_compare_equal() {
    let mut child = Command::new("sh")
        .args(["-c", "printf hello"])
        .stdin(ChildFd::Null)
        .stderr(ChildFd::Null)
        .spawn()
        .unwrap();
    let events = common::all_events(&mut child, common::LIMIT).await;
    for event in &events {
        assert_eq!(&event.clone(), event);
    }
    // Events compare with ones built by hand.
    let out: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data { fd: 1, data } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out, b"hello");
    assert!(
        events.contains(&Event::Closed {
            fd: 1,
            reason: CloseReason::Eof
        }),
        "{events:?}"
    );
    assert!(!events.contains(&Event::Closed {
        fd: 1,
        reason: CloseReason::Closed
    }));
    // `Exited` and `Ended` carry the same status, and compare so.
    let Some(Event::Ended(status)) = events.last().cloned() else {
        panic!("the last event is not Ended: {events:?}");
    };
    assert!(status.is_ok_and(|s| s.success()), "{status:?}");
    assert!(events.contains(&Event::Exited(status)), "{events:?}");
    assert_ne!(Event::Exited(status), Event::Ended(status));
}

#[tokio::test]
async fn an_error_close_reason_clones_and_compares_by_kind_and_errno() {
    let (_child, reason) = common::write_past_a_closed_stdin(b"line\n", common::LIMIT).await;
    assert!(reason.is_error(), "{reason:?}");
    let copy = reason.clone();
    assert_eq!(copy, reason);
    assert_eq!(
        reason,
        CloseReason::Error(Arc::new(io::Error::from_raw_os_error(libc::EPIPE)))
    );
    let event = Event::Closed { fd: 0, reason };
    assert_eq!(event.clone(), event);
}

#[test]
fn close_reasons_compare_by_what_matters() {
    let os = |errno| CloseReason::Error(Arc::new(io::Error::from_raw_os_error(errno)));
    assert_eq!(os(libc::EIO), os(libc::EIO));
    assert_ne!(os(libc::EIO), os(libc::EPIPE));
    // Same kind, but one has an errno and the other not.
    assert_ne!(
        os(libc::EPIPE),
        CloseReason::Error(Arc::new(io::Error::from(io::ErrorKind::BrokenPipe)))
    );
    // Without an errno, the kind decides and the message does not matter.
    assert_eq!(
        CloseReason::Error(Arc::new(io::Error::other("one"))),
        CloseReason::Error(Arc::new(io::Error::other("two")))
    );
    assert_ne!(os(libc::EIO), CloseReason::Eof);
    assert_eq!(CloseReason::WaitDelay, CloseReason::WaitDelay);
    assert_ne!(CloseReason::Eof, CloseReason::Closed);
}

// ----- reusable protocol routing -----------------------------------------------------------------

/// Handles fd 3 itself and leaves fds 0, 1 and 2 to the default routing.
#[derive(Default)]
struct OwnFd3 {
    out: Vec<u8>,
    err: Vec<u8>,
    fd3: Vec<u8>,
    lost: Vec<&'static str>,
    fd3_reason: Option<CloseReason>,
}

impl ProcessProtocol for OwnFd3 {
    fn child_data_received(&mut self, transport: &mut ProcessTransport, fd: i32, data: Bytes) {
        match fd {
            3 => self.fd3.extend_from_slice(&data),
            _ => route_child_data(self, transport, fd, data),
        }
    }

    fn out_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
        self.out.extend_from_slice(&data);
    }

    fn err_received(&mut self, _: &mut ProcessTransport, data: Bytes) {
        self.err.extend_from_slice(&data);
    }

    fn child_connection_lost(
        &mut self,
        transport: &mut ProcessTransport,
        fd: i32,
        reason: CloseReason,
    ) {
        match fd {
            3 => self.fd3_reason = Some(reason),
            _ => route_child_connection_lost(self, transport, fd, reason),
        }
    }

    fn in_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.lost.push("in");
    }

    fn out_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.lost.push("out");
    }

    fn err_connection_lost(&mut self, _: &mut ProcessTransport) {
        self.lost.push("err");
    }
}

#[tokio::test]
async fn the_routing_helpers_route_the_fds_an_override_leaves_alone() {
    let child = Command::new("sh")
        .args([
            "-c",
            "exec 0<&-; printf out; printf err >&2; printf three >&3",
        ])
        .fd(3, ChildFd::ParentReads)
        .spawn()
        .unwrap();
    let (protocol, status) = common::within("run", child.run(OwnFd3::default())).await;
    assert!(status.unwrap().success());
    assert_eq!(protocol.out, b"out");
    assert_eq!(protocol.err, b"err");
    assert_eq!(protocol.fd3, b"three");
    let mut lost = protocol.lost.clone();
    lost.sort_unstable();
    assert_eq!(lost, ["err", "in", "out"]);
    assert_eq!(protocol.fd3_reason, Some(CloseReason::Eof));
}

// ----- std interop and getters -------------------------------------------------------------------

/// A std command that sets every field std can read back: program, arguments (one not UTF-8),
/// a variable set, a variable of the parent's removed, the working directory.
fn std_command_with_every_readable_field() -> (std::process::Command, OsString) {
    let removed = std::env::vars_os()
        .map(|(key, _)| key)
        .find(|key| key != "PATH")
        .expect("the test process has an environment variable besides PATH");
    let mut std_command = std::process::Command::new("sh");
    std_command
        .args([
            "-c",
            "printf '%s\\n' \"$0\" \"$@\"; pwd; env | sort",
            "name",
        ])
        .arg(OsStr::from_bytes(b"not-utf8-\xff"))
        .env("PROCESS_TRANSPORT_API_TEST", "set")
        .env_remove(&removed)
        .current_dir("/usr");
    (std_command, removed)
}

#[test]
fn from_std_command_carries_every_field_std_exposes() {
    let (std_command, removed) = std_command_with_every_readable_field();
    let command = Command::from(&std_command);
    assert_eq!(command.get_program(), std_command.get_program());
    assert_eq!(
        command.get_args().collect::<Vec<_>>(),
        std_command.get_args().collect::<Vec<_>>()
    );
    let mut std_envs: Vec<_> = std_command.get_envs().collect();
    std_envs.sort();
    assert_eq!(command.get_envs().collect::<Vec<_>>(), std_envs);
    assert!(std_envs.contains(&(removed.as_os_str(), None)));
    assert_eq!(command.get_current_dir(), std_command.get_current_dir());
    assert_eq!(command.get_current_dir(), Some(Path::new("/usr")));
    // The rest is the default.
    assert_eq!(command.get_arg0(), None);
    assert!(!command.get_env_clear());
    assert_eq!(command.get_uid(), None);
    assert_eq!(command.get_process_group(), None);
    assert_eq!(
        command.get_fds().collect::<Vec<_>>(),
        [
            (0, ChildFd::ParentWrites),
            (1, ChildFd::ParentReads),
            (2, ChildFd::ParentReads)
        ]
    );
}

#[tokio::test]
async fn an_inherited_environment_reaches_the_child_as_std_passes_it() {
    // Passed on as libc holds it: every variable, in its order, byte for byte.
    let ours = Command::new("env").output().await.unwrap();
    let theirs = std::process::Command::new("env").output().unwrap();
    assert!(ours.status.success());
    assert!(!theirs.stdout.is_empty());
    assert_eq!(ours.stdout(), &theirs.stdout[..]);
}

#[tokio::test]
async fn a_command_from_std_runs_as_the_std_one_does() {
    let (mut std_command, removed) = std_command_with_every_readable_field();
    let ours = Command::from(&std_command)
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let theirs = std_command.output().unwrap();
    assert!(theirs.status.success(), "{theirs:?}");
    let mut ours = ours;
    let events = common::all_events(&mut ours, common::LIMIT).await;
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Data { fd: 1, data } => out.extend_from_slice(&data),
            Event::Ended(status) => assert!(status.unwrap().success()),
            _ => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&theirs.stdout)
    );
    // And the output shows each field did something.
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("name\nnot-utf8-"), "{text}");
    assert!(text.contains("\n/usr\n"), "{text}");
    assert!(text.contains("PROCESS_TRANSPORT_API_TEST=set\n"), "{text}");
    let removed = format!("\n{}=", removed.to_string_lossy());
    assert!(!text.contains(&removed), "{text}");
}

#[test]
fn getters_read_back_what_was_set() {
    let mut command = Command::new("prog");
    command
        .arg0("zero")
        .args(["a", "b"])
        .env("K", "v")
        .env_remove("GONE")
        .current_dir("/tmp")
        .uid(1)
        .gid(2)
        .process_group(0)
        .parent_death_signal(libc::SIGTERM)
        .fd(3, ChildFd::Null);
    assert_eq!(command.get_arg0(), Some(OsStr::new("zero")));
    assert_eq!(command.get_args().len(), 2);
    assert_eq!(command.get_args().next_back(), Some(OsStr::new("b")));
    assert_eq!(
        command.get_envs().collect::<Vec<_>>(),
        [
            (OsStr::new("GONE"), None),
            (OsStr::new("K"), Some(OsStr::new("v")))
        ]
    );
    assert_eq!(command.get_current_dir(), Some(Path::new("/tmp")));
    assert_eq!((command.get_uid(), command.get_gid()), (Some(1), Some(2)));
    assert_eq!(command.get_process_group(), Some(0));
    assert!(!command.get_new_session());
    assert_eq!(
        command.get_parent_death_signal(),
        Some(Signal::from(libc::SIGTERM))
    );
    // `fd` adds to the default map.
    assert_eq!(
        command.get_fds().map(|(fd, _)| fd).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );

    command.new_session().env_clear();
    assert_eq!(command.get_process_group(), None);
    assert!(command.get_new_session());
    assert!(command.get_env_clear());
    assert_eq!(command.get_envs().len(), 0);
    // `fds` replaces it.
    command.fds([(5, ChildFd::ParentReads)]);
    assert_eq!(
        command.get_fds().collect::<Vec<_>>(),
        [(5, ChildFd::ParentReads)]
    );
}

// ----- signal arguments --------------------------------------------------------------------------

/// Spawns a sleeper with `configure` applied from a thread that then exits, so that a
/// parent-death signal fires (Linux ties it to the spawning thread). The child has no pipes,
/// so the transport can be awaited from another runtime.
fn spawn_from_a_thread_that_exits(
    configure: impl FnOnce(&mut Command) + Send + 'static,
) -> ProcessTransport {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut command = Command::new("sleep");
            command
                .arg("30")
                .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
                .kill_on_drop(true);
            configure(&mut command);
            command.spawn().unwrap()
        })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn parent_death_signal_takes_a_signal_or_a_plain_number() {
    let from_signal = spawn_from_a_thread_that_exits(|c| {
        c.parent_death_signal(Signal::from(libc::SIGUSR1));
    });
    let from_literal = spawn_from_a_thread_that_exits(|c| {
        c.parent_death_signal(12); // SIGUSR2 on Linux
    });
    for (mut child, expected) in [(from_signal, libc::SIGUSR1), (from_literal, libc::SIGUSR2)] {
        let status = common::within("the parent-death signal", child.wait())
            .await
            .unwrap();
        assert_eq!(status.signal(), Some(expected), "{status:?}");
    }
}
