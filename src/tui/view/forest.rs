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
    let title = if app.browse.filtering || !app.browse.filter.is_empty() {
        format!(
            " Forest — filter: {}{} ({} shown) ",
            app.browse.filter,
            if app.browse.filtering { "▏" } else { "" },
            app.browse.visible.len()
        )
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
    let end = (app.browse.offset + height).min(app.browse.visible.len());
    let rows: Vec<Row> = app.browse.visible[app.browse.offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(k, &ri)| {
            let row = &app.browse.rows[ri];
            let n = app.browse.forest.node(row.id);
            let folded = app.browse.folded.contains(&n.path) && !n.overlays.is_empty();
            let name = Line::from(vec![
                Span::styled(row.guide.clone(), t.dim),
                Span::raw(label(app, row.id)),
                Span::styled(
                    if folded {
                        format!(" (+{})", n.overlays.len())
                    } else {
                        String::new()
                    },
                    t.dim,
                ),
            ]);
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
