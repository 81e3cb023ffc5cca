//! The RW / RO / keep-RO state model (ARCHITECTURE.md §2), as pure functions over the forest's shape.
//!
//! Rules, in order of precedence for a node's keep-RO reason:
//! 1. `requested`: `--read-only`, a protect glob, or a toggle in the UI.
//! 2. `file-mode`: the file's permission bits give no one write access (`chmod a-w`, as
//!    Proxmox marks its base images): its owner marked it read-only, and imgchain keeps it so
//!    even as root, who could write it anyway.
//! 3. `inherited`: some overlay of the node (at any distance) is requested, file-mode or
//!    inherited — writing the node would change what that overlay's guest sees.
//! 4. `not-writable`: opening the node read-write fails. Never inherited.
//!
//! A node that is not keep-RO is RW when another process writes it (a running VM's disk, even
//! a base a live commit moved the VM onto while an old overlay still names it); RO when it
//! backs another image in the forest, or another process reads it without writing it (a
//! running QEMU's backing file or read-only disk, whose overlay may be anywhere); RW otherwise.

use std::fmt;

/// The access imgchain holds, or would hold, on an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Rw,
    Ro,
    KeepRo,
}

impl Mode {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rw => "rw",
            Mode::Ro => "ro",
            Mode::KeepRo => "keep-ro",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a node must stay read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepRoReason {
    Requested,
    FileMode,
    Inherited,
    NotWritable,
}

impl KeepRoReason {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeepRoReason::Requested => "requested",
            KeepRoReason::FileMode => "file-mode",
            KeepRoReason::Inherited => "inherited",
            KeepRoReason::NotWritable => "not-writable",
        }
    }

    /// A sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            KeepRoReason::Requested => {
                "protected on request (--read-only, --protect, a config protect glob, or the UI)"
            }
            KeepRoReason::FileMode => {
                "the file's mode says read-only (no write permission for anyone): its owner marked \
                 it so, and imgchain keeps it so even as root"
            }
            KeepRoReason::Inherited => {
                "an overlay built on it is protected, and writing it would change that overlay's disk"
            }
            KeepRoReason::NotWritable => {
                "it cannot be opened read-write (permissions, read-only filesystem or immutable file)"
            }
        }
    }
}

impl fmt::Display for KeepRoReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts about one node that its state depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateInput {
    /// Index of the node's backing image in the same slice, if it is in the forest.
    pub backing: Option<usize>,
    /// keep-RO was asked for this node itself.
    pub requested: bool,
    /// A read-write open of the node succeeds.
    pub writable: bool,
    /// The file's permission bits give no one write access.
    pub read_only_mode: bool,
    /// Another process holds it without the write permission: a running QEMU reads it.
    pub read_by_other: bool,
    /// Another process writes it: a running VM's disk.
    pub written_by_other: bool,
}

/// A node's computed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub mode: Mode,
    pub reason: Option<KeepRoReason>,
}

