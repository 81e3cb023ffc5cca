//! Rebase and flatten: give an image another backing file (or none) without changing what its
//! guest reads (ARCHITECTURE.md §3), as `qemu-img rebase -b NEW` and `qemu-img rebase -b ""`
//! do; and the unsafe rebase (`-u`), which only rewrites the backing name and format, for a
//! chain whose files moved.
//!
//! A safe run copies into the image, under the dirty bit and the crash-ordering layer, every
//! cluster it does not allocate itself where the old chain and the new one read differently
//! (for flatten: everything the old chain reads as non-zero). Only once that is on disk is the
//! header pointed at the new backing file, in one write ([`crate::image::header`]): a crash
//! before it leaves the old backing file in place with a guest view that never changed, after
//! it the new one with the same view.

use crate::ops::datapath::{self, Done, Tally, Transfer, kernel_move};
use crate::text::Names;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imago::ShallowMapping;

use super::datapath::CopyError;
use super::guards::{self, Role};
use super::plan_image::PlanImage;
use super::scope::{Discovered, Scope};
use super::settings::Settings;
use super::window::RwWindow;
use super::{Description, OpKind, Operation, Phase, Progress, Refusal, Report, Run, Selected};
use crate::forest::{Forest, KeepRoReason, NodeId};
use crate::image::file::{self, OpenMode};
use crate::image::handle::{Handle, ReopenError};
use crate::image::lock::{Access, ImageLock};
use crate::image::probe::Format;

const REPORT_EVERY: Duration = Duration::from_millis(100);

/// What the user asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub image: NodeId,
    /// The new backing file; `None`: no backing file (flatten).
    pub backing: Option<NodeId>,
    /// The format the user says the new backing file has (`-F`).
    pub format: Option<Format>,
    /// Only rewrite the name and format (`-u`).
    pub unsafe_names: bool,
    /// The backing name to write, when the user gave a relative one (QEMU resolves it from the
    /// image's directory); otherwise [`backing_name`] picks it.
    pub name: Option<String>,
}

/// What the UI asks for: a safe rebase of `image` onto `backing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub backing: PathBuf,
}

/// A rebase that passed every guard.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: OpKind,
    pub image: PlanImage,
    /// The image's backing chain now, top-down (empty when its backing file is missing).
    pub old: Vec<PlanImage>,
    /// The new backing file and its chain, top-down (empty for no backing file).
    pub new: Vec<PlanImage>,
    /// The backing name and format to write into the header.
    pub name: Option<(String, Format)>,
    /// Copy what differs (`false`: `-u`, names only).
    pub safe: bool,
    /// The image's cluster size: the unit compared and copied.
    pub cluster: u64,
}

/// What a run that started did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Bytes the image did not allocate itself, read through both chains.
    pub compared: u64,
    /// Bytes written into the image because the chains read them differently.
    pub copied: u64,
    /// How those bytes moved (cloned from the old backing file, copied in the kernel, or
    /// written from memory).
    pub tally: Tally,
    /// The comparison and copy, and their flush (`Ok` for `-u`).
    pub copy: Result<(), CopyError>,
    pub left_dirty: bool,
    /// Back to read-only after the copy (`None`: not attempted, or `-u`).
    pub reopen_ro: Option<Result<(), ReopenError>>,
    /// Pointing the header at the new backing file (`None`: not attempted).
    pub relinked: Option<Result<(), String>>,
    pub elapsed: Duration,
}

/// `imgchain rebase`.
#[derive(Debug)]
pub struct Rebase;

impl Operation for Rebase {
    const KIND: OpKind = OpKind::REBASE;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req)
    }

    const ACTION: Option<&'static str> = Some("rebase");

    /// Onto the image below the backing file.
    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        match sel.below.get(1) {
            Some(b) => Ok(Ask {
                image: sel.image.clone(),
                backing: b.clone(),
            }),
            None => Err(format!(
                "{} has no image below its backing file to rebase onto",
                crate::forest::model::file_name(&sel.image)
            )),
        }
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    /// The new backing file's directory too.
    fn widen(ask: &Ask, scope: &mut Scope) {
        scope.dirs.extend(ask.backing.parent().map(PathBuf::from));
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        safe(&found.scan.forest, found.image, Some(&ask.backing))
    }

    fn kind(plan: &Plan) -> OpKind {
        plan.kind
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        vec![plan.image.path.clone()]
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r)
    }
}

