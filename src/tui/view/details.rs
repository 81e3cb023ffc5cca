//! The details pane: everything known about the selected image, in words.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::actions::Action;
use crate::forest::diag::Severity;
use crate::forest::{Mode, Node, NodeId};
use crate::text::Names;
use crate::tui::app::App;
use crate::units::human_size;
use crate::words::in_use_text;

use super::forest::badge;

/// A labelled line: the label in bold, padded to the value's column.
fn kv(k: &str, v: String) -> Line<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Line::from(vec![Span::styled(format!("{k:<10}"), bold), Span::raw(v)])
}

/// A labelled line whose value has a style of its own.
fn kv_styled(k: &str, v: String, style: Style) -> Line<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Line::from(vec![
        Span::styled(format!("{k:<10}"), bold),
        Span::styled(v, style),
    ])
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let d = app.details;
    let keys = |a| app.keymap.keys_of(a);
    let title = if d.focus {
        format!(
            " Details — scrolling ({} back, {} {}) ",
            keys(Action::Details),
            keys(Action::Zoom),
            if d.zoom { "unzoom" } else { "zoom" }
        )
    } else {
        format!(" Details ({} scroll) ", keys(Action::Details))
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(if d.focus { t.selection } else { t.border })
        .title(title);
    let Some(id) = app.selected_node() else {
        frame.render_widget(
            Paragraph::new(nothing_selected(app))
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    };
    let text = Paragraph::new(lines(app, id, area.width)).wrap(Wrap { trim: false });
    // Never scrolled past the end: the last line stays at the bottom.
    let inner = block.inner(area);
    let total = u16::try_from(text.line_count(inner.width)).unwrap_or(u16::MAX);
    let scroll = d.scroll.min(total.saturating_sub(inner.height));
    frame.render_widget(text.scroll((scroll, 0)).block(block), area);
}

/// What the pane says with no image selected.
fn nothing_selected(app: &App) -> String {
    if app.browse.scanning {
        match &app.browse.scan_counts {
            Some(c) => format!("Scanning: {c}"),
            None => "Scanning…".into(),
        }
    } else if !app.browse.filter.is_empty() {
        "No image matches the filter. Esc clears it.".into()
    } else {
        "No images here. Run imgchain on a directory that holds disk images, or try --demo.".into()
    }
}

/// Every line about image `id`, for a pane `width` cells wide.
fn lines(app: &App, id: NodeId, width: u16) -> Vec<Line<'static>> {
    let n = app.browse.forest.node(id);
    let mut lines = identity(app, n);
    lines.push(kv("format", format_of(n)));
    lines.push(kv(
        "size",
        format!(
            "{} virtual, file {}{}",
            n.virtual_size.map_or("?".into(), human_size),
            n.file_size.map_or("?".into(), human_size),
            n.allocated
                .map(|a| format!(" ({} on disk)", human_size(a)))
                .unwrap_or_default()
        ),
    ));
    if !n.overlays.is_empty() {
        let (_, subtree) = crate::words::disk_usage(&app.browse.forest, id);
        lines.push(kv(
            "with all",
            format!(
                "{} on disk with every image built on it",
                human_size(subtree)
            ),
        ));
    }
    lines.extend(allocation(app, n, width));
    lines.extend(chain(app, id, usize::from(width.saturating_sub(2))).unwrap_or_default());
    lines.extend(snapshots(app, n));
    lines.extend(bitmaps(app, n));
    lines.extend(backing(app, n));
    lines.push(mode(app, id));
    lines.extend(users(app, n));
    if !n.overlays.is_empty() {
        lines.push(kv("overlays", String::new()));
        for &o in &n.overlays {
            let path = app.browse.forest.node(o).path.shown().to_string();
            lines.push(Line::from(format!("  {path}")));
        }
    }
    lines
}

/// Its name, directory, other names and problems: at 80×24 the problems must be in sight.
fn identity(app: &App, n: &Node) -> Vec<Line<'static>> {
    let dir = n
        .path
        .parent()
        .map_or_else(String::new, |d| d.shown().to_string());
    let mut lines = vec![kv("image", n.name()), kv("in", dir)];
    for a in &n.aliases {
        lines.push(kv("also", a.shown().to_string()));
    }
    for p in &n.problems {
        let style = if p.severity() >= Severity::Warning {
            app.theme.problem
        } else {
            app.theme.dim
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{}[{}] ", p.severity().as_str(), p.kind.as_str()),
                style,
            ),
            Span::raw(p.message.clone()),
        ]));
    }
    lines
}

