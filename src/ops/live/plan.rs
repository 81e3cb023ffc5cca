//! Which QEMU to ask, how, and whether a live operation may run at all: the guards of a
//! live commit, merge and snapshot.

use std::path::{Path, PathBuf};

use super::virsh::virsh_installed;
use crate::forest::{Forest, NodeId};
use crate::image::lock::{Holder, Manager, owner};
use crate::ops::refusal::Way;
use crate::ops::{OpKind, Refusal, guards, rebase, snapshot};
use crate::text::Names;

/// What the QEMU is asked to do.
#[derive(Clone, Debug)]
pub enum LiveKind {
    /// Commit the active layer into its backing file, then pivot onto it.
    Commit,
    /// Commit a middle layer into its backing file; QEMU writes `backing_name` into
    /// `overlay`, the layer above it, whose format node `active`'s chain holds.
    Merge {
        overlay: PathBuf,
        active: PathBuf,
        backing_name: String,
    },
    /// Put a new overlay on the active layer and move the guest onto it.
    Snapshot(Box<snapshot::Plan>),
}

/// How imgchain asks the QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// Its own QMP socket.
    Qmp(PathBuf),
    /// The libvirt daemon that runs it, through virsh.
    Libvirt { uri: String, domain: String },
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Qmp(p) => write!(f, "QMP at {}", p.shown()),
            Via::Libvirt { uri, domain } => write!(f, "libvirt: virsh -c {uri}, domain {domain}"),
        }
    }
}

/// A live operation that passed the guards.
#[derive(Clone, Debug)]
pub struct LivePlan {
    pub kind: LiveKind,
    /// The image the operation is about: the committed or merged layer, or the snapshot's
    /// image.
    pub top: PathBuf,
    /// Where the data goes: the backing file (commit, merge), or the new overlay (snapshot).
    pub target: PathBuf,
    /// How the process holding the image is asked.
    pub via: Via,
    /// How the holder is named (`web03 (QEMU VM, pid 4242, writing)`).
    pub holder: String,
    /// The holder's pid: it must still be a QEMU writing the VM's image when the run starts.
    pub pid: u32,
    /// The job's speed limit in bytes per second; 0: none.
    pub speed: u64,
}

impl LivePlan {
    /// The operation, as the offline one is named.
    pub fn op(&self) -> OpKind {
        match self.kind {
            LiveKind::Commit => OpKind::COMMIT,
            LiveKind::Merge { .. } => OpKind::MERGE,
            LiveKind::Snapshot(_) => OpKind::SNAPSHOT,
        }
    }
}

pub(super) fn in_use_refusal(path: &Path, what: String) -> Refusal {
    Refusal::HeldElsewhere {
        path: path.to_path_buf(),
        what,
    }
}

/// What a live operation asks of the process holding an image.
#[derive(Clone, Copy)]
enum Wanted {
    /// The process that writes it.
    Writer,
    /// The process with this pid (it runs a chain through the image).
    Pid(u32),
}

/// The holder of `id` that imgchain may ask, and how. `virsh` words the command for a
/// libvirt VM, for when virsh is not installed here.
fn holder_via<'f>(
    forest: &'f Forest,
    id: NodeId,
    op: OpKind,
    wanted: Wanted,
    virsh: &dyn Fn(&str) -> String,
) -> Result<(&'f Holder, Via), Refusal> {
    let n = forest.node(id);
    let writer = matches!(wanted, Wanted::Writer);
    let found = n.holders.iter().find(|h| match wanted {
        Wanted::Writer => h.foreign.writer(),
        Wanted::Pid(p) => h.pid == p,
    });
    let Some(h) = found else {
        let what = if n.in_use() && n.holders.is_empty() {
            format!(
                "is in use, but no process holding it could be identified, so there is no QEMU \
                 to ask for a live {op}"
            )
        } else if n.in_use() && writer {
            format!(
                "is only read by the processes holding it, so it is not the image a running VM \
                 writes: a live {op} works on the image the VM writes"
            )
        } else {
            let bad = Refusal::BadTarget {
                path: n.path.clone(),
                what: "is not in use by a running QEMU".into(),
            };
            return Err(bad.with(Way::key(
                format!("{op} it without --live"),
                op.as_str(),
                format!("{}s it offline", op.as_str()),
            )));
        };
        return Err(Refusal::BadTarget {
            path: n.path.clone(),
            what,
        });
    };
    if h.owner.manager == Manager::Libvirt {
        let uri = owner::libvirt_uri(&h.command);
        if let Some(domain) = h.owner.name.clone().filter(|_| virsh_installed()) {
            return Ok((
                h,
                Via::Libvirt {
                    uri: uri.into(),
                    domain,
                },
            ));
        }
        let domain = h.owner.name.as_deref().unwrap_or("DOMAIN");
        return Err(in_use_refusal(
            &n.path,
            format!(
                "is used by {h}; imgchain never talks to libvirt's monitor and asks libvirt \
                 through virsh, which is not installed here (Debian: libvirt-clients); run: \
                 virsh -c {} {} (virsh domblklist --domain {} names the disk's target)",
                uri.quoted(),
                virsh(domain),
                domain.quoted()
            ),
        ));
    }
    let Some(socket) = h.owner.qmp.clone() else {
        return Err(in_use_refusal(
            &n.path,
            format!(
                "is used by {h}, which has no QMP socket imgchain can reach; start it with \
                 -qmp unix:PATH,server=on,wait=off (qemu-storage-daemon: --chardev \
                 socket,path=PATH,server=on,wait=off,id=m --monitor chardev=m) for a live {op}"
            ),
        ));
    };
    Ok((h, Via::Qmp(socket)))
}

