//! `imgchain rebase` and `imgchain flatten`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use imgchain::text::Names;

use super::args::{ChainArgs, parse_format};
use super::command::Command;
use super::failure::{Failure, usage};
use super::runner::{discover, dry_run, note_outside, refused, run_planned};
use super::session::Session;

#[derive(Args)]
pub(crate) struct RebaseArgs {
    /// The new backing file; a relative name is taken from IMAGE's directory and written as
    /// it is, as qemu-img does
    #[arg(short = 'b', long = "backing", value_name = "NEWBASE", value_parser = clap::value_parser!(std::ffi::OsString))]
    pub(crate) backing: std::ffi::OsString,
    /// The new backing file's format (checked against what the file is)
    #[arg(short = 'F', long = "backing-format", value_name = "FMT", value_parser = parse_format)]
    pub(crate) format: Option<imgchain::image::probe::Format>,
    /// Only rewrite the backing name and format: the new file must hold what the old one
    /// held (a moved or copied backing file), and must have its virtual size
    #[arg(short = 'u', long = "unsafe")]
    pub(crate) unsafe_names: bool,
    /// Upgrade a qcow2 v2 (compat=0.10) IMAGE to compat=1.1 before the copy (qemu-img
    /// amend, under imgchain's locks), so that it can gain refcount blocks crash-safely
    #[arg(long, conflicts_with = "unsafe_names")]
    pub(crate) amend: bool,
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

#[derive(Args)]
pub(crate) struct FlattenArgs {
    /// Upgrade a qcow2 v2 (compat=0.10) IMAGE to compat=1.1 before the copy (qemu-img
    /// amend, under imgchain's locks), so that it can gain refcount blocks crash-safely
    #[arg(long)]
    pub(crate) amend: bool,
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

impl Command for RebaseArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.common.dry_run).then_some("rebase")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        let backing = Some(PathBuf::from(self.backing));
        let how = How {
            format: self.format,
            unsafe_names: self.unsafe_names,
            amend: self.amend,
        };
        rebase(ctx, &self.common, backing, how)
    }
}

impl Command for FlattenArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.common.dry_run).then_some("flatten")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        let how = How {
            format: None,
            unsafe_names: false,
            amend: self.amend,
        };
        rebase(ctx, &self.common, None, how)
    }
}

/// How to rebase, besides onto what: `-F`, `-u`, `--amend`.
struct How {
    format: Option<imgchain::image::probe::Format>,
    unsafe_names: bool,
    amend: bool,
}

fn rebase(ctx: &Session, a: &ChainArgs, backing: Option<PathBuf>, how: How) -> Result<u8, Failure> {
    use imgchain::ops::Refusal;
    use imgchain::ops::rebase::{self, Request};
    let image_dir = std::path::absolute(&a.image)
        .with_context(|| format!("cannot resolve {}", a.image.shown()))?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut name = None;
    let backing = match backing {
        Some(b) if b.as_os_str().is_empty() => {
            return Err(usage(anyhow::anyhow!(
                "-b needs a file; to drop the backing file, use imgchain flatten"
            )));
        }
        // A relative name, or one through a symlink, is written as given, as qemu-img does;
        // a plain absolute one picks the shortest name that leads there.
        Some(b) => {
            let plain = b.is_absolute() && std::fs::canonicalize(&b).is_ok_and(|c| c == b);
            name = (!plain).then(|| imgchain::forest::model::header_name(&b.to_string_lossy()));
            Some(if b.is_relative() {
                image_dir.join(b)
            } else {
                b
            })
        }
        None => None,
    };
    let mut dirs = a.scan.clone();
    dirs.extend(backing.iter().filter_map(|b| b.parent().map(PathBuf::from)));
    let found = match discover(ctx, &a.image, &dirs)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let forest = &found.scan.forest;
    let backing_node = match &backing {
        None => None,
        Some(b) => match forest.find(b) {
            Some(id) => Some(id),
            None => {
                let e = Refusal::BadTarget {
                    path: b.clone(),
                    what: if b.exists() {
                        "is not an image imgchain can use as a backing file".into()
                    } else {
                        "does not exist".into()
                    },
                };
                return Ok(refused(&e, a.json));
            }
        },
    };
    let req = Request {
        image: found.image,
        backing: backing_node,
        format: how.format,
        unsafe_names: how.unsafe_names,
        name,
        amend: how.amend,
    };
    let plan = match rebase::plan(forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.dry_run {
        let d = rebase::describe(&plan);
        let space = match rebase::space(&plan, ctx.settings.copy.clone) {
            Ok(s) => s,
            Err(e) => return Ok(refused(&e, a.json)),
        };
        return Ok(dry_run::<rebase::Rebase>(
            ctx,
            &plan,
            &plan.image.path,
            &d,
            space,
            &found,
            a.json,
        ));
    }
    note_outside(&found);
    run_planned::<rebase::Rebase>(ctx, &plan, a.progress, a.json)
}
