//! Live operations on a real libvirt VM: a transient TCG domain (no guest OS; the firmware
//! runs) on a qcow2 chain, started by the system libvirt daemon. imgchain asks libvirt
//! through virsh and never opens the domain's monitor: snapshot, merge of the layer that
//! became the middle one, delete of the dropped layer, and commit with the pivot, after which
//! the base holds every pattern and checks clean.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const URI: &str = "qemu:///system";

/// `virsh -c qemu:///system ARGS`: its output, or a failed test.
fn virsh(args: &[&str]) -> String {
    let out = run(Command::new("virsh").args(["-q", "-c", URI]).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a libvirt daemon with the QEMU driver answers; required under CI.
fn have_libvirt() -> bool {
    if !have("virsh") || !have("qemu-system-x86_64") {
        return false;
    }
    let up = Command::new("virsh")
        .args(["-c", URI, "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("IMGCHAIN_REQUIRE_QEMU").is_ok_and(|v| v == "1");
    assert!(
        up || !required,
        "libvirtd is required (CI or IMGCHAIN_REQUIRE_QEMU=1) but `virsh -c {URI} version` fails"
    );
    up
}

/// A transient domain, destroyed however the test ends.
struct Domain(String);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-q", "-c", URI, "destroy", &self.0])
            .output();
    }
}

/// Starts a TCG domain named `name` whose one disk is `disk` (a qcow2 image).
fn start(dir: &Path, name: &str, disk: &Path) -> Domain {
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        disk.display()
    );
    let file = dir.join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    virsh(&["create", file.to_str().unwrap()]);
    Domain(name.to_string())
}

/// The disk's source as libvirt runs it.
fn source(name: &str) -> String {
    virsh(&["domblklist", name])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
#[cfg_attr(
    not(all(tool_virsh, tool_qemu_system_x86_64, tool_qemu_img, tool_qemu_io)),
    ignore = "needs virsh, qemu-system-x86_64, qemu-img, qemu-io"
)]
fn a_libvirt_vm_snapshots_merges_and_commits_live_through_virsh() {
    if !have_libvirt() {
        return;
    }
    let tmp = tempdir();
    let d = tmp.path();
    // libvirt's QEMU runs as its own user: it must reach the directory.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    base_and_top(d);
    let (base, top, new) = (
        d.join("base.qcow2"),
        d.join("top.qcow2"),
        d.join("top.1.qcow2"),
    );
    qemu_io(&base, "write -P 0x11 0 4M");
    qemu_io(&top, "write -P 0x22 1M 1M");
    let name = format!("imgchain-test-{}", std::process::id());
    let _vm = start(d, &name, &top);

    // The owner is the libvirt domain, and without --live a write is refused.
    let t = tree(d, &[]);
    let n = node(&t, d, "top.qcow2");
    assert_eq!(n["in_use"]["vm"], name.as_str(), "{n}");
    assert_eq!(n["in_use"]["owner"]["kind"], "libvirt", "{n}");
    assert!(
        n["in_use"]["owner"]["qmp"].is_null(),
        "libvirt's monitor is never offered"
    );
    let out = imgchain(&["commit", arg(&top)]);
    assert_eq!(out.status.code(), Some(12));

    let v = imgchain_json(&["snapshot", "--live", "--json", arg(&top)], 0);
    assert_eq!(v["completed"], true, "{v}");
    assert_eq!(v["libvirt"]["domain"], name.as_str());
    assert_eq!(source(&name), arg(&new));
    assert_eq!(backing_of(&new), ("top.qcow2".into(), "qcow2".into()));

    // top.qcow2 is the middle layer now: merged, and the new overlay keeps a relative name.
    let v = imgchain_json(&["merge", "--live", "--json", arg(&top)], 0);
    assert_eq!(v["completed"], true, "{v}");
    assert_eq!(backing_of(&new), ("base.qcow2".into(), "qcow2".into()));
    // Nothing runs on it any more: it can go while the VM runs.
    imgchain_ok(&["delete", "--yes", arg(&top)]);

    let v = imgchain_json(&["commit", "--live", "--json", arg(&new)], 0);
    assert_eq!(v["pivoted"], true, "{v}");
    assert_eq!(source(&name), arg(&base));
    drop(_vm);
    let out = run(Command::new("qemu-io")
        .args(["-c", "read -P 0x11 0 1M", "-c", "read -P 0x22 1M 1M"])
        .arg(&base));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    qemu_check(&base);
}

/// A persistent domain, undefined with its snapshot metadata however the test ends.
struct Defined(String);

impl Drop for Defined {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args([
                "-q",
                "-c",
                URI,
                "undefine",
                "--snapshots-metadata",
                "--checkpoints-metadata",
                &self.0,
            ])
            .output();
    }
}

