//! The `imgchain` command (ARCHITECTURE.md §5): its arguments, the session every command
//! runs with, one file per command, and the printer.

mod args;
mod command;
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

use args::Global;
use command::Command;
use failure::Failure;
use session::Session;
use ui::ui;

/// Browse qcow2 backing chains as a forest, see each image's RW / RO / keep-RO state, and
/// commit overlays into their backing files safely.
#[derive(Parser)]
#[command(
    name = "imgchain",
    version,
    after_help = "Modes: RW = a top image, writable; RO = a backing image, read-only except \
                  while a commit writes into it; KRO = keep-RO, must stay read-only (reason: \
                  requested, inherited from a protected overlay, or not-writable).\n\
                  Exit codes: 0 ok, 1 error, 2 usage or config error (or the file to create \
                  exists), 3 check found problems; operations: 10 no backing file, 11 keep-RO, \
                  12 in use, 13 shared base or images built on it, 14 I/O error (images \
                  consistent), 15 base could not be reopened read-only, 16 unsupported, 17 not \
                  enough free space, 18 a file the images' owners could not write or read, 130 \
                  cancelled."
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
    /// Report problems only (missing backing files, loops, damaged headers, ...); exits 3 if
    /// any warning or error is found
    Check(show::CheckArgs),
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
