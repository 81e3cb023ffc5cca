//! Undo on a cloning filesystem: commit, merge, flatten and rebase on a loop-mounted XFS, each
//! undone: every image of the chain byte for byte as before, checked clean; refused after a
//! later write; on ext4 the plan says there is no undo and `undo` has nothing to do.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn md5s(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(d)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "qcow2"))
        .map(|p| {
            let data = std::fs::read(&p).expect("read");
            (p, data)
        })
        .collect();
    v.sort();
    v
}

/// base <- mid <- top on the filesystem at `d`, each layer with data of its own.
fn chain(d: &Path) {
    Chain::new(d, "64M")
        .base("base.qcow2")
        .on("mid.qcow2")
        .on("top.qcow2");
    qemu_io(&d.join("base.qcow2"), "write -P 0x11 0 8M");
    qemu_io(&d.join("mid.qcow2"), "write -P 0x22 4M 8M");
    qemu_io(&d.join("top.qcow2"), "write -P 0x33 10M 4M");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn each_operation_undone_on_xfs_is_byte_for_byte_as_before() {
    let Some(fs) = SmallFs::new(600) else { return };
    let ops: [&[&str]; 4] = [
        &["commit", "top.qcow2"],
        &["merge", "--yes", "mid.qcow2"],
        &["flatten", "top.qcow2"],
        &["rebase", "-b", "base.qcow2", "top.qcow2"],
    ];
    for op in ops {
        let d = fs.path().join(op[0]);
        std::fs::create_dir(&d).expect("mkdir");
        chain(&d);
        let before = md5s(&d);
        let mut args: Vec<String> = op.iter().map(|a| a.to_string()).collect();
        let image = d.join(op[op.len() - 1]);
        *args.last_mut().expect("image") = image.display().to_string();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut dry = argv.clone();
        dry.insert(1, "--dry-run");
        dry.insert(2, "--json");
        let plan = imgchain_json(&dry, 0);
        assert_eq!(plan["undo"]["offered"], true, "{op:?}: {plan}");
        imgchain_ok(&argv);
        assert_ne!(md5s(&d), before, "{op:?} changed nothing");
        let v = imgchain_json(&["undo", "--json", arg(&d)], 0);
        assert_documented(&v, "undo --json");
        assert_eq!(md5s(&d), before, "{op:?}: undo is not byte for byte");
        for (p, _) in &before {
            qemu_check(p);
        }
        // Nothing left to undo.
        let out = imgchain(&["undo", arg(&d)]);
        assert_eq!(out.status.code(), Some(1), "{op:?}");
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn undo_is_refused_after_a_later_write() {
    let Some(fs) = SmallFs::new(300) else { return };
    let d = fs.path();
    chain(d);
    imgchain_ok(&["commit", arg(&d.join("top.qcow2"))]);
    qemu_io(&d.join("top.qcow2"), "write -P 0x44 0 64k");
    let after = md5s(d);
    refused_in(
        d,
        &["undo", arg(d)],
        1,
        &["top.qcow2", "changed since the commit"],
    );
    assert_eq!(md5s(d), after, "a refused undo changed something");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn on_ext4_the_plan_says_no_undo_and_there_is_nothing_to_undo() {
    let t = tempdir();
    let d = t.path();
    if imgchain::ops::undo::support(&d.join("x")).is_ok() {
        eprintln!("the temporary directory can clone; this case needs one that cannot");
        return;
    }
    chain(d);
    let plan = imgchain_json(
        &["commit", "--dry-run", "--json", arg(&d.join("top.qcow2"))],
        0,
    );
    assert_eq!(plan["undo"]["offered"], false, "{plan}");
    let out = imgchain_ok(&["commit", "--dry-run", arg(&d.join("top.qcow2"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Undo: no undo here"));
    imgchain_ok(&["commit", arg(&d.join("top.qcow2"))]);
    refused_in(d, &["undo", arg(d)], 1, &["nothing to undo"]);
}

/// kill -9 at any moment of a commit on XFS: before its first write (while it clones) the
/// chain is as it was; its undo record is then unfinished, undo refuses it and names where
/// the clones are, and emptying the trash removes it.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_kill_while_cloning_leaves_the_chain_unchanged() {
    use std::process::Command;
    use std::time::Duration;
    let Some(fs) = SmallFs::new(600) else { return };
    let mut unchanged_kills = 0;
    for delay_ms in [0u64, 1, 2, 3, 5, 8, 12, 20] {
        let d = fs.path().join(format!("k{delay_ms}"));
        std::fs::create_dir(&d).expect("mkdir");
        chain(&d);
        let before = md5s(&d);
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgchain"))
            .args(["commit", arg(&d.join("top.qcow2"))])
            .env("HOME", "/nonexistent")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        for (p, _) in md5s(&d) {
            qemu_check(&p);
        }
        let after_kill = md5s(&d);
        let undo = imgchain(&["undo", arg(&d)]);
        let said = String::from_utf8_lossy(&undo.stderr).into_owned();
        if after_kill == before {
            unchanged_kills += 1;
            // Killed before it wrote: nothing to put back, or an unfinished record.
            assert!(
                said.contains("nothing to undo") || said.contains("did not finish"),
                "{delay_ms} ms: {said}"
            );
            assert_eq!(md5s(&d), before, "{delay_ms} ms: a refused undo wrote");
        } else if status.success() {
            assert_eq!(
                md5s(&d),
                before,
                "{delay_ms} ms: a finished commit was not undone"
            );
        } else {
            assert!(said.contains("did not finish"), "{delay_ms} ms: {said}");
        }
        imgchain_ok(&["trash", "empty", "--older-than", "0", "--yes", arg(&d)]);
    }
    assert!(unchanged_kills > 0, "no kill landed before the first write");
}

/// An XFS made without reflink cannot clone: the plan says so and why; on one that can,
/// --no-undo records nothing.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn no_reflink_and_no_undo_record_nothing() {
    let Some(fs) = SmallFs::made_with(300, &["-m", "reflink=0"]) else {
        return;
    };
    let d = fs.path();
    chain(d);
    let top = d.join("top.qcow2");
    let plan = imgchain_json(&["commit", "--dry-run", "--json", arg(&top)], 0);
    assert_eq!(plan["undo"]["offered"], false, "{plan}");
    assert!(
        plan["undo"]["why"]
            .as_str()
            .is_some_and(|w| w.contains("without reflink")),
        "{plan}"
    );
    let Some(fs) = SmallFs::new(300) else { return };
    let d = fs.path();
    chain(d);
    let top = d.join("top.qcow2");
    let plan = imgchain_json(
        &["--no-undo", "commit", "--dry-run", "--json", arg(&top)],
        0,
    );
    assert!(plan["undo"].is_null(), "{plan}");
    imgchain_ok(&["--no-undo", "commit", arg(&top)]);
    refused_in(d, &["undo", arg(d)], 1, &["nothing to undo"]);
}
