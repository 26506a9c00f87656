//! The two errors: spawning fails with `SpawnError`, operations on a running transport with
//! `Error`; both convert into `io::Error` keeping the OS error, and both box.

use std::io;
use std::time::Duration;

use process_transport::{
    ChildFd, Command, Error, ExitStatus, InvalidInput, ProcessTransport, SpawnError, SpawnStep,
};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

/// Both errors can travel anywhere a boxed error can.
fn assert_boxable<E: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn both_errors_are_send_sync_and_static() {
    assert_boxable::<SpawnError>();
    assert_boxable::<Error>();
}

#[tokio::test]
async fn spawning_fails_with_a_spawn_error() {
    let missing: SpawnError = Command::new("/nonexistent-dir/no-such-program")
        .spawn()
        .unwrap_err();
    match &missing {
        SpawnError::Spawn {
            program,
            step,
            source,
        } => {
            assert_eq!(program, "/nonexistent-dir/no-such-program");
            assert_eq!(*step, SpawnStep::Exec);
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected a failed exec, got {other:?}"),
    }
    let empty: SpawnError = process_transport::spawn_process(&Command::new("")).unwrap_err();
    assert!(
        matches!(empty, SpawnError::InvalidInput(InvalidInput::EmptyProgram)),
        "{empty:?}"
    );
}

#[test]
fn spawning_outside_a_runtime_is_a_spawn_error() {
    let err: SpawnError = Command::new("true").spawn().unwrap_err();
    assert!(matches!(err, SpawnError::NoRuntime), "{err:?}");
}

#[tokio::test]
async fn operations_on_a_running_child_fail_with_an_error() {
    let mut child: ProcessTransport = Command::new("cat")
        .stderr(ChildFd::Null)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let no_pipe: Error = child.write(5, "x").unwrap_err();
    assert!(matches!(no_pipe, Error::NoSuchPipe(5)), "{no_pipe:?}");
    let not_writable: Error = child.write(1, "x").unwrap_err();
    assert!(
        matches!(not_writable, Error::NotWritable(1)),
        "{not_writable:?}"
    );
    let status: Result<ExitStatus, Error> = timeout(LIMIT, child.kill()).await.unwrap();
    assert_eq!(status.unwrap().signal(), Some(libc::SIGKILL));
    let exited: Error = child.signal(libc::SIGTERM).unwrap_err();
    assert!(matches!(exited, Error::AlreadyExited), "{exited:?}");
}

#[tokio::test]
async fn both_convert_into_io_errors_keeping_the_errno() {
    let spawn_err = Command::new("/nonexistent-dir/no-such-program")
        .spawn()
        .unwrap_err();
    let io = io::Error::from(spawn_err);
    assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(io.kind(), io::ErrorKind::NotFound);

    let bad_input = io::Error::from(Command::new("a\0b").spawn().unwrap_err());
    assert_eq!(bad_input.kind(), io::ErrorKind::InvalidInput);
    let inner = bad_input.get_ref().expect("the SpawnError is kept inside");
    assert!(
        matches!(
            inner.downcast_ref::<SpawnError>(),
            Some(SpawnError::InvalidInput(_))
        ),
        "{inner:?}"
    );

    // A signal that does not exist: kill fails with EINVAL, an `Error::Io`.
    let mut child = Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let io = io::Error::from(child.signal(1000).unwrap_err());
    assert_eq!(io.raw_os_error(), Some(libc::EINVAL));
    let misuse = io::Error::from(child.write(7, "x").unwrap_err());
    assert!(
        matches!(
            misuse.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::NoSuchPipe(7))
        ),
        "{misuse:?}"
    );
    timeout(LIMIT, child.kill()).await.unwrap().unwrap();
}

/// Spawns and waits, with `?` on both errors.
async fn status_of(program: &str) -> io::Result<ExitStatus> {
    let child = Command::new(program).spawn()?;
    Ok(child.await?)
}

/// The same through a boxed error.
async fn boxed_status_of(
    program: &str,
) -> Result<ExitStatus, Box<dyn std::error::Error + Send + Sync>> {
    let child = Command::new(program).spawn()?;
    Ok(child.await?)
}

#[tokio::test]
async fn one_function_can_spawn_and_wait_with_question_marks() {
    let ok = timeout(LIMIT, status_of("true")).await.unwrap().unwrap();
    assert!(ok.success());
    let failed = timeout(LIMIT, status_of("/nonexistent-dir/no-such-program"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(failed.raw_os_error(), Some(libc::ENOENT));

    let ok = timeout(LIMIT, boxed_status_of("false"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.code(), Some(1));
    let failed = timeout(LIMIT, boxed_status_of("/nonexistent-dir/no-such-program"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            failed.downcast_ref::<SpawnError>(),
            Some(SpawnError::Spawn {
                step: SpawnStep::Exec,
                ..
            })
        ),
        "{failed:?}"
    );
}
