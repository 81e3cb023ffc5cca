//! What the CLI prints: the JSON shapes of ARCHITECTURE.md §5 and the text tree, details and checks.
//!
//! The JSON field names are a stable contract; text output is for people and may change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::forest::diag::Severity;
use crate::forest::scan::Skipped;
use crate::forest::{Forest, Mode, Node, NodeId};
use crate::ops::dependents::{OUTSIDE, Searched};
use crate::text::Names;
pub use crate::units::human_size;

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
    pub problems: Vec<JsonProblem>,
    pub qcow2: Option<JsonQcow2>,
}

/// `disk_usage` of a JSON node: allocated bytes (the file size where that is unknown).
#[derive(Serialize)]
pub struct JsonDiskUsage {
    pub own: u64,
    pub subtree: u64,
}

/// Bytes on disk of `id`, and of `id` with everything built on it.
pub fn disk_usage(forest: &Forest, id: NodeId) -> (u64, u64) {
    let bytes = |i: NodeId| {
        let n = forest.node(i);
        n.allocated.or(n.file_size).unwrap_or(0)
    };
    let mut subtree = 0;
    let mut stack = vec![id];
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            subtree += bytes(i);
            stack.extend(forest.node(i).overlays.iter().copied());
        }
    }
    (bytes(id), subtree)
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