/// The backing file now and after, and whether the guest view is kept.
pub fn describe(p: &Plan) -> Description {
    let image = crate::forest::model::file_name(&p.image.path);
    let target = match &p.name {
        Some((n, f)) => format!("\"{n}\" ({f})"),
        None => "no backing file: independent".into(),
    };
    let mut d = Description::new(format!(
        "Would give {} {}{}.",
        p.image.path.shown(),
        match &p.name {
            Some((n, f)) => format!("the backing file \"{n}\" ({f})"),
            None => "no backing file".into(),
        },
        if p.safe {
            ", copying first what the two chains read differently"
        } else {
            " (names only)"
        }
    ));
    d.field(
        "now on",
        p.old
            .first()
            .map_or("(its backing file)".into(), |o| o.path.shown().to_string()),
    )
    .field("then on", target);
    d.text(if p.safe {
        format!(
            "What {image}'s guest reads does not change: every cluster the two chains read \
             differently is copied into it first, and only then is its header changed."
        )
    } else {
        format!(
            "Only the header's backing name changes (as qemu-img rebase -u): what {image}'s \
             guest reads changes unless the new backing file holds what it was built on."
        )
    });
    d
}

/// A safe rebase of `image` onto `backing`, or a flatten (`None`).
pub fn safe(forest: &Forest, image: NodeId, backing: Option<&Path>) -> Result<Plan, Refusal> {
    let backing = match backing {
        Some(b) => Some(forest.find(b).ok_or_else(|| Refusal::BadTarget {
            path: b.to_path_buf(),
            what: "is not an image imgchain found".into(),
        })?),
        None => None,
    };
    let req = Request {
        image,
        backing,
        format: None,
        unsafe_names: false,
        name: None,
    };
    plan(forest, &req)
}

/// The backing name to write for `backing` into `image`: the file name when both share a
/// directory, else the absolute path.
pub fn backing_name(image: &Path, backing: &Path) -> String {
    match backing.file_name() {
        Some(name) if image.parent() == backing.parent() => {
            crate::forest::model::header_name(&name.to_string_lossy())
        }
        _ => backing.display().to_string(),
    }
}

/// `id` and the chain below it, top-down.
fn with_chain(forest: &Forest, id: NodeId) -> Vec<NodeId> {
    std::iter::once(id).chain(forest.chain(id)).collect()
}

fn plan_images(forest: &Forest, ids: &[NodeId]) -> Result<Vec<PlanImage>, Refusal> {
    ids.iter().map(|&c| PlanImage::of(forest, c)).collect()
}

/// Checks the guards in order and works out the plan; nothing is written.
pub fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
    let n = forest.node(req.image);
    let kind = if req.backing.is_none() {
        OpKind::FLATTEN
    } else {
        OpKind::REBASE
    };
    if n.format != Some(Format::Qcow2) {
        return Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: "is not a qcow2 image: only qcow2 images name a backing file".into(),
        });
    }
    if kind == OpKind::FLATTEN && n.backing.is_none() {
        return Err(Refusal::NoBacking {
            top: n.path.clone(),
            op: OpKind::FLATTEN,
        });
    }
    // Keep-RO on request, or not writable: its own clusters or header change. Its guest view
    // does not (in a safe run), so the overlays' protections do not forbid it.
    guards::openable_rw(forest, req.image)?;
    if n.keep_ro_reason == Some(KeepRoReason::Requested) {
        guards::writable(forest, &[req.image])?;
    }
    let old_chain: Vec<NodeId> = forest.chain(req.image).collect();
    let new_chain: Vec<NodeId> = req.backing.map_or_else(Vec::new, |b| with_chain(forest, b));
    guards::not_in_use(
        forest,
        std::iter::once((req.image, Access::READ_WRITE)).chain(
            old_chain
                .iter()
                .chain(&new_chain)
                .map(|&c| (c, Access::READ_ONLY)),
        ),
    )?;
    let safe = !req.unsafe_names;
    old_chain_reads(forest, req.image, kind, safe)?;
    let name = match req.backing {
        Some(b) => Some(new_backing(forest, req, b, (&old_chain, &new_chain))?),
        None => None,
    };
    // The trust boundary: what lands in IMAGE is readable by IMAGE's owner.
    let mut involved = with_chain(forest, req.image);
    involved.extend_from_slice(&new_chain);
    let sources: Vec<NodeId> = if safe {
        involved[1..].to_vec()
    } else {
        Vec::new()
    };
    crate::ops::trust::within_reach(forest, &involved, &[req.image], &sources)?;
    Ok(Plan {
        kind,
        image: PlanImage::of(forest, req.image)?,
        old: if safe {
            plan_images(forest, &old_chain)?
        } else {
            Vec::new()
        },
        new: plan_images(forest, &new_chain)?,
        name,
        safe,
        cluster: n.cluster_size.unwrap_or(64 << 10),
    })
}

