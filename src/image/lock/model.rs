//! QEMU's permission model for lock bytes: which permissions an open holds and shares, which
//! bytes that locks, and when two opens conflict. Pure: no file, no syscall.

/// First "held permission" byte.
pub const PERM_BASE: u64 = 100;
/// First "unshared permission" byte.
pub const SHARED_BASE: u64 = 200;
/// Permission bits QEMU locks (`BLK_PERM_ALL`): bits 0 to 3.
pub(super) const PERM_BITS: u32 = 4;

/// A set of QEMU block permissions (`BLK_PERM_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(pub u8);

impl Perms {
    /// No permission.
    pub const NONE: Perms = Perms(0);
    /// `BLK_PERM_CONSISTENT_READ`.
    pub const CONSISTENT_READ: Perms = Perms(0x01);
    /// `BLK_PERM_WRITE`.
    pub const WRITE: Perms = Perms(0x02);
    /// `BLK_PERM_WRITE_UNCHANGED`.
    pub const WRITE_UNCHANGED: Perms = Perms(0x04);
    /// `BLK_PERM_RESIZE`.
    pub const RESIZE: Perms = Perms(0x08);
    /// `BLK_PERM_ALL`.
    pub const ALL: Perms = Perms(0x0f);

    /// Every permission of `other` is in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }
    /// Permission bit `i` is in the set.
    pub fn has_bit(self, i: u32) -> bool {
        self.0 & (1 << i) != 0
    }
    /// Both sets together.
    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }
    /// No permission at all.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The permissions not in `self`.
    pub fn complement(self) -> Perms {
        Perms(!self.0 & Perms::ALL.0)
    }
    /// QEMU's names (`bdrv_perm_names`), in bit order.
    pub fn names(self) -> Vec<&'static str> {
        (0..PERM_BITS)
            .filter(|&i| self.has_bit(i))
            .map(perm_name)
            .collect()
    }
}

/// QEMU's name for permission bit `i`.
pub fn perm_name(i: u32) -> &'static str {
    match i {
        0 => "consistent read",
        1 => "write",
        2 => "write unchanged",
        3 => "resize",
        _ => "change children",
    }
}

/// What an open of an image holds and shares, as QEMU expresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub perm: Perms,
    pub shared: Perms,
}

impl Access {
    /// A read-only backing image: consistent read; others may read but not write or resize
    /// (QEMU's `bdrv_default_perms_for_cow`).
    pub const READ_ONLY: Access = Access {
        perm: Perms::CONSISTENT_READ,
        shared: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE_UNCHANGED.0),
    };
    /// A writable image, e.g. a commit's base: consistent read, write, resize; others may read.
    pub const READ_WRITE: Access = Access {
        perm: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE.0 | Perms::RESIZE.0),
        shared: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE_UNCHANGED.0),
    };
    /// Nothing held, everything shared.
    pub const NONE: Access = Access {
        perm: Perms::NONE,
        shared: Perms::ALL,
    };

    /// The bytes this access locks: `100 + i` per held permission, `200 + i` per unshared one.
    pub fn bytes(self) -> Vec<u64> {
        let unshared = self.shared.complement();
        (0..PERM_BITS)
            .filter(|&i| self.perm.has_bit(i))
            .map(|i| PERM_BASE + u64::from(i))
            .chain(
                (0..PERM_BITS)
                    .filter(|&i| unshared.has_bit(i))
                    .map(|i| SHARED_BASE + u64::from(i)),
            )
            .collect()
    }

    /// The first permission that `foreign` locks forbid this access, as `(name, shared)`:
    /// `shared == false` when someone refuses to share a permission we hold, `true` when
    /// someone holds a permission we refuse to share. Same rules as [`ImageLock`]'s check.
    pub fn conflict(self, foreign: Foreign) -> Option<(&'static str, bool)> {
        (0..PERM_BITS).find_map(|i| {
            if self.perm.has_bit(i) && foreign.unshared.has_bit(i) {
                Some((perm_name(i), false))
            } else if !self.shared.has_bit(i) && foreign.held.has_bit(i) {
                Some((perm_name(i), true))
            } else {
                None
            }
        })
    }

    /// The union QEMU locks while changing from `self` to `new`.
    pub(super) fn union(self, new: Access) -> Access {
        Access {
            perm: self.perm.union(new.perm),
            shared: Perms(self.shared.0 & new.shared.0),
        }
    }
}

/// What other processes hold on an image, seen through `F_OFD_GETLK`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Foreign {
    /// Permissions someone holds (bytes 100+).
    pub held: Perms,
    /// Permissions someone refuses to share (bytes 200+).
    pub unshared: Perms,
}

impl Foreign {
    /// Someone holds or unshares anything.
    pub fn in_use(self) -> bool {
        !self.held.is_empty() || !self.unshared.is_empty()
    }
    /// Someone holds the write permission: the contents may change under us.
    pub fn writer(self) -> bool {
        self.held.contains(Perms::WRITE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bytes_match_qemu() {
        // ARCHITECTURE.md §7: an RW open locks 100, 101, 103, 201, 203; a backing 100, 201, 203.
        assert_eq!(Access::READ_WRITE.bytes(), vec![100, 101, 103, 201, 203]);
        assert_eq!(Access::READ_ONLY.bytes(), vec![100, 201, 203]);
        assert!(Access::NONE.bytes().is_empty());
        // What a running VM's locks forbid: its top (held RW) and its backing (held RO).
        let vm_top = Foreign {
            held: Access::READ_WRITE.perm,
            unshared: Access::READ_WRITE.shared.complement(),
        };
        let vm_base = Foreign {
            held: Access::READ_ONLY.perm,
            unshared: Access::READ_ONLY.shared.complement(),
        };
        assert_eq!(Access::READ_WRITE.conflict(vm_top), Some(("write", false)));
        assert_eq!(Access::READ_WRITE.conflict(vm_base), Some(("write", false)));
        assert_eq!(Access::READ_ONLY.conflict(vm_top), Some(("write", true)));
        assert_eq!(Access::READ_ONLY.conflict(vm_base), None);
        let force_share_reader = Foreign {
            held: Perms::CONSISTENT_READ,
            unshared: Perms::NONE,
        };
        assert_eq!(Access::READ_WRITE.conflict(force_share_reader), None);
        assert_eq!(
            Access::READ_ONLY.union(Access::READ_WRITE),
            Access::READ_WRITE
        );
        assert_eq!(PERM_BASE, 100);
        assert_eq!(SHARED_BASE, 200);
        assert_eq!(
            Perms::ALL.names(),
            ["consistent read", "write", "write unchanged", "resize"]
        );
    }
}
