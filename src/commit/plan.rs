//! Commit plan: the guards of ARCHITECTURE.md §3 in order, and what the commit will do.
//!
//! Guards, first failure wins: no backing file, or a chain that does not resolve down to the
//! base's own bottom (10, or 1 for a broken link) → keep-RO base or intermediate (11) → in use
//! by another process (12) → base shared with other overlays (13, unless `force`) → format or
//! feature we cannot write safely, including a link without its backing format or with the
//! wrong one (16). The plan works from a scanned forest; the run checks identities, locks and
//! sizes again when it opens the files.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use super::CommitError;
use crate::forest::diag::ProblemKind;
use crate::forest::{Forest, KeepRoReason, Mode, Node, NodeId};
use crate::image::file::FileId;
use crate::image::lock::{Access, LockError};
use crate::image::probe::Format;

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
}

/// One image taking part in a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanImage {
    pub path: PathBuf,
    pub format: Format,
    pub virtual_size: u64,
    pub ident: FileId,
    /// qcow2 version, for re-checking the header at open time.
    pub version: Option<u32>,
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
    /// The base carries persistent bitmaps that `force` lets the commit invalidate.
    pub forced_bitmaps: bool,
}

fn plan_image(forest: &Forest, id: NodeId) -> Result<PlanImage, CommitError> {
    let n = forest.node(id);
    let unsupported = |what: &str| CommitError::Unsupported {
        path: n.path.clone(),
        what: format!("{what}; {QEMU_IMG}"),
    };
    Ok(PlanImage {
        path: n.path.clone(),
        format: n.format.ok_or_else(|| unsupported("could not be read"))?,
        virtual_size: n
            .virtual_size
            .ok_or_else(|| unsupported("has no known virtual size"))?,
        ident: n.ident.ok_or_else(|| unsupported("could not be opened"))?,
        version: n.qcow2.as_ref().map(|h| h.version),
    })
}

/// Every node built on `id`, at any distance.
fn descendants(forest: &Forest, id: NodeId) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut queue: VecDeque<NodeId> = forest.node(id).overlays.iter().copied().collect();
    while let Some(n) = queue.pop_front() {
        out.push(n);
        queue.extend(forest.node(n).overlays.iter().copied());
    }
    out
}

/// A node above `id` that is keep-RO on request: the one an inherited keep-RO comes from.
fn protected_above(forest: &Forest, id: NodeId) -> Option<PathBuf> {
    descendants(forest, id)
        .into_iter()
        .map(|d| forest.node(d))
        .find(|n| n.keep_ro_reason == Some(KeepRoReason::Requested))
        .map(|n| n.path.clone())
}

