//! What every command runs with: the configuration, the protect rules, the engine settings
//! and the colours, and the scan of the paths it was given.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;

use imgchain::config::{self, Config};
use imgchain::forest::{self, Protect, Scan, ScanOptions};
use imgchain::ops::settings::Settings;
use imgchain::text::Names;

use super::args::Global;
use super::failure::{Failure, usage};
use super::output;

pub(crate) struct Session {
    pub(crate) config: Config,
    /// What every operation is planned and run with.
    pub(crate) settings: std::sync::Arc<Settings>,
    pub(crate) protect: Protect,
    pub(crate) paint: output::Paint,
    /// --read-only, and the protect globs of the config and --protect (the demo adds its own).
    pub(crate) read_only: bool,
    pub(crate) protect_globs: Vec<String>,
    /// Colours in the UI: off with --no-color or NO_COLOR.
    pub(crate) colour_ui: bool,
    /// The command line as clap parses it (for completions and man pages).
    pub(crate) cli: fn() -> clap::Command,
}

impl Session {
    pub(crate) fn new(g: &Global, cli: fn() -> clap::Command) -> Result<Session, Failure> {
        let config = config::load(config::locate(g.config.as_deref()).as_deref()).map_err(usage)?;
        for note in &config.notes {
            eprintln!("imgchain: note: {note}");
        }
        let mut settings = Settings::of(&config, g.skip_unreachable);
        settings.undo &= !g.no_undo;
        let settings = std::sync::Arc::new(settings);
        let mut globs: Vec<String> = config
            .protect
            .globs
            .iter()
            .map(|g| g.get_ref().clone())
            .collect();
        globs.extend(g.protect.iter().cloned());
        let protect = Protect::new(g.read_only, &globs).map_err(usage)?;
        let no_color = g.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let paint = output::Paint {
            colour: !no_color && std::io::stdout().is_terminal(),
        };
        Ok(Session {
            config,
            settings,
            protect,
            paint,
            read_only: g.read_only,
            protect_globs: globs,
            colour_ui: !no_color,
            cli,
        })
    }

    pub(crate) fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            max_depth: self.config.scan.max_depth,
            follow_symlinks: self.config.scan.follow_symlinks,
            raw_extensions: self.config.scan.raw_extensions.clone(),
            libvirt_domains: self.config.scan.libvirt_domains.clone(),
            libvirt_snapshots: self.config.scan.libvirt_snapshots.clone(),
            libvirt_checkpoints: self.config.scan.libvirt_checkpoints.clone(),
            overlay_dirs: self.config.scan.overlay_dirs.clone(),
            overlay_depth: self.config.scan.max_depth,
            progress: None,
        }
    }

    pub(crate) fn scan(&self, paths: &[PathBuf], opts: &ScanOptions) -> Result<Scan, Failure> {
        let default = [PathBuf::from(".")];
        let paths = if paths.is_empty() {
            &default[..]
        } else {
            paths
        };
        let mut opts = opts.clone();
        let shown = output::ScanMeter::start(&mut opts);
        let scanned = forest::scan(paths, &opts);
        drop(shown);
        let mut scan = scanned.map_err(anyhow::Error::from)?;
        self.protect.apply(&mut scan.forest);
        Ok(scan)
    }
}

/// The version of every JSON document imgchain prints (its `version` field; ARCHITECTURE.md
/// §5): raised when a field changes meaning or goes, not when one is added.
pub(crate) const JSON_VERSION: u64 = 1;

/// `value` with the document's `version` added, when it is an object.
pub(crate) fn versioned(value: impl serde::Serialize) -> Result<serde_json::Value, Failure> {
    let mut v = serde_json::to_value(value).context("cannot encode JSON")?;
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), JSON_VERSION.into());
    }
    Ok(v)
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    use std::io::Write;
    let value = versioned(value)?;
    let mut out = std::io::BufWriter::new(imgchain::text::JsonSafe::new(std::io::stdout().lock()));
    serde_json::to_writer_pretty(&mut out, &value).context("cannot write JSON")?;
    writeln!(out)
        .and_then(|()| out.flush())
        .context("cannot write JSON")?;
    Ok(())
}

/// Names every path the scan passed over, with the reason, then counts them in one line.
pub(crate) fn report_skipped(scan: &Scan) {
    for s in &scan.skipped {
        eprintln!("imgchain: skipped {}: {}", s.path.shown(), s.reason);
    }
    match scan.skipped.len() {
        0 => {}
        1 => eprintln!("imgchain: 1 path was passed over (named above, with the reason)"),
        n => eprintln!("imgchain: {n} paths were passed over (named above, with the reasons)"),
    }
}
