//! Spawn cost against the parent's open-fd count: spawn + wait `/bin/true` with a few fds
//! open, then again with thousands more (a service holding many connections), on each of our
//! paths (pipes, extra fds, uid/gid, pty) and for Tokio, std and `posix_spawn`. The note on
//! each many-fds row is our many/few ratio (the target is at most 1.2).

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use process_transport::{ChildFd, PtySize};
use tokio::runtime::Runtime;

use crate::Config;
use crate::common::is_root;
use crate::harness::{Role, contender, micros};
use crate::raw;
use crate::report::Report;

const TRUE: [&CStr; 1] = [c"/bin/true"];
const NOBODY: u32 = 65534;

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== spawn + wait with many parent fds open");
    scenarios(rt, cfg, report, "few parent fds");
    let held = hold_fds(cfg.many_fds);
    let many = format!("{} parent fds", cfg.many_fds);
    scenarios(rt, cfg, report, &many);
    drop(held);
    for path in paths() {
        let few = report.find(&name("few parent fds", path.0), Role::Ours);
        let lots = report.find(&name(&many, path.0), Role::Ours);
        if let (Some(few), Some(lots)) = (few, lots) {
            let ratio = lots.median() / few.median();
            report.note(&name(&many, path.0), format!("ours many/few fds {ratio:.2}×"));
        }
    }
}

fn name(fds: &str, path: &str) -> String {
    format!("{fds}: spawn+wait /bin/true, {path}")
}

/// Our paths: a name and the command.
fn paths() -> Vec<(&'static str, process_transport::Command)> {
    let mut pipes = process_transport::Command::new("/bin/true");
    pipes.env_clear();
    let mut extra = pipes.clone();
    extra.fd(3, ChildFd::ParentReads).fd(7, ChildFd::ParentWrites);
    let mut pty = pipes.clone();
    pty.pty(PtySize { rows: 24, cols: 80 });
    let mut paths = vec![("3 pipes", pipes.clone()), ("3 pipes + fds 3,7", extra)];
    if is_root() {
        let mut ids = pipes;
        ids.uid(NOBODY).gid(NOBODY);
        paths.push(("3 pipes + uid/gid", ids));
    }
    paths.push(("pty", pty));
    paths
}

fn scenarios(rt: &Runtime, cfg: &Config, report: &mut Report, fds: &str) {
    for (path, cmd) in paths() {
        let ours = contender(Role::Ours, "process-transport", || {
            micros(|| {
                rt.block_on(async {
                    let mut child = cmd.spawn().expect("spawn");
                    assert!(child.wait().await.expect("wait").success());
                })
            })
        });
        let mut contenders = vec![ours];
        if path == "3 pipes" {
            contenders.push(contender(Role::Tokio, "tokio::process", || {
                micros(|| rt.block_on(tokio_once()))
            }));
            contenders.push(contender(Role::Std, "std::process", || micros(std_once)));
            contenders.push(contender(Role::Floor, "posix_spawn", || {
                micros(|| {
                    let child = raw::spawn(&TRUE, true, false);
                    assert_eq!(raw::wait(child.pid), 0);
                })
            }));
        }
        report.race(&name(fds, path), "µs", false, cfg.spawn, contenders);
    }
}

async fn tokio_once() {
    let status = tokio::process::Command::new("/bin/true")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .status()
        .await
        .expect("tokio");
    assert!(status.success());
}

fn std_once() {
    let status = std::process::Command::new("/bin/true")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .status()
        .expect("std");
    assert!(status.success());
}

/// `n` more open fds (copies of `/dev/null`), closed on drop.
fn hold_fds(n: usize) -> Vec<OwnedFd> {
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("/dev/null").into();
    (0..n).map(|_| null.try_clone().expect("dup")).collect()
}
