//! Dialogs: an operation's plan with its guards, and result or error messages.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::actions::Action;
use crate::ops::Refusal;
use crate::ops::any::{AnyPlan, Ask};
use crate::ops::dependents::Searched;
use crate::ops::live::LiveKind;
use crate::output::human_size;
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
    let top = p.ask.image();
    lines.push(kv("top", top.shown().to_string()));
    lines.push(kv(
        "into",
        commit_base(app, p).map_or("(no backing file)".into(), |b| b.shown().to_string()),
    ));
    let k = |a| app.keymap.keys_of(a);
    let first = |a| app.keymap.first_key_of(a);
    // A dialog with nothing to confirm: its text, then how to close it.
    let closing = |mut lines: Vec<Line<'static>>, body: Vec<Line<'static>>| {
        lines.push(Line::from(""));
        lines.extend(body);
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!("{} closes", k(Action::Close)),
            t.dim,
        )));
        lines
    };
    if p.pending {
        let body = vec![Line::from(
            "Checking the chain, its locks and every overlay of the base on a fresh scan…",
        )];
        dialog(
            app,
            " Commit ".into(),
            closing(lines, body),
            false,
            frame,
            area,
        );
        return;
    }
    // Exit codes are for scripts (the CLI); a dialog says what and why in words.
    if let Some(e) = &p.refusal {
        let mut body = vec![Line::from(Span::styled("Refused:", t.problem))];
        body.extend(e.to_string().lines().map(|l| Line::from(l.to_string())));
        // In use by a QEMU imgchain can ask (its QMP socket, or libvirt): the live commit.
        let askable = e.exit_code() == crate::exit::IN_USE
            && app.browse.forest.find(top).is_some_and(|id| {
                app.browse.forest.node(id).holders.iter().any(|h| {
                    h.owner.qmp.is_some() || h.owner.manager == crate::image::lock::Manager::Libvirt
                })
            });
        if askable {
            body.push(Line::from(""));
            body.push(Line::from(Span::styled(
                format!(
                    "{} (after closing this) has that VM commit it itself, live.",
                    k(Action::Live)
                ),
                bold,
            )));
        }
        dialog(
            app,
            " Commit refused ".into(),
            closing(lines, body),
            true,
            frame,
            area,
        );
        return;
    }
    let (shared_with, keep_top) = (p.shared_with(), p.keeps_top());
    if let Some(AnyPlan::Commit(c)) = &p.plan {
        let plan = &c.plan;
        for m in &plan.intermediates {
            lines.push(kv(
                "through",
                format!("{} (keeps its data; reads differently)", m.path.shown()),
            ));
        }
        lines.push(kv(
            "base mode",
            "RO → RW for the copy → RO again (reopened through its open handle)".into(),
        ));
        lines.push(kv(
            "to copy",
            match &c.bytes {
                Ok(b) => format!("{} ({b} bytes of data and zeroes)", human_size(*b)),
                Err(e) => format!("unknown: {e}"),
            },
        ));
        if let Some(sp) = &p.space {
            lines.push(kv("space", sp.describe()));
        }
        searched_line(&p.searched, &mut lines, &kv);
        if let Some(g) = plan.grow_to {
            lines.push(kv(
                "grow base",
                format!(
                    "from {} to {}",
                    human_size(plan.base.virtual_size),
                    human_size(g)
                ),
            ));
        }
        lines.push(kv(
            "top after",
            if !plan.intermediates.is_empty() {
                "keeps its data (always, with a deeper base)".into()
            } else if keep_top {
                format!(
                    "keeps its data ({}: empty it, as qemu-img commit does)",
                    first(Action::KeepTop)
                )
            } else {
                format!(
                    "emptied, its data now in the base ({}: keep it)",
                    first(Action::KeepTop)
                )
            },
        ));
        if plan.forced_bitmaps {
            lines.push(Line::from(Span::styled(
                "The base's persistent bitmaps will be invalidated.",
                t.problem,
            )));
        }
    }
    if !shared_with.is_empty() {
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
                match shared_with.len() {
                    1 => "1 other disk changes".to_string(),
                    n => format!("{n} other disks change"),
                }
            ),
            t.problem,
        )));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(
            "{}   {} keep/empty top   {} deeper base   {} cancel",
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
    dialog(
        app,
        " Commit ".into(),
        lines,
        !shared_with.is_empty(),
        frame,
        area,
    );
}

