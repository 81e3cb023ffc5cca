//! Delete: remove an image, or with `with_overlays` the whole subtree built on it
//! (ARCHITECTURE.md §3). Nothing that something else is built on is ever removed: overlays go
//! first, leaves before the images they read, so every state a crash can leave is a forest
//! without dangling backing links.
//!
//! Files are removed by identity, never by name alone: each is renamed to a temporary name in
//! its directory (only if that name is free), checked to be the file of the plan, and only then
//! unlinked; a file that replaced the path since the plan is renamed back and left alone.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::plan_image::PlanImage;
use super::scope::{Discovered, recheck_overlays};
use super::settings::Settings;
use super::space::{self, Space};
use super::{
    Description, OpKind, Operation, Phase, Progress, Refusal, Report, Run, Selected, guards,
};
use crate::forest::{Forest, NodeId};
use crate::image::file::{self, FileId, OpenMode};
use crate::image::lock::{Access, ImageLock, LockError};
use crate::text::Names;

/// What the user asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub image: NodeId,
    /// Also delete every image built on it, at any distance.
    pub with_overlays: bool,
    /// Also when a defined libvirt VM names one of them as its disk.
    pub force: bool,
}

/// What the UI asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub with_overlays: bool,
    pub force: bool,
}

/// A deletion that passed every guard.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The images to remove, in order: overlays before the images they are built on; the
    /// requested image last.
    pub images: Vec<PlanImage>,
    /// Symlinks met by the scan that name a removed image: they are left dangling.
    pub aliases: Vec<PathBuf>,
    /// The requested image's backing file, which loses an overlay.
    pub backing: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Removed, in order.
    pub deleted: Vec<PathBuf>,
    /// The image whose removal failed, and why; those after it were not tried.
    pub failed: Option<(PathBuf, String)>,
}

/// The delete operation.
#[derive(Debug)]
pub struct Delete;

impl Operation for Delete {
    const KIND: OpKind = OpKind::DELETE;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req)
    }

    const ACTION: Option<&'static str> = Some("delete");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
            with_overlays: false,
            force: false,
        })
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        let req = Request {
            image: found.image,
            with_overlays: ask.with_overlays,
            force: ask.force,
        };
        plan(&found.scan.forest, &req)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        plan.images.iter().rev().map(|i| i.path.clone()).collect()
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    fn space(plan: &Plan, _clone: bool) -> Result<Option<Space>, Refusal> {
        Ok(Some(space(plan)))
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r.settings, r.progress)
    }
}

/// What goes, in order, and what is left behind.
pub fn describe(p: &Plan) -> Description {
    let list: Vec<String> = p
        .images
        .iter()
        .map(|i| i.path.shown().to_string())
        .collect();
    let mut d = Description::new(format!("Would delete, in this order: {}.", list.join(", ")));
    d.text("Deletes, in this order:");
    for i in list {
        d.item(i);
    }
    if let Some(b) = &p.backing {
        d.field("then", format!("{} has one overlay fewer", b.shown()));
    }
    for a in &p.aliases {
        d.field("dangling", format!("{} (a symlink to it)", a.shown()));
    }
    d
}

/// Checks the guards in order — overlays built on it (13, unless `with_overlays`), keep-RO
/// (11), held by any process (12) — and lists what goes; nothing is removed.
pub fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
    let n = forest.node(req.image);
    let above = guards::descendants(forest, req.image);
    if !above.is_empty() && !req.with_overlays {
        let mut overlays: Vec<PathBuf> =
            above.iter().map(|&d| forest.node(d).path.clone()).collect();
        overlays.sort();
        return Err(Refusal::HasOverlays {
            path: n.path.clone(),
            overlays,
            what: "deleting it would leave them without their backing file; delete them first, \
                   or all together with --with-overlays"
                .into(),
        });
    }
    // Leaves first: the reverse of a breadth-first walk puts every overlay before its backing.
    let order: Vec<NodeId> = above
        .iter()
        .rev()
        .copied()
        .chain(std::iter::once(req.image))
        .collect();
    guards::not_kept_ro(forest, order.iter().copied())?;
    guards::not_a_vm_disk(forest, &order, req.force)?;
    {
        use crate::forest::model::RecordRole;
        let roles = [RecordRole::Overlay, RecordRole::State];
        crate::ops::libvirt_snapshots::not_recorded(forest, &order, &roles, "deleting it")?;
    }
    keeps_no_data_file(forest, &order)?;
    keeps_no_data_file(forest, &order)?;
    for &id in &order {
        let m = forest.node(id);
        if m.foreign.in_use() {
            return Err(Refusal::InUse(LockError::InUse {
                path: m.path.clone(),
                holder: m.holders.first().cloned(),
                permission: if m.foreign.writer() {
                    "write"
                } else {
                    "consistent read"
                },
                shared: false,
            }));
        }
    }
    let images = order
        .iter()
        .map(|&id| PlanImage::of(forest, id))
        .collect::<Result<Vec<_>, _>>()?;
    let aliases = order
        .iter()
        .flat_map(|&id| forest.node(id).aliases.iter().cloned())
        .collect();
    let backing = n
        .backing_node()
        .map(|b| forest.node(b).path.clone())
        .or_else(|| n.backing.as_ref().map(|b| b.path.clone()));
    Ok(Plan {
        images,
        aliases,
        backing,
    })
}

