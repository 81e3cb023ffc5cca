//! Snapshots of every screen, rendered from real models: the demo forest built with imago and
//! scanned, driven by the same messages the app loop feeds it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use imgchain::config::Config;
use imgchain::forest::{Protect, scan};
use imgchain::image::file::OpenMode;
use imgchain::image::handle::{ReopenError, ReopenStep};
use imgchain::image::lock::{Foreign, Holder, Perms};
use imgchain::image::snapshots::InternalSnapshot;
use imgchain::ops::commit::{self, Commit, Outcome};
use imgchain::ops::finished::{Ended, Finished};
use imgchain::ops::{AnyPlan, Ask};
use imgchain::ops::{Event, OpKind, Phase, Progress, Refusal};
use imgchain::tui::app::{App, Effect, Msg, Popup, Settings};
use imgchain::tui::keymap::Keymap;
use imgchain::tui::theme::Theme;
use imgchain::tui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Builds the demo in a fixed directory (paths show in the snapshots) and opens an app on it.
fn app(name: &str, w: u16, h: u16) -> App {
    let dir = PathBuf::from("/tmp/imgchain-snapshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(imgchain::demo::elsewhere(&dir));
    let spec = imgchain::demo::spec().unwrap();
    imgchain::demo::build(&dir, &spec).unwrap();
    let config = Config::default();
    let mut app = App::new(Settings {
        roots: vec![dir.clone()],
        keymap: Keymap::new(&config.keys),
        theme: Theme::new(&config.theme, false),
        protect: Protect::new(false, &spec.protect).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    app.update(Msg::Resize(w, h));
    let opts = imgchain::forest::ScanOptions {
        overlay_dirs: vec![imgchain::demo::elsewhere(&dir)],
        ..Default::default()
    };
    rescan(&mut app, &dir, &opts);
    app
}

/// Scans `root` with `opts` and gives the app the forest, as a finished scan does. Bytes on
/// disk depend on the file system; the snapshots should not.
fn rescan(app: &mut App, root: &std::path::Path, opts: &imgchain::forest::ScanOptions) {
    let mut s = scan(&[root.to_path_buf()], opts).unwrap();
    for n in &mut s.forest.nodes {
        n.allocated = n.file_size;
        n.writable = true;
    }
    app.update(Msg::Scanned(Box::new(Ok(s))));
}

/// A key, with any planning it starts carried out as the app loop does (a worker planning on
/// a fresh scan) and its answer fed back.
fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    let fx = app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut rest = Vec::new();
    for e in fx {
        if matches!(e, Effect::PlanOp { .. }) {
            imgchain::tui::execute(e, &tx, &Default::default());
            let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert!(matches!(msg, Msg::OpPlanned { .. }), "{msg:?}");
            rest.extend(app.update(msg));
            steady_space(app);
        } else {
            rest.push(e);
        }
    }
    rest
}

/// The free space a plan found depends on the machine; the snapshots show a fixed figure. So
/// do the places searched that depend on the machine (running QEMUs, libvirt).
fn steady_space(app: &mut App) {
    let searched = match &mut app.popup {
        Some(Popup::Op(p)) => Some(&mut p.searched),
        _ => None,
    };
    if let Some(s) = searched {
        s.retain(|p| matches!(p.kind, "scanned" | "around" | "overlay_dirs" | "outside"));
    }
    if let Some(Popup::Op(p)) = &mut app.popup
        && p.undo.is_some()
    {
        p.undo = Some(imgchain::ops::undo::Undo::NotHere(
            "this filesystem cannot clone files".into(),
        ));
    }
    let space = match &mut app.popup {
        Some(Popup::Op(p)) => p.space.as_mut(),
        _ => None,
    };
    if let Some(s) = space {
        s.available = Some(100 << 30);
        s.clone_on = None;
        if s.frees > 0 {
            s.frees = 24 << 20;
        }
        if s.trashed > 0 {
            s.trashed = 24 << 20;
        }
    }
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// Selects the image whose path ends with `suffix` through the filter, then clears it.
fn select(app: &mut App, suffix: &str) {
    keys(app, "/");
    keys(app, suffix);
    key(app, KeyCode::Enter);
    let pos = app
        .browse
        .visible
        .iter()
        .position(|&i| {
            app.browse
                .forest
                .node(app.browse.rows[i].id)
                .path
                .ends_with(suffix)
        })
        .unwrap_or_else(|| panic!("{suffix} not shown"));
    app.browse.selected = pos;
    keys(app, "/");
    key(app, KeyCode::Esc);
    let id = app.selected_node().unwrap();
    assert!(
        app.browse.forest.node(id).path.ends_with(suffix),
        "selection kept"
    );
}

/// Puts in the model what a QEMU (pid 4242, command line `argv`) writing the image at `rel`
/// (under the first root) shows as: its locks and its holder. A real holder's pid would change
/// the snapshots.
fn held_for_writing(app: &mut App, rel: &str, argv: &[&str]) -> imgchain::forest::NodeId {
    let path = app.browse.roots[0].join(rel);
    let id = app.browse.forest.find(&path).unwrap();
    let n = &mut app.browse.forest.nodes[id.0];
    n.foreign = Foreign {
        held: Perms(0b1011),
        unshared: Perms(0b1010),
    };
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    n.holders = vec![Holder {
        pid: 4242,
        command: argv.join(" "),
        foreign: n.foreign,
        owner: Box::new(imgchain::image::lock::owner::parse(&argv)),
    }];
    id
}

fn render(app: &App) -> String {
    let (w, h) = app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(app, f)).unwrap();
    t.backend().to_string()
}

#[test]
fn forest_and_details() {
    let mut a = app("forest", 120, 36);
    insta::assert_snapshot!("forest", render(&a));
    select(&mut a, "vms/orphan.qcow2");
    insta::assert_snapshot!("details_missing_backing", render(&a));
    // The allocation strip, computed by the engine as the worker would.
    select(&mut a, "snapshots/app-snap3.qcow2");
    let path = a
        .browse
        .forest
        .node(a.selected_node().unwrap())
        .path
        .clone();
    let map =
        imgchain::image::map::allocation(&path, imgchain::image::probe::Format::Qcow2, 64).unwrap();
    assert!(
        map.as_ref()
            .is_some_and(|m| m[0] > 0 && m[10] == 0 && m[32] > 0),
        "{map:?}"
    );
    a.update(Msg::Allocation {
        path,
        map,
        snapshots: Ok(Vec::new()),
        bitmaps: Ok(Vec::new()),
    });
    insta::assert_snapshot!("details_allocation", render(&a));
    // Folding the golden image hides its three VMs.
    select(&mut a, "golden/debian-12.qcow2");
    keys(&mut a, "h");
    insta::assert_snapshot!("folded", render(&a));
}

#[test]
fn small_and_large_terminals() {
    let mut a = app("sizes80", 80, 24);
    insta::assert_snapshot!("forest_80x24", render(&a));
    keys(&mut a, "?jjjj");
    insta::assert_snapshot!("help_80x24_scrolled", render(&a));
    let a = app("sizes-tiny", 50, 12);
    insta::assert_snapshot!("too_small", render(&a));
    let a = app("sizes250", 250, 70);
    let screen = render(&a);
    assert!(screen.contains("Details") && screen.contains("golden/debian-12.qcow2"));
}

#[test]
fn protect_toggle_updates_the_whole_chain() {
    use imgchain::forest::{KeepRoReason, Mode};
    let mut a = app("protect", 120, 30);
    select(&mut a, "snapshots/app-snap3.qcow2");
    keys(&mut a, "p");
    let reason = |a: &App, suffix: &str| {
        let n = a
            .browse
            .forest
            .nodes
            .iter()
            .find(|n| n.path.ends_with(suffix))
            .unwrap();
        (n.mode, n.keep_ro_reason)
    };
    assert_eq!(
        reason(&a, "app-snap3.qcow2"),
        (Mode::KeepRo, Some(KeepRoReason::Requested))
    );
    for s in ["app-snap2.qcow2", "app-snap1.qcow2", "app-base.qcow2"] {
        assert_eq!(
            reason(&a, s),
            (Mode::KeepRo, Some(KeepRoReason::Inherited)),
            "{s}"
        );
    }
    insta::assert_snapshot!("protected_chain", render(&a));
    // Toggling back, and unprotecting a template protected by a glob.
    keys(&mut a, "p");
    assert_eq!(reason(&a, "app-base.qcow2"), (Mode::Ro, None));
    // A glob's protection is lifted only after a question; Esc keeps it.
    select(&mut a, "templates/template-win11.qcow2");
    keys(&mut a, "p");
    assert!(matches!(a.popup, Some(Popup::ConfirmUnprotect { .. })));
    insta::assert_snapshot!("confirm_unprotect", render(&a));
    key(&mut a, KeyCode::Esc);
    assert_eq!(
        reason(&a, "template-win11.qcow2"),
        (Mode::KeepRo, Some(KeepRoReason::Requested))
    );
    keys(&mut a, "p");
    key(&mut a, KeyCode::Enter);
    assert_eq!(reason(&a, "template-win11.qcow2"), (Mode::Ro, None));
    assert!(a.status.contains("unprotected until quit"), "{}", a.status);
}

#[test]
fn filter_and_help() {
    let mut a = app("filter", 120, 30);
    keys(&mut a, "/snap");
    insta::assert_snapshot!("filter", render(&a));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "?");
    insta::assert_snapshot!("help", render(&a));
    keys(&mut a, "?");
    assert!(a.popup.is_none());
}

#[test]
fn commit_plans_with_each_guard() {
    let mut a = app("plans", 120, 30);
    select(&mut a, "snapshots/app-snap3.qcow2");
    let fx = a.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::NONE,
    )));
    assert!(
        matches!(fx[..], [Effect::PlanOp { .. }]),
        "planned off-thread, on a fresh scan"
    );
    insta::assert_snapshot!("plan_pending", render(&a));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "c");
    insta::assert_snapshot!("plan", render(&a));
    key(&mut a, KeyCode::Esc);

    select(&mut a, "golden/debian-12.qcow2");
    keys(&mut a, "c");
    insta::assert_snapshot!("plan_no_backing", render(&a));
    key(&mut a, KeyCode::Esc);

    select(&mut a, "vms/win-dev.qcow2");
    keys(&mut a, "c");
    insta::assert_snapshot!("plan_keep_ro", render(&a));
    key(&mut a, KeyCode::Esc);

    select(&mut a, "vms/web.qcow2");
    keys(&mut a, "c");
    insta::assert_snapshot!("plan_shared_base", render(&a));
    // Enter, even twice, does not commit into a shared base: only the distinct key does.
    assert!(key(&mut a, KeyCode::Enter).is_empty());
    assert!(key(&mut a, KeyCode::Enter).is_empty());
    assert!(matches!(a.popup, Some(Popup::Op(_))));
    assert!(a.status.contains("F commits anyway"), "{}", a.status);
    let fx = key(&mut a, KeyCode::Char('F'));
    assert!(matches!(fx[..], [Effect::RunOp { .. }]), "{fx:?}");
    a.jobs.running = None;

    select(&mut a, "vms/orphan.qcow2");
    keys(&mut a, "c");
    insta::assert_snapshot!("plan_missing_backing", render(&a));
    key(&mut a, KeyCode::Esc);

    // A VM running on fedora-test: its QEMU holds the overlay read-write. The locks are put
    // in the model (a real holder's pid would change the snapshot), and the proposal made on
    // it with the planning function the worker uses.
    let id = held_for_writing(
        &mut a,
        "vms/fedora-test.qcow2",
        &["qemu-system-x86_64", "-name", "fedora-test"],
    );
    select(&mut a, "vms/fedora-test.qcow2");
    let fx = a.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::NONE,
    )));
    let [Effect::PlanOp { job, .. }] = fx[..] else {
        panic!("expected a plan effect, got {fx:?}")
    };
    let plan = commit::propose(&a.browse.forest, id, (None, false), false).map(|plan| {
        AnyPlan::Commit(Box::new(commit::Plan {
            measured: Some(Ok(0)),
            ..plan
        }))
    });
    a.update(Msg::OpPlanned {
        undo: None,
        job,
        plan: Box::new(plan),
        space: None,
        searched: Vec::new(),
    });
    insta::assert_snapshot!("plan_in_use", render(&a));
}