fn json_owner(o: &crate::image::lock::Owner) -> JsonOwner {
    JsonOwner {
        kind: o.manager.as_str(),
        program: o.program.clone(),
        name: o.name.clone(),
        qmp: o.qmp.as_deref().map(path_str),
    }
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
    p.to_string_lossy().into_owned()
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
pub fn json_tree<'a>(forest: &'a Forest, skipped: &[Skipped]) -> JsonTree<'a> {
    JsonTree {
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
/// (and every few seconds) otherwise, like qemu-img's `(NN.NN/100%)`.
pub struct ProgressLine {
    enabled: bool,
    /// The file name of the image whose data the operation changes, shown while it is RW.
    written: String,
    tty: bool,
    last_phase: Option<crate::ops::Phase>,
    last_print: Option<std::time::Instant>,
}

impl ProgressLine {
    /// A progress line for a job that writes `written`, drawn only when `enabled` (`-p`).
    pub fn new(enabled: bool, written: &std::path::Path) -> ProgressLine {
        use std::io::IsTerminal;
        ProgressLine {
            enabled,
            written: crate::forest::model::file_name(written),
            tty: std::io::stderr().is_terminal(),
            last_phase: None,
            last_print: None,
        }
    }

    /// Shows a progress report (rate-limited).
    pub fn update(&mut self, p: &crate::ops::Progress) {
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
            .filter(|_| p.phase == crate::ops::Phase::Copy)
            .map(|d| format!(", ETA {}s", d.as_secs()))
            .unwrap_or_default();
        let line = format!(
            "    ({:.2}/100%) {} of {}, {}/s{eta} [{}{}]",
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

/// `commit --json` when the commit ran.
pub fn json_outcome(o: &crate::ops::commit::Outcome) -> serde_json::Value {
    use crate::image::file::OpenMode;
    use crate::ops::datapath::CopyError;
    let p = |x: &Path| path_str(x);
    let top = match &o.top_emptied {
        Some(Ok(())) => "emptied",
        Some(Err(_)) => "empty-failed",
        None if o.copy.is_ok() => "kept",
        None => "unchanged",
    };
    serde_json::json!({
        "top": p(&o.plan.top.path),
        "base": p(&o.plan.base.path),
        "intermediates": o.plan.intermediates.iter().map(|i| p(&i.path)).collect::<Vec<_>>(),
        "total_bytes": o.total,
        "copied_bytes": o.copied,
        "data_path": json_tally(&o.tally),
        "grew": o.grew.map(|(from, to)| serde_json::json!({"from": from, "to": to})),
        "copy": {
            "ok": o.copy.is_ok(),
            "cancelled": matches!(o.copy, Err(CopyError::Cancelled)),
            "error": o.copy.as_ref().err().map(|e| e.to_string()),
        },
        "left_dirty": o.left_dirty,
        "cancel_too_late": o.cancel_too_late,
        "reopen": {
            "ok": matches!(o.reopen_ro, Some(Ok(()))),
            "attempted": o.reopen_ro.is_some(),
            "error": o.reopen_ro.as_ref().and_then(|r| r.as_ref().err()).map(|e| e.to_string()),
            "base_mode": if o.base_mode() == OpenMode::ReadOnly { "ro" } else { "rw" },
        },
        "top_state": top,
        "top_error": o.top_emptied.as_ref().and_then(|r| r.as_ref().err().cloned()),
        "elapsed_s": o.elapsed.as_secs_f64(),
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    })
}

/// How the data moved: `cloned_bytes` (blocks shared, a reflink), `kernel_bytes` (copied by
/// the kernel), `memory_bytes` (read and written by imgchain).
pub fn json_tally(t: &crate::ops::datapath::Tally) -> serde_json::Value {
    serde_json::json!({
        "cloned_bytes": t.cloned,
        "kernel_bytes": t.kernel,
        "memory_bytes": t.copied,
    })
}

/// `snapshot --json`: the overlay made (or why not).
pub fn json_snapshot(o: &crate::ops::snapshot::Outcome) -> serde_json::Value {
    use crate::ops::Report;
    serde_json::json!({
        "image": path_str(&o.plan.image.path),
        "new": path_str(&o.plan.new),
        "backing": {"name": o.plan.backing_name, "format": o.plan.image.format.as_str()},
        "virtual_size": o.plan.image.virtual_size,
        "cluster_size": o.plan.cluster_size,
        "created": o.created.is_ok(),
        "error": o.created.as_ref().err(),
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    })
}

/// `delete --json`: what was removed, in order, and what failed.
pub fn json_delete(o: &crate::ops::delete::Outcome) -> serde_json::Value {
    use crate::ops::Report;
    serde_json::json!({
        "planned": o.plan.images.iter().map(|i| path_str(&i.path)).collect::<Vec<_>>(),
        "deleted": o.deleted.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
        "failed": o.failed.as_ref().map(|(p, e)| serde_json::json!({"path": path_str(p), "error": e})),
        "dangling_aliases": o.plan.aliases.iter().map(|p| path_str(p)).collect::<Vec<_>>(),
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    })
}

/// `rebase --json` and `flatten --json`.
pub fn json_rebase(o: &crate::ops::rebase::Outcome) -> serde_json::Value {
    use crate::ops::Report;
    serde_json::json!({
        "operation": o.plan.kind.as_str(),
        "image": path_str(&o.plan.image.path),
        "old_backing": o.plan.old.first().map(|b| path_str(&b.path)),
        "backing": o.plan.name.as_ref().map(|(n, f)| serde_json::json!({"name": n, "format": f.as_str()})),
        "safe": o.plan.safe,
        "compared_bytes": o.compared,
        "copied_bytes": o.copied,
        "data_path": json_tally(&o.tally),
        "copy": {
            "ok": o.copy.is_ok(),
            "cancelled": o.cancelled(),
            "error": o.copy.as_ref().err().map(|e| e.to_string()),
        },
        "left_dirty": o.left_dirty,
        "relinked": matches!(o.relinked, Some(Ok(()))),
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    })
}

/// `merge --json`.
pub fn json_merge(o: &crate::ops::merge::Outcome) -> serde_json::Value {
    use crate::ops::Report;
    serde_json::json!({
        "image": path_str(&o.plan.image.path),
        "base": path_str(&o.plan.base.path),
        "resumed": o.plan.resumed,
        "commit": o.commit.as_ref().map(json_outcome),
        "relinked": o.relinked.iter().map(|(p, r)| serde_json::json!({
            "overlay": path_str(p),
            "ok": r.is_ok(),
            "error": r.as_ref().err(),
        })).collect::<Vec<_>>(),
        "deleted": o.deleted.as_ref().map(|r| r.is_ok()),
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    })
}

/// `commit --live`, `merge --live` and `snapshot --live` with `--json`: `target` is the
/// backing file (commit, merge) or the new overlay (snapshot).
pub fn json_live(o: &crate::ops::live::LiveOutcome) -> serde_json::Value {
    use crate::ops::Report;
    use crate::ops::live::{LiveKind, Via};
    let p = &o.plan;
    let mut v = serde_json::json!({
        "operation": p.op().as_str(),
        "live": true,
        "image": path_str(&p.top),
        "target": path_str(&p.target),
        "holder": p.holder,
        "qmp": match &p.via {
            Via::Qmp(s) => Some(path_str(s)),
            Via::Libvirt { .. } => None,
        },
        "libvirt": match &p.via {
            Via::Libvirt { uri, domain } => serde_json::json!({"uri": uri, "domain": domain}),
            Via::Qmp(_) => serde_json::Value::Null,
        },
        "copied_bytes": o.copied,
        "completed": o.completed,
        "pivoted": o.completed && matches!(p.kind, LiveKind::Commit),
        "cancelled": o.cancelled,
        "error": o.error,
        "exit_code": o.exit_code(),
        "summary": o.summary(),
    });
    if let LiveKind::Merge {
        overlay,
        backing_name,
        ..
    } = &p.kind
    {
        v["overlay"] = path_str(overlay).into();
        v["backing_name"] = backing_name.as_str().into();
    }
    v
}

/// An operation's `--json` when it was refused or could not start.
pub fn json_refusal(e: &crate::ops::Refusal) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "kind": e.kind(),
            "message": e.to_string(),
            "exit_code": e.exit_code(),
        }
    })
}

