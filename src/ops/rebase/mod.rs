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

mod differ;
mod outcome;
mod plan;
mod qemu;
mod run;

pub use outcome::Outcome;
pub use plan::{Ask, Plan, Request, backing_name, plan, safe};
pub(crate) use run::relink;

use std::path::{Path, PathBuf};

use crate::forest::Forest;
use crate::ops::plan_image::PlanImage;
use crate::ops::scope::{Discovered, Scope};
use crate::ops::settings::Settings;
use crate::ops::space::Space;
use crate::ops::{Description, OpKind, Operation, Refusal, Run, Selected};
use crate::text::Names;

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
                amend: false,
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
        safe(
            &found.scan.forest,
            found.image,
            Some(&ask.backing),
            ask.amend,
        )
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

    fn changes(plan: &Plan) -> Vec<PlanImage> {
        vec![plan.image.clone()]
    }

    fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
        space(plan, clone)
    }

    /// What the rebase writes is shown, never refused on: the count is an upper bound, and a
    /// rebase that runs out of room stops with its header unchanged, every cluster copied
    /// reading as before.
    fn room(plan: &Plan, _force: bool, settings: &Settings) -> Result<Option<Space>, Refusal> {
        space(plan, settings.copy.clone)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r)
    }
}

/// What a safe rebase (or flatten) of `plan` writes into its image at most: the data of the
/// layers one chain has and the other has not, where the image holds nothing of its own
/// (the layers both chains share read the same through either); `None` for names only.
pub fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
    if !plan.safe {
        return Ok(None);
    }
    let image = plan.image.peek()?;
    let only = |a: &[PlanImage], b: &[PlanImage]| -> Vec<PlanImage> {
        a.iter()
            .filter(|x| !b.iter().any(|y| y.ident == x.ident))
            .cloned()
            .collect()
    };
    let mut data = 0;
    for side in [only(&plan.old, &plan.new), only(&plan.new, &plan.old)] {
        let layers = side
            .iter()
            .map(PlanImage::peek)
            .collect::<Result<Vec<_>, _>>()?;
        data += crate::ops::extents::measure_new(&layers, &image, plan.image.virtual_size)
            .map_err(|source| Refusal::Map {
                path: plan.image.path.clone(),
                source,
            })?;
    }
    let source = plan.old.first().or(plan.new.first()).unwrap_or(&plan.image);
    Ok(Some(Space::copy(
        (source, &plan.image),
        (data, data),
        crate::ops::space::cluster_of(&plan.image),
        0,
        clone,
    )))
}

/// The backing file now and after, and whether the guest view is kept.
/// Runs `plan` in this thread: through imgchain's data path, or through QEMU's tools when
/// either chain uses features only QEMU handles.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    if plan.safe && !plan.by_qemu.is_empty() {
        qemu::run(plan, r)
    } else {
        run::run(plan, r)
    }
}

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
    if !p.by_qemu.is_empty() {
        d.field(
            "data moved by",
            format!(
                "QEMU (qemu-io reading through a copy-on-read node), under these guards ({} need \
                 QEMU's own code)",
                p.by_qemu.join(", ")
            ),
        );
    }
    if p.amend {
        d.field(
            "image format",
            "qcow2 v2, upgraded to compat=1.1 first (qemu-img amend; QEMU before 1.1 cannot open \
             it then)",
        );
    }
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
