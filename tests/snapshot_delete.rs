//! `imgchain snapshot` against `qemu-img create -b -F` on identical copies, and `imgchain
//! delete` with each of its guards: exit code, message, and nothing changed on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

/// `qemu-img info` fields that must agree between our overlay and qemu-img's.
fn info_of(path: &Path) -> (String, String, u64, u64, String) {
    let v = qemu_info(path);
    (
        v["backing-filename"].as_str().unwrap_or("").to_string(),
        v["backing-filename-format"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["virtual-size"].as_u64().unwrap(),
        v["cluster-size"].as_u64().unwrap(),
        v["format"].as_str().unwrap().to_string(),
    )
}

/// A base of each kind with data, snapshotted by us and by qemu-img into the same directory
/// (relative backing name) and into another one (absolute name).
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn snapshot_equals_qemu_img_create() {
    for (fmt, opts) in [
        ("qcow2", &[][..]),
        ("qcow2", &["-o", "compat=0.10"][..]),
        ("qcow2", &["-o", "cluster_size=4096"][..]),
        ("raw", &[][..]),
    ] {
        let tmp = tempdir();
        let d = tmp.path();
        let name = format!("base.{}", if fmt == "raw" { "img" } else { "qcow2" });
        let base = create(d, &name, fmt, "32M", None, opts);
        qemu_io_fmt(&base, fmt, "write -P 0x5a 1M 3M");
        let before = std::fs::read(&base).unwrap();
        std::fs::create_dir(d.join("vms")).unwrap();
        for (ours, theirs, backing) in [
            ("ours.qcow2", "theirs.qcow2", name.clone()),
            ("vms/ours.qcow2", "vms/theirs.qcow2", arg(&base).to_string()),
        ] {
            imgchain_ok(&["snapshot", arg(&base), arg(&d.join(ours))]);
            create(d, theirs, "qcow2", "32M", Some((&backing, fmt)), &[]);
            let (o, t) = (d.join(ours), d.join(theirs));
            assert_eq!(info_of(&o), info_of(&t), "{fmt} {opts:?} {ours}");
            assert_eq!(info_of(&o).0, backing);
            qemu_check(&o);
            qemu_compare(&o, &t);
            qemu_compare(&o, &base);
        }
        assert_eq!(
            before,
            std::fs::read(&base).unwrap(),
            "the base is never written"
        );
        let tree = tree(d, &[]);
        assert_eq!(node(&tree, d, &name)["mode"], "ro", "a backing image now");
        assert_eq!(node(&tree, d, "ours.qcow2")["mode"], "rw");
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn snapshot_names_its_overlays_and_stacks_them() {
    let tmp = tempdir();
    let d = tmp.path();
    let disk = create(d, "disk.qcow2", "qcow2", "16M", None, &[]);
    qemu_io(&disk, "write -P 0x01 0 64k");
    let v = imgchain_json(&["snapshot", "--json", arg(&disk)], 0);
    assert_eq!(v["new"], arg(&d.join("disk.1.qcow2")));
    assert_eq!(v["backing"]["name"], "disk.qcow2");
    assert_eq!(v["backing"]["format"], "qcow2");
    assert_eq!(v["cluster_size"], 65536);
    // A chain of depth 5, each layer with its own data.
    let mut top = d.join("disk.1.qcow2");
    for i in 2..=5u8 {
        qemu_io(&top, &format!("write -P {i} {}k 64k", u32::from(i) * 64));
        imgchain_ok(&["snapshot", arg(&top)]);
        top = d.join(format!("disk.{i}.qcow2"));
        assert!(top.exists(), "{} made", top.display());
    }
    assert_eq!(info_of(&top).0, "disk.4.qcow2");
    qemu_check(&top);
    // Its guest view is the whole chain's, as qemu-img's own overlay of disk.4 sees it.
    create(
        d,
        "theirs.qcow2",
        "qcow2",
        "16M",
        Some(("disk.4.qcow2", "qcow2")),
        &[],
    );
    qemu_compare(&top, &d.join("theirs.qcow2"));
    // The configured cluster size is used.
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, "[snapshot]\ncluster_size = \"4KiB\"\n").unwrap();
    imgchain_ok(&[
        "--config",
        arg(&cfg),
        "snapshot",
        arg(&disk),
        arg(&d.join("small.qcow2")),
    ]);
    assert_eq!(info_of(&d.join("small.qcow2")).3, 4096);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn snapshot_guards_change_nothing() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let top = d.join("top.qcow2");
    refused_in(
        d,
        &["snapshot", arg(&top), arg(&d.join("base.qcow2"))],
        2,
        &["exists already"],
    );
    {
        let _vm = hold_with_qemu_io(&top);
        refused_in(d, &["snapshot", arg(&top)], 12, &["write"]);
    }
    // A VM reading the image as its backing file does not stop a snapshot of it.
    {
        let _vm = hold_with_qemu_io(&top);
        imgchain_ok(&[
            "snapshot",
            arg(&d.join("base.qcow2")),
            arg(&d.join("b2.qcow2")),
        ]);
    }
    std::fs::remove_file(d.join("b2.qcow2")).unwrap();
    std::fs::rename(d.join("base.qcow2"), d.join("moved.qcow2")).unwrap();
    refused_in(d, &["snapshot", arg(&top)], 1, &["repair it first"]);
    refused_in(
        d,
        &["snapshot", arg(&d.join("nothing.qcow2"))],
        1,
        &["nothing.qcow2"],
    );
}

/// base <- mid <- {a, b}, and base <- other: a forest to delete parts of.
fn forest(d: &Path) {
    create(d, "base.qcow2", "qcow2", "16M", None, &[]);
    for (n, b) in [
        ("mid.qcow2", "base.qcow2"),
        ("a.qcow2", "mid.qcow2"),
        ("b.qcow2", "mid.qcow2"),
        ("other.qcow2", "base.qcow2"),
    ] {
        create(d, n, "qcow2", "16M", Some((b, "qcow2")), &[]);
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn delete_refuses_what_others_need_and_changes_nothing() {
    let tmp = tempdir();
    let d = tmp.path();
    forest(d);
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    refused_in(
        d,
        &["delete", "--yes", &p("mid.qcow2")],
        13,
        &["a.qcow2", "b.qcow2", "--with-overlays"],
    );
    refused_in(
        d,
        &[
            "--protect",
            "b.qcow2",
            "delete",
            "--yes",
            "--with-overlays",
            &p("mid.qcow2"),
        ],
        11,
        &["b.qcow2"],
    );
    {
        let _vm = hold_with_qemu_io(&d.join("a.qcow2"));
        refused_in(
            d,
            &["delete", "--yes", "--with-overlays", &p("mid.qcow2")],
            12,
            &["a.qcow2"],
        );
    }
    {
        // Held by a reader only, it is still in use.
        let mut cmd = std::process::Command::new("qemu-io");
        cmd.args(["-r", "-c", "sleep 60000"]).arg(d.join("b.qcow2"));
        let _reader = hold(cmd, &d.join("b.qcow2"));
        refused_in(
            d,
            &["delete", "--yes", &p("b.qcow2")],
            12,
            &["b.qcow2", "consistent read"],
        );
    }
    std::os::unix::fs::symlink("mid.qcow2", d.join("link.qcow2")).unwrap();
    refused_in(
        d,
        &["delete", "--yes", &p("link.qcow2")],
        2,
        &["symlink", "mid.qcow2"],
    );
    refused_in(
        d,
        &["delete", "--yes", &p("missing.qcow2")],
        1,
        &["missing.qcow2"],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn delete_removes_leaves_first_and_only_the_subtree() {
    let tmp = tempdir();
    let d = tmp.path();
    forest(d);
    std::os::unix::fs::symlink("b.qcow2", d.join("b-link.qcow2")).unwrap();
    let out = imgchain_ok(&[
        "delete",
        "--yes",
        "--dry-run",
        "--with-overlays",
        arg(&d.join("mid.qcow2")),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Would move into the trash"));
    assert!(d.join("mid.qcow2").exists(), "a dry run deletes nothing");
    let v = imgchain_json(
        &[
            "delete",
            "--yes",
            "--json",
            "--with-overlays",
            arg(&d.join("mid.qcow2")),
        ],
        0,
    );
    let deleted: Vec<&str> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 3);
    assert_eq!(
        deleted[2],
        arg(&d.join("mid.qcow2")),
        "the backing file last"
    );
    assert_eq!(v["dangling_aliases"][0], arg(&d.join("b-link.qcow2")));
    for gone in ["mid.qcow2", "a.qcow2", "b.qcow2"] {
        assert!(!d.join(gone).exists(), "{gone} deleted");
    }
    qemu_check(&d.join("other.qcow2"));
    let tree = tree(d, &[]);
    assert_eq!(
        node(&tree, d, "base.qcow2")["overlays"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A top with nothing on it goes alone, leaving its base a top again.
    imgchain_ok(&["delete", "--yes", arg(&d.join("other.qcow2"))]);
    let tree = common::tree(d, &[]);
    assert_eq!(node(&tree, d, "base.qcow2")["mode"], "rw");
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("imgchain") || n == ".imgchain-trash"),
        "no temporary file left: {names:?}"
    );
}
