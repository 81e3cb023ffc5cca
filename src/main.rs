//! The `imgchain` command: argument parsing and dispatch.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use imgchain::config::{self, Config};
use imgchain::forest::diag::Severity;
use imgchain::forest::{self, Protect, Scan, ScanOptions};
use imgchain::ops::live;
use imgchain::ops::settings::Settings;
use imgchain::text::Names;
use imgchain::{exit, output};

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
                  consistent), 15 base could not be reopened read-only, 16 unsupported, 130 \
                  cancelled."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
    /// Directories or images to open in the interactive UI [default: .]
    paths: Vec<PathBuf>,
    /// Build a sample forest in a temporary directory and open the UI on it
    #[arg(long)]
    demo: bool,
    /// With --demo: build the sample forest here and keep it (with DIR-elsewhere beside it)
    #[arg(long, value_name = "DIR", requires = "demo")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct Global {
    /// Treat every image as keep-RO (requested): nothing can be committed
    #[arg(long, global = true)]
    read_only: bool,
    /// Keep images matching GLOB read-only, and their backing chains with them (repeatable;
    /// a glob without "/" matches file names, with "/" absolute paths)
    #[arg(long = "protect", value_name = "GLOB", global = true)]
    protect: Vec<String>,
    /// Read the configuration from FILE instead of ~/.config/imgchain/config.toml
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// No colours in output (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    no_color: bool,
    /// Go on when a libvirt connection of scan.libvirt_uris cannot be reached, without
    /// checking its VMs' disks (otherwise a write that could change them is refused)
    #[arg(long, global = true)]
    skip_unreachable: bool,
}

#[derive(Subcommand)]
enum Command {
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

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: exit::FAILURE,
            error,
        }
    }
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: exit::USAGE,
        error: error.into(),
    }
}

fn main() -> ExitCode {
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

struct Session {
    config: Config,
    /// What every operation is planned and run with.
    settings: std::sync::Arc<Settings>,
    protect: Protect,
    paint: output::Paint,
    /// --read-only, and the protect globs of the config and --protect (the demo adds its own).
    read_only: bool,
    protect_globs: Vec<String>,
    /// Colours in the UI: off with --no-color or NO_COLOR.
    colour_ui: bool,
}

impl Session {
    fn new(g: &Global) -> Result<Session, Failure> {
        let config = config::load(config::locate(g.config.as_deref()).as_deref()).map_err(usage)?;
        for note in &config.notes {
            eprintln!("imgchain: note: {note}");
        }
        let settings = std::sync::Arc::new(Settings::of(&config, g.skip_unreachable));
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
        })
    }

    fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            max_depth: self.config.scan.max_depth,
            follow_symlinks: self.config.scan.follow_symlinks,
            raw_extensions: self.config.scan.raw_extensions.clone(),
            libvirt_domains: self.config.scan.libvirt_domains.clone(),
            overlay_dirs: self.config.scan.overlay_dirs.clone(),
            overlay_depth: self.config.scan.max_depth,
            progress: None,
        }
    }

    fn scan(&self, paths: &[PathBuf], opts: &ScanOptions) -> Result<Scan, Failure> {
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

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(imgchain::text::JsonSafe::new(std::io::stdout().lock()));
    serde_json::to_writer_pretty(&mut out, value).context("cannot write JSON")?;
    writeln!(out)
        .and_then(|()| out.flush())
        .context("cannot write JSON")?;
    Ok(())
}

/// Names every path the scan passed over, with the reason, then counts them in one line.
fn report_skipped(scan: &Scan) {
    for s in &scan.skipped {
        eprintln!("imgchain: skipped {}: {}", s.path.shown(), s.reason);
    }
    match scan.skipped.len() {
        0 => {}
        1 => eprintln!("imgchain: 1 path was passed over (named above, with the reason)"),
        n => eprintln!("imgchain: {n} paths were passed over (named above, with the reasons)"),
    }
}

/// The name of the command `cmd` when it would change something on disk (not a dry run).
fn writing(cmd: &Command) -> Option<&'static str> {
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

