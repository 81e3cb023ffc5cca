//! `imgchain repair`: the candidates for each missing backing file, asked for one by one.

use std::path::PathBuf;

use clap::Args;

use std::io::IsTerminal;

use anyhow::Context;

use imgchain::exit;
use imgchain::text::Names;

use super::command::Command;
use super::failure::Failure;
use super::session::Session;

#[derive(Args)]
pub(crate) struct RepairArgs {
    /// Apply the best candidate of each image without asking
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) yes: bool,
    /// Print the candidates, and change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Directories or images to scan for broken images and candidates [default: .]
    pub(crate) paths: Vec<PathBuf>,
}

impl Command for RepairArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.dry_run).then_some("repair")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        repair(ctx, self)
    }
}

fn repair(ctx: &Session, a: RepairArgs) -> Result<u8, Failure> {
    let scan = ctx.scan(&a.paths, &ctx.scan_options())?;
    let forest = &scan.forest;
    let fixes = imgchain::ops::repair::find(forest);
    if fixes.is_empty() {
        println!("No image under the scanned paths has a missing backing file.");
        return Ok(exit::OK);
    }
    let interactive = std::io::stdin().is_terminal() && !a.yes && !a.dry_run;
    let mut left = 0;
    let mut worst = exit::OK;
    for fix in &fixes {
        match repair_one(ctx, forest, fix, (&a, interactive))? {
            Some(exit::OK) => {}
            Some(code) => {
                worst = worst.max(code);
                left += 1;
            }
            None => left += 1,
        }
    }
    Ok(if worst != exit::OK {
        worst
    } else if left > 0 {
        exit::PROBLEMS
    } else {
        exit::OK
    })
}

/// Lists the candidates for one missing backing file and applies the one chosen (on a
/// terminal, or the sure one with `--yes`); the run's exit code, or `None` when nothing was
/// applied.
fn repair_one(
    ctx: &Session,
    forest: &imgchain::forest::Forest,
    fix: &imgchain::ops::repair::Fix,
    (a, interactive): (&RepairArgs, bool),
) -> Result<Option<u8>, Failure> {
    use imgchain::ops::Report;
    use imgchain::ops::rebase::{self, Request};
    let image = &forest.node(fix.image).path;
    println!(
        "{} names {}, which does not exist.",
        image.shown(),
        fix.missing.shown()
    );
    if fix.candidates.is_empty() {
        println!("  No image under the scanned paths could be it; scan more paths.");
        return Ok(None);
    }
    for (i, c) in fix.candidates.iter().enumerate() {
        let path = forest.node(c.id).path.shown();
        println!("  {}) {path} ({})", i + 1, c.describe());
    }
    let sure = fix.candidates.first().is_some_and(|c| c.sure());
    let chosen = if a.dry_run {
        None
    } else if a.yes && sure {
        Some(0)
    } else if a.yes {
        println!(
            "  --yes applies only a file with the missing file's name and size that no VM uses \
             and nothing else is built on; none is, so nothing was changed: choose one on a \
             terminal, or name it with imgchain rebase -u -b FILE {}",
            image.quoted()
        );
        None
    } else if interactive {
        ask_choice(fix.candidates.len())?
    } else {
        println!("  Run with --yes to point it at candidate 1, or on a terminal to choose.");
        None
    };
    let Some(k) = chosen else {
        return Ok(None);
    };
    let req = Request {
        image: fix.image,
        backing: Some(fix.candidates[k].id),
        format: None,
        unsafe_names: true,
        name: imgchain::ops::repair::kept_relative(forest, fix.image, fix.candidates[k].id),
        amend: false,
    };
    let outcome = rebase::plan(forest, &req).and_then(|plan| {
        rebase::run(
            &plan,
            imgchain::ops::Run {
                settings: &ctx.settings,
                cancel: &std::sync::atomic::AtomicBool::new(false),
                progress: &mut |_| {},
            },
        )
    });
    Ok(Some(match outcome {
        Ok(o) => {
            println!("  {}", o.summary());
            o.exit_code()
        }
        Err(e) => {
            eprintln!("imgchain: {e}");
            e.exit_code()
        }
    }))
}

/// Asks which of `n` candidates to apply; `None`: none.
pub(crate) fn ask_choice(n: usize) -> Result<Option<usize>, Failure> {
    use std::io::Write;
    let range = if n == 1 {
        "1".to_string()
    } else {
        format!("1-{n}")
    };
    print!("  Point it at which? [{range}, or Enter for none] ");
    std::io::stdout()
        .flush()
        .context("cannot write the question")?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    Ok(line
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|k| (1..=n).contains(k))
        .map(|k| k - 1))
}
