//! Property tests of the fd shuffle on real children: random maps with cycles, fan-out and
//! collisions with open parent fds (some at 1024 and above), checked against what the children
//! report of every fd they have (device, inode). The planner's own property tests, against
//! its simulation, are unit tests in `src/fd_plan.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::IntoRawFd;

use common::{collect, fd_report_script, identity, parse_fd_report, python};
use process_transport::{ChildFd, Command};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// Parent fd numbers the real-spawn cases place their files on. They are far above what this
/// test binary otherwise has open, so `dup2` onto them clobbers nothing of the harness.
const SLOTS: [i32; 20] = [
    300, 301, 302, 303, 304, 305, 306, 307, 1023, 1024, 1025, 1026, 1027, 1028, 1029, 1030, 4090,
    4091, 4092, 4093,
];

/// Child fd numbers: the standard ones, low ones, and the same numbers as the slots, so that
/// targets collide with sources (swaps, cycles, in-place).
fn child_fd() -> impl Strategy<Value = i32> {
    prop_oneof![2 => 0..10i32, 3 => proptest::sample::select(&SLOTS[..])]
}

/// Opens a file of `kind` (a pipe, /dev/null or a temp file) and returns its fd plus any
/// helper fd to close afterwards (the other end of a pipe).
fn open_object(kind: u8, case: usize) -> (i32, Option<i32>) {
    match kind % 3 {
        0 => {
            let mut fds = [0; 2];
            // SAFETY: valid array for pipe2.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            (fds[0], Some(fds[1]))
        }
        1 => {
            // SAFETY: a literal path.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            assert!(fd >= 0);
            (fd, None)
        }
        _ => {
            let path = std::env::temp_dir().join(format!(
                "pt-fdprop-{}-{case}-{}",
                std::process::id(),
                rand_suffix()
            ));
            let file = std::fs::File::create(&path).expect("temp file");
            std::fs::remove_file(&path).ok();
            (file.into_raw_fd(), None)
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn set_cloexec(fd: i32, on: bool) {
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
}

/// Places `obj` on `slot` in this process (closing `obj`).
fn place(obj: i32, slot: i32, cloexec: bool) {
    // SAFETY: dup2 onto a number this test owns.
    assert_eq!(unsafe { libc::dup2(obj, slot) }, slot);
    // SAFETY: closing our own fd.
    unsafe { libc::close(obj) };
    set_cloexec(slot, cloexec);
}

fn close(fd: i32) {
    // SAFETY: closing an fd this test opened.
    unsafe { libc::close(fd) };
}

/// Spawns a python child with `map` (child fd -> parent fd) plus a report pipe at child fd
/// `report`, and returns what the child says each of its fds is.
fn child_view(map: &BTreeMap<i32, i32>, report: i32) -> BTreeMap<i32, (u64, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut fds: Vec<(i32, ChildFd)> = map
            .iter()
            .map(|(&c, &p)| (c, ChildFd::Inherit(p)))
            .collect();
        fds.push((report, ChildFd::ParentReads));
        let mut child = Command::new(python())
            .args(["-I", "-S", "-c", &fd_report_script(report)])
            .fds(fds)
            .spawn()
            .expect("spawn");
        let outcome = collect(&mut child, common::LIMIT).await;
        assert!(outcome.status().success(), "child failed: {outcome:?}");
        parse_fd_report(outcome.out(report))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Real children get exactly the mapped files at the mapped numbers and nothing else,
    /// for maps whose targets collide with open parent fds (some of them inheritable and
    /// unmapped), with swaps, cycles and fan-out, around and above fd 1024.
    #[test]
    fn real_child_has_exactly_the_map(
        slots in subsequence(&SLOTS[..], 1..=8).prop_shuffle(),
        kinds in prop::collection::vec(any::<u8>(), 8),
        cloexec in prop::collection::vec(any::<bool>(), 8),
        picks in prop::collection::btree_map(child_fd(), any::<prop::sample::Index>(), 0..10),
        report in child_fd(),
    ) {
        let mut helpers = Vec::new();
        for (i, &slot) in slots.iter().enumerate() {
            let (obj, helper) = open_object(kinds[i], i);
            place(obj, slot, cloexec[i]);
            helpers.extend(helper);
        }
        let mut map: BTreeMap<i32, i32> = picks
            .iter()
            .map(|(&child, idx)| (child, slots[idx.index(slots.len())]))
            .collect();
        map.remove(&report);
        let want: BTreeMap<i32, (u64, u64)> =
            map.iter().map(|(&c, &p)| (c, identity(p))).collect();

        let seen = child_view(&map, report);

        for &slot in &slots {
            close(slot);
        }
        for fd in helpers {
            close(fd);
        }
        let mut expected_fds: BTreeSet<i32> = map.keys().copied().collect();
        expected_fds.insert(report);
        prop_assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), expected_fds,
            "map {:?} report {}", map, report);
        for (fd, id) in &want {
            prop_assert_eq!(seen.get(fd), Some(id), "child fd {} of map {:?}", fd, map);
        }
    }
}

/// A swap plus a child fd one below the soft RLIMIT_NOFILE: scratch copies must not be
/// numbered at or above the limit (they once were, and the spawn failed with EBADF at a
/// child fd nobody asked for).
#[test]
fn child_fd_just_under_the_fd_limit_with_a_swap() {
    let (soft, _) = common::nofile_limit();
    let top = i32::try_from(soft.min(1 << 20)).unwrap() - 1;
    let (a, ha) = open_object(0, 1);
    let (b, _) = open_object(2, 2);
    place(a, 310, false);
    place(b, 311, true);
    let map = BTreeMap::from([(310, 311), (311, 310), (top, 311), (0, 310)]);
    let want: BTreeMap<i32, (u64, u64)> = map.iter().map(|(&c, &p)| (c, identity(p))).collect();
    let seen = child_view(&map, 5);
    for fd in [310, 311] {
        close(fd);
    }
    close(ha.unwrap());
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![0, 5, 310, 311, top]
    );
    for (fd, id) in &want {
        assert_eq!(seen.get(fd), Some(id), "child fd {fd}");
    }
}
