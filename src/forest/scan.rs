//! Scan: walk the given paths, probe every candidate file, resolve backing names as QEMU does,
//! and link the images into a [`Forest`].
//!
//! Invariants:
//! - Nothing is written, and no lock is taken. Every name is first opened `O_PATH` and checked
//!   with `fstat`/`fstatfs` (`image::file::look`); only a regular file on a real filesystem is
//!   then opened `O_RDONLY|O_NONBLOCK|O_NOCTTY`, through that fd. Writability is asked of the
//!   kernel (`faccessat`), never tried with an `O_RDWR` open.
//! - Devices, FIFOs, sockets, directories and files of /proc, /sys and the like are never
//!   opened (one named as a backing file is reported from `fstat` alone), and directories on
//!   those filesystems are never walked, nor a directory link leading out of the scanned paths.
//! - A directory deeper than `max_depth` is reported as skipped, with the setting.
//! - Each file is one node, by `(st_dev, st_ino)`; the first path it is found by names it.
//! - Relative backing names resolve against the overlay's directory (QEMU's `path_combine`);
//!   protocol and `json:` names are recorded, never followed.
//! - Symlinked directories are followed once: a directory already walked is not walked again.
//! - Everything is iterative, so a chain of any depth cannot overflow the stack.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::diag::Problem;
use super::model::{Backing, Forest, Node, NodeId};
use crate::image::file::OpenMode;
use crate::image::file::{self, FileId};
use crate::image::probe::{self, Format, ProbeError};
use crate::text::Names;

/// What to scan and how.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// How many directory levels below a given directory to descend.
    pub max_depth: usize,
    /// Follow symlinks to directories and files found while walking.
    pub follow_symlinks: bool,
    /// Extensions (without the dot) of raw files that count as images while walking.
    pub raw_extensions: Vec<String>,
    /// Directories of libvirt domain definitions whose disks are labelled.
    pub libvirt_domains: Vec<PathBuf>,
    /// Directories of libvirt's snapshot and checkpoint metadata (`DIR/DOMAIN/*.xml`).
    pub libvirt_snapshots: Vec<PathBuf>,
    pub libvirt_checkpoints: Vec<PathBuf>,
    /// Directories always searched (to `overlay_depth` levels) for overlays of the images
    /// found: their images join the forest when their chain leads into it.
    pub overlay_dirs: Vec<PathBuf>,
    pub overlay_depth: usize,
    /// Counters a scan updates as it goes, for whoever shows its progress.
    pub progress: Option<Arc<ScanProgress>>,
}

/// How far a scan has come: directories listed, files met and probed, images found, and the
/// directory being listed.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub dirs: AtomicUsize,
    pub files: AtomicUsize,
    pub probed: AtomicUsize,
    pub images: AtomicUsize,
    pub current: Mutex<PathBuf>,
}

/// A copy of [`ScanProgress`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub dirs: usize,
    pub files: usize,
    pub probed: usize,
    pub images: usize,
    pub current: PathBuf,
}

impl ScanProgress {
    pub fn counts(&self) -> ScanCounts {
        ScanCounts {
            dirs: self.dirs.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            probed: self.probed.load(Ordering::Relaxed),
            images: self.images.load(Ordering::Relaxed),
            current: self.current.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ScanCounts {
    /// `1,204 images, 3,001 of 5,000 files read, 120 directories — /srv/vm/pool`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} of {} files read, {} — {}",
            crate::units::count(self.images as u64, "image"),
            self.probed,
            self.files,
            match self.dirs {
                1 => "1 directory".to_string(),
                n => format!("{n} directories"),
            },
            self.current.shown()
        )
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_depth: 16,
            follow_symlinks: true,
            raw_extensions: vec!["img".into(), "raw".into()],
            libvirt_domains: Vec::new(),
            libvirt_snapshots: Vec::new(),
            libvirt_checkpoints: Vec::new(),
            overlay_dirs: Vec::new(),
            overlay_depth: 16,
            progress: None,
        }
    }
}

