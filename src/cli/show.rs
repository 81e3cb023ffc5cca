//! The commands that only read: `tree`, `info` and `check`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use imgchain::exit;
use imgchain::forest::diag::Severity;
use imgchain::text::Names;

use super::command::Command;
use super::failure::Failure;
use super::output;
use super::session::{Session, print_json, report_skipped};

#[derive(Args)]
pub(crate) struct TreeArgs {
    /// Print JSON: {"roots": [...], "nodes": [...]}
    #[arg(long)]
    json: bool,
    /// Directories or images [default: .]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Print the node as JSON
    #[arg(long)]
    json: bool,
    /// Also search DIR (recursively) for overlays of IMAGE, as scan.overlay_dirs does;
    /// repeatable
    #[arg(long = "scan", value_name = "DIR")]
    scan: Vec<PathBuf>,
    /// The image file
    image: PathBuf,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// Print JSON: {"images": N, "problems": [...]}
    #[arg(long)]
    json: bool,
    /// Directories or images [default: .]
    paths: Vec<PathBuf>,
}

impl Command for TreeArgs {
    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        tree(ctx, self.json, &self.paths)
    }
}

impl Command for InfoArgs {
    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        info(ctx, self.json, self.scan, &self.image)
    }
}

impl Command for CheckArgs {
    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        check(ctx, self.json, &self.paths)
    }
}

/// `imgchain tree`: the forest, as text or JSON.
fn tree(ctx: &Session, json: bool, paths: &[PathBuf]) -> Result<u8, Failure> {
    let scan = ctx.scan(paths, &ctx.scan_options())?;
    if json {
        print_json(&output::json_tree(&scan))?;
    } else {
        let scanned = scanned_paths(paths);
        print!(
            "{}",
            output::text_tree(&scan.forest, &scanned, ctx.paint, output::terminal_width())
        );
        report_skipped(&scan);
        if scan.trash_bytes > 0 {
            eprintln!(
                "imgchain: {} in the trash under these paths (imgchain trash list shows it)",
                imgchain::units::human_size(scan.trash_bytes)
            );
        }
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
    Ok(exit::OK)
}

/// The scanned paths as the forest holds its paths (absolute; `.` when none was given).
fn scanned_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    let given = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    given
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

/// `imgchain info`: one image, scanned with its directory and the `--scan` paths.
fn info(ctx: &Session, json: bool, scan: Vec<PathBuf>, image: &Path) -> Result<u8, Failure> {
    let mut opts = ctx.scan_options();
    opts.max_depth = 0;
    opts.overlay_dirs.extend(scan);
    let abs =
        std::path::absolute(image).with_context(|| format!("cannot resolve {}", image.shown()))?;
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
        node["bitmaps"] = output::json_bitmaps(scan.forest.node(id));
        print_json(&node)?;
    } else {
        print!("{}", output::text_info(&scan.forest, id, ctx.paint));
    }
    Ok(exit::OK)
}

/// `imgchain check`: every problem found, and exit code 2 when one is a warning or worse.
fn check(ctx: &Session, json: bool, paths: &[PathBuf]) -> Result<u8, Failure> {
    let scan = ctx.scan(paths, &ctx.scan_options())?;
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
    Ok(if bad { exit::PROBLEMS } else { exit::OK })
}
