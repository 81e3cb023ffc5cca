//! The `imgchain` command (ARCHITECTURE.md §5): its arguments, the session every command
//! runs with, one file per command, and the printer.

mod args;
mod commit;
mod delete;
mod failure;
mod merge;
mod output;
mod rebase;
mod repair;
mod runner;
mod session;
mod snapshot;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use imgchain::exit;
use imgchain::forest::diag::Severity;
use imgchain::text::Names;

use args::{Cli, Command};
use commit::commit;
use delete::delete;
use failure::Failure;
use merge::merge;
use rebase::rebase;
use repair::repair;
use session::{Session, print_json, report_skipped};
use snapshot::snapshot;
use ui::ui;

pub(crate) fn main() -> ExitCode {
    // A file size limit (RLIMIT_FSIZE) must surface as an EFBIG error that a commit reports
    // and recovers from, not as SIGXFSZ killing the process halfway through a write.
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("imgchain: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

pub(crate) fn run(cli: Cli) -> Result<u8, Failure> {
    let ctx = Session::new(&cli.global)?;
    if ctx.read_only
        && let Some(op) = cli.command.as_ref().and_then(writing)
    {
        eprintln!(
            "imgchain: {op} refused: imgchain was started with --read-only, so every image is \
             keep-RO and nothing on disk changes; drop --read-only to {op} (--dry-run shows the \
             plan)"
        );
        return Ok(exit::KEEP_READ_ONLY);
    }
    let code = match cli.command {
        None => ui(&ctx, cli.paths, cli.demo, cli.dir)?,
        Some(Command::Tree { json, paths }) => {
            let scan = ctx.scan(&paths, &ctx.scan_options())?;
            if json {
                print_json(&output::json_tree(&scan.forest, &scan.skipped))?;
            } else {
                print!("{}", output::text_tree(&scan.forest, ctx.paint));
                report_skipped(&scan);
                if scan.forest.nodes.is_empty() {
                    let shown: Vec<String> = if paths.is_empty() {
                        vec![".".into()]
                    } else {
                        paths.iter().map(|p| p.shown().to_string()).collect()
                    };
                    eprintln!(
                        "imgchain: no disk images under {} (qcow2, vmdk, vdi, vhdx, vpc, qed, \
                         luks by their headers; raw by the extensions in scan.raw_extensions)",
                        shown.join(", ")
                    );
                }
            }
            exit::OK
        }
        Some(Command::Info { json, scan, image }) => {
            let mut opts = ctx.scan_options();
            opts.max_depth = 0;
            opts.overlay_dirs.extend(scan);
            let abs = std::path::absolute(&image)
                .with_context(|| format!("cannot resolve {}", image.shown()))?;
            let mut paths = vec![abs.clone()];
            paths.extend(abs.parent().map(PathBuf::from));
            let scan = ctx.scan(&paths, &opts)?;
            let id = scan
                .forest
                .find(&abs)
                .with_context(|| format!("{} was not found after scanning it", abs.shown()))?;
            if json {
                let mut node = serde_json::to_value(output::json_node(&scan.forest, id))
                    .context("cannot encode the image as JSON")?;
                node["internal_snapshots"] = output::json_internal_snapshots(scan.forest.node(id));
                print_json(&node)?;
            } else {
                print!("{}", output::text_info(&scan.forest, id, ctx.paint));
            }
            exit::OK
        }
        Some(Command::Commit(args)) => commit(&ctx, args)?,
        Some(Command::Snapshot(args)) => snapshot(&ctx, args)?,
        Some(Command::Delete(args)) => delete(&ctx, args)?,
        Some(Command::Rebase(args)) => rebase(
            &ctx,
            &args.common,
            Some(PathBuf::from(args.backing)),
            args.format,
            args.unsafe_names,
        )?,
        Some(Command::Flatten(args)) => rebase(&ctx, &args.common, None, None, false)?,
        Some(Command::Merge(args)) => merge(&ctx, args)?,
        Some(Command::Repair(args)) => repair(&ctx, args)?,
        Some(Command::Check { json, paths }) => {
            let scan = ctx.scan(&paths, &ctx.scan_options())?;
            if json {
                print_json(&output::json_check(&scan.forest))?;
            } else {
                print!("{}", output::text_check(&scan.forest, ctx.paint));
                report_skipped(&scan);
            }
            let bad = scan
                .forest
                .nodes
                .iter()
                .flat_map(|n| &n.problems)
                .any(|p| p.severity() >= Severity::Warning);
            if bad { exit::PROBLEMS } else { exit::OK }
        }
    };
    Ok(code)
}

/// The name of the command `cmd` when it would change something on disk (not a dry run).
pub(crate) fn writing(cmd: &Command) -> Option<&'static str> {
    match cmd {
        Command::Commit(_) => Some("commit"),
        Command::Snapshot(a) if !a.dry_run => Some("snapshot"),
        Command::Delete(a) if !a.dry_run => Some("delete"),
        Command::Rebase(a) if !a.common.dry_run => Some("rebase"),
        Command::Flatten(a) if !a.common.dry_run => Some("flatten"),
        Command::Merge(a) if !a.common.dry_run => Some("merge"),
        Command::Repair(a) if !a.dry_run => Some("repair"),
        _ => None,
    }
}
