//! What the CLI prints: the JSON shapes of ARCHITECTURE.md §5 and the text tree, details and checks.
//!
//! The JSON field names are a stable contract; text output is for people and may change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use imgchain::fit;
use imgchain::forest::diag::Severity;
use imgchain::forest::query;
use imgchain::forest::{Forest, Mode, Node, NodeId, Row};
use imgchain::ops::dependents::{OUTSIDE, Searched};
use imgchain::text::Names;
pub use imgchain::units::human_size;
use imgchain::words::{
    bitmap_text, disk_usage, in_use_text, read_only_because, snapshot_text, writable_because,
};

/// `info --json`, and each element of `tree --json`'s `nodes`.
#[derive(Serialize)]
pub struct JsonNode {
    pub path: String,
    /// Other names of the same file (symlinks, hard links) met by the scan.
    pub aliases: Vec<String>,
    pub format: Option<&'static str>,
    pub virtual_size: Option<u64>,
    pub file_size: Option<u64>,
    /// Bytes allocated on disk (qemu-img's `actual-size`).
    pub allocated: Option<u64>,
    /// Bytes on disk of this image, and of it with every image built on it.
    pub disk_usage: JsonDiskUsage,
    pub cluster_size: Option<u64>,
    pub backing: Option<JsonBacking>,
    pub overlays: Vec<String>,
    pub mode: &'static str,
    pub keep_ro_reason: Option<&'static str>,
    pub in_use: Option<JsonInUse>,
    /// The defined libvirt VMs that name it as a disk, running or not.
    pub vm_disks: Vec<JsonVmDisk>,
    /// The libvirt snapshots that record it (`role`: `overlay`, the disk written after the
    /// snapshot; `state`, the disk as it was).
    pub libvirt_snapshots: Vec<JsonSnapshotRecord>,
    /// The libvirt checkpoints of the disks whose chain holds it, with their bitmap names.
    pub checkpoints: Vec<JsonCheckpoint>,
    pub problems: Vec<JsonProblem>,
    pub qcow2: Option<JsonQcow2>,
}

/// `disk_usage` of a JSON node: allocated bytes (the file size where that is unknown).
#[derive(Serialize)]
pub struct JsonDiskUsage {
    pub own: u64,
    pub subtree: u64,
}

/// The `backing` object of a JSON node.
#[derive(Serialize)]
pub struct JsonBacking {
    pub raw: String,
    /// The file it names: a node's `path` when that file is in the forest.
    pub resolved: String,
    /// The name resolved as qemu-img's `full-backing-filename` (`..` kept).
    pub full_backing_filename: String,
    pub format: Option<String>,
    pub exists: bool,
}

/// Another process holding QEMU lock bytes on the image. `pid` and `command` name the first
/// holder found (writers first); both are null when /proc does not tell.
#[derive(Serialize)]
pub struct JsonInUse {
    pub pid: Option<u32>,
    pub command: Option<String>,
    /// The first holder's VM name, from its command line.
    pub vm: Option<String>,
    pub owner: Option<JsonOwner>,
    /// Someone holds the write permission.
    pub write: bool,
    /// Permissions held by others, in QEMU's words.
    pub held: Vec<&'static str>,
    /// Permissions others refuse to share.
    pub unshared: Vec<&'static str>,
    pub holders: Vec<JsonHolder>,
}

/// A disk of a defined libvirt VM.
#[derive(Serialize)]
pub struct JsonVmDisk {
    pub domain: String,
    pub target: String,
    pub definition: String,
}

/// One process holding the image.
#[derive(Serialize)]
pub struct JsonHolder {
    pub pid: u32,
    pub command: String,
    pub write: bool,
    pub owner: JsonOwner,
}

