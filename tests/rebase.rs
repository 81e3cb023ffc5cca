//! `imgchain rebase` and `imgchain flatten` against `qemu-img rebase` on identical copies of
//! each chain: the same guest view as before, `qemu-img check` clean, the same backing name
//! and format, and the same allocation (`qemu-img map`); and every guard with its exit code
//! and nothing changed on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// `qemu-img map` of `image` reduced to what it allocates itself (depth 0) and what it reads
/// from below. Where both chains read zeroes but differ, qemu-img writes zero data and we a
/// zero cluster: both are allocated in the image, so only that is compared.
fn map(image: &Path) -> Vec<Value> {
    let v: Vec<Value> = serde_json::from_value(qemu_map(image)).unwrap();
    let mut merged: Vec<Value> = Vec::new();
    for mut e in v {
        let o = e.as_object_mut().unwrap();
        for k in ["offset", "data", "zero", "compressed"] {
            o.remove(k);
        }
        let start = o.remove("start").unwrap().as_u64().unwrap();
        let len = o.remove("length").unwrap().as_u64().unwrap();
        if let Some(last) = merged.last_mut()
            && last["rest"] == serde_json::json!(o)
        {
            last["length"] = (last["length"].as_u64().unwrap() + len).into();
            continue;
        }
        merged.push(serde_json::json!({"start": start, "length": len, "rest": o}));
    }
    merged
}

/// base (0x11 at 0-8M) <- mid (0x22 at 4-12M, zeroes at 20M) <- top (0x33 at 10-11M, zeroes
/// at 0-64k), of `size`, with `opts` for every layer.
fn three(d: &Path, size: &str, opts: &[&str]) {
    common::base_and_mid(d, size, opts)
        .on("top.qcow2")
        .io("write -P 0x33 10M 1M")
        .io("write -z 0 64k");
}

