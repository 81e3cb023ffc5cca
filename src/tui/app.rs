//! The UI model and its one place of change: [`App::update`] takes a message and returns the
//! effects to carry out (scans, measurements, commits). No I/O happens here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind};

use super::keymap::{Action, Keymap};
use super::theme::Theme;
use crate::forest::scan::Scan;
use crate::forest::{Forest, Mode, NodeId, Protect, Row};
use crate::image::file::FileId;
use crate::image::lock::{Foreign, Holder};
use crate::ops::commit::{Commit, Plan, Proposal};
use crate::ops::{self, Event, Progress, Refusal};

/// Everything that reaches the app loop, through one channel.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
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
    /// The allocation map of an image (`None`: too costly or unreadable).
    Allocation {
        path: PathBuf,
        map: Option<Vec<u8>>,
    },
    /// Time for a lock sweep (every few seconds).
    Tick,
    /// The images other processes hold now, with their lock bytes and holders.
    Locks(Vec<(PathBuf, Foreign, Vec<Holder>)>),
}

/// Work the loop must start for the app.
#[derive(Debug)]
pub enum Effect {
    Scan(Vec<PathBuf>),
    /// Re-probe QEMU locks on these images (path, identity) without taking any.
    SweepLocks(Arc<Vec<(PathBuf, FileId)>>),
    /// Compute the allocation map of the image at `path`.
    Allocation {
        path: PathBuf,
        format: crate::image::probe::Format,
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
}

/// A dialog over the forest.
#[derive(Debug)]
pub enum Popup {
    /// The help screen, scrolled down by this many lines.
    Help(u16),
    Plan(Box<PlanPopup>),
    /// A result or an error; `error` picks the colour.
    Message {
        title: String,
        body: String,
        error: bool,
    },
    /// Quit asked while a commit can still be cancelled: cancel it and quit?
    ConfirmQuit,
}

/// The commit dialog: what would happen, and every guard that fires.
#[derive(Debug)]
pub struct PlanPopup {
    pub job: u64,
    pub top: PathBuf,
    pub base: Option<PathBuf>,
    /// Still planning on a fresh scan: nothing below is known yet.
    pub pending: bool,
    /// The top's backing chain below it, top-down: the bases `b` cycles through.
    pub chain: Vec<PathBuf>,
    /// The plan, when every guard passes (with `forced` for a shared base).
    pub plan: Option<Plan>,
    /// Bytes to copy: `None` while measuring.
    pub bytes: Option<Result<u64, String>>,
    pub keep_top: bool,
    /// A guard that refuses the commit, with its exit code.
    pub refusal: Option<(String, u8)>,
    /// Other overlays of the base that a second confirmation overrides.
    pub shared_with: Vec<PathBuf>,
    /// The user confirmed once with `shared_with` shown: the next confirm starts.
    pub forced: bool,
}

impl PlanPopup {
    /// Takes in what the planning worker found.
    pub fn fill(&mut self, proposal: Result<Proposal, Refusal>) {
        self.pending = false;
        match proposal {
            Ok(p) => {
                self.top = p.top;
                self.base = p.base;
                self.chain = p.chain;
                self.shared_with = p.shared_with;
                self.bytes = p.bytes;
                match p.plan {
                    Ok(plan) => self.plan = Some(plan),
                    Err(e) => self.refusal = Some((e.to_string(), e.exit_code())),
                }
            }
            Err(e) => self.refusal = Some((e.to_string(), e.exit_code())),
        }
    }
}

/// A running commit.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub top: PathBuf,
    pub base: PathBuf,
    pub progress: Option<Progress>,
    pub cancel: Arc<AtomicBool>,
}

