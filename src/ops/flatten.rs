//! Flatten: a safe rebase onto no backing file ([`super::rebase`] does the work), as
//! `qemu-img rebase -b ""` does.

use std::path::{Path, PathBuf};

use super::rebase::{self, Outcome, Plan, Rebase, Request};
use super::scope::Discovered;
use super::settings::Settings;
use super::space::Space;
use super::{Description, OpKind, Operation, PlanImage, Refusal, Run, Selected};
use crate::forest::Forest;

/// What the UI asks for: flatten `image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    /// Upgrade a qcow2 v2 image to compat=1.1 first (the amend key).
    pub amend: bool,
}

/// `imgchain flatten`.
#[derive(Debug)]
pub struct Flatten;

impl Operation for Flatten {
    const KIND: OpKind = OpKind::FLATTEN;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    /// `req.backing` is ignored: a flatten has none.
    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        let req = Request {
            backing: None,
            unsafe_names: false,
            ..req.clone()
        };
        rebase::plan(forest, &req)
    }

    const ACTION: Option<&'static str> = Some("flatten");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
            amend: false,
        })
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        rebase::safe(&found.scan.forest, found.image, None, ask.amend)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        Rebase::writes(plan)
    }

    fn describe(plan: &Plan) -> Description {
        Rebase::describe(plan)
    }

    fn changes(plan: &Plan) -> Vec<PlanImage> {
        vec![plan.image.clone()]
    }

    fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
        rebase::space(plan, clone)
    }

    /// Shown, never refused on, as for a rebase.
    fn room(plan: &Plan, _force: bool, settings: &Settings) -> Result<Option<Space>, Refusal> {
        rebase::space(plan, settings.copy.clone)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        Rebase::run(plan, r)
    }
}
