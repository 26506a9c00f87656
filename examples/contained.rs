//! A contained job: a shell script that double-forks a daemon (which leaves its session and
//! its parent, so no process group reaches it), run with its stderr merged into stdout
//! (`2>&1`), a tight umask, resource limits and `no_new_privs`, in a cgroup of its own.
//! `kill_tree` then stops the whole tree, daemon included, through `cgroup.kill`, and the
//! job's CPU time comes from the cgroup. Run with `cargo run --example contained`.
//!
//! Where no writable cgroup v2 hierarchy exists, it says so and runs without containment (and
//! then the daemon escapes `kill_tree`, which it also reports).

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use process_transport::{ChildFd, Command, Event, cgroup2_mount};

const JOB: &str = r#"
echo "umask $(umask)"
grep -E 'Max (open files|processes)' /proc/self/limits
grep NoNewPrivs /proc/self/status
echo "cgroup $(cat /proc/self/cgroup | grep '^0::')"
echo "to stderr, merged into stdout" >&2
i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done
(setsid sleep 300 </dev/null >/dev/null 2>&1 & echo "daemon $!")
sleep 300
"#;

/// The cgroup v2 directory this process is in, where new cgroups belong.
fn own_cgroup() -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(!s.rsplit_once(") ")?.1.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut command = Command::new("sh");
    command
        .args(["-c", JOB])
        .stdin(ChildFd::Null)
        .stderr(ChildFd::SameAs(1))
        .umask(0o077)
        .rlimit(libc::RLIMIT_NOFILE, 256, 256)
        .rlimit(libc::RLIMIT_NPROC, 4096, 4096)
        .no_new_privs(true);
    let mut contained = false;
    if let Some(parent) = own_cgroup() {
        command.transient_cgroup(&parent);
        contained = true;
    }
    let mut job = match command.spawn() {
        Ok(job) => job,
        Err(e) if contained => {
            println!("cgroup v2 is not usable here ({e}): running without containment");
            let mut plain = Command::new("sh");
            plain
                .args(["-c", JOB])
                .stdin(ChildFd::Null)
                .stderr(ChildFd::SameAs(1))
                .umask(0o077);
            contained = false;
            plain.spawn()?
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(dir) = job.cgroup_path() {
        println!("job {} in {}", job.spawned_pid(), dir.display());
    }

    // Echo the job's output until the daemon reports in.
    let mut daemon = None;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while daemon.is_none() {
            match job.next().await {
                Some(Event::Data { data, .. }) => {
                    text.push_str(&String::from_utf8_lossy(&data));
                    while let Some((line, rest)) = text.split_once('\n') {
                        println!("  | {line}");
                        daemon = daemon.or_else(|| line.strip_prefix("daemon ")?.parse().ok());
                        text = rest.to_owned();
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await?;
    let daemon: u32 = daemon.ok_or("the job never reported its daemon")?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    if contained {
        let usage = job.cgroup_usage()?;
        println!(
            "tree CPU so far: {:?} (user {:?}, system {:?}), peak memory {}",
            usage.cpu,
            usage.user,
            usage.system,
            usage
                .memory_peak
                .map_or("n/a (no memory controller)".into(), |b| format!(
                    "{b} bytes"
                ))
        );
    }
    let others = job.kill_tree(libc::SIGKILL);
    println!("kill_tree signalled {others} process(es) besides the job");
    let status = job.wait().await?;
    println!("job ended: {status:?}");
    for _ in 0..100 {
        if !is_running(daemon) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if is_running(daemon) {
        println!("daemon {daemon} escaped (no containment); stopping it by pid");
        std::process::Command::new("kill")
            .args(["-KILL", &daemon.to_string()])
            .status()?;
    } else {
        println!("daemon {daemon} is gone too");
    }
    if contained {
        for _ in 0..100 {
            if job.cgroup_path().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "cgroup removed: {}; final CPU {:?}",
            job.cgroup_path().is_none(),
            job.cgroup_usage()?.cpu
        );
    }
    Ok(())
}