/// Where a plan looked for images built on its target, in one paragraph: each kind of place
/// with its places (or how many, when there are many), then what was found where (each image
/// once), or "none found".
pub fn searched_text(all: &[Searched]) -> String {
    let (outside, searched): (Vec<&Searched>, Vec<&Searched>) =
        all.iter().partition(|s| s.kind == OUTSIDE);
    let mut kinds: Vec<&str> = Vec::new();
    for s in &searched {
        if !kinds.contains(&s.kind) {
            kinds.push(s.kind);
        }
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|k| {
            let places: Vec<&str> = searched
                .iter()
                .filter(|s| s.kind == *k)
                .map(|s| s.place.as_str())
                .collect();
            let label = k.replace(['-', '_'], " ");
            if places.len() <= 3 {
                format!("{label} {}", places.join(", "))
            } else {
                format!("{label}: {} of them", places.len())
            }
        })
        .collect();
    let mut told: Vec<&Path> = Vec::new();
    let mut found: Vec<String> = Vec::new();
    for s in &searched {
        let names: Vec<String> = s
            .found
            .iter()
            .filter(|f| !told.contains(&f.as_path()))
            .map(|f| f.shown().to_string())
            .collect();
        told.extend(s.found.iter().map(PathBuf::as_path));
        if !names.is_empty() {
            found.push(format!("{} in {} ({})", names.join(", "), s.place, s.kind));
        }
    }
    let result = if found.is_empty() {
        "none found".to_string()
    } else {
        format!("found {}", found.join("; "))
    };
    let mut text = format!(
        "Looked for other images built on this chain in: {}; {result}.",
        parts.join("; ")
    );
    if !outside.is_empty() {
        let names: Vec<&str> = outside.iter().map(|s| s.place.as_str()).collect();
        text.push_str(&format!(
            " Outside everything imgchain was pointed at, reached only through a backing name \
             in a header: {}.",
            names.join(", ")
        ));
    }
    text
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

/// A short note on who uses an image, e.g. `in use by qemu-io[4242], writing`.
pub fn in_use_text(n: &Node) -> Option<String> {
    if !n.in_use() {
        return None;
    }
    let how = if n.foreign.writer() {
        "writing"
    } else {
        "reading"
    };
    let who: Vec<String> = n
        .holders
        .iter()
        .map(|h| format!("{}[{}]", h.label().shown(), h.pid))
        .collect();
    Some(if who.is_empty() {
        format!("in use (holder unknown), {how}")
    } else {
        format!("in use by {}, {how}", who.join(", "))
    })
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

/// The label of a node in the tree: the whole path for roots and for overlays that live in
/// another directory than their backing file, the file name otherwise.
fn label(forest: &Forest, id: NodeId) -> String {
    let n = forest.node(id);
    match n.backing_node() {
        Some(b) if forest.node(b).path.parent() == n.path.parent() => n.name(),
        _ => n.path.shown().to_string(),
    }
}

fn opt_size(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), human_size)
}

