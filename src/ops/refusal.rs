//! Why an operation does not run: the guards' refusals and the errors before its first write,
//! each with its exit code (ARCHITECTURE.md §5).

use std::path::{Path, PathBuf};

use super::OpKind;
use crate::exit;
use crate::forest::KeepRoReason;
use crate::image::handle::{OpenError, ReopenError};
use crate::image::lock::LockError;
use crate::text::Names;

/// Why an operation was refused or could not start. Nothing has been written when one of
/// these is returned, except [`Refusal::Internal`]. Each has its exit code (ARCHITECTURE.md §5)
/// and a message that names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{} has no backing file, so there is nothing to {}", top.shown(), op.nothing_to())]
    NoBacking { top: PathBuf, op: OpKind },
    #[error("{} cannot {}: {message}", top.shown(), op.refused_as())]
    BrokenChain {
        top: PathBuf,
        op: OpKind,
        message: String,
    },
    #[error("{} is not in the backing chain of {}; name one of its backing images with -b", base.shown(), top.shown())]
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
    #[error(
        "{}; go on with --force only if they are disposable",
        shared_fact(base, others)
    )]
    SharedBase { base: PathBuf, others: Vec<PathBuf> },
    /// Images are built on the one to remove or change, and the request does not cover them.
    #[error("{}; {what}", overlays_fact(path, overlays))]
    HasOverlays {
        path: PathBuf,
        overlays: Vec<PathBuf>,
        /// What to do about it.
        what: String,
    },
    /// A qcow2 v2 image the run must write where it may grow or need a new refcount block,
    /// which v2 (no dirty bit) cannot survive a crash in: `--amend` (the dialogs' amend key)
    /// upgrades it to compat=1.1 first.
    #[error(
        "{} {what}; add --amend to have it upgraded to compat=1.1 first, or convert it yourself: \
         qemu-img amend -f qcow2 -o compat=1.1 {}",
        path.shown(),
        path.quoted()
    )]
    NeedsAmend { path: PathBuf, what: String },
    /// The file named as the new backing file (or target) cannot serve: `what` says why.
    #[error("{} {what}", path.shown())]
    BadTarget { path: PathBuf, what: String },
    /// The image is held by a process imgchain cannot ask to do the job: `what` says who and
    /// what to run instead.
    #[error("{} {what}", path.shown())]
    HeldElsewhere { path: PathBuf, what: String },
    /// The image to remove is a disk of a defined libvirt VM, which could no longer start.
    #[error(
        "{}, or add --force if the VM is disposable",
        vm_disk_fact(path, domain, target, definition)
    )]
    VmDisk {
        path: PathBuf,
        domain: String,
        target: String,
        definition: PathBuf,
    },
    /// A live operation could not start through the holder's QMP socket or libvirt.
    #[error("{}: the live operation could not start: {what}; nothing was changed", path.shown())]
    Live { path: PathBuf, what: String },
    /// The file to create exists already.
    #[error("{} exists already; name another file, or remove it first", path.shown())]
    Exists { path: PathBuf },
    /// `what` ends with what to do about it.
    #[error("{} {what}", path.shown())]
    Unsupported { path: PathBuf, what: String },
    #[error("{} may need up to {} on its filesystem, which has only {} free; free some space first, or add --force to try anyway (a run that fills the disk stops with every image consistent)", path.shown(), crate::units::human_size(*need), crate::units::human_size(*free))]
    NoSpace { path: PathBuf, need: u64, free: u64 },
    #[error("{} changed since it was scanned ({what}); scan again and retry", path.shown())]
    Changed { path: PathBuf, what: String },
    /// The images around the request could not be scanned; `what` names the path it could
    /// not read.
    #[error("{what}")]
    Scan { path: PathBuf, what: String },
    #[error("{0}")]
    Open(OpenError),
    #[error("nothing was written: {0}")]
    ReopenRw(Box<ReopenError>),
    /// A bug stopped the operation: it may have written part of the data.
    #[error("imgchain stopped on an internal error ({what}); {} may hold part of the data and be marked dirty: check it with qemu-img check {} (and repair with -r all if it says so) before using it, and please report this", path.shown(), path.quoted())]
    Internal { path: PathBuf, what: String },
    /// A layer libvirt's snapshot metadata records, and libvirt cannot do the change (exit 13).
    #[error("{} {what}", path.shown())]
    Libvirt { path: PathBuf, what: String },
    /// Marking what an operation writes in an image's persistent bitmaps failed: its data was
    /// not written (the bitmaps may mark more than changed, never less).
    #[error("{}: its persistent bitmaps could not be marked before the write, so nothing else was written ({what}); the bitmaps may mark more than changed; check the image with qemu-img check {}", path.shown(), path.quoted())]
    Bitmaps { path: PathBuf, what: String },
    /// The trust boundary (ARCHITECTURE.md §8): a file the images' owners could not touch.
    #[error("{} {what}", path.shown())]
    Untrusted { path: PathBuf, what: String },
    #[error("cannot read the allocation map of {}: {source}", path.shown())]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `BASE has other overlays that would see their disk change: A, B`.
fn shared_fact(base: &Path, others: &[PathBuf]) -> String {
    format!(
        "{} has other overlays that would see their disk change: {}",
        base.shown(),
        list(others)
    )
}

