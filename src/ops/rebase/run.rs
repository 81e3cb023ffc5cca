//! Running a rebase: the chains opened, the copy ([`super::differ`]) when it is safe, and
//! the header pointed at the new backing file last.

use std::time::{Duration, Instant};

use crate::image::file::{self, OpenMode};
use crate::image::lock::{Access, ImageLock};
use crate::image::probe::Format;
use crate::ops::datapath::Tally;
use crate::ops::plan_image::PlanImage;
use crate::ops::{Phase, Progress, Refusal, Run};
use crate::text::Names;

use super::differ::{Opened, copy_safely};
use super::outcome::Outcome;
use super::plan::Plan;

/// Opens `chain` (top-down) bottom-up, read-only with a reader's locks, each with its backing
/// attached; returns the handles and the top's access.
fn open_chain(chain: &[PlanImage]) -> Result<Opened, Refusal> {
    let mut handles = Vec::new();
    let mut backing = None;
    for img in chain.iter().rev() {
        let h = img.open(OpenMode::ReadOnly, backing.take())?;
        backing = Some(h.shared_access());
        handles.push(h);
    }
    Ok((handles, backing))
}

/// Runs the plan in this thread. Returns a refusal only when nothing was written.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    let Run {
        settings,
        cancel,
        progress,
    } = r;
    let start = Instant::now();
    let since = std::cell::Cell::new(start);
    let mut report = |phase, done, total, writing| {
        progress(Progress {
            op: plan.kind,
            phase,
            done,
            total,
            elapsed: since.get().elapsed(),
            writing,
        })
    };
    report(Phase::Open, 0, 0, false);
    let mut outcome = Outcome {
        plan: plan.clone(),
        compared: 0,
        copied: 0,
        tally: Tally::default(),
        copy: Ok(()),
        left_dirty: false,
        reopen_ro: None,
        relinked: None,
        elapsed: Duration::ZERO,
    };
    if !plan.safe {
        return relink_only(plan, outcome, &mut report, start);
    }

    let old = open_chain(&plan.old)?;
    let new = open_chain(&plan.new)?;
    let restart = || since.set(Instant::now());
    let run = (settings, cancel);
    copy_safely(
        plan,
        (&old, &new),
        run,
        (&mut report, &restart),
        &mut outcome,
    )?;
    if outcome.copy.is_err() || !matches!(outcome.reopen_ro, Some(Ok(()))) {
        outcome.elapsed = start.elapsed();
        return Ok(outcome);
    }
    // The backing files stay open and locked as readers until the header names the new one.
    report(Phase::Relink, 0, 0, true);
    outcome.relinked = Some(relink(&plan.image, plan.name.as_ref()));
    report(Phase::Done, 0, 0, false);
    drop(new);
    drop(old);
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// A header-only rebase: both chains held with readers' locks (never opened as images, so any
/// qcow2 feature will do), then the header rewritten.
fn relink_only(
    plan: &Plan,
    mut outcome: Outcome,
    report: &mut dyn FnMut(Phase, u64, u64, bool),
    start: Instant,
) -> Result<Outcome, Refusal> {
    let held = plan
        .old
        .iter()
        .chain(&plan.new)
        .map(PlanImage::hold)
        .collect::<Result<Vec<_>, Refusal>>()?;
    report(Phase::Relink, 0, 0, true);
    outcome.relinked = Some(relink(&plan.image, plan.name.as_ref()));
    drop(held);
    report(Phase::Done, 0, 0, false);
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Points the image's header at `name` (or at no backing file), holding a writer's QEMU locks
/// on the very file the plan saw.
pub(crate) fn relink(image: &PlanImage, name: Option<&(String, Format)>) -> Result<(), String> {
    let path = image.path.shown();
    let fd = file::open_as(&image.path, OpenMode::ReadWrite, image.ident)
        .map_err(|e| format!("cannot open {path} read-write: {e}"))?;
    let _lock = ImageLock::acquire(
        std::os::fd::AsFd::as_fd(&fd),
        &image.path,
        Access::READ_WRITE,
    )
    .map_err(|e| e.to_string())?;
    let f = std::fs::File::from(fd);
    crate::image::header::set_backing(&f, name.map(|(n, fmt)| (n.as_str(), *fmt)))
        .map_err(|e| format!("cannot rewrite the header of {path}: {e}"))
}
