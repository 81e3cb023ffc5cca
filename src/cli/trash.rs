//! `imgchain trash list|restore|empty`: what delete and merge moved into the trash beside
//! each image, taking a file back, and freeing the space (ARCHITECTURE.md §3, "Trash").

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use imgchain::exit;
use imgchain::ops::restore;
use imgchain::text::Names;
use imgchain::trash::Listed;
use imgchain::units::{human_age, human_size};

use super::command::Command;
use super::confirm::{Question, confirmed};
use super::failure::{Failure, usage};
use super::runner::{refused, run_planned};
use super::session::{Session, print_json};

#[derive(Args)]
pub(crate) struct TrashArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// List what is in the trash under PATHs [default: .]: when, by which operation, from
    /// where, and the bytes it holds
    List {
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
        paths: Vec<PathBuf>,
    },
    /// Move IMAGE (the path it had) back from the trash beside it; refused when that name is
    /// taken, or when the file it was built on changed since
    Restore {
        /// Print the outcome as JSON
        #[arg(long)]
        json: bool,
        image: PathBuf,
    },
    /// Remove for good what has been in the trash under PATHs [default: .] longer than
    /// [trash] keep (7d unless the config says otherwise)
    Empty {
        /// Remove what has been there at least this long instead: 30m, 12h, 7d, 2w, or 0 for
        /// everything
        #[arg(long, value_name = "DURATION", value_parser = imgchain::units::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Remove without asking (needed where there is no terminal to ask on)
        #[arg(short = 'y', long)]
        yes: bool,
        /// Print the outcome as JSON
        #[arg(long)]
        json: bool,
        paths: Vec<PathBuf>,
    },
}

impl Command for TrashArgs {
    fn writing(&self) -> Option<&'static str> {
        match self.action {
            Action::List { .. } => None,
            Action::Restore { .. } => Some("trash restore"),
            Action::Empty { .. } => Some("trash empty"),
        }
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        match self.action {
            Action::List { json, paths } => list(ctx, &paths, json),
            Action::Restore { json, image } => restore(ctx, &image, json),
            Action::Empty {
                older_than,
                yes,
                json,
                paths,
            } => {
                let keep = older_than.unwrap_or(ctx.config.trash.keep.0);
                empty(ctx, &paths, keep, yes, json)
            }
        }
    }
}

