//! What reaping costs when the host process has other children: wait-family syscalls per exit
//! of ours and wall time, with and without a foreign zombie standing first in the kernel's
//! child list, and beside a stream of foreign exits.
//!
//! ```text
//! cargo bench --bench reaper_cost -- [--smoke]
//! ```
//!
//! Each scenario runs in a fresh copy of this binary under
//! `perf stat -e syscalls:sys_enter_wait4,syscalls:sys_enter_waitid`, once with the pidfd
//! reaper and once with the SIGCHLD fallback forced (`PROCESS_TRANSPORT_REAPER=sigchld`), so
//! the two designs are compared in one run. Without perf the syscall columns say so.
//!
//! Scenarios:
//! - `kill-one-by-one`: N sleeping children of ours, killed and awaited one at a time;
//! - the same with one foreign zombie (a `std::process::Child` that exited and is never
//!   waited), which hides every later zombie from a `waitid(P_ALL, WNOWAIT)` peek;
//! - `foreign-exits`: N idle children of ours while 300 `std::process` children come and go
//!   (per exit = per foreign exit; std's own `waitpid` for each is one of the calls).

use std::process::Stdio;
use std::time::{Duration, Instant};

use process_transport::{ChildFd, Command};

const FOREIGN_EXITS: usize = 300;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let name = args.get(i + 1).expect("scenario name");
        let n: usize = args.get(i + 2).and_then(|s| s.parse().ok()).expect("count");
        run_scenario(name, n);
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let n = if smoke { 50 } else { 2000 };
    let idle = if smoke { 50 } else { 3000 };
    let perf = perf_available();
    if !perf {
        println!("perf with syscall tracepoints is not available: syscall counts are not measured");
    }
    println!(
        "{:<28} {:>8} {:>8} {:>14} {:>12} {:>10}",
        "scenario", "reaper", "exits", "wait syscalls", "per exit", "wall ms"
    );
    for (name, count) in [
        ("kill-one-by-one", n),
        ("kill-one-by-one+zombie", n),
        ("foreign-exits", idle),
    ] {
        for reaper in ["pidfd", "sigchld"] {
            let (exits, wall, waits) = measure(name, count, reaper, perf);
            let per_exit = waits.map(|w| w as f64 / exits.max(1) as f64);
            println!(
                "{:<28} {:>8} {:>8} {:>14} {:>12} {:>10.1}",
                name,
                reaper,
                exits,
                waits.map_or("-".into(), |w| w.to_string()),
                per_exit.map_or("-".into(), |p| format!("{p:.2}")),
                wall.as_secs_f64() * 1e3,
            );
        }
    }
}

/// Runs one scenario in a fresh process; returns (exits of ours, wall time, wait syscalls).
fn measure(name: &str, n: usize, reaper: &str, perf: bool) -> (usize, Duration, Option<u64>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = if perf {
        let mut c = std::process::Command::new("perf");
        c.args([
            "stat",
            "-x,",
            "-e",
            "syscalls:sys_enter_wait4,syscalls:sys_enter_waitid",
            "--",
        ]);
        c.arg(&exe);
        c
    } else {
        std::process::Command::new(&exe)
    };
    cmd.args(["--scenario", name, &n.to_string()]);
    cmd.env("PROCESS_TRANSPORT_REAPER", reaper);
    let out = cmd.stderr(Stdio::piped()).output().expect("run scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {name} failed: {stdout}{stderr}"
    );
    let mut fields = stdout.split_whitespace();
    let exits: usize = fields.next().and_then(|s| s.parse().ok()).expect("exits");
    let micros: u64 = fields.next().and_then(|s| s.parse().ok()).expect("micros");
    let waits = perf.then(|| {
        stderr
            .lines()
            .filter(|l| l.contains("sys_enter_wait"))
            .filter_map(|l| l.split(',').next()?.parse::<u64>().ok())
            .sum()
    });
    (exits, Duration::from_micros(micros), waits)
}

fn perf_available() -> bool {
    std::process::Command::new("perf")
        .args(["stat", "-e", "syscalls:sys_enter_wait4", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prints "EXITS MICROS" on stdout.
fn run_scenario(name: &str, n: usize) {
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (exits, took) = rt.block_on(async {
        match name {
            "kill-one-by-one" => kill_one_by_one(n, false).await,
            "kill-one-by-one+zombie" => kill_one_by_one(n, true).await,
            "foreign-exits" => foreign_exits(n).await,
            other => panic!("unknown scenario {other}"),
        }
    });
    println!("{exits} {}", took.as_micros());
}

fn sleeper() -> process_transport::ProcessTransport {
    Command::new("sleep")
        .arg("1000")
        .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
        .parent_death_signal(libc::SIGKILL)
        .spawn()
        .expect("spawn sleep")
}

async fn kill_one_by_one(n: usize, with_zombie: bool) -> (usize, Duration) {
    // Spawned first, so it stands before every child of ours in the kernel's list.
    let mut zombie = with_zombie.then(|| {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        wait_until_zombie(child.id());
        child
    });
    let mut children: Vec<_> = (0..n).map(|_| sleeper()).collect();
    let start = Instant::now();
    for child in &mut children {
        let status = child.kill().await.expect("kill");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    let took = start.elapsed();
    if let Some(zombie) = zombie.as_mut() {
        assert!(zombie.wait().expect("foreign status").success());
    }
    (n, took)
}

async fn foreign_exits(idle: usize) -> (usize, Duration) {
    let mut children: Vec<_> = (0..idle).map(|_| sleeper()).collect();
    assert!(children.iter().all(|c| c.pid().is_some()));
    let start = Instant::now();
    for _ in 0..FOREIGN_EXITS {
        let status = std::process::Command::new("true")
            .status()
            .expect("foreign child");
        assert!(status.success());
    }
    // Give the reaper time to finish whatever the last exits made it do.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = start.elapsed();
    // Not killed and awaited: their parent-death signal ends them when this process exits, so
    // every wait counted belongs to the foreign exits.
    children.clear();
    (FOREIGN_EXITS, took)
}

fn wait_until_zombie(pid: u32) {
    let path = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("Z") {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("child {pid} never became a zombie");
}

/// Raises the soft fd limit to the hard one (thousands of children hold thousands of fds).
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit on a valid local struct.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
