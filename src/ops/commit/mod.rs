//! Commit: copy an overlay's data into its backing file (or a deeper base), upgrading the base
//! from read-only to read-write for the copy and back again — on every path, with the copy's
//! result and the reopen's result reported separately (ARCHITECTURE.md §3).
//!
//! [`plan()`] checks the guards in order and says what will be copied; [`run()`] performs it in
//! the calling thread (or a worker, [`crate::ops::spawn`]), reporting progress and honouring a
//! cancel flag between chunks.

pub mod plan;
pub mod qemu;
pub mod run;

use std::path::{Path, PathBuf};

use super::scope::Discovered;
use super::settings::Settings;
use super::space::Space;
use super::{Description, OpKind, Operation, PlanImage, Refusal, Report, Run, Selected};
use crate::forest::Forest;

pub use plan::{Ask, Plan, Request, measure_new, measure_plan, plan, propose, space_of};
pub use run::Outcome;

/// The commit operation.
#[derive(Debug)]
pub struct Commit;

impl Operation for Commit {
    const KIND: OpKind = OpKind::COMMIT;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req)
    }

    const ACTION: Option<&'static str> = Some("commit");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
            base: None,
            keep_top: sel.keep_top,
            amend: false,
        })
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        let asked = (ask.base.clone(), ask.keep_top);
        propose(&found.scan.forest, found.image, asked, ask.amend)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        let mut w = vec![plan.base.path.clone()];
        if !plan.keep_top {
            w.push(plan.top.path.clone());
        }
        w
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    fn changes(plan: &Plan) -> Vec<PlanImage> {
        match plan.keep_top {
            true => vec![plan.base.clone()],
            false => vec![plan.top.clone(), plan.base.clone()],
        }
    }

    /// Without a measure (an unreadable map) the run itself reports what it cannot read.
    fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
        let bytes = match &plan.measured {
            Some(measured) => measured.as_ref().ok().copied(),
            None => measure_plan(plan).ok(),
        };
        Ok(bytes.map(|d| space_of(plan, d, clone)))
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r)
    }
}

/// Runs `plan` in this thread: through imgchain's data path, or through `qemu-img commit` when
/// the chain uses features only QEMU handles ([`qemu`]).
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    if plan.by_qemu.is_empty() {
        run::run(plan, r)
    } else {
        qemu::run(plan, r)
    }
}

/// What the commit does to each image; with the bytes it copies when they were measured.
/// Bitmap names for a sentence: `"bb", "daily"` (quoted and escaped).
pub fn names_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn describe(plan: &Plan) -> Description {
    let bytes = plan.measured.as_ref();
    use crate::text::Names;
    use crate::units::human_size;
    let top = plan.top.path.shown();
    let mut d = Description::new(format!(
        "Would commit {top} into {}{}{top}.",
        plan.base.path.shown(),
        if plan.keep_top {
            ", keeping "
        } else {
            ", then empty "
        },
    ));
    for m in &plan.intermediates {
        d.field(
            "through",
            format!("{} (keeps its data; reads differently)", m.path.shown()),
        );
    }
    d.field(
        "base mode",
        "RO → RW for the copy → RO again (reopened through its open handle)",
    );
    if let Some(b) = bytes {
        d.field(
            "to copy",
            match b {
                Ok(b) => format!("{} ({b} bytes of data and zeroes)", human_size(*b)),
                Err(e) => format!("unknown: {e}"),
            },
        );
    }
    if let Some(g) = plan.grow_to {
        let from = human_size(plan.base.virtual_size);
        d.field("grow base", format!("from {from} to {}", human_size(g)));
    }
    d.field(
        "top after",
        if !plan.intermediates.is_empty() {
            "keeps its data (always, with a deeper base)"
        } else if plan.keep_top {
            "keeps its data"
        } else {
            "emptied, its data now in the base"
        },
    );
    if !plan.by_qemu.is_empty() {
        d.field(
            "data moved by",
            format!(
                "qemu-img commit, under these guards ({} need QEMU's own code)",
                plan.by_qemu.join(", ")
            ),
        );
    }
    if plan.amend {
        d.field(
            "base format",
            "qcow2 v2, upgraded to compat=1.1 first (qemu-img amend; QEMU before 1.1 cannot open \
             it then)",
        );
    }
    if !plan.marks.is_empty() {
        let when = match plan.by_qemu.is_empty() {
            true => "before the first write",
            false => "as it writes",
        };
        d.field(
            "bitmaps",
            format!(
                "{} of the base marked with what it writes (by qemu-img, {when})",
                names_list(&plan.marks)
            ),
        );
    }
    d
}

