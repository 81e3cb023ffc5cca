//! The real binary in tmux: keypresses in, screen text out.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of our own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `imgchain ARGS` in a detached 120×40 session; the shell line after it reports
    /// the exit code and keeps the pane open.
    fn start(name: &str, args: &str) -> Tmux {
        Tmux::start_sized(name, args, 120, 40)
    }

    /// [`Tmux::start`] in a `w`×`h` session.
    fn start_sized(name: &str, args: &str, w: u16, h: u16) -> Tmux {
        let t = Tmux {
            socket: format!("imgchain-test-{}-{name}", std::process::id()),
        };
        let cmd = format!(
            "HOME=/nonexistent {} {args}; echo EXITED $?; sleep 600",
            env!("CARGO_BIN_EXE_imgchain")
        );
        run(Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .arg(cmd));
        t
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            run(Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "t", k]));
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn literal(&self, text: &str) {
        run(Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "t", "-l", text]));
        std::thread::sleep(Duration::from_millis(60));
    }

    fn screen(&self) -> String {
        let out =
            run(Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until it contains `text` (30 s at most).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn commit_by_keypress_equals_qemu_img_commit() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start("commit", &format!("--demo --dir {}", demo.display()));
    t.wait_for("16 images");
    // While the UI is open, QEMU can open everything, even for writing: it holds no lock.
    run(Command::new("qemu-img")
        .arg("info")
        .arg(demo.join("golden/debian-12.qcow2")));
    run(Command::new("qemu-io")
        .args(["-c", "write -P 0x99 7M 64k"])
        .arg(demo.join("vms/ci.qcow2")));
    // The same chain, committed by qemu-img, for reference (the UI holds no lock while browsing).
    let reference = tempdir();
    copy_dir(&demo.join("snapshots"), reference.path());

    t.keys(&["/"]);
    t.literal("snap3");
    t.keys(&["Enter", "G", "c"]);
    let plan = t.wait_for("to copy");
    assert!(
        plan.contains("app-snap3.qcow2") && plan.contains("app-snap2.qcow2"),
        "{plan}"
    );
    t.wait_for("bytes of data and zeroes");
    t.keys(&["Enter"]);
    let done = t.wait_for("Committed");
    assert!(done.contains("base read-only again; top emptied"), "{done}");
    t.keys(&["q"]);
    let end = t.wait_for("EXITED 0");
    assert!(!end.contains("Forest"), "the terminal was restored:\n{end}");

    run(Command::new("qemu-img")
        .current_dir(reference.path())
        .args(["commit", "-q", "app-snap3.qcow2"]));
    run(Command::new("qemu-img")
        .args(["compare"])
        .arg(demo.join("snapshots/app-snap2.qcow2"))
        .arg(reference.path().join("app-snap2.qcow2")));
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(demo.join("snapshots/app-snap2.qcow2")));
}

