//! Fds and zombies, counted: a failed spawn (or rejected input) leaves no fd open and no zombie;
//! parent ends are non-blocking and close-on-exec, and the parent keeps no child end. These tests
//! count this process's fds and scan for its zombies, so they live in their own binary and run one
//! at a time.

mod common;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use process_transport::{ChildFd, Command, SpawnError};

use common::{
    LIMIT, open_fds, run_to_end, scratch_dir, spawn_fresh_file, write_file, zombie_children,
};

/// Runs `test` alone, on a fresh current-thread runtime, after the reaper has been started.
fn serial<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    common::serially(&mut tokio::runtime::Builder::new_current_thread(), async {
        // Start the reaper (its self-pipe is process-wide and long-lived) before counting.
        let mut warm = Command::new("true").spawn().unwrap();
        run_to_end(&mut warm).await;
        drop(warm);
        test().await;
    });
}

/// Waits up to [`LIMIT`] for this process's fds to be `expected` again.
fn assert_fds_back_to(expected: &BTreeSet<i32>, what: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = open_fds();
        if &now == expected {
            return;
        }
        if Instant::now() > deadline {
            let leaked: Vec<_> = now
                .difference(expected)
                .map(|fd| (fd, describe(*fd)))
                .collect();
            let lost: Vec<_> = expected.difference(&now).collect();
            panic!("{what}: fds leaked {leaked:?}, lost {lost:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn describe(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn fd_flags(fd: i32) -> (bool, bool) {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    // SAFETY: F_GETFD only reads flags.
    let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    (
        flags & libc::O_NONBLOCK as u32 != 0,
        fd_flags & libc::FD_CLOEXEC != 0,
    )
}

#[test]
fn failed_spawns_leave_no_fd_open_and_no_zombie() {
    serial(|| async {
        let dir = scratch_dir("accounting");
        let no_exec = dir.join("no-exec");
        write_file(&no_exec, b"#!/bin/sh\n", 0o644);
        let garbage = dir.join("garbage");
        write_file(&garbage, b"\x01\x02garbage", 0o755);
        let (_keep_read, keep_write) = common::cloexec_pipe();
        let closed_fd = {
            let (r, w) = common::cloexec_pipe();
            let n = w.as_raw_fd();
            drop((r, w));
            n
        };

        let many_fds = |c: &mut Command| {
            for fd in 3..12 {
                c.fd(fd, ChildFd::ParentReads);
            }
            c.fd(20, ChildFd::ParentWrites)
                .fd(21, ChildFd::Null)
                .fd(22, ChildFd::Inherit(keep_write.as_raw_fd()));
        };
        let mut cases: Vec<(&str, Command)> = Vec::new();
        let mut c = Command::new("/nonexistent-dir/program");
        many_fds(&mut c);
        cases.push(("ENOENT with many fds", c));
        cases.push(("EACCES", Command::new(&no_exec)));
        cases.push(("ENOEXEC", Command::new(&garbage)));
        let mut c = Command::new("true");
        c.current_dir("/nonexistent-dir");
        many_fds(&mut c);
        cases.push(("bad cwd", c));
        let mut c = Command::new("true");
        c.uid(u32::MAX);
        cases.push(("setuid", c));
        let mut c = Command::new("true");
        c.fd(1_000_000_000, ChildFd::ParentReads);
        cases.push(("fd beyond the limit", c));
        let mut c = Command::new("true");
        c.fd(3, ChildFd::ParentReads)
            .fd(4, ChildFd::Inherit(closed_fd));
        cases.push(("inherited fd not open, after a pipe", c));
        let mut c = Command::new("true");
        many_fds(&mut c);
        c.env("BAD=KEY", "v");
        cases.push(("bad env key", c));
        cases.push(("empty program", Command::new("")));
        let mut c = Command::new("true");
        c.fds([(1, ChildFd::ParentReads), (1, ChildFd::ParentWrites)]);
        cases.push(("duplicate fd", c));

        let before = open_fds();
        for (name, command) in &cases {
            match spawn_fresh_file(command) {
                Err(SpawnError::Spawn { .. } | SpawnError::InvalidInput(_)) => {}
                other => panic!("{name}: expected a failure, got {other:?}"),
            }
            assert_fds_back_to(&before, name);
            assert_eq!(zombie_children(), Vec::<i32>::new(), "{name}: zombie left");
        }
    });
}

#[test]
fn parent_ends_are_nonblocking_and_cloexec_and_no_child_end_is_kept() {
    serial(|| async {
        let before = open_fds();
        let mut child = Command::new("sleep")
            .arg("0.2")
            .fd(3, ChildFd::ParentWrites)
            .fd(4, ChildFd::Null)
            .fd(5, ChildFd::ParentReads)
            .spawn()
            .unwrap();
        let new: Vec<i32> = open_fds().difference(&before).copied().collect();
        let pipes: Vec<i32> = new
            .iter()
            .copied()
            .filter(|&fd| describe(fd).starts_with("pipe:"))
            .collect();
        assert_eq!(
            pipes.len(),
            5,
            "one parent end per pipe, no child end: {new:?}"
        );
        assert!(
            !new.iter().any(|&fd| describe(fd) == "/dev/null"),
            "the /dev/null child end is not kept"
        );
        for fd in &new {
            let (nonblocking, cloexec) = fd_flags(*fd);
            assert!(cloexec, "fd {fd} ({}) is close-on-exec", describe(*fd));
            if pipes.contains(fd) {
                assert!(nonblocking, "pipe fd {fd} is non-blocking");
            }
        }
        let out = run_to_end(&mut child).await;
        assert!(out.status().success());
        drop(child);
        assert_fds_back_to(
            &before,
            "after the child ended and the transport was dropped",
        );
        assert_eq!(zombie_children(), Vec::<i32>::new());
    });
}

#[test]
fn many_successful_spawns_leak_no_fd_and_no_zombie() {
    serial(|| async {
        let before = open_fds();
        for i in 0..30 {
            let mut child = Command::new("sh")
                .args(["-c", "echo $1; echo $1 >&2; exit $1", "sh"])
                .arg((i % 3).to_string())
                .fd(7, ChildFd::ParentReads)
                .spawn()
                .unwrap();
            let out = run_to_end(&mut child).await;
            assert_eq!(out.status().code(), Some(i % 3));
        }
        // Dropped without being consumed, one still running.
        let quick = Command::new("true").spawn().unwrap();
        let slow = Command::new("sleep").arg("0.3").spawn().unwrap();
        let slow_pid = slow.pid().unwrap();
        drop((quick, slow));
        common::assert_reaped_eventually(slow_pid).await;
        assert_fds_back_to(&before, "after 32 spawns");
        assert_eq!(zombie_children(), Vec::<i32>::new());
    });
}

#[test]
fn once_wait_returns_the_crate_holds_no_fd_of_the_child() {
    // On a multi-thread runtime, `block_on` hears the exit from the reaper thread, which
    // closes the child's pidfd: before it publishes the exit, so a caller counting its fds
    // right after `wait()` finds them all gone (the pidfd used to close a moment after).
    common::serially(&mut tokio::runtime::Builder::new_multi_thread(), async {
        Command::new("true").spawn().unwrap().wait().await.unwrap();
        let before = open_fds();
        for stdio in [ChildFd::Null, ChildFd::ParentReads] {
            for _ in 0..100 {
                let mut child = Command::new("true")
                    .fds([(0, ChildFd::Null), (1, stdio.clone()), (2, ChildFd::Null)])
                    .spawn()
                    .unwrap();
                assert!(child.wait().await.unwrap().success());
                drop(child);
                assert_eq!(
                    open_fds(),
                    before,
                    "an fd outlived wait() and the transport"
                );
            }
        }
    });
}