/// Who a holder is: `kind` is `libvirt`, `proxmox`, `qemu`, `qemu-storage-daemon`,
/// `qemu-tool` or `other`; `qmp` a QMP socket it listens on (never libvirt's monitor).
#[derive(Serialize)]
pub struct JsonOwner {
    pub kind: &'static str,
    pub program: String,
    pub name: Option<String>,
    pub qmp: Option<String>,
}

fn json_owner(o: &imgchain::image::lock::Owner) -> JsonOwner {
    JsonOwner {
        kind: o.manager.as_str(),
        program: o.program.clone(),
        name: o.name.clone(),
        qmp: o.qmp.as_deref().map(path_str),
    }
}

/// A libvirt snapshot that records a JSON node.
#[derive(Serialize)]
pub struct JsonSnapshotRecord {
    pub domain: String,
    pub snapshot: String,
    pub role: &'static str,
    pub target: String,
    pub definition: String,
}

/// A libvirt checkpoint of a JSON node's disk.
#[derive(Serialize)]
pub struct JsonCheckpoint {
    pub domain: String,
    pub checkpoint: String,
    pub bitmap: String,
}

/// The libvirt snapshots that record a node.
fn json_snapshot_records(n: &Node) -> Vec<JsonSnapshotRecord> {
    n.libvirt_snapshots
        .iter()
        .map(|r| JsonSnapshotRecord {
            domain: r.domain.clone(),
            snapshot: r.snapshot.clone(),
            role: match r.role {
                imgchain::forest::model::RecordRole::Overlay => "overlay",
                imgchain::forest::model::RecordRole::State => "state",
            },
            target: r.target.clone(),
            definition: path_str(&r.definition),
        })
        .collect()
}

/// The libvirt checkpoints of a node's disks.
fn json_checkpoints(n: &Node) -> Vec<JsonCheckpoint> {
    n.checkpoints
        .iter()
        .map(|c| JsonCheckpoint {
            domain: c.domain.clone(),
            checkpoint: c.checkpoint.clone(),
            bitmap: c.bitmap.clone(),
        })
        .collect()
}

/// One problem of a JSON node.
#[derive(Serialize)]
pub struct JsonProblem {
    pub kind: &'static str,
    pub severity: &'static str,
    pub message: String,
}

/// qcow2 header facts.
#[derive(Serialize)]
pub struct JsonQcow2 {
    pub version: u32,
    pub compat: &'static str,
    pub refcount_bits: u32,
    pub compression_type: &'static str,
    pub lazy_refcounts: bool,
    pub extended_l2: bool,
    pub dirty: bool,
    pub corrupt: bool,
    pub external_data_file: bool,
    pub encrypted: bool,
    pub bitmaps: bool,
    pub snapshots: u32,
}

/// `tree --json`.
#[derive(Serialize)]
pub struct JsonTree<'a> {
    pub roots: Vec<String>,
    pub nodes: JsonNodes<'a>,
    pub skipped: Vec<JsonSkipped>,
    pub trash: JsonTrash,
}

/// The trashes a scan met: the directories that have one, and the bytes they hold.
#[derive(Serialize)]
pub struct JsonTrash {
    pub dirs: Vec<String>,
    pub bytes: u64,
}

/// The nodes of `tree --json` in display order, each made as it is written, so that a large
/// forest is never held as JSON in memory all at once.
pub struct JsonNodes<'a> {
    forest: &'a Forest,
    rows: Vec<NodeId>,
}

impl Serialize for JsonNodes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.rows.iter().map(|&id| json_node(self.forest, id)))
    }
}

/// A path the scan passed over, and why.
#[derive(Serialize)]
pub struct JsonSkipped {
    pub path: String,
    pub reason: String,
}

/// `check --json`.
#[derive(Serialize)]
pub struct JsonCheck {
    pub images: usize,
    pub problems: Vec<JsonFinding>,
}

/// One problem in `check --json`, with its image.
#[derive(Serialize)]
pub struct JsonFinding {
    pub path: String,
    pub kind: &'static str,
    pub severity: &'static str,
    pub message: String,
}

