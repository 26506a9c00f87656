//! The sections of the run, one module each, in the order they run.
//!
//! A section is a module here with
//!
//! ```text
//! pub fn run(rt: &Runtime, cfg: &Config, report: &mut Report)
//! ```
//!
//! that prints its `== N. title` heading(s) to stderr and adds its scenarios to the report
//! (with `report.race` for contenders taking turns, or `report.add` for single figures). Its
//! module name is its `--only` name. Adding one is that file plus its name in the list at the
//! bottom of this file; sizes it needs go in `Config`.

use tokio::runtime::Runtime;

use crate::Config;
use crate::report::Report;

/// One section: its `--only` name and what it runs.
pub struct Section {
    pub name: &'static str,
    pub run: fn(&Runtime, &Config, &mut Report),
}

/// Declares each section's module and lists it, so that the two cannot disagree.
macro_rules! sections {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// Every section, in the order they run.
        pub const ALL: &[Section] = &[$(Section {
            name: stringify!($name),
            run: $name::run,
        }),+];
    };
}

sections![
    spawn,
    read,
    write,
    reap,
    memory,
    roundtrip,
    exit_latency,
    many_fds,
    setup,
];
