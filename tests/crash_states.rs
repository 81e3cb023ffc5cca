//! Power-loss states of a commit, ours beside `qemu-img commit`'s on identical chains: every
//! file a power loss could leave must pass `qemu-img check` (or carry the dirty bit and be
//! repaired by `-r all`), and the top's disk must read as before the commit.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "crash/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Command;

use common::{copy_dir, create, qemu_io};
use harness::{Tally, Trace, judge_qcow2, tally_qcow2, traced};

/// Random subsets tried in each window between two syncs, besides its prefixes.
const SUBSETS: usize = 20;

/// The guest view of `name` in `dir` equals that of `name` in `orig_dir`.
fn same_guest_view(orig_dir: &Path, dir: &Path, name: &str) -> Result<(), String> {
    let out = Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .arg(orig_dir.join(name))
        .arg(dir.join(name))
        .output()
        .expect("run qemu-img compare");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Adds to `t` every crash state of `trace`, the file `name`, judged alone and, written into
/// `view` (which holds what it may be built on), for its guest view against `orig_dir`'s.
fn tally_in_view(
    t: &mut Tally,
    trace: &Trace,
    orig_dir: &Path,
    view: &Path,
    name: &str,
    seed: u64,
) {
    let scratch = common::tempdir();
    trace.for_each_crash_state(SUBSETS, seed, |label, bytes| {
        let mut v = judge_qcow2(scratch.path(), bytes);
        if !matches!(v, harness::Verdict::Corrupt(_)) {
            std::fs::write(view.join(name), bytes).expect("write the state");
            if let Err(why) = same_guest_view(orig_dir, view, name) {
                v = harness::Verdict::Corrupt(format!("{name}'s disk changed: {why}"));
            }
        }
        t.add(label, v);
    });
}

/// Every crash state of the top, judged alone and, over the final base, for its guest view.
fn tally_top(trace: &Trace, orig_dir: &Path, final_base: &Path) -> Tally {
    let view = common::tempdir();
    std::fs::copy(final_base, view.path().join("base.qcow2")).expect("copy base");
    let mut t = Tally::default();
    tally_in_view(&mut t, trace, orig_dir, view.path(), "top.qcow2", 0xfeed);
    t
}

struct Run {
    base: Tally,
    top: Option<Tally>,
    syncs: usize,
    writes: usize,
    /// Writebacks started early, which bound nothing.
    hints: usize,
}

/// Commits `top.qcow2` in `dir` with `cmd`, recording base and top, and judges every state.
fn crash_states(dir: &Path, orig: &Path, mut cmd: Command, empties_top: bool) -> Run {
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    cmd.current_dir(dir);
    let (out, traces) = traced(cmd, &[&base, &top]);
    assert!(
        out.status.success(),
        "the commit failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for t in &traces {
        t.assert_replay_is_complete();
    }
    let raw_base = !traces[0].original.starts_with(b"QFI\xfb");
    Run {
        // A raw file has no metadata: any mix of its writes is a valid raw image.
        base: if raw_base {
            Tally::default()
        } else {
            tally_qcow2(&traces[0], SUBSETS)
        },
        top: empties_top.then(|| tally_top(&traces[1], orig, &base)),
        syncs: traces.iter().map(Trace::syncs).sum(),
        writes: traces.iter().map(Trace::writes).sum(),
        hints: traces.iter().map(Trace::hints).sum(),
    }
}

fn imgchain(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgchain"));
    c.arg("commit").args(args).arg("top.qcow2");
    // The images in between read differently after -b: imgchain wants that said with --force.
    if args.contains(&"-b") {
        c.arg("--force");
    }
    c
}

fn qemu_img(args: &[&str]) -> Command {
    let mut c = Command::new("qemu-img");
    c.arg("commit").args(args).arg("top.qcow2");
    c
}

/// Runs both tools on identical copies of the chain `build` makes, prints both tallies and
/// asserts that ours has no corrupt state.
fn compare(name: &str, build: impl Fn(&Path), args: &[&str]) {
    let root = common::tempdir();
    compare_in(root.path(), name, build, args, None);
}

/// [`compare`] in directories under `root`, imgchain reading `config` if given; returns
/// imgchain's run.
fn compare_in(
    root: &Path,
    name: &str,
    build: impl Fn(&Path),
    args: &[&str],
    config: Option<&Path>,
) -> Run {
    let orig = root.join("orig");
    std::fs::create_dir(&orig).expect("mkdir");
    build(&orig);
    let (ours, theirs) = (root.join("ours"), root.join("theirs"));
    copy_dir(&orig, &ours);
    copy_dir(&orig, &theirs);
    let empties = !args.contains(&"-d");
    let mut ours_cmd = imgchain(args);
    if let Some(c) = config {
        ours_cmd.arg("--config").arg(c);
    }
    let us = crash_states(&ours, &orig, ours_cmd, empties);
    let them = crash_states(&theirs, &orig, qemu_img(args), empties);
    println!(
        "{name}: imgchain base {} | qemu-img base {}",
        us.base, them.base
    );
    if let (Some(a), Some(b)) = (&us.top, &them.top) {
        println!("{name}: imgchain top {a} | qemu-img top {b}");
    }
    println!(
        "{name}: syncs imgchain {} qemu-img {}; records imgchain {} qemu-img {}",
        us.syncs, them.syncs, us.writes, them.writes
    );
    let mut bad = us.base.corrupt.clone();
    bad.extend(us.top.iter().flat_map(|t| t.corrupt.clone()));
    assert!(
        bad.is_empty(),
        "{name}: corrupt crash states:\n{}",
        bad.join("\n")
    );
    us
}

/// Scattered 64 KiB pieces over a 4 GiB disk: every piece needs a new L2 table in the base.
fn scattered(dir: &Path, cluster: &str, base_opts: &[&str]) {
    let mut opts = vec!["-o"];
    let o = format!("cluster_size={cluster}");
    opts.push(&o);
    opts.extend_from_slice(base_opts);
    create(dir, "base.qcow2", "qcow2", "4G", None, &opts);
    qemu_io(&dir.join("base.qcow2"), "write -P 0x11 0 1M");
    create(
        dir,
        "top.qcow2",
        "qcow2",
        "4G",
        Some(("base.qcow2", "qcow2")),
        &["-o", &format!("cluster_size={cluster}")],
    );
    let cmds: Vec<String> = (0..24u64)
        .map(|i| format!("write -P {} {} 64k", 0x40 + i, i * (170 << 20) + (i << 16)))
        .collect();
    let mut c = Command::new("qemu-io");
    for cmd in &cmds {
        c.args(["-c", cmd]);
    }
    c.arg(dir.join("top.qcow2"));
    common::run(&mut c);
}

#[test]
fn scattered_writes_that_need_new_l2_tables() {
    compare("scattered", |d| scattered(d, "64k", &[]), &[]);
}

/// With `copy.kernel_copy` the kernel copies the data (copy_file_range), then it is mapped.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn scattered_writes_copied_in_the_kernel() {
    let root = common::tempdir();
    let cfg = root.path().join("config.toml");
    std::fs::write(&cfg, "[copy]\nkernel_copy = true\n").expect("config");
    compare_in(
        root.path(),
        "copied in the kernel",
        |d| scattered(d, "64k", &[]),
        &[],
        Some(&cfg),
    );
}

