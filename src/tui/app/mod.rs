//! The UI model and its one place of change: [`App::update`] takes a message and returns the
//! effects to carry out (scans, measurements, commits). No I/O happens here.
//!
//! The model is made of sub-states, each with its own file: [`browse`] (the forest, cursor,
//! folds, filter, protections), [`jobs`] (the running operation), [`dialog`] (popups) and
//! [`locks`] (lock sweeps and allocation maps). This file routes messages and keys to them.

pub mod browse;
pub mod dialog;
pub mod jobs;
pub mod locks;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

use super::keymap::{Action, Keymap};
use super::theme::Theme;
use crate::forest::scan::Scan;
use crate::forest::{Mode, NodeId, Protect};
use crate::image::file::FileId;
use crate::image::lock::{Foreign, Holder};
use crate::image::snapshots::InternalSnapshot;
use crate::ops::any::{AnyPlan, Ask, Finished};
use crate::ops::commit::{Commit, Outcome, Plan, Proposal};
use crate::ops::{self, Event, Refusal};
use crate::text::Names;
pub use browse::Browse;
pub use dialog::{OpPopup, PlanPopup, Popup};
pub use jobs::{Job, Jobs};
pub use locks::{Allocations, Locks};

/// Everything that reaches the app loop, through one channel.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// A scan finished (or failed: the message says why).
    Scanned(Box<Result<Scan, String>>),
    /// A commit planned on a fresh scan around its top (or why it could not be).
    Planned {
        job: u64,
        proposal: Box<Result<Proposal, Refusal>>,
    },
    /// Progress or the end of a running commit.
    Commit {
        job: u64,
        event: Event<Commit>,
    },
    /// Another operation planned on a fresh scan (or why it cannot run).
    OpPlanned {
        job: u64,
        plan: Box<Result<AnyPlan, Refusal>>,
        /// What it writes and frees (merge, delete).
        space: Option<crate::ops::space::Space>,
        /// Where images built on its chain were looked for.
        searched: Vec<crate::ops::dependents::Searched>,
    },
    /// Progress or the end of another running operation.
    Op {
        job: u64,
        event: Finished,
    },
    /// The allocation map of an image (`None`: too costly or unreadable), and its internal
    /// snapshots (`Err`: why the table could not be read).
    Allocation {
        path: PathBuf,
        map: Option<Vec<u8>>,
        snapshots: Result<Vec<InternalSnapshot>, String>,
    },
    /// Time for a lock sweep (every few seconds).
    Tick,
    /// How far the running scan has come.
    Scanning(crate::forest::ScanCounts),
    /// The modification times of the watched directories, taken after a scan.
    Stamped(Stamps),
    /// Whether a watched directory changed since it was stamped.
    Watched(bool),
    /// The images other processes hold now, with their lock bytes and holders.
    Locks(Vec<(PathBuf, Foreign, Vec<Holder>)>),
}

/// Directories and their modification times (`None`: unreadable): a file created, removed
/// or renamed in one changes it.
pub type Stamps = Arc<Vec<(PathBuf, Option<std::time::SystemTime>)>>;

/// The key that commits into a base other images are built on (Enter never does).
pub const SHARED_KEY: char = 'F';

/// Work the loop must start for the app.
#[derive(Debug)]
pub enum Effect {
    Scan(Vec<PathBuf>),
    /// Take the modification times of these directories (and the scan's overlay directories).
    Stamp(Vec<PathBuf>),
    /// Compare the directories with their stamps.
    Watch(Stamps),
    /// Re-probe QEMU locks on these images (path, identity) without taking any.
    SweepLocks(Arc<Vec<(PathBuf, FileId)>>),
    /// Compute the allocation map of the image at `path`, and list its internal snapshots
    /// when its header (given then) says it has some.
    Allocation {
        path: PathBuf,
        format: crate::image::probe::Format,
        snapshots: Option<Box<crate::image::probe::Qcow2Header>>,
    },
    /// Plan the commit of `top` (into `base`, or its backing file) on a fresh scan around
    /// it and the UI's paths, with the UI's protections: the CLI's planning path.
    Plan {
        job: u64,
        top: PathBuf,
        base: Option<PathBuf>,
        keep_top: bool,
        dirs: Vec<PathBuf>,
        protect: Protect,
    },
    Commit {
        job: ops::Job,
        plan: Box<Plan>,
    },
    /// Plan another operation on a fresh scan around its image, with the UI's protections.
    PlanOp {
        job: u64,
        ask: Ask,
        dirs: Vec<PathBuf>,
        protect: Protect,
    },
    RunOp {
        job: ops::Job,
        plan: Box<AnyPlan>,
    },
}

