//! Side-by-side benchmark (issue 5): this crate against `tokio::process`, `std::process` and a
//! raw `posix_spawn` + `waitpid` floor, all in one run.
//!
//! ```text
//! cargo bench --bench compare -- [--quick] [--json PATH] [--only spawn|read|write|reap|memory]
//! ```
//!
//! Scenarios (numbering follows the issue):
//! 1. spawn + wait `/bin/true`, sequential and from 16 concurrent tasks;
//! 2. the same after the parent touched 4 GiB (4 KiB pages), for null stdio, three pipes,
//!    three pipes plus fds 3 and 7, and uid/gid (when root). std and Tokio need `pre_exec`
//!    for fds 3 and 7, and std forks for `pre_exec` and for uid/gid;
//! 3. read throughput from `dd bs=1M` writing to fd 1 or fd 3;
//! 4. write throughput to `cat` (stdout on /dev/null);
//! 5. reaping N sleeping children killed at once, and syscalls per exit (counted with
//!    `perf stat --per-thread -e raw_syscalls:sys_enter` when perf is installed);
//! 6. parent RSS per live idle child (each implementation in a fresh copy of this binary).
//!
//! Like-for-like stdio: `ChildFd::Null` against `Stdio::null()` and a `/dev/null` dup in the
//! floor; three pipes against `Stdio::piped()` and three `pipe2`s in the floor.
//!
//! The machine is shared and noisy, so the contenders of a scenario take turns sample by
//! sample (round robin) and every figure is a median: a burst of load hits all of them.
//!
//! Ratios are "our advantage": peer time / our time, or our rate / peer rate. Above 1 means
//! this crate is better; against the floor or the ceiling, 1.0 is the best possible.

mod harness {
    use std::fmt::Write as _;
    use std::time::{Duration, Instant};

