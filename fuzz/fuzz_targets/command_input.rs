#![no_main]
//! Arbitrary program, argv, env, cwd, fd map and options: spawning must give a typed
//! `InvalidInput` the oracle agrees with, or `SpawnError::Spawn` (the program never exists), and
//! never panic or leak an fd. See `check_command`.

use libfuzzer_sys::fuzz_target;
use process_transport_fuzz::{CommandInput, check_command};

fuzz_target!(|input: CommandInput| check_command(&input));
