//! What an operation will write and free, and whether the written file's filesystem has the
//! room (ARCHITECTURE.md §3, "Space"). Planning asks; nothing here writes.

use std::path::{Path, PathBuf};

use super::Refusal;
use super::plan_image::PlanImage;
use crate::units::human_size;

/// Filesystems that share extents (reflinks): a clone there takes no new room for the data.
const CLONING_FILESYSTEMS: &[(i64, &str)] = &[
    (0x5846_5342, "XFS"),
    (0x9123_683e, "btrfs"),
    (0xca45_1a4e, "bcachefs"),
];

/// The space side of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Space {
    /// The file written, on whose filesystem `writes` must fit.
    pub target: PathBuf,
    /// Bytes the run writes at most (data and metadata).
    pub writes: u64,
    /// The part of `writes` that is metadata.
    pub metadata: u64,
    /// Data bytes that land where the target has no data yet: new room on the filesystem.
    pub new_data: u64,
    /// Bytes given back when it is done (files deleted, data dropped from a layer).
    pub frees: u64,
    /// Bytes of files moved into the trash: given back when the trash is emptied.
    pub trashed: u64,
    /// The data may be cloned from the source on the same filesystem (XFS, btrfs): then it
    /// takes no new room, and only the metadata has to fit.
    pub clone_on: Option<&'static str>,
    /// Bytes free to this user on the target's filesystem (`None`: not known).
    pub available: Option<u64>,
}

impl Space {
    /// A run that writes `data` bytes of `source`'s data into `target`, `new_data` of them
    /// where it has none yet (qcow2 metadata added: an L2 entry and a refcount per cluster),
    /// and frees `frees`; `clone` says whether the data may be cloned (`copy.clone`).
    pub fn copy(
        (source, target): (&PlanImage, &PlanImage),
        (data, new_data): (u64, u64),
        cluster: u64,
        frees: u64,
        clone: bool,
    ) -> Space {
        let cluster = cluster.max(512);
        let metadata = data.div_ceil(cluster) * 16 + 4 * cluster;
        let clone_on = (clone && source.ident.dev == target.ident.dev)
            .then(|| cloning_filesystem(&target.path))
            .flatten();
        Space {
            target: target.path.clone(),
            writes: data + metadata,
            metadata,
            new_data,
            frees,
            trashed: 0,
            clone_on,
            available: available(&target.path),
        }
    }

    /// A run that only removes files, giving back `frees` bytes.
    /// A run that removes files taking `bytes`: freed now when `purge`, else moved into
    /// the trash.
    pub fn delete(first: &Path, bytes: u64, purge: bool) -> Space {
        Space {
            target: first.to_path_buf(),
            writes: 0,
            metadata: 0,
            new_data: 0,
            frees: if purge { bytes } else { 0 },
            trashed: if purge { 0 } else { bytes },
            clone_on: None,
            available: available(first),
        }
    }

    /// Bytes that must be free for the run: the metadata alone when the data may be cloned.
    pub fn needed(&self) -> u64 {
        if self.clone_on.is_some() {
            self.metadata
        } else {
            self.new_data + self.metadata
        }
    }

    /// Refuses when the room known on the target's filesystem is less than [`Self::needed`].
    pub fn check(&self) -> Result<(), Refusal> {
        match self.available {
            Some(free) if free < self.needed() => Err(Refusal::NoSpace {
                path: self.target.clone(),
                need: self.needed(),
                free,
            }),
            _ => Ok(()),
        }
    }

    /// One line for a plan: `writes up to 1.2 GiB, needs up to 800 MiB free, frees about
    /// 1 GiB; 40 GiB free there`.
    pub fn describe(&self) -> String {
        let mut s = if self.writes == 0 {
            "writes no data".to_string()
        } else {
            format!("writes up to {}", human_size(self.writes))
        };
        match self.clone_on {
            Some(fs) => s.push_str(&format!(
                " (shared from the source on {fs}: little new space)"
            )),
            None if self.writes > 0 => {
                s.push_str(&format!(", needs up to {} free", human_size(self.needed())))
            }
            None => {}
        }
        if self.frees > 0 {
            s.push_str(&format!(", frees about {}", human_size(self.frees)));
        }
        if self.trashed > 0 {
            s.push_str(&format!(
                ", moves {} into the trash (freed when it is emptied)",
                human_size(self.trashed)
            ));
        }
        match self.available {
            Some(free) => s.push_str(&format!("; {} free there", human_size(free))),
            None => s.push_str("; free space unknown"),
        }
        s
    }
}

/// The cluster size of a qcow2 image (64 KiB when it cannot be read). Read through an fd
/// opened only if the path still names the plan's file (never a FIFO or another file swapped
/// in under the name).
pub fn cluster_of(img: &PlanImage) -> u64 {
    use crate::image::file::{self, OpenMode};
    file::open_as(&img.path, OpenMode::ReadOnly, img.ident)
        .ok()
        .map(std::fs::File::from)
        .and_then(|f| file::read_prefix(&f, 4096).ok())
        .and_then(|b| {
            b.get(20..24)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        })
        .filter(|bits| (9..=21).contains(bits))
        .map_or(64 << 10, |bits| 1 << bits)
}

/// Bytes the file at `path` takes on disk.
pub fn on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// The cloning filesystem `path` is on, if it is one.
pub fn cloning_filesystem(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    let kind = st.f_type;
    CLONING_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
}

/// Bytes an unprivileged user may still write on the filesystem holding `path`.
fn available(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(new_data: u64, available: u64, clone_on: Option<&'static str>) -> Space {
        Space {
            target: PathBuf::from("/v/base.qcow2"),
            writes: 100 << 20,
            metadata: 1 << 20,
            new_data,
            frees: 0,
            trashed: 0,
            clone_on,
            available: Some(available),
        }
    }

    #[test]
    fn only_new_room_counts_and_a_clone_needs_the_metadata_alone() {
        assert_eq!(space(50 << 20, 0, None).needed(), 51 << 20);
        assert!(space(50 << 20, 51 << 20, None).check().is_ok());
        let e = space(50 << 20, 50 << 20, None).check().unwrap_err();
        assert_eq!(e.kind(), "no-space");
        assert!(e.to_string().contains("/v/base.qcow2"), "{e}");
        assert!(space(99 << 20, 2 << 20, Some("XFS")).check().is_ok());
        assert!(
            space(99 << 20, 2 << 20, Some("XFS"))
                .describe()
                .contains("XFS")
        );
        let unknown = Space {
            available: None,
            ..space(99 << 20, 0, None)
        };
        assert!(unknown.check().is_ok(), "an unknown room refuses nothing");
        assert!(unknown.describe().contains("free space unknown"));
    }
}
