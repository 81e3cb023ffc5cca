//! The commit QEMU's own tool runs (ARCHITECTURE.md §3, "Features only QEMU handles"): when a
//! layer of the chain uses extended L2 entries, zstd compression or an external data file,
//! which imago cannot read or write, `qemu-img commit -d` moves the data under imgchain's plan
//! and guards. Every image and data file is opened and checked by imgchain and handed over as
//! an fd (the whole chain spelled out in a `json:` name, nothing opened by a name from a
//! header); imgchain holds QEMU's locks. The base is synced before the top is emptied.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Command;
use std::time::Instant;

use super::Plan;
use super::run::Outcome;
use crate::image::file::{self, OpenMode, Owner};
use crate::image::lock::{Access, ImageLock};
use crate::image::probe::Format;
use crate::ops::datapath::{CopyError, Tally};
use crate::ops::plan_image::PlanImage;
use crate::ops::{OpKind, Phase, Progress, Refusal, Run, qemu_tools};
use crate::text::Names;

/// One image of the chain as QEMU gets it: its fd, its data file's, and our lock.
struct Given {
    fd: OwnedFd,
    data: Option<OwnedFd>,
    format: Format,
    _lock: ImageLock,
}

fn changed(img: &PlanImage, what: String) -> Refusal {
    Refusal::Changed {
        path: img.path.clone(),
        what,
    }
}

/// Opens `img` as the plan saw it (and its external data file, named by its header from the
/// image's directory, only if it is a regular file the image's owner owns), locked for `mode`.
fn give(img: &PlanImage, mode: OpenMode) -> Result<Given, Refusal> {
    let fd = file::open_as(&img.path, mode, img.ident)
        .map_err(|e| changed(img, format!("it cannot be opened again: {e}")))?;
    let access = match mode {
        OpenMode::ReadOnly => Access::READ_ONLY,
        OpenMode::ReadWrite => Access::READ_WRITE,
    };
    let lock = ImageLock::acquire(fd.as_fd(), &img.path, access)?;
    let f = File::from(fd.try_clone().map_err(|e| changed(img, e.to_string()))?);
    let len = f.metadata().map_err(|e| changed(img, e.to_string()))?.len();
    let probed = file::read_header(&f, len)
        .map_err(|e| changed(img, e.to_string()))?
        .map_err(|e| changed(img, format!("its header no longer reads: {e}")))?;
    let data = match probed.qcow2.as_ref().and_then(|h| h.data_file.clone()) {
        Some(name) => Some(data_file(img, &name, mode)?),
        None => None,
    };
    Ok(Given {
        fd,
        data,
        format: img.format,
        _lock: lock,
    })
}

/// The external data file `name` of `img`, resolved from the image's directory, opened as a
/// regular file and owned by the image's owner (or root).
fn data_file(img: &PlanImage, name: &[u8], mode: OpenMode) -> Result<OwnedFd, Refusal> {
    use std::os::unix::ffi::OsStrExt;
    let rel = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
    let path = img
        .path
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join(rel);
    let refuse = |what: String| Refusal::Untrusted {
        path: img.path.clone(),
        what: format!(
            "names the external data file {}, which {what}",
            path.shown()
        ),
    };
    let fd = file::open(&path, mode).map_err(|e| refuse(format!("cannot be opened: {e}")))?;
    let owner = Owner::of_fd(&fd).map_err(|e| refuse(e.to_string()))?;
    let image_owner = Owner::of_path(&img.path, img.ident).map_err(|e| refuse(e.to_string()))?;
    if owner.uid != 0 && owner.uid != image_owner.uid {
        return Err(refuse(format!(
            "belongs to another user (uid {}) than the image (uid {})",
            owner.uid, image_owner.uid
        )));
    }
    Ok(fd)
}

/// The `json:` name of the chain `given` (top first): every node through its fd.
fn spec(given: &[Given]) -> String {
    let file = |fd: &OwnedFd| {
        serde_json::json!({
            "driver": "file",
            "filename": format!("/proc/self/fd/{}", fd.as_raw_fd()),
            "locking": "off",
        })
    };
    let mut node = serde_json::Value::Null;
    for g in given.iter().rev() {
        let mut n = serde_json::json!({ "driver": g.format.as_str(), "file": file(&g.fd) });
        if g.format == Format::Qcow2 {
            n["backing"] = node;
            if let Some(d) = &g.data {
                n["data-file"] = file(d);
            }
        }
        node = n;
    }
    format!("json:{node}")
}

