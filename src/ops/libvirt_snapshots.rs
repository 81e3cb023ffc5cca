//! Layers libvirt records in its snapshot metadata (ARCHITECTURE.md §3, "libvirt snapshots"):
//! a merge of the file a snapshot created is libvirt's own `snapshot-delete`, which merges it
//! and keeps the metadata true; any other change that would remove, rewrite or re-point a
//! recorded layer is refused, naming the snapshot and the virsh command.

use std::path::Path;

use crate::forest::model::{RecordRole, SnapshotRecord};
use crate::forest::{Forest, NodeId};
use crate::text::Names;

use super::Refusal;

/// A merge libvirt does: IMAGE is the file snapshot `snapshot` of `domain` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThroughLibvirt {
    pub uri: String,
    pub domain: String,
    pub snapshot: String,
}

impl ThroughLibvirt {
    /// The command, quoted for a shell.
    pub fn command(&self) -> String {
        command(&self.uri, &self.domain, &self.snapshot, "")
    }
}

fn uri_of(r: &SnapshotRecord) -> &'static str {
    crate::image::lock::owner::libvirt_uri(&r.definition.to_string_lossy())
}

fn command(uri: &str, domain: &str, snapshot: &str, extra: &str) -> String {
    format!(
        "virsh -c {} snapshot-delete --domain {} --snapshotname {}{extra}",
        uri.quoted(),
        domain.quoted(),
        snapshot.quoted()
    )
}

/// How to go on with a layer `r` records, in words.
fn advice(r: &SnapshotRecord) -> String {
    let uri = uri_of(r);
    format!(
        "delete the snapshot through libvirt first ({}), or drop only its metadata ({})",
        command(uri, &r.domain, &r.snapshot, ""),
        command(uri, &r.domain, &r.snapshot, " --metadata")
    )
}

fn refusal(path: &Path, r: &SnapshotRecord, change: &str) -> Refusal {
    let (what, done) = match r.role {
        RecordRole::Overlay => ("is the file libvirt snapshot", " created"),
        RecordRole::State => ("holds the disk as it was at libvirt snapshot", ""),
    };
    Refusal::Libvirt {
        path: path.to_path_buf(),
        what: format!(
            "{what} {:?} of {}{done} (recorded in {}); {change} would leave that snapshot \
             pointing at the wrong disk: {}",
            r.snapshot,
            r.domain.shown(),
            r.definition.shown(),
            advice(r)
        ),
    }
}

/// Refuses a change to the images `ids` that libvirt records in the roles `roles` (exit 13);
/// `change` says what the operation would do (`deleting it`).
pub fn not_recorded(
    forest: &Forest,
    ids: &[NodeId],
    roles: &[RecordRole],
    change: &str,
) -> Result<(), Refusal> {
    for &id in ids {
        let n = forest.node(id);
        if let Some(r) = n.libvirt_snapshots.iter().find(|r| roles.contains(&r.role)) {
            return Err(refusal(&n.path, r, change));
        }
    }
    Ok(())
}

/// The merge of `image` libvirt must do, when a libvirt snapshot created it: `Ok(None)` when
/// none did; a refusal naming the command when virsh cannot reach the domain.
pub fn merge_of(forest: &Forest, image: NodeId) -> Result<Option<ThroughLibvirt>, Refusal> {
    let n = forest.node(image);
    let Some(r) = n
        .libvirt_snapshots
        .iter()
        .find(|r| r.role == RecordRole::Overlay)
    else {
        return Ok(None);
    };
    let through = ThroughLibvirt {
        uri: uri_of(r).to_string(),
        domain: r.domain.clone(),
        snapshot: r.snapshot.clone(),
    };
    match crate::ops::dependents::virsh(&through.uri, &["dominfo", "--domain", &through.domain]) {
        Ok(_) => Ok(Some(through)),
        Err(e) => Err(Refusal::Libvirt {
            path: n.path.clone(),
            what: format!(
                "is the file libvirt snapshot {:?} of {} created, so libvirt must merge it to \
                 keep its snapshot list true, but virsh cannot reach {} ({e}); run: {}",
                r.snapshot,
                r.domain.shown(),
                r.domain.shown(),
                through.command()
            ),
        }),
    }
}

/// Runs the merge through libvirt and checks its result: the snapshot is gone from
/// `snapshot-list` and `image` is no longer there. What libvirt said, or why it failed.
pub fn run(t: &ThroughLibvirt, image: &Path) -> Result<String, String> {
    let virsh = |args: &[&str]| crate::ops::dependents::virsh(&t.uri, args);
    let said = virsh(&[
        "snapshot-delete",
        "--domain",
        &t.domain,
        "--snapshotname",
        &t.snapshot,
    ])
    .map_err(|e| format!("{} failed: {e}", t.command()))?;
    let list = virsh(&["snapshot-list", "--domain", &t.domain, "--name"])
        .map_err(|e| format!("virsh snapshot-list failed after the merge: {e}"))?;
    if list.lines().any(|l| l.trim() == t.snapshot) {
        return Err(format!(
            "libvirt still lists snapshot {:?} after {}",
            t.snapshot,
            t.command()
        ));
    }
    if image.exists() {
        return Err(format!(
            "libvirt deleted snapshot {:?} but left {}",
            t.snapshot,
            image.shown()
        ));
    }
    Ok(said.trim().to_string())
}
