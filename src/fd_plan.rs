//! Planning the child's fd shuffle: a pure function from "child fd N gets parent fd M" to the
//! list of `dup`/`close_range` steps the child runs between clone and exec.
//!
//! The plan has three phases, and the phases are what make every map work (swaps, fan-out,
//! cycles, sources that collide with targets, sparse high targets):
//!
//! 1. Every source fd whose *number* is also a target is copied to a scratch fd, the lowest
//!    number that is neither a target nor a source (`dup3(.., O_CLOEXEC)`), so that phase 2
//!    cannot clobber it before it is read, and scratch fds fit under any fd limit the map fits.
//! 2. Each target is filled with `dup2`, which also clears `FD_CLOEXEC` on the target.
//! 3. Everything that is not a target is closed with `close_range` over the gaps, including
//!    scratch fds, the original sources and any fd C code opened without `O_CLOEXEC`.
//!
//! Nothing here touches the OS, so it is tested by simulation: the tests below (property
//! tests included) and the fuzz crate, which reaches this module through `crate::fuzz`.
//! Real children running real maps are tested in `tests/fd_plan_properties.rs`.

use std::collections::BTreeMap;

use crate::error::InvalidInput;

/// One step of the child's fd shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdStep {
    /// Duplicate `from` onto `to` (closing whatever `to` was). With `cloexec` the copy is
    /// marked close-on-exec (a scratch copy); without it the copy survives exec.
    Dup {
        /// Source fd.
        from: i32,
        /// Destination fd.
        to: i32,
        /// Mark the destination close-on-exec.
        cloexec: bool,
    },
    /// Close every fd in `first..=last`.
    CloseRange {
        /// First fd to close.
        first: u32,
        /// Last fd to close (inclusive).
        last: u32,
    },
}

/// Plans the steps that leave the child with exactly `mappings` (child fd, parent fd) open,
/// and nothing else.
///
/// Sources are read before any target is written, so the order of `mappings` does not matter.
/// A map that cannot be planned is rejected with the error spawning returns for it, for the
/// first bad entry: a negative child fd, a negative (so never open) parent fd, a child fd
/// listed twice, or an fd so large that no scratch fd can be numbered.
pub fn plan(mappings: &[(i32, i32)]) -> Result<Vec<FdStep>, InvalidInput> {
    let mut targets: BTreeMap<i32, i32> = BTreeMap::new();
    for &(target, source) in mappings {
        if target < 0 {
            return Err(InvalidInput::NegativeChildFd(target));
        }
        if source < 0 {
            return Err(InvalidInput::InheritedFdNotOpen {
                child_fd: target,
                parent_fd: source,
            });
        }
        if targets.insert(target, source).is_some() {
            return Err(InvalidInput::DuplicateChildFd(target));
        }
    }

    // Scratch fds take the lowest numbers that are neither a target nor a source, so they
    // stay below RLIMIT_NOFILE whenever the map itself does (numbering them above the highest
    // fd in play made a map with a child fd just under the limit fail with EBADF).
    let in_play: std::collections::BTreeSet<i32> =
        targets.iter().flat_map(|(&t, &s)| [t, s]).collect();
    let mut free = (0..=i32::MAX).filter(|fd| !in_play.contains(fd));
    let mut steps = Vec::with_capacity(mappings.len() * 2 + 2);

    // Phase 1: move sources out of the way of targets.
    let mut scratch: BTreeMap<i32, i32> = BTreeMap::new();
    for &source in targets.values() {
        if targets.contains_key(&source) && !scratch.contains_key(&source) {
            let to = free.next().ok_or(InvalidInput::ChildFdOutOfRange(source))?;
            scratch.insert(source, to);
            steps.push(FdStep::Dup {
                from: source,
                to,
                cloexec: true,
            });
        }
    }

    // Phase 2: fill the targets.
    for (&target, &source) in &targets {
        let from = scratch.get(&source).copied().unwrap_or(source);
        steps.push(FdStep::Dup {
            from,
            to: target,
            cloexec: false,
        });
    }

    // Phase 3: close the gaps between targets, and everything above the last one.
    let mut next_open: u32 = 0;
    for &target in targets.keys() {
        let target = target as u32;
        if target > next_open {
            steps.push(FdStep::CloseRange {
                first: next_open,
                last: target - 1,
            });
        }
        next_open = target + 1;
    }
    steps.push(FdStep::CloseRange {
        first: next_open,
        last: u32::MAX,
    });
    Ok(steps)
}

/// What an fd refers to in [`simulate`]: an opaque identity and its close-on-exec flag.
#[cfg(any(test, fuzzing))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimFd {
    /// Identity of the open file description.
    pub file: u64,
    /// The fd's close-on-exec flag.
    pub cloexec: bool,
}

