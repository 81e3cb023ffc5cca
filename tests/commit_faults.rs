//! A commit that hits a full disk, is cancelled with Ctrl-C, or is killed outright leaves a
//! consistent base, and running it again gives what qemu-img commit gives.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// base.qcow2 (8 MiB of data) <- top.qcow2 with `mib` MiB of data in 1 MiB stripes.
fn chain(dir: &Path, mib: u64) {
    Chain::new(dir, "1G")
        .base("base.qcow2")
        .io("write -P 0x11 0 8M")
        .on("top.qcow2");
    let mut q = Command::new("qemu-io");
    for i in 0..mib {
        q.args(["-c", &format!("write -P {} {}M 1M", 0x40 + i % 64, i * 3)]);
    }
    q.args(["-c", "write -z 1M 2M"]);
    run(q.arg(dir.join("top.qcow2")));
}

/// `qemu-img check`: 0 clean, 3 leaked clusters only (acceptable after a crash or a full
/// disk: space, not data), anything else is corruption.
fn check_consistent(path: &Path) {
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "qemu-img check {} says corrupt: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn config_with_chunk(dir: &Path, chunk: &str) -> String {
    let p = dir.join("imgchain.toml");
    std::fs::write(&p, format!("[copy]\nchunk_size = \"{chunk}\"\n")).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_prlimit)),
    ignore = "needs qemu-img, qemu-io, prlimit"
)]
fn a_full_disk_is_reported_and_the_base_stays_consistent() {
    let tmp = tempdir();
    let d = tmp.path();
    chain(d, 16);
    let top_before = std::fs::read(d.join("top.qcow2")).unwrap();
    let base_len = std::fs::metadata(d.join("base.qcow2")).unwrap().len();
    // Room for 4 MiB more: the 16 MiB of data cannot fit.
    let limit = format!("--fsize={}", base_len + (4 << 20));
    let out = Command::new("prlimit")
        .arg(limit)
        .arg(env!("CARGO_BIN_EXE_imgchain"))
        .args(["commit", "--json"])
        .arg(d.join("top.qcow2"))
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copy"]["ok"], false);
    let e = v["copy"]["error"].as_str().unwrap();
    assert!(
        e.contains("cannot write") && e.contains("base.qcow2"),
        "{e}"
    );
    assert_eq!(v["reopen"]["ok"], true);
    assert_eq!(v["reopen"]["base_mode"], "ro");
    assert_eq!(v["top_state"], "unchanged");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.contains("free space") && summary.contains("consistent"),
        "{summary}"
    );
    check_consistent(&d.join("base.qcow2"));
    assert_eq!(
        top_before,
        std::fs::read(d.join("top.qcow2")).unwrap(),
        "top unchanged"
    );
    // With room again, the commit completes.
    imgchain_ok(&["commit", d.join("top.qcow2").to_str().unwrap()]);
    qemu_io(&d.join("base.qcow2"), "read -P 0x4f 45M 1M");
}

/// Starts `imgchain commit -p` and returns it with a receiver of its stderr lines.
fn start_commit(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .args(args)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no {needle:?} on stderr: {e}"),
        }
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn ctrl_c_cancels_cleanly() {
    let tmp = tempdir();
    let d = tmp.path();
    chain(d, 160);
    let cfg = config_with_chunk(d, "64KiB");
    let top_before = std::fs::read(d.join("top.qcow2")).unwrap();
    let top = d.join("top.qcow2");
    let (child, rx) = start_commit(&[
        "--config",
        &cfg,
        "commit",
        "-p",
        "--json",
        top.to_str().unwrap(),
    ]);
    wait_for(&rx, "[copy");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copy"]["cancelled"], true, "{v}");
    assert_eq!(v["reopen"]["base_mode"], "ro");
    assert!(v["copied_bytes"].as_u64().unwrap() < v["total_bytes"].as_u64().unwrap());
    check_consistent(&d.join("base.qcow2"));
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(d.join("base.qcow2")));
    assert_eq!(top_before, std::fs::read(&top).unwrap(), "top unchanged");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn ctrl_c_after_the_copy_is_too_late_and_says_so() {
    // The signal must land during the flush; on a very fast disk it may land after the end,
    // so a few attempts are allowed. Every attempt must finish the commit.
    let mut landed = false;
    for _ in 0..5 {
        let tmp = tempdir();
        let d = tmp.path();
        chain(d, 160);
        let top = d.join("top.qcow2");
        let (child, rx) = start_commit(&["commit", "-p", "--json", top.to_str().unwrap()]);
        wait_for(&rx, "[flush");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "the commit finishes");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["copy"]["ok"], true);
        assert_eq!(v["top_state"], "emptied");
        check_consistent(&d.join("base.qcow2"));
        qemu_io(&d.join("base.qcow2"), "read -P 0x4f 45M 1M");
        if v["cancel_too_late"] == true {
            let summary = v["summary"].as_str().unwrap();
            assert!(summary.starts_with("Too late to cancel"), "{summary}");
            landed = true;
            break;
        }
    }
    assert!(landed, "Ctrl-C never landed during the flush");
}

