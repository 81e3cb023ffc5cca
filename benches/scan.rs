//! Scan benchmark: `imgchain tree --json` over 10,000 qcow2 images in chains of depth 1 to 8,
//! against `qemu-img info --backing-chain --output=json -U` over a sample of 200 tops, measured
//! in the same run. Prints both and the per-image ratio; then planning a delete and `clean
//! --dry-run` over the same images, as ratios to `tree --json`.
//!
//! `cargo bench --bench scan` (IMGCHAIN_BENCH_IMAGES changes the count, e.g. 100000;
//! IMGCHAIN_BENCH_DIR keeps the images in that directory). Also prints imgchain's peak RSS.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgchain::image::create::{NewImage, create};
use imgchain::image::probe::Format;

fn main() {
    let total: usize = std::env::var("IMGCHAIN_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // IMGCHAIN_BENCH_DIR keeps the generated images there for profiling; default: a temp dir.
    let tmp = tempfile::Builder::new()
        .prefix("imgchain-bench-")
        .tempdir()
        .expect("tempdir");
    let kept = std::env::var_os("IMGCHAIN_BENCH_DIR").map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(tmp.path());

    let t = Instant::now();
    let tops = generate(dir, total);
    println!(
        "generated {total} images in {} chains with imago in {:.2} s",
        tops.len(),
        t.elapsed().as_secs_f64()
    );

    let bin = env!("CARGO_BIN_EXE_imgchain");
    let run_tree = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["tree", "--json"])
            .arg(dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run imgchain");
        let el = t.elapsed();
        assert!(out.status.success(), "imgchain tree failed");
        (el, out.stdout)
    };
    // Warm the page cache and dentries, then take the median of five runs.
    let (_, json) = run_tree();
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    let found = v["nodes"].as_array().map_or(0, Vec::len);
    assert_eq!(found, total, "imgchain found every image");
    let mut runs: Vec<Duration> = (0..5).map(|_| run_tree().0).collect();
    runs.sort();
    // The child's own peak resident set, as GNU time reports it (getrusage of the children
    // would count this process's pages, shared at the fork, too).
    let rss_kib = || -> Option<u64> {
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M", bin, "tree", "--json"])
            .arg(dir)
            .stdout(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()?
            .trim()
            .parse()
            .ok()
    };
    let rss = rss_kib().map_or("unknown (GNU time is not installed)".into(), |k| {
        format!("{} MiB", k / 1024)
    });
    let ours = runs[2];
    let ours_per = ours.as_secs_f64() / total as f64;

    let sample: Vec<&PathBuf> = tops
        .iter()
        .step_by((tops.len() / 200).max(1))
        .take(200)
        .collect();
    let t = Instant::now();
    let mut qemu_images = 0usize;
    for top in &sample {
        let out = Command::new("qemu-img")
            .args(["info", "--backing-chain", "--output=json", "-U"])
            .arg(top)
            .output()
            .expect("run qemu-img (install qemu-utils)");
        assert!(
            out.status.success(),
            "qemu-img info failed on {}",
            top.display()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu JSON");
        qemu_images += v.as_array().map_or(0, Vec::len);
    }
    let qemu = t.elapsed();
    let qemu_per = qemu.as_secs_f64() / qemu_images as f64;

    println!(
        "imgchain tree --json: {total} images in {:.3} s (median of 5, warm; min {:.3} s, max {:.3} s) = {:.1} us/image",
        ours.as_secs_f64(),
        runs[0].as_secs_f64(),
        runs[4].as_secs_f64(),
        ours_per * 1e6
    );
    println!(
        "qemu-img info --backing-chain: {} tops, {qemu_images} images in {:.3} s = {:.1} us/image",
        sample.len(),
        qemu.as_secs_f64(),
        qemu_per * 1e6
    );
    println!(
        "per-image ratio (qemu-img / imgchain): {:.0}x",
        qemu_per / ours_per
    );
    println!("imgchain tree --json: peak RSS {rss}");
    plan(dir, &tops, bin, ours);
    clean(dir, bin, ours);
    ui(dir, total, bin);
}

/// `clean --dry-run` over the same images (the dependents search, every group, duplicate
/// hashing of the images that share a virtual size), beside `tree --json`: median of three.
fn clean(dir: &Path, bin: &str, tree: Duration) {
    let run = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["clean", "--dry-run", "--json"])
            .arg(dir)
            .output()
            .expect("run imgchain");
        assert!(out.status.success(), "imgchain clean --dry-run failed");
        t.elapsed()
    };
    let mut runs: Vec<Duration> = (0..3).map(|_| run()).collect();
    runs.sort();
    println!(
        "clean --dry-run over the same images: {:.3} s (median of 3) = {:.2}x tree --json",
        runs[1].as_secs_f64(),
        runs[1].as_secs_f64() / tree.as_secs_f64()
    );
}

