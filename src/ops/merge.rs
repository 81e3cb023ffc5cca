//! Merge: remove a middle layer of a chain, as libvirt deletes an external snapshot
//! (ARCHITECTURE.md §3). IMAGE's data is committed into its backing file (IMAGE keeps it),
//! every overlay of IMAGE is pointed at that backing file, and IMAGE is deleted.
//!
//! No step changes what any overlay reads: while the commit runs, IMAGE's overlays read
//! IMAGE, whose own data hides what the base gains; once the base holds IMAGE's whole view
//! (synced), an overlay reads the same through either file, so it is re-pointed one at a time;
//! IMAGE goes last. A journal beside IMAGE (`.NAME.imgchain-merge`, written and synced before
//! the first write) records the plan and whether the commit finished, so a run cut short is
//! reported by `check` and finished by running the same merge again.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::commit;
use super::libvirt_snapshots::{self, ThroughLibvirt};
use super::plan_image::PlanImage;
use super::rebase::{self, backing_name};
use super::scope::Discovered;
use super::settings::Settings;
use super::space::{self, Space};
use super::{
    Description, OpKind, Operation, Phase, Progress, Refusal, Report, Run, Selected, delete, guards,
};
use crate::forest::{Forest, NodeId};
use crate::image::file::FileId;
use crate::image::lock::Access;
use crate::image::newfile::{self, NewFile};
use crate::text::Names;
use rustix::fs::{Mode, OFlags};

/// What the user asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub image: NodeId,
    /// Merge even though the backing file has other overlays (their disks change), carries
    /// persistent bitmaps, or may be too full.
    pub force: bool,
    /// Remove IMAGE even though a defined libvirt VM names it as a disk (the CLI's `--force`;
    /// the UI never lifts this).
    pub vm_disk: bool,
    /// Keep IMAGE's file once nothing is built on it.
    pub keep: bool,
    /// Upgrade a qcow2 v2 backing file to compat=1.1 before the commit (`--amend`).
    pub amend: bool,
}

/// What the UI asks for; `force` lifts the shared-base guard only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub force: bool,
    /// Upgrade a qcow2 v2 backing file to compat=1.1 first (the amend key).
    pub amend: bool,
}

/// A merge that passed every guard.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The commit of IMAGE into its backing file (IMAGE keeps its data); `None` when a
    /// journal says it finished already.
    pub commit: Option<commit::Plan>,
    pub image: PlanImage,
    pub base: PlanImage,
    /// IMAGE's overlays, each with the backing name it gets.
    pub overlays: Vec<(PlanImage, String)>,
    pub keep: bool,
    /// Finishing a merge its journal says was cut short.
    pub resumed: bool,
    /// IMAGE is the file a libvirt snapshot created: libvirt merges it (`commit` is `None`).
    pub libvirt: Option<ThroughLibvirt>,
    /// IMAGE's external data file, deleted with it.
    pub data_file: Option<delete::DataFile>,
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// The commit's own outcome (`None`: done by an earlier run).
    pub commit: Option<commit::Outcome>,
    /// Each overlay re-pointed, or why not; those after a failure are not tried.
    pub relinked: Vec<(PathBuf, Result<(), String>)>,
    /// Deleting IMAGE (`None`: kept, or not reached).
    pub deleted: Option<Result<(), String>>,
    /// The merge libvirt did: what it said, or why it failed.
    pub libvirt: Option<Result<String, String>>,
}

/// The journal of a merge under way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Journal {
    pub image: PathBuf,
    pub base: PathBuf,
    pub overlays: Vec<PathBuf>,
    /// The base holds IMAGE's whole view, on disk.
    pub committed: bool,
    /// The identities of IMAGE and the base: a journal is only taken for the files it was
    /// written for.
    #[serde(default)]
    pub image_id: Option<FileId>,
    #[serde(default)]
    pub base_id: Option<FileId>,
    /// IMAGE's external data file, deleted right after IMAGE.
    #[serde(default)]
    pub data_file: Option<(PathBuf, FileId)>,
}

