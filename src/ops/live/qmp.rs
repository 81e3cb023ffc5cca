//! A QMP client for the QEMU that holds an image: only a socket its own process serves, with
//! every line and every wait for an answer bounded (ARCHITECTURE.md §8).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::text::Names;

/// A QMP connection: commands in, replies out, events noted on the way.
pub(super) struct Qmp {
    pub(super) reader: BufReader<UnixStream>,
    pub(super) writer: UnixStream,
    /// `BLOCK_JOB_ERROR` events seen, as QEMU worded them.
    pub(super) errors: Vec<String>,
}

impl Qmp {
    /// Connects to `socket`, which must be served by process `pid` and owned by its user.
    pub(super) fn connect(socket: &Path, pid: u32) -> Result<Qmp, String> {
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
    pub(super) fn read(&mut self) -> Result<Value, String> {
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
    pub(super) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
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
pub(super) const QMP_LINE_MAX: u64 = 1 << 20;
pub(super) const QMP_EVENTS_MAX: usize = 10_000;

/// The file name of a block node: QEMU's `file`, or, for a node opened from options (a
/// snapshot's overlay, added without its backing file), the `json:{...}` name's own file.
pub(super) fn file_of(node: &Value) -> Option<String> {
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
pub(super) fn node_of(nodes: &Value, path: &Path) -> Option<String> {
    let want = std::fs::canonicalize(path).ok()?;
    nodes.as_array()?.iter().find_map(|n| {
        let same = std::fs::canonicalize(file_of(n)?).ok()? == want;
        (same && n["drv"].as_str() != Some("file"))
            .then(|| n["node-name"].as_str().map(String::from))
            .flatten()
    })
}

/// Has the QEMU open the new overlay `new` (without its backing chain) and move the guest
/// onto it from `top`. If it cannot, the node is removed again (the file is the caller's).
pub(super) fn switch_to_overlay(q: &mut Qmp, top: &str, new: &Path) -> Result<(), String> {
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
    switched.map(|_| ())
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
}
