//! What the session sets for every operation it plans and runs: values handed down from the
//! CLI's session or the UI's start, never process-wide state (ARCHITECTURE.md §3).

use std::path::PathBuf;

use super::dependents::Search;
use crate::config::Config;

/// Every setting an operation reads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub copy: Copy,
    /// Directories searched for overlays on every scan, and again by a run before it writes
    /// (`scan.overlay_dirs`).
    pub overlay_dirs: Vec<PathBuf>,
    /// Where images built on a chain are looked for.
    pub search: Search,
    /// How long what is in the trash is kept before emptying it is offered (`[trash] keep`).
    pub trash_keep: std::time::Duration,
    /// Record an undo before commit, merge, flatten and rebase write, where the filesystem
    /// clones (`[trash] undo`, off with `--no-undo`).
    pub undo: bool,
}

/// How data moves from one image into another (`[copy]`): commit, merge, flatten and rebase
/// alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Bytes per step (64 KiB to 64 MiB).
    pub chunk: u64,
    /// Share the source's blocks where the filesystem can (a reflink).
    pub clone: bool,
    /// Have the kernel copy where cloning is refused (`copy_file_range`).
    pub kernel_copy: bool,
    /// Reads under way at once through memory (1 to 64).
    pub in_flight: usize,
    /// Data bytes after which their writeback starts (0: at the next sync).
    pub write_behind: u64,
}

impl Settings {
    /// The settings of `config`, with `skip_unreachable` from the command line.
    pub fn of(config: &Config, skip_unreachable: bool) -> Settings {
        let c = &config.copy;
        Settings {
            copy: Copy {
                chunk: c.chunk_size.0,
                clone: c.clone,
                kernel_copy: c.kernel_copy,
                in_flight: c.in_flight.0,
                write_behind: c.write_behind.0,
            },
            overlay_dirs: config.scan.overlay_dirs.clone(),
            search: Search {
                libvirt_domains: config.scan.libvirt_domains.clone(),
                libvirt_pools: config.scan.libvirt_pools.clone(),
                libvirt_uris: config.scan.libvirt_uris.clone(),
                proxmox: Some(config.scan.proxmox.clone()),
                skip_unreachable,
            },
            trash_keep: config.trash.keep.0,
            undo: config.trash.undo,
        }
    }
}

impl Default for Settings {
    /// The settings of the embedded `config.toml`.
    fn default() -> Settings {
        Settings::of(&Config::default(), false)
    }
}
