//! Diagnostics: the problems a scan finds, each with a message that says what to do.
//!
//! Kinds are those of ARCHITECTURE.md §6 plus `bad-header` (a header QEMU would refuse) and
//! `not-an-image` (a file named like an image format that has no such header).

use crate::text::Names;
use std::fmt;
use std::path::Path;

/// What kind of problem a node has. The JSON spelling is [`ProblemKind::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    MissingBacking,
    BackingLoop,
    NoBackingFormat,
    BackingFormatMismatch,
    ProtocolBacking,
    Dirty,
    Corrupt,
    UnsupportedFeature,
    UnsafeBackingPath,
    Unreadable,
    SizeMismatch,
    BadHeader,
    NotAnImage,
    InterruptedMerge,
    MixedSnapshots,
    BackingWritten,
    Leftover,
}

impl ProblemKind {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::MissingBacking => "missing-backing",
            ProblemKind::BackingLoop => "backing-loop",
            ProblemKind::NoBackingFormat => "no-backing-format",
            ProblemKind::BackingFormatMismatch => "backing-format-mismatch",
            ProblemKind::ProtocolBacking => "protocol-backing",
            ProblemKind::Dirty => "dirty",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::UnsupportedFeature => "unsupported-feature",
            ProblemKind::UnsafeBackingPath => "unsafe-backing-path",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::SizeMismatch => "size-mismatch",
            ProblemKind::BadHeader => "bad-header",
            ProblemKind::NotAnImage => "not-an-image",
            ProblemKind::InterruptedMerge => "interrupted-merge",
            ProblemKind::MixedSnapshots => "mixed-snapshots",
            ProblemKind::BackingWritten => "backing-written",
            ProblemKind::Leftover => "leftover",
        }
    }

    /// How bad it is. `check` fails on warnings and errors, not on notes.
    pub fn severity(self) -> Severity {
        match self {
            ProblemKind::MissingBacking
            | ProblemKind::BackingLoop
            | ProblemKind::BackingFormatMismatch
            | ProblemKind::Corrupt
            | ProblemKind::UnsafeBackingPath
            | ProblemKind::Unreadable
            | ProblemKind::BadHeader => Severity::Error,
            ProblemKind::NoBackingFormat
            | ProblemKind::Dirty
            | ProblemKind::UnsupportedFeature
            | ProblemKind::NotAnImage
            | ProblemKind::InterruptedMerge
            | ProblemKind::MixedSnapshots
            | ProblemKind::BackingWritten => Severity::Warning,
            ProblemKind::ProtocolBacking | ProblemKind::SizeMismatch | ProblemKind::Leftover => {
                Severity::Note
            }
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, message: String) -> Problem {
        Problem { kind, message }
    }

    /// A file named as imgchain names what it is working on (`scan::temporary_name`): still
    /// an image of the forest, so that nothing built on anything is ever missed.
    pub(crate) fn leftover() -> Problem {
        Problem::new(
            ProblemKind::Leftover,
            "a file imgchain names while it works on it: a run still going, or one that was \
             stopped; imgchain clean lists it once no imgchain runs, and moves it into the trash"
                .into(),
        )
    }

    /// An image whose backing file another process writes: its guest's disk changes under
    /// it (what a live commit or merge leaves of the layer it moved the VM off).
    pub(crate) fn backing_written(backing: &Path, holder: &str) -> Problem {
        Problem::new(
            ProblemKind::BackingWritten,
            format!(
                "its backing file {} is written by {holder}, so what this image's guest reads \
                 changes under it: a live commit or merge leaves the layer it moved the VM off \
                 this way; if nothing uses this image any more, delete it",
                backing.shown()
            ),
        )
    }

    /// How bad this problem is.
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }

    /// The backing file does not exist.
    pub fn missing_backing(overlay: &Path, raw: &str, resolved: &Path, fmt: &str) -> Problem {
        Problem::new(
            ProblemKind::MissingBacking,
            format!(
                "backing file {} (named \"{}\" in the header) does not exist; QEMU cannot open this image. \
                 If the base moved, point the overlay at it: qemu-img rebase -u -F {} -b NEWPATH {}",
                resolved.shown(),
                raw.shown(),
                fmt.quoted(),
                overlay.quoted()
            ),
        )
    }

    /// The backing chain comes back to this image; `cycle` lists its members from here.
    pub fn backing_loop(overlay: &Path, cycle: &[&Path]) -> Problem {
        let chain: Vec<String> = cycle.iter().map(|p| p.shown().to_string()).collect();
        Problem::new(
            ProblemKind::BackingLoop,
            format!(
                "backing chain loops back on itself ({} -> {}); QEMU cannot open it. \
                 Point this image at its real base: qemu-img rebase -u -F FORMAT -b REALBASE {}",
                chain.join(" -> "),
                chain.first().map(String::as_str).unwrap_or(""),
                overlay.quoted()
            ),
        )
    }

    /// The header names a backing file but not its format.
    pub fn no_backing_format(overlay: &Path, raw: &str, probed: Option<&str>) -> Problem {
        let fmt = probed.unwrap_or("FORMAT");
        Problem::new(
            ProblemKind::NoBackingFormat,
            format!(
                "the header names backing file \"{}\" but not its format; QEMU 6.1+ refuses to guess it \
                 for new images, and guessing raw is unsafe. Record it: qemu-img rebase -u -F {fmt} -b {} {}",
                raw.shown(),
                raw.quoted(),
                overlay.quoted()
            ),
        )
    }

    /// The declared backing format is not the backing file's format.
    pub fn backing_format_mismatch(
        overlay: &Path,
        raw: &str,
        declared: &str,
        actual: &str,
    ) -> Problem {
        Problem::new(
            ProblemKind::BackingFormatMismatch,
            format!(
                "the header says backing file \"{}\" is {}, but it is {actual}; QEMU would read it as \
                 that and the guest would see the wrong disk. If the file is the right one: \
                 qemu-img rebase -u -F {actual} -b {} {}",
                raw.shown(),
                declared.shown(),
                raw.quoted(),
                overlay.quoted()
            ),
        )
    }

    /// The backing name is a protocol or `json:` name, shown but not followed.
    pub fn protocol_backing(raw: &str) -> Problem {
        Problem::new(
            ProblemKind::ProtocolBacking,
            format!(
                "backing file \"{}\" is a protocol or json: name; imgchain shows it but does not follow it",
                raw.shown()
            ),
        )
    }

    /// A merge of this image was cut short (its journal is still there).
    pub fn interrupted_merge(path: &Path) -> Problem {
        Problem::new(
            ProblemKind::InterruptedMerge,
            format!(
                "a merge of this image into its backing file was cut short; every overlay still \
                 reads what it read before. Finish it: imgchain merge {}",
                path.quoted()
            ),
        )
    }

    /// The qcow2 dirty bit is set.
    pub fn dirty(path: &Path) -> Problem {
        Problem::new(
            ProblemKind::Dirty,
            format!(
                "the dirty bit is set: the image was not closed cleanly and its refcounts may be stale. \
                 Repair it (with no VM using it): qemu-img check -r all {}",
                path.quoted()
            ),
        )
    }

    /// The qcow2 corrupt bit is set.
    pub fn corrupt(path: &Path) -> Problem {
        Problem::new(
            ProblemKind::Corrupt,
            format!(
                "QEMU marked this image corrupt; it must not be written. Inspect it with qemu-img check {}, \
                 then repair with qemu-img check -r all or restore it from a backup",
                path.quoted()
            ),
        )
    }

    /// A feature imgchain can show but not commit.
    pub fn unsupported_feature(feature: &str) -> Problem {
        Problem::new(
            ProblemKind::UnsupportedFeature,
            format!(
                "uses {feature}, which imgchain can show but not commit into or from; use qemu-img commit for this image"
            ),
        )
    }

    /// The backing file is a device, FIFO, socket or directory.
    pub fn unsafe_backing_path(resolved: &Path, what: &str) -> Problem {
        Problem::new(
            ProblemKind::UnsafeBackingPath,
            format!(
                "backing file {} is {what}, not a regular file; imgchain never opens it. \
                 Point the overlay at an image file with qemu-img rebase -u",
                resolved.shown()
            ),
        )
    }

    /// The file could not be read.
    pub fn unreadable(path: &Path, err: &std::io::Error) -> Problem {
        Problem::new(
            ProblemKind::Unreadable,
            format!(
                "cannot read {}: {err}; check its permissions and the filesystem",
                path.shown()
            ),
        )
    }

    /// The overlay is larger than its backing file (a commit grows the backing file).
    pub fn size_mismatch(overlay_size: u64, backing: &Path, backing_size: u64) -> Problem {
        Problem::new(
            ProblemKind::SizeMismatch,
            format!(
                "this overlay ({overlay_size} bytes) is larger than its backing file {} ({backing_size} bytes); \
                 a commit will grow the backing file to {overlay_size} bytes",
                backing.shown()
            ),
        )
    }

    /// The header is one QEMU would refuse.
    pub fn bad_header(path: &Path, format: &str, reason: &str) -> Problem {
        Problem::new(
            ProblemKind::BadHeader,
            format!(
                "damaged {format} header: {reason}. QEMU will refuse it too; inspect it with qemu-img check {} \
                 and restore it from a backup if that fails",
                path.quoted()
            ),
        )
    }

    /// The file is named like an image format but has no such header.
    pub fn not_an_image(ext: &str) -> Problem {
        Problem::new(
            ProblemKind::NotAnImage,
            format!(
                "named like a .{ext} image but has no {ext} header; QEMU would open it as a raw disk. \
                 Rename it if it is not a disk image"
            ),
        )
    }
}
