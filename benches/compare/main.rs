//! Side-by-side benchmark: this crate against `tokio::process`, `std::process` and a raw
//! `posix_spawn` + `waitpid` floor, all in one run.
//!
//! ```text
//! cargo bench --bench compare -- [--quick] [--json PATH] [--only SECTION]
//! ```
//!
//! Sections, in the order they run (`--only` takes the name):
//! 1. and 2. `spawn`: spawn + wait `/bin/true`, from a small parent and from one that touched
//!    4 GiB;
//! 3. `read`: read throughput from `dd bs=1M` writing to fd 1 or fd 3;
//! 4. `write`: write throughput to `cat` (stdout on /dev/null);
//! 5. `reap`: reaping N sleeping children killed at once, and syscalls per exit;
//! 6. `memory`: parent RSS per live idle child (each implementation in a fresh copy of this
//!    binary);
//! 7. `roundtrip`: 64-byte lines written to `cat` and read back, one at a time;
//! 8. `exit_latency`: from closing `cat`'s stdin to the awaited status;
//! 9. `many_fds`: spawn + wait with a few and with 16,000 parent fds open;
//! 10. `setup`: what each child setup option (umask, rlimits, `2>&1`, cgroups) adds.
//!
//! Like-for-like stdio: `ChildFd::Null` against `Stdio::null()` and a `/dev/null` dup in the
//! floor; three pipes against `Stdio::piped()` and three `pipe2`s in the floor.
//!
//! The machine is shared and noisy, so the contenders of a scenario take turns sample by
//! sample (round robin) and every figure is a median: a burst of load hits all of them.
//!
//! Ratios are "our advantage": peer time / our time, or our rate / peer rate. Above 1 means
//! this crate is better; against the floor or the ceiling, 1.0 is the best possible.
//!
//! Where things are: this file reads the command line, builds the runtime and prints the
//! report; `harness` takes the samples, `report` turns them into the table and the JSON,
//! `common` holds what several sections use and `raw` is the `posix_spawn` floor. Each
//! section is a module under `sections/`; see there for how to add one.

mod common;
mod harness;
mod raw;
mod report;
mod sections;

use std::time::{Duration, Instant};

use harness::Budget;
use report::Report;
use tokio::runtime::Runtime;

/// What to run and how many samples to take, from the command line.
pub struct Config {
    quick: bool,
    json: Option<String>,
    /// `--only SECTION`: run one section (all when absent).
    only: Option<String>,
    /// Spawn scenarios: one sample is one spawn (sequential) or one round of 16 tasks.
    pub spawn: Budget,
    /// Throughput: one sample is one whole transfer.
    pub bulk: Budget,
    pub concurrent_rounds: usize,
    pub transfer_mib: usize,
    pub reap_ns: Vec<usize>,
    pub memory_n: usize,
    /// Touching memory is slow on this VM (about 5 s per GiB), so `--quick` uses 1 GiB.
    pub big_parent_gib: usize,
    /// Round trips of a small line per sample, and samples (alternating contenders).
    pub roundtrips: usize,
    pub rounds: usize,
    /// Extra fds the parent holds in the many-fds section.
    pub many_fds: usize,
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
                roundtrips: 2000,
                rounds: 3,
                many_fds: 16_000,
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
                roundtrips: 20_000,
                rounds: 5,
                many_fds: 16_000,
            }
        }
    }

    /// Whether the section named `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    /// Rounds that spawn many children get fewer samples.
    pub fn reap_budget(&self, n: usize) -> Budget {
        Budget::fixed(match n {
            ..1000 => 5,
            1000..=3000 if !self.quick => 3,
            _ => 1,
        })
    }

    /// The scenario-name prefix of the big-parent spawn scenarios.
    pub fn big_prefix(&self) -> String {
        format!("{} GiB parent: ", self.big_parent_gib)
    }
}

/// The runtime every scenario runs on (two workers, as the machine has two cores), with the fd
/// limit raised for the many-children scenarios.
pub fn bench_runtime() -> Runtime {
    common::raise_nofile_limit();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mem-child") {
        sections::memory::child_main(&args[i + 1], args[i + 2].parse().expect("N"));
        return;
    }
    let cfg = Config::from_args();
    if let Some(only) = &cfg.only
        && !sections::ALL.iter().any(|s| s.name == only)
    {
        let names: Vec<&str> = sections::ALL.iter().map(|s| s.name).collect();
        eprintln!("--only {only}: no such section; one of {}", names.join("|"));
        std::process::exit(2);
    }
    let rt = bench_runtime();
    let started = Instant::now();
    let mut report = Report::default();

    for section in sections::ALL.iter().filter(|s| cfg.runs(s.name)) {
        (section.run)(&rt, &cfg, &mut report);
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