/// A path given to the scan that cannot be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// `cause` is in the message itself (not a `source`, which callers would print again).
    #[error("cannot scan {}: {cause}; check the path and its permissions", path.shown())]
    Access { path: PathBuf, cause: io::Error },
    #[error("{} is {what}; imgchain only reads regular image files and directories, and never opens devices", path.shown())]
    NotAFile { path: PathBuf, what: &'static str },
}

/// A file or directory met while walking that was passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The result of a scan: the forest and what was passed over.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub forest: Forest,
    pub skipped: Vec<Skipped>,
    /// The directories met that have a trash (`crate::trash`), never walked into.
    pub trash: Vec<PathBuf>,
    /// Bytes their trashes hold.
    pub trash_bytes: u64,
    /// Merge journals whose image is gone: nothing can resume from them.
    pub stale_journals: Vec<PathBuf>,
    /// Regular files the walk met named as imgchain names what it works on
    /// ([`temporary_name`]), images or not.
    pub temporaries: Vec<PathBuf>,
}

/// `path` without `.` and `..` components, as the kernel resolves them: its directory made
/// canonical (a `..` after a symlinked directory leads where the kernel goes), its file name
/// kept as it is. Paths without such components are returned unchanged, without a syscall.
fn normalised(path: &Path) -> PathBuf {
    use std::path::Component;
    if !path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return path.to_path_buf();
    }
    match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Extensions that name an image format; a file so named without the header is reported.
const FORMAT_EXTENSIONS: &[&str] = &["qcow2", "qcow", "qed", "vmdk", "vdi", "vhdx", "vhd"];

/// Scans `paths` (files or directories) into a forest. Modes are not yet computed: set
/// `requested` on the nodes and call [`Forest::apply_state`].
pub fn scan(paths: &[PathBuf], opts: &ScanOptions) -> Result<Scan, ScanError> {
    let mut s = Scanner::collect(paths, opts)?;
    s.add_overlays_from(&opts.overlay_dirs);
    for image in std::mem::take(&mut s.journals) {
        if let Some(&id) = s.by_path.get(&image) {
            let node = &mut s.scan.forest.nodes[id.0];
            node.problems.push(Problem::interrupted_merge(&node.path));
        } else if std::fs::symlink_metadata(&image).is_err() {
            s.scan.stale_journals.push(merge_journal(&image));
        }
    }
    let mut scan = s.scan;
    for n in &mut scan.forest.nodes {
        if temporary_name(&n.path) {
            n.problems.push(Problem::leftover());
        }
    }
    for (path, reason) in super::domains::label(&mut scan.forest, &opts.libvirt_domains) {
        scan.skipped.push(Skipped { path, reason });
    }
    find_holders(&mut scan.forest);
    cut_loops(&mut scan.forest);
    scan.forest.relink();
    let meta = (&opts.libvirt_snapshots[..], &opts.libvirt_checkpoints[..]);
    for (path, reason) in super::snapmeta::label(&mut scan.forest, meta) {
        scan.skipped.push(Skipped { path, reason });
    }
    name_backings(&mut scan.forest);
    scan.forest.apply_state();
    Ok(scan)
}

/// Sets each backing's shown path: its node's path (the node is the file, whatever name the
/// header uses), else the resolved name normalised.
fn name_backings(forest: &mut Forest) {
    let paths: Vec<PathBuf> = forest.nodes.iter().map(|n| n.path.clone()).collect();
    for n in &mut forest.nodes {
        if let Some(b) = &mut n.backing {
            b.path = match b.node {
                Some(id) => paths[id.0].clone(),
                None => normalised(&b.resolved),
            };
        }
    }
}

struct Scanner<'a> {
    opts: &'a ScanOptions,
    scan: Scan,
    by_ident: HashMap<FileId, NodeId>,
    /// Nodes by the path they were found by.
    by_path: HashMap<PathBuf, NodeId>,
    walked: HashSet<FileId>,
    /// Images whose merge journal the walk met: a merge of them was cut short.
    journals: Vec<PathBuf>,
    /// The scanned directories, resolved: a directory link is followed only into them.
    roots: Vec<PathBuf>,
}