pub use crate::forest::scan::merge_journal as journal_path;

/// The largest journal imgchain reads; its own are a few hundred bytes per overlay.
const JOURNAL_MAX: u64 = 1 << 20;

/// The journal of an interrupted merge of `image`, if there is one. It is imgchain's own only
/// if it is a regular file (never followed through a link, never a FIFO or device), owned by
/// this user, readable by nobody else, and not larger than [`JOURNAL_MAX`].
pub fn read_journal(image: &Path) -> io::Result<Option<Journal>> {
    let path = journal_path(image);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(&path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(foreign("is a symbolic link")),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if let Some(what) = crate::image::file::special_kind(st.st_mode) {
        return Err(foreign(&format!("is {what}")));
    }
    if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
        return Err(foreign(&format!(
            "belongs to uid {} with mode {:o}, not to this user with mode 600",
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    if st.st_size as u64 > JOURNAL_MAX {
        return Err(foreign(&format!("is {} bytes long", st.st_size)));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(std::fs::File::from(fd), JOURNAL_MAX),
        &mut bytes,
    )?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn foreign(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{what}, so it is not a journal imgchain wrote; remove it if no merge is under way"
        ),
    )
}

/// Writes the journal atomically and syncs its directory: a new unnamed file (0600) is written
/// and synced, linked under a fresh name and renamed over the journal; the result must be that
/// file.
fn write_journal(j: &Journal) -> io::Result<()> {
    let path = journal_path(&j.image);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let new = NewFile::create(newfile::open_dir(dir)?, name)?;
    serde_json::to_writer(&new.file, j).map_err(io::Error::other)?;
    new.file.sync_all()?;
    new.replace(name)
}

/// Finishes a merge cut short after IMAGE was deleted: its data file (if the journal names one
/// and it is still that file) and the journal go. Returns the data file removed.
pub fn finish_deleted(j: &Journal) -> io::Result<Option<PathBuf>> {
    let removed = match &j.data_file {
        Some((path, ident)) if FileId::of_path(path) == Some(*ident) => {
            delete::remove_by_identity(path, *ident)?;
            Some(path.clone())
        }
        _ => None,
    };
    remove_journal(&j.image)?;
    Ok(removed)
}

fn remove_journal(image: &Path) -> io::Result<()> {
    let path = journal_path(image);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// The merge operation.
#[derive(Debug)]
pub struct Merge;

impl Operation for Merge {
    const KIND: OpKind = OpKind::MERGE;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req, None)
    }

    const ACTION: Option<&'static str> = Some("merge");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
            force: false,
            amend: false,
        })
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    /// Finishes a merge its journal says was cut short.
    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        let journal = read_journal(&ask.image).map_err(|e| Refusal::Changed {
            path: journal_path(&ask.image),
            what: format!("the merge journal cannot be read: {e}"),
        })?;
        let req = Request {
            image: found.image,
            force: ask.force,
            vm_disk: false,
            keep: false,
            amend: ask.amend,
        };
        plan(&found.scan.forest, &req, journal.as_ref())
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        let mut w = vec![plan.base.path.clone()];
        w.extend(plan.overlays.iter().map(|(o, _)| o.path.clone()));
        if !plan.keep {
            w.push(plan.image.path.clone());
        }
        w
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    /// None through libvirt, whose snapshot metadata an undo of the files would not match.
    fn changes(plan: &Plan) -> Vec<PlanImage> {
        if plan.libvirt.is_some() {
            return Vec::new();
        }
        let image = (!plan.keep).then(|| plan.image.clone());
        let overlays = plan.overlays.iter().map(|(o, _)| o.clone());
        image
            .into_iter()
            .chain(overlays)
            .chain(std::iter::once(plan.base.clone()))
            .collect()
    }

    fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
        space(plan, clone).map(Some)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r)
    }
}

