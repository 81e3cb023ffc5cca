//! The flags every command takes, and those several share.

use std::path::PathBuf;

use clap::Args;

/// The heading the global options are listed under, apart from a command's own.
const GLOBAL: &str = "Global options";

#[derive(Args)]
pub(crate) struct Global {
    /// Treat every image as keep-RO (requested): nothing can be committed
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) read_only: bool,
    /// Keep images matching GLOB read-only, and their backing chains with them (repeatable;
    /// a glob without "/" matches file names, with "/" absolute paths)
    #[arg(long = "protect", value_name = "GLOB", global = true, help_heading = GLOBAL)]
    pub(crate) protect: Vec<String>,
    /// Read the configuration from FILE instead of ~/.config/imgchain/config.toml
    #[arg(long, value_name = "FILE", global = true, help_heading = GLOBAL)]
    pub(crate) config: Option<PathBuf>,
    /// No colours in output (NO_COLOR is honoured too)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) no_color: bool,
    /// Go on when a libvirt connection of scan.libvirt_uris cannot be reached, without
    /// checking its VMs' disks (otherwise a write that could change them is refused)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) skip_unreachable: bool,
    /// Record no undo before commit, merge, flatten or rebase write (its clones keep every
    /// block a run overwrites; [trash] undo = false turns it off for good)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) no_undo: bool,
}

/// What rebase and flatten share.
#[derive(Args)]
pub(crate) struct ChainArgs {
    /// Show progress
    #[arg(short = 'p', long)]
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

pub(crate) fn parse_format(s: &str) -> Result<imgchain::image::probe::Format, String> {
    imgchain::image::probe::Format::from_name(s)
        .ok_or_else(|| format!("unknown image format \"{s}\" (qcow2, raw, ...)"))
}

/// A rate such as `64M` (bytes per second).
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    imgchain::config::parse_size(s)
}
