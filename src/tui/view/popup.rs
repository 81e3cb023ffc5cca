//! Dialogs: an operation's plan with its guards, and result or error messages.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::actions::Action;
use crate::ops::dependents::Searched;
use crate::ops::{AnyPlan, Ask};
use crate::ops::{Description, Refusal, Said, commit, delete, merge};
use crate::text::Names;
use crate::tui::app::{App, OpPopup};
use crate::tui::layout::centered;

fn dialog(
    app: &App,
    title: String,
    mut lines: Vec<Line<'static>>,
    error: bool,
    frame: &mut Frame,
    area: Rect,
) {
    let w = area.width.saturating_sub(4).min(96);
    let inner = w.saturating_sub(2).max(1);
    // The last line names the keys: it stays in sight even when the text must be cut.
    let keys = lines.pop().unwrap_or_default();
    let body = Paragraph::new(lines).wrap(Wrap { trim: false });
    let body_h = u16::try_from(body.line_count(inner)).unwrap_or(u16::MAX);
    let keys_h = u16::try_from(
        Paragraph::new(keys.clone())
            .wrap(Wrap { trim: false })
            .line_count(inner),
    )
    .unwrap_or(1);
    let rect = centered(area, w, body_h.saturating_add(keys_h).saturating_add(2));
    frame.render_widget(Clear, rect);
    let style = if error {
        app.theme.problem
    } else {
        app.theme.border
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title);
    let inside = block.inner(rect);
    frame.render_widget(block, rect);
    let keys_h = keys_h.min(inside.height);
    let (text, foot) = (
        Rect::new(inside.x, inside.y, inside.width, inside.height - keys_h),
        Rect::new(
            inside.x,
            inside.y + inside.height - keys_h,
            inside.width,
            keys_h,
        ),
    );
    frame.render_widget(body, text);
    frame.render_widget(Paragraph::new(keys).wrap(Wrap { trim: false }), foot);
}

/// The commit dialog: top and base, what the copy does, and every guard that fires.
fn commit(app: &App, p: &OpPopup, frame: &mut Frame, area: Rect) {
    let t = &app.theme;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<12}"), bold), Span::raw(v)]);
    let mut lines = Vec::new();
    if let Some(n) = &p.notice {
        lines.push(Line::from(Span::styled(n.clone(), t.in_use)));
        lines.push(Line::from(""));
    }
    lines.push(kv("top", p.ask.image().shown().to_string()));
    lines.push(kv(
        "into",
        commit_base(app, p).map_or("(no backing file)".into(), |b| b.shown().to_string()),
    ));
    if p.pending {
        let body = vec![Line::from(
            "Checking the chain, its locks and every overlay of the base on a fresh scan…",
        )];
        return closing(app, (" Commit ", false), lines, body, (frame, area));
    }
    // Exit codes are for scripts (the CLI); a dialog says what and why in words.
    if let Some(e) = &p.refusal {
        let body = commit_refused(app, p, e);
        return closing(app, (" Commit refused ", true), lines, body, (frame, area));
    }
    if let Some(plan @ AnyPlan::Commit(_)) = &p.plan {
        described(app, &plan.describe(), &mut lines, &kv);
        if let Some(sp) = &p.space {
            lines.push(kv("space", sp.describe()));
        }
        if let Some(u) = &p.undo {
            lines.push(kv("undo", u.describe()));
        }
        searched_line(&p.searched, &mut lines, &kv);
    }
    let shared_with = p.shared_with();
    shared_warning(app, shared_with, &mut lines);
    let (k, first) = (|a| app.keymap.keys_of(a), |a| app.keymap.first_key_of(a));
    let amend = match p.plan.as_ref().and_then(AnyPlan::amends_v2) {
        Some(false) => format!("   {} upgrade v2 first", first(Action::Amend)),
        Some(true) => format!("   {} keep it v2", first(Action::Amend)),
        None => String::new(),
    };
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(
            "{}   {} keep/empty top   {} deeper base{amend}   {} cancel",
            if shared_with.is_empty() {
                format!("{} commit", k(Action::Confirm))
            } else {
                format!("{} commit into the shared base", k(Action::Shared))
            },
            first(Action::KeepTop),
            first(Action::Deeper),
            k(Action::Close)
        ),
        bold,
    )));
    let error = !shared_with.is_empty();
    dialog(app, " Commit ".into(), lines, error, frame, area);
}

