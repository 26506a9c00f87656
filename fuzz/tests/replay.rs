//! The fuzz checks without libFuzzer: the inputs that once failed, then a plain driver that
//! feeds pseudo-random bytes through `arbitrary`. Run with `cargo test` in `fuzz/`.

use arbitrary::{Arbitrary, Unstructured};
use process_transport_fuzz::{
    Capacity, CommandInput, FdKind, FdNum, PlanInput, check_command, check_plan,
};

/// `check_command` counts the process's fds, so command checks run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn empty_command() -> CommandInput {
    CommandInput {
        program: Some(Vec::new()),
        arg0: None,
        args: Vec::new(),
        env: Vec::new(),
        cwd: None,
        fd_map: None,
        fd_calls: Vec::new(),
        pipe_capacity: Vec::new(),
        uid: None,
        gid: None,
        new_session: false,
        process_group: None,
        parent_death_signal: None,
    }
}

/// Found first: an `Inherit` of a closed fd whose number an earlier pipe then took.
#[test]
fn inherit_of_a_number_a_pipe_takes() {
    let _serial = serial();
    check_command(&CommandInput {
        fd_calls: vec![
            (FdNum::High(83), FdKind::Inherit(FdNum::Small(23))),
            (FdNum::Small(23), FdKind::ParentReads),
        ],
        ..empty_command()
    });
}

/// Found second: a refused capacity on fd 0 hid a capacity for a non-pipe fd.
#[test]
fn capacity_for_a_non_pipe_after_a_refused_one() {
    let _serial = serial();
    check_command(&CommandInput {
        pipe_capacity: vec![
            (FdNum::Small(0), Capacity::Huge(u32::MAX)),
            (FdNum::High(101), Capacity::Huge(10)),
        ],
        ..empty_command()
    });
}

/// A child fd just under any fd limit with a swap: scratch copies must stay low.
#[test]
fn swap_with_a_high_target() {
    check_plan(&PlanInput {
        mappings: vec![
            (FdNum::Small(0), FdNum::Small(1)),
            (FdNum::Small(1), FdNum::Small(0)),
            (FdNum::Raw(19_999), FdNum::Small(7)),
        ],
        source_cloexec: vec![true, false],
        other_open: Vec::new(),
    });
}

/// xorshift64*, so the driver needs no extra dependency.
fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn random_plans() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000 {
        let data = bytes(&mut seed, 16 + i % 512);
        if let Ok(input) = PlanInput::arbitrary(&mut Unstructured::new(&data)) {
            check_plan(&input);
        }
    }
}

#[test]
fn random_commands() {
    let _serial = serial();
    let mut seed = 0x2545_f491_4f6c_dd1d;
    for i in 0..1_000 {
        let data = bytes(&mut seed, 8 + i % 200);
        if let Ok(input) = CommandInput::arbitrary(&mut Unstructured::new(&data)) {
            check_command(&input);
        }
    }
}