/// The directories with a trash under `paths` (default `.`), as a scan meets them, and the
/// directory of each path that is a file.
pub(crate) fn trash_dirs(ctx: &Session, paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let scan = ctx.scan(&paths, &ctx.scan_options())?;
    let mut dirs = scan.trash;
    dirs.extend(
        paths
            .iter()
            .filter(|p| p.is_file())
            .filter_map(|p| p.parent().map(Path::to_path_buf)),
    );
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

fn list(ctx: &Session, paths: &[PathBuf], json: bool) -> Result<u8, Failure> {
    let (listed, errors) = restore::list(&trash_dirs(ctx, paths)?);
    for e in &errors {
        eprintln!("imgchain: {e}");
    }
    if json {
        print_json(&serde_json::json!({
            "entries": listed.iter().map(entry_json).collect::<Vec<_>>(),
            "bytes": listed.iter().map(Listed::bytes).sum::<u64>(),
            "errors": errors.iter().map(|e| serde_json::json!({
                "path": imgchain::text::lossy(&e.path), "error": e.what,
            })).collect::<Vec<_>>(),
        }))?;
        return Ok(exit::OK);
    }
    if listed.is_empty() {
        println!("The trash is empty.");
        return Ok(exit::OK);
    }
    for l in &listed {
        println!("{}", entry_line(l));
    }
    let bytes = listed.iter().map(Listed::bytes).sum::<u64>();
    println!(
        "{} in the trash. imgchain trash restore PATH brings one back; imgchain trash empty \
         removes what is older than [trash] keep (--older-than 0: everything).",
        human_size(bytes)
    );
    Ok(exit::OK)
}

/// One entry in a line: its age, bytes, operation and the paths its files had.
fn entry_line(l: &Listed) -> String {
    let names: Vec<String> = l
        .files
        .iter()
        .map(|f| restore::original(l, &f.name).shown().to_string())
        .collect();
    let (op, age) = match &l.record {
        Ok(r) => (
            r.operation.clone(),
            format!("{} ago", human_age(restore::age(l))),
        ),
        Err(e) => ("?".into(), e.clone()),
    };
    let names = if names.is_empty() {
        "(nothing: an interrupted move)".to_string()
    } else {
        names.join(", ")
    };
    format!("{age:>10}  {:>9}  {op:<7} {names}", human_size(l.bytes()))
}

fn entry_json(l: &Listed) -> serde_json::Value {
    let lossy = imgchain::text::lossy;
    let record = l.record.as_ref().ok();
    serde_json::json!({
        "path": lossy(&l.dir.join(imgchain::trash::DIR).join(&l.entry)),
        "dir": lossy(&l.dir),
        "operation": record.map(|r| r.operation.clone()),
        "when": record.map(|r| r.when),
        "why": record.map(|r| r.why.clone()),
        "group": record.map(|r| r.group.clone()),
        "undo": l.is_undo(),
        "bytes": l.bytes(),
        "error": l.record.as_ref().err(),
        "files": l.files.iter().map(|f| {
            let t = record.and_then(|r| r.files.iter().find(|t| t.ident == f.ident));
            serde_json::json!({
                "path": lossy(&restore::original(l, &f.name)),
                "bytes": f.bytes,
                "data_file_of": t.and_then(|t| t.data_file_of.clone()),
                "backing": t.and_then(|t| t.backing.as_ref()).map(|b| b.path.clone()),
            })
        }).collect::<Vec<_>>(),
    })
}

fn restore(ctx: &Session, image: &Path, json: bool) -> Result<u8, Failure> {
    let image = std::path::absolute(image).map_err(|e| usage(anyhow::Error::from(e)))?;
    match restore::plan(&image) {
        Ok(plan) => run_planned::<restore::Restore>(ctx, &plan, false, json),
        Err(e) => Ok(refused(&e, json)),
    }
}

fn empty(
    ctx: &Session,
    paths: &[PathBuf],
    keep: std::time::Duration,
    yes: bool,
    json: bool,
) -> Result<u8, Failure> {
    let dirs = trash_dirs(ctx, paths)?;
    let (listed, errors) = restore::list(&dirs);
    let due: Vec<&Listed> = listed.iter().filter(|l| restore::age(l) >= keep).collect();
    if !due.is_empty() && !yes {
        let mut d = imgchain::ops::Description::new(format!(
            "Would remove for good {} of the trash ({}), older than {}:",
            entries(due.len()),
            human_size(due.iter().map(|l| l.bytes()).sum()),
            human_age(keep)
        ));
        for l in &due {
            d.item(entry_line(l));
        }
        let q = Question::YesNo("Remove them for good?".into());
        if !confirmed("trash empty", &d, &q, false)? {
            eprintln!("imgchain: not confirmed; nothing was removed");
            return Ok(exit::CANCELLED);
        }
    }
    let restore::Emptied {
        removed: done,
        mut failed,
    } = restore::empty(due);
    failed.extend(errors.into_iter().map(|e| (e.path, e.what)));
    let freed: u64 = done.iter().map(|(_, b)| b).sum();
    let summary = format!(
        "Removed {} from the trash, {} freed{}.",
        entries(done.len()),
        human_size(freed),
        match failed.len() {
            0 => String::new(),
            n => format!("; {} could not be removed", entries(n)),
        }
    );
    let code = if failed.is_empty() {
        exit::OK
    } else {
        exit::IO_ERROR
    };
    if json {
        print_json(&serde_json::json!({
            "removed": done.iter().map(|(l, b)| serde_json::json!({
                "path": imgchain::text::lossy(&l.dir.join(imgchain::trash::DIR).join(&l.entry)),
                "bytes": b,
            })).collect::<Vec<_>>(),
            "freed_bytes": freed,
            "failed": failed.iter().map(|(p, e)| serde_json::json!({
                "path": imgchain::text::lossy(p), "error": e,
            })).collect::<Vec<_>>(),
            "exit_code": code,
            "summary": summary,
        }))?;
    } else {
        for (p, e) in &failed {
            eprintln!("imgchain: cannot remove {}: {e}", p.shown());
        }
        println!("{summary}");
    }
    Ok(code)
}

/// "1 entry", "2 entries".
fn entries(n: usize) -> String {
    match n {
        1 => "1 entry".into(),
        n => format!("{n} entries"),
    }
}
