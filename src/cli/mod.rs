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
mod show;
mod snapshot;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use imgchain::exit;

use args::{Cli, Command};
use commit::commit;
use delete::delete;
use failure::Failure;
use merge::merge;
use rebase::rebase;
use repair::repair;
use session::Session;
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
        Some(Command::Tree { json, paths }) => show::tree(&ctx, json, &paths)?,
        Some(Command::Info { json, scan, image }) => show::info(&ctx, json, scan, &image)?,
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
        Some(Command::Check { json, paths }) => show::check(&ctx, json, &paths)?,
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
