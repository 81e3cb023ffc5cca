//! Duplicate detection: `imgchain clean --dry-run` over N images of 1 GiB virtual with 64 MiB
//! of data each (every tenth a copy of another), against `qemu-img compare` on every pair of
//! them, measured in the same run (on a sample of pairs, scaled to all of them, since every
//! pair costs a compare).
//!
//! `cargo bench --bench duplicates` (IMGCHAIN_BENCH_DUPS changes N, default 100;
//! IMGCHAIN_BENCH_PAIRS the pairs timed, default 200).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let n: usize = env_or("IMGCHAIN_BENCH_DUPS", 100);
    let sample: usize = env_or("IMGCHAIN_BENCH_PAIRS", 200);
    let tmp = tempfile::Builder::new()
        .prefix("imgchain-bench-dups-")
        .tempdir()
        .unwrap();
    let t = Instant::now();
    let images = generate(tmp.path(), n);
    println!(
        "generated {n} images of 1 GiB virtual, 64 MiB of data each, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let bin = env!("CARGO_BIN_EXE_imgchain");
    let run = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["clean", "--dry-run", "--json"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "imgchain clean failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (t.elapsed(), v["duplicates"].as_array().map_or(0, Vec::len))
    };
    run();
    let (ours, groups) = run();
    assert_eq!(groups, n / 10, "imgchain found every group of copies");
    let pairs: Vec<(&PathBuf, &PathBuf)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, a)| images[i + 1..].iter().map(move |b| (a, b)))
        .collect();
    let step = (pairs.len() / sample).max(1);
    let timed: Vec<_> = pairs.iter().step_by(step).collect();
    let t = Instant::now();
    for (a, b) in &timed {
        Command::new("qemu-img")
            .args(["compare", "-U", "-q"])
            .arg(a)
            .arg(b)
            .status()
            .expect("run qemu-img (install qemu-utils)");
    }
    let per_pair = t.elapsed().as_secs_f64() / timed.len() as f64;
    let theirs = per_pair * pairs.len() as f64;
    println!(
        "imgchain clean --dry-run: {:.2} s for {n} images, {groups} groups of duplicates",
        ours.as_secs_f64()
    );
    println!(
        "qemu-img compare: {:.1} ms per pair over {} of {} pairs, {:.1} s for all of them",
        per_pair * 1e3,
        timed.len(),
        pairs.len(),
        theirs
    );
    println!(
        "ratio (qemu-img pairwise / imgchain): {:.1}x",
        theirs / ours.as_secs_f64()
    );
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` images; image `i` holds 64 MiB of pattern `i / 10` at an offset of its own, except
/// that every tenth is a byte-for-byte copy of the one before it.
fn generate(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("disk-{i:03}.qcow2"));
        if i % 10 == 9 {
            std::fs::copy(&out[i - 1], &p).unwrap();
        } else {
            let ok = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&p)
                .arg("1G")
                .status()
                .unwrap()
                .success();
            assert!(ok, "qemu-img create");
            let at = (i as u64 % 15) * 64;
            let ok = Command::new("qemu-io")
                .args(["-c", &format!("write -P {} {at}M 64M", i % 251 + 1)])
                .arg(&p)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "qemu-io write");
        }
        out.push(p);
    }
    out
}
