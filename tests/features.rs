//! qcow2 features imago cannot read or write (extended L2 entries, also with 2 MiB clusters,
//! zstd compression, external data files): a commit (default, -d, -b) and a merge on any layer
//! equal the qemu-img sequence (compare, check, map); a snapshot and a header-only rebase
//! work; a delete never leaves a data file behind unmentioned.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// One image per feature, each with data written by qemu-io, on `base.qcow2` (but the raw
/// data file's, which QEMU allows no backing file).
fn featured(dir: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    Chain::new(dir, "64M").base("base.qcow2");
    // QEMU opens a relative data file name from its working directory: absolute names here.
    let raw = format!(
        "data_file={},data_file_raw=on",
        dir.join("data.raw").display()
    );
    let bin = format!("data_file={}", dir.join("data2.bin").display());
    let cases: [(&str, &[&str]); 4] = [
        ("l2.qcow2", &["-o", "extended_l2=on,cluster_size=128k"]),
        ("zstd.qcow2", &["-o", "compression_type=zstd"]),
        ("data.qcow2", &["-o", &raw]),
        ("data2.qcow2", &["-o", &bin]),
    ];
    cases
        .iter()
        .map(|(name, opts)| {
            let backing = (*name != "data.qcow2").then_some(("base.qcow2", "qcow2"));
            let p = create(dir, name, "qcow2", "64M", backing, opts);
            let write = if *name == "zstd.qcow2" {
                "write -c -P 0x21 0 64k"
            } else {
                "write -P 0x21 0 64k"
            };
            qemu_io(&p, write);
            (*name, p)
        })
        .collect()
}

#[test]
fn a_snapshot_of_an_image_with_any_feature_works() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempdir();
    for (name, image) in featured(dir.path()) {
        let new = dir.path().join(format!("{name}.snap"));
        imgchain_ok(&["snapshot", arg(&image), arg(&new)]);
        assert_eq!(backing_of(&new), (name.to_string(), "qcow2".to_string()));
        qemu_check(&new);
        run(Command::new("qemu-io")
            .args(["-r", "-c", "read -P 0x21 0 64k"])
            .arg(&new));
    }
}

#[test]
fn a_header_only_rebase_works_whatever_the_features() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let images = featured(d);
    std::fs::copy(d.join("base.qcow2"), d.join("moved.qcow2")).expect("cp");
    // Each featured image moved onto the copy of its backing file...
    for (name, image) in images.iter().filter(|(n, _)| *n != "data.qcow2") {
        imgchain_ok(&["rebase", "-u", "-b", "moved.qcow2", arg(image)]);
        assert_eq!(backing_of(image).0, "moved.qcow2", "{name}");
        qemu_check(image);
    }
    // ... and an overlay moved onto a featured image (a copy of its backing).
    let (_, l2) = &images[0];
    std::fs::copy(l2, d.join("l2-copy.qcow2")).expect("cp");
    create(
        d,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("l2.qcow2", "qcow2")),
        &[],
    );
    let top = d.join("top.qcow2");
    imgchain_ok(&["rebase", "-u", "-b", "l2-copy.qcow2", arg(&top)]);
    assert_eq!(backing_of(&top).0, "l2-copy.qcow2");
    run(Command::new("qemu-io")
        .args(["-r", "-c", "read -P 0x21 0 64k"])
        .arg(&top));
}

