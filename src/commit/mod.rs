//! Commit: copy an overlay's data into its backing file (or a deeper base), upgrading the base
//! from read-only to read-write for the copy and back again — on every path, with the copy's
//! result and the reopen's result reported separately (ARCHITECTURE.md §3).
//!
//! [`plan`] checks the guards in order and says what will be copied; [`run`] performs it in
//! the calling thread (or a worker, [`run::spawn`]), reporting [`Progress`] and honouring a
//! cancel flag between chunks.

pub mod plan;
pub mod run;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit;
use crate::forest::KeepRoReason;
use crate::image::handle::{OpenError, ReopenError};
use crate::image::lock::LockError;

pub use plan::{Plan, Request, plan};
pub use run::{Outcome, run, spawn};

/// What the commit is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Opening the images and taking QEMU's locks.
    Open,
    /// Reopening the base read-write.
    ReopenRw,
    /// Growing the base to the top's size.
    Grow,
    /// Copying data.
    Copy,
    /// Flushing and fsyncing the base.
    Flush,
    /// Reopening the base read-only.
    ReopenRo,
    /// Emptying the top (its data is in the base now).
    EmptyTop,
    /// Finished, successfully or not.
    Done,
}

impl Phase {
    /// The name used in progress output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Open => "open",
            Phase::ReopenRw => "reopen-rw",
            Phase::Grow => "grow",
            Phase::Copy => "copy",
            Phase::Flush => "flush",
            Phase::ReopenRo => "reopen-ro",
            Phase::EmptyTop => "empty-top",
            Phase::Done => "done",
        }
    }
}

impl Phase {
    /// Whether a cancel can still stop the commit: only until the copy is done. After that
    /// the commit finishes (flush, reopen, emptying the top) whatever happens.
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            Phase::Open | Phase::ReopenRw | Phase::Grow | Phase::Copy
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A progress report from a running commit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes of guest data (data and zero ranges) handled so far.
    pub done: u64,
    /// Bytes to handle in all.
    pub total: u64,
    pub elapsed: Duration,
    /// Whether the base is open read-write right now (its live mode).
    pub base_rw: bool,
}

impl Progress {
    /// Bytes per second over the copy so far.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.done as f64 / s } else { 0.0 }
    }

    /// Time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0 && self.total >= self.done)
            .then(|| Duration::from_secs_f64((self.total - self.done) as f64 / rate))
    }

    /// Completion in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        }
    }
}

/// Why a commit was refused or could not start. Nothing has been written when one of these
/// is returned, except [`CommitError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{} has no backing file, so there is nothing to commit it into", top.display())]
    NoBacking { top: PathBuf },
    #[error("{} cannot be committed: {message}", top.display())]
    BrokenChain { top: PathBuf, message: String },
    #[error("{} is not in the backing chain of {}; name one of its backing images with -b", base.display(), top.display())]
    BaseNotInChain { top: PathBuf, base: PathBuf },
    #[error("{}", keep_ro_message(path, *reason, protected_by.as_ref()))]
    KeepReadOnly {
        path: PathBuf,
        reason: KeepRoReason,
        /// For `inherited`: a protected overlay that passes it down.
        protected_by: Option<PathBuf>,
    },
    /// Another process holds what the commit needs (QEMU's lock message and the holder).
    #[error(transparent)]
    InUse(LockError),
    #[error("{} has other overlays that would see their disk change: {}; commit with --force only if they are disposable", base.display(), list(others))]
    SharedBase { base: PathBuf, others: Vec<PathBuf> },
    /// `what` ends with what to do about it.
    #[error("{} {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{} changed since it was scanned ({what}); scan again and retry", path.display())]
    Changed { path: PathBuf, what: String },
    #[error("{0}")]
    Open(OpenError),
    #[error("nothing was written: {0}")]
    ReopenRw(Box<ReopenError>),
    /// A bug stopped the commit: it may have written part of the data.
    #[error("imgchain stopped on an internal error ({what}); {} may hold part of the data and be marked dirty: check it with qemu-img check {} (and repair with -r all if it says so) before using it, and please report this", base.display(), base.display())]
    Internal { base: PathBuf, what: String },
    #[error("cannot read the allocation map of {}: {source}", path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn keep_ro_message(path: &std::path::Path, reason: KeepRoReason, by: Option<&PathBuf>) -> String {
    let why = match (reason, by) {
        (KeepRoReason::Inherited, Some(o)) => format!(
            "its overlay {} is protected, and writing it would change that overlay's disk; unprotect {} (p in the UI, or drop its --protect/config glob) first",
            o.display(),
            o.display()
        ),
        (KeepRoReason::Requested, _) => {
            "it is protected (--read-only, --protect, or a config protect glob); drop that to commit into it".to_string()
        }
        (KeepRoReason::NotWritable, _) => {
            "it cannot be opened read-write (permissions, read-only filesystem or immutable flag); fix that first".to_string()
        }
        (KeepRoReason::Inherited, None) => reason.describe().to_string(),
    };
    format!(
        "{} must stay read-only (keep-RO, {reason}): {why}",
        path.display()
    )
}

impl From<LockError> for CommitError {
    fn from(e: LockError) -> Self {
        match e {
            e @ LockError::InUse { .. } => CommitError::InUse(e),
            other => CommitError::Open(OpenError::Lock(other)),
        }
    }
}

impl From<OpenError> for CommitError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Lock(l) => l.into(),
            other => CommitError::Open(other),
        }
    }
}

impl CommitError {
    /// The process exit code (ARCHITECTURE.md §5).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommitError::NoBacking { .. } => exit::NO_BACKING,
            CommitError::KeepReadOnly { .. } => exit::KEEP_READ_ONLY,
            CommitError::InUse(_) => exit::IN_USE,
            CommitError::SharedBase { .. } => exit::SHARED_BASE,
            CommitError::Unsupported { .. } => exit::UNSUPPORTED,
            CommitError::BaseNotInChain { .. } => exit::USAGE,
            CommitError::ReopenRw(r) if r.lock.is_some() => exit::IN_USE,
            CommitError::BrokenChain { .. }
            | CommitError::Changed { .. }
            | CommitError::Open(_)
            | CommitError::ReopenRw(_)
            | CommitError::Internal { .. }
            | CommitError::Map { .. } => exit::FAILURE,
        }
    }

    /// A stable name for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            CommitError::NoBacking { .. } => "no-backing",
            CommitError::BrokenChain { .. } => "broken-chain",
            CommitError::BaseNotInChain { .. } => "base-not-in-chain",
            CommitError::KeepReadOnly { .. } => "keep-read-only",
            CommitError::InUse(_) => "in-use",
            CommitError::SharedBase { .. } => "shared-base",
            CommitError::Unsupported { .. } => "unsupported",
            CommitError::Changed { .. } => "changed",
            CommitError::Open(_) => "open",
            CommitError::ReopenRw(_) => "reopen-rw",
            CommitError::Internal { .. } => "internal",
            CommitError::Map { .. } => "map",
        }
    }
}
