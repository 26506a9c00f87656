//! The shared test helpers check what they claim to: the recorder rejects event sequences
//! that break the ordering guarantees, the /proc readers parse this very process correctly
//! (a command name with spaces and parentheses included), and a re-run passes only when the
//! re-run test really ran and passed.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use process_transport::{ChildFd, CloseReason, Command};

use common::rerun::{is_inner, rerun};
use common::{
    Outcome, Rec, collect, describe_close, ids, own_status, run_to_end, scratch_dir, sh,
    signal_bit, signal_mask, stat,
};

/// Whether `check` panics on `outcome`.
fn rejects(outcome: &Outcome, check: impl Fn(&Outcome)) -> bool {
    catch_unwind(AssertUnwindSafe(|| check(outcome))).is_err()
}

/// A real, well-ordered recording of a child that writes a line and exits 3.
async fn a_real_outcome() -> Outcome {
    let mut child = sh("echo hi; exit 3").stdin(ChildFd::Null).spawn().unwrap();
    let out = run_to_end(&mut child).await;
    out.assert_well_ordered(&[1, 2]);
    assert_eq!(out.status().code(), Some(3));
    assert_eq!(out.text(1), "hi\n");
    out
}

#[tokio::test]
async fn the_recorder_status_needs_one_exited_one_ended_and_ended_last() {
    let out = a_real_outcome().await;
    let exited = out
        .log
        .iter()
        .position(|r| matches!(r, Rec::Exited(_)))
        .unwrap();

    let mut twice = out.clone();
    twice.log.insert(exited, out.log[exited].clone());
    assert!(rejects(&twice, |o| {
        o.status();
    }));

    let mut never = out.clone();
    never.log.remove(exited);
    assert!(rejects(&never, |o| {
        o.status();
    }));

    let mut not_last = out.clone();
    not_last.log.push(Rec::Data(1, 1));
    assert!(rejects(&not_last, |o| {
        o.status();
    }));

    let mut no_end = out.clone();
    no_end.log.pop();
    assert!(rejects(&no_end, |o| {
        o.status();
    }));
}

#[tokio::test]
async fn the_recorder_ordering_check_catches_each_broken_guarantee() {
    let out = a_real_outcome().await;
    let closed_1 = out
        .log
        .iter()
        .position(|r| matches!(r, Rec::Closed(1, _)))
        .unwrap();

    let mut data_after_close = out.clone();
    data_after_close.log.insert(closed_1 + 1, Rec::Data(1, 3));
    assert!(rejects(&data_after_close, |o| o.assert_well_ordered(&[1, 2])));

    let mut closed_twice = out.clone();
    closed_twice
        .log
        .insert(closed_1 + 1, out.log[closed_1].clone());
    assert!(rejects(&closed_twice, |o| o.assert_well_ordered(&[1, 2])));

    let mut empty_data = out.clone();
    empty_data.log.insert(0, Rec::Data(1, 0));
    assert!(rejects(&empty_data, |o| o.assert_well_ordered(&[1, 2])));

    // A pipe that never closed, and a close of an fd that is no pipe.
    assert!(rejects(&out, |o| o.assert_well_ordered(&[1, 2, 3])));
    assert!(rejects(&out, |o| o.assert_well_ordered(&[2])));
}

#[tokio::test]
#[should_panic(expected = "did not end within")]
async fn collecting_a_transport_that_does_not_end_fails_at_the_limit() {
    let mut child = Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    collect(&mut child, Duration::from_millis(200)).await;
}

#[test]
fn close_reasons_are_described_by_variant_and_errno() {
    assert_eq!(describe_close(&CloseReason::Eof), "Eof");
    assert_eq!(describe_close(&CloseReason::Closed), "Closed");
    assert_eq!(describe_close(&CloseReason::WaitDelay), "WaitDelay");
    let epipe = CloseReason::Error(Arc::new(std::io::Error::from_raw_os_error(libc::EPIPE)));
    assert_eq!(
        describe_close(&epipe),
        format!("Error(Some({}))", libc::EPIPE)
    );
}

#[test]
fn stat_reads_this_process() {
    // SAFETY: plain getters without preconditions.
    let (tid, ppid, pgrp, sid) = unsafe {
        (
            libc::gettid(),
            libc::getppid(),
            libc::getpgrp(),
            libc::getsid(0),
        )
    };
    // This thread's entry: the main thread only waits for the test threads.
    let me = stat(tid).expect("this thread is in /proc");
    assert_eq!(me.state, 'R', "reading its own stat, this thread runs");
    assert_eq!((me.ppid, me.pgrp, me.session), (ppid, pgrp, sid));
    assert!(me.start_time > 0);
    assert!(me.is_alive());
}

#[tokio::test]
async fn stat_reads_a_process_whose_name_has_spaces_and_parentheses() {
    let dir = scratch_dir("stat-comm");
    let program = dir.join(") S 1 (x");
    std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
    let mut child = Command::new(&program)
        .arg("30")
        .stdin(ChildFd::Null)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    let s = stat(pid).expect("the child is alive");
    assert_eq!(s.ppid, std::process::id() as i32, "{s:?}");
    assert_ne!(s.state, 'Z', "{s:?}");
    assert_eq!(common::comm(pid).as_deref(), Some(") S 1 (x"));
    child.kill().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(stat(pid), None, "gone once reaped");
}

#[test]
fn the_status_reader_reads_this_process() {
    let status = own_status();
    assert_eq!(status["Pid"], std::process::id().to_string());
    // SAFETY: plain getter.
    let uid = unsafe { libc::getuid() };
    assert_eq!(ids(&status["Uid"])[0], uid);
    // Rust's runtime ignores SIGPIPE in every test binary.
    assert_ne!(
        signal_mask(&status, "SigIgn") & signal_bit(libc::SIGPIPE),
        0
    );
}

const PRINTING: &str = "rerun_passes_a_test_that_prints_while_it_runs";

#[test]
fn rerun_passes_a_test_that_prints_while_it_runs() {
    if is_inner(PRINTING) {
        println!("output of the re-run test, between its name and its result");
        return;
    }
    let output = rerun(PRINTING, &[]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("output of the re-run test"),
        "the inner run is the one that printed"
    );
}

#[test]
fn rerun_fails_when_the_test_does_not_run_or_fails() {
    if is_inner("rerun_fails_when_the_test_does_not_run_or_fails") {
        panic!("the re-run fails on purpose");
    }
    assert!(catch_unwind(|| rerun("no_test_has_this_name", &[])).is_err());
    assert!(
        catch_unwind(|| rerun("rerun_fails_when_the_test_does_not_run_or_fails", &[])).is_err()
    );
}
