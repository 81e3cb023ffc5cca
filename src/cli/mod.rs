//! The `imgchain` command (ARCHITECTURE.md §5): its arguments, the session every command
//! runs with, one file per command, and the printer.

mod args;
mod clean;
mod command;
mod commit;
mod confirm;
mod delete;
mod failure;
mod merge;
mod meta;
mod output;
mod rebase;
mod repair;
mod runner;
mod session;
mod show;
mod snapshot;
mod trash;
mod ui;
mod undo;

use std::path::PathBuf;
use std::process::ExitCode;

use imgchain::exit;

use args::Global;
use command::Command;
use failure::Failure;
use session::Session;
use ui::ui;

/// Browse qcow2 backing chains as a forest, see each image's RW / RO / keep-RO state, and
/// commit overlays into their backing files safely.
#[derive(clap::Parser)]
#[command(
    name = "imgchain",
    version,
    after_help = "Modes: RW = a top image, writable; RO = a backing image, read-only except \
                  while a commit writes into it; KRO = keep-RO, must stay read-only (reason: \
                  requested, file-mode (no write permission bits), inherited from a protected \
                  overlay, or not-writable)."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Option<Commands>,
    /// Directories or images to open in the interactive UI [default: .]
    pub(crate) paths: Vec<PathBuf>,
    /// Build a sample forest in a temporary directory and open the UI on it
    #[arg(long)]
    pub(crate) demo: bool,
    /// With --demo: build the sample forest here and keep it (with DIR-elsewhere beside it)
    #[arg(long, value_name = "DIR", requires = "demo")]
    pub(crate) dir: Option<PathBuf>,
}

/// The registry of subcommands, one line each (`Name(file::Args)`, with its help), in the
/// order `--help` lists them.
macro_rules! commands {
    ($($(#[$doc:meta])* $V:ident($A:ty)),* $(,)?) => {
        #[derive(clap::Subcommand)]
        pub(crate) enum Commands {
            $($(#[$doc])* $V($A)),*
        }

        impl Commands {
            fn writing(&self) -> Option<&'static str> {
                match self {
                    $(Commands::$V(a) => a.writing()),*
                }
            }

            fn run(self, ctx: &Session) -> Result<u8, Failure> {
                match self {
                    $(Commands::$V(a) => a.run(ctx)),*
                }
            }
        }
    };
}

commands! {
    /// Print the forest of backing chains under PATHs
    Tree(show::TreeArgs),
    /// Show one image in full: format facts, backing file, chain, overlays in its directory,
    /// mode and problems
    Info(show::InfoArgs),
    /// Commit IMAGE's data into its backing file (or into BASE further down its chain),
    /// reopening the base read-write only for the copy
    Commit(commit::CommitArgs),
    /// Create a qcow2 overlay NEW on IMAGE, as qemu-img create -b IMAGE -F FMT does; IMAGE
    /// becomes its backing file (read-only from then on) and is never written
    Snapshot(snapshot::SnapshotArgs),
    /// Delete IMAGE; refused if anything is built on it, unless --with-overlays deletes them
    /// too (overlays first)
    Delete(delete::DeleteArgs),
    /// Give IMAGE another backing file without changing what its guest reads (the clusters
    /// the two chains read differently are copied into IMAGE first), or with -u only rewrite
    /// the name and format, for a backing file that moved
    Rebase(rebase::RebaseArgs),
    /// Make IMAGE independent: copy into it everything it reads from its backing chain, then
    /// drop its backing file (qemu-img rebase -b "")
    Flatten(rebase::FlattenArgs),
    /// Remove a middle layer: commit IMAGE into its backing file, point IMAGE's overlays at
    /// that file, and delete IMAGE; no overlay's disk changes (libvirt's "delete an external
    /// snapshot"). Run it again to finish a merge that was cut short
    Merge(merge::MergeArgs),
    /// For each image whose backing file is missing, offer the images under PATHs that could
    /// be it (same file name, then same virtual size and format) and point the image at the
    /// chosen one (rebase -u), asking first unless --yes
    Repair(repair::RepairArgs),
    /// List, restore or empty what delete and merge moved into the trash beside each image
    /// (.imgchain-trash)
    Trash(trash::TrashArgs),
    /// Report what PATHs could free — leftovers of interrupted operations, images nothing
    /// uses, duplicates, what each layer holds, the trash — and free it group by group through
    /// the trash
    Clean(clean::CleanArgs),
    /// Put back, byte for byte, the images the last commit, merge, flatten or rebase under
    /// PATH changed, from the clones made before it wrote (XFS with reflink, btrfs); refused
    /// if one changed since or is in use
    Undo(undo::UndoArgs),
    /// Report problems only (missing backing files, loops, damaged headers, ...); exits 3 if
    /// any warning or error is found
    Check(show::CheckArgs),
    /// Print the shell completion script for SHELL (e.g. imgchain completions bash >
    /// /etc/bash_completion.d/imgchain)
    Completions(meta::CompletionsArgs),
    /// Print imgchain's man page, or a command's; --dir writes them all
    Man(meta::ManArgs),
}

/// The command line as clap parses it, its help ending with every exit code.
fn command() -> clap::Command {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let modes = cmd
        .get_after_help()
        .map(|s| s.to_string())
        .unwrap_or_default();
    cmd.after_help(format!("{modes}\n{}", exit::help()))
}

/// A first path that does not exist but reads like a mistyped command: a usage error that
/// names the command (a path that exists always opens the UI).
fn mistyped_command(paths: &[PathBuf]) -> Option<Failure> {
    let first = paths.first()?;
    let word = first.to_str()?;
    if first.symlink_metadata().is_ok() || word.contains('/') {
        return None;
    }
    let cmd = command();
    let best = cmd
        .get_subcommands()
        .map(|s| (strsim::jaro(word, s.get_name()), s.get_name().to_string()))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(failure::usage(anyhow::anyhow!(
        "{word:?} is neither a command nor a file or directory here; did you mean imgchain {}? \
         (imgchain --help lists the commands)",
        best.1
    )))
}

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
    let cli = match command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("imgchain: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

pub(crate) fn run(cli: Cli) -> Result<u8, Failure> {
    if cli.command.is_none()
        && let Some(f) = mistyped_command(&cli.paths)
    {
        return Err(f);
    }
    let ctx = Session::new(&cli.global, command)?;
    if ctx.read_only
        && let Some(op) = cli.command.as_ref().and_then(Commands::writing)
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
        Some(command) => command.run(&ctx)?,
    };
    Ok(code)
}