/// The image can be written, and (in a safe run, which reads what its guest sees through the
/// old chain) its old chain is whole and readable.
fn old_chain_reads(
    forest: &Forest,
    image: NodeId,
    kind: OpKind,
    safe: bool,
) -> Result<(), Refusal> {
    let n = forest.node(image);
    guards::supported(
        n,
        if safe {
            Role::Written { force: false }
        } else {
            Role::Backing
        },
    )?;
    if !safe {
        return Ok(());
    }
    if let Some(b) = &n.backing
        && b.node.is_none()
    {
        return Err(Refusal::BrokenChain {
            top: n.path.clone(),
            op: kind,
            message: format!(
                "its backing file {} cannot be read, so what its guest sees cannot be kept; if \
                 the file moved, name the moved file with -u",
                b.resolved.shown()
            ),
        });
    }
    guards::whole_chain(forest, image, kind)?;
    guards::links_name_their_format(forest, &with_chain(forest, image))?;
    for c in forest.chain(image) {
        guards::supported(forest.node(c), Role::Backing)?;
    }
    Ok(())
}

/// Checks the new backing file `b` — no loop, its format as asked, a whole chain imgchain
/// reads, and (with `-u`) the size of the file it stands in for — and gives the backing name
/// and format to write.
fn new_backing(
    forest: &Forest,
    req: &Request,
    b: NodeId,
    (old_chain, new_chain): (&[NodeId], &[NodeId]),
) -> Result<(String, Format), Refusal> {
    let (n, bn) = (forest.node(req.image), forest.node(b));
    let bad = |what: String| Refusal::BadTarget {
        path: bn.path.clone(),
        what,
    };
    if b == req.image {
        return Err(bad("is the image itself: the chain would loop".into()));
    }
    if guards::descendants(forest, req.image).contains(&b) {
        return Err(bad(format!(
            "is built on {}: the chain would loop",
            n.path.shown()
        )));
    }
    let fmt = bn
        .format
        .ok_or_else(|| bad("could not be read as an image".into()))?;
    if let Some(f) = req.format
        && f != fmt
    {
        return Err(bad(format!(
            "is a {fmt} image, not {f}: name its real format with -F"
        )));
    }
    for &c in new_chain {
        guards::supported(forest.node(c), Role::Backing)?;
    }
    if bn.problems.iter().any(|p| {
        matches!(
            p.kind,
            crate::forest::diag::ProblemKind::MissingBacking
                | crate::forest::diag::ProblemKind::BackingLoop
        )
    }) {
        return Err(bad(
            "cannot serve as a backing file: its own chain is broken; repair it first".into(),
        ));
    }
    guards::links_name_their_format(forest, new_chain)?;
    guards::whole_chain(forest, b, OpKind::REBASE)?;
    if req.unsafe_names {
        // A moved chain: the new file stands in for the old one, so it must be as large.
        let want = old_chain
            .first()
            .and_then(|&o| forest.node(o).virtual_size)
            .or(n.virtual_size);
        if bn.virtual_size != want {
            return Err(bad(format!(
                "has a virtual size of {} bytes, not {} as the backing file it replaces: with \
                 -u it must stand in for that file (rebase without -u to copy what differs)",
                bn.virtual_size.unwrap_or(0),
                want.unwrap_or(0)
            )));
        }
    }
    let written = req
        .name
        .clone()
        .unwrap_or_else(|| backing_name(&n.path, &bn.path));
    Ok((written, fmt))
}

