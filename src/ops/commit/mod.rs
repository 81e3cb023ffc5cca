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

pub use plan::{
    Plan, Proposal, Request, measure_new, measure_plan, plan, propose, propose_in, space_of,
};
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
        run(plan, r.chunk, r.cancel, r.progress)
    }
}

impl Report for Outcome {
    fn exit_code(&self) -> u8 {
        Outcome::exit_code(self)
    }

    fn summary(&self) -> String {
        Outcome::summary(self)
    }
}
