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

use std::path::{Path, PathBuf};

use crate::forest::{Forest, NodeId};
use crate::ops::scope::Discovered;
use crate::ops::settings::Settings;
use crate::ops::{Description, OpKind, Operation, Refusal, Run, Selected, snapshot};

/// What the UI asks of the running QEMU that holds `image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
}

impl Ask {
    fn of(sel: &Selected) -> Ask {
        Ask {
            image: sel.image.clone(),
        }
    }

    /// The request for the image it names, found in `found`: without `force` or a speed
    /// limit.
    fn request(&self, found: &Discovered) -> Request {
        Request {
            image: found.image,
            force: false,
            speed: 0,
        }
    }
}

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

/// What the running QEMU will do, and by whom it is asked.
pub fn describe(l: &LivePlan) -> Description {
    use crate::text::Names;
    let name = crate::forest::model::file_name;
    let (top, target) = (name(&l.top), name(&l.target));
    let mut d = Description::new(format!(
        "Would have {} {} {} {} through {}.",
        l.holder,
        match l.kind {
            LiveKind::Snapshot(_) => "put",
            _ => "commit",
        },
        l.top.shown(),
        match l.kind {
            LiveKind::Snapshot(_) => format!("under the new overlay {}", l.target.shown()),
            _ => format!("into {}", l.target.shown()),
        },
        l.via
    ));
    let into = match l.kind {
        LiveKind::Snapshot(_) => "new overlay",
        _ => "into",
    };
    d.field(into, l.target.shown().to_string())
        .field("done by", l.holder.clone())
        .field("through", l.via.to_string());
    d.text(match &l.kind {
        LiveKind::Commit => format!(
            "A live operation: the running QEMU copies {top} into {target} with its own \
             block-commit job and then runs on {target}. imgchain writes nothing."
        ),
        LiveKind::Merge { overlay, .. } => format!(
            "A live operation: the running QEMU copies {top} into {target} with its own \
             block-commit job and points {} at {target}. imgchain writes nothing.",
            name(overlay)
        ),
        LiveKind::Snapshot(_) => format!(
            "A live operation: imgchain creates {target} on {top}, and the running QEMU opens \
             it and writes there from then on. {top} is not written."
        ),
    });
    d
}

/// One live operation: its name, the offline operation it stands for, its request, and how
/// it is planned. The QEMU that holds the images writes them (the backing file or new
/// overlay first); imgchain does not.
macro_rules! live_operation {
    (
        $(#[$doc:meta])* $name:ident, $kind:expr, $title:expr, $req:ty, $ask:ty, $plan:expr,
        $action:literal, $ask_for:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl Operation for $name {
            const KIND: OpKind = $kind;
            const TITLE: &'static str = $title;
            type Request = $req;
            type Ask = $ask;
            type Plan = LivePlan;
            type Outcome = LiveOutcome;

            fn plan(forest: &Forest, req: &$req) -> Result<LivePlan, Refusal> {
                $plan(forest, req)
            }

            const ACTION: Option<&'static str> = Some($action);

            fn ask_for(sel: &Selected) -> Result<$ask, String> {
                $ask_for(sel)
            }

            fn asked(ask: &$ask) -> &Path {
                &ask.image
            }

            fn plan_asked(
                ask: &$ask,
                found: &Discovered,
                _: &Settings,
            ) -> Result<LivePlan, Refusal> {
                Self::plan(&found.scan.forest, &ask.request(found))
            }

            fn writes(plan: &LivePlan) -> Vec<PathBuf> {
                vec![plan.target.clone(), plan.top.clone()]
            }

            fn describe(plan: &LivePlan) -> Description {
                describe(plan)
            }

            fn run(plan: &LivePlan, r: Run<'_>) -> Result<LiveOutcome, Refusal> {
                run(plan, r.cancel, r.progress)
            }
        }
    };
}

live_operation!(
    /// The running QEMU commits the image it writes into its backing file, then runs on it.
    LiveCommit,
    OpKind::COMMIT,
    "Live commit",
    Request,
    Ask,
    |forest, req: &Request| with_speed(plan(forest, req.image, req.force), req),
    "live",
    |sel: &Selected| written(sel).map(|()| Ask::of(sel))
);

live_operation!(
    /// The running QEMU whose chain runs through a middle layer commits it into its backing
    /// file; the layer above is re-pointed.
    LiveMerge,
    OpKind::MERGE,
    "Live merge",
    Request,
    Ask,
    |forest, req: &Request| with_speed(plan_merge(forest, req.image, req.force), req),
    "live",
    |sel: &Selected| Ok::<_, String>(Ask::of(sel))
);

live_operation!(
    /// imgchain creates an overlay on the image a running QEMU writes, and the QEMU moves
    /// onto it.
    LiveSnapshot,
    OpKind::SNAPSHOT,
    "Live snapshot",
    snapshot::Request,
    snapshot::Ask,
    plan_snapshot,
    "snapshot",
    |sel: &Selected| written(sel).map(|()| snapshot::Ask::of(sel))
);

/// The image a key was pressed on is written by a running QEMU: that QEMU does the job.
fn written(sel: &Selected) -> Result<(), String> {
    match sel.written {
        true => Ok(()),
        false => Err(String::new()),
    }
}

/// The plan with the request's speed limit.
fn with_speed(plan: Result<LivePlan, Refusal>, req: &Request) -> Result<LivePlan, Refusal> {
    plan.map(|p| LivePlan {
        speed: req.speed,
        ..p
    })
}
