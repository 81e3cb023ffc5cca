//! The operation layer: every write imgchain makes goes through one shape
//! (ARCHITECTURE.md §3) — a request is planned against a scanned forest by the guards
//! ([`guards`]), the plan runs as a job ([`job`]) that opens every image again, re-checks what
//! may have changed since the plan, writes through a read-write window ([`window`]) and the
//! crash-ordering storage layer, and ends in an outcome that reports each step apart.
//!
//! The UI and the CLI discover the images around a request with [`scope::discover`] and plan
//! it with the operation's [`Operation::plan`]: they cannot reach different decisions.

pub mod any;
pub mod commit;
pub mod datapath;
pub mod delete;
pub mod dependents;
pub mod extents;
pub mod guards;
pub mod job;
pub mod live;
pub mod merge;
pub mod plan_image;
pub mod rebase;
pub mod refusal;
pub mod repair;
pub mod scope;
pub mod snapshot;
pub mod space;
pub mod trust;
pub mod window;

use std::fmt;
use std::path::PathBuf;

use crate::forest::Forest;

pub use job::{Event, Job, JobId, Phase, Progress, Run, spawn};
pub use plan_image::PlanImage;
pub use refusal::Refusal;

/// Which operation a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Commit,
    Snapshot,
    Delete,
    Rebase,
    Flatten,
    Merge,
}

impl OpKind {
    /// The name in progress output and JSON (`commit`).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Commit => "commit",
            OpKind::Snapshot => "snapshot",
            OpKind::Delete => "delete",
            OpKind::Rebase => "rebase",
            OpKind::Flatten => "flatten",
            OpKind::Merge => "merge",
        }
    }
}

impl OpKind {
    /// The name in titles: "Commit", "Snapshot".
    pub fn title(self) -> &'static str {
        match self {
            OpKind::Commit => "Commit",
            OpKind::Snapshot => "Snapshot",
            OpKind::Delete => "Delete",
            OpKind::Rebase => "Rebase",
            OpKind::Flatten => "Flatten",
            OpKind::Merge => "Merge",
        }
    }

    /// What the image of a refused request cannot do: "be committed", "take an overlay".
    pub fn refused_as(self) -> &'static str {
        match self {
            OpKind::Commit => "be committed",
            OpKind::Snapshot => "take an overlay",
            OpKind::Delete => "be deleted",
            OpKind::Rebase => "be rebased",
            OpKind::Flatten => "be flattened",
            OpKind::Merge => "be merged",
        }
    }

    /// What an image without a backing file gives this operation nothing to do: "commit it
    /// into", "flatten".
    pub fn nothing_to(self) -> &'static str {
        match self {
            OpKind::Commit => "commit it into",
            OpKind::Merge => "merge it into",
            OpKind::Flatten => "flatten (it is independent already)",
            _ => "do with it",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run that started did, told the same way in the CLI and the UI.
pub trait Report {
    /// The process exit code (ARCHITECTURE.md §5).
    fn exit_code(&self) -> u8;
    /// One paragraph for people: what happened to each image, and what to do next.
    fn summary(&self) -> String;
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

    /// Carries the plan out in this thread. Returns a refusal only when nothing was written
    /// (or, [`Refusal::Internal`], a bug stopped it); everything after the first write is in
    /// the outcome.
    fn run(plan: &Self::Plan, run: Run<'_>) -> Result<Self::Outcome, Refusal>;
}