/// The model.
pub struct App {
    pub browse: Browse,
    pub jobs: Jobs,
    pub popup: Option<Popup>,
    pub locks: Locks,
    pub allocation: Allocations,
    pub status: String,
    pub keymap: Keymap,
    pub theme: Theme,
    pub size: (u16, u16),
    /// The details pane: whether the keys scroll it, how far, and whether it fills the screen.
    pub details: DetailsView,
    pub quit: bool,
    /// Started with `--read-only`: browsing only.
    pub read_only: bool,
    keep_top_default: bool,
    /// Cluster size of the overlays `snapshot` makes.
    snapshot_cluster: usize,
    /// The next scan result replaces the status line.
    announce_scan: bool,
    /// The status line as the last tick saw it, and for how many ticks it has not changed.
    status_seen: (String, u8),
    /// The layer a finished live commit or merge dropped from its VM's chain, which the
    /// result dialog offers to delete.
    leftover: Option<PathBuf>,
    /// The directories watched for files appearing or vanishing, and whether a look at them
    /// is under way.
    watch: Stamps,
    watching: bool,
}

/// The details pane's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetailsView {
    /// The movement keys scroll the details instead of moving the cursor.
    pub focus: bool,
    /// Lines scrolled off the top.
    pub scroll: u16,
    /// The details fill the screen above the jobs pane.
    pub zoom: bool,
}

/// Settings the app starts with.
pub struct Settings {
    pub roots: Vec<PathBuf>,
    pub keymap: Keymap,
    pub theme: Theme,
    pub protect: Protect,
    pub keep_top: bool,
    /// Cluster size of new overlays (`[snapshot] cluster_size`).
    pub snapshot_cluster: usize,
    /// Started with `--read-only`: browsing only, every write key is refused.
    pub read_only: bool,
}

impl App {
    /// An app with an empty forest; the caller starts the first scan.
    pub fn new(s: Settings) -> App {
        App {
            browse: Browse::new(s.roots, s.protect),
            jobs: Jobs::default(),
            popup: None,
            locks: Locks::default(),
            allocation: Allocations::default(),
            status: "scanning…".into(),
            keymap: s.keymap,
            theme: s.theme,
            size: (80, 24),
            quit: false,
            keep_top_default: s.keep_top,
            snapshot_cluster: s.snapshot_cluster,
            read_only: s.read_only,
            announce_scan: true,
            status_seen: (String::new(), 0),
            leftover: None,
            details: DetailsView::default(),
            watch: Arc::default(),
            watching: false,
        }
    }

    /// The node under the cursor.
    pub fn selected_node(&self) -> Option<NodeId> {
        self.browse.selected_node()
    }

    /// Whether the image at `path` is open read-write by the running job right now.
    pub fn live_rw(&self, path: &Path) -> bool {
        self.jobs.live_rw(path)
    }

    /// The mode to show for a node: the live mode of a commit's base, or its model mode.
    pub fn shown_mode(&self, id: NodeId) -> Mode {
        let n = self.browse.forest.node(id);
        if self.live_rw(&n.path) {
            Mode::Rw
        } else {
            n.mode
        }
    }

    /// Where the panes are on the terminal now.
    pub fn areas(&self) -> super::layout::Areas {
        super::layout::areas(
            Rect::new(0, 0, self.size.0, self.size.1),
            self.jobs.running.is_some(),
        )
    }

