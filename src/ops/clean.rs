//! What a host can free (ARCHITECTURE.md §3, "Clean"): leftovers of interrupted operations,
//! images nothing uses (nothing built on them anywhere the dependents search looks, no VM
//! definition naming them, not held), duplicate images, what each layer holds, and the trash.
//! A survey reads only; freeing goes through delete and the trash.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::Refusal;
use super::dependents::{self, Searched};
use super::plan_image::PlanImage;
use super::settings::Settings;
use crate::forest::{Forest, NodeId, Scan, ScanOptions};
use crate::image::file::OpenMode;
use crate::trash::Listed;

/// A file the survey names, with what it takes and when it was last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    pub bytes: u64,
    /// Seconds since the epoch.
    pub modified: i64,
}

/// Images with the same guest content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicates {
    pub virtual_size: u64,
    pub images: Vec<Item>,
}

/// What one layer holds, and the operation that frees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub item: Item,
    /// `delete` (a top) or `merge` (a middle layer, whose data moves into its backing file:
    /// its file goes, at most this much).
    pub freed_by: &'static str,
}

/// The survey.
#[derive(Debug, Default)]
pub struct Survey {
    pub leftovers: Vec<Item>,
    /// Images with no backing file that nothing is built on and no VM names.
    pub unused_bases: Vec<Item>,
    /// Overlays nothing is built on that no VM definition names.
    pub unnamed_tops: Vec<Item>,
    /// Whether any VM definition was found: without one, a VM's disk cannot be told from a
    /// forgotten top, and the tops are not offered for freeing.
    pub definitions_found: bool,
    pub duplicates: Vec<Duplicates>,
    pub layers: Vec<Layer>,
    pub trash: Vec<Listed>,
    pub searched: Vec<Searched>,
    /// Images whose content could not be read for the duplicates, and why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Surveys `paths`: scanned with `opts`, then again with every place the dependents search
/// looks, so that an overlay kept anywhere it looks keeps its base out of the unused groups.
pub fn survey(
    paths: &[PathBuf],
    opts: &ScanOptions,
    settings: &Settings,
) -> Result<Survey, Refusal> {
    let failed = |what: String| Refusal::Scan {
        path: paths.first().cloned().unwrap_or_default(),
        what,
    };
    let first = crate::forest::scan(paths, opts).map_err(|e| failed(e.to_string()))?;
    let mut dirs: Vec<PathBuf> = first
        .forest
        .nodes
        .iter()
        .filter_map(|n| n.path.parent().map(Path::to_path_buf))
        .chain(paths.iter().cloned())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut searched: Vec<Searched> = paths
        .iter()
        .map(|p| Searched {
            kind: "scanned",
            place: crate::text::Names::shown(p.as_path()).to_string(),
            paths: vec![p.clone()],
            found: Vec::new(),
        })
        .collect();
    searched.extend(dependents::places(&dirs, &settings.search).map_err(failed)?);
    let mut wide = opts.clone();
    wide.overlay_dirs
        .extend(searched.iter().flat_map(|s| s.paths.iter().cloned()));
    let scan = crate::forest::scan(paths, &wide).map_err(|e| failed(e.to_string()))?;
    Ok(build(scan, paths, searched))
}

fn build(scan: Scan, paths: &[PathBuf], searched: Vec<Searched>) -> Survey {
    let forest = &scan.forest;
    let mine: Vec<NodeId> = (0..forest.nodes.len())
        .map(NodeId)
        .filter(|&id| {
            let path = &forest.node(id).path;
            under(path, paths) && !crate::forest::scan::temporary_name(path)
        })
        .collect();
    let mut s = Survey {
        leftovers: leftovers(paths, &scan),
        definitions_found: forest.nodes.iter().any(|n| !n.vm_disks.is_empty())
            || searched
                .iter()
                .any(|p| p.kind == "libvirt-domain" || p.kind == "proxmox"),
        trash: super::restore::list(&scan.trash).0,
        searched,
        ..Survey::default()
    };
    for &id in &mine {
        let n = forest.node(id);
        if unused(forest, id) {
            match n.backing {
                None => s.unused_bases.push(item(&n.path)),
                Some(_) => s.unnamed_tops.push(item(&n.path)),
            }
        }
        if let Some(l) = layer(forest, id) {
            s.layers.push(l);
        }
    }
    s.layers.sort_by_key(|l| std::cmp::Reverse(l.item.bytes));
    // Only images whose whole chain lies under the surveyed paths are read: a header's name
    // never leads the survey to read a file outside them.
    let readable: Vec<NodeId> = mine
        .iter()
        .copied()
        .filter(|&id| forest.chain(id).all(|c| under(&forest.node(c).path, paths)))
        .collect();
    (s.duplicates, s.unreadable) = duplicates(forest, &readable);
    s
}

fn under(path: &Path, paths: &[PathBuf]) -> bool {
    paths.iter().any(|p| path.starts_with(p))
}

/// Nothing is built on it, no VM or libvirt snapshot names it, no process holds it.
fn unused(forest: &Forest, id: NodeId) -> bool {
    let n = forest.node(id);
    n.overlays.is_empty()
        && n.vm_disks.is_empty()
        && n.libvirt_snapshots.is_empty()
        && n.holders.is_empty()
        && !n.foreign.in_use()
        && n.ident.is_some()
}

fn layer(forest: &Forest, id: NodeId) -> Option<Layer> {
    let n = forest.node(id);
    let freed_by = match (n.backing.is_some(), n.overlays.is_empty()) {
        (_, true) => "delete",
        (true, false) => "merge",
        (false, false) => return None,
    };
    Some(Layer {
        item: item(&n.path),
        freed_by,
    })
}

fn item(path: &Path) -> Item {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).ok();
    Item {
        path: path.to_path_buf(),
        bytes: md.as_ref().map_or(0, |m| m.blocks() * 512),
        modified: md.as_ref().map_or(0, MetadataExt::mtime),
    }
}

