//! The job pane (the running operation's gauge) and the status line with key hints.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};

use crate::actions::{ACTIONS, Action};
use crate::tui::app::App;
use crate::units::human_size;

/// The running job's gauge in a bordered pane, or one dim line of hints when idle.
pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border)
        .title(" Job ");
    let Some(job) = &app.jobs.running else {
        let k = |a| app.keymap.keys_of(a);
        if app.read_only {
            let hint = format!(
                "READ-ONLY (--read-only): browsing only, nothing on disk changes.  {} filter  \
                 {} details  {} all keys",
                k(Action::Filter),
                k(Action::Details),
                k(Action::Help)
            );
            frame.render_widget(Paragraph::new(hint).style(t.keep_ro), area);
            return;
        }
        frame.render_widget(Paragraph::new(ready_hint(app)).style(t.dim), area);
        return;
    };
    let name = crate::forest::model::file_name;
    let label = match &job.progress {
        None => format!("{} → {}: starting", name(&job.top), name(&job.base)),
        Some(p) if p.total == 0 => format!(
            "{}: {} → {}  [{}]",
            p.op.title(),
            name(&job.top),
            name(&job.base),
            p.phase
        ),
        Some(p) => {
            let eta = p
                .eta()
                .map(|d| format!(", ETA {}s", d.as_secs()))
                .unwrap_or_default();
            format!(
                "{}: {} → {}: {:.1}%  {} of {}, {}/s{eta}  [{}]{}",
                p.op.title(),
                name(&job.top),
                name(&job.base),
                p.percent(),
                human_size(p.done),
                human_size(p.total),
                human_size(p.rate() as u64),
                p.phase,
                match (
                    job.cancel.load(std::sync::atomic::Ordering::Relaxed),
                    p.phase.cancellable(),
                ) {
                    (true, true) => " cancelling…",
                    (true, false) => " too late to cancel: finishing",
                    (false, _) => "",
                }
            )
        }
    };
    let ratio = job
        .progress
        .as_ref()
        .map_or(0.0, |p| (p.percent() / 100.0).clamp(0.0, 1.0));
    let gauge = Gauge::default()
        .block(block)
        .gauge_style(t.gauge)
        .ratio(ratio)
        .label(label);
    frame.render_widget(gauge, area);
}

pub fn status(app: &App, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    // As many hints as fit beside the status (and in half the line), most useful first.
    let room = usize::from(area.width / 2)
        .min(usize::from(area.width).saturating_sub(app.status.chars().count() + 2));
    let mut hints = String::new();
    // Commit and merge only where they apply, cancel only while a job runs.
    let offered = offered(app);
    let applies = |a: Action| match a {
        Action::Commit | Action::Merge => offered.contains(&a),
        Action::Cancel => app.jobs.running.is_some(),
        _ => true,
    };
    let mut hinted: Vec<(u8, &str, Action)> = ACTIONS
        .iter()
        .filter(|d| applies(d.action))
        .filter_map(|d| d.hint.map(|(rank, word)| (rank, word, d.action)))
        .collect();
    hinted.sort();
    for (_, word, a) in hinted {
        let hint = format!("{} {word}", app.keymap.keys_of(a));
        if hints.chars().count() + hint.chars().count() + 2 > room {
            break;
        }
        if !hints.is_empty() {
            hints.push_str("  ");
        }
        hints.push_str(&hint);
    }
    let hint_w = hints.chars().count() as u16 + 1;
    let [left, right] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(hint_w)]).areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(cut_status(app, left.width))),
        left,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(hints, t.dim))).right_aligned(),
        right,
    );
}

/// The status message in `width` cells: one too long ends in `…more (m)`, naming the key
/// that shows it whole in the message log.
fn cut_status(app: &App, width: u16) -> String {
    let width = usize::from(width);
    if app.status.chars().count() <= width {
        return app.status.clone();
    }
    let more = format!("…more ({})", app.keymap.keys_of(Action::Messages));
    let room = width.saturating_sub(more.chars().count());
    let head: String = app.status.chars().take(room).collect();
    format!("{}{more}", head.trim_end())
}

/// The operations that apply to the selected image, as the ready line names them: no commit
/// or flatten without a backing file (repair when it is missing), merge only for a middle
/// layer, no flatten or delete of an image kept read-only for itself, no delete of one
/// something is built on.
fn offered(app: &App) -> Vec<Action> {
    let Some(n) = app.selected_node().map(|id| app.browse.forest.node(id)) else {
        return Vec::new();
    };
    let backing = n.backing.as_ref().is_some_and(|b| b.node.is_some());
    let missing = n.backing.as_ref().is_some_and(|b| b.node.is_none());
    let overlays = !n.overlays.is_empty();
    // Kept read-only for itself (not only for an overlay's sake): nothing may write or remove it.
    let kept = n
        .keep_ro_reason
        .is_some_and(|r| r != crate::forest::KeepRoReason::Inherited);
    [
        (Action::Repair, missing),
        (Action::Commit, backing),
        (Action::Snapshot, !missing),
        (Action::Merge, backing && overlays),
        (Action::Flatten, backing && !kept),
        (Action::Delete, !overlays && !kept),
    ]
    .into_iter()
    .filter_map(|(a, on)| on.then_some(a))
    .collect()
}

/// The line under the forest when nothing runs: what the keys do here — in a dialog, while
/// typing a filter, or the operations that apply to the selected image.
fn ready_hint(app: &App) -> String {
    let k = |a| app.keymap.keys_of(a);
    if matches!(&app.popup, Some(crate::tui::app::Popup::Op(p)) if p.editing.is_some()) {
        return "Naming the new overlay: type its file name, Enter keeps it, Esc goes back.".into();
    }
    if matches!(&app.popup, Some(crate::tui::app::Popup::Op(p)) if p.typed.is_some()) {
        return "Confirming a delete: type the image's file name, Enter deletes, Esc goes back."
            .into();
    }
    if matches!(&app.popup, Some(crate::tui::app::Popup::Op(p)) if p.picker.is_some()) {
        return "Picking an image: type to filter, ↑/↓ move, Enter picks, Esc goes back.".into();
    }
    if app.popup.is_some() {
        return format!(
            "A dialog is open: its keys are at its foot; {} closes it.",
            k(Action::Close)
        );
    }
    if app.browse.filtering {
        return format!(
            "Filter: Enter keeps it, {} drops it; words match paths, is:problem is:inuse \
             is:orphan mode:kro fmt:raw size:>10G match facts",
            k(Action::Close)
        );
    }
    let ops: Vec<String> = offered(app)
        .into_iter()
        .map(|a| format!("{} {}", k(a), a.def().name))
        .collect();
    let all = format!("{} all keys", k(Action::Help));
    match ops.is_empty() {
        true => format!("Ready.  {all}"),
        false => format!("Ready.  {}  {all}", ops.join("  ")),
    }
}
