//! Images built on a target are found wherever they live before a write could change what
//! they read (ARCHITECTURE.md §3, "Dependents"): beside the target's directory, in another
//! pool, deeper in the tree, on a stopped libvirt VM's disk, open in a running QEMU, on another
//! host's libvirt; and every plan says where it looked.

mod common;

use std::path::{Path, PathBuf};

use common::{arg, create, imgchain, imgchain_json, qemu_compare, qemu_io, refused_in, tempdir};

/// `templates/golden.qcow2` under `root`, with data.
fn golden(root: &Path) -> PathBuf {
    let g = create(root, "templates/golden.qcow2", "qcow2", "16M", None, &[]);
    qemu_io(&g, "write -P 0x11 0 2M");
    g
}

/// An overlay `name` (relative to `root`) of `backing`, named by its absolute path.
fn overlay(root: &Path, name: &str, backing: &Path) -> PathBuf {
    let o = create(
        root,
        name,
        "qcow2",
        "16M",
        Some((arg(backing), "qcow2")),
        &[],
    );
    qemu_io(&o, "write -P 0x22 4M 1M");
    o
}

/// A configuration file in `dir` with `scan` keys.
fn config(dir: &Path, scan: &str) -> PathBuf {
    let f = dir.join("config.toml");
    std::fs::write(&f, format!("[scan]\n{scan}\n")).expect("write config");
    f
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn golden_images_beside_their_vms_directory_are_never_deleted_or_written() {
    let t = tempdir();
    let r = t.path();
    let g = golden(r);
    let vm1 = overlay(r, "vms/vm1.qcow2", &g);
    overlay(r, "vms/vm2.qcow2", &g);
    refused_in(
        r,
        &["delete", "--yes", arg(&g)],
        13,
        &["vm1.qcow2", "vm2.qcow2", "around"],
    );
    refused_in(r, &["delete", "--dry-run", arg(&g)], 13, &["vm2.qcow2"]);
    refused_in(r, &["commit", arg(&vm1)], 13, &["vm2.qcow2"]);
    // Two pools beside the templates.
    let a1 = overlay(r, "pool-a/a1.qcow2", &g);
    overlay(r, "pool-b/b1.qcow2", &g);
    refused_in(
        r,
        &["commit", arg(&a1)],
        13,
        &["pool-b/b1.qcow2", "vms/vm1.qcow2"],
    );
    // The plans say where they looked, in JSON too.
    let v = imgchain_json(&["commit", "--force", "--dry-run", "--json", arg(&a1)], 0);
    let searched = v["searched"].as_array().expect("searched");
    assert!(
        searched
            .iter()
            .any(|s| s["kind"] == "around" && !s["found"].as_array().expect("found").is_empty()),
        "{v}"
    );
    let v = imgchain_json(&["delete", "--dry-run", "--json", arg(&a1)], 0);
    assert!(
        !v["searched"].as_array().expect("searched").is_empty(),
        "{v}"
    );
    let out = imgchain(&["delete", "--dry-run", arg(&a1)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Looked for other images built on this chain in"),
        "{text}"
    );
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn an_overlay_deeper_in_the_tree_is_re_pointed_by_a_merge() {
    let t = tempdir();
    let r = t.path();
    let base = create(r, "vm/base.qcow2", "qcow2", "16M", None, &[]);
    qemu_io(&base, "write -P 0x11 0 2M");
    let mid = create(
        r,
        "vm/mid.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&mid, "write -P 0x33 1M 2M");
    let top = create(
        r,
        "vm/top.qcow2",
        "qcow2",
        "16M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    let deep = create(
        r,
        "deep/x/other.qcow2",
        "qcow2",
        "16M",
        Some(("../../vm/mid.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&deep, "write -P 0x22 4M 1M");
    let before = tempdir();
    common::copy_dir(r, before.path());
    let v = imgchain_json(&["merge", "--dry-run", "--json", arg(&mid)], 0);
    assert!(
        v["would"].as_str().expect("would").contains("other.qcow2"),
        "{v}"
    );
    let out = imgchain(&["merge", "--yes", arg(&mid)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!mid.exists());
    // The relative name stays relative, spelled from where the overlay named the layer.
    assert_eq!(common::backing_of(&deep).0, "../../vm/base.qcow2");
    assert_eq!(common::backing_of(&top).0, "base.qcow2");
    for (now, was) in [(&deep, "deep/x/other.qcow2"), (&top, "vm/top.qcow2")] {
        common::qemu_check(now);
        qemu_compare(now, &before.path().join(was));
    }
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_stopped_libvirt_vm_elsewhere_keeps_its_base() {
    let (t, elsewhere, defs) = (tempdir(), tempdir(), tempdir());
    let g = golden(t.path());
    let disk = overlay(elsewhere.path(), "web03.qcow2", &g);
    std::fs::write(
        defs.path().join("web03.xml"),
        format!(
            "<domain type='kvm'><name>web03</name><devices><disk type='file' device='disk'>\
             <source file='{}'/><target dev='vda'/></disk></devices></domain>",
            arg(&disk)
        ),
    )
    .expect("write definition");
    let cfg = config(
        defs.path(),
        &format!("libvirt_domains = [\"{}\"]", arg(defs.path())),
    );
    refused_in(
        t.path(),
        &["--config", arg(&cfg), "delete", "--yes", arg(&g)],
        13,
        &["web03.qcow2"],
    );
    let v = imgchain_json(
        &["--config", arg(&cfg), "delete", "--yes", "--json", arg(&g)],
        13,
    );
    let text = v["searched"].to_string();
    assert!(
        text.contains("libvirt-domain") && text.contains("web03"),
        "{v}"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_storage_daemon)),
    ignore = "needs qemu-img, qemu-storage-daemon"
)]
fn an_image_a_running_qemu_has_open_elsewhere_keeps_its_base() {
    let (t, elsewhere) = (tempdir(), tempdir());
    let g = golden(t.path());
    let disk = overlay(elsewhere.path(), "running.qcow2", &g);
    let held = common::hold_with_storage_daemon(&disk);
    refused_in(
        t.path(),
        &["delete", "--yes", arg(&g)],
        13,
        &["running.qcow2", "qemu open files"],
    );
    drop(held);
}

#[test]
#[cfg_attr(not(all(tool_qemu_img, tool_virsh)), ignore = "needs qemu-img, virsh")]
fn another_host_s_vm_through_libvirt_keeps_its_base() {
    let (t, elsewhere, host) = (tempdir(), tempdir(), tempdir());
    let g = golden(t.path());
    let disk = overlay(elsewhere.path(), "remote.qcow2", &g);
    let node = host.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            "<node><domain type='test'><name>remote-vm</name><memory>1048576</memory>\
             <os><type>hvm</type></os><devices><disk type='file' device='disk'>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain></node>",
            arg(&disk)
        ),
    )
    .expect("write node");
    let uri = format!("test://{}", arg(&node));
    let cfg = config(host.path(), &format!("libvirt_uris = [\"{uri}\"]"));
    refused_in(
        t.path(),
        &["--config", arg(&cfg), "delete", "--yes", arg(&g)],
        13,
        &["remote.qcow2", "remote-vm"],
    );
    // A host that cannot be reached refuses, naming it, unless the user accepts that.
    let gone = config(
        elsewhere.path(),
        "libvirt_uris = [\"test:///nonexistent/node.xml\"]",
    );
    refused_in(
        t.path(),
        &["--config", arg(&gone), "delete", "--yes", arg(&g)],
        1,
        &["test:///nonexistent/node.xml", "--skip-unreachable"],
    );
    let v = imgchain_json(
        &[
            "--config",
            arg(&gone),
            "--skip-unreachable",
            "delete",
            "--yes",
            "--dry-run",
            "--json",
            arg(&g),
        ],
        0,
    );
    assert!(v["searched"].to_string().contains("skipped"), "{v}");
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_base_only_a_header_leads_to_is_named_as_outside_everything_looked_at() {
    let (t, elsewhere) = (tempdir(), tempdir());
    let base = create(elsewhere.path(), "base.qcow2", "qcow2", "4M", None, &[]);
    let top = overlay(t.path(), "vm/top.qcow2", &base);
    let v = imgchain_json(&["commit", "--dry-run", "--json", arg(&top)], 0);
    assert_eq!(v["outside"], serde_json::json!([arg(&base)]), "{v}");
    let out = imgchain(&["commit", "--dry-run", arg(&top)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Outside everything imgchain was pointed at"),
        "{text}"
    );
    // Beside the image (or under a path the user names), it is not.
    let v = imgchain_json(
        &[
            "commit",
            "--dry-run",
            "--json",
            "--scan",
            arg(elsewhere.path()),
            arg(&top),
        ],
        0,
    );
    assert_eq!(v["outside"], serde_json::json!([]), "{v}");
}
