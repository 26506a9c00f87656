//! Low fd numbers the crate keeps for itself, so that a child can share the parent's fd table
//! at clone and keep only its bottom part.
//!
//! Copying the fd table at clone costs time in proportion to its highest open fd, and a
//! service holding thousands of connections pays that at every spawn. The child is instead
//! cloned with `CLONE_FILES` and its very first fd-related step is
//! `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`: the kernel copies only the fds below
//! `first`. For that every fd the child reads must sit below `first` when it is cloned, so
//! each spawn moves its sources (pipe ends, inherited fds, the cgroup directory) onto a
//! [`SlotSet`] of low numbers just before the clone, and puts placeholders back right after,
//! so that no slot keeps a pipe end open (which would delay the child's EOF).
//!
//! Slots are reserved at first use, at the lowest free numbers then: a process that opened
//! thousands of fds before its first spawn gets high slot numbers and less gain. Spawns
//! running at the same time each take a set of their own, so they do not wait on each other:
//! [`SETS`] sets are reserved together at the first spawn, a fixed footprint of
//! `SETS * SLOTS_PER_SET + 1` fds that never grows. A spawn that finds them all lent out
//! reserves a set for itself alone, at whatever numbers are free then, and closes it after
//! (less gain where the low numbers are taken). A spawn whose sources do not fit in a
//! set, or any spawn once the kernel has refused `CLOSE_RANGE_UNSHARE` (or with
//! `PROCESS_TRANSPORT_FD_TABLE=copy`), takes the old path: a full copy of the table, closed
//! in the child.
//!
//! This module is bookkeeping; the syscalls are in `sys::fd` and `sys::child`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, Once, OnceLock};

use crate::sys;

/// Slots in one set: stdio, a few extra fds and the cgroup directory fit.
pub(crate) const SLOTS_PER_SET: usize = 8;

/// Sets kept for the life of the process: spawns in flight at once without a set of their
/// own made for them.
pub(crate) const SETS: usize = 4;

/// Set to `copy` to have every child copy the whole fd table (the path for kernels that
/// refuse `CLOSE_RANGE_UNSHARE`, forced, to test it).
const TABLE_ENV: &str = "PROCESS_TRANSPORT_FD_TABLE";

/// Reserved fd numbers, ascending, each holding a copy of the placeholder while unused.
struct SlotSet {
    slots: Vec<OwnedFd>,
    /// One of the [`SETS`] kept sets, returned to the pool after use (else closed).
    kept: bool,
}

/// The kept sets not lent to a spawn right now, and whether they were reserved yet.
static POOL: Mutex<(bool, Vec<SlotSet>)> = Mutex::new((false, Vec::new()));

/// `/dev/null`, what every idle slot refers to.
static PLACEHOLDER: OnceLock<OwnedFd> = OnceLock::new();

/// Where each source goes, worked out from fd numbers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// `(source, slot)` pairs, in the order the slots are handed out.
    pub(crate) moves: Vec<(RawFd, RawFd)>,
    /// The slots not handed out yet, ascending.
    pub(crate) spare: Vec<RawFd>,
}

/// Assigns a slot to every distinct source above the highest slot (those below it already
/// sit low), keeping `reserve` slots spare for fds known later. `None` when they do not fit.
/// Negative sources are left alone: the plan rejects them with the user's own number.
pub(crate) fn assign(sources: &[RawFd], slots: &[RawFd], reserve: usize) -> Option<Assignment> {
    let top = slots.iter().copied().max().unwrap_or(-1);
    let mut spare: Vec<RawFd> = slots.to_vec();
    spare.sort_unstable();
    spare.reverse();
    let mut moves: Vec<(RawFd, RawFd)> = Vec::new();
    for &source in sources {
        if source <= top || moves.iter().any(|&(s, _)| s == source) {
            continue;
        }
        moves.push((source, spare.pop()?));
    }
    if spare.len() < reserve {
        return None;
    }
    spare.reverse();
    Some(Assignment { moves, spare })
}

/// The lowest fd number the child need not keep: one above every fd in `needed`.
pub(crate) fn first_unneeded(needed: impl IntoIterator<Item = RawFd>) -> u32 {
    needed
        .into_iter()
        .filter(|&fd| fd >= 0)
        .map(|fd| fd as u32 + 1)
        .max()
        .unwrap_or(0)
}

/// Whether children may share the fd table at clone: not where forced off by the
/// environment, nor once the kernel has refused.
fn sharing_enabled() -> bool {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        if std::env::var_os(TABLE_ENV).is_some_and(|v| v == "copy") {
            sys::child::disable_fd_table_sharing();
        }
    });
    sys::child::fd_table_sharing_supported()
}

/// A slot set lent to one spawn, with its sources assigned. Dropping it puts the
/// placeholder back in every slot it filled and returns the set to the pool.
pub(crate) struct Lease {
    set: Option<SlotSet>,
    assignment: Assignment,
    /// Fds the child reads, after the moves.
    needed: Vec<RawFd>,
    /// How many of the moves are in place.
    placed: usize,
}