/// An image whose guest data lives in an external data file is refused (16), naming the file:
/// deleting the image alone would leave the data behind, and the name comes from the header,
/// which imgchain never follows to delete what it leads to.
pub(crate) fn keeps_no_data_file(forest: &Forest, order: &[NodeId]) -> Result<(), Refusal> {
    for &id in order {
        let m = forest.node(id);
        let Some(h) = m
            .qcow2
            .as_ref()
            .filter(|h| h.external_data_file() || h.data_file.is_some())
        else {
            continue;
        };
        let name = h.data_file.as_deref().map(String::from_utf8_lossy);
        let what = match name.as_deref().map(std::path::Path::new) {
            Some(d) if d.is_absolute() => format!(
                "keeps its guest data in an external data file, {}, which imgchain does not \
                 delete with it (the name comes from its header); once nothing uses them, remove \
                 both yourself: rm -- {} {}",
                d.shown(),
                m.path.quoted(),
                d.quoted()
            ),
            Some(d) => format!(
                "keeps its guest data in an external data file its header names {} (QEMU opens \
                 a relative name from the directory it runs in), which imgchain does not delete \
                 with it; once nothing uses them, remove both yourself",
                d.shown()
            ),
            None => "is marked as keeping its guest data in an external data file but names \
                     none; inspect it with qemu-img info"
                .into(),
        };
        return Err(Refusal::Unsupported {
            path: m.path.clone(),
            what,
        });
    }
    Ok(())
}

/// Removes the plan's images in order. Before the first removal, the overlays of every image
/// are scanned again (a new one refuses the run) and each image is opened and locked as a
/// reader — a VM that holds it, or starts to, refuses the run — and must be the file of the
/// plan; the locks are held until the end.
pub fn run(
    plan: &Plan,
    settings: &Settings,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, Refusal> {
    let started = Instant::now();
    let total = plan.images.len() as u64;
    let mut report = |phase, done| {
        progress(Progress {
            op: OpKind::DELETE,
            phase,
            done,
            total,
            elapsed: started.elapsed(),
            writing: false,
        })
    };
    report(Phase::Open, 0);
    let involved: Vec<&PlanImage> = plan.images.iter().collect();
    for img in &plan.images {
        recheck_overlays((img, &involved), &[], &[], settings)?;
    }
    let mut locks = Vec::new();
    for img in &plan.images {
        locks.push(lock_unused(img)?);
    }
    report(Phase::Delete, 0);
    let mut deleted = Vec::new();
    let mut failed = None;
    for img in &plan.images {
        match remove_by_identity(&img.path, img.ident) {
            Ok(()) => deleted.push(img.path.clone()),
            Err(e) => {
                failed = Some((img.path.clone(), e.to_string()));
                break;
            }
        }
        report(Phase::Delete, deleted.len() as u64);
    }
    drop(locks);
    report(Phase::Done, deleted.len() as u64);
    Ok(Outcome {
        plan: plan.clone(),
        deleted,
        failed,
    })
}

/// Opens `img`, checks it is the plan's file, takes a reader's QEMU locks on it and checks no
/// other process holds any.
pub(super) fn lock_unused(img: &PlanImage) -> Result<ImageLock, Refusal> {
    let io = |e: io::Error| Refusal::Changed {
        path: img.path.clone(),
        what: format!("it cannot be opened again: {e}"),
    };
    let fd = file::open_as(&img.path, OpenMode::ReadOnly, img.ident).map_err(io)?;
    let lock = ImageLock::acquire(std::os::fd::AsFd::as_fd(&fd), &img.path, Access::READ_ONLY)?;
    let foreign = crate::image::lock::probe(std::os::fd::AsFd::as_fd(&fd)).map_err(io)?;
    if foreign.in_use() {
        return Err(Refusal::InUse(LockError::InUse {
            path: img.path.clone(),
            holder: crate::image::lock::holders(&[img.ident].into_iter().collect())
                .remove(&img.ident)
                .and_then(|h| h.into_iter().next()),
            permission: if foreign.writer() {
                "write"
            } else {
                "consistent read"
            },
            shared: false,
        }));
    }
    Ok(lock)
}

/// Unlinks the file at `path` only if it is `ident`: renamed aside first (never over another
/// file), checked, then unlinked; a different file is renamed back. The directory is synced.
pub fn remove_by_identity(path: &Path, ident: FileId) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = crate::forest::model::file_name(path);
    let aside = dir.join(format!(".{name}.{}.imgchain-del", std::process::id()));
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        path,
        rustix::fs::CWD,
        &aside,
        rustix::fs::RenameFlags::NOREPLACE,
    )?;
    let moved = std::fs::symlink_metadata(&aside).map(|m| FileId::of(&m));
    if moved.as_ref().ok() != Some(&ident) {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &aside,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        )?;
        return Err(io::Error::other(
            "the path names another file than the one planned; it was left alone",
        ));
    }
    std::fs::remove_file(&aside)?;
    std::fs::File::open(dir)?.sync_all()
}

