//! `imgchain commit` against `qemu-img commit` on identical copies of the same chain.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn is_qcow2(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|d| d.starts_with(b"QFI\xfb"))
}

/// Builds the chain with `setup` in one directory, copies it, commits `top` with imgchain in
/// one copy and with qemu-img in the other (same `-d`/`-b`), and compares.
fn against_qemu(setup: impl Fn(&Path), top: &str, base: &str, args: &[&str]) {
    let twins = twins(setup);
    let (ours, theirs) = (twins.ours.as_path(), twins.theirs.as_path());
    let top_map_before = qemu_map(&ours.join(top));

    let t = ours.join(top);
    let mut a: Vec<&str> = vec!["commit", "--json"];
    a.extend_from_slice(args);
    // qemu-img changes the images in between silently; imgchain wants --force for that.
    if args.contains(&"-b") {
        a.push("--force");
    }
    a.push(t.to_str().unwrap());
    let out = imgchain(&a);
    assert_eq!(
        out.status.code(),
        Some(0),
        "imgchain {a:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["copy"]["ok"], true);
    assert_eq!(outcome["reopen"]["base_mode"], "ro");

    let mut q = Command::new("qemu-img");
    q.current_dir(theirs)
        .args(["commit", "-q"])
        .args(args)
        .arg(top);
    run(&mut q);

    let (b_ours, b_theirs) = (ours.join(base), theirs.join(base));
    run(Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&b_ours)
        .arg(&b_theirs));
    assert_eq!(
        qemu_info(&b_ours)["virtual-size"],
        qemu_info(&b_theirs)["virtual-size"]
    );
    if is_qcow2(&b_ours) {
        qemu_check(&b_ours);
    }
    qemu_check(&t);
    // The top reads the same as qemu-img's.
    run(Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&t)
        .arg(theirs.join(top)));
    let keep = args.contains(&"-d") || args.contains(&"-b");
    let top_map = qemu_map(&t);
    if keep {
        assert_eq!(top_map, top_map_before, "the top keeps its data");
        assert_eq!(outcome["top_state"], "kept");
    } else {
        assert_eq!(outcome["top_state"], "emptied");
        for e in top_map.as_array().unwrap() {
            assert_ne!(e["depth"], 0, "the top still allocates {e}");
        }
    }
}

