//! Commit: copy an overlay's data into its backing file (or a deeper base), upgrading the base
//! from read-only to read-write for the copy and back again — on every path, with the copy's
//! result and the reopen's result reported separately (ARCHITECTURE.md §3).
//!
//! [`plan()`] checks the guards in order and says what will be copied; [`run()`] performs it in
//! the calling thread (or a worker, [`crate::ops::spawn`]), reporting progress and honouring a
//! cancel flag between chunks.

pub mod plan;
pub mod run;

use std::path::PathBuf;

use super::{OpKind, Operation, Refusal, Report, Run};
use crate::forest::Forest;

pub use plan::{Plan, Proposal, Request, measure_new, measure_plan, plan, propose_in, space_of};
pub use run::{Outcome, run};

/// The commit operation.
#[derive(Debug)]
pub struct Commit;

impl Operation for Commit {
    const KIND: OpKind = OpKind::Commit;
    type Request = Request;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        let mut w = vec![plan.base.path.clone()];
        if !plan.keep_top {
            w.push(plan.top.path.clone());
        }
        w
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r)
    }
}

impl Report for Outcome {
    fn exit_code(&self) -> u8 {
        Outcome::exit_code(self)
    }

    fn summary(&self) -> String {
        Outcome::summary(self)
    }

    fn headline(&self) -> Option<String> {
        (Outcome::exit_code(self) == crate::exit::OK).then(|| {
            let name = crate::forest::model::file_name;
            format!(
                "{}Committed {} of {} into {}; base read-only again; top {}",
                if self.cancel_too_late {
                    "Too late to cancel: "
                } else {
                    ""
                },
                crate::units::human_size(self.total),
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
