//! Commit plan: the guards of ARCHITECTURE.md §3 in order, and what the commit will do.
//!
//! Guards, first failure wins: no backing file, or a chain that does not resolve down to the
//! base's own bottom (10, or 1 for a broken link) → keep-RO base or intermediate (11) → in use
//! by another process (12) → base shared with other overlays (13, unless `force`) → format or
//! feature we cannot write safely, including a link without its backing format or with the
//! wrong one (16). The plan works from a scanned forest; the run checks identities, locks and
//! sizes again when it opens the files.

use std::path::{Path, PathBuf};

use crate::forest::diag::ProblemKind;
use crate::forest::{Forest, Node, NodeId};
use crate::image::file::FileId;
use crate::image::lock::Access;
use crate::ops::extents::measure;
use crate::ops::guards::{self, Role};
use crate::ops::scope;
use crate::ops::settings::Settings;
use crate::ops::space::{self, Space};
use crate::ops::{OpKind, PlanImage, Refusal};
use crate::text::Names;

/// What to commit.
#[derive(Clone, Debug)]
pub struct Request {
    /// The overlay whose data is committed.
    pub top: NodeId,
    /// Commit into this image of the top's backing chain instead of its immediate backing
    /// file (`-b`); the images in between keep their data.
    pub base: Option<PathBuf>,
    /// Keep the top's data after the commit (`-d`; implied by `base`, as in qemu-img).
    pub keep_top: bool,
    /// Commit even though the base has other overlays.
    pub force: bool,
    /// Upgrade a qcow2 v2 base to compat=1.1 first (`--amend`).
    pub amend: bool,
}

/// A commit that passed every guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub top: PlanImage,
    /// Images between the top and the base, top-down (only with `-b`).
    pub intermediates: Vec<PlanImage>,
    pub base: PlanImage,
    /// The base's own backing chain, top-down: read for copy-on-write, never written.
    pub below: Vec<PlanImage>,
    pub keep_top: bool,
    /// The base grows to this size first (the top is larger).
    pub grow_to: Option<u64>,
    /// Other overlays of the base that `force` let through.
    pub forced_over: Vec<PathBuf>,
    /// The base's bitmaps that QEMU records writes in: the commit marks what it writes in
    /// them (`ops::bitmaps`) before it writes.
    pub marks: Vec<String>,
    /// The top's bitmaps are merged into the base's of the same name first (a merge, which
    /// removes the top afterwards): their names.
    pub merged_bitmaps: Vec<String>,
    /// Bytes it copies, or why they could not be measured (`None`: not measured).
    pub measured: Option<Result<u64, String>>,
    /// The base is qcow2 v2 and is upgraded to compat=1.1 first (`qemu-img amend`).
    pub amend: bool,
    /// Features of the chain only QEMU's own tools handle: when any, `qemu-img commit` moves
    /// the data (`commit::qemu`).
    pub by_qemu: Vec<String>,
}

/// Checks the guards and works out the commit of `req.top`.
pub fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
    let top = forest.node(req.top);
    let keep_top = req.keep_top || req.base.is_some();
    // 1. A backing file to commit into, in a header that can be read at all, and a base in
    // the chain whose own backing files open.
    has_backing(top)?;
    let chain: Vec<NodeId> = forest.chain(req.top).collect();
    let base_at = match &req.base {
        None => 0,
        Some(b) => {
            find_base(forest, req.top, &chain, b).ok_or_else(|| Refusal::BaseNotInChain {
                top: top.path.clone(),
                base: b.clone(),
            })?
        }
    };
    let (base_id, between, below) = (chain[base_at], &chain[..base_at], &chain[base_at + 1..]);
    below_opens(forest, top, base_id, below)?;
    // 2–5.
    let others = writable_and_free(forest, req, keep_top, (between, base_id, below))?;
    let top_img = PlanImage::of(forest, req.top)?;
    let base_img = PlanImage::of(forest, base_id)?;
    let images = |ids: &[NodeId]| {
        ids.iter()
            .map(|&m| PlanImage::of(forest, m))
            .collect::<Result<Vec<_>, _>>()
    };
    let (intermediates, below) = (images(between)?, images(below)?);
    let q = by_qemu(
        forest,
        &std::iter::once(req.top)
            .chain(chain.iter().copied())
            .collect::<Vec<_>>(),
    );
    Ok(Plan {
        grow_to: grow_to(forest.node(base_id), &top_img, &base_img, req.amend)?,
        amend: req.amend && base_img.version == Some(2),
        by_qemu: q,
        marks: recording_names(forest.node(base_id))?,
        top: top_img,
        intermediates,
        base: base_img,
        below,
        keep_top,
        forced_over: others,
        merged_bitmaps: Vec::new(),
        measured: None,
    })
}

