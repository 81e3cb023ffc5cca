//! `imgchain repair`: a chain whose base moved is offered the moved file first, is repaired
//! with `--yes` exactly as `qemu-img rebase -u` would repair it, and changes nothing on a dry
//! run, without a terminal or without a candidate.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// golden/base.qcow2 <- vms/{a,b}.qcow2 (named "../golden/base.qcow2"), then the base moved
/// to archive/, beside a decoy of the same size; returns a copy of the tree from before.
fn moved(root: &Path) -> tempfile::TempDir {
    create(root, "golden/base.qcow2", "qcow2", "32M", None, &[]);
    qemu_io(&root.join("golden/base.qcow2"), "write -P 0x11 0 4M");
    for o in ["a", "b"] {
        let name = format!("vms/{o}.qcow2");
        create(
            root,
            &name,
            "qcow2",
            "32M",
            Some(("../golden/base.qcow2", "qcow2")),
            &[],
        );
        qemu_io(&root.join(&name), "write -P 0x22 1M 64k");
    }
    let before = tempdir();
    copy_dir(root, before.path());
    std::fs::create_dir(root.join("archive")).unwrap();
    std::fs::rename(
        root.join("golden/base.qcow2"),
        root.join("archive/base.qcow2"),
    )
    .unwrap();
    create(root, "archive/decoy.qcow2", "qcow2", "32M", None, &[]);
    before
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_moved_base_is_found_and_repaired_as_qemu_img_would() {
    let tmp = tempdir();
    let d = tmp.path();
    let before = moved(d);
    assert_eq!(imgchain(&["check", arg(d)]).status.code(), Some(3));

    let snap = snapshot(d);
    let out = imgchain(&["repair", "--dry-run", arg(d)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let first = text.lines().find(|l| l.contains("1)")).unwrap();
    assert!(
        first.contains("archive/base.qcow2") && first.contains("same file name"),
        "{text}"
    );
    assert!(text.contains("decoy.qcow2"), "{text}");
    assert!(snap == snapshot(d), "a dry run changes nothing");
    // No terminal and no --yes: it proposes, and changes nothing.
    let out = imgchain(&["repair", arg(d)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--yes"));
    assert!(snap == snapshot(d));

    let theirs = tempdir();
    copy_dir(d, theirs.path());
    let out = imgchain_ok(&["repair", "--yes", arg(d)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("now has backing file"));
    assert_eq!(imgchain(&["check", arg(d)]).status.code(), Some(0));
    // The missing name was relative: so is the new one, as a user moving the tree expects.
    for o in ["vms/a.qcow2", "vms/b.qcow2"] {
        rebase_unsafe(&theirs.path().join(o), "../archive/base.qcow2", "qcow2");
        let ours = qemu_info(&d.join(o));
        assert_eq!(ours["backing-filename"], "../archive/base.qcow2");
        assert_eq!(ours["backing-filename-format"], "qcow2");
        qemu_check(&d.join(o));
        run(Command::new("qemu-img")
            .args(["compare"])
            .arg(d.join(o))
            .arg(before.path().join(o)));
    }
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn an_image_with_no_candidate_is_left_alone() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "gone.qcow2", "qcow2", "16M", None, &[]);
    create(
        d,
        "lost.qcow2",
        "qcow2",
        "16M",
        Some(("gone.qcow2", "qcow2")),
        &[],
    );
    std::fs::remove_file(d.join("gone.qcow2")).unwrap();
    create(d, "other.qcow2", "qcow2", "8M", None, &[]);
    let snap = snapshot(d);
    let out = imgchain(&["repair", "--yes", arg(d)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No image under the scanned paths"));
    assert!(snap == snapshot(d));
    let out = imgchain_ok(&["repair", arg(&d.join("other.qcow2"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No image"));
}

/// An Ubuntu overlay whose base `debian-11.qcow2` is gone, beside six other images of the same
/// size: `--yes` picks none of them (none has the missing name), and every one is listed.
#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn yes_never_picks_a_file_of_another_name_and_nothing_is_left_off_the_list() {
    let t = tempdir();
    let d = t.path();
    create(d, "debian-11.qcow2", "qcow2", "32M", None, &[]);
    create(
        d,
        "vm/ubuntu.qcow2",
        "qcow2",
        "32M",
        Some(("../debian-11.qcow2", "qcow2")),
        &[],
    );
    let gone = tempdir();
    std::fs::rename(
        d.join("debian-11.qcow2"),
        gone.path().join("debian-11.qcow2"),
    )
    .unwrap();
    for i in 0..6 {
        create(d, &format!("other-{i}.qcow2"), "qcow2", "32M", None, &[]);
    }
    let before = snapshot(d);
    let out = imgchain(&["repair", "--yes", arg(d)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    for i in 0..6 {
        assert!(text.contains(&format!("other-{i}.qcow2")), "{text}");
    }
    assert!(before == snapshot(d), "repair --yes changed something");
    // The missing file turns up elsewhere under the scanned paths: it comes first and --yes
    // applies it.
    std::fs::create_dir(d.join("moved")).unwrap();
    std::fs::rename(
        gone.path().join("debian-11.qcow2"),
        d.join("moved/debian-11.qcow2"),
    )
    .unwrap();
    let out = imgchain(&["repair", "--yes", arg(d)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("1) ")
            && text
                .lines()
                .any(|l| l.contains("1) ") && l.contains("moved/debian-11.qcow2")),
        "{text}"
    );
    let (name, _) = backing_of(&d.join("vm/ubuntu.qcow2"));
    assert!(name.ends_with("moved/debian-11.qcow2"), "{name}");
    qemu_check(&d.join("vm/ubuntu.qcow2"));
}

/// An image reached through a symlinked directory: a relative name made from the paths as
/// written would lead elsewhere once the kernel follows the link, so the name written is the
/// absolute one, and the image reads its base.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn a_relative_name_is_kept_only_where_it_reaches_the_file() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "real/golden/base.qcow2", "qcow2", "32M", None, &[]);
    qemu_io(&d.join("real/golden/base.qcow2"), "write -P 0x11 0 4M");
    create(
        d,
        "real/vms/a.qcow2",
        "qcow2",
        "32M",
        Some(("../golden/base.qcow2", "qcow2")),
        &[],
    );
    std::os::unix::fs::symlink(d.join("real/vms"), d.join("vms")).unwrap();
    std::fs::create_dir(d.join("archive")).unwrap();
    std::fs::rename(
        d.join("real/golden/base.qcow2"),
        d.join("archive/base.qcow2"),
    )
    .unwrap();
    let (vms, archive) = (d.join("vms"), d.join("archive"));
    imgchain_ok(&["repair", "--yes", arg(&vms), arg(&archive)]);
    let info = qemu_info(&d.join("vms/a.qcow2"));
    let name = info["backing-filename"].as_str().unwrap().to_string();
    assert!(
        name == arg(&d.join("archive/base.qcow2"))
            || name == arg(&d.join("archive/base.qcow2").canonicalize().unwrap()),
        "{name}"
    );
    qemu_check(&d.join("vms/a.qcow2"));
}
