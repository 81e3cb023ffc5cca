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
    /// Unlinked at once, not moved into the trash.
    pub purge: bool,
}

/// What the UI asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub with_overlays: bool,
    pub force: bool,
    pub purge: bool,
}

/// From this many bytes on disk, the images a delete removes count as holding data: the
/// confirmation asks for the image's name typed, not a yes.
pub const NAME_TYPED_FROM: u64 = 1 << 20;

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
    /// The images' external data files, each removed right after its image.
    pub data_files: Vec<DataFile>,
    /// The file each image reads through (in `images`' order), recorded with it in the trash.
    pub backings: Vec<Option<PathBuf>>,
    /// Unlinked at once, not moved into the trash.
    pub purge: bool,
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
            purge: false,
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
            purge: ask.purge,
        };
        plan(&found.scan.forest, &req)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        let images = plan.images.iter().rev().map(|i| i.path.clone());
        images
            .chain(plan.data_files.iter().map(|d| d.path.clone()))
            .collect()
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
        .map(|i| match p.data_files.iter().find(|d| d.image == i.path) {
            Some(d) => format!("{} with its data file {}", i.path.shown(), d.path.shown()),
            None => i.path.shown().to_string(),
        })
        .collect();
    let (would, does) = if p.purge {
        ("Would delete for good", "Deletes for good")
    } else {
        ("Would move into the trash", "Moves into the trash")
    };
    let mut d = Description::new(format!("{would}, in this order: {}.", list.join(", ")));
    d.text(format!("{does}, in this order:"));
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
    no_data_file_of_others(forest, &order)?;
    let data_files = data_files(forest, &order)?;
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
    let backing_of = |id: NodeId| {
        let n = forest.node(id);
        n.backing_node()
            .map(|b| forest.node(b).path.clone())
            .or_else(|| n.backing.as_ref().map(|b| b.path.clone()))
    };
    Ok(Plan {
        images,
        aliases,
        // Only a backing file that is there has one overlay fewer.
        backing: n.backing_node().map(|b| forest.node(b).path.clone()),
        data_files,
        backings: order.iter().map(|&id| backing_of(id)).collect(),
        purge: req.purge,
    })
}

/// An image's external data file, removed right after the image.
#[derive(Clone, Debug)]
pub struct DataFile {
    /// The image whose guest data it holds.
    pub image: PathBuf,
    pub path: PathBuf,
    pub ident: FileId,
}

/// The external data files of the images `order`, each removed right after its image. The
/// name comes from a header, so only a file that can be told to be that image's alone goes: in
/// the image's own directory, a regular file with one link, the image owner's, neither an image
/// found nor another image's data file. Anything else is refused (16), naming it.
pub(crate) fn data_files(forest: &Forest, order: &[NodeId]) -> Result<Vec<DataFile>, Refusal> {
    let mut found = Vec::new();
    for &id in order {
        found.extend(data_file_of(forest, id)?);
    }
    Ok(found)
}

fn data_file_of(forest: &Forest, id: NodeId) -> Result<Option<DataFile>, Refusal> {
    use std::os::unix::fs::MetadataExt;
    let m = forest.node(id);
    let Some(h) = m
        .qcow2
        .as_ref()
        .filter(|h| h.external_data_file() || h.data_file.is_some())
    else {
        return Ok(None);
    };
    let Some(path) = h.data_file_path(&m.path) else {
        return Err(Refusal::Unsupported {
            path: m.path.clone(),
            what: "is marked as keeping its guest data in an external data file but names \
                   none; inspect it with qemu-img info"
                .into(),
        });
    };
    let refuse = |why: &str| Refusal::Unsupported {
        path: m.path.clone(),
        what: format!(
            "keeps its guest data in an external data file, {}, which {why}: imgchain deletes a \
             data file with its image only when it can tell it is that image's alone; once \
             nothing uses them, remove both yourself: rm -- {} {}",
            path.shown(),
            m.path.quoted(),
            path.quoted()
        ),
    };
    if path.parent() != m.path.parent() {
        return Err(refuse("is outside the image's directory"));
    }
    let md = std::fs::symlink_metadata(&path).map_err(|_| refuse("cannot be found"))?;
    let owner = m.ident.and_then(|i| file::Owner::of_path(&m.path, i).ok());
    if !md.file_type().is_file() || md.nlink() != 1 {
        return Err(refuse("is not a regular file with a single name"));
    }
    if owner.is_none_or(|o| o.uid != md.uid()) {
        return Err(refuse("belongs to another user than the image"));
    }
    let ident = FileId::of(&md);
    // The scan lists a raw data file as a raw image of its own: nothing may be built on it.
    let as_image = forest.nodes.iter().position(|n| n.ident == Some(ident));
    let used = as_image.is_some_and(|r| {
        forest.nodes[r].format != Some(crate::image::probe::Format::Raw)
            || forest
                .nodes
                .iter()
                .any(|n| n.backing_node() == Some(NodeId(r)))
    });
    if used || data_file_users(forest, ident).iter().any(|&u| u != id) {
        return Err(refuse("another image uses too"));
    }
    Ok(Some(DataFile {
        image: m.path.clone(),
        path,
        ident,
    }))
}

/// The images whose external data file is `ident`.
fn data_file_users(forest: &Forest, ident: FileId) -> Vec<NodeId> {
    (0..forest.nodes.len())
        .map(NodeId)
        .filter(|&i| {
            let n = forest.node(i);
            n.qcow2
                .as_ref()
                .and_then(|h| h.data_file_path(&n.path))
                .is_some_and(|p| FileId::of_path(&p) == Some(ident))
        })
        .collect()
}