#[test]
fn deleting_an_image_takes_its_data_file_and_never_another_images() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    featured(d);
    // The raw data file is listed as a raw image of its own; deleting it would take
    // data.qcow2's guest data.
    let before = snapshot(d);
    let out = imgchain(&["delete", "--yes", arg(&d.join("data.raw"))]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{said}");
    assert!(
        said.contains("data file of") && said.contains("data.qcow2"),
        "{said}"
    );
    assert_eq!(before, snapshot(d));
    // Another user's file is never deleted as a data file.
    let bin = d.join("data2.bin");
    std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
    let out = imgchain(&["delete", "--yes", arg(&d.join("data2.qcow2"))]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{said}");
    assert!(
        said.contains("another user") && said.contains("rm --"),
        "{said}"
    );
    assert_eq!(before, snapshot(d));
    std::os::unix::fs::chown(&bin, Some(0), None).unwrap();
    for (image, data) in [("data.qcow2", "data.raw"), ("data2.qcow2", "data2.bin")] {
        let v = imgchain_json(&["delete", "--yes", "--json", arg(&d.join(image))], 0);
        assert_eq!(v["data_files"][0], arg(&d.join(data)), "{v}");
        assert!(!d.join(image).exists() && !d.join(data).exists(), "{v}");
    }
}

#[test]
fn a_data_file_outside_the_images_directory_is_named_not_deleted() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempdir();
    let (d, elsewhere) = (dir.path().join("images"), dir.path().join("data"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let opts = format!("data_file={}", elsewhere.join("disk.bin").display());
    create(&d, "disk.qcow2", "qcow2", "64M", None, &["-o", &opts]);
    let before = (snapshot(&d), snapshot(&elsewhere));
    let out = imgchain(&["delete", "--yes", arg(&d.join("disk.qcow2"))]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{said}");
    assert!(
        said.contains("outside the image's directory") && said.contains("rm --"),
        "{said}"
    );
    assert_eq!(before, (snapshot(&d), snapshot(&elsewhere)));
}

/// `qemu-io -c CMD NAME` run in `dir` (QEMU opens a relative data file name from there).
fn qio(dir: &Path, name: &str, cmd: &str) {
    run(Command::new("qemu-io")
        .current_dir(dir)
        .args(["-c", cmd, name]));
}

/// `qemu-img ARGS` run in `dir`.
fn qimg(dir: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new("qemu-img").current_dir(dir).args(args))
}

/// Each image of `names` reads the same in both directories, checks clean, and is allocated
/// alike (`qemu-img map`: offsets, lengths, data and zero flags).
fn same(a: &Path, b: &Path, names: &[&str]) {
    for n in names {
        qimg(a, &["compare", n, &format!("{}/{n}", b.display())]);
        qimg(a, &["check", n]);
        // Adjacent entries of one kind merged: where the data lands in the file may differ.
        let map = |d: &Path| {
            let out = qimg(d, &["map", "--output=json", n]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let mut runs: Vec<(u64, u64, u64, bool, bool)> = Vec::new();
            for e in v.as_array().unwrap() {
                let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
                let kind = (
                    e["depth"].as_u64().unwrap(),
                    e["data"].as_bool().unwrap(),
                    e["zero"].as_bool().unwrap(),
                );
                match runs.last_mut() {
                    Some(r) if (r.2, r.3, r.4) == kind && r.0 + r.1 == start => r.1 += len,
                    _ => runs.push((start, len, kind.0, kind.1, kind.2)),
                }
            }
            runs
        };
        assert_eq!(map(a), map(b), "{n}: allocation");
    }
}

/// The chains the feature commits run on: `base.qcow2` <- `top.qcow2` (and `mid.qcow2` in
/// between when `mid`), the feature on the layer `on` (`base`, `mid` or `top`).
fn feature_chain(dir: &Path, opts: &str, on: &str, mid: bool) {
    let o = |layer: &str| {
        if layer == on {
            vec!["-o", opts]
        } else {
            Vec::new()
        }
    };
    create(dir, "base.qcow2", "qcow2", "64M", None, &o("base"));
    qio(dir, "base.qcow2", "write -P 0x11 0 4M");
    let mut below = "base.qcow2";
    if mid {
        create(
            dir,
            "mid.qcow2",
            "qcow2",
            "64M",
            Some((below, "qcow2")),
            &o("mid"),
        );
        qio(dir, "mid.qcow2", "write -P 0x22 2M 3M");
        below = "mid.qcow2";
    }
    create(
        dir,
        "top.qcow2",
        "qcow2",
        "64M",
        Some((below, "qcow2")),
        &o("top"),
    );
    let compressed = if opts.contains("zstd") { "-c " } else { "" };
    for cmd in [
        format!("write {compressed}-P 0x33 1M 64k"),
        "write -P 0x44 3M 4k".to_string(),
        "write -z 8M 1M".to_string(),
        format!("write {compressed}-P 0x55 20M 2M"),
    ] {
        qio(dir, "top.qcow2", &cmd);
    }
}

const FEATURES: [(&str, &str); 4] = [
    (
        "extended L2, 2 MiB clusters",
        "extended_l2=on,cluster_size=2M",
    ),
    ("extended L2", "extended_l2=on"),
    ("zstd", "compression_type=zstd"),
    ("data file", "data_file=layer.data"),
];

#[test]
fn commit_of_a_chain_with_any_feature_equals_qemu_img_commit() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for (what, opts) in FEATURES {
        for on in ["base", "top"] {
            for extra in [&[][..], &["-d"][..]] {
                let t = twins(|d| feature_chain(d, opts, on, false));
                let mut args = vec!["commit"];
                args.extend_from_slice(extra);
                let top = t.ours.join("top.qcow2");
                args.push(arg(&top));
                let out = imgchain_ok(&args);
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(
                    said.contains("through qemu-img commit"),
                    "{what} on {on}: {said}"
                );
                let mut theirs = vec!["commit", "-q"];
                theirs.extend_from_slice(extra);
                theirs.push("top.qcow2");
                qimg(&t.theirs, &theirs);
                same(&t.ours, &t.theirs, &["base.qcow2", "top.qcow2"]);
            }
        }
    }
}

#[test]
fn commit_into_a_deeper_base_and_merge_with_features_equal_qemu_img() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for (what, opts) in FEATURES {
        for on in ["base", "mid"] {
            let t = twins(|d| feature_chain(d, opts, on, true));
            let top = t.ours.join("top.qcow2");
            imgchain_ok(&[
                "commit",
                "--force",
                "-b",
                arg(&t.ours.join("base.qcow2")),
                arg(&top),
            ]);
            qimg(
                &t.theirs,
                &["commit", "-q", "-b", "base.qcow2", "top.qcow2"],
            );
            same(
                &t.ours,
                &t.theirs,
                &["base.qcow2", "mid.qcow2", "top.qcow2"],
            );
            let _ = what;
        }
    }
    for (what, opts) in FEATURES {
        for on in ["base", "mid", "top"] {
            let t = twins(|d| feature_chain(d, opts, on, true));
            imgchain_ok(&["merge", "--yes", arg(&t.ours.join("mid.qcow2"))]);
            qimg(&t.theirs, &["commit", "-q", "-d", "mid.qcow2"]);
            qimg(
                &t.theirs,
                &[
                    "rebase",
                    "-u",
                    "-b",
                    "base.qcow2",
                    "-F",
                    "qcow2",
                    "top.qcow2",
                ],
            );
            std::fs::remove_file(t.theirs.join("mid.qcow2")).unwrap();
            if on == "mid" && opts.starts_with("data_file") {
                std::fs::remove_file(t.theirs.join("layer.data")).unwrap();
                assert!(
                    !t.ours.join("layer.data").exists(),
                    "{what}: the data file goes too"
                );
            }
            assert!(!t.ours.join("mid.qcow2").exists(), "{what}");
            same(&t.ours, &t.theirs, &["base.qcow2", "top.qcow2"]);
        }
    }
}

#[test]
fn flatten_of_a_chain_with_any_feature_reads_as_qemu_img_rebase_s() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for (what, opts) in FEATURES {
        for on in ["base", "mid", "top"] {
            let t = twins(|d| feature_chain(d, opts, on, true));
            let out = imgchain_ok(&["flatten", "--json", arg(&t.ours.join("top.qcow2"))]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["tier"], "qemu", "{what} on {on}: {v}");
            qimg(&t.theirs, &["rebase", "-b", "", "top.qcow2"]);
            let info = qimg(&t.ours, &["info", "--output=json", "top.qcow2"]);
            let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
            assert!(
                info.get("backing-filename").is_none(),
                "{what} on {on}: {info}"
            );
            same(&t.ours, &t.theirs, &["top.qcow2"]);
        }
    }
}

