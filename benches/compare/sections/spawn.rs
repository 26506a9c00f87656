//! Sections 1 and 2: spawn + wait `/bin/true`, sequential and from 16 concurrent tasks; then
//! the same after the parent touched 4 GiB (4 KiB pages), for null stdio, three pipes, three
//! pipes plus fds 3 and 7, and uid/gid (when root). std and Tokio need `pre_exec` for fds 3
//! and 7, and std forks for `pre_exec` and for uid/gid.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use futures::future::join_all;
use process_transport::ChildFd;
use tokio::runtime::Runtime;

use crate::Config;
use crate::common::{BigParent, is_root, pipe_high};
use crate::harness::{Budget, Role, contender, micros};
use crate::raw;
use crate::report::Report;

const TRUE: &str = "/bin/true";
const NOBODY: u32 = 65534;
const TASKS: usize = 16;

pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report) {
    eprintln!("== 1. spawn + wait, small parent");
    scenarios(rt, cfg, report, "");
    eprintln!(
        "== 2. spawn + wait, parent touched {} GiB",
        cfg.big_parent_gib
    );
    let big = BigParent::touch(cfg.big_parent_gib << 30);
    scenarios(rt, cfg, report, &cfg.big_prefix());
    drop(big);
    compare_parents(report, &cfg.big_prefix());
}

/// What `/bin/true` gets.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    piped: bool,
    extra_fds: bool,
    ids: bool,
}

fn cases() -> Vec<Case> {
    let case = |name, piped, extra_fds, ids| Case {
        name,
        piped,
        extra_fds,
        ids,
    };
    let mut cases = vec![
        case("null stdio", false, false, false),
        case("3 pipes", true, false, false),
        case("3 pipes + fds 3,7", true, true, false),
    ];
    if is_root() {
        cases.push(case("3 pipes + uid/gid", true, false, true));
    }
    cases
}

fn seq_name(prefix: &str, case: &Case) -> String {
    format!("{prefix}spawn+wait /bin/true, {}, sequential", case.name)
}

fn conc_name(prefix: &str, case: &Case) -> String {
    format!("{prefix}spawn+wait /bin/true, {}, {TASKS} tasks", case.name)
}

/// Every case sequentially, and the stdio-only cases from 16 concurrent tasks.
fn scenarios(rt: &Runtime, cfg: &Config, report: &mut Report, prefix: &str) {
    for case in cases() {
        let cmd = ours_command(case);
        let forks = case.extra_fds || case.ids;
        let mut contenders = vec![
            contender(Role::Ours, "process-transport", || {
                micros(|| rt.block_on(ours_once(&cmd)))
            }),
            contender(
                Role::Tokio,
                if forks {
                    "tokio::process (std forks)"
                } else {
                    "tokio::process"
                },
                || micros(|| rt.block_on(tokio_once(case))),
            ),
            contender(
                Role::Std,
                if forks {
                    "std::process (forks)"
                } else {
                    "std::process"
                },
                || micros(|| std_once(case)),
            ),
        ];
        if !case.ids {
            contenders.push(contender(Role::Floor, "posix_spawn", || {
                micros(|| floor_once(case))
            }));
        }
        report.race(&seq_name(prefix, &case), "µs", false, cfg.spawn, contenders);
    }
    if prefix.is_empty() {
        in_a_task(rt, cfg, report);
    }
    for case in cases().into_iter().filter(|c| !c.extra_fds && !c.ids) {
        let k = cfg.concurrent_rounds;
        let per_spawn = |f: &dyn Fn()| micros(f) / (TASKS * k) as f64;
        let contenders = vec![
            contender(Role::Ours, "process-transport", || {
                per_spawn(&|| ours_concurrent(rt, case, k))
            }),
            contender(Role::Tokio, "tokio::process", || {
                per_spawn(&|| tokio_concurrent(rt, case, k))
            }),
            contender(Role::Std, "std::process (16 threads)", || {
                per_spawn(&|| threads(k, || std_once(case)))
            }),
            contender(Role::Floor, "posix_spawn (16 threads)", || {
                per_spawn(&|| threads(k, || floor_once(case)))
            }),
        ];
        let budget = Budget {
            warmup: 1,
            ..cfg.spawn
        };
        report.race(
            &conc_name(prefix, &case),
            "µs/spawn",
            false,
            budget,
            contenders,
        );
    }
}

