//! The image picker over a dialog: the filter typed, and the images it lets through.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::forest::model::file_name;
use crate::tui::app::App;
use crate::tui::app::OpPopup;
use crate::tui::app::picker::Picker;
use crate::tui::layout::centered;
use crate::units::human_size;

pub fn draw(app: &App, p: &OpPopup, picker: &Picker, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let b = &app.browse;
    let found = picker.candidates(b, p.ask.image());
    let rows = usize::from(area.height.saturating_sub(8)).clamp(3, 20);
    let h = u16::try_from(rows + 4).unwrap_or(u16::MAX);
    let rect = centered(area, 90, h);
    let room = usize::from(rect.width.saturating_sub(2 + 2 + 12));
    let count = match found.len() {
        1 => "1 image".to_string(),
        n => format!("{n} images"),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!("filter: {}▏", picker.filter)),
            Span::styled(format!("   {count}"), t.dim),
        ]),
        Line::from(""),
    ];
    // The window of the list around the cursor.
    let start = picker.selected.saturating_sub(rows - 1);
    for (k, &id) in found.iter().enumerate().skip(start).take(rows) {
        let n = b.forest.node(id);
        let name = crate::fit::fit(&b.relative(&n.path), room, 0);
        let size = n.virtual_size.map_or_else(|| "?".into(), human_size);
        let line = Line::from(format!("  {name:<room$}  {size:>10}"));
        lines.push(if k == picker.selected {
            line.style(t.selection)
        } else {
            line
        });
    }
    if found.is_empty() {
        lines.push(Line::from(Span::styled(
            "  no image matches (not the image itself, nor one built on it)",
            t.dim,
        )));
    }
    frame.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(format!(
            " Rebase {} onto — type to filter, ↑/↓ move, Enter picks, Esc back ",
            file_name(p.ask.image())
        ));
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}