#[test]
fn rebase_of_a_chain_with_any_feature_reads_as_before() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    for (what, opts) in FEATURES {
        for on in ["base", "mid", "top"] {
            let t = twins(|d| feature_chain(d, opts, on, true));
            let top = t.ours.join("top.qcow2");
            let out = imgchain_ok(&["rebase", "--json", "-b", "base.qcow2", arg(&top)]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["tier"], "qemu", "{what} on {on}: {v}");
            qimg(
                &t.theirs,
                &["rebase", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"],
            );
            // Guest views equal and clean; imgchain may allocate more than qemu-img, which
            // leaves out what it found equal by content.
            qimg(
                &t.ours,
                &[
                    "compare",
                    "top.qcow2",
                    &format!("{}/top.qcow2", t.theirs.display()),
                ],
            );
            qimg(&t.ours, &["check", "top.qcow2"]);
            let info = qimg(&t.ours, &["info", "--output=json", "top.qcow2"]);
            let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
            assert_eq!(info["backing-filename"], "base.qcow2", "{what} on {on}");
        }
    }
}

/// `base.qcow2` (64 MiB of data) <- `mid.qcow2` <- `top.qcow2`, the layer `v2` of them a qcow2
/// v2 image with 4 KiB clusters, which a copy of the base's data into it outgrows.
fn v2_chain(dir: &Path, v2: &str) {
    let o = |layer: &str| match layer == v2 {
        true => vec!["-o", "compat=0.10,cluster_size=4k"],
        false => Vec::new(),
    };
    create(dir, "base.qcow2", "qcow2", "64M", None, &o("base"));
    qio(dir, "base.qcow2", "write -P 0x11 0 32M");
    create(
        dir,
        "mid.qcow2",
        "qcow2",
        "64M",
        Some(("base.qcow2", "qcow2")),
        &o("mid"),
    );
    qio(dir, "mid.qcow2", "write -P 0x22 40M 24M");
    create(
        dir,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("mid.qcow2", "qcow2")),
        &o("top"),
    );
    qio(dir, "top.qcow2", "write -P 0x33 1M 64k");
}