fn path_str(p: &Path) -> String {
    imgchain::text::lossy(p)
}

/// The JSON form of one node.
pub fn json_node(forest: &Forest, id: NodeId) -> JsonNode {
    let n = forest.node(id);
    JsonNode {
        path: path_str(&n.path),
        aliases: n.aliases.iter().map(|a| path_str(a)).collect(),
        format: n.format.map(|f| f.as_str()),
        virtual_size: n.virtual_size,
        file_size: n.file_size,
        allocated: n.allocated,
        disk_usage: {
            let (own, subtree) = disk_usage(forest, id);
            JsonDiskUsage { own, subtree }
        },
        cluster_size: n.cluster_size,
        backing: n.backing.as_ref().map(|b| JsonBacking {
            raw: b.raw.to_string_lossy().into_owned(),
            resolved: path_str(&b.path),
            full_backing_filename: path_str(&b.resolved),
            format: b.format.clone(),
            exists: b.exists,
        }),
        overlays: n
            .overlays
            .iter()
            .map(|&o| path_str(&forest.node(o).path))
            .collect(),
        mode: n.mode.as_str(),
        keep_ro_reason: n.keep_ro_reason.map(|r| r.as_str()),
        in_use: n.in_use().then(|| JsonInUse {
            pid: n.holders.first().map(|h| h.pid),
            command: n.holders.first().map(|h| h.command.clone()),
            vm: n.holders.first().and_then(|h| h.owner.name.clone()),
            owner: n.holders.first().map(|h| json_owner(&h.owner)),
            write: n.foreign.writer(),
            held: n.foreign.held.names(),
            unshared: n.foreign.unshared.names(),
            holders: n
                .holders
                .iter()
                .map(|h| JsonHolder {
                    pid: h.pid,
                    command: h.command.clone(),
                    write: h.foreign.writer(),
                    owner: json_owner(&h.owner),
                })
                .collect(),
        }),
        vm_disks: n
            .vm_disks
            .iter()
            .map(|d| JsonVmDisk {
                domain: d.domain.clone(),
                target: d.target.clone(),
                definition: path_str(&d.definition),
            })
            .collect(),
        libvirt_snapshots: json_snapshot_records(n),
        checkpoints: json_checkpoints(n),
        problems: n
            .problems
            .iter()
            .map(|p| JsonProblem {
                kind: p.kind.as_str(),
                severity: p.severity().as_str(),
                message: p.message.clone(),
            })
            .collect(),
        qcow2: n.qcow2.as_ref().map(|h| JsonQcow2 {
            version: h.version,
            compat: h.compat(),
            refcount_bits: h.refcount_bits(),
            compression_type: h.compression_name(),
            lazy_refcounts: h.lazy_refcounts(),
            extended_l2: h.extended_l2(),
            dirty: h.dirty(),
            corrupt: h.corrupt(),
            external_data_file: h.external_data_file(),
            encrypted: h.encrypted(),
            bitmaps: h.bitmaps(),
            snapshots: h.nb_snapshots,
        }),
    }
}

/// The JSON form of the whole forest, nodes in display order.
pub fn json_tree(scan: &imgchain::forest::Scan) -> JsonTree<'_> {
    let (forest, skipped) = (&scan.forest, &scan.skipped);
    JsonTree {
        trash: JsonTrash {
            dirs: scan.trash.iter().map(|d| path_str(d)).collect(),
            bytes: scan.trash_bytes,
        },
        roots: forest
            .roots
            .iter()
            .map(|&r| path_str(&forest.node(r).path))
            .collect(),
        nodes: JsonNodes {
            forest,
            rows: forest.rows().iter().map(|r| r.id).collect(),
        },
        skipped: skipped
            .iter()
            .map(|s| JsonSkipped {
                path: path_str(&s.path),
                reason: s.reason.clone(),
            })
            .collect(),
    }
}

