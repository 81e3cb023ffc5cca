//! Persistent dirty bitmaps through commit and merge, beside the qemu-img sequence on identical
//! copies: each bitmap's dirty byte count as a read-only qemu-storage-daemon reports it, and
//! `qemu-img check` clean without the "lacking bitmap support" warning.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn tools() -> bool {
    ["qemu-img", "qemu-io", "qemu-storage-daemon"]
        .iter()
        .all(|t| have(t))
}

/// Each bitmap's `(count, recording)` as a read-only qemu-storage-daemon sees it.
fn counts(image: &Path) -> BTreeMap<String, (u64, bool)> {
    let dir = tempdir();
    let sock = dir.path().join("qmp.sock");
    // Run where the image is: QEMU opens a relative data file name from its working directory.
    let mut daemon = Command::new("qemu-storage-daemon")
        .current_dir(image.parent().expect("a directory"))
        .arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=f,read-only=on,filename={}",
            image.display()
        ))
        .args(["--blockdev", "driver=qcow2,node-name=q,file=f,read-only=on"])
        .arg("--chardev")
        .arg(format!(
            "socket,path={},server=on,wait=off,id=m",
            sock.display()
        ))
        .args(["--monitor", "chardev=m"])
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-storage-daemon");
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("no QMP socket: {e}"),
        }
    };
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut line = String::new();
    let mut ask = |cmd: &str| -> serde_json::Value {
        writeln!(writer, "{{\"execute\":\"{cmd}\"}}").expect("send");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("read");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            if v.get("return").is_some() {
                return v["return"].clone();
            }
        }
    };
    ask("qmp_capabilities");
    let nodes = ask("query-named-block-nodes");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let node = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node-name"] == "q")
        .expect("the qcow2 node");
    node["dirty-bitmaps"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| {
                    (
                        b["name"].as_str().expect("name").to_string(),
                        (
                            b["count"].as_u64().expect("count"),
                            b["recording"].as_bool().expect("recording"),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `qemu-img check` passes and does not say a program dropped the bitmaps.
fn clean(image: &Path) {
    let out = Command::new("qemu-img")
        .current_dir(image.parent().expect("a directory"))
        .arg("check")
        .arg(image)
        .output()
        .expect("qemu-img check");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {said}", image.display());
    assert!(!said.contains("lacking bitmap support"), "{said}");
    assert!(!said.contains("Leaked"), "{said}");
}

/// `base.qcow2` with bitmap `bb` (4 MiB dirty) <- `top.qcow2` with bitmap `tb` (128 KiB
/// granularity) and data, a zero range and a write inside the base's dirty part.
fn build(dir: &Path) {
    Chain::new(dir, "64M").base("base.qcow2");
    run(Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(dir.join("base.qcow2"))
        .arg("bb"));
    qemu_io(&dir.join("base.qcow2"), "write -P 0x11 0 4M");
    create(
        dir,
        "top.qcow2",
        "qcow2",
        "64M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    run(Command::new("qemu-img")
        .args(["bitmap", "--add", "-g", "131072"])
        .arg(dir.join("top.qcow2"))
        .arg("tb"));
    for cmd in [
        "write -P 0x22 8M 1M",
        "write -P 0x33 3M 64k",
        "write -z 20M 30k",
    ] {
        qemu_io(&dir.join("top.qcow2"), cmd);
    }
}

#[test]
fn commit_marks_the_bases_bitmaps_and_keeps_the_tops_as_qemu_img_does() {
    if !tools() {
        return;
    }
    for extra in [&[][..], &["-d"][..]] {
        let t = twins(build);
        let mut args = vec!["commit"];
        args.extend_from_slice(extra);
        let top = t.ours.join("top.qcow2");
        args.push(arg(&top));
        imgchain_ok(&args);
        run(Command::new("qemu-img")
            .args(["commit", "-q"])
            .args(extra)
            .arg(t.theirs.join("top.qcow2")));
        for name in ["base.qcow2", "top.qcow2"] {
            let (ours, theirs) = (counts(&t.ours.join(name)), counts(&t.theirs.join(name)));
            assert_eq!(ours, theirs, "{name} with {extra:?}");
            assert!(!ours.is_empty(), "{name} keeps its bitmaps");
            clean(&t.ours.join(name));
        }
        assert!(
            counts(&t.ours.join("base.qcow2"))["bb"].0 > 4 << 20,
            "the commit is marked"
        );
        qemu_compare(&t.ours.join("top.qcow2"), &t.theirs.join("top.qcow2"));
    }
}

#[test]
fn commit_into_a_deeper_base_marks_only_the_base() {
    if !tools() {
        return;
    }
    let t = twins(|dir| {
        build(dir);
        std::fs::rename(dir.join("top.qcow2"), dir.join("mid.qcow2")).expect("mv");
        create(
            dir,
            "top.qcow2",
            "qcow2",
            "64M",
            Some(("mid.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&dir.join("top.qcow2"), "write -P 0x44 30M 2M");
    });
    let (ours, theirs) = (t.ours.join("top.qcow2"), t.theirs.join("top.qcow2"));
    let base = t.ours.join("base.qcow2");
    imgchain_ok(&["commit", "--force", "-b", arg(&base), arg(&ours)]);
    run(Command::new("qemu-img")
        .args(["commit", "-q", "-b"])
        .arg(t.theirs.join("base.qcow2"))
        .arg(&theirs));
    for name in ["base.qcow2", "mid.qcow2"] {
        assert_eq!(
            counts(&t.ours.join(name)),
            counts(&t.theirs.join(name)),
            "{name}"
        );
        clean(&t.ours.join(name));
    }
    qemu_compare(&ours, &theirs);
}

#[test]
fn merge_moves_the_layers_bitmaps_into_the_base_as_libvirt_does() {
    if !tools() {
        return;
    }
    let t = twins(|dir| {
        build(dir);
        create(
            dir,
            "over.qcow2",
            "qcow2",
            "64M",
            Some(("top.qcow2", "qcow2")),
            &[],
        );
        run(Command::new("qemu-img")
            .args(["bitmap", "--add", "--disable"])
            .arg(dir.join("top.qcow2"))
            .arg("old"));
    });
    imgchain_ok(&["merge", "--yes", arg(&t.ours.join("top.qcow2"))]);
    // oVirt's cold merge: commit, then each bitmap of the layer added where missing and merged.
    let (top, base) = (t.theirs.join("top.qcow2"), t.theirs.join("base.qcow2"));
    run(Command::new("qemu-img")
        .args(["commit", "-q", "-d"])
        .arg(&top));
    for (name, add) in [
        ("tb", vec!["--add", "-g", "131072"]),
        ("old", vec!["--add", "--disable"]),
    ] {
        run(Command::new("qemu-img")
            .arg("bitmap")
            .args(&add)
            .arg(&base)
            .arg(name));
        run(Command::new("qemu-img")
            .args(["bitmap", "--merge", name, "-b"])
            .arg(&top)
            .args(["-F", "qcow2"])
            .arg(&base)
            .arg(name));
    }
    rebase_unsafe(&t.theirs.join("over.qcow2"), "base.qcow2", "qcow2");
    let ours = counts(&t.ours.join("base.qcow2"));
    assert_eq!(ours, counts(&base));
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(!ours["old"].1, "a disabled bitmap stays disabled");
    clean(&t.ours.join("base.qcow2"));
    assert!(!t.ours.join("top.qcow2").exists());
    qemu_compare(&t.ours.join("over.qcow2"), &t.theirs.join("over.qcow2"));
}

#[test]
fn info_shows_each_bitmap_with_its_dirty_bytes() {
    if !tools() {
        return;
    }
    let dir = tempdir();
    build(dir.path());
    let top = dir.path().join("top.qcow2");
    let v = imgchain_json(&["info", "--json", arg(&top)], 0);
    let list = v["bitmaps"].as_array().expect("bitmaps");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "tb");
    assert_eq!(list[0]["granularity"], 131072);
    assert_eq!(list[0]["recording"], true);
    assert_eq!(list[0]["count"].as_u64(), Some(counts(&top)["tb"].0));
    let text = String::from_utf8_lossy(&imgchain_ok(&["info", arg(&top)]).stdout).to_string();
    assert!(
        text.contains("bitmap:       \"tb\", 128 KiB granularity, enabled, 1.2 MiB dirty"),
        "{text}"
    );
}

#[test]
fn flatten_and_rebase_mark_what_they_copy_as_qemu_img_does() {
    if !tools() {
        return;
    }
    let with_new_base = |dir: &Path| {
        build(dir);
        Chain::new(dir, "64M")
            .base("new.qcow2")
            .io("write -P 0x55 8M 2M")
            .io("write -P 0x66 40M 1M");
    };
    for (ours, theirs) in [
        (vec!["flatten"], vec!["rebase", "-b", ""]),
        (
            vec!["rebase", "-b", "new.qcow2"],
            vec!["rebase", "-b", "new.qcow2", "-F", "qcow2"],
        ),
    ] {
        let t = twins(with_new_base);
        let mut args = ours.clone();
        let top = t.ours.join("top.qcow2");
        args.push(arg(&top));
        imgchain_ok(&args);
        run(Command::new("qemu-img")
            .current_dir(&t.theirs)
            .args(&theirs)
            .arg("top.qcow2"));
        assert_eq!(
            counts(&top),
            counts(&t.theirs.join("top.qcow2")),
            "{ours:?}"
        );
        assert!(
            counts(&top)["tb"].0 > 1310720,
            "{ours:?}: the copy is marked"
        );
        clean(&top);
        qemu_compare(&top, &t.theirs.join("top.qcow2"));
    }
}

#[test]
fn a_header_only_rebase_keeps_the_bitmaps_as_they_are() {
    if !tools() {
        return;
    }
    let dir = tempdir();
    build(dir.path());
    std::fs::copy(
        dir.path().join("base.qcow2"),
        dir.path().join("moved.qcow2"),
    )
    .expect("cp");
    let top = dir.path().join("top.qcow2");
    let before = counts(&top);
    imgchain_ok(&["rebase", "-u", "-b", "moved.qcow2", arg(&top)]);
    assert_eq!(counts(&top), before);
    clean(&top);
}

#[test]
fn without_qemu_img_an_image_with_bitmaps_is_not_written() {
    if !tools() {
        return;
    }
    let dir = tempdir();
    build(dir.path());
    let top = dir.path().join("top.qcow2");
    let before = snapshot(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .env("PATH", "/nonexistent")
        .args(["flatten", arg(&top)])
        .output()
        .expect("imgchain");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{said}");
    assert!(
        said.contains("qemu-img is not installed") && said.contains("qemu-utils"),
        "{said}"
    );
    assert_eq!(before, snapshot(dir.path()));
}

#[test]
fn flatten_and_rebase_through_qemu_mark_what_qemu_img_marks() {
    if !tools() {
        return;
    }
    for top_opts in [&[][..], &["-o", "data_file=top.data"][..]] {
        through_qemu_marks(top_opts);
    }
}

/// Flatten and rebase of `top.qcow2` (created with `top_opts`, with bitmap `tb`) over a base
/// with extended L2 entries, beside `qemu-img rebase`.
fn through_qemu_marks(top_opts: &[&str]) {
    let chain = |dir: &Path| {
        create(
            dir,
            "base.qcow2",
            "qcow2",
            "64M",
            None,
            &["-o", "extended_l2=on"],
        );
        qemu_io(&dir.join("base.qcow2"), "write -P 0x11 0 4M");
        create(
            dir,
            "mid.qcow2",
            "qcow2",
            "64M",
            Some(("base.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&dir.join("mid.qcow2"), "write -P 0x22 6M 1M");
        create(
            dir,
            "top.qcow2",
            "qcow2",
            "64M",
            Some(("mid.qcow2", "qcow2")),
            top_opts,
        );
        run(Command::new("qemu-img")
            .current_dir(dir)
            .args(["bitmap", "--add", "top.qcow2", "tb"]));
        run(Command::new("qemu-io").current_dir(dir).args([
            "-c",
            "write -P 0x33 1M 64k",
            "top.qcow2",
        ]));
    };
    for (ours, theirs) in [
        (vec!["flatten"], vec!["rebase", "-b", ""]),
        (
            vec!["rebase", "-b", "base.qcow2"],
            vec!["rebase", "-b", "base.qcow2", "-F", "qcow2"],
        ),
    ] {
        let t = twins(chain);
        let top = t.ours.join("top.qcow2");
        let mut args = ours.clone();
        args.push(arg(&top));
        let out = imgchain_ok(&args);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("QEMU"),
            "{ours:?} {top_opts:?}"
        );
        run(Command::new("qemu-img")
            .current_dir(&t.theirs)
            .args(&theirs)
            .arg("top.qcow2"));
        assert_eq!(
            counts(&top),
            counts(&t.theirs.join("top.qcow2")),
            "{ours:?} {top_opts:?}"
        );
        assert!(counts(&top)["tb"].0 > 64 << 10, "{ours:?} {top_opts:?}");
        clean(&top);
        assert!(
            guest(&t.ours, "top.qcow2") == guest(&t.theirs, "top.qcow2"),
            "{ours:?} {top_opts:?}: the guest views differ"
        );
    }
}

/// Merge of a layer with bitmaps over a base only QEMU's tools write (zstd, a data file): the
/// layer's bitmaps end in the base as after oVirt's cold merge.
#[test]
fn merge_through_qemu_moves_the_layers_bitmaps_as_ovirt_does() {
    if !tools() {
        return;
    }
    for base_opts in ["compression_type=zstd", "data_file=base.data"] {
        let t = twins(|dir| {
            create(dir, "base.qcow2", "qcow2", "64M", None, &["-o", base_opts]);
            let q = |args: &[&str]| run(Command::new("qemu-img").current_dir(dir).args(args));
            q(&["bitmap", "--add", "base.qcow2", "bb"]);
            run(Command::new("qemu-io").current_dir(dir).args([
                "-c",
                "write -P 0x11 0 4M",
                "base.qcow2",
            ]));
            create(
                dir,
                "top.qcow2",
                "qcow2",
                "64M",
                Some(("base.qcow2", "qcow2")),
                &[],
            );
            q(&["bitmap", "--add", "-g", "131072", "top.qcow2", "tb"]);
            run(Command::new("qemu-io").current_dir(dir).args([
                "-c",
                "write -P 0x22 8M 1M",
                "top.qcow2",
            ]));
            create(
                dir,
                "over.qcow2",
                "qcow2",
                "64M",
                Some(("top.qcow2", "qcow2")),
                &[],
            );
        });
        let out = imgchain_ok(&["merge", "--yes", arg(&t.ours.join("top.qcow2"))]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("qemu-img commit"), "{base_opts}: {said}");
        let q = |args: &[&str]| run(Command::new("qemu-img").current_dir(&t.theirs).args(args));
        q(&["commit", "-q", "-d", "top.qcow2"]);
        q(&["bitmap", "--add", "-g", "131072", "base.qcow2", "tb"]);
        q(&[
            "bitmap",
            "--merge",
            "tb",
            "-b",
            "top.qcow2",
            "-F",
            "qcow2",
            "base.qcow2",
            "tb",
        ]);
        rebase_unsafe(&t.theirs.join("over.qcow2"), "base.qcow2", "qcow2");
        let ours = counts(&t.ours.join("base.qcow2"));
        assert_eq!(ours, counts(&t.theirs.join("base.qcow2")), "{base_opts}");
        assert_eq!(ours.len(), 2, "{base_opts}: {ours:?}");
        assert!(ours["bb"].0 > 4 << 20, "{base_opts}: the commit is marked");
        clean(&t.ours.join("base.qcow2"));
        assert!(!t.ours.join("top.qcow2").exists(), "{base_opts}");
        assert!(
            guest(&t.ours, "over.qcow2") == guest(&t.theirs, "over.qcow2"),
            "{base_opts}: the guest views differ"
        );
    }
}

/// What the guest of `name` in `dir` reads (converted to raw from `dir`, where QEMU finds a
/// relative data file name).
fn guest(dir: &Path, name: &str) -> Vec<u8> {
    let out = tempdir();
    let raw = out.path().join("guest.raw");
    run(Command::new("qemu-img")
        .current_dir(dir)
        .args(["convert", "-O", "raw", name])
        .arg(&raw));
    std::fs::read(&raw).expect("the converted guest")
}
