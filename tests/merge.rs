//! `imgchain merge` against the qemu-img sequence it replaces (`qemu-img commit -d`, `qemu-img
//! rebase -u` of each overlay, `rm`) on identical copies; its guards; an interrupted merge
//! that `check` reports and the next run finishes; and kill -9 at 30 points of a merge, each
//! followed by a run that finishes it with every overlay's disk unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// base <- snap <- {a, b, c}, each layer with data of its own; `fmt` is the base's format.
fn middle(d: &Path, fmt: &str, opts: &[&str], mib: u64) {
    let base = format!("base.{}", if fmt == "raw" { "img" } else { "qcow2" });
    create(d, &base, fmt, "256M", None, opts);
    qemu_io_fmt(&d.join(&base), fmt, &format!("write -P 0x11 0 {mib}M"));
    create(d, "snap.qcow2", "qcow2", "256M", Some((&base, fmt)), opts);
    qemu_io(
        &d.join("snap.qcow2"),
        &format!("write -P 0x22 {}M {mib}M", mib / 2),
    );
    qemu_io(&d.join("snap.qcow2"), "write -z 200M 1M");
    for (i, o) in ["a", "b", "c"].iter().enumerate() {
        let name = format!("{o}.qcow2");
        create(
            d,
            &name,
            "qcow2",
            "256M",
            Some(("snap.qcow2", "qcow2")),
            &[],
        );
        qemu_io(
            &d.join(&name),
            &format!("write -P {} {}M 1M", 0x30 + i, 10 * i),
        );
    }
}

const OVERLAYS: [&str; 3] = ["a.qcow2", "b.qcow2", "c.qcow2"];

