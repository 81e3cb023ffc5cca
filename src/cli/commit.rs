//! `imgchain commit`.

use imgchain::ops::{OpKind, Operation, live};

use super::args::CommitArgs;
use super::failure::Failure;
use super::runner::{
    discover, dry_run, live_request, note_outside, refused, refused_live_hint, run_live,
    run_planned,
};
use super::session::Session;

/// Scans what a commit needs to see (the image, its directory, the directories of its chain
/// and any --scan paths), plans, and runs it with Ctrl-C as cancel.
pub(crate) fn commit(ctx: &Session, a: CommitArgs) -> Result<u8, Failure> {
    use imgchain::ops::commit::{self, Commit, Request};
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.live {
        let req = live_request(&found, a.force, a.speed);
        return run_live::<live::LiveCommit>(ctx, &found, &req, a.progress, a.json);
    }
    let req = Request {
        top: found.image,
        base: a.base,
        keep_top: a.keep || ctx.config.commit.keep_top,
        force: a.force,
    };
    let plan = match commit::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, a.json)),
    };
    let space = match Commit::room(&plan, a.force, ctx.settings.copy.clone) {
        Ok(s) => s,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.dry_run {
        let d = commit::describe(&plan);
        let space = space.map(|s| s.describe());
        return Ok(dry_run(
            OpKind::Commit,
            &plan.top.path,
            &d,
            space,
            &found,
            a.json,
        ));
    }
    note_outside(&found);
    run_planned::<Commit>(ctx, &plan, a.progress, a.json)
}
