//! Section 6: parent RSS per live idle child with three pipes. Each implementation runs in a
//! fresh copy of this binary (`--mem-child IMPL N`), so that what one leaves allocated does
//! not count against the next.

use std::process::Stdio;
use std::time::Duration;

use futures::future::join_all;
use tokio::runtime::Runtime;

use crate::common::rss_bytes;
use crate::harness::Role;
use crate::report::Report;
use crate::{Config, bench_runtime, raw};

pub fn run(_rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== 6. memory per idle child");
    let n = cfg.memory_n;
    let name = format!("parent RSS per idle child, N={n}, 3 pipes");
    let exe = std::env::current_exe().expect("current_exe");
    for (role, imp, label) in [
        (Role::Ours, "ours", "process-transport"),
        (Role::Tokio, "tokio", "tokio::process"),
        (Role::Std, "std", "std::process"),
        (Role::Floor, "raw", "posix_spawn, pids + fds only"),
    ] {
        let out = std::process::Command::new(&exe)
            .args(["--mem-child", imp, &n.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let kib: f64 = text.trim().parse().unwrap_or(f64::NAN);
        report.add(&name, role, label, "KiB/child", false, vec![kib]);
    }
    report.note(
        &name,
        "user-space RSS delta / N; kernel pipe buffers are not in RSS".into(),
    );
}

/// Runs in a fresh copy of the binary: RSS before and after spawning `n` idle children.
pub fn child_main(imp: &str, n: usize) {
    let rt = bench_runtime();
    let per_child = match imp {
        "ours" => rt.block_on(ours(n)),
        "tokio" => rt.block_on(tokio(n)),
        "std" => std(n),
        "raw" => raw_children(n),
        other => panic!("unknown implementation {other}"),
    };
    println!("{per_child}");
}

fn delta_kib(before: u64, n: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(100));
    (rss_bytes() as f64 - before as f64) / 1024.0 / n as f64
}

async fn ours(n: usize) -> f64 {
    let mut cmd = process_transport::Command::new("/bin/sleep");
    cmd.arg("1000").kill_on_drop(true);
    // Warm up: reaper thread, stack, runtime registrations.
    let mut warm = cmd.spawn().unwrap();
    warm.kill().await.unwrap();
    let before = rss_bytes();
    let mut children: Vec<_> = (0..n).map(|_| cmd.spawn().expect("spawn")).collect();
    let kib = delta_kib(before, n);
    for c in &children {
        c.signal(libc::SIGKILL).unwrap();
    }
    join_all(children.iter_mut().map(|c| c.wait())).await;
    kib
}

fn tokio_sleeper() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sleep");
    cmd.arg("1000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn tokio(n: usize) -> f64 {
    let mut warm = tokio_sleeper().spawn().unwrap();
    warm.kill().await.unwrap();
    let before = rss_bytes();
    let mut children: Vec<_> = (0..n)
        .map(|_| tokio_sleeper().spawn().expect("spawn"))
        .collect();
    let kib = delta_kib(before, n);
    for c in &mut children {
        c.start_kill().unwrap();
    }
    join_all(children.iter_mut().map(|c| c.wait())).await;
    kib
}

fn std(n: usize) -> f64 {
    let sleeper = || {
        std::process::Command::new("/bin/sleep")
            .arg("1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut warm = sleeper();
    warm.kill().unwrap();
    warm.wait().unwrap();
    let before = rss_bytes();
    let mut children: Vec<_> = (0..n).map(|_| sleeper()).collect();
    let kib = delta_kib(before, n);
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    kib
}

fn raw_children(n: usize) -> f64 {
    let argv = [c"/bin/sleep", c"1000"];
    let warm = raw::spawn(&argv, true, false);
    raw::kill(warm.pid);
    raw::wait(warm.pid);
    let before = rss_bytes();
    let children: Vec<_> = (0..n).map(|_| raw::spawn(&argv, true, false)).collect();
    let kib = delta_kib(before, n);
    for c in &children {
        raw::kill(c.pid);
        raw::wait(c.pid);
    }
    kib
}