/// `IMAGE has overlays built on it: A, B`.
fn overlays_fact(path: &Path, overlays: &[PathBuf]) -> String {
    format!(
        "{} has overlays built on it: {}",
        path.shown(),
        list(overlays)
    )
}

/// Which VM's disk the image is, and how to detach it.
fn vm_disk_fact(path: &Path, domain: &str, target: &str, definition: &Path) -> String {
    format!(
        "{} is disk {} of the libvirt VM {} (defined in {}); removing it leaves that VM unable \
         to start: detach it first (virsh detach-disk --domain {} {} --config)",
        path.shown(),
        target.shown(),
        domain.shown(),
        definition.shown(),
        domain.quoted(),
        target.quoted()
    )
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.shown().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn keep_ro_message(path: &std::path::Path, reason: KeepRoReason, by: Option<&PathBuf>) -> String {
    let why = match (reason, by) {
        (KeepRoReason::Inherited, Some(o)) => format!(
            "its overlay {} is protected, and writing it would change that overlay's disk; unprotect {} first (p in the UI, drop its --protect/config glob, or chmod u+w it if its file mode says read-only)",
            o.shown(),
            o.shown()
        ),
        (KeepRoReason::FileMode, _) => format!(
            "its file mode says read-only (no write permission for anyone), which imgchain keeps even as root; if it may change, chmod u+w {} first",
            path.quoted()
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
        path.shown()
    )
}

impl From<LockError> for Refusal {
    fn from(e: LockError) -> Self {
        match e {
            e @ LockError::InUse { .. } => Refusal::InUse(e),
            other => Refusal::Open(OpenError::Lock(other)),
        }
    }
}

impl From<OpenError> for Refusal {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Lock(l) => l.into(),
            other => Refusal::Open(other),
        }
    }
}

impl Refusal {
    /// The process exit code (ARCHITECTURE.md §5).
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::NoBacking { .. } => exit::NO_BACKING,
            Refusal::KeepReadOnly { .. } => exit::KEEP_READ_ONLY,
            Refusal::InUse(_) | Refusal::HeldElsewhere { .. } => exit::IN_USE,
            Refusal::SharedBase { .. }
            | Refusal::HasOverlays { .. }
            | Refusal::VmDisk { .. }
            | Refusal::Libvirt { .. } => exit::SHARED_BASE,
            Refusal::Exists { .. } | Refusal::BadTarget { .. } => exit::USAGE,
            Refusal::NoSpace { .. } => exit::NO_SPACE,
            Refusal::Untrusted { .. } => exit::UNTRUSTED,
            Refusal::Unsupported { .. } | Refusal::NeedsAmend { .. } => exit::UNSUPPORTED,
            Refusal::BaseNotInChain { .. } => exit::USAGE,
            Refusal::ReopenRw(r) if r.lock.is_some() => exit::IN_USE,
            Refusal::BrokenChain { .. }
            | Refusal::Changed { .. }
            | Refusal::Live { .. }
            | Refusal::Scan { .. }
            | Refusal::Open(_)
            | Refusal::ReopenRw(_)
            | Refusal::Internal { .. }
            | Refusal::Bitmaps { .. }
            | Refusal::Map { .. } => exit::FAILURE,
        }
    }

    /// An operation's `--json` when it was refused or could not start.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "kind": self.kind(),
                "message": self.to_string(),
                "exit_code": self.exit_code(),
            }
        })
    }

    /// What is wrong, without the command-line advice: for a dialog that offers its own key
    /// to go on (other overlays, a VM's disk, an image with overlays).
    pub fn fact(&self) -> String {
        match self {
            Refusal::SharedBase { base, others } => shared_fact(base, others),
            Refusal::HasOverlays { path, overlays, .. } => format!(
                "{}; deleting it alone would leave them without their backing file",
                overlays_fact(path, overlays)
            ),
            Refusal::VmDisk {
                path,
                domain,
                target,
                definition,
            } => vm_disk_fact(path, domain, target, definition),
            Refusal::NeedsAmend { path, what } => format!("{} {what}", path.shown()),
            e => e.to_string(),
        }
    }

    /// A stable name for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoBacking { .. } => "no-backing",
            Refusal::BrokenChain { .. } => "broken-chain",
            Refusal::BaseNotInChain { .. } => "base-not-in-chain",
            Refusal::KeepReadOnly { .. } => "keep-read-only",
            Refusal::InUse(_) | Refusal::HeldElsewhere { .. } => "in-use",
            Refusal::SharedBase { .. } => "shared-base",
            Refusal::HasOverlays { .. } => "has-overlays",
            Refusal::VmDisk { .. } => "vm-disk",
            Refusal::Exists { .. } => "exists",
            Refusal::Live { .. } => "live",
            Refusal::BadTarget { .. } => "bad-target",
            Refusal::Unsupported { .. } => "unsupported",
            Refusal::NeedsAmend { .. } => "needs-amend",
            Refusal::Changed { .. } => "changed",
            Refusal::NoSpace { .. } => "no-space",
            Refusal::Untrusted { .. } => "untrusted",
            Refusal::Scan { .. } => "scan",
            Refusal::Open(_) => "open",
            Refusal::ReopenRw(_) => "reopen-rw",
            Refusal::Internal { .. } => "internal",
            Refusal::Bitmaps { .. } => "bitmaps",
            Refusal::Libvirt { .. } => "libvirt-snapshot",
            Refusal::Map { .. } => "map",
        }
    }
}
