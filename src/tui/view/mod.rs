//! Views: pure functions from the [`App`] to a frame. Nothing here changes the model.

mod details;
mod forest;
mod help;
mod jobs;
mod popup;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::widgets::Paragraph;

use super::app::{App, Popup};

/// The smallest terminal the UI draws into.
pub const MIN_SIZE: (u16, u16) = (60, 16);

/// Where each pane goes.
struct Areas {
    forest: Rect,
    details: Rect,
    job: Rect,
    status: Rect,
}

fn areas(area: Rect) -> Areas {
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

/// Draws the whole screen.
pub fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let msg = format!(
            "Terminal too small: {}×{}.\nimgchain needs at least {}×{}.\nEnlarge the window, or press q to quit.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let a = areas(area);
    forest::draw(app, frame, a.forest);
    details::draw(app, frame, a.details);
    jobs::draw(app, frame, a.job);
    jobs::status(app, frame, a.status);
    match &app.popup {
        None => {}
        Some(Popup::Help(scroll)) => help::draw(app, *scroll, frame, area),
        Some(Popup::Plan(p)) => popup::plan(app, p, frame, area),
        Some(Popup::Message { title, body, error }) => {
            popup::message(app, title, body, *error, frame, area)
        }
        Some(Popup::ConfirmQuit) => popup::confirm_quit(app, frame, area),
    }
}

/// A rectangle of `w` × `h` (clamped) centred in `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