/// The base a commit goes into: the plan's, else the one asked for, else the top's backing
/// file as the forest on screen knows it.
fn commit_base(app: &App, p: &OpPopup) -> Option<std::path::PathBuf> {
    if let Some(AnyPlan::Commit(c)) = &p.plan {
        return Some(c.plan.base.path.clone());
    }
    if let Ask::Commit { base: Some(b), .. } = &p.ask {
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
        Some(j) if j.op == crate::ops::OpKind::Commit => (
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
    if matches!(p.ask, Ask::Commit { .. }) {
        return commit(app, p, frame, area);
    }
    let t = &app.theme;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<12}"), bold), Span::raw(v)]);
    let k = |a| app.keymap.keys_of(a);
    let first = |a| app.keymap.first_key_of(a);
    let title = format!(" {} ", p.name());
    let mut lines = vec![kv("image", p.ask.image().shown().to_string())];
    let mut keys = vec![format!("{} cancel", k(Action::Close))];
    if p.pending {
        lines.push(Line::from(""));
        lines.push(Line::from(
            "Checking the chain, its locks and its overlays on a fresh scan…",
        ));
    } else if let Some(e) = &p.refusal {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Refused:", t.problem)));
        lines.extend(e.to_string().lines().map(|l| Line::from(l.to_string())));
        let (overlays, forced) = match p.ask {
            Ask::Delete {
                with_overlays,
                force,
                ..
            } => (Some(with_overlays), Some(force)),
            _ => (None, None),
        };
        if overlays == Some(false) && matches!(e, Refusal::HasOverlays { .. }) {
            keys.insert(
                0,
                format!("{} delete them too", first(Action::WithOverlays)),
            );
        }
        if forced == Some(false) && matches!(e, Refusal::VmDisk { .. }) {
            keys.insert(
                0,
                format!(
                    "{} delete it anyway (the VM loses its disk)",
                    first(Action::Anyway)
                ),
            );
        }
    } else if let Some(plan) = &p.plan {
        describe(plan, &mut lines, &kv);
        if let Some(sp) = &p.space {
            lines.push(Line::from(""));
            lines.push(kv("space", sp.describe()));
        }
        searched_line(&p.searched, &mut lines, &kv);
        keys.insert(
            0,
            format!(
                "{} {}",
                k(Action::Confirm),
                if p.asks_twice() && !p.confirmed_once {
                    "confirm (asks again)"
                } else {
                    "start"
                }
            ),
        );
        if matches!(p.ask, Ask::Rebase { .. }) && p.chain.len() > 1 {
            keys.insert(1, format!("{} deeper image", first(Action::Deeper)));
        }
        if matches!(plan, AnyPlan::Repair(r) if r.candidates.len() > 1) {
            keys.insert(
                1,
                format!(
                    "{}/{} ↑/↓ 1-9 choose",
                    first(Action::Next),
                    first(Action::Prev)
                ),
            );
        }
        if p.confirmed_once {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!(
                    "Confirmed once. {} again {} for good.",
                    k(Action::Confirm),
                    if matches!(p.ask, Ask::Delete { .. }) {
                        "deletes"
                    } else {
                        "merges and deletes"
                    }
                ),
                t.problem,
            )));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(keys.join("   "), t.dim)));
    dialog(app, title, lines, p.refusal.is_some(), frame, area);
}

/// Where images built on the plan's chain were looked for, and what was found (nothing when
/// the plan was not discovered here).
fn searched_line(
    searched: &[Searched],
    lines: &mut Vec<Line<'static>>,
    kv: &dyn Fn(&str, String) -> Line<'static>,
) {
    if !searched.is_empty() {
        let text = crate::output::searched_text(searched);
        let text = text.trim_start_matches("Looked for other images built on this chain in: ");
        lines.push(kv("looked in", text.to_string()));
    }
}

