//! What the child setup options cost at spawn: a timing loop over `spawn()` (which returns
//! once the child has exec'd) for a plain command and for the same command with each option.
//! Run in release mode for meaningful numbers: `cargo run --release --example setup_cost`
//! (`-- 2000` for more rounds; the default is short so CI can run it).
//!
//! The variants take turns spawn by spawn, in a rotating order, so a machine that gets busier
//! or quieter on the way affects them alike. A transient cgroup's
//! removal (in the background) is waited for before the next spawn.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use process_transport::{ChildFd, Command, cgroup2_mount};

fn base() -> Command {
    let mut command = Command::new("/bin/true");
    command.fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)]);
    command
}

/// The `q` quantile (0.5: the median).
fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// A cgroup v2 directory to work under, made for this run, if cgroup v2 is writable here.
fn scratch_cgroup() -> Option<PathBuf> {
    let dir = cgroup2_mount()?.join(format!("pt-setup-cost-{}", std::process::id()));
    std::fs::create_dir(&dir).ok()?;
    Some(dir)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let cgroups = scratch_cgroup();

    let mut variants: Vec<(&str, Command)> =
        vec![("plain", base()), ("plain (again: the noise)", base())];
    let mut setup = base();
    setup
        .umask(0o077)
        .rlimit(libc::RLIMIT_NOFILE, 256, 256)
        .rlimit(libc::RLIMIT_CORE, 0, 0)
        .no_new_privs(true);
    variants.push(("umask + 2 rlimits + no_new_privs", setup));
    let mut shared = base();
    shared.fd(2, ChildFd::SameAs(1));
    variants.push(("stderr SameAs(1)", shared));
    let mut owned = base();
    owned.fd(3, ChildFd::owned(std::fs::File::open("/dev/null")?));
    variants.push(("an owned fd at 3", owned));
    if let Some(dir) = &cgroups {
        let join = dir.join("join");
        std::fs::create_dir(&join)?;
        let mut joined = base();
        joined.cgroup(&join);
        variants.push(("cgroup (join an existing one)", joined));
        let mut transient = base();
        transient.transient_cgroup(dir);
        variants.push(("transient_cgroup (mkdir + join)", transient));
    } else {
        println!("cgroup v2 not writable here: the cgroup rows are left out");
    }

    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); variants.len()];
    // A warm-up round, then the measured ones.
    for round in 0..=rounds {
        // Rotated each round, so that no variant always follows the same neighbour.
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let start = Instant::now();
            let mut child = variants[i].1.spawn()?;
            let spent = start.elapsed();
            let status = child.wait().await?;
            assert!(status.success(), "{status:?}");
            // The janitor removes a transient cgroup in the background; let it finish, so
            // its work is not charged to the next spawn.
            while child.cgroup_path().is_some() {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if round > 0 {
                times[i].push(spent);
            }
        }
    }

    // Spawn times here are often bimodal (the child and the reaper thread landing on one CPU
    // or two), which makes a median jump between runs: the 10th percentile and the median
    // are both shown, and each compared with the plain spawn's.
    let plain = [quantile(&times[0], 0.1), quantile(&times[0], 0.5)];
    println!("spawn() until exec, over {rounds} spawns each: 10th percentile, median");
    for ((name, _), t) in variants.iter().zip(&times) {
        let row = [quantile(t, 0.1), quantile(t, 0.5)];
        let pct = |i: usize| (row[i].as_secs_f64() / plain[i].as_secs_f64() - 1.0) * 100.0;
        println!(
            "  {name:<34} {:>7.1} us {:>+6.1} %   {:>7.1} us {:>+6.1} %",
            row[0].as_secs_f64() * 1e6,
            pct(0),
            row[1].as_secs_f64() * 1e6,
            pct(1),
        );
    }

    if let Some(dir) = cgroups {
        // The transient cgroups are removed in the background once empty.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let _ = std::fs::remove_dir(dir.join("join"));
            if std::fs::remove_dir(&dir).is_ok() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