/// Every problem of every node, in display order.
pub fn json_check(forest: &Forest) -> JsonCheck {
    let mut problems = Vec::new();
    for row in forest.rows() {
        let n = forest.node(row.id);
        for p in &n.problems {
            problems.push(JsonFinding {
                path: path_str(&n.path),
                kind: p.kind.as_str(),
                severity: p.severity().as_str(),
                message: p.message.clone(),
            });
        }
    }
    JsonCheck {
        images: forest.nodes.len(),
        problems,
    }
}

/// An operation's progress line on stderr: redrawn in place on a terminal, one line per phase
/// (and every few seconds) otherwise, as a percentage with one decimal.
pub struct ProgressLine {
    enabled: bool,
    /// The file name of the image whose data the operation changes, shown while it is RW.
    written: String,
    tty: bool,
    last_phase: Option<imgchain::ops::Phase>,
    last_print: Option<std::time::Instant>,
}

impl ProgressLine {
    /// A progress line for a job that writes `written`, drawn only when `enabled` (`-p`).
    pub fn new(enabled: bool, written: &std::path::Path) -> ProgressLine {
        use std::io::IsTerminal;
        ProgressLine {
            enabled,
            written: imgchain::forest::model::file_name(written),
            tty: std::io::stderr().is_terminal(),
            last_phase: None,
            last_print: None,
        }
    }

    /// Shows a progress report (rate-limited).
    pub fn update(&mut self, p: &imgchain::ops::Progress) {
        if !self.enabled {
            return;
        }
        let phase_changed = self.last_phase != Some(p.phase);
        let due = self
            .last_print
            .is_none_or(|t| t.elapsed().as_millis() >= if self.tty { 100 } else { 2000 });
        if !phase_changed && !due {
            return;
        }
        self.last_phase = Some(p.phase);
        self.last_print = Some(std::time::Instant::now());
        let eta = p
            .eta()
            .filter(|_| p.phase == imgchain::ops::Phase::Copy)
            .map(|d| format!(", ETA {}s", d.as_secs()))
            .unwrap_or_default();
        let line = format!(
            "    {:.1}% {} of {}, {}/s{eta} [{}{}]",
            p.percent(),
            human_size(p.done),
            human_size(p.total),
            human_size(p.rate() as u64),
            p.phase,
            if p.writing {
                format!(", {} RW", self.written)
            } else {
                String::new()
            }
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the line on a terminal.
    pub fn finish(&self) {
        if self.enabled && self.tty && self.last_phase.is_some() {
            eprintln!();
        }
    }
}

/// The places searched as JSON, `[{kind, place, found}]`, and the images of the chain outside
/// everything imgchain was pointed at, `[path]`.
pub fn json_searched(all: &[Searched]) -> (serde_json::Value, serde_json::Value) {
    let (outside, searched): (Vec<&Searched>, Vec<&Searched>) =
        all.iter().partition(|s| s.kind == OUTSIDE);
    let outside: Vec<&str> = outside.iter().map(|s| s.place.as_str()).collect();
    (
        serde_json::to_value(searched).unwrap_or_default(),
        serde_json::to_value(outside).unwrap_or_default(),
    )
}

/// The columns text output may fill: `$COLUMNS` when set, else the terminal's width when
/// standard output is one; `None` (no limit) when printing to a pipe or a file.
pub fn terminal_width() -> Option<usize> {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        && cols > 0
    {
        return Some(cols);
    }
    let out = std::io::stdout();
    if !std::io::IsTerminal::is_terminal(&out) {
        return None;
    }
    rustix::termios::tcgetwinsize(&out)
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&w| w > 0)
}

/// ANSI styling for text output; a no-op without colour.
#[derive(Clone, Copy)]
pub struct Paint {
    pub colour: bool,
}

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn mode(self, n: &Node) -> String {
        let badge = badge(n);
        let code = match n.mode {
            Mode::Rw => "32",
            Mode::Ro => "34",
            Mode::KeepRo => "35",
        };
        self.wrap(code, &badge)
    }
    fn severity(self, s: Severity, text: &str) -> String {
        let code = match s {
            Severity::Error => "31",
            Severity::Warning => "33",
            Severity::Note => "2",
        };
        self.wrap(code, text)
    }
}