fn run(cli: Cli) -> Result<u8, Failure> {
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

#[derive(Args)]
struct CommitArgs {
    /// Commit into BASE, an image further down IMAGE's backing chain; the images in
    /// between keep their data (implies -d, as in qemu-img)
    #[arg(short = 'b', value_name = "BASE")]
    base: Option<PathBuf>,
    /// Keep IMAGE's data after committing it (default: empty IMAGE, as qemu-img does)
    #[arg(short = 'd')]
    keep: bool,
    /// Commit even if the base has other overlays (their disks change) or persistent
    /// bitmaps (they become invalid), or its filesystem may be too full
    #[arg(long)]
    force: bool,
    /// Show progress
    #[arg(short = 'p')]
    progress: bool,
    /// IMAGE is in use by a running QEMU or qemu-storage-daemon with a QMP socket: have it
    /// commit IMAGE into its backing file itself (block-commit) and pivot onto it
    #[arg(long, conflicts_with_all = ["base", "keep"])]
    live: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    speed: Option<u64>,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
    /// Print what would be committed where, and where other overlays were looked for, and
    /// change nothing
    #[arg(long, conflicts_with = "live")]
    dry_run: bool,
    /// Also look for other overlays of the base under PATH (repeatable; the directories
    /// of IMAGE and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    scan: Vec<PathBuf>,
    /// The overlay to commit
    image: PathBuf,
}

#[derive(Args)]
struct SnapshotArgs {
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
    /// Print what would be created, and create nothing
    #[arg(long)]
    dry_run: bool,
    /// IMAGE is written by a running QEMU or qemu-storage-daemon with a QMP socket: create
    /// the overlay and have it move onto it (blockdev-add, blockdev-snapshot)
    #[arg(long, conflicts_with = "dry_run")]
    live: bool,
    /// Also look under PATH for the images around IMAGE (repeatable)
    #[arg(long = "scan", value_name = "PATH")]
    scan: Vec<PathBuf>,
    /// The image to put the overlay on
    image: PathBuf,
    /// The new overlay [default: IMAGE-STEM.N.qcow2 beside IMAGE, the first N free]
    new: Option<PathBuf>,
}

#[derive(Args)]
struct DeleteArgs {
    /// Also delete every image built on IMAGE, at any distance (listed first)
    #[arg(long)]
    with_overlays: bool,
    /// Delete even an image a defined libvirt VM names as its disk
    #[arg(long)]
    force: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
    /// Print what would be deleted, and delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Also look for images built on IMAGE under PATH (repeatable; the directories of IMAGE
    /// and of its backing chain are always looked at)
    #[arg(long = "scan", value_name = "PATH")]
    scan: Vec<PathBuf>,
    /// The image to delete
    image: PathBuf,
}

#[derive(Args)]
struct RebaseArgs {
    /// The new backing file; a relative name is taken from IMAGE's directory and written as
    /// it is, as qemu-img does
    #[arg(short = 'b', value_name = "NEWBASE", value_parser = clap::value_parser!(std::ffi::OsString))]
    backing: std::ffi::OsString,
    /// The new backing file's format (checked against what the file is)
    #[arg(short = 'F', value_name = "FMT", value_parser = parse_format)]
    format: Option<imgchain::image::probe::Format>,
    /// Only rewrite the backing name and format: the new file must hold what the old one
    /// held (a moved or copied backing file), and must have its virtual size
    #[arg(short = 'u')]
    unsafe_names: bool,
    #[command(flatten)]
    common: ChainArgs,
}

#[derive(Args)]
struct FlattenArgs {
    #[command(flatten)]
    common: ChainArgs,
}

/// What rebase and flatten share.
#[derive(Args)]
struct ChainArgs {
    /// Show progress
    #[arg(short = 'p')]
    progress: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
    /// Print what would be done, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Also look under PATH for the images around IMAGE (repeatable)
    #[arg(long = "scan", value_name = "PATH")]
    scan: Vec<PathBuf>,
    /// The image to change
    image: PathBuf,
}

fn parse_format(s: &str) -> Result<imgchain::image::probe::Format, String> {
    imgchain::image::probe::Format::from_name(s)
        .ok_or_else(|| format!("unknown image format \"{s}\" (qcow2, raw, ...)"))
}

fn rebase(
    ctx: &Session,
    a: &ChainArgs,
    backing: Option<PathBuf>,
    format: Option<imgchain::image::probe::Format>,
    unsafe_names: bool,
) -> Result<u8, Failure> {
    use imgchain::ops::Refusal;
    use imgchain::ops::rebase::{self, Request};
    let image_dir = std::path::absolute(&a.image)
        .with_context(|| format!("cannot resolve {}", a.image.shown()))?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut name = None;
    let backing = match backing {
        Some(b) if b.as_os_str().is_empty() => {
            return Err(usage(anyhow::anyhow!(
                "-b needs a file; to drop the backing file, use imgchain flatten"
            )));
        }
        // A relative name, or one through a symlink, is written as given, as qemu-img does;
        // a plain absolute one picks the shortest name that leads there.
        Some(b) => {
            let plain = b.is_absolute() && std::fs::canonicalize(&b).is_ok_and(|c| c == b);
            name = (!plain).then(|| imgchain::forest::model::header_name(&b.to_string_lossy()));
            Some(if b.is_relative() {
                image_dir.join(b)
            } else {
                b
            })
        }
        None => None,
    };
    let mut dirs = a.scan.clone();
    dirs.extend(backing.iter().filter_map(|b| b.parent().map(PathBuf::from)));
    let found = match discover(ctx, &a.image, &dirs)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let forest = &found.scan.forest;
    let backing_node = match &backing {
        None => None,
        Some(b) => match forest.find(b) {
            Some(id) => Some(id),
            None => {
                let e = Refusal::BadTarget {
                    path: b.clone(),
                    what: if b.exists() {
                        "is not an image imgchain can use as a backing file".into()
                    } else {
                        "does not exist".into()
                    },
                };
                return Ok(refused(&e, a.json));
            }
        },
    };
    let req = Request {
        image: found.image,
        backing: backing_node,
        format,
        unsafe_names,
        name,
    };
    let plan = match rebase::plan(forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.dry_run {
        println!(
            "Would give {} {}{}.",
            plan.image.path.shown(),
            match &plan.name {
                Some((n, f)) => format!("the backing file \"{n}\" ({f})"),
                None => "no backing file".into(),
            },
            if plan.safe {
                ", copying first what the two chains read differently"
            } else {
                " (names only)"
            }
        );
        return Ok(exit::OK);
    }
    note_outside(&found);
    run_planned::<rebase::Rebase>(ctx, &plan, a.progress, a.json, output::json_rebase)
}

#[derive(Args)]
struct MergeArgs {
    /// Merge even though the backing file has other overlays (their disks change), IMAGE
    /// is a disk a defined libvirt VM names, or the backing file's filesystem may be too full
    #[arg(long)]
    force: bool,
    /// Keep IMAGE's file once nothing is built on it
    #[arg(long)]
    keep: bool,
    /// IMAGE is a middle layer of a running QEMU's or qemu-storage-daemon's chain, with a
    /// QMP socket: have it commit IMAGE into its backing file itself (block-commit), which
    /// re-points the layer above; IMAGE's file is kept
    #[arg(long, conflicts_with_all = ["keep", "dry_run"])]
    live: bool,
    /// With --live: limit the job to RATE bytes per second (64M, 1G)
    #[arg(long, value_name = "RATE", requires = "live", value_parser = parse_rate)]
    speed: Option<u64>,
    #[command(flatten)]
    common: ChainArgs,
}

fn merge(ctx: &Session, a: MergeArgs) -> Result<u8, Failure> {
    use imgchain::ops::merge::{self, Request};
    let c = &a.common;
    let image = std::path::absolute(&c.image)
        .with_context(|| format!("cannot resolve {}", c.image.shown()))?;
    let journal = merge::read_journal(&image).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the merge journal {}: {e}",
            merge::journal_path(&image).shown()
        )
    })?;
    if let Some(j) = &journal
        && !image.exists()
    {
        // Cut short after IMAGE was deleted: only the journal is left to remove.
        std::fs::remove_file(merge::journal_path(&image))
            .with_context(|| format!("cannot remove {}", merge::journal_path(&image).shown()))?;
        println!(
            "The merge of {} into {} had finished but for removing its journal; done.",
            image.shown(),
            j.base.shown()
        );
        return Ok(exit::OK);
    }
    let found = match discover(ctx, &image, &c.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, c.json)),
    };
    if a.live {
        let req = live::Request {
            image: found.image,
            force: a.force,
            speed: a.speed.unwrap_or(0),
        };
        return run_live::<live::LiveMerge>(ctx, &found, &req, c.progress, c.json);
    }
    let req = Request {
        image: found.image,
        force: a.force,
        keep: a.keep,
    };
    let plan = match merge::plan(&found.scan.forest, &req, journal.as_ref()) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, c.json)),
    };
    let space = imgchain::ops::merge::space(&plan, ctx.settings.copy.clone).ok();
    if !a.force
        && let Some(Err(e)) = space.as_ref().map(|s| s.check())
    {
        return Ok(refused(&e, c.json));
    }
    let overlays: Vec<String> = plan
        .overlays
        .iter()
        .map(|(o, _)| o.path.shown().to_string())
        .collect();
    if c.dry_run {
        let would = format!(
            "Would commit {} into {}, point {} at {}, and {} {}.",
            plan.image.path.shown(),
            plan.base.path.shown(),
            if overlays.is_empty() {
                "no overlay".to_string()
            } else {
                overlays.join(", ")
            },
            plan.base.path.shown(),
            if plan.keep { "keep" } else { "delete" },
            plan.image.path.shown()
        );
        let space = space.as_ref().map(|s| s.describe());
        return Ok(dry_run(
            "merge",
            &plan.image.path,
            would,
            space,
            &found,
            c.json,
        ));
    }
    note_outside(&found);
    run_planned::<merge::Merge>(ctx, &plan, c.progress, c.json, output::json_merge)
}

