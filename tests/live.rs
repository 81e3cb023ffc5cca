//! `imgchain commit --live` against a running qemu-storage-daemon (the VM): the daemon commits
//! its own top through QMP and pivots; every pattern written through its NBD export, before
//! and after, is in the base once it exits. A daemon without a QMP socket, or an image nobody
//! holds, is refused with the reason.

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
fn a_live_commit_is_done_by_the_daemon_and_loses_no_write() {
    if !have("qemu-storage-daemon") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
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
fn a_live_commit_without_a_qmp_socket_or_a_holder_is_refused() {
    if !have("qemu-storage-daemon") || !have("qemu-img") {
        return;
    }
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
fn a_cancelled_live_commit_leaves_the_daemon_on_the_old_chain() {
    if !have("qemu-storage-daemon") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let tmp = tempdir();
    let d = tmp.path();
    sized_base_and_top(d, "2G");
    qemu_io(&d.join("top.qcow2"), "write -P 0x22 0 1G");
    let vm = hold_with_qmp_daemon(d);
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .args(["commit", "--live", "-p", arg(&d.join("top.qcow2"))])
        .env("XDG_CONFIG_HOME", d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ctrl-C as soon as the job copies.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("[copy") {
        line.clear();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(0) {
        // The job finished before the signal landed: nothing to check about a cancel.
        eprintln!("the live commit finished before Ctrl-C: {text}");
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("Cancelled"), "{text}");
    let exports = qmp(d, "query-block-exports");
    assert_eq!(exports[0]["node-name"], "top", "still on the old chain");
    drop(vm);
    let out = run(Command::new("qemu-io")
        .args(["-c", "read -P 0x22 0 1G"])
        .arg(d.join("top.qcow2")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("verification failed"));
    qemu_check(&d.join("base.qcow2"));
}