impl Report for Outcome {
    /// `delete --json`: what was removed, in order, and what failed.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "planned": self.plan.images.iter().map(|i| crate::text::lossy(&i.path)).collect::<Vec<_>>(),
            "deleted": self.deleted.iter().map(|p| crate::text::lossy(p)).collect::<Vec<_>>(),
            "failed": self.failed.as_ref().map(|(p, e)| serde_json::json!({"path": crate::text::lossy(p), "error": e})),
            "dangling_aliases": self.plan.aliases.iter().map(|p| crate::text::lossy(p)).collect::<Vec<_>>(),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        if self.failed.is_some() {
            crate::exit::IO_ERROR
        } else {
            crate::exit::OK
        }
    }

    fn summary(&self) -> String {
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.shown().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = if self.deleted.is_empty() {
            "Deleted nothing.".to_string()
        } else {
            format!("Deleted {}.", names(&self.deleted))
        };
        if let Some((path, e)) = &self.failed {
            let left: Vec<PathBuf> = self
                .plan
                .images
                .iter()
                .map(|i| i.path.clone())
                .filter(|p| !self.deleted.contains(p))
                .collect();
            s.push_str(&format!(
                " Could not delete {}: {e}. Still there: {} (every one of them still has its \
                 backing file).",
                path.shown(),
                names(&left)
            ));
        } else if let Some(b) = &self.plan.backing {
            s.push_str(&format!(" {} has one overlay fewer.", b.shown()));
        }
        if !self.plan.aliases.is_empty() {
            s.push_str(&format!(
                " These symlinks named a deleted image and now dangle: {}.",
                names(&self.plan.aliases)
            ));
        }
        s
    }
}

/// A delete of `plan`: every file it removes.
pub fn space(plan: &Plan) -> Space {
    let frees = plan.images.iter().map(|i| space::on_disk(&i.path)).sum();
    let first = plan
        .images
        .first()
        .map_or_else(PathBuf::new, |i| i.path.clone());
    Space::delete(&first, frees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::create::{NewImage, create};

    fn scanned(dir: &Path) -> Forest {
        let opts = crate::forest::ScanOptions {
            max_depth: 0,
            ..Default::default()
        };
        crate::forest::scan(&[dir.to_path_buf()], &opts)
            .unwrap()
            .forest
    }

    #[test]
    fn a_file_that_replaced_the_planned_one_is_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.qcow2");
        create(&path, &NewImage::qcow2(1 << 20)).unwrap();
        let forest = scanned(tmp.path());
        let req = Request {
            image: forest.find(&path).unwrap(),
            with_overlays: false,
            force: false,
        };
        let plan = plan(&forest, &req).unwrap();
        // Another file takes the name between the plan and the run (renamed over it, as a
        // restore would).
        let other = tmp.path().join("other.qcow2");
        create(&other, &NewImage::qcow2(1 << 20)).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let e = run(&plan, &Settings::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(e, Refusal::Changed { .. }), "{e}");
        assert!(path.exists());
        // Even past the run's check, removal by identity leaves the other file alone.
        let other = FileId::of_path(&path).unwrap();
        let planned = plan.images[0].ident;
        assert_ne!(other, planned);
        assert!(remove_by_identity(&path, planned).is_err());
        assert_eq!(FileId::of_path(&path), Some(other), "renamed back");
        remove_by_identity(&path, other).unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
