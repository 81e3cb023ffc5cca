//! Live operations: a running QEMU (or qemu-storage-daemon) that holds the image does the job
//! itself, through its QMP socket (ARCHITECTURE.md §3, §7). imgchain never writes an image a
//! QEMU holds:
//! - commit: `block-commit` of the active layer, followed until ready, completed (the pivot)
//!   and dismissed;
//! - merge: `block-commit` of a middle layer into its backing file, which re-points the
//!   layer above it; the job ends by itself;
//! - snapshot: imgchain creates the new overlay (a new file nobody holds), the QEMU opens it
//!   (`blockdev-add`) and moves onto it (`blockdev-snapshot`).
//!
//! libvirt's monitor is never used (only one client may attach, and libvirt taints a domain
//! others talk to): a libvirt VM's job goes through `virsh` (`blockcommit`, `blockjob`,
//! `snapshot-create-as`), or, where virsh is not installed, the refusal gives the command.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{OpKind, Phase, Progress, Refusal, Report, guards, rebase, snapshot};
use crate::forest::{Forest, NodeId};
use crate::image::lock::{Holder, Manager, owner};
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
            LiveKind::Commit => OpKind::Commit,
            LiveKind::Merge { .. } => OpKind::Merge,
            LiveKind::Snapshot(_) => OpKind::Snapshot,
        }
    }
}

/// What a live operation did.
#[derive(Debug)]
pub struct LiveOutcome {
    pub plan: LivePlan,
    /// Bytes the job reported it had copied.
    pub copied: u64,
    /// The job completed: after a commit the guest runs on the base, after a merge its
    /// overlay is built on the base, after a snapshot it writes the new overlay.
    pub completed: bool,
    pub cancelled: bool,
    /// What QEMU (or creating the overlay) said went wrong.
    pub error: Option<String>,
}

