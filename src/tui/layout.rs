//! Where each pane goes on a terminal of a given size: shared by the views, which draw into
//! the panes, and the app, which pages by the forest pane's height.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

/// The smallest terminal the UI draws into.
pub const MIN_SIZE: (u16, u16) = (60, 16);

/// Where each pane goes.
pub struct Areas {
    pub forest: Rect,
    pub details: Rect,
    pub job: Rect,
    pub status: Rect,
}

pub fn areas(area: Rect) -> Areas {
    let [main, job, status] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let direction = if area.width >= 110 {
        Direction::Horizontal
    } else {
        Direction::Vertical
    };
    let split = Layout::default()
        .direction(direction)
        .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
        .split(main);
    Areas {
        forest: split[0],
        details: split[1],
        job,
        status,
    }
}

/// Rows of the forest table for a terminal of `w` × `h` (borders and header taken off).
pub fn forest_rows(w: u16, h: u16) -> usize {
    let a = areas(Rect::new(0, 0, w, h));
    usize::from(a.forest.height.saturating_sub(3))
}