/// The phase a `-p` progress line names: `... [copy, base.qcow2 RW]` → `copy`.
fn phase_of(line: &str) -> &str {
    line.rsplit_once('[')
        .and_then(|(_, r)| r.split([',', ']']).next())
        .unwrap_or("")
}

/// Whether the qcow2 dirty bit is set in the file at `path`.
fn dirty(path: &Path) -> bool {
    let h = std::fs::read(path).unwrap();
    h.len() > 79 && h[7] >= 3 && h[79] & 1 == 1
}

/// A file a kill left behind: consistent (leaks allowed), or dirty — then imgchain refuses to
/// touch it with exit 16 and the repair command, which must repair it completely.
fn after_kill(d: &Path, name: &str, args: &[&str]) {
    let path = d.join(name);
    if !dirty(&path) {
        check_consistent(&path);
        return;
    }
    let repair = format!("qemu-img check -r all {}", path.display());
    let check = imgchain(&["check", path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(3),
        "check flags a dirty {name}: {said}"
    );
    assert!(said.contains("dirty") && said.contains(&repair), "{said}");
    let out = imgchain(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(16),
        "a dirty {name} must be refused: {err}"
    );
    assert!(err.contains(&repair), "the refusal names the repair: {err}");
    run(Command::new("qemu-img")
        .args(["check", "-q", "-r", "all"])
        .arg(&path));
    run(Command::new("qemu-img").args(["check", "-q"]).arg(&path));
    assert!(!dirty(&path), "{name} repaired");
}

/// Kills `imgchain commit` at `points` moments spread over its run on a chain with `mib` MiB
/// in `piece`-sized extents, then runs it again: the top's disk never changes, no file is left
/// corrupt, and the final base and top equal qemu-img commit's.
fn killed_then_rerun(mib: u64, piece_kib: u64, points: u32) {
    let orig = tempdir();
    pieces(orig.path(), mib, piece_kib);
    let reference = tempdir();
    copy_dir(orig.path(), reference.path());
    run(Command::new("qemu-img")
        .current_dir(reference.path())
        .args(["commit", "-q", "top.qcow2"]));
    let cfg = config_with_chunk(orig.path(), "256KiB");
    // Uninterrupted runs, set up like the killed ones, tell when each phase starts (counted
    // from the "[open" line); the fastest of three is used, so that kills land inside it.
    let timeline = || {
        let timed = tempdir();
        copy_dir(orig.path(), timed.path());
        let top = timed.path().join("top.qcow2");
        let (child, rx) = start_commit(&["--config", &cfg, "commit", "-p", top.to_str().unwrap()]);
        wait_for(&rx, "[open");
        let t0 = Instant::now();
        let mut starts: Vec<(String, Duration)> = Vec::new();
        for line in rx.iter() {
            let phase = phase_of(&line).to_string();
            if starts.last().is_none_or(|(p, _)| *p != phase) {
                starts.push((phase, t0.elapsed()));
            }
        }
        assert!(child.wait_with_output().unwrap().status.success());
        starts
    };
    let starts = (0..3)
        .map(|_| timeline())
        .min_by_key(|s| s.last().map(|(_, t)| *t))
        .unwrap_or_default();
    let at = |name: &str| {
        starts
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("no {name} phase in {starts:?}"))
    };
    let (copy, flush, empty) = (at("copy"), at("flush"), at("empty-top"));
    let end = starts.last().map(|(_, t)| *t).unwrap_or(empty) + Duration::from_millis(20);
    // Kill points: 60% spread over the copy, 20% over the flush and the reopen, 20% over
    // the emptying of the top.
    let windows = [(copy, flush), (flush, empty), (empty, end)];
    let share = [
        points * 3 / 5,
        points / 5,
        points - points * 3 / 5 - points / 5,
    ];
    let kill_at: Vec<Duration> = windows
        .iter()
        .zip(share)
        .flat_map(|(&(from, to), n)| {
            (0..n).map(move |k| from + (to - from).mul_f64((f64::from(k) + 0.5) / f64::from(n)))
        })
        .collect();
    let full = end;
    let mut phases = std::collections::BTreeMap::<String, u32>::new();
    for (i, delay) in kill_at.into_iter().enumerate() {
        let tmp = tempdir();
        let d = tmp.path();
        copy_dir(orig.path(), d);
        let top = d.join("top.qcow2");
        let args = ["commit", top.to_str().unwrap()];
        let (mut child, rx) =
            start_commit(&["--config", &cfg, "commit", "-p", top.to_str().unwrap()]);
        wait_for(&rx, "[open");
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let last = rx.try_iter().last().unwrap_or_default();
        let phase = match phase_of(&last) {
            "" => "before the first report".to_string(),
            p => p.to_string(),
        };
        *phases
            .entry(if status.success() {
                "finished".into()
            } else {
                phase
            })
            .or_default() += 1;
        // The top reads exactly as before, whatever state the kill left.
        run(Command::new("qemu-img")
            .args(["compare", "-U"])
            .arg(orig.path().join("top.qcow2"))
            .arg(&top));
        after_kill(d, "base.qcow2", &args);
        after_kill(d, "top.qcow2", &args);
        let out = imgchain(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "rerun {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in ["base.qcow2", "top.qcow2"] {
            check_consistent(&d.join(name));
            run(Command::new("qemu-img")
                .args(["compare", "-U"])
                .arg(d.join(name))
                .arg(reference.path().join(name)));
        }
    }
    eprintln!(
        "{points} kills over a {full:?} commit of {mib} MiB (phases start at {starts:?}); \
         where they landed: {phases:?}"
    );
}