/// The sequential 3-pipes case again, awaited in a task on the runtime's workers as a
/// service would (`block_on` above runs the future on the calling thread, which the exit
/// then reaches through a worker: one more wake-up). Timed inside the task.
fn in_a_task(rt: &Runtime, cfg: &Config, report: &mut Report) {
    let case = cases()[1];
    let cmd = std::sync::Arc::new(ours_command(case));
    let timed = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        rt.block_on(async {
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                fut.await;
                start.elapsed().as_secs_f64() * 1e6
            })
            .await
            .expect("task")
        })
    };
    let contenders = vec![
        contender(Role::Ours, "process-transport", || {
            let cmd = cmd.clone();
            timed(Box::pin(async move { ours_once(&cmd).await }))
        }),
        contender(Role::Tokio, "tokio::process", || {
            timed(Box::pin(tokio_once(case)))
        }),
        contender(Role::Std, "std::process", || micros(|| std_once(case))),
        contender(Role::Floor, "posix_spawn", || micros(|| floor_once(case))),
    ];
    let name = format!("{}, in a task", seq_name("", &case));
    report.race(&name, "µs", false, cfg.spawn, contenders);
}

/// Notes our big-parent / small-parent ratio (target ≤ 1.2).
fn compare_parents(report: &mut Report, big_prefix: &str) {
    for case in cases() {
        for name in [seq_name, conc_name] {
            let big = name(big_prefix, &case);
            let (Some(s), Some(b)) = (
                report.find(&name("", &case), Role::Ours),
                report.find(&big, Role::Ours),
            ) else {
                continue;
            };
            let ratio = b.median() / s.median();
            report.note(&big, format!("ours big/small parent {ratio:.2}×"));
        }
    }
}

fn ours_command(case: Case) -> process_transport::Command {
    let mut cmd = process_transport::Command::new(TRUE);
    if !case.piped {
        cmd.fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)]);
    }
    if case.extra_fds {
        cmd.fd(3, ChildFd::ParentReads).fd(7, ChildFd::ParentWrites);
    }
    if case.ids {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd
}

async fn ours_once(cmd: &process_transport::Command) {
    let mut child = cmd.spawn().expect("spawn");
    assert!(child.wait().await.expect("wait").success());
}

/// Pipes for fds 3 and 7 made by hand for std and Tokio, which can place them only with
/// `pre_exec` (which sends std down its fork path).
struct ExtraPipes {
    child_ends: Vec<OwnedFd>,
    _parent_ends: Vec<OwnedFd>,
}

impl ExtraPipes {
    fn new() -> Self {
        let (r3, w3) = pipe_high();
        let (r7, w7) = pipe_high();
        ExtraPipes {
            child_ends: vec![w3, r7],
            _parent_ends: vec![r3, w7],
        }
    }
}

/// The std command for a case; Tokio wraps the same one.
fn std_command(case: Case, extra: Option<&ExtraPipes>) -> std::process::Command {
    let mut cmd = std::process::Command::new(TRUE);
    let stdio = || {
        if case.piped {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
    if let Some(extra) = extra {
        let (c3, c7) = (
            extra.child_ends[0].as_raw_fd(),
            extra.child_ends[1].as_raw_fd(),
        );
        // SAFETY: dup2 is async-signal-safe; both source fds stay open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(c3, 3) == -1 || libc::dup2(c7, 7) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    if case.ids {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd
}

async fn tokio_once(case: Case) {
    let extra = case.extra_fds.then(ExtraPipes::new);
    let mut child = tokio::process::Command::from(std_command(case, extra.as_ref()))
        .spawn()
        .expect("spawn");
    drop(extra.map(|e| e.child_ends));
    assert!(child.wait().await.expect("wait").success());
}

fn std_once(case: Case) {
    let extra = case.extra_fds.then(ExtraPipes::new);
    let mut child = std_command(case, extra.as_ref()).spawn().expect("spawn");
    drop(extra.map(|e| e.child_ends));
    assert!(child.wait().expect("wait").success());
}

fn floor_once(case: Case) {
    let child = raw::spawn(&[c"/bin/true"], case.piped, case.extra_fds);
    assert_eq!(raw::wait(child.pid), 0);
}

/// 16 tasks on the runtime, each spawning and awaiting `k` children in turn.
fn ours_concurrent(rt: &Runtime, case: Case, k: usize) {
    rt.block_on(async {
        join_all((0..TASKS).map(|_| {
            let cmd = ours_command(case);
            tokio::spawn(async move {
                for _ in 0..k {
                    ours_once(&cmd).await;
                }
            })
        }))
        .await
    });
}

fn tokio_concurrent(rt: &Runtime, case: Case, k: usize) {
    rt.block_on(async {
        join_all((0..TASKS).map(|_| {
            tokio::spawn(async move {
                for _ in 0..k {
                    tokio_once(case).await;
                }
            })
        }))
        .await
    });
}

/// Blocking implementations get 16 OS threads.
fn threads(k: usize, op: impl Fn() + Sync) {
    std::thread::scope(|scope| {
        for _ in 0..TASKS {
            scope.spawn(|| (0..k).for_each(|_| op()));
        }
    });
}
