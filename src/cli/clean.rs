//! `imgchain clean`: what a host can free, in groups, with the bytes and the command for each;
//! without `--dry-run` it asks per group and moves what goes into the trash
//! (ARCHITECTURE.md §3, "Clean").

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use imgchain::exit;
use imgchain::ops::clean::{Item, Survey, survey};
use imgchain::ops::{Description, Operation, Refusal, delete};
use imgchain::text::Names;
use imgchain::units::human_size;

use super::command::Command;
use super::confirm::{Question, confirmed};
use super::failure::{Failure, usage};
use super::runner::discover;
use super::session::{Session, print_json};

#[derive(Args)]
pub(crate) struct CleanArgs {
    /// Report only; change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the report (and what was moved into the trash) as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Free every group offered without asking (needed where there is no terminal to ask on)
    #[arg(short = 'y', long, conflicts_with = "dry_run")]
    pub(crate) yes: bool,
    /// Directories to survey [default: .]
    pub(crate) paths: Vec<PathBuf>,
}

impl Command for CleanArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.dry_run).then_some("clean")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        if !self.dry_run && !self.yes && !std::io::stdin().is_terminal() {
            return Err(usage(anyhow::anyhow!(
                "imgchain clean asks before it frees anything, but there is no terminal to ask \
                 on: add --dry-run for the report alone, or --yes to free every group offered"
            )));
        }
        let paths = if self.paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            self.paths.clone()
        };
        let paths: Vec<PathBuf> = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let s = match survey(&paths, &ctx.scan_options(), &ctx.settings) {
            Ok(s) => s,
            Err(e) => return Ok(super::runner::refused(&e, self.json)),
        };
        let keep = ctx.config.trash.keep.0;
        if !self.json {
            print_report(&s, keep);
        }
        let freed = if self.dry_run {
            Freed::default()
        } else {
            free(ctx, &s, keep, self.yes)?
        };
        if self.json {
            print_json(&json(&s, keep, &freed, self.dry_run))?;
        } else if !freed.trashed.is_empty() || freed.emptied_bytes > 0 {
            println!(
                "Moved {} into the trash; emptied {} from it.",
                imgchain::units::count(freed.trashed.len() as u64, "file"),
                human_size(freed.emptied_bytes)
            );
        }
        Ok(if freed.failed.is_empty() {
            exit::OK
        } else {
            exit::IO_ERROR
        })
    }
}

/// What a clean moved into the trash or emptied from it, and what failed.
#[derive(Default)]
struct Freed {
    trashed: Vec<PathBuf>,
    emptied_bytes: u64,
    failed: Vec<(PathBuf, String)>,
}

/// The groups that may be freed: leftovers, unused bases, and tops no VM names (only when VM
/// definitions were found).
fn offered(s: &Survey) -> Vec<(&'static str, &[Item])> {
    let mut g: Vec<(&'static str, &[Item])> = vec![
        ("leftovers of interrupted operations", &s.leftovers),
        ("bases nothing is built on any more", &s.unused_bases),
    ];
    if s.definitions_found {
        g.push(("top images no VM definition names", &s.unnamed_tops));
    }
    g.into_iter()
        .filter(|(_, items)| !items.is_empty())
        .collect()
}

fn print_report(s: &Survey, keep: std::time::Duration) {
    for line in s.lines(keep) {
        println!("{line}");
    }
    println!("{}", looked(s));
    for (p, e) in &s.unreadable {
        eprintln!("imgchain: could not compare {}: {e}", p.shown());
    }
}

/// Where the survey looked, in a line.
fn looked(s: &Survey) -> String {
    format!(
        "Looked for images built on these and for VM definitions in: {}",
        imgchain::words::searched_places(&s.searched)
    )
}

