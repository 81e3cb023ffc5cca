//! The forest: an arena of image nodes linked by backing edges, and its flattened rows.
//!
//! Invariants: each image file appears once (by `(st_dev, st_ino)`); backing edges form no
//! loop (a scan cuts the edge that closes one and reports it); `overlays` is the exact inverse
//! of `Backing::node`, sorted by path; `roots` are the nodes without a backing node, sorted.

use std::cmp::Ordering;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::diag::{Problem, ProblemKind};
use super::state::{self, KeepRoReason, Mode, StateInput};
use crate::image::file::FileId;
use crate::image::lock::{Foreign, Holder};
use crate::image::probe::{Format, Qcow2Header};
use crate::text::Names;

/// The last component of `path` for display (escaped), or the whole path if it has none.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.shown().to_string(), |n| n.shown().to_string())
}

/// A file name as written into a header: as QEMU needs it, with `./` before a name that has a
/// `:` before any `/`, which QEMU would otherwise parse as a protocol (`base:x` → `./base:x`).
pub fn header_name(name: &str) -> String {
    match name.find([':', '/']) {
        Some(i) if name.as_bytes()[i] == b':' => format!("./{name}"),
        _ => name.to_string(),
    }
}

/// Index of a node in [`Forest::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// One disk of a defined libvirt domain (`forest::domains`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDisk {
    /// The domain's name.
    pub domain: String,
    /// The disk's target (`vda`).
    pub target: String,
    /// The definition it was read from.
    pub definition: PathBuf,
}

/// How a libvirt snapshot records an image (`forest::snapmeta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRole {
    /// The file the snapshot created: the disk as written after it.
    Overlay,
    /// The file that holds the disk as it was when the snapshot was taken.
    State,
}

/// A libvirt snapshot that records an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub domain: String,
    pub snapshot: String,
    pub role: RecordRole,
    /// The disk's target (`vda`).
    pub target: String,
    /// The metadata file it was read from.
    pub definition: PathBuf,
}

/// A libvirt checkpoint of a disk whose chain holds the image: its bitmap's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub domain: String,
    pub checkpoint: String,
    pub bitmap: String,
}

/// An image's backing file as its header names it and as it resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backing {
    /// The name exactly as stored in the header.
    pub raw: OsString,
    /// The name resolved the way QEMU does (relative to the overlay's directory, `..` kept:
    /// qemu-img's `full-backing-filename`); protocol and `json:` names are kept as they are.
    pub resolved: PathBuf,
    /// The file it names as imgchain shows it: the backing node's path when it is in the
    /// forest, else `resolved` without `.` and `..`.
    pub path: PathBuf,
    /// The backing format the header declares, if any.
    pub format: Option<String>,
    /// The resolved path names an existing file system object.
    pub exists: bool,
    /// The backing node, when it is an image in the forest.
    pub node: Option<NodeId>,
}

/// One image file.
#[derive(Clone, Debug)]
pub struct Node {
    /// Absolute path, as found (not symlink-resolved: QEMU resolves relative backing names
    /// against the name it was given). When the scan meets the file under several names, a
    /// name that is not a symlink wins.
    pub path: PathBuf,
    /// The other names the scan met this file under (symlinks, hard links).
    pub aliases: Vec<PathBuf>,
    /// `(st_dev, st_ino)`, when the file could be opened.
    pub ident: Option<FileId>,
    pub file_size: Option<u64>,
    /// Bytes allocated on disk (`st_blocks * 512`, qemu-img's `actual-size`).
    pub allocated: Option<u64>,
    pub format: Option<Format>,
    pub virtual_size: Option<u64>,
    pub cluster_size: Option<u64>,
    pub qcow2: Option<Qcow2Header>,
    pub backing: Option<Backing>,
    pub overlays: Vec<NodeId>,
    /// A read-write open of this file succeeded (and was closed at once).
    pub writable: bool,
    /// keep-RO asked for this node itself.
    pub requested: bool,
    pub mode: Mode,
    pub keep_ro_reason: Option<KeepRoReason>,
    pub problems: Vec<Problem>,
    /// QEMU lock bytes other processes hold on this file (probed without locking).
    pub foreign: Foreign,
    /// The processes holding them, writers first, when /proc tells.
    pub holders: Vec<Holder>,
    /// The disks of defined libvirt domains this image is (running or not).
    pub vm_disks: Vec<VmDisk>,
    /// The libvirt snapshots that record this image.
    pub libvirt_snapshots: Vec<SnapshotRecord>,
    /// The libvirt checkpoints of the disks whose chain holds this image.
    pub checkpoints: Vec<CheckpointRecord>,
    /// The file's modification time.
    pub modified: Option<std::time::SystemTime>,
    /// Its owner, group and permission bits, as the scan saw them.
    pub owner: Option<crate::image::file::Owner>,
}