#[derive(Args)]
struct RepairArgs {
    /// Apply the best candidate of each image without asking
    #[arg(long, conflicts_with = "dry_run")]
    yes: bool,
    /// Print the candidates, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Directories or images to scan for broken images and candidates [default: .]
    paths: Vec<PathBuf>,
}

fn repair(ctx: &Session, a: RepairArgs) -> Result<u8, Failure> {
    use imgchain::ops::Report;
    use imgchain::ops::rebase::{self, Request};
    use imgchain::ops::repair;
    let scan = ctx.scan(&a.paths, &ctx.scan_options())?;
    let forest = &scan.forest;
    let fixes = repair::find(forest);
    if fixes.is_empty() {
        println!("No image under the scanned paths has a missing backing file.");
        return Ok(exit::OK);
    }
    let interactive = std::io::stdin().is_terminal() && !a.yes && !a.dry_run;
    let mut left = 0;
    let mut worst = exit::OK;
    for fix in &fixes {
        let image = &forest.node(fix.image).path;
        println!(
            "{} names {}, which does not exist.",
            image.shown(),
            fix.missing.shown()
        );
        if fix.candidates.is_empty() {
            println!("  No image under the scanned paths could be it; scan more paths.");
            left += 1;
            continue;
        }
        for (i, c) in fix.candidates.iter().enumerate() {
            println!(
                "  {}) {} ({})",
                i + 1,
                forest.node(c.id).path.shown(),
                c.describe()
            );
        }
        let sure = fix.candidates.first().is_some_and(|c| c.sure());
        let chosen = if a.dry_run {
            None
        } else if a.yes && sure {
            Some(0)
        } else if a.yes {
            println!(
                "  --yes applies only a file with the missing file's name and size that no VM \
                 uses and nothing else is built on; none is, so nothing was changed: choose one \
                 on a terminal, or name it with imgchain rebase -u -b FILE {}",
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
            left += 1;
            continue;
        };
        let req = Request {
            image: fix.image,
            backing: Some(fix.candidates[k].id),
            format: None,
            unsafe_names: true,
            name: None,
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
        match outcome {
            Ok(o) => {
                println!("  {}", o.summary());
                if o.exit_code() != exit::OK {
                    worst = worst.max(o.exit_code());
                    left += 1;
                }
            }
            Err(e) => {
                eprintln!("imgchain: {e}");
                worst = worst.max(e.exit_code());
                left += 1;
            }
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

/// Asks which of `n` candidates to apply; `None`: none.
fn ask_choice(n: usize) -> Result<Option<usize>, Failure> {
    use std::io::Write;
    print!("  Point it at which? [1-{n}, Enter for none] ");
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

/// A cancel flag that Ctrl-C and SIGTERM set.
fn ctrl_c() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, Failure> {
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&cancel))
            .context("cannot install the Ctrl-C handler")?;
    }
    Ok(cancel)
}

/// The forest around `image` as every operation plans on it: the image, its directory, the
/// directories of its chain and the `--scan` paths, with the protect rules applied.
fn discover(
    ctx: &Session,
    image: &std::path::Path,
    scan: &[PathBuf],
) -> Result<Result<imgchain::ops::scope::Discovered, imgchain::ops::Refusal>, Failure> {
    use imgchain::ops::scope::{self, Scope};
    let image =
        std::path::absolute(image).with_context(|| format!("cannot resolve {}", image.shown()))?;
    let mut opts = ctx.scan_options();
    opts.max_depth = 0;
    let scope = Scope {
        dirs: scan.to_vec(),
        scan: opts,
        protect: ctx.protect.clone(),
        settings: std::sync::Arc::clone(&ctx.settings),
    };
    Ok(scope::discover(&image, &scope))
}

/// Runs a planned operation with Ctrl-C as its cancel and, with `progress`, a progress line;
/// prints its outcome (text or JSON) or why it could not start, and returns the exit code.
fn run_planned<O: imgchain::ops::Operation>(
    ctx: &Session,
    plan: &O::Plan,
    progress: bool,
    json: bool,
    to_json: impl Fn(&O::Outcome) -> serde_json::Value,
) -> Result<u8, Failure> {
    use imgchain::ops::Report;
    let cancel = ctrl_c()?;
    let written = O::writes(plan);
    let mut bar = output::ProgressLine::new(
        progress,
        written
            .first()
            .map_or(std::path::Path::new(""), |p| p.as_path()),
    );
    let result = O::run(
        plan,
        imgchain::ops::Run {
            settings: &ctx.settings,
            cancel: &cancel,
            progress: &mut |p| bar.update(&p),
        },
    );
    bar.finish();
    match result {
        Ok(outcome) => {
            if json {
                print_json(&to_json(&outcome))?;
            } else {
                println!("{}", outcome.summary());
            }
            Ok(outcome.exit_code())
        }
        Err(e) => Ok(refused(&e, json)),
    }
}

fn snapshot(ctx: &Session, a: SnapshotArgs) -> Result<u8, Failure> {
    use imgchain::ops::snapshot::{self, Request};
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let req = Request {
        image: found.image,
        new: a.new,
        cluster_size: ctx.config.snapshot.cluster_size.0,
    };
    if a.live {
        return run_live::<live::LiveSnapshot>(ctx, &found, &req, false, a.json);
    }
    let plan = match snapshot::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, a.json)),
    };
    if a.dry_run {
        println!(
            "Would create {} on {} (backing name \"{}\", format {}).",
            plan.new.shown(),
            plan.image.path.shown(),
            plan.backing_name,
            plan.image.format
        );
        return Ok(exit::OK);
    }
    run_planned::<snapshot::Snapshot>(ctx, &plan, false, a.json, output::json_snapshot)
}