/// Starts a commit of app-snap3 into app-snap2 and returns the job id.
fn start(a: &mut App) -> u64 {
    select(a, "snapshots/app-snap3.qcow2");
    keys(a, "c");
    let fx = key(a, KeyCode::Enter);
    match &fx[..] {
        [Effect::RunOp { job, .. }] => job.id,
        other => panic!("expected a commit effect, got {other:?}"),
    }
}

#[test]
fn progress_mid_commit_and_the_live_badge() {
    let mut a = app("progress", 120, 30);
    let job = start(&mut a);
    let base = a.browse.roots[0].join("snapshots/app-snap2.qcow2");
    a.update(Msg::Op {
        job,
        event: Finished::Progress(Progress {
            op: OpKind::COMMIT,
            phase: Phase::Copy,
            done: 10 << 20,
            total: 24 << 20,
            elapsed: Duration::from_millis(500),
            writing: true,
        }),
    });
    assert!(a.live_rw(&base));
    insta::assert_snapshot!("progress", render(&a));
    // Browsing and help still work while it runs; x asks to cancel.
    keys(&mut a, "k");
    keys(&mut a, "x");
    assert!(
        a.jobs
            .running
            .as_ref()
            .unwrap()
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // Back to RO once the engine reports it.
    a.update(Msg::Op {
        job,
        event: Finished::Progress(Progress {
            op: OpKind::COMMIT,
            phase: Phase::ReopenRo,
            done: 24 << 20,
            total: 24 << 20,
            elapsed: Duration::from_millis(900),
            writing: false,
        }),
    });
    assert!(!a.live_rw(&base));
}

#[test]
fn the_plan_cycles_down_the_chain_to_a_deeper_base() {
    let mut a = app("deeper", 120, 34);
    select(&mut a, "snapshots/app-snap3.qcow2");
    keys(&mut a, "c");
    keys(&mut a, "b");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the plan stays open")
    };
    let Some(AnyPlan::Commit(c)) = &p.plan else {
        panic!("a commit plan: {p:?}")
    };
    assert!(c.base.path.ends_with("app-snap1.qcow2"));
    assert!(
        c.keep_top && p.deeper(),
        "a deeper base keeps the top, as qemu-img -b does"
    );
    assert!(
        p.shared_with()
            .iter()
            .any(|o| o.ends_with("app-snap2.qcow2")),
        "the image in between reads differently: {:?}",
        p.shared_with()
    );
    insta::assert_snapshot!("plan_deeper_base", render(&a));
    keys(&mut a, "bb");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the plan stays open")
    };
    let Some(AnyPlan::Commit(c)) = &p.plan else {
        panic!("a commit plan: {p:?}")
    };
    assert!(
        c.base.path.ends_with("app-snap2.qcow2"),
        "past the root it starts again at the backing file"
    );
}