/// Where the journal of a merge of `image` lives: `.NAME.imgchain-merge` beside it.
pub fn merge_journal(image: &Path) -> PathBuf {
    let dir = image.parent().unwrap_or(Path::new("/"));
    dir.join(format!(
        ".{}{MERGE_JOURNAL}",
        super::model::file_name(image)
    ))
}

const MERGE_JOURNAL: &str = ".imgchain-merge";

/// Whether a file name is one imgchain gives files while it works on them: a new file not yet
/// under its name (`.NAME.….imgchain-tmp`) or one being deleted (`.NAME.PID.imgchain-del`).
/// Such an image gets a `leftover` note; `ops::clean` lists those no running imgchain holds.
pub fn temporary_name(path: &Path) -> bool {
    let name = super::model::file_name(path);
    name.starts_with('.') && (name.ends_with(".imgchain-tmp") || name.ends_with(".imgchain-del"))
}

/// What kernel filesystem the directory `path` is on, if it is one of them.
fn pseudo_dir(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    file::pseudo_filesystem(st.f_type as i64)
}

/// Describes a non-regular file for messages.
fn kind_of(md: &Metadata) -> &'static str {
    file::special_kind(md.mode()).unwrap_or("a regular file")
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// QEMU's `path_has_protocol`: a `:` before the first `/`.
fn has_protocol(name: &[u8]) -> bool {
    name.iter()
        .find(|&&c| c == b':' || c == b'/')
        .is_some_and(|&c| c == b':')
}

/// QEMU's `path_combine`: relative names resolve against the overlay's directory.
fn resolve(overlay: &Path, raw: &OsStr) -> PathBuf {
    let raw = Path::new(raw);
    if raw.is_absolute() {
        return raw.to_path_buf();
    }
    match overlay.parent() {
        Some(dir) => dir.join(raw),
        None => raw.to_path_buf(),
    }
}

/// What probing one file found.
enum Inspected {
    /// A walked file that is not an image.
    NotImage,
    /// Not a regular file (what it is instead).
    Special(&'static str),
    /// Could not be looked at, and is not worth a node.
    Skip(String),
    Image(Box<Node>),
}

/// Opens, checks and probes one file. Touches no shared state, so walked files are inspected
/// in parallel. `explicit` files become nodes whatever they hold; walked ones only when they
/// have an image header or an image extension.
fn inspect(path: &Path, explicit: bool, opts: &ScanOptions) -> Inspected {
    let ext = extension(path);
    let format_named = ext
        .as_deref()
        .filter(|e| FORMAT_EXTENSIONS.contains(e))
        .map(str::to_owned);
    let raw_named = ext
        .as_deref()
        .is_some_and(|e| opts.raw_extensions.iter().any(|r| r == e));
    let counts = explicit || raw_named || format_named.is_some();
    let unreadable = |e: io::Error, looked: Option<&file::Looked>| {
        if !counts {
            return Inspected::NotImage;
        }
        let mut node = Node::new(path.to_path_buf());
        node.ident = looked.map(file::Looked::ident);
        node.file_size = looked.map(|l| l.stat.st_size as u64);
        node.problems.push(Problem::unreadable(path, &e));
        Inspected::Image(Box::new(node))
    };
    let looked = match file::look(path) {
        Ok(l) => l,
        Err(e) => return unreadable(e, None),
    };
    if let Some(what) = looked.special {
        return if counts {
            Inspected::Special(what)
        } else {
            Inspected::NotImage
        };
    }
    let file = match looked.open(OpenMode::ReadOnly).map(File::from) {
        Ok(f) => f,
        Err(e) => return unreadable(e, Some(&looked)),
    };
    let md = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Inspected::Skip(format!("cannot stat: {e}")),
    };
    let probed = match file::read_header(&file, md.len()) {
        Ok(p) => p,
        Err(_) if !counts => return Inspected::NotImage,
        Err(e) => Err(ProbeError::Invalid(format!("read failed: {e}"))),
    };
    let mut node = Node::new(path.to_path_buf());
    node.ident = Some(FileId::of(&md));
    node.file_size = Some(md.len());
    node.allocated = Some(md.blocks() * 512);
    node.modified = md.modified().ok();
    node.owner = Some(file::Owner {
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode() & 0o7777,
    });
    if let Err(not) = describe_probe(&mut node, probed, (&file, format_named.as_deref(), counts)) {
        return not;
    }
    // An image whose lock bytes cannot be probed (a file system without OFD locks) is
    // shown as not in use: nothing else would be able to lock it either.
    node.foreign = crate::image::lock::probe(file.as_fd()).unwrap_or_default();
    drop(file);
    node.writable = looked.writable();
    Inspected::Image(Box::new(node))
}