/// Every fd of `given`, to keep open in qemu-img.
fn fds(given: &[Given]) -> Vec<i32> {
    given
        .iter()
        .flat_map(|g| {
            std::iter::once(g.fd.as_raw_fd()).chain(g.data.as_ref().map(|d| d.as_raw_fd()))
        })
        .collect()
}

/// Runs `plan` through `qemu-img commit`.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    let start = Instant::now();
    let mut report = |phase, writing| {
        (r.progress)(Progress {
            op: OpKind::COMMIT,
            phase,
            done: 0,
            total: 0,
            elapsed: start.elapsed(),
            writing,
        })
    };
    report(Phase::Open, false);
    qemu_tools::found(&["qemu-img"]).map_err(|t| Refusal::Unsupported {
        path: plan.top.path.clone(),
        what: format!(
            "uses {}, which only QEMU's own tool commits, and {t} is not installed (qemu-utils)",
            plan.by_qemu.join(", ")
        ),
    })?;
    super::plan::recheck_overlays(plan, r.settings)?;
    let empty_top = !plan.keep_top && plan.intermediates.is_empty();
    let mut given = vec![give(&plan.top, OpenMode::ReadOnly)?];
    for m in &plan.intermediates {
        given.push(give(m, OpenMode::ReadOnly)?);
    }
    given.push(give(&plan.base, OpenMode::ReadWrite)?);
    for b in &plan.below {
        given.push(give(b, OpenMode::ReadOnly)?);
    }
    let base_at = plan.intermediates.len() + 1;
    report(Phase::Copy, true);
    let copy = qemu_tools::tool(
        Command::new("qemu-img")
            .args(["commit", "-q", "-d"])
            .args(deeper_base(plan, &given[base_at]))
            .arg(spec(&given)),
        &fds(&given),
        "",
    )
    .and_then(|()| sync(&given[base_at]).map_err(|e| format!("cannot sync the base: {e}")));
    report(Phase::Flush, true);
    let copy = copy.map_err(|e| CopyError::Io {
        op: "qemu-img commit failed",
        path: plan.base.path.clone(),
        offset: 0,
        source: std::io::Error::other(e),
    });
    drop(given);
    let top_emptied = (copy.is_ok() && empty_top).then(|| {
        report(Phase::EmptyTop, true);
        empty(plan)
    });
    Ok(Outcome {
        plan: plan.clone(),
        total: 0,
        copied: 0,
        tally: Tally::default(),
        grew: plan.grow_to.map(|to| (plan.base.virtual_size, to)),
        copy,
        left_dirty: false,
        reopen_ro: Some(Ok(())),
        cancel_too_late: false,
        top_emptied,
        elapsed: start.elapsed(),
    })
}

/// `-b BASE` for a base below the top's backing file: QEMU finds it by the name of its fd (a
/// base with a data file has none QEMU matches; the plan refuses that case).
fn deeper_base(plan: &Plan, base: &Given) -> Vec<String> {
    if plan.intermediates.is_empty() {
        return Vec::new();
    }
    vec![
        "-b".into(),
        format!("/proc/self/fd/{}", base.fd.as_raw_fd()),
    ]
}

/// fsyncs an image and its data file.
fn sync(g: &Given) -> std::io::Result<()> {
    rustix::fs::fsync(&g.fd)?;
    if let Some(d) = &g.data {
        rustix::fs::fsync(d)?;
    }
    Ok(())
}

/// Empties the top once the base holds its data on disk: `qemu-img commit` again, which finds
/// the same data there and then drops the top's clusters (QEMU's make-empty); a power loss
/// in between leaves the top reading what it read before.
fn empty(plan: &Plan) -> Result<(), String> {
    let mut given = vec![give(&plan.top, OpenMode::ReadWrite).map_err(|e| e.to_string())?];
    given.push(give(&plan.base, OpenMode::ReadWrite).map_err(|e| e.to_string())?);
    for b in &plan.below {
        given.push(give(b, OpenMode::ReadOnly).map_err(|e| e.to_string())?);
    }
    qemu_tools::tool(
        Command::new("qemu-img")
            .args(["commit", "-q"])
            .arg(spec(&given)),
        &fds(&given),
        "",
    )?;
    sync(&given[0]).map_err(|e| format!("cannot sync it: {e}"))
}