#[test]
fn amend_upgrades_a_v2_image_first_for_merge_flatten_and_rebase() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let cases: [(&str, &[&str], &str); 3] = [
        ("base", &["merge", "--yes"], "mid.qcow2"),
        ("top", &["flatten"], "top.qcow2"),
        ("top", &["rebase", "-b", "base.qcow2"], "top.qcow2"),
    ];
    for (v2, op, image) in cases {
        let t = twins(|d| v2_chain(d, v2));
        let written = t.ours.join(format!("{v2}.qcow2"));
        let target = t.ours.join(image);
        let mut args = op.to_vec();
        args.push(arg(&target));
        let before = snapshot(&t.ours);
        let out = imgchain(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(16), "{op:?}: {said}");
        assert!(said.contains("--amend"), "{op:?}: {said}");
        assert_eq!(before, snapshot(&t.ours), "{op:?}: nothing changed");
        let mut args = op.to_vec();
        args.extend(["--amend", "--json", arg(&target)]);
        let v: serde_json::Value =
            serde_json::from_slice(&imgchain_ok(&args).stdout).expect("json");
        let amended = v.get("amended").or_else(|| v["commit"].get("amended"));
        assert_eq!(amended, Some(&serde_json::Value::Bool(true)), "{op:?}: {v}");
        let info = qimg(&t.ours, &["info", "--output=json", arg(&written)]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{op:?}");
        qimg(&t.ours, &["check", arg(&written)]);
        // Beside qemu-img on a copy upgraded by hand: the top reads the same.
        qimg(
            &t.theirs,
            &["amend", "-o", "compat=1.1", &format!("{v2}.qcow2")],
        );
        match op[0] {
            "merge" => {
                qimg(&t.theirs, &["commit", "-q", "-d", "mid.qcow2"]);
                qimg(
                    &t.theirs,
                    &[
                        "rebase",
                        "-u",
                        "-b",
                        "base.qcow2",
                        "-F",
                        "qcow2",
                        "top.qcow2",
                    ],
                );
            }
            "flatten" => drop(qimg(&t.theirs, &["rebase", "-b", "", "top.qcow2"])),
            _ => drop(qimg(
                &t.theirs,
                &["rebase", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"],
            )),
        }
        let theirs = format!("{}/top.qcow2", t.theirs.display());
        qimg(&t.ours, &["compare", "top.qcow2", &theirs]);
    }
}