/// What the header probe found, into `node`: format, sizes and header problems, or a
/// damaged header; `Err` when a file that does not count as an image probed as raw.
fn describe_probe(
    node: &mut Node,
    probed: Result<crate::image::probe::Probed, ProbeError>,
    (file, format_named, counts): (&File, Option<&str>, bool),
) -> Result<(), Inspected> {
    match probed {
        Ok(p) => {
            if p.format == Format::Raw {
                if !counts {
                    return Err(Inspected::NotImage);
                }
                if let Some(e) = format_named {
                    node.problems.push(Problem::not_an_image(e));
                }
            }
            node.format = Some(p.format);
            node.virtual_size = p.virtual_size;
            node.cluster_size = p.cluster_size;
            if let Some(h) = &p.qcow2 {
                header_problems(node, h);
            }
            node.qcow2 = p.qcow2;
        }
        Err(e) => {
            // Only the qcow/qcow2 parsers report damage; everything else probes as raw.
            let fmt = if path_is_qcow1(file) {
                Format::Qcow
            } else {
                Format::Qcow2
            };
            node.format = Some(fmt);
            let problem = Problem::bad_header(&node.path, fmt.as_str(), &e.to_string());
            node.problems.push(problem);
        }
    }
    Ok(())
}

impl<'a> Scanner<'a> {
    /// Walks `paths` and follows every backing name found.
    fn collect(paths: &[PathBuf], opts: &'a ScanOptions) -> Result<Scanner<'a>, ScanError> {
        let mut s = Scanner {
            opts,
            scan: Scan::default(),
            by_ident: HashMap::new(),
            by_path: HashMap::new(),
            walked: HashSet::new(),
            journals: Vec::new(),
            roots: Vec::new(),
        };
        for p in paths {
            let abs = std::path::absolute(p).map_err(|cause| ScanError::Access {
                path: p.clone(),
                cause,
            })?;
            let md = std::fs::metadata(&abs).map_err(|cause| ScanError::Access {
                path: abs.clone(),
                cause,
            })?;
            if md.is_dir() {
                if let Ok(real) = std::fs::canonicalize(&abs) {
                    s.roots.push(real);
                }
                s.walk(abs, &md);
            } else if md.is_file() {
                s.add_file(&abs, true)
                    .map_err(|what| ScanError::NotAFile { path: abs, what })?;
            } else {
                return Err(ScanError::NotAFile {
                    path: abs,
                    what: kind_of(&md),
                });
            }
        }
        s.resolve_backings(0);
        Ok(s)
    }

    /// Adds the images under `dirs` whose backing chain leads into the forest (with the
    /// layers between), as if they had been scanned; a directory that cannot be scanned is
    /// reported as skipped.
    fn add_overlays_from(&mut self, dirs: &[PathBuf]) {
        if dirs.is_empty() {
            return;
        }
        let opts = ScanOptions {
            max_depth: self.opts.overlay_depth,
            overlay_dirs: Vec::new(),
            ..self.opts.clone()
        };
        let mut found = Vec::new();
        for dir in dirs {
            let sub = match Scanner::collect(std::slice::from_ref(dir), &opts) {
                Ok(sub) => sub,
                Err(e) => {
                    self.skip(dir.clone(), format!("overlay directory: {e}"));
                    continue;
                }
            };
            let nodes = &sub.scan.forest.nodes;
            let known = |i: usize| {
                nodes[i]
                    .ident
                    .is_some_and(|f| self.by_ident.contains_key(&f))
            };
            // By node: whether its chain reaches a node of this forest (memoised walk).
            let mut leads: Vec<Option<bool>> = vec![None; nodes.len()];
            for start in 0..nodes.len() {
                let mut path = Vec::new();
                let mut at = Some(start);
                let answer = loop {
                    let Some(i) = at else { break false };
                    if let Some(a) = leads[i] {
                        break a;
                    }
                    if known(i) {
                        break true;
                    }
                    if path.contains(&i) {
                        break false;
                    }
                    path.push(i);
                    at = nodes[i].backing.as_ref().and_then(|b| b.node).map(|b| b.0);
                };
                for i in path {
                    leads[i] = Some(answer);
                }
            }
            found.extend(
                (0..nodes.len())
                    .filter(|&i| leads[i] == Some(true) && !known(i))
                    .map(|i| nodes[i].path.clone()),
            );
        }
        let from = self.scan.forest.nodes.len();
        for path in found {
            // A file that changed since the sub-scan is passed over, as a walked one is.
            let _ = self.add_file(&path, true);
        }
        self.resolve_backings(from);
    }
}

impl Scanner<'_> {
    fn walk(&mut self, root: PathBuf, md: &Metadata) {
        self.walked.insert(FileId::of(md));
        let mut stack = vec![(root, 0usize)];
        let mut all = Vec::new();
        while let Some((dir, depth)) = stack.pop() {
            if let Some(p) = &self.opts.progress {
                p.dirs.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut c) = p.current.lock() {
                    c.clone_from(&dir);
                }
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    self.skip(dir, format!("cannot list directory: {e}"));
                    continue;
                }
            };
            let mut files = Vec::new();
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        self.skip(dir.clone(), format!("cannot list directory: {e}"));
                        break;
                    }
                };
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                // A trash holds what was removed: never images of the forest.
                if entry.file_name() == crate::trash::DIR {
                    if ft.is_dir() {
                        self.met_trash(&dir);
                    }
                    continue;
                }
                let md = if ft.is_symlink() {
                    let Some(m) = self.follow(&path) else {
                        continue;
                    };
                    m
                } else if ft.is_dir() {
                    match std::fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(_) => continue,
                    }
                } else {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if let Some(image) = name
                        .strip_prefix('.')
                        .and_then(|n| n.strip_suffix(MERGE_JOURNAL))
                    {
                        self.journals.push(normalised(&dir.join(image)));
                    } else if ft.is_file() {
                        if temporary_name(&path) {
                            self.scan.temporaries.push(path.clone());
                        }
                        files.push(path);
                    }
                    continue;
                };
                if md.is_dir() {
                    if self.enters(&path, &md, depth) {
                        stack.push((path, depth + 1));
                    }
                } else if md.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            if let Some(p) = &self.opts.progress {
                p.files.fetch_add(files.len(), Ordering::Relaxed);
            }
            all.extend(files);
        }
        self.add_walked(&all);
    }

    /// What a symlink met while walking leads to, when the walk follows it: links are followed
    /// when `follow_symlinks` is on, a directory link only into the scanned paths; a broken one
    /// and one leading out are reported as skipped.
    fn follow(&mut self, path: &Path) -> Option<Metadata> {
        if !self.opts.follow_symlinks {
            return None;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() && !self.inside_roots(path) => {
                self.skip(
                    path.to_path_buf(),
                    "a link to a directory outside the scanned paths: name its target as a \
                     path to scan it"
                        .into(),
                );
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                self.skip(path.to_path_buf(), format!("broken symlink: {e}"));
                None
            }
        }
    }

    /// Whether the walk goes into the directory `path` met at `depth`: not on a kernel
    /// filesystem, not deeper than `max_depth` (both reported as skipped), not walked yet.
    fn enters(&mut self, path: &Path, md: &Metadata, depth: usize) -> bool {
        if let Some(what) = pseudo_dir(path) {
            self.skip(path.to_path_buf(), format!("{what}: never walked"));
            false
        } else if depth >= self.opts.max_depth {
            self.skip(
                path.to_path_buf(),
                format!(
                    "deeper than scan.max_depth ({}) below the scanned path: raise it or name \
                     this directory to scan it",
                    self.opts.max_depth
                ),
            );
            false
        } else {
            self.walked.insert(FileId::of(md))
        }
    }

    /// Whether the directory `path` names lies under one of the scanned paths.
    fn inside_roots(&self, path: &Path) -> bool {
        std::fs::canonicalize(path).is_ok_and(|real| self.roots.iter().any(|r| real.starts_with(r)))
    }

    /// A directory with a trash: listed with the bytes it holds (a trash imgchain would not
    /// use is reported as skipped, with the reason).
    fn met_trash(&mut self, dir: &Path) {
        match crate::trash::Trash::open(dir) {
            Ok(Some(t)) => {
                self.scan.trash_bytes += t.entries().iter().map(|l| l.bytes()).sum::<u64>();
                self.scan.trash.push(dir.to_path_buf());
            }
            Ok(None) => {}
            Err(e) => self.skip(e.path, e.what),
        }
    }

    fn skip(&mut self, path: PathBuf, reason: String) {
        self.scan.skipped.push(Skipped { path, reason });
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.scan.forest.nodes.len());
        if let Some(i) = node.ident {
            self.by_ident.insert(i, id);
        }
        self.by_path.insert(node.path.clone(), id);
        self.scan.forest.nodes.push(node);
        id
    }

    /// Probes `path` and adds it as a node (or finds the node it already is). Explicit files
    /// (named by the user or as a backing file) always become nodes.
    fn add_file(&mut self, path: &Path, explicit: bool) -> Result<Option<NodeId>, &'static str> {
        let inspected = inspect(path, explicit, self.opts);
        self.insert(path, inspected)
    }

    /// Adds what [`inspect`] found, unless the same file is a node already.
    fn insert(
        &mut self,
        path: &Path,
        inspected: Inspected,
    ) -> Result<Option<NodeId>, &'static str> {
        match inspected {
            Inspected::NotImage => Ok(None),
            Inspected::Special(what) => Err(what),
            Inspected::Skip(reason) => {
                self.skip(path.to_path_buf(), reason);
                Ok(None)
            }
            Inspected::Image(node) => match node.ident.and_then(|i| self.by_ident.get(&i)) {
                Some(&id) => {
                    self.alias(id, path);
                    Ok(Some(id))
                }
                None => {
                    let mut node = *node;
                    node.path = normalised(path);
                    let id = self.push(node);
                    self.by_path.insert(path.to_path_buf(), id);
                    Ok(Some(id))
                }
            },
        }
    }

    /// Records `path` as another name of node `id`. A name that is not a symlink becomes the
    /// node's path, so a symlink never takes over the identity of the file it points at.
    fn alias(&mut self, id: NodeId, path: &Path) {
        let node = &mut self.scan.forest.nodes[id.0];
        if node.path == path || node.aliases.iter().any(|a| a == path) {
            return;
        }
        let is_link =
            |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
        let alias = if is_link(&node.path) && !is_link(path) {
            std::mem::replace(&mut node.path, path.to_path_buf())
        } else {
            path.to_path_buf()
        };
        node.aliases.push(alias);
        self.by_path.insert(path.to_path_buf(), id);
    }

    /// Inspects files met while walking (in parallel) and adds the images among them, in order.
    fn add_walked(&mut self, files: &[PathBuf]) {
        let opts = self.opts;
        let probe = move |f: &PathBuf| {
            let found = inspect(f, false, opts);
            if let Some(p) = &opts.progress {
                if p.probed.fetch_add(1, Ordering::Relaxed) % 64 == 0
                    && let Ok(mut c) = p.current.try_lock()
                {
                    c.clone_from(f);
                }
                if matches!(found, Inspected::Image(_)) {
                    p.images.fetch_add(1, Ordering::Relaxed);
                }
            }
            found
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let found: Vec<Inspected> = if threads < 2 || files.len() < 64 {
            files.iter().map(probe).collect()
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = files
                    .chunks(files.len().div_ceil(threads))
                    .map(|chunk| s.spawn(move || chunk.iter().map(probe).collect::<Vec<_>>()))
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        for (f, inspected) in files.iter().zip(found) {
            // A walked file that turned into something else since it was listed is passed over.
            let _ = self.insert(f, inspected);
        }
    }

    /// Follows every backing name of the nodes from index `from` on, adding backing files
    /// found outside the scanned paths.
    fn resolve_backings(&mut self, from: usize) {
        let mut next = from;
        while next < self.scan.forest.nodes.len() {
            let id = NodeId(next);
            next += 1;
            let node = &self.scan.forest.nodes[id.0];
            let Some(h) = &node.qcow2 else { continue };
            let Some(raw) = h.backing_file.clone().filter(|r| !r.is_empty()) else {
                continue;
            };
            let declared = h.backing_format.clone();
            let overlay_path = node.path.clone();
            let overlay_size = node.virtual_size;
            let raw_os = OsStr::from_bytes(&raw).to_os_string();
            let raw_str = raw_os.to_string_lossy().into_owned();
            let mut problems = Vec::new();
            let mut backing = Backing {
                raw: raw_os.clone(),
                resolved: PathBuf::from(&raw_os),
                path: PathBuf::from(&raw_os),
                format: declared.clone(),
                exists: false,
                node: None,
            };
            if has_protocol(&raw) {
                problems.push(Problem::protocol_backing(&raw_str));
            } else {
                backing.resolved = resolve(&overlay_path, &raw_os);
                let hint = declared.as_deref().unwrap_or("qcow2");
                self.locate(&overlay_path, (&raw_str, hint), &mut backing, &mut problems);
            }
            self.check_link(
                (&overlay_path, overlay_size),
                (&raw, &raw_str, declared.as_deref()),
                &backing,
                &mut problems,
            );
            let node = &mut self.scan.forest.nodes[id.0];
            node.backing = Some(backing);
            node.problems.extend(problems);
        }
    }

    /// Finds the file `backing` resolves to: a node found already (no stat), or a file added
    /// to the scan now; what is wrong with it goes into `problems`.
    fn locate(
        &mut self,
        overlay_path: &Path,
        (raw_str, hint): (&str, &str),
        backing: &mut Backing,
        problems: &mut Vec<Problem>,
    ) {
        // Most backing names resolve to the very path a node was found by: no stat.
        if let Some(&b) = self.by_path.get(&backing.resolved) {
            backing.exists = true;
            backing.node = Some(b);
        } else {
            match std::fs::metadata(&backing.resolved) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    problems.push(Problem::missing_backing(
                        overlay_path,
                        raw_str,
                        &normalised(&backing.resolved),
                        hint,
                    ))
                }
                Err(e) => problems.push(Problem::unreadable(&backing.resolved, &e)),
                Ok(md) if !md.is_file() => {
                    backing.exists = true;
                    problems.push(Problem::unsafe_backing_path(
                        &backing.resolved,
                        kind_of(&md),
                    ));
                }
                Ok(md) => {
                    backing.exists = true;
                    let found = match self.by_ident.get(&FileId::of(&md)) {
                        Some(&b) => Ok(Some(b)),
                        None => self.add_file(&backing.resolved, true),
                    };
                    match found {
                        Ok(Some(b)) => backing.node = Some(b),
                        Ok(None) => {}
                        Err(what) => {
                            problems.push(Problem::unsafe_backing_path(&backing.resolved, what))
                        }
                    }
                }
            }
        }
    }

    /// The link's own problems: no backing format, a format that is not the file's, an
    /// overlay larger than its backing file.
    fn check_link(
        &self,
        (overlay_path, overlay_size): (&Path, Option<u64>),
        (raw, raw_str, declared): (&[u8], &str, Option<&str>),
        backing: &Backing,
        problems: &mut Vec<Problem>,
    ) {
        if let Some(b) = backing.node {
            let bn = &self.scan.forest.nodes[b.0];
            let actual = bn.format.map(Format::as_str);
            match (declared, actual) {
                (None, _) => {
                    problems.push(Problem::no_backing_format(overlay_path, raw_str, actual))
                }
                (Some(d), Some(a)) if d != a => problems.push(Problem::backing_format_mismatch(
                    overlay_path,
                    raw_str,
                    d,
                    a,
                )),
                _ => {}
            }
            if let (Some(o), Some(bs)) = (overlay_size, bn.virtual_size)
                && o > bs
            {
                problems.push(Problem::size_mismatch(o, &backing.resolved, bs));
            }
        } else if declared.is_none() && !has_protocol(raw) {
            problems.push(Problem::no_backing_format(overlay_path, raw_str, None));
        }
    }
}

