//! EMFILE during spawn. The test lowers RLIMIT_NOFILE for the whole process, so it is the
//! only test in this binary.
//!
//! With the soft limit at the lowest free fd number, no new fd can be made: the spawn fails
//! at its first pipe (or at `/dev/null` for a map of `Null`s) with EMFILE. Raising the limit
//! a little at a time then makes each later step fail in turn (the second pipe, the
//! `clone`'s pidfd) until the spawn succeeds. Every failure is typed and leaks nothing.

mod common;

use common::{assert_nothing_leaked, nofile_limit, open_fds, set_nofile_soft, zombie_children};
use process_transport::{ChildFd, Command, SpawnError, SpawnStep};

fn lowest_free_fd() -> u64 {
    let fds = open_fds();
    (0..).find(|n| !fds.contains(n)).unwrap() as u64
}

/// Restores the soft limit even if an assertion fails.
struct RestoreLimit(u64);

impl Drop for RestoreLimit {
    fn drop(&mut self) {
        set_nofile_soft(self.0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn emfile_during_spawn() {
    // Start the reaper first: its fds are made once per process.
    Command::new("/bin/true").spawn().unwrap().await.unwrap();
    let (soft, _) = nofile_limit();
    let _restore = RestoreLimit(soft);
    let before = open_fds();

    let free = lowest_free_fd();
    set_nofile_soft(free);
    match Command::new("/bin/true").spawn() {
        Err(SpawnError::Spawn {
            step: SpawnStep::CreatePipe,
            source,
            ..
        }) => assert_eq!(source.raw_os_error(), Some(libc::EMFILE)),
        other => panic!("expected EMFILE creating a pipe, got {other:?}"),
    }
    match Command::new("/bin/true")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null)])
        .spawn()
    {
        Err(SpawnError::Spawn {
            step: SpawnStep::OpenDevNull,
            source,
            ..
        }) => assert_eq!(source.raw_os_error(), Some(libc::EMFILE)),
        other => panic!("expected EMFILE opening /dev/null, got {other:?}"),
    }
    set_nofile_soft(soft);
    assert_eq!(open_fds(), before, "fds leaked after EMFILE");

    // Step the limit up: each spawn either fails with EMFILE at some step, or works.
    let mut steps_seen = Vec::new();
    let mut succeeded = false;
    for extra in 0..16 {
        set_nofile_soft(free + extra);
        let result = Command::new("/bin/sh")
            .args(["-c", "echo fine"])
            .stdin(ChildFd::Null)
            .spawn();
        set_nofile_soft(soft);
        match result {
            Err(SpawnError::Spawn { step, source, .. }) => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(libc::EMFILE),
                    "{step:?} failed otherwise with {extra} spare fds"
                );
                steps_seen.push(step);
            }
            Ok(child) => {
                let status = tokio::time::timeout(common::LIMIT, child)
                    .await
                    .expect("child did not finish")
                    .unwrap();
                assert!(status.success());
                succeeded = true;
                break;
            }
            Err(other) => panic!("untyped failure with {extra} spare fds: {other:?}"),
        }
        assert_eq!(open_fds(), before, "fds leaked with {extra} spare fds");
        assert_eq!(zombie_children(), Vec::<i32>::new());
    }
    assert!(succeeded, "never spawned; failed at {steps_seen:?}");
    assert!(
        steps_seen.contains(&SpawnStep::CreatePipe),
        "{steps_seen:?}"
    );
    eprintln!("failed steps while the limit rose: {steps_seen:?}");
    assert_nothing_leaked(&before);
}