    /// Which column of the table a measurement belongs to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Role {
        Ours,
        Tokio,
        Std,
        /// `posix_spawn` + `waitpid`, or blocking I/O on a 1 MiB pipe.
        Floor,
    }

    pub const ROLES: [Role; 4] = [Role::Ours, Role::Tokio, Role::Std, Role::Floor];

    /// How many samples to take: `warmup` dropped, then at least `min`, and more (up to
    /// `max`) while the scenario has used less than `time` per contender.
    #[derive(Debug, Clone, Copy)]
    pub struct Budget {
        pub warmup: usize,
        pub min: usize,
        pub max: usize,
        pub time: Duration,
    }

    impl Budget {
        pub const fn fixed(count: usize) -> Self {
            Budget {
                warmup: 0,
                min: count,
                max: count,
                time: Duration::ZERO,
            }
        }
    }

    /// One implementation in a scenario: `sample` runs once and returns one figure.
    pub struct Contender<'a> {
        pub role: Role,
        pub name: &'static str,
        pub sample: Box<dyn FnMut() -> f64 + 'a>,
    }

    pub fn contender<'a>(
        role: Role,
        name: &'static str,
        f: impl FnMut() -> f64 + 'a,
    ) -> Contender<'a> {
        Contender {
            role,
            name,
            sample: Box::new(f),
        }
    }

    /// Microseconds taken by `f`.
    pub fn micros(f: impl FnOnce()) -> f64 {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    }

    pub fn median(values: &[f64]) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub struct Record {
        pub scenario: String,
        pub implementation: String,
        pub role: Role,
        pub unit: &'static str,
        pub higher_is_better: bool,
        pub samples: Vec<f64>,
    }

    impl Record {
        pub fn median(&self) -> f64 {
            median(&self.samples)
        }
    }

    /// Every measurement of the run, plus notes per scenario.
    #[derive(Default)]
    pub struct Report {
        pub records: Vec<Record>,
        notes: Vec<(String, String)>,
    }

    impl Report {
        /// Runs the contenders in turns and records them. In each turn a contender takes
        /// samples for a slice of the time budget (at least one), so fast contenders get many
        /// samples and slow ones (a fork of a 4 GiB parent) a few, under the same load.
        pub fn race(
            &mut self,
            scenario: &str,
            unit: &'static str,
            higher_is_better: bool,
            budget: Budget,
            mut contenders: Vec<Contender<'_>>,
        ) {
            for _ in 0..budget.warmup {
                contenders.iter_mut().for_each(|c| {
                    (c.sample)();
                });
            }
            let start = Instant::now();
            let limit = budget.time * contenders.len() as u32;
            let slice = budget.time / 8;
            let mut samples = vec![Vec::new(); contenders.len()];
            loop {
                let fewest = samples.iter().map(Vec::len).min().unwrap_or(0);
                let all_full = samples.iter().all(|s| s.len() >= budget.max);
                if all_full || (fewest >= budget.min && start.elapsed() >= limit) {
                    break;
                }
                for (c, s) in contenders.iter_mut().zip(&mut samples) {
                    let turn = Instant::now();
                    loop {
                        s.push((c.sample)());
                        if turn.elapsed() >= slice || s.len() >= budget.max {
                            break;
                        }
                    }
                }
            }
            for (c, s) in contenders.iter().zip(samples) {
                self.add(scenario, c.role, c.name, unit, higher_is_better, s);
            }
        }

        pub fn add(
            &mut self,
            scenario: &str,
            role: Role,
            implementation: &str,
            unit: &'static str,
            higher_is_better: bool,
            samples: Vec<f64>,
        ) {
            let rec = Record {
                scenario: scenario.to_owned(),
                implementation: implementation.to_owned(),
                role,
                unit,
                higher_is_better,
                samples,
            };
            eprintln!(
                "  {:<62} {:<40} {:>9} {} (n={})",
                rec.scenario,
                rec.implementation,
                fmt_num(rec.median()),
                rec.unit,
                rec.samples.len()
            );
            self.records.push(rec);
        }

        pub fn note(&mut self, scenario: &str, note: String) {
            self.notes.push((scenario.to_owned(), note));
        }

        pub fn find(&self, scenario: &str, role: Role) -> Option<&Record> {
            self.records
                .iter()
                .find(|r| r.scenario == scenario && r.role == role)
        }

        /// A markdown table: one row per scenario, a column per role, ratios in parentheses.
        pub fn table(&self) -> String {
            let mut out = String::from(
                "| scenario | unit | process-transport | tokio::process | std::process | floor / ceiling | note |\n\
                 |---|---|---:|---:|---:|---:|---|\n",
            );
            let mut scenarios: Vec<&str> = Vec::new();
            for r in &self.records {
                if !scenarios.contains(&r.scenario.as_str()) {
                    scenarios.push(&r.scenario);
                }
            }
            for s in scenarios {
                let unit = self
                    .records
                    .iter()
                    .find(|r| r.scenario == s)
                    .map_or("", |r| r.unit);
                let mut row = format!("| {s} | {unit} |");
                for role in ROLES {
                    let _ = write!(row, " {} |", self.cell(s, role));
                }
                let notes: Vec<&str> = self
                    .notes
                    .iter()
                    .filter(|(sc, _)| sc == s)
                    .map(|(_, n)| n.as_str())
                    .collect();
                let _ = writeln!(row, " {} |", notes.join("; "));
                out.push_str(&row);
            }
            out
        }

        fn cell(&self, scenario: &str, role: Role) -> String {
            let Some(r) = self.find(scenario, role) else {
                return "—".into();
            };
            let ours = self.find(scenario, Role::Ours).map(Record::median);
            let value = fmt_num(r.median());
            let name = match role {
                Role::Floor => format!("{}: ", r.implementation),
                _ => String::new(),
            };
            match ours {
                Some(o) if role != Role::Ours => {
                    let ratio = if r.higher_is_better {
                        o / r.median()
                    } else {
                        r.median() / o
                    };
                    format!("{name}{value} ({ratio:.2}×)")
                }
                _ => format!("{name}{value}"),
            }
        }

        pub fn json(&self) -> String {
            let items: Vec<String> = self
                .records
                .iter()
                .map(|r| {
                    let samples: Vec<String> = r.samples.iter().map(|v| json_num(*v)).collect();
                    format!(
                        "{{\"scenario\":{},\"implementation\":{},\"unit\":{},\"median\":{},\"samples\":[{}]}}",
                        json_str(&r.scenario),
                        json_str(&r.implementation),
                        json_str(r.unit),
                        json_num(r.median()),
                        samples.join(",")
                    )
                })
                .collect();
            format!("[\n{}\n]\n", items.join(",\n"))
        }
    }

    fn json_str(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    fn json_num(v: f64) -> String {
        if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        }
    }

    pub fn fmt_num(v: f64) -> String {
        match v.abs() {
            x if x >= 100.0 => format!("{v:.0}"),
            x if x >= 10.0 => format!("{v:.1}"),
            _ => format!("{v:.2}"),
        }
    }
}

