//! libvirt's snapshot and checkpoint metadata (ARCHITECTURE.md §3, "libvirt snapshots"): the
//! XML libvirt keeps per domain under `scan.libvirt_snapshots` (by default
//! `/var/lib/libvirt/qemu/snapshot/DOMAIN/*.xml`) and `scan.libvirt_checkpoints`. Each image a
//! snapshot records is labelled with it — the file the snapshot created (the disk after it),
//! or the file that holds the disk as it was (its state) — and each image of a domain's disk
//! chain with the checkpoints whose bitmaps it may carry. Matched to images by file identity.

use std::path::{Path, PathBuf};

use super::diag::{Problem, ProblemKind};
use super::model::{CheckpointRecord, Forest, RecordRole, SnapshotRecord};
use crate::image::file::FileId;
use crate::text::Names;

/// One snapshot's metadata: its name and, per disk, how it was taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// External disks: (target, the file the snapshot created).
    pub overlays: Vec<(String, PathBuf)>,
    /// Targets snapshotted inside their image (qcow2 internal snapshots).
    pub internal: Vec<String>,
    /// The domain's file disks when it was taken: (target, file).
    pub states: Vec<(String, PathBuf)>,
}

/// One checkpoint's metadata: its name and (target, bitmap) per disk it covers.
#[derive(Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub bitmaps: Vec<(String, String)>,
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.has_tag_name(tag))
}

fn disks<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    child(n, "disks")
        .into_iter()
        .flat_map(|d| d.children().filter(|c| c.has_tag_name("disk")))
}

fn name_of(root: roxmltree::Node<'_, '_>, what: &str) -> Result<String, String> {
    child(root, "name")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .ok_or_else(|| format!("its <{what}> has no <name>"))
}

/// A `<domainsnapshot>` document.
pub fn parse_snapshot(xml: &str) -> Result<Snapshot, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !root.has_tag_name("domainsnapshot") {
        return Err("it holds no <domainsnapshot>".into());
    }
    let (mut overlays, mut internal) = (Vec::new(), Vec::new());
    for d in disks(root) {
        let target = d.attribute("name").unwrap_or("?").to_string();
        match d.attribute("snapshot") {
            Some("external") => {
                if let Some(f) = child(d, "source").and_then(|s| s.attribute("file")) {
                    overlays.push((target, PathBuf::from(f)));
                }
            }
            Some("internal") => internal.push(target),
            _ => {}
        }
    }
    let states = match child(root, "domain") {
        Some(dom) => super::domains::disks_of(dom)
            .into_iter()
            .map(|(path, target)| (target, path))
            .collect(),
        None => Vec::new(),
    };
    Ok(Snapshot {
        name: name_of(root, "domainsnapshot")?,
        overlays,
        internal,
        states,
    })
}

/// A `<domaincheckpoint>` document.
pub fn parse_checkpoint(xml: &str) -> Result<Checkpoint, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !root.has_tag_name("domaincheckpoint") {
        return Err("it holds no <domaincheckpoint>".into());
    }
    let name = name_of(root, "domaincheckpoint")?;
    let bitmaps = disks(root)
        .filter(|d| d.attribute("checkpoint") == Some("bitmap"))
        .map(|d| {
            let target = d.attribute("name").unwrap_or("?").to_string();
            (target, d.attribute("bitmap").unwrap_or(&name).to_string())
        })
        .collect();
    Ok(Checkpoint { name, bitmaps })
}

/// The metadata files of each domain under `dirs` (`DIR/DOMAIN/*.xml`), sorted; a directory
/// that cannot be read is returned as skipped with the reason.
fn files(dirs: &[PathBuf], skipped: &mut Vec<(PathBuf, String)>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in dirs {
        let domains = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                skipped.push((
                    dir.clone(),
                    format!("libvirt's metadata cannot be read ({e})"),
                ));
                continue;
            }
        };
        for d in domains.filter_map(Result::ok) {
            let domain = d.file_name().to_string_lossy().into_owned();
            let Ok(entries) = std::fs::read_dir(d.path()) else {
                continue;
            };
            let mut xml: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "xml"))
                .collect();
            xml.sort();
            out.extend(xml.into_iter().map(|p| (domain.clone(), p)));
        }
    }
    out
}

