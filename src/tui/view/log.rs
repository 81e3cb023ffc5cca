//! The message log: every message of the session in full, wrapped, newest first.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::actions::Action;
use crate::tui::app::App;
use crate::tui::app::log::age;
use crate::tui::layout::centered;

/// Width of the age column (`12 min`) and the space after it.
const AGE: usize = 8;

pub fn draw(app: &App, scroll: u16, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let rect = centered(area, 100, area.height.saturating_sub(2));
    let room = usize::from(rect.width.saturating_sub(2))
        .saturating_sub(AGE)
        .max(20);
    let now = Instant::now();
    let mut lines = Vec::new();
    for e in app.log.newest_first() {
        let mut first = true;
        for para in e.text.lines() {
            for row in crate::fit::wrap(para, room) {
                let when = if first { age(e.at, now) } else { String::new() };
                first = false;
                lines.push(Line::from(vec![
                    Span::styled(format!("{when:>6}  "), t.dim),
                    Span::raw(row),
                ]));
            }
        }
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("nothing said yet", t.dim)));
    }
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(format!(
            " Messages, newest first — {} scroll, {} closes ",
            app.keymap.keys_of(Action::Down),
            app.keymap.keys_of(Action::Close)
        ));
    frame.render_widget(Paragraph::new(lines).scroll((scroll, 0)).block(block), rect);
}
