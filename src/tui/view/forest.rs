//! The forest pane: a table of the visible rows only (the window around the cursor), so a
//! frame costs the same with ten images or ten thousand.

use std::path::Path;

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};

use crate::forest::diag::Severity;
use crate::forest::{KeepRoReason, Mode, Node, NodeId};
use crate::output::human_size;
use crate::tui::app::App;

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
                Some(KeepRoReason::Inherited) => "KRO·inh",
                Some(KeepRoReason::NotWritable) => "KRO·nw",
            }
            .into(),
            t.keep_ro,
        ),
    }
}

/// How a node is named in the tree: relative to the scan root it lies under for roots, the
/// file name for overlays next to their backing file.
pub fn label(app: &App, id: NodeId) -> String {
    let n = app.browse.forest.node(id);
    if let Some(b) = n.backing_node()
        && app.browse.forest.node(b).path.parent() == n.path.parent()
    {
        return n.name();
    }
    relative(app, &n.path)
}

/// `path` relative to the scan root that contains it, or whole.
pub fn relative(app: &App, path: &Path) -> String {
    app.browse
        .roots
        .iter()
        .filter_map(|r| path.strip_prefix(r).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .min_by_key(|p| p.as_os_str().len())
        .map_or_else(|| path.display().to_string(), |p| p.display().to_string())
}

/// `name` cut to `room` characters with an ellipsis in the middle that keeps the file name's
/// end (`app01.1710…000.qcow2`): a directory part goes first (`…/web.qcow2`).
pub fn shorten(name: &str, room: usize) -> String {
    let len = name.chars().count();
    if len <= room || room < 5 {
        return name.to_string();
    }
    if let Some((_, file)) = name.rsplit_once('/') {
        let file_len = file.chars().count();
        if file_len + 2 <= room {
            let dir_room = room - file_len - 2;
            let head: String = name.chars().take(dir_room).collect();
            return format!("{head}…/{file}");
        }
        return shorten(file, room);
    }
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    let start: String = name.chars().take(head).collect();
    let end: String = name.chars().skip(len - tail).collect();
    format!("{start}…{end}")
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
    if n.problems.iter().any(|p| p.severity() >= Severity::Warning) {
        out.push(Span::styled("!", t.problem));
    }
    out
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let wide = area.width >= 70;
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
        " Forest — scanning… ".to_string()
    } else {
        format!(" Forest — {} images ", app.browse.forest.nodes.len())
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(title);
    let height = usize::from(area.height.saturating_sub(3));
    let words: Vec<String> = b
        .query
        .as_ref()
        .map(|q| q.words().map(String::from).collect())
        .unwrap_or_default();
    // What the other columns and the borders leave the name.
    // Borders, the other columns and a space between each two.
    let name_width =
        usize::from(area.width).saturating_sub(if wide { 2 + 35 + 5 } else { 2 + 26 + 4 });
    let end = (app.browse.offset + height).min(app.browse.visible.len());
    let rows: Vec<Row> = app.browse.visible[app.browse.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(k, &ri)| {
            let row = &app.browse.rows[ri];
            let n = app.browse.forest.node(row.id);
            let folded = app.browse.folded.contains(&n.path) && !n.overlays.is_empty();
            let matched = app.browse.matched.get(app.browse.offset + k).copied();
            let suffix = if folded {
                format!(" (+{})", n.overlays.len())
            } else {
                String::new()
            };
            // A fold glyph on images with overlays: a click on it folds or unfolds.
            let glyph = match (n.overlays.is_empty(), folded) {
                (true, _) => "",
                (false, false) => "▾ ",
                (false, true) => "▸ ",
            };
            let room = name_width.saturating_sub(row.guide.chars().count() + 2 + suffix.len());
            let mut name = vec![
                Span::styled(row.guide.clone(), t.dim),
                Span::styled(glyph, t.dim),
            ];
            name.extend(highlighted(
                &shorten(&label(app, row.id), room),
                &words,
                if matched == Some(false) {
                    t.dim
                } else {
                    Style::default()
                },
            ));
            name.push(Span::styled(suffix, t.dim));
            let name = Line::from(name);
            let (badge, style) = badge(app, row.id);
            let mut cells = vec![
                Cell::from(name),
                Cell::from(n.format.map_or("?", |f| f.as_str())),
                Cell::from(n.virtual_size.map_or_else(|| "?".into(), human_size)),
            ];
            if wide {
                cells.push(Cell::from(
                    n.file_size.map_or_else(|| "?".into(), human_size),
                ));
            }
            cells.push(Cell::from(Span::styled(badge, style)));
            cells.push(Cell::from(Line::from(flags(app, n))));
            let r = Row::new(cells);
            if app.browse.offset + k == app.browse.selected {
                r.style(t.selection)
            } else {
                r
            }
        })
        .collect();
    let mut widths = vec![
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(9),
    ];
    let mut header = vec!["Image", "Fmt", "Virtual"];
    if wide {
        widths.push(Constraint::Length(9));
        header.push("File");
    }
    widths.extend([Constraint::Length(9), Constraint::Length(3)]);
    header.extend(["Mode", ""]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(block);
    frame.render_widget(table, area);
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_names_keep_their_end_and_lose_the_middle() {
        assert_eq!(shorten("web.qcow2", 20), "web.qcow2");
        let s = shorten("app01.1710000000000000000.qcow2", 20);
        assert_eq!(s, "app01.1710…000.qcow2");
        assert_eq!(s.chars().count(), 20);
        assert_eq!(shorten("golden/debian-12.qcow2", 18), "g…/debian-12.qcow2");
        assert_eq!(shorten("golden/debian-12.qcow2", 12), "debian…qcow2");
    }
}
