//! Views: pure functions from the [`App`] to a frame. Nothing here changes the model.

mod details;
mod forest;
mod help;
mod jobs;
mod log;
mod picker;
mod popup;

use ratatui::Frame;
use ratatui::widgets::Paragraph;

use super::app::{App, Popup};
use super::layout::{MIN_SIZE, areas};

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
    let a = areas(area, app.jobs.running.is_some());
    if app.details.zoom {
        details::draw(app, frame, a.forest.union(a.details));
    } else {
        forest::draw(app, frame, a.forest);
        details::draw(app, frame, a.details);
    }
    jobs::draw(app, frame, a.job);
    jobs::status(app, frame, a.status);
    match &app.popup {
        None => {}
        Some(Popup::Help(scroll)) => help::draw(app, *scroll, frame, area),
        Some(Popup::Log(scroll)) => log::draw(app, *scroll, frame, area),
        Some(Popup::Op(p)) => {
            popup::op(app, p, frame, area);
            if let Some(k) = &p.picker {
                picker::draw(app, p, k, frame, area);
            }
        }
        Some(Popup::Message { title, body, error }) => {
            popup::message(app, title, body, *error, frame, area)
        }
        Some(Popup::ConfirmQuit) => popup::confirm_quit(app, frame, area),
        Some(Popup::ConfirmUnprotect { path, rule }) => {
            popup::confirm_unprotect(app, path, rule, frame, area)
        }
    }
}