fn delete(ctx: &Session, a: DeleteArgs) -> Result<u8, Failure> {
    use imgchain::ops::delete::{self, Request};
    let md = std::fs::symlink_metadata(&a.image)
        .with_context(|| format!("cannot delete {}", a.image.shown()))?;
    if md.file_type().is_symlink() {
        let target = std::fs::canonicalize(&a.image).unwrap_or_default();
        return Err(usage(anyhow::anyhow!(
            "{} is a symlink to {}: name the image itself to delete it, or remove the link with rm",
            a.image.shown(),
            target.shown()
        )));
    }
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let req = Request {
        image: found.image,
        with_overlays: a.with_overlays,
        force: a.force,
    };
    let plan = match delete::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_found(&e, &found, a.json)),
    };
    let list: Vec<String> = plan
        .images
        .iter()
        .map(|i| i.path.shown().to_string())
        .collect();
    if a.dry_run {
        let would = format!("Would delete, in this order: {}.", list.join(", "));
        let space = Some(imgchain::ops::delete::space(&plan).describe());
        let image = found.scan.forest.node(found.image).path.clone();
        return Ok(dry_run("delete", &image, would, space, &found, a.json));
    }
    if plan.images.len() > 1 && !a.json {
        eprintln!("Deleting, in this order: {}", list.join(", "));
    }
    run_planned::<delete::Delete>(ctx, &plan, false, a.json, output::json_delete)
}

