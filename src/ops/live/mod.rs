//! Live operations: a running QEMU (or qemu-storage-daemon) that holds the image does the job
//! itself, through its QMP socket (ARCHITECTURE.md §3, §7). imgchain never writes an image a
//! QEMU holds:
//! - commit: `block-commit` of the active layer, followed until ready, completed (the pivot)
//!   and dismissed;
//! - merge: `block-commit` of a middle layer into its backing file, which re-points the
//!   layer above it; the job ends by itself;
//! - snapshot: imgchain creates the new overlay (a new file nobody holds), the QEMU opens it
//!   (`blockdev-add`) and moves onto it (`blockdev-snapshot`).
//!
//! libvirt's monitor is never used (only one client may attach, and libvirt taints a domain
//! others talk to): a libvirt VM's job goes through `virsh` (`blockcommit`, `blockjob`,
//! `snapshot-create-as`), or, where virsh is not installed, the refusal gives the command.

mod plan;
mod qmp;
mod run;
mod virsh;

pub use plan::{LiveKind, LivePlan, Via, plan, plan_merge, plan_snapshot};
pub use run::{LiveOutcome, run};

use std::path::PathBuf;

use crate::forest::{Forest, NodeId};
use crate::ops::{OpKind, Operation, Refusal, Run, snapshot};

/// What a live commit or merge is asked for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The image the VM writes (commit), or the middle layer of its chain (merge).
    pub image: NodeId,
    /// Over other overlays of the base (a commit's `--force`).
    pub force: bool,
    /// The job's speed limit in bytes per second; 0: none.
    pub speed: u64,
}

/// The images a live operation changes, the one whose data changes first; the QEMU that
/// holds them writes them, imgchain does not.
fn changed(plan: &LivePlan) -> Vec<PathBuf> {
    vec![plan.target.clone(), plan.top.clone()]
}

/// The running QEMU commits the image it writes into its backing file, then runs on it.
#[derive(Debug)]
pub struct LiveCommit;

impl Operation for LiveCommit {
    const KIND: OpKind = OpKind::Commit;
    type Request = Request;
    type Plan = LivePlan;
    type Outcome = LiveOutcome;

    fn plan(forest: &Forest, req: &Request) -> Result<LivePlan, Refusal> {
        let mut p = plan(forest, req.image, req.force)?;
        p.speed = req.speed;
        Ok(p)
    }

    fn writes(plan: &LivePlan) -> Vec<PathBuf> {
        changed(plan)
    }

    fn run(plan: &LivePlan, r: Run<'_>) -> Result<LiveOutcome, Refusal> {
        run(plan, r.cancel, r.progress)
    }
}

/// The running QEMU whose chain runs through a middle layer commits it into its backing
/// file; the layer above is re-pointed.
#[derive(Debug)]
pub struct LiveMerge;

impl Operation for LiveMerge {
    const KIND: OpKind = OpKind::Merge;
    type Request = Request;
    type Plan = LivePlan;
    type Outcome = LiveOutcome;

    fn plan(forest: &Forest, req: &Request) -> Result<LivePlan, Refusal> {
        let mut p = plan_merge(forest, req.image, req.force)?;
        p.speed = req.speed;
        Ok(p)
    }

    fn writes(plan: &LivePlan) -> Vec<PathBuf> {
        changed(plan)
    }

    fn run(plan: &LivePlan, r: Run<'_>) -> Result<LiveOutcome, Refusal> {
        run(plan, r.cancel, r.progress)
    }
}

/// imgchain creates an overlay on the image a running QEMU writes, and the QEMU moves onto it.
#[derive(Debug)]
pub struct LiveSnapshot;

impl Operation for LiveSnapshot {
    const KIND: OpKind = OpKind::Snapshot;
    type Request = snapshot::Request;
    type Plan = LivePlan;
    type Outcome = LiveOutcome;

    fn plan(forest: &Forest, req: &snapshot::Request) -> Result<LivePlan, Refusal> {
        plan_snapshot(forest, req)
    }

    fn writes(plan: &LivePlan) -> Vec<PathBuf> {
        changed(plan)
    }

    fn run(plan: &LivePlan, r: Run<'_>) -> Result<LiveOutcome, Refusal> {
        run(plan, r.cancel, r.progress)
    }
}