/// Computes every node's state. Backing links must not form a loop; a link that does is
/// followed at most `inputs.len()` steps, so a loop cannot hang this function.
pub fn compute(inputs: &[StateInput]) -> Vec<State> {
    let n = inputs.len();
    let mut has_overlays = vec![false; n];
    let mut inherited = vec![false; n];
    for input in inputs {
        if let Some(b) = input.backing.filter(|&b| b < n) {
            has_overlays[b] = true;
        }
    }
    for input in inputs.iter().filter(|i| i.requested || i.read_only_mode) {
        let mut next = input.backing;
        let mut steps = 0;
        // Stop early at a node already marked: everything below it is marked too.
        while let Some(b) = next.filter(|&b| b < n && !inherited[b] && steps < n) {
            inherited[b] = true;
            next = inputs[b].backing;
            steps += 1;
        }
    }
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let reason = if input.requested {
                Some(KeepRoReason::Requested)
            } else if input.read_only_mode {
                Some(KeepRoReason::FileMode)
            } else if inherited[i] {
                Some(KeepRoReason::Inherited)
            } else if !input.writable {
                Some(KeepRoReason::NotWritable)
            } else {
                None
            };
            let read_only = (has_overlays[i] || input.read_by_other) && !input.written_by_other;
            let mode = match (reason, read_only) {
                (Some(_), _) => Mode::KeepRo,
                (None, true) => Mode::Ro,
                (None, false) => Mode::Rw,
            };
            State { mode, reason }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(backing: Option<usize>) -> StateInput {
        StateInput {
            backing,
            requested: false,
            writable: true,
            read_only_mode: false,
            read_by_other: false,
            written_by_other: false,
        }
    }

    fn modes(states: &[State]) -> Vec<(Mode, Option<KeepRoReason>)> {
        states.iter().map(|s| (s.mode, s.reason)).collect()
    }

    use KeepRoReason::*;
    use Mode::*;

    #[test]
    fn tops_rw_backings_ro() {
        // 0 <- 1 <- 2, and 3 alone
        let s = compute(&[node(None), node(Some(0)), node(Some(1)), node(None)]);
        assert_eq!(
            modes(&s),
            vec![(Ro, None), (Ro, None), (Rw, None), (Rw, None)]
        );
    }

    #[test]
    fn protected_leaf_makes_its_whole_chain_keep_ro() {
        let mut n = vec![node(None), node(Some(0)), node(Some(1)), node(Some(2))];
        n[3].requested = true;
        assert_eq!(
            modes(&compute(&n)),
            vec![
                (KeepRo, Some(Inherited)),
                (KeepRo, Some(Inherited)),
                (KeepRo, Some(Inherited)),
                (KeepRo, Some(Requested))
            ]
        );
    }

    #[test]
    fn protected_middle_does_not_touch_its_overlays() {
        let mut n = vec![node(None), node(Some(0)), node(Some(1))];
        n[1].requested = true;
        assert_eq!(
            modes(&compute(&n)),
            vec![
                (KeepRo, Some(Inherited)),
                (KeepRo, Some(Requested)),
                (Rw, None)
            ]
        );
    }

    #[test]
    fn shared_base_inherits_from_any_one_protected_overlay() {
        // base 0 with overlays 1, 2, 3; only 2 protected
        let mut n = vec![node(None), node(Some(0)), node(Some(0)), node(Some(0))];
        n[2].requested = true;
        assert_eq!(
            modes(&compute(&n)),
            vec![
                (KeepRo, Some(Inherited)),
                (Rw, None),
                (KeepRo, Some(Requested)),
                (Rw, None)
            ]
        );
    }

    #[test]
    fn not_writable_base_does_not_make_overlays_keep_ro() {
        let mut n = vec![node(None), node(Some(0)), node(Some(1))];
        n[0].writable = false;
        assert_eq!(
            modes(&compute(&n)),
            vec![(KeepRo, Some(NotWritable)), (Ro, None), (Rw, None)]
        );
    }

    #[test]
    fn not_writable_top_is_keep_ro_but_base_stays_ro() {
        let mut n = vec![node(None), node(Some(0))];
        n[1].writable = false;
        assert_eq!(
            modes(&compute(&n)),
            vec![(Ro, None), (KeepRo, Some(NotWritable))]
        );
    }

    #[test]
    fn requested_wins_over_inherited_and_not_writable() {
        let mut n = vec![node(None), node(Some(0))];
        n[0].requested = true;
        n[0].writable = false;
        n[1].requested = true;
        assert_eq!(
            modes(&compute(&n)),
            vec![(KeepRo, Some(Requested)), (KeepRo, Some(Requested))]
        );
        n[0].requested = false;
        assert_eq!(compute(&n)[0].reason, Some(Inherited));
    }

    #[test]
    fn a_read_only_mode_is_kept_and_passed_down_like_a_request() {
        // 0 <- 1 <- 2; 1 is chmod a-w (a Proxmox base of 2 would be 0 here, alone).
        let mut n = vec![node(None), node(Some(0)), node(Some(1)), node(None)];
        n[1].read_only_mode = true;
        n[3].read_only_mode = true;
        n[3].writable = false;
        assert_eq!(
            modes(&compute(&n)),
            vec![
                (KeepRo, Some(Inherited)),
                (KeepRo, Some(FileMode)),
                (Rw, None),
                (KeepRo, Some(FileMode))
            ]
        );
    }

    #[test]
    fn an_image_another_process_only_reads_is_ro() {
        let mut n = vec![node(None), node(None)];
        n[1].read_by_other = true;
        assert_eq!(modes(&compute(&n)), vec![(Rw, None), (Ro, None)]);
    }

    #[test]
    fn read_only_everywhere() {
        let n: Vec<_> = [None, Some(0), Some(0)]
            .into_iter()
            .map(|b| StateInput {
                backing: b,
                requested: true,
                writable: true,
                read_only_mode: false,
                read_by_other: false,
                written_by_other: false,
            })
            .collect();
        assert!(compute(&n).iter().all(|s| s.reason == Some(Requested)));
    }

    #[test]
    fn a_loop_does_not_hang() {
        let mut n = vec![node(Some(1)), node(Some(0))];
        n[0].requested = true;
        let s = compute(&n);
        assert_eq!(s[0].reason, Some(Requested));
        assert_eq!(s[1].reason, Some(Inherited));
    }

    #[test]
    fn deep_chain_is_linear() {
        let mut n: Vec<_> = (0..100_000)
            .map(|i| node(if i == 0 { None } else { Some(i - 1) }))
            .collect();
        for x in n.iter_mut().step_by(7) {
            x.requested = true;
        }
        let s = compute(&n);
        assert_eq!(s[99_999].mode, Rw);
        assert_eq!(s[0].reason, Some(Requested));
        assert_eq!(s[1].reason, Some(Inherited));
    }

    #[test]
    fn a_base_a_vm_writes_is_rw_though_an_old_overlay_names_it() {
        let mut base = node(None);
        base.written_by_other = true;
        let states = compute(&[base, node(Some(0))]);
        assert_eq!(modes(&states), [(Mode::Rw, None), (Mode::Rw, None)]);
    }
}
