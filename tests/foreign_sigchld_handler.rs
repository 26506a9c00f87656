//! Another library replacing the SIGCHLD handler (without chaining ours) must not leave a
//! child unreaped: the reaper's periodic scan still collects it, even when it was idle before
//! the child was spawned. Its own test binary: it changes a process-wide disposition.

use std::time::Duration;

use process_transport::Command;

extern "C" fn foreign_handler(_: libc::c_int) {}

#[tokio::test]
async fn a_child_is_reaped_after_the_sigchld_handler_was_replaced() {
    // Start the reaper and let it go idle (its table empty).
    Command::new("true").spawn().unwrap().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: installs a handler that does nothing; no other test runs in this binary.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = foreign_handler as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
    // Outlives the check in register(), so only the periodic scan can see it exit.
    let child = Command::new("sleep").arg("0.2").spawn().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child)
        .await
        .expect("never reaped without SIGCHLD")
        .unwrap();
    assert!(status.success());
}