/// Opens `chain` (top-down) bottom-up, read-only with a reader's locks, each with its backing
/// attached; returns the handles and the top's access.
fn open_chain(chain: &[PlanImage]) -> Result<Opened, Refusal> {
    let mut handles = Vec::new();
    let mut backing = None;
    for img in chain.iter().rev() {
        let h = img.open(OpenMode::ReadOnly, backing.take())?;
        backing = Some(h.shared_access());
        handles.push(h);
    }
    Ok((handles, backing))
}

/// Runs the plan in this thread. Returns a refusal only when nothing was written.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    let Run {
        settings,
        cancel,
        progress,
    } = r;
    let start = Instant::now();
    let since = std::cell::Cell::new(start);
    let mut report = |phase, done, total, writing| {
        progress(Progress {
            op: plan.kind,
            phase,
            done,
            total,
            elapsed: since.get().elapsed(),
            writing,
        })
    };
    report(Phase::Open, 0, 0, false);
    let mut outcome = Outcome {
        plan: plan.clone(),
        compared: 0,
        copied: 0,
        tally: Tally::default(),
        copy: Ok(()),
        left_dirty: false,
        reopen_ro: None,
        relinked: None,
        elapsed: Duration::ZERO,
    };
    let old = open_chain(&plan.old)?;
    let new = open_chain(&plan.new)?;
    if plan.safe {
        let restart = || since.set(Instant::now());
        let run = (settings, cancel);
        copy_safely(
            plan,
            (&old, &new),
            run,
            (&mut report, &restart),
            &mut outcome,
        )?;
        if outcome.copy.is_err() || !matches!(outcome.reopen_ro, Some(Ok(()))) {
            outcome.elapsed = start.elapsed();
            return Ok(outcome);
        }
    }
    // The backing files stay open and locked as readers until the header names the new one.
    report(Phase::Relink, 0, 0, true);
    outcome.relinked = Some(relink(&plan.image, plan.name.as_ref()));
    report(Phase::Done, 0, 0, false);
    drop(new);
    drop(old);
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Reports a phase with bytes done, bytes in all, and whether the image is open to write.
type Reporter<'a> = dyn FnMut(Phase, u64, u64, bool) + 'a;

/// A chain opened by [`open_chain`]: its handles, top-down, and the top's access.
type Opened = (
    Vec<Handle>,
    Option<std::sync::Arc<crate::image::handle::ImageAccess>>,
);

