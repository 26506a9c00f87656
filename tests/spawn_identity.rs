//! The spawn path where the parent's state is unusual: spawning from a thread-local
//! destructor, supplementary groups under a non-root parent with capabilities or inside a user
//! namespace, and signals the parent ignores.
//!
//! Each of these needs a process of its own (an abort must not take the whole binary down; a
//! changed credential or signal disposition must not leak into other tests), so each test re-runs
//! this test binary with only itself selected and `PT_IDENTITY_INNER` naming it, sometimes
//! under `unshare` or `setpriv`. The inner run does the work and asserts; the outer run checks
//! that the inner one ran that one test and passed.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use process_transport::{ChildFd, Command, Error};

use common::collect;

const INNER: &str = "PT_IDENTITY_INNER";
const LIMIT: Duration = Duration::from_secs(30);

/// Whether this process is the re-run of `test`.
fn is_inner(test: &str) -> bool {
    std::env::var(INNER).is_ok_and(|v| v == test)
}

/// Runs this test binary again under `wrapper` (a command prefix, may be empty) with only
/// `test` selected, and checks the inner run passed exactly that test.
fn rerun(test: &str, wrapper: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
    argv.push(exe.into());
    argv.extend(
        [test, "--exact", "--nocapture", "--test-threads=1"]
            .iter()
            .map(Into::into),
    );
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env(INNER, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "inner run of {test} under {wrapper:?} failed: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    print!("{stdout}");
    output
}

/// Whether `tool` is on the PATH; prints a loud notice when it is not.
fn have_tool(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
    });
    if !found {
        eprintln!("!!!!! SKIPPED {test}: `{tool}` is not installed (util-linux) !!!!!");
    }
    found
}

/// The child's /proc/self/status as `field -> value`.
async fn child_status(cmd: &mut Command) -> BTreeMap<String, String> {
    let mut child = cmd
        .arg("/proc/self/status")
        .stdin(ChildFd::Null)
        .spawn()
        .unwrap();
    let outcome = collect(&mut child, LIMIT).await;
    assert!(outcome.status().success(), "{outcome:?}");
    parse_status(&String::from_utf8(outcome.out(1).to_vec()).unwrap())
}

fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn own_status() -> BTreeMap<String, String> {
    parse_status(&std::fs::read_to_string("/proc/self/status").unwrap())
}

fn ids(value: &str) -> Vec<u32> {
    value
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

// ----- spawning from a thread-local destructor ---------------------------------------------

/// What each destructor's spawn came to, by name.
static TLS_OUTCOMES: Mutex<Vec<(&str, Result<bool, String>)>> = Mutex::new(Vec::new());

/// Spawns `true` when dropped, which happens during the thread's TLS teardown.
struct SpawnOnDrop {
    name: &'static str,
    /// Build a runtime first (Tokio's own context must still exist for that).
    with_runtime: bool,
}

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        let spawn_and_wait = async {
            let child = Command::new("true").stdin(ChildFd::Null).spawn()?;
            Ok::<_, Error>(child.await?.success())
        };
        let outcome = if self.with_runtime {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(spawn_and_wait)
        } else {
            // No runtime can be entered here; a typed error is the only right answer.
            futures::executor::block_on(spawn_and_wait)
        };
        TLS_OUTCOMES
            .lock()
            .unwrap()
            .push((self.name, outcome.map_err(|e| format!("{e:?}"))));
    }
}

thread_local! {
    static FIRST: RefCell<Option<SpawnOnDrop>> = const { RefCell::new(None) };
    static SECOND: RefCell<Option<SpawnOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn spawning_from_a_thread_local_destructor_does_not_abort() {
    const NAME: &str = "spawning_from_a_thread_local_destructor_does_not_abort";
    if !is_inner(NAME) {
        rerun(NAME, &[]);
        return;
    }
    // Thread-local destructors run in reverse order of first use. FIRST is used before
    // Tokio's context, so it runs after that is gone; SECOND is used after Tokio's context but
    // before the crate's first spawn on this thread, so it runs after the crate's per-thread
    // state is gone but with Tokio still usable.
    std::thread::spawn(|| {
        FIRST.with(|s| {
            *s.borrow_mut() = Some(SpawnOnDrop {
                name: "first",
                with_runtime: false,
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {});
        SECOND.with(|s| {
            *s.borrow_mut() = Some(SpawnOnDrop {
                name: "second",
                with_runtime: true,
            })
        });
        let status = rt.block_on(async { Command::new("true").spawn().unwrap().await });
        assert!(status.unwrap().success());
    })
    .join()
    .unwrap();

    let outcomes = TLS_OUTCOMES.lock().unwrap().clone();
    println!("spawns from TLS destructors: {outcomes:?}");
    assert_eq!(
        outcomes,
        [
            ("second", Ok(true)),
            ("first", Err("NoRuntime".to_string()))
        ]
    );
}