/// base.qcow2 (8 MiB of data) <- top.qcow2 with `mib` MiB in `piece_kib` KiB extents, one
/// every two pieces, and a zeroed range over the base's data.
fn pieces(dir: &Path, mib: u64, piece_kib: u64) {
    sized_base_and_top(dir, "4G");
    qemu_io(&dir.join("base.qcow2"), "write -P 0x11 0 8M");
    let mut q = Command::new("qemu-io");
    let n = (mib << 10) / piece_kib;
    for i in 0..n {
        q.args([
            "-c",
            &format!(
                "write -P {} {}k {piece_kib}k",
                0x40 + i % 64,
                (i * 2 + 8) * piece_kib
            ),
        ]);
    }
    q.args(["-c", "write -z 1M 2M"]);
    run(q.arg(dir.join("top.qcow2")));
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn killed_at_many_points_then_rerun_equals_qemu_img() {
    killed_then_rerun(48, 256, 12);
}

/// The long version: at least 50 kills over a commit of 512 MiB in 64 KiB extents.
#[test]
#[ignore = "soak: a few minutes; run by .ci/run"]
fn soak_killed_at_50_points_of_a_512_mib_commit() {
    killed_then_rerun(512, 64, 50);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io, tool_mkfs_xfs)),
    ignore = "needs qemu-img, qemu-io, mkfs.xfs"
)]
fn a_full_filesystem_is_reported_honestly_and_the_rerun_finishes() {
    let Some(fs) = SmallFs::new(300) else { return };
    let d = fs.path();
    // Through memory, as qemu-img copies: the data needs room of its own.
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, "[copy]\nclone = false\n").unwrap();
    let c = cfg.to_str().unwrap();
    chain(d, 96);
    // Leave about 40 MiB free: the 96 MiB of data cannot fit.
    let free = nix::sys::statvfs::statvfs(d).unwrap();
    let avail = free.blocks_available() * free.fragment_size();
    let filler = d.join("filler");
    run(Command::new("fallocate")
        .arg(format!("-l{}", avail - (40 << 20)))
        .arg(&filler));
    let top = d.join("top.qcow2");
    let top_before = std::fs::read(&top).unwrap();
    // Planning sees that the data cannot fit, and refuses before writing anything.
    let base_before = std::fs::read(d.join("base.qcow2")).unwrap();
    let v = imgchain_json(
        &["--config", c, "commit", "--json", top.to_str().unwrap()],
        17,
    );
    assert_eq!(v["error"]["kind"], "no-space", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("base.qcow2") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(base_before, std::fs::read(d.join("base.qcow2")).unwrap());
    // --force tries anyway; the full disk stops it with every image consistent.
    let out = imgchain(&[
        "--config",
        c,
        "--no-undo",
        "commit",
        "--force",
        "--json",
        top.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(14));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = v["summary"].as_str().unwrap();
    let error = v["copy"]["error"].as_str().unwrap();
    assert!(error.contains("No space left"), "{error}");
    assert!(!summary.contains("was flushed"), "{summary}");
    if v["left_dirty"] == true {
        assert!(summary.contains("qemu-img check -r all"), "{summary}");
        run(Command::new("qemu-img")
            .args(["check", "-q", "-r", "all"])
            .arg(d.join("base.qcow2")));
    } else {
        assert!(summary.contains("consistent on disk"), "{summary}");
        assert_eq!(v["reopen"]["base_mode"], "ro");
    }
    check_consistent(&d.join("base.qcow2"));
    assert_eq!(top_before, std::fs::read(&top).unwrap(), "top unchanged");
    // With room again, the same command finishes the commit; with an undo, whose clones
    // keep every block the commit overwrites, the plan counts that room and names --no-undo.
    std::fs::remove_file(&filler).unwrap();
    let v = imgchain_json(
        &["--config", c, "commit", "--json", top.to_str().unwrap()],
        17,
    );
    let fix = v["error"]["fix"].as_str().unwrap();
    assert!(fix.contains("--no-undo"), "{v}");
    imgchain_ok(&["--config", c, "--no-undo", "commit", top.to_str().unwrap()]);
    qemu_io(&d.join("base.qcow2"), "read -P 0x4f 45M 1M");
    check_consistent(&d.join("base.qcow2"));
}