/// What is committed where, which overlays move, and what goes.
pub fn describe(p: &Plan) -> Description {
    if let Some(t) = &p.libvirt {
        return describe_through_libvirt(p, t);
    }
    let name = crate::forest::model::file_name;
    let (image, base) = (name(&p.image.path), name(&p.base.path));
    let overlays: Vec<String> = p
        .overlays
        .iter()
        .map(|(o, _)| o.path.shown().to_string())
        .collect();
    let mut d = Description::new(format!(
        "Would commit {} into {}, point {} at {}, and {} {}.",
        p.image.path.shown(),
        p.base.path.shown(),
        if overlays.is_empty() {
            "no overlay".to_string()
        } else {
            overlays.join(", ")
        },
        p.base.path.shown(),
        if p.keep { "keep" } else { "delete" },
        p.image.path.shown()
    ));
    d.field("into", p.base.path.shown().to_string());
    if let Some(f) = &p.data_file {
        d.field(
            "data file",
            format!("{} is deleted with it", f.path.shown()),
        );
    }
    if p.resumed {
        d.field("finishing", "a merge that was cut short");
    }
    d.text(format!(
        "{image} is committed into {base}; then these are built on {base}:"
    ));
    for o in overlays {
        d.item(o);
    }
    let forced_over = p.commit.as_ref().map_or(&[][..], |c| &c.forced_over[..]);
    let done = if p.keep { "kept" } else { "deleted" };
    if forced_over.is_empty() {
        d.then(format!(
            "and {image} is {done}. No overlay's disk changes at any step."
        ));
    } else {
        d.then(format!(
            "and {image} is {done}. Its overlays' disks do not change, but these, built on \
             {base} too, see their disks change:"
        ));
        for o in forced_over {
            d.warning(format!("  {}", o.shown()));
        }
    }
    if let Some(c) = p.commit.as_ref().filter(|c| !c.merged_bitmaps.is_empty()) {
        let when = match c.by_qemu.is_empty() {
            true => "first",
            false => "once it holds the data",
        };
        d.then(format!(
            "{image}'s bitmaps {} are merged into {base}'s of the same name {when} (added where \
             missing), as libvirt does when it deletes a snapshot layer.",
            super::commit::names_list(&c.merged_bitmaps)
        ));
    }
    if let Some(c) = p.commit.as_ref().filter(|c| !c.marks.is_empty()) {
        let when = match c.by_qemu.is_empty() {
            true => "before the first write",
            false => "as it writes",
        };
        d.then(format!(
            "{base}'s bitmaps {} are marked with what it writes (by qemu-img, {when}).",
            super::commit::names_list(&c.marks)
        ));
    }
    d
}

/// A merge libvirt does: the command, and what it changes.
fn describe_through_libvirt(p: &Plan, t: &ThroughLibvirt) -> Description {
    let mut d = Description::new(format!(
        "Would have libvirt merge {} into {}: {}.",
        p.image.path.shown(),
        p.base.path.shown(),
        t.command()
    ));
    d.field("into", p.base.path.shown().to_string());
    d.field(
        "through",
        format!("libvirt ({}), domain {}", t.uri, t.domain.shown()),
    );
    d.then(format!(
        "{} is the file libvirt snapshot {:?} of {} created: libvirt commits it into {}, points \
         what is built on it there, deletes it and the snapshot's metadata, so that its snapshot \
         list stays true.",
        p.image.path.shown(),
        t.snapshot,
        t.domain.shown(),
        p.base.path.shown()
    ));
    for (o, _) in &p.overlays {
        d.item(o.path.shown().to_string());
    }
    d
}