/// Guard 1: the top's header can be read, and it names a backing file imgchain opened.
fn has_backing(top: &Node) -> Result<(), Refusal> {
    if let Some(p) = top
        .problems
        .iter()
        .find(|p| matches!(p.kind, ProblemKind::BadHeader | ProblemKind::Unreadable))
    {
        return Err(Refusal::Unsupported {
            path: top.path.clone(),
            what: format!("cannot be committed: {}", p.message),
        });
    }
    let Some(backing) = &top.backing else {
        return Err(Refusal::NoBacking {
            top: top.path.clone(),
            op: OpKind::COMMIT,
        });
    };
    if backing.node.is_none() {
        let message = top
            .problems
            .iter()
            .find(|p| {
                matches!(
                    p.kind,
                    ProblemKind::MissingBacking
                        | ProblemKind::BackingLoop
                        | ProblemKind::ProtocolBacking
                        | ProblemKind::UnsafeBackingPath
                        | ProblemKind::Unreadable
                )
            })
            .map(|p| p.message.clone())
            .unwrap_or_else(|| {
                format!(
                    "its backing file {} is not an image imgchain can open",
                    backing.path.shown()
                )
            });
        return Err(Refusal::BrokenChain {
            top: top.path.clone(),
            op: OpKind::COMMIT,
            message,
        });
    }
    Ok(())
}

/// Guard 1 for the base: it and the images below it have the backing files they name.
fn below_opens(
    forest: &Forest,
    top: &Node,
    base_id: NodeId,
    below: &[NodeId],
) -> Result<(), Refusal> {
    if let Some(broken) = std::iter::once(base_id)
        .chain(below.iter().copied())
        .map(|id| forest.node(id))
        .find(|n| n.backing.as_ref().is_some_and(|b| b.node.is_none()))
    {
        return Err(Refusal::BrokenChain {
            top: top.path.clone(),
            op: OpKind::COMMIT,
            message: format!(
                "the backing file of {} cannot be opened ({}), and a commit needs it to keep \
                 what the base's guests see",
                broken.path.shown(),
                broken
                    .backing
                    .as_ref()
                    .map_or(String::new(), |b| b.path.shown().to_string())
            ),
        });
    }

    Ok(())
}

/// Guards 2 to 5: nothing written is keep-RO or out of reach, nobody else holds what the
/// commit needs, no other overlay's disk changes unless forced (those forced over are
/// returned), and every format and feature is one imgchain handles.
fn writable_and_free(
    forest: &Forest,
    req: &Request,
    keep_top: bool,
    (between, base_id, below): (&[NodeId], NodeId, &[NodeId]),
) -> Result<Vec<PathBuf>, Refusal> {
    let base = forest.node(base_id);
    // 2. Nothing written may be keep-RO.
    let mut written: Vec<NodeId> = between.to_vec();
    written.push(base_id);
    guards::writable(forest, &written)?;
    crate::ops::libvirt_snapshots::not_recorded(
        forest,
        &written,
        &[crate::forest::model::RecordRole::State],
        "committing into it",
    )?;
    // The trust boundary (never lifted by --force): the base is a file the images' owners
    // could write themselves, and the data moved into it one its owner could read.
    let mut whole: Vec<NodeId> = vec![req.top];
    whole.extend_from_slice(between);
    whole.push(base_id);
    whole.extend_from_slice(below);
    let sources: Vec<NodeId> = std::iter::once(req.top)
        .chain(between.iter().copied())
        .collect();
    crate::ops::trust::within_reach(forest, &whole, &written, &sources)?;
    if !keep_top {
        guards::openable_rw(forest, req.top)?;
    }

    // 3. Nobody else may hold what we need.
    let top_access = if keep_top {
        Access::READ_ONLY
    } else {
        Access::READ_WRITE
    };
    guards::not_in_use(
        forest,
        std::iter::once((req.top, top_access))
            .chain(between.iter().map(|&m| (m, Access::READ_ONLY)))
            .chain(std::iter::once((base_id, Access::READ_WRITE)))
            .chain(below.iter().map(|&b| (b, Access::READ_ONLY))),
    )?;

    // 4. Writing the base must not change other images' disks: other overlays, and (with -b)
    // the images in between, which keep their data but read the base where they have none.
    let others = guards::other_overlays(forest, base_id, &[req.top], req.force)?;

    // 5. Formats and features we can read and write safely (or QEMU's own tool can, under
    // these guards), and links that name their format.
    let q = !by_qemu(forest, &whole).is_empty();
    guards::supported_in(
        forest.node(req.top),
        Role::Overlay { emptied: !keep_top },
        q,
    )?;
    for &m in between {
        guards::supported_in(forest.node(m), Role::Overlay { emptied: false }, q)?;
    }
    guards::supported_in(base, Role::Written, q)?;
    for &b in below {
        guards::supported_in(forest.node(b), Role::Backing, q)?;
    }
    guards::links_name_their_format(forest, &whole)?;

    Ok(others)
}