/// Checks that a QEMU we may talk to writes `top` and works out the commit into its backing
/// file: the base must not be keep-RO (11) and must have no other overlays (13, unless
/// `force`).
pub fn plan(forest: &Forest, top: NodeId, force: bool) -> Result<LivePlan, Refusal> {
    let n = forest.node(top);
    let Some(base) = n.backing_node() else {
        return Err(Refusal::NoBacking {
            top: n.path.clone(),
            op: OpKind::COMMIT,
        });
    };
    let path = n.path.quoted().to_string();
    let (h, via) = holder_via(forest, top, OpKind::COMMIT, Wanted::Writer, &|d| {
        format!(
            "blockcommit --domain {} {path} --active --pivot --verbose",
            d.quoted()
        )
    })?;
    guards::writable(forest, &[base])?;
    guards::other_overlays(forest, base, &[top], force)?;
    Ok(LivePlan {
        kind: LiveKind::Commit,
        top: n.path.clone(),
        target: forest.node(base).path.clone(),
        via,
        holder: h.to_string(),
        pid: h.pid,
        speed: 0,
    })
}

/// Works out the live merge of the middle layer `mid` into its backing file, by the QEMU
/// that runs a chain through it: the same guards as [`plan`] on the base, and `mid` must not
/// be the layer the VM writes (that is a live commit).
pub fn plan_merge(forest: &Forest, mid: NodeId, force: bool) -> Result<LivePlan, Refusal> {
    let n = forest.node(mid);
    let Some(base) = n.backing_node() else {
        return Err(Refusal::NoBacking {
            top: n.path.clone(),
            op: OpKind::MERGE,
        });
    };
    // The VM's chain above `mid`: the overlays the same process holds, up to the one it
    // writes.
    let held_by = |id: NodeId, pid: u32| forest.node(id).holders.iter().any(|h| h.pid == pid);
    let pids: Vec<u32> = n.holders.iter().map(|h| h.pid).collect();
    let mut above = None;
    for pid in pids {
        if let Some(&o) = n.overlays.iter().find(|&&o| held_by(o, pid)) {
            above = Some((o, pid));
            break;
        }
    }
    let Some((overlay, pid)) = above else {
        if n.holders.iter().any(|h| h.foreign.writer()) {
            let bad = Refusal::BadTarget {
                path: n.path.clone(),
                what: "is the image its VM writes, not a middle layer".into(),
            };
            return Err(bad.with(Way::key(
                "commit it with imgchain commit --live",
                "live",
                "on it has the VM commit it",
            )));
        }
        let bad = Refusal::BadTarget {
            path: n.path.clone(),
            what: "is not a middle layer of a running QEMU's chain".into(),
        };
        return Err(bad.with(Way::key(
            "merge it without --live",
            "merge",
            "merges it offline",
        )));
    };
    let mut active = overlay;
    while let Some(&o) = forest
        .node(active)
        .overlays
        .iter()
        .find(|&&o| held_by(o, pid))
    {
        active = o;
    }
    let (active_path, base_path) = (
        forest.node(active).path.clone(),
        forest.node(base).path.clone(),
    );
    let (mid_path, active_str, base_str) = (
        n.path.quoted().to_string(),
        active_path.quoted().to_string(),
        base_path.quoted().to_string(),
    );
    let (h, via) = holder_via(forest, mid, OpKind::MERGE, Wanted::Pid(pid), &|d| {
        format!(
            "blockcommit --domain {} {active_str} --top {mid_path} --base {base_str} \
             --keep-relative --wait --verbose",
            d.quoted()
        )
    })?;
    guards::writable(forest, &[base, overlay])?;
    guards::other_overlays(forest, base, &[mid], force)?;
    let overlay_path = forest.node(overlay).path.clone();
    Ok(LivePlan {
        kind: LiveKind::Merge {
            backing_name: rebase::backing_name(&overlay_path, &base_path),
            overlay: overlay_path,
            active: active_path,
        },
        top: n.path.clone(),
        target: base_path,
        via,
        holder: h.to_string(),
        pid: h.pid,
        speed: 0,
    })
}

