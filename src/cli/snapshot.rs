//! `imgchain snapshot`.

use imgchain::ops::{OpKind, live};

use super::args::SnapshotArgs;
use super::failure::Failure;
use super::runner::{discover, dry_run, refused, refused_live_hint, run_live, run_planned};
use super::session::Session;

pub(crate) fn snapshot(ctx: &Session, a: SnapshotArgs) -> Result<u8, Failure> {
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
        return Ok(dry_run(OpKind::Snapshot, &image, &d, None, &found, a.json));
    }
    run_planned::<snapshot::Snapshot>(ctx, &plan, false, a.json)
}