/// `RW`, `RO`, or `KRO·reason`.
pub fn badge(n: &Node) -> String {
    match (n.mode, n.keep_ro_reason) {
        (Mode::Rw, _) => "RW".into(),
        (Mode::Ro, _) => "RO".into(),
        (Mode::KeepRo, Some(r)) => format!("KRO·{}", r.as_str()),
        (Mode::KeepRo, None) => "KRO".into(),
    }
}

/// The libvirt snapshots that created an image, e.g. `snapshot "s2" of web03`.
pub fn snapshot_names(n: &Node) -> Option<String> {
    let names: Vec<String> = n
        .libvirt_snapshots
        .iter()
        .filter(|r| r.role == imgchain::forest::model::RecordRole::Overlay)
        .map(|r| format!("snapshot {:?} of {}", r.snapshot, r.domain.shown()))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The defined libvirt VMs an image not in use is a disk of, e.g. `disk vda of web03 (not
/// running on it)`; `None` when it is in use (the holder tells) or no definition names it.
pub fn vm_text(n: &Node) -> Option<String> {
    if n.in_use() || n.vm_disks.is_empty() {
        return None;
    }
    let disks: Vec<String> = n
        .vm_disks
        .iter()
        .map(|d| format!("disk {} of {}", d.target.shown(), d.domain.shown()))
        .collect();
    Some(format!("{} (libvirt, not running on it)", disks.join(", ")))
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), human_size)
}

/// Columns after the name on a tree line: two spaces, format, virtual and file size, two
/// spaces (the mode badge and the problem mark come after).
const TREE_FIXED: usize = 2 + 6 + 1 + 9 + 1 + 9 + 2;

/// The tree's names as the UI gives them (relative to the scanned paths), each with its
/// guide, fitted so a line fits `width` (if any).
fn tree_labels(
    forest: &Forest,
    scanned: &[PathBuf],
    rows: &[Row],
    width: Option<usize>,
) -> Vec<String> {
    let names: Vec<String> = (0..forest.nodes.len())
        .map(|i| query::label(forest, scanned, NodeId(i)))
        .collect();
    let starts = query::label_starts(forest, &names);
    let badge_width = rows
        .iter()
        .map(|r| badge(forest.node(r.id)).chars().count())
        .max()
        .unwrap_or(0);
    let room = width.map(|w| w.saturating_sub(TREE_FIXED + badge_width + 2).max(16));
    rows.iter()
        .map(|r| {
            let name = &names[r.id.0];
            let guide = r.guide.chars().count();
            let fitted = match room {
                Some(room) => fit::fit(name, room.saturating_sub(guide), starts[r.id.0]),
                None => name.clone(),
            };
            format!("{}{fitted}", r.guide)
        })
        .collect()
}