/// The format and, for qcow2, the header's facts.
fn format_of(n: &Node) -> String {
    let mut fmt = n.format.map_or("unknown".to_string(), |f| f.to_string());
    let Some(h) = &n.qcow2 else {
        return fmt;
    };
    fmt.push_str(&format!(
        " v{} (compat {}), {} clusters, {}-bit refcounts, {}",
        h.version,
        h.compat(),
        human_size(h.cluster_size()),
        h.refcount_bits(),
        h.compression_name()
    ));
    for what in crate::words::qcow2_features(h) {
        fmt.push_str(", ");
        fmt.push_str(&what);
    }
    fmt
}

/// The allocation strip, resampled to the pane's width: the fullest bucket of each cell wins,
/// so small allocations stay visible.
fn allocation(app: &App, n: &Node, width: u16) -> Option<Line<'static>> {
    match app.allocation.maps.get(&n.path) {
        Some(Some(map)) if !map.is_empty() => {
            let cells = usize::from(width.saturating_sub(12)).clamp(1, map.len());
            let strip: String = (0..cells)
                .map(|c| {
                    let from = c * map.len() / cells;
                    let to = ((c + 1) * map.len() / cells).max(from + 1).min(map.len());
                    map[from..to].iter().copied().max().unwrap_or(0)
                })
                .map(|p| match p {
                    0 => '·',
                    1..=33 => '░',
                    34..=66 => '▒',
                    67..=99 => '▓',
                    _ => '█',
                })
                .collect();
            Some(kv_styled("allocated", strip, app.theme.gauge))
        }
        Some(_) => Some(kv(
            "allocated",
            "(not mapped: too fragmented or unreadable)".into(),
        )),
        None => None,
    }
}

/// Its internal snapshots, once listed.
fn snapshots(app: &App, n: &Node) -> Vec<Line<'static>> {
    match app.allocation.snapshots.get(&n.path) {
        Some(Ok(list)) => {
            let mut lines = vec![kv(
                "snapshots",
                crate::units::count(list.len() as u64, "internal snapshot"),
            )];
            for s in list {
                lines.push(Line::from(format!("  {}", crate::words::snapshot_text(s))));
            }
            lines
        }
        Some(Err(e)) => vec![kv_styled(
            "snapshots",
            format!("not readable: {e}"),
            app.theme.problem,
        )],
        None => Vec::new(),
    }
}

/// Its persistent bitmaps, once read.
fn bitmaps(app: &App, n: &Node) -> Vec<Line<'static>> {
    match app.allocation.bitmaps.get(&n.path) {
        Some(Ok(list)) => {
            let mut lines = vec![kv(
                "bitmaps",
                crate::units::count(list.len() as u64, "persistent bitmap"),
            )];
            for (b, dirty) in list {
                let note = crate::words::checkpoint_note(n, &b.name);
                lines.push(Line::from(format!(
                    "  {}{note}",
                    crate::words::bitmap_text(b, *dirty)
                )));
            }
            lines
        }
        Some(Err(e)) => vec![kv_styled(
            "bitmaps",
            format!("not readable: {e}"),
            app.theme.problem,
        )],
        None => Vec::new(),
    }
}

/// Its backing file: the name in the header, where it leads, and its format.
fn backing(app: &App, n: &Node) -> Vec<Line<'static>> {
    let Some(b) = &n.backing else {
        return vec![kv("backing", "none (a base image)".into())];
    };
    vec![
        kv("backing", format!("\"{}\"", b.raw.shown())),
        kv(
            "  →",
            format!(
                "{}{}",
                app.browse.relative(&b.path),
                if b.exists { "" } else { "  (missing)" }
            ),
        ),
        kv(
            "  format",
            b.format.clone().unwrap_or_else(|| "not recorded".into()),
        ),
    ]
}

