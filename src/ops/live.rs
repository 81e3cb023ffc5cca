//! Live commit: a running QEMU (or qemu-storage-daemon) that holds the image commits it itself,
//! through its QMP socket (ARCHITECTURE.md §3, §7). imgchain never writes an image a QEMU
//! holds: it asks that QEMU to run `block-commit`, follows the job, completes it (the pivot of
//! an active commit) and dismisses it.
//!
//! libvirt's monitor is never used (only one client may attach, and libvirt taints a domain
//! others talk to): for a libvirt VM the refusal gives the `virsh blockcommit` to run instead.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{OpKind, Phase, Progress, Refusal, Report, guards};
use crate::forest::{Forest, NodeId};
use crate::image::lock::Manager;

/// A live commit that passed the guards.
#[derive(Clone, Debug)]
pub struct LivePlan {
    pub top: PathBuf,
    pub base: PathBuf,
    /// The QMP socket of the process holding the top.
    pub socket: PathBuf,
    /// How the holder is named (`web03 (QEMU VM, pid 4242, writing)`).
    pub holder: String,
}

/// What a live commit did.
#[derive(Debug)]
pub struct LiveOutcome {
    pub plan: LivePlan,
    /// Bytes the job reported it had copied.
    pub copied: u64,
    /// The job completed and the guest now runs on the base.
    pub pivoted: bool,
    pub cancelled: bool,
    /// What QEMU said went wrong.
    pub error: Option<String>,
}

fn in_use_refusal(path: &Path, what: String) -> Refusal {
    Refusal::HeldElsewhere {
        path: path.to_path_buf(),
        what,
    }
}

/// Checks that a QEMU we may talk to holds `top` and works out the commit into its backing
/// file: the base must not be keep-RO (11) and must have no other overlays (13, unless
/// `force`).
pub fn plan(forest: &Forest, top: NodeId, force: bool) -> Result<LivePlan, Refusal> {
    let n = forest.node(top);
    let Some(base) = n.backing_node() else {
        return Err(Refusal::NoBacking {
            top: n.path.clone(),
            op: OpKind::Commit,
        });
    };
    let Some(h) = n
        .holders
        .iter()
        .find(|h| h.foreign.writer())
        .or(n.holders.first())
    else {
        return Err(Refusal::BadTarget {
            path: n.path.clone(),
            what: if n.in_use() {
                "is in use, but no process holding it could be identified, so there is no QEMU \
                 to ask for a live commit"
                    .into()
            } else {
                "is not in use by a running QEMU: commit it without --live".into()
            },
        });
    };
    if h.owner.manager == Manager::Libvirt {
        let domain = h.owner.name.as_deref().unwrap_or("DOMAIN");
        return Err(in_use_refusal(
            &n.path,
            format!(
                "is used by {h}, and imgchain never talks to libvirt's monitor; run: virsh \
                 blockcommit {domain} {} --active --pivot --verbose (virsh domblklist {domain} \
                 names the target)",
                n.path.display()
            ),
        ));
    }
    let Some(socket) = h.owner.qmp.clone() else {
        return Err(in_use_refusal(
            &n.path,
            format!(
                "is used by {h}, which has no QMP socket imgchain can reach; start it with \
                 -qmp unix:PATH,server=on,wait=off (qemu-storage-daemon: --chardev \
                 socket,path=PATH,server=on,wait=off,id=m --monitor chardev=m) to commit live"
            ),
        ));
    };
    guards::writable(forest, &[base])?;
    guards::other_overlays(forest, base, &[top], force)?;
    Ok(LivePlan {
        top: n.path.clone(),
        base: forest.node(base).path.clone(),
        socket,
        holder: h.to_string(),
    })
}

/// A QMP connection: commands in, replies out, events noted on the way.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// `BLOCK_JOB_ERROR` events seen, as QEMU worded them.
    errors: Vec<String>,
}