#[test]
#[cfg_attr(
    not(all(tool_virsh, tool_qemu_system_x86_64, tool_qemu_img, tool_qemu_io)),
    ignore = "needs virsh, qemu-system-x86_64, qemu-img, qemu-io"
)]
fn a_layer_libvirt_snapshot_metadata_records_is_merged_through_libvirt() {
    if !have_libvirt() {
        return;
    }
    let tmp = tempdir();
    let d = tmp.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let base = d.join("base.qcow2");
    create(d, "base.qcow2", "qcow2", "64M", None, &[]);
    let name = format!("imgchain-snap-{}", std::process::id());
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        base.display()
    );
    std::fs::write(d.join("domain.xml"), xml).unwrap();
    virsh(&["define", d.join("domain.xml").to_str().unwrap()]);
    let _vm = Defined(name.clone());
    for s in ["s1", "s2"] {
        virsh(&["snapshot-create-as", "--domain", &name, s, "--disk-only"]);
    }
    let (s1, s2) = (d.join("base.s1"), d.join("base.s2"));
    qemu_io(&s1, "write -P 0x33 0 1M");
    let info = imgchain_json(&["info", "--json", arg(&s1)], 0);
    let roles: Vec<(String, String)> = info["libvirt_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["snapshot"].as_str().unwrap().into(),
                r["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("s1".into(), "overlay".into()),
            ("s2".into(), "state".into())
        ]
    );
    // What would leave libvirt's metadata wrong is refused, naming the snapshot and command.
    let before = snapshot(d);
    for args in [vec!["flatten", arg(&s2)], vec!["commit", arg(&s2)]] {
        let out = imgchain(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(13), "{args:?}: {said}");
        assert!(
            said.contains("snapshot-delete --domain") && said.contains("s2"),
            "{said}"
        );
    }
    assert_eq!(before, snapshot(d), "refusals change nothing");
    // The merge of the layer s1 created is libvirt's own snapshot-delete.
    let out = imgchain_ok(&["merge", "--yes", arg(&s1)]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("libvirt merged") && said.contains("\"s1\""),
        "{said}"
    );
    assert!(!s1.exists());
    assert_eq!(
        virsh(&["snapshot-list", "--domain", &name, "--name"]).trim(),
        "s2"
    );
    assert_eq!(backing_of(&s2).0, base.to_str().unwrap());
    run(Command::new("qemu-io")
        .args(["-r", "-U", "-c", "read -P 0x33 0 1M"])
        .arg(&s2));
    qemu_check(&base);
}

#[test]
#[cfg_attr(
    not(all(tool_virsh, tool_qemu_system_x86_64, tool_qemu_img, tool_qemu_io)),
    ignore = "needs virsh, qemu-system-x86_64, qemu-img, qemu-io"
)]
fn a_checkpoint_s_bitmap_is_shown_and_stays_valid_through_a_commit() {
    if !have_libvirt() {
        return;
    }
    let tmp = tempdir();
    let d = tmp.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    base_and_top(d);
    let (base, top) = (d.join("base.qcow2"), d.join("top.qcow2"));
    qemu_io(&base, "write -P 0x11 0 4M");
    let name = format!("imgchain-ckpt-{}", std::process::id());
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        top.display()
    );
    std::fs::write(d.join("domain.xml"), xml).unwrap();
    virsh(&["define", d.join("domain.xml").to_str().unwrap()]);
    let _defined = Defined(name.clone());
    virsh(&["start", &name]);
    let running = Domain(name.clone());
    virsh(&["checkpoint-create-as", "--domain", &name, "c1"]);
    virsh(&["destroy", &name]);
    drop(running);
    qemu_io(&top, "write -P 0x22 1M 1M");
    let info = imgchain_json(&["info", "--json", arg(&top)], 0);
    assert_eq!(info["checkpoints"][0]["checkpoint"], "c1", "{info}");
    assert_eq!(info["bitmaps"][0]["name"], "c1", "{info}");
    let text = String::from_utf8_lossy(&imgchain_ok(&["info", arg(&top)]).stdout).to_string();
    assert!(text.contains("(libvirt checkpoint \"c1\" of"), "{text}");
    let dirty = info["bitmaps"][0]["count"].as_u64().unwrap();
    imgchain_ok(&["commit", arg(&top)]);
    let after = imgchain_json(&["info", "--json", arg(&top)], 0);
    assert_eq!(after["bitmaps"][0]["name"], "c1");
    assert_eq!(after["bitmaps"][0]["recording"], true);
    assert_eq!(
        after["bitmaps"][0]["count"].as_u64(),
        Some(dirty),
        "the top's disk did not change"
    );
    assert!(virsh(&["checkpoint-list", "--domain", &name, "--name"]).contains("c1"));
    qemu_check(&top);
    qemu_check(&base);
}
