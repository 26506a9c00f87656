//! EMFILE during spawn. The test lowers RLIMIT_NOFILE for the whole process, so it is the
//! only test in this binary.
//!
//! With the soft limit at the lowest free fd number, no new fd can be made: the spawn fails
//! at its first pipe (or at `/dev/null` for a map of `Null`s) with EMFILE. Raising the limit
//! a little at a time then makes each later step fail in turn (the second pipe, the
//! `clone`'s pidfd) until the spawn succeeds, for plain pipes and again on a pty (whose master
//! needs an epoll set of its own). Every failure is typed and leaks nothing.

mod common;

use common::{assert_nothing_leaked, nofile_limit, open_fds, set_nofile_soft, zombie_children};
use process_transport::{ChildFd, Command, PtySize, SpawnError, SpawnStep};

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
    let mut plain = Command::new("/bin/sh");
    plain.args(["-c", "echo fine"]).stdin(ChildFd::Null);
    let steps_seen = spawn_as_the_limit_rises(&plain, free, soft, &before).await;
    assert!(
        steps_seen.contains(&SpawnStep::CreatePipe),
        "{steps_seen:?}"
    );
    // A terminal needs one more fd in the parent, the epoll set its master is waited on
    // through, made after the pty is open.
    let mut on_a_pty = plain.clone();
    on_a_pty.pty(PtySize::default());
    let pty_steps = spawn_as_the_limit_rises(&on_a_pty, free, soft, &before).await;
    assert!(
        pty_steps.contains(&SpawnStep::RegisterPipe(1)),
        "{pty_steps:?}"
    );
    eprintln!("failed steps while the limit rose: {steps_seen:?}; on a pty: {pty_steps:?}");
    assert_nothing_leaked(&before);
}

/// Spawns `cmd` with the soft limit at `free`, `free + 1`, ... until it works (restoring
/// `soft` after each try); every failure must be a typed EMFILE that leaves the fds as
/// `before` and no zombie. Returns the steps that failed, in order.
async fn spawn_as_the_limit_rises(
    cmd: &Command,
    free: u64,
    soft: u64,
    before: &std::collections::BTreeSet<i32>,
) -> Vec<SpawnStep> {
    let mut steps_seen = Vec::new();
    for extra in 0..16 {
        set_nofile_soft(free + extra);
        let result = cmd.spawn();
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
                return steps_seen;
            }
            Err(other) => panic!("untyped failure with {extra} spare fds: {other:?}"),
        }
        assert_eq!(&open_fds(), before, "fds leaked with {extra} spare fds");
        assert_eq!(zombie_children(), Vec::<i32>::new());
    }
    panic!("never spawned; failed at {steps_seen:?}");
}
