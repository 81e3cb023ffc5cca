//! `imgchain merge`.

use clap::Args;

use anyhow::Context;

use imgchain::exit;
use imgchain::ops::{Operation, Refusal, live};
use imgchain::text::Names;

use super::args::{ChainArgs, parse_rate};
use super::command::Command;
use super::confirm::{Question, confirmed};
use super::failure::Failure;
use super::runner::{
    discover, dry_run, live_request, note_outside, refused, refused_live_hint, run_live,
    run_planned,
};
use super::session::Session;

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// Merge even though the backing file has other overlays (their disks change), IMAGE
    /// is a disk a defined libvirt VM names, or the backing file's filesystem may be too full
    #[arg(long)]
    pub(crate) force: bool,
    /// Keep IMAGE's file once nothing is built on it
    #[arg(long)]
    pub(crate) keep: bool,
    /// Upgrade a qcow2 v2 (compat=0.10) backing file to compat=1.1 first (qemu-img amend,
    /// under imgchain's locks), so that it can grow and gain refcount blocks crash-safely
    #[arg(long, conflicts_with = "live")]
    pub(crate) amend: bool,
    /// IMAGE is a middle layer of a running QEMU's or qemu-storage-daemon's chain, with a
    /// QMP socket: have it commit IMAGE into its backing file itself (block-commit), which
    /// re-points the layer above; IMAGE's file is kept
    #[arg(long, conflicts_with_all = ["keep", "dry_run"])]
    pub(crate) live: bool,
    /// Merge without asking (needed where there is no terminal to ask on; a merge with
    /// --keep or --live deletes nothing and does not ask)
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    pub(crate) speed: Option<u64>,
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

impl Command for MergeArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.common.dry_run).then_some("merge")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        merge(ctx, self)
    }
}

fn merge(ctx: &Session, a: MergeArgs) -> Result<u8, Failure> {
    use imgchain::ops::merge::{self, Request};
    let c = &a.common;
    let image = std::path::absolute(&c.image)
        .with_context(|| format!("cannot resolve {}", c.image.shown()))?;
    let journal = merge::read_journal(&image).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the merge journal {}: {e}",
            merge::journal_path(&image).shown()
        )
    })?;
    if let Some(j) = &journal
        && !image.exists()
    {
        // Cut short after IMAGE was deleted: only its data file and the journal are left.
        let data = merge::finish_deleted(j).with_context(|| {
            format!(
                "cannot finish the merge of {}: remove {}",
                image.shown(),
                merge::journal_path(&image).shown()
            )
        })?;
        println!(
            "The merge of {} into {} had finished but for removing its journal{}; done.",
            image.shown(),
            j.base.shown(),
            match data {
                Some(d) => format!(" and its data file {}", d.shown()),
                None => String::new(),
            }
        );
        return Ok(exit::OK);
    }
    let found = match discover(ctx, &image, &c.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, c.json)),
    };
    if a.live {
        let req = live_request(&found, a.force, a.speed);
        return run_live::<live::LiveMerge>(ctx, &found, &req, c.progress, c.json);
    }
    let req = Request {
        image: found.image,
        force: a.force,
        vm_disk: a.force,
        keep: a.keep,
        amend: a.amend,
    };
    let plan = match merge::plan(&found.scan.forest, &req, journal.as_ref()) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, c.json)),
    };
    let space = match merge::Merge::room(&plan, a.force, &ctx.settings) {
        Ok(s) => s,
        Err(e @ Refusal::NoSpace { .. }) => return Ok(refused(&e, c.json)),
        Err(_) => None,
    };
    if c.dry_run {
        let d = merge::describe(&plan);
        return Ok(dry_run::<merge::Merge>(
            ctx,
            &plan,
            &plan.image.path,
            &d,
            space,
            &found,
            c.json,
        ));
    }
    if !a.keep {
        let name = imgchain::forest::model::file_name(&plan.image.path);
        let q = Question::YesNo(format!(
            "Merge {name} into {} and delete {name}?",
            imgchain::forest::model::file_name(&plan.base.path)
        ));
        if !confirmed("merge", &merge::describe(&plan), &q, a.yes)? {
            eprintln!("imgchain: not confirmed; nothing was merged");
            return Ok(exit::CANCELLED);
        }
    }
    note_outside(&found);
    run_planned::<merge::Merge>(ctx, &plan, c.progress, c.json)
}
