//! `imgchain snapshot`.

use std::path::PathBuf;

use clap::Args;

use imgchain::ops::live;

use super::command::Command;
use super::failure::Failure;
use super::runner::{discover, dry_run, refused, refused_live_hint, run_live, run_planned};
use super::session::Session;

#[derive(Args)]
pub(crate) struct SnapshotArgs {
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be created, and create nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// IMAGE is written by a running QEMU or qemu-storage-daemon with a QMP socket: create
    /// the overlay and have it move onto it (blockdev-add, blockdev-snapshot)
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) live: bool,
    /// Also look under PATH for the images around IMAGE (repeatable)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The image to put the overlay on
    pub(crate) image: PathBuf,
    /// The new overlay [default: IMAGE-STEM.N.qcow2 beside IMAGE, the first N free]
    pub(crate) new: Option<PathBuf>,
}

impl Command for SnapshotArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.dry_run).then_some("snapshot")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        snapshot(ctx, self)
    }
}

fn snapshot(ctx: &Session, a: SnapshotArgs) -> Result<u8, Failure> {
    use imgchain::ops::snapshot::{self, Request};
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let req = Request {
        image: found.image,
        new: a.new,
        cluster_size: ctx.config.snapshot.cluster_size.0,
    };
    if a.live {
        return run_live::<live::LiveSnapshot>(ctx, &found, &req, false, a.json);
    }
    let plan = match snapshot::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, a.json)),
    };
    if a.dry_run {
        let d = snapshot::describe(&plan);
        let image = plan.image.path.clone();
        return Ok(dry_run::<snapshot::Snapshot>(
            ctx, &plan, &image, &d, None, &found, a.json,
        ));
    }
    run_planned::<snapshot::Snapshot>(ctx, &plan, false, a.json)
}