#[test]
fn cancel_during_the_flush_is_too_late_and_says_so() {
    let mut a = app("flush-cancel", 120, 30);
    let job = start(&mut a);
    let flush = |done| Progress {
        op: OpKind::COMMIT,
        phase: Phase::Flush,
        done,
        total: 24 << 20,
        elapsed: Duration::from_millis(700),
        writing: true,
    };
    a.update(Msg::Op {
        job,
        event: Finished::Progress(flush(24 << 20)),
    });
    keys(&mut a, "x");
    let cancel = &a.jobs.running.as_ref().unwrap().cancel;
    assert!(
        !cancel.load(std::sync::atomic::Ordering::Relaxed),
        "nothing left to cancel"
    );
    assert!(a.status.contains("too late to cancel"), "{}", a.status);
    insta::assert_snapshot!("cancel_during_flush", render(&a));
    keys(&mut a, "q");
    assert!(!a.quit, "waits for the commit");
    assert!(a.status.contains("finishing the commit"), "{}", a.status);
}

#[test]
fn quitting_during_a_commit_asks_then_waits_for_its_cleanup() {
    let mut a = app("quit", 100, 30);
    let job = start(&mut a);
    keys(&mut a, "q");
    assert!(matches!(a.popup, Some(Popup::ConfirmQuit)), "asks first");
    insta::assert_snapshot!("confirm_quit", render(&a));
    key(&mut a, KeyCode::Esc);
    assert!(
        a.popup.is_none() && a.jobs.running.is_some() && !a.quit,
        "n keeps committing"
    );
    let cancel = &a.jobs.running.as_ref().unwrap().cancel;
    assert!(!cancel.load(std::sync::atomic::Ordering::Relaxed));
    keys(&mut a, "q");
    keys(&mut a, "y");
    assert!(!a.quit, "not while the base may be read-write");
    assert!(
        a.jobs
            .running
            .as_ref()
            .unwrap()
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(a.status.contains("before quitting"), "{}", a.status);
    let err = Refusal::NoBacking {
        top: PathBuf::from("/x"),
        op: OpKind::COMMIT,
    };
    let fx = a.update(Msg::Op {
        job,
        event: Finished::of::<Commit>(Event::Done(Box::new(Err(err)))),
    });
    assert!(a.quit, "quits once the commit reports it is done");
    assert!(fx.is_empty(), "no rescan on the way out");
    let (report, code) = a.jobs.exit_report.clone().expect("a report to print");
    assert!(
        report.contains("no backing file") && code == 10,
        "{report} {code}"
    );
}

#[test]
fn reopen_failure_popup() {
    let mut a = app("reopen", 120, 30);
    let job = start(&mut a);
    let plan = {
        // The plan the dialog made, as the engine would return it in its outcome.
        let scan = scan(&[a.browse.roots[0].clone()], &Default::default()).unwrap();
        let top = scan
            .forest
            .find(&a.browse.roots[0].join("snapshots/app-snap3.qcow2"))
            .unwrap();
        commit::plan(
            &scan.forest,
            &commit::Request {
                top,
                base: None,
                keep_top: false,
                force: false,
                amend: false,
            },
        )
        .unwrap()
    };
    let base = plan.base.path.clone();
    let outcome = Outcome {
        total: 24 << 20,
        copied: 24 << 20,
        tally: imgchain::ops::datapath::Tally {
            copied: 24 << 20,
            ..Default::default()
        },
        grew: None,
        copy: Ok(()),
        left_dirty: false,
        cancel_too_late: false,
        reopen_ro: Some(Err(ReopenError {
            path: base.clone(),
            from: OpenMode::ReadWrite,
            to: OpenMode::ReadOnly,
            step: ReopenStep::Header,
            detail: "truncated: the L1 table ends at byte 4325376 but the file has 327680".into(),
            lock: None,
        })),
        top_emptied: Some(Ok(())),
        elapsed: Duration::from_secs(1),
        plan,
    };
    let fx = a.update(Msg::Op {
        job,
        event: Finished::of::<Commit>(Event::Done(Box::new(Ok(outcome)))),
    });
    assert!(
        matches!(fx[..], [Effect::Scan(_)]),
        "rescans after a commit"
    );
    assert!(a.jobs.reopen_failed.contains(&base));
    insta::assert_snapshot!("reopen_failed", render(&a));
    let _ = Arc::new(AtomicBool::new(false));
}

#[test]
fn a_run_that_finds_a_new_overlay_shows_the_plan_again() {
    let mut a = app("replan", 100, 34);
    let job = start(&mut a);
    // Another VM's overlay appears on the base after the plan was made.
    let base = a.browse.roots[0].join("snapshots/app-snap2.qcow2");
    let other = a.browse.roots[0].join("snapshots/other-vm.qcow2");
    let mut new = imgchain::image::create::NewImage::qcow2(2 << 30);
    new.backing = Some(("app-snap2.qcow2", imgchain::image::probe::Format::Qcow2));
    imgchain::image::create::create(&other, &new).unwrap();
    let fx = a.update(Msg::Op {
        job,
        event: Finished::of::<Commit>(Event::Done(Box::new(Err(Refusal::SharedBase {
            base,
            others: vec![other.clone()],
        })))),
    });
    assert!(a.jobs.running.is_none());
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Scan(_))),
        "the forest is scanned again too: {fx:?}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    for e in fx {
        if matches!(e, Effect::PlanOp { .. }) {
            imgchain::tui::execute(e, &tx, &Default::default());
            let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            a.update(msg);
            steady_space(&mut a);
        }
    }
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the plan dialog again, not a refusal: {:?}", a.popup);
    };
    assert!(p.notice.as_deref().unwrap().contains("other-vm.qcow2"));
    assert_eq!(p.shared_with(), [other]);
    insta::assert_snapshot!("replan_after_new_overlay", render(&a));
    assert!(
        key(&mut a, KeyCode::Enter).is_empty(),
        "asks for the distinct key again"
    );
}

