//! What a running operation reports (its phase and how far it is), and what it runs with:
//! its copy step, its cancel flag and where its progress goes.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::kind::OpKind;
use super::settings::Settings;

/// What an operation is doing now. Each operation goes through the phases it needs, in this
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Opening the images and taking QEMU's locks.
    Open,
    /// Creating a new image.
    Create,
    /// Removing images.
    Delete,
    /// Upgrading a qcow2 v2 image to compat=1.1.
    Amend,
    /// Marking what it will write in the image's persistent bitmaps.
    Bitmaps,
    /// Reopening the image to write read-write.
    ReopenRw,
    /// Growing it to a larger virtual size.
    Grow,
    /// Copying data.
    Copy,
    /// Flushing and fsyncing what was written.
    Flush,
    /// Reopening it read-only.
    ReopenRo,
    /// Emptying the top (its data is in the base now).
    EmptyTop,
    /// Pointing the image's header at its new backing file.
    Relink,
    /// Finished, successfully or not.
    Done,
}

impl Phase {
    /// The name used in progress output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Open => "open",
            Phase::Create => "create",
            Phase::Delete => "delete",
            Phase::Amend => "amend",
            Phase::Bitmaps => "bitmaps",
            Phase::ReopenRw => "reopen-rw",
            Phase::Grow => "grow",
            Phase::Copy => "copy",
            Phase::Flush => "flush",
            Phase::ReopenRo => "reopen-ro",
            Phase::EmptyTop => "empty-top",
            Phase::Relink => "relink",
            Phase::Done => "done",
        }
    }

    /// Whether a cancel can still stop the operation: only until the copy is done. After that
    /// it finishes (flush, reopen, emptying the top) whatever happens.
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            Phase::Open
                | Phase::Create
                | Phase::Amend
                | Phase::Bitmaps
                | Phase::ReopenRw
                | Phase::Grow
                | Phase::Copy
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A progress report from a running operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub op: OpKind,
    pub phase: Phase,
    /// Bytes of guest data (data and zero ranges) handled so far.
    pub done: u64,
    /// Bytes to handle in all.
    pub total: u64,
    /// Time since the copy started (before it: since the run started).
    pub elapsed: Duration,
    /// Whether the image it writes is open read-write right now (its live mode).
    pub writing: bool,
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

/// How a run is carried out: the session's settings, its cancel flag, where progress goes.
pub struct Run<'a> {
    pub settings: &'a Settings,
    /// Checked between steps.
    pub cancel: &'a AtomicBool,
    /// Called at phase changes and at least every 100 ms while copying.
    pub progress: &'a mut dyn FnMut(Progress),
}
