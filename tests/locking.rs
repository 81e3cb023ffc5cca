//! QEMU-compatible locking against the real QEMU tools, in both directions.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use common::*;
use imgchain::image::lock::{Access, ImageLock, LockError};
use serde_json::Value;

fn acquire(path: &Path, access: Access) -> Result<ImageLock, LockError> {
    let f = std::fs::File::open(path).unwrap();
    ImageLock::acquire(f.as_fd(), path, access)
}

/// What imgchain reports while `held` keeps top.qcow2 open read-write.
fn assert_reports_holder(dir: &Path, pid: u32) {
    let t = tree(dir, &[]);
    let top = &node(&t, dir, "top.qcow2")["in_use"];
    let base = &node(&t, dir, "base.qcow2")["in_use"];
    assert_eq!(top["pid"], Value::from(pid), "{top}");
    assert_eq!(top["write"], true);
    assert_eq!(base["pid"], Value::from(pid), "{base}");
    assert_eq!(base["write"], false);
    assert_eq!(base["unshared"], serde_json::json!(["write", "resize"]));

    let text = String::from_utf8(imgchain(&["tree", dir.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains(&format!("[{pid}], writing")), "{text}");
    assert!(text.contains(&format!("[{pid}], reading")), "{text}");

    // Our writer is refused on both, with QEMU's words and the holder named.
    for name in ["top.qcow2", "base.qcow2"] {
        let p = dir.join(name);
        match acquire(&p, Access::READ_WRITE) {
            Err(e @ LockError::InUse { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("Failed to get \"write\" lock"), "{msg}");
                assert!(
                    msg.contains(&format!(
                        "Is another process using the image [{}]?",
                        p.display()
                    )),
                    "{msg}"
                );
                assert!(msg.contains(&format!("pid {pid}")), "{msg}");
                assert!(msg.contains("Shut the VM"), "{msg}");
            }
            other => panic!("{name}: expected InUse, got {other:?}"),
        }
    }
    // A reader like QEMU's backing open: fine on the base, refused on the written top.
    acquire(&dir.join("base.qcow2"), Access::READ_ONLY)
        .expect("read-only base is shareable")
        .release();
    let e = acquire(&dir.join("top.qcow2"), Access::READ_ONLY).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Failed to get shared \"write\" lock"),
        "{e}"
    );
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn qemu_io_holding_a_chain_is_seen_and_respected() {
    let tmp = tempdir();
    base_and_top(tmp.path());
    let held = hold_with_qemu_io(&tmp.path().join("top.qcow2"));
    assert_reports_holder(tmp.path(), held.pid());
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_storage_daemon)),
    ignore = "needs qemu-img, qemu-storage-daemon"
)]
fn storage_daemon_holding_a_chain_is_seen_and_respected() {
    let tmp = tempdir();
    base_and_top(tmp.path());
    let held = hold_with_storage_daemon(&tmp.path().join("top.qcow2"));
    assert_reports_holder(tmp.path(), held.pid());
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn qemu_respects_our_commit_target_locks() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let base_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&base)
        .unwrap();
    let lock = ImageLock::acquire(base_file.as_fd(), &base, Access::READ_WRITE).unwrap();

    let out = Command::new("qemu-io")
        .args(["-c", "read 0 512"])
        .arg(&top)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "qemu-io opened the chain while we hold the base"
    );
    assert!(err.contains("Failed to get shared \"write\" lock"), "{err}");
    assert!(err.contains("Is another process using the image"), "{err}");
    // -U (force share) still reads.
    run(Command::new("qemu-img").args(["info", "-U"]).arg(&base));
    // imgchain itself sees its own lock from another process.
    let t = tree(dir, &[]);
    assert_eq!(node(&t, dir, "base.qcow2")["in_use"]["write"], true);
    assert_eq!(
        node(&t, dir, "base.qcow2")["in_use"]["pid"],
        Value::from(std::process::id())
    );

    lock.release();
    run(Command::new("qemu-io").args(["-c", "read 0 512"]).arg(&top));
    run(Command::new("qemu-img").arg("info").arg(&base));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn browsing_holds_no_locks() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let scan = imgchain::forest::scan(&[dir.to_path_buf()], &Default::default()).unwrap();
    assert_eq!(scan.forest.nodes.len(), 2);
    // While the forest is in memory: QEMU can open everything read-write.
    run(Command::new("qemu-io")
        .args(["-c", "write 0 512"])
        .arg(dir.join("top.qcow2")));
    run(Command::new("qemu-io")
        .args(["-c", "write 0 512"])
        .arg(dir.join("base.qcow2")));
    run(Command::new("qemu-img")
        .arg("info")
        .arg(dir.join("base.qcow2")));
    // And no fd of ours carries a lock.
    for fd in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let text = std::fs::read_to_string(fd.path()).unwrap_or_default();
        assert!(
            !text.contains("OFDLCK"),
            "fd {:?} holds a lock: {text}",
            fd.file_name()
        );
    }
    drop(scan);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn the_ui_sees_a_vm_start_and_stop_while_it_is_open() {
    use imgchain::tui::app::{App, Effect, Msg, Settings};
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let c = imgchain::config::Config::default();
    let mut app = App::new(Settings {
        roots: vec![dir.to_path_buf()],
        keymap: imgchain::tui::keymap::Keymap::new(&c.keys),
        theme: imgchain::tui::theme::Theme::new(&c.theme, false),
        protect: imgchain::forest::Protect::new(false, &[] as &[&str]).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    let scan = imgchain::forest::scan(&[dir.to_path_buf()], &Default::default()).unwrap();
    app.update(Msg::Scanned(Box::new(Ok(scan))));
    let sweep = |app: &mut App| {
        let fx = app.update(Msg::Tick);
        let Some(Effect::SweepLocks(images)) = fx.into_iter().next() else {
            panic!("a tick asks for a sweep");
        };
        app.update(Msg::Locks(imgchain::image::lock::sweep(&images)));
    };
    let top = app.browse.forest.find(&dir.join("top.qcow2")).unwrap();
    let base = app.browse.forest.find(&dir.join("base.qcow2")).unwrap();
    assert!(!app.browse.forest.node(top).in_use());
    {
        let held = hold_with_qemu_io(&dir.join("top.qcow2"));
        sweep(&mut app);
        let n = app.browse.forest.node(top);
        assert!(n.in_use() && n.foreign.writer());
        assert_eq!(n.holders.first().map(|h| h.pid), Some(held.pid()));
        assert!(
            app.browse.forest.node(base).in_use() && !app.browse.forest.node(base).foreign.writer()
        );
    }
    sweep(&mut app);
    assert!(!app.browse.forest.node(top).in_use(), "the VM stopped");
    assert!(!app.browse.forest.node(base).in_use());
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_storage_daemon, tool_qemu_img)),
    ignore = "needs qemu-storage-daemon, qemu-img"
)]
fn a_storage_daemon_s_qmp_socket_and_a_vm_name_are_reported() {
    let tmp = tempdir();
    let dir = tmp.path();
    base_and_top(dir);
    let top = dir.join("top.qcow2");
    let qmp = dir.join("qsd.qmp");
    let mut cmd = Command::new("qemu-storage-daemon");
    cmd.arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=file0,filename={}",
            top.display()
        ))
        .args(["--blockdev", "driver=qcow2,node-name=fmt0,file=file0"])
        .arg("--chardev")
        .arg(format!(
            "socket,path={},server=on,wait=off,id=m",
            qmp.display()
        ))
        .args(["--monitor", "chardev=m"]);
    let held = hold(cmd, &top);
    let t = tree(dir, &[]);
    let in_use = &node(&t, dir, "top.qcow2")["in_use"];
    assert_eq!(in_use["pid"], Value::from(held.pid()), "{in_use}");
    assert_eq!(in_use["owner"]["kind"], "qemu-storage-daemon", "{in_use}");
    assert_eq!(in_use["owner"]["qmp"], qmp.to_str().unwrap(), "{in_use}");
    assert_eq!(in_use["holders"][0]["owner"]["qmp"], qmp.to_str().unwrap());
    // The refusal names the holder briefly, never its whole command line.
    let out = imgchain(&["commit", top.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(12));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("qemu-storage-daemon (pid {}", held.pid())),
        "{err}"
    );
    assert!(!err.contains("--blockdev"), "{err}");
}

