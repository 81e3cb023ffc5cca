//! The help screen, generated from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::centered;
use crate::tui::app::App;
use crate::tui::keymap::Action;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    let mut actions: Vec<Action> = app.keymap.browsing.iter().map(|(a, _)| *a).collect();
    actions.extend([Action::Confirm, Action::Close]);
    for a in actions {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>16}  ", app.keymap.keys_of(a)), bold),
            Span::raw(a.description()),
        ]));
    }
    lines.push(Line::from(""));
    for (badge, style, text) in [
        ("RW", t.rw, "top image, writable"),
        (
            "RO",
            t.ro,
            "backing image, read-only except during a commit into it",
        ),
        (
            "KRO·req",
            t.keep_ro,
            "keep-RO, protected on request (--protect, config, p)",
        ),
        (
            "KRO·inh",
            t.keep_ro,
            "keep-RO, inherited from a protected overlay",
        ),
        (
            "KRO·nw",
            t.keep_ro,
            "keep-RO, not writable (permissions, read-only filesystem)",
        ),
        (
            "⚑w / ⚑r",
            t.in_use,
            "in use by another process, writing / reading",
        ),
        ("!", t.problem, "has a problem: see the details pane"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("{badge:>16}  "), style),
            Span::raw(text),
        ]));
    }
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = centered(area, 90, h);
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(format!(
            " Help — {} closes ",
            app.keymap.keys_of(Action::Close)
        ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        rect,
    );
}
