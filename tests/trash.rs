//! The trash: delete and merge move what they remove beside it, `trash restore` brings it back
//! byte for byte with its owner and mode, refused when the name is taken or what it was built
//! on changed; `trash empty` frees the space; a trash a tenant planted is never used.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

const NOBODY: u32 = 65534;

fn trash_list(d: &Path) -> serde_json::Value {
    imgchain_json(&["trash", "list", "--json", arg(d)], 0)
}

/// Bytes allocated under `dir`, as du counts them.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for (p, _) in snapshot(dir) {
        total += std::fs::symlink_metadata(&p).map_or(0, |m| m.blocks() * 512);
    }
    total
}

fn chain_with_data(d: &Path) {
    base_and_top(d);
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 2M");
    qemu_io(&d.join("top.qcow2"), "write -P 0x22 1M 4M");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_deleted_image_comes_back_byte_for_byte_with_its_owner_and_mode() {
    let t = tempdir();
    let d = t.path();
    chain_with_data(d);
    let top = d.join("top.qcow2");
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&top, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .expect("chmod");
    let before = std::fs::read(&top).expect("read");
    let md = std::fs::metadata(&top).expect("stat");
    let out = imgchain_ok(&["delete", "--yes", arg(&top)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("into the trash"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!top.exists());
    // The forest no longer shows it, and no trashed file shows as a broken image.
    let tree = imgchain_json(&["tree", "--json", arg(d)], 0);
    assert_eq!(tree["nodes"].as_array().map(Vec::len), Some(1), "{tree}");
    let listed = trash_list(d);
    assert_documented(&listed, "trash list --json");
    let entries = listed["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["operation"], "delete");
    assert_eq!(entries[0]["files"][0]["path"], arg(&top));
    let v = imgchain_json(&["trash", "restore", "--json", arg(&top)], 0);
    assert_documented(&v, "trash restore --json");
    assert_eq!(std::fs::read(&top).expect("restored"), before);
    let after = std::fs::metadata(&top).expect("stat");
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (md.uid(), md.gid(), md.mode())
    );
    qemu_check(&top);
    assert_eq!(trash_list(d)["entries"].as_array().map(Vec::len), Some(0));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_restore_is_refused_when_the_name_is_taken_or_the_base_changed() {
    let t = tempdir();
    let d = t.path();
    chain_with_data(d);
    let top = d.join("top.qcow2");
    imgchain_ok(&["delete", "--yes", arg(&top)]);
    std::fs::write(&top, b"someone else's file").expect("write");
    refused_in(
        d,
        &["trash", "restore", arg(&top)],
        1,
        &["exists", "move it away"],
    );
    assert_eq!(std::fs::read(&top).expect("read"), b"someone else's file");
    std::fs::remove_file(&top).expect("rm");
    // A write into the base since: the overlay would no longer read as it did.
    qemu_io(&d.join("base.qcow2"), "write -P 0x33 0 64k");
    refused_in(
        d,
        &["trash", "restore", arg(&top)],
        1,
        &["base.qcow2", "written since", "would not read as it did"],
    );
    assert!(!top.exists());
    assert_eq!(trash_list(d)["entries"].as_array().map(Vec::len), Some(1));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_subtree_comes_back_base_first() {
    let t = tempdir();
    let d = t.path();
    chain_with_data(d);
    let (base, top) = (d.join("base.qcow2"), d.join("top.qcow2"));
    let sums = (
        std::fs::read(&base).expect("base"),
        std::fs::read(&top).expect("top"),
    );
    imgchain_ok(&["delete", "--yes", "--with-overlays", arg(&base)]);
    assert!(!base.exists() && !top.exists());
    refused_in(
        d,
        &["trash", "restore", arg(&top)],
        1,
        &["restore it first"],
    );
    imgchain_ok(&["trash", "restore", arg(&base)]);
    imgchain_ok(&["trash", "restore", arg(&top)]);
    assert_eq!(
        (
            std::fs::read(&base).expect("base"),
            std::fs::read(&top).expect("top")
        ),
        sums
    );
    qemu_check(&top);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn emptying_the_trash_frees_the_space_and_purge_frees_at_once() {
    let t = tempdir();
    let d = t.path();
    chain_with_data(d);
    let top = d.join("top.qcow2");
    let dry = imgchain_json(&["delete", "--dry-run", "--json", arg(&top)], 0);
    assert_eq!(dry["space_bytes"]["frees"], 0, "{dry}");
    assert!(
        dry["space_bytes"]["trashed"].as_u64() >= Some(4 << 20),
        "{dry}"
    );
    imgchain_ok(&["delete", "--yes", arg(&top)]);
    let full = du(d);
    // The default keeps a week; nothing is that old.
    imgchain_ok(&["trash", "empty", "--yes", arg(d)]);
    assert_eq!(trash_list(d)["entries"].as_array().map(Vec::len), Some(1));
    // Without a terminal and without --yes it asks for --yes and removes nothing.
    let out = imgchain(&["trash", "empty", "--older-than", "0", arg(d)]);
    assert_eq!(out.status.code(), Some(2));
    let v = imgchain_json(
        &[
            "trash",
            "empty",
            "--older-than",
            "0",
            "--yes",
            "--json",
            arg(d),
        ],
        0,
    );
    assert_documented(&v, "trash empty --json");
    assert!(v["freed_bytes"].as_u64() >= Some(4 << 20), "{v}");
    assert!(du(d) + (4 << 20) <= full, "{} then {}", full, du(d));
    assert_eq!(trash_list(d)["entries"].as_array().map(Vec::len), Some(0));
    // --purge: gone at once, nothing in the trash.
    let base = d.join("base.qcow2");
    imgchain_ok(&["delete", "--yes", "--purge", arg(&base)]);
    assert!(!base.exists());
    assert_eq!(trash_list(d)["entries"].as_array().map(Vec::len), Some(0));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_merged_layer_goes_into_the_trash() {
    let t = tempdir();
    let d = t.path();
    Chain::new(d, "16M")
        .base("base.qcow2")
        .on("mid.qcow2")
        .on("top.qcow2");
    qemu_io(&d.join("mid.qcow2"), "write -P 0x44 0 1M");
    imgchain_ok(&["merge", "--yes", arg(&d.join("mid.qcow2"))]);
    let listed = trash_list(d);
    assert_eq!(listed["entries"][0]["operation"], "merge", "{listed}");
    assert_eq!(
        listed["entries"][0]["files"][0]["path"],
        arg(&d.join("mid.qcow2"))
    );
}

/// A trash directory imgchain did not make — a symlink, or one another user owns — is never
/// used: the delete fails naming it, and the image stays.
#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_planted_trash_is_never_used() {
    let t = tempdir();
    let d = t.path();
    base_and_top(d);
    let top = d.join("top.qcow2");
    let elsewhere = tempdir();
    std::os::unix::fs::symlink(elsewhere.path(), d.join(".imgchain-trash")).expect("symlink");
    let out = imgchain(&["delete", "--yes", arg(&top)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not imgchain's trash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(top.exists(), "the image moved through a planted symlink");
    assert_eq!(std::fs::read_dir(elsewhere.path()).expect("ls").count(), 0);
    if rustix::process::geteuid().is_root() {
        std::fs::remove_file(d.join(".imgchain-trash")).expect("rm");
        std::fs::create_dir(d.join(".imgchain-trash")).expect("mkdir");
        std::os::unix::fs::chown(d.join(".imgchain-trash"), Some(NOBODY), Some(NOBODY))
            .expect("chown");
        let out = imgchain(&["delete", "--yes", arg(&top)]);
        assert_ne!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to user 65534"));
        assert!(top.exists(), "the image moved into a tenant's directory");
    }
}