/// Each chain operation's dialog, planned on the demo as the app loop plans it.
#[test]
fn chain_operation_dialogs() {
    let mut a = app("ops", 100, 34);
    select(&mut a, "snapshots/app-snap3.qcow2");
    keys(&mut a, "S");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("a snapshot dialog: {:?}", a.popup)
    };
    assert!(p.plan.is_some() && p.refusal.is_none());
    insta::assert_snapshot!("op_snapshot", render(&a));
    key(&mut a, KeyCode::Esc);
    assert!(a.popup.is_none() && a.status.contains("not started"));

    select(&mut a, "snapshots/app-snap2.qcow2");
    keys(&mut a, "M");
    insta::assert_snapshot!("op_merge", render(&a));
    key(&mut a, KeyCode::Enter);
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("still asking")
    };
    assert!(p.confirmed_once, "merging asks twice");
    insta::assert_snapshot!("op_merge_confirmed_once", render(&a));
    key(&mut a, KeyCode::Esc);

    keys(&mut a, "D");
    insta::assert_snapshot!("op_delete_refused", render(&a));
    keys(&mut a, "a");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the delete dialog again")
    };
    assert!(matches!(p.plan, Some(imgchain::ops::AnyPlan::Delete(ref d)) if d.images.len() == 2));
    insta::assert_snapshot!("op_delete_with_overlays", render(&a));
    key(&mut a, KeyCode::Esc);

    select(&mut a, "snapshots/app-snap3.qcow2");
    keys(&mut a, "F");
    insta::assert_snapshot!("op_flatten", render(&a));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "R");
    insta::assert_snapshot!("op_rebase", render(&a));
    keys(&mut a, "b");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the rebase dialog again")
    };
    assert!(
        matches!(&p.ask, Ask::Rebase(r) if r.backing.ends_with("app-base.qcow2")),
        "{:?}",
        p.ask
    );
    key(&mut a, KeyCode::Esc);
    // The orphan's missing base: the images that could be it, best first; b picks the next.
    select(&mut a, "vms/orphan.qcow2");
    keys(&mut a, "A");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the repair dialog")
    };
    let Some(imgchain::ops::AnyPlan::Repair(r)) = &p.plan else {
        panic!("a repair plan: {:?}", p.refusal)
    };
    assert!(
        r.candidates[0].0.ends_with("golden/debian-12.qcow2"),
        "{:?}",
        r.candidates
    );
    insta::assert_snapshot!("op_repair", render(&a));
    keys(&mut a, "b");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the repair dialog again")
    };
    assert!(matches!(
        &p.ask,
        Ask::Repair(r) if r.pick == 1
    ));
    // Digits pick a candidate, k and ↑ go back, j and ↓ on.
    let pick = |a: &App| match &a.popup {
        Some(Popup::Op(p)) => match &p.ask {
            Ask::Repair(r) => r.pick,
            _ => usize::MAX,
        },
        _ => usize::MAX,
    };
    keys(&mut a, "4");
    assert_eq!(pick(&a), 3);
    keys(&mut a, "k");
    assert_eq!(pick(&a), 2);
    key(&mut a, KeyCode::Up);
    assert_eq!(pick(&a), 1);
    key(&mut a, KeyCode::Down);
    keys(&mut a, "j");
    assert_eq!(pick(&a), 3);
    key(&mut a, KeyCode::Esc);
    // A protected template cannot be flattened: the guard shows in the dialog.
    select(&mut a, "vms/win-dev.qcow2");
    keys(&mut a, "p");
    keys(&mut a, "F");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the flatten dialog")
    };
    assert!(
        p.refusal
            .as_ref()
            .is_some_and(|e| e.to_string().contains("read-only")),
        "{:?}",
        p.refusal
    );
}

#[test]
fn n_jumps_to_the_next_image_with_a_problem() {
    let mut a = app("problems", 80, 24);
    keys(&mut a, "n");
    let id = a.selected_node().unwrap();
    assert!(
        a.browse.forest.node(id).path.ends_with("vms/orphan.qcow2"),
        "{}",
        a.status
    );
    assert!(
        a.status
            .starts_with("orphan.qcow2: missing-backing — backing file"),
        "{}",
        a.status
    );
    insta::assert_snapshot!("next_problem_80x24", render(&a));
    keys(&mut a, "n");
    assert_eq!(a.status, "no more problems");
    keys(&mut a, "gN");
    let id = a.selected_node().unwrap();
    assert!(a.browse.forest.node(id).path.ends_with("vms/orphan.qcow2"));
}