/// A base whose overlay lives elsewhere, held by a running qemu-storage-daemon through that
/// overlay: read-only, and said why, though nothing scanned is built on it.
#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_storage_daemon)),
    ignore = "needs qemu-img, qemu-storage-daemon"
)]
fn a_base_a_running_qemu_reads_is_ro_and_says_who_holds_it() {
    let tmp = tempdir();
    let (golden, vms) = (tmp.path().join("golden"), tmp.path().join("vms"));
    std::fs::create_dir_all(&golden).unwrap();
    std::fs::create_dir_all(&vms).unwrap();
    let base = create(&golden, "base.qcow2", "qcow2", "16M", None, &[]);
    let backing = base.to_str().unwrap().to_string();
    create(
        &vms,
        "vm.qcow2",
        "qcow2",
        "16M",
        Some((&backing, "qcow2")),
        &[],
    );
    let idle = imgchain_json(&["tree", "--json", golden.to_str().unwrap()], 0);
    assert_eq!(idle["nodes"][0]["mode"], "rw", "{idle}");
    let held = hold_with_storage_daemon(&vms.join("vm.qcow2"));
    let v = imgchain_json(&["tree", "--json", golden.to_str().unwrap()], 0);
    assert_eq!(v["nodes"][0]["mode"], "ro", "{v}");
    let out = imgchain_ok(&["info", base.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("RO — held read-only by")
            && said.contains(&format!("pid {}", held.pid()))
            && said.contains("running QEMU"),
        "{said}"
    );
}
