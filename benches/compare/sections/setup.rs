//! What the child setup options add to a spawn: spawn + wait `/bin/true` (null stdio) plain,
//! and with umask + two rlimits + no_new_privs, `2>&1`, an owned fd, joining an existing
//! cgroup and a transient cgroup (the last two where cgroup v2 is writable), each taking turns
//! with the plain spawn (the floor column: its ratio is the option's cost). No peer has
//! these steps without `pre_exec` (and so `fork`).

use std::path::PathBuf;

use process_transport::{ChildFd, Command, cgroup2_mount};
use tokio::runtime::Runtime;

use crate::Config;
use crate::harness::{Role, contender, micros};
use crate::report::Report;

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== child setup options");
    let scratch = scratch_cgroup();
    let plain = base();
    let once = |cmd: &Command| {
        micros(|| {
            rt.block_on(async {
                let mut child = cmd.spawn().expect("spawn");
                assert!(child.wait().await.expect("wait").success());
                // A transient cgroup goes in the background: not this spawn's cost, but not
                // the next one's either.
                while child.cgroup_path().is_some() {
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
            })
        })
    };
    for (name, cmd) in variants(scratch.as_ref()) {
        // The same spawn without the option takes turns with it, as the floor column.
        let contenders = vec![
            contender(Role::Ours, "process-transport", || once(&cmd)),
            contender(Role::Floor, "the same, plain", || once(&plain)),
        ];
        let scenario = format!("setup: spawn+wait /bin/true, {name}");
        report.race(&scenario, "µs", false, cfg.spawn, contenders);
    }
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir(dir.join("join"));
        let _ = std::fs::remove_dir(&dir);
    }
}

fn base() -> Command {
    let mut command = Command::new("/bin/true");
    command.fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)]);
    command
}

fn variants(cgroups: Option<&PathBuf>) -> Vec<(&'static str, Command)> {
    let mut setup = base();
    setup
        .umask(0o077)
        .rlimit(libc::RLIMIT_NOFILE, 256, 256)
        .rlimit(libc::RLIMIT_CORE, 0, 0)
        .no_new_privs(true);
    let mut shared = base();
    shared.fd(2, ChildFd::SameAs(1));
    let mut owned = base();
    owned.fd(
        3,
        ChildFd::owned(std::fs::File::open("/dev/null").expect("/dev/null")),
    );
    let mut all = vec![
        ("umask + 2 rlimits + no_new_privs", setup),
        ("2>&1 (SameAs)", shared),
        ("an owned fd at 3", owned),
    ];
    if let Some(dir) = cgroups {
        let join = dir.join("join");
        if std::fs::create_dir(&join).is_ok() {
            let mut joined = base();
            joined.cgroup(&join);
            all.push(("cgroup (join an existing one)", joined));
        }
        let mut transient = base();
        transient.transient_cgroup(dir);
        all.push(("transient_cgroup (mkdir, join, rmdir)", transient));
    } else {
        eprintln!("  cgroup v2 not writable here: the cgroup rows are left out");
    }
    all
}

/// A cgroup v2 directory for this run, if cgroup v2 is writable here.
fn scratch_cgroup() -> Option<PathBuf> {
    let dir = cgroup2_mount()?.join(format!("pt-bench-setup-{}", std::process::id()));
    std::fs::create_dir(&dir).ok()?;
    Some(dir)
}
