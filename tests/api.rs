//! The public API's small promises: error chains that print each OS error once, comparable
//! and clonable events, reusable protocol routing, std interop and signal arguments.

mod common;

use std::error::Error as StdError;
use std::io;

use process_transport::{Command, Error, SpawnStep, WaitError};

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
fn assert_errno_once(error: &Error, errno: i32) {
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
        matches!(&err, Error::Spawn { step: SpawnStep::Exec, source, .. }
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
    let variants = [
        (
            Error::Spawn {
                program: "prog".into(),
                step: SpawnStep::Chdir,
                source: io::Error::from_raw_os_error(libc::EACCES),
            },
            libc::EACCES,
        ),
        (Error::Io(io::Error::from_raw_os_error(libc::EPERM)), libc::EPERM),
        (Error::Wait(WaitError::Os(libc::EIO)), libc::EIO),
    ];
    for (err, errno) in &variants {
        assert_errno_once(err, *errno);
    }
    // Converted to an io::Error (as `?` in an io function does), still once.
    for (err, errno) in variants {
        let io = io::Error::from(err);
        let printed = chain(&io);
        let needle = format!("(os error {errno})");
        assert_eq!(printed.matches(&needle).count(), 1, "{printed:?}");
    }
}
