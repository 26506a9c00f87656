//! Section 5: reaping N sleeping children killed at once, until every status is delivered;
//! and syscalls per exit, counted with `perf stat --per-thread -e raw_syscalls:sys_enter`
//! when perf is installed.

use std::ffi::CStr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::join_all;
use process_transport::ChildFd;
use tokio::runtime::Runtime;

use crate::Config;
use crate::harness::{Role, contender};
use crate::raw;
use crate::report::Report;

const SLEEP: [&CStr; 2] = [c"/bin/sleep", c"1000"];

/// Milliseconds from the first kill to the last status, with `n` sleepers per sample.
pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== 5. reaping");
    for &n in &cfg.reap_ns {
        let name = format!("reap N={n} killed sleepers, until all statuses delivered");
        let contenders = vec![
            contender(Role::Ours, "process-transport", || {
                rt.block_on(ours(n, false)).0
            }),
            contender(Role::Tokio, "tokio::process (pidfd)", || {
                rt.block_on(tokio(n, false)).0
            }),
            contender(Role::Std, "std::process, wait() in turn", || std(n)),
            contender(Role::Floor, "posix_spawn + waitpid", || floor(n)),
        ];
        report.race(&name, "ms", false, cfg.reap_budget(n), contenders);
    }
    if !perf_available() {
        eprintln!("  perf not found: syscall counts skipped");
        return;
    }
    for &n in &cfg.reap_ns {
        let name = format!("reap N={n}: syscalls per exit, all threads");
        let ours = rt.block_on(ours(n, true)).1;
        let tokio = rt.block_on(tokio(n, true)).1;
        report.add(
            &name,
            Role::Ours,
            "process-transport",
            "syscalls/exit",
            false,
            vec![ours.per_exit(n)],
        );
        report.add(
            &name,
            Role::Tokio,
            "tokio::process (pidfd)",
            "syscalls/exit",
            false,
            vec![tokio.per_exit(n)],
        );
        report.note(
            &name,
            format!(
                "ours' reaper thread {:.2}/exit",
                ours.reaper as f64 / n as f64
            ),
        );
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

async fn ours(n: usize, count: bool) -> (f64, Counts) {
    let mut cmd = process_transport::Command::new("/bin/sleep");
    cmd.arg("1000")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .kill_on_drop(true);
    let mut children: Vec<_> = (0..n).map(|_| cmd.spawn().expect("spawn")).collect();
    let perf = if count { Perf::start() } else { None };
    let t = Instant::now();
    for c in &children {
        c.signal(libc::SIGKILL).expect("kill");
    }
    let statuses = join_all(children.iter_mut().map(|c| c.wait())).await;
    let elapsed = ms(t);
    let counts = perf.map(Perf::stop).unwrap_or_default();
    assert!(
        statuses
            .iter()
            .all(|s| s.as_ref().unwrap().signal() == Some(libc::SIGKILL))
    );
    (elapsed, counts)
}

fn sleeper_std() -> std::process::Command {
    let mut cmd = std::process::Command::new("/bin/sleep");
    cmd.arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn tokio(n: usize, count: bool) -> (f64, Counts) {
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            tokio::process::Command::from(sleeper_std())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn")
        })
        .collect();
    let perf = if count { Perf::start() } else { None };
    let t = Instant::now();
    for c in &mut children {
        c.start_kill().expect("kill");
    }
    let statuses = join_all(children.iter_mut().map(|c| c.wait())).await;
    let elapsed = ms(t);
    let counts = perf.map(Perf::stop).unwrap_or_default();
    assert!(statuses.iter().all(|s| s.is_ok()));
    (elapsed, counts)
}

fn std(n: usize) -> f64 {
    let mut children: Vec<_> = (0..n)
        .map(|_| sleeper_std().spawn().expect("spawn"))
        .collect();
    let t = Instant::now();
    for c in &mut children {
        c.kill().expect("kill");
    }
    for c in &mut children {
        c.wait().expect("wait");
    }
    ms(t)
}

fn floor(n: usize) -> f64 {
    let children: Vec<_> = (0..n).map(|_| raw::spawn(&SLEEP, false, false)).collect();
    let t = Instant::now();
    for c in &children {
        raw::kill(c.pid);
    }
    for c in &children {
        raw::wait(c.pid);
    }
    ms(t)
}

fn perf_available() -> bool {
    std::process::Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Syscalls in the measured window: all threads of this process, and our reaper's.
#[derive(Default)]
struct Counts {
    total: u64,
    reaper: u64,
}

impl Counts {
    /// Per exit, not counting the one kill syscall per child.
    fn per_exit(&self, n: usize) -> f64 {
        self.total.saturating_sub(n as u64) as f64 / n as f64
    }
}

/// `perf stat --per-thread -e raw_syscalls:sys_enter` attached to this process: counting
/// in the kernel, far lighter than strace.
struct Perf {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Perf {
    fn start() -> Option<Perf> {
        let out = std::env::temp_dir().join(format!("compare-perf-{}.csv", std::process::id()));
        let child = std::process::Command::new("perf")
            .args([
                "stat",
                "--per-thread",
                "-x,",
                "-e",
                "raw_syscalls:sys_enter",
                "-p",
            ])
            .arg(std::process::id().to_string())
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf needs a moment to attach to every thread.
        std::thread::sleep(Duration::from_millis(700));
        Some(Perf { child, out })
    }

    fn stop(mut self) -> Counts {
        // SAFETY: signals our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let mut counts = Counts::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split(',');
            let (Some(thread), Some(count)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(count) = count.trim().parse::<u64>() else {
                continue;
            };
            counts.total += count;
            if thread.trim().starts_with("process-transp") {
                counts.reaper += count;
            }
        }
        counts
    }
}