/// The text tree: one line per node with format, virtual size, file size and mode badge, and
/// an indented line per problem; names fitted to `width` columns when given (a terminal).
pub fn text_tree(
    forest: &Forest,
    scanned: &[PathBuf],
    paint: Paint,
    width: Option<usize>,
) -> String {
    let rows = forest.rows();
    let labels = tree_labels(forest, scanned, &rows, width);
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    // The root of the tree being printed, and its images so far.
    let (mut root, mut images) = (None, 0);
    for (k, (row, lab)) in rows.iter().zip(&labels).enumerate() {
        let n = forest.node(row.id);
        if row.depth == 0 {
            (root, images) = (Some(row.id), 0);
        }
        images += 1;
        let pad = label_width.saturating_sub(lab.chars().count());
        let mark = if n.problems.iter().any(|p| p.severity() >= Severity::Warning) {
            paint.severity(Severity::Error, " !")
        } else {
            String::new()
        };
        let line = format!(
            "{lab}{:pad$}  {:<6} {:>9} {:>9}  {}{mark}",
            "",
            n.format.map_or("?", |f| f.as_str()),
            opt_size(n.virtual_size),
            opt_size(n.file_size),
            paint.mode(n),
        );
        let _ = write!(out, "{line}");
        let mut col = label_width + TREE_FIXED + badge(n).chars().count() + 2;
        for busy in busy_texts(n) {
            // What holds or names the image: on the line while it fits, else under it.
            let len = busy.text.chars().count();
            if width.is_none_or(|w| col + 2 + len <= w) {
                let _ = write!(out, "  {}", paint.wrap(busy.code, &busy.text));
                col += 2 + len;
            } else {
                let _ = write!(
                    out,
                    "\n{}  {}",
                    row.under,
                    paint.wrap(busy.code, &busy.text)
                );
                col = row.under.chars().count() + 2 + len;
            }
        }
        out.push('\n');
        for p in &n.problems {
            let tag = format!("{}[{}]", p.severity().as_str(), p.kind.as_str());
            let indent = row.under.chars().count() + 2;
            let first = tag.chars().count() + 2;
            let room = width.map_or(usize::MAX, |w| w.saturating_sub(indent).max(24));
            let mut lines = fit::wrap(&p.message, room.saturating_sub(first)).into_iter();
            let _ = writeln!(
                out,
                "{}  {}: {}",
                row.under,
                paint.severity(p.severity(), &tag),
                lines.next().unwrap_or_default()
            );
            let rest: Vec<String> = lines.collect();
            for line in fit::wrap(&rest.join(" "), room)
                .into_iter()
                .filter(|_| !rest.is_empty())
            {
                let _ = writeln!(out, "{}  {line}", row.under);
            }
        }
        // After a root's last descendant: what the whole tree takes on disk.
        if let Some(root) = root
            && rows.get(k + 1).is_none_or(|next| next.depth == 0)
            && !forest.node(root).overlays.is_empty()
        {
            let (_, total) = disk_usage(forest, root);
            let _ = writeln!(
                out,
                "{}",
                paint.wrap(
                    "2",
                    &format!("    = {} on disk in {images} images", human_size(total))
                )
            );
        }
    }
    out
}

/// A note after a tree line, and its colour.
struct Busy {
    code: &'static str,
    text: String,
}

/// Who holds the image (or which VM names it), and the libvirt snapshots it is an overlay of.
fn busy_texts(n: &Node) -> Vec<Busy> {
    let held = in_use_text(n)
        .map(|text| Busy { code: "33", text })
        .or_else(|| vm_text(n).map(|text| Busy { code: "2", text }));
    let snaps = snapshot_names(n).map(|text| Busy { code: "2", text });
    held.into_iter().chain(snaps).collect()
}

