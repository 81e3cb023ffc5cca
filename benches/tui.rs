//! UI benchmarks: the full-frame render of a 10,000-image forest into a 250×70 TestBackend,
//! and key → frame latency while a real commit runs and reports progress.
//!
//! `cargo bench --bench tui`

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imgchain::config::Config;
use imgchain::forest::scan::Scan;
use imgchain::forest::{Backing, Forest, Node, Protect};
use imgchain::image::create::{NewImage, create, write};
use imgchain::image::probe::Format;
use imgchain::tui::app::{App, Effect, Msg, Settings};
use imgchain::tui::keymap::Keymap;
use imgchain::tui::theme::Theme;
use imgchain::tui::{execute, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn app(roots: Vec<PathBuf>, w: u16, h: u16) -> App {
    let c = Config::default();
    let mut a = App::new(Settings {
        roots,
        keymap: Keymap::new(&c.keys),
        theme: Theme::new(&c.theme, true),
        protect: Protect::new(false, &[] as &[&str]).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    a.update(Msg::Resize(w, h));
    a
}

/// 10,000 nodes: 1,250 bases each with a chain of 7 overlays.
fn big_forest() -> Forest {
    let mut f = Forest::default();
    for b in 0..1250 {
        for d in 0..8 {
            let mut n = Node::new(PathBuf::from(format!(
                "/vm/g{:03}/c{b:04}-{d}.qcow2",
                b / 100
            )));
            n.format = Some(Format::Qcow2);
            n.virtual_size = Some(20 << 30);
            n.file_size = Some(200 << 20);
            n.writable = true;
            if d > 0 {
                n.backing = Some(Backing {
                    raw: format!("c{b:04}-{}.qcow2", d - 1).into(),
                    resolved: PathBuf::from(format!("/vm/g{:03}/c{b:04}-{}.qcow2", b / 100, d - 1)),
                    path: PathBuf::from(format!("/vm/g{:03}/c{b:04}-{}.qcow2", b / 100, d - 1)),
                    format: Some("qcow2".into()),
                    exists: true,
                    node: Some(imgchain::forest::NodeId(f.nodes.len() - 1)),
                });
            }
            f.nodes.push(n);
        }
    }
    f.relink();
    f.apply_state();
    f
}

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn main() {
    // 1. Full-frame render of 10,000 nodes at 250×70.
    let mut a = app(vec![PathBuf::from("/vm")], 250, 70);
    a.update(Msg::Scanned(Box::new(Ok(Scan {
        forest: big_forest(),
        ..Default::default()
    }))));
    a.update(key('G'));
    let mut term = Terminal::new(TestBackend::new(250, 70)).unwrap();
    let frames = 200;
    let t = Instant::now();
    for i in 0..frames {
        a.update(key(if i % 2 == 0 { 'k' } else { 'j' }));
        term.draw(|f| view::draw(&a, f)).unwrap();
    }
    let per = t.elapsed() / frames;
    println!(
        "render: 10,000-node forest at 250x70: {:.2} ms per frame (update + full draw, mean of {frames}; target < 16 ms)",
        per.as_secs_f64() * 1e3
    );

    // 2. Key -> frame latency while a commit of 512 MiB runs and sends progress.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create(&dir.join("base.qcow2"), &NewImage::qcow2(1 << 30)).unwrap();
    let top = dir.join("top.qcow2");
    create(
        &top,
        &NewImage {
            backing: Some(("base.qcow2", Format::Qcow2)),
            ..NewImage::qcow2(1 << 30)
        },
    )
    .unwrap();
    let chunk = vec![0x5au8; 8 << 20];
    for i in 0..64u64 {
        write(&top, Format::Qcow2, i * (16 << 20), &chunk).unwrap();
    }
    let mut a = app(vec![dir.to_path_buf()], 250, 70);
    let scan = imgchain::forest::scan(&[dir.to_path_buf()], &Default::default()).unwrap();
    a.update(Msg::Scanned(Box::new(Ok(scan))));
    a.update(key('G'));
    let (tx, rx) = mpsc::channel();
    let opts = imgchain::tui::Workers::default();
    for e in a.update(key('c')) {
        execute(e, &tx, &opts);
    }
    // The plan, made on a worker, comes back before Enter can start it.
    let planned = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(matches!(planned, Msg::OpPlanned { .. }), "{planned:?}");
    a.update(planned);
    let mut effects = a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    assert!(
        matches!(effects[..], [Effect::RunOp { .. }]),
        "the commit starts"
    );
    for e in effects.drain(..) {
        execute(e, &tx, &opts);
    }
    let mut term = Terminal::new(TestBackend::new(250, 70)).unwrap();
    let mut latencies = Vec::new();
    let mut progress_msgs = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.jobs.running.is_some() && Instant::now() < deadline {
        // A key arrives; the loop handles whatever is queued before it, then the key, then draws.
        let sent = Instant::now();
        tx.send(key(if latencies.len() % 2 == 0 { 'k' } else { 'j' }))
            .unwrap();
        loop {
            let msg = rx.recv().unwrap();
            let is_key = matches!(msg, Msg::Key(_));
            if matches!(msg, Msg::Op { .. }) {
                progress_msgs += 1;
            }
            for e in a.update(msg) {
                execute(e, &tx, &opts);
            }
            if is_key {
                break;
            }
        }
        term.draw(|f| view::draw(&a, f)).unwrap();
        latencies.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    latencies.sort();
    let n = latencies.len().max(1);
    println!(
        "key -> frame during a commit: median {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} keys ({progress_msgs} progress messages; target < 50 ms)",
        latencies[n / 2].as_secs_f64() * 1e3,
        latencies[(n * 99 / 100).min(n - 1)].as_secs_f64() * 1e3,
        latencies[n - 1].as_secs_f64() * 1e3,
        latencies.len()
    );
}