/// The live-commit dialog as planned for a VM with a QMP socket, the job's progress, and its
/// end. The plan is the one `ops::live::plan` gives (a running VM's pid and socket would not
/// be the same twice).
#[test]
fn a_live_commit_plan_and_its_progress() {
    use imgchain::ops::live::{LiveKind, LivePlan, Via};
    let mut a = app("live", 100, 30);
    // The VM "app" writes app-snap3 (its locks put in the model, as a real one's would show).
    let root = a.browse.roots[0].clone();
    held_for_writing(
        &mut a,
        "snapshots/app-snap3.qcow2",
        &[
            "qemu-system-x86_64",
            "-name",
            "app",
            "-qmp",
            "unix:/run/app.qmp,server=on",
        ],
    );
    select(&mut a, "snapshots/app-snap3.qcow2");
    let fx = a.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('L'),
        KeyModifiers::NONE,
    )));
    let [Effect::PlanOp { job, .. }] = &fx[..] else {
        panic!("the live key plans: {fx:?}")
    };
    let job = *job;
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the live dialog")
    };
    assert!(
        matches!(p.ask, Ask::LiveCommit { .. }),
        "the image a VM writes is committed live: {:?}",
        p.ask
    );
    let plan = LivePlan {
        kind: LiveKind::Commit,
        top: root.join("snapshots/app-snap3.qcow2"),
        target: root.join("snapshots/app-snap2.qcow2"),
        via: Via::Qmp(PathBuf::from("/run/app.qmp")),
        holder: "app (QEMU VM, pid 4242, writing)".into(),
        pid: 4242,
        speed: 0,
    };
    a.update(Msg::OpPlanned {
        undo: None,
        job,
        plan: Box::new(Ok(AnyPlan::LiveCommit(Box::new(plan)))),
        space: None,
        searched: Vec::new(),
    });
    insta::assert_snapshot!("live_commit_plan", render(&a));
    // At 80x24 the text wraps to more lines; the keys stay in sight.
    a.update(Msg::Resize(80, 24));
    let small = render(&a);
    assert!(small.contains("Enter/y start"), "{small}");
    insta::assert_snapshot!("live_commit_plan_80x24", small);
    a.update(Msg::Resize(100, 30));
    let fx = key(&mut a, KeyCode::Enter);
    assert!(
        matches!(&fx[..], [Effect::RunOp { .. }]),
        "a live commit asks once: {fx:?}"
    );
    let progress = |phase, done| {
        Finished::Progress(Progress {
            op: OpKind::COMMIT,
            phase,
            done,
            total: 64 << 20,
            elapsed: Duration::from_secs(2),
            writing: false,
        })
    };
    a.update(Msg::Op {
        job,
        event: progress(Phase::Copy, 24 << 20),
    });
    insta::assert_snapshot!("live_commit_progress", render(&a));
    a.update(Msg::Op {
        job,
        event: Finished::Done(Box::new(Ended {
            exit_code: 0,
            summary: "app (QEMU VM, pid 4242, writing) committed 64.0 MiB of app-snap3.qcow2 \
                      into app-snap2.qcow2 itself and now runs on app-snap2.qcow2."
                .into(),
            refused: None,
            headline: None,
            title: None,
            left_writable: Vec::new(),
        })),
    });
    insta::assert_snapshot!("live_commit_done", render(&a));
    // D there plans deleting the layer the VM no longer runs on.
    let fx = a.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('D'),
        KeyModifiers::NONE,
    )));
    assert!(
        matches!(&fx[..], [Effect::PlanOp { ask: Ask::Delete(imgchain::ops::delete::Ask { image, .. }), .. }]
            if image.ends_with("app-snap3.qcow2")),
        "{fx:?}"
    );
}

/// A stopped libvirt VM's disk: flagged in the forest, named in details, and its delete
/// dialog refused until `f` says to delete it anyway.
#[test]
fn a_stopped_vm_s_disk_is_flagged_and_deleted_only_on_a_key_of_its_own() {
    let mut a = app("vmdisk", 100, 30);
    let root = a.browse.roots[0].clone();
    let defs = PathBuf::from("/tmp/imgchain-snapshots/vmdisk-defs");
    let _ = std::fs::remove_dir_all(&defs);
    std::fs::create_dir_all(&defs).unwrap();
    std::fs::write(
        defs.join("ci.xml"),
        format!(
            "<domain type='kvm'><name>ci</name><devices><disk type='file' device='disk'>\
             <source file='{}'/><target dev='vda'/></disk></devices></domain>",
            root.join("vms/ci.qcow2").display()
        ),
    )
    .unwrap();
    let opts = imgchain::forest::ScanOptions {
        libvirt_domains: vec![defs.clone()],
        ..Default::default()
    };
    rescan(&mut a, &root, &opts);
    select(&mut a, "vms/ci.qcow2");
    // Plans with the same scan options as the UI's workers.
    let plan_with = |a: &mut App, code: KeyCode| {
        let fx = a.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
        let (tx, rx) = std::sync::mpsc::channel();
        for e in fx {
            imgchain::tui::execute(
                e,
                &tx,
                &imgchain::tui::Workers {
                    scan: opts.clone(),
                    ..Default::default()
                },
            );
            let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            a.update(msg);
            steady_space(a);
        }
    };
    plan_with(&mut a, KeyCode::Char('D'));
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the delete dialog")
    };
    assert!(
        p.refusal
            .as_ref()
            .is_some_and(|e| e.to_string().contains("ci") && e.exit_code() == 13),
        "{:?}",
        p.refusal
    );
    insta::assert_snapshot!("op_delete_vm_disk", render(&a));
    plan_with(&mut a, KeyCode::Char('f'));
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the delete dialog again")
    };
    assert!(p.plan.is_some(), "{:?}", p.refusal);
    assert!(matches!(&p.ask, Ask::Delete(d) if d.force), "{:?}", p.ask);
    key(&mut a, KeyCode::Esc);
    assert!(root.join("vms/ci.qcow2").exists(), "nothing was deleted");
}

/// Filter tokens, a filter that matches nothing, the sort orders, and the details pane
/// focused, scrolled and zoomed at 80x24.
#[test]
fn filter_tokens_sort_and_details_focus() {
    let mut a = app("find", 80, 24);
    keys(&mut a, "/is:problem");
    insta::assert_snapshot!("filter_is_problem", render(&a));
    let id = a.selected_node().unwrap();
    assert!(
        !a.browse.forest.node(id).problems.is_empty(),
        "the cursor lands on a match, not its ancestor"
    );
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "/mode:kro fmt:qcow2");
    assert!(a.browse.matches() >= 1);
    key(&mut a, KeyCode::Enter);
    // Esc outside the filter drops a kept one.
    key(&mut a, KeyCode::Esc);
    assert!(a.browse.filter.is_empty() && a.status.contains("filter cleared"));
    keys(&mut a, "/size:>1T");
    insta::assert_snapshot!("filter_no_match", render(&a));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "/is:big");
    assert!(matches!(&a.browse.query, Err(e) if e.contains("is:problem")));
    key(&mut a, KeyCode::Esc);

    keys(&mut a, "s");
    assert!(a.status.contains("by size"), "{}", a.status);
    insta::assert_snapshot!("sorted_by_size", render(&a));
    keys(&mut a, "ss");
    assert!(a.status.contains("problems first"), "{}", a.status);
    insta::assert_snapshot!("sorted_problems_first", render(&a));
    keys(&mut a, "s");
    assert!(a.status.contains("by name"), "{}", a.status);
    // A message gives way to the idle status after three quiet ticks.
    for _ in 0..4 {
        a.update(Msg::Tick);
    }
    assert_eq!(a.status, "16 images");

    select(&mut a, "vms/orphan.qcow2");
    key(&mut a, KeyCode::Tab);
    assert!(a.details.focus);
    let before = a.selected_node();
    keys(&mut a, "jjj");
    assert_eq!(
        a.selected_node(),
        before,
        "j scrolls the details, not the forest"
    );
    assert_eq!(a.details.scroll, 3);
    insta::assert_snapshot!("details_focused_scrolled_80x24", render(&a));
    key(&mut a, KeyCode::Enter);
    assert!(a.details.zoom);
    insta::assert_snapshot!("details_zoomed_80x24", render(&a));
    key(&mut a, KeyCode::Esc);
    assert!(!a.details.zoom && !a.details.focus);
}