/// On XFS the data is cloned (reflinks), then mapped: the same states must all be clean.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, cc, mkfs.xfs"
)]
fn scattered_writes_cloned_on_xfs() {
    let Some(fs) = common::SmallFs::new(1024) else {
        return;
    };
    compare_in(
        fs.path(),
        "cloned on xfs",
        |d| scattered(d, "64k", &[]),
        &[],
        None,
    );
    // The undo record made before the traced writes puts both images back byte for byte.
    let (orig, ours) = (fs.path().join("orig"), fs.path().join("ours"));
    common::imgchain_ok(&["undo", common::arg(&ours)]);
    for name in ["base.qcow2", "top.qcow2"] {
        assert!(
            std::fs::read(orig.join(name)).unwrap() == std::fs::read(ours.join(name)).unwrap(),
            "{name} is not as before the commit after undo"
        );
    }
}

/// Writeback started while the copy goes on (`copy.write_behind`) makes nothing durable:
/// every state is still clean, and the trace shows that writeback was started.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn writeback_started_during_the_copy() {
    let root = common::tempdir();
    let cfg = root.path().join("config.toml");
    std::fs::write(&cfg, "[copy]\nwrite_behind = \"1MiB\"\n").expect("config");
    let us = compare_in(
        root.path(),
        "write-behind",
        |d| {
            create(d, "base.qcow2", "qcow2", "4G", None, &[]);
            qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 1M");
            create(
                d,
                "top.qcow2",
                "qcow2",
                "4G",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            qemu_io(&d.join("top.qcow2"), "write -P 0x71 512k 5M");
            qemu_io(&d.join("top.qcow2"), "write -P 0x72 3000M 2M");
        },
        &[],
        Some(&cfg),
    );
    assert!(us.hints >= 3, "writeback started only {} times", us.hints);
}