/// Scans what a commit needs to see (the image, its directory, the directories of its chain
/// and any --scan paths), plans, and runs it with Ctrl-C as cancel.
fn commit(ctx: &Session, a: CommitArgs) -> Result<u8, Failure> {
    use imgchain::ops::commit::{self, Commit, Request};
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    if a.live {
        let req = live::Request {
            image: found.image,
            force: a.force,
            speed: a.speed.unwrap_or(0),
        };
        return run_live::<live::LiveCommit>(ctx, &found, &req, a.progress, a.json);
    }
    let req = Request {
        top: found.image,
        base: a.base,
        keep_top: a.keep || ctx.config.commit.keep_top,
        force: a.force,
    };
    let plan = match commit::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_live_hint(&e, &found, a.json)),
    };
    // Without a measure (an unreadable map) the run itself reports what it cannot read.
    if !a.force
        && let Ok(data) = commit::measure_plan(&plan)
        && let Err(e) = commit::space_of(&plan, data, ctx.settings.copy.clone).check()
    {
        return Ok(refused(&e, a.json));
    }
    if a.dry_run {
        let would = format!(
            "Would commit {} into {}{}{}.",
            plan.top.path.shown(),
            plan.base.path.shown(),
            if plan.keep_top {
                ", keeping "
            } else {
                ", then empty "
            },
            plan.top.path.shown()
        );
        return Ok(dry_run(
            "commit",
            &plan.top.path,
            would,
            None,
            &found,
            a.json,
        ));
    }
    note_outside(&found);
    run_planned::<Commit>(ctx, &plan, a.progress, a.json, output::json_outcome)
}