/// Asks per group (unless `yes`) and moves what is confirmed into the trash; then offers to
/// empty what has been in the trash longer than `keep`.
fn free(ctx: &Session, s: &Survey, keep: std::time::Duration, yes: bool) -> Result<Freed, Failure> {
    let mut freed = Freed::default();
    for (title, items) in offered(s) {
        let mut d = Description::new(format!("Would move into the trash the {title}:"));
        for i in items {
            d.item(format!("{} ({})", i.path.shown(), human_size(i.bytes)));
        }
        let q = Question::YesNo(format!("Move the {title} into the trash?"));
        if !yes && !confirmed("clean", &d, &q, false)? {
            continue;
        }
        for i in items {
            match discard(ctx, i, title.starts_with("leftovers")) {
                Ok(()) => freed.trashed.push(i.path.clone()),
                Err(e) => freed.failed.push((i.path.clone(), e)),
            }
        }
    }
    let old = s.older(keep).count();
    if old > 0 {
        let d = Description::new(format!(
            "Would empty {old} trash entries older than the retention:"
        ));
        let q = Question::YesNo("Empty them for good?".into());
        if yes || confirmed("clean", &d, &q, false)? {
            let e = imgchain::ops::restore::empty(s.older(keep));
            freed.emptied_bytes = e.removed.iter().map(|(_, b)| b).sum();
            freed.failed.extend(e.failed);
        }
    }
    for (p, e) in &freed.failed {
        eprintln!("imgchain: {}: {e}", p.shown());
    }
    Ok(freed)
}

/// Moves one file into the trash: a leftover as it is, an image through delete's plan and run
/// (every guard again on a fresh scan).
fn discard(ctx: &Session, i: &Item, leftover: bool) -> Result<(), String> {
    if leftover {
        let ident = imgchain::image::file::FileId::of_path(&i.path)
            .ok_or_else(|| "it is gone".to_string())?;
        return imgchain::trash::Throw::new("clean", &i.path)
            .file(&i.path, ident, None, None)
            .map_err(|e| e.to_string());
    }
    let found = discover(ctx, &i.path, &[])
        .map_err(|f| format!("{:#}", f.error))?
        .map_err(|e| e.to_string())?;
    let req = delete::Request {
        image: found.image,
        with_overlays: false,
        force: false,
        purge: false,
    };
    let plan = delete::plan(&found.scan.forest, &req).map_err(|e| e.to_string())?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let run = imgchain::ops::Run {
        settings: &ctx.settings,
        cancel: &cancel,
        progress: &mut |_| {},
    };
    let outcome = delete::Delete::run(&plan, run).map_err(|e: Refusal| e.to_string())?;
    match outcome.failed {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn json(s: &Survey, keep: std::time::Duration, freed: &Freed, dry_run: bool) -> serde_json::Value {
    let items = |v: &[Item]| {
        v.iter()
            .map(|i| {
                serde_json::json!({
                    "path": imgchain::text::lossy(&i.path),
                    "bytes": i.bytes,
                    "modified": i.modified,
                })
            })
            .collect::<Vec<_>>()
    };
    let old: Vec<_> = s
        .trash
        .iter()
        .filter(|l| imgchain::ops::restore::age(l) >= keep)
        .collect();
    let (searched, _) = super::output::json_searched(&s.searched);
    serde_json::json!({
        "dry_run": dry_run,
        "leftovers": items(&s.leftovers),
        "unused_bases": items(&s.unused_bases),
        "unnamed_tops": items(&s.unnamed_tops),
        "tops_offered": s.definitions_found,
        "duplicates": s.duplicates.iter().map(|d| serde_json::json!({
            "virtual_size": d.virtual_size,
            "images": items(&d.images),
        })).collect::<Vec<_>>(),
        "layers": s.layers.iter().map(|l| serde_json::json!({
            "path": imgchain::text::lossy(&l.item.path),
            "bytes": l.item.bytes,
            "freed_by": l.freed_by,
        })).collect::<Vec<_>>(),
        "trash": {
            "entries": s.trash.len(),
            "bytes": s.trash.iter().map(|l| l.bytes()).sum::<u64>(),
            "older": old.len(),
            "older_bytes": old.iter().map(|l| l.bytes()).sum::<u64>(),
            "keep_s": keep.as_secs(),
        },
        "unreadable": s.unreadable.iter().map(|(p, e)| serde_json::json!({
            "path": imgchain::text::lossy(p), "error": e,
        })).collect::<Vec<_>>(),
        "searched": searched,
        "trashed": freed.trashed.iter().map(|p| imgchain::text::lossy(p)).collect::<Vec<_>>(),
        "emptied_bytes": freed.emptied_bytes,
        "failed": freed.failed.iter().map(|(p, e)| serde_json::json!({
            "path": imgchain::text::lossy(p), "error": e,
        })).collect::<Vec<_>>(),
        "exit_code": if freed.failed.is_empty() { exit::OK } else { exit::IO_ERROR },
    })
}