/// The bitmaps (with dirty bytes) of an image qemu-img made: `daily` (enabled, 1 MiB dirty)
/// and `weekly` (disabled); none where qemu-img is missing.
fn bitmaps_of_a_real_image() -> Result<imgchain::image::bitmaps::Counted, String> {
    if !common::have("qemu-img") {
        return Ok(Vec::new());
    }
    let dir = common::tempdir();
    let img = common::create(dir.path(), "b.qcow2", "qcow2", "64M", None, &[]);
    common::run(
        std::process::Command::new("qemu-img")
            .args(["bitmap", "--add"])
            .arg(&img)
            .arg("daily"),
    );
    common::run(
        std::process::Command::new("qemu-img")
            .args(["bitmap", "--add", "--disable"])
            .arg(&img)
            .arg("weekly"),
    );
    common::qemu_io(&img, "write 0 1M");
    let file = std::fs::File::open(&img).unwrap();
    let len = file.metadata().unwrap().len();
    let h = imgchain::image::file::read_header(&file, len)
        .unwrap()
        .unwrap()
        .qcow2
        .unwrap();
    imgchain::image::bitmaps::read(&img, &h).map_err(|e| e.to_string())
}

#[test]
fn details_show_the_whole_chain_and_internal_snapshots() {
    let mut a = app("chain", 100, 40);
    select(&mut a, "app-snap3.qcow2");
    let path = a.browse.selected_path().unwrap();
    let snap = |id: &str, name: &str, date_sec, vm_state_size| InternalSnapshot {
        id: id.into(),
        name: name.into(),
        date_sec,
        vm_clock_nsec: 0,
        vm_state_size,
        disk_size: None,
    };
    a.update(Msg::Allocation {
        path,
        map: None,
        snapshots: Ok(vec![
            snap("1", "before-upgrade", 1_764_000_000, 0),
            snap("2", "running", 1_764_086_400, 512 << 20),
        ]),
        bitmaps: bitmaps_of_a_real_image(),
    });
    insta::assert_snapshot!("details_chain_snapshots", render(&a));
    // Zoomed, the details show the bitmaps below the snapshots.
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("details_chain_snapshots_bitmaps_zoomed", render(&a));
}

#[test]
fn an_overlay_kept_elsewhere_makes_its_base_read_only() {
    let mut a = app("elsewhere", 100, 30);
    select(&mut a, "golden/alpine-3.qcow2");
    insta::assert_snapshot!("overlay_dirs", render(&a));
}

#[test]
fn a_commit_that_cannot_fit_is_refused_with_the_figures() {
    let mut a = app("nospace", 100, 30);
    select(&mut a, "app-snap3.qcow2");
    a.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::NONE,
    )));
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the commit dialog")
    };
    let job = p.job;
    let base = a.browse.roots[0].join("snapshots/app-snap2.qcow2");
    a.update(Msg::OpPlanned {
        undo: None,
        job,
        plan: Box::new(Err(Refusal::NoSpace {
            path: base,
            need: 25 << 20,
            free: 3 << 20,
        })),
        space: None,
        searched: Vec::new(),
    });
    let screen = render(&a);
    assert!(screen.contains("only 3 MiB free"), "{screen}");
    insta::assert_snapshot!("plan_no_space", screen);
}

#[test]
fn a_long_scan_shows_how_far_it_has_come() {
    let config = Config::default();
    let mut a = App::new(Settings {
        roots: vec![PathBuf::from("/srv/pool")],
        keymap: Keymap::new(&config.keys),
        theme: Theme::new(&config.theme, false),
        protect: Protect::new(false, &[] as &[&str]).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    a.update(Msg::Resize(80, 24));
    a.update(Msg::Scanning(imgchain::forest::ScanCounts {
        dirs: 120,
        files: 5000,
        probed: 3001,
        images: 1204,
        current: PathBuf::from("/srv/pool/vms/batch-7"),
    }));
    let screen = render(&a);
    assert!(screen.contains("1204 images found"), "{screen}");
    insta::assert_snapshot!("scanning_80x24", screen);
}

/// Mouse events as crossterm delivers them: a click selects a row, a click on the fold glyph
/// folds, the wheel moves the cursor over the forest and scrolls the details under it.
#[test]
fn mouse_clicks_and_the_wheel() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut a = app("mouse", 120, 36);
    let mouse = |kind, column, row| {
        Msg::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    let click = |column, row| mouse(MouseEventKind::Down(MouseButton::Left), column, row);
    let name = |a: &App| a.browse.forest.node(a.selected_node().unwrap()).name();
    // Rows start below the border and the header: the fifth row is vms/db.qcow2.
    a.update(click(20, 2 + 5));
    assert_eq!(name(&a), "db.qcow2");
    a.update(mouse(MouseEventKind::ScrollDown, 20, 10));
    assert_eq!(name(&a), "web.qcow2");
    // The fold glyph of golden/debian-12.qcow2 (fourth row) folds its three VMs away.
    a.update(click(1, 2 + 3));
    assert_eq!(name(&a), "debian-12.qcow2");
    assert!(
        a.browse
            .folded
            .iter()
            .any(|p| p.ends_with("debian-12.qcow2"))
    );
    insta::assert_snapshot!("mouse_folded", render(&a));
    // A click in the details focuses them; the wheel there scrolls them, not the cursor.
    a.update(click(90, 5));
    assert!(a.details.focus);
    a.update(mouse(MouseEventKind::ScrollDown, 90, 5));
    assert_eq!(name(&a), "debian-12.qcow2");
    assert_eq!(a.details.scroll, 3);
}

#[test]
fn the_orphan_and_kept_filters_at_80x24() {
    let mut a = app("tokens", 80, 24);
    held_for_writing(
        &mut a,
        "vms/web.qcow2",
        &["qemu-system-x86_64", "-name", "web"],
    );
    keys(&mut a, "/is:inuse");
    let screen = render(&a);
    assert!(
        screen.contains("vms/web.qcow2") && screen.contains("1 match"),
        "{screen}"
    );
    insta::assert_snapshot!("filter_is_inuse", screen);
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "/is:orphan");
    let screen = render(&a);
    assert!(
        screen.contains("orphan.qcow2") && screen.contains("frozen-2023"),
        "{screen}"
    );
    insta::assert_snapshot!("filter_is_orphan", screen);
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "/mode:kro fmt:qcow2");
    insta::assert_snapshot!("filter_mode_fmt", render(&a));
}