#[test]
fn scattered_writes_with_4k_and_2m_clusters() {
    compare("4k clusters", |d| scattered(d, "4k", &[]), &[]);
    compare("2m clusters", |d| scattered(d, "2M", &[]), &[]);
}

#[test]
fn a_v2_base() {
    compare(
        "v2 base",
        |d| scattered(d, "64k", &["-o", "compat=0.10"]),
        &[],
    );
}

#[test]
fn a_base_with_freed_clusters_that_get_reused() {
    compare(
        "reused clusters",
        |d| {
            let top = common::sized_base_and_top(d, "1G");
            let base = d.join("base.qcow2");
            qemu_io(&base, "write -P 0x11 0 8M");
            qemu_io(&base, "discard 2M 4M");
            qemu_io(&top, "write -z 0 1M");
            qemu_io(&top, "write -P 0x22 300M 3M");
            qemu_io(&top, "write -P 0x33 700M 2M");
        },
        &[],
    );
}

#[test]
fn a_base_that_grows() {
    compare(
        "growing base",
        |d| {
            create(d, "base.qcow2", "qcow2", "1G", None, &[]);
            qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 1M");
            create(
                d,
                "top.qcow2",
                "qcow2",
                "3G",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            let top = d.join("top.qcow2");
            qemu_io(&top, "write -P 0x22 512k 1M");
            qemu_io(&top, "write -P 0x33 2100M 1M");
            qemu_io(&top, "write -P 0x44 2900M 64k");
        },
        &[],
    );
}

/// A growing qcow2 v2 base, upgraded first with `--amend` (QEMU's amend, traced as a child
/// process), beside `qemu-img commit` into the same base upgraded by hand before the trace.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn a_v2_base_that_grows_amended_first() {
    let build = |d: &Path| {
        create(d, "base.qcow2", "qcow2", "1G", None, &["-o", "compat=0.10"]);
        qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 1M");
        create(
            d,
            "top.qcow2",
            "qcow2",
            "3G",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&d.join("top.qcow2"), "write -P 0x22 512k 1M");
        qemu_io(&d.join("top.qcow2"), "write -P 0x33 2100M 1M");
    };
    let root = common::tempdir();
    let orig = root.path().join("orig");
    std::fs::create_dir(&orig).expect("mkdir");
    build(&orig);
    let (ours, theirs) = (root.path().join("ours"), root.path().join("theirs"));
    copy_dir(&orig, &ours);
    copy_dir(&orig, &theirs);
    common::run(
        Command::new("qemu-img")
            .args(["amend", "-o", "compat=1.1"])
            .arg(theirs.join("base.qcow2")),
    );
    let us = crash_states(&ours, &orig, imgchain(&["--amend"]), true);
    let them = crash_states(&theirs, &orig, qemu_img(&[]), true);
    println!(
        "v2 amended: imgchain base {} | qemu-img (amended by hand) base {}",
        us.base, them.base
    );
    let mut bad = us.base.corrupt.clone();
    bad.extend(us.top.iter().flat_map(|t| t.corrupt.clone()));
    assert!(bad.is_empty(), "corrupt crash states:\n{}", bad.join("\n"));
}