/// The leftovers the walk met under the surveyed `paths`: temporary files of an imgchain no
/// longer running, and merge journals whose image is gone.
fn leftovers(paths: &[PathBuf], scan: &Scan) -> Vec<Item> {
    let temporaries = scan
        .temporaries
        .iter()
        .filter(|p| !held_by_running_imgchain(p));
    let mut found: Vec<Item> = temporaries
        .chain(&scan.stale_journals)
        .filter(|p| under(p, paths))
        .map(|p| item(p))
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup();
    found
}

/// Whether a number in the file's name is the pid of a running imgchain (the process that
/// made it may still be at work).
fn held_by_running_imgchain(path: &Path) -> bool {
    let name = crate::forest::model::file_name(path);
    name.split('.')
        .filter_map(|p| p.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "imgchain")
        })
}

/// Groups of images under the survey with the same guest content: grouped by virtual size,
/// then by a 128-bit hash of every non-zero 64 KiB block with its offset, read through the
/// chain only where a layer maps data. An image built on another of its group is left out
/// (an overlay with nothing of its own reads as its base), and so are images that read as
/// zeroes throughout.
fn duplicates(forest: &Forest, mine: &[NodeId]) -> (Vec<Duplicates>, Vec<(PathBuf, String)>) {
    let mut by_size: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    for &id in mine {
        if let Some(v) = forest.node(id).virtual_size {
            by_size.entry(v).or_default().push(id);
        }
    }
    let mut groups = Vec::new();
    let mut unreadable = Vec::new();
    for (size, ids) in by_size.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let mut by_hash: BTreeMap<(u64, u64), Vec<NodeId>> = BTreeMap::new();
        for id in ids {
            match content_hash(forest, id) {
                Ok(Some(h)) => by_hash.entry(h).or_default().push(id),
                Ok(None) => {}
                Err(e) => unreadable.push((forest.node(id).path.clone(), e)),
            }
        }
        for same in by_hash.into_values() {
            let kept: Vec<NodeId> = same
                .iter()
                .copied()
                .filter(|&id| !forest.chain(id).any(|c| same.contains(&c)))
                .collect();
            if kept.len() > 1 {
                groups.push(Duplicates {
                    virtual_size: size,
                    images: kept.iter().map(|&id| item(&forest.node(id).path)).collect(),
                });
            }
        }
    }
    (groups, unreadable)
}

/// Two 64-bit hashes of the guest content of `id` (through its whole chain); `None` when it
/// reads as zeroes throughout (every empty disk of a size would be a duplicate of the others).
fn content_hash(forest: &Forest, id: NodeId) -> Result<Option<(u64, u64)>, String> {
    const BLOCK: usize = 64 << 10;
    let chain: Vec<PlanImage> = std::iter::once(id)
        .chain(forest.chain(id))
        .map(|c| PlanImage::of(forest, c))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    let mut backing = None;
    for img in chain.iter().rev() {
        let h = img
            .open(OpenMode::ReadOnly, backing.take())
            .map_err(|e| e.to_string())?;
        backing = Some(h.shared_access());
        handles.push(h);
    }
    handles.reverse();
    let end = chain[0].virtual_size;
    let (mut a, mut b) = (seeded(1), seeded(2));
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut hashed_to, mut any) = (0, 0, false);
    while at < end {
        let (ext, len) = super::extents::next_extent(&handles, at, (end - at).min(1 << 30))
            .map_err(|e| e.to_string())?;
        if len == 0 {
            break;
        }
        if let super::extents::Extent::Data(_) = ext {
            // Whole blocks at fixed offsets, so that the same content hashes the same
            // whatever the layers' cluster sizes; each block once.
            let from = (at / BLOCK as u64 * BLOCK as u64).max(hashed_to);
            let to = (at + len)
                .div_ceil(BLOCK as u64)
                .saturating_mul(BLOCK as u64)
                .min(end);
            let mut off = from;
            while off < to {
                let n = (to - off).min(buf.len() as u64) as usize;
                handles[0]
                    .access()
                    .read(&mut buf[..n], off)
                    .map_err(|e| format!("cannot read at {off}: {e}"))?;
                for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                    if block.iter().any(|&x| x != 0) {
                        any = true;
                        let o = off + (i * BLOCK) as u64;
                        (o, block).hash(&mut a);
                        (o, block).hash(&mut b);
                    }
                }
                off += n as u64;
            }
            hashed_to = to;
        }
        at += len;
    }
    Ok(any.then(|| (a.finish(), b.finish())))
}