/// A dialog with nothing to confirm: `lines`, then `body`, then how to close it.
fn closing(
    app: &App,
    (title, error): (&str, bool),
    mut lines: Vec<Line<'static>>,
    body: Vec<Line<'static>>,
    (frame, area): (&mut Frame, Rect),
) {
    lines.push(Line::from(""));
    lines.extend(body);
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!("{} closes", app.keymap.keys_of(Action::Close)),
        app.theme.dim,
    )));
    dialog(app, title.into(), lines, error, frame, area);
}

/// Why a commit was refused; for an image a QEMU imgchain can ask holds (its QMP socket, or
/// libvirt), the key of the live commit.
fn commit_refused(app: &App, p: &OpPopup, e: &Refusal) -> Vec<Line<'static>> {
    let mut body = vec![Line::from(Span::styled("Refused:", app.theme.problem))];
    let amend = matches!(e, Refusal::NeedsAmend { .. });
    let said = if amend { e.fact() } else { app.refusal_text(e) };
    body.extend(said.lines().map(|l| Line::from(l.to_string())));
    if amend {
        body.push(Line::from(""));
        body.push(Line::from(Span::styled(
            format!(
                "{} upgrade it to compat=1.1 first (qemu-img amend), and plan again",
                app.keymap.first_key_of(Action::Amend)
            ),
            Style::default().add_modifier(Modifier::BOLD),
        )));
    }
    let forest = &app.browse.forest;
    let askable = e.exit_code() == crate::exit::IN_USE
        && forest.find(p.ask.image()).is_some_and(|id| {
            forest.node(id).holders.iter().any(|h| {
                h.owner.qmp.is_some() || h.owner.manager == crate::image::lock::Manager::Libvirt
            })
        });
    if askable {
        body.push(Line::from(""));
        body.push(Line::from(Span::styled(
            format!(
                "{} (after closing this) has that VM commit it itself, live.",
                app.keymap.keys_of(Action::Live)
            ),
            Style::default().add_modifier(Modifier::BOLD),
        )));
    }
    body
}

/// The other images built on the base, and the key that commits over them.
fn shared_warning(app: &App, shared_with: &[std::path::PathBuf], lines: &mut Vec<Line<'static>>) {
    if shared_with.is_empty() {
        return;
    }
    let (t, first) = (&app.theme, |a| app.keymap.first_key_of(a));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Other images are built on this base; their disks change if you commit:",
        t.problem,
    )));
    for o in shared_with {
        lines.push(Line::from(format!("  {}", o.shown())));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "To commit anyway, press {} ({} does not): {}.",
            first(Action::Shared),
            first(Action::Confirm),
            other_disks_change(shared_with.len())
        ),
        t.problem,
    )));
}

/// The base a commit goes into: the plan's, else the one asked for, else the top's backing
/// file as the forest on screen knows it.
fn commit_base(app: &App, p: &OpPopup) -> Option<std::path::PathBuf> {
    if let Some(AnyPlan::Commit(c)) = &p.plan {
        return Some(c.base.path.clone());
    }
    if let Ask::Commit(commit::Ask { base: Some(b), .. }) = &p.ask {
        return Some(b.clone());
    }
    let forest = &app.browse.forest;
    let n = forest.node(forest.find(p.ask.image())?);
    Some(match n.backing_node() {
        Some(b) => forest.node(b).path.clone(),
        None => n.backing.as_ref()?.path.clone(),
    })
}

pub fn message(app: &App, title: &str, body: &str, error: bool, frame: &mut Frame, area: Rect) {
    let hint = format!(
        "{} or {} closes",
        app.keymap.keys_of(Action::Confirm),
        app.keymap.keys_of(Action::Close)
    );
    text(app, title, body, hint, error, frame, area);
}

/// The question asked when quitting while a commit can still be cancelled.
pub fn confirm_unprotect(
    app: &App,
    path: &std::path::Path,
    rule: &str,
    frame: &mut Frame,
    area: Rect,
) {
    let body = format!(
        "{} is keep-RO because of {rule}.\nUnprotect it until you quit? imgchain may then \
         write it (commit or merge into it), which changes the disk of every image built on \
         it. The rule itself is not changed.",
        path.shown()
    );
    let hint = format!(
        "{} unprotect   {} keep it protected",
        app.keymap.keys_of(Action::Confirm),
        app.keymap.keys_of(Action::Close)
    );
    text(app, "Unprotect?", &body, hint, false, frame, area);
}