/// The internal snapshots of `info --json`, named as `qemu-img info --output=json` names them.
pub fn json_internal_snapshots(n: &Node) -> serde_json::Value {
    let Some(h) = &n.qcow2 else {
        return serde_json::Value::Array(Vec::new());
    };
    match imgchain::image::snapshots::list(&n.path, h) {
        Ok(list) => list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "name": s.name,
                    "date-sec": s.date_sec,
                    "vm-clock-nsec": s.vm_clock_nsec,
                    "vm-state-size": s.vm_state_size,
                })
            })
            .collect(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// The persistent bitmaps of `info --json`: name, granularity, `recording` (enabled and
/// consistent), `enabled`, `in_use`, and `count`, the dirty bytes as QEMU counts them.
pub fn json_bitmaps(n: &Node) -> serde_json::Value {
    let Some(h) = &n.qcow2 else {
        return serde_json::Value::Array(Vec::new());
    };
    match imgchain::image::bitmaps::read(&n.path, h) {
        Ok(list) => list
            .iter()
            .map(|(b, dirty)| {
                serde_json::json!({
                    "name": b.name,
                    "granularity": b.granularity,
                    "enabled": b.enabled,
                    "in_use": b.in_use,
                    "recording": b.recording(),
                    "count": dirty,
                })
            })
            .collect(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// `info` in text: one fact per line.
pub fn text_info(forest: &Forest, id: NodeId, paint: Paint) -> String {
    let n = forest.node(id);
    let mut text = String::new();
    let out = &mut text;
    kv(out, "image:", n.path.shown().to_string());
    kv(
        out,
        "format:",
        n.format.map_or("unknown".into(), |f| f.to_string()),
    );
    kv(
        out,
        "virtual size:",
        n.virtual_size.map_or("unknown".into(), |v| {
            format!("{} ({v} bytes)", human_size(v))
        }),
    );
    kv(
        out,
        "file size:",
        match (n.file_size, n.allocated) {
            (Some(f), Some(a)) => {
                format!("{} ({} allocated on disk)", human_size(f), human_size(a))
            }
            (Some(f), None) => human_size(f),
            _ => "unknown".into(),
        },
    );
    if let Some(c) = n.cluster_size {
        kv(out, "cluster size:", c.to_string());
    }
    if let Some(h) = &n.qcow2 {
        info_qcow2(out, n, h);
    }
    info_backing(out, n);
    let chain: Vec<String> = forest
        .chain(id)
        .map(|c| forest.node(c).path.shown().to_string())
        .collect();
    if !chain.is_empty() {
        kv(out, "chain:", chain.join(" -> "));
    }
    for o in &n.overlays {
        kv(out, "overlay:", forest.node(*o).path.shown().to_string());
    }
    let reason = match n.keep_ro_reason {
        Some(r) => format!(" — {}", r.describe()),
        None if n.mode == imgchain::forest::Mode::Rw => format!(" — {}", writable_because(n)),
        None if n.mode == imgchain::forest::Mode::Ro => format!(" — {}", read_only_because(n)),
        None => String::new(),
    };
    kv(out, "mode:", format!("{}{reason}", paint.mode(n)));
    for d in &n.vm_disks {
        kv(
            out,
            "vm disk:",
            format!(
                "{} of libvirt VM {} (defined in {})",
                d.target.shown(),
                d.domain.shown(),
                d.definition.shown()
            ),
        );
    }
    for r in &n.libvirt_snapshots {
        kv(out, "libvirt:", imgchain::words::snapshot_record_text(r));
    }
    info_use(out, n);
    text
}

/// One `info` line: the key in a column, then the value.
fn kv(out: &mut String, k: &str, v: String) {
    let _ = writeln!(out, "{k:<16}{v}");
}

/// `info`'s qcow2 features and internal snapshots.
fn info_qcow2(out: &mut String, n: &Node, h: &imgchain::image::probe::Qcow2Header) {
    let mut flags = vec![format!("compat {}", h.compat())];
    flags.push(format!("refcount bits {}", h.refcount_bits()));
    flags.push(format!("compression {}", h.compression_name()));
    for (on, state) in [(h.dirty(), "DIRTY"), (h.corrupt(), "CORRUPT")] {
        if on {
            flags.push(state.to_string());
        }
    }
    flags.extend(imgchain::words::qcow2_features(h));
    kv(out, "qcow2:", flags.join(", "));
    match imgchain::image::snapshots::list(&n.path, h) {
        Ok(list) => {
            for s in list {
                kv(out, "  snapshot:", snapshot_text(&s));
            }
        }
        Err(e) => kv(
            out,
            "  snapshots:",
            format!("the snapshot table cannot be read: {e}"),
        ),
    }
    match imgchain::image::bitmaps::read(&n.path, h) {
        Ok(list) => {
            for (b, dirty) in list {
                let note = imgchain::words::checkpoint_note(n, &b.name);
                kv(
                    out,
                    "  bitmap:",
                    format!("{}{note}", bitmap_text(&b, dirty)),
                );
            }
        }
        Err(e) => kv(
            out,
            "  bitmaps:",
            format!("the bitmap directory cannot be read: {e}"),
        ),
    }
}

/// `info`'s backing file: as the header names it, resolved, and its format.
fn info_backing(out: &mut String, n: &Node) {
    match &n.backing {
        None => kv(out, "backing file:", "none".into()),
        Some(b) => {
            kv(out, "backing file:", b.raw.shown().to_string());
            kv(
                out,
                "  resolved:",
                format!(
                    "{}{}",
                    b.path.shown(),
                    if b.exists { "" } else { " (missing)" }
                ),
            );
            kv(
                out,
                "  format:",
                b.format.clone().unwrap_or_else(|| "not recorded".into()),
            );
        }
    }
}

/// `info`'s users and problems: who holds the image, and what is wrong with it.
fn info_use(out: &mut String, n: &Node) {
    if let Some(t) = in_use_text(n) {
        kv(out, "in use:", t);
        kv(
            out,
            "  locks:",
            format!(
                "others hold [{}], refuse to share [{}]",
                n.foreign.held.names().join(", "),
                n.foreign.unshared.names().join(", ")
            ),
        );
        for h in &n.holders {
            kv(out, "  holder:", h.to_string());
        }
    }
    for p in &n.problems {
        kv(
            out,
            &format!("{}:", p.severity().as_str()),
            format!("[{}] {}", p.kind.as_str(), p.message),
        );
    }
}

/// `check` in text: a line per problem and a summary.
pub fn text_check(forest: &Forest, paint: Paint) -> String {
    let mut out = String::new();
    let (mut errors, mut warnings, mut notes) = (0, 0, 0);
    for row in forest.rows() {
        let n = forest.node(row.id);
        for p in &n.problems {
            match p.severity() {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
                Severity::Note => notes += 1,
            }
            let tag = format!("{}[{}]", p.severity().as_str(), p.kind.as_str());
            let _ = writeln!(
                out,
                "{}: {}: {}",
                n.path.shown(),
                paint.severity(p.severity(), &tag),
                p.message
            );
        }
    }
    let c = imgchain::units::count;
    let _ = writeln!(
        out,
        "{} checked: {}, {}, {}",
        c(forest.nodes.len() as u64, "image"),
        c(errors, "error"),
        c(warnings, "warning"),
        c(notes, "note")
    );
    out
}

/// The progress of a scan on stderr, when it is a terminal and the scan takes a while
/// (from 300 ms on, redrawn every 100 ms); cleared when dropped.
pub struct ScanMeter {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScanMeter {
    /// Starts showing the scan `opts` will run (it gets the counters).
    pub fn start(opts: &mut imgchain::forest::ScanOptions) -> ScanMeter {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return ScanMeter { done, thread: None };
        }
        let progress = std::sync::Arc::new(imgchain::forest::ScanProgress::default());
        opts.progress = Some(std::sync::Arc::clone(&progress));
        let stop = std::sync::Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut shown = false;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if start.elapsed() >= std::time::Duration::from_millis(300) {
                    let line = format!("scanning: {}", progress.counts());
                    let width = rustix::termios::tcgetwinsize(std::io::stderr())
                        .map_or(80, |w| w.ws_col.max(20));
                    let line: String = line
                        .chars()
                        .take(usize::from(width.saturating_sub(1)))
                        .collect();
                    eprint!("\r\x1b[K{line}");
                    shown = true;
                }
            }
            if shown {
                eprint!("\r\x1b[K");
            }
        });
        ScanMeter {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for ScanMeter {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(196_608), "192 KiB");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(u64::MAX), "16 EiB");
    }
}
