//! The child's fd table when the parent holds a high fd: the kernel copies only the bottom of
//! the parent's table into the child (clone with `CLONE_FILES`, then an unshare that keeps
//! the fds below the child's highest source), on every path, while each child still gets
//! exactly its mapped fds, also under concurrent spawns.
//!
//! The observable is `FDSize` in `/proc/<pid>/status`: the size of the child's fd table. A
//! copied table is sized to hold the parent's highest fd and keeps that size after the child
//! closes what it does not need, so a child that ever had a copy of fd `HIGH` shows
//! `FDSize > HIGH`. With `PROCESS_TRANSPORT_FD_TABLE=copy` (the old path, forced) the tests
//! check that the whole table is copied instead.
//!
//! Holding a high fd changes every spawn of the process, so these tests have a binary of
//! their own.

mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use process_transport::{ChildFd, Command, PtySize, cgroup2_mount};

use common::{cloexec_pipe, fd_report_script, identity, parse_fd_report, set_nofile_soft};

/// The fd number the parent holds, far above anything a child needs.
const HIGH: i32 = 12_000;

/// Whether this run forces the old path (a full copy of the table).
fn forced_copy() -> bool {
    std::env::var_os("PROCESS_TRANSPORT_FD_TABLE").is_some_and(|v| v == "copy")
}

/// A copy of a fresh pipe end at fd `HIGH` (the pipe's other end is dropped).
fn hold_high_fd() -> OwnedFd {
    assert!(
        set_nofile_soft(HIGH as u64 + 100) > HIGH as u64,
        "RLIMIT_NOFILE's hard limit is below {HIGH}"
    );
    let (read, _write) = cloexec_pipe();
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the result is checked.
    let high = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH) };
    assert!(
        high >= HIGH,
        "F_DUPFD_CLOEXEC: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(high) }
}

/// The `FDSize` line of `/proc/<pid>/status`.
fn fd_table_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .unwrap_or_else(|| panic!("no FDSize in /proc/{pid}/status"))
        .trim()
        .parse()
        .unwrap()
}

/// Whether `pid` runs `cat` already (it has exec'd).
fn runs_cat(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "cat")
}

#[test]
fn a_child_never_gets_a_copy_of_the_parents_high_fds_on_any_path() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _high = hold_high_fd();
    let mut paths: Vec<(&str, Command)> = Vec::new();
    let pipes = Command::new("cat");
    paths.push(("3 pipes", pipes.clone()));
    let mut extra = pipes.clone();
    extra
        .fd(3, ChildFd::ParentReads)
        .fd(7, ChildFd::ParentWrites);
    paths.push(("3 pipes + fds 3,7", extra));
    let mut high_target = pipes.clone();
    high_target.fd(40, ChildFd::Null);
    paths.push(("3 pipes + fd 40", high_target));
    let mut inherited = pipes.clone();
    inherited.fd(5, ChildFd::Inherit(_high.as_raw_fd()));
    paths.push(("an inherited high fd at 5", inherited));
    if common::is_root() {
        let mut ids = pipes.clone();
        ids.uid(65534).gid(65534);
        paths.push(("3 pipes + uid/gid", ids));
    }
    let mut pty = pipes.clone();
    pty.pty(PtySize { rows: 24, cols: 80 });
    paths.push(("pty", pty));
    // The cgroup directory is one more fd the child reads (to be created in the cgroup, or
    // to move itself there), opened at each spawn: above the high fd.
    let cgroup = cgroup2_mount()
        .map(|mount| mount.join(format!("pt-fd-table-{}", std::process::id())))
        .filter(|dir| std::fs::create_dir(dir).is_ok());
    match &cgroup {
        Some(dir) => {
            let mut in_cgroup = pipes.clone();
            in_cgroup.cgroup(dir);
            paths.push(("3 pipes in a cgroup", in_cgroup));
        }
        None => eprintln!("no writable cgroup v2 mount: the cgroup path is not checked"),
    }

    for (path, command) in paths {
        rt.block_on(async {
            let mut child = command.spawn().unwrap();
            let pid = child.spawned_pid();
            assert!(
                common::wait_until(Duration::from_secs(30), || runs_cat(pid)),
                "{path}: the child did not exec cat"
            );
            let size = fd_table_size(pid);
            if forced_copy() {
                assert!(
                    size > HIGH as u64,
                    "{path}: FDSize {size}, a copy must hold fd {HIGH}"
                );
            } else {
                assert!(
                    size < HIGH as u64,
                    "{path}: FDSize {size}: the child had fd {HIGH}"
                );
            }
            common::within(path, child.kill()).await.unwrap();
        });
    }
    if let Some(dir) = cgroup {
        std::fs::remove_dir(dir).unwrap();
    }
}

#[test]
fn concurrent_spawns_each_get_exactly_their_own_fds() {
    let _high = hold_high_fd();
    let threads: Vec<_> = (0..6)
        .map(|thread| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                for round in 0..4 {
                    // A pipe of this spawn's own, inherited at child fd 5.
                    let (read, write) = cloexec_pipe();
                    let mut command = Command::new("python3");
                    command
                        .args(["-c", &fd_report_script(3)])
                        .fd(3, ChildFd::ParentReads)
                        .fd(5, ChildFd::Inherit(write.as_raw_fd()))
                        .fd(6, ChildFd::Inherit(read.as_raw_fd()));
                    let output = rt.block_on(command.output()).unwrap();
                    assert!(output.status.success(), "thread {thread} round {round}");
                    let report = parse_fd_report(output.fd(3));
                    let fds: Vec<i32> = report.keys().copied().collect();
                    assert_eq!(fds, [0, 1, 2, 3, 5, 6], "thread {thread} round {round}");
                    let expected: BTreeMap<i32, (u64, u64)> = [
                        (5, identity(write.as_raw_fd())),
                        (6, identity(read.as_raw_fd())),
                    ]
                    .into();
                    for (fd, id) in expected {
                        assert_eq!(report[&fd], id, "thread {thread} round {round}: fd {fd}");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_spawn_with_more_sources_than_slots_still_gets_every_fd() {
    let _high = hold_high_fd();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut command = Command::new("python3");
    command.args(["-c", &fd_report_script(3)]);
    command.fd(3, ChildFd::ParentReads);
    for fd in 10..30 {
        command.fd(fd, ChildFd::ParentWrites);
    }
    let output = rt.block_on(command.output()).unwrap();
    assert!(output.status.success());
    let fds: Vec<i32> = parse_fd_report(output.fd(3)).keys().copied().collect();
    let expected: Vec<i32> = [0, 1, 2, 3].into_iter().chain(10..30).collect();
    assert_eq!(fds, expected);
}