/// Runs ours on one copy of the chain `build` makes and `qemu-img rebase QARGS IMAGE` on
/// another, then compares the image (and its overlays) across copies and with the original.
fn against_qemu(build: &dyn Fn(&Path), ours: &[&str], qemu: &[&str], image: &str) {
    let t = twins(build);
    let (orig, a, b) = (&t.orig, &t.ours, &t.theirs);
    let mut args: Vec<String> = ours.iter().map(|x| x.to_string()).collect();
    args.push(arg(&a.join(image)).to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    imgchain_ok(&args);
    run(Command::new("qemu-img")
        .current_dir(b)
        .arg("rebase")
        .args(qemu)
        .arg(image));
    let (x, y) = (a.join(image), b.join(image));
    qemu_check(&x);
    qemu_compare(&x, &y);
    qemu_compare(&x, &orig.join(image));
    assert_eq!(backing_of(&x), backing_of(&y), "{ours:?}");
    assert_eq!(
        map(&x),
        map(&y),
        "{ours:?}: allocation differs from qemu-img's"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn flatten_and_rebase_equal_qemu_img_rebase() {
    for (size, opts) in [
        ("64M", &[][..]),
        ("64M", &["-o", "cluster_size=4k"][..]),
        ("64M", &["-o", "compat=0.10"][..]),
        ("64M", &["-o", "cluster_size=2M"][..]),
    ] {
        let build = |d: &Path| three(d, size, opts);
        against_qemu(&build, &["flatten"], &["-b", ""], "top.qcow2");
        against_qemu(&build, &["flatten"], &["-b", ""], "mid.qcow2");
        against_qemu(
            &build,
            &["rebase", "-b", "base.qcow2"],
            &["-b", "base.qcow2", "-F", "qcow2"],
            "top.qcow2",
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn rebase_onto_unrelated_data_and_raw_bases() {
    // Another image with other data: what differs is copied, what agrees is not.
    let build = |d: &Path| {
        three(d, "64M", &[]);
        create(d, "other.qcow2", "qcow2", "64M", None, &[]);
        qemu_io(&d.join("other.qcow2"), "write -P 0x22 4M 4M");
        qemu_io(&d.join("other.qcow2"), "write -P 0x77 30M 2M");
    };
    against_qemu(
        &build,
        &["rebase", "-b", "other.qcow2"],
        &["-b", "other.qcow2", "-F", "qcow2"],
        "top.qcow2",
    );
    // A smaller new backing file: past its end the old chain's data is copied.
    let build = |d: &Path| {
        three(d, "64M", &[]);
        create(d, "small.qcow2", "qcow2", "16M", None, &[]);
        qemu_io(&d.join("small.qcow2"), "write -P 0x11 0 8M");
    };
    against_qemu(
        &build,
        &["rebase", "-b", "small.qcow2"],
        &["-b", "small.qcow2", "-F", "qcow2"],
        "top.qcow2",
    );
    // A raw base, flattened away and rebased onto.
    let build = |d: &Path| {
        create(d, "base.img", "raw", "32M", None, &[]);
        qemu_io_fmt(&d.join("base.img"), "raw", "write -P 0x44 1M 5M");
        create(
            d,
            "top.qcow2",
            "qcow2",
            "32M",
            Some(("base.img", "raw")),
            &[],
        );
        qemu_io(&d.join("top.qcow2"), "write -P 0x55 2M 1M");
        create(d, "copy.img", "raw", "32M", None, &[]);
        qemu_io_fmt(&d.join("copy.img"), "raw", "write -P 0x44 1M 2M");
    };
    against_qemu(&build, &["flatten"], &["-b", ""], "top.qcow2");
    against_qemu(
        &build,
        &["rebase", "-b", "copy.img", "-F", "raw"],
        &["-b", "copy.img", "-F", "raw"],
        "top.qcow2",
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn rebasing_a_middle_layer_keeps_its_overlays_disks() {
    let root = tempdir();
    let (d, orig) = (root.path().join("d"), root.path().join("orig"));
    std::fs::create_dir(&d).unwrap();
    std::fs::create_dir(&orig).unwrap();
    three(&d, "64M", &[]);
    create(
        &d,
        "top2.qcow2",
        "qcow2",
        "64M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    copy_dir(&d, &orig);
    imgchain_ok(&["flatten", arg(&d.join("mid.qcow2"))]);
    for img in ["mid.qcow2", "top.qcow2", "top2.qcow2"] {
        qemu_compare(&d.join(img), &orig.join(img));
        qemu_check(&d.join(img));
    }
    let t = tree(&d, &[]);
    assert_eq!(
        node(&t, &d, "base.qcow2")["overlays"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(node(&t, &d, "mid.qcow2")["backing"], Value::Null);
    assert_eq!(
        node(&t, &d, "mid.qcow2")["overlays"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The JSON outcome says what was compared and copied.
    let v = imgchain_json(
        &[
            "rebase",
            "--json",
            "-b",
            arg(&d.join("base.qcow2")),
            arg(&d.join("top.qcow2")),
        ],
        0,
    );
    assert_eq!(v["operation"], "rebase");
    assert_eq!(v["backing"]["name"], "base.qcow2");
    assert_eq!(v["relinked"], true);
    qemu_compare(&d.join("top.qcow2"), &orig.join("top.qcow2"));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn unsafe_rebase_names_a_moved_backing_file_as_qemu_img_does() {
    let root = tempdir();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        three(d, "64M", &[]);
        std::fs::create_dir(d.join("moved")).unwrap();
        for f in ["mid.qcow2", "base.qcow2"] {
            std::fs::rename(d.join(f), d.join("moved").join(f)).unwrap();
        }
    }
    let out = imgchain(&["check", arg(&a)]);
    assert_eq!(out.status.code(), Some(3), "the moved chain is reported");
    // A safe rebase cannot keep what the guest saw through a missing file: it says to use -u.
    let before = snapshot(&a);
    let out = imgchain(&[
        "rebase",
        "-b",
        arg(&a.join("moved/mid.qcow2")),
        arg(&a.join("top.qcow2")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-u"));
    assert!(before == snapshot(&a));
    imgchain_ok(&[
        "rebase",
        "-u",
        "-b",
        arg(&a.join("moved/mid.qcow2")),
        arg(&a.join("top.qcow2")),
    ]);
    rebase_unsafe(
        &b.join("top.qcow2"),
        arg(&b.join("moved/mid.qcow2")),
        "qcow2",
    );
    assert_eq!(backing_of(&a.join("top.qcow2")).1, "qcow2");
    assert_eq!(
        backing_of(&a.join("top.qcow2")).0,
        arg(&a.join("moved/mid.qcow2"))
    );
    qemu_check(&a.join("top.qcow2"));
    qemu_compare(&a.join("top.qcow2"), &b.join("top.qcow2"));
    // Byte for byte what qemu-img wrote, but for the one letter where the paths differ
    // ("/a/moved" and "/b/moved").
    let (x, y) = (
        std::fs::read(a.join("top.qcow2")).unwrap(),
        std::fs::read(b.join("top.qcow2")).unwrap(),
    );
    assert_eq!(x.len(), y.len());
    let differ: Vec<usize> = (0..x.len()).filter(|&i| x[i] != y[i]).collect();
    assert_eq!(
        differ.len(),
        1,
        "bytes that differ from qemu-img's: {differ:?}"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn rebase_guards_change_nothing() {
    let tmp = tempdir();
    let d = tmp.path();
    three(d, "64M", &[]);
    create(d, "small.qcow2", "qcow2", "32M", None, &[]);
    let p = |n: &str| arg(&d.join(n)).to_string();
    refused_in(
        d,
        &["flatten", &p("base.qcow2")],
        10,
        &["nothing to flatten"],
    );
    refused_in(
        d,
        &["rebase", "-b", &p("top.qcow2"), &p("top.qcow2")],
        2,
        &["itself"],
    );
    refused_in(
        d,
        &["rebase", "-b", &p("top.qcow2"), &p("mid.qcow2")],
        2,
        &["loop"],
    );
    refused_in(
        d,
        &[
            "rebase",
            "-b",
            &p("base.qcow2"),
            "-F",
            "raw",
            &p("top.qcow2"),
        ],
        2,
        &["-F"],
    );
    refused_in(
        d,
        &["rebase", "-u", "-b", &p("small.qcow2"), &p("top.qcow2")],
        2,
        &["virtual size"],
    );
    refused_in(
        d,
        &["rebase", "-b", &p("nothing.qcow2"), &p("top.qcow2")],
        2,
        &["does not exist"],
    );
    refused_in(d, &["rebase", "-b", "", &p("top.qcow2")], 2, &["flatten"]);
    refused_in(
        d,
        &["--protect", "top.qcow2", "flatten", &p("top.qcow2")],
        11,
        &["read-only"],
    );
    {
        let _vm = hold_with_qemu_io(&d.join("top.qcow2"));
        refused_in(d, &["flatten", &p("top.qcow2")], 12, &["write"]);
        // Its backing files are held by a reader: rebasing the middle onto base is refused.
        refused_in(
            d,
            &["rebase", "-b", &p("base.qcow2"), &p("mid.qcow2")],
            12,
            &["mid.qcow2"],
        );
    }
    let out = imgchain_ok(&["flatten", "--dry-run", &p("top.qcow2")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Would give"));
}

/// Bytes `image` allocates itself, data only, as `qemu-img map` reports them.
fn own_data(image: &Path) -> u64 {
    let v: Vec<Value> = serde_json::from_value(qemu_map(image)).unwrap();
    v.iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

/// The space a flatten or rebase dry run announces holds what the run then writes: at least
/// the data it adds to the image, and not much more.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn dry_run_space_bounds_what_flatten_and_rebase_write() {
    for (op, extra) in [("flatten", None), ("rebase", Some("base.qcow2"))] {
        let t = tempdir();
        let d = t.path();
        three(d, "32M", &[]);
        let top = d.join("top.qcow2");
        let mut args = vec![op, "--dry-run", "--json"];
        if let Some(b) = extra {
            args.extend(["-b", b]);
        }
        args.push(arg(&top));
        let plan = imgchain_json(&args, 0);
        let writes = plan["space_bytes"]["writes"].as_u64().unwrap();
        assert!(
            plan["space"].as_str().unwrap().contains("writes up to"),
            "{plan}"
        );
        let before = own_data(&top);
        args.retain(|a| *a != "--dry-run" && *a != "--json");
        imgchain_ok(&args);
        let added = own_data(&top) - before;
        assert!(added > 0, "{op} copied nothing");
        assert!(writes >= added, "{op}: announced {writes}, wrote {added}");
        assert!(
            writes <= added + (1 << 20),
            "{op}: announced {writes} for {added} written"
        );
    }
}