/// Every overlay of `orig` reads the same in `d`, `qemu-img check` finds nothing.
fn overlays_unchanged(orig: &Path, d: &Path) {
    for o in OVERLAYS {
        qemu_check(&d.join(o));
        qemu_compare(&d.join(o), &orig.join(o));
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn merge_equals_the_qemu_img_sequence() {
    for (fmt, opts) in [
        ("qcow2", &[][..]),
        ("qcow2", &["-o", "compat=0.10"][..]),
        ("raw", &[][..]),
    ] {
        let root = tempdir();
        let (orig, ours, theirs) = (
            root.path().join("orig"),
            root.path().join("ours"),
            root.path().join("theirs"),
        );
        for d in [&orig, &ours, &theirs] {
            std::fs::create_dir(d).unwrap();
        }
        middle(&orig, fmt, opts, 8);
        copy_dir(&orig, &ours);
        copy_dir(&orig, &theirs);
        let base = if fmt == "raw" {
            "base.img"
        } else {
            "base.qcow2"
        };
        let v = imgchain_json(
            &["merge", "--yes", "--json", arg(&ours.join("snap.qcow2"))],
            0,
        );
        assert_eq!(v["relinked"].as_array().unwrap().len(), 3, "{v}");
        run(Command::new("qemu-img")
            .current_dir(&theirs)
            .args(["commit", "-d", "snap.qcow2"]));
        for o in OVERLAYS {
            rebase_unsafe(&theirs.join(o), base, fmt);
        }
        std::fs::remove_file(theirs.join("snap.qcow2")).unwrap();
        assert!(!ours.join("snap.qcow2").exists());
        overlays_unchanged(&orig, &ours);
        for o in OVERLAYS {
            assert_eq!(backing_of(&ours.join(o)), backing_of(&theirs.join(o)));
            qemu_compare(&ours.join(o), &theirs.join(o));
        }
        if fmt == "qcow2" {
            qemu_check(&ours.join(base));
        }
        qemu_compare(&ours.join(base), &theirs.join(base));
        let names: Vec<String> = std::fs::read_dir(&ours)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with('.') || n == ".imgchain-trash"),
            "no journal or temporary file left: {names:?}"
        );
        let trashed = imgchain_json(&["trash", "list", "--json", arg(&ours)], 0);
        assert_eq!(
            trashed["entries"][0]["files"][0]["path"],
            arg(&ours.join("snap.qcow2")),
            "the merged layer is in the trash: {trashed}"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn merging_a_layer_of_a_deep_chain_and_keeping_the_file() {
    let root = tempdir();
    let (orig, d) = (root.path().join("orig"), root.path().join("d"));
    std::fs::create_dir(&orig).unwrap();
    create(&orig, "l0.qcow2", "qcow2", "64M", None, &[]);
    for i in 1..5u64 {
        create(
            &orig,
            &format!("l{i}.qcow2"),
            "qcow2",
            "64M",
            Some((&format!("l{}.qcow2", i - 1), "qcow2")),
            &[],
        );
    }
    for i in 0..5u64 {
        qemu_io(
            &orig.join(format!("l{i}.qcow2")),
            &format!("write -P {} {}M 2M", 0x10 + i, i),
        );
    }
    std::fs::create_dir(&d).unwrap();
    copy_dir(&orig, &d);
    imgchain_ok(&["merge", "--yes", "--keep", arg(&d.join("l2.qcow2"))]);
    assert!(d.join("l2.qcow2").exists(), "--keep keeps it");
    assert_eq!(backing_of(&d.join("l3.qcow2")).0, "l1.qcow2");
    for i in [3, 4] {
        qemu_compare(
            &d.join(format!("l{i}.qcow2")),
            &orig.join(format!("l{i}.qcow2")),
        );
        qemu_check(&d.join(format!("l{i}.qcow2")));
    }
    let t = tree(&d, &[]);
    assert_eq!(
        node(&t, &d, "l2.qcow2")["overlays"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn merge_guards_change_nothing() {
    let tmp = tempdir();
    let d = tmp.path();
    middle(d, "qcow2", &[], 4);
    let p = |n: &str| arg(&d.join(n)).to_string();
    refused_in(
        d,
        &["merge", "--yes", &p("base.qcow2")],
        10,
        &["nothing to merge it into"],
    );
    refused_in(
        d,
        &["--protect", "b.qcow2", "merge", "--yes", &p("snap.qcow2")],
        11,
        &["b.qcow2"],
    );
    refused_in(
        d,
        &[
            "--protect",
            "base.qcow2",
            "merge",
            "--yes",
            &p("snap.qcow2"),
        ],
        11,
        &["base.qcow2"],
    );
    {
        let _vm = hold_with_qemu_io(&d.join("c.qcow2"));
        refused_in(d, &["merge", "--yes", &p("snap.qcow2")], 12, &["c.qcow2"]);
    }
    // Another VM built on the base: its disk would change.
    create(
        d,
        "other.qcow2",
        "qcow2",
        "256M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    refused_in(
        d,
        &["merge", "--yes", &p("snap.qcow2")],
        13,
        &["other.qcow2"],
    );
    // Forced, with a persistent bitmap in the base: the plan names the changed disks and says
    // the bitmap is marked with what the merge writes.
    run(Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(d.join("base.qcow2"))
        .arg("b0"));
    let before = snapshot(d);
    let out = imgchain_ok(&["merge", "--force", "--dry-run", &p("snap.qcow2")]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("see their disks change:"), "{plan}");
    assert!(plan.contains("other.qcow2"), "{plan}");
    assert!(
        plan.contains("bitmaps \"b0\" are marked with what it writes"),
        "{plan}"
    );
    assert!(!plan.contains("No overlay's disk changes"), "{plan}");
    assert!(before == snapshot(d), "a dry run changes nothing");
    run(Command::new("qemu-img")
        .args(["bitmap", "--remove"])
        .arg(d.join("base.qcow2"))
        .arg("b0"));
    std::fs::remove_file(d.join("other.qcow2")).unwrap();
    // A larger base would show through past the end of a smaller middle layer.
    let tmp2 = tempdir();
    let e = tmp2.path();
    create(e, "big.qcow2", "qcow2", "64M", None, &[]);
    qemu_io(&e.join("big.qcow2"), "write -P 0x66 40M 1M");
    create(
        e,
        "small.qcow2",
        "qcow2",
        "32M",
        Some(("big.qcow2", "qcow2")),
        &[],
    );
    create(
        e,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("small.qcow2", "qcow2")),
        &[],
    );
    let before = snapshot(e);
    let out = imgchain(&["merge", "--yes", arg(&e.join("small.qcow2"))]);
    assert_eq!(out.status.code(), Some(16));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reads zeroes"));
    assert!(before == snapshot(e));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn an_interrupted_merge_is_reported_and_the_next_run_finishes_it() {
    let root = tempdir();
    let (orig, d) = (root.path().join("orig"), root.path().join("d"));
    std::fs::create_dir(&orig).unwrap();
    std::fs::create_dir(&d).unwrap();
    middle(&orig, "qcow2", &[], 4);
    copy_dir(&orig, &d);
    // The state a merge leaves when it stops after its commit and the first overlay: the base
    // holds snap's data, a.qcow2 names the base, and the journal says so.
    imgchain_ok(&["commit", "-d", arg(&d.join("snap.qcow2"))]);
    rebase_unsafe(&d.join("a.qcow2"), "base.qcow2", "qcow2");
    let journal = serde_json::json!({
        "image": arg(&d.join("snap.qcow2")),
        "base": arg(&d.join("base.qcow2")),
        "overlays": OVERLAYS.iter().map(|o| arg(&d.join(o)).to_string()).collect::<Vec<_>>(),
        "committed": true,
        "image_id": file_id(&d.join("snap.qcow2")),
        "base_id": file_id(&d.join("base.qcow2")),
    });
    let path = d.join(".snap.qcow2.imgchain-merge");
    std::fs::write(&path, journal.to_string()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = imgchain(&["check", arg(&d)]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interrupted-merge"), "{text}");
    assert!(text.contains("imgchain merge"), "{text}");
    overlays_unchanged(&orig, &d);
    let v = imgchain_json(&["merge", "--yes", "--json", arg(&d.join("snap.qcow2"))], 0);
    assert_eq!(v["resumed"], true, "{v}");
    assert_eq!(v["commit"], serde_json::Value::Null, "not committed twice");
    overlays_unchanged(&orig, &d);
    assert!(!d.join("snap.qcow2").exists());
    assert!(!d.join(".snap.qcow2.imgchain-merge").exists());
    assert_eq!(imgchain(&["check", arg(&d)]).status.code(), Some(0));
}

/// A file's identity as a merge journal records it.
fn file_id(p: &Path) -> serde_json::Value {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).unwrap();
    serde_json::json!({"dev": md.dev(), "ino": md.ino()})
}

/// Runs `imgchain merge` until it succeeds, repairing a base a kill left dirty as the error
/// says; returns how many runs that took.
fn finish(d: &Path) -> u32 {
    for run in 1..=4 {
        if !d.join("snap.qcow2").exists() && !d.join(".snap.qcow2.imgchain-merge").exists() {
            return run - 1;
        }
        let out = imgchain(&["merge", "--yes", arg(&d.join("snap.qcow2"))]);
        match out.status.code() {
            Some(0) => return run,
            Some(16) => {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("qemu-img check -r all"), "{err}");
                common::run(
                    Command::new("qemu-img")
                        .args(["check", "-q", "-r", "all"])
                        .arg(d.join("base.qcow2")),
                );
            }
            c => panic!(
                "merge after a kill exited {c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    panic!("merge did not finish in four runs");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn killed_at_30_points_then_the_next_run_finishes() {
    let root = tempdir();
    let orig = root.path().join("orig");
    std::fs::create_dir(&orig).unwrap();
    middle(&orig, "qcow2", &[], 48);
    // How long an uninterrupted merge takes here, to spread the kills over it: the fastest of
    // three runs, so that on a loaded machine the kills still land inside one.
    let mut full = Duration::MAX;
    for i in 0..3 {
        let timed = root.path().join(format!("timed{i}"));
        std::fs::create_dir(&timed).unwrap();
        copy_dir(&orig, &timed);
        let t0 = Instant::now();
        imgchain_ok(&["merge", "--yes", arg(&timed.join("snap.qcow2"))]);
        full = full.min(t0.elapsed());
        std::fs::remove_dir_all(&timed).unwrap();
    }
    let points = 30u32;
    let mut landed = 0;
    for i in 0..points {
        let d = root.path().join(format!("k{i}"));
        std::fs::create_dir(&d).unwrap();
        copy_dir(&orig, &d);
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgchain"))
            .args(["merge", "--yes", arg(&d.join("snap.qcow2"))])
            .env("XDG_CONFIG_HOME", root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(
            full.mul_f64(f64::from(i) / f64::from(points)) + Duration::from_millis(2),
        );
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            landed += 1;
        }
        // Whatever the kill left, every overlay reads as before...
        for o in OVERLAYS {
            qemu_compare(&d.join(o), &orig.join(o));
        }
        // ...and the next run finishes the merge.
        finish(&d);
        overlays_unchanged(&orig, &d);
        for o in OVERLAYS {
            assert_eq!(backing_of(&d.join(o)).0, "base.qcow2");
        }
        qemu_check(&d.join("base.qcow2"));
        assert!(!d.join(".snap.qcow2.imgchain-merge").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
    println!("{landed} of {points} kills landed inside a {full:?} merge");
    assert!(landed >= points / 2, "only {landed} kills landed mid-merge");
}