/// The safe part of a rebase: copies into the image what the old and new chains read
/// differently, with the image read-write only for the copy, into `outcome`. A refusal means
/// nothing was written.
fn copy_safely(
    plan: &Plan,
    ((old_handles, old_top), (new_handles, new_top)): (&Opened, &Opened),
    (settings, cancel): (&super::settings::Settings, &AtomicBool),
    (report, restart): (&mut Reporter<'_>, &dyn Fn()),
    outcome: &mut Outcome,
) -> Result<(), Refusal> {
    let mut image = plan.image.open(OpenMode::ReadOnly, old_top.clone())?;
    let total = unallocated(&image, plan.image.virtual_size).map_err(|source| Refusal::Map {
        path: plan.image.path.clone(),
        source,
    })?;
    // What can differ is at most what either chain allocates.
    let mut allocated = 0;
    for h in old_handles.iter().chain(new_handles) {
        let own = super::extents::own_ranges(h).map_err(|source| Refusal::Map {
            path: h.path().to_path_buf(),
            source,
        })?;
        allocated += own.guest.iter().map(|(_, l)| l).sum::<u64>();
    }
    guards::v2_room(&image, &plan.image, total.min(allocated))?;
    report(Phase::ReopenRw, 0, total, false);
    let mut window = RwWindow::open(&mut image, settings.copy.write_behind)
        .map_err(|e| Refusal::ReopenRw(Box::new(e)))?;
    restart();
    report(Phase::Copy, 0, total, true);
    let io = |op, source| CopyError::Io {
        op,
        path: plan.image.path.clone(),
        offset: 0,
        source,
    };
    let copy = window
        .mark_dirty()
        .map_err(|e| io("cannot mark dirty", e))
        .and_then(|()| {
            let old_layers: Vec<&Handle> = old_handles.iter().rev().collect();
            let new_layers: Vec<&Handle> = new_handles.iter().rev().collect();
            copy_differences(
                window.handle(),
                Chains {
                    old: &old_layers,
                    new: &new_layers,
                    new_top: new_top.as_deref(),
                    new_size: plan.new.first().map_or(0, |b| b.virtual_size),
                },
                Geometry {
                    end: plan.image.virtual_size,
                    cluster: plan.cluster,
                    chunk: settings
                        .copy
                        .chunk
                        .clamp(64 << 10, 64 << 20)
                        .max(plan.cluster),
                    v2: plan.image.version == Some(2),
                },
                (cancel, &settings.copy),
                outcome,
                &mut |done| report(Phase::Copy, done, total, true),
            )
        });
    report(Phase::Flush, outcome.copied, total, true);
    let flushed = window.flush().map_err(|e| io("cannot flush", e));
    outcome.copy = copy.and(flushed);
    report(Phase::ReopenRo, outcome.copied, total, true);
    let closed = window.close();
    outcome.left_dirty = closed.left_dirty;
    outcome.reopen_ro = closed.reopen_ro;
    Ok(())
}

/// Bytes of `image` it does not allocate itself (its guest reads them from its backing chain).
fn unallocated(image: &Handle, end: u64) -> io::Result<u64> {
    let mut total = 0;
    walk_unallocated(image, end, |_, len| {
        total += len;
        Ok(())
    })?;
    Ok(total)
}

/// Calls `f(offset, len)` for each run of `image` that it does not allocate itself.
fn walk_unallocated(
    image: &Handle,
    end: u64,
    mut f: impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut offset = 0;
    while offset < end {
        let (mapping, len) = image.access().get_shallow_mapping(offset, end - offset)?;
        if len == 0 {
            break;
        }
        match mapping {
            ShallowMapping::Indirect { .. }
            | ShallowMapping::Zero {
                explicit: false, ..
            } => f(offset, len)?,
            ShallowMapping::Eof { .. } => break,
            _ => {}
        }
        offset += len;
    }
    Ok(())
}

/// The image's shape for the copy.
#[derive(Clone, Copy)]
struct Geometry {
    end: u64,
    cluster: u64,
    chunk: u64,
    v2: bool,
}

/// Both chains, top-down, and the new chain's top to read it through.
struct Chains<'a> {
    old: &'a [&'a Handle],
    new: &'a [&'a Handle],
    /// `None`: no new backing file, all zeroes.
    new_top: Option<&'a crate::image::handle::ImageAccess>,
    new_size: u64,
}

/// What a whole chain (top-down) reads at `offset..` from its metadata alone — the data of
/// layer `i` (`Some(i)`) or zeroes (`None`) — and for how many bytes (at most `max`).
fn reader(layers: &[&Handle], offset: u64, max: u64) -> io::Result<(Option<usize>, u64)> {
    let mut len = max;
    for (i, layer) in layers.iter().enumerate() {
        let (mapping, l) = layer.access().get_shallow_mapping(offset, len)?;
        match mapping {
            ShallowMapping::Zero { explicit: true, .. } => return Ok((None, l.max(1).min(max))),
            ShallowMapping::Zero { .. } | ShallowMapping::Indirect { .. } if l > 0 => len = l,
            // Past a layer's end its overlays read zeroes.
            ShallowMapping::Eof { .. } => return Ok((None, len)),
            _ if l == 0 => return Ok((Some(i), len)),
            _ => return Ok((Some(i), l)),
        }
    }
    Ok((None, len))
}

/// What one stretch of the image's unallocated runs needs, from both chains' metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Both chains read the same there: one layer's data, or zeroes.
    Skip,
    /// The old chain has data where the new one reads zeroes, or where the data can be
    /// cloned: it is taken as it is through the copy pipeline, without reading the new chain.
    Take,
    /// The old chain reads zeroes where the new one has data: made zero, nothing read.
    Zero,
    /// Both may differ: read, compared cluster by cluster, and what differs written.
    Compare,
}