/// The size the base grows to first (the top is larger); refused for a v2 base.
/// The features of the images `ids` that only QEMU's own tools read and write, each once:
/// the commit then runs `qemu-img commit` under imgchain's plan and guards (`commit::qemu`).
pub fn by_qemu(forest: &Forest, ids: &[NodeId]) -> Vec<String> {
    let mut features: Vec<String> = Vec::new();
    for &id in ids {
        for f in forest.node(id).qcow2.iter().flat_map(|h| h.qemu_features()) {
            if !features.contains(&f) {
                features.push(f);
            }
        }
    }
    features
}

/// The names of `n`'s bitmaps that QEMU records writes in.
pub fn recording_names(n: &crate::forest::Node) -> Result<Vec<String>, Refusal> {
    let Some(h) = n.qcow2.as_ref().filter(|h| h.bitmaps()) else {
        return Ok(Vec::new());
    };
    let list = crate::image::bitmaps::read(&n.path, h).map_err(|e| Refusal::Unsupported {
        path: n.path.clone(),
        what: format!("has persistent bitmaps whose directory cannot be read ({e})"),
    })?;
    Ok(list
        .into_iter()
        .filter(|(b, _)| b.recording())
        .map(|(b, _)| b.name)
        .collect())
}

fn grow_to(
    base: &crate::forest::Node,
    top_img: &PlanImage,
    base_img: &PlanImage,
    amend: bool,
) -> Result<Option<u64>, Refusal> {
    let grow_to = (top_img.virtual_size > base_img.virtual_size).then_some(top_img.virtual_size);
    if grow_to.is_some() && base.qcow2.as_ref().is_some_and(|h| h.bitmaps()) {
        return Err(Refusal::Unsupported {
            path: base_img.path.clone(),
            what: format!(
                "has persistent dirty bitmaps and would have to grow to {} bytes, which would \
                 leave them the wrong size; grow it first so that QEMU resizes them: qemu-img \
                 resize -f qcow2 {} {}",
                top_img.virtual_size,
                base_img.path.quoted(),
                top_img.virtual_size
            ),
        });
    }
    if grow_to.is_some() && base_img.version == Some(2) && !amend {
        return Err(Refusal::NeedsAmend {
            path: base_img.path.clone(),
            what: format!(
                "is a qcow2 v2 (compat=0.10) image that would have to grow to {} bytes: growing \
                 rewrites its header and L1 table, and v2 has no dirty bit to keep that safe \
                 from a crash (once upgraded, QEMU older than 1.1 cannot open it)",
                top_img.virtual_size
            ),
        });
    }
    Ok(grow_to)
}

