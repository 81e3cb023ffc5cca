//! The details pane: everything known about the selected image, in words.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::actions::Action;
use crate::forest::Mode;
use crate::forest::diag::Severity;
use crate::output::{human_size, in_use_text};
use crate::text::Names;
use crate::tui::app::App;

use super::forest::badge;

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
        let text = if app.browse.scanning {
            match &app.browse.scan_counts {
                Some(c) => format!("Scanning: {c}"),
                None => "Scanning…".into(),
            }
        } else if !app.browse.filter.is_empty() {
            "No image matches the filter. Esc clears it.".into()
        } else {
            "No images here. Run imgchain on a directory that holds disk images, or try --demo."
                .into()
        };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
            area,
        );
        return;
    };
    let n = app.browse.forest.node(id);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<10}"), bold), Span::raw(v)]);
    let dir = n
        .path
        .parent()
        .map_or_else(String::new, |d| d.shown().to_string());
    let mut lines = vec![kv("image", n.name()), kv("in", dir)];
    for a in &n.aliases {
        lines.push(kv("also", a.shown().to_string()));
    }
    // Problems come first: at 80×24 they are what must be in sight.
    for p in &n.problems {
        let style = if p.severity() >= Severity::Warning {
            t.problem
        } else {
            t.dim
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{}[{}] ", p.severity().as_str(), p.kind.as_str()),
                style,
            ),
            Span::raw(p.message.clone()),
        ]));
    }
    let mut fmt = n.format.map_or("unknown".to_string(), |f| f.to_string());
    if let Some(h) = &n.qcow2 {
        fmt.push_str(&format!(
            " v{} (compat {}), {} clusters, {}-bit refcounts, {}",
            h.version,
            h.compat(),
            human_size(h.cluster_size()),
            h.refcount_bits(),
            h.compression_name()
        ));
        for (on, what) in [
            (h.lazy_refcounts(), "lazy refcounts"),
            (h.extended_l2(), "extended L2"),
            (h.bitmaps(), "persistent bitmaps"),
            (h.encrypted(), "encrypted"),
            (h.external_data_file(), "external data file"),
        ] {
            if on {
                fmt.push_str(", ");
                fmt.push_str(what);
            }
        }
        if h.nb_snapshots > 0 {
            fmt.push_str(&format!(
                ", {}",
                crate::units::count(u64::from(h.nb_snapshots), "internal snapshot")
            ));
        }
    }
    lines.push(kv("format", fmt));
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
        let (_, subtree) = crate::output::disk_usage(&app.browse.forest, id);
        lines.push(kv(
            "with all",
            format!(
                "{} on disk with every image built on it",
                human_size(subtree)
            ),
        ));
    }
    match app.allocation.maps.get(&n.path) {
        Some(Some(map)) if !map.is_empty() => {
            // Resample to the pane's width; the fullest bucket of each cell wins, so small
            // allocations stay visible.
            let cells = usize::from(area.width.saturating_sub(12)).clamp(1, map.len());
            let strip: String = (0..cells)
                .map(|c| {
                    let (from, to) = (
                        c * map.len() / cells,
                        ((c + 1) * map.len() / cells).max(c * map.len() / cells + 1),
                    );
                    map[from..to.min(map.len())]
                        .iter()
                        .copied()
                        .max()
                        .unwrap_or(0)
                })
                .map(|p| match p {
                    0 => '·',
                    1..=33 => '░',
                    34..=66 => '▒',
                    67..=99 => '▓',
                    _ => '█',
                })
                .collect();
            lines.push(Line::from(vec![
                Span::styled(format!("{:<10}", "allocated"), bold),
                Span::styled(strip, t.gauge),
            ]));
        }
        Some(_) => lines.push(kv(
            "allocated",
            "(not mapped: too fragmented or unreadable)".into(),
        )),
        None => {}
    }
    if let Some(chain) = chain(app, id, usize::from(area.width.saturating_sub(2))) {
        lines.extend(chain);
    }
    match app.allocation.snapshots.get(&n.path) {
        Some(Ok(list)) => {
            lines.push(kv(
                "snapshots",
                crate::units::count(list.len() as u64, "internal snapshot"),
            ));
            for s in list {
                lines.push(Line::from(format!("  {}", crate::output::snapshot_text(s))));
            }
        }
        Some(Err(e)) => lines.push(Line::from(vec![
            Span::styled(format!("{:<10}", "snapshots"), bold),
            Span::styled(format!("not readable: {e}"), t.problem),
        ])),
        None => {}
    }
    match &n.backing {
        None => lines.push(kv("backing", "none (a base image)".into())),
        Some(b) => {
            lines.push(kv("backing", format!("\"{}\"", b.raw.shown())));
            lines.push(kv(
                "  →",
                format!(
                    "{}{}",
                    app.browse.relative(&b.path),
                    if b.exists { "" } else { "  (missing)" }
                ),
            ));
            lines.push(kv(
                "  format",
                b.format.clone().unwrap_or_else(|| "not recorded".into()),
            ));
        }
    }
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
            (Mode::Rw, _) => crate::output::writable_because(n).into(),
            (Mode::Ro, _) => format!(
                "a backing image: read-only, upgraded to read-write only while a commit writes into it ({})",
                crate::units::count(n.overlays.len() as u64, "overlay")
            ),
            (Mode::KeepRo, Some(r)) => format!("keep-RO: {}", r.describe()),
            (Mode::KeepRo, None) => "keep-RO".into(),
        }
    };
    lines.push(Line::from(vec![
        Span::styled(format!("{:<10}", "mode"), bold),
        Span::styled(badge, style),
        Span::raw(format!(" — {words}")),
    ]));
    lines.push(match in_use_text(n) {
        Some(u) => Line::from(vec![
            Span::styled(format!("{:<10}", "in use"), bold),
            Span::styled(u, t.in_use),
        ]),
        None => kv("in use", "no (no QEMU lock held by another process)".into()),
    });
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
    if !n.overlays.is_empty() {
        lines.push(kv("overlays", String::new()));
        for &o in &n.overlays {
            lines.push(Line::from(format!(
                "  {}",
                app.browse.forest.node(o).path.shown()
            )));
        }
    }
    let text = Paragraph::new(lines).wrap(Wrap { trim: false });
    // Never scrolled past the end: the last line stays at the bottom.
    let inner = block.inner(area);
    let total = u16::try_from(text.line_count(inner.width)).unwrap_or(u16::MAX);
    let scroll = d.scroll.min(total.saturating_sub(inner.height));
    frame.render_widget(text.scroll((scroll, 0)).block(block), area);
}

/// The selected image's chain from it down to its base, each layer with its own bytes on
/// disk, in `width` cells; `None` for a base image.
fn chain(app: &App, id: crate::forest::NodeId, width: usize) -> Option<Vec<Line<'static>>> {
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
        .map(|(name, size)| (super::forest::shorten(&name, room), size))
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
