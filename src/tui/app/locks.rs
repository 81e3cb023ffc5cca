//! The lock-sweep and allocation-map states: which images to probe for other processes' QEMU
//! locks, and the allocation maps computed so far. Pure data: workers do the reading.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::forest::Forest;
use crate::image::bitmaps::Counted;
use crate::image::file::FileId;
use crate::image::lock::{Foreign, Holder};
use crate::image::probe::Format;
use crate::image::snapshots::InternalSnapshot;

/// Lock sweeps: every image's path and identity, rebuilt with each scan.
#[derive(Debug, Default)]
pub struct Locks {
    pub targets: Arc<Vec<(PathBuf, FileId)>>,
    /// A sweep is under way.
    pub sweeping: bool,
}

impl Locks {
    /// The images of a new forest to sweep.
    pub fn retarget(&mut self, forest: &Forest) {
        self.targets = Arc::new(
            forest
                .nodes
                .iter()
                .filter_map(|n| n.ident.map(|i| (n.path.clone(), i)))
                .collect(),
        );
    }

    /// Marks in `forest` what a sweep found: every image not listed is held by nobody else.
    pub fn apply(forest: &mut Forest, found: Vec<(PathBuf, Foreign, Vec<Holder>)>) {
        for n in &mut forest.nodes {
            n.foreign = Foreign::default();
            n.holders.clear();
        }
        for (path, foreign, holders) in found {
            if let Some(n) = forest.nodes.iter_mut().find(|n| n.path == path) {
                n.foreign = foreign;
                n.holders = holders;
            }
        }
        // An image a QEMU now only reads is read-only (and one it let go may be RW again).
        forest.apply_state();
    }
}

/// Allocation maps by path (`None` inside: could not be computed), and the one under way.
#[derive(Debug, Default)]
pub struct Allocations {
    pub maps: HashMap<PathBuf, Option<Vec<u8>>>,
    /// Internal snapshots of the images mapped (qcow2 images that have some).
    pub snapshots: HashMap<PathBuf, Result<Vec<InternalSnapshot>, String>>,
    /// Persistent bitmaps (with their dirty bytes) of the images mapped that have some.
    pub bitmaps: HashMap<PathBuf, Result<Counted, String>>,
    computing: HashSet<PathBuf>,
}

impl Allocations {
    /// The map to compute for the image at `path`, if it is cheap and not known yet. One map
    /// at a time: holding j through ten thousand images must not start ten thousand workers;
    /// the current selection is asked for when the running one returns.
    pub fn want(&mut self, path: &PathBuf, format: Option<Format>) -> Option<(PathBuf, Format)> {
        let format = format.filter(|f| matches!(f, Format::Qcow2 | Format::Raw))?;
        if self.maps.contains_key(path) || !self.computing.is_empty() {
            return None;
        }
        self.computing.insert(path.clone());
        Some((path.clone(), format))
    }

    /// A map (and the snapshot and bitmap lists) a worker computed.
    pub fn insert(
        &mut self,
        path: PathBuf,
        map: Option<Vec<u8>>,
        (snapshots, bitmaps): (
            Result<Vec<InternalSnapshot>, String>,
            Result<Counted, String>,
        ),
    ) {
        self.computing.remove(&path);
        if snapshots.as_ref().map_or(true, |s| !s.is_empty()) {
            self.snapshots.insert(path.clone(), snapshots);
        }
        if bitmaps.as_ref().map_or(true, |b| !b.is_empty()) {
            self.bitmaps.insert(path.clone(), bitmaps);
        }
        self.maps.insert(path, map);
    }
}
