//! The UI model and its one place of change: [`App::update`] takes a message and returns the
//! effects to carry out (scans, measurements, commits). No I/O happens here.
//!
//! The model is made of sub-states, each with its own file: [`browse`] (the forest, cursor,
//! folds, filter, protections), [`jobs`] (the running operation), [`dialog`] (popups) and
//! [`locks`] (lock sweeps and allocation maps), [`log`] (the messages said). This file routes messages and keys to them.

pub mod browse;
pub mod dialog;
pub mod jobs;
pub mod locks;
pub mod log;
mod operate;
pub mod picker;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::crossterm::event::{KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

use super::keymap::{Action, Keymap};
use super::theme::Theme;
use crate::forest::scan::Scan;
use crate::forest::{Mode, NodeId, Protect};
use crate::image::file::FileId;
use crate::image::lock::{Foreign, Holder};
use crate::image::snapshots::InternalSnapshot;
use crate::ops::finished::Finished;
use crate::ops::{self, Refusal, delete};
use crate::ops::{AnyPlan, Ask};
use crate::text::Names;
pub use browse::Browse;
pub use dialog::{OpPopup, Popup};
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
    /// An operation planned on a fresh scan (or why it cannot run).
    OpPlanned {
        job: u64,
        plan: Box<Result<AnyPlan, Refusal>>,
        /// What it writes and frees (merge, delete).
        space: Option<crate::ops::space::Space>,
        /// Where images built on its chain were looked for.
        searched: Vec<crate::ops::dependents::Searched>,
        /// Whether it can be undone (`None`: the operation has no undo).
        undo: Option<crate::ops::undo::Undo>,
    },
    /// What the paths could free, as the report's lines (or why the survey failed).
    Surveyed(Box<Result<Vec<String>, String>>),
    /// Progress or the end of the running operation.
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
        /// Its persistent bitmaps with their dirty bytes.
        bitmaps: Result<crate::image::bitmaps::Counted, String>,
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
    /// Compute the allocation map of the image at `path`, and list its internal snapshots and
    /// persistent bitmaps when its header (given then) says it has some.
    Allocation {
        path: PathBuf,
        format: crate::image::probe::Format,
        snapshots: Option<Box<crate::image::probe::Qcow2Header>>,
    },
    /// Plan an operation on a fresh scan around its image, with the UI's protections.
    PlanOp {
        job: u64,
        ask: Ask,
        dirs: Vec<PathBuf>,
        protect: Box<Protect>,
    },
    RunOp {
        job: ops::Job,
        plan: Box<AnyPlan>,
    },
    /// Survey these paths for what could be freed (`ops::clean`).
    Survey(Vec<PathBuf>),
}

/// The model.
pub struct App {
    pub browse: Browse,
    pub jobs: Jobs,
    pub popup: Option<Popup>,
    pub locks: Locks,
    pub allocation: Allocations,
    pub status: String,
    /// Every message the status line and the result dialogs said, for the messages key.
    pub log: log::Log,
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
            log: log::Log::default(),
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

    /// A refusal in the UI's words: its advice names this keymap's keys.
    pub fn refusal_text(&self, e: &Refusal) -> String {
        e.ui_text(&|name| self.keymap.first_key_named(name))
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
        let said = (self.status.clone(), self.showing_message());
        let mut effects = self.handle(msg);
        self.log_what_was_said(said);
        let page = self.areas().forest.height.saturating_sub(3).into();
        if page != self.browse.page {
            self.browse.page = page;
            self.browse.clamp();
        }
        effects.extend(self.want_allocation());
        effects
    }

    /// Whether a result or error dialog is open.
    fn showing_message(&self) -> bool {
        matches!(self.popup, Some(Popup::Message { .. }))
    }

    /// Logs a status message that replaced `said.0` (not the idle count or a scan starting)
    /// and a result dialog that opened.
    fn log_what_was_said(&mut self, said: (String, bool)) {
        if self.status != said.0 && self.status != "scanning…" && self.status != self.idle_status()
        {
            self.log.note(&self.status);
        }
        if !said.1
            && let Some(Popup::Message { title, body, .. }) = &self.popup
        {
            self.log.note(&format!("{title}: {body}"));
        }
    }

