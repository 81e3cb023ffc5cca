//! How images and plans are told in words where the CLI and the UI say the same thing: disk
//! usage, who holds an image, an internal snapshot, why an image is writable, where images
//! built on a chain were looked for.

use std::path::{Path, PathBuf};

use crate::forest::{Forest, Node, NodeId};
use crate::ops::dependents::{OUTSIDE, Searched};
use crate::text::Names;
use crate::units::human_size;

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

/// Where a plan looked for images built on its target, in one paragraph: "Looked for other
/// images built on this chain in: " and [`searched_places`].
pub fn searched_text(all: &[Searched]) -> String {
    format!(
        "Looked for other images built on this chain in: {}",
        searched_places(all)
    )
}

/// Each kind of place searched with its places (or how many, when there are many), then what
/// was found where (each image once), or "none found"; and the images reached only through a
/// header's backing name.
pub fn searched_places(all: &[Searched]) -> String {
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
    let mut text = format!("{}; {result}.", parts.join("; "));
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

/// A libvirt snapshot that records an image, for `info` and the details pane.
pub fn snapshot_record_text(r: &crate::forest::model::SnapshotRecord) -> String {
    let role = match r.role {
        crate::forest::model::RecordRole::Overlay => "created this file for",
        crate::forest::model::RecordRole::State => "keeps in this file",
    };
    let when = match r.role {
        crate::forest::model::RecordRole::Overlay => "the disk after it",
        crate::forest::model::RecordRole::State => "the disk as it was",
    };
    format!(
        "snapshot {:?} of {} {role} {} ({when}; {})",
        r.snapshot,
        r.domain.shown(),
        r.target.shown(),
        r.definition.shown()
    )
}

/// The checkpoints that use bitmap `name`, for `info` and the details pane: ` (libvirt
/// checkpoint "c1" of web01)`, or nothing.
pub fn checkpoint_note(n: &Node, name: &str) -> String {
    n.checkpoints
        .iter()
        .filter(|c| c.bitmap == name)
        .map(|c| {
            format!(
                " (libvirt checkpoint {:?} of {})",
                c.checkpoint,
                c.domain.shown()
            )
        })
        .collect()
}

/// One persistent bitmap, for `info` and the details pane: name, granularity, whether QEMU
/// records writes in it, and how much it marks dirty.
pub fn bitmap_text(b: &crate::image::bitmaps::Bitmap, dirty: u64) -> String {
    let state = match (b.enabled, b.in_use) {
        (_, true) => "inconsistent (in use when its QEMU stopped; QEMU will not use it)",
        (true, false) => "enabled",
        (false, false) => "disabled",
    };
    format!(
        "{:?}, {} granularity, {state}, {} dirty",
        b.name,
        human_size(b.granularity),
        human_size(dirty)
    )
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

/// Why an image is shown read-only when it is not keep-RO: images are built on it, or a
/// running QEMU reads it (its overlay may live anywhere).
pub fn read_only_because(n: &Node) -> String {
    if n.overlays.is_empty() && n.foreign.in_use() && !n.foreign.writer() {
        let by = n
            .holders
            .first()
            .map_or("another process".to_string(), |h| h.to_string());
        return format!(
            "held read-only by {by}: the backing file or read-only disk of a running QEMU, so \
             writing it would change what that VM reads"
        );
    }
    format!(
        "a backing image: read-only, upgraded to read-write only while a commit writes into it \
         ({})",
        crate::units::count(n.overlays.len() as u64, "overlay")
    )
}

/// A qcow2 image's optional features that are on, and its internal snapshots: `lazy
/// refcounts`, `persistent bitmaps`, `2 internal snapshots`.
pub fn qcow2_features(h: &crate::image::probe::Qcow2Header) -> Vec<String> {
    let mut on: Vec<String> = [
        (h.lazy_refcounts(), "lazy refcounts"),
        (h.extended_l2(), "extended L2"),
        (h.bitmaps(), "persistent bitmaps"),
        (h.encrypted(), "encrypted"),
        (h.external_data_file(), "external data file"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, what)| what.to_string())
    .collect();
    if h.nb_snapshots > 0 {
        on.push(crate::units::count(
            u64::from(h.nb_snapshots),
            "internal snapshot",
        ));
    }
    on
}