/// Checks the guards and works out the commit of `req.top`.
pub fn plan(forest: &Forest, req: &Request) -> Result<Plan, CommitError> {
    let top = forest.node(req.top);
    let keep_top = req.keep_top || req.base.is_some();

    // 1. A backing file to commit into.
    let Some(backing) = &top.backing else {
        return Err(CommitError::NoBacking {
            top: top.path.clone(),
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
                    backing.resolved.display()
                )
            });
        return Err(CommitError::BrokenChain {
            top: top.path.clone(),
            message,
        });
    }
    let chain: Vec<NodeId> = forest.chain(req.top).collect();
    let base_at = match &req.base {
        None => 0,
        Some(b) => {
            find_base(forest, req.top, &chain, b).ok_or_else(|| CommitError::BaseNotInChain {
                top: top.path.clone(),
                base: b.clone(),
            })?
        }
    };
    let base_id = chain[base_at];
    let between = &chain[..base_at];
    let base = forest.node(base_id);
    let below: Vec<NodeId> = chain[base_at + 1..].to_vec();
    if let Some(broken) = std::iter::once(base_id)
        .chain(below.iter().copied())
        .map(|id| forest.node(id))
        .find(|n| n.backing.as_ref().is_some_and(|b| b.node.is_none()))
    {
        return Err(CommitError::BrokenChain {
            top: top.path.clone(),
            message: format!(
                "the backing file of {} cannot be opened ({}), and a commit needs it to keep \
                 what the base's guests see",
                broken.path.display(),
                broken
                    .backing
                    .as_ref()
                    .map_or(String::new(), |b| b.resolved.display().to_string())
            ),
        });
    }

    // 2. Nothing written may be keep-RO.
    for &id in between.iter().chain(std::iter::once(&base_id)) {
        let n = forest.node(id);
        if n.mode == Mode::KeepRo {
            let reason = n.keep_ro_reason.unwrap_or(KeepRoReason::Requested);
            return Err(CommitError::KeepReadOnly {
                path: n.path.clone(),
                reason,
                protected_by: (reason == KeepRoReason::Inherited)
                    .then(|| protected_above(forest, id))
                    .flatten(),
            });
        }
    }
    if !keep_top && top.keep_ro_reason == Some(KeepRoReason::NotWritable) {
        return Err(CommitError::KeepReadOnly {
            path: top.path.clone(),
            reason: KeepRoReason::NotWritable,
            protected_by: None,
        });
    }

    // 3. Nobody else may hold what we need.
    let top_access = if keep_top {
        Access::READ_ONLY
    } else {
        Access::READ_WRITE
    };
    let needs = std::iter::once((req.top, top_access))
        .chain(between.iter().map(|&m| (m, Access::READ_ONLY)))
        .chain(std::iter::once((base_id, Access::READ_WRITE)))
        .chain(below.iter().map(|&b| (b, Access::READ_ONLY)));
    for (id, access) in needs {
        let n = forest.node(id);
        if let Some((permission, shared)) = access.conflict(n.foreign) {
            return Err(CommitError::InUse(LockError::InUse {
                path: n.path.clone(),
                holder: n.holders.first().cloned(),
                permission,
                shared,
            }));
        }
    }

    // 4. Writing the base must not change other images' disks: other overlays, and (with -b)
    // the images in between, which keep their data but read the base where they have none.
    let mut spared: HashSet<NodeId> = HashSet::new();
    spared.insert(req.top);
    spared.extend(descendants(forest, req.top));
    let mut others: Vec<PathBuf> = descendants(forest, base_id)
        .into_iter()
        .filter(|d| !spared.contains(d))
        .map(|d| forest.node(d).path.clone())
        .collect();
    others.sort();
    if !others.is_empty() && !req.force {
        return Err(CommitError::SharedBase {
            base: base.path.clone(),
            others,
        });
    }

    // 5. Formats and features we can read and write safely.
    supported(top, Role::Top { empty: !keep_top })?;
    for &m in between {
        supported(forest.node(m), Role::Intermediate)?;
    }
    supported(base, Role::Base { force: req.force })?;
    for &b in &below {
        supported(forest.node(b), Role::Below)?;
    }
    // Every link of the chain must say what format its backing file is, and say it right:
    // committing through a link QEMU reads differently would corrupt the guest's disk.
    for &id in std::iter::once(&req.top)
        .chain(between)
        .chain(std::iter::once(&base_id))
        .chain(&below)
    {
        let n = forest.node(id);
        if let Some(p) = n.problems.iter().find(|p| {
            matches!(
                p.kind,
                ProblemKind::BackingFormatMismatch | ProblemKind::NoBackingFormat
            )
        }) {
            return Err(CommitError::Unsupported {
                path: n.path.clone(),
                what: format!(
                    "cannot be committed through safely: {}; {QEMU_IMG}",
                    p.message
                ),
            });
        }
    }

    let top_img = plan_image(forest, req.top)?;
    let base_img = plan_image(forest, base_id)?;
    let intermediates = between
        .iter()
        .map(|&m| plan_image(forest, m))
        .collect::<Result<Vec<_>, _>>()?;
    let below = below
        .iter()
        .map(|&b| plan_image(forest, b))
        .collect::<Result<Vec<_>, _>>()?;
    let grow_to = (top_img.virtual_size > base_img.virtual_size).then_some(top_img.virtual_size);
    if grow_to.is_some() && base_img.version == Some(2) {
        return Err(CommitError::Unsupported {
            path: base_img.path.clone(),
            what: format!(
                "is a qcow2 v2 (compat=0.10) image that would have to grow to {} bytes: growing \
                 rewrites its header and L1 table, and v2 has no dirty bit to keep that safe \
                 from a crash; convert it first with qemu-img amend -f qcow2 -o compat=1.1 {}",
                top_img.virtual_size,
                base_img.path.display()
            ),
        });
    }
    Ok(Plan {
        grow_to,
        forced_bitmaps: base.qcow2.as_ref().is_some_and(|h| h.bitmaps()),
        top: top_img,
        intermediates,
        base: base_img,
        below,
        keep_top,
        forced_over: others,
    })
}

