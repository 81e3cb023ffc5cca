//! The jobs state: the running operation (at most one), job numbers, and what a quit during a
//! job leaves to print. Pure data: the job itself runs on a worker.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ops::Ask;
use crate::ops::{OpKind, Progress};

/// The running operation.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub op: OpKind,
    /// What was asked, to plan it again when the run finds the chain changed.
    pub ask: Ask,
    /// The dialog's choices down the chain, for that plan.
    pub chain: Vec<PathBuf>,
    /// The image it is about.
    pub top: PathBuf,
    /// The image whose data it changes first.
    pub base: PathBuf,
    pub progress: Option<Progress>,
    pub cancel: Arc<AtomicBool>,
    /// What a live commit or merge leaves out of its VM's chain, to offer deleting.
    pub leftover: Option<PathBuf>,
    /// Its images were cloned first: the undo key puts them back.
    pub undoable: bool,
}

impl Job {
    /// Whether a cancel can still stop it (until its first progress report, yes).
    pub fn cancellable(&self) -> bool {
        self.progress.is_none_or(|p| p.phase.cancellable())
    }

    /// Asks the worker to stop between chunks.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether a cancel was asked for.
    pub fn cancelling(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Jobs of this session.
#[derive(Debug, Default)]
pub struct Jobs {
    pub running: Option<Job>,
    next_id: u64,
    /// Quit once the running job has finished cleaning up.
    pub quit_pending: bool,
    /// What to print after the terminal is restored, and the exit code, when the UI quit
    /// during a job: the job's own report, as the CLI gives it.
    pub exit_report: Option<(String, u8)>,
    /// Bases whose reopen to read-only failed in this session.
    pub reopen_failed: HashSet<PathBuf>,
}

impl Jobs {
    /// A fresh job (or plan) number.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Whether the image at `path` is open read-write by the running job right now.
    pub fn live_rw(&self, path: &Path) -> bool {
        self.running
            .as_ref()
            .is_some_and(|j| j.base == path && j.progress.as_ref().is_some_and(|p| p.writing))
    }
}