/// Says on stderr which images of the chain lie outside everything imgchain was pointed at,
/// reached only through backing names in headers, before a run writes.
fn note_outside(found: &imgchain::ops::scope::Discovered) {
    let outside: Vec<&str> = found
        .searched
        .iter()
        .filter(|s| s.kind == imgchain::ops::dependents::OUTSIDE)
        .map(|s| s.place.as_str())
        .collect();
    if !outside.is_empty() {
        eprintln!(
            "imgchain: note: {} lies outside everything imgchain was pointed at, reached only \
             through a backing name in a header",
            outside.join(", ")
        );
    }
}

/// Prints what a dry run would do, its space, and where it looked for images built on the
/// target (`--json`: one object with `would`, `space` and `searched`).
fn dry_run(
    op: &str,
    image: &std::path::Path,
    would: String,
    space: Option<String>,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    if json {
        let (searched, outside) = output::json_searched(&found.searched);
        let v = serde_json::json!({
            "operation": op,
            "dry_run": true,
            "image": image,
            "would": would,
            "space": space,
            "searched": searched,
            "outside": outside,
            "exit_code": exit::OK,
            "summary": would,
        });
        if let Err(e) = print_json(&v) {
            eprintln!("imgchain: {:#}", e.error);
        }
    } else {
        println!("{would}");
        if let Some(s) = space {
            println!("Space: {s}.");
        }
        println!("{}", output::searched_text(&found.searched));
    }
    exit::OK
}

/// Refuses as [`refused`] does, and says where images built on the target were looked for
/// (in JSON as `searched`; in text when others were found).
fn refused_found(
    e: &imgchain::ops::Refusal,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    if json {
        let mut v = output::json_refusal(e);
        (v["searched"], v["outside"]) = output::json_searched(&found.searched);
        if let Err(err) = print_json(&v) {
            eprintln!("imgchain: {:#}", err.error);
        }
        eprintln!("imgchain: {e}");
        return e.exit_code();
    }
    let code = refused(e, false);
    if code == exit::SHARED_BASE {
        eprintln!("imgchain: {}", output::searched_text(&found.searched));
    }
    code
}