/// Guard 4 again, right before the first write, on a fresh scan of the directories of every
/// image in the plan: an overlay of the base that the plan did not name — created since, or
/// outside what the plan's scan saw — refuses the commit, even with `--force`.
pub fn recheck_overlays(plan: &Plan) -> Result<(), CommitError> {
    let mut dirs: Vec<PathBuf> = std::iter::once(&plan.top)
        .chain(&plan.intermediates)
        .chain(std::iter::once(&plan.base))
        .chain(&plan.below)
        .filter_map(|i| i.path.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    let opts = crate::forest::ScanOptions {
        max_depth: 0,
        ..Default::default()
    };
    let changed = |what: String| CommitError::Changed {
        path: plan.base.path.clone(),
        what,
    };
    let scan = crate::forest::scan(&dirs, &opts)
        .map_err(|e| changed(format!("it could not be scanned again: {e}")))?;
    let forest = &scan.forest;
    let Some(base) = forest.find(&plan.base.path) else {
        return Err(changed("it is gone".into()));
    };
    let mut known: HashSet<FileId> = std::iter::once(&plan.top)
        .chain(&plan.intermediates)
        .map(|i| i.ident)
        .collect();
    known.extend(plan.forced_over.iter().filter_map(|p| FileId::of_path(p)));
    if let Some(top) = forest.find(&plan.top.path) {
        known.extend(
            descendants(forest, top)
                .into_iter()
                .filter_map(|d| forest.node(d).ident),
        );
    }
    let mut others: Vec<PathBuf> = descendants(forest, base)
        .into_iter()
        .map(|d| forest.node(d))
        .filter(|n| n.ident.is_none_or(|i| !known.contains(&i)))
        .map(|n| n.path.clone())
        .collect();
    others.sort();
    if others.is_empty() {
        Ok(())
    } else {
        Err(CommitError::SharedBase {
            base: plan.base.path.clone(),
            others,
        })
    }
}

/// Where `-b BASE` is in the chain, matched as qemu-img does (`bdrv_find_backing_image`):
/// by the backing name as written in an overlay's header, or as a path — relative to the top's
/// directory or to the working directory — naming the same file.
fn find_base(
    forest: &Forest,
    top: NodeId,
    chain: &[NodeId],
    base: &std::path::Path,
) -> Option<usize> {
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

#[derive(Clone, Copy)]
enum Role {
    Top {
        empty: bool,
    },
    Intermediate,
    Base {
        force: bool,
    },
    /// In the base's own backing chain: only read.
    Below,
}

/// The advice for what imgchain refuses to write but QEMU can.
const QEMU_IMG: &str = "use qemu-img commit for it";

/// Guard 5 for one image.
fn supported(n: &Node, role: Role) -> Result<(), CommitError> {
    let refuse = |what: String| {
        Err(CommitError::Unsupported {
            path: n.path.clone(),
            what: format!("{what}; {QEMU_IMG}"),
        })
    };
    if let Some(p) = n
        .problems
        .iter()
        .find(|p| matches!(p.kind, ProblemKind::BadHeader | ProblemKind::Unreadable))
    {
        return refuse(format!("looks damaged ({})", p.message));
    }
    match (n.format, role) {
        (Some(Format::Qcow2), _) | (Some(Format::Raw), Role::Base { .. } | Role::Below) => {}
        (Some(f), _) => {
            return refuse(format!(
                "is a {f} image; imgchain commits qcow2 overlays into qcow2 or raw bases"
            ));
        }
        (None, _) => return refuse("could not be read".into()),
    }
    let Some(h) = &n.qcow2 else { return Ok(()) };
    if h.corrupt() {
        return refuse(
            "is marked corrupt by QEMU and must not be used; inspect it with qemu-img check".into(),
        );
    }
    if h.dirty() {
        return Err(CommitError::Unsupported {
            path: n.path.clone(),
            what: format!(
                "has the dirty bit set (not closed cleanly); repair it first with qemu-img check -r all {}",
                n.path.display()
            ),
        });
    }
    let mut features = Vec::new();
    if h.extended_l2() {
        features.push("extended L2 entries (extended_l2=on)".to_string());
    }
    if h.compression_type != 0 {
        features.push(format!("{} compression", h.compression_name()));
    }
    if h.external_data_file() || h.data_file.is_some() {
        features.push("an external data file".into());
    }
    if h.encrypted() {
        features.push("encryption".into());
    }
    if h.unknown_incompatible() != 0 {
        features.push(format!(
            "unknown incompatible features ({:#x})",
            h.unknown_incompatible()
        ));
    }
    if let Some(f) = features.first() {
        return refuse(format!("uses {f}, which imgchain cannot commit"));
    }
    match role {
        Role::Base { force } => {
            if h.bitmaps() && !force {
                return refuse(
                    "has persistent dirty bitmaps, which writing it through imgchain would invalidate \
                     (incremental backups would have to start over); commit with --force to accept that"
                        .into(),
                );
            }
            if h.nb_snapshots > 0 {
                return refuse(format!("has {} internal snapshots", h.nb_snapshots));
            }
        }
        Role::Top { empty: true } if h.bitmaps() => {
            return Err(CommitError::Unsupported {
                path: n.path.clone(),
                what: "has persistent dirty bitmaps, which emptying it would invalidate; commit \
                       with -d to keep it as it is, or drop them first (qemu-img bitmap --remove)"
                    .into(),
            });
        }
        Role::Top { empty: true } if h.nb_snapshots > 0 => {
            return refuse(format!(
                "has {} internal snapshots, which emptying it would affect; use -d to keep its data",
                h.nb_snapshots
            ));
        }
        _ => {}
    }
    Ok(())
}
