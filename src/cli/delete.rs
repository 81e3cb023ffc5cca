//! `imgchain delete`.

use std::path::PathBuf;

use clap::Args;

use anyhow::Context;

use imgchain::exit;
use imgchain::text::Names;

use super::command::Command;
use super::confirm::{Question, confirmed};
use super::failure::{Failure, usage};
use super::runner::{discover, dry_run, refused, refused_found, run_planned};
use super::session::Session;

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Also delete every image built on IMAGE, at any distance (listed first)
    #[arg(long)]
    pub(crate) with_overlays: bool,
    /// Delete even an image a defined libvirt VM names as its disk
    #[arg(long)]
    pub(crate) force: bool,
    /// Unlink at once, freeing the space now, instead of moving into the trash beside the
    /// image (`imgchain trash restore` brings a trashed image back)
    #[arg(long)]
    pub(crate) purge: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be deleted, and delete nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Delete without asking (needed where there is no terminal to ask on)
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,
    /// Also look for images built on IMAGE under PATH (repeatable; the directories of IMAGE
    /// and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The image to delete
    pub(crate) image: PathBuf,
}

impl Command for DeleteArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.dry_run).then_some("delete")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        delete(ctx, self)
    }
}

fn delete(ctx: &Session, a: DeleteArgs) -> Result<u8, Failure> {
    use imgchain::ops::delete::{self, Request};
    let md = std::fs::symlink_metadata(&a.image)
        .with_context(|| format!("cannot delete {}", a.image.shown()))?;
    if md.file_type().is_symlink() {
        let target = std::fs::canonicalize(&a.image).unwrap_or_default();
        return Err(usage(anyhow::anyhow!(
            "{} is a symlink to {}: name the image itself to delete it, or remove the link with rm",
            a.image.shown(),
            target.shown()
        )));
    }
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let req = Request {
        image: found.image,
        with_overlays: a.with_overlays,
        force: a.force,
        purge: a.purge,
    };
    let plan = match delete::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_found(&e, &found, a.json)),
    };
    if a.dry_run {
        let space = Some(delete::space(&plan));
        let image = found.scan.forest.node(found.image).path.clone();
        let d = delete::describe(&plan);
        return Ok(dry_run::<delete::Delete>(
            ctx, &plan, &image, &d, space, &found, a.json,
        ));
    }
    if !confirmed("delete", &delete::describe(&plan), &question(&plan), a.yes)? {
        eprintln!("imgchain: not confirmed; nothing was deleted");
        return Ok(exit::CANCELLED);
    }
    if plan.images.len() > 1 && !a.json {
        let list: Vec<String> = plan
            .images
            .iter()
            .map(|i| i.path.shown().to_string())
            .collect();
        let how = if plan.purge {
            "Deleting"
        } else {
            "Moving into the trash"
        };
        eprintln!("{how}, in this order: {}", list.join(", "));
    }
    run_planned::<delete::Delete>(ctx, &plan, false, a.json)
}

/// What a delete asks: the image's name typed when the images it removes hold data (more
/// than empty overlays' metadata, `NAME_TYPED_FROM`), or plain yes or no.
fn question(plan: &imgchain::ops::delete::Plan) -> Question {
    let Some(image) = plan.images.last() else {
        return Question::YesNo("Delete nothing?".into());
    };
    let name = imgchain::forest::model::file_name(&image.path).to_string();
    let others = plan.images.len() - 1;
    let also = match others {
        0 => String::new(),
        n => format!(
            " and the {} built on it",
            imgchain::units::count(n as u64, "image")
        ),
    };
    let held: u64 = plan
        .images
        .iter()
        .map(|i| imgchain::ops::space::on_disk(&i.path))
        .sum();
    if held >= imgchain::ops::delete::NAME_TYPED_FROM {
        Question::TypeName {
            prompt: format!(
                "{name}{also} take{} {} on disk; {}.",
                if others == 0 { "s" } else { "" },
                imgchain::units::human_size(held),
                if plan.purge {
                    "deleting for good cannot be undone"
                } else {
                    "they move into the trash beside them"
                }
            ),
            name,
        }
    } else {
        Question::YesNo(format!("Delete {name}{also}?"))
    }
}
