//! How samples are taken: budgets, contenders, and the round robin that makes contenders of
//! one scenario share the same load.

use std::time::{Duration, Instant};

use crate::report::Report;

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

pub fn contender<'a>(role: Role, name: &'static str, f: impl FnMut() -> f64 + 'a) -> Contender<'a> {
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

// Sampling lives here rather than in `report`, which only records and prints.
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
}
