//! How data moves from one image into another (ARCHITECTURE.md §3, §4), in three tiers chosen
//! per range: the kernel shares the blocks (a reflink, on XFS and btrfs), or copies them
//! itself (`copy_file_range`, when configured), or imgchain reads them and writes them through
//! imago, with several reads in flight. Each
//! range is mapped in the target first without being visible, filled, and only then made
//! visible, so the storage layer syncs the data before the table that maps it, whichever
//! tier moved it.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use imago::Mapping;

use crate::image::handle::Handle;
use crate::image::ordered::{KernelTiers, Moved};
use crate::text::Names;

/// Whether cloning may be tried (`commit.clone`), and copying in the kernel
/// (`commit.kernel_copy`).
static CLONE: AtomicBool = AtomicBool::new(true);
static KERNEL: AtomicBool = AtomicBool::new(false);
/// Reads under way at once in the memory tier (`commit.in_flight`).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(4);

/// Turns the clone and kernel-copy tiers on or off, sets the reads under way at once (1 to
/// 64) and after how many written bytes their writeback starts (`commit.write_behind`, 0:
/// at the next sync), for every copy that starts afterwards.
pub fn set(clone: bool, kernel: bool, in_flight: usize, write_behind: u64) {
    crate::image::ordered::set_write_behind(write_behind);
    CLONE.store(clone, Ordering::Relaxed);
    KERNEL.store(kernel, Ordering::Relaxed);
    IN_FLIGHT.store(in_flight.clamp(1, 64), Ordering::Relaxed);
}

/// Reads a copy keeps under way at once in the memory tier.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// The tiers one copy may try, as configured.
pub fn tiers() -> KernelTiers {
    KernelTiers {
        no_clone: !CLONE.load(Ordering::Relaxed),
        no_copy: !KERNEL.load(Ordering::Relaxed),
    }
}

/// Why the copy stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cancelled")]
    Cancelled,
    #[error("{op} {} at offset {offset}: {source}", path.shown())]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// Bytes moved by each tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Shared with the source (reflinked): no data moved.
    pub cloned: u64,
    /// Copied by the kernel.
    pub kernel: u64,
    /// Read and written through memory.
    pub copied: u64,
}

impl Tally {
    /// "1.0 GiB cloned, 2 MiB copied"; only the tiers that moved something.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.cloned, "cloned"),
            (self.kernel, "copied in the kernel"),
            (self.copied, "copied"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{} {what}", crate::units::human_size(*n)))
        .collect();
        if parts.is_empty() {
            "no data moved".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Moves `len` bytes at guest `offset` of `from`, a layer that allocates them itself, into
/// `to` at the same guest offset, through the kernel while it can. Returns how many bytes
/// from `offset` on it moved; the rest (compressed clusters, or a filesystem that refuses,
/// which `tiers` then remembers) is the caller's to copy through memory.
pub fn kernel_move(
    to: &Handle,
    from: &Handle,
    offset: u64,
    len: u64,
    tiers: &mut KernelTiers,
    tally: &mut Tally,
) -> io::Result<u64> {
    let mut done = 0;
    while done < len && !(tiers.no_clone && tiers.no_copy) {
        let at = offset + done;
        let (mapping, l) = from.access().get_mapping(at, len - done)?;
        let Mapping::Raw {
            storage: source,
            offset: host,
            ..
        } = mapping
        else {
            break;
        };
        let l = l.min(len - done);
        if l == 0 {
            break;
        }
        let prepared = to.access().prepare_data_mapping(at, l, true)?;
        let n = prepared.length().min(l);
        let target = prepared.storage();
        match target.take_from(source, host, prepared.offset(), n, tiers)? {
            Some(how) => {
                to.access().commit_data_mapping(prepared)?;
                match how {
                    Moved::Cloned => tally.cloned += n,
                    Moved::Copied => tally.kernel += n,
                }
                done += n;
            }
            // Dropping the prepared mapping discards it: the range reads as before.
            None => break,
        }
    }
    Ok(done)
}
