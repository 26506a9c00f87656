#![no_main]
//! The fd planner (`process_transport::fuzz::plan`) on arbitrary maps: the simulated result
//! must be the requested map, or the error must be the typed error the map deserves. See
//! `check_plan`.

use libfuzzer_sys::fuzz_target;
use process_transport_fuzz::{PlanInput, check_plan};

fuzz_target!(|input: PlanInput| check_plan(&input));
