//! Running one test inside a fresh pid namespace, where pid numbers can be steered, so a test
//! can force a pid to be reused by a process of its choosing.
//!
//! ```ignore
//! #[test]
//! fn my_test() {
//!     if !pidns::enter("my_test") {
//!         return; // ran (and passed) inside a namespace, or skipped loudly
//!     }
//!     // Here this process is pid 1 of a new pid namespace with its own /proc.
//!     pidns::set_next_pid(500);
//!     let child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
//!     assert_eq!(child.id(), 500);
//! }
//! ```
//!
//! The test binary is run again under `unshare -p -f --mount-proc`, with `--exact <name>` and
//! one test thread, and [`INSIDE_ENV`] set so the inner run knows where it is. When the inner
//! run ends, the kernel kills whatever it left in the namespace.
//!
//! This file stands alone (no `super::`): the library's own unit tests include it by path.

#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Set (to `1`) in the environment of the inner run.
pub const INSIDE_ENV: &str = "PROCESS_TRANSPORT_IN_PID_NAMESPACE";

/// Whether this process is the inner run, inside the namespace [`enter`] made.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some_and(|v| v == "1")
}

/// Returns `true` when the caller is inside a fresh pid namespace and should run its body.
///
/// Outside, it runs test `name` (its full path in this test binary, as `--exact` wants it)
/// of the current binary inside a new pid namespace, prints the inner output, asserts that
/// exactly that test ran and passed there, and returns `false`. If no namespace can be made
/// (no `unshare`, no privilege), it prints a loud SKIPPED line and returns `false`.
pub fn enter(name: &str) -> bool {
    if inside() {
        return true;
    }
    if let Err(why) = namespaces_work() {
        // Straight to stderr, past the harness's capture (as `common::skipped`; this file is
        // also compiled on its own, without `common`).
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {name}: cannot create a pid namespace ({why}); this test needs root \
             and util-linux `unshare` ***\n"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("the current test binary");
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {name} inside a pid namespace: stdout ---\n{stdout}");
    eprintln!("--- {name} inside a pid namespace: stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "{name} failed inside the pid namespace: {}",
        output.status
    );
    // `--exact` with a wrong name runs nothing and still succeeds.
    assert!(
        stdout.contains(&format!("test {name} ... ok")) && stdout.contains("1 passed"),
        "{name} did not run inside the pid namespace (is the name its full path?)"
    );
    false
}

/// Makes the next process (or thread) created in this pid namespace get pid `pid`, by writing
/// `pid - 1` to `/proc/sys/kernel/ns_last_pid`. Only inside [`enter`]'s namespace. Any thread
/// or process created in between takes the number instead, so check the pid you got.
pub fn set_next_pid(pid: i32) {
    assert!(inside(), "set_next_pid outside a pid namespace of ours");
    assert!(pid > 1, "pid {pid} cannot be allocated next");
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("writing /proc/sys/kernel/ns_last_pid");
}

/// Whether `unshare` can make a pid namespace with its own /proc here.
fn namespaces_work() -> Result<(), String> {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&probe.stderr).trim().to_owned())
    }
}
