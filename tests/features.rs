//! qcow2 features imago cannot read or write (extended L2 entries, zstd compression, external
//! data files) in operations that only touch headers: a snapshot on such an image and a
//! header-only rebase work, as with qemu-img; a delete never leaves a data file behind
//! unmentioned.

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
fn deleting_an_image_with_a_data_file_names_the_file_and_changes_nothing() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    featured(d);
    let before = snapshot(d);
    let out = imgchain(&["delete", arg(&d.join("data.qcow2"))]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{said}");
    assert!(
        said.contains("data.raw") && said.contains("rm --"),
        "{said}"
    );
    assert_eq!(before, snapshot(d));
}
