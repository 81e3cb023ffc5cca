//! What a rebase is asked and what it will do: the guards, the new backing file's name and
//! format, and the chains read before and after.

use std::path::{Path, PathBuf};

use crate::forest::{Forest, KeepRoReason, NodeId};
use crate::image::lock::Access;
use crate::image::probe::Format;
use crate::ops::guards::{self, Role};
use crate::ops::plan_image::PlanImage;
use crate::ops::refusal::Way;
use crate::ops::{OpKind, Refusal};
use crate::text::Names;

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
    /// Upgrade a qcow2 v2 image to compat=1.1 before the copy (`--amend`).
    pub amend: bool,
}

/// What the UI asks for: a safe rebase of `image` onto `backing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub backing: PathBuf,
    /// Upgrade a qcow2 v2 image to compat=1.1 first (the amend key).
    pub amend: bool,
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
    /// Features of a flattened chain only QEMU's own code handles: when any, QEMU copies the
    /// data (`rebase::qemu`).
    pub by_qemu: Vec<String>,
    /// The image is qcow2 v2 and is upgraded to compat=1.1 before the copy (`qemu-img amend`).
    pub amend: bool,
}

/// A safe rebase of `image` onto `backing`, or a flatten (`None`), upgrading a v2 image first
/// when `amend`.
pub fn safe(
    forest: &Forest,
    image: NodeId,
    backing: Option<&Path>,
    amend: bool,
) -> Result<Plan, Refusal> {
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
        amend,
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
    guards::not_damaged(n)?;
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
    crate::ops::libvirt_snapshots::not_recorded(
        forest,
        &[req.image],
        &[crate::forest::model::RecordRole::Overlay],
        "re-pointing it",
    )?;
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
    let by_qemu = match safe {
        true => crate::ops::commit::plan::by_qemu(
            forest,
            &[with_chain(forest, req.image), new_chain.clone()].concat(),
        ),
        false => Vec::new(),
    };
    old_chain_reads(forest, req.image, kind, (safe, !by_qemu.is_empty()))?;
    let name = match req.backing {
        Some(b) => Some(new_backing(
            forest,
            req,
            b,
            (&old_chain, &new_chain, !by_qemu.is_empty()),
        )?),
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
        amend: safe && req.amend && n.qcow2.as_ref().is_some_and(|h| h.version == 2),
        by_qemu,
    })
}

/// The image can be written, and (in a safe run, which reads what its guest sees through the
/// old chain) its old chain is whole and readable.
fn old_chain_reads(
    forest: &Forest,
    image: NodeId,
    kind: OpKind,
    (safe, q): (bool, bool),
) -> Result<(), Refusal> {
    let n = forest.node(image);
    guards::supported_in(n, if safe { Role::Written } else { Role::Header }, q)?;
    if !safe {
        return Ok(());
    }
    if let Some(b) = &n.backing
        && b.node.is_none()
    {
        let broken = Refusal::BrokenChain {
            top: n.path.clone(),
            op: kind,
            message: format!(
                "its backing file {} cannot be read, so what its guest sees cannot be kept",
                b.resolved.shown()
            ),
        };
        return Err(broken.with(Way::key(
            "if the file moved, name the moved file with -u (or imgchain repair finds it)",
            "repair",
            "finds the moved file if it moved",
        )));
    }
    guards::whole_chain(forest, image, kind)?;
    guards::links_name_their_format(forest, &with_chain(forest, image))?;
    for c in forest.chain(image) {
        guards::supported_in(forest.node(c), Role::Backing, q)?;
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
    (old_chain, new_chain, q): (&[NodeId], &[NodeId], bool),
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
        return Err(bad(format!("is a {fmt} image, not {f}"))
            .with(Way::cli_only("name its real format with -F")));
    }
    let role = if req.unsafe_names {
        Role::Header
    } else {
        Role::Backing
    };
    for &c in new_chain {
        guards::supported_in(forest.node(c), role, q)?;
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
            let what = format!(
                "has a virtual size of {} bytes, not {} as the backing file it replaces",
                bn.virtual_size.unwrap_or(0),
                want.unwrap_or(0)
            );
            return Err(bad(what).with(Way::cli_only(
                "with -u it must stand in for that file (rebase without -u to copy what differs)",
            )));
        }
    }
    let written = req
        .name
        .clone()
        .unwrap_or_else(|| backing_name(&n.path, &bn.path));
    Ok((written, fmt))
}
