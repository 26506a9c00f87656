//! Running one test of the current test binary again in a fresh process, optionally under a
//! wrapper command (`perf stat`, `setpriv`, ...), for tests that change process-wide state
//! (rlimits, signal dispositions), may abort, or need their process counted from outside.

use std::process::{Command, Output, Stdio};

/// Set to the test's name in the inner run's environment.
pub const INNER_ENV: &str = "PROCESS_TRANSPORT_RERUN";

/// Whether this process is the re-run of `test`.
pub fn is_inner(test: &str) -> bool {
    std::env::var(INNER_ENV).is_ok_and(|v| v == test)
}

/// Whether to go on with `test` in this process: `true` in its re-run; otherwise it is run
/// again in a fresh process (see [`rerun`], which asserts that it passed there) and `false`.
pub fn in_own_process(test: &str) -> bool {
    if is_inner(test) {
        return true;
    }
    rerun(test, &[]);
    false
}

/// Runs `test` (its full path, as `--exact` wants it) of this test binary again under
/// `wrapper` (a command prefix, may be empty), prints the inner output, and asserts that
/// exactly that test ran there and passed. Returns the inner run's output.
pub fn rerun(test: &str, wrapper: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("the current test binary");
    let (program, prefix) = match wrapper.split_first() {
        Some((program, rest)) => (std::ffi::OsString::from(program), rest),
        None => (exe.clone().into_os_string(), &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(prefix);
    if !wrapper.is_empty() {
        cmd.arg(&exe);
    }
    let output = cmd
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, test)
        .stdin(Stdio::null())
        .output()
        .expect("running the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {test} (re-run): stdout ---\n{stdout}");
    eprintln!("--- {test} (re-run): stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "{test} failed when re-run: {}",
        output.status
    );
    // The test's own output (`--nocapture`) can come between its name and the "ok", so the
    // name and the one-test result are checked apart.
    assert!(
        stdout.contains(&format!("test {test} ... "))
            && stdout.contains("test result: ok. 1 passed"),
        "{test} did not run when re-run (is the name its full path?)"
    );
    output
}

/// Runs `test` again under `perf stat` and returns how many times it entered the named
/// `syscalls` (`"waitid"`, `"epoll_ctl"`, ...), summed; `None` (after a loud note) where perf
/// or its syscall tracepoints are missing. Counted by the kernel, not timed: steady on a
/// noisy machine.
pub fn syscalls_of(test: &str, syscalls: &[&str]) -> Option<u64> {
    let events = syscalls
        .iter()
        .map(|name| format!("syscalls:sys_enter_{name}"))
        .collect::<Vec<_>>()
        .join(",");
    let probe = Command::new("perf")
        .args(["stat", "-e", &events, "--", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        super::skipped(test, "perf with syscall tracepoints is not available");
        return None;
    }
    let out = rerun(test, &["perf", "stat", "-x,", "-e", &events, "--"]);
    let count = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("sys_enter_"))
        .map(|l| l.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    Some(count)
}
