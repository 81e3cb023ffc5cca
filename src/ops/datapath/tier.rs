//! The tiers one range moves through: a clone or a copy in the kernel, prepared in the target
//! and made visible only once filled; what each tier moved; and making a range read zeroes.

use std::io;

use imago::Mapping;

use crate::image::handle::Handle;
use crate::image::ordered::{KernelTiers, Moved};
use crate::ops::settings::Copy;

/// The tiers a copy may try, as configured: cloning (`copy.clone`) and copying in the
/// kernel (`copy.kernel_copy`).
pub fn tiers(c: &Copy) -> KernelTiers {
    KernelTiers {
        no_clone: !c.clone,
        no_copy: !c.kernel_copy,
    }
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
    /// How the data moved, in JSON: `cloned_bytes` (blocks shared, a reflink), `kernel_bytes`
    /// (copied by the kernel), `memory_bytes` (read and written by imgchain).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cloned_bytes": self.cloned,
            "kernel_bytes": self.kernel,
            "memory_bytes": self.copied,
        })
    }

    /// Adds what another copy moved.
    pub fn add(&mut self, other: &Tally) {
        self.cloned += other.cloned;
        self.kernel += other.kernel;
        self.copied += other.copied;
    }

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

/// Makes `len` bytes at `offset` of `target` read as zeroes. qcow2 v2 has no zero clusters,
/// so there the zeroes are written (QEMU falls back the same way); elsewhere the range is
/// discarded to zero, which frees what it can.
pub fn zero(target: &mut Handle, v2: bool, offset: u64, len: u64) -> io::Result<()> {
    if !v2 {
        return target.access_mut()?.discard_to_zero(offset, len);
    }
    const STEP: u64 = 1 << 20;
    let zeroes = vec![0u8; STEP.min(len) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = STEP.min(offset + len - at);
        target.access().write(&zeroes[..n as usize], at)?;
        at += n;
    }
    Ok(())
}
