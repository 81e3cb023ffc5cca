//! The shape every write operation has: request → plan (guards) → run (job) → report
//! (ARCHITECTURE.md §3).

use std::fmt;
use std::path::PathBuf;

use super::describe::Description;
use super::kind::OpKind;
use super::progress::Run;
use super::refusal::Refusal;
use super::space::Space;
use crate::forest::Forest;

/// What a run that started did, told the same way in the CLI and the UI.
pub trait Report {
    /// The process exit code (ARCHITECTURE.md §5).
    fn exit_code(&self) -> u8;
    /// One paragraph for people: what happened to each image, and what to do next.
    fn summary(&self) -> String;
    /// The run in JSON, as `--json` prints it (ARCHITECTURE.md §5).
    fn json(&self) -> serde_json::Value;
    /// One line that says all when it went well, for a status line (`None`: the summary is
    /// shown in full).
    fn headline(&self) -> Option<String> {
        None
    }
    /// The title of the dialog that tells the summary (`None`: the operation's name and
    /// whether it finished).
    fn title(&self) -> Option<String> {
        None
    }
    /// Images the run left open read-write or in doubt (a reopen to read-only that failed).
    fn left_writable(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// One write operation: request → plan (guards) → run (job) → report.
pub trait Operation: fmt::Debug + Sized + 'static {
    const KIND: OpKind;
    /// What the user asks for, against a scanned forest.
    type Request;
    /// A request that passed every guard: exactly what the run will write.
    type Plan: Clone + fmt::Debug + Send + 'static;
    /// What a run that started did.
    type Outcome: Report + fmt::Debug + Send + 'static;

    /// Checks the guards in order and works out the plan; nothing is written.
    fn plan(forest: &Forest, req: &Self::Request) -> Result<Self::Plan, Refusal>;

    /// The images the run writes, the one whose data changes first.
    fn writes(plan: &Self::Plan) -> Vec<PathBuf>;

    /// What the run will do, as the dialog and the dry run both show it.
    fn describe(plan: &Self::Plan) -> Description;

    /// What the run writes and frees, and the room there (`None`: not worth measuring);
    /// `clone` says whether data may be cloned (`copy.clone`).
    fn space(_plan: &Self::Plan, _clone: bool) -> Result<Option<Space>, Refusal> {
        Ok(None)
    }

    /// The space guard, the same for the CLI and the UI: [`Operation::space`], refused when
    /// it cannot fit unless `force`.
    fn room(plan: &Self::Plan, force: bool, clone: bool) -> Result<Option<Space>, Refusal> {
        let space = Self::space(plan, clone)?;
        if !force && let Some(s) = &space {
            s.check()?;
        }
        Ok(space)
    }

    /// Carries the plan out in this thread. Returns a refusal only when nothing was written
    /// (or, [`Refusal::Internal`], a bug stopped it); everything after the first write is in
    /// the outcome.
    fn run(plan: &Self::Plan, run: Run<'_>) -> Result<Self::Outcome, Refusal>;
}
