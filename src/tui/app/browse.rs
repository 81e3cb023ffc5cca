//! The browsing state: the forest on screen, its rows in display order, the cursor, folds and
//! the filter, and the protect rules with this session's `p` toggles. Pure data: no I/O.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use crate::actions::Action;
use crate::forest::query::{self, Filter, Sort};
use crate::forest::scan::Scan;
use crate::forest::{Forest, NodeId, Protect, Row};
use crate::text::Names;

/// The fold glyph of a folded image.
pub const FOLDED: &str = "▸ ";

/// What the forest pane shows and where the cursor is.
pub struct Browse {
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
    /// The filter as typed, and as understood (`Err`: what is wrong with it).
    pub filter: String,
    pub query: Result<Filter, String>,
    /// Whether each row of `visible` matches the filter (the others are shown as the
    /// ancestors of matches).
    pub matched: Vec<bool>,
    pub filtering: bool,
    pub sort: Sort,
    pub scanning: bool,
    /// How far the running scan has come, once it has said.
    pub scan_counts: Option<crate::forest::ScanCounts>,
    /// Paths the last scan passed over, with why.
    pub skipped: Vec<crate::forest::scan::Skipped>,
    /// Bytes in the trashes the last scan met.
    pub trash_bytes: u64,
    /// Protect rules, with the `p` toggles of this session.
    pub protect: Protect,
    /// Column widths and subtree totals, recomputed when the forest changes.
    pub columns: Columns,
    /// Cells the longest shown row's name takes (guide, fold glyph and label).
    pub name_width: usize,
    /// What nine names in ten fit in (one long path does not take the size columns away).
    pub name_width_most: usize,
    /// For each node, where its label starts to differ from its siblings'.
    pub label_starts: Vec<usize>,
}

/// What the forest table's columns need, measured over every node (so the columns do not
/// change width while scrolling), and each node's bytes on disk with everything built on it.
#[derive(Default)]
pub struct Columns {
    pub format: usize,
    pub virtual_size: usize,
    pub file: usize,
    pub disk: usize,
    pub total: usize,
    pub mode: usize,
    /// By node index: the subtree's bytes on disk (for images with overlays).
    pub subtree: Vec<Option<u64>>,
}

impl Columns {
    pub fn of(forest: &Forest) -> Columns {
        use crate::forest::Mode;
        use crate::units::human_size;
        let size = |v: Option<u64>| v.map_or(1, |v| human_size(v).chars().count());
        let mut c = Columns::default();
        for (i, n) in forest.nodes.iter().enumerate() {
            let subtree =
                (!n.overlays.is_empty()).then(|| crate::words::disk_usage(forest, NodeId(i)).1);
            c.format = c.format.max(n.format.map_or(1, |f| f.as_str().len()));
            c.virtual_size = c.virtual_size.max(size(n.virtual_size));
            c.file = c.file.max(size(n.file_size));
            c.disk = c.disk.max(size(n.allocated));
            c.total = c.total.max(subtree.map_or(0, |v| size(Some(v))));
            c.mode = c.mode.max(if n.mode == Mode::KeepRo { 7 } else { 2 });
            c.subtree.push(subtree);
        }
        c
    }
}

impl Browse {
    /// An empty forest, scanning `roots`.
    pub fn new(roots: Vec<PathBuf>, protect: Protect) -> Browse {
        Browse {
            forest: Forest::default(),
            roots,
            rows: Vec::new(),
            visible: Vec::new(),
            selected: 0,
            offset: 0,
            page: 20,
            folded: HashSet::new(),
            filter: String::new(),
            query: Ok(Filter::default()),
            matched: Vec::new(),
            filtering: false,
            sort: Sort::Name,
            scanning: true,
            scan_counts: None,
            skipped: Vec::new(),
            trash_bytes: 0,
            protect,
            columns: Columns::default(),
            name_width: 0,
            name_width_most: 0,
            label_starts: Vec::new(),
        }
    }

    /// How a node is named in the tree (see [`query::label`]).
    pub fn label(&self, id: NodeId) -> String {
        query::label(&self.forest, &self.roots, id)
    }

    /// `path` relative to the scanned path that contains it, or whole.
    pub fn relative(&self, path: &Path) -> String {
        query::relative(&self.roots, path)
    }

    /// A node's label fitted to `room` characters, keeping what tells it from its siblings.
    pub fn fitted_label(&self, id: NodeId, room: usize) -> String {
        let start = self.label_starts.get(id.0).copied().unwrap_or(0);
        crate::fit::fit(&self.label(id), room, start)
    }