/// Checks the guards and works out the merge; nothing is written. With `journal` (an
/// interrupted merge of the same image), the overlays it re-pointed to the base already count
/// as IMAGE's, and a finished commit is not done again.
pub fn plan(forest: &Forest, req: &Request, journal: Option<&Journal>) -> Result<Plan, Refusal> {
    let n = forest.node(req.image);
    let resumed = journal.is_some();
    let committed = journal.is_some_and(|j| j.committed);
    let overlays: Vec<NodeId> = n.overlays.clone();
    if journal.is_none() {
        if let Some(through) = libvirt_snapshots::merge_of(forest, req.image)? {
            return plan_through_libvirt(forest, req, through);
        }
        let state = [crate::forest::model::RecordRole::State];
        libvirt_snapshots::not_recorded(forest, &[req.image], &state, "merging it away")?;
    }
    if let Some(j) = journal {
        journal_fits(forest, req.image, j)?;
    } else if overlays.is_empty() {
        return Err(Refusal::BadTarget {
            path: n.path.clone(),
            what: "has no overlays, so there is nothing to merge it into them; it is likely a \
                   VM's disk: commit it to move its data into its backing file, or delete it to \
                   remove it"
                .into(),
        });
    }
    overlays_writable(forest, req, &overlays)?;
    let data_file = match req.keep {
        true => None,
        false => delete::data_files(forest, &[req.image])?.pop(),
    };
    let commit = commit_plan(forest, req, journal)?;
    overlays_keep_their_disks(forest, req.image, &overlays, &commit)?;
    let overlays = overlays
        .iter()
        .map(|&o| {
            let img = PlanImage::of(forest, o)?;
            let name = kept_name(forest, o, req.image, &commit.base)
                .unwrap_or_else(|| backing_name(&img.path, &commit.base.path));
            Ok((img, name))
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(Plan {
        image: commit.top.clone(),
        base: commit.base.clone(),
        commit: (!committed).then_some(commit),
        overlays,
        keep: req.keep,
        resumed,
        libvirt: None,
        data_file,
    })
}

/// The merge of a layer a libvirt snapshot created, which libvirt does (`virsh
/// snapshot-delete`): imgchain's guards on what it changes (keep-RO, other overlays of the
/// base), not its lock checks: libvirt asks its own running VM, or takes QEMU's locks.
fn plan_through_libvirt(
    forest: &Forest,
    req: &Request,
    through: ThroughLibvirt,
) -> Result<Plan, Refusal> {
    let n = forest.node(req.image);
    let base = n.backing_node().ok_or_else(|| Refusal::NoBacking {
        top: n.path.clone(),
        op: OpKind::MERGE,
    })?;
    if req.keep {
        let bad = Refusal::BadTarget {
            path: n.path.clone(),
            what: format!(
                "is merged by libvirt ({}), which deletes it",
                through.command()
            ),
        };
        return Err(bad.with(crate::ops::refusal::Way::cli_only(
            "--keep cannot be honoured: merge it without --keep",
        )));
    }
    guards::not_kept_ro(forest, n.overlays.iter().copied().chain([req.image, base]))?;
    guards::other_overlays(forest, base, &[req.image], req.force)?;
    let base_img = PlanImage::of(forest, base)?;
    let overlays = n
        .overlays
        .iter()
        .map(|&o| {
            let img = PlanImage::of(forest, o)?;
            let name = backing_name(&img.path, &base_img.path);
            Ok((img, name))
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(Plan {
        image: PlanImage::of(forest, req.image)?,
        base: base_img,
        commit: None,
        overlays,
        keep: false,
        resumed: false,
        libvirt: Some(through),
        data_file: None,
    })
}

/// IMAGE's overlays get new headers and IMAGE goes (unless kept): none may be protected,
/// held, or a format imgchain cannot relink; IMAGE may be a VM's disk only when forced.
fn overlays_writable(forest: &Forest, req: &Request, overlays: &[NodeId]) -> Result<(), Refusal> {
    guards::not_kept_ro(forest, overlays.iter().copied().chain([req.image]))?;
    if !req.keep {
        guards::not_a_vm_disk(forest, &[req.image], req.vm_disk)?;
    }
    guards::not_in_use(
        forest,
        overlays
            .iter()
            .map(|&o| (o, Access::READ_WRITE))
            .chain(std::iter::once((req.image, Access::READ_WRITE))),
    )?;
    for &o in overlays {
        guards::supported(forest.node(o), guards::Role::Header)?;
    }
    Ok(())
}

/// The commit of IMAGE into its backing file, as the merge runs it: other overlays of the
/// base are refused unless forced, but those an earlier run re-pointed (its journal) count
/// as IMAGE's.
fn commit_plan(
    forest: &Forest,
    req: &Request,
    journal: Option<&Journal>,
) -> Result<commit::Plan, Refusal> {
    let committed = journal.is_some_and(|j| j.committed);
    let commit = commit::plan(
        forest,
        &commit::Request {
            top: req.image,
            base: None,
            keep_top: true,
            force: req.force || committed,
            amend: req.amend,
        },
    );
    let commit = commit.map_err(|e| match e {
        Refusal::NoBacking { top, .. } => Refusal::NoBacking {
            top,
            op: OpKind::MERGE,
        },
        e => e,
    });
    let mut commit = match (commit, journal) {
        // The overlays an earlier run re-pointed are built on the base now: they are ours.
        (Err(Refusal::SharedBase { others, .. }), Some(j))
            if others.iter().all(|o| j.overlays.contains(o)) =>
        {
            commit::plan(
                forest,
                &commit::Request {
                    top: req.image,
                    base: None,
                    keep_top: true,
                    force: true,
                    amend: req.amend,
                },
            )?
        }
        (c, _) => c?,
    };
    if let Some(base) = forest.chain(req.image).next() {
        commit.merged_bitmaps = merged_bitmaps(forest.node(req.image), forest.node(base))?;
    }
    Ok(commit)
}

/// The bitmaps of IMAGE a merge carries into the base (those QEMU can still use); refused
/// when the base cannot hold bitmaps (raw).
fn merged_bitmaps(
    image: &crate::forest::Node,
    base: &crate::forest::Node,
) -> Result<Vec<String>, Refusal> {
    let Some(h) = image.qcow2.as_ref().filter(|h| h.bitmaps()) else {
        return Ok(Vec::new());
    };
    let list = crate::image::bitmaps::read(&image.path, h).map_err(|e| Refusal::Unsupported {
        path: image.path.clone(),
        what: format!("has persistent bitmaps whose directory cannot be read ({e})"),
    })?;
    let names: Vec<String> = list
        .into_iter()
        .filter(|(b, _)| !b.in_use)
        .map(|(b, _)| b.name)
        .collect();
    if !names.is_empty() && base.qcow2.is_none() {
        return Err(Refusal::Unsupported {
            path: image.path.clone(),
            what: format!(
                "has persistent bitmaps ({}) that a merge moves into its backing file, but {} is \
                 not qcow2 and cannot hold them; remove them first (qemu-img bitmap --remove)",
                commit::names_list(&names),
                base.path.shown()
            ),
        });
    }
    Ok(names)
}

/// Past IMAGE's end an overlay reads zeroes; through a larger base it would read its data.
fn overlays_keep_their_disks(
    forest: &Forest,
    image: NodeId,
    overlays: &[NodeId],
    commit: &commit::Plan,
) -> Result<(), Refusal> {
    let n = forest.node(image);
    if commit.base.virtual_size > commit.top.virtual_size
        && let Some(&o) = overlays
            .iter()
            .find(|&&o| forest.node(o).virtual_size > Some(commit.top.virtual_size))
    {
        return Err(Refusal::Unsupported {
            path: forest.node(o).path.clone(),
            what: format!(
                "is larger than {}, whose backing file is larger still: past {}'s end it reads \
                 zeroes now, and would read {}'s data once built on it; merging cannot keep its \
                 disk",
                n.path.shown(),
                n.name(),
                commit.base.path.shown()
            ),
        });
    }
    Ok(())
}

/// Runs the merge: journal, commit, re-point each overlay, delete IMAGE, drop the journal.
/// Returns a refusal only when nothing was written.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    if let Some(through) = &plan.libvirt {
        (r.progress)(Progress {
            op: OpKind::MERGE,
            phase: Phase::Copy,
            done: 0,
            total: 0,
            elapsed: std::time::Duration::ZERO,
            writing: true,
        });
        return Ok(Outcome {
            plan: plan.clone(),
            commit: None,
            relinked: Vec::new(),
            deleted: None,
            libvirt: Some(libvirt_snapshots::run(through, &plan.image.path)),
        });
    }
    let journal_error = |e: io::Error| Refusal::Changed {
        path: journal_path(&plan.image.path),
        what: format!("the merge journal cannot be written: {e}"),
    };
    let mut journal = Journal {
        image: plan.image.path.clone(),
        base: plan.base.path.clone(),
        overlays: plan.overlays.iter().map(|(o, _)| o.path.clone()).collect(),
        committed: plan.commit.is_none(),
        image_id: Some(plan.image.ident),
        base_id: Some(plan.base.ident),
        data_file: plan.data_file.as_ref().map(|d| (d.path.clone(), d.ident)),
    };
    if !plan.resumed {
        write_journal(&journal).map_err(journal_error)?;
    }
    let mut outcome = Outcome {
        plan: plan.clone(),
        commit: None,
        relinked: Vec::new(),
        deleted: None,
        libvirt: None,
    };
    let Run {
        settings,
        cancel,
        progress,
    } = r;
    if let Some(c) = &plan.commit {
        let run = Run {
            settings,
            cancel,
            progress: &mut *progress,
        };
        if !commit_step(plan, c, run, &mut journal, &mut outcome)? {
            return Ok(outcome);
        }
    }
    relink_and_delete(plan, progress, &mut outcome);
    Ok(outcome)
}

/// Commits IMAGE into the base and marks it done in the journal; whether the merge goes on
/// (`false`: the commit did not finish, or the journal could not say it did, as `outcome`
/// tells). A refusal means nothing was written.
fn commit_step(
    plan: &Plan,
    c: &commit::Plan,
    Run {
        settings,
        cancel,
        progress,
    }: Run<'_>,
    journal: &mut Journal,
    outcome: &mut Outcome,
) -> Result<bool, Refusal> {
    let mut relabel = |mut p: Progress| {
        p.op = OpKind::MERGE;
        progress(p)
    };
    let result = commit::run(
        c,
        Run {
            settings,
            cancel,
            progress: &mut relabel,
        },
    );
    let done = match &result {
        Ok(o) => o.exit_code() == crate::exit::OK,
        Err(_) => false,
    };
    match result {
        Ok(o) => outcome.commit = Some(o),
        Err(e) => {
            if !plan.resumed {
                let _ = remove_journal(&plan.image.path);
            }
            return Err(e);
        }
    }
    if !done {
        // Nothing was re-pointed: the journal has nothing to finish.
        if !plan.resumed {
            let _ = remove_journal(&plan.image.path);
        }
        return Ok(false);
    }
    journal.committed = true;
    if let Err(e) = write_journal(journal) {
        outcome.relinked.push((
            plan.image.path.clone(),
            Err(format!("the merge journal cannot be updated: {e}")),
        ));
        return Ok(false);
    }
    Ok(true)
}

/// Points each overlay at the base, then deletes IMAGE (unless kept) and the journal,
/// stopping at the first failure, into `outcome`.
fn relink_and_delete(plan: &Plan, progress: &mut dyn FnMut(Progress), outcome: &mut Outcome) {
    let report = |progress: &mut dyn FnMut(Progress), phase, done| {
        progress(Progress {
            op: OpKind::MERGE,
            phase,
            done,
            total: plan.overlays.len() as u64,
            elapsed: std::time::Duration::ZERO,
            writing: false,
        })
    };
    report(progress, Phase::Relink, 0);
    for (i, (o, name)) in plan.overlays.iter().enumerate() {
        // An overlay an earlier run re-pointed already gets the same header again.
        let r = rebase::relink(o, Some(&(name.clone(), plan.base.format)));
        let failed = r.is_err();
        outcome.relinked.push((o.path.clone(), r));
        report(progress, Phase::Relink, i as u64 + 1);
        if failed {
            return;
        }
    }
    if !plan.keep {
        report(progress, Phase::Delete, plan.overlays.len() as u64);
        let r = if plan.image.path.exists() {
            delete_image(plan)
        } else {
            Ok(())
        };
        let failed = r.is_err();
        outcome.deleted = Some(r);
        if failed {
            return;
        }
    }
    if let Err(e) = remove_journal(&plan.image.path) {
        outcome.deleted = Some(Err(format!("the merge journal cannot be removed: {e}")));
    }
    report(progress, Phase::Done, plan.overlays.len() as u64);
}

/// Moves IMAGE, and its data file, into the trash by identity once no process holds them
/// (delete's own checks and removal); the trash records the base it read through.
fn delete_image(plan: &Plan) -> Result<(), String> {
    let (img, data_file) = (&plan.image, plan.data_file.as_ref());
    let _lock = delete::lock_unused(&img.path, img.ident).map_err(|e| e.to_string())?;
    let _data_lock = match data_file {
        Some(d) => Some(delete::lock_unused(&d.path, d.ident).map_err(|e| e.to_string())?),
        None => None,
    };
    let gone = delete::Gone {
        img,
        data_file,
        backing: Some(&plan.base.path),
    };
    let throw = crate::trash::Throw::new("merge", &img.path);
    gone.remove(Some(&throw), &mut Vec::new())
        .map_err(|(path, e)| format!("{}: {e}", path.shown()))
}

impl Report for Outcome {
    /// `merge --json`.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": crate::text::lossy(&self.plan.image.path),
            "base": crate::text::lossy(&self.plan.base.path),
            "resumed": self.plan.resumed,
            "commit": self.commit.as_ref().map(Report::json),
            "relinked": self.relinked.iter().map(|(p, r)| serde_json::json!({
                "overlay": crate::text::lossy(p),
                "ok": r.is_ok(),
                "error": r.as_ref().err(),
            })).collect::<Vec<_>>(),
            "deleted": self.deleted.as_ref().map(|r| r.is_ok()),
            "libvirt": self.plan.libvirt.as_ref().map(|t| serde_json::json!({
                "domain": t.domain,
                "snapshot": t.snapshot,
                "command": t.command(),
                "ok": self.libvirt.as_ref().is_some_and(|r| r.is_ok()),
                "error": self.libvirt.as_ref().and_then(|r| r.as_ref().err()),
            })),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        if let Some(Err(_)) = &self.libvirt {
            return crate::exit::IO_ERROR;
        }
        if let Some(c) = &self.commit
            && c.exit_code() != crate::exit::OK
        {
            return c.exit_code();
        }
        if self.relinked.iter().any(|(_, r)| r.is_err()) || matches!(self.deleted, Some(Err(_))) {
            return crate::exit::IO_ERROR;
        }
        crate::exit::OK
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let (image, base) = (p.image.path.shown(), p.base.path.shown());
        if let (Some(t), Some(r)) = (&p.libvirt, &self.libvirt) {
            return match r {
                Ok(_) => format!(
                    "libvirt merged {image} into {base} and deleted snapshot {:?} of {} ({}).",
                    t.snapshot,
                    t.domain.shown(),
                    t.command()
                ),
                Err(e) => format!(
                    "libvirt could not merge {image}: {e}. See what it left with virsh -c {} \
                     snapshot-list --domain {} and imgchain tree.",
                    t.uri.quoted(),
                    t.domain.quoted()
                ),
            };
        }
        if let Some(c) = &self.commit
            && c.exit_code() != crate::exit::OK
        {
            return format!(
                "The merge stopped in its commit; no overlay was re-pointed and {image} is still \
                 there. {}",
                c.summary()
            );
        }
        let mut s = match &self.commit {
            Some(c) if !c.plan.by_qemu.is_empty() => format!(
                "Committed {image} into {base} through qemu-img commit ({} need QEMU's own code).",
                c.plan.by_qemu.join(", ")
            ),
            Some(c) => format!(
                "Committed {} of {image} into {base}.",
                crate::units::human_size(c.total)
            ),
            None => format!("{base} already held {image}'s data (an earlier run committed it)."),
        };
        let ok: Vec<String> = self
            .relinked
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(o, _)| o.shown().to_string())
            .collect();
        if !ok.is_empty() {
            s.push_str(&format!(" Now built on {base}: {}.", ok.join(", ")));
        }
        if let Some((o, Err(e))) = self.relinked.iter().find(|(_, r)| r.is_err()) {
            s.push_str(&format!(
                " Could not re-point {}: {e}. Every overlay reads what it read before; run \
                 imgchain merge {image} again to finish.",
                o.shown()
            ));
            return s;
        }
        match &self.deleted {
            Some(Ok(())) => match &p.data_file {
                Some(f) => s.push_str(&format!(
                    " Moved {image} and its data file {} into the trash beside them.",
                    f.path.shown()
                )),
                None => s.push_str(&format!(" Moved {image} into the trash beside it.")),
            },
            Some(Err(e)) => s.push_str(&format!(
                " Could not delete {image}: {e}; nothing is built on it any more, so it can be \
                 removed by hand."
            )),
            None if p.keep => {
                s.push_str(&format!(" Kept {image}: nothing is built on it any more."))
            }
            None => {}
        }
        s
    }
}