/// Whether a file whose header failed to parse is a qcow version 1 image.
fn path_is_qcow1(file: &File) -> bool {
    file::read_prefix(file, 8).is_ok_and(|b| b.get(4..8) == Some(&1u32.to_be_bytes()[..]))
}

/// Problems visible in a qcow2 header alone.
fn header_problems(node: &mut Node, h: &probe::Qcow2Header) {
    if h.dirty() {
        node.problems.push(Problem::dirty(&node.path));
    }
    if h.corrupt() {
        node.problems.push(Problem::corrupt(&node.path));
    }
    for f in h.unwritable_features() {
        node.problems.push(Problem::unsupported_feature(&f));
    }
}

/// Names the processes behind the lock bytes found on in-use images (one pass over /proc).
fn find_holders(forest: &mut Forest) {
    let idents: HashSet<FileId> = forest
        .nodes
        .iter()
        .filter(|n| n.in_use())
        .filter_map(|n| n.ident)
        .collect();
    let mut found = crate::image::lock::holders(&idents);
    for n in &mut forest.nodes {
        if let Some(h) = n.ident.and_then(|i| found.remove(&i)) {
            n.holders = h;
        }
    }
}

/// Finds backing loops, reports them on every member, and cuts each loop at its member with
/// the smallest path so that the forest stays a forest.
fn cut_loops(forest: &mut Forest) {
    let n = forest.nodes.len();
    // 0 = unseen, 1 = on the current path, 2 = done
    let mut color = vec![0u8; n];
    let mut loops = Vec::new();
    for start in 0..n {
        let mut path = Vec::new();
        let mut v = Some(start);
        while let Some(i) = v {
            match color[i] {
                0 => {
                    color[i] = 1;
                    path.push(i);
                    v = forest.nodes[i].backing_node().map(|b| b.0);
                }
                1 => {
                    let at = path.iter().position(|&p| p == i).unwrap_or(0);
                    loops.push(path[at..].to_vec());
                    break;
                }
                _ => break,
            }
        }
        for p in path {
            color[p] = 2;
        }
    }
    for cycle in loops {
        let paths: Vec<PathBuf> = cycle
            .iter()
            .map(|&i| forest.nodes[i].path.clone())
            .collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        for (k, &i) in cycle.iter().enumerate() {
            let mut rotated: Vec<&Path> = refs[k..].to_vec();
            rotated.extend_from_slice(&refs[..k]);
            let p = Problem::backing_loop(&paths[k], &rotated);
            forest.nodes[i].problems.push(p);
        }
        if let Some(&cut) = cycle.iter().min_by(|&&a, &&b| paths_cmp(forest, a, b))
            && let Some(b) = forest.nodes[cut].backing.as_mut()
        {
            b.node = None;
        }
    }
}

fn paths_cmp(forest: &Forest, a: usize, b: usize) -> std::cmp::Ordering {
    forest.nodes[a].path.cmp(&forest.nodes[b].path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_like_qemu() {
        assert!(has_protocol(b"json:{\"driver\":\"qcow2\"}"));
        assert!(has_protocol(b"nbd://localhost/x"));
        assert!(has_protocol(b"file:base.qcow2"));
        assert!(!has_protocol(b"dir/a:b.qcow2"));
        assert!(!has_protocol(b"/abs/a:b"));
        assert!(!has_protocol(b"base.qcow2"));
    }

    #[test]
    fn relative_names_resolve_against_the_overlay_directory() {
        let o = Path::new("/vm/sub/top.qcow2");
        assert_eq!(
            resolve(o, OsStr::new("base.qcow2")),
            Path::new("/vm/sub/base.qcow2")
        );
        assert_eq!(
            resolve(o, OsStr::new("../b/base.qcow2")),
            Path::new("/vm/sub/../b/base.qcow2")
        );
        assert_eq!(resolve(o, OsStr::new("/abs/b")), Path::new("/abs/b"));
    }
}
