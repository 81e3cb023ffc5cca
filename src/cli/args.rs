//! The command line: clap's types for every command and flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    pub(crate) command: Option<Command>,
    /// Directories or images to open in the interactive UI [default: .]
    pub(crate) paths: Vec<PathBuf>,
    /// Build a sample forest in a temporary directory and open the UI on it
    #[arg(long)]
    pub(crate) demo: bool,
    /// With --demo: build the sample forest here and keep it (with DIR-elsewhere beside it)
    #[arg(long, value_name = "DIR", requires = "demo")]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct Global {
    /// Treat every image as keep-RO (requested): nothing can be committed
    #[arg(long, global = true)]
    pub(crate) read_only: bool,
    /// Keep images matching GLOB read-only, and their backing chains with them (repeatable;
    /// a glob without "/" matches file names, with "/" absolute paths)
    #[arg(long = "protect", value_name = "GLOB", global = true)]
    pub(crate) protect: Vec<String>,
    /// Read the configuration from FILE instead of ~/.config/imgchain/config.toml
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// No colours in output (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    pub(crate) no_color: bool,
    /// Go on when a libvirt connection of scan.libvirt_uris cannot be reached, without
    /// checking its VMs' disks (otherwise a write that could change them is refused)
    #[arg(long, global = true)]
    pub(crate) skip_unreachable: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Print the forest of backing chains under PATHs
    Tree {
        /// Print JSON: {"roots": [...], "nodes": [...]}
        #[arg(long)]
        json: bool,
        /// Directories or images [default: .]
        paths: Vec<PathBuf>,
    },
    /// Show one image in full: format facts, backing file, chain, overlays in its directory,
    /// mode and problems
    Info {
        /// Print the node as JSON
        #[arg(long)]
        json: bool,
        /// Also search DIR (recursively) for overlays of IMAGE, as scan.overlay_dirs does;
        /// repeatable
        #[arg(long = "scan", value_name = "DIR")]
        scan: Vec<PathBuf>,
        /// The image file
        image: PathBuf,
    },
    /// Commit IMAGE's data into its backing file (or into BASE further down its chain),
    /// reopening the base read-write only for the copy
    Commit(CommitArgs),
    /// Create a qcow2 overlay NEW on IMAGE, as qemu-img create -b IMAGE -F FMT does; IMAGE
    /// becomes its backing file (read-only from then on) and is never written
    Snapshot(SnapshotArgs),
    /// Delete IMAGE; refused if anything is built on it, unless --with-overlays deletes them
    /// too (overlays first)
    Delete(DeleteArgs),
    /// Give IMAGE another backing file without changing what its guest reads (the clusters
    /// the two chains read differently are copied into IMAGE first), or with -u only rewrite
    /// the name and format, for a backing file that moved
    Rebase(RebaseArgs),
    /// Make IMAGE independent: copy into it everything it reads from its backing chain, then
    /// drop its backing file (qemu-img rebase -b "")
    Flatten(FlattenArgs),
    /// Remove a middle layer: commit IMAGE into its backing file, point IMAGE's overlays at
    /// that file, and delete IMAGE; no overlay's disk changes (libvirt's "delete an external
    /// snapshot"). Run it again to finish a merge that was cut short
    Merge(MergeArgs),
    /// For each image whose backing file is missing, offer the images under PATHs that could
    /// be it (same file name, then same virtual size and format) and point the image at the
    /// chosen one (rebase -u), asking first unless --yes
    Repair(RepairArgs),
    /// Report problems only (missing backing files, loops, damaged headers, ...); exits 3 if
    /// any warning or error is found
    Check {
        /// Print JSON: {"images": N, "problems": [...]}
        #[arg(long)]
        json: bool,
        /// Directories or images [default: .]
        paths: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub(crate) struct CommitArgs {
    /// Commit into BASE, an image further down IMAGE's backing chain; the images in
    /// between keep their data (implies -d, as in qemu-img)
    #[arg(short = 'b', value_name = "BASE")]
    pub(crate) base: Option<PathBuf>,
    /// Keep IMAGE's data after committing it (default: empty IMAGE, as qemu-img does)
    #[arg(short = 'd')]
    pub(crate) keep: bool,
    /// Commit even if the base has other overlays (their disks change) or persistent
    /// bitmaps (they become invalid), or its filesystem may be too full
    #[arg(long)]
    pub(crate) force: bool,
    /// Show progress
    #[arg(short = 'p')]
    pub(crate) progress: bool,
    /// IMAGE is in use by a running QEMU or qemu-storage-daemon with a QMP socket: have it
    /// commit IMAGE into its backing file itself (block-commit) and pivot onto it
    #[arg(long, conflicts_with_all = ["base", "keep"])]
    pub(crate) live: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    pub(crate) speed: Option<u64>,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be committed where, and where other overlays were looked for, and
    /// change nothing
    #[arg(long, conflicts_with = "live")]
    pub(crate) dry_run: bool,
    /// Also look for other overlays of the base under PATH (repeatable; the directories
    /// of IMAGE and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The overlay to commit
    pub(crate) image: PathBuf,
}

#[derive(Args)]
pub(crate) struct SnapshotArgs {
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be created, and create nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// IMAGE is written by a running QEMU or qemu-storage-daemon with a QMP socket: create
    /// the overlay and have it move onto it (blockdev-add, blockdev-snapshot)
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) live: bool,
    /// Also look under PATH for the images around IMAGE (repeatable)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The image to put the overlay on
    pub(crate) image: PathBuf,
    /// The new overlay [default: IMAGE-STEM.N.qcow2 beside IMAGE, the first N free]
    pub(crate) new: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Also delete every image built on IMAGE, at any distance (listed first)
    #[arg(long)]
    pub(crate) with_overlays: bool,
    /// Delete even an image a defined libvirt VM names as its disk
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be deleted, and delete nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also look for images built on IMAGE under PATH (repeatable; the directories of IMAGE
    /// and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The image to delete
    pub(crate) image: PathBuf,
}

#[derive(Args)]
pub(crate) struct RebaseArgs {
    /// The new backing file; a relative name is taken from IMAGE's directory and written as
    /// it is, as qemu-img does
    #[arg(short = 'b', value_name = "NEWBASE", value_parser = clap::value_parser!(std::ffi::OsString))]
    pub(crate) backing: std::ffi::OsString,
    /// The new backing file's format (checked against what the file is)
    #[arg(short = 'F', value_name = "FMT", value_parser = parse_format)]
    pub(crate) format: Option<imgchain::image::probe::Format>,
    /// Only rewrite the backing name and format: the new file must hold what the old one
    /// held (a moved or copied backing file), and must have its virtual size
    #[arg(short = 'u')]
    pub(crate) unsafe_names: bool,
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

#[derive(Args)]
pub(crate) struct FlattenArgs {
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

/// What rebase and flatten share.
#[derive(Args)]
pub(crate) struct ChainArgs {
    /// Show progress
    #[arg(short = 'p')]
    pub(crate) progress: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Print what would be done, and change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also look under PATH for the images around IMAGE (repeatable)
    #[arg(long = "scan", value_name = "PATH")]
    pub(crate) scan: Vec<PathBuf>,
    /// The image to change
    pub(crate) image: PathBuf,
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// Merge even though the backing file has other overlays (their disks change), IMAGE
    /// is a disk a defined libvirt VM names, or the backing file's filesystem may be too full
    #[arg(long)]
    pub(crate) force: bool,
    /// Keep IMAGE's file once nothing is built on it
    #[arg(long)]
    pub(crate) keep: bool,
    /// IMAGE is a middle layer of a running QEMU's or qemu-storage-daemon's chain, with a
    /// QMP socket: have it commit IMAGE into its backing file itself (block-commit), which
    /// re-points the layer above; IMAGE's file is kept
    #[arg(long, conflicts_with_all = ["keep", "dry_run"])]
    pub(crate) live: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    pub(crate) speed: Option<u64>,
    #[command(flatten)]
    pub(crate) common: ChainArgs,
}

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

pub(crate) fn parse_format(s: &str) -> Result<imgchain::image::probe::Format, String> {
    imgchain::image::probe::Format::from_name(s)
        .ok_or_else(|| format!("unknown image format \"{s}\" (qcow2, raw, ...)"))
}

/// A rate such as `64M` (bytes per second).
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    imgchain::config::parse_size(s)
}
