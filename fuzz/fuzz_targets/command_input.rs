#![no_main]
//! Arbitrary program, argv, env, cwd, fd map and options: spawning must give a typed
//! `InvalidInput` the oracle agrees with, or `Error::Spawn` (the program never exists), and
//! never panic or leak an fd. See `check_command`.

use libfuzzer_sys::fuzz_target;
use process_transport_fuzz::{CommandInput, check_command};

fuzz_target!(|input: CommandInput| check_command(&input));

/// Read by LeakSanitizer at start-up. The reaper's first start leaks, on purpose, the write
/// end of its wake-up pipe (the SIGCHLD handler writes to it for the rest of the process);
/// without this, `cargo fuzz run command_input` stops at its first input with that report.
/// Only allocations made under the reaper's start are exempt.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:<process_transport::reaper::Reaper>::get\n".as_ptr()
}

/// Also read by LeakSanitizer: libFuzzer runs a leak check after many inputs, and each would
/// print the one suppressed leak again.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_options() -> *const std::ffi::c_char {
    c"print_suppressions=0".as_ptr()
}
