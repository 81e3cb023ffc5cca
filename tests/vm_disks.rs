//! Stopped libvirt VMs: the domain definitions under `scan.libvirt_domains` label the images
//! they name as disks (tree, info, JSON), and deleting or merging away such a disk is refused
//! unless `--force`, with nothing changed on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A config that reads domain definitions from `DIR/defs` only; returns its path.
fn config(dir: &Path) -> PathBuf {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!("[scan]\nlibvirt_domains = [\"{}\"]\n", defs.display()),
    )
    .unwrap();
    file
}

/// Defines domain `name` in `DIR/defs` with `disk` as vda.
fn define(dir: &Path, name: &str, disk: &Path) {
    std::fs::write(
        dir.join("defs").join(format!("{name}.xml")),
        format!(
            "<domain type='kvm'>\n  <name>{name}</name>\n  <devices>\n    <disk type='file' \
             device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source \
             file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n\
             </domain>\n",
            disk.display()
        ),
    )
    .unwrap();
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_stopped_vm_s_disk_is_labelled_and_not_deleted_without_force() {
    let tmp = tempdir();
    let d = tmp.path().join("images");
    std::fs::create_dir(&d).unwrap();
    base_and_top(&d);
    let cfg = config(tmp.path());
    let top = d.join("top.qcow2");
    define(tmp.path(), "web03", &top);
    std::fs::write(tmp.path().join("defs/broken.xml"), "<domain><name>x").unwrap();
    let c = arg(&cfg);

    let t = tree(&d, &["--config", c]);
    let n = node(&t, &d, "top.qcow2");
    assert_eq!(n["vm_disks"][0]["domain"], "web03", "{n}");
    assert_eq!(n["vm_disks"][0]["target"], "vda");
    assert!(n["in_use"].is_null());
    assert_eq!(
        node(&t, &d, "base.qcow2")["vm_disks"],
        serde_json::json!([])
    );

    let out = imgchain_ok(&["--config", c, "tree", arg(&d)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("disk vda of web03 (libvirt, not running on it)"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.xml"),
        "the unreadable definition is told: {err}"
    );
    let out = imgchain_ok(&["--config", c, "info", arg(&top)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("vda of libvirt VM web03"));

    refused_in(
        &d,
        &["--config", c, "delete", "--yes", arg(&top)],
        13,
        &[
            "disk vda of the libvirt VM web03",
            "virsh detach-disk --domain web03 vda --config",
        ],
    );
    imgchain_ok(&["--config", c, "delete", "--yes", "--force", arg(&top)]);
    assert!(!top.exists());
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn merging_away_a_vm_s_disk_is_refused_without_force() {
    let tmp = tempdir();
    let d = tmp.path().join("images");
    std::fs::create_dir(&d).unwrap();
    create(&d, "base.qcow2", "qcow2", "16M", None, &[]);
    create(
        &d,
        "mid.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    create(
        &d,
        "top.qcow2",
        "qcow2",
        "16M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    let cfg = config(tmp.path());
    // A VM defined on the middle layer: merging it away would leave that VM without its disk.
    define(tmp.path(), "old-vm", &d.join("mid.qcow2"));
    let (c, mid) = (arg(&cfg).to_string(), d.join("mid.qcow2"));
    refused_in(
        &d,
        &["--config", &c, "merge", "--yes", arg(&mid)],
        13,
        &["old-vm"],
    );
    // The UI's key past other overlays of the base never lifts this guard.
    let scope = imgchain::ops::scope::Scope {
        dirs: Vec::new(),
        scan: imgchain::forest::ScanOptions {
            libvirt_domains: vec![tmp.path().join("defs")],
            ..Default::default()
        },
        protect: imgchain::forest::Protect::new(false, &[] as &[String]).unwrap(),
        settings: Default::default(),
    };
    let ask = imgchain::ops::Ask::Merge(imgchain::ops::merge::Ask {
        image: mid.clone(),
        force: true,
        amend: false,
    });
    assert!(
        matches!(
            imgchain::ops::plan(&ask, &scope),
            Err(imgchain::ops::Refusal::VmDisk { .. })
        ),
        "a forced merge from the UI still refuses a VM's disk"
    );
    // Keeping the file keeps the VM's disk: allowed.
    imgchain_ok(&["--config", &c, "merge", "--yes", "--keep", arg(&mid)]);
    assert!(mid.exists());
}

/// A domain whose snapshot metadata (under `scan.libvirt_snapshots`) mixes internal and
/// external snapshots: its disk carries a `mixed-snapshots` problem; the layer an external
/// snapshot created is named in `tree` and refused for a delete, naming the snapshot.
#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn snapshot_metadata_labels_layers_and_flags_mixed_snapshots() {
    let tmp = tempdir();
    let d = tmp.path().join("imgs");
    std::fs::create_dir(&d).unwrap();
    base_and_top(&d);
    let (base, top) = (d.join("base.qcow2"), d.join("top.qcow2"));
    let cfg = config(tmp.path());
    let snaps = tmp.path().join("snap");
    std::fs::create_dir_all(snaps.join("web01")).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("libvirt_snapshots = [\"{}\"]\n", snaps.display()));
    std::fs::write(&cfg, text).unwrap();
    define(tmp.path(), "web01", &top);
    let record = |name: &str, disks: &str| {
        format!(
            "<domainsnapshot><name>{name}</name><disks>{disks}</disks><domain type='kvm'>\
             <name>web01</name><devices><disk type='file' device='disk'><source file='{}'/>\
             <target dev='vda'/></disk></devices></domain></domainsnapshot>",
            base.display()
        )
    };
    let external = format!(
        "<disk name='vda' snapshot='external' type='file'><source file='{}'/></disk>",
        top.display()
    );
    std::fs::write(snaps.join("web01/s1.xml"), record("s1", &external)).unwrap();
    std::fs::write(
        snaps.join("web01/i1.xml"),
        record("i1", "<disk name='vda' snapshot='internal'/>"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let t = tree(&d, &["--config", c]);
    let top_node = node(&t, &d, "top.qcow2");
    assert_eq!(top_node["libvirt_snapshots"][0]["snapshot"], "s1");
    assert_eq!(top_node["libvirt_snapshots"][0]["role"], "overlay");
    assert_eq!(
        node(&t, &d, "base.qcow2")["libvirt_snapshots"][0]["role"],
        "state"
    );
    assert!(
        top_node["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "mixed-snapshots"),
        "{top_node}"
    );
    let text =
        String::from_utf8_lossy(&imgchain_ok(&["--config", c, "tree", arg(&d)]).stdout).to_string();
    assert!(text.contains("snapshot \"s1\" of web01"), "{text}");
    let before = snapshot(&d);
    let out = imgchain(&["--config", c, "delete", "--yes", "--force", arg(&top)]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "{said}");
    assert!(
        said.contains("snapshot-delete --domain web01 --snapshotname s1"),
        "{said}"
    );
    assert_eq!(before, snapshot(&d));
}