impl Qmp {
    fn connect(socket: &Path) -> Result<Qmp, String> {
        let s = UnixStream::connect(socket)
            .map_err(|e| format!("cannot connect to the QMP socket {}: {e}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
            errors: Vec::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("{} does not speak QMP", socket.display()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the QEMU process closed its QMP socket".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("bad QMP reply: {e}")),
            Err(e) => Err(format!("no answer on the QMP socket: {e}")),
        }
    }

    /// Runs a command; returns its `return`, or QEMU's error text.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(|e| format!("cannot send {command}: {e}"))?;
        loop {
            let v = self.read()?;
            if let Some(event) = v.get("event").and_then(Value::as_str) {
                if event == "BLOCK_JOB_ERROR" {
                    self.errors.push(v["data"].to_string());
                }
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(format!(
                    "{command}: {}",
                    e["desc"].as_str().unwrap_or("QEMU refused it")
                ));
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }
}

/// The node name of the format node QEMU opened `path` with.
fn node_of(nodes: &Value, path: &Path) -> Option<String> {
    let want = std::fs::canonicalize(path).ok()?;
    nodes.as_array()?.iter().find_map(|n| {
        let file = n["file"].as_str()?;
        let same = std::fs::canonicalize(file).ok()? == want;
        (same && n["drv"].as_str() != Some("file"))
            .then(|| n["node-name"].as_str().map(String::from))
            .flatten()
    })
}

/// Runs the live commit: `block-commit` of the top into the base, followed until it is ready,
/// completed (the pivot), and dismissed; a cancel becomes `job-cancel`, which leaves the guest
/// on the old chain with nothing lost.
pub fn run(
    plan: &LivePlan,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<LiveOutcome, Refusal> {
    let start = Instant::now();
    let failed = |what: String| Refusal::Live {
        path: plan.top.clone(),
        what,
    };
    let mut report = |phase, done, total| {
        progress(Progress {
            op: OpKind::Commit,
            phase,
            done,
            total,
            elapsed: start.elapsed(),
            writing: false,
        })
    };
    report(Phase::Open, 0, 0);
    let mut q = Qmp::connect(&plan.socket).map_err(failed)?;
    let nodes = q
        .execute("query-named-block-nodes", json!({}))
        .map_err(failed)?;
    let top = node_of(&nodes, &plan.top)
        .ok_or_else(|| failed("the QEMU holding it has no block node for it".into()))?;
    let base = node_of(&nodes, &plan.base).ok_or_else(|| {
        failed(format!(
            "the QEMU holding it has no block node for {}: it does not run on that chain",
            plan.base.display()
        ))
    })?;
    let id = format!("imgchain-commit-{}", std::process::id());
    q.execute(
        "block-commit",
        json!({"job-id": id, "device": top, "base-node": base, "auto-dismiss": false}),
    )
    .map_err(failed)?;
    let mut outcome = LiveOutcome {
        plan: plan.clone(),
        copied: 0,
        pivoted: false,
        cancelled: false,
        error: None,
    };
    let mut asked_to_complete = false;
    let mut asked_to_cancel = false;
    loop {
        let jobs = match q.execute("query-jobs", json!({})) {
            Ok(j) => j,
            Err(e) => {
                outcome.error = Some(e);
                return Ok(outcome);
            }
        };
        let Some(job) = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == id))
        else {
            outcome.error = Some("the job vanished before it concluded".into());
            return Ok(outcome);
        };
        let done = job["current-progress"].as_u64().unwrap_or(0);
        let total = job["total-progress"].as_u64().unwrap_or(0);
        outcome.copied = done;
        report(Phase::Copy, done, total);
        let status = job["status"].as_str().unwrap_or("");
        if cancel.load(Ordering::Relaxed) && !asked_to_cancel && !asked_to_complete {
            asked_to_cancel = true;
            if let Err(e) = q.execute("job-cancel", json!({"id": id})) {
                outcome.error = Some(e);
            }
        }
        match status {
            "ready" if !asked_to_complete && !asked_to_cancel => {
                asked_to_complete = true;
                report(Phase::Flush, done, total);
                if let Err(e) = q.execute("job-complete", json!({"id": id})) {
                    outcome.error = Some(e);
                }
            }
            "concluded" => {
                let error = job["error"].as_str().map(String::from);
                let _ = q.execute("job-dismiss", json!({"id": id}));
                outcome.cancelled = asked_to_cancel;
                outcome.pivoted = asked_to_complete && error.is_none();
                outcome.error = error.or(outcome.error.take()).or_else(|| {
                    (!outcome.pivoted && !outcome.cancelled && !q.errors.is_empty())
                        .then(|| q.errors.join("; "))
                });
                report(Phase::Done, done, total);
                return Ok(outcome);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Report for LiveOutcome {
    fn exit_code(&self) -> u8 {
        if self.cancelled {
            crate::exit::CANCELLED
        } else if self.pivoted {
            crate::exit::OK
        } else {
            crate::exit::IO_ERROR
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let (top, base) = (p.top.display(), p.base.display());
        if self.pivoted {
            format!(
                "{} committed {} into {base} itself and now runs on {base}; {top} is no longer \
                 part of its chain (delete it once nothing uses it).",
                p.holder,
                crate::units::human_size(self.copied)
            )
        } else if self.cancelled {
            format!(
                "Cancelled: {} still runs on {top}, which keeps all its data; {base} may hold \
                 part of it, which {top} hides.",
                p.holder
            )
        } else {
            format!(
                "The live commit of {top} into {base} did not finish: {}. {} still runs on \
                 {top}, which keeps all its data.",
                self.error.as_deref().unwrap_or("QEMU gave no reason"),
                p.holder
            )
        }
    }
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
        let e = plan(&f, NodeId(1), false).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::IN_USE);
        let msg = e.to_string();
        assert!(
            msg.contains("virsh blockcommit web03 /vm/top.qcow2 --active --pivot"),
            "{msg}"
        );
        assert!(
            !msg.contains("monitor.sock"),
            "libvirt's socket is not offered: {msg}"
        );

        let f =
            forest("qemu-system-x86_64 -name web04 -qmp unix:/run/web04.qmp,server=on,wait=off");
        let p = plan(&f, NodeId(1), false).unwrap();
        assert_eq!(p.socket, PathBuf::from("/run/web04.qmp"));
        assert_eq!(p.base, PathBuf::from("/vm/base.qcow2"));
        assert!(
            p.holder.starts_with("web04 (QEMU VM, pid 4242, writing)"),
            "{}",
            p.holder
        );
    }
}