/// Splits the runs into stretches by what they need. Where the old chain's layer `i` has data
/// over the new chain's, it is taken without comparing when `cloned[i]` (the filesystem shares
/// the blocks: taking identical data costs no room), and compared otherwise. Every stretch but
/// the last of a run ends on a cluster boundary of the image, so that a compared one covers
/// whole clusters.
fn classify(
    chains: &Chains<'_>,
    runs: &[(u64, u64)],
    g: Geometry,
    cloned: &[bool],
) -> io::Result<Vec<(Step, u64, u64)>> {
    let mut out: Vec<(Step, u64, u64)> = Vec::new();
    for &(start, run) in runs {
        let end = start + run;
        let mut at = start;
        while at < end {
            let want = g.chunk.min(end - at);
            let (old, lo) = reader(chains.old, at, want)?;
            let (new, ln) = if chains.new_top.is_none() || at >= chains.new_size {
                (None, want)
            } else {
                reader(chains.new, at, want.min(chains.new_size - at))?
            };
            let len = want.min(lo.max(1)).min(ln.max(1));
            let step = match (old, new) {
                (None, None) => Step::Skip,
                (Some(i), Some(j)) if chains.old[i].ident() == chains.new[j].ident() => Step::Skip,
                (Some(_), None) => Step::Take,
                (Some(i), Some(_)) if cloned[i] => Step::Take,
                (None, Some(_)) => Step::Zero,
                (Some(_), Some(_)) => Step::Compare,
            };
            let aligned = if at + len == end {
                end
            } else {
                (at + len) / g.cluster * g.cluster
            };
            let (step, stop) = match step {
                Step::Compare => (step, at + len.div_ceil(g.cluster) * g.cluster),
                _ if aligned > at => (step, aligned),
                _ => (Step::Compare, at + g.cluster),
            };
            let stop = stop.min(end).max(at + len.min(want));
            match out.last_mut() {
                Some((s, o, l)) if *s == step && *o + *l == at => *l += stop - at,
                _ => out.push((step, at, stop - at)),
            }
            at = stop;
        }
    }
    Ok(out)
}

/// Writes into `image` what its old chain shows where the new chain shows something else:
/// stretches where the old chain has data over the new one's zeroes go through the copy
/// pipeline as they are; the others the chains may read differently are compared.
fn copy_differences(
    image: &mut Handle,
    chains: Chains<'_>,
    g: Geometry,
    (cancel, copy): (&AtomicBool, &crate::ops::settings::Copy),
    outcome: &mut Outcome,
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let path = outcome.plan.image.path.clone();
    let mut runs = Vec::new();
    walk_unallocated(image, g.end, |o, l| {
        runs.push((o, l));
        Ok(())
    })
    .and_then(|()| classify(&chains, &runs, g, &cloneable(image, &chains, copy)))
    .map(|steps| runs_of(&steps, &mut outcome.compared))
    .map_err(|e| CopyError::Io {
        op: "cannot map",
        path: path.clone(),
        offset: 0,
        source: e,
    })
    .and_then(|(take, zeroes, compare)| {
        for &(offset, len) in &zeroes {
            datapath::zero(image, g.v2, offset, len).map_err(|e| CopyError::Io {
                op: "cannot zero",
                path: path.clone(),
                offset,
                source: e,
            })?;
            outcome.compared += len;
        }
        let t = Transfer {
            layers: chains.old,
            ranges: &take,
            zeroes: false,
            sparse: Some(g.cluster),
            v2: g.v2,
        };
        let mut done = Done::default();
        let skipped = outcome.compared;
        let taken = datapath::copy(&t, image, (copy, cancel), &mut done, &mut |d| {
            report(skipped + d)
        });
        outcome.compared += done.handled;
        outcome.copied += done.written;
        outcome.tally.add(&done.tally);
        taken?;
        compare_all(image, &chains, g, &compare, (cancel, copy), outcome, report)
    })
}

/// Guest ranges: `(offset, length)`.
type Ranges = Vec<(u64, u64)>;