/// Labels the forest's images with the snapshots under `snapshots` and the checkpoints under
/// `checkpoints`, and flags a domain whose snapshots mix internal and external ones. What
/// cannot be read is returned with the reason, to be reported as skipped.
pub fn label(
    forest: &mut Forest,
    (snapshots, checkpoints): (&[PathBuf], &[PathBuf]),
) -> Vec<(PathBuf, String)> {
    let mut skipped = Vec::new();
    let mut mixed: Vec<(String, bool, bool)> = Vec::new();
    for (domain, file) in files(snapshots, &mut skipped) {
        let s = match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|x| parse_snapshot(&x))
        {
            Ok(s) => s,
            Err(e) => {
                skipped.push((
                    file,
                    format!("not libvirt snapshot metadata imgchain can read: {e}"),
                ));
                continue;
            }
        };
        let record = |target: &str, role| SnapshotRecord {
            domain: domain.clone(),
            snapshot: s.name.clone(),
            role,
            target: target.to_string(),
            definition: file.clone(),
        };
        for (target, path) in &s.overlays {
            attach(
                forest,
                path,
                |n| &mut n.libvirt_snapshots,
                record(target, RecordRole::Overlay),
            );
        }
        for (target, path) in &s.states {
            if s.overlays.iter().any(|(t, _)| t == target) {
                attach(
                    forest,
                    path,
                    |n| &mut n.libvirt_snapshots,
                    record(target, RecordRole::State),
                );
            }
        }
        match mixed.iter_mut().find(|m| m.0 == domain) {
            Some(m) => (m.1, m.2) = (m.1 || !s.overlays.is_empty(), m.2 || !s.internal.is_empty()),
            None => mixed.push((
                domain.clone(),
                !s.overlays.is_empty(),
                !s.internal.is_empty(),
            )),
        }
    }
    flag_mixed(forest, &mixed);
    label_checkpoints(forest, checkpoints, &mut skipped);
    skipped
}

/// Adds `record` to the list `list` picks of the image that is the file at `path`.
fn attach<T: PartialEq>(
    forest: &mut Forest,
    path: &Path,
    list: impl Fn(&mut super::model::Node) -> &mut Vec<T>,
    record: T,
) {
    let Some(id) = FileId::of_path(path) else {
        return;
    };
    if let Some(n) = forest.nodes.iter_mut().find(|n| n.ident == Some(id)) {
        let l = list(n);
        if !l.contains(&record) {
            l.push(record);
        }
    }
}

/// A domain with both internal and external snapshots: libvirt cannot delete across them.
fn flag_mixed(forest: &mut Forest, domains: &[(String, bool, bool)]) {
    for (domain, _, _) in domains.iter().filter(|(_, ext, int)| *ext && *int) {
        for n in forest.nodes.iter_mut() {
            if n.vm_disks.iter().any(|d| &d.domain == domain) {
                n.problems.push(Problem::new(
                    ProblemKind::MixedSnapshots,
                    format!(
                        "libvirt VM {} has both internal and external snapshots, which libvirt \
                         cannot delete or revert across; list them with virsh snapshot-list {} \
                         --tree",
                        domain.shown(),
                        domain.quoted()
                    ),
                ));
            }
        }
    }
}

/// Labels each image of a domain's disk chain with the checkpoints of that disk.
fn label_checkpoints(forest: &mut Forest, dirs: &[PathBuf], skipped: &mut Vec<(PathBuf, String)>) {
    for (domain, file) in files(dirs, skipped) {
        let c = match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|x| parse_checkpoint(&x))
        {
            Ok(c) => c,
            Err(e) => {
                skipped.push((
                    file,
                    format!("not a libvirt checkpoint imgchain can read: {e}"),
                ));
                continue;
            }
        };
        for (target, bitmap) in &c.bitmaps {
            let disks: Vec<usize> = (0..forest.nodes.len())
                .filter(|&i| {
                    forest.nodes[i]
                        .vm_disks
                        .iter()
                        .any(|d| d.domain == domain && &d.target == target)
                })
                .collect();
            for i in disks {
                let id = super::model::NodeId(i);
                let chain: Vec<_> = std::iter::once(id).chain(forest.chain(id)).collect();
                for n in chain {
                    let record = CheckpointRecord {
                        domain: domain.clone(),
                        checkpoint: c.name.clone(),
                        bitmap: bitmap.clone(),
                    };
                    let list = &mut forest.nodes[n.0].checkpoints;
                    if !list.contains(&record) {
                        list.push(record);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_checkpoints_are_read_as_libvirt_writes_them() {
        let xml = "<domainsnapshot><name>s2</name><state>shutoff</state>\
            <parent><name>s1</name></parent><memory snapshot='no'/><disks>\
            <disk name='vda' snapshot='external' type='file'><driver type='qcow2'/>\
            <source file='/img/vm.s2'/></disk>\
            <disk name='vdb' snapshot='internal'/><disk name='vdc' snapshot='no'/></disks>\
            <domain type='kvm'><name>vm</name><devices>\
            <disk type='file' device='disk'><source file='/img/vm.s1'/><target dev='vda'/></disk>\
            </devices></domain></domainsnapshot>";
        let s = parse_snapshot(xml).unwrap();
        assert_eq!(s.name, "s2");
        assert_eq!(
            s.overlays,
            [("vda".to_string(), PathBuf::from("/img/vm.s2"))]
        );
        assert_eq!(s.internal, ["vdb"]);
        assert_eq!(s.states, [("vda".to_string(), PathBuf::from("/img/vm.s1"))]);
        assert!(parse_snapshot("<domain><name>x</name></domain>").is_err());
        assert!(parse_snapshot("<domainsnapshot><disks/></domainsnapshot>").is_err());
        let c = parse_checkpoint(
            "<domaincheckpoint><name>c1</name><disks>\
             <disk name='vda' checkpoint='bitmap' bitmap='c1'/>\
             <disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>",
        )
        .unwrap();
        assert_eq!(c.name, "c1");
        assert_eq!(c.bitmaps, [("vda".to_string(), "c1".to_string())]);
    }
}