/// Its mode badge and what the mode means for it now.
fn mode(app: &App, id: NodeId) -> Line<'static> {
    let n = app.browse.forest.node(id);
    let (badge, style) = badge(app, id);
    let words = if app.jobs.reopen_failed.contains(&n.path) {
        "a commit wrote into it, but reopening it read-only failed; the data is on disk and the \
         read-write handle was closed when the commit ended — check it with qemu-img check"
            .to_string()
    } else if app.live_rw(&n.path) {
        "open read-write for the running commit; it is reopened read-only when the copy ends"
            .to_string()
    } else {
        match (app.shown_mode(id), n.keep_ro_reason) {
            (Mode::Rw, _) => crate::words::writable_because(n).into(),
            (Mode::Ro, _) => crate::words::read_only_because(n),
            (Mode::KeepRo, Some(r)) => format!("keep-RO: {}", r.describe()),
            (Mode::KeepRo, None) => "keep-RO".into(),
        }
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Line::from(vec![
        Span::styled(format!("{:<10}", "mode"), bold),
        Span::styled(badge, style),
        Span::raw(format!(" — {words}")),
    ])
}

/// Who uses it: the processes that hold it, and the libvirt VMs that name it as a disk.
fn users(app: &App, n: &Node) -> Vec<Line<'static>> {
    let mut lines = vec![match in_use_text(n) {
        Some(u) => kv_styled("in use", u, app.theme.in_use),
        None => kv("in use", "no (no QEMU lock held by another process)".into()),
    }];
    for r in &n.libvirt_snapshots {
        lines.push(kv("libvirt", crate::words::snapshot_record_text(r)));
    }
    for d in &n.vm_disks {
        lines.push(kv(
            "vm disk",
            format!(
                "{} of {} (libvirt, {})",
                d.target.shown(),
                d.domain.shown(),
                d.definition.shown()
            ),
        ));
    }
    for h in &n.holders {
        lines.push(kv("  holder", h.to_string()));
        if let Some(q) = &h.owner.qmp {
            lines.push(kv("  qmp", q.shown().to_string()));
        }
        lines.push(kv("  command", h.command.shown().to_string()));
    }
    lines
}

/// The selected image's chain from it down to its base, each layer with its own bytes on
/// disk, in `width` cells; `None` for a base image.
fn chain(app: &App, id: NodeId, width: usize) -> Option<Vec<Line<'static>>> {
    let forest = &app.browse.forest;
    let n = forest.node(id);
    n.backing.as_ref()?;
    let on_disk = |n: &crate::forest::Node| n.allocated.or(n.file_size).unwrap_or(0);
    // Each layer's name and bytes on disk; the last, when not in the forest, whether it exists.
    let mut layers: Vec<(String, Result<u64, bool>)> = vec![(app.browse.label(id), Ok(on_disk(n)))];
    let mut seen = vec![id];
    let mut at = n;
    while let Some(b) = &at.backing {
        match b.node.filter(|b| !seen.contains(b)) {
            Some(next) => {
                seen.push(next);
                at = forest.node(next);
                layers.push((app.browse.label(next), Ok(on_disk(at))));
            }
            None => {
                layers.push((app.browse.relative(&b.path), Err(b.exists)));
                break;
            }
        }
    }
    let total: u64 = layers.iter().filter_map(|l| l.1.ok()).sum();
    // Each line: two spaces, the mark and a space, the name, two spaces, the size.
    let room = width.saturating_sub(4 + 2 + 8);
    let layers: Vec<(String, Result<u64, bool>)> = layers
        .into_iter()
        .map(|(name, size)| (crate::fit::fit(&name, room, 0), size))
        .collect();
    let width = layers
        .iter()
        .map(|l| l.0.chars().count())
        .max()
        .unwrap_or(0);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{:<10}", "chain"), bold),
        Span::raw(format!(
            "{} layers, {} on disk",
            layers.len(),
            human_size(total)
        )),
    ])];
    for (k, (name, size)) in layers.into_iter().enumerate() {
        let mark = if k == 0 { "●" } else { "└" };
        let size = match size {
            Ok(bytes) => human_size(bytes),
            Err(true) => "not read".into(),
            Err(false) => "missing".into(),
        };
        lines.push(Line::from(format!("  {mark} {name:<width$}  {size:>8}")));
    }
    Some(lines)
}
