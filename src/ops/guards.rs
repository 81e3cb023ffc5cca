//! The guards every write operation checks, each refusing with its own [`Refusal`] and exit
//! code before anything is written (ARCHITECTURE.md §3): written images not keep-RO, nothing
//! in use by another process, no other overlay reading what is written, formats and features
//! imgchain can write safely, and every chain link naming its backing format rightly.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use super::Refusal;
use super::plan_image::{PlanImage, QEMU_IMG};
use crate::forest::diag::ProblemKind;
use crate::forest::{Forest, KeepRoReason, Mode, Node, NodeId};
use crate::image::handle::Handle;
use crate::image::lock::{Access, LockError};
use crate::image::probe::Format;
use crate::text::Names;

/// Every node built on `id`, at any distance.
pub fn descendants(forest: &Forest, id: NodeId) -> Vec<NodeId> {
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
        .find(|n| {
            matches!(
                n.keep_ro_reason,
                Some(KeepRoReason::Requested | KeepRoReason::FileMode)
            )
        })
        .map(|n| n.path.clone())
}

/// None of `written` may be keep-RO (exit 11).
pub fn writable(forest: &Forest, written: &[NodeId]) -> Result<(), Refusal> {
    for &id in written {
        let n = forest.node(id);
        if n.mode == Mode::KeepRo {
            let reason = n.keep_ro_reason.unwrap_or(KeepRoReason::Requested);
            return Err(Refusal::KeepReadOnly {
                path: n.path.clone(),
                reason,
                protected_by: (reason == KeepRoReason::Inherited)
                    .then(|| protected_above(forest, id))
                    .flatten(),
            });
        }
    }
    Ok(())
}

/// None of `ids` is keep-RO on request or unwritable (exit 11): images an operation removes,
/// re-points or writes whatever their overlays' protections say.
pub fn not_kept_ro(forest: &Forest, ids: impl IntoIterator<Item = NodeId>) -> Result<(), Refusal> {
    for id in ids {
        let m = forest.node(id);
        if let Some(
            reason @ (KeepRoReason::Requested | KeepRoReason::FileMode | KeepRoReason::NotWritable),
        ) = m.keep_ro_reason
        {
            return Err(Refusal::KeepReadOnly {
                path: m.path.clone(),
                reason,
                protected_by: None,
            });
        }
    }
    Ok(())
}

/// Changing `id`'s own blocks needs it to open read-write; overlays of it do not mind (its
/// guest view stays), so only `not-writable` and `file-mode` refuse (exit 11).
pub fn openable_rw(forest: &Forest, id: NodeId) -> Result<(), Refusal> {
    let n = forest.node(id);
    if let Some(reason @ (KeepRoReason::NotWritable | KeepRoReason::FileMode)) = n.keep_ro_reason {
        return Err(Refusal::KeepReadOnly {
            path: n.path.clone(),
            reason,
            protected_by: None,
        });
    }
    Ok(())
}

/// No other process may hold what each image needs (exit 12), judged from the lock bytes the
/// scan saw; the run takes the locks itself before writing.
pub fn not_in_use(
    forest: &Forest,
    needs: impl IntoIterator<Item = (NodeId, Access)>,
) -> Result<(), Refusal> {
    for (id, access) in needs {
        let n = forest.node(id);
        if let Some((permission, shared)) = access.conflict(n.foreign) {
            return Err(Refusal::InUse(LockError::InUse {
                path: n.path.clone(),
                holder: n.holders.first().cloned(),
                permission,
                shared,
            }));
        }
    }
    Ok(())
}

/// The overlays of `written` (at any distance) other than `spared` and their own overlays:
/// the images whose disks writing it would change. Refused unless `force` (exit 13); with
/// `force`, the list the plan records.
pub fn other_overlays(
    forest: &Forest,
    written: NodeId,
    spared: &[NodeId],
    force: bool,
) -> Result<Vec<PathBuf>, Refusal> {
    let mut skip: HashSet<NodeId> = spared.iter().copied().collect();
    for &s in spared {
        skip.extend(descendants(forest, s));
    }
    let mut others: Vec<PathBuf> = descendants(forest, written)
        .into_iter()
        .filter(|d| !skip.contains(d))
        .map(|d| forest.node(d).path.clone())
        .collect();
    others.sort();
    if !others.is_empty() && !force {
        return Err(Refusal::SharedBase {
            base: forest.node(written).path.clone(),
            others,
        });
    }
    Ok(others)
}

/// Refuses to remove an image a defined libvirt VM names as its disk, unless `force`
/// (exit 13).
pub fn not_a_vm_disk(forest: &Forest, removed: &[NodeId], force: bool) -> Result<(), Refusal> {
    if force {
        return Ok(());
    }
    for &id in removed {
        let n = forest.node(id);
        if let Some(d) = n.vm_disks.first() {
            return Err(Refusal::VmDisk {
                path: n.path.clone(),
                domain: d.domain.clone(),
                target: d.target.clone(),
                definition: d.definition.clone(),
            });
        }
    }
    Ok(())
}

/// How an operation uses an image, for [`supported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An overlay read through (and, when `emptied`, emptied afterwards).
    Overlay { emptied: bool },
    /// The image written: the operation marks what it writes in the image's persistent
    /// bitmaps (`ops::bitmaps`), which needs QEMU's tools.
    Written,
    /// Only its header is read or rewritten (a header-only rebase and its new chain): any qcow2
    /// feature will do.
    Header,
    /// Below the written image: only read, for copy-on-write.
    Backing,
}