impl Node {
    /// A node for `path` with nothing known yet.
    pub fn new(path: PathBuf) -> Node {
        Node {
            path,
            aliases: Vec::new(),
            ident: None,
            file_size: None,
            allocated: None,
            format: None,
            virtual_size: None,
            cluster_size: None,
            qcow2: None,
            backing: None,
            overlays: Vec::new(),
            writable: false,
            requested: false,
            mode: Mode::Ro,
            keep_ro_reason: None,
            problems: Vec::new(),
            foreign: Foreign::default(),
            holders: Vec::new(),
            vm_disks: Vec::new(),
            libvirt_snapshots: Vec::new(),
            checkpoints: Vec::new(),
            modified: None,
            owner: None,
        }
    }

    /// Another process holds QEMU lock bytes on this image.
    pub fn in_use(&self) -> bool {
        self.foreign.in_use()
    }

    /// The last path component, for display.
    pub fn name(&self) -> String {
        file_name(&self.path)
    }

    /// The backing node, when the backing file is an image in the forest.
    pub fn backing_node(&self) -> Option<NodeId> {
        self.backing.as_ref().and_then(|b| b.node)
    }
}

/// Every image found, linked into backing chains.
#[derive(Clone, Debug, Default)]
pub struct Forest {
    pub nodes: Vec<Node>,
    pub roots: Vec<NodeId>,
}

/// One line of the flattened forest: a node at a depth, with the tree guides to draw.
///
/// Branches are drawn as `├─ `/`└─ `; a node that is its backing file's only overlay is drawn
/// as `↳ ` at its backing file's indentation, so a linear chain of any length stays at one
/// indentation (as `git log --graph` draws a straight history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: NodeId,
    /// How many backing files lie between this node and its root.
    pub depth: usize,
    /// The prefix before the node's name, e.g. `"│  └─ "` or `"↳ "`; empty for roots.
    pub guide: String,
    /// The prefix for lines under this row that belong to it (its problems), carrying the
    /// guides of the rows below.
    pub under: String,
}

/// How a row hangs from the row it is drawn under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hang {
    Root,
    Branch {
        last: bool,
    },
    /// The only overlay of its backing file.
    Run,
}

impl Hang {
    fn marker(self) -> &'static str {
        match self {
            Hang::Root => "",
            Hang::Branch { last: false } => "├─ ",
            Hang::Branch { last: true } => "└─ ",
            Hang::Run => "↳ ",
        }
    }

    /// What stands under the marker on the lines below it.
    fn continuation(self) -> &'static str {
        match self {
            Hang::Root => "",
            Hang::Branch { last: false } => "│  ",
            Hang::Branch { last: true } => "   ",
            Hang::Run => "  ",
        }
    }
}

impl Forest {
    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// Looks a node up by path: the path it was found by, or any path to the same file.
    pub fn find(&self, path: &Path) -> Option<NodeId> {
        let ident = FileId::of_path(path);
        self.nodes
            .iter()
            .position(|n| n.path == path || (ident.is_some() && n.ident == ident))
            .map(NodeId)
    }

    /// Rebuilds `overlays` and `roots` from the backing edges, sorted by path.
    pub fn relink(&mut self) {
        for n in &mut self.nodes {
            n.overlays.clear();
        }
        let mut roots = Vec::new();
        for i in 0..self.nodes.len() {
            match self.nodes[i].backing_node() {
                Some(b) => self.nodes[b.0].overlays.push(NodeId(i)),
                None => roots.push(NodeId(i)),
            }
        }
        let nodes = &self.nodes;
        roots.sort_by(|a, b| nodes[a.0].path.cmp(&nodes[b.0].path));
        let order: Vec<Vec<NodeId>> = nodes
            .iter()
            .map(|n| {
                let mut o = n.overlays.clone();
                o.sort_by(|a, b| nodes[a.0].path.cmp(&nodes[b.0].path));
                o
            })
            .collect();
        for (n, o) in self.nodes.iter_mut().zip(order) {
            n.overlays = o;
        }
        self.roots = roots;
    }

