//! The spawn path where the parent's state is unusual: spawning from a thread-local
//! destructor, supplementary groups under a non-root parent with capabilities or inside a user
//! namespace, and signals the parent ignores.
//!
//! Each of these needs a process of its own (an abort must not take the whole binary down; a
//! changed credential or signal disposition must not leak into other tests), so each test re-runs
//! this test binary with only itself selected (see `common::rerun`), sometimes under `unshare`
//! or `setpriv`. The inner run does the work and asserts; the outer run checks that the inner
//! one ran that one test and passed.

mod common;

use std::cell::RefCell;
use std::sync::Mutex;

use process_transport::{ChildFd, Command, SpawnError};

use common::rerun::{in_own_process, is_inner, rerun};
use common::{child_status, ids, own_status, signal_bit, signal_mask};

/// Whether `tool` is on the PATH; prints a loud notice when it is not.
fn have_tool(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        eprintln!("!!!!! SKIPPED {test}: `{tool}` is not installed (util-linux) !!!!!");
    }
    found
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
            Ok::<_, Box<dyn std::error::Error>>(child.await?.success())
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
    if !in_own_process(NAME) {
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

// ----- supplementary groups ------------------------------------------------------------------

/// A spawn that must fail at `setgroups` with `errno`, leaving no fd and no zombie behind.
fn assert_groups_refused(cmd: &mut Command, errno: i32) {
    let before = common::open_fds();
    match cmd.stdin(ChildFd::Null).spawn() {
        Err(SpawnError::Spawn { step, source, .. }) => {
            assert_eq!(step, process_transport::SpawnStep::SetGroups);
            assert_eq!(source.raw_os_error(), Some(errno), "{source}");
        }
        other => panic!("expected a SetGroups error, got {other:?}"),
    }
    common::assert_nothing_leaked(&before);
}

#[tokio::test]
async fn explicit_groups_are_set_and_a_uid_or_gid_change_clears_the_inherited_ones() {
    const NAME: &str = "explicit_groups_are_set_and_a_uid_or_gid_change_clears_the_inherited_ones";
    if !common::is_root() {
        eprintln!("!!!!! SKIPPED {NAME}: needs root !!!!!");
        return;
    }
    if !in_own_process(NAME) {
        return;
    }
    let extra: [libc::gid_t; 2] = [4242, 4243];
    // SAFETY: setgroups with a valid array; this process runs only this test.
    assert_eq!(unsafe { libc::setgroups(extra.len(), extra.as_ptr()) }, 0);

    let plain = child_status(&mut Command::new("/bin/cat")).await;
    assert_eq!(ids(&plain["Groups"]), [4242, 4243], "inherited by default");

    let explicit = child_status(Command::new("/bin/cat").groups(&[7, 8, 9])).await;
    assert_eq!(ids(&explicit["Groups"]), [7, 8, 9]);
    assert_eq!(ids(&explicit["Uid"]), [0; 4], "groups alone keep the uid");

    let dropped = child_status(Command::new("/bin/cat").uid(65534).gid(65533)).await;
    assert_eq!(dropped["Groups"], "", "groups survived");
    assert_eq!(ids(&dropped["Gid"]), [65533; 4]);

    let gid_only = child_status(Command::new("/bin/cat").gid(65533)).await;
    assert_eq!(gid_only["Groups"], "", "groups survived");

    let both = child_status(Command::new("/bin/cat").groups(&[7]).uid(65534).gid(65533)).await;
    assert_eq!(
        ids(&both["Groups"]),
        [7],
        "an explicit list wins over clearing"
    );
    assert_eq!(ids(&both["Uid"]), [65534; 4]);

    let empty = child_status(Command::new("/bin/cat").groups(&[])).await;
    assert_eq!(empty["Groups"], "", "an explicit empty list clears");

    // The kernel refuses the gid -1; an explicit list that cannot be set is an error.
    assert_groups_refused(
        Command::new("/bin/true").groups(&[7, u32::MAX]),
        libc::EINVAL,
    );
}

#[test]
fn uid_and_gid_clear_the_groups_of_a_parent_that_is_not_root_but_has_cap_setgid() {
    const NAME: &str =
        "uid_and_gid_clear_the_groups_of_a_parent_that_is_not_root_but_has_cap_setgid";
    if !is_inner(NAME) {
        if !common::is_root() {
            eprintln!("!!!!! SKIPPED {NAME}: needs root to start a capable non-root parent !!!!!");
            return;
        }
        if have_tool("setpriv", NAME) {
            let caps = "+setuid,+setgid";
            rerun(
                NAME,
                &[
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--groups=4242,4243",
                    &format!("--inh-caps={caps}"),
                    &format!("--ambient-caps={caps}"),
                ],
            );
        }
        return;
    }
    let me = own_status();
    assert_eq!(ids(&me["Uid"]), [65534; 4], "{}", me["Uid"]);
    assert_eq!(ids(&me["Groups"]), [4242, 4243], "{}", me["Groups"]);
    let cap_eff = u64::from_str_radix(&me["CapEff"], 16).unwrap();
    // CAP_SETGID is capability 6, CAP_SETUID 7 (linux/capability.h).
    let wanted = (1 << 6) | (1 << 7);
    assert_eq!(cap_eff & wanted, wanted, "{}", me["CapEff"]);

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let plain = child_status(&mut Command::new("/bin/cat")).await;
            assert_eq!(ids(&plain["Groups"]), [4242, 4243], "inherited by default");

            let dropped = child_status(Command::new("/bin/cat").uid(65533).gid(65533)).await;
            assert_eq!(dropped["Groups"], "", "groups leaked");
            assert_eq!(ids(&dropped["Uid"]), [65533; 4]);
            assert_eq!(ids(&dropped["Gid"]), [65533; 4]);

            let uid_only = child_status(Command::new("/bin/cat").uid(65533)).await;
            assert_eq!(uid_only["Groups"], "", "groups leaked");

            let explicit = child_status(Command::new("/bin/cat").groups(&[99]).uid(65533)).await;
            assert_eq!(ids(&explicit["Groups"]), [99]);
        });
}

