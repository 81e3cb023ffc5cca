//! `--amend`: a qcow2 v2 (compat=0.10) image an operation must write where it may need a new
//! refcount block, or grow, is upgraded to compat=1.1 first (ARCHITECTURE.md §3): v2 has no
//! dirty bit to keep such a write safe from a crash. `qemu-img amend` runs on imgchain's fd,
//! under imgchain's locks, before anything else is written; the handle is then reopened so
//! that imgchain sees the new header.

use std::path::Path;

use super::Refusal;
use super::qemu_tools;
use crate::image::file::OpenMode;
use crate::image::handle::Handle;

/// Upgrades the image open read-only as `image` (at `path`) to compat=1.1. Nothing else has
/// been written when it fails.
pub fn to_v3(path: &Path, image: &mut Handle) -> Result<(), Refusal> {
    let failed = |what: String| Refusal::Changed {
        path: path.to_path_buf(),
        what: format!("it could not be upgraded to compat=1.1: {what}"),
    };
    qemu_tools::found(&["qemu-img"])
        .map_err(|t| failed(format!("{t} is not installed (qemu-utils)")))?;
    let fds = qemu_tools::Fds::from(image.fd());
    qemu_tools::tool(
        std::process::Command::new("qemu-img").args(["amend", "-o", "compat=1.1", &fds.spec()]),
        &fds.raw(),
        "",
    )
    .map_err(failed)?;
    image
        .reopen(OpenMode::ReadOnly)
        .map_err(|e| failed(e.to_string()))
}