/// Formats and features imgchain can read and write safely in `role` (exit 16). The feature
/// list is the header's own ([`crate::image::probe::Qcow2Header::unwritable_features`]).
pub fn supported(n: &Node, role: Role) -> Result<(), Refusal> {
    supported_in(n, role, false)
}

/// An image whose header could not be read is refused as damaged, before anything is said
/// about what its header would name (a truncated image has no backing name to read).
pub fn not_damaged(n: &Node) -> Result<(), Refusal> {
    match n
        .problems
        .iter()
        .find(|p| matches!(p.kind, ProblemKind::BadHeader | ProblemKind::Unreadable))
    {
        Some(p) => Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: format!("looks damaged: {}", p.message),
        }),
        None => Ok(()),
    }
}

/// [`supported`], for an operation QEMU's own tools run when `by_qemu`: then the features
/// they handle ([`crate::image::probe::Qcow2Header::qemu_features`]) are no refusal.
pub fn supported_in(n: &Node, role: Role, by_qemu: bool) -> Result<(), Refusal> {
    let refuse = |what: String| {
        Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: format!("{what}; {QEMU_IMG}"),
        })
    };
    not_damaged(n)?;
    match (n.format, role) {
        (Some(Format::Qcow2), _)
        | (Some(Format::Raw), Role::Written | Role::Backing | Role::Header) => {}
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
        return Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: format!(
                "has the dirty bit set (not closed cleanly); repair it first with qemu-img check -r all {}",
                n.path.quoted()
            ),
        });
    }
    if let Some(f) = h.unwritable_features().first()
        && role != Role::Header
        && !(by_qemu && h.only_qemu_features())
    {
        return refuse(format!(
            "uses {f}, which imgchain does not read or write itself"
        ));
    }
    if role == Role::Written
        && h.bitmaps()
        && let Err(why) = crate::ops::bitmaps::tools_found()
    {
        return Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: format!("has persistent dirty bitmaps: {why}"),
        });
    }
    Ok(())
}

/// Every link of `chain` must say what format its backing file is, and say it right: writing
/// through a link QEMU reads differently would corrupt the guest's disk (exit 16).
pub fn links_name_their_format(forest: &Forest, chain: &[NodeId]) -> Result<(), Refusal> {
    for &id in chain {
        let n = forest.node(id);
        if let Some(p) = n.problems.iter().find(|p| {
            matches!(
                p.kind,
                ProblemKind::BackingFormatMismatch | ProblemKind::NoBackingFormat
            )
        }) {
            return Err(Refusal::Unsupported {
                path: n.path.clone(),
                what: format!("cannot be read through safely: {}", p.message),
            });
        }
    }
    Ok(())
}

/// A qcow2 v2 image cannot take a new refcount block crash-safely (it has no dirty bit): refuse,
/// before writing, a run that could need one to write `bytes` of data into `img` (exit 16).
/// Bound: the data, an L2 table per L2 span of it, and two clusters more.
pub fn v2_room(handle: &Handle, img: &PlanImage, bytes: u64) -> Result<(), Refusal> {
    let Some((room, cluster)) = handle.storage().v2_refcount_room() else {
        return Ok(());
    };
    let file = std::fs::metadata(&img.path).map_or(u64::MAX, |m| m.len());
    let tables = bytes / (cluster * (cluster / 8)) + 1;
    let need = file
        .saturating_add(bytes)
        .saturating_add((tables + 2) * cluster);
    if need <= room {
        return Ok(());
    }
    Err(Refusal::NeedsAmend {
        path: img.path.clone(),
        what: format!(
            "is a qcow2 v2 (compat=0.10) image whose refcount blocks cover {room} bytes of \
             file, and this operation may need up to {need}: a new refcount block cannot be \
             added crash-safely without the v3 dirty bit"
        ),
    })
}

/// Every layer of `id`'s chain, `id` included, names a backing file imgchain opened: a missing
/// layer, or a `json:`/protocol name imgchain does not follow, would read as zeroes (exit 1).
pub fn whole_chain(forest: &Forest, id: NodeId, op: super::OpKind) -> Result<(), Refusal> {
    for layer in std::iter::once(id).chain(forest.chain(id)) {
        let n = forest.node(layer);
        if let Some(b) = n.backing.as_ref().filter(|b| b.node.is_none()) {
            let name = b.raw.to_string_lossy();
            let has = |k: ProblemKind| n.problems.iter().any(|p| p.kind == k);
            let why = if has(ProblemKind::ProtocolBacking) {
                format!("names \"{name}\", which QEMU parses as a protocol or json: name")
            } else if has(ProblemKind::BackingLoop) {
                format!(
                    "names {}, which is built on it: the backing chain loops",
                    b.resolved.shown()
                )
            } else {
                format!("names {}, which cannot be opened", b.resolved.shown())
            };
            return Err(Refusal::BrokenChain {
                top: forest.node(id).path.clone(),
                op,
                message: format!(
                    "the layer {} {why}; every layer must be read to keep what the guest sees \
                     (qemu-img refuses too: Could not open backing file); repair the chain first",
                    n.path.shown()
                ),
            });
        }
    }
    Ok(())
}
