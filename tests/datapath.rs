//! The three data tiers of a commit, against `qemu-img commit` on identical copies: on a
//! loop-mounted XFS (blocks shared with the top: reflinks) and on the file system the tests
//! run on (ext4 here: through memory, or `copy_file_range` when configured), for 64 KiB and 2 MiB clusters, unaligned extents,
//! compressed clusters (through memory) and a raw base. The results must be identical
//! (`qemu-img compare`), check clean, and `qemu-img map` of the base must show the same
//! allocation.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// `qemu-img map` of `image` as (start, length, data, zero) runs, adjacent runs of the same
/// kind merged: where the data is on the host is the tool's business, what is allocated is
/// not. `zero` counts for unallocated ranges only: inside an allocated cluster it says the
/// host file has a hole there, which a clone keeps from the top (qemu-img writes the zeroes).
fn allocation(image: &Path) -> Vec<(u64, u64, bool, bool)> {
    let out = run(Command::new("qemu-img")
        .args(["map", "--output=json"])
        .arg(image));
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut merged: Vec<(u64, u64, bool, bool)> = Vec::new();
    for r in runs {
        let (start, len) = (r["start"].as_u64().unwrap(), r["length"].as_u64().unwrap());
        let data = r["data"] == true;
        let zero = !data && r["zero"] == true;
        match merged.last_mut() {
            Some(last) if last.0 + last.1 == start && last.2 == data && last.3 == zero => {
                last.1 += len
            }
            _ => merged.push((start, len, data, zero)),
        }
    }
    merged
}

/// A 64 MiB chain in `dir`: `base` (format `base_fmt`, some data of its own) under `top`,
/// both with `cluster` clusters, the top written with aligned and unaligned extents, zero
/// writes over base data and, when `compressed`, compressed clusters.
fn chain(dir: &Path, base_fmt: &str, cluster: &str, compressed: bool) {
    let opts = ["-o", &format!("cluster_size={cluster}")];
    let base_opts: &[&str] = if base_fmt == "qcow2" { &opts } else { &[] };
    create(dir, "base", base_fmt, "64M", None, base_opts);
    create(
        dir,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("base", base_fmt)),
        &opts,
    );
    qemu_io_fmt(&dir.join("base"), base_fmt, "write -P 0x11 0 8M");
    let top = dir.join("top.qcow2");
    for w in [
        "write -P 0x21 0 4M",
        "write -P 0x22 5M 3M",
        "write -P 0x23 9437184 4096",
        "write -P 0x24 12345678 77777",
        "write -z 6M 1M",
        "write -P 0x25 40M 16M",
        "write -P 0x26 63M 1M",
    ] {
        qemu_io(&top, w);
    }
    if compressed {
        qemu_io(&top, "write -c -P 0x27 30M 2M");
    }
}

/// Which tier must have moved the data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tier {
    Cloned,
    Kernel,
    Memory,
}

/// A config file in `dir` with `[copy]` set to `settings`.
fn config(dir: &Path, settings: &str) -> std::path::PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, format!("[copy]\n{settings}\n")).unwrap();
    cfg
}

/// Commits `DIR/top.qcow2` with imgchain (with `cfg`, if any) in `ours` and with `qemu-img
/// commit` in `theirs` (copies of one chain) and compares everything; returns imgchain's
/// `data_path`.
fn commit_both(ours: &Path, theirs: &Path, base_fmt: &str, cfg: Option<&Path>) -> Value {
    let top = ours.join("top.qcow2");
    let mut args = vec!["commit", "--json", arg(&top)];
    if let Some(c) = cfg {
        args.splice(0..0, ["--config", arg(c)]);
    }
    let v = imgchain_json(&args, 0);
    run(Command::new("qemu-img")
        .args(["commit", "-q"])
        .arg(theirs.join("top.qcow2")));
    let (a, b) = (ours.join("base"), theirs.join("base"));
    run(Command::new("qemu-img")
        .args(["compare", "-q", "-f", base_fmt, "-F", base_fmt])
        .arg(&a)
        .arg(&b));
    qemu_compare(&ours.join("top.qcow2"), &theirs.join("top.qcow2"));
    if base_fmt == "qcow2" {
        qemu_check(&a);
        assert_eq!(allocation(&a), allocation(&b), "the base's allocation");
    }
    qemu_check(&ours.join("top.qcow2"));
    v["data_path"].clone()
}