fn in_use_refusal(path: &Path, what: String) -> Refusal {
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
            format!("is not in use by a running QEMU: {op} it without --live")
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
            op: OpKind::Commit,
        });
    };
    let path = n.path.quoted().to_string();
    let (h, via) = holder_via(forest, top, OpKind::Commit, Wanted::Writer, &|d| {
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
            op: OpKind::Merge,
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
            return Err(Refusal::BadTarget {
                path: n.path.clone(),
                what: "is the image its VM writes, not a middle layer: commit it with \
                       imgchain commit --live"
                    .into(),
            });
        }
        return Err(Refusal::BadTarget {
            path: n.path.clone(),
            what: "is not a middle layer of a running QEMU's chain: merge it without --live".into(),
        });
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
    let (h, via) = holder_via(forest, mid, OpKind::Merge, Wanted::Pid(pid), &|d| {
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
    let (h, via) = holder_via(forest, req.image, OpKind::Snapshot, Wanted::Writer, &|d| {
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

/// A QMP connection: commands in, replies out, events noted on the way.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// `BLOCK_JOB_ERROR` events seen, as QEMU worded them.
    errors: Vec<String>,
}

impl Qmp {
    /// Connects to `socket`, which must be served by process `pid` and owned by its user.
    fn connect(socket: &Path, pid: u32) -> Result<Qmp, String> {
        let s = UnixStream::connect(socket)
            .map_err(|e| format!("cannot connect to the QMP socket {}: {e}", socket.shown()))?;
        let peer = rustix::net::sockopt::socket_peercred(&s)
            .map_err(|e| format!("cannot tell who serves {}: {e}", socket.shown()))?;
        let owner = std::fs::metadata(socket).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        if peer.pid.as_raw_nonzero().get() as u32 != pid || owner.ok() != Some(peer.uid.as_raw()) {
            return Err(format!(
                "the QMP socket {} is not served by pid {pid} under its own user (served by pid \
                 {}), so imgchain does not use it",
                socket.shown(),
                peer.pid.as_raw_nonzero()
            ));
        }
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
            return Err(format!("{} does not speak QMP", socket.shown()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// Reads one message: a line of at most [`QMP_LINE_MAX`] bytes.
    fn read(&mut self) -> Result<Value, String> {
        let mut line = Vec::new();
        match std::io::Read::take(&mut self.reader, QMP_LINE_MAX).read_until(b'\n', &mut line) {
            Ok(0) => Err("the QEMU process closed its QMP socket".into()),
            Ok(n) if n as u64 == QMP_LINE_MAX && !line.ends_with(b"\n") => {
                Err("the QMP peer sent a line longer than 1 MiB; imgchain stops listening".into())
            }
            Ok(_) => serde_json::from_slice(&line).map_err(|e| format!("bad QMP reply: {e}")),
            Err(e) => Err(format!("no answer on the QMP socket: {e}")),
        }
    }

    /// Runs a command; returns its `return`, or QEMU's error text.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{msg}").map_err(|e| format!("cannot send {command}: {e}"))?;
        for _ in 0..QMP_EVENTS_MAX {
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
        Err(format!(
            "{command}: no answer among {QMP_EVENTS_MAX} messages from the QMP peer"
        ))
    }
}

/// The longest QMP line imgchain reads, and how many events it reads waiting for one answer.
const QMP_LINE_MAX: u64 = 1 << 20;
const QMP_EVENTS_MAX: usize = 10_000;

/// The file name of a block node: QEMU's `file`, or, for a node opened from options (a
/// snapshot's overlay, added without its backing file), the `json:{...}` name's own file.
fn file_of(node: &Value) -> Option<String> {
    let file = node["file"].as_str()?;
    match file.strip_prefix("json:") {
        Some(j) => {
            let v: Value = serde_json::from_str(j).ok()?;
            v["file"]["filename"].as_str().map(String::from)
        }
        None => Some(file.to_string()),
    }
}

/// The node name of the format node QEMU opened `path` with.
fn node_of(nodes: &Value, path: &Path) -> Option<String> {
    let want = std::fs::canonicalize(path).ok()?;
    nodes.as_array()?.iter().find_map(|n| {
        let same = std::fs::canonicalize(file_of(n)?).ok()? == want;
        (same && n["drv"].as_str() != Some("file"))
            .then(|| n["node-name"].as_str().map(String::from))
            .flatten()
    })
}

/// Runs the live operation. A block job (commit, merge) is followed until it concludes,
/// completed when it is ready (the pivot of a commit), and dismissed; a cancel becomes
/// `job-cancel` (`blockjob --abort` through libvirt), which leaves the guest on its old chain
/// with nothing lost.
pub fn run(
    plan: &LivePlan,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<LiveOutcome, Refusal> {
    let start = Instant::now();
    let op = plan.op();
    let mut report = |phase, done, total| {
        progress(Progress {
            op,
            phase,
            done,
            total,
            elapsed: start.elapsed(),
            writing: false,
        })
    };
    report(Phase::Open, 0, 0);
    verify_holder(plan)?;
    match &plan.via {
        Via::Qmp(socket) => run_qmp(plan, socket, cancel, &mut report),
        Via::Libvirt { uri, domain } => {
            let v = Virsh { uri, domain };
            run_virsh(plan, &v, cancel, &mut report)
        }
    }
}

/// The holder must be a real QEMU writing the image the VM writes, and a libvirt domain's
/// pid must be the holder's, before anything is asked of it (ARCHITECTURE.md §8).
fn verify_holder(plan: &LivePlan) -> Result<(), Refusal> {
    let refuse = |what: String| Refusal::Untrusted {
        path: plan.top.clone(),
        what: format!(
            "is held by {}, which imgchain does not trust to do a live {}: {what}",
            plan.holder,
            plan.op()
        ),
    };
    let active = match &plan.kind {
        LiveKind::Merge { active, .. } => active,
        _ => &plan.top,
    };
    let id = crate::image::file::FileId::of_path(active)
        .ok_or_else(|| refuse(format!("{} cannot be looked at", active.shown())))?;
    crate::image::lock::holders::verify_qemu(plan.pid, id).map_err(refuse)?;
    if let Via::Libvirt { uri, domain } = &plan.via {
        let pid = libvirt_pid(uri, domain).ok_or_else(|| {
            refuse(format!(
                "libvirt has no running domain named {}",
                domain.shown()
            ))
        })?;
        if pid != plan.pid {
            return Err(refuse(format!(
                "libvirt's domain {} runs as pid {pid}, not {}",
                domain.shown(),
                plan.pid
            )));
        }
    }
    Ok(())
}

/// The pid libvirt recorded for a running domain (`/run/libvirt/qemu/NAME.pid`).
fn libvirt_pid(uri: &str, domain: &str) -> Option<u32> {
    if domain.contains('/') || domain.starts_with('.') {
        return None;
    }
    let dir = if uri.ends_with("/system") {
        PathBuf::from("/run/libvirt/qemu")
    } else {
        PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("libvirt/qemu/run")
    };
    let text = std::fs::read_to_string(dir.join(format!("{domain}.pid"))).ok()?;
    text.trim().parse().ok()
}

/// Reports a phase with bytes done and in all.
type Report3<'a> = dyn FnMut(Phase, u64, u64) + 'a;

fn outcome(plan: &LivePlan) -> LiveOutcome {
    LiveOutcome {
        plan: plan.clone(),
        copied: 0,
        completed: false,
        cancelled: false,
        error: None,
    }
}

fn run_qmp(
    plan: &LivePlan,
    socket: &Path,
    cancel: &AtomicBool,
    report: &mut Report3<'_>,
) -> Result<LiveOutcome, Refusal> {
    let failed = |what: String| Refusal::Live {
        path: plan.top.clone(),
        what,
    };
    let op = plan.op();
    let mut q = Qmp::connect(socket, plan.pid).map_err(failed)?;
    let nodes = q
        .execute("query-named-block-nodes", json!({}))
        .map_err(failed)?;
    let node = |path: &Path| {
        node_of(&nodes, path).ok_or_else(|| {
            failed(format!(
                "the QEMU holding it has no block node for {}: it does not run on that chain",
                path.shown()
            ))
        })
    };
    let top = node(&plan.top)?;
    let mut outcome = outcome(plan);
    let id = format!("imgchain-{op}-{}", std::process::id());
    let mut args = json!({"job-id": id, "auto-dismiss": false, "speed": plan.speed});
    match &plan.kind {
        LiveKind::Snapshot(s) => {
            report(Phase::Create, 0, 0);
            snapshot::create_in_place(s)
                .map_err(|e| failed(format!("cannot create {}: {e}", plan.target.shown())))?;
            report(Phase::Relink, 0, 0);
            outcome.error = switch_to_overlay(&mut q, &top, &plan.target).err();
            outcome.completed = outcome.error.is_none();
            report(Phase::Done, 0, 0);
            return Ok(outcome);
        }
        LiveKind::Commit => {
            args["device"] = json!(top);
            args["base-node"] = json!(node(&plan.target)?);
        }
        LiveKind::Merge {
            active,
            backing_name,
            ..
        } => {
            args["device"] = json!(node(active)?);
            args["top-node"] = json!(top);
            args["base-node"] = json!(node(&plan.target)?);
            args["backing-file"] = json!(backing_name);
        }
    }
    q.execute("block-commit", args).map_err(failed)?;
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
                // A commit ends by its pivot; a merge ends by itself.
                let ended = asked_to_complete || matches!(plan.kind, LiveKind::Merge { .. });
                outcome.completed = ended && !asked_to_cancel && error.is_none();
                outcome.error = error.or(outcome.error.take()).or_else(|| {
                    (!outcome.completed && !outcome.cancelled && !q.errors.is_empty())
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

/// Whether `virsh` is on the PATH.
fn virsh_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| std::fs::metadata(d.join("virsh")).is_ok_and(|m| m.is_file()))
    })
}

/// virsh, on one domain of one libvirt connection.
struct Virsh<'a> {
    uri: &'a str,
    domain: &'a str,
}

impl Virsh<'_> {
    /// Runs `virsh -q -c URI COMMAND --domain DOMAIN ARGS...`: its output, or what it printed
    /// as error.
    fn run(&self, command: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec![command, "--domain", self.domain];
        all.extend_from_slice(args);
        super::dependents::virsh(self.uri, &all).map_err(|e| format!("virsh {command}: {e}"))
    }

    /// The target (`vda`) of the domain's disk whose active layer is `path`.
    fn target_of(&self, path: &Path) -> Result<String, String> {
        let want = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.shown()))?;
        let list = self.run("domblklist", &["--details"])?;
        list.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (_kind, _device, target) = (f.next()?, f.next()?, f.next()?);
                let source = f.collect::<Vec<_>>().join(" ");
                (std::fs::canonicalize(&source).ok()? == want).then(|| target.to_string())
            })
            .ok_or_else(|| {
                format!(
                    "libvirt lists no disk of {} running on {}",
                    self.domain,
                    path.shown()
                )
            })
    }
}

/// `cur=` and `end=` of `virsh blockjob --raw`; `None` when no job runs.
fn job_progress(raw: &str) -> Option<(u64, u64)> {
    let field = |k: &str| {
        raw.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse::<u64>().ok()))
    };
    raw.contains("type=")
        .then(|| (field("cur=").unwrap_or(0), field("end=").unwrap_or(0)))
}

