//! The shape every write operation has: request → plan (guards) → run (job) → report
//! (ARCHITECTURE.md §3).

use std::fmt;
use std::path::{Path, PathBuf};

use super::describe::Description;
use super::kind::OpKind;
use super::progress::Run;
use super::refusal::Refusal;
use super::scope::{Discovered, Scope};
use super::settings::Settings;
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

/// The image a UI key was pressed on, as [`Operation::ask_for`] sees it.
#[derive(Clone, Debug)]
pub struct Selected {
    pub image: PathBuf,
    /// A running QEMU writes it.
    pub written: bool,
    /// Its backing chain, top-down.
    pub below: Vec<PathBuf>,
    /// Keep a committed top's data (`[ui] keep_top`).
    pub keep_top: bool,
    /// A new overlay's cluster size (`[snapshot] cluster_size`).
    pub cluster_size: usize,
}

/// One write operation: request → plan (guards) → run (job) → report.
pub trait Operation: fmt::Debug + Sized + 'static {
    const KIND: OpKind;
    /// The title of its dialog.
    const TITLE: &'static str = Self::KIND.title();
    /// What the user asks for, against a scanned forest.
    type Request;
    /// The `[keys]` action that opens it in the UI (`None`: not offered there).
    const ACTION: Option<&'static str> = None;
    /// What the UI asks for: the image by path, and what its dialog's keys change.
    type Ask: Clone + fmt::Debug + PartialEq + Eq + Send + 'static;
    /// A request that passed every guard: exactly what the run will write.
    type Plan: Clone + fmt::Debug + Send + 'static;
    /// What a run that started did.
    type Outcome: Report + fmt::Debug + Send + 'static;

    /// Checks the guards in order and works out the plan; nothing is written.
    fn plan(forest: &Forest, req: &Self::Request) -> Result<Self::Plan, Refusal>;

    /// The image `ask` is about.
    fn asked(ask: &Self::Ask) -> &Path;

    /// What [`Operation::ACTION`]'s key asks for the selected image; `Err`: why this
    /// operation does not apply to it (the next one registered for the key is tried).
    fn ask_for(_sel: &Selected) -> Result<Self::Ask, String> {
        Err(String::new())
    }

    /// Where else to look for the images `ask` needs (default: nowhere else).
    fn widen(_ask: &Self::Ask, _scope: &mut Scope) {}

    /// Plans `ask` on the images discovered around its image, as the UI offers it.
    fn plan_asked(
        ask: &Self::Ask,
        found: &Discovered,
        settings: &Settings,
    ) -> Result<Self::Plan, Refusal>;

    /// The operation a plan runs, as its progress names it.
    fn kind(_plan: &Self::Plan) -> OpKind {
        Self::KIND
    }

    /// The images the run writes, the one whose data changes first.
    fn writes(plan: &Self::Plan) -> Vec<PathBuf>;

    /// What the run will do, as the dialog and the dry run both show it.
    fn describe(plan: &Self::Plan) -> Description;

    /// The images the run changes or removes, in the order an undo puts them back (overlays
    /// before what they are built on); empty: it has no undo (ARCHITECTURE.md §3, "Undo").
    fn changes(_plan: &Self::Plan) -> Vec<super::PlanImage> {
        Vec::new()
    }

    /// What the run writes and frees, and the room there (`None`: not worth measuring);
    /// `clone` says whether data may be cloned (`copy.clone`).
    fn space(_plan: &Self::Plan, _clone: bool) -> Result<Option<Space>, Refusal> {
        Ok(None)
    }

    /// The space guard, the same for the CLI and the UI: [`Operation::space`] (with what an
    /// undo's clones keep), refused when it cannot fit unless `force`.
    fn room(plan: &Self::Plan, force: bool, settings: &Settings) -> Result<Option<Space>, Refusal> {
        let undo = super::clones::offer(settings.undo, &Self::changes(plan));
        let space = Self::space(plan, settings.copy.clone)?;
        let space = space.map(|s| super::clones::kept(s, undo.as_ref()));
        if !force && let Some(s) = &space {
            s.check()
                .map_err(|e| super::clones::room_refused(e, undo.as_ref()))?;
        }
        Ok(space)
    }

    /// Carries the plan out in this thread. Returns a refusal only when nothing was written
    /// (or, [`Refusal::Internal`], a bug stopped it); everything after the first write is in
    /// the outcome.
    fn run(plan: &Self::Plan, run: Run<'_>) -> Result<Self::Outcome, Refusal>;
}