    /// The one place the model changes.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let mut effects = self.handle(msg);
        let page = self.areas().forest.height.saturating_sub(3).into();
        if page != self.browse.page {
            self.browse.page = page;
            self.browse.clamp();
        }
        effects.extend(self.want_allocation());
        effects
    }

    /// Asks for the selected image's allocation map once, if it is cheap and not known yet.
    fn want_allocation(&mut self) -> Option<Effect> {
        let n = self.browse.forest.node(self.selected_node()?);
        let (path, format) = self.allocation.want(&n.path, n.format)?;
        let snapshots = n
            .qcow2
            .as_ref()
            .filter(|h| h.nb_snapshots > 0)
            .map(|h| Box::new(h.clone()));
        Some(Effect::Allocation {
            path,
            format,
            snapshots,
        })
    }

    fn handle(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Resize(w, h) => {
                self.size = (w, h);
                Vec::new()
            }
            Msg::Scanned(result) => self.on_scan(*result),
            Msg::Scanning(counts) => {
                if self.browse.scanning {
                    self.browse.scan_counts = Some(counts);
                }
                Vec::new()
            }
            Msg::Stamped(stamps) => {
                self.watch = stamps;
                Vec::new()
            }
            Msg::Watched(changed) => {
                self.watching = false;
                if changed && !self.browse.scanning && self.jobs.running.is_none() {
                    self.announce_scan = true;
                    self.status = "files changed on disk: scanning again…".into();
                    return self.rescan();
                }
                Vec::new()
            }
            Msg::Planned { job, proposal } => {
                if let Some(Popup::Plan(p)) = &mut self.popup
                    && p.job == job
                {
                    p.fill(*proposal);
                }
                Vec::new()
            }
            Msg::Commit { job, event } => self.on_commit(job, event),
            Msg::OpPlanned {
                job,
                plan,
                space,
                searched,
            } => {
                if let Some(Popup::Op(p)) = &mut self.popup
                    && p.job == job
                {
                    p.fill(*plan);
                    p.space = space;
                    p.searched = searched;
                }
                Vec::new()
            }
            Msg::Op { job, event } => self.on_op(job, event),
            Msg::Tick => {
                self.age_status();
                // Our own commit's locks would show as foreign: no sweep while one runs.
                if self.browse.scanning || self.jobs.running.is_some() {
                    return Vec::new();
                }
                let mut fx = Vec::new();
                if !self.watching && !self.watch.is_empty() {
                    self.watching = true;
                    fx.push(Effect::Watch(Arc::clone(&self.watch)));
                }
                if !self.locks.sweeping {
                    self.locks.sweeping = true;
                    fx.push(Effect::SweepLocks(Arc::clone(&self.locks.targets)));
                }
                fx
            }
            Msg::Locks(found) => {
                self.locks.sweeping = false;
                if self.jobs.running.is_none() {
                    Locks::apply(&mut self.browse.forest, found);
                }
                Vec::new()
            }
            Msg::Allocation {
                path,
                map,
                snapshots,
            } => {
                self.allocation.insert(path, map, snapshots);
                Vec::new()
            }
            Msg::Mouse(m) => self.on_mouse(m),
            Msg::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Msg::Key(_) => Vec::new(),
        }
    }

    /// What the status line says when nothing happened lately: the count of images, and of
    /// the paths passed over with the first one's reason (which names the setting).
    fn idle_status(&self) -> String {
        let images = self.browse.forest.nodes.len();
        match self.browse.skipped.as_slice() {
            [] => format!("{images} images"),
            [first, rest @ ..] => format!(
                "{images} images; passed over {}: {}{}",
                first.path.shown(),
                first.reason,
                match rest.len() {
                    0 => String::new(),
                    n => format!(" (and {n} more: imgchain tree names them)"),
                }
            ),
        }
    }

    /// On each tick: a message that stayed three ticks (about 6 s) gives way to the idle
    /// status, unless an operation runs (its progress is what the line is about).
    fn age_status(&mut self) {
        if self.status != self.status_seen.0 {
            self.status_seen = (self.status.clone(), 0);
            return;
        }
        self.status_seen.1 += 1;
        if self.status_seen.1 >= 3 && self.jobs.running.is_none() && !self.browse.scanning {
            self.status = self.idle_status();
            self.status_seen = (self.status.clone(), 0);
        }
    }

    fn on_scan(&mut self, result: Result<Scan, String>) -> Vec<Effect> {
        self.browse.scanning = false;
        self.browse.scan_counts = None;
        match result {
            Ok(scan) => {
                // Compared only for a scan whose result is announced; the first scan has
                // nothing to compare with.
                let first = std::mem::take(&mut self.watch).is_empty();
                let before: HashSet<PathBuf> = if first || !self.announce_scan {
                    HashSet::new()
                } else {
                    self.browse
                        .forest
                        .nodes
                        .iter()
                        .map(|n| n.path.clone())
                        .collect()
                };
                self.browse.set_forest(scan);
                // Sizes and allocations may have changed (a commit, or anything else on disk).
                self.allocation.maps.clear();
                self.allocation.snapshots.clear();
                self.locks.retarget(&self.browse.forest);
                // A rescan after a commit keeps the commit's result on the status line.
                if std::mem::take(&mut self.announce_scan) {
                    self.status = self.idle_status();
                    if !before.is_empty() {
                        let nodes = &self.browse.forest.nodes;
                        let new = nodes.iter().filter(|n| !before.contains(&n.path)).count();
                        let gone = (before.len() + new).saturating_sub(nodes.len());
                        self.status = format!(
                            "scanned again: {}{}",
                            self.status,
                            match (new, gone) {
                                (0, 0) => " (no image came or went)".to_string(),
                                (n, g) => format!(" ({n} new, {g} gone)"),
                            }
                        );
                    }
                }
                let mut dirs: Vec<PathBuf> = self.browse.roots.clone();
                dirs.extend(
                    self.browse
                        .forest
                        .nodes
                        .iter()
                        .filter_map(|n| n.path.parent().map(PathBuf::from)),
                );
                dirs.sort();
                dirs.dedup();
                vec![Effect::Stamp(dirs)]
            }
            Err(e) => {
                self.popup = Some(Popup::Message {
                    title: "Scan failed".into(),
                    body: e,
                    error: true,
                });
                Vec::new()
            }
        }
    }

    fn rescan(&mut self) -> Vec<Effect> {
        self.browse.scanning = true;
        vec![Effect::Scan(self.browse.roots.clone())]
    }

    fn on_commit(&mut self, id: u64, event: Event<Commit>) -> Vec<Effect> {
        let Some(job) = self.jobs.running.as_mut().filter(|j| j.id == id) else {
            return Vec::new();
        };
        let result = match event {
            Event::Progress(p) => {
                job.progress = Some(p);
                return Vec::new();
            }
            Event::Done(result) => *result,
        };
        let Some(job) = self.jobs.running.take() else {
            return Vec::new();
        };
        if self.jobs.quit_pending {
            self.jobs.exit_report = Some(match &result {
                Ok(o) => (o.summary(), o.exit_code()),
                Err(e) => (e.to_string(), e.exit_code()),
            });
            self.quit = true;
            return Vec::new();
        }
        match result {
            Ok(outcome) => self.on_outcome(outcome),
            // The run found an overlay the plan had not seen, and wrote nothing: plan again
            // on a fresh scan, so the dialog shows the overlay and asks as for any shared base.
            Err(Refusal::SharedBase { others, .. }) => {
                let names: Vec<String> = others
                    .iter()
                    .map(|p| crate::forest::model::file_name(p))
                    .collect();
                self.status = "the chain changed since the plan; nothing was written".into();
                let mut fx = self.plan_popup(job.top, job.deeper, job.keep_top);
                if let Some(Popup::Plan(p)) = &mut self.popup {
                    p.notice = Some(format!(
                        "Nothing was written: since the plan, the base gained {} ({}). Here is \
                         the plan again, made on a fresh scan.",
                        if others.len() == 1 {
                            "an overlay"
                        } else {
                            "overlays"
                        },
                        names.join(", ")
                    ));
                }
                fx.extend(self.rescan());
                return fx;
            }
            Err(e) => {
                self.status = "commit refused".into();
                self.popup = Some(Popup::Message {
                    title: if matches!(e, Refusal::Internal { .. }) {
                        "Commit stopped by an internal error".into()
                    } else {
                        "Commit refused".into()
                    },
                    body: e.to_string(),
                    error: true,
                });
            }
        }
        self.rescan()
    }

    fn on_op(&mut self, id: u64, event: Finished) -> Vec<Effect> {
        let Some(job) = self.jobs.running.as_mut().filter(|j| j.id == id) else {
            return Vec::new();
        };
        let (exit_code, summary) = match event {
            Finished::Progress(p) => {
                job.progress = Some(p);
                return Vec::new();
            }
            Finished::Done { exit_code, summary } => (exit_code, summary),
        };
        let Some(job) = self.jobs.running.take() else {
            return Vec::new();
        };
        let op = job.progress.map_or("Operation", |p| p.op.title());
        if self.jobs.quit_pending {
            self.jobs.exit_report = Some((summary, exit_code));
            self.quit = true;
            return Vec::new();
        }
        let ok = exit_code == crate::exit::OK;
        self.status = format!(
            "{} {}",
            op.to_lowercase(),
            if ok { "done" } else { "did not finish" }
        );
        self.leftover = job.leftover.filter(|_| ok);
        let body = match &self.leftover {
            Some(l) => format!(
                "{summary}\n\n{} deletes {} now (planned and asked first, as any delete).",
                self.keymap.keys_of(Action::Delete),
                crate::forest::model::file_name(l)
            ),
            None => summary,
        };
        self.popup = Some(Popup::Message {
            title: format!("{op}: {}", if ok { "done" } else { "stopped" }),
            body,
            error: !ok,
        });
        self.rescan()
    }

    /// The status line and, unless all went well, a dialog for a finished commit.
    fn on_outcome(&mut self, outcome: Outcome) {
        let summary = outcome.summary();
        if matches!(outcome.reopen_ro, Some(Err(_))) {
            self.jobs
                .reopen_failed
                .insert(outcome.plan.base.path.clone());
        }
        if outcome.exit_code() == crate::exit::OK {
            let name = crate::forest::model::file_name;
            self.status = format!(
                "{}Committed {} of {} into {}; base read-only again; top {}",
                if outcome.cancel_too_late {
                    "Too late to cancel: "
                } else {
                    ""
                },
                crate::output::human_size(outcome.total),
                name(&outcome.plan.top.path),
                name(&outcome.plan.base.path),
                if outcome.top_emptied.is_some() {
                    "emptied"
                } else {
                    "kept"
                }
            );
            return;
        }
        let cancelled = outcome.exit_code() == crate::exit::CANCELLED;
        self.status = if cancelled {
            "commit cancelled".into()
        } else {
            "commit failed".into()
        };
        self.popup = Some(Popup::Message {
            title: if cancelled {
                "Commit cancelled".into()
            } else if outcome.copy.is_ok() {
                "Committed, but the base could not be reopened read-only".into()
            } else {
                "Commit failed".into()
            },
            body: summary,
            error: !cancelled,
        });
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if self.browse.filtering {
            self.browse.filter_key(key);
            return Vec::new();
        }
        if let Some(popup) = self.popup.take() {
            return self.on_popup_key(popup, key);
        }
        let Some(action) = self.keymap.browse(&key) else {
            match self.keymap.dialog(&key) {
                // Esc steps back: out of the zoom, out of the details, then drops the filter.
                Some(Action::Close) => {
                    if self.details.zoom || self.details.focus {
                        self.details.zoom = false;
                        self.details.focus = false;
                    } else if let Some(s) = self.browse.clear_filter() {
                        self.status = s;
                    }
                }
                // Enter zooms the focused details, else folds or unfolds the selected image.
                Some(Action::Confirm) => {
                    if self.details.focus {
                        self.details.zoom = !self.details.zoom;
                    } else if let Some(id) = self.browse.selected_node() {
                        self.browse.toggle_fold(id);
                    }
                }
                _ => {
                    self.status = format!(
                        "no action on that key; {} shows the keys",
                        self.keymap.keys_of(Action::Help)
                    );
                }
            }
            return Vec::new();
        };
        self.on_action(action)
    }

    /// A click selects the forest row under it (on its fold glyph or a second click on the
    /// selected row, folds or unfolds it) or focuses the details; the wheel scrolls the pane
    /// under it. Dialogs take no mouse input.
    fn on_mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        if self.popup.is_some() || self.browse.filtering {
            return Vec::new();
        }
        let a = self.areas();
        let inside = |r: Rect| {
            m.column >= r.x && m.column < r.x + r.width && m.row >= r.y && m.row < r.y + r.height
        };
        let over_details = self.details.zoom || inside(a.details);
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let down = m.kind == MouseEventKind::ScrollDown;
                if over_details {
                    self.details.scroll = if down {
                        self.details.scroll.saturating_add(3)
                    } else {
                        self.details.scroll.saturating_sub(3)
                    };
                } else if inside(a.forest) {
                    self.browse
                        .act(if down { Action::Down } else { Action::Up });
                    self.details.scroll = 0;
                }
            }
            MouseEventKind::Down(MouseButton::Left) if over_details => self.details.focus = true,
            MouseEventKind::Down(MouseButton::Left) if inside(a.forest) => {
                self.details.focus = false;
                // Below the top border and the header row.
                let Some(line) = m.row.checked_sub(a.forest.y + 2) else {
                    return Vec::new();
                };
                let at = self.browse.offset + usize::from(line);
                let Some(&ri) = self.browse.visible.get(at) else {
                    return Vec::new();
                };
                let (id, guide) = (self.browse.rows[ri].id, &self.browse.rows[ri].guide);
                // The fold glyph (▾/▸) comes right after the tree's guide lines.
                let guide = u16::try_from(guide.chars().count()).unwrap_or(u16::MAX);
                let on_glyph = m.column <= a.forest.x + 2 + guide;
                self.browse.selected = at;
                self.browse.clamp();
                self.details.scroll = 0;
                if on_glyph {
                    self.browse.toggle_fold(id);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Scrolls the focused details pane for a movement key; `false` for other keys.
    fn scroll_details(&mut self, action: Action) -> bool {
        let page = u16::try_from(self.browse.page.max(1)).unwrap_or(u16::MAX);
        let s = &mut self.details.scroll;
        match action {
            Action::Up => *s = s.saturating_sub(1),
            Action::Down => *s = s.saturating_add(1),
            Action::PageUp => *s = s.saturating_sub(page),
            Action::PageDown => *s = s.saturating_add(page),
            Action::First => *s = 0,
            _ => return false,
        }
        true
    }

    fn on_popup_key(&mut self, popup: Popup, key: KeyEvent) -> Vec<Effect> {
        let dialog = self.keymap.dialog(&key);
        let browse = self.keymap.browse(&key);
        match popup {
            Popup::Help(scroll) => {
                self.popup = match (dialog, browse) {
                    (Some(_), _) | (_, Some(Action::Help | Action::Quit)) => None,
                    (_, Some(Action::Down | Action::PageDown)) => Some(Popup::Help(scroll + 1)),
                    (_, Some(Action::Up | Action::PageUp)) => {
                        Some(Popup::Help(scroll.saturating_sub(1)))
                    }
                    _ => Some(Popup::Help(scroll)),
                };
                Vec::new()
            }
            Popup::ConfirmUnprotect { path, rule } => {
                match dialog {
                    Some(Action::Confirm) => {
                        self.browse.unprotect(&path);
                        self.status = format!("{} unprotected until quit", path.shown());
                    }
                    Some(_) => self.status = format!("{} stays protected ({rule})", path.shown()),
                    None => self.popup = Some(Popup::ConfirmUnprotect { path, rule }),
                }
                Vec::new()
            }
            Popup::ConfirmQuit => {
                match (dialog, &self.jobs.running) {
                    (Some(Action::Confirm), Some(j)) => {
                        j.cancel();
                        self.jobs.quit_pending = true;
                        self.status =
                            "cancelling the commit and reopening the base read-only before quitting…"
                                .into();
                    }
                    (Some(Action::Confirm), None) => self.quit = true,
                    (Some(_), _) => self.status = "the commit goes on".into(),
                    (None, _) => self.popup = Some(Popup::ConfirmQuit),
                }
                Vec::new()
            }
            Popup::Message { .. } if browse == Some(Action::Delete) && self.leftover.is_some() => {
                let image = self.leftover.take().unwrap_or_default();
                let ask = Ask::Delete {
                    image,
                    with_overlays: false,
                    force: false,
                };
                self.op_popup(ask, Vec::new())
            }
            Popup::Message { .. } if dialog.is_some() || browse == Some(Action::Quit) => {
                self.leftover = None;
                Vec::new()
            }
            p @ Popup::Message { .. } => {
                self.popup = Some(p);
                Vec::new()
            }
            Popup::Op(p) => self.on_op_key(*p, dialog, key),
            Popup::Plan(mut p) => match dialog {
                Some(Action::Close) => {
                    self.status = "commit not started".into();
                    Vec::new()
                }
                Some(Action::Confirm) => self.confirm_plan(*p),
                _ if key.code == KeyCode::Char(SHARED_KEY) && !p.shared_with.is_empty() => {
                    p.forced = true;
                    self.confirm_plan(*p)
                }
                _ if key.code == KeyCode::Char('b') => self.deeper_base(*p),
                _ => {
                    if key.code == KeyCode::Char('d') && p.refusal.is_none() && !p.deeper() {
                        p.keep_top = !p.keep_top;
                        if let Some(plan) = &mut p.plan {
                            plan.keep_top = p.keep_top;
                        }
                    }
                    self.popup = Some(Popup::Plan(p));
                    Vec::new()
                }
            },
        }
    }

    fn on_op_key(&mut self, mut p: OpPopup, dialog: Option<Action>, key: KeyEvent) -> Vec<Effect> {
        match dialog {
            Some(Action::Close) => {
                self.status = format!("{} not started", p.name().to_lowercase());
                return Vec::new();
            }
            Some(Action::Confirm) if p.pending => {
                self.status = "still checking the chain, its locks and its overlays".into();
            }
            Some(Action::Confirm) if p.refusal.is_some() => {
                self.status = format!("{} refused", p.name().to_lowercase());
                return Vec::new();
            }
            Some(Action::Confirm) if p.asks_twice() && !p.confirmed_once => {
                p.confirmed_once = true;
            }
            Some(Action::Confirm) => return self.start_op(p),
            _ => match (&p.ask, key.code) {
                (
                    Ask::Delete {
                        image,
                        with_overlays: false,
                        force,
                    },
                    KeyCode::Char('a'),
                ) if !p.pending => {
                    let ask = Ask::Delete {
                        image: image.clone(),
                        with_overlays: true,
                        force: *force,
                    };
                    return self.op_popup(ask, Vec::new());
                }
                // A defined VM's disk: deleting it anyway is a deliberate key of its own.
                (
                    Ask::Delete {
                        image,
                        with_overlays,
                        force: false,
                    },
                    KeyCode::Char('f'),
                ) if p
                    .refusal
                    .as_ref()
                    .is_some_and(|(m, _)| m.contains("detach-disk")) =>
                {
                    let ask = Ask::Delete {
                        image: image.clone(),
                        with_overlays: *with_overlays,
                        force: true,
                    };
                    return self.op_popup(ask, Vec::new());
                }
                (Ask::Repair { image, pick }, code) if p.plan.is_some() => {
                    let n = match &p.plan {
                        Some(AnyPlan::Repair(r)) => r.candidates.len().max(1),
                        _ => 1,
                    };
                    let to = match code {
                        KeyCode::Char('b' | 'j') | KeyCode::Down => Some((pick + 1) % n),
                        KeyCode::Char('k') | KeyCode::Up => Some((pick + n - 1) % n),
                        KeyCode::Char(d @ '1'..='9') => {
                            Some((d as usize - '1' as usize).min(n - 1))
                        }
                        _ => None,
                    };
                    if let Some(to) = to.filter(|to| to != pick) {
                        let ask = Ask::Repair {
                            image: image.clone(),
                            pick: to,
                        };
                        return self.op_popup(ask, Vec::new());
                    }
                }
                (Ask::Rebase { image, backing }, KeyCode::Char('b')) if !p.pending => {
                    let at = p.chain.iter().position(|c| c == backing);
                    let next = p.chain[at.map_or(0, |i| (i + 1) % p.chain.len())].clone();
                    let ask = Ask::Rebase {
                        image: image.clone(),
                        backing: next,
                    };
                    return self.op_popup(ask, p.chain);
                }
                _ => {}
            },
        }
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    fn start_op(&mut self, p: OpPopup) -> Vec<Effect> {
        let name = p.name().to_lowercase();
        let Some(plan) = p.plan else {
            return Vec::new();
        };
        let job = plan.job(p.job);
        let writes = job.writes.clone();
        self.jobs.running = Some(Job {
            id: p.job,
            top: p.ask.image().clone(),
            base: writes.first().cloned().unwrap_or_default(),
            deeper: None,
            keep_top: true,
            progress: None,
            cancel: Arc::clone(&job.cancel),
            leftover: match &plan {
                AnyPlan::Live(l) if !matches!(l.kind, ops::live::LiveKind::Snapshot(_)) => {
                    Some(l.top.clone())
                }
                _ => None,
            },
        });
        self.status = format!(
            "{name}: {}… ({} cancels)",
            crate::forest::model::file_name(p.ask.image()),
            self.keymap.keys_of(Action::Cancel)
        );
        vec![Effect::RunOp {
            job,
            plan: Box::new(plan),
        }]
    }

    /// The dialog of `ask`, planned by a worker on a fresh scan.
    fn op_popup(&mut self, ask: Ask, chain: Vec<PathBuf>) -> Vec<Effect> {
        let job = self.jobs.next_id();
        self.popup = Some(Popup::Op(Box::new(OpPopup::pending(
            job,
            ask.clone(),
            chain,
        ))));
        vec![Effect::PlanOp {
            job,
            ask,
            dirs: self.browse.roots.clone(),
            protect: self.browse.protect.clone(),
        }]
    }

    /// Opens the dialog of `action` for the selected image.
    fn ask(&mut self, action: Action) -> Vec<Effect> {
        if self.jobs.running.is_some() {
            self.status = "an operation is running; wait for it or cancel it first".into();
            return Vec::new();
        }
        let Some(id) = self.browse.selected_node() else {
            return Vec::new();
        };
        let forest = &self.browse.forest;
        let image = forest.node(id).path.clone();
        let written = forest.node(id).holders.iter().any(|h| h.foreign.writer());
        // Rebase onto an image further down: the backing file's backing first.
        let chain: Vec<PathBuf> = forest
            .chain(id)
            .skip(1)
            .map(|c| forest.node(c).path.clone())
            .collect();
        let ask = match action {
            // A VM writes it: the VM moves onto the new overlay itself.
            Action::Snapshot if written => Ask::LiveSnapshot {
                image,
                cluster_size: self.snapshot_cluster,
            },
            Action::Snapshot => Ask::Snapshot {
                image,
                cluster_size: self.snapshot_cluster,
            },
            Action::Delete => Ask::Delete {
                image,
                with_overlays: false,
                force: false,
            },
            Action::Flatten => Ask::Flatten { image },
            Action::Repair => Ask::Repair { image, pick: 0 },
            // The image a VM writes is committed; a middle layer of its chain is merged.
            Action::Live if written => Ask::LiveCommit { image },
            Action::Live => Ask::LiveMerge { image },

            Action::Merge => Ask::Merge {
                image,
                force: false,
            },
            _ => match chain.first() {
                Some(b) => Ask::Rebase {
                    image,
                    backing: b.clone(),
                },
                None => {
                    self.status = format!(
                        "{} has no image below its backing file to rebase onto",
                        crate::forest::model::file_name(&image)
                    );
                    return Vec::new();
                }
            },
        };
        self.op_popup(ask, chain)
    }

    /// The plan popup again, into the next image down the top's chain (after the last one,
    /// back to its backing file).
    fn deeper_base(&mut self, p: PlanPopup) -> Vec<Effect> {
        if p.pending || p.chain.is_empty() {
            self.popup = Some(Popup::Plan(Box::new(p)));
            return Vec::new();
        }
        let at = p.chain.iter().position(|c| Some(c) == p.base.as_ref());
        let next = at.map_or(0, |i| (i + 1) % p.chain.len());
        let deeper = (next > 0).then(|| p.chain[next].clone());
        self.plan_popup(p.top, deeper, p.keep_top)
    }

    fn confirm_plan(&mut self, p: PlanPopup) -> Vec<Effect> {
        if p.pending {
            self.status = "still checking the chain and its overlays".into();
            self.popup = Some(Popup::Plan(Box::new(p)));
            return Vec::new();
        }
        if p.refusal.is_some() {
            self.status = "commit refused".into();
            return Vec::new();
        }
        if !p.shared_with.is_empty() && !p.forced {
            self.status = format!(
                "other images are built on this base: {SHARED_KEY} commits anyway, Esc cancels"
            );
            self.popup = Some(Popup::Plan(Box::new(p)));
            return Vec::new();
        }
        let deeper = p.deeper().then(|| p.base.clone()).flatten();
        let Some(mut plan) = p.plan else {
            return Vec::new();
        };
        plan.keep_top = p.keep_top;
        let job = ops::Job::new::<Commit>(p.job, &plan);
        self.jobs.running = Some(Job {
            id: p.job,
            top: plan.top.path.clone(),
            base: plan.base.path.clone(),
            deeper,
            keep_top: p.keep_top,
            progress: None,
            cancel: Arc::clone(&job.cancel),
            leftover: None,
        });
        self.status = format!(
            "committing {}… ({} cancels)",
            crate::forest::model::file_name(&plan.top.path),
            self.keymap.keys_of(Action::Cancel)
        );
        vec![Effect::Commit {
            job,
            plan: Box::new(plan),
        }]
    }

    fn on_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            // Lifting a rule's protection is asked for; a session's own toggle is not.
            Action::Protect
                if let Some(n) = self.selected_node().map(|id| self.browse.forest.node(id))
                    && n.requested
                    && let Some(rule) = self.browse.protect.rule_for(&n.path) =>
            {
                self.popup = Some(Popup::ConfirmUnprotect {
                    path: n.path.clone(),
                    rule,
                });
            }
            Action::Cancel => {
                self.status = match &self.jobs.running {
                    Some(j) if !j.cancellable() => {
                        "too late to cancel: the copy is done; finishing".into()
                    }
                    Some(j) => {
                        j.cancel();
                        "cancelling: the base is flushed and reopened read-only…".into()
                    }
                    None => "no commit is running".into(),
                }
            }
            Action::Rescan => {
                if !self.browse.scanning {
                    self.announce_scan = true;
                    self.status = "scanning…".into();
                    return self.rescan();
                }
            }
            Action::Help => self.popup = Some(Popup::Help(0)),
            Action::Quit => match &self.jobs.running {
                Some(j) if !j.cancellable() => {
                    self.jobs.quit_pending = true;
                    self.status = "the copy is done: finishing the commit before quitting…".into();
                }
                Some(_) => self.popup = Some(Popup::ConfirmQuit),
                None => self.quit = true,
            },
            Action::Commit
            | Action::Snapshot
            | Action::Merge
            | Action::Flatten
            | Action::Rebase
            | Action::Delete
            | Action::Repair
            | Action::Live
                if self.read_only =>
            {
                self.status = "read-only: imgchain was started with --read-only, so nothing on \
                               disk changes; quit and start it without --read-only to write"
                    .into();
            }
            Action::Commit => return self.plan_commit(),
            Action::Snapshot
            | Action::Merge
            | Action::Flatten
            | Action::Rebase
            | Action::Delete
            | Action::Repair
            | Action::Live => return self.ask(action),
            Action::Confirm | Action::Close => {}
            Action::Details => {
                self.details.focus = !self.details.focus;
                self.status = if self.details.focus {
                    format!(
                        "details: the movement keys scroll them; {} zooms, {} goes back",
                        self.keymap.keys_of(Action::Zoom),
                        self.keymap.keys_of(Action::Details)
                    )
                } else {
                    "forest".into()
                };
            }
            Action::Zoom => self.details.zoom = !self.details.zoom,
            _ if self.details.focus && self.scroll_details(action) => {}
            _ => {
                let before = self.browse.selected_node();
                if let Some(s) = self.browse.act(action) {
                    self.status = s;
                }
                if self.browse.selected_node() != before {
                    self.details.scroll = 0;
                }
            }
        }
        Vec::new()
    }

    /// Opens the commit dialog for the selected node, with every guard that fires.
    fn plan_commit(&mut self) -> Vec<Effect> {
        if self.jobs.running.is_some() {
            self.status = "a commit is running; wait for it or cancel it first".into();
            return Vec::new();
        }
        let Some(top) = self.browse.selected_path() else {
            return Vec::new();
        };
        self.plan_popup(top, None, self.keep_top_default)
    }

    /// The commit dialog for `top` into `deeper` (a base further down its chain; `None`: its
    /// backing file), planned by a worker on a fresh scan.
    fn plan_popup(&mut self, top: PathBuf, deeper: Option<PathBuf>, keep_top: bool) -> Vec<Effect> {
        let job = self.jobs.next_id();
        // Shown until the worker answers: the backing file as the forest on screen knows it.
        let forest = &self.browse.forest;
        let shown_base = deeper.clone().or_else(|| {
            let n = forest.node(forest.find(&top)?);
            Some(match n.backing_node() {
                Some(b) => forest.node(b).path.clone(),
                None => n.backing.as_ref()?.path.clone(),
            })
        });
        let keep = keep_top || deeper.is_some();
        self.popup = Some(Popup::Plan(Box::new(PlanPopup::pending(
            job,
            top.clone(),
            shown_base,
            keep,
        ))));
        vec![Effect::Plan {
            job,
            top,
            base: deeper,
            keep_top,
            dirs: self.browse.roots.clone(),
            protect: self.browse.protect.clone(),
        }]
    }
}
