//! The help screen, generated from the action table and the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::actions::{ACTIONS, Action};
use crate::tui::app::App;
use crate::tui::layout::centered;

pub fn draw(app: &App, scroll: u16, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    // A description wraps under itself, not under the keys.
    let room = usize::from(centered(area, 90, area.height).width.saturating_sub(2 + 18)).max(20);
    for d in &ACTIONS {
        let mut rows = crate::fit::wrap(d.description, room).into_iter();
        lines.push(Line::from(vec![
            Span::styled(format!("{:>16}  ", app.keymap.keys_of(d.action)), bold),
            Span::raw(rows.next().unwrap_or_default()),
        ]));
        lines.extend(rows.map(|r| Line::from(format!("{:18}{r}", ""))));
    }
    lines.push(Line::from(""));
    let mut legend = Vec::new();
    for (badge, style, text) in [
        ("RW", t.rw, "top, writable"),
        ("RO", t.ro, "backing, read-only but for a commit into it"),
        ("KRO·req", t.keep_ro, "keep-RO, protected"),
        (
            "KRO·inh",
            t.keep_ro,
            "keep-RO, inherited from a protected overlay",
        ),
        (
            "KRO·mod",
            t.keep_ro,
            "keep-RO, the file's mode says read-only",
        ),
        ("KRO·nw", t.keep_ro, "keep-RO, not writable"),
        (
            "⚑w/⚑r",
            t.in_use,
            "in use by another process, writing/reading",
        ),
        ("⚐", t.dim, "a stopped libvirt VM's disk"),
        (
            "▾/▸",
            t.dim,
            "overlays shown/folded (click it; click a row selects it, the wheel scrolls)",
        ),
        ("!", t.problem, "a problem, see details"),
    ] {
        legend.push(Span::styled(badge, style));
        legend.push(Span::raw(format!(" {text}   ")));
    }
    lines.push(Line::from(legend));
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::styled("allocated ", bold),
        Span::styled("·░▒▓█", t.gauge),
        Span::raw(
            "  the details' strip: the virtual disk left to right, each cell how much of its \
             stretch the image's own layer holds (· none, ░ up to a third, ▒ up to two \
             thirds, ▓ most, █ all); what it does not hold comes from its backing chain",
        ),
    ]));
    lines.push(Line::from(vec![
        Span::styled("columns   ", bold),
        Span::raw(
            "On disk: bytes the file takes; File: its length; Total: on disk with every \
             image built on it (shown as the width allows)",
        ),
    ]));
    // The legend and the notes wrap to a few lines each.
    let h = (lines.len() as u16 + 8).min(area.height);
    let rect = centered(area, 90, h);
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(format!(
            " Help — {} scroll, {} closes ",
            app.keymap.keys_of(Action::Down),
            app.keymap.keys_of(Action::Close)
        ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(block),
        rect,
    );
}