/// The model.
pub struct App {
    pub forest: Forest,
    /// Paths scanned (for rescans and labels).
    pub roots: Vec<PathBuf>,
    /// All rows in display order, flattened once per scan.
    pub rows: Vec<Row>,
    /// Indices into `rows` that are shown (folds and filter applied).
    pub visible: Vec<usize>,
    /// Index into `visible`.
    pub selected: usize,
    /// First index of `visible` on screen.
    pub offset: usize,
    /// Rows the forest pane shows (from the terminal size).
    pub page: usize,
    pub folded: HashSet<PathBuf>,
    pub filter: String,
    pub filtering: bool,
    pub popup: Option<Popup>,
    pub job: Option<Job>,
    pub status: String,
    pub scanning: bool,
    pub skipped: usize,
    pub keymap: Keymap,
    pub theme: Theme,
    pub size: (u16, u16),
    /// Allocation maps by path (`None` inside: could not be computed), and those under way.
    pub allocation: std::collections::HashMap<PathBuf, Option<Vec<u8>>>,
    allocating: HashSet<PathBuf>,
    /// Every image's path and identity, for lock sweeps; rebuilt with each scan.
    lock_targets: Arc<Vec<(PathBuf, FileId)>>,
    sweeping: bool,
    /// Bases whose reopen to read-only failed in this session.
    pub reopen_failed: HashSet<PathBuf>,
    pub quit: bool,
    /// Protect rules, with the `p` toggles of this session.
    protect: Protect,
    keep_top_default: bool,
    /// Quit once the running commit has finished cleaning up.
    quit_pending: bool,
    /// What to print after the terminal is restored, and the exit code, when the UI quit
    /// during a commit: the commit's own report, as the CLI gives it.
    pub exit_report: Option<(String, u8)>,
    /// The next scan result replaces the status line.
    announce_scan: bool,
    next_job: u64,
}

/// Settings the app starts with.
pub struct Settings {
    pub roots: Vec<PathBuf>,
    pub keymap: Keymap,
    pub theme: Theme,
    pub protect: Protect,
    pub keep_top: bool,
}

impl App {
    /// An app with an empty forest; the caller starts the first scan.
    pub fn new(s: Settings) -> App {
        App {
            forest: Forest::default(),
            roots: s.roots,
            rows: Vec::new(),
            visible: Vec::new(),
            selected: 0,
            offset: 0,
            page: 20,
            folded: HashSet::new(),
            filter: String::new(),
            filtering: false,
            popup: None,
            job: None,
            status: "scanning…".into(),
            scanning: true,
            skipped: 0,
            keymap: s.keymap,
            theme: s.theme,
            size: (80, 24),
            reopen_failed: HashSet::new(),
            allocation: std::collections::HashMap::new(),
            allocating: HashSet::new(),
            lock_targets: Arc::new(Vec::new()),
            sweeping: false,
            quit: false,
            protect: s.protect,
            keep_top_default: s.keep_top,
            quit_pending: false,
            exit_report: None,
            announce_scan: true,
            next_job: 1,
        }
    }

    /// The node under the cursor.
    pub fn selected_node(&self) -> Option<NodeId> {
        self.visible.get(self.selected).map(|&i| self.rows[i].id)
    }

    fn selected_path(&self) -> Option<PathBuf> {
        self.selected_node()
            .map(|id| self.forest.node(id).path.clone())
    }