pub fn confirm_quit(app: &App, frame: &mut Frame, area: Rect) {
    let name = crate::forest::model::file_name;
    let (op, body) = match &app.jobs.running {
        Some(j) if j.op == crate::ops::OpKind::COMMIT => (
            "commit".to_string(),
            format!(
                "{} is being committed into {}.\nCancel the commit and quit? The base is \
                 flushed and made read-only again first; the top keeps its data.",
                name(&j.top),
                name(&j.base)
            ),
        ),
        Some(j) => (
            j.op.as_str().to_string(),
            format!(
                "{} of {} is running.\nCancel it and quit? It stops at its next safe point, \
                 with every image consistent.",
                j.op.title(),
                name(&j.top)
            ),
        ),
        None => ("job".to_string(), String::new()),
    };
    let hint = format!(
        "{} cancel and quit   {} keep committing",
        app.keymap.keys_of(Action::Confirm),
        app.keymap.keys_of(Action::Close)
    );
    text(
        app,
        &format!("Quit during a {op}?"),
        &body,
        hint,
        false,
        frame,
        area,
    );
}

fn text(
    app: &App,
    title: &str,
    body: &str,
    hint: String,
    error: bool,
    frame: &mut Frame,
    area: Rect,
) {
    let mut lines: Vec<Line<'static>> = body.lines().map(|l| Line::from(l.to_string())).collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(hint, app.theme.dim)));
    dialog(app, format!(" {title} "), lines, error, frame, area);
}

/// The dialog of an operation.
pub fn op(app: &App, p: &OpPopup, frame: &mut Frame, area: Rect) {
    if matches!(p.ask, Ask::Commit(_)) {
        return commit(app, p, frame, area);
    }
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<12}"), bold), Span::raw(v)]);
    let mut lines = vec![kv("image", p.ask.image().shown().to_string())];
    let mut keys = vec![format!("{} cancel", app.keymap.keys_of(Action::Close))];
    if p.pending {
        lines.push(Line::from(""));
        lines.push(Line::from(
            "Checking the chain, its locks and its overlays on a fresh scan…",
        ));
    } else if let Some(e) = &p.refusal {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Refused:", app.theme.problem)));
        let offered = refusal_keys(app, p, e);
        let text = if offered.is_empty() {
            app.refusal_text(e)
        } else {
            e.fact()
        };
        lines.extend(text.lines().map(|l| Line::from(l.to_string())));
        keys.splice(0..0, offered);
    } else if let Some(plan) = &p.plan {
        described(app, &plan.describe(), &mut lines, &kv);
        if p.space.is_some() || p.undo.is_some() || !p.searched.is_empty() {
            lines.push(Line::from(""));
        }
        if let Some(sp) = &p.space {
            lines.push(kv("space", sp.describe()));
        }
        if let Some(u) = &p.undo {
            lines.push(kv("undo", u.describe()));
        }
        searched_line(&p.searched, &mut lines, &kv);
        keys.splice(0..0, plan_keys(app, p, plan));
        if let (Some(typed), Some(name)) = (&p.typed, p.typed_name(&app.browse.forest)) {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!("This holds data: type {name} to move it into the trash."),
                app.theme.problem,
            )));
            lines.push(kv("name", format!("{typed}▏")));
            keys = vec![format!(
                "type {name}: Enter moves it into the trash, {} goes back",
                app.keymap.keys_of(Action::Close)
            )];
        } else if p.confirmed_once {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!(
                    "Confirmed once. {} {} for good ({} does not).",
                    app.keymap.first_key_of(p.op_action()),
                    if matches!(p.ask, Ask::Delete(_)) {
                        "deletes"
                    } else {
                        "merges and deletes"
                    },
                    app.keymap.keys_of(Action::Confirm)
                ),
                app.theme.problem,
            )));
        }
    }
    if let Some(name) = &p.editing {
        lines.push(Line::from(""));
        lines.push(kv("name", format!("{name}▏")));
        keys = vec!["type the new overlay's file name: Enter keeps it, Esc not".into()];
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(keys.join("   "), app.theme.dim)));
    let title = format!(" {} ", p.name());
    dialog(app, title, lines, p.refusal.is_some(), frame, area);
}

/// "1 other disk changes", "2 other disks change".
fn other_disks_change(n: usize) -> String {
    let verb = if n == 1 { "changes" } else { "change" };
    format!("{} {verb}", crate::units::count(n as u64, "other disk"))
}

