//! `imgchain clean`: each kind of reclaimable file in its group with its bytes, the kept ones
//! kept, a dry run that changes nothing, and freeing through the trash.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A config that reads domain definitions from `DIR/defs` only, with `top` as web's disk.
fn config(dir: &Path, top: &Path) -> PathBuf {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).expect("mkdir");
    std::fs::write(
        defs.join("web.xml"),
        format!(
            "<domain type='kvm'><name>web</name><devices><disk type='file' device='disk'>\
             <driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda'/></disk>\
             </devices></domain>",
            top.display()
        ),
    )
    .expect("define");
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!("[scan]\nlibvirt_domains = [\"{}\"]\n", defs.display()),
    )
    .expect("config");
    file
}

fn paths(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|i| i["path"].as_str().expect("path").to_string())
        .collect()
}

/// golden <- web (named by a VM), golden <- old-vm (named by none), golden-copy (a copy of
/// golden: unused, and its duplicate), lonely (an unused base), held (held by qemu-io), a
/// leftover temporary file.
fn host(root: &Path) -> (PathBuf, PathBuf) {
    let d = root.join("images");
    std::fs::create_dir(&d).expect("mkdir");
    create(&d, "golden.qcow2", "qcow2", "64M", None, &[]);
    qemu_io(&d.join("golden.qcow2"), "write -P 0x11 0 4M");
    for (top, pattern) in [("web.qcow2", 0x22), ("old-vm.qcow2", 0x23)] {
        create(
            &d,
            top,
            "qcow2",
            "64M",
            Some(("golden.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&d.join(top), &format!("write -P {pattern} 8M 2M"));
    }
    std::fs::copy(d.join("golden.qcow2"), d.join("golden-copy.qcow2")).expect("copy");
    create(&d, "lonely.qcow2", "qcow2", "32M", None, &[]);
    qemu_io(&d.join("lonely.qcow2"), "write -P 0x33 0 1M");
    create(&d, "held.qcow2", "qcow2", "16M", None, &[]);
    std::fs::write(
        d.join(".web.qcow2.999999.0.imgchain-tmp"),
        vec![7u8; 3 << 20],
    )
    .expect("leftover");
    // A leftover with an image's header.
    create(
        &d,
        ".old.qcow2.999998.imgchain-del",
        "qcow2",
        "16M",
        None,
        &[],
    );
    let cfg = config(root, &d.join("web.qcow2"));
    (d, cfg)
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn each_kind_lands_in_its_group_and_the_kept_ones_are_kept() {
    let t = tempdir();
    let (d, cfg) = host(t.path());
    let _held = hold_with_qemu_io(&d.join("held.qcow2"));
    let before = snapshot(&d);
    let v = imgchain_json(
        &[
            "--config",
            arg(&cfg),
            "clean",
            "--dry-run",
            "--json",
            arg(&d),
        ],
        0,
    );
    assert_documented(&v, "clean --json");
    assert_eq!(snapshot(&d), before, "a dry run changed something");
    let p = |s: &str| d.join(s).display().to_string();
    assert_eq!(
        paths(&v["leftovers"]),
        vec![
            p(".old.qcow2.999998.imgchain-del"),
            p(".web.qcow2.999999.0.imgchain-tmp")
        ]
    );
    assert!(v["leftovers"][1]["bytes"].as_u64() >= Some(3 << 20), "{v}");
    // Still an image of the forest (nothing built on anything is missed), with a note.
    let tree = tree(&d, &[]);
    let n = node(&tree, &d, ".old.qcow2.999998.imgchain-del");
    assert_eq!(n["problems"][0]["kind"], "leftover", "{n}");
    assert_eq!(
        paths(&v["unused_bases"]),
        vec![p("golden-copy.qcow2"), p("lonely.qcow2")],
        "{v}"
    );
    assert_eq!(paths(&v["unnamed_tops"]), vec![p("old-vm.qcow2")], "{v}");
    assert_eq!(v["tops_offered"], true);
    let dups = &v["duplicates"];
    assert_eq!(dups.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        paths(&dups[0]["images"]),
        vec![p("golden-copy.qcow2"), p("golden.qcow2")],
        "{v}"
    );
    // Freeing every group offered: all through the trash, the kept ones still there.
    let v = imgchain_json(
        &["--config", arg(&cfg), "clean", "--yes", "--json", arg(&d)],
        0,
    );
    for gone in [
        ".old.qcow2.999998.imgchain-del",
        ".web.qcow2.999999.0.imgchain-tmp",
        "golden-copy.qcow2",
        "lonely.qcow2",
        "old-vm.qcow2",
    ] {
        assert!(!d.join(gone).exists(), "{gone} was not freed: {v}");
    }
    for kept in ["golden.qcow2", "web.qcow2", "held.qcow2"] {
        assert!(d.join(kept).exists(), "{kept} was freed");
    }
    let listed = imgchain_json(&["trash", "list", "--json", arg(&d)], 0);
    assert_eq!(
        listed["entries"].as_array().map(Vec::len),
        Some(5),
        "{listed}"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn without_vm_definitions_no_top_is_offered_and_without_a_terminal_it_asks_for_yes() {
    let t = tempdir();
    let (d, _) = host(t.path());
    let v = imgchain_json(&["clean", "--dry-run", "--json", arg(&d)], 0);
    // The default config looks where this host keeps no definitions.
    if v["tops_offered"] == false {
        let out = imgchain_ok(&["clean", "--dry-run", arg(&d)]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("not offered"));
    }
    let before = snapshot(&d);
    let out = imgchain(&["clean", arg(&d)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(snapshot(&d), before);
}