#[test]
#[cfg_attr(not(tool_tmux), ignore = "needs tmux")]
fn committing_into_a_protected_template_is_refused() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start("protected", &format!("--demo --dir {}", demo.display()));
    t.wait_for("16 images");
    let before = snapshot(&demo);
    t.keys(&["/"]);
    t.literal("win-dev");
    t.keys(&["Enter", "G", "c"]);
    let s = t.wait_for("Commit refused");
    assert!(
        s.contains("keep-RO") && s.contains("template-win11.qcow2"),
        "{s}"
    );
    t.keys(&["Enter"]);
    // Wrong keys are harmless.
    t.keys(&["z", "Z", "F12"]);
    t.wait_for("no action on that key");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
    assert!(before == snapshot(&demo), "nothing changed on disk");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn a_ui_opened_on_one_image_never_commits_over_its_siblings() {
    // The UI sees only db.qcow2's chain; ci and web share its golden base from the same
    // directory. One Enter must not change their disks.
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    imgchain::demo::build(&demo, &imgchain::demo::spec().unwrap()).unwrap();
    let golden = demo.join("golden/debian-12.qcow2");
    let before = std::fs::read(&golden).unwrap();
    let t = Tmux::start("narrow", &demo.join("vms/db.qcow2").display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "c"]);
    // Planned on a fresh scan around the chain, as the CLI plans: the siblings are named.
    let s = t.wait_for("Other images are built on this base");
    assert!(s.contains("ci.qcow2") && s.contains("web.qcow2"), "{s}");
    // Enter, twice even, never commits into a shared base: it says which key does.
    t.keys(&["Enter", "Enter"]);
    t.wait_for("F commits anyway");
    assert_eq!(
        before,
        std::fs::read(&golden).unwrap(),
        "the base is unchanged"
    );
    t.keys(&["Escape", "q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn a_ui_plan_made_before_another_vm_appeared_is_planned_again() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let t = Tmux::start("stale", &d.display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "c"]);
    t.wait_for("bytes of data and zeroes");
    // Another VM's overlay appears while the plan is on screen.
    create(
        d,
        "other-vm.qcow2",
        "qcow2",
        "16M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    let before = std::fs::read(d.join("base.qcow2")).unwrap();
    t.keys(&["Enter"]);
    // The run refuses before its first write, and the dialog comes back planned on a fresh
    // scan: it names the new overlay and asks as for any shared base.
    let s = t.wait_for("Nothing was written");
    assert!(s.contains("other-vm.qcow2"), "{s}");
    let plan = t.wait_for("to copy");
    assert!(
        plan.contains("Other images are built on this base"),
        "{plan}"
    );
    assert_eq!(before, std::fs::read(d.join("base.qcow2")).unwrap());
    // Enter does not commit into a shared base; the base stays as it was.
    t.keys(&["Enter", "Enter"]);
    t.wait_for("F commits anyway");
    assert_eq!(before, std::fs::read(d.join("base.qcow2")).unwrap());
    t.keys(&["Escape"]);
    t.wait_for("3 images");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_img, tool_qemu_io)),
    ignore = "needs tmux, qemu-img, qemu-io"
)]
fn quitting_during_a_commit_asks_and_prints_the_report() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    run(Command::new("qemu-img")
        .arg("resize")
        .arg(d.join("base.qcow2"))
        .arg("1G"));
    run(Command::new("qemu-img")
        .arg("resize")
        .arg(d.join("top.qcow2"))
        .arg("1G"));
    qemu_io(&d.join("top.qcow2"), "write -P 0x5a 0 768M");
    let cfg = d.join("slow.toml");
    std::fs::write(&cfg, "[copy]\nchunk_size = \"64KiB\"\n").unwrap();
    let t = Tmux::start(
        "quit",
        &format!("--config {} {}", cfg.display(), d.display()),
    );
    t.wait_for("2 images");
    t.keys(&["G", "c"]);
    t.wait_for("bytes of data and zeroes");
    t.keys(&["Enter", "q"]);
    // Either still copying (then it asks), or already past the copy (then it finishes and
    // quits with the report), or done before the q (then the result shows and q quits). The
    // dialog may take a frame to show: look for a while.
    let mut asked = false;
    for _ in 0..30 {
        let s = t.screen();
        if s.contains("Quit during a commit?") {
            asked = true;
            break;
        }
        if s.contains("EXITED") || s.contains("Commit: done") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if asked {
        t.keys(&["y"]);
    } else if t.screen().contains("Commit: done") {
        t.keys(&["Enter", "q"]);
    }
    eprintln!("asked before quitting: {asked}");
    let end = t.wait_for("EXITED");
    assert!(
        end.contains("Cancelled after") && end.contains("EXITED 130") || end.contains("EXITED 0"),
        "the commit's report and exit code:\n{end}"
    );
    if asked {
        assert!(
            end.contains("Cancelled after") || end.contains("Committed"),
            "{end}"
        );
    }
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(d.join("base.qcow2")));
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn merging_a_middle_snapshot_by_keypress_keeps_the_top_s_disk() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start("merge", &format!("--demo --dir {}", demo.display()));
    t.wait_for("16 images");
    let before = tempdir();
    copy_dir(&demo.join("snapshots"), before.path());
    t.keys(&["/"]);
    t.literal("snap2");
    t.keys(&["Enter", "G", "M"]);
    let plan = t.wait_for("No overlay's disk changes");
    assert!(plan.contains("app-snap3.qcow2"), "{plan}");
    // It asks twice, the second time with its own key: Enter Enter changes nothing.
    t.keys(&["Enter"]);
    t.wait_for("Confirmed once");
    t.keys(&["Enter"]);
    t.wait_for("Enter does not confirm twice");
    assert!(demo.join("snapshots/app-snap2.qcow2").exists());
    t.keys(&["M"]);
    t.wait_for("Merge: done");
    // The dialog's body may reach the terminal after its title: wait for it too.
    t.wait_for("into the trash");
    t.keys(&["Enter", "q"]);
    t.wait_for("EXITED 0");
    assert!(!demo.join("snapshots/app-snap2.qcow2").exists());
    run(Command::new("qemu-img")
        .args(["compare"])
        .arg(demo.join("snapshots/app-snap3.qcow2"))
        .arg(before.path().join("app-snap3.qcow2")));
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(demo.join("snapshots/app-snap1.qcow2")));
    let info = qemu_info(&demo.join("snapshots/app-snap3.qcow2"));
    assert_eq!(info["backing-filename"], "app-snap1.qcow2");
}