fn seeded(seed: u8) -> std::collections::hash_map::DefaultHasher {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    h
}

impl Survey {
    /// The report, line by line, as `imgchain clean` prints it and the UI shows it: each
    /// group with its bytes, each file with its bytes, last change and the command that frees
    /// it; then duplicates, the largest layers and the trash (where the search looked is the
    /// caller's line: `words::searched_places`).
    pub fn lines(&self, keep: std::time::Duration) -> Vec<String> {
        use crate::text::Names;
        let mut out = Vec::new();
        let del = |i: &Item| format!("imgchain delete {}", i.path.quoted());
        let rm = |i: &Item| format!("rm -- {}", i.path.quoted());
        group(
            &mut out,
            "Leftovers of interrupted operations",
            &self.leftovers,
            &rm,
        );
        group(
            &mut out,
            "Bases nothing is built on any more",
            &self.unused_bases,
            &del,
        );
        group(
            &mut out,
            "Top images no VM definition names",
            &self.unnamed_tops,
            &del,
        );
        if !self.unnamed_tops.is_empty() && !self.definitions_found {
            out.push(
                "  (not offered: no VM definition was found, so a VM's disk cannot be told \
                 from a forgotten one; set scan.libvirt_domains or scan.proxmox)"
                    .into(),
            );
        }
        for (n, d) in self.duplicates.iter().enumerate() {
            let names: Vec<String> = d
                .images
                .iter()
                .map(|i| i.path.shown().to_string())
                .collect();
            out.push(format!(
                "Duplicates {} (the same guest content, {} virtual; which to keep is yours): {}",
                n + 1,
                crate::units::human_size(d.virtual_size),
                names.join(", ")
            ));
        }
        self.layer_lines(&mut out);
        self.trash_line(&mut out, keep);
        if out.is_empty() {
            out.push("Nothing to free here.".into());
        }
        out
    }

    fn layer_lines(&self, out: &mut Vec<String>) {
        let big: Vec<_> = self
            .layers
            .iter()
            .filter(|l| l.item.bytes >= 1 << 20)
            .take(10)
            .collect();
        if big.is_empty() {
            return;
        }
        out.push(
            "Largest layers (what deleting a top or merging a middle layer frees at most):".into(),
        );
        for l in big {
            out.push(format!(
                "  {:>9}  {}  ({} it)",
                crate::units::human_size(l.item.bytes),
                crate::text::Names::shown(l.item.path.as_path()),
                l.freed_by
            ));
        }
    }

    fn trash_line(&self, out: &mut Vec<String>, keep: std::time::Duration) {
        if self.trash.is_empty() {
            return;
        }
        let old: Vec<_> = self.older(keep).collect();
        out.push(format!(
            "Trash: {} entries, {}; {} older than {} ({}): imgchain trash empty frees them",
            self.trash.len(),
            crate::units::human_size(self.trash.iter().map(Listed::bytes).sum()),
            old.len(),
            crate::units::human_age(keep),
            crate::units::human_size(old.iter().map(|l| l.bytes()).sum())
        ));
    }

    /// The trash entries at least `keep` old.
    pub fn older(&self, keep: std::time::Duration) -> impl Iterator<Item = &Listed> {
        self.trash
            .iter()
            .filter(move |l| super::restore::age(l) >= keep)
    }
}

/// A group's lines: its title with its bytes, then each file.
fn group(out: &mut Vec<String>, title: &str, items: &[Item], cmd: &dyn Fn(&Item) -> String) {
    use crate::text::Names;
    if items.is_empty() {
        return;
    }
    let bytes: u64 = items.iter().map(|i| i.bytes).sum();
    out.push(format!("{title} ({}):", crate::units::human_size(bytes)));
    for i in items {
        out.push(format!(
            "  {:>9}  {}  modified {}  {}",
            crate::units::human_size(i.bytes),
            i.path.shown(),
            crate::units::utc_minute(i.modified),
            cmd(i)
        ));
    }
}
