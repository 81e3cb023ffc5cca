//! The forest against qemu-img: every node's facts, the edges, the modes and their reasons.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// A forest with most shapes users meet. Returns (scanned dir, an outside dir).
fn build(dir: &Path, outside: &Path) {
    create(dir, "base.qcow2", "qcow2", "64M", None, &[]);
    qemu_io(&dir.join("base.qcow2"), "write -P 0xaa 0 1M");
    for vm in ["vm1.qcow2", "vm2.qcow2", "vm3.qcow2"] {
        create(dir, vm, "qcow2", "64M", Some(("base.qcow2", "qcow2")), &[]);
    }
    // A 4-deep chain with an absolute and relative names mixed.
    create(
        dir,
        "chain/c0.qcow2",
        "qcow2",
        "32M",
        None,
        &["-o", "cluster_size=4096"],
    );
    let c0 = dir.join("chain/c0.qcow2");
    create(
        dir,
        "chain/c1.qcow2",
        "qcow2",
        "32M",
        Some((c0.to_str().unwrap(), "qcow2")),
        &[],
    );
    create(
        dir,
        "chain/c2.qcow2",
        "qcow2",
        "32M",
        Some(("c1.qcow2", "qcow2")),
        &["-o", "cluster_size=2M"],
    );
    create(
        dir,
        "chain/c3.qcow2",
        "qcow2",
        "48M",
        Some(("c2.qcow2", "qcow2")),
        &[],
    );
    // A raw base.
    create(dir, "raw/base.img", "raw", "16M", None, &[]);
    create(
        dir,
        "raw/over.qcow2",
        "qcow2",
        "16M",
        Some(("base.img", "raw")),
        &[],
    );
    // qcow2 v2 (the backing format is in a header extension even in v2).
    create(
        dir,
        "v2.qcow2",
        "qcow2",
        "64M",
        Some(("base.qcow2", "qcow2")),
        &["-o", "compat=0.10"],
    );
    // Extended L2, standalone.
    create(
        dir,
        "el2.qcow2",
        "qcow2",
        "8M",
        None,
        &["-o", "extended_l2=on,cluster_size=128k"],
    );
    // A relative name that climbs out of its directory.
    create(
        dir,
        "sub/deep.qcow2",
        "qcow2",
        "64M",
        Some(("../base.qcow2", "qcow2")),
        &[],
    );
    // A missing backing file.
    create(
        dir,
        "missing.qcow2",
        "qcow2",
        "64M",
        Some(("gone.qcow2", "qcow2")),
        &["-u"],
    );
    // A backing file named without a format.
    create(
        dir,
        "nofmt.qcow2",
        "qcow2",
        "64M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    drop_backing_format(&dir.join("nofmt.qcow2"));
    // A loop made by an unsafe rebase.
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
    // A base outside the scanned directory, pulled in through its overlay.
    create(outside, "ext-base.qcow2", "qcow2", "8M", None, &[]);
    let ext = outside.join("ext-base.qcow2");
    create(
        dir,
        "uses-ext.qcow2",
        "qcow2",
        "8M",
        Some((ext.to_str().unwrap(), "qcow2")),
        &[],
    );
    // Something that is not an image at all, and is not named like one.
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

fn problems(n: &Value) -> Vec<String> {
    n["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

fn overlays(n: &Value) -> Vec<String> {
    n["overlays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn mode(n: &Value) -> (String, Option<String>) {
    (
        n["mode"].as_str().unwrap().to_string(),
        n["keep_ro_reason"].as_str().map(String::from),
    )
}

/// Every field ARCHITECTURE.md §5 says must equal qemu-img's, for one node.
fn assert_agrees_with_qemu(n: &Value) {
    let path = Path::new(n["path"].as_str().unwrap());
    let q = qemu_info(path);
    let p = path.display();
    assert_eq!(n["virtual_size"], q["virtual-size"], "{p}: virtual size");
    assert_eq!(n["format"], q["format"], "{p}: format");
    assert_eq!(
        n["cluster_size"],
        q.get("cluster-size").cloned().unwrap_or(Value::Null),
        "{p}: cluster size"
    );
    match q.get("backing-filename") {
        None => assert!(n["backing"].is_null(), "{p}: qemu-img sees no backing file"),
        Some(raw) => {
            assert_eq!(&n["backing"]["raw"], raw, "{p}: backing-filename");
            assert_eq!(
                n["backing"]["full_backing_filename"], q["full-backing-filename"],
                "{p}: full-backing-filename"
            );
        }
    }
    assert_eq!(n["allocated"], q["actual-size"], "{p}: actual size");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn forest_agrees_with_qemu_img() {
    let tmp = tempdir();
    let outside = tempdir();
    let dir = tmp.path();
    build(dir, outside.path());
    let t = tree(dir, &[]);

    // Every image once, the text file not at all, the outside base pulled in.
    let ext = outside.path().join("ext-base.qcow2");
    assert!(
        t.contains_key(ext.to_str().unwrap()),
        "outside base pulled in"
    );
    assert!(!t.keys().any(|k| k.ends_with("notes.txt")));
    assert_eq!(t.len(), 19, "{:?}", t.keys());
    for n in t.values() {
        assert_agrees_with_qemu(n);
    }

    // Edges.
    let d = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let mut base_overlays: Vec<String> = [
        "nofmt.qcow2",
        "sub/deep.qcow2",
        "v2.qcow2",
        "vm1.qcow2",
        "vm2.qcow2",
        "vm3.qcow2",
    ]
    .into_iter()
    .map(d)
    .collect();
    base_overlays.sort();
    assert_eq!(overlays(node(&t, dir, "base.qcow2")), base_overlays);
    assert_eq!(
        overlays(node(&t, dir, "chain/c0.qcow2")),
        vec![d("chain/c1.qcow2")]
    );
    assert_eq!(
        overlays(node(&t, dir, "chain/c2.qcow2")),
        vec![d("chain/c3.qcow2")]
    );
    assert_eq!(
        overlays(node(&t, dir, "raw/base.img")),
        vec![d("raw/over.qcow2")]
    );
    assert_eq!(t[ext.to_str().unwrap()]["overlays"][0], d("uses-ext.qcow2"));
    assert_eq!(node(&t, dir, "raw/base.img")["format"], "raw");

    // Modes.
    let ro = ("ro".to_string(), None);
    let rw = ("rw".to_string(), None);
    for name in [
        "base.qcow2",
        "chain/c0.qcow2",
        "chain/c1.qcow2",
        "chain/c2.qcow2",
        "raw/base.img",
    ] {
        assert_eq!(mode(node(&t, dir, name)), ro, "{name}");
    }
    for name in [
        "vm1.qcow2",
        "chain/c3.qcow2",
        "raw/over.qcow2",
        "el2.qcow2",
        "v2.qcow2",
    ] {
        assert_eq!(mode(node(&t, dir, name)), rw, "{name}");
    }

    // Problems.
    assert_eq!(
        problems(node(&t, dir, "missing.qcow2")),
        vec!["missing-backing"]
    );
    assert_eq!(node(&t, dir, "missing.qcow2")["backing"]["exists"], false);
    assert_eq!(
        problems(node(&t, dir, "nofmt.qcow2")),
        vec!["no-backing-format"]
    );
    assert_eq!(problems(node(&t, dir, "la.qcow2")), vec!["backing-loop"]);
    assert_eq!(problems(node(&t, dir, "lb.qcow2")), vec!["backing-loop"]);
    assert_eq!(
        problems(node(&t, dir, "el2.qcow2")),
        vec!["unsupported-feature"]
    );
    assert_eq!(
        problems(node(&t, dir, "chain/c3.qcow2")),
        vec!["size-mismatch"]
    );
    for name in [
        "base.qcow2",
        "vm1.qcow2",
        "v2.qcow2",
        "raw/over.qcow2",
        "sub/deep.qcow2",
    ] {
        assert!(problems(node(&t, dir, name)).is_empty(), "{name}");
    }
    let msg = node(&t, dir, "missing.qcow2")["problems"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("qemu-img rebase -u -F qcow2 -b NEWPATH"),
        "{msg}"
    );

    // info --json gives the same node as tree --json.
    for name in ["base.qcow2", "chain/c3.qcow2", "raw/base.img", "v2.qcow2"] {
        let p = dir.join(name);
        let info = imgchain_json(&["info", "--json", p.to_str().unwrap()], 0);
        let n = node(&t, dir, name);
        for key in [
            "format",
            "virtual_size",
            "cluster_size",
            "backing",
            "mode",
            "keep_ro_reason",
        ] {
            assert_eq!(info[key], n[key], "{name}: {key}");
        }
        assert_agrees_with_qemu(&info);
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn protect_globs_and_read_only() {
    let tmp = tempdir();
    let outside = tempdir();
    let dir = tmp.path();
    build(dir, outside.path());
    let req = ("keep-ro".to_string(), Some("requested".to_string()));
    let inh = ("keep-ro".to_string(), Some("inherited".to_string()));
    let rw = ("rw".to_string(), None);
    let ro = ("ro".to_string(), None);

    // One protected VM makes the shared base keep-RO; its sibling stays RW.
    let t = tree(dir, &["--protect", "vm2.qcow2"]);
    assert_eq!(mode(node(&t, dir, "vm2.qcow2")), req);
    assert_eq!(mode(node(&t, dir, "base.qcow2")), inh);
    assert_eq!(mode(node(&t, dir, "vm1.qcow2")), rw);
    assert_eq!(mode(node(&t, dir, "chain/c0.qcow2")), ro);

    // A protected leaf makes its whole chain keep-RO; a path glob.
    let t = tree(dir, &["--protect", "**/chain/c3.qcow2"]);
    assert_eq!(mode(node(&t, dir, "chain/c3.qcow2")), req);
    for c in ["chain/c0.qcow2", "chain/c1.qcow2", "chain/c2.qcow2"] {
        assert_eq!(mode(node(&t, dir, c)), inh, "{c}");
    }
    // Protecting the middle leaves the overlay above it RW.
    let t = tree(dir, &["--protect", "c1.qcow2"]);
    assert_eq!(mode(node(&t, dir, "chain/c2.qcow2")), ro);
    assert_eq!(mode(node(&t, dir, "chain/c3.qcow2")), rw);
    assert_eq!(mode(node(&t, dir, "chain/c0.qcow2")), inh);

    // --read-only: everything requested.
    let t = tree(dir, &["--read-only"]);
    assert!(t.values().all(|n| mode(n) == req));

    // Config globs, combined with --protect.
    let cfg = dir.join("imgchain.toml");
    std::fs::write(&cfg, "[protect]\nglobs = [\"vm3.qcow2\"]\n").unwrap();
    let t = tree(
        dir,
        &["--config", cfg.to_str().unwrap(), "--protect", "over.qcow2"],
    );
    assert_eq!(mode(node(&t, dir, "vm3.qcow2")), req);
    assert_eq!(mode(node(&t, dir, "base.qcow2")), inh);
    assert_eq!(mode(node(&t, dir, "raw/over.qcow2")), req);
    assert_eq!(mode(node(&t, dir, "raw/base.img")), inh);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn text_tree_draws_the_forest() {
    let tmp = tempdir();
    let dir = tmp.path();
    create(dir, "base.qcow2", "qcow2", "1G", None, &[]);
    create(
        dir,
        "a.qcow2",
        "qcow2",
        "1G",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    create(
        dir,
        "b.qcow2",
        "qcow2",
        "1G",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    create(
        dir,
        "b2.qcow2",
        "qcow2",
        "1G",
        Some(("b.qcow2", "qcow2")),
        &[],
    );
    create(
        dir,
        "lost.qcow2",
        "qcow2",
        "1G",
        Some(("nowhere.qcow2", "qcow2")),
        &["-u"],
    );
    let out = imgchain(&["--protect", "a.qcow2", "tree", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("base.qcow2 "), "{text}");
    assert!(
        lines[0].contains("1 GiB") && lines[0].ends_with("KRO·inherited"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("├─ a.qcow2") && lines[1].ends_with("KRO·requested"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("└─ b.qcow2") && lines[2].ends_with("RO"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("   ↳ b2.qcow2") && lines[3].ends_with("RW"),
        "{text}"
    );
    let total: u64 = ["base", "a", "b", "b2"]
        .iter()
        .map(|n| std::fs::metadata(dir.join(format!("{n}.qcow2"))).unwrap())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    assert_eq!(
        lines[4],
        format!(
            "    = {} on disk in 4 images",
            imgchain::units::human_size(total)
        ),
        "{text}"
    );
    assert!(
        lines[5].contains("lost.qcow2") && lines[5].ends_with("RW !"),
        "{text}"
    );
    assert!(lines[6].contains("error[missing-backing]"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_symlink_never_takes_over_the_identity_of_the_file_it_names() {
    let tmp = tempdir();
    let d = tmp.path();
    let golden = create(
        d,
        "templates/debian12-golden.qcow2",
        "qcow2",
        "8M",
        None,
        &[],
    );
    // The symlink sorts (and is walked) before the real file.
    std::os::unix::fs::symlink(
        "templates/debian12-golden.qcow2",
        d.join("debian-current.qcow2"),
    )
    .unwrap();
    for vm in ["vm1", "vm2"] {
        create(
            d,
            &format!("vms/{vm}.qcow2"),
            "qcow2",
            "8M",
            Some((golden.to_str().unwrap(), "qcow2")),
            &[],
        );
    }
    let v = imgchain_json(&["tree", "--json", d.to_str().unwrap()], 0);
    let nodes = v["nodes"].as_array().unwrap();
    let paths: Vec<&str> = nodes.iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&golden.to_str().unwrap()), "{paths:?}");
    let link = d.join("debian-current.qcow2");
    assert!(!paths.contains(&link.to_str().unwrap()), "{paths:?}");
    let g = nodes
        .iter()
        .find(|n| n["path"] == golden.to_str().unwrap())
        .unwrap();
    assert_eq!(g["aliases"][0], link.to_str().unwrap());
    assert_eq!(g["overlays"].as_array().unwrap().len(), 2);
    for n in nodes {
        if let Some(r) = n["backing"]["resolved"].as_str() {
            assert!(paths.contains(&r), "{r} is a node's path");
        }
    }
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn paths_shown_have_no_dot_dot() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "golden/base.qcow2", "qcow2", "8M", None, &[]);
    create(
        d,
        "vms/vm.qcow2",
        "qcow2",
        "8M",
        Some(("../golden/base.qcow2", "qcow2")),
        &[],
    );
    // Scanned through the overlay alone, and through a path with `..` in it.
    let odd = d.join("vms/../vms/vm.qcow2");
    for arg in [d.join("vms/vm.qcow2"), odd] {
        let v = imgchain_json(&["tree", "--json", arg.to_str().unwrap()], 0);
        let paths: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["path"].as_str().unwrap().to_string())
            .collect();
        assert!(paths.iter().all(|p| !p.contains("..")), "{paths:?}");
        // The backing names the node by its path; qemu-img's spelling is kept beside it.
        let vm = &v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["path"].as_str().unwrap().ends_with("vm.qcow2"))
            .unwrap()["backing"];
        assert_eq!(
            vm["resolved"],
            d.join("golden/base.qcow2").to_str().unwrap()
        );
        assert_eq!(
            vm["full_backing_filename"],
            d.join("vms/../golden/base.qcow2").to_str().unwrap()
        );
        assert!(
            paths.contains(&d.join("golden/base.qcow2").display().to_string()),
            "{paths:?}"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn disk_usage_counts_an_image_and_everything_built_on_it() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "base.qcow2", "qcow2", "64M", None, &[]);
    for o in ["a.qcow2", "b.qcow2"] {
        create(d, o, "qcow2", "64M", Some(("base.qcow2", "qcow2")), &[]);
    }
    qemu_io(&d.join("a.qcow2"), "write -P 0x11 0 4M");
    let t = tree(d, &[]);
    let bytes = |name: &str| node(&t, d, name)["allocated"].as_u64().unwrap();
    let base = &node(&t, d, "base.qcow2")["disk_usage"];
    assert_eq!(base["own"].as_u64().unwrap(), bytes("base.qcow2"));
    assert_eq!(
        base["subtree"].as_u64().unwrap(),
        bytes("base.qcow2") + bytes("a.qcow2") + bytes("b.qcow2")
    );
    let a = &node(&t, d, "a.qcow2")["disk_usage"];
    assert_eq!(a["own"], a["subtree"]);
    assert!(a["own"].as_u64().unwrap() >= 4 << 20);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn overlay_dirs_bring_in_the_overlays_kept_elsewhere() {
    let tmp = tempdir();
    let (pool, vms, unrelated) = (
        tmp.path().join("pool"),
        tmp.path().join("vms"),
        tmp.path().join("vms/other"),
    );
    for d in [&pool, &unrelated] {
        std::fs::create_dir_all(d).unwrap();
    }
    create(&pool, "golden.qcow2", "qcow2", "64M", None, &[]);
    create(&pool, "lonely.qcow2", "qcow2", "64M", None, &[]);
    let golden = pool.join("golden.qcow2");
    create(
        &vms,
        "mid.qcow2",
        "qcow2",
        "64M",
        Some((arg(&golden), "qcow2")),
        &[],
    );
    create(
        &vms,
        "web.qcow2",
        "qcow2",
        "64M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    create(&unrelated, "own.qcow2", "qcow2", "64M", None, &[]);

    // Without the overlay directory the golden image looks writable, and says why.
    let alone = tree(&pool, &[]);
    assert_eq!(node(&alone, &pool, "golden.qcow2")["mode"], "rw");
    let text = String::from_utf8(imgchain_ok(&["info", arg(&golden)]).stdout).unwrap();
    assert!(
        text.contains("no overlays found under the scanned paths"),
        "{text}"
    );

    // With it (config), the chain through vms/ joins the forest; unrelated images do not.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[scan]\noverlay_dirs = [{:?}]\n", vms.display().to_string()),
    )
    .unwrap();
    let with = tree(&pool, &["--config", arg(&cfg)]);
    assert_eq!(node(&with, &pool, "golden.qcow2")["mode"], "ro");
    assert_eq!(node(&with, &vms, "mid.qcow2")["mode"], "ro");
    assert_eq!(node(&with, &vms, "web.qcow2")["mode"], "rw");
    assert_eq!(node(&with, &pool, "lonely.qcow2")["mode"], "rw");
    assert!(
        !with.contains_key(unrelated.join("own.qcow2").to_str().unwrap()),
        "an image not built on the forest stays out: {:?}",
        with.keys()
    );
    // info --scan does the same for one image.
    let text = String::from_utf8(imgchain_ok(&["info", "--scan", arg(&vms), arg(&golden)]).stdout)
        .unwrap();
    assert!(
        text.contains(&format!(
            "overlay:        {}",
            vms.join("mid.qcow2").display()
        )),
        "{text}"
    );
    // An overlay directory that is not there is reported, and the scan goes on.
    let missing = tmp.path().join("gone");
    let cfg2 = tmp.path().join("c2.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[scan]\noverlay_dirs = [{:?}]\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let out = imgchain(&["--config", arg(&cfg2), "tree", arg(&pool)]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gone"),
        "a missing overlay directory is reported: {err}"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn internal_snapshots_match_qemu_img() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "s.qcow2", "qcow2", "64M", None, &[]);
    let img = d.join("s.qcow2");
    qemu_io(&img, "write -P 1 0 1M");
    for name in ["before-upgrade", "with space", "ünï"] {
        run(Command::new("qemu-img").args(["snapshot", "-c", name, arg(&img)]));
    }
    run(Command::new("qemu-img").args(["snapshot", "-d", "with space", arg(&img)]));
    let ours = imgchain_json(&["info", "--json", arg(&img)], 0);
    let theirs = qemu_info(&img);
    let pick = |v: &Value, date: &str| -> Vec<(String, String, u64, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["name"].as_str().unwrap().to_string(),
                    s[date].as_u64().unwrap(),
                    s["vm-state-size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        pick(&ours["internal_snapshots"], "date-sec"),
        pick(&theirs["snapshots"], "date-sec")
    );
    assert_eq!(ours["internal_snapshots"].as_array().unwrap().len(), 2);
    let text = String::from_utf8(imgchain_ok(&["info", arg(&img)]).stdout).unwrap();
    assert!(
        text.contains("snapshot:     1 \"before-upgrade\""),
        "{text}"
    );
}

/// A 600-layer chain and two snapshots whose names differ only in their dates: `tree` keeps
/// every line within the terminal's columns, every layer's name whole, and the dates apart.
#[test]
fn tree_fits_the_terminal_at_any_depth() {
    let t = tempdir();
    let dir = t.path();
    deep_host(dir, "golden.qcow2");
    let d = dir.to_str().unwrap();
    for cols in [80, 60] {
        let out = imgchain_columns(cols, &["tree", d]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().all(|l| l.chars().count() <= cols),
            "a line is wider than {cols}:\n{text}"
        );
        assert!(lines[0].starts_with("templates/golden.qcow2 "), "{text}");
        for (i, line) in lines.iter().enumerate().take(601).skip(2) {
            let name = format!("↳ app-layer-{i}.qcow2 ");
            assert!(line.contains(&name), "{name:?} at {cols} columns:\n{text}");
        }
        for date in ["20240301.qcow2", "20240415.qcow2"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(date) && l.contains("web02")),
                "{date} at {cols} columns:\n{text}"
            );
        }
    }
    // Into a pipe with no COLUMNS: names whole, however long.
    let out = imgchain(&["tree", d]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("vms/web02-snapshot-before-upgrade-20240301.qcow2"),
        "{text}"
    );
}