#[test]
fn read_only_shows_a_banner_and_refuses_every_write_key() {
    let mut a = app("readonly", 80, 24);
    a.read_only = true;
    select(&mut a, "vms/web.qcow2");
    for k in ['c', 'S', 'M', 'F', 'D', 'L', 'R'] {
        let fx = key(&mut a, KeyCode::Char(k));
        assert!(fx.is_empty(), "{k} started {fx:?}");
        assert!(a.popup.is_none(), "{k} opened a dialog");
        assert!(a.status.contains("--read-only"), "{k}: {}", a.status);
    }
    insta::assert_snapshot!("read_only_80x24", render(&a));
}

#[test]
fn the_idle_status_names_what_the_scan_passed_over_and_why() {
    let mut a = app("passedover", 100, 30);
    let opts = imgchain::forest::ScanOptions {
        max_depth: 0,
        ..Default::default()
    };
    let s = scan(
        &[PathBuf::from("/tmp/imgchain-snapshots/passedover")],
        &opts,
    )
    .unwrap();
    assert!(!s.skipped.is_empty(), "the demo has subdirectories");
    a.update(Msg::Scanned(Box::new(Ok(s))));
    for _ in 0..5 {
        a.update(Msg::Tick);
    }
    assert!(a.status.contains("passed over"), "{}", a.status);
    assert!(a.status.contains("scan.max_depth"), "{}", a.status);
}

/// A merge whose base has another overlay is refused with that overlay named and a key of
/// its own (`F`); with it, the plan names the disks that change, and nothing is written
/// until it is confirmed.
#[test]
fn a_merge_over_a_shared_base_goes_on_only_on_a_key_of_its_own() {
    let mut a = app("mergeshared", 100, 34);
    let root = a.browse.roots[0].clone();
    let snaps = root.join("snapshots");
    // Another overlay of app-snap1.qcow2: the same header names the same backing file.
    std::fs::copy(snaps.join("app-snap2.qcow2"), snaps.join("other.qcow2")).unwrap();
    let opts = imgchain::forest::ScanOptions {
        overlay_dirs: vec![imgchain::demo::elsewhere(&root)],
        ..Default::default()
    };
    rescan(&mut a, &root, &opts);
    select(&mut a, "snapshots/app-snap2.qcow2");
    keys(&mut a, "M");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the merge dialog: {:?}", a.popup)
    };
    assert!(
        matches!(&p.refusal, Some(Refusal::SharedBase { others, .. }) if others.len() == 1),
        "{:?}",
        p.refusal
    );
    let shown = render(&a);
    assert!(
        shown.contains("F merge anyway: 1 other disk changes"),
        "{shown}"
    );
    assert!(!shown.contains("--force"), "UI words, not flags: {shown}");
    insta::assert_snapshot!("op_merge_shared_refused", shown);
    assert!(key(&mut a, KeyCode::Enter).is_empty());
    assert!(
        a.popup.is_none() && a.status.contains("merge refused"),
        "Enter closes the refusal: {}",
        a.status
    );
    keys(&mut a, "M");
    keys(&mut a, "F");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the merge dialog again")
    };
    assert!(matches!(&p.ask, Ask::Merge(m) if m.force), "{:?}", p.ask);
    assert!(p.plan.is_some(), "{:?}", p.refusal);
    insta::assert_snapshot!("op_merge_shared_forced", render(&a));
    key(&mut a, KeyCode::Esc);
    assert!(snaps.join("app-snap2.qcow2").exists(), "nothing was merged");
}

/// A commit into a qcow2 v2 base that would have to grow is refused with the dialog's amend
/// key, in the UI's words; the key plans it again with the upgrade, and takes it back.
#[test]
fn a_v2_base_is_upgraded_first_on_a_key_of_its_own() {
    let mut a = app("amend", 100, 34);
    let root = a.browse.roots[0].clone();
    let d = root.join("v2");
    std::fs::create_dir_all(&d).unwrap();
    let qemu_img = |args: &[&str]| {
        let ok = std::process::Command::new("qemu-img")
            .current_dir(&d)
            .args(args)
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "qemu-img {args:?}");
    };
    if !common::have("qemu-img") {
        return;
    }
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "base.qcow2",
        "1M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
        "2M",
    ]);
    rescan(&mut a, &root, &Default::default());
    select(&mut a, "v2/top.qcow2");
    keys(&mut a, "c");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the commit dialog: {:?}", a.popup)
    };
    assert!(
        matches!(p.refusal, Some(Refusal::NeedsAmend { .. })),
        "{:?}",
        p.refusal
    );
    let shown = render(&a);
    assert!(
        shown.contains("u upgrade it to compat=1.1 first"),
        "{shown}"
    );
    assert!(!shown.contains("--amend"), "UI words, not flags: {shown}");
    keys(&mut a, "u");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the commit dialog again")
    };
    assert!(matches!(&p.ask, Ask::Commit(c) if c.amend), "{:?}", p.ask);
    assert_eq!(
        p.plan.as_ref().and_then(|p| p.amends_v2()),
        Some(true),
        "{:?}",
        p.refusal
    );
    let shown = render(&a);
    assert!(
        shown.contains("upgraded to compat=1.1 first") && shown.contains("u keep it v2"),
        "{shown}"
    );
    keys(&mut a, "u");
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the commit dialog a third time")
    };
    assert!(
        matches!(p.refusal, Some(Refusal::NeedsAmend { .. })),
        "{:?}",
        p.refusal
    );
    key(&mut a, KeyCode::Esc);
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(d.join("base.qcow2"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("\"0.10\""),
        "nothing was written"
    );
}

