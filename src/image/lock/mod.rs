//! QEMU-compatible image locking (QEMU's block/file-posix.c), without the terminal: the
//! permission model ([`model`]), the lock bytes on an open file ([`ofd`]), the processes
//! holding them ([`holders`]) and who those are ([`owner`]).
//!
//! QEMU locks one byte per permission on the image file itself with open-file-description
//! (OFD) read locks: byte `100 + i` means "I hold permission i", byte `200 + i` means "I do
//! not share permission i". Conflicts are found with `F_OFD_GETLK` and a write-lock probe,
//! which never takes a lock and ignores the prober's own open file description.
//!
//! Invariants:
//! - [`probe`] takes no lock: browsing never stops a VM from starting.
//! - [`ImageLock`] locks first, then checks, and rolls back to its previous state on conflict,
//!   exactly like `raw_handle_perm_lock`, so two racing openers can both fail but never both
//!   succeed, and a QEMU that loses the race gets QEMU's own error.
//! - Locks belong to an open file description. [`ImageLock`] keeps its own `dup` of the fd, so
//!   the locks live as long as it does, whoever else closes their copy;
//!   [`ImageLock::duplicate_onto`] puts the same bytes on a reopened description while the old
//!   one still holds them, so a reopen never has a moment without locks.
//! - Only bytes 100-103 and 200-203 are touched (byte 0 is libvirt's; 104/204 are legacy).

pub mod holders;
pub mod model;
pub mod ofd;
pub mod owner;

use std::os::fd::AsFd;
use std::path::PathBuf;

pub use holders::{Holder, holders, locked_files};
pub use model::{Access, Foreign, Perms};
pub use ofd::{ImageLock, LockError, probe};
pub use owner::{Manager, Owner};

use super::file::{self, FileId, OpenMode};

/// Re-probes, without taking locks, those of `images` (path and identity) that `/proc/locks`
/// says carry QEMU lock bytes, and names their holders. Returns only images in use.
pub fn sweep(images: &[(PathBuf, FileId)]) -> Vec<(PathBuf, Foreign, Vec<Holder>)> {
    let Ok(locked) = locked_files() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (path, ident) in images.iter().filter(|(_, i)| locked.contains(i)) {
        let Ok(fd) = file::open(path, OpenMode::ReadOnly) else {
            continue;
        };
        let same = file::identity(&fd).is_ok_and(|i| i == *ident);
        if let Some(f) = same
            .then(|| probe(fd.as_fd()).ok())
            .flatten()
            .filter(|f| f.in_use())
        {
            found.push((path.clone(), *ident, f));
        }
    }
    let mut names = holders(&found.iter().map(|(_, i, _)| *i).collect());
    found
        .into_iter()
        .map(|(p, i, f)| (p, f, names.remove(&i).unwrap_or_default()))
        .collect()
}
