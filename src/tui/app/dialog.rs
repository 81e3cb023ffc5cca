//! The dialogs over the forest: help, an operation's plan, messages and the questions.

use std::path::PathBuf;

use crate::ops::Refusal;
use crate::ops::dependents::Searched;
use crate::ops::space::Space;
use crate::ops::{AnyPlan, Ask};

/// A dialog over the forest.
#[derive(Debug)]
pub enum Popup {
    /// The help screen, scrolled down by this many lines.
    Help(u16),
    /// The message log, newest first, scrolled down by this many lines.
    Log(u16),
    /// The dialog of a chain operation: its plan, or the guard that refuses it.
    Op(Box<OpPopup>),
    /// A result or an error; `error` picks the colour.
    Message {
        title: String,
        body: String,
        error: bool,
    },
    /// Quit asked while the running operation can still be cancelled: cancel it and quit?
    ConfirmQuit,
    /// `p` on an image a rule protects (config, --protect, --read-only): lift that until quit?
    ConfirmUnprotect { path: PathBuf, rule: String },
}

/// The dialog of an operation: what the plan would do, or the guard that refuses it.
#[derive(Debug)]
pub struct OpPopup {
    pub job: u64,
    pub ask: Ask,
    /// Still planning on a fresh scan.
    pub pending: bool,
    pub plan: Option<AnyPlan>,
    /// A guard that refuses it.
    pub refusal: Option<Refusal>,
    /// Deleting asks twice: the first confirmation was given.
    pub confirmed_once: bool,
    /// The images further down the chain that the next and previous keys cycle through (a
    /// commit's bases, a rebase's new backing files).
    pub chain: Vec<PathBuf>,
    /// What the run writes and frees.
    pub space: Option<Space>,
    /// Whether the run can be undone (`None`: the operation has no undo).
    pub undo: Option<crate::ops::undo::Undo>,
    /// Where images built on the chain were looked for, and what was found.
    pub searched: Vec<Searched>,
    /// Why this plan was made again, shown above it (the run found the chain changed).
    pub notice: Option<String>,
    /// The image picker open over the dialog (a rebase's new backing file).
    pub picker: Option<super::picker::Picker>,
    /// A snapshot's new name as typed, while the name is being edited.
    pub editing: Option<String>,
    /// The file name typed to confirm a delete of images that hold data (`typed_name`).
    pub typed: Option<String>,
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
            undo: None,
            searched: Vec::new(),
            notice: None,
            picker: None,
            editing: None,
            typed: None,
        }
    }

    /// The snapshot request of a snapshot's dialog, offline or live.
    pub fn snapshot_ask(&mut self) -> Option<&mut crate::ops::snapshot::Ask> {
        match &mut self.ask {
            Ask::Snapshot(a) | Ask::LiveSnapshot(a) => Some(a),
            _ => None,
        }
    }

    /// The file name of the overlay a snapshot's plan creates.
    pub fn snapshot_name(&self) -> Option<String> {
        let new = match self.plan.as_ref()? {
            AnyPlan::Snapshot(p) => &p.new,
            AnyPlan::LiveSnapshot(l) => &l.target,
            _ => return None,
        };
        Some(new.file_name()?.to_string_lossy().into_owned())
    }

    /// Takes in what the planning worker found.
    pub fn fill(&mut self, plan: Result<AnyPlan, Refusal>) {
        self.pending = false;
        match plan {
            Ok(p) => self.plan = Some(p),
            Err(e) => self.refusal = Some(e),
        }
    }

    /// Whether the run needs a second, deliberate confirmation: it removes files.
    pub fn asks_twice(&self) -> bool {
        matches!(self.ask, Ask::Delete(_) | Ask::Merge(_))
    }

    /// The name a delete's second confirmation asks typed: its image's file name, when
    /// the images it removes take `NAME_TYPED_FROM` bytes or more (as the forest last saw
    /// them). A merge, or a delete of empty overlays, asks for its key again instead.
    pub fn typed_name(&self, forest: &crate::forest::Forest) -> Option<String> {
        let Some(AnyPlan::Delete(plan)) = &self.plan else {
            return None;
        };
        let held: u64 = plan
            .images
            .iter()
            .filter_map(|i| forest.find(&i.path))
            .filter_map(|id| forest.node(id).allocated)
            .sum();
        let image = plan.images.last()?;
        (held >= crate::ops::delete::NAME_TYPED_FROM)
            .then(|| crate::forest::model::file_name(&image.path))
    }

    /// The forest action that opened this dialog: a second confirmation is that key again.
    pub fn op_action(&self) -> crate::actions::Action {
        use crate::actions::Action;
        match self.ask {
            Ask::Merge(_) => Action::Merge,
            _ => Action::Delete,
        }
    }

    /// Other images built on a commit's base, whose disks it changes: only the shared-base
    /// key confirms it.
    pub fn shared_with(&self) -> &[PathBuf] {
        match &self.plan {
            Some(AnyPlan::Commit(c)) => &c.forced_over,
            _ => &[],
        }
    }

    /// Whether a commit goes into a base below the top's backing file (the top then keeps
    /// its data, as qemu-img's `-b` does).
    pub fn deeper(&self) -> bool {
        matches!(&self.plan, Some(AnyPlan::Commit(c)) if !c.intermediates.is_empty())
    }

    /// The operation's name in titles and messages.
    pub fn name(&self) -> &'static str {
        self.ask.title()
    }
}