    /// Whether the base of the running commit is open read-write right now.
    pub fn live_rw(&self, path: &Path) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| j.base == path && j.progress.as_ref().is_some_and(|p| p.writing))
    }

    /// Replaces the forest with a new scan, keeping the selection, folds and protections.
    pub fn set_forest(&mut self, scan: Scan) {
        let keep = self.selected_path();
        self.forest = scan.forest;
        self.skipped = scan.skipped.len();
        // Sizes and allocations may have changed (a commit, or anything else on disk).
        self.allocation.clear();
        self.lock_targets = Arc::new(
            self.forest
                .nodes
                .iter()
                .filter_map(|n| n.ident.map(|i| (n.path.clone(), i)))
                .collect(),
        );
        self.apply_protection();
        self.rows = self.forest.rows();
        self.recompute(keep);
    }

    fn apply_protection(&mut self) {
        self.protect.apply(&mut self.forest);
    }

    /// Rebuilds `visible` from folds and filter, then puts the cursor on `keep` if shown.
    fn recompute(&mut self, keep: Option<PathBuf>) {
        self.visible.clear();
        if self.filter.is_empty() {
            let mut hide_below: Option<usize> = None;
            for (i, row) in self.rows.iter().enumerate() {
                if let Some(d) = hide_below {
                    if row.depth > d {
                        continue;
                    }
                    hide_below = None;
                }
                self.visible.push(i);
                if self.folded.contains(&self.forest.node(row.id).path) {
                    hide_below = Some(row.depth);
                }
            }
        } else {
            let needle = self.filter.to_lowercase();
            let mut shown = vec![false; self.rows.len()];
            let mut ancestors: Vec<usize> = Vec::new();
            for (i, row) in self.rows.iter().enumerate() {
                ancestors.truncate(row.depth);
                let path = self
                    .forest
                    .node(row.id)
                    .path
                    .to_string_lossy()
                    .to_lowercase();
                if path.contains(&needle) {
                    shown[i] = true;
                    for &a in &ancestors {
                        shown[a] = true;
                    }
                }
                ancestors.push(i);
            }
            self.visible = (0..self.rows.len()).filter(|&i| shown[i]).collect();
        }
        let found = keep.and_then(|p| {
            self.visible
                .iter()
                .position(|&i| self.forest.node(self.rows[i].id).path == p)
        });
        self.selected = found.unwrap_or(self.selected);
        self.clamp();
    }

    /// Keeps the cursor on a shown row and the page around the cursor.
    fn clamp(&mut self) {
        if self.visible.is_empty() {
            self.selected = 0;
            self.offset = 0;
            return;
        }
        self.selected = self.selected.min(self.visible.len() - 1);
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(self.visible.len().saturating_sub(page));
    }

    /// Moves the cursor to a node, unfolding its ancestors and clearing a filter that hides it.
    fn select_node(&mut self, id: NodeId) {
        let path = self.forest.node(id).path.clone();
        let mut ancestor = self.forest.node(id).backing_node();
        while let Some(a) = ancestor {
            self.folded.remove(&self.forest.node(a).path);
            ancestor = self.forest.node(a).backing_node();
        }
        self.recompute(Some(path.clone()));
        if self.selected_path().as_deref() != Some(path.as_path()) {
            self.filter.clear();
            self.recompute(Some(path));
        }
    }

    /// The one place the model changes.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let mut effects = self.handle(msg);
        effects.extend(self.want_allocation());
        effects
    }

    /// Asks for the selected image's allocation map once, if it is cheap and not known yet.
    fn want_allocation(&mut self) -> Option<Effect> {
        let n = self.forest.node(self.selected_node()?);
        let format = n.format.filter(|f| {
            matches!(
                f,
                crate::image::probe::Format::Qcow2 | crate::image::probe::Format::Raw
            )
        })?;
        // One map at a time: holding j through ten thousand images must not start ten
        // thousand workers. The current selection is asked for when the running one returns.
        if self.allocation.contains_key(&n.path) || !self.allocating.is_empty() {
            return None;
        }
        let path = n.path.clone();
        self.allocating.insert(path.clone());
        Some(Effect::Allocation { path, format })
    }

    fn handle(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.page = super::layout::forest_rows(w, h);
                self.clamp();
                Vec::new()
            }
            Msg::Scanned(result) => {
                self.scanning = false;
                match *result {
                    Ok(scan) => {
                        self.set_forest(scan);
                        // A rescan after a commit keeps the commit's result on the status line.
                        if std::mem::take(&mut self.announce_scan) {
                            self.status = format!(
                                "{} images{}",
                                self.forest.nodes.len(),
                                if self.skipped > 0 {
                                    format!(", {} paths passed over", self.skipped)
                                } else {
                                    String::new()
                                }
                            );
                        }
                    }
                    Err(e) => {
                        self.popup = Some(Popup::Message {
                            title: "Scan failed".into(),
                            body: e,
                            error: true,
                        });
                    }
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
            Msg::Tick => {
                // Our own commit's locks would show as foreign: no sweep while one runs.
                if self.scanning || self.sweeping || self.job.is_some() {
                    return Vec::new();
                }
                self.sweeping = true;
                vec![Effect::SweepLocks(Arc::clone(&self.lock_targets))]
            }
            Msg::Locks(found) => {
                self.sweeping = false;
                if self.job.is_some() {
                    return Vec::new();
                }
                for n in &mut self.forest.nodes {
                    n.foreign = Foreign::default();
                    n.holders.clear();
                }
                for (path, foreign, holders) in found {
                    if let Some(n) = self.forest.nodes.iter_mut().find(|n| n.path == path) {
                        n.foreign = foreign;
                        n.holders = holders;
                    }
                }
                Vec::new()
            }
            Msg::Allocation { path, map } => {
                self.allocating.remove(&path);
                self.allocation.insert(path, map);
                Vec::new()
            }
            Msg::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Msg::Key(_) => Vec::new(),
        }
    }

    fn on_commit(&mut self, id: u64, event: Event<Commit>) -> Vec<Effect> {
        let Some(job) = self.job.as_mut().filter(|j| j.id == id) else {
            return Vec::new();
        };
        match event {
            Event::Progress(p) => {
                job.progress = Some(p);
                Vec::new()
            }
            Event::Done(result) => {
                let job = self.job.take();
                if self.quit_pending {
                    self.exit_report = Some(match &*result {
                        Ok(o) => (o.summary(), o.exit_code()),
                        Err(e) => (e.to_string(), e.exit_code()),
                    });
                }
                match *result {
                    Ok(outcome) => {
                        let summary = outcome.summary();
                        if matches!(outcome.reopen_ro, Some(Err(_))) {
                            self.reopen_failed.insert(outcome.plan.base.path.clone());
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
                        } else {
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
                    }
                    Err(e) => {
                        self.status = "commit refused".into();
                        self.popup = Some(Popup::Message {
                            title: if matches!(e, Refusal::Internal { .. }) {
                                "Commit stopped by an internal error".into()
                            } else {
                                format!("Commit refused (exit {})", e.exit_code())
                            },
                            body: e.to_string(),
                            error: true,
                        });
                    }
                }
                if self.quit_pending {
                    self.quit = true;
                    return Vec::new();
                }
                drop(job);
                self.scanning = true;
                vec![Effect::Scan(self.roots.clone())]
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if self.filtering {
            match key.code {
                KeyCode::Enter => self.filtering = false,
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            let keep = self.selected_path();
            self.recompute(keep);
            return Vec::new();
        }
        if let Some(popup) = self.popup.take() {
            return self.on_popup_key(popup, key);
        }
        let Some(action) = self.keymap.browse(&key) else {
            self.status = format!(
                "no action on that key; {} shows the keys",
                self.keymap.keys_of(Action::Help)
            );
            return Vec::new();
        };
        self.on_action(action)
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
            Popup::ConfirmQuit => {
                match (dialog, &self.job) {
                    (Some(Action::Confirm), Some(j)) => {
                        j.cancel.store(true, Ordering::Relaxed);
                        self.quit_pending = true;
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
            Popup::Message { .. } if dialog.is_some() || browse == Some(Action::Quit) => Vec::new(),
            p @ Popup::Message { .. } => {
                self.popup = Some(p);
                Vec::new()
            }
            Popup::Plan(mut p) => match dialog {
                Some(Action::Close) => {
                    self.status = "commit not started".into();
                    Vec::new()
                }
                Some(Action::Confirm) => self.confirm_plan(*p),
                _ if key.code == KeyCode::Char('b') => self.deeper_base(*p),
                _ => {
                    // With a deeper base the top keeps its data, as qemu-img's -b does.
                    let deeper = p.plan.as_ref().is_some_and(|x| !x.intermediates.is_empty());
                    if key.code == KeyCode::Char('d') && p.refusal.is_none() && !deeper {
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

    fn confirm_plan(&mut self, mut p: PlanPopup) -> Vec<Effect> {
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
            p.forced = true;
            self.popup = Some(Popup::Plan(Box::new(p)));
            return Vec::new();
        }
        let Some(mut plan) = p.plan else {
            return Vec::new();
        };
        plan.keep_top = p.keep_top;
        let job = ops::Job::new::<Commit>(p.job, &plan);
        self.job = Some(Job {
            id: p.job,
            top: plan.top.path.clone(),
            base: plan.base.path.clone(),
            progress: None,
            cancel: Arc::clone(&job.cancel),
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
        let page = self.page.max(1);
        match action {
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected += 1,
            Action::First => self.selected = 0,
            Action::Last => self.selected = self.visible.len().saturating_sub(1),
            Action::PageUp => self.selected = self.selected.saturating_sub(page),
            Action::PageDown => self.selected += page,
            Action::Fold => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    if !n.overlays.is_empty() && !self.folded.contains(&n.path) {
                        self.folded.insert(n.path.clone());
                        let keep = Some(n.path.clone());
                        self.recompute(keep);
                    } else if let Some(b) = n.backing_node() {
                        self.select_node(b);
                    }
                }
            }
            Action::Unfold => {
                if let Some(id) = self.selected_node() {
                    let path = self.forest.node(id).path.clone();
                    if self.folded.remove(&path) {
                        self.recompute(Some(path));
                    }
                }
            }
            Action::Backing => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    match n.backing_node() {
                        Some(b) => self.select_node(b),
                        None => {
                            self.status = format!("{} has no backing image in the forest", n.name())
                        }
                    }
                }
            }
            Action::Overlay => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    match n.overlays.first() {
                        Some(&o) => self.select_node(o),
                        None => self.status = format!("{} has no overlays", n.name()),
                    }
                }
            }
            Action::Filter => {
                self.filtering = true;
            }
            Action::Protect => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    let path = n.path.clone();
                    let now_requested = n.requested;
                    self.protect.set(&path, !now_requested);
                    self.apply_protection();
                    self.status = format!(
                        "{} {} until quit",
                        path.display(),
                        if now_requested {
                            "unprotected"
                        } else {
                            "protected (keep-RO)"
                        }
                    );
                }
            }
            Action::Cancel => match &self.job {
                Some(j) if j.progress.is_some_and(|p| !p.phase.cancellable()) => {
                    self.status = "too late to cancel: the copy is done; finishing".into();
                }
                Some(j) => {
                    j.cancel.store(true, Ordering::Relaxed);
                    self.status = "cancelling: the base is flushed and reopened read-only…".into();
                }
                None => self.status = "no commit is running".into(),
            },
            Action::Rescan => {
                if !self.scanning {
                    self.scanning = true;
                    self.announce_scan = true;
                    self.status = "scanning…".into();
                    return vec![Effect::Scan(self.roots.clone())];
                }
            }
            Action::Help => self.popup = Some(Popup::Help(0)),
            Action::Quit => match &self.job {
                Some(j) if j.progress.is_some_and(|p| !p.phase.cancellable()) => {
                    self.quit_pending = true;
                    self.status = "the copy is done: finishing the commit before quitting…".into();
                }
                Some(_) => self.popup = Some(Popup::ConfirmQuit),
                None => self.quit = true,
            },
            Action::Commit => return self.plan_commit(),
            Action::Confirm | Action::Close => {}
        }
        self.clamp();
        Vec::new()
    }

    /// Opens the commit dialog for the selected node, with every guard that fires.
    fn plan_commit(&mut self) -> Vec<Effect> {
        if self.job.is_some() {
            self.status = "a commit is running; wait for it or cancel it first".into();
            return Vec::new();
        }
        let Some(top) = self.selected_path() else {
            return Vec::new();
        };
        self.plan_popup(top, None, self.keep_top_default)
    }

    /// The commit dialog for `top` into `deeper` (a base further down its chain; `None`: its
    /// backing file), planned by a worker on a fresh scan.
    fn plan_popup(&mut self, top: PathBuf, deeper: Option<PathBuf>, keep_top: bool) -> Vec<Effect> {
        let job = self.next_job;
        self.next_job += 1;
        // Shown until the worker answers: the backing file as the forest on screen knows it.
        let shown_base = deeper.clone().or_else(|| {
            let n = self.forest.node(self.forest.find(&top)?);
            Some(match n.backing_node() {
                Some(b) => self.forest.node(b).path.clone(),
                None => n.backing.as_ref()?.path.clone(),
            })
        });
        self.popup = Some(Popup::Plan(Box::new(PlanPopup {
            job,
            top: top.clone(),
            base: shown_base,
            pending: true,
            chain: Vec::new(),
            plan: None,
            bytes: None,
            keep_top: keep_top || deeper.is_some(),
            refusal: None,
            shared_with: Vec::new(),
            forced: false,
        })));
        vec![Effect::Plan {
            job,
            top,
            base: deeper,
            keep_top,
            dirs: self.roots.clone(),
            protect: self.protect.clone(),
        }]
    }

    /// The mode to show for a node: the live mode of a commit's base, or its model mode.
    pub fn shown_mode(&self, id: NodeId) -> Mode {
        let n = self.forest.node(id);
        if self.live_rw(&n.path) {
            Mode::Rw
        } else {
            n.mode
        }
    }
}
