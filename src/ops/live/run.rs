//! Running a live operation: the holder is checked again, then asked through QMP or virsh,
//! and its job is followed until it ends or is cancelled.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::plan::{LiveKind, LivePlan, Via};
use super::qmp::{Qmp, node_of, switch_to_overlay};
use super::virsh::{Virsh, job_progress, libvirt_pid};
use crate::image::file::FileId;
use crate::ops::{Phase, Progress, Refusal, Report, snapshot};
use crate::text::Names;

/// What a live operation did.
#[derive(Debug)]
pub struct LiveOutcome {
    pub plan: LivePlan,
    /// Bytes the job reported it had copied.
    pub copied: u64,
    /// The job completed: after a commit the guest runs on the base, after a merge its
    /// overlay is built on the base, after a snapshot it writes the new overlay.
    pub completed: bool,
    pub cancelled: bool,
    /// What QEMU (or creating the overlay) said went wrong.
    pub error: Option<String>,
}

/// Runs the live operation. A block job (commit, merge) is followed until it concludes,
/// completed when it is ready (the pivot of a commit), and dismissed; a cancel becomes
/// `job-cancel` (`blockjob --abort` through libvirt), which leaves the guest on its old chain
/// with nothing lost.
pub fn run(
    plan: &LivePlan,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<LiveOutcome, Refusal> {
    let start = Instant::now();
    let op = plan.op();
    let mut report = |phase, done, total| {
        progress(Progress {
            op,
            phase,
            done,
            total,
            elapsed: start.elapsed(),
            writing: false,
        })
    };
    report(Phase::Open, 0, 0);
    verify_holder(plan)?;
    match &plan.via {
        Via::Qmp(socket) => run_qmp(plan, socket, cancel, &mut report),
        Via::Libvirt { uri, domain } => {
            let v = Virsh { uri, domain };
            run_virsh(plan, &v, cancel, &mut report)
        }
    }
}

/// The holder must be a real QEMU writing the image the VM writes, and a libvirt domain's
/// pid must be the holder's, before anything is asked of it (ARCHITECTURE.md §8).
fn verify_holder(plan: &LivePlan) -> Result<(), Refusal> {
    let refuse = |what: String| Refusal::Untrusted {
        path: plan.top.clone(),
        what: format!(
            "is held by {}, which imgchain does not trust to do a live {}: {what}",
            plan.holder,
            plan.op()
        ),
    };
    let active = match &plan.kind {
        LiveKind::Merge { active, .. } => active,
        _ => &plan.top,
    };
    let id = crate::image::file::FileId::of_path(active)
        .ok_or_else(|| refuse(format!("{} cannot be looked at", active.shown())))?;
    crate::image::lock::holders::verify_qemu(plan.pid, id).map_err(refuse)?;
    if let Via::Libvirt { uri, domain } = &plan.via {
        let pid = libvirt_pid(uri, domain).ok_or_else(|| {
            refuse(format!(
                "libvirt has no running domain named {}",
                domain.shown()
            ))
        })?;
        if pid != plan.pid {
            return Err(refuse(format!(
                "libvirt's domain {} runs as pid {pid}, not {}",
                domain.shown(),
                plan.pid
            )));
        }
    }
    Ok(())
}

/// Reports a phase with bytes done and in all.
type Report3<'a> = dyn FnMut(Phase, u64, u64) + 'a;

fn outcome(plan: &LivePlan) -> LiveOutcome {
    LiveOutcome {
        plan: plan.clone(),
        copied: 0,
        completed: false,
        cancelled: false,
        error: None,
    }
}

fn run_qmp(
    plan: &LivePlan,
    socket: &Path,
    cancel: &AtomicBool,
    report: &mut Report3<'_>,
) -> Result<LiveOutcome, Refusal> {
    let failed = |what: String| Refusal::Live {
        path: plan.top.clone(),
        what,
    };
    let op = plan.op();
    let mut q = Qmp::connect(socket, plan.pid).map_err(failed)?;
    let nodes = q
        .execute("query-named-block-nodes", json!({}))
        .map_err(failed)?;
    let node = |path: &Path| {
        node_of(&nodes, path).ok_or_else(|| {
            failed(format!(
                "the QEMU holding it has no block node for {}: it does not run on that chain",
                path.shown()
            ))
        })
    };
    let top = node(&plan.top)?;
    let mut outcome = outcome(plan);
    let id = format!("imgchain-{op}-{}", std::process::id());
    let mut args = json!({"job-id": id, "auto-dismiss": false, "speed": plan.speed});
    match &plan.kind {
        LiveKind::Snapshot(s) => {
            report(Phase::Create, 0, 0);
            let made = snapshot::create_in_place(s)
                .map_err(|e| failed(format!("cannot create {}: {e}", plan.target.shown())))?;
            report(Phase::Relink, 0, 0);
            outcome.error = switch_to_overlay(&mut q, &top, &plan.target)
                .map_err(|e| undo_overlay(&plan.target, made, e))
                .err();
            outcome.completed = outcome.error.is_none();
            report(Phase::Done, 0, 0);
            return Ok(outcome);
        }
        LiveKind::Commit => {
            args["device"] = json!(top);
            args["base-node"] = json!(node(&plan.target)?);
        }
        LiveKind::Merge {
            active,
            backing_name,
            ..
        } => {
            args["device"] = json!(node(active)?);
            args["top-node"] = json!(top);
            args["base-node"] = json!(node(&plan.target)?);
            args["backing-file"] = json!(backing_name);
        }
    }
    q.execute("block-commit", args).map_err(failed)?;
    Ok(follow(&mut q, plan, &id, (cancel, report), outcome))
}

/// Follows block-commit job `id` until it concludes: reports its progress, completes it
/// (the pivot) when a commit is ready, and cancels it when asked.
fn follow(
    q: &mut Qmp,
    plan: &LivePlan,
    id: &str,
    (cancel, report): (&AtomicBool, &mut Report3<'_>),
    mut outcome: LiveOutcome,
) -> LiveOutcome {
    let mut asked_to_complete = false;
    let mut asked_to_cancel = false;
    loop {
        let jobs = match q.execute("query-jobs", json!({})) {
            Ok(j) => j,
            Err(e) => {
                outcome.error = Some(e);
                return outcome;
            }
        };
        let Some(job) = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == id))
        else {
            outcome.error = Some("the job vanished before it concluded".into());
            return outcome;
        };
        let done = job["current-progress"].as_u64().unwrap_or(0);
        let total = job["total-progress"].as_u64().unwrap_or(0);
        outcome.copied = done;
        report(Phase::Copy, done, total);
        let status = job["status"].as_str().unwrap_or("");
        if cancel.load(Ordering::Relaxed) && !asked_to_cancel && !asked_to_complete {
            asked_to_cancel = true;
            if let Err(e) = q.execute("job-cancel", json!({"id": id})) {
                outcome.error = Some(e);
            }
        }
        match status {
            "ready" if !asked_to_complete && !asked_to_cancel => {
                asked_to_complete = true;
                report(Phase::Flush, done, total);
                if let Err(e) = q.execute("job-complete", json!({"id": id})) {
                    outcome.error = Some(e);
                }
            }
            "concluded" => {
                let error = job["error"].as_str().map(String::from);
                let _ = q.execute("job-dismiss", json!({"id": id}));
                outcome.cancelled = asked_to_cancel;
                // A commit ends by its pivot; a merge ends by itself.
                let ended = asked_to_complete || matches!(plan.kind, LiveKind::Merge { .. });
                outcome.completed = ended && !asked_to_cancel && error.is_none();
                outcome.error = error.or(outcome.error.take()).or_else(|| {
                    (!outcome.completed && !outcome.cancelled && !q.errors.is_empty())
                        .then(|| q.errors.join("; "))
                });
                report(Phase::Done, done, total);
                return outcome;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_virsh(
    plan: &LivePlan,
    v: &Virsh<'_>,
    cancel: &AtomicBool,
    report: &mut Report3<'_>,
) -> Result<LiveOutcome, Refusal> {
    let failed = |what: String| Refusal::Live {
        path: plan.top.clone(),
        what,
    };
    let mut outcome = outcome(plan);
    let active = match &plan.kind {
        LiveKind::Merge { active, .. } => active,
        _ => &plan.top,
    };
    let target = v.target_of(active).map_err(failed)?;
    let bandwidth = plan.speed.to_string();
    let mut args = vec![target.as_str()];
    let (mid, base) = (
        plan.top.display().to_string(),
        plan.target.display().to_string(),
    );
    match &plan.kind {
        LiveKind::Snapshot(s) => {
            report(Phase::Create, 0, 0);
            let made = snapshot::create_in_place(s)
                .map_err(|e| failed(format!("cannot create {}: {e}", plan.target.shown())))?;
            report(Phase::Relink, 0, 0);
            outcome.error = virsh_snapshot(v, &target, &plan.target)
                .map_err(|e| undo_overlay(&plan.target, made, e))
                .err();
            outcome.completed = outcome.error.is_none();
            report(Phase::Done, 0, 0);
            return Ok(outcome);
        }
        LiveKind::Commit => args.push("--active"),
        LiveKind::Merge { .. } => {
            args.extend(["--top", &mid, "--base", &base, "--keep-relative"]);
        }
    }
    if plan.speed > 0 {
        args.extend(["--bandwidth", &bandwidth, "--bytes"]);
    }
    v.run("blockcommit", &args).map_err(failed)?;
    Ok(follow_virsh(
        v,
        plan,
        (&target, &mid),
        (cancel, report),
        outcome,
    ))
}

/// Has libvirt move the VM's disk `target` onto the new overlay `new` (created already).
fn virsh_snapshot(v: &Virsh<'_>, target: &str, new: &Path) -> Result<(), String> {
    // virsh's option syntax doubles a comma inside a value.
    let spec = format!(
        "{target},file={}",
        new.display().to_string().replace(',', ",,")
    );
    v.run(
        "snapshot-create-as",
        &[
            "--disk-only",
            "--atomic",
            "--no-metadata",
            "--reuse-external",
            "--diskspec",
            &spec,
        ],
    )
    .map(|_| ())
}

/// After the VM did not move onto the new overlay `new` (created as `made`), removes it again
/// — only if the name still holds that file — and says so after `e`.
fn undo_overlay(new: &Path, made: FileId, e: String) -> String {
    match crate::ops::delete::remove_by_identity(new, made) {
        Ok(()) => format!("{e}; {} was removed again", new.shown()),
        Err(r) => format!(
            "{e}; {} could not be removed ({r}): nothing uses it, remove it by hand",
            new.shown()
        ),
    }
}

/// Follows libvirt's block job on disk `target` (merging layer `mid`) until it ends:
/// reports its progress, pivots a commit when it is ready, and aborts it when asked.
fn follow_virsh(
    v: &Virsh<'_>,
    plan: &LivePlan,
    (target, mid): (&str, &str),
    (cancel, report): (&AtomicBool, &mut Report3<'_>),
    mut outcome: LiveOutcome,
) -> LiveOutcome {
    let mut last_total = 0;
    loop {
        let raw = match v.run("blockjob", &[target, "--raw"]) {
            Ok(r) => r,
            Err(e) => {
                outcome.error = Some(e);
                return outcome;
            }
        };
        let Some((done, total)) = job_progress(&raw) else {
            // Only a merge ends by itself; libvirt tells how it went by the chain it runs.
            let xml = v.run("dumpxml", &[]).unwrap_or_default();
            if matches!(plan.kind, LiveKind::Merge { .. }) && !xml.contains(&format!("'{mid}'")) {
                outcome.completed = true;
                // It ended between two looks: all of it was copied.
                outcome.copied = outcome.copied.max(last_total);
            } else {
                outcome.error = Some(format!(
                    "libvirt ended the job, but {} still runs on {mid}; its log says why",
                    v.domain
                ));
            }
            report(Phase::Done, outcome.copied, outcome.copied);
            return outcome;
        };
        outcome.copied = done;
        last_total = total;
        report(Phase::Copy, done, total);
        if cancel.load(Ordering::Relaxed) {
            outcome.cancelled = true;
            outcome.error = v.run("blockjob", &[target, "--abort"]).err();
            report(Phase::Done, done, total);
            return outcome;
        }
        if matches!(plan.kind, LiveKind::Commit) && total > 0 && done == total {
            report(Phase::Flush, done, total);
            match v.run("blockjob", &[target, "--pivot"]) {
                Ok(_) => {
                    outcome.completed = true;
                    report(Phase::Done, done, total);
                    return outcome;
                }
                Err(e) if e.contains("not ready") => {}
                Err(e) => {
                    outcome.error = Some(e);
                    return outcome;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Report for LiveOutcome {
    /// `--json` of `commit --live`, `merge --live` and `snapshot --live`: `target` is the backing
    /// file (commit, merge) or the new overlay (snapshot).
    fn json(&self) -> serde_json::Value {
        use crate::ops::live::{LiveKind, Via};
        let p = &self.plan;
        let mut v = serde_json::json!({
            "operation": p.op().as_str(),
            "live": true,
            "image": crate::text::lossy(&p.top),
            "target": crate::text::lossy(&p.target),
            "holder": p.holder,
            "qmp": match &p.via {
                Via::Qmp(s) => Some(crate::text::lossy(s)),
                Via::Libvirt { .. } => None,
            },
            "libvirt": match &p.via {
                Via::Libvirt { uri, domain } => serde_json::json!({"uri": uri, "domain": domain}),
                Via::Qmp(_) => serde_json::Value::Null,
            },
            "copied_bytes": self.copied,
            "completed": self.completed,
            "pivoted": self.completed && matches!(p.kind, LiveKind::Commit),
            "cancelled": self.cancelled,
            "error": self.error,
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        });
        if let LiveKind::Merge {
            overlay,
            backing_name,
            ..
        } = &p.kind
        {
            v["overlay"] = crate::text::lossy(overlay).into();
            v["backing_name"] = backing_name.as_str().into();
        }
        v
    }

    fn exit_code(&self) -> u8 {
        if self.cancelled {
            crate::exit::CANCELLED
        } else if self.completed {
            crate::exit::OK
        } else {
            crate::exit::IO_ERROR
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let (top, target) = (p.top.shown(), p.target.shown());
        let copied = crate::units::human_size(self.copied);
        let reason = self.error.as_deref().unwrap_or("QEMU gave no reason");
        match (&p.kind, self.completed, self.cancelled) {
            (LiveKind::Commit, true, _) => format!(
                "{} committed {copied} of {top} into {target} itself and now runs on {target}; \
                 {top} is no longer part of its chain (delete it once nothing uses it).",
                p.holder
            ),
            (LiveKind::Merge { overlay, .. }, true, _) => format!(
                "{} merged {copied} of {top} into {target} itself; {} is built on {target} now, \
                 and {top} is no longer part of its chain (delete it once nothing uses it).",
                p.holder,
                overlay.shown()
            ),
            (LiveKind::Snapshot(_), true, _) => format!(
                "{} now writes {target}, a new qcow2 overlay of {top}; {top} is a backing file \
                 of the running chain (RO) from now on.",
                p.holder
            ),
            (LiveKind::Snapshot(_), false, _) => format!(
                "The live snapshot of {top} did not happen: {reason}. {} still writes {top}.",
                p.holder
            ),
            (_, false, true) => format!(
                "Cancelled: {} still runs on its chain through {top}, which keeps all its data; \
                 {target} may hold part of it, which {top} hides. Re-running finishes the job.",
                p.holder
            ),
            (_, false, false) => format!(
                "The live {} of {top} into {target} did not finish: {reason}. {} still runs on \
                 its chain through {top}, which keeps all its data.",
                p.op(),
                p.holder
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(p: &Path) -> FileId {
        FileId::of(&std::fs::symlink_metadata(p).unwrap())
    }

    #[test]
    fn an_overlay_the_vm_did_not_take_is_removed_only_if_the_name_still_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("vm.1.qcow2");
        std::fs::write(&new, b"ours").unwrap();
        let made = ident(&new);
        let said = undo_overlay(&new, made, "no".into());
        assert!(
            !new.exists() && said.ends_with("was removed again"),
            "{said}"
        );

        // The name swapped for another file since: that file stays, and the message says so.
        std::fs::write(&new, b"ours").unwrap();
        let made = ident(&new);
        std::fs::rename(&new, tmp.path().join("moved")).unwrap();
        std::fs::write(&new, b"theirs").unwrap();
        let said = undo_overlay(&new, made, "no".into());
        assert_eq!(std::fs::read(&new).unwrap(), b"theirs");
        assert!(said.contains("could not be removed"), "{said}");
    }
}