/// The text tree: one line per node with format, virtual size, file size and mode badge, and
/// an indented line per problem.
pub fn text_tree(forest: &Forest, paint: Paint) -> String {
    let rows = forest.rows();
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{}{}", r.guide, label(forest, r.id)))
        .collect();
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(72);
    let mut out = String::new();
    // The root of the tree being printed, and its images so far.
    let (mut root, mut images) = (None, 0);
    for (k, (row, lab)) in rows.iter().zip(&labels).enumerate() {
        let n = forest.node(row.id);
        if row.depth == 0 {
            (root, images) = (Some(row.id), 0);
        }
        images += 1;
        let pad = width.saturating_sub(lab.chars().count());
        let mark = if n.problems.iter().any(|p| p.severity() >= Severity::Warning) {
            paint.severity(Severity::Error, " !")
        } else {
            String::new()
        };
        let busy = in_use_text(n)
            .map(|t| format!("  {}", paint.wrap("33", &t)))
            .or_else(|| vm_text(n).map(|t| format!("  {}", paint.wrap("2", &t))))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{lab}{:pad$}  {:<6} {:>9} {:>9}  {}{mark}{busy}",
            "",
            n.format.map_or("?", |f| f.as_str()),
            opt_size(n.virtual_size),
            opt_size(n.file_size),
            paint.mode(n),
        );
        let cont: String = row.guide.replace("├── ", "│   ").replace("└── ", "    ");
        let child_cont = if n.overlays.is_empty() {
            "    "
        } else {
            "│   "
        };
        for p in &n.problems {
            let tag = format!("{}[{}]", p.severity().as_str(), p.kind.as_str());
            let _ = writeln!(
                out,
                "{cont}{child_cont}  {}: {}",
                paint.severity(p.severity(), &tag),
                p.message
            );
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

/// One internal snapshot in words: `1 "before-upgrade", 2026-12-02 14:05 UTC, 4 KiB VM state`.
pub fn snapshot_text(s: &crate::image::snapshots::InternalSnapshot) -> String {
    let state = if s.vm_state_size > 0 {
        format!(", {} VM state", human_size(s.vm_state_size))
    } else {
        String::new()
    };
    format!(
        "{} {:?}, {}{state}",
        s.id,
        s.name,
        crate::units::utc_minute(i64::from(s.date_sec))
    )
}

/// The internal snapshots of `info --json`, named as `qemu-img info --output=json` names them.
pub fn json_internal_snapshots(n: &Node) -> serde_json::Value {
    let Some(h) = &n.qcow2 else {
        return serde_json::Value::Array(Vec::new());
    };
    match crate::image::snapshots::list(&n.path, h) {
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

/// Why an image is shown writable: nothing found is built on it, which holds only for the
/// paths scanned.
pub fn writable_because(n: &Node) -> &'static str {
    if n.backing.is_some() {
        "a top image: writable; nothing under the scanned paths is built on it"
    } else {
        "writable: no overlays found under the scanned paths (VMs elsewhere? add their \
         directories to scan.overlay_dirs)"
    }
}

/// `info` in text: one fact per line.
pub fn text_info(forest: &Forest, id: NodeId, paint: Paint) -> String {
    let n = forest.node(id);
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<16}{v}");
    };
    line("image:", n.path.shown().to_string());
    line(
        "format:",
        n.format.map_or("unknown".into(), |f| f.to_string()),
    );
    line(
        "virtual size:",
        n.virtual_size.map_or("unknown".into(), |v| {
            format!("{} ({v} bytes)", human_size(v))
        }),
    );
    line(
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
        line("cluster size:", c.to_string());
    }
    if let Some(h) = &n.qcow2 {
        let mut flags = vec![format!("compat {}", h.compat())];
        flags.push(format!("refcount bits {}", h.refcount_bits()));
        flags.push(format!("compression {}", h.compression_name()));
        for (on, name) in [
            (h.lazy_refcounts(), "lazy refcounts"),
            (h.extended_l2(), "extended L2"),
            (h.dirty(), "DIRTY"),
            (h.corrupt(), "CORRUPT"),
            (h.external_data_file(), "external data file"),
            (h.encrypted(), "encrypted"),
            (h.bitmaps(), "persistent bitmaps"),
        ] {
            if on {
                flags.push(name.to_string());
            }
        }
        if h.nb_snapshots > 0 {
            flags.push(crate::units::count(
                u64::from(h.nb_snapshots),
                "internal snapshot",
            ));
        }
        line("qcow2:", flags.join(", "));
        match crate::image::snapshots::list(&n.path, h) {
            Ok(list) => {
                for s in list {
                    line("  snapshot:", snapshot_text(&s));
                }
            }
            Err(e) => line(
                "  snapshots:",
                format!("the snapshot table cannot be read: {e}"),
            ),
        }
    }
    match &n.backing {
        None => line("backing file:", "none".into()),
        Some(b) => {
            line("backing file:", b.raw.shown().to_string());
            line(
                "  resolved:",
                format!(
                    "{}{}",
                    b.path.shown(),
                    if b.exists { "" } else { " (missing)" }
                ),
            );
            line(
                "  format:",
                b.format.clone().unwrap_or_else(|| "not recorded".into()),
            );
        }
    }
    let chain: Vec<String> = forest
        .chain(id)
        .map(|c| forest.node(c).path.shown().to_string())
        .collect();
    if !chain.is_empty() {
        line("chain:", chain.join(" -> "));
    }
    for o in &n.overlays {
        line("overlay:", forest.node(*o).path.shown().to_string());
    }
    let reason = match n.keep_ro_reason {
        Some(r) => format!(" — {}", r.describe()),
        None if n.mode == crate::forest::Mode::Rw => format!(" — {}", writable_because(n)),
        None => String::new(),
    };
    line("mode:", format!("{}{reason}", paint.mode(n)));
    for d in &n.vm_disks {
        line(
            "vm disk:",
            format!(
                "{} of libvirt VM {} (defined in {})",
                d.target.shown(),
                d.domain.shown(),
                d.definition.shown()
            ),
        );
    }
    if let Some(t) = in_use_text(n) {
        line("in use:", t);
        line(
            "  locks:",
            format!(
                "others hold [{}], refuse to share [{}]",
                n.foreign.held.names().join(", "),
                n.foreign.unshared.names().join(", ")
            ),
        );
        for h in &n.holders {
            line("  holder:", h.to_string());
        }
    }
    for p in &n.problems {
        line(
            &format!("{}:", p.severity().as_str()),
            format!("[{}] {}", p.kind.as_str(), p.message),
        );
    }
    out
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
    let _ = writeln!(
        out,
        "{} images checked: {errors} errors, {warnings} warnings, {notes} notes",
        forest.nodes.len()
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
    pub fn start(opts: &mut crate::forest::ScanOptions) -> ScanMeter {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return ScanMeter { done, thread: None };
        }
        let progress = std::sync::Arc::new(crate::forest::ScanProgress::default());
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