#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_storage_daemon, tool_qemu_img)),
    ignore = "needs tmux, qemu-storage-daemon, qemu-img"
)]
fn a_live_commit_by_keypress_is_done_by_the_running_daemon() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    qemu_io(&d.join("top.qcow2"), "write -P 0x5c 1M 1M");
    let vm = hold_with_qmp_daemon(d);
    let t = Tmux::start("live", &d.display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "L"]);
    let plan = t.wait_for("imgchain writes nothing");
    assert!(
        plan.contains("qemu-storage-daemon") && plan.contains("qmp.sock"),
        "{plan}"
    );
    t.keys(&["Enter"]);
    let done = t.wait_for("Commit: done");
    assert!(done.contains("itself"), "{done}");
    t.keys(&["Enter", "q"]);
    t.wait_for("EXITED 0");
    drop(vm);
    let out = run(Command::new("qemu-io")
        .args(["-c", "read -P 0x5c 1M 1M"])
        .arg(d.join("base.qcow2")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("verification failed"));
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn n_reaches_a_broken_image_among_3000_at_80x24() {
    let tmp = tempdir();
    let d = tmp.path();
    for i in 0..3000 {
        let p = d.join(format!("bulk/disk-{i:04}.qcow2"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        imgchain::image::create::create(&p, &imgchain::image::create::NewImage::qcow2(1 << 30))
            .unwrap();
    }
    create(d, "gone.qcow2", "qcow2", "1G", None, &[]);
    create(
        d,
        "vms/lost.qcow2",
        "qcow2",
        "1G",
        Some(("../gone.qcow2", "qcow2")),
        &[],
    );
    std::fs::remove_file(d.join("gone.qcow2")).unwrap();
    let t = Tmux::start_sized("bulk", &d.display().to_string(), 80, 24);
    t.wait_for("3001 images");
    t.keys(&["n"]);
    let s = t.wait_for("missing-backing");
    assert!(s.contains("lost.qcow2"), "{s}");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn a_mouse_click_selects_a_row_and_the_wheel_moves() {
    let tmp = tempdir();
    let d = tmp.path();
    for name in ["alpha.qcow2", "bravo.qcow2", "charlie.qcow2", "delta.qcow2"] {
        create(d, name, "qcow2", "1G", None, &[]);
    }
    let t = Tmux::start_sized("mouse", &d.display().to_string(), 80, 24);
    t.wait_for("4 images");
    // SGR mouse reports (1-based column;row): a left click on the third image's row (the
    // forest's border is row 1, its header row 2), then its release.
    t.literal("\x1b[<0;10;5M\x1b[<0;10;5m");
    let s = t.wait_for("image     charlie.qcow2");
    assert!(s.contains("charlie"), "{s}");
    // The wheel over the forest moves the cursor one row down.
    t.literal("\x1b[<65;10;5M");
    t.wait_for("image     delta.qcow2");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_img, tool_qemu_io)),
    ignore = "needs tmux, qemu-img, qemu-io"
)]
fn the_details_list_an_image_s_bitmaps_with_their_dirty_bytes() {
    let tmp = tempdir();
    let d = tmp.path();
    let golden = create(d, "golden.qcow2", "qcow2", "1G", None, &[]);
    run(Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(&golden)
        .arg("nightly"));
    qemu_io(&golden, "write -P 1 0 8M");
    let t = Tmux::start("bitmaps", &d.display().to_string());
    t.wait_for("golden.qcow2");
    t.keys(&["Tab", "Enter"]);
    let s = t.wait_for("persistent bitmap");
    assert!(
        s.contains("\"nightly\", 64 KiB granularity, enabled, 8 MiB dirty"),
        "{s}"
    );
    t.keys(&["Escape", "q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn delete_asks_twice_and_enter_enter_never_deletes() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let t = Tmux::start("delete", &d.display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "D"]);
    t.wait_for("then D for good");
    t.keys(&["Enter", "Enter", "Enter"]);
    t.wait_for("Enter does not confirm twice");
    assert!(
        d.join("top.qcow2").exists(),
        "Enter Enter deleted the image"
    );
    t.keys(&["D"]);
    t.wait_for("Delete: done");
    assert!(!d.join("top.qcow2").exists());
    t.keys(&["Enter", "q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_img, tool_qemu_io)),
    ignore = "needs tmux, qemu-img, qemu-io"
)]
fn delete_of_an_image_with_data_asks_its_name_typed() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    let top = d.join("top.qcow2");
    qemu_io(&top, "write -P 0x5a 0 4M");
    let t = Tmux::start("delete-typed", &d.display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "D"]);
    t.wait_for("then D for good");
    t.keys(&["Enter"]);
    t.wait_for("type top.qcow2: Enter moves it");
    // Neither the operation's key nor a wrong name deletes it.
    t.keys(&["D", "Enter"]);
    t.wait_for("type top.qcow2 exactly");
    t.literal("top");
    t.keys(&["Enter"]);
    t.wait_for("type top.qcow2 exactly");
    assert!(top.exists(), "a wrong name deleted the image");
    // Esc goes back unconfirmed; the name typed whole deletes it.
    t.keys(&["Escape"]);
    t.wait_for("delete not confirmed");
    t.keys(&["Enter"]);
    t.wait_for("type top.qcow2: Enter moves it");
    t.literal("top.qcow2");
    t.keys(&["Enter"]);
    t.wait_for("Delete: done");
    assert!(!top.exists(), "the typed name did not delete it");
    t.keys(&["Enter", "q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(tool_tmux), ignore = "needs tmux")]
fn a_cut_message_reads_whole_in_the_message_log() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start_sized(
        "log",
        &format!("--read-only --demo --dir {}", demo.display()),
        80,
        24,
    );
    t.wait_for("16 images");
    t.keys(&["c"]);
    let cut = t.wait_for("…more (m)");
    assert!(!cut.contains("without --read-only to write"), "{cut}");
    t.keys(&["s"]);
    t.wait_for("sorted");
    t.keys(&["m"]);
    let log = t.wait_for("Messages, newest first");
    let sorted = log.find("sorted").unwrap();
    let refused = log.find("read-only: imgchain was started").unwrap();
    assert!(sorted < refused, "newest first:\n{log}");
    let joined: String = log
        .lines()
        .map(|l| l.trim_matches(|c: char| c == '│' || c.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        joined.contains("quit and start it without --read-only to write"),
        "the whole message, wrapped:\n{log}"
    );
    t.keys(&["Escape"]);
    t.wait_for("16 images");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn the_repair_list_moves_with_j_k_and_digits() {
    let tmp = tempdir();
    let d = tmp.path();
    create(d, "golden/base.qcow2", "qcow2", "32M", None, &[]);
    let golden = Some(("../golden/base.qcow2", "qcow2"));
    create(d, "vms/a.qcow2", "qcow2", "32M", golden, &[]);
    std::fs::create_dir(d.join("archive")).unwrap();
    std::fs::rename(d.join("golden/base.qcow2"), d.join("archive/base.qcow2")).unwrap();
    create(d, "archive/decoy.qcow2", "qcow2", "32M", None, &[]);
    let before = snapshot(d);
    let t = Tmux::start("repair-list", &d.display().to_string());
    t.wait_for("3 images");
    t.keys(&["G", "A"]);
    t.wait_for("→ 1) ");
    let marked = |n: &str| {
        t.wait_for(&format!("→ {n}) "));
    };
    t.keys(&["j"]);
    marked("2");
    t.keys(&["k"]);
    marked("1");
    t.keys(&["Down"]);
    marked("2");
    t.keys(&["1"]);
    marked("1");
    t.keys(&["2"]);
    let s = t.wait_for("→ 2) ");
    assert!(s.contains("archive/decoy.qcow2"), "{s}");
    t.keys(&["Escape"]);
    t.wait_for("repair not started");
    assert!(
        before == snapshot(d),
        "moving in the list changed something"
    );
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn rebase_onto_an_image_outside_the_chain_by_the_picker() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start("rebase-pick", &format!("--demo --dir {}", demo.display()));
    t.wait_for("16 images");
    let reference = tempdir();
    copy_dir(&demo, reference.path());
    // web.qcow2's backing file is a root: R opens the picker at once.
    t.keys(&["/"]);
    t.literal("vms/web.qcow2");
    t.keys(&["Enter", "R"]);
    t.wait_for("Enter picks, Esc back");
    t.literal("alpine-3");
    let picker = t.wait_for("1 image");
    assert!(picker.contains("golden/alpine-3.qcow2"), "{picker}");
    t.keys(&["Enter"]);
    let plan = t.wait_for("then on");
    assert!(plan.contains("alpine-3.qcow2"), "{plan}");
    t.keys(&["Enter"]);
    t.wait_for("rebase done");
    let web = demo.join("vms/web.qcow2");
    let (name, _) = backing_of(&web);
    assert!(name.ends_with("golden/alpine-3.qcow2"), "{name}");
    let out = run(Command::new("qemu-img")
        .arg("compare")
        .arg(&web)
        .arg(reference.path().join("vms/web.qcow2")));
    assert!(out.status.success(), "the guest's disk changed");
    qemu_check(&web);
    t.keys(&["Enter", "q"]);
    t.wait_for("EXITED 0");
}

#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_img, tool_qemu_io)),
    ignore = "needs tmux, qemu-img, qemu-io"
)]
fn cli_delete_and_merge_ask_on_a_terminal() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    qemu_io(&d.join("top.qcow2"), "write -P 0x5a 0 4M");
    let top = d.join("top.qcow2");
    // An image with data: its name must be typed; a wrong one deletes nothing.
    let t = Tmux::start("cli-delete", &format!("delete {}", top.display()));
    t.wait_for("Type top.qcow2 to confirm");
    t.literal("top");
    t.keys(&["Enter"]);
    t.wait_for("EXITED 130");
    assert!(top.exists(), "a wrong name deleted the image");
    drop(t);
    let t = Tmux::start("cli-delete2", &format!("delete {}", top.display()));
    t.wait_for("Type top.qcow2 to confirm");
    t.literal("top.qcow2");
    t.keys(&["Enter"]);
    t.wait_for("EXITED 0");
    assert!(!top.exists(), "the typed name did not delete it");
    drop(t);
    // A merge asks yes or no; no (or just Enter) merges nothing.
    let mid = tempdir();
    let m = mid.path();
    Chain::new(m, "16M")
        .base("base.qcow2")
        .on("mid.qcow2")
        .on("top.qcow2");
    let before = snapshot(m);
    let t = Tmux::start(
        "cli-merge",
        &format!("merge {}", m.join("mid.qcow2").display()),
    );
    t.wait_for("and delete mid.qcow2? [y/N]");
    t.keys(&["Enter"]);
    t.wait_for("EXITED 130");
    assert!(
        before == snapshot(m),
        "a merge not confirmed changed something"
    );
    drop(t);
    let t = Tmux::start(
        "cli-merge2",
        &format!("merge {}", m.join("mid.qcow2").display()),
    );
    t.wait_for("[y/N]");
    t.literal("y");
    t.keys(&["Enter"]);
    t.wait_for("EXITED 0");
    assert!(!m.join("mid.qcow2").exists());
}

/// The line under the forest says what the keys do where the user is: the operations of a
/// top, fewer on a base, the filter's syntax while typing one, how to close a dialog.
#[test]
#[cfg_attr(not(tool_tmux), ignore = "needs tmux")]
fn hints_follow_the_selection_the_dialog_and_the_filter() {
    let tmp = tempdir();
    let demo = tmp.path().join("demo");
    let t = Tmux::start_sized("hints", &format!("--demo --dir {}", demo.display()), 80, 24);
    t.wait_for("16 images");
    let ready = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Ready."))
            .unwrap_or_default()
            .to_string()
    };
    t.keys(&["/"]);
    let typing = t.wait_for("Filter: Enter keeps it");
    assert!(!typing.contains("Ready."), "{typing}");
    t.literal("app-snap3");
    t.keys(&["Enter"]);
    let top = ready(&t.wait_for("Ready.  c commit"));
    assert!(
        top.contains("c commit") && top.contains("D delete"),
        "{top}"
    );
    t.keys(&["Escape", "/"]);
    t.literal("alpine-3");
    t.keys(&["Enter"]);
    let base = ready(&t.wait_for("Ready.  S snapshot"));
    assert!(
        !base.contains("commit") && !base.contains("delete"),
        "{base}"
    );
    t.keys(&["S"]);
    t.wait_for("A dialog is open: its keys are at its foot");
    t.keys(&["Escape", "q"]);
    t.wait_for("EXITED 0");
}

/// On XFS, a commit made in the UI is undone with `u`: both images byte for byte as before;
/// with nothing left to undo, `u` says so on the status line.
#[test]
#[cfg_attr(
    not(all(tool_tmux, tool_qemu_img, tool_qemu_io)),
    ignore = "needs tmux, qemu-img, qemu-io"
)]
fn a_commit_is_undone_with_u_on_xfs() {
    let Some(fs) = SmallFs::new(300) else { return };
    let d = fs.path();
    base_and_top(d);
    qemu_io(&d.join("top.qcow2"), "write -P 0x5a 0 4M");
    let read = |n: &str| std::fs::read(d.join(n)).expect("read");
    let before = (read("base.qcow2"), read("top.qcow2"));
    let t = Tmux::start("undo", &d.display().to_string());
    t.wait_for("2 images");
    t.keys(&["G", "c"]);
    t.wait_for("cloned on xfs first");
    t.keys(&["Enter"]);
    t.wait_for("u undoes it");
    assert_ne!((read("base.qcow2"), read("top.qcow2")), before);
    t.keys(&["u"]);
    t.wait_for("the commit of");
    t.keys(&["Enter"]);
    t.wait_for("Undid the commit");
    assert_eq!((read("base.qcow2"), read("top.qcow2")), before);
    t.keys(&["Escape", "u"]);
    t.wait_for("nothing to undo");
    t.keys(&["q"]);
    t.wait_for("EXITED 0");
}

/// `C` shows what the scanned paths could free, in groups, with the commands.
#[test]
#[cfg_attr(not(all(tool_tmux, tool_qemu_img)), ignore = "needs tmux, qemu-img")]
fn the_clean_report_opens_with_c() {
    let tmp = tempdir();
    let d = tmp.path();
    base_and_top(d);
    create(d, "lonely.qcow2", "qcow2", "16M", None, &[]);
    std::fs::write(d.join(".top.qcow2.999999.imgchain-tmp"), b"x").expect("leftover");
    let t = Tmux::start("clean", &d.display().to_string());
    t.wait_for("images");
    t.keys(&["C"]);
    t.wait_for("Bases nothing is built on any more");
    t.wait_for("Leftovers of interrupted operations");
    t.wait_for("lonely.qcow2");
    t.keys(&["Escape", "q"]);
    t.wait_for("EXITED 0");
}