/// The keys that ask again past a refusal: a delete with its overlays, or of a VM's disk; a
/// merge over the other overlays of its base.
fn refusal_keys(app: &App, p: &OpPopup, e: &Refusal) -> Vec<String> {
    let first = |a| app.keymap.first_key_of(a);
    if matches!(e, Refusal::NeedsAmend { .. }) {
        return vec![format!(
            "{} upgrade it to compat=1.1 first (qemu-img amend)",
            first(Action::Amend)
        )];
    }
    if matches!(p.ask, Ask::Rebase(_)) {
        return vec![format!("{} pick another image", first(Action::Pick))];
    }
    if matches!(p.ask, Ask::Snapshot(_) | Ask::LiveSnapshot(_)) {
        return vec![format!("{} another name", first(Action::Rename))];
    }
    if let (Ask::Merge(merge::Ask { force: false, .. }), Refusal::SharedBase { others, .. }) =
        (&p.ask, e)
    {
        return vec![format!(
            "{} merge anyway: {}",
            first(Action::Shared),
            other_disks_change(others.len())
        )];
    }
    let Ask::Delete(delete::Ask {
        with_overlays,
        force,
        ..
    }) = p.ask
    else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    if !force && matches!(e, Refusal::VmDisk { .. }) {
        keys.push(format!(
            "{} delete it anyway (the VM loses its disk)",
            first(Action::Anyway)
        ));
    }
    if !with_overlays && matches!(e, Refusal::HasOverlays { .. }) {
        keys.push(format!("{} delete them too", first(Action::WithOverlays)));
    }
    keys
}

/// The keys of a planned operation: start (or confirm once), a deeper image for a rebase,
/// another candidate for a repair.
fn plan_keys(app: &App, p: &OpPopup, plan: &AnyPlan) -> Vec<String> {
    let first = |a| app.keymap.first_key_of(a);
    let mut keys = vec![match (p.asks_twice(), p.confirmed_once) {
        (true, false) => format!(
            "{} confirm (then {} for good)",
            app.keymap.keys_of(Action::Confirm),
            first(p.op_action())
        ),
        (true, true) => format!(
            "{} {} for good",
            first(p.op_action()),
            if matches!(p.ask, Ask::Delete(_)) {
                "deletes"
            } else {
                "merges"
            }
        ),
        (false, _) => format!("{} start", app.keymap.keys_of(Action::Confirm)),
    }];
    if matches!(plan, AnyPlan::Repair(r) if r.candidates.len() > 1) {
        keys.push(format!(
            "{}/{} ↑/↓ 1-9 choose",
            first(Action::Next),
            first(Action::Prev)
        ));
    }
    if matches!(p.ask, Ask::Rebase(_)) {
        if p.chain.len() > 1 {
            keys.push(format!("{} deeper image", first(Action::Deeper)));
        }
        keys.push(format!("{} any image", first(Action::Pick)));
    }
    if matches!(p.ask, Ask::Snapshot(_) | Ask::LiveSnapshot(_)) {
        keys.push(format!("{} rename", first(Action::Rename)));
    }
    match plan.amends_v2() {
        Some(false) => keys.push(format!("{} upgrade v2 first", first(Action::Amend))),
        Some(true) => keys.push(format!("{} keep it v2", first(Action::Amend))),
        None => {}
    }
    keys
}

/// Where images built on the plan's chain were looked for, and what was found (nothing when
/// the plan was not discovered here).
fn searched_line(
    searched: &[Searched],
    lines: &mut Vec<Line<'static>>,
    kv: &dyn Fn(&str, String) -> Line<'static>,
) {
    if !searched.is_empty() {
        lines.push(kv("looked in", crate::words::searched_places(searched)));
    }
}

/// A plan's description as dialog lines.
fn described(
    app: &App,
    d: &Description,
    lines: &mut Vec<Line<'static>>,
    kv: &dyn Fn(&str, String) -> Line<'static>,
) {
    lines.extend(d.lines.iter().map(|said| match said {
        Said::Field(k, v) => kv(k, v.clone()),
        Said::Text(t) => Line::from(t.clone()),
        Said::Item(i) => Line::from(format!("  {i}")),
        Said::Warning(w) => Line::from(Span::styled(w.clone(), app.theme.problem)),
        Said::Gap => Line::from(""),
    }));
}