/// Runs `steps` against a simulated fd table and returns the table the new program would see
/// after exec (close-on-exec fds removed). `None` if a step reads a closed fd.
///
/// This is the model the tests and the fuzz targets check [`plan`] against.
#[cfg(any(test, fuzzing))]
pub fn simulate(open: &BTreeMap<i32, SimFd>, steps: &[FdStep]) -> Option<BTreeMap<i32, u64>> {
    let mut table = open.clone();
    for step in steps {
        match *step {
            FdStep::Dup { from, to, cloexec } => {
                let file = table.get(&from)?.file;
                table.insert(to, SimFd { file, cloexec });
            }
            FdStep::CloseRange { first, last } => {
                table.retain(|&fd, _| (fd as u32) < first || (fd as u32) > last);
            }
        }
    }
    Some(
        table
            .into_iter()
            .filter(|(_, f)| !f.cloexec)
            .map(|(fd, f)| (fd, f.file))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `fds` as distinct files (identity = fd number), all close-on-exec unless listed
    /// in `inheritable`, plans `map` and returns what the child would see.
    fn run(fds: &[i32], inheritable: &[i32], map: &[(i32, i32)]) -> BTreeMap<i32, u64> {
        let open = fds
            .iter()
            .map(|&fd| {
                let cloexec = !inheritable.contains(&fd);
                (
                    fd,
                    SimFd {
                        file: fd as u64,
                        cloexec,
                    },
                )
            })
            .collect();
        simulate(&open, &plan(map).unwrap()).expect("plan read a closed fd")
    }

    fn expect(pairs: &[(i32, i32)]) -> BTreeMap<i32, u64> {
        pairs.iter().map(|&(t, s)| (t, s as u64)).collect()
    }

    #[test]
    fn empty_map_closes_everything_even_inheritable_fds() {
        assert_eq!(run(&[0, 1, 2, 5], &[0, 1, 2, 5], &[]), expect(&[]));
        assert_eq!(
            plan(&[]).unwrap(),
            vec![FdStep::CloseRange {
                first: 0,
                last: u32::MAX
            }]
        );
    }

    #[test]
    fn default_stdio_from_fresh_pipes() {
        assert_eq!(
            run(&[0, 1, 2, 7, 8, 9], &[0, 1, 2], &[(0, 7), (1, 8), (2, 9)]),
            expect(&[(0, 7), (1, 8), (2, 9)])
        );
    }

    #[test]
    fn swap_is_a_cycle() {
        assert_eq!(
            run(&[0, 1], &[], &[(0, 1), (1, 0)]),
            expect(&[(0, 1), (1, 0)])
        );
    }

    #[test]
    fn three_cycle() {
        assert_eq!(
            run(&[3, 4, 5], &[], &[(3, 4), (4, 5), (5, 3)]),
            expect(&[(3, 4), (4, 5), (5, 3)])
        );
    }

    #[test]
    fn fan_out_like_2_to_1() {
        assert_eq!(
            run(&[0, 1, 2], &[], &[(0, 0), (1, 1), (2, 1)]),
            expect(&[(0, 0), (1, 1), (2, 1)])
        );
    }

    #[test]
    fn fd_kept_in_place_loses_cloexec() {
        // dup2(fd, fd) would keep FD_CLOEXEC set; the plan must not rely on it.
        assert_eq!(run(&[4], &[], &[(4, 4)]), expect(&[(4, 4)]));
    }

    #[test]
    fn sparse_high_targets_and_unmapped_inheritable_fds() {
        assert_eq!(
            run(
                &[0, 1, 2, 10, 11, 50, 2000],
                &[0, 1, 2, 50, 2000],
                &[(100, 10), (1000, 11)]
            ),
            expect(&[(100, 10), (1000, 11)])
        );
    }

    #[test]
    fn source_above_every_target_is_not_moved() {
        let steps = plan(&[(0, 9)]).unwrap();
        assert_eq!(
            steps[0],
            FdStep::Dup {
                from: 9,
                to: 0,
                cloexec: false
            }
        );
    }

    #[test]
    fn rejects_bad_maps() {
        assert_eq!(plan(&[(-1, 3)]), Err(InvalidInput::NegativeChildFd(-1)));
        assert_eq!(
            plan(&[(1, 3), (1, 4)]),
            Err(InvalidInput::DuplicateChildFd(1))
        );
    }

    #[test]
    fn a_negative_parent_fd_is_named_with_its_child_fd() {
        // Not as a negative *child* fd: the error names both numbers, as spawning does for
        // any parent fd that is not open.
        assert_eq!(
            plan(&[(0, 5), (1, -3)]),
            Err(InvalidInput::InheritedFdNotOpen {
                child_fd: 1,
                parent_fd: -3
            })
        );
    }

    #[test]
    fn scratch_fds_are_low_even_for_high_targets() {
        // A swap plus a child fd just under a 20000-fd limit: the scratch copies must not be
        // numbered 20000 and up, where dup3 fails with EBADF.
        let map = [(0, 1), (1, 0), (19_999, 7)];
        for step in plan(&map).unwrap() {
            if let FdStep::Dup {
                to, cloexec: true, ..
            } = step
            {
                assert!(to < 20, "scratch fd {to}");
            }
        }
        assert_eq!(run(&[0, 1, 7], &[], &map), expect(&map));
        let top = [(i32::MAX, i32::MAX)];
        assert_eq!(run(&[i32::MAX], &[], &top), expect(&top));
    }

    /// Random maps, with cycles, fan-out and collisions with other open parent fds.
    mod properties {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::super::*;

        /// Fd numbers: dense low numbers (so cycles and fan-out are common) and a band
        /// straddling 1024.
        fn sim_fd() -> impl Strategy<Value = i32> {
            prop_oneof![3 => 0..16i32, 1 => 1020..1040i32, 1 => 1024..1100i32]
        }

        /// Runs `map` through plan + simulate, with every source open (identity = its
        /// number, close-on-exec as `cloexec` says) plus `others`.
        fn simulate_map(
            map: &[(i32, i32)],
            cloexec: &[bool],
            others: &BTreeMap<i32, bool>,
        ) -> (Vec<FdStep>, BTreeMap<i32, u64>) {
            let steps = plan(map).expect("a valid map must plan");
            let mut open: BTreeMap<i32, SimFd> = others
                .iter()
                .map(|(&fd, &cloexec)| {
                    (
                        fd,
                        SimFd {
                            file: fd as u64,
                            cloexec,
                        },
                    )
                })
                .collect();
            for (i, &(_, source)) in map.iter().enumerate() {
                let cloexec = cloexec
                    .get(i % cloexec.len().max(1))
                    .copied()
                    .unwrap_or(true);
                open.insert(
                    source,
                    SimFd {
                        file: source as u64,
                        cloexec,
                    },
                );
            }
            let table = simulate(&open, &steps).expect("the plan read a closed fd");
            (steps, table)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The simulated child has exactly the requested fds, whatever the order of the
            /// map, the close-on-exec flags of the sources, or which other parent fds are
            /// open (inheritable ones included); and scratch copies use low numbers that are
            /// not in play.
            #[test]
            fn simulated_child_has_exactly_the_map(
                map in prop::collection::btree_map(sim_fd(), sim_fd(), 0..12),
                cloexec in prop::collection::vec(any::<bool>(), 1..12),
                others in prop::collection::btree_map(sim_fd(), any::<bool>(), 0..12),
                seed in any::<u64>(),
            ) {
                let mut pairs: Vec<(i32, i32)> = map.iter().map(|(&t, &s)| (t, s)).collect();
                let want: BTreeMap<i32, u64> = pairs.iter().map(|&(t, s)| (t, s as u64)).collect();
                let (steps, got) = simulate_map(&pairs, &cloexec, &others);
                prop_assert_eq!(&got, &want, "steps {:?}", steps);

                // Order does not matter.
                let n = pairs.len().max(1);
                pairs.rotate_left((seed as usize) % n);
                pairs.reverse();
                let (_, got) = simulate_map(&pairs, &cloexec, &others);
                prop_assert_eq!(&got, &want);

                let in_play: BTreeSet<i32> = map.iter().flat_map(|(&t, &s)| [t, s]).collect();
                for step in &steps {
                    if let FdStep::Dup { to, cloexec: true, .. } = *step {
                        prop_assert!(!in_play.contains(&to), "scratch {} in play", to);
                        prop_assert!((to as usize) <= 2 * in_play.len(), "scratch {} too high", to);
                    }
                }
                // The last step closes everything above the highest target.
                let top = map.keys().next_back().map_or(0, |&t| t as u32 + 1);
                prop_assert_eq!(steps.last(), Some(&FdStep::CloseRange { first: top, last: u32::MAX }));
            }

            /// A bad entry anywhere gives the typed error for the first bad entry.
            #[test]
            fn bad_maps_give_typed_errors(
                map in prop::collection::btree_map(sim_fd(), sim_fd(), 1..8),
                at in any::<prop::sample::Index>(),
                kind in 0..3u8,
                bad in i32::MIN..0,
            ) {
                let mut pairs: Vec<(i32, i32)> = map.iter().map(|(&t, &s)| (t, s)).collect();
                let i = at.index(pairs.len() + 1);
                let (entry, want) = match kind {
                    0 => ((bad, 3), InvalidInput::NegativeChildFd(bad)),
                    1 => (
                        (5000, bad),
                        InvalidInput::InheritedFdNotOpen { child_fd: 5000, parent_fd: bad },
                    ),
                    _ => {
                        let dup = pairs[i % pairs.len()].0;
                        ((dup, 7), InvalidInput::DuplicateChildFd(dup))
                    }
                };
                // For a duplicate, the error names the second occurrence, so put it after the
                // first.
                let i = if kind == 2 {
                    pairs.iter().position(|p| p.0 == entry.0).unwrap() + 1
                } else {
                    i
                };
                pairs.insert(i, entry);
                prop_assert_eq!(plan(&pairs), Err(want));
            }
        }
    }
}
