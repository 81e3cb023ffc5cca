//! Live operations against a running qemu-storage-daemon (the VM): `commit --live` has the
//! daemon commit its own top through QMP and pivot, `merge --live` has it commit a middle
//! layer and re-point the top, `snapshot --live` moves it onto a new overlay; every pattern
//! written through its NBD export, before and after, is where it belongs once it exits. A
//! daemon without a QMP socket, or an image nobody holds, is refused with the reason.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// `qemu-io` on the daemon's export (the guest's view).
fn guest_io(dir: &Path, command: &str) {
    run(Command::new("qemu-io")
        .args(["-f", "raw", "-c", command])
        .arg(format!(
            "nbd+unix:///top?socket={}",
            dir.join("nbd.sock").display()
        )));
}

/// Starts `imgchain commit --live --speed SPEED -p DIR/top.qcow2` and returns once its
/// progress says the job copies: the child, and the rest of its stderr.
fn live_commit_copying(
    dir: &Path,
    speed: &str,
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .args(["commit", "--live", "--speed", speed, "-p"])
        .arg(dir.join("top.qcow2"))
        .env("XDG_CONFIG_HOME", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("[copy") {
        line.clear();
    }
    (child, err)
}

/// One QMP command on the daemon's socket.
fn qmp(dir: &Path, command: &str) -> Value {
    let s = UnixStream::connect(dir.join("qmp.sock")).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut next = |r: &mut BufReader<UnixStream>| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("event").is_none() {
            return v;
        }
    };
    next(&mut r);
    for c in ["qmp_capabilities", command] {
        writeln!(w, "{}", json!({"execute": c})).unwrap();
        let v = next(&mut r);
        if c == command {
            return v["return"].clone();
        }
    }
    unreachable!()
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn a_live_commit_is_done_by_the_daemon_and_loses_no_write() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
    qemu_io(&d.join("top.qcow2"), "write -P 0x22 1M 1M");
    let vm = hold_with_qmp_daemon(d);
    guest_io(d, "write -P 0x33 2M 512k");
    // Without --live it is refused, and the hint says how.
    let out = imgchain(&["commit", arg(&d.join("top.qcow2"))]);
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--live"));
    let v = imgchain_json(
        &["commit", "--live", "--json", arg(&d.join("top.qcow2"))],
        0,
    );
    assert_documented(&v, "commit --live --json");
    assert_eq!(v["pivoted"], true, "{v}");
    assert_eq!(v["qmp"], arg(&d.join("qmp.sock")));
    // The export now serves the base's node, and what the guest writes goes there.
    let exports = qmp(d, "query-block-exports");
    let nodes = qmp(d, "query-named-block-nodes");
    let node = exports[0]["node-name"].as_str().unwrap();
    let file = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == node)
        .map(|n| n["file"].as_str().unwrap().to_string())
        .unwrap();
    assert!(file.ends_with("base.qcow2"), "the export runs on {file}");
    // The modes say what the daemon now writes: the base is RW (written), and the old top,
    // still built on it, is flagged.
    let tree = imgchain_json(&["tree", "--json", arg(d)], 0);
    let node = |name: &str| {
        tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["path"].as_str().unwrap().ends_with(name))
            .cloned()
            .unwrap()
    };
    let (base_node, top_node) = (node("/base.qcow2"), node("/top.qcow2"));
    assert_eq!(base_node["mode"], "rw", "{base_node}");
    assert_eq!(base_node["in_use"]["write"], true, "{base_node}");
    let kinds: Vec<&str> = top_node["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"backing-written"), "{top_node}");
    guest_io(d, "write -P 0x44 3M 64k");
    drop(vm);
    let base = d.join("base.qcow2");
    for read in [
        "read -P 0x11 0 1M",
        "read -P 0x22 1M 1M",
        "read -P 0x33 2M 512k",
        "read -P 0x44 3M 64k",
    ] {
        let out = run(Command::new("qemu-io").args(["-c", read]).arg(&base));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed"),
            "{read}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    qemu_check(&base);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img)),
    ignore = "needs qemu-storage-daemon, qemu-img"
)]
fn a_live_commit_without_a_qmp_socket_or_a_holder_is_refused() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let top = arg(&d.join("top.qcow2")).to_string();
    refused_in(
        d,
        &["commit", "--live", &top],
        2,
        &["not in use", "without --live"],
    );
    let _vm = hold_with_storage_daemon(&d.join("top.qcow2"));
    refused_in(
        d,
        &["commit", "--live", &top],
        12,
        &["no QMP socket", "-qmp unix:"],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn a_cancelled_live_commit_leaves_the_daemon_on_the_old_chain() {
    let tmp = tempdir();
    let d = tmp.path();
    sized_base_and_top(d, "2G");
    qemu_io(&d.join("top.qcow2"), "write -P 0x22 0 256M");
    let vm = hold_with_qmp_daemon(d);
    // 16 MiB/s: the job runs for 16 s, so Ctrl-C lands in the copy.
    let (child, _err) = live_commit_copying(d, "16M");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("Cancelled"), "{text}");
    let exports = qmp(d, "query-block-exports");
    assert_eq!(exports[0]["node-name"], "top", "still on the old chain");
    drop(vm);
    let out = run(Command::new("qemu-io")
        .args(["-c", "read -P 0x22 0 256M"])
        .arg(d.join("top.qcow2")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("verification failed"));
    qemu_check(&d.join("base.qcow2"));
}

/// Each `(pattern offset length)` reads back from `image`.
fn reads(image: &Path, patterns: &[&str]) {
    for read in patterns {
        let out = run(Command::new("qemu-io")
            .args(["-c", &format!("read -P {read}")])
            .arg(image));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("verification failed"),
            "{read} in {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The file of the node the daemon's export serves.
fn exported_file(dir: &Path) -> String {
    let exports = qmp(dir, "query-block-exports");
    let nodes = qmp(dir, "query-named-block-nodes");
    let node = exports[0]["node-name"].as_str().unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == node)
        .map(file_of)
        .unwrap()
}

/// A node's file, also when QEMU names it `json:{...}` (a node added without its backing).
fn file_of(n: &Value) -> String {
    let f = n["file"].as_str().unwrap();
    match f.strip_prefix("json:") {
        Some(j) => serde_json::from_str::<Value>(j).unwrap()["file"]["filename"]
            .as_str()
            .unwrap()
            .to_string(),
        None => f.to_string(),
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn a_live_merge_commits_the_middle_layer_and_re_points_the_top() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "base.qcow2", "qcow2", "16M", None, &[]);
    create(
        d,
        "mid.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    create(
        d,
        "top.qcow2",
        "qcow2",
        "16M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
    qemu_io(&d.join("mid.qcow2"), "write -P 0x22 1M 1M");
    qemu_io(&d.join("top.qcow2"), "write -P 0x33 2M 512k");
    let vm = hold_with_qmp_daemon(d);
    guest_io(d, "write -P 0x44 3M 64k");
    let mid = d.join("mid.qcow2");
    // Offline, the middle layer of a running chain is refused, with the hint.
    let out = imgchain(&["merge", "--yes", arg(&mid)]);
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--live"));
    let v = imgchain_json(&["merge", "--live", "--json", arg(&mid)], 0);
    assert_documented(&v, "live --json");
    assert_eq!(v["completed"], true, "{v}");
    assert_eq!(v["operation"], "merge");
    assert_eq!(v["overlay"], arg(&d.join("top.qcow2")));
    assert_eq!(v["backing_name"], "base.qcow2");
    // The daemon no longer runs through the middle layer and let go of it: it can be
    // deleted while the VM runs.
    let files: Vec<String> = qmp(d, "query-named-block-nodes")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["file"].as_str().unwrap().to_string())
        .collect();
    assert!(!files.iter().any(|f| f.ends_with("mid.qcow2")), "{files:?}");
    imgchain_ok(&["delete", "--yes", arg(&mid)]);
    guest_io(d, "write -P 0x55 4M 64k");
    drop(vm);
    let top = d.join("top.qcow2");
    assert_eq!(
        backing_of(&top),
        ("base.qcow2".to_string(), "qcow2".to_string())
    );
    reads(
        &top,
        &[
            "0x11 0 1M",
            "0x22 1M 1M",
            "0x33 2M 512k",
            "0x44 3M 64k",
            "0x55 4M 64k",
        ],
    );
    reads(&d.join("base.qcow2"), &["0x22 1M 1M"]);
    qemu_check(&d.join("base.qcow2"));
    qemu_check(&top);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn a_live_snapshot_moves_the_guest_onto_the_new_overlay() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
    let vm = hold_with_qmp_daemon(d);
    guest_io(d, "write -P 0x33 2M 512k");
    let top = d.join("top.qcow2");
    let out = imgchain(&["snapshot", arg(&top)]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "offline, a VM's disk is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--live"));
    let v = imgchain_json(&["snapshot", "--live", "--json", arg(&top)], 0);
    assert_documented(&v, "live --json");
    assert_eq!(v["completed"], true, "{v}");
    let new = d.join("top.1.qcow2");
    assert_eq!(v["target"], arg(&new));
    assert!(exported_file(d).ends_with("top.1.qcow2"));
    // The new overlay is locked by the daemon now, and the forest shows it in use.
    let t = tree(d, &[]);
    assert_eq!(node(&t, d, "top.1.qcow2")["in_use"]["write"], true, "{t:?}");
    guest_io(d, "write -P 0x44 3M 64k");
    drop(vm);
    assert_eq!(
        backing_of(&new),
        ("top.qcow2".to_string(), "qcow2".to_string())
    );
    reads(&new, &["0x11 0 1M", "0x33 2M 512k", "0x44 3M 64k"]);
    // What the guest wrote after the switch is only in the new overlay.
    reads(&top, &["0x33 2M 512k", "0x11 3M 64k"]);
    qemu_check(&new);
    qemu_check(&top);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img)),
    ignore = "needs qemu-storage-daemon, qemu-img"
)]
fn a_live_snapshot_whose_name_is_taken_changes_nothing() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let _vm = hold_with_qmp_daemon(d);
    std::fs::write(d.join("taken.qcow2"), b"mine").unwrap();
    refused_in(
        d,
        &[
            "snapshot",
            "--live",
            arg(&d.join("top.qcow2")),
            arg(&d.join("taken.qcow2")),
        ],
        2,
        &["exists already"],
    );
    assert!(exported_file(d).ends_with("top.qcow2"));
    assert_eq!(std::fs::read(d.join("taken.qcow2")).unwrap(), b"mine");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn a_live_snapshot_can_be_committed_back_live() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let vm = hold_with_qmp_daemon(d);
    let (top, new) = (d.join("top.qcow2"), d.join("top.1.qcow2"));
    imgchain_ok(&["snapshot", "--live", arg(&top)]);
    guest_io(d, "write -P 0x66 1M 64k");
    // QEMU names the overlay's node by options (`json:{...}`); it is still found.
    let v = imgchain_json(&["commit", "--live", "--json", arg(&new)], 0);
    assert_eq!(v["pivoted"], true, "{v}");
    assert!(exported_file(d).ends_with("top.qcow2"));
    drop(vm);
    reads(&top, &["0x66 1M 64k"]);
    qemu_check(&top);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-storage-daemon, qemu-img, qemu-io"
)]
fn what_the_guest_writes_during_a_live_commit_ends_up_in_the_base() {
    let tmp = tempdir();
    let d = tmp.path();
    sized_base_and_top(d, "1G");
    qemu_io(&d.join("top.qcow2"), "write -P 0x22 0 128M");
    let vm = hold_with_qmp_daemon(d);
    // 32 MiB/s: the job runs for about 4 s, and the guest writes while it copies.
    let (child, mut err) = live_commit_copying(d, "32M");
    // Over data the job has not copied yet, and beyond what the top held.
    guest_io(d, "write -P 0x33 64M 1M");
    guest_io(d, "write -P 0x44 512M 1M");
    let drained = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).ok();
    });
    let out = child.wait_with_output().unwrap();
    drained.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(exported_file(d).ends_with("base.qcow2"));
    drop(vm);
    let base = d.join("base.qcow2");
    reads(
        &base,
        &["0x22 0 64M", "0x33 64M 1M", "0x22 65M 63M", "0x44 512M 1M"],
    );
    qemu_check(&base);
}