/// Planning a write: `delete --dry-run` of one top, whose dependents search walks the tree
/// around its directory, beside browsing (`tree --json`, measured above): median of five.
fn plan(dir: &Path, tops: &[PathBuf], bin: &str, tree: Duration) {
    let top = &tops[tops.len() / 2];
    let run = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["delete", "--dry-run"])
            .arg(top)
            .output()
            .expect("run imgchain");
        assert!(out.status.success(), "imgchain delete --dry-run failed");
        t.elapsed()
    };
    run();
    let mut runs: Vec<Duration> = (0..5).map(|_| run()).collect();
    runs.sort();
    println!(
        "plan a delete (dependents searched around {}): {:.3} s (median of 5) = {:.2}x tree --json",
        dir.display(),
        runs[2].as_secs_f64(),
        runs[2].as_secs_f64() / tree.as_secs_f64()
    );
}

/// The UI on the same images: frames drawn in this process from a real scan (250×70), and
/// the real program's resident set in tmux once it shows the forest.
fn ui(dir: &Path, total: usize, bin: &str) {
    use imgchain::tui::app::{App, Msg, Settings};
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let c = imgchain::config::Config::default();
    let mut a = App::new(Settings {
        roots: vec![dir.to_path_buf()],
        keymap: imgchain::tui::keymap::Keymap::new(&c.keys),
        theme: imgchain::tui::theme::Theme::new(&c.theme, true),
        protect: imgchain::forest::Protect::new(false, &[] as &[&str]).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    a.update(Msg::Resize(250, 70));
    let scan = imgchain::forest::scan(&[dir.to_path_buf()], &Default::default()).unwrap();
    let t = Instant::now();
    a.update(Msg::Scanned(Box::new(Ok(scan))));
    let model = t.elapsed();
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(250, 70)).unwrap();
    let frames = 100;
    let t = Instant::now();
    for i in 0..frames {
        let k = if i % 2 == 0 { 'j' } else { 'k' };
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char(k),
            KeyModifiers::NONE,
        )));
        term.draw(|f| imgchain::tui::view::draw(&a, f)).unwrap();
    }
    println!(
        "UI at {total} images: model built in {:.1} ms; {:.2} ms per frame at 250x70 (update + full draw, mean of {frames}; target < 16 ms)",
        model.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3 / f64::from(frames)
    );
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", "imgchain-bench"])
            .args(args)
            .output()
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "250",
        "-y",
        "70",
        &format!("{bin} {}", dir.display()),
    ]);
    if !started.is_ok_and(|o| o.status.success()) {
        println!("UI resident set: not measured (tmux is not installed)");
        return;
    }
    let t = Instant::now();
    let shown = format!("{total} images");
    let mut ready = None;
    while t.elapsed() < Duration::from_secs(120) {
        let screen = tmux(&["capture-pane", "-p"])
            .map(|o| o.stdout)
            .unwrap_or_default();
        if String::from_utf8_lossy(&screen).contains(&shown) {
            ready = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = tmux(&["list-panes", "-F", "#{pane_pid}"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let _ = tmux(&["kill-server"]);
    match ready {
        Some(r) => println!(
            "UI in tmux: {total} images on screen {:.2} s after start; peak RSS {hwm} (target < 200 MiB)",
            r.as_secs_f64()
        ),
        None => println!("UI in tmux: the forest did not appear within 120 s"),
    }
}

/// Chains of depth 1..=8 (cycling), 500 images per directory; every seventh base is shared by
/// two more overlays. Returns the top of each chain.
fn generate(dir: &Path, total: usize) -> Vec<PathBuf> {
    let mut made = 0;
    let mut tops = Vec::new();
    let mut chain = 0;
    while made < total {
        let sub = dir.join(format!("g{:03}", made / 500));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let depth = (1 + chain % 8).min(total - made);
        let mut below: Option<String> = None;
        for level in 0..depth {
            let name = format!("c{chain:05}-{level}.qcow2");
            let new = NewImage {
                backing: below.as_deref().map(|b| (b, Format::Qcow2)),
                ..NewImage::qcow2(1 << 30)
            };
            create(&sub.join(&name), &new).expect("create image");
            below = Some(name);
            made += 1;
        }
        let base = format!("c{chain:05}-0.qcow2");
        for extra in 0..2 {
            if chain % 7 == 0 && made < total {
                let name = format!("c{chain:05}-x{extra}.qcow2");
                let new = NewImage {
                    backing: Some((&base, Format::Qcow2)),
                    ..NewImage::qcow2(1 << 30)
                };
                create(&sub.join(&name), &new).expect("create image");
                made += 1;
                tops.push(sub.join(name));
            }
        }
        if let Some(top) = below {
            tops.push(sub.join(top));
        }
        chain += 1;
    }
    tops
}