/// A run refused because a v2 image must be upgraded first shows its plan again, saying so
/// with the amend key, not a flag.
#[test]
fn a_run_refused_for_a_v2_image_shows_the_plan_again_with_the_amend_key() {
    let mut a = app("replan-v2", 100, 34);
    let job = start(&mut a);
    let base = a.browse.roots[0].join("snapshots/app-snap2.qcow2");
    let fx = a.update(Msg::Op {
        job,
        event: Finished::of::<Commit>(Event::Done(Box::new(Err(Refusal::NeedsAmend {
            path: base,
            what: "is a qcow2 v2 (compat=0.10) image".into(),
        })))),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    for e in fx {
        if matches!(e, Effect::PlanOp { .. }) {
            imgchain::tui::execute(e, &tx, &Default::default());
            let msg = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            a.update(msg);
        }
    }
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the plan dialog again: {:?}", a.popup);
    };
    let notice = p.notice.as_deref().unwrap_or_default();
    assert!(
        notice.starts_with("Nothing was written") && notice.contains("u has it upgraded"),
        "{notice}"
    );
    assert!(!render(&a).contains("--amend"), "UI words, not flags");
}

/// A host with a 600-layer chain off a golden image and two snapshots of one VM whose names
/// differ only in their dates, opened at `w`×`h`.
fn deep_host(name: &str, w: u16, h: u16) -> App {
    let dir = PathBuf::from("/tmp/imgchain-snapshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    common::deep_host(&dir, "centos7-golden.qcow2");
    let config = Config::default();
    let mut app = App::new(Settings {
        roots: vec![dir.clone()],
        keymap: Keymap::new(&config.keys),
        theme: Theme::new(&config.theme, false),
        protect: Protect::new::<&str>(false, &[]).unwrap(),
        keep_top: false,
        snapshot_cluster: 64 << 10,
        read_only: false,
    });
    app.update(Msg::Resize(w, h));
    rescan(&mut app, &dir, &Default::default());
    app
}

#[test]
fn deep_chain_stays_readable() {
    let mut a = deep_host("deep-80", 80, 24);
    insta::assert_snapshot!("deep_chain_80x24_top", render(&a));
    key(&mut a, KeyCode::Char('G'));
    insta::assert_snapshot!("deep_chain_80x24_end", render(&a));
    // Folding a layer inside the run hides what is built on it and says how much.
    select(&mut a, "vms/app-layer-3.qcow2");
    key(&mut a, KeyCode::Char('h'));
    insta::assert_snapshot!("deep_chain_80x24_folded", render(&a));
    let a = deep_host("deep-250", 250, 70);
    insta::assert_snapshot!("deep_chain_250x70", render(&a));
}

#[test]
fn message_log() {
    let mut a = app("log", 80, 24);
    keys(&mut a, "s");
    select(&mut a, "vms/orphan.qcow2");
    key(&mut a, KeyCode::Char('A'));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "m");
    insta::assert_snapshot!("message_log_80x24", render(&a));
    keys(&mut a, "m");
    assert!(a.popup.is_none(), "m closes the log");
}

#[test]
fn rebase_picker() {
    let mut a = app("picker", 80, 24);
    select(&mut a, "vms/web.qcow2");
    key(&mut a, KeyCode::Char('R'));
    insta::assert_snapshot!("rebase_picker_80x24", render(&a));
    keys(&mut a, "vms");
    key(&mut a, KeyCode::Down);
    insta::assert_snapshot!("rebase_picker_filtered", render(&a));
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("rebase_picked_plan", render(&a));
}

#[test]
fn snapshot_name_is_editable() {
    let mut a = app("rename", 80, 24);
    select(&mut a, "snapshots/app-snap3.qcow2");
    key(&mut a, KeyCode::Char('S'));
    key(&mut a, KeyCode::Char('e'));
    for _ in 0.."app-snap3.1.qcow2".len() {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "../escape.qcow2");
    key(&mut a, KeyCode::Enter);
    assert!(a.status.contains("not a path"), "{}", a.status);
    for _ in 0.."../escape.qcow2".len() {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "app-snap4.qcow2");
    insta::assert_snapshot!("snapshot_rename_editing", render(&a));
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("snapshot_renamed_plan", render(&a));
    let Some(Popup::Op(p)) = &a.popup else {
        panic!("the dialog closed")
    };
    assert_eq!(p.snapshot_name().as_deref(), Some("app-snap4.qcow2"));
    // A name taken: refused, with the key to pick another.
    key(&mut a, KeyCode::Char('e'));
    for _ in 0.."app-snap4.qcow2".len() {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "app-snap1.qcow2");
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("snapshot_name_taken", render(&a));
}

#[test]
fn commit_on_a_base_is_a_line_not_a_dialog() {
    let mut a = app("base-line", 80, 24);
    select(&mut a, "golden/alpine-3.qcow2");
    key(&mut a, KeyCode::Char('c'));
    assert!(a.popup.is_none(), "a dialog opened for nothing to do");
    assert!(a.status.contains("has no backing file"), "{}", a.status);
}

/// Each screen a newcomer meets, at the smallest and a large terminal: the hints on a top and
/// on a base, typing a filter, a commit's plan, a delete asking for the name typed, the
/// repair list, the image picker and the message log.
#[test]
fn each_screen_at_80x24_and_250x70() {
    for (w, h) in [(80, 24), (250, 70)] {
        let shot = |a: &App, what: &str| {
            insta::assert_snapshot!(format!("screen_{what}_{w}x{h}"), render(a));
        };
        let mut a = app(&format!("screens-{w}"), w, h);
        select(&mut a, "snapshots/app-snap3.qcow2");
        shot(&a, "top");
        select(&mut a, "golden/debian-12.qcow2");
        shot(&a, "base");
        keys(&mut a, "/is:problem");
        shot(&a, "filtering");
        key(&mut a, KeyCode::Esc);
        select(&mut a, "snapshots/app-snap3.qcow2");
        keys(&mut a, "c");
        shot(&a, "commit");
        key(&mut a, KeyCode::Esc);
        keys(&mut a, "D");
        key(&mut a, KeyCode::Enter);
        keys(&mut a, "app-snap");
        assert!(
            matches!(&a.popup, Some(Popup::Op(p)) if p.typed.as_deref() == Some("app-snap")),
            "the delete asks for the name typed: {:?}",
            a.status
        );
        shot(&a, "delete_typed");
        key(&mut a, KeyCode::Esc);
        key(&mut a, KeyCode::Esc);
        select(&mut a, "vms/orphan.qcow2");
        keys(&mut a, "A2");
        shot(&a, "repair");
        key(&mut a, KeyCode::Esc);
        select(&mut a, "vms/web.qcow2");
        keys(&mut a, "R");
        shot(&a, "picker");
        key(&mut a, KeyCode::Esc);
        keys(&mut a, "m");
        shot(&a, "messages");
    }
}