/// Works out a live snapshot of `req.image`, the image a QEMU with a QMP socket writes: the
/// new overlay is planned as an offline snapshot's, and the QEMU moves onto it.
pub fn plan_snapshot(forest: &Forest, req: &snapshot::Request) -> Result<LivePlan, Refusal> {
    let n = forest.node(req.image);
    let (h, via) = holder_via(forest, req.image, OpKind::SNAPSHOT, Wanted::Writer, &|d| {
        let new = req
            .new
            .as_ref()
            .map_or_else(|| snapshot::default_name(&n.path), PathBuf::clone);
        let spec = format!("TARGET,file={}", new.display());
        format!(
            "snapshot-create-as --domain {} --disk-only --atomic --no-metadata --diskspec {}",
            d.quoted(),
            spec.quoted()
        )
    })?;
    let holder = h.to_string();
    let pid = h.pid;
    let plan = snapshot::plan_for(forest, req, true)?;
    Ok(LivePlan {
        top: n.path.clone(),
        target: plan.new.clone(),
        kind: LiveKind::Snapshot(Box::new(plan)),
        via,
        holder,
        pid,
        speed: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::model::{Backing, Node};
    use crate::image::lock::{Foreign, Holder, Perms, owner};

    /// base <- top, the top held for writing by a process with command line `argv`.
    fn forest(argv: &str) -> Forest {
        let mut f = Forest::default();
        f.nodes.push(Node::new(PathBuf::from("/vm/base.qcow2")));
        let mut top = Node::new(PathBuf::from("/vm/top.qcow2"));
        top.backing = Some(Backing {
            raw: "base.qcow2".into(),
            resolved: PathBuf::from("/vm/base.qcow2"),
            path: PathBuf::from("/vm/base.qcow2"),
            format: Some("qcow2".into()),
            exists: true,
            node: Some(NodeId(0)),
        });
        top.foreign = Foreign {
            held: Perms(0b1011),
            unshared: Perms(0b1010),
        };
        let argv: Vec<String> = argv.split_whitespace().map(String::from).collect();
        top.holders = vec![Holder {
            pid: 4242,
            command: argv.join(" "),
            foreign: top.foreign,
            owner: Box::new(owner::parse(&argv)),
        }];
        f.nodes.push(top);
        f.relink();
        f
    }

    #[test]
    fn a_libvirt_vm_gets_the_virsh_command_and_a_qemu_with_qmp_a_plan() {
        let f = forest(
            "qemu-system-x86_64 -name guest=web03,debug-threads=on \
             -chardev socket,id=charmonitor,path=/var/lib/libvirt/qemu/domain-3-web03/monitor.sock,server=on \
             -mon chardev=charmonitor,mode=control",
        );
        // Through virsh where it is installed, else the command to run.
        match plan(&f, NodeId(1), false) {
            Ok(p) => {
                assert!(virsh_installed());
                assert_eq!(
                    p.via,
                    Via::Libvirt {
                        uri: "qemu:///system".into(),
                        domain: "web03".into()
                    }
                );
            }
            Err(e) => {
                assert!(!virsh_installed());
                assert_eq!(e.exit_code(), crate::exit::IN_USE);
                let msg = e.to_string();
                assert!(
                    msg.contains(
                        "virsh -c qemu:///system blockcommit --domain web03 /vm/top.qcow2 --active --pivot"
                    ),
                    "{msg}"
                );
                assert!(
                    !msg.contains("monitor.sock"),
                    "libvirt's socket is not offered: {msg}"
                );
            }
        }

        let f =
            forest("qemu-system-x86_64 -name web04 -qmp unix:/run/web04.qmp,server=on,wait=off");
        let p = plan(&f, NodeId(1), false).unwrap();
        assert_eq!(p.via, Via::Qmp(PathBuf::from("/run/web04.qmp")));
        assert_eq!(p.target, PathBuf::from("/vm/base.qcow2"));
        assert!(
            p.holder.starts_with("web04 (QEMU VM, pid 4242, writing)"),
            "{}",
            p.holder
        );
    }

    #[test]
    fn a_libvirt_snapshot_names_its_command_and_a_vm_s_own_disk_is_no_middle_layer() {
        let f = forest(
            "qemu-system-x86_64 -name guest=web03 \
             -chardev socket,id=charmonitor,path=/run/libvirt/qemu/domain-3-web03/monitor.sock,server=on \
             -mon chardev=charmonitor,mode=control",
        );
        let req = snapshot::Request {
            image: NodeId(1),
            new: Some(PathBuf::from("/vm/top.snap.qcow2")),
            cluster_size: 65536,
        };
        if !virsh_installed() {
            let msg = plan_snapshot(&f, &req).unwrap_err().to_string();
            assert!(
                msg.contains(
                    "snapshot-create-as --domain web03 --disk-only --atomic --no-metadata \
                     --diskspec TARGET,file=/vm/top.snap.qcow2"
                ),
                "{msg}"
            );
        }
        let f = forest("qemu-system-x86_64 -name web04 -qmp unix:/run/web04.qmp,server=on");
        let msg = plan_merge(&f, NodeId(1), false).unwrap_err().to_string();
        assert!(msg.contains("commit --live"), "{msg}");
        let msg = plan_merge(&f, NodeId(0), false).unwrap_err().to_string();
        assert!(
            msg.contains("merge it into"),
            "the base has no backing file: {msg}"
        );
    }
}
