//! Commit guards and refusals: each has its exit code and message, and changes nothing on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `base_and_top` with data in both.
fn chain(dir: &Path) {
    Chain::new(dir, "16M")
        .base("base.qcow2")
        .io("write -P 0x11 0 1M")
        .on("top.qcow2")
        .io("write -P 0x22 0 512k");
}

/// Runs `args` (with the top path appended) through `runner`; asserts the exit code, that
/// stderr contains every needle, and that nothing under `dir` changed.
fn refused(dir: &Path, runner: fn(&[&str]) -> Output, args: &[&str], code: i32, needles: &[&str]) {
    let before = snapshot(dir);
    let out = runner(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: wanted {n:?} in: {err}");
    }
    assert!(
        before == snapshot(dir),
        "{args:?} changed something on disk"
    );
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn guards_in_order() {
    let tmp = tempdir();
    let d = tmp.path();
    chain(d);
    let (top, base) = (p(d, "top.qcow2"), p(d, "base.qcow2"));

    // 10: nothing to commit into.
    refused(
        d,
        imgchain,
        &["commit", &base],
        10,
        &["has no backing file"],
    );
    // 11: keep-RO, requested on the base, inherited from the top, everything read-only.
    refused(
        d,
        imgchain,
        &["--protect", "base.qcow2", "commit", &top],
        11,
        &["keep-RO, requested"],
    );
    refused(
        d,
        imgchain,
        &["--protect", "top.qcow2", "commit", &top],
        11,
        &[
            "keep-RO, inherited",
            "its overlay",
            "top.qcow2 is protected",
        ],
    );
    refused(
        d,
        imgchain,
        &["--read-only", "commit", &top],
        11,
        &["keep-RO"],
    );
    // 2: -b names something outside the chain.
    refused(
        d,
        imgchain,
        &["commit", "-b", &top, &top],
        2,
        &["is not in the backing chain"],
    );

    // 13: a shared base, unless --force.
    create(
        d,
        "other.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    refused(
        d,
        imgchain,
        &["commit", &top],
        13,
        &["other overlays", "other.qcow2", "--force"],
    );
    imgchain_ok(&["commit", "--force", &top]);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn in_use_by_qemu() {
    let tmp = tempdir();
    let d = tmp.path();
    chain(d);
    let top = p(d, "top.qcow2");
    {
        let held = hold_with_qemu_io(&d.join("top.qcow2"));
        let pid = format!("pid {}", held.pid());
        refused(
            d,
            imgchain,
            &["commit", &top],
            12,
            &["Failed to get", &pid, "Shut the VM"],
        );
        refused(
            d,
            imgchain,
            &["commit", "-d", &top],
            12,
            &["Failed to get shared \"write\" lock", &pid],
        );
    }
    {
        // A reader of the base alone (qemu-io -r) still refuses writers.
        let mut cmd = Command::new("qemu-io");
        cmd.args(["-r", "-c", "sleep 60000"])
            .arg(d.join("base.qcow2"));
        let held = hold(cmd, &d.join("base.qcow2"));
        let pid = format!("pid {}", held.pid());
        refused(
            d,
            imgchain,
            &["commit", &top],
            12,
            &["Failed to get \"write\" lock", &pid],
        );
    }
    // Once they are gone the commit goes through.
    imgchain_ok(&["commit", &top]);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_missing_backing_file_is_a_clear_error() {
    let tmp = tempdir();
    let d = tmp.path();
    create(
        d,
        "top.qcow2",
        "qcow2",
        "16M",
        Some(("gone.qcow2", "qcow2")),
        &["-u"],
    );
    refused(
        d,
        imgchain,
        &["commit", &p(d, "top.qcow2")],
        1,
        &["does not exist", "qemu-img rebase"],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_setpriv, as_root)),
    ignore = "needs qemu-img, qemu-io, setpriv, root"
)]
fn a_base_that_is_not_writable_is_keep_ro() {
    let tmp = tempdir();
    let d = tmp.path();
    chain(d);
    use std::os::unix::fs::PermissionsExt;
    // Writable by its owner, another user, but not by the user imgchain runs as.
    std::fs::set_permissions(d.join("base.qcow2"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(d.join("base.qcow2"), Some(65534), None).unwrap();
    refused(
        d,
        imgchain_unprivileged,
        &["commit", &p(d, "top.qcow2")],
        11,
        &["keep-RO, not-writable"],
    );
    // Marked read-only by its mode (as Proxmox marks bases): kept so even for root.
    std::fs::set_permissions(d.join("base.qcow2"), std::fs::Permissions::from_mode(0o444)).unwrap();
    for runner in [imgchain, imgchain_unprivileged] {
        refused(
            d,
            runner,
            &["commit", &p(d, "top.qcow2")],
            11,
            &["keep-RO, file-mode", "chmod u+w"],
        );
    }
    let v = imgchain_json(&["info", "--json", &p(d, "base.qcow2")], 0);
    assert_eq!(v["mode"], "keep-ro", "{v}");
    assert_eq!(v["keep_ro_reason"], "file-mode", "{v}");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn features_imago_cannot_write_are_refused() {
    type Setup = fn(&Path);
    let cases: [(&str, Setup, &[&str]); 6] = [
        (
            "backing format mismatch",
            |d| {
                chain(d);
                rebase_unsafe(&d.join("top.qcow2"), "base.qcow2", "raw");
            },
            &["says backing file", "is raw, but it is qcow2"],
        ),
        (
            "no backing format",
            |d| {
                chain(d);
                drop_backing_format(&d.join("top.qcow2"));
            },
            &["not its format", "qemu-img rebase -u -F qcow2"],
        ),
        (
            "LUKS encryption",
            |d| {
                create(d, "base.qcow2", "qcow2", "16M", None, &[]);
                create(
                    d,
                    "top.qcow2",
                    "qcow2",
                    "16M",
                    Some(("base.qcow2", "qcow2")),
                    &[
                        "--object",
                        "secret,id=sec0,data=imgchain",
                        "-o",
                        "encrypt.format=luks,encrypt.key-secret=sec0",
                    ],
                );
            },
            &["LUKS encryption", "qemu-img can do this"],
        ),
        (
            "dirty",
            |d| {
                chain(d);
                patch(&d.join("top.qcow2"), 79, &[1]);
            },
            &["dirty bit", "qemu-img check -r all"],
        ),
        (
            "corrupt",
            |d| {
                chain(d);
                patch(&d.join("base.qcow2"), 79, &[2]);
            },
            &["corrupt"],
        ),
        (
            "bitmaps in a base that would grow",
            |d| {
                create(d, "base.qcow2", "qcow2", "16M", None, &[]);
                run(Command::new("qemu-img")
                    .args(["bitmap", "--add"])
                    .arg(d.join("base.qcow2"))
                    .arg("b0"));
                create(
                    d,
                    "top.qcow2",
                    "qcow2",
                    "32M",
                    Some(("base.qcow2", "qcow2")),
                    &[],
                );
            },
            &["persistent dirty bitmaps", "qemu-img resize"],
        ),
    ];
    for (name, setup, needles) in cases {
        let tmp = tempdir();
        let d = tmp.path();
        setup(d);
        eprintln!("case {name}");
        refused(d, imgchain, &["commit", &p(d, "top.qcow2")], 16, needles);
    }
}