#[test]
fn keeping_the_top_and_committing_across_three_layers() {
    compare(
        "-b across 3 layers",
        |d| {
            create(d, "base.qcow2", "qcow2", "2G", None, &[]);
            qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 2M");
            create(
                d,
                "mid.qcow2",
                "qcow2",
                "2G",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            qemu_io(&d.join("mid.qcow2"), "write -P 0x22 1M 2M");
            qemu_io(&d.join("mid.qcow2"), "write -P 0x23 1000M 1M");
            create(
                d,
                "top.qcow2",
                "qcow2",
                "2G",
                Some(("mid.qcow2", "qcow2")),
                &[],
            );
            qemu_io(&d.join("top.qcow2"), "write -P 0x33 1500k 1M");
            qemu_io(&d.join("top.qcow2"), "write -P 0x34 1900M 1M");
        },
        &["-b", "base.qcow2"],
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn a_raw_base() {
    compare(
        "raw base",
        |d| {
            create(d, "base.qcow2", "raw", "1G", None, &[]);
            create(
                d,
                "top.qcow2",
                "qcow2",
                "1G",
                Some(("base.qcow2", "raw")),
                &[],
            );
            let top = d.join("top.qcow2");
            common::qemu_io_fmt(&top, "qcow2", "write -P 0x22 1M 2M");
            common::qemu_io_fmt(&top, "qcow2", "write -z 600M 1M");
            common::qemu_io_fmt(&top, "qcow2", "write -P 0x33 900M 64k");
        },
        &[],
    );
}

/// Every crash state of `top.qcow2` written by a rebase or flatten, judged alone and for its
/// guest view, read over the untouched backing files of `orig_dir` (old and new alike).
fn tally_relinked(trace: &Trace, orig_dir: &Path) -> Tally {
    let view = common::tempdir();
    copy_dir(orig_dir, view.path());
    let mut t = Tally::default();
    tally_in_view(&mut t, trace, orig_dir, view.path(), "top.qcow2", 0xbead);
    t
}

/// `imgchain ARGS top.qcow2` and `qemu-img rebase QARGS top.qcow2` on identical copies of the
/// chain `build` makes, each traced and judged in every power-loss state.
fn compare_rebase(name: &str, build: impl Fn(&Path), ours: &[&str], theirs: &[&str]) {
    let root = common::tempdir();
    compare_rebase_in(root.path(), name, build, ours, theirs);
}

/// [`compare_rebase`] in directories under `root`; returns the writebacks imgchain started
/// early.
fn compare_rebase_in(
    root: &Path,
    name: &str,
    build: impl Fn(&Path),
    ours: &[&str],
    theirs: &[&str],
) -> usize {
    let orig = root.join("orig");
    std::fs::create_dir(&orig).expect("mkdir");
    build(&orig);
    let mut tallies = Vec::new();
    for (dir, program, args) in [
        ("ours", env!("CARGO_BIN_EXE_imgchain"), ours),
        ("theirs", "qemu-img", theirs),
    ] {
        let d = root.join(dir);
        copy_dir(&orig, &d);
        let mut cmd = Command::new(program);
        cmd.current_dir(&d).args(args).arg("top.qcow2");
        let (out, traces) = traced(cmd, &[&d.join("top.qcow2")]);
        assert!(
            out.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        traces[0].assert_replay_is_complete();
        tallies.push((
            tally_relinked(&traces[0], &orig),
            traces[0].syncs(),
            traces[0].hints(),
        ));
    }
    println!(
        "{name}: imgchain {} ({} syncs) | qemu-img {} ({} syncs){}",
        tallies[0].0,
        tallies[0].1,
        tallies[1].0,
        tallies[1].1,
        tallies[1]
            .0
            .corrupt
            .first()
            .map(|c| format!("; qemu-img's first: {c}"))
            .unwrap_or_default()
    );
    assert!(
        tallies[0].0.corrupt.is_empty(),
        "{name}: corrupt crash states:\n{}",
        tallies[0].0.corrupt.join("\n")
    );
    tallies[0].2
}

/// base (data at 0-4M and 1G) <- mid (data at 2-6M, zeroes at 1G) <- top (data at 5M, 3000M).
fn relink_chain(d: &Path, opts: &[&str]) {
    create(d, "base.qcow2", "qcow2", "4G", None, opts);
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 4M");
    qemu_io(&d.join("base.qcow2"), "write -P 0x12 1G 1M");
    create(
        d,
        "mid.qcow2",
        "qcow2",
        "4G",
        Some(("base.qcow2", "qcow2")),
        opts,
    );
    qemu_io(&d.join("mid.qcow2"), "write -P 0x22 2M 4M");
    qemu_io(&d.join("mid.qcow2"), "write -z 1G 512k");
    for i in 0..8u64 {
        qemu_io(
            &d.join("mid.qcow2"),
            &format!(
                "write -P {} {} 64k",
                0x30 + i,
                1500 * (1 << 20) + i * (200 << 20)
            ),
        );
    }
    create(
        d,
        "top.qcow2",
        "qcow2",
        "4G",
        Some(("mid.qcow2", "qcow2")),
        opts,
    );
    qemu_io(&d.join("top.qcow2"), "write -P 0x44 5M 1M");
    qemu_io(&d.join("top.qcow2"), "write -P 0x45 3000M 64k");
}

/// On XFS a flatten and a rebase clone the clusters they take from the backing chain.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, cc, mkfs.xfs"
)]
fn flatten_cloned_on_xfs() {
    let Some(fs) = common::SmallFs::new(1024) else {
        return;
    };
    let sub = |name: &str| {
        let d = fs.path().join(name);
        std::fs::create_dir(&d).expect("mkdir");
        d
    };
    compare_rebase_in(
        &sub("flatten"),
        "flatten on xfs",
        |d| relink_chain(d, &[]),
        &["flatten"],
        &["rebase", "-b", ""],
    );
    // Mid's data over the base's data is cloned too there, not compared; its zeroes over the
    // base's data are made zero without reading.
    compare_rebase_in(
        &sub("rebase"),
        "rebase onto base on xfs",
        |d| relink_chain(d, &[]),
        &["rebase", "-b", "base.qcow2"],
        &["rebase", "-F", "qcow2", "-b", "base.qcow2"],
    );
}

#[test]
fn flatten_and_safe_rebase() {
    compare_rebase(
        "flatten",
        |d| relink_chain(d, &[]),
        &["flatten"],
        &["rebase", "-b", ""],
    );
    compare_rebase(
        "rebase onto base",
        |d| relink_chain(d, &[]),
        &["rebase", "-b", "base.qcow2"],
        &["rebase", "-F", "qcow2", "-b", "base.qcow2"],
    );
    compare_rebase(
        "flatten v2",
        |d| relink_chain(d, &["-o", "compat=0.10"]),
        &["flatten"],
        &["rebase", "-b", ""],
    );
    compare_rebase(
        "flatten 4k clusters",
        |d| relink_chain(d, &["-o", "cluster_size=4k"]),
        &["flatten"],
        &["rebase", "-b", ""],
    );
}

/// A flatten with writeback started every MiB (`copy.write_behind`): still clean.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn flatten_with_writeback_started_during_the_copy() {
    let root = common::tempdir();
    let cfg = root.path().join("config.toml");
    std::fs::write(&cfg, "[copy]\nwrite_behind = \"1MiB\"\n").expect("config");
    let cfg = cfg.to_str().expect("utf-8 path");
    let hints = compare_rebase_in(
        root.path(),
        "flatten, write-behind",
        |d| relink_chain(d, &[]),
        &["--config", cfg, "flatten"],
        &["rebase", "-b", ""],
    );
    assert!(hints >= 2, "writeback started only {hints} times");
}

/// Every power-loss state of each overlay `names` in `traces` (from index 1; index 0 is the
/// base), judged alone and for its guest view over the final base and the original middle
/// layer, which it may name either of.
fn tally_overlays(traces: &[&Trace], orig: &Path, final_base: &Path, names: &[&str]) -> Tally {
    let view = common::tempdir();
    copy_dir(orig, view.path());
    std::fs::copy(final_base, view.path().join("base.qcow2")).expect("copy base");
    let mut t = Tally::default();
    for (trace, name) in traces.iter().zip(names) {
        tally_in_view(&mut t, trace, orig, view.path(), name, 0xcafe);
        std::fs::copy(orig.join(name), view.path().join(name)).expect("restore overlay");
    }
    t
}

/// Runs each command in `d`, tracing the files it names; returns the traces of base.qcow2,
/// a.qcow2, b.qcow2 and c.qcow2, in that order, each file's in the order of the steps.
fn traced_steps(d: &Path, steps: Vec<(Command, Vec<&str>)>) -> Vec<Vec<Trace>> {
    const FILES: [&str; 4] = ["base.qcow2", "a.qcow2", "b.qcow2", "c.qcow2"];
    let mut traces: Vec<Vec<Trace>> = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for (mut c, targets) in steps {
        c.current_dir(d);
        let paths: Vec<std::path::PathBuf> = targets.iter().map(|t| d.join(t)).collect();
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        let (out, ts) = traced(c, &refs);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (t, name) in ts.into_iter().zip(&targets) {
            t.assert_replay_is_complete();
            let i = FILES.iter().position(|f| f == name).expect("a traced file");
            traces[i].push(t);
        }
    }
    assert!(traces.iter().all(|t| !t.is_empty()), "every file traced");
    traces
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn merging_a_middle_layer() {
    merge_case("merge", &[], &[]);
}

/// A middle layer with bitmaps over a zstd base: qemu-img commits (marking the base's bitmap),
/// then the layer's bitmaps are merged into the base by QEMU's code, beside oVirt's cold merge.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn merging_a_layer_with_bitmaps_through_qemu() {
    merge_case(
        "merge, bitmaps, zstd",
        &["-o", "compression_type=zstd"],
        &[("base.qcow2", "bb"), ("mid.qcow2", "mb")],
    );
}

/// Merges `mid.qcow2` of [`relink_chain`] (made with `opts`, `bitmaps` added) with two more
/// overlays of mid, beside `qemu-img commit -d`, `qemu-img bitmap --merge` of mid's bitmaps
/// into the base, and `qemu-img rebase -u` of each overlay; every power-loss state judged.
fn merge_case(name: &str, opts: &[&str], bitmaps: &[(&str, &str)]) {
    let names = ["a.qcow2", "b.qcow2", "c.qcow2"];
    let root = common::tempdir();
    let orig = root.path().join("orig");
    std::fs::create_dir(&orig).expect("mkdir");
    relink_chain(&orig, opts);
    for (image, bitmap) in bitmaps {
        let img = orig.join(image);
        common::run(
            Command::new("qemu-img")
                .args(["bitmap", "--add"])
                .arg(&img)
                .arg(bitmap),
        );
        qemu_io(&img, "write -P 0x66 8M 1M");
    }
    // relink_chain's top.qcow2 and two more overlays of mid: the middle layer to merge.
    std::fs::rename(orig.join("top.qcow2"), orig.join("a.qcow2")).expect("rename");
    for n in &names[1..] {
        create(&orig, n, "qcow2", "4G", Some(("mid.qcow2", "qcow2")), &[]);
        qemu_io(&orig.join(n), "write -P 0x55 7M 64k");
    }
    let all = vec!["base.qcow2", "a.qcow2", "b.qcow2", "c.qcow2"];
    let ours = root.path().join("ours");
    copy_dir(&orig, &ours);
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgchain"));
    c.args(["merge", "--yes", "mid.qcow2"]);
    let t_ours = traced_steps(&ours, vec![(c, all)]);
    let theirs = root.path().join("theirs");
    copy_dir(&orig, &theirs);
    let mut steps = Vec::new();
    let mut c = Command::new("qemu-img");
    c.args(["commit", "-d", "mid.qcow2"]);
    steps.push((c, vec!["base.qcow2"]));
    for (_, b) in bitmaps.iter().filter(|(i, _)| *i == "mid.qcow2") {
        let mut c = Command::new("qemu-img");
        c.args(["bitmap", "--add", "base.qcow2", b]);
        steps.push((c, vec!["base.qcow2"]));
        let mut c = Command::new("qemu-img");
        c.args([
            "bitmap",
            "--merge",
            b,
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "base.qcow2",
            b,
        ]);
        steps.push((c, vec!["base.qcow2"]));
    }
    for n in names {
        let mut c = Command::new("qemu-img");
        c.args(["rebase", "-u", "-F", "qcow2", "-b", "base.qcow2", n]);
        steps.push((c, vec![n]));
    }
    let t_theirs = traced_steps(&theirs, steps);
    let mut bad = Vec::new();
    for (who, d, traces) in [
        ("imgchain", &ours, &t_ours),
        ("qemu-img", &theirs, &t_theirs),
    ] {
        let mut base = Tally::default();
        for t in &traces[0] {
            base.extend(tally_qcow2(t, SUBSETS));
        }
        let last: Vec<&Trace> = traces[1..].iter().filter_map(|t| t.last()).collect();
        let overlays = tally_overlays(&last, &orig, &d.join("base.qcow2"), &names);
        println!("{name}: {who} base {base} | overlays {overlays}");
        if who == "imgchain" {
            bad.extend(base.corrupt);
            bad.extend(overlays.corrupt);
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: corrupt crash states:\n{}",
        bad.join("\n")
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn a_base_and_a_top_with_internal_snapshots() {
    compare(
        "internal snapshots",
        |d| {
            scattered(d, "64k", &[]);
            let base = d.join("base.qcow2");
            qemu_io(&base, "write -P 0x12 100M 4M");
            common::run(
                Command::new("qemu-img")
                    .args(["snapshot", "-c", "S"])
                    .arg(&base),
            );
            qemu_io(&base, "write -P 0x13 101M 64k");
            let top = d.join("top.qcow2");
            qemu_io(&top, "write -P 0x66 101M 1M");
            common::run(
                Command::new("qemu-img")
                    .args(["snapshot", "-c", "T"])
                    .arg(&top),
            );
            qemu_io(&top, "write -P 0x67 102M 64k");
            qemu_io(&top, "write -P 0x68 2000M 64k");
        },
        &[],
    );
}

/// Bitmaps in the base and the top: the base's are marked by QEMU's code (a child process on
/// the same file, traced too) before the copy, and both stay valid through it.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn a_base_and_a_top_with_persistent_bitmaps() {
    compare(
        "bitmaps",
        |d| {
            scattered(d, "64k", &[]);
            for (image, name) in [("base.qcow2", "bb"), ("top.qcow2", "tb")] {
                common::run(
                    Command::new("qemu-img")
                        .args(["bitmap", "--add"])
                        .arg(d.join(image))
                        .arg(name),
                );
            }
            qemu_io(&d.join("base.qcow2"), "write -P 0x12 100M 4M");
            qemu_io(&d.join("top.qcow2"), "write -P 0x14 200M 1M");
        },
        &[],
    );
}

/// A flatten and a rebase of a top with a persistent bitmap: marked by QEMU's code (traced
/// too) before the copy, valid through it.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn flatten_and_rebase_of_a_top_with_a_bitmap() {
    let build = |d: &Path| {
        relink_chain(d, &[]);
        common::run(
            Command::new("qemu-img")
                .args(["bitmap", "--add"])
                .arg(d.join("top.qcow2"))
                .arg("tb"),
        );
    };
    compare_rebase(
        "flatten, bitmap",
        build,
        &["flatten"],
        &["rebase", "-b", ""],
    );
    compare_rebase(
        "rebase onto base, bitmap",
        build,
        &["rebase", "-b", "base.qcow2"],
        &["rebase", "-F", "qcow2", "-b", "base.qcow2"],
    );
}

/// Chains with features only QEMU's own code handles (a zstd top, an extended-L2 base): the
/// commit is qemu-img's, run by imgchain on its fds (traced as a child process), with the base
/// synced before the top is emptied.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn chains_with_features_only_qemu_handles() {
    let chain = |d: &Path, base_opts: &[&str], top_opts: &[&str], compressed: bool| {
        create(d, "base.qcow2", "qcow2", "1G", None, base_opts);
        qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 1M");
        create(
            d,
            "top.qcow2",
            "qcow2",
            "1G",
            Some(("base.qcow2", "qcow2")),
            top_opts,
        );
        let c = if compressed { "-c " } else { "" };
        for (i, off) in [512u64 << 10, 100 << 20, 700 << 20].iter().enumerate() {
            qemu_io(
                &d.join("top.qcow2"),
                &format!("write {c}-P {} {off} 128k", 0x40 + i),
            );
        }
    };
    compare(
        "zstd top",
        |d| chain(d, &[], &["-o", "compression_type=zstd"], true),
        &[],
    );
    compare(
        "extended L2 base",
        |d| chain(d, &["-o", "extended_l2=on"], &[], false),
        &[],
    );
}

/// A flatten and a rebase of a chain with extended L2 entries: QEMU copies through a
/// copy-on-read node (traced as a child process), then imgchain rewrites the header after a
/// sync.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn flatten_and_rebase_of_a_chain_only_qemu_reads() {
    compare_rebase(
        "flatten, extended L2",
        |d| relink_chain(d, &["-o", "extended_l2=on"]),
        &["flatten"],
        &["rebase", "-b", ""],
    );
    compare_rebase(
        "rebase onto base, extended L2",
        |d| relink_chain(d, &["-o", "extended_l2=on"]),
        &["rebase", "-b", "base.qcow2"],
        &["rebase", "-F", "qcow2", "-b", "base.qcow2"],
    );
}

/// A flatten of a qcow2 v2 top with 4 KiB clusters, upgraded first with `--amend` (QEMU's
/// amend, traced as a child process), beside `qemu-img rebase` on the same v2 top.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_cc)),
    ignore = "needs qemu-img, qemu-io, cc"
)]
fn flatten_of_a_v2_top_amended_first() {
    compare_rebase(
        "flatten, v2 amended",
        |d| relink_chain(d, &["-o", "compat=0.10,cluster_size=4k"]),
        &["flatten", "--amend"],
        &["rebase", "-b", ""],
    );
}