/// The stretches to take, to make zero and to compare; the skipped ones are counted as
/// compared already.
fn runs_of(steps: &[(Step, u64, u64)], compared: &mut u64) -> (Ranges, Ranges, Ranges) {
    let (mut take, mut zero, mut compare) = (Vec::new(), Vec::new(), Vec::new());
    for &(step, offset, len) in steps {
        match step {
            Step::Skip => *compared += len,
            Step::Take => take.push((offset, len)),
            Step::Zero => zero.push((offset, len)),
            Step::Compare => compare.push((offset, len)),
        }
    }
    (take, zero, compare)
}

/// For each layer of the old chain, whether its data can be cloned into `image`: cloning is on,
/// the image's filesystem shares blocks, and the layer is on the same one.
fn cloneable(image: &Handle, chains: &Chains<'_>, copy: &crate::ops::settings::Copy) -> Vec<bool> {
    let shares = copy.clone && super::space::cloning_filesystem(image.path()).is_some();
    chains
        .old
        .iter()
        .map(|l| shares && l.ident().dev == image.ident().dev)
        .collect()
}

/// Compares the stretches chunk by chunk, cluster by cluster, and writes what differs.
fn compare_all(
    image: &mut Handle,
    chains: &Chains<'_>,
    g: Geometry,
    stretches: &[(u64, u64)],
    (cancel, copy): (&AtomicBool, &crate::ops::settings::Copy),
    outcome: &mut Outcome,
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let mut bufs = (vec![0u8; g.chunk as usize], vec![0u8; g.chunk as usize]);
    let mut tiers = datapath::tiers(copy);
    let mut last = Instant::now();
    for &(start, len) in stretches {
        let mut at = start;
        while at < start + len {
            if cancel.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled);
            }
            let n = g.chunk.min(start + len - at);
            compare(image, chains, g, (at, n), &mut bufs, &mut tiers, outcome)?;
            at += n;
            outcome.compared += n;
            if last.elapsed() >= REPORT_EVERY {
                last = Instant::now();
                report(outcome.compared);
            }
        }
    }
    Ok(())
}

/// Reads `len` bytes at `at` through both chains and writes the clusters that differ, merged
/// into runs, each as data or as zeroes.
fn compare(
    image: &mut Handle,
    chains: &Chains<'_>,
    g: Geometry,
    (at, len): (u64, u64),
    (old, theirs): &mut (Vec<u8>, Vec<u8>),
    tiers: &mut crate::image::ordered::KernelTiers,
    outcome: &mut Outcome,
) -> Result<(), CopyError> {
    let io = |op, offset, source| CopyError::Io {
        op,
        path: outcome.plan.image.path.clone(),
        offset,
        source,
    };
    let n = len as usize;
    image
        .access()
        .read(&mut old[..n], at)
        .map_err(|e| io("cannot read", at, e))?;
    theirs[..n].fill(0);
    if let Some(new) = chains.new_top
        && at < chains.new_size
    {
        let m = (chains.new_size - at).min(len) as usize;
        new.read(&mut theirs[..m], at)
            .map_err(|e| io("cannot read the new backing chain at", at, e))?;
    }
    let step = g.cluster as usize;
    let differs = |c: usize| old[c..(c + step).min(n)] != theirs[c..(c + step).min(n)];
    let zero = |c: usize| old[c..(c + step).min(n)].iter().all(|&b| b == 0);
    let mut c = 0;
    while c < n {
        if !differs(c) {
            c += step;
            continue;
        }
        let (from, z) = (c, zero(c));
        while c < n && differs(c) && zero(c) == z {
            c += step;
        }
        let c = c.min(n);
        let (off, run) = (at + from as u64, (c - from) as u64);
        if z {
            datapath::zero(image, g.v2, off, run).map_err(|e| io("cannot zero", off, e))?;
        } else {
            // From the old backing file through the kernel where it can (the image reads
            // those clusters through it), the rest from memory.
            let moved = kernel_move(image, image, off, run, tiers, &mut outcome.tally)
                .map_err(|e| io("cannot write", off, e))?;
            if moved < run {
                image
                    .access()
                    .write(&old[from + moved as usize..c], off + moved)
                    .map_err(|e| io("cannot write", off + moved, e))?;
                outcome.tally.copied += run - moved;
            }
        }
        outcome.copied += run;
    }
    Ok(())
}

