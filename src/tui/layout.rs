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

/// The panes of `area`; the job pane is a bordered gauge while a job runs (`busy`) and one
/// line of hints otherwise.
pub fn areas(area: Rect, busy: bool) -> Areas {
    let [main, job, status] = Layout::vertical([
        Constraint::Min(6),
        Constraint::Length(if busy { 3 } else { 1 }),
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

/// A rectangle of `w` × `h` (clamped) centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