#[test]
fn uid_and_gid_spawn_succeeds_where_setgroups_is_denied() {
    const NAME: &str = "uid_and_gid_spawn_succeeds_where_setgroups_is_denied";
    if !is_inner(NAME) {
        if !have_tool("unshare", NAME) {
            return;
        }
        let probe = std::process::Command::new("unshare")
            .args(["-U", "-r", "true"])
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            eprintln!("!!!!! SKIPPED {NAME}: `unshare -U -r` is not permitted here !!!!!");
            return;
        }
        rerun(NAME, &["unshare", "-U", "-r"]);
        return;
    }
    // Root of a user namespace whose setgroups is denied (as `unshare -r` leaves it).
    let setgroups = std::fs::read_to_string("/proc/self/setgroups").unwrap();
    assert_eq!(setgroups.trim(), "deny");
    assert!(common::is_root());

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let child = child_status(Command::new("/bin/cat").uid(0).gid(0)).await;
            assert_eq!(ids(&child["Uid"]), [0; 4]);
            assert_eq!(ids(&child["Gid"]), [0; 4]);

            // An explicit list is not optional: refused here, it fails the spawn.
            assert_groups_refused(Command::new("/bin/true").groups(&[0]), libc::EPERM);
        });
}

// ----- signal dispositions -------------------------------------------------------------------

extern "C" fn do_nothing(_: libc::c_int) {}

#[test]
fn ignored_signals_are_reset_by_default_and_kept_on_request() {
    const NAME: &str = "ignored_signals_are_reset_by_default_and_kept_on_request";
    if !in_own_process(NAME) {
        return;
    }
    // As a nohup-style supervisor would: some signals ignored (SIGPIPE already is, by Rust's
    // runtime), one with a handler. This process runs only this test.
    let realtime = 40;
    // SAFETY: process-wide dispositions of standard and real-time signals; the handler does
    // nothing.
    unsafe {
        for sig in [libc::SIGHUP, libc::SIGUSR2, realtime] {
            assert_ne!(libc::signal(sig, libc::SIG_IGN), libc::SIG_ERR);
        }
        let handler = do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        assert_ne!(libc::signal(libc::SIGUSR1, handler), libc::SIG_ERR);
    }
    let me = own_status();
    // More may be ignored: glibc's posix_spawn, which started this process, leaves its
    // internal signal 32 ignored in the children it makes.
    let ignored = signal_mask(&me, "SigIgn");
    let set_here = signal_bit(libc::SIGHUP)
        | signal_bit(libc::SIGUSR2)
        | signal_bit(realtime)
        | signal_bit(libc::SIGPIPE);
    assert_eq!(ignored & set_here, set_here, "{}", me["SigIgn"]);
    assert_ne!(signal_mask(&me, "SigCgt") & signal_bit(libc::SIGUSR1), 0);

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let default = child_status(&mut Command::new("/bin/cat")).await;
            assert_eq!(
                signal_mask(&default, "SigIgn"),
                0,
                "by default every ignored signal is reset: {}",
                default["SigIgn"]
            );
            let reset = child_status(Command::new("/bin/cat").keep_ignored_signals(false)).await;
            assert_eq!(signal_mask(&reset, "SigIgn"), 0, "{}", reset["SigIgn"]);

            let kept = child_status(Command::new("/bin/cat").keep_ignored_signals(true)).await;
            assert_eq!(
                signal_mask(&kept, "SigIgn"),
                ignored & !signal_bit(libc::SIGPIPE),
                "ignored signals stay ignored, but not SIGPIPE (Rust's runtime ignored it, not \
                 the caller) nor the handled SIGUSR1: {}",
                kept["SigIgn"]
            );
            assert_eq!(signal_mask(&kept, "SigBlk"), 0, "{}", kept["SigBlk"]);
        });
}
