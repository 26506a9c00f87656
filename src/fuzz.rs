//! Internals the fuzz crate (`fuzz/`) drives, compiled only with `--cfg fuzzing`, which
//! `cargo fuzz` sets and `fuzz/.cargo/config.toml` sets for the fuzz crate's own builds. Not
//! part of the public API: nothing outside fuzzing can name these.

pub use crate::fd_plan::{FdStep, SimFd, plan, simulate};
