//! Signals can be given as `nix::sys::signal::Signal`. `.ci/run` also runs this with
//! `--features nix`, the feature that once enabled it, to keep that spelling building.

use std::time::Duration;

use nix::sys::signal::Signal;
use process_transport::{Command, Error};

#[tokio::test]
async fn a_nix_signal_kills_the_child_and_a_reaped_child_refuses_it() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    child.signal(Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(matches!(
        child.signal(Signal::SIGKILL),
        Err(Error::AlreadyExited)
    ));
}

#[test]
fn parent_death_signal_takes_a_nix_signal() {
    let mut command = Command::new("sleep");
    command.parent_death_signal(Signal::SIGUSR1);
    assert_eq!(
        command.get_parent_death_signal().map(|s| s.number()),
        Some(libc::SIGUSR1)
    );
}