/// No image to delete is the external data file of an image that stays (12, in use by it):
/// deleting it would take that image's guest data.
fn no_data_file_of_others(forest: &Forest, order: &[NodeId]) -> Result<(), Refusal> {
    for &id in order {
        let n = forest.node(id);
        let Some(ident) = n.ident else { continue };
        let mut users: Vec<PathBuf> = data_file_users(forest, ident)
            .into_iter()
            .filter(|u| !order.contains(u))
            .map(|u| forest.node(u).path.clone())
            .collect();
        if !users.is_empty() {
            users.sort();
            let names: Vec<String> = users.iter().map(|u| u.shown().to_string()).collect();
            return Err(Refusal::HeldElsewhere {
                path: n.path.clone(),
                what: format!(
                    "is the external data file of {} and holds its guest data; delete that \
                     image instead, which takes its data file with it",
                    names.join(", ")
                ),
            });
        }
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
        locks.push(lock_unused(&img.path, img.ident)?);
    }
    for d in &plan.data_files {
        locks.push(lock_unused(&d.path, d.ident)?);
    }
    if !plan.purge {
        trash_ready(plan)?;
    }
    report(Phase::Delete, 0);
    let mut deleted = Vec::new();
    let mut failed = None;
    let throw = (!plan.purge).then(|| crate::trash::Throw::new("delete", plan_image(plan)));
    for (img, backing) in plan.images.iter().zip(&plan.backings) {
        let data_file = plan.data_files.iter().find(|d| d.image == img.path);
        let gone = Gone {
            img,
            data_file,
            backing: backing.as_deref(),
        };
        if let Err(e) = gone.remove(throw.as_ref(), &mut deleted) {
            failed = Some(e);
            break;
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

/// The trash beside every file the plan removes, made where there is none, or the refusal
/// that names one imgchain will not use (before anything moves).
fn trash_ready(plan: &Plan) -> Result<(), Refusal> {
    let files = plan.images.iter().map(|i| (&i.path, i.ident));
    let files = files.chain(plan.data_files.iter().map(|d| (&d.path, d.ident)));
    for (path, ident) in files {
        crate::trash::Trash::beside(path, ident).map_err(|e| {
            Refusal::from(e).with(super::refusal::Way::cli_only(
                "or add --purge to delete without the trash",
            ))
        })?;
    }
    Ok(())
}

/// The image a plan was asked about: the last one it removes.
fn plan_image(plan: &Plan) -> &Path {
    plan.images.last().map_or(Path::new(""), |i| &i.path)
}

/// An image a run removes, with its data file and the file it reads through.
pub(super) struct Gone<'a> {
    pub img: &'a PlanImage,
    pub data_file: Option<&'a DataFile>,
    pub backing: Option<&'a Path>,
}

impl Gone<'_> {
    /// Removes the image, then its data file if it has one (a crash in between leaves the
    /// data file alone, named by nothing) — into the trash with `throw`, else for good — each
    /// recorded in `deleted`; the first failure, with its path.
    pub(super) fn remove(
        &self,
        throw: Option<&crate::trash::Throw>,
        deleted: &mut Vec<PathBuf>,
    ) -> Result<(), (PathBuf, String)> {
        let img = self.img;
        let gone = |path: &Path, ident, backing, of| match throw {
            Some(t) => t
                .file(path, ident, backing, of)
                .map_err(|e| match e.path == path {
                    true => e.what,
                    false => e.to_string(),
                }),
            None => remove_by_identity(path, ident).map_err(|e| e.to_string()),
        };
        gone(&img.path, img.ident, self.backing, None).map_err(|e| (img.path.clone(), e))?;
        deleted.push(img.path.clone());
        if let Some(d) = self.data_file {
            gone(&d.path, d.ident, None, Some(&img.path)).map_err(|e| (d.path.clone(), e))?;
            deleted.push(d.path.clone());
        }
        Ok(())
    }
}

/// Opens the file at `path`, checks it is `ident`, takes a reader's QEMU locks on it and checks
/// no other process holds any.
pub(super) fn lock_unused(path: &Path, ident: FileId) -> Result<ImageLock, Refusal> {
    let io = |e: io::Error| Refusal::Changed {
        path: path.to_path_buf(),
        what: format!("it cannot be opened again: {e}"),
    };
    let fd = file::open_as(path, OpenMode::ReadOnly, ident).map_err(io)?;
    let lock = ImageLock::acquire(std::os::fd::AsFd::as_fd(&fd), path, Access::READ_ONLY)?;
    let foreign = crate::image::lock::probe(std::os::fd::AsFd::as_fd(&fd)).map_err(io)?;
    if foreign.in_use() {
        return Err(Refusal::InUse(LockError::InUse {
            path: path.to_path_buf(),
            holder: crate::image::lock::holders(&[ident].into_iter().collect())
                .remove(&ident)
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
            "data_files": self.plan.data_files.iter().map(|d| crate::text::lossy(&d.path)).collect::<Vec<_>>(),
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
            match self.plan.purge {
                true => format!("Deleted {}.", names(&self.deleted)),
                false => format!(
                    "Moved {} into the trash ({} beside it): imgchain trash restore {} \
                     brings it back until the trash is emptied.",
                    names(&self.deleted),
                    crate::trash::DIR,
                    match self.deleted.as_slice() {
                        [one] => one.quoted().to_string(),
                        _ => "PATH".into(),
                    }
                ),
            }
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
    let images = plan.images.iter().map(|i| &i.path);
    let frees = images
        .chain(plan.data_files.iter().map(|d| &d.path))
        .map(|p| space::on_disk(p))
        .sum();
    let first = plan
        .images
        .first()
        .map_or_else(PathBuf::new, |i| i.path.clone());
    Space::delete(&first, frees, plan.purge)
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
            purge: true,
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
