//! The forest pane: a table of the visible rows only (the window around the cursor), so a
//! frame costs the same with ten images or ten thousand.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};

use crate::forest::diag::Severity;
use crate::forest::{KeepRoReason, Mode, Node, NodeId};
use crate::tui::app::App;
use crate::tui::app::browse::FOLDED;
use crate::units::human_size;

/// The badge of a node and its style: `RW`, `RO`, `KRO·req`, or a live/failed state.
pub fn badge(app: &App, id: NodeId) -> (String, Style) {
    let n = app.browse.forest.node(id);
    let t = &app.theme;
    if app.jobs.reopen_failed.contains(&n.path) {
        return ("RW!".into(), t.problem);
    }
    if app.live_rw(&n.path) {
        return ("RW·commit".into(), t.rw.add_modifier(Modifier::REVERSED));
    }
    match (app.shown_mode(id), n.keep_ro_reason) {
        (Mode::Rw, _) => ("RW".into(), t.rw),
        (Mode::Ro, _) => ("RO".into(), t.ro),
        (Mode::KeepRo, r) => (
            match r {
                Some(KeepRoReason::Requested) | None => "KRO·req",
                Some(KeepRoReason::FileMode) => "KRO·mod",
                Some(KeepRoReason::Inherited) => "KRO·inh",
                Some(KeepRoReason::NotWritable) => "KRO·nw",
            }
            .into(),
            t.keep_ro,
        ),
    }
}

/// `text` in spans, the parts matching any of `words` (case-insensitive) highlighted.
fn highlighted(text: &str, words: &[String], base: Style) -> Vec<Span<'static>> {
    let lower = text.to_lowercase();
    if words.is_empty() || lower.len() != text.len() {
        return vec![Span::styled(text.to_string(), base)];
    }
    let mut marks = vec![false; text.len()];
    for w in words.iter().filter(|w| !w.is_empty()) {
        let mut from = 0;
        while let Some(i) = lower[from..].find(w.as_str()) {
            marks[from + i..from + i + w.len()]
                .iter_mut()
                .for_each(|m| *m = true);
            from += i + w.len();
        }
    }
    let hit = base.add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let mut spans = Vec::new();
    let mut start = 0;
    for i in 1..=text.len() {
        if i == text.len() || (marks[i] != marks[start] && text.is_char_boundary(i)) {
            spans.push(Span::styled(
                text[start..i].to_string(),
                if marks[start] { hit } else { base },
            ));
            start = i;
        }
    }
    spans
}

fn flags(app: &App, n: &Node) -> Vec<Span<'static>> {
    let t = &app.theme;
    let mut out = Vec::new();
    if n.in_use() {
        let mark = if n.foreign.writer() { "⚑w" } else { "⚑r" };
        out.push(Span::styled(mark, t.in_use));
    } else if !n.vm_disks.is_empty() {
        out.push(Span::styled("⚐", t.dim));
    }
    if n.libvirt_snapshots
        .iter()
        .any(|r| r.role == crate::forest::model::RecordRole::Overlay)
    {
        out.push(Span::styled("◷", t.dim));
    }
    if n.problems.iter().any(|p| p.severity() >= Severity::Warning) {
        out.push(Span::styled("!", t.problem));
    }
    out
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let b = &app.browse;
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border)
        .title(title(app));
    let height = usize::from(area.height.saturating_sub(3));
    let words: Vec<String> = b
        .query
        .as_ref()
        .map(|q| q.words().map(String::from).collect())
        .unwrap_or_default();
    let cols = columns(app, area.width);
    let end = (b.offset + height).min(b.visible.len());
    let rows: Vec<Row> = b.visible[b.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(k, &ri)| row(app, b.offset + k, &b.rows[ri], (&cols, &words)))
        .collect();
    let table = Table::new(rows, cols.widths)
        .header(Row::new(cols.header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block);
    frame.render_widget(table, area);
}

/// The pane's title: the filter and its matches, the scan under way, or the image count.
fn title(app: &App) -> String {
    let b = &app.browse;
    let title = if b.filtering || !b.filter.is_empty() {
        let cursor = if b.filtering { "▏" } else { "" };
        let found = match &b.query {
            Err(e) => e.clone(),
            Ok(_) if b.visible.is_empty() => "no image matches".into(),
            Ok(_) => match b.matches() {
                1 => "1 match".into(),
                n => format!("{n} matches"),
            },
        };
        format!(" Forest — filter: {}{cursor} — {found} ", b.filter)
    } else if app.browse.scanning && app.browse.rows.is_empty() {
        match &app.browse.scan_counts {
            Some(c) => format!(
                " Forest — scanning: {} found ",
                crate::units::count(c.images as u64, "image")
            ),
            None => " Forest — scanning… ".to_string(),
        }
    } else {
        let mut images = crate::units::count(app.browse.forest.nodes.len() as u64, "image");
        if app.browse.trash_bytes > 0 {
            let trash = crate::units::human_size(app.browse.trash_bytes);
            images.push_str(&format!(" · {trash} in the trash"));
        }
        match app.browse.sort {
            crate::forest::query::Sort::Name => format!(" Forest — {images} "),
            s => format!(" Forest — {images}, sorted {} ", s.describe()),
        }
    };
    if app.read_only {
        format!("{title}— READ-ONLY ")
    } else {
        title
    }
}

