//! The interactive UI: one channel of messages into the app loop, effects carried out on
//! worker threads, views drawn from the model. The UI thread never touches the disk.

pub mod app;
pub mod event;
pub mod keymap;
pub mod layout;
pub mod theme;
pub mod view;

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};

use app::{App, Effect, Msg, Settings};

use crate::forest::{self, ScanOptions};
use crate::ops::{self, scope::Scope};

/// How the UI starts.
pub struct Options {
    pub settings: Settings,
    pub workers: Workers,
}

/// What the workers carry effects out with: how to scan, and the session's settings for
/// planning and running operations.
#[derive(Clone, Debug, Default)]
pub struct Workers {
    pub scan: ScanOptions,
    pub settings: Arc<crate::ops::settings::Settings>,
}

/// Carries out one effect on a worker thread; results come back as messages.
pub fn execute(effect: Effect, tx: &Sender<Msg>, w: &Workers) {
    let tx = tx.clone();
    let scan = &w.scan;
    match effect {
        Effect::Scan(paths) => scan_in_background(paths, scan.clone(), tx),
        Effect::Stamp(mut dirs) => {
            dirs.extend(scan.overlay_dirs.iter().cloned());
            std::thread::spawn(move || {
                let _ = tx.send(Msg::Stamped(std::sync::Arc::new(stamps(dirs))));
            });
        }
        Effect::Watch(stamped) => {
            std::thread::spawn(move || {
                let dirs = stamped.iter().map(|(d, _)| d.clone()).collect();
                let _ = tx.send(Msg::Watched(stamps(dirs) != *stamped));
            });
        }
        Effect::SweepLocks(images) => {
            std::thread::spawn(move || {
                let _ = tx.send(Msg::Locks(crate::image::lock::sweep(&images)));
            });
        }
        Effect::Allocation {
            path,
            format,
            snapshots,
        } => {
            std::thread::spawn(move || {
                let map = crate::image::map::allocation(&path, format, 64)
                    .ok()
                    .flatten();
                let bitmaps = snapshots.as_ref().map_or(Ok(Vec::new()), |h| {
                    crate::image::bitmaps::read(&path, h).map_err(|e| e.to_string())
                });
                let snapshots = snapshots.map_or(Ok(Vec::new()), |h| {
                    crate::image::snapshots::list(&path, &h).map_err(|e| e.to_string())
                });
                let _ = tx.send(Msg::Allocation {
                    path,
                    map,
                    snapshots,
                    bitmaps,
                });
            });
        }
        Effect::PlanOp {
            job,
            ask,
            dirs,
            protect,
        } => plan_in_background(job, ask, (dirs, *protect), w, tx),
        Effect::Survey(paths) => {
            let (opts, settings) = (scan.clone(), Arc::clone(&w.settings));
            std::thread::spawn(move || {
                let report = crate::ops::clean::survey(&paths, &opts, &settings)
                    .map(|s| {
                        let mut lines = s.lines(settings.trash_keep);
                        lines.push(format!(
                            "Looked for images built on these and for VM definitions in: {}",
                            crate::words::searched_places(&s.searched)
                        ));
                        lines
                    })
                    .map_err(|e| e.to_string());
                let _ = tx.send(Msg::Surveyed(Box::new(report)));
            });
        }
        Effect::RunOp { job, plan } => {
            let id = job.id;
            plan.spawn(&job, Arc::clone(&w.settings), move |event| {
                let _ = tx.send(Msg::Op { job: id, event });
            });
        }
    }
}

/// Scans `paths` on a worker, sending what it has found so far a few times a second.
fn scan_in_background(
    paths: Vec<std::path::PathBuf>,
    mut opts: forest::ScanOptions,
    tx: Sender<Msg>,
) {
    let progress = std::sync::Arc::new(forest::ScanProgress::default());
    opts.progress = Some(std::sync::Arc::clone(&progress));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop, counts_tx) = (std::sync::Arc::clone(&done), tx.clone());
    // What the scan has found so far, a few times a second while it runs.
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(150));
            if counts_tx.send(Msg::Scanning(progress.counts())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let result = forest::scan(&paths, &opts).map_err(|e| e.to_string());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tx.send(Msg::Scanned(Box::new(result)));
    });
}

/// Plans `ask` on a worker, on a fresh scan of `dirs`, and works out its space.
fn plan_in_background(
    job: crate::ops::JobId,
    ask: ops::Ask,
    (dirs, protect): (Vec<std::path::PathBuf>, crate::forest::Protect),
    w: &Workers,
    tx: Sender<Msg>,
) {
    let scope = Scope {
        dirs,
        scan: w.scan.clone(),
        protect,
        settings: Arc::clone(&w.settings),
    };
    let settings = Arc::clone(&w.settings);
    std::thread::spawn(move || {
        let force = matches!(&ask, ops::Ask::Merge(m) if m.force);
        let (plan, space, searched) = match ops::plan(&ask, &scope) {
            Ok((p, searched)) => match p.room(force, &settings) {
                Ok(s) => (Ok(p), s, searched),
                Err(e) => (Err(e), None, searched),
            },
            Err(e) => (Err(e), None, Vec::new()),
        };
        let undo = plan
            .as_ref()
            .ok()
            .and_then(|p| ops::clones::offer(settings.undo, &p.changes()));
        let _ = tx.send(Msg::OpPlanned {
            job,
            plan: Box::new(plan),
            space,
            searched,
            undo,
        });
    });
}

/// Each directory with its modification time now.
fn stamps(
    dirs: Vec<std::path::PathBuf>,
) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
    dirs.into_iter()
        .map(|d| {
            let t = std::fs::metadata(&d).and_then(|m| m.modified()).ok();
            (d, t)
        })
        .collect()
}

/// Runs the UI until the user quits. The terminal is restored on every exit path, panics
/// included (ratatui's hook). Returns the report and exit code of a commit the user quit
/// during, to print once the terminal is back.
pub fn run(opts: Options) -> anyhow::Result<Option<(String, u8)>> {
    let mut terminal = ratatui::init();
    // Clicks and the wheel; a terminal that ignores the request just sends no mouse events.
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::EnableMouseCapture
    );
    let result = (|| -> anyhow::Result<Option<(String, u8)>> {
        let (tx, rx) = mpsc::channel();
        let mut app = App::new(opts.settings);
        let size = terminal.size()?;
        app.update(Msg::Resize(size.width, size.height));
        event::spawn_input(tx.clone());
        event::spawn_ticker(tx.clone(), std::time::Duration::from_secs(2));
        execute(Effect::Scan(app.browse.roots.clone()), &tx, &opts.workers);
        terminal.draw(|f| view::draw(&app, f))?;
        while !app.quit {
            let mut msg = rx.recv()?;
            loop {
                for e in app.update(msg) {
                    execute(e, &tx, &opts.workers);
                }
                // Coalesce what is already waiting into one frame.
                match rx.try_recv() {
                    Ok(m) if !app.quit => msg = m,
                    _ => break,
                }
            }
            terminal.draw(|f| view::draw(&app, f))?;
        }
        Ok(app.jobs.exit_report.take())
    })();
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::DisableMouseCapture
    );
    ratatui::restore();
    result
}