use std::ffi::{CStr, c_char};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use harness::{Budget, Report, Role, contender, micros};
use process_transport::{ChildFd, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const TRUE: &str = "/bin/true";
const NOBODY: u32 = 65534;
const MIB: usize = 1 << 20;
const TASKS: usize = 16;

struct Config {
    quick: bool,
    json: Option<String>,
    /// `--only spawn|read|write|reap|memory`: run one section (all when absent).
    only: Option<String>,
    /// Spawn scenarios: one sample is one spawn (sequential) or one round of 16 tasks.
    spawn: Budget,
    /// Throughput: one sample is one whole transfer.
    bulk: Budget,
    concurrent_rounds: usize,
    transfer_mib: usize,
    reap_ns: Vec<usize>,
    memory_n: usize,
    /// Touching memory is slow on this VM (about 5 s per GiB), so `--quick` uses 1 GiB.
    big_parent_gib: usize,
}

fn big_prefix(cfg: &Config) -> String {
    format!("{} GiB parent: ", cfg.big_parent_gib)
}

impl Config {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let json = args
            .iter()
            .position(|a| a == "--json")
            .and_then(|i| args.get(i + 1).cloned());
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned());
        let secs = Duration::from_secs_f64;
        if quick {
            Config {
                quick,
                json,
                only,
                spawn: Budget {
                    warmup: 2,
                    min: 3,
                    max: 150,
                    time: secs(0.2),
                },
                bulk: Budget {
                    warmup: 0,
                    min: 3,
                    max: 3,
                    time: Duration::ZERO,
                },
                concurrent_rounds: 2,
                transfer_mib: 256,
                reap_ns: vec![100, 1000],
                memory_n: 1000,
                big_parent_gib: 1,
            }
        } else {
            Config {
                quick,
                json,
                only,
                spawn: Budget {
                    warmup: 10,
                    min: 5,
                    max: 2000,
                    time: secs(1.5),
                },
                bulk: Budget {
                    warmup: 1,
                    min: 5,
                    max: 5,
                    time: Duration::ZERO,
                },
                concurrent_rounds: 6,
                transfer_mib: 4096,
                reap_ns: vec![100, 1000, 3000],
                memory_n: 3000,
                big_parent_gib: 4,
            }
        }
    }

    /// Whether the section named `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    /// Rounds that spawn many children get fewer samples.
    fn reap_budget(&self, n: usize) -> Budget {
        Budget::fixed(match n {
            ..1000 => 5,
            1000..=3000 if !self.quick => 3,
            _ => 1,
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mem-child") {
        memory::child_main(&args[i + 1], args[i + 2].parse().expect("N"));
        return;
    }
    let cfg = Config::from_args();
    let rt = bench_runtime();
    let started = Instant::now();
    let mut report = Report::default();

    if cfg.runs("spawn") {
        eprintln!("== 1. spawn + wait, small parent");
        spawn::all(&rt, &cfg, &mut report, "");
        eprintln!(
            "== 2. spawn + wait, parent touched {} GiB",
            cfg.big_parent_gib
        );
        let big = BigParent::touch(cfg.big_parent_gib << 30);
        spawn::all(&rt, &cfg, &mut report, &big_prefix(&cfg));
        drop(big);
        spawn::compare_parents(&mut report, &big_prefix(&cfg));
    }
    if cfg.runs("read") {
        eprintln!("== 3. read throughput");
        throughput::read(&rt, &cfg, &mut report);
    }
    if cfg.runs("write") {
        eprintln!("== 4. write throughput");
        throughput::write(&rt, &cfg, &mut report);
    }
    if cfg.runs("reap") {
        eprintln!("== 5. reaping");
        reaping::all(&rt, &cfg, &mut report);
    }
    if cfg.runs("memory") {
        eprintln!("== 6. memory per idle child");
        memory::all(&cfg, &mut report);
    }

    println!("\n{}", report.table());
    println!(
        "{} run, {:.0} s, {} CPUs. Ratios: our advantage (>1 = process-transport better).",
        if cfg.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some(path) = &cfg.json {
        std::fs::write(path, report.json()).expect("write json");
        println!("JSON written to {path}");
    }
}

// ----- shared helpers ---------------------------------------------------------------------

/// The runtime every scenario runs on (two workers, as the machine has two cores), with the fd
/// limit raised for the many-children scenarios.
fn bench_runtime() -> Runtime {
    raise_nofile_limit();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Raises the soft fd limit to the hard one (3000 children hold thousands of fds).
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

/// `fd` moved to a number ≥ 100, close-on-exec, so that dup2 onto 0..=7 never clobbers it.
fn high(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd; the new fd is ours alone.
    unsafe {
        let new = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100);
        assert!(new >= 0, "F_DUPFD_CLOEXEC");
        OwnedFd::from_raw_fd(new)
    }
}

/// A close-on-exec pipe with both ends at high fd numbers: (read, write).
fn pipe_high() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (high(r.into()), high(w.into()))
}

fn set_pipe_size(fd: RawFd, bytes: usize) {
    // SAFETY: fcntl with an integer argument on an fd the caller keeps open.
    let got = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    assert!(got >= bytes as i32, "F_SETPIPE_SZ");
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Anonymous memory with every 4 KiB page touched (huge pages off: fork's worst case).
struct BigParent {
    base: *mut libc::c_void,
    len: usize,
}

impl BigParent {
    fn touch(len: usize) -> Self {
        let t = Instant::now();
        // SAFETY: a fresh private anonymous mapping, checked; then only our own pages written.
        let base = unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED, "mmap 4 GiB");
            libc::madvise(base, len, libc::MADV_NOHUGEPAGE);
            // MADV_POPULATE_WRITE faults every page in one call: far faster than touching.
            if libc::madvise(base, len, libc::MADV_POPULATE_WRITE) != 0 {
                for off in (0..len).step_by(4096) {
                    base.cast::<u8>().add(off).write_volatile(1);
                }
            }
            base
        };
        eprintln!(
            "  touched {} MiB in {:.1} s, RSS now {} MiB",
            len / MIB,
            t.elapsed().as_secs_f64(),
            rss_bytes() / MIB as u64
        );
        BigParent { base, len }
    }
}

impl Drop for BigParent {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The floor: glibc `posix_spawn` (a CLONE_VM|CLONE_VFORK child) and plain fds.
mod raw {
    use super::*;

    unsafe extern "C" {
        static environ: *const *const c_char;
    }

    pub struct RawChild {
        pub pid: libc::pid_t,
        /// Parent ends of pipes, closed on drop.
        pub _parent_ends: Vec<OwnedFd>,
    }

    /// Spawns `argv` with stdio `/dev/null` or three pipes, plus pipes at fds 3 and 7.
    pub fn spawn(argv: &[&CStr], piped: bool, extra_fds: bool) -> RawChild {
        let mut child_ends = Vec::new();
        let mut parent_ends = Vec::new();
        // SAFETY: file actions initialised, used and destroyed here; every fd passed is open
        // until posix_spawn returns; argv/envp are NULL-terminated.
        unsafe {
            let mut fa = std::mem::zeroed::<libc::posix_spawn_file_actions_t>();
            libc::posix_spawn_file_actions_init(&mut fa);
            let mut dup = |fd: OwnedFd, target: i32, child_ends: &mut Vec<OwnedFd>| {
                libc::posix_spawn_file_actions_adddup2(&mut fa, fd.as_raw_fd(), target);
                child_ends.push(fd);
            };
            if piped {
                for target in 0..3 {
                    let (r, w) = pipe_high();
                    let (child, parent) = if target == 0 { (r, w) } else { (w, r) };
                    dup(child, target, &mut child_ends);
                    parent_ends.push(parent);
                }
            } else {
                let null = high(
                    std::fs::File::options()
                        .read(true)
                        .write(true)
                        .open("/dev/null")
                        .expect("/dev/null")
                        .into(),
                );
                for target in 0..3 {
                    dup(null.try_clone().unwrap(), target, &mut child_ends);
                }
            }
            if extra_fds {
                let (r3, w3) = pipe_high();
                dup(w3, 3, &mut child_ends);
                parent_ends.push(r3);
                let (r7, w7) = pipe_high();
                dup(r7, 7, &mut child_ends);
                parent_ends.push(w7);
            }
            let mut ptrs: Vec<*mut c_char> =
                argv.iter().map(|s| s.as_ptr() as *mut c_char).collect();
            ptrs.push(std::ptr::null_mut());
            let mut pid = 0;
            let rc = libc::posix_spawn(
                &mut pid,
                argv[0].as_ptr(),
                &fa,
                std::ptr::null(),
                ptrs.as_ptr(),
                environ as *const *mut c_char,
            );
            libc::posix_spawn_file_actions_destroy(&mut fa);
            assert_eq!(rc, 0, "posix_spawn");
            RawChild {
                pid,
                _parent_ends: parent_ends,
            }
        }
    }

    pub fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: blocking waitpid on our own child.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(got, pid, "waitpid");
        status
    }

    pub fn kill(pid: libc::pid_t) {
        // SAFETY: the child is not reaped yet, so the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

// ----- 1 and 2: spawn ---------------------------------------------------------------------

mod spawn {
    use super::*;

    /// What `/bin/true` gets.
    #[derive(Clone, Copy)]
    pub struct Case {
        pub name: &'static str,
        pub piped: bool,
        pub extra_fds: bool,
        pub ids: bool,
    }

    pub fn cases() -> Vec<Case> {
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
    pub fn all(rt: &Runtime, cfg: &Config, report: &mut Report, prefix: &str) {
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

    /// Notes our big-parent / small-parent ratio (target ≤ 1.2).
    pub fn compare_parents(report: &mut Report, big_prefix: &str) {
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
}

// ----- 3 and 4: throughput ----------------------------------------------------------------

mod throughput {
    use super::*;

    const UNIT: &str = "GiB/s";

    fn gib_per_s(bytes: usize, f: impl FnOnce()) -> f64 {
        bytes as f64 / (1u64 << 30) as f64 / (micros(f) / 1e6)
    }

    fn size(mib: usize) -> String {
        if mib >= 1024 {
            format!("{} GiB", mib / 1024)
        } else {
            format!("{mib} MiB")
        }
    }

    fn dd_args(mib: usize, to_fd3: bool) -> Vec<String> {
        let mut args: Vec<String> = ["if=/dev/zero", "bs=1M", "status=none"]
            .map(String::from)
            .into();
        args.push(format!("count={mib}"));
        if to_fd3 {
            args.push("of=/dev/fd/3".into());
        }
        args
    }

    pub fn read(rt: &Runtime, cfg: &Config, report: &mut Report) {
        let (mib, b) = (cfg.transfer_mib, cfg.bulk);
        let bytes = mib * MIB;
        let ours = |fd3, pipe| move || gib_per_s(bytes, || rt.block_on(ours_read(mib, fd3, pipe)));
        let tokio = |pipe| move || gib_per_s(bytes, || rt.block_on(tokio_read(mib, pipe)));
        let blocking = |read, pipe| move || gib_per_s(bytes, || blocking_read(mib, read, pipe));

        let name = format!("read {} from dd, fd 1, default 64 KiB pipe", size(mib));
        let contenders = vec![
            contender(Role::Ours, "process-transport", ours(false, None)),
            contender(Role::Tokio, "tokio ChildStdout, 64 KiB reads", tokio(None)),
            contender(
                Role::Std,
                "std, blocking 64 KiB reads",
                blocking(64 * 1024, None),
            ),
        ];
        report.race(&name, UNIT, true, b, contenders);

        let name = format!("read {} from dd, fd 1, 1 MiB pipe", size(mib));
        let contenders = vec![
            contender(
                Role::Ours,
                "process-transport, pipe_capacity 1 MiB",
                ours(false, Some(MIB)),
            ),
            contender(
                Role::Tokio,
                "tokio ChildStdout, 64 KiB reads",
                tokio(Some(MIB)),
            ),
            contender(
                Role::Floor,
                "blocking 1 MiB reads",
                blocking(MIB, Some(MIB)),
            ),
        ];
        report.race(&name, UNIT, true, b, contenders);

        for pipe in [None, Some(MIB)] {
            let label = if pipe.is_some() {
                "1 MiB pipe"
            } else {
                "default 64 KiB pipe"
            };
            let name = format!("read {} from dd, fd 3, {label}", size(mib));
            report.race(
                &name,
                UNIT,
                true,
                b,
                vec![contender(Role::Ours, "process-transport", ours(true, pipe))],
            );
            report.note(&name, "std/tokio: no fd 3 without pre_exec".into());
        }
    }

    /// Reads every `Data` event of `dd` writing to fd 1 or fd 3.
    async fn ours_read(mib: usize, to_fd3: bool, pipe: Option<usize>) {
        let fd = if to_fd3 { 3 } else { 1 };
        let mut cmd = process_transport::Command::new("dd");
        cmd.args(dd_args(mib, to_fd3))
            .fds([(0, ChildFd::Null), (1, ChildFd::Null), (2, ChildFd::Null)])
            .fd(fd, ChildFd::ParentReads);
        if let Some(p) = pipe {
            cmd.pipe_capacity(fd, p);
        }
        let mut child = cmd.spawn().expect("spawn dd");
        let mut total = 0;
        while let Some(event) = child.next().await {
            match event {
                Event::Data { data, .. } => total += data.len(),
                Event::Ended(status) => assert!(status.expect("status").success()),
                _ => {}
            }
        }
        assert_eq!(total, mib * MIB);
    }

    fn dd_std(mib: usize) -> std::process::Command {
        let mut cmd = std::process::Command::new("dd");
        cmd.args(dd_args(mib, false))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    }

    async fn tokio_read(mib: usize, pipe: Option<usize>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut child = tokio::process::Command::from(dd_std(mib))
            .spawn()
            .expect("spawn dd");
        let mut out = child.stdout.take().unwrap();
        if let Some(p) = pipe {
            set_pipe_size(out.as_raw_fd(), p);
        }
        let mut total = 0;
        loop {
            match out.read(&mut buf).await.expect("read") {
                0 => break,
                n => total += n,
            }
        }
        assert!(child.wait().await.expect("wait").success());
        assert_eq!(total, mib * MIB);
    }

    fn blocking_read(mib: usize, read_size: usize, pipe: Option<usize>) {
        let mut buf = vec![0u8; read_size];
        let mut child = dd_std(mib).spawn().expect("spawn dd");
        let mut out = child.stdout.take().unwrap();
        if let Some(p) = pipe {
            set_pipe_size(out.as_raw_fd(), p);
        }
        let mut total = 0;
        loop {
            match out.read(&mut buf).expect("read") {
                0 => break,
                n => total += n,
            }
        }
        assert!(child.wait().expect("wait").success());
        assert_eq!(total, mib * MIB);
    }

    pub fn write(rt: &Runtime, cfg: &Config, report: &mut Report) {
        let (mib, b) = (cfg.transfer_mib, cfg.bulk);
        let bytes = mib * MIB;
        for pipe in [None, Some(MIB)] {
            let label = if pipe.is_some() {
                "1 MiB pipe"
            } else {
                "default 64 KiB pipe"
            };
            let name = format!(
                "write {} to cat >/dev/null, 1 MiB writes, {label}",
                size(mib)
            );
            let contenders = vec![
                contender(Role::Ours, "process-transport write_all", move || {
                    gib_per_s(bytes, || rt.block_on(ours_write(mib, pipe)))
                }),
                contender(Role::Tokio, "tokio ChildStdin write_all", move || {
                    gib_per_s(bytes, || rt.block_on(tokio_write(mib, pipe)))
                }),
                contender(Role::Std, "std, blocking write_all", move || {
                    gib_per_s(bytes, || blocking_write(mib, pipe))
                }),
            ];
            report.race(&name, UNIT, true, b, contenders);
        }
    }

    async fn ours_write(mib: usize, pipe: Option<usize>) {
        let chunk = bytes::Bytes::from(vec![0u8; MIB]);
        let mut cmd = process_transport::Command::new("cat");
        cmd.fds([
            (0, ChildFd::ParentWrites),
            (1, ChildFd::Null),
            (2, ChildFd::Null),
        ]);
        if let Some(p) = pipe {
            cmd.pipe_capacity(0, p);
        }
        let mut child = cmd.spawn().expect("spawn cat");
        for _ in 0..mib {
            child.write_all(0, chunk.clone()).await.expect("write");
        }
        assert!(child.wait().await.expect("wait").success());
    }

    fn cat_std() -> std::process::Command {
        let mut cmd = std::process::Command::new("cat");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    async fn tokio_write(mib: usize, pipe: Option<usize>) {
        let chunk = vec![0u8; MIB];
        let mut child = tokio::process::Command::from(cat_std())
            .spawn()
            .expect("spawn cat");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(p) = pipe {
            set_pipe_size(stdin.as_raw_fd(), p);
        }
        for _ in 0..mib {
            stdin.write_all(&chunk).await.expect("write");
        }
        drop(stdin);
        assert!(child.wait().await.expect("wait").success());
    }

    fn blocking_write(mib: usize, pipe: Option<usize>) {
        let chunk = vec![0u8; MIB];
        let mut child = cat_std().spawn().expect("spawn cat");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(p) = pipe {
            set_pipe_size(stdin.as_raw_fd(), p);
        }
        for _ in 0..mib {
            stdin.write_all(&chunk).expect("write");
        }
        drop(stdin);
        assert!(child.wait().expect("wait").success());
    }
}

// ----- 5: reaping -------------------------------------------------------------------------

mod reaping {
    use super::*;

    const SLEEP: [&CStr; 2] = [c"/bin/sleep", c"1000"];

    /// Milliseconds from the first kill to the last status, with `n` sleepers per sample.
    pub fn all(rt: &Runtime, cfg: &Config, report: &mut Report) {
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
}

// ----- 6: memory --------------------------------------------------------------------------

mod memory {
    use super::*;

    pub fn all(cfg: &Config, report: &mut Report) {
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
}