    /// Asks for the selected image's allocation map once, if it is cheap and not known yet.
    fn want_allocation(&mut self) -> Option<Effect> {
        let n = self.browse.forest.node(self.selected_node()?);
        let (path, format) = self.allocation.want(&n.path, n.format)?;
        let snapshots = n
            .qcow2
            .as_ref()
            .filter(|h| h.nb_snapshots > 0 || h.bitmaps_ext.is_some())
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
            Msg::Surveyed(report) => {
                let (body, error) = match *report {
                    Ok(lines) => (lines.join("\n"), false),
                    Err(e) => (e, true),
                };
                self.status = "what these paths could free: the clean report".into();
                self.popup = Some(Popup::Message {
                    title: "Clean: what these paths could free".into(),
                    body,
                    error,
                });
                Vec::new()
            }
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
            Msg::OpPlanned {
                job,
                plan,
                space,
                searched,
                undo,
            } => {
                if let Some(Popup::Op(p)) = &mut self.popup
                    && p.job == job
                {
                    // Nothing to do on an image without a backing file: a line says so, not
                    // a dialog.
                    if let Err(e @ Refusal::NoBacking { .. }) = plan.as_ref() {
                        self.status = self.refusal_text(e);
                        self.popup = None;
                        return Vec::new();
                    }
                    // An undo refused (nothing to undo, an image changed since) is one line.
                    if let (Err(e), crate::ops::Ask::Undo(_)) = (plan.as_ref(), &p.ask) {
                        self.status = self.refusal_text(e);
                        self.popup = None;
                        return Vec::new();
                    }
                    p.fill(*plan);
                    p.space = space;
                    p.searched = searched;
                    p.undo = undo;
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
                bitmaps,
            } => {
                self.allocation.insert(path, map, (snapshots, bitmaps));
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
                self.allocation.bitmaps.clear();
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
                let row = &self.browse.rows[ri];
                let id = row.id;
                // The fold glyph (▾/▸), where there is one, comes right after the guide lines.
                let guide = u16::try_from(row.guide.chars().count()).unwrap_or(u16::MAX);
                let on_glyph =
                    !self.browse.fold_glyph(row).is_empty() && m.column <= a.forest.x + 2 + guide;
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
        // Messages and questions take confirm and close; the other dialog keys change an
        // operation's request.
        let dialog = self.keymap.answers(&key);
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
            Popup::Log(scroll) => {
                self.popup = match (dialog, browse) {
                    (Some(_), _) | (_, Some(Action::Messages | Action::Quit)) => None,
                    (_, Some(Action::Down | Action::PageDown)) => Some(Popup::Log(scroll + 1)),
                    (_, Some(Action::Up | Action::PageUp)) => {
                        Some(Popup::Log(scroll.saturating_sub(1)))
                    }
                    (_, Some(Action::First)) => Some(Popup::Log(0)),
                    _ => Some(Popup::Log(scroll)),
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
                let ask = Ask::Delete(delete::Ask {
                    image,
                    with_overlays: false,
                    force: false,
                    purge: false,
                });
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
            Popup::Op(p) => self.on_op_key(*p, key),
        }
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
            Action::Cancel => self.status = self.cancel_job(),
            Action::Rescan => {
                if !self.browse.scanning {
                    self.announce_scan = true;
                    self.status = "scanning…".into();
                    return self.rescan();
                }
            }
            Action::Help => self.popup = Some(Popup::Help(0)),
            Action::Messages => self.popup = Some(Popup::Log(0)),
            Action::Clean => {
                self.status = "looking for what these paths could free…".into();
                return vec![Effect::Survey(self.browse.roots.clone())];
            }
            Action::Quit => match &self.jobs.running {
                Some(j) if !j.cancellable() => {
                    self.jobs.quit_pending = true;
                    self.status = "the copy is done: finishing the commit before quitting…".into();
                }
                Some(_) => self.popup = Some(Popup::ConfirmQuit),
                None => self.quit = true,
            },
            a if ops::offers(a.def().name) && self.read_only => {
                self.status = "read-only: imgchain was started with --read-only, so nothing on \
                               disk changes; quit and start it without --read-only to write"
                    .into();
            }
            a if ops::offers(a.def().name) => return self.ask(a),
            // Dialog keys reach the dialog that is open, never the forest.
            a if a.def().place == crate::actions::Place::Dialog => {}
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

    /// Cancels the running job, if it still can be; what the status line says.
    fn cancel_job(&self) -> String {
        match &self.jobs.running {
            Some(j) if !j.cancellable() => "too late to cancel: the copy is done; finishing".into(),
            Some(j) => {
                j.cancel();
                "cancelling: the base is flushed and reopened read-only…".into()
            }
            None => "nothing is running to cancel".into(),
        }
    }
}
