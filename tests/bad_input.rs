//! Bad input gets a clear diagnostic and changes nothing on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn kinds(n: &Value) -> Vec<&str> {
    n["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect()
}

fn message<'a>(n: &'a Value, kind: &str) -> &'a str {
    n["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind)
        .and_then(|p| p["message"].as_str())
        .unwrap_or_else(|| panic!("no {kind} problem in {n}"))
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn damaged_and_hostile_images_are_diagnosed_and_untouched() {
    let tmp = tempdir();
    let dir = tmp.path();
    create(dir, "base.qcow2", "qcow2", "16M", None, &[]);
    // Corrupt header: cluster_bits = 30.
    create(dir, "badhdr.qcow2", "qcow2", "16M", None, &[]);
    patch(&dir.join("badhdr.qcow2"), 20, &30u32.to_be_bytes());
    // Truncated: only the first 4 KiB of a qcow2 are left.
    create(dir, "trunc.qcow2", "qcow2", "16M", None, &[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("trunc.qcow2"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    // Named like an image, but text.
    std::fs::write(dir.join("fake.qcow2"), "just some text\n").unwrap();
    // Dirty and corrupt bits.
    create(dir, "dirty.qcow2", "qcow2", "16M", None, &[]);
    patch(&dir.join("dirty.qcow2"), 79, &[1]);
    create(dir, "corrupt.qcow2", "qcow2", "16M", None, &[]);
    patch(&dir.join("corrupt.qcow2"), 79, &[2]);
    // A FIFO and /dev/zero named as backing files.
    run(Command::new("mkfifo").arg(dir.join("pipe")));
    create(
        dir,
        "over-fifo.qcow2",
        "qcow2",
        "16M",
        Some(("pipe", "raw")),
        &["-u"],
    );
    create(
        dir,
        "over-zero.qcow2",
        "qcow2",
        "16M",
        Some(("/dev/zero", "raw")),
        &["-u"],
    );
    // A directory named as backing file.
    std::fs::create_dir(dir.join("adir")).unwrap();
    create(
        dir,
        "over-dir.qcow2",
        "qcow2",
        "16M",
        Some(("adir", "qcow2")),
        &["-u"],
    );
    // A protocol backing name.
    create(
        dir,
        "over-nbd.qcow2",
        "qcow2",
        "16M",
        Some(("nbd://127.0.0.1:1/x", "raw")),
        &["-u"],
    );
    // A self loop and a two-image loop.
    create(dir, "self.qcow2", "qcow2", "1M", None, &[]);
    rebase_unsafe(&dir.join("self.qcow2"), "self.qcow2", "qcow2");
    create(dir, "la.qcow2", "qcow2", "1M", None, &[]);
    create(
        dir,
        "lb.qcow2",
        "qcow2",
        "1M",
        Some(("la.qcow2", "qcow2")),
        &[],
    );
    rebase_unsafe(&dir.join("la.qcow2"), "lb.qcow2", "qcow2");
    create(
        dir,
        "above-loop.qcow2",
        "qcow2",
        "1M",
        Some(("lb.qcow2", "qcow2")),
        &["-u"],
    );
    // A backing format that does not match the file.
    create(
        dir,
        "liar.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "raw")),
        &["-u"],
    );
    // A 100-deep chain.
    create(dir, "deep/d000.qcow2", "qcow2", "1M", None, &[]);
    for i in 1..100 {
        let prev = format!("d{:03}.qcow2", i - 1);
        create(
            dir,
            &format!("deep/d{i:03}.qcow2"),
            "qcow2",
            "1M",
            Some((&prev, "qcow2")),
            &[],
        );
    }

    let before = snapshot(dir);
    let t = tree(dir, &[]);
    let check = imgchain(&["check", "--json", dir.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(3), "check fails on problems");
    let after = snapshot(dir);
    assert!(before == after, "a scan changed something on disk");

    let n = |name: &str| node(&t, dir, name);
    assert_eq!(kinds(n("badhdr.qcow2")), ["bad-header"]);
    assert!(message(n("badhdr.qcow2"), "bad-header").contains("cluster size"));
    assert_eq!(kinds(n("trunc.qcow2")), ["bad-header"]);
    assert!(message(n("trunc.qcow2"), "bad-header").contains("truncated"));
    assert_eq!(kinds(n("fake.qcow2")), ["not-an-image"]);
    assert_eq!(n("fake.qcow2")["format"], "raw");
    assert_eq!(kinds(n("dirty.qcow2")), ["dirty"]);
    assert!(message(n("dirty.qcow2"), "dirty").contains("qemu-img check -r all"));
    assert_eq!(kinds(n("corrupt.qcow2")), ["corrupt"]);
    assert_eq!(kinds(n("over-fifo.qcow2")), ["unsafe-backing-path"]);
    assert!(message(n("over-fifo.qcow2"), "unsafe-backing-path").contains("a FIFO"));
    assert_eq!(kinds(n("over-zero.qcow2")), ["unsafe-backing-path"]);
    assert!(message(n("over-zero.qcow2"), "unsafe-backing-path").contains("character device"));
    assert_eq!(kinds(n("over-dir.qcow2")), ["unsafe-backing-path"]);
    assert_eq!(kinds(n("over-nbd.qcow2")), ["protocol-backing"]);
    assert_eq!(
        n("over-nbd.qcow2")["backing"]["resolved"],
        "nbd://127.0.0.1:1/x"
    );
    assert_eq!(kinds(n("self.qcow2")), ["backing-loop"]);
    assert_eq!(kinds(n("la.qcow2")), ["backing-loop"]);
    assert_eq!(kinds(n("lb.qcow2")), ["backing-loop"]);
    assert!(kinds(n("above-loop.qcow2")).is_empty());
    assert_eq!(kinds(n("liar.qcow2")), ["backing-format-mismatch"]);
    assert!(
        !t.keys()
            .any(|k| k.ends_with("/pipe") || k.ends_with("/adir"))
    );
    // The deep chain: every link present, one root, modes right.
    assert_eq!(n("deep/d000.qcow2")["backing"], Value::Null);
    for i in 1..100 {
        let me = n(&format!("deep/d{i:03}.qcow2"));
        assert!(
            me["backing"]["resolved"]
                .as_str()
                .unwrap()
                .ends_with(&format!("d{:03}.qcow2", i - 1))
        );
        assert_eq!(me["mode"], if i == 99 { "rw" } else { "ro" });
    }
    // The loops are cut once, so the forest still holds every image exactly once.
    let roots = imgchain_json(&["tree", "--json", dir.to_str().unwrap()], 0);
    let nodes = roots["nodes"].as_array().unwrap();
    let mut paths: Vec<&str> = nodes.iter().map(|n| n["path"].as_str().unwrap()).collect();
    let total = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), total);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn permissions_are_reported_not_bypassed() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    create(dir, "secret.qcow2", "qcow2", "16M", None, &[]);
    let chmod = |name: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod("base.qcow2", 0o444);
    chmod("secret.qcow2", 0o000);
    let before = snapshot(dir);
    let out = imgchain_unprivileged(&["tree", "--json", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(before == snapshot(dir));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        let p = dir.join(name);
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["path"] == p.to_str().unwrap())
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    // A base whose mode says read-only is keep-RO for that reason, and its overlay is not
    // affected.
    let base = find("base.qcow2");
    assert_eq!(
        (base["mode"].as_str(), base["keep_ro_reason"].as_str()),
        (Some("keep-ro"), Some("file-mode"))
    );
    assert_eq!(find("top.qcow2")["mode"], "rw");
    let secret = find("secret.qcow2");
    assert_eq!(kinds(&secret), ["unreadable"]);
    assert!(message(&secret, "unreadable").contains("Permission denied"));
}

#[test]
fn paths_that_are_not_images_or_directories_are_refused() {
    let tmp = tempdir();
    let fifo = tmp.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    for (path, what) in [
        (Path::new("/dev/zero"), "character device"),
        (fifo.as_path(), "a FIFO"),
        (Path::new("/nonexistent/image.qcow2"), "No such file"),
    ] {
        for args in [
            vec!["tree", path.to_str().unwrap()],
            vec!["info", path.to_str().unwrap()],
            vec!["check", path.to_str().unwrap()],
        ] {
            let out = imgchain(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(what) && err.contains(path.to_str().unwrap()),
                "{args:?}: {err}"
            );
            assert_eq!(err.matches(what).count(), 1, "said once: {err}");
        }
    }
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_damaged_header_is_named_as_such_by_commit() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let top = dir.join("top.qcow2");
    patch(&top, 4, &9u32.to_be_bytes());
    let before = snapshot(dir);
    let out = imgchain(&["commit", top.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{err}");
    assert!(
        err.contains("damaged") && !err.contains("no backing file"),
        "{err}"
    );
    assert!(before == snapshot(dir));
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_clean_forest_checks_clean() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let v = imgchain_json(&["check", "--json", dir.to_str().unwrap()], 0);
    assert_eq!(v["images"], 2);
    assert_eq!(v["problems"], Value::Array(vec![]));
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn symlinks_are_followed_once_and_depth_is_bounded() {
    let tmp = tempdir();
    let dir = tmp.path();
    create(dir, "a/b/c/deep.qcow2", "qcow2", "1M", None, &[]);
    create(dir, "a/top.qcow2", "qcow2", "1M", None, &[]);
    // A loop of directory symlinks, a second name for a directory and for an image, and a
    // dangling link.
    std::os::unix::fs::symlink("..", dir.join("a/b/up")).unwrap();
    std::os::unix::fs::symlink("a/b", dir.join("alias")).unwrap();
    std::os::unix::fs::symlink("a/top.qcow2", dir.join("top-link.qcow2")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling.qcow2")).unwrap();

    let t = tree(dir, &[]);
    assert_eq!(t.len(), 2, "each image once: {:?}", t.keys());
    let v = imgchain_json(&["tree", "--json", dir.to_str().unwrap()], 0);
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(
        skipped.iter().any(|p| p.ends_with("dangling.qcow2")),
        "{skipped:?}"
    );

    // max_depth = 1 sees a/top.qcow2 but not a/b/c/deep.qcow2.
    let cfg = dir.join("shallow.toml");
    std::fs::write(&cfg, "[scan]\nmax_depth = 1\nfollow_symlinks = false\n").unwrap();
    let t = tree(dir, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(t.len(), 1, "{:?}", t.keys());
    assert!(t.keys().next().unwrap().ends_with("a/top.qcow2"));
}

#[test]
fn a_missing_image_is_named_once_and_an_empty_directory_says_so() {
    let tmp = tempdir();
    let missing = tmp.path().join("gone.qcow2");
    for cmd in ["commit", "merge", "flatten", "delete", "info"] {
        let out = imgchain(&[cmd, missing.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{cmd}: {err}"
        );
        assert!(err.contains("gone.qcow2"), "{cmd}: {err}");
    }
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = imgchain(&["tree", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no disk images under"), "{err}");
}