impl Report for Outcome {
    /// `commit --json` when the commit ran.
    fn json(&self) -> serde_json::Value {
        use crate::image::file::OpenMode;
        use crate::ops::datapath::CopyError;
        let p = |x: &std::path::Path| crate::text::lossy(x);
        let top = match &self.top_emptied {
            Some(Ok(())) => "emptied",
            Some(Err(_)) => "empty-failed",
            None if self.copy.is_ok() => "kept",
            None => "unchanged",
        };
        serde_json::json!({
            "top": p(&self.plan.top.path),
            "base": p(&self.plan.base.path),
            "intermediates": self.plan.intermediates.iter().map(|i| p(&i.path)).collect::<Vec<_>>(),
            "total_bytes": self.total,
            "copied_bytes": self.copied,
            "data_path": self.tally.json(),
            "grew": self.grew.map(|(from, to)| serde_json::json!({"from": from, "to": to})),
            "amended": self.plan.amend,
            "tier": if self.plan.by_qemu.is_empty() { "imgchain" } else { "qemu-img" },
            "copy": {
                "ok": self.copy.is_ok(),
                "cancelled": matches!(self.copy, Err(CopyError::Cancelled)),
                "error": self.copy.as_ref().err().map(|e| e.to_string()),
            },
            "left_dirty": self.left_dirty,
            "cancel_too_late": self.cancel_too_late,
            "reopen": {
                "ok": matches!(self.reopen_ro, Some(Ok(()))),
                "attempted": self.reopen_ro.is_some(),
                "error": self.reopen_ro.as_ref().and_then(|r| r.as_ref().err()).map(|e| e.to_string()),
                "base_mode": if self.base_mode() == OpenMode::ReadOnly { "ro" } else { "rw" },
            },
            "top_state": top,
            "top_error": self.top_emptied.as_ref().and_then(|r| r.as_ref().err().cloned()),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        Outcome::exit_code(self)
    }

    fn summary(&self) -> String {
        Outcome::summary(self)
    }

    fn headline(&self) -> Option<String> {
        (Outcome::exit_code(self) == crate::exit::OK).then(|| {
            let name = crate::forest::model::file_name;
            let how_much = match self.plan.by_qemu.is_empty() {
                true => crate::units::human_size(self.total),
                false => "all (qemu-img commit)".into(),
            };
            format!(
                "{}Committed {how_much} of {} into {}; base read-only again; top {}",
                if self.cancel_too_late {
                    "Too late to cancel: "
                } else {
                    ""
                },
                name(&self.plan.top.path),
                name(&self.plan.base.path),
                if self.top_emptied.is_some() {
                    "emptied"
                } else {
                    "kept"
                }
            )
        })
    }

    fn title(&self) -> Option<String> {
        let code = Outcome::exit_code(self);
        (code != crate::exit::OK).then(|| {
            if code == crate::exit::CANCELLED {
                "Commit cancelled"
            } else if self.copy.is_ok() {
                "Committed, but the base could not be reopened read-only"
            } else {
                "Commit failed"
            }
            .into()
        })
    }

    fn left_writable(&self) -> Vec<PathBuf> {
        match self.reopen_ro {
            Some(Err(_)) => vec![self.plan.base.path.clone()],
            _ => Vec::new(),
        }
    }
}