/// Row `at` of the visible rows: the name with its guide, fold glyph and matched words, the
/// sizes, the badge and the flags.
fn row(
    app: &App,
    at: usize,
    row: &crate::forest::Row,
    (cols, words): (&Columns, &[String]),
) -> Row<'static> {
    let (t, b) = (&app.theme, &app.browse);
    let name_width = cols.name;
    let c = &b.columns;
    let n = app.browse.forest.node(row.id);
    let glyph = b.fold_glyph(row);
    let matched = b.matched.get(at).copied();
    let suffix = if glyph == FOLDED {
        let hidden = b.visible.get(at).map_or(0, |&ri| b.hidden_below(ri));
        format!(" (+{hidden})")
    } else {
        String::new()
    };
    let room =
        name_width.saturating_sub(row.guide.chars().count() + glyph.chars().count() + suffix.len());
    let mut name = vec![
        Span::styled(row.guide.clone(), t.dim),
        Span::styled(glyph, t.dim),
    ];
    name.extend(highlighted(
        &b.fitted_label(row.id, room),
        words,
        if matched == Some(false) {
            t.dim
        } else {
            Style::default()
        },
    ));
    name.push(Span::styled(suffix, t.dim));
    let size = |v: Option<u64>| {
        Cell::from(Line::from(v.map_or_else(|| "?".into(), human_size)).right_aligned())
    };
    let (badge, style) = badge(app, row.id);
    let mut cells = vec![
        Cell::from(Line::from(name)),
        Cell::from(n.format.map_or("?", |f| f.as_str())),
        size(n.virtual_size),
    ];
    if cols.file {
        cells.push(size(n.file_size));
    }
    if cols.disk {
        cells.push(size(n.allocated));
    }
    if cols.total {
        cells.push(match c.subtree.get(row.id.0).copied().flatten() {
            Some(v) => size(Some(v)),
            None => Cell::from(""),
        });
    }
    cells.push(Cell::from(Span::styled(badge, style)));
    cells.push(Cell::from(Line::from(flags(app, n))));
    let r = Row::new(cells);
    if at == b.selected {
        r.style(t.selection)
    } else {
        r
    }
}

/// The forest table's columns at a pane width: each sized to the widest value in the
/// forest; the name gets the rest, and the optional size columns appear while it keeps
/// enough room (on disk first, then file size, then the subtree's total).
struct Columns {
    name: usize,
    file: bool,
    disk: bool,
    total: bool,
    widths: Vec<Constraint>,
    header: Vec<Line<'static>>,
}

/// The room an optional column must leave the names: what the longest shown name needs,
/// within these bounds.
const NAME_ROOM: (usize, usize) = (24, 48);

fn columns(app: &App, pane_width: u16) -> Columns {
    let c = &app.browse.columns;
    let live = app.jobs.running.is_some() || !app.jobs.reopen_failed.is_empty();
    let mode = c.mode.max(4).max(if live { 9 } else { 0 });
    let fixed = [
        ("Fmt", c.format.max(3), false),
        ("Virtual", c.virtual_size.max(7), true),
    ];
    let optional = [
        ("On disk", c.disk.max(7)),
        ("File", c.file.max(4)),
        ("Total", c.total.max(5)),
    ];
    // In use (⚑w, two cells) and a problem (!): lock sweeps change the first between scans.
    let flags = 3;
    // Borders, then each column and the space before it.
    let mut used = 2 + fixed.iter().map(|f| f.1 + 1).sum::<usize>() + mode + 1 + flags + 1;
    let room = app.browse.name_width_most.clamp(NAME_ROOM.0, NAME_ROOM.1);
    // Names come first: an optional column shows only while nine names in ten keep their room.
    let mut shown = [false; 3];
    for (i, (_, w)) in optional.iter().enumerate() {
        if i == 2 && c.total == 0 {
            break;
        }
        if usize::from(pane_width).saturating_sub(used + w + 1) >= room {
            used += w + 1;
            shown[i] = true;
        } else {
            break;
        }
    }
    // At wide terminals the name column ends near its longest name, so the eye does not
    // travel from a name to its sizes.
    let name = usize::from(pane_width)
        .saturating_sub(used)
        .min(app.browse.name_width + 2)
        .max(8);
    let mut widths = vec![Constraint::Length(u16::try_from(name).unwrap_or(u16::MAX))];
    let mut header = vec![Line::from("Image")];
    let mut push = |title: &'static str, w: usize, right: bool| {
        widths.push(Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
        let l = Line::from(title);
        header.push(if right { l.right_aligned() } else { l });
    };
    for (title, w, right) in fixed {
        push(title, w, right);
    }
    // Shown in the order of the table: file, on disk, total.
    if shown[1] {
        push("File", optional[1].1, true);
    }
    if shown[0] {
        push("On disk", optional[0].1, true);
    }
    if shown[2] {
        push("Total", optional[2].1, true);
    }
    push("Mode", mode, false);
    push("", flags, false);
    Columns {
        name,
        file: shown[1],
        disk: shown[0],
        total: shown[2],
        widths,
        header,
    }
}