fn base_with_data(dir: &Path, fmt: &str, size: &str, opts: &[&str]) {
    let name = if fmt == "raw" {
        "base.img"
    } else {
        "base.qcow2"
    };
    create(dir, name, fmt, size, None, opts);
    qemu_io_fmt(&dir.join(name), fmt, "write -P 0x11 0 4M");
    qemu_io_fmt(&dir.join(name), fmt, "write -P 0x12 8M 1M");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn qcow2_base_default_and_keep() {
    let setup = |d: &Path| {
        base_with_data(d, "qcow2", "64M", &[]);
        create(
            d,
            "top.qcow2",
            "qcow2",
            "64M",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        let t = d.join("top.qcow2");
        qemu_io(&t, "write -P 0x21 1M 2M");
        qemu_io(&t, "write -P 0x22 7M 3M");
        qemu_io(&t, "write -z 8M 64k");
        qemu_io(&t, "write -P 0x23 40M 1M");
    };
    against_qemu(setup, "top.qcow2", "base.qcow2", &[]);
    against_qemu(setup, "top.qcow2", "base.qcow2", &["-d"]);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn raw_base() {
    against_qemu(
        |d| {
            base_with_data(d, "raw", "32M", &[]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "32M",
                Some(("base.img", "raw")),
                &[],
            );
            let t = d.join("top.qcow2");
            qemu_io(&t, "write -P 0x31 512 3k");
            qemu_io(&t, "write -z 2M 2M");
            qemu_io(&t, "write -P 0x32 30M 2M");
        },
        "top.qcow2",
        "base.img",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn cluster_sizes_and_unaligned_writes() {
    for (top_cs, base_cs) in [("4k", "64k"), ("64k", "4k"), ("2M", "64k"), ("64k", "2M")] {
        against_qemu(
            |d| {
                base_with_data(
                    d,
                    "qcow2",
                    "48M",
                    &["-o", &format!("cluster_size={base_cs}")],
                );
                create(
                    d,
                    "top.qcow2",
                    "qcow2",
                    "48M",
                    Some(("base.qcow2", "qcow2")),
                    &["-o", &format!("cluster_size={top_cs}")],
                );
                let t = d.join("top.qcow2");
                qemu_io(&t, "write -P 0x41 1000 5000");
                qemu_io(&t, "write -P 0x42 3M 100k");
                qemu_io(&t, "write -z 3500k 17k");
                qemu_io(&t, "write -P 0x43 47M 513");
            },
            "top.qcow2",
            "base.qcow2",
            &[],
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn zero_writes_and_discards_over_base_data() {
    against_qemu(
        |d| {
            base_with_data(d, "qcow2", "32M", &[]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "32M",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            let t = d.join("top.qcow2");
            qemu_io(&t, "write -z 0 1M");
            qemu_io(&t, "write -z -u 2M 1M");
            qemu_io(&t, "write -P 0x51 8M 1M");
            qemu_io(&t, "discard 8M 512k");
            qemu_io(&t, "discard 3M 1M");
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn compressed_clusters_in_the_top() {
    against_qemu(
        |d| {
            base_with_data(d, "qcow2", "16M", &[]);
            // A full image that differs from the base, converted to a compressed overlay.
            create(d, "full.qcow2", "qcow2", "16M", None, &[]);
            let f = d.join("full.qcow2");
            qemu_io(&f, "write -P 0x11 0 4M");
            qemu_io(&f, "write -P 0x61 1M 2M");
            qemu_io(&f, "write -P 0x62 12M 1M");
            run(Command::new("qemu-img")
                .current_dir(d)
                .args([
                    "convert",
                    "-c",
                    "-O",
                    "qcow2",
                    "-B",
                    "base.qcow2",
                    "-F",
                    "qcow2",
                ])
                .args(["full.qcow2", "top.qcow2"]));
            std::fs::remove_file(f).unwrap();
            let m = qemu_map(&d.join("top.qcow2"));
            assert!(
                m.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["compressed"] == true),
                "the fixture has compressed clusters: {m}"
            );
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn zero_clusters_into_a_v2_base() {
    // A v3 top can hold zero clusters; a v2 base cannot, so the zeroes must be written.
    for with_root in [false, true] {
        against_qemu(
            |d| {
                let backing = if with_root {
                    create(d, "root.qcow2", "qcow2", "16M", None, &[]);
                    qemu_io(&d.join("root.qcow2"), "write -P 0xaa 0 16M");
                    Some(("root.qcow2", "qcow2"))
                } else {
                    None
                };
                create(
                    d,
                    "base.qcow2",
                    "qcow2",
                    "16M",
                    backing,
                    &["-o", "compat=0.10"],
                );
                qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
                create(
                    d,
                    "top.qcow2",
                    "qcow2",
                    "16M",
                    Some(("base.qcow2", "qcow2")),
                    &[],
                );
                let t = d.join("top.qcow2");
                qemu_io(&t, "write -z 1M 1M");
                qemu_io(&t, "write -z 8M 2M");
                qemu_io(&t, "write -P 0x22 12M 64k");
            },
            "top.qcow2",
            "base.qcow2",
            &[],
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn qcow2_v2_top_and_base() {
    against_qemu(
        |d| {
            base_with_data(d, "qcow2", "16M", &["-o", "compat=0.10"]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "16M",
                Some(("base.qcow2", "qcow2")),
                &["-o", "compat=0.10"],
            );
            let t = d.join("top.qcow2");
            qemu_io(&t, "write -P 0x71 0 1M");
            qemu_io(&t, "write -z 9M 1M");
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_smaller_base_grows() {
    for fmt in ["qcow2", "raw"] {
        let base = if fmt == "raw" {
            "base.img"
        } else {
            "base.qcow2"
        };
        against_qemu(
            |d| {
                base_with_data(d, fmt, "16M", &[]);
                create(d, "top.qcow2", "qcow2", "64M", Some((base, fmt)), &[]);
                let t = d.join("top.qcow2");
                qemu_io(&t, "write -P 0x81 1M 1M");
                qemu_io(&t, "write -P 0x82 40M 1M");
            },
            "top.qcow2",
            base,
            &[],
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn commit_with_b_across_a_four_deep_chain() {
    let setup = |d: &Path| {
        base_with_data(d, "qcow2", "32M", &[]);
        create(
            d,
            "m1.qcow2",
            "qcow2",
            "32M",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        create(
            d,
            "m2.qcow2",
            "qcow2",
            "32M",
            Some(("m1.qcow2", "qcow2")),
            &[],
        );
        create(
            d,
            "top.qcow2",
            "qcow2",
            "32M",
            Some(("m2.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&d.join("m1.qcow2"), "write -P 0x91 0 2M");
        qemu_io(&d.join("m1.qcow2"), "write -z 8M 512k");
        qemu_io(&d.join("m2.qcow2"), "write -P 0x92 1M 2M");
        qemu_io(&d.join("top.qcow2"), "write -P 0x93 1536k 1M");
        qemu_io(&d.join("top.qcow2"), "write -P 0x94 20M 1M");
    };
    // Without --force, -b refuses: the images in between would read differently.
    let tmp = tempdir();
    setup(tmp.path());
    let before = snapshot(tmp.path());
    let top = tmp.path().join("top.qcow2");
    let v = imgchain_json(
        &[
            "commit",
            "--json",
            "-b",
            "base.qcow2",
            top.to_str().unwrap(),
        ],
        13,
    );
    let msg = v["message"].as_str().unwrap_or_default().to_string() + &v.to_string();
    assert!(msg.contains("m1.qcow2") && msg.contains("m2.qcow2"), "{v}");
    assert_eq!(before, snapshot(tmp.path()), "a refusal changes nothing");
    against_qemu(setup, "top.qcow2", "base.qcow2", &["-b", "base.qcow2"]);
    against_qemu(setup, "top.qcow2", "m1.qcow2", &["-b", "m1.qcow2"]);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn an_empty_top() {
    against_qemu(
        |d| {
            base_with_data(d, "qcow2", "16M", &[]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "16M",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_one_gib_top_with_scattered_data() {
    against_qemu(
        |d| {
            base_with_data(d, "qcow2", "1G", &[]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "1G",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            let cmds: Vec<String> = (0..40u64)
                .map(|i| {
                    let off = (i * 25_165_829) % (1000 << 20);
                    let len = 4096 + (i * 77_777) % (900 << 10);
                    if i % 7 == 3 {
                        format!("write -z {off} {len}")
                    } else {
                        format!("write -P {} {off} {len}", 0x20 + i)
                    }
                })
                .collect();
            let mut q = Command::new("qemu-io");
            for c in &cmds {
                q.args(["-c", c]);
            }
            run(q.arg(d.join("top.qcow2")));
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_base_with_its_own_backing_file_and_smaller_top_clusters() {
    // root (data everywhere) <- base (64 KiB clusters, a little data) <- top (4 KiB clusters):
    // a 4 KiB write committed into an unallocated 64 KiB base cluster must keep the other
    // 60 KiB reading from root, not zeroes.
    for (top_cs, root_fmt) in [("4k", "qcow2"), ("512", "raw"), ("64k", "qcow2")] {
        against_qemu(
            |d| {
                let root = if root_fmt == "raw" {
                    "root.img"
                } else {
                    "root.qcow2"
                };
                create(d, root, root_fmt, "16M", None, &[]);
                qemu_io_fmt(&d.join(root), root_fmt, "write -P 0xaa 0 16M");
                create(d, "base.qcow2", "qcow2", "16M", Some((root, root_fmt)), &[]);
                qemu_io(&d.join("base.qcow2"), "write -P 0xbb 1M 64k");
                create(
                    d,
                    "top.qcow2",
                    "qcow2",
                    "16M",
                    Some(("base.qcow2", "qcow2")),
                    &["-o", &format!("cluster_size={top_cs}")],
                );
                let t = d.join("top.qcow2");
                qemu_io(&t, "write -P 0xcc 8k 4k");
                qemu_io(&t, "write -z 2M 4k");
                qemu_io(&t, "write -P 0xdd 1028k 4k");
            },
            "top.qcow2",
            "base.qcow2",
            &[],
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_base_smaller_than_its_own_backing_grows_with_zeroes() {
    // root is 64 MiB of data; base shows only its first 16 MiB; the top is 64 MiB. After the
    // commit the base is 64 MiB and its grown part reads as zeroes, not as root's data.
    let setup = |d: &Path, compat: &str| {
        create(d, "root.qcow2", "qcow2", "64M", None, &[]);
        qemu_io(&d.join("root.qcow2"), "write -P 0xaa 0 64M");
        create(
            d,
            "base.qcow2",
            "qcow2",
            "16M",
            Some(("root.qcow2", "qcow2")),
            &["-o", &format!("compat={compat}")],
        );
        create(
            d,
            "top.qcow2",
            "qcow2",
            "64M",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&d.join("top.qcow2"), "write -P 0xcc 40M 1M");
    };
    against_qemu(|d| setup(d, "1.1"), "top.qcow2", "base.qcow2", &[]);
    // qemu-img commit refuses a v2 base here ("Operation not supported": it cannot zero the
    // grown area). imgchain refuses too, before writing: growing rewrites the header and the
    // L1 table, which a v2 image (no dirty bit) cannot survive a crash in; it names --amend.
    let tmp = tempdir();
    let d = tmp.path();
    setup(d, "0.10");
    let before = common::snapshot(d);
    let out = common::imgchain(&["commit", d.join("top.qcow2").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(16));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --amend"), "{err}");
    assert_eq!(before, common::snapshot(d), "nothing changed");
    // With --amend the base is upgraded first, then committed into as qemu-img does into a
    // base upgraded by hand.
    let out = imgchain_ok(&[
        "commit",
        "--amend",
        "--json",
        d.join("top.qcow2").to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["amended"], true);
    assert_eq!(
        qemu_info(&d.join("base.qcow2"))["format-specific"]["data"]["compat"],
        "1.1"
    );
    qemu_check(&d.join("base.qcow2"));
    let theirs = tempdir();
    setup(theirs.path(), "0.10");
    run(Command::new("qemu-img")
        .args(["amend", "-f", "qcow2", "-o", "compat=1.1"])
        .arg(theirs.path().join("base.qcow2")));
    run(Command::new("qemu-img")
        .arg("commit")
        .arg(theirs.path().join("top.qcow2")));
    qemu_compare(&d.join("top.qcow2"), &theirs.path().join("top.qcow2"));
    qemu_compare(&d.join("base.qcow2"), &theirs.path().join("base.qcow2"));
}

/// The `bitmaps` list of an image, as qemu-img info reports it.
fn bitmaps(path: &Path) -> Value {
    qemu_info(path)["format-specific"]["data"]["bitmaps"].clone()
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn persistent_bitmaps_are_never_silently_dropped() {
    let chain = |d: &Path, on: &str| {
        sized_base_and_top(d, "64M");
        qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
        qemu_io(&d.join("top.qcow2"), "write -P 0x22 1M 2M");
        run(Command::new("qemu-img")
            .args(["bitmap", "--add"])
            .arg(d.join(on))
            .arg("b0"));
    };
    // A bitmap in the top or in the base, with and without -d: the commit runs and every
    // bitmap is still there and valid (tests/bitmaps.rs compares their counts with qemu-img's).
    for on in ["top.qcow2", "base.qcow2"] {
        for extra in [&[][..], &["-d"][..]] {
            let tmp = tempdir();
            let d = tmp.path();
            chain(d, on);
            let top = d.join("top.qcow2");
            let mut args = vec!["commit"];
            args.extend_from_slice(extra);
            args.push(top.to_str().unwrap());
            imgchain_ok(&args);
            assert_eq!(bitmaps(&d.join(on))[0]["name"], "b0", "{on} {args:?}");
            qemu_check(&top);
            qemu_check(&d.join("base.qcow2"));
        }
    }
}

/// Bytes a file takes on disk.
fn on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn an_emptied_top_gives_its_space_back_like_qemu_img() {
    let setup = |d: &Path| {
        sized_base_and_top(d, "2G");
        let mut q = Command::new("qemu-io");
        for i in 0..32u64 {
            q.args(["-c", &format!("write -P {} {}M 4M", 0x30 + i, i * 60)]);
        }
        run(q.arg(d.join("top.qcow2")));
    };
    let (ours, theirs) = (tempdir(), tempdir());
    setup(ours.path());
    copy_dir(ours.path(), theirs.path());
    let before = on_disk(&ours.path().join("top.qcow2"));
    imgchain_ok(&["commit", ours.path().join("top.qcow2").to_str().unwrap()]);
    run(Command::new("qemu-img")
        .current_dir(theirs.path())
        .args(["commit", "-q", "top.qcow2"]));
    let (a, b) = (
        on_disk(&ours.path().join("top.qcow2")),
        on_disk(&theirs.path().join("top.qcow2")),
    );
    eprintln!("emptied top on disk: imgchain {a} bytes, qemu-img {b} bytes (before: {before})");
    assert!(before > 100 << 20);
    assert!(a.abs_diff(b) <= 1 << 20, "imgchain {a} vs qemu-img {b}");
    qemu_check(&ours.path().join("top.qcow2"));
    run(Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(ours.path().join("top.qcow2"))
        .arg(theirs.path().join("top.qcow2")));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_v2_base_that_would_need_a_new_refcount_block_is_refused_before_writing() {
    // 4 KiB clusters: one refcount block counts 8 MiB of file; 32 MiB of data needs more.
    let setup = |d: &Path| {
        create(
            d,
            "base.qcow2",
            "qcow2",
            "64M",
            None,
            &["-o", "compat=0.10,cluster_size=4k"],
        );
        create(
            d,
            "top.qcow2",
            "qcow2",
            "64M",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&d.join("top.qcow2"), "write -P 0x22 0 32M");
    };
    let tmp = tempdir();
    let d = tmp.path();
    setup(d);
    let before = snapshot(d);
    let out = imgchain(&["commit", d.join("top.qcow2").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{err}");
    assert!(
        err.contains("qemu-img amend -f qcow2 -o compat=1.1"),
        "{err}"
    );
    assert_eq!(before, snapshot(d), "nothing changed");
    // Converted as the message says, it commits like qemu-img.
    against_qemu(
        |d| {
            setup(d);
            run(Command::new("qemu-img")
                .args(["amend", "-f", "qcow2", "-o", "compat=1.1"])
                .arg(d.join("base.qcow2")));
        },
        "top.qcow2",
        "base.qcow2",
        &[],
    );
}

/// Internal snapshots of the base read as before; those of the emptied top read as after
/// `qemu-img commit` (they read the base where they have no data), and the emptied top's
/// shared clusters stay with its snapshot.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn internal_snapshots_of_base_and_top_are_kept() {
    let root = tempdir();
    let (ours, theirs) = (root.path().join("ours"), root.path().join("theirs"));
    std::fs::create_dir(&ours).unwrap();
    let base = create(&ours, "base.qcow2", "qcow2", "64M", None, &[]);
    qemu_io(&base, "write -P 0x11 0 8M");
    run(Command::new("qemu-img")
        .args(["snapshot", "-c", "S"])
        .arg(&base));
    qemu_io(&base, "write -P 0x12 2M 1M");
    let top = create(
        &ours,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&top, "write -P 0x33 1M 4M");
    qemu_io(&top, "write -P 0x34 40M 1M");
    run(Command::new("qemu-img")
        .args(["snapshot", "-c", "T"])
        .arg(&top));
    qemu_io(&top, "write -P 0x35 3M 64k");
    std::fs::create_dir(&theirs).unwrap();
    copy_dir(&ours, &theirs);
    let convert = |img: &Path, snap: &str, out: &Path| {
        run(Command::new("qemu-img")
            .args([
                "convert",
                "-U",
                "-l",
                &format!("snapshot.name={snap}"),
                "-O",
                "raw",
            ])
            .arg(img)
            .arg(out));
        std::fs::read(out).unwrap()
    };
    let s_before = convert(&base, "S", &root.path().join("s0.raw"));
    imgchain_ok(&["commit", top.to_str().unwrap()]);
    run(Command::new("qemu-img")
        .current_dir(&theirs)
        .args(["commit", "-q", "top.qcow2"]));
    for img in ["base.qcow2", "top.qcow2"] {
        qemu_check(&ours.join(img));
        run(Command::new("qemu-img")
            .arg("compare")
            .arg(ours.join(img))
            .arg(theirs.join(img)));
    }
    assert!(
        s_before == convert(&base, "S", &root.path().join("s1.raw")),
        "the base's snapshot reads as before"
    );
    assert!(
        convert(&top, "T", &root.path().join("t1.raw"))
            == convert(&theirs.join("top.qcow2"), "T", &root.path().join("t2.raw")),
        "the top's snapshot reads as after qemu-img commit"
    );
}