/// The name `overlay` should give the base after a merge of `image`, spelled as its headers
/// spell it, as a user re-pointing it with qemu-img would: IMAGE's name for the base, seen from
/// the directory through which the overlay names IMAGE (a relative name stays relative, a
/// symlinked one symlinked). `None` when that name would not lead to the base.
fn kept_name(forest: &Forest, overlay: NodeId, image: NodeId, base: &PlanImage) -> Option<String> {
    let to_image = &forest.node(overlay).backing.as_ref()?.raw;
    let to_base = &forest.node(image).backing.as_ref()?.raw;
    let to_base = Path::new(to_base);
    let name = if to_base.is_absolute() {
        to_base.to_path_buf()
    } else {
        let to_base = to_base.strip_prefix(".").unwrap_or(to_base);
        Path::new(to_image)
            .parent()
            .unwrap_or(Path::new(""))
            .join(to_base)
    };
    let name = crate::forest::model::header_name(name.to_str()?);
    let dir = forest.node(overlay).path.parent()?;
    let leads = crate::image::file::FileId::of_path(&dir.join(&name)) == Some(base.ident);
    leads.then_some(name)
}

/// A journal is taken only for the merge it was written for: the same IMAGE and base, by
/// path and identity.
fn journal_fits(forest: &Forest, image: NodeId, j: &Journal) -> Result<(), Refusal> {
    let n = forest.node(image);
    let base = n.backing_node().map(|b| forest.node(b));
    let fits = j.image == n.path
        && j.image_id.is_some()
        && j.image_id == n.ident
        && base.is_some_and(|b| j.base == b.path && j.base_id.is_some() && j.base_id == b.ident);
    if fits {
        return Ok(());
    }
    Err(Refusal::Changed {
        path: journal_path(&n.path),
        what: format!(
            "the merge journal was not written for a merge of {} into its backing file as they \
             are now; if no merge of it is under way, remove the journal and merge again",
            n.path.shown()
        ),
    })
}

/// A merge of `plan`: its commit's data into the backing file; the merged layer moves into
/// the trash (freed when it is emptied).
pub fn space(plan: &Plan, clone: bool) -> Result<Space, Refusal> {
    let trashed = if plan.keep {
        0
    } else {
        space::on_disk(&plan.image.path)
    };
    let mut s = match &plan.commit {
        None => Space::copy(
            (&plan.image, &plan.base),
            (0, 0),
            space::cluster_of(&plan.base),
            0,
            clone,
        ),
        Some(c) => commit::space_of(c, commit::measure_plan(c)?, clone),
    };
    s.frees = 0;
    s.trashed = trashed;
    Ok(s)
}