/// Guard 4 again, right before the first write, on a fresh scan of the directories of every
/// image in the plan ([`scope::recheck_overlays`]): the top and the images in between are
/// involved, the top's own overlays spared, the overlays `force` let through accepted.
pub fn recheck_overlays(plan: &Plan, settings: &Settings) -> Result<(), Refusal> {
    let involved: Vec<&PlanImage> = std::iter::once(&plan.top)
        .chain(&plan.intermediates)
        .chain(std::iter::once(&plan.base))
        .chain(&plan.below)
        .collect();
    scope::recheck_overlays(
        (&plan.base, &involved),
        &[&plan.top],
        &plan.forced_over,
        settings,
    )
}

/// Where `-b BASE` is in the chain, matched as qemu-img does (`bdrv_find_backing_image`):
/// by the backing name as written in an overlay's header, or as a path — relative to the top's
/// directory or to the working directory — naming the same file.
fn find_base(forest: &Forest, top: NodeId, chain: &[NodeId], base: &Path) -> Option<usize> {
    let mut idents = vec![FileId::of_path(base)];
    if base.is_relative()
        && let Some(dir) = forest.node(top).path.parent()
    {
        idents.push(FileId::of_path(&dir.join(base)));
    }
    let mut overlay = top;
    for (i, &c) in chain.iter().enumerate() {
        let named = forest
            .node(overlay)
            .backing
            .as_ref()
            .is_some_and(|b| b.raw == base.as_os_str());
        let n = forest.node(c);
        if named || n.path == base || idents.iter().any(|i| i.is_some() && *i == n.ident) {
            return Some(i);
        }
        overlay = c;
    }
    None
}

/// What the UI asks for: commit `image` into `base` (`None`: its backing file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub base: Option<PathBuf>,
    pub keep_top: bool,
    /// Upgrade a qcow2 v2 base to compat=1.1 first (the amend key).
    pub amend: bool,
}

/// The commit of `top` (into `base`, or its backing file) as the UI offers it: forced over
/// the base's other overlays (confirming must accept [`Plan::forced_over`] with a key of its
/// own) and measured. Whether it fits is the space guard's ([`Operation::room`], which
/// reuses the measure), as for every plan.
///
/// [`Operation::room`]: crate::ops::Operation::room
pub fn propose(
    forest: &Forest,
    top: NodeId,
    (base, keep_top): (Option<PathBuf>, bool),
    amend: bool,
) -> Result<Plan, Refusal> {
    let req = Request {
        top,
        base,
        keep_top,
        force: false,
        amend,
    };
    let mut plan = match plan(forest, &req) {
        Err(Refusal::SharedBase { .. }) => plan(forest, &Request { force: true, ..req }),
        other => other,
    }?;
    plan.measured = Some(measure_plan(&plan).map_err(|e| e.to_string()));
    Ok(plan)
}

/// Bytes of that copy that land where the base has no data of its own yet (the new room the
/// base's file may take).
pub fn measure_new(plan: &Plan) -> Result<u64, Refusal> {
    let mut layers = vec![plan.top.peek()?];
    for m in &plan.intermediates {
        layers.push(m.peek()?);
    }
    let base = plan.base.peek()?;
    crate::ops::extents::measure_new(&layers, &base, plan.top.virtual_size).map_err(|source| {
        Refusal::Map {
            path: plan.base.path.clone(),
            source,
        }
    })
}

/// Bytes a commit of `plan` would copy, from the metadata of the top (and the images in
/// between), opened read-only without locks.
pub fn measure_plan(plan: &Plan) -> Result<u64, Refusal> {
    let mut layers = vec![plan.top.peek()?];
    for m in &plan.intermediates {
        layers.push(m.peek()?);
    }
    measure(&layers, plan.top.virtual_size).map_err(|source| Refusal::Map {
        path: plan.top.path.clone(),
        source,
    })
}

/// A commit of `plan` that copies `data` bytes into the base; frees the top's data when it
/// empties the top.
pub fn space_of(plan: &Plan, data: u64, clone: bool) -> Space {
    let frees = if plan.keep_top || !plan.intermediates.is_empty() {
        0
    } else {
        space::on_disk(&plan.top.path)
    };
    // Unmeasurable: as if every byte needed new room.
    let new_data = measure_new(plan).unwrap_or(data);
    Space::copy(
        (&plan.top, &plan.base),
        (data, new_data),
        space::cluster_of(&plan.base),
        frees,
        clone,
    )
}