/// Points the image's header at `name` (or at no backing file), holding a writer's QEMU locks
/// on the very file the plan saw.
pub(super) fn relink(image: &PlanImage, name: Option<&(String, Format)>) -> Result<(), String> {
    let path = image.path.shown();
    let fd = file::open_as(&image.path, OpenMode::ReadWrite, image.ident)
        .map_err(|e| format!("cannot open {path} read-write: {e}"))?;
    let _lock = ImageLock::acquire(
        std::os::fd::AsFd::as_fd(&fd),
        &image.path,
        Access::READ_WRITE,
    )
    .map_err(|e| e.to_string())?;
    let f = std::fs::File::from(fd);
    crate::image::header::set_backing(&f, name.map(|(n, fmt)| (n.as_str(), *fmt)))
        .map_err(|e| format!("cannot rewrite the header of {path}: {e}"))
}

impl Outcome {
    /// Whether the copy was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(self.copy, Err(CopyError::Cancelled))
    }
}

impl Report for Outcome {
    /// `rebase --json` and `flatten --json`.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "operation": self.plan.kind.as_str(),
            "image": crate::text::lossy(&self.plan.image.path),
            "old_backing": self.plan.old.first().map(|b| crate::text::lossy(&b.path)),
            "backing": self.plan.name.as_ref().map(|(n, f)| serde_json::json!({"name": n, "format": f.as_str()})),
            "safe": self.plan.safe,
            "compared_bytes": self.compared,
            "copied_bytes": self.copied,
            "data_path": self.tally.json(),
            "copy": {
                "ok": self.copy.is_ok(),
                "cancelled": self.cancelled(),
                "error": self.copy.as_ref().err().map(|e| e.to_string()),
            },
            "left_dirty": self.left_dirty,
            "relinked": matches!(self.relinked, Some(Ok(()))),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        if self.cancelled() {
            crate::exit::CANCELLED
        } else if self.copy.is_err() || self.left_dirty {
            crate::exit::IO_ERROR
        } else if matches!(self.reopen_ro, Some(Err(_))) {
            crate::exit::REOPEN_FAILED
        } else if matches!(self.relinked, Some(Err(_)) | None) {
            crate::exit::IO_ERROR
        } else {
            crate::exit::OK
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let image = p.image.path.shown();
        let old = p.old.first().map(|o| o.path.shown().to_string());
        let target = match &p.name {
            Some((n, f)) => format!("backing file \"{n}\" ({f})"),
            None => "no backing file".into(),
        };
        let how = if self.copied > 0 {
            format!(" ({})", self.tally.describe())
        } else {
            String::new()
        };
        let copied = format!(
            "compared {} it reads through its backing chain and copied {} that differ{how}",
            crate::units::human_size(self.compared),
            crate::units::human_size(self.copied)
        );
        if self.cancelled() {
            return format!(
                "Cancelled: {image} {copied} so far; it still has its old backing file and its \
                 guest sees what it saw before. Run it again to finish."
            );
        }
        if let Err(e) = &self.copy {
            return if self.left_dirty {
                format!(
                    "Failed: {e}. {image} is marked dirty: repair it with qemu-img check -r all \
                     {image} before anything uses it; it still names its old backing file."
                )
            } else {
                format!(
                    "Failed: {e}. {image} still names its old backing file and its guest sees \
                     what it saw before (some clusters were copied into it); run it again."
                )
            };
        }
        if let Some(Err(e)) = &self.reopen_ro {
            return format!(
                "{image} {copied}, but it could not be reopened read-only ({e}); its header was \
                 not changed. Run it again."
            );
        }
        match &self.relinked {
            Some(Ok(())) => {
                let mut s = if p.safe {
                    format!(
                        "{image} now has {target}; it {copied}, so its guest sees what it saw before."
                    )
                } else {
                    format!(
                        "{image} now has {target} (names only: no data was compared or copied)."
                    )
                };
                if let Some(o) = old {
                    s.push_str(&format!(" {o} has one overlay fewer."));
                }
                s
            }
            Some(Err(e)) => format!(
                "{image} {copied}, but {e}: it still names its old backing file, and its guest \
                 sees what it saw before. Run it again."
            ),
            None => format!("{image} was left as it was."),
        }
    }
}
