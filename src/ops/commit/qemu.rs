//! The commit QEMU's own tool runs (ARCHITECTURE.md §3, "Features only QEMU handles"): when a
//! layer of the chain uses extended L2 entries, zstd compression or an external data file,
//! which imago cannot read or write, `qemu-img commit -d` moves the data under imgchain's plan
//! and guards. Every image and data file is opened and checked by imgchain and handed over as
//! an fd (the whole chain spelled out in a `json:` name, nothing opened by a name from a
//! header); imgchain holds QEMU's locks. The base is synced before the top is emptied.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;

use super::Plan;
use super::run::Outcome;
use crate::image::file::OpenMode;
use crate::ops::datapath::{CopyError, Tally};
use crate::ops::qemu_chain::{Given, fds, give, spec, sync};
use crate::ops::{OpKind, Phase, Progress, Refusal, Run, qemu_tools};

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
    .and_then(|()| sync(&given[base_at]).map_err(|e| format!("cannot sync the base: {e}")))
    .and_then(|()| merge_bitmaps(plan, &given[0], &given[base_at], &mut report));
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

/// A merge's layer's bitmaps merged into the base's once the base holds its data (as oVirt's
/// cold merge and libvirt do after the commit: what the commit wrote is marked only in the
/// base's own bitmaps, by QEMU), then synced. Nothing to do for a commit.
fn merge_bitmaps(
    plan: &Plan,
    top: &Given,
    base: &Given,
    report: &mut dyn FnMut(Phase, bool),
) -> Result<(), String> {
    use crate::ops::bitmaps::{header_of, merge_into};
    if plan.merged_bitmaps.is_empty() {
        return Ok(());
    }
    report(Phase::Bitmaps, true);
    let header = |g: &Given| {
        header_of(g.fds().image)?.ok_or_else(|| "the image is no longer qcow2".to_string())
    };
    let (top_h, base_h) = (header(top)?, header(base)?);
    merge_into((top.fds(), &top_h), (base.fds(), &base_h))
        .and_then(|_| sync(base).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot merge the bitmaps of the layer into the base: {e}"))
}

/// `-b BASE` for a base below the top's backing file: QEMU finds it by the name of its fd.
fn deeper_base(plan: &Plan, base: &Given) -> Vec<String> {
    if plan.intermediates.is_empty() {
        return Vec::new();
    }
    vec![
        "-b".into(),
        format!("/proc/self/fd/{}", base.fd.as_raw_fd()),
    ]
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