impl Lease {
    /// Lends a set for a child reading `sources`, with `reserve` slots kept for fds known
    /// later ([`Lease::late`]). `None` means this spawn copies the whole table: sharing is off,
    /// the sources do not fit, or no set could be reserved (an fd limit already reached is
    /// then met by the spawn itself, which reports it).
    pub(crate) fn new(sources: &[RawFd], reserve: usize) -> Option<Lease> {
        if !sharing_enabled() {
            return None;
        }
        let set = take_set()?;
        let numbers: Vec<RawFd> = set.slots.iter().map(|s| s.as_raw_fd()).collect();
        let Some(assignment) = assign(sources, &numbers, reserve) else {
            give_back(set);
            return None;
        };
        let needed = sources
            .iter()
            .map(|&s| {
                assignment
                    .moves
                    .iter()
                    .find(|&&(from, _)| from == s)
                    .map_or(s, |&(_, slot)| slot)
            })
            .collect();
        Some(Lease {
            set: Some(set),
            assignment,
            needed,
            placed: 0,
        })
    }

    /// The number the child reads `source` under.
    pub(crate) fn source(&self, source: RawFd) -> RawFd {
        self.assignment
            .moves
            .iter()
            .find(|&&(from, _)| from == source)
            .map_or(source, |&(_, slot)| slot)
    }

    /// Assigns a reserved slot to `fd`, an fd the child reads that was opened after
    /// [`Lease::new`]; returns the number the child reads it under.
    pub(crate) fn late(&mut self, fd: RawFd) -> RawFd {
        let top = self
            .set
            .as_ref()
            .and_then(|s| s.slots.last())
            .map_or(-1, |s| s.as_raw_fd());
        let number = if fd <= top || self.assignment.spare.is_empty() {
            fd
        } else {
            let slot = self.assignment.spare.remove(0);
            self.assignment.moves.push((fd, slot));
            slot
        };
        self.needed.push(number);
        number
    }

    /// Copies every source onto its slot. On failure the slots filled so far get their
    /// placeholder back when the lease drops.
    pub(crate) fn place(&mut self) -> std::io::Result<()> {
        while let Some(&(from, to)) = self.assignment.moves.get(self.placed) {
            sys::fd::dup_onto(from, to)?;
            self.placed += 1;
        }
        Ok(())
    }

    /// The `first` of the child's `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`.
    pub(crate) fn first_unneeded(&self) -> u32 {
        first_unneeded(self.needed.iter().copied())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(placeholder) = PLACEHOLDER.get() {
            for &(_, slot) in self.assignment.moves.iter().take(self.placed) {
                // Cannot fail: both fds are ours and open. Were it to, the slot would keep a
                // copy of a child end until the next spawn that uses it.
                let _ = sys::fd::dup_onto(placeholder.as_raw_fd(), slot);
            }
        }
        if let Some(set) = self.set.take() {
            give_back(set);
        }
    }
}

fn take_set() -> Option<SlotSet> {
    {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if !pool.0 {
            // All at once, so that the crate's fd footprint is settled by the first spawn.
            let sets: Option<Vec<SlotSet>> = (0..SETS).map(|_| reserve_set(true)).collect();
            if let Some(sets) = sets {
                pool.1 = sets;
                pool.0 = true;
            }
        }
        if let Some(set) = pool.1.pop() {
            return Some(set);
        }
    }
    reserve_set(false)
}

/// A new set at the lowest free numbers.
fn reserve_set(kept: bool) -> Option<SlotSet> {
    let placeholder = match PLACEHOLDER.get() {
        Some(fd) => fd,
        None => {
            let opened = sys::fd::open_dev_null().ok()?;
            // Another thread may have won the race; its placeholder serves as well.
            let _ = PLACEHOLDER.set(opened);
            PLACEHOLDER.get()?
        }
    };
    let mut slots = Vec::with_capacity(SLOTS_PER_SET);
    for _ in 0..SLOTS_PER_SET {
        slots.push(sys::fd::dup_lowest(placeholder).ok()?);
    }
    slots.sort_by_key(|s| s.as_raw_fd());
    Some(SlotSet { slots, kept })
}

fn give_back(set: SlotSet) {
    if set.kept {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).1.push(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_above_the_slots_move() {
        let got = assign(&[0, 2, 9000, 12000], &[3, 4, 5, 6], 0).unwrap();
        assert_eq!(got.moves, [(9000, 3), (12000, 4)]);
        assert_eq!(got.spare, [5, 6]);
    }

    #[test]
    fn a_source_named_twice_takes_one_slot() {
        let got = assign(&[500, 500, 600], &[10, 11], 0).unwrap();
        assert_eq!(got.moves, [(500, 10), (600, 11)]);
    }

    #[test]
    fn too_many_sources_or_too_few_spares_do_not_fit() {
        assert_eq!(assign(&[100, 101, 102], &[3, 4], 0), None);
        assert_eq!(assign(&[100, 101], &[3, 4], 1), None);
        assert!(assign(&[100], &[3, 4], 1).is_some());
    }

    #[test]
    fn negative_sources_are_left_for_the_plan_to_reject() {
        let got = assign(&[-1, 100], &[3], 0).unwrap();
        assert_eq!(got.moves, [(100, 3)]);
    }

    #[test]
    fn first_unneeded_is_one_above_the_highest() {
        assert_eq!(first_unneeded([]), 0);
        assert_eq!(first_unneeded([0, 7, 3]), 8);
        assert_eq!(first_unneeded([-1]), 0);
        assert_eq!(first_unneeded([i32::MAX]), 1u32 << 31);
    }
}
