//! What a rebase did, told for people and as JSON.

use std::time::Duration;

use crate::image::handle::ReopenError;
use crate::ops::Report;
use crate::ops::datapath::CopyError;
use crate::ops::datapath::Tally;
use crate::text::Names;

use super::plan::Plan;

/// What a run that started did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Bytes the image did not allocate itself, read through both chains.
    pub compared: u64,
    /// Bytes written into the image because the chains read them differently.
    pub copied: u64,
    /// How those bytes moved (cloned from the old backing file, copied in the kernel, or
    /// written from memory).
    pub tally: Tally,
    /// The comparison and copy, and their flush (`Ok` for `-u`).
    pub copy: Result<(), CopyError>,
    pub left_dirty: bool,
    /// Back to read-only after the copy (`None`: not attempted, or `-u`).
    pub reopen_ro: Option<Result<(), ReopenError>>,
    /// Pointing the header at the new backing file (`None`: not attempted).
    pub relinked: Option<Result<(), String>>,
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the copy was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(self.copy, Err(CopyError::Cancelled))
    }
}

impl Report for Outcome {
    /// `rebase --json` and `flatten --json`.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "operation": self.plan.kind.as_str(),
            "image": crate::text::lossy(&self.plan.image.path),
            "old_backing": self.plan.old.first().map(|b| crate::text::lossy(&b.path)),
            "backing": self.plan.name.as_ref().map(|(n, f)| serde_json::json!({"name": n, "format": f.as_str()})),
            "safe": self.plan.safe,
            "amended": self.plan.amend,
            "tier": if self.plan.by_qemu.is_empty() { "imgchain" } else { "qemu" },
            "compared_bytes": self.compared,
            "copied_bytes": self.copied,
            "data_path": self.tally.json(),
            "copy": {
                "ok": self.copy.is_ok(),
                "cancelled": self.cancelled(),
                "error": self.copy.as_ref().err().map(|e| e.to_string()),
            },
            "left_dirty": self.left_dirty,
            "relinked": matches!(self.relinked, Some(Ok(()))),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        if self.cancelled() {
            crate::exit::CANCELLED
        } else if self.copy.is_err() || self.left_dirty {
            crate::exit::IO_ERROR
        } else if matches!(self.reopen_ro, Some(Err(_))) {
            crate::exit::REOPEN_FAILED
        } else if matches!(self.relinked, Some(Err(_)) | None) {
            crate::exit::IO_ERROR
        } else {
            crate::exit::OK
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let image = p.image.path.shown();
        let old = p.old.first().map(|o| o.path.shown().to_string());
        let target = match &p.name {
            Some((n, f)) => format!("backing file \"{n}\" ({f})"),
            None => "no backing file".into(),
        };
        let how = if self.copied > 0 {
            format!(" ({})", self.tally.describe())
        } else {
            String::new()
        };
        let copied = if p.by_qemu.is_empty() {
            format!(
                "compared {} it reads through its backing chain and copied {} that differ{how}",
                crate::units::human_size(self.compared),
                crate::units::human_size(self.copied)
            )
        } else {
            format!(
                "had QEMU copy the {} its backing chain held into it ({} need QEMU's own code)",
                crate::units::human_size(self.copied),
                p.by_qemu.join(", ")
            )
        };
        if self.cancelled() {
            return format!(
                "Cancelled: {image} {copied} so far; it still has its old backing file and its \
                 guest sees what it saw before. Run it again to finish."
            );
        }
        if let Err(e) = &self.copy {
            return if self.left_dirty {
                format!(
                    "Failed: {e}. {image} is marked dirty: repair it with qemu-img check -r all \
                     {image} before anything uses it; it still names its old backing file."
                )
            } else {
                format!(
                    "Failed: {e}. {image} still names its old backing file and its guest sees \
                     what it saw before (some clusters were copied into it); run it again."
                )
            };
        }
        if let Some(Err(e)) = &self.reopen_ro {
            return format!(
                "{image} {copied}, but it could not be reopened read-only ({e}); its header was \
                 not changed. Run it again."
            );
        }
        match &self.relinked {
            Some(Ok(())) => {
                let mut s = if p.safe {
                    format!(
                        "{image} now has {target}; it {copied}, so its guest sees what it saw before."
                    )
                } else {
                    format!(
                        "{image} now has {target} (names only: no data was compared or copied)."
                    )
                };
                if let Some(o) = old {
                    s.push_str(&format!(" {o} has one overlay fewer."));
                }
                s
            }
            Some(Err(e)) => format!(
                "{image} {copied}, but {e}: it still names its old backing file, and its guest \
                 sees what it saw before. Run it again."
            ),
            None => format!("{image} was left as it was."),
        }
    }
}
