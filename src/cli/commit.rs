//! `imgchain commit`.

use std::path::PathBuf;

use clap::Args;

use imgchain::ops::{Operation, live};

use super::args::parse_rate;
use super::command::Command;
use super::failure::Failure;
use super::runner::{
    discover, dry_run, live_request, note_outside, refused, refused_live_hint, run_live,
    run_planned,
};
use super::session::Session;

#[derive(Args)]
pub(crate) struct CommitArgs {
    /// Commit into BASE, an image further down IMAGE's backing chain; the images in
    /// between keep their data (implies -d, as in qemu-img)
    #[arg(short = 'b', long = "base", value_name = "BASE")]
    pub(crate) base: Option<PathBuf>,
    /// Keep IMAGE's data after committing it (default: empty IMAGE, as qemu-img does)
    #[arg(short = 'd', long = "keep-top")]
    pub(crate) keep: bool,
    /// Commit even if the base has other overlays (their disks change), or its filesystem
    /// may be too full
    #[arg(long)]
    pub(crate) force: bool,
    /// Upgrade a qcow2 v2 (compat=0.10) base to compat=1.1 first (qemu-img amend, under
    /// imgchain's locks), so that it can grow and gain refcount blocks crash-safely
    #[arg(long, conflicts_with = "live")]
    pub(crate) amend: bool,
    /// Show progress
    #[arg(short = 'p', long)]
    pub(crate) progress: bool,
    /// IMAGE is in use by a running QEMU or qemu-storage-daemon with a QMP socket: have it
    /// commit IMAGE into its backing file itself (block-commit) and pivot onto it
    #[arg(long, conflicts_with_all = ["base", "keep"])]
    pub(crate) live: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    pub(crate) speed: Option<u64>,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be committed where, and where other overlays were looked for, and
    /// change nothing
    #[arg(long, conflicts_with = "live")]
    pub(crate) dry_run: bool,
    /// Also look for other overlays of the base under PATH (repeatable; the directories
    /// of IMAGE and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The overlay to commit
    pub(crate) image: PathBuf,
}

impl Command for CommitArgs {
    /// Even a dry run: a commit is refused under `--read-only` before it is planned.
    fn writing(&self) -> Option<&'static str> {
        Some("commit")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        commit(ctx, self)
    }
}

/// Scans what a commit needs to see (the image, its directory, the directories of its chain
/// and any --scan paths), plans, and runs it with Ctrl-C as cancel.
fn commit(ctx: &Session, a: CommitArgs) -> Result<u8, Failure> {
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
        amend: a.amend,
    };
    let plan = match commit::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, a.json)),
    };
    let space = match Commit::room(&plan, a.force, &ctx.settings) {
        Ok(s) => s,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.dry_run {
        let d = commit::describe(&plan);
        return Ok(dry_run::<Commit>(
            ctx,
            &plan,
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
