//! Real-time signals (`SIGRTMIN..=SIGRTMAX`) are signals like any other: they can be sent to
//! the child, and a child they kill is reaped with that signal in its status. Both through
//! pidfds and through the reaper's SIGCHLD fallback, where the child has no pidfd, so the
//! signal goes out by `kill` and the exit is found by a `waitid` peek. (Wrappers that model
//! signals as an enum of the classic ones, like nix's `Signal`, cannot send these.)

use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use process_transport::{Command, Error};

/// In the inner run of [`also_through_the_sigchld_fallback`].
const INNER: &str = "PROCESS_TRANSPORT_RT_SIGNALS_INNER";

fn realtime_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

#[tokio::test]
async fn a_realtime_signal_kills_the_child_and_is_its_status() {
    let sig = realtime_signal();
    assert!(sig <= libc::SIGRTMAX());
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    child.signal(sig).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the child outlived a real-time signal")
        .unwrap();
    assert_eq!(status.signal(), Some(sig), "{status:?}");
    assert!(matches!(child.signal(sig), Err(Error::AlreadyExited)));
}

#[tokio::test]
async fn a_realtime_signal_reaches_the_process_group() {
    let sig = realtime_signal();
    let mut child = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    child.signal_group(sig).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the group outlived a real-time signal")
        .unwrap();
    assert_eq!(status.signal(), Some(sig), "{status:?}");
}

/// The tests above again, in a fresh process whose reaper is forced onto the SIGCHLD fallback
/// (the reaper picks its mode once per process).
#[test]
fn also_through_the_sigchld_fallback() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = StdCommand::new(exe)
        .args(["a_realtime_signal", "--test-threads=1"])
        .env(INNER, "1")
        .env("PROCESS_TRANSPORT_REAPER", "sigchld")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("--- inner run ---\n{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "inner run: {}", output.status);
    assert!(stdout.contains("2 passed"), "the inner run ran other tests");
}