/// Refuses as [`refused_found`] does, with a hint to add `--live` when the image is refused
/// for being in use and its holder listens on QMP.
fn refused_live_hint(
    e: &imgchain::ops::Refusal,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    let code = refused_found(e, found, json);
    if let imgchain::ops::Refusal::InUse(imgchain::image::lock::LockError::InUse { path, .. }) = e {
        let qmp = found
            .scan
            .forest
            .find(path)
            .into_iter()
            .chain([found.image])
            .flat_map(|id| &found.scan.forest.node(id).holders)
            .find_map(|h| h.owner.qmp.as_ref());
        if let Some(q) = qmp {
            eprintln!(
                "imgchain: its holder listens on QMP at {}: add --live to have it do the job \
                 itself",
                q.shown()
            );
        }
    }
    code
}

/// `--live`: the QEMU holding the image does the job, through its QMP socket or virsh;
/// Ctrl-C cancels a block job.
fn run_live<O>(
    ctx: &Session,
    found: &imgchain::ops::scope::Discovered,
    req: &O::Request,
    progress: bool,
    json: bool,
) -> Result<u8, Failure>
where
    O: imgchain::ops::Operation<Plan = live::LivePlan, Outcome = live::LiveOutcome>,
{
    match O::plan(&found.scan.forest, req) {
        Ok(plan) => run_planned::<O>(ctx, &plan, progress, json, output::json_live),
        Err(e) => Ok(refused(&e, json)),
    }
}

/// A rate such as `64M` (bytes per second).
fn parse_rate(s: &str) -> Result<u64, String> {
    imgchain::config::parse_size(s)
}

fn refused(e: &imgchain::ops::Refusal, json: bool) -> u8 {
    if json {
        let v = output::json_refusal(e);
        match serde_json::to_string_pretty(&v) {
            Ok(t) => println!("{}", imgchain::text::json_safe(&t)),
            Err(err) => eprintln!("imgchain: cannot encode JSON: {err}"),
        }
    }
    eprintln!("imgchain: {e}");
    e.exit_code()
}

/// Opens the interactive UI on `paths`, or on the demo forest.
/// Runs the UI; the exit code is that of a commit the user quit during, else 0.
fn ui(ctx: &Session, paths: Vec<PathBuf>, demo: bool, dir: Option<PathBuf>) -> Result<u8, Failure> {
    let mut engine = Settings::clone(&ctx.settings);
    use imgchain::tui;
    let mut protect_globs = ctx.protect_globs.clone();
    // Kept alive until the UI exits: a temporary demo directory is removed then.
    let mut _temp = None;
    let mut scan = ctx.scan_options();
    let roots = if demo {
        let spec = imgchain::demo::spec().context("the built-in demo description is broken")?;
        let dir = match dir {
            Some(d) => {
                std::path::absolute(&d).with_context(|| format!("cannot resolve {}", d.shown()))?
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("imgchain-demo-")
                    .tempdir()
                    .context("cannot create a temporary directory for the demo")?;
                let p = t.path().join("demo");
                _temp = Some(t);
                p
            }
        };
        imgchain::demo::build(&dir, &spec)
            .with_context(|| format!("cannot build the demo in {}", dir.shown()))?;
        protect_globs.extend(spec.protect);
        scan.overlay_dirs.push(imgchain::demo::elsewhere(&dir));
        engine.overlay_dirs.push(imgchain::demo::elsewhere(&dir));
        vec![dir]
    } else if paths.is_empty() {
        vec![std::env::current_dir().context("cannot read the current directory")?]
    } else {
        paths
            .iter()
            .map(|p| {
                std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.shown()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    for r in &roots {
        std::fs::metadata(r).with_context(|| format!("cannot scan {}", r.shown()))?;
    }
    let protect = Protect::new(ctx.read_only, &protect_globs).map_err(usage)?;
    let settings = tui::app::Settings {
        roots,
        keymap: tui::keymap::Keymap::new(&ctx.config.keys),
        theme: tui::theme::Theme::new(&ctx.config.theme, ctx.colour_ui),
        protect,
        keep_top: ctx.config.commit.keep_top,
        snapshot_cluster: ctx.config.snapshot.cluster_size.0,
        read_only: ctx.read_only,
    };
    let report = tui::run(tui::Options {
        settings,
        workers: tui::Workers {
            scan,
            settings: std::sync::Arc::new(engine),
        },
    })?;
    Ok(match report {
        Some((summary, code)) => {
            println!("{summary}");
            code
        }
        None => exit::OK,
    })
}