fn run_virsh(
    plan: &LivePlan,
    v: &Virsh<'_>,
    cancel: &AtomicBool,
    report: &mut Report3<'_>,
) -> Result<LiveOutcome, Refusal> {
    let failed = |what: String| Refusal::Live {
        path: plan.top.clone(),
        what,
    };
    let mut outcome = outcome(plan);
    let active = match &plan.kind {
        LiveKind::Merge { active, .. } => active,
        _ => &plan.top,
    };
    let target = v.target_of(active).map_err(failed)?;
    let bandwidth = plan.speed.to_string();
    let mut args = vec![target.as_str()];
    let (mid, base) = (
        plan.top.display().to_string(),
        plan.target.display().to_string(),
    );
    match &plan.kind {
        LiveKind::Snapshot(s) => {
            report(Phase::Create, 0, 0);
            snapshot::create_in_place(s)
                .map_err(|e| failed(format!("cannot create {}: {e}", plan.target.shown())))?;
            report(Phase::Relink, 0, 0);
            // virsh's option syntax doubles a comma inside a value.
            let spec = format!("{target},file={}", base.replace(',', ",,"));
            let made = v.run(
                "snapshot-create-as",
                &[
                    "--disk-only",
                    "--atomic",
                    "--no-metadata",
                    "--reuse-external",
                    "--diskspec",
                    &spec,
                ],
            );
            if let Err(e) = made {
                outcome.error = Some(match std::fs::remove_file(&plan.target) {
                    Ok(()) => format!("{e}; {base} was removed again"),
                    Err(r) => format!("{e}; {base} could not be removed ({r}): remove it by hand"),
                });
            }
            outcome.completed = outcome.error.is_none();
            report(Phase::Done, 0, 0);
            return Ok(outcome);
        }
        LiveKind::Commit => args.push("--active"),
        LiveKind::Merge { .. } => {
            args.extend(["--top", &mid, "--base", &base, "--keep-relative"]);
        }
    }
    if plan.speed > 0 {
        args.extend(["--bandwidth", &bandwidth, "--bytes"]);
    }
    v.run("blockcommit", &args).map_err(failed)?;
    let mut last_total = 0;
    loop {
        let raw = match v.run("blockjob", &[&target, "--raw"]) {
            Ok(r) => r,
            Err(e) => {
                outcome.error = Some(e);
                return Ok(outcome);
            }
        };
        let Some((done, total)) = job_progress(&raw) else {
            // Only a merge ends by itself; libvirt tells how it went by the chain it runs.
            let xml = v.run("dumpxml", &[]).unwrap_or_default();
            if matches!(plan.kind, LiveKind::Merge { .. }) && !xml.contains(&format!("'{mid}'")) {
                outcome.completed = true;
                // It ended between two looks: all of it was copied.
                outcome.copied = outcome.copied.max(last_total);
            } else {
                outcome.error = Some(format!(
                    "libvirt ended the job, but {} still runs on {mid}; its log says why",
                    v.domain
                ));
            }
            report(Phase::Done, outcome.copied, outcome.copied);
            return Ok(outcome);
        };
        outcome.copied = done;
        last_total = total;
        report(Phase::Copy, done, total);
        if cancel.load(Ordering::Relaxed) {
            outcome.cancelled = true;
            outcome.error = v.run("blockjob", &[&target, "--abort"]).err();
            report(Phase::Done, done, total);
            return Ok(outcome);
        }
        if matches!(plan.kind, LiveKind::Commit) && total > 0 && done == total {
            report(Phase::Flush, done, total);
            match v.run("blockjob", &[&target, "--pivot"]) {
                Ok(_) => {
                    outcome.completed = true;
                    report(Phase::Done, done, total);
                    return Ok(outcome);
                }
                Err(e) if e.contains("not ready") => {}
                Err(e) => {
                    outcome.error = Some(e);
                    return Ok(outcome);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Has the QEMU open the new overlay `new` (without its backing chain) and move the guest
/// onto it from `top`. If it cannot, the node is removed again and so is the file, which
/// nothing else has used.
fn switch_to_overlay(q: &mut Qmp, top: &str, new: &Path) -> Result<(), String> {
    // Node names are at most 31 characters, and unique in the QEMU.
    static ADDED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let node = format!(
        "imgchain-{}-{}",
        std::process::id(),
        ADDED.fetch_add(1, Ordering::Relaxed)
    );
    let added = q.execute(
        "blockdev-add",
        json!({
            "driver": "qcow2",
            "node-name": node,
            "file": {"driver": "file", "filename": new},
            "backing": null,
        }),
    );
    let switched = added.and_then(|_| {
        q.execute("blockdev-snapshot", json!({"node": top, "overlay": node}))
            .inspect_err(|_| {
                let _ = q.execute("blockdev-del", json!({"node-name": node}));
            })
    });
    match switched {
        Ok(_) => Ok(()),
        Err(e) => match std::fs::remove_file(new) {
            Ok(()) => Err(format!("{e}; {} was removed again", new.shown())),
            Err(r) => Err(format!(
                "{e}; {} could not be removed ({r}): nothing uses it, remove it by hand",
                new.shown()
            )),
        },
    }
}

impl Report for LiveOutcome {
    fn exit_code(&self) -> u8 {
        if self.cancelled {
            crate::exit::CANCELLED
        } else if self.completed {
            crate::exit::OK
        } else {
            crate::exit::IO_ERROR
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        let (top, target) = (p.top.shown(), p.target.shown());
        let copied = crate::units::human_size(self.copied);
        let reason = self.error.as_deref().unwrap_or("QEMU gave no reason");
        match (&p.kind, self.completed, self.cancelled) {
            (LiveKind::Commit, true, _) => format!(
                "{} committed {copied} of {top} into {target} itself and now runs on {target}; \
                 {top} is no longer part of its chain (delete it once nothing uses it).",
                p.holder
            ),
            (LiveKind::Merge { overlay, .. }, true, _) => format!(
                "{} merged {copied} of {top} into {target} itself; {} is built on {target} now, \
                 and {top} is no longer part of its chain (delete it once nothing uses it).",
                p.holder,
                overlay.shown()
            ),
            (LiveKind::Snapshot(_), true, _) => format!(
                "{} now writes {target}, a new qcow2 overlay of {top}; {top} is a backing file \
                 of the running chain (RO) from now on.",
                p.holder
            ),
            (LiveKind::Snapshot(_), false, _) => format!(
                "The live snapshot of {top} did not happen: {reason}. {} still writes {top}.",
                p.holder
            ),
            (_, false, true) => format!(
                "Cancelled: {} still runs on its chain through {top}, which keeps all its data; \
                 {target} may hold part of it, which {top} hides. Re-running finishes the job.",
                p.holder
            ),
            (_, false, false) => format!(
                "The live {} of {top} into {target} did not finish: {reason}. {} still runs on \
                 its chain through {top}, which keeps all its data.",
                p.op(),
                p.holder
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_qmp_line_is_cut_at_the_cap() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let flood = std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            let mut theirs = theirs;
            for _ in 0..64 {
                if theirs.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let mut q = Qmp {
            writer: ours.try_clone().expect("clone"),
            reader: BufReader::new(ours),
            errors: Vec::new(),
        };
        let err = q.read().expect_err("a 4 MiB line is refused");
        assert!(err.contains("longer than 1 MiB"), "{err}");
        drop(q);
        let _ = flood.join();
    }
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
                        "virsh -c qemu:///system blockcommit web03 /vm/top.qcow2 --active --pivot"
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
                    "snapshot-create-as web03 --disk-only --atomic --no-metadata --diskspec \
                     TARGET,file=/vm/top.snap.qcow2"
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
