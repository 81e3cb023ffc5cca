//! Whether a run gets an undo (ARCHITECTURE.md §3, "Undo"): the filesystems that clone, what
//! a plan says about it, and the room its clones keep.

use std::path::Path;

use super::plan_image::PlanImage;
use super::space::Space;
use crate::text::Names;

/// Whether a run can be undone, as its plan says before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// Each image is cloned first, on this filesystem.
    Cloned(&'static str),
    /// No undo here, and why.
    NotHere(String),
}

impl Undo {
    /// What a plan's `undo` line says.
    pub fn describe(&self) -> String {
        match self {
            Undo::Cloned(fs) => format!(
                "yes: each image it changes is cloned on {fs} first (no data copied), and \
                 undo puts them back"
            ),
            Undo::NotHere(why) => format!("no undo here: {why}"),
        }
    }
}

/// The undo a run changing `images` gets (`None`: the operation has none).
pub fn offered(images: &[PlanImage]) -> Option<Undo> {
    let first = images.first()?;
    for img in images {
        if let Err(why) = support(&img.path) {
            return Some(Undo::NotHere(why));
        }
    }
    support(&first.path).ok().map(Undo::Cloned)
}

/// What a run's space becomes with an undo record: the clones keep the blocks the run
/// overwrites in place (each such write then takes new room, unless the data itself is
/// cloned from the source), and what it would free stays held until the trash is emptied.
pub fn kept(mut space: Space, undo: Option<&Undo>) -> Space {
    if !matches!(undo, Some(Undo::Cloned(_))) {
        return space;
    }
    if space.clone_on.is_none() {
        space.new_data = space.writes.saturating_sub(space.metadata);
    }
    space.trashed += space.frees;
    space.frees = 0;
    space
}

/// The cloning filesystem `path`'s directory is on, or why it cannot clone.
pub fn support(path: &Path) -> Result<&'static str, String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let st =
        rustix::fs::statfs(dir).map_err(|e| format!("{} cannot be examined: {e}", dir.shown()))?;
    const BTRFS: i64 = 0x9123_683E;
    const XFS: i64 = 0x5846_5342;
    match st.f_type as i64 {
        BTRFS => Ok("btrfs"),
        XFS if xfs_reflink(dir) => Ok("xfs"),
        XFS => Err(format!(
            "the XFS filesystem of {} was made without reflink, so it cannot clone",
            dir.shown()
        )),
        _ => Err(format!(
            "the filesystem of {} cannot clone files (XFS with reflink and btrfs can)",
            dir.shown()
        )),
    }
}

nix::ioctl_read!(xfs_fsgeometry, b'X', 126, [u8; 256]);

/// Whether the XFS filesystem of `dir` has reflink (its geometry's flags).
fn xfs_reflink(dir: &Path) -> bool {
    const REFLINK: u32 = 1 << 20;
    let Ok(fd) = crate::image::newfile::open_dir(dir) else {
        return false;
    };
    let mut geom = [0u8; 256];
    // SAFETY: XFS_IOC_FSGEOMETRY fills one 256-byte `struct xfs_fsop_geom`.
    let ok = unsafe { xfs_fsgeometry(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut geom) }.is_ok();
    let flags = u32::from_ne_bytes([geom[92], geom[93], geom[94], geom[95]]);
    ok && flags & REFLINK != 0
}

/// The undo a run changing `images` gets when undo is `enabled` (`[trash] undo`, not
/// `--no-undo`); `None`: none is offered (off, or the operation has none).
pub fn offer(enabled: bool, images: &[PlanImage]) -> Option<Undo> {
    match enabled {
        true => offered(images),
        false => None,
    }
}

/// A space refusal with an undo's clones counted: the way out names `--no-undo` too.
pub fn room_refused(e: super::Refusal, undo: Option<&Undo>) -> super::Refusal {
    use super::refusal::{UiWay, Way};
    if !matches!(undo, Some(Undo::Cloned(_))) {
        return e;
    }
    e.with(Way {
        cli: "free some space first, add --no-undo (the undo's clones keep every block the run \
              overwrites), or add --force to try anyway (a run that fills the disk stops with \
              every image consistent)"
            .into(),
        ui: UiWay::Words(
            "free some space first, or set [trash] undo = false (the undo's clones keep every \
             block the run overwrites)"
                .into(),
        ),
    })
}
