//! The dialogs over the forest: help, the commit plan, messages and the quit question.

use std::path::PathBuf;

use crate::ops::Refusal;
use crate::ops::any::{AnyPlan, Ask};
use crate::ops::commit::{Plan, Proposal};
use crate::ops::dependents::Searched;
use crate::ops::space::Space;

/// A dialog over the forest.
#[derive(Debug)]
pub enum Popup {
    /// The help screen, scrolled down by this many lines.
    Help(u16),
    Plan(Box<PlanPopup>),
    /// The dialog of another chain operation.
    Op(Box<OpPopup>),
    /// A result or an error; `error` picks the colour.
    Message {
        title: String,
        body: String,
        error: bool,
    },
    /// Quit asked while a commit can still be cancelled: cancel it and quit?
    ConfirmQuit,
    /// `p` on an image a rule protects (config, --protect, --read-only): lift that until quit?
    ConfirmUnprotect {
        path: PathBuf,
        rule: String,
    },
}

/// The commit dialog: what would happen, and every guard that fires.
#[derive(Debug)]
pub struct PlanPopup {
    pub job: u64,
    pub top: PathBuf,
    pub base: Option<PathBuf>,
    /// Why this plan was made again, shown above it (the run found the chain changed).
    pub notice: Option<String>,
    /// Still planning on a fresh scan: nothing below is known yet.
    pub pending: bool,
    /// The top's backing chain below it, top-down: the bases `b` cycles through.
    pub chain: Vec<PathBuf>,
    /// The plan, when every guard passes (with `forced` for a shared base).
    pub plan: Option<Plan>,
    /// Bytes to copy: `None` while measuring.
    pub bytes: Option<Result<u64, String>>,
    /// What the commit writes and frees, and the room there.
    pub space: Option<Space>,
    /// Where images built on the chain were looked for, and what was found.
    pub searched: Vec<Searched>,
    pub keep_top: bool,
    /// A guard that refuses the commit, with its exit code.
    pub refusal: Option<(String, u8)>,
    /// Other overlays of the base that a second confirmation overrides.
    pub shared_with: Vec<PathBuf>,
    /// The user pressed the shared-base key with `shared_with` shown: the commit may start.
    pub forced: bool,
}

impl PlanPopup {
    /// A dialog still planning `top` into `base` (as the forest on screen knows it).
    pub fn pending(job: u64, top: PathBuf, base: Option<PathBuf>, keep_top: bool) -> PlanPopup {
        PlanPopup {
            job,
            top,
            base,
            notice: None,
            pending: true,
            chain: Vec::new(),
            plan: None,
            bytes: None,
            space: None,
            searched: Vec::new(),
            keep_top,
            refusal: None,
            shared_with: Vec::new(),
            forced: false,
        }
    }

    /// Takes in what the planning worker found.
    pub fn fill(&mut self, proposal: Result<Proposal, Refusal>) {
        self.pending = false;
        match proposal {
            Ok(p) => {
                self.top = p.top;
                self.base = p.base;
                self.chain = p.chain;
                self.shared_with = p.shared_with;
                self.bytes = p.bytes;
                self.space = p.space;
                self.searched = p.searched;
                match p.plan {
                    Ok(plan) => self.plan = Some(plan),
                    Err(e) => self.refusal = Some((e.to_string(), e.exit_code())),
                }
            }
            Err(e) => self.refusal = Some((e.to_string(), e.exit_code())),
        }
    }

    /// Whether the plan commits into a base below the top's backing file (the top then keeps
    /// its data, as qemu-img's `-b` does).
    pub fn deeper(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|x| !x.intermediates.is_empty())
    }
}

/// The dialog of a snapshot, delete, flatten, rebase or merge: what the plan would do, or the
/// guard that refuses it.
#[derive(Debug)]
pub struct OpPopup {
    pub job: u64,
    pub ask: Ask,
    /// Still planning on a fresh scan.
    pub pending: bool,
    pub plan: Option<AnyPlan>,
    /// A guard that refuses it, with its exit code.
    pub refusal: Option<(String, u8)>,
    /// Deleting asks twice: the first confirmation was given.
    pub confirmed_once: bool,
    /// For a rebase: the images further down the chain `b` cycles through.
    pub chain: Vec<PathBuf>,
    /// What the run writes and frees (merge, delete).
    pub space: Option<Space>,
    /// Where images built on the chain were looked for, and what was found.
    pub searched: Vec<Searched>,
}

impl OpPopup {
    /// A dialog still planning `ask`.
    pub fn pending(job: u64, ask: Ask, chain: Vec<PathBuf>) -> OpPopup {
        OpPopup {
            job,
            ask,
            pending: true,
            plan: None,
            refusal: None,
            confirmed_once: false,
            chain,
            space: None,
            searched: Vec::new(),
        }
    }

    /// Takes in what the planning worker found.
    pub fn fill(&mut self, plan: Result<AnyPlan, Refusal>) {
        self.pending = false;
        match plan {
            Ok(p) => self.plan = Some(p),
            Err(e) => self.refusal = Some((e.to_string(), e.exit_code())),
        }
    }

    /// Whether the run needs a second, deliberate confirmation: it removes files.
    pub fn asks_twice(&self) -> bool {
        matches!(self.ask, Ask::Delete { .. } | Ask::Merge { .. })
    }

    /// The operation's name in titles and messages.
    pub fn name(&self) -> &'static str {
        match self.ask {
            Ask::Snapshot { .. } => "Snapshot",
            Ask::Delete { .. } => "Delete",
            Ask::Flatten { .. } => "Flatten",
            Ask::Rebase { .. } => "Rebase",
            Ask::Merge { .. } => "Merge",
            Ask::Repair { .. } => "Repair",
            Ask::LiveCommit { .. } => "Live commit",
            Ask::LiveMerge { .. } => "Live merge",
            Ask::LiveSnapshot { .. } => "Live snapshot",
        }
    }
}