    /// The fold glyph before a row's name (a click on it folds or unfolds): `▸ ` on a folded
    /// image, `▾ ` on a root or a branching image; none inside a straight run of layers,
    /// where a glyph on every line would only be noise (they fold with the keys).
    pub fn fold_glyph(&self, row: &Row) -> &'static str {
        let n = self.forest.node(row.id);
        if n.overlays.is_empty() {
            ""
        } else if self.folded.contains(&n.path) {
            FOLDED
        } else if row.depth == 0 || n.overlays.len() > 1 {
            "▾ "
        } else {
            ""
        }
    }

    /// How many rows a fold of row `at` (an index into `rows`) hides: everything built on it.
    pub fn hidden_below(&self, at: usize) -> usize {
        let Some(row) = self.rows.get(at) else {
            return 0;
        };
        self.rows[at + 1..]
            .iter()
            .take_while(|r| r.depth > row.depth)
            .count()
    }

    /// The node under the cursor.
    pub fn selected_node(&self) -> Option<NodeId> {
        self.visible.get(self.selected).map(|&i| self.rows[i].id)
    }

    /// The path of the node under the cursor.
    pub fn selected_path(&self) -> Option<PathBuf> {
        self.selected_node()
            .map(|id| self.forest.node(id).path.clone())
    }

    /// Replaces the forest with a new scan, keeping the selection, folds and protections.
    pub fn set_forest(&mut self, scan: Scan) {
        let keep = self.selected_path();
        self.forest = scan.forest;
        self.skipped = scan.skipped;
        self.trash_bytes = scan.trash_bytes;
        self.protect.apply(&mut self.forest);
        self.columns = Columns::of(&self.forest);
        self.rows = query::rows(&self.forest, self.sort);
        let labels: Vec<String> = (0..self.forest.nodes.len())
            .map(|i| self.label(NodeId(i)))
            .collect();
        self.label_starts = query::label_starts(&self.forest, &labels);
        let mut widths: Vec<usize> = self
            .rows
            .iter()
            .map(|r| r.guide.chars().count() + 2 + labels[r.id.0].chars().count())
            .collect();
        widths.sort_unstable();
        self.name_width = widths.last().copied().unwrap_or(0);
        self.name_width_most = widths.get(widths.len() * 9 / 10).copied().unwrap_or(0);
        self.recompute(keep);
    }

    /// Folds or unfolds the image `id` (the cursor on it), if it has overlays.
    pub fn toggle_fold(&mut self, id: NodeId) {
        let n = self.forest.node(id);
        if !n.overlays.is_empty() {
            let fold = if self.folded.contains(&n.path) {
                Action::Unfold
            } else {
                Action::Fold
            };
            self.act(fold);
        }
    }

    /// `s`: the next sort order of roots and siblings; says which.
    fn cycle_sort(&mut self) -> String {
        let keep = self.selected_path();
        self.sort = self.sort.next();
        self.rows = query::rows(&self.forest, self.sort);
        self.recompute(keep);
        format!("sorted {}", self.sort.describe())
    }

    /// Rebuilds `visible` from folds and filter, then puts the cursor on `keep` if shown.
    fn recompute(&mut self, keep: Option<PathBuf>) {
        self.visible.clear();
        self.matched.clear();
        match self.query.as_ref().ok().filter(|q| !q.is_empty()) {
            None => {
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
                self.matched = vec![true; self.visible.len()];
            }
            Some(q) => {
                let mut shown = vec![false; self.rows.len()];
                let mut hits = vec![false; self.rows.len()];
                let mut ancestors: Vec<usize> = Vec::new();
                for (i, row) in self.rows.iter().enumerate() {
                    ancestors.truncate(row.depth);
                    if q.matches(self.forest.node(row.id)) {
                        shown[i] = true;
                        hits[i] = true;
                        for &a in &ancestors {
                            shown[a] = true;
                        }
                    }
                    ancestors.push(i);
                }
                self.visible = (0..self.rows.len()).filter(|&i| shown[i]).collect();
                self.matched = self.visible.iter().map(|&i| hits[i]).collect();
            }
        }
        let found = keep.and_then(|p| {
            self.visible
                .iter()
                .position(|&i| self.forest.node(self.rows[i].id).path == p)
        });
        self.selected = found.unwrap_or(self.selected);
        self.clamp();
    }

    /// How many shown rows match the filter (all of them without one).
    pub fn matches(&self) -> usize {
        self.matched.iter().filter(|&&m| m).count()
    }

    /// After the filter changed: the cursor on the first match at or after it (a match, never
    /// an ancestor shown for context).
    fn land_on_match(&mut self) {
        let from = self.selected.min(self.matched.len());
        if let Some(i) = (from..self.matched.len())
            .chain(0..from)
            .find(|&i| self.matched[i])
        {
            self.selected = i;
        }
        self.clamp();
    }

    /// Keeps the cursor on a shown row and the page around the cursor.
    pub fn clamp(&mut self) {
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
            self.set_filter(String::new());
            self.recompute(Some(path));
        }
    }

    /// Replaces the filter text and what it is understood as.
    fn set_filter(&mut self, text: String) {
        self.query = Filter::parse(&text);
        self.filter = text;
    }

    /// A key typed while the filter is being edited: text edits it (the cursor then lands on
    /// a match), the arrows move, Enter keeps it, Esc drops it.
    pub fn filter_key(&mut self, key: KeyEvent) {
        let mut text = self.filter.clone();
        match key.code {
            KeyCode::Enter => {
                self.filtering = false;
                return;
            }
            KeyCode::Esc => {
                self.filtering = false;
                text.clear();
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown => {
                let page = self.page.max(1);
                self.selected = match key.code {
                    KeyCode::Up => self.selected.saturating_sub(1),
                    KeyCode::Down => self.selected + 1,
                    KeyCode::PageUp => self.selected.saturating_sub(page),
                    _ => self.selected + page,
                };
                self.clamp();
                return;
            }
            _ => return,
        }
        let keep = self.selected_path();
        self.set_filter(text);
        self.recompute(keep);
        self.land_on_match();
    }

    /// Esc outside the filter: drops a kept filter; says so, or `None` when there was none.
    pub fn clear_filter(&mut self) -> Option<String> {
        if self.filter.is_empty() {
            return None;
        }
        let keep = self.selected_path();
        self.set_filter(String::new());
        self.recompute(keep);
        Some("filter cleared".into())
    }

    /// Carries out a moving, folding or protecting action; returns what the status line
    /// should say, if anything. Other actions are not browsing and do nothing here.
    pub fn act(&mut self, action: Action) -> Option<String> {
        let page = self.page.max(1);
        let mut status = None;
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
                if let Some(path) = self.selected_path()
                    && self.folded.remove(&path)
                {
                    self.recompute(Some(path));
                }
            }
            Action::Backing => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    match n.backing_node() {
                        Some(b) => self.select_node(b),
                        None => {
                            status =
                                Some(format!("{} has no backing image in the forest", n.name()))
                        }
                    }
                }
            }
            Action::Overlay => {
                if let Some(id) = self.selected_node() {
                    let n = self.forest.node(id);
                    match n.overlays.first() {
                        Some(&o) => self.select_node(o),
                        None => status = Some(format!("{} has no overlays", n.name())),
                    }
                }
            }
            Action::Filter => self.filtering = true,
            Action::Sort => status = Some(self.cycle_sort()),
            Action::Protect => status = self.toggle_protect(),
            Action::NextProblem => status = self.next_problem(true),
            Action::PrevProblem => status = self.next_problem(false),
            _ => {}
        }
        self.clamp();
        status
    }

    /// `n`/`N`: the next (or previous) image in display order with a warning or an error,
    /// unfolding and unfiltering what hides it; says so when there is none.
    fn next_problem(&mut self, forward: bool) -> Option<String> {
        use crate::forest::diag::Severity;
        let here = self.visible.get(self.selected).copied();
        let bad = |i: usize| {
            self.forest
                .node(self.rows[i].id)
                .problems
                .iter()
                .any(|p| p.severity() >= Severity::Warning)
        };
        let n = self.rows.len();
        let found = (1..=n)
            .map(|k| match (here, forward) {
                (Some(h), true) => (h + k) % n,
                (Some(h), false) => (h + n - k % n) % n,
                (None, _) => k - 1,
            })
            .find(|&i| bad(i) && Some(i) != here);
        match found {
            Some(i) => {
                let id = self.rows[i].id;
                self.select_node(id);
                let n = self.forest.node(id);
                let p = n.problems.iter().max_by_key(|p| p.severity())?;
                Some(format!("{}: {} — {}", n.name(), p.kind.as_str(), p.message))
            }
            None => Some("no more problems".into()),
        }
    }

    /// Lifts the protection of the image at `path` until quit, whatever rule set it.
    pub fn unprotect(&mut self, path: &Path) {
        self.protect.set(path, false);
        self.protect.apply(&mut self.forest);
        self.columns = Columns::of(&self.forest);
    }

    /// `p`: protects the selected image (keep-RO) until quit, or lifts that.
    fn toggle_protect(&mut self) -> Option<String> {
        let n = self.forest.node(self.selected_node()?);
        let path = n.path.clone();
        let now_requested = n.requested;
        self.protect.set(&path, !now_requested);
        self.protect.apply(&mut self.forest);
        self.columns = Columns::of(&self.forest);
        let stays = self
            .forest
            .find(&path)
            .and_then(|id| self.forest.node(id).keep_ro_reason)
            .filter(|r| now_requested && *r != crate::forest::KeepRoReason::Requested);
        Some(match stays {
            Some(r) => format!(
                "{} unprotected until quit, but still keep-RO: {}",
                path.shown(),
                r.describe()
            ),
            None => format!(
                "{} {} until quit",
                path.shown(),
                if now_requested {
                    "unprotected"
                } else {
                    "protected (keep-RO)"
                }
            ),
        })
    }
}