/// What a plan will do, line by line.
fn describe(
    plan: &AnyPlan,
    lines: &mut Vec<Line<'static>>,
    kv: &dyn Fn(&str, String) -> Line<'static>,
) {
    let name = crate::forest::model::file_name;
    match plan {
        // Drawn by its own dialog.
        AnyPlan::Commit(_) => {}
        AnyPlan::Snapshot(s) => {
            lines.push(kv("new", s.new.shown().to_string()));
            lines.push(kv(
                "backing",
                format!(
                    "\"{}\" ({}), {} virtual, {} clusters",
                    s.backing_name,
                    s.image.format,
                    human_size(s.image.virtual_size),
                    human_size(s.cluster_size as u64)
                ),
            ));
            lines.push(Line::from(""));
            lines.push(Line::from(format!(
                "{} is never written and becomes a backing image (RO): point the VM at {}.",
                name(&s.image.path),
                name(&s.new)
            )));
        }
        AnyPlan::Delete(d) => {
            lines.push(Line::from(""));
            lines.push(Line::from("Deletes, in this order:"));
            for i in &d.images {
                lines.push(Line::from(format!("  {}", i.path.shown())));
            }
            if let Some(b) = &d.backing {
                lines.push(kv("then", format!("{} has one overlay fewer", b.shown())));
            }
            for a in &d.aliases {
                lines.push(kv("dangling", format!("{} (a symlink to it)", a.shown())));
            }
        }
        AnyPlan::Rebase(r) => {
            lines.push(kv(
                "now on",
                r.old
                    .first()
                    .map_or("(its backing file)".into(), |o| o.path.shown().to_string()),
            ));
            lines.push(kv(
                "then on",
                match &r.name {
                    Some((n, f)) => format!("\"{n}\" ({f})"),
                    None => "no backing file: independent".into(),
                },
            ));
            lines.push(Line::from(""));
            lines.push(Line::from(format!(
                "What {}'s guest reads does not change: every cluster the two chains read \
                 differently is copied into it first, and only then is its header changed.",
                name(&r.image.path)
            )));
        }
        AnyPlan::Repair(r) => {
            lines.push(kv("missing", r.missing.shown().to_string()));
            lines.push(Line::from(""));
            lines.push(Line::from("Files that could be it:"));
            for (i, (c, m)) in r.candidates.iter().enumerate() {
                lines.push(Line::from(format!(
                    "{} {}) {} ({})",
                    if i == r.pick { "→" } else { " " },
                    i + 1,
                    c.shown(),
                    m
                )));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(format!(
                "Only the header's backing name changes (as qemu-img rebase -u): pick the file \
                 that holds what {} was built on.",
                name(&r.rebase.image.path)
            )));
        }
        AnyPlan::Live(l) => {
            let into = if matches!(l.kind, LiveKind::Snapshot(_)) {
                "new overlay"
            } else {
                "into"
            };
            lines.push(kv(into, l.target.shown().to_string()));
            lines.push(kv("done by", l.holder.clone()));
            lines.push(kv("through", l.via.to_string()));
            lines.push(Line::from(""));
            let (top, target) = (name(&l.top), name(&l.target));
            lines.push(Line::from(match &l.kind {
                LiveKind::Commit => format!(
                    "A live operation: the running QEMU copies {top} into {target} with its own \
                     block-commit job and then runs on {target}. imgchain writes nothing."
                ),
                LiveKind::Merge { overlay, .. } => format!(
                    "A live operation: the running QEMU copies {top} into {target} with its own \
                     block-commit job and points {} at {target}. imgchain writes nothing.",
                    name(overlay)
                ),
                LiveKind::Snapshot(_) => format!(
                    "A live operation: imgchain creates {target} on {top}, and the running QEMU \
                     opens it and writes there from then on. {top} is not written."
                ),
            }));
        }
        AnyPlan::Merge(m) => {
            lines.push(kv("into", m.base.path.shown().to_string()));
            if m.resumed {
                lines.push(kv("finishing", "a merge that was cut short".into()));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(format!(
                "{} is committed into {}; then these are built on {}:",
                name(&m.image.path),
                name(&m.base.path),
                name(&m.base.path)
            )));
            for (o, _) in &m.overlays {
                lines.push(Line::from(format!("  {}", o.path.shown())));
            }
            lines.push(Line::from(format!(
                "and {} is deleted. No overlay's disk changes at any step.",
                name(&m.image.path)
            )));
        }
    }
}