/// Each case on `root` (a fresh directory pair per case), with `cfg`; the data must have gone
/// through `tier` (compressed clusters always through memory).
fn cases(root: &Path, tier: Tier, cfg: Option<&Path>) {
    for (name, base_fmt, cluster, compressed) in [
        ("64k", "qcow2", "64k", false),
        ("2m", "qcow2", "2M", false),
        ("compressed", "qcow2", "64k", true),
        ("raw", "raw", "64k", false),
    ] {
        let (ours, theirs) = (
            root.join(format!("{name}-a")),
            root.join(format!("{name}-b")),
        );
        std::fs::create_dir_all(&ours).unwrap();
        chain(&ours, base_fmt, cluster, compressed);
        std::fs::create_dir_all(&theirs).unwrap();
        copy_dir(&ours, &theirs);
        let path = commit_both(&ours, &theirs, base_fmt, cfg);
        let (cloned, kernel, memory) = (
            path["cloned_bytes"].as_u64().unwrap(),
            path["kernel_bytes"].as_u64().unwrap(),
            path["memory_bytes"].as_u64().unwrap(),
        );
        let through_memory = if compressed { 2 << 20 } else { 0 };
        let rest = memory - through_memory;
        let (want, others) = match tier {
            Tier::Cloned => (cloned, kernel + rest),
            Tier::Kernel => (kernel, cloned + rest),
            Tier::Memory => (memory, cloned + kernel),
        };
        assert!(want >= 20 << 20, "{name}: {tier:?} expected: {path}");
        assert_eq!(
            others, 0,
            "{name}: only {tier:?} (and memory for compressed): {path}"
        );
        assert!(
            memory >= through_memory,
            "{name}: compressed through memory: {path}"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn on_xfs_the_data_is_cloned_and_the_result_equals_qemu_img() {
    let Some(fs) = SmallFs::new(1024) else { return };
    cases(fs.path(), Tier::Cloned, None);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn elsewhere_the_data_goes_through_memory_or_the_kernel_and_equals_qemu_img() {
    let tmp = tempdir();
    cases(&tmp.path().join("memory"), Tier::Memory, None);
    let cfg = config(tmp.path(), "kernel_copy = true");
    cases(&tmp.path().join("kernel"), Tier::Kernel, Some(&cfg));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn with_clone_off_xfs_copies_too() {
    let Some(fs) = SmallFs::new(1024) else { return };
    let cfg = config(fs.path(), "clone = false");
    cases(&fs.path().join("memory"), Tier::Memory, Some(&cfg));
    let cfg = config(fs.path(), "clone = false\nkernel_copy = true");
    cases(&fs.path().join("kernel"), Tier::Kernel, Some(&cfg));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn on_a_full_xfs_a_cloned_commit_fits_where_a_copy_cannot() {
    let Some(fs) = SmallFs::new(300) else { return };
    let d = fs.path();
    create(d, "base", "qcow2", "256M", None, &[]);
    create(
        d,
        "top.qcow2",
        "qcow2",
        "256M",
        Some(("base", "qcow2")),
        &[],
    );
    qemu_io(&d.join("top.qcow2"), "write -P 0x42 0 96M");
    let free = nix::sys::statvfs::statvfs(d).unwrap();
    let avail = free.blocks_available() * free.fragment_size();
    run(Command::new("fallocate")
        .arg(format!("-l{}", avail - (40 << 20)))
        .arg(d.join("filler")));
    let v = imgchain_json(&["commit", "--json", arg(&d.join("top.qcow2"))], 0);
    assert_eq!(v["data_path"]["cloned_bytes"], 96 << 20, "{v}");
    let out = run(Command::new("qemu-io")
        .args(["-c", "read -P 0x42 0 96M"])
        .arg(d.join("base")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("verification failed"));
    qemu_check(&d.join("base"));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn a_flatten_takes_its_backing_data_through_the_kernel_and_equals_qemu_img() {
    let Some(fs) = SmallFs::new(1024) else { return };
    let tmp = tempdir();
    let kernel = config(tmp.path(), "kernel_copy = true");
    for (root, tier, cfg) in [
        (fs.path(), Tier::Cloned, None),
        (tmp.path(), Tier::Kernel, Some(kernel.as_path())),
    ] {
        let (ours, theirs) = (root.join("flat-a"), root.join("flat-b"));
        std::fs::create_dir_all(&ours).unwrap();
        chain(&ours, "qcow2", "64k", false);
        qemu_io_fmt(&ours.join("base"), "qcow2", "write -P 0x12 20M 8M");
        std::fs::create_dir_all(&theirs).unwrap();
        copy_dir(&ours, &theirs);
        let top = ours.join("top.qcow2");
        let mut args = vec!["flatten", "--json", arg(&top)];
        if let Some(c) = cfg {
            args.splice(0..0, ["--config", arg(c)]);
        }
        let v = imgchain_json(&args, 0);
        run(Command::new("qemu-img")
            .args(["rebase", "-q", "-b", ""])
            .arg(theirs.join("top.qcow2")));
        let (a, b) = (ours.join("top.qcow2"), theirs.join("top.qcow2"));
        qemu_compare(&a, &b);
        qemu_check(&a);
        assert_eq!(
            allocation(&a),
            allocation(&b),
            "the flattened image's allocation"
        );
        let path = &v["data_path"];
        let moved = if tier == Tier::Cloned {
            path["cloned_bytes"].as_u64().unwrap()
        } else {
            path["kernel_bytes"].as_u64().unwrap()
        };
        assert!(moved >= 8 << 20, "{v}");
    }
}

/// base (0x11 over 0-8M) <- mid (0x22 over 4-12M, zeroes at 20M, 0x23 at 40M) <- top (0x33
/// at 10M): mid's data over base's data, over base's zeroes, and mid's zeroes over base's data.
fn three(d: &Path) {
    common::base_and_mid(d, "64M", &[])
        .io("write -P 0x23 40M 4M")
        .on("top.qcow2")
        .io("write -P 0x33 10M 1M");
}

/// On XFS a flatten and a rebase onto the base take the old chain's data by cloning it,
/// without reading it, and the result reads as qemu-img's does.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn on_xfs_flatten_and_rebase_clone_and_read_as_qemu_img_s() {
    let Some(fs) = SmallFs::new(1024) else { return };
    for (op, ours, qemu) in [
        ("flatten", &["flatten"][..], &["-b", ""][..]),
        (
            "rebase",
            &["rebase", "-b", "base.qcow2"][..],
            &["-b", "base.qcow2", "-F", "qcow2"][..],
        ),
    ] {
        let dir = |w: &str| {
            let d = fs.path().join(format!("{op}-{w}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let (orig, a, b) = (dir("orig"), dir("a"), dir("b"));
        three(&orig);
        copy_dir(&orig, &a);
        copy_dir(&orig, &b);
        let top = a.join("top.qcow2");
        let mut args = ours.to_vec();
        args.extend(["--json", arg(&top)]);
        let v = imgchain_json(&args, 0);
        run(Command::new("qemu-img")
            .current_dir(&b)
            .arg("rebase")
            .args(qemu)
            .arg("top.qcow2"));
        qemu_check(&top);
        qemu_compare(&top, &b.join("top.qcow2"));
        qemu_compare(&top, &orig.join("top.qcow2"));
        let path = &v["data_path"];
        assert!(
            path["cloned_bytes"].as_u64().unwrap() >= 8 << 20,
            "{op}: the old chain's data is cloned: {v}"
        );
        assert_eq!(
            path["memory_bytes"].as_u64().unwrap(),
            0,
            "{op}: nothing read: {v}"
        );
    }
}