    /// Recomputes every node's mode and keep-RO reason from `requested`, `writable` and the
    /// backing edges.
    pub fn apply_state(&mut self) {
        let inputs: Vec<StateInput> = self
            .nodes
            .iter()
            .map(|n| StateInput {
                backing: n.backing_node().map(|b| b.0),
                requested: n.requested,
                writable: n.writable,
                read_only_mode: n.owner.is_some_and(|o| o.mode & 0o222 == 0),
                read_by_other: n.foreign.in_use() && !n.foreign.writer(),
                written_by_other: n.foreign.writer(),
            })
            .collect();
        for (n, s) in self.nodes.iter_mut().zip(state::compute(&inputs)) {
            n.mode = s.mode;
            n.keep_ro_reason = s.reason;
        }
        self.flag_written_backings();
    }

    /// Flags each image whose backing file another process writes, as the locks say now
    /// (a lock sweep calls this again through [`Forest::apply_state`]).
    fn flag_written_backings(&mut self) {
        let written: Vec<Option<(PathBuf, String)>> = self
            .nodes
            .iter()
            .map(|n| {
                let b = &self.nodes[n.backing_node()?.0];
                let holder = b.holders.iter().find(|h| h.foreign.writer());
                b.foreign.writer().then(|| {
                    (
                        b.path.clone(),
                        holder.map_or("another process".into(), |h| h.to_string()),
                    )
                })
            })
            .collect();
        for (n, w) in self.nodes.iter_mut().zip(written) {
            n.problems.retain(|p| p.kind != ProblemKind::BackingWritten);
            if let Some((backing, holder)) = w {
                n.problems.push(Problem::backing_written(&backing, &holder));
            }
        }
    }

    /// The forest in display order: each root, then its overlays depth-first.
    pub fn rows(&self) -> Vec<Row> {
        self.rows_ordered(None)
    }

    /// [`Forest::rows`] with roots and siblings put in `order` (`None`: the scan's order).
    pub fn rows_ordered(&self, order: Option<&dyn Fn(NodeId, NodeId) -> Ordering>) -> Vec<Row> {
        let sorted = |ids: &[NodeId]| {
            let mut v = ids.to_vec();
            if let Some(o) = order {
                v.sort_by(|&a, &b| o(a, b));
            }
            v
        };
        let mut rows = Vec::with_capacity(self.nodes.len());
        // (node, depth, the guides of the columns left of its marker, how it hangs)
        let mut stack: Vec<(NodeId, usize, String, Hang)> = sorted(&self.roots)
            .into_iter()
            .rev()
            .map(|r| (r, 0, String::new(), Hang::Root))
            .collect();
        while let Some((id, depth, above, hang)) = stack.pop() {
            let inner = format!("{above}{}", hang.continuation());
            let overlays = sorted(&self.nodes[id.0].overlays);
            let under = format!("{inner}{}", if overlays.len() > 1 { "│  " } else { "   " });
            rows.push(Row {
                id,
                depth,
                guide: format!("{above}{}", hang.marker()),
                under,
            });
            if let [only] = overlays[..] {
                // A run keeps the indentation it started at.
                let run_above = if hang == Hang::Run { above } else { inner };
                stack.push((only, depth + 1, run_above, Hang::Run));
                continue;
            }
            for (i, &c) in overlays.iter().enumerate().rev() {
                let last = i + 1 == overlays.len();
                stack.push((c, depth + 1, inner.clone(), Hang::Branch { last }));
            }
        }
        rows
    }

    /// The chain below `id`: its backing image, that one's backing, and so on.
    pub fn chain(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::successors(self.node(id).backing_node(), |&b| {
            self.node(b).backing_node()
        })
        .take(self.nodes.len())
    }
}
