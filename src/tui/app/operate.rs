//! The operation dialogs and the running job. A request ([`Ask`]) is planned by a worker on a
//! fresh scan ([`Effect::PlanOp`]), shown in its dialog, changed or confirmed with the dialog
//! layer's keys, and run ([`Effect::RunOp`]); its progress and its end come back as
//! [`Msg::Op`](super::Msg::Op). Every operation, commit included, goes this one way.

use std::path::PathBuf;
use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::dialog::{OpPopup, Popup};
use super::jobs::Job;
use super::picker::{Picked, Picker};
use super::{App, Effect};
use crate::actions::Action;
use crate::forest::model::file_name;
use crate::ops::finished::{Ended, Finished};
use crate::ops::{AnyPlan, Ask};
use crate::ops::{Refusal, Selected, repair};

impl App {
    /// Opens the dialog of `action` for the selected image.
    pub(super) fn ask(&mut self, action: Action) -> Vec<Effect> {
        if self.jobs.running.is_some() {
            self.status = "an operation is running; wait for it or cancel it first".into();
            return Vec::new();
        }
        let Some(id) = self.browse.selected_node() else {
            return Vec::new();
        };
        let forest = &self.browse.forest;
        let sel = Selected {
            image: forest.node(id).path.clone(),
            written: forest.node(id).holders.iter().any(|h| h.foreign.writer()),
            below: forest
                .chain(id)
                .map(|c| forest.node(c).path.clone())
                .collect(),
            keep_top: self.keep_top_default,
            cluster_size: self.snapshot_cluster,
        };
        let ask = match Ask::for_action(action.def().name, &sel) {
            Some(Ok(ask)) => ask,
            // Nothing deeper in its chain: a rebase picks its new backing file anywhere.
            Some(Err(_)) if action == Action::Rebase && !sel.below.is_empty() => {
                return self.pick_backing(sel);
            }
            Some(Err(why)) => {
                self.status = why;
                return Vec::new();
            }
            None => return Vec::new(),
        };
        // A commit's base is chosen down the whole chain; a rebase goes onto an image further
        // down, the backing file's backing first.
        let skip = usize::from(!matches!(ask, Ask::Commit(_)));
        let chain = sel.below.into_iter().skip(skip).collect();
        self.op_popup(ask, chain)
    }

    /// A rebase's dialog that opens on the image picker, for an image with nothing deeper in
    /// its chain than its backing file.
    fn pick_backing(&mut self, sel: Selected) -> Vec<Effect> {
        let ask = Ask::Rebase(crate::ops::rebase::Ask {
            image: sel.image,
            backing: sel.below[0].clone(),
            amend: false,
        });
        let mut p = OpPopup::pending(self.jobs.next_id(), ask, Vec::new());
        p.pending = false;
        p.picker = Some(Picker::default());
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    /// The dialog of `ask`, planned by a worker on a fresh scan.
    pub(super) fn op_popup(&mut self, ask: Ask, chain: Vec<PathBuf>) -> Vec<Effect> {
        let job = self.jobs.next_id();
        self.popup = Some(Popup::Op(Box::new(OpPopup::pending(
            job,
            ask.clone(),
            chain,
        ))));
        vec![Effect::PlanOp {
            job,
            ask,
            dirs: self.browse.roots.clone(),
            protect: Box::new(self.browse.protect.clone()),
        }]
    }

    /// A key in an operation's dialog.
    pub(super) fn on_op_key(&mut self, mut p: OpPopup, key: KeyEvent) -> Vec<Effect> {
        let name = p.name().to_lowercase();
        if p.picker.is_some() {
            return self.on_picker_key(p, &key);
        }
        if p.editing.is_some() {
            return self.on_name_key(p, &key);
        }
        if p.typed.is_some() {
            return self.on_typed_key(p, &key);
        }
        match self.keymap.dialog(&key) {
            Some(Action::Rename) if !p.pending && p.snapshot_ask().is_some() => {
                let asked = p.snapshot_ask().and_then(|a| a.name.clone());
                p.editing = Some(p.snapshot_name().or(asked).unwrap_or_default());
            }
            Some(Action::Pick) if matches!(p.ask, Ask::Rebase(_)) && !p.pending => {
                p.picker = Some(Picker::default());
            }
            Some(Action::Close) => {
                self.status = format!("{name} not started");
                return Vec::new();
            }
            Some(Action::Confirm | Action::Shared) if p.pending => {
                self.status = "still checking the chain, its locks and its overlays".into();
            }
            // Past a refusal only a key of its own goes on (a merge over the other overlays
            // of its base, `changed_ask`); anything else closes the dialog.
            Some(a @ (Action::Confirm | Action::Shared)) if p.refusal.is_some() => {
                if let Some((ask, chain)) = changed_ask(&mut p, a) {
                    return self.op_popup(ask, chain);
                }
                self.status = format!("{name} refused");
                return Vec::new();
            }
            // Enter never commits into a base other images are built on.
            Some(Action::Confirm) if !p.shared_with().is_empty() => {
                self.status = format!(
                    "other images are built on this base: {} commits anyway, {} cancels",
                    self.keymap.keys_of(Action::Shared),
                    self.keymap.keys_of(Action::Close)
                );
            }
            Some(Action::Confirm) if p.asks_twice() && !p.confirmed_once => {
                p.confirmed_once = true;
                if p.typed_name(&self.browse.forest).is_some() {
                    p.typed = Some(String::new());
                }
            }
            // The second yes is the operation's own key, never Enter again: Enter Enter
            // must not remove files.
            Some(Action::Confirm) if p.asks_twice() => {
                self.status = format!(
                    "{} {name}s for good, {} cancels (Enter does not confirm twice)",
                    self.keymap.first_key_of(p.op_action()),
                    self.keymap.keys_of(Action::Close)
                );
            }
            _ if p.confirmed_once && self.keymap.browse(&key) == Some(p.op_action()) => {
                return self.start_op(p);
            }
            Some(Action::Confirm) => return self.start_op(p),
            Some(Action::Shared) if !p.shared_with().is_empty() => return self.start_op(p),
            Some(a) if !p.pending => {
                if let Some((ask, chain)) = changed_ask(&mut p, a) {
                    return self.op_popup(ask, chain);
                }
            }
            _ => {
                if let Some((ask, chain)) = picked(&p, &key) {
                    return self.op_popup(ask, chain);
                }
            }
        }
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    /// A key in the image picker over a rebase's dialog: a picked image is planned as the
    /// new backing file; going back to a dialog with no plan yet closes it.
    fn on_picker_key(&mut self, mut p: OpPopup, key: &KeyEvent) -> Vec<Effect> {
        let Some(mut picker) = p.picker.take() else {
            return Vec::new();
        };
        let found = picker.candidates(&self.browse, p.ask.image());
        match picker.key(key, &found) {
            Picked::Open => p.picker = Some(picker),
            Picked::Back if p.plan.is_none() && p.refusal.is_none() => {
                self.status = "rebase not started".into();
                return Vec::new();
            }
            Picked::Back => {}
            Picked::Image(id) => {
                let mut ask = p.ask.clone();
                if let Ask::Rebase(r) = &mut ask {
                    r.backing = self.browse.forest.node(id).path.clone();
                }
                return self.op_popup(ask, p.chain);
            }
        }
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    /// A key while a snapshot's name is edited: Enter plans the snapshot under the name
    /// typed (a file name beside the image), Esc keeps the name it had.
    fn on_name_key(&mut self, mut p: OpPopup, key: &KeyEvent) -> Vec<Effect> {
        let Some(mut name) = p.editing.take() else {
            return Vec::new();
        };
        match key.code {
            KeyCode::Esc => {}
            KeyCode::Enter => match crate::ops::snapshot::check_name(&name) {
                Ok(()) => {
                    if let Some(a) = p.snapshot_ask() {
                        a.name = Some(name);
                    }
                    return self.op_popup(p.ask, p.chain);
                }
                Err(why) => {
                    self.status = format!("not as the new overlay's name: {why}");
                    p.editing = Some(name);
                }
            },
            KeyCode::Backspace => {
                name.pop();
                p.editing = Some(name);
            }
            KeyCode::Char(c) if !c.is_control() => {
                name.push(c);
                p.editing = Some(name);
            }
            _ => p.editing = Some(name),
        }
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    /// A key while a delete's image name is typed to confirm it: Enter deletes when the
    /// name is the image's, Esc goes back to the plan unconfirmed.
    fn on_typed_key(&mut self, mut p: OpPopup, key: &KeyEvent) -> Vec<Effect> {
        // Without a name to type (the forest changed under the dialog) the second
        // confirmation falls back to the operation's key.
        let (Some(mut typed), Some(name)) = (p.typed.take(), p.typed_name(&self.browse.forest))
        else {
            self.popup = Some(Popup::Op(Box::new(p)));
            return Vec::new();
        };
        match key.code {
            KeyCode::Esc => {
                p.confirmed_once = false;
                self.status = "delete not confirmed".into();
            }
            KeyCode::Enter if typed == name => return self.start_op(p),
            KeyCode::Enter => {
                self.status = format!("type {name} exactly to delete it, Esc goes back");
                p.typed = Some(typed);
            }
            KeyCode::Backspace => {
                typed.pop();
                p.typed = Some(typed);
            }
            KeyCode::Char(c) if !c.is_control() => {
                typed.push(c);
                p.typed = Some(typed);
            }
            _ => p.typed = Some(typed),
        }
        self.popup = Some(Popup::Op(Box::new(p)));
        Vec::new()
    }

    fn start_op(&mut self, mut p: OpPopup) -> Vec<Effect> {
        let Some(plan) = p.plan.take() else {
            return Vec::new();
        };
        let job = plan.job(p.job);
        let top = p.ask.image().to_path_buf();
        let doing = match p.ask {
            Ask::Commit(_) => "committing".to_string(),
            _ => format!("{}:", p.name().to_lowercase()),
        };
        self.status = format!(
            "{doing} {}… ({} cancels)",
            file_name(&top),
            self.keymap.keys_of(Action::Cancel)
        );
        let leftover = match &plan {
            AnyPlan::LiveCommit(l) | AnyPlan::LiveMerge(l) => Some(l.top.clone()),
            _ => None,
        };
        self.jobs.running = Some(Job {
            id: p.job,
            op: job.op,
            top,
            base: job.writes.first().cloned().unwrap_or_default(),
            ask: p.ask,
            chain: p.chain,
            progress: None,
            cancel: Arc::clone(&job.cancel),
            leftover,
            undoable: matches!(p.undo, Some(crate::ops::undo::Undo::Cloned(_))),
        });
        vec![Effect::RunOp {
            job,
            plan: Box::new(plan),
        }]
    }

    /// Progress or the end of the running operation.
    pub(super) fn on_op(&mut self, id: u64, event: Finished) -> Vec<Effect> {
        let Some(job) = self.jobs.running.as_mut().filter(|j| j.id == id) else {
            return Vec::new();
        };
        let ended = match event {
            Finished::Progress(p) => {
                job.progress = Some(p);
                return Vec::new();
            }
            Finished::Done(e) => *e,
        };
        let Some(job) = self.jobs.running.take() else {
            return Vec::new();
        };
        if self.jobs.quit_pending {
            self.jobs.exit_report = Some((ended.summary, ended.exit_code));
            self.quit = true;
            return Vec::new();
        }
        self.jobs
            .reopen_failed
            .extend(ended.left_writable.iter().cloned());
        match ended.refused {
            // The run found an overlay the plan had not seen, and wrote nothing: plan again
            // on a fresh scan, so the dialog shows the overlay and asks as for any shared base.
            Some(Refusal::SharedBase { others, .. }) => {
                let mut fx = self.replan(job, &others);
                fx.extend(self.rescan());
                fx
            }
            // A v2 image the run must not write as it is: the plan again, with the key that
            // has it upgraded first.
            Some(e @ Refusal::NeedsAmend { .. }) => {
                self.status = format!("{} refused; nothing was written", job.op.title());
                let notice = format!(
                    "Nothing was written: {}. {} has it upgraded to compat=1.1 first.",
                    e.fact(),
                    self.keymap.first_key_of(Action::Amend)
                );
                let mut fx = self.op_popup(job.ask, job.chain);
                if let Some(Popup::Op(p)) = &mut self.popup {
                    p.notice = Some(notice);
                }
                fx.extend(self.rescan());
                fx
            }
            Some(e) => {
                let op = job.op.title();
                self.status = format!("{} refused", op.to_lowercase());
                self.popup = Some(Popup::Message {
                    title: if matches!(e, Refusal::Internal { .. }) {
                        format!("{op} stopped by an internal error")
                    } else {
                        format!("{op} refused")
                    },
                    body: self.refusal_text(&e),
                    error: true,
                });
                self.rescan()
            }
            None => {
                self.on_ended(&job, ended);
                self.rescan()
            }
        }
    }

    /// The plan of `job` again, with a notice of the overlays the run found.
    fn replan(&mut self, job: Job, others: &[PathBuf]) -> Vec<Effect> {
        let names: Vec<String> = others.iter().map(|p| file_name(p)).collect();
        self.status = "the chain changed since the plan; nothing was written".into();
        let fx = self.op_popup(job.ask, job.chain);
        if let Some(Popup::Op(p)) = &mut self.popup {
            p.notice = Some(format!(
                "Nothing was written: since the plan, the base gained {} ({}). Here is the \
                 plan again, made on a fresh scan.",
                if others.len() == 1 {
                    "an overlay"
                } else {
                    "overlays"
                },
                names.join(", ")
            ));
        }
        fx
    }

    /// The status line and, unless one line says it all, a dialog for a run that started.
    fn on_ended(&mut self, job: &Job, ended: Ended) {
        let op = job.op.title();
        let ok = ended.exit_code == crate::exit::OK;
        let cancelled = ended.exit_code == crate::exit::CANCELLED;
        let undo = match job.undoable {
            true => format!(" {} undoes it.", self.keymap.first_key_of(Action::Undo)),
            false => String::new(),
        };
        if let (true, Some(line)) = (ok, &ended.headline) {
            self.status = format!("{line}{undo}");
            return;
        }
        self.status = format!(
            "{} {}",
            op.to_lowercase(),
            match (ok, cancelled) {
                (true, _) => "done",
                (_, true) => "cancelled",
                _ => "failed",
            }
        );
        self.leftover = job.leftover.clone().filter(|_| ok);
        let body = match &self.leftover {
            Some(l) => format!(
                "{}\n\n{} deletes {} now (planned and asked first, as any delete).",
                ended.summary,
                self.keymap.keys_of(Action::Delete),
                file_name(l)
            ),
            None => format!("{}{undo}", ended.summary),
        };
        self.popup = Some(Popup::Message {
            title: ended
                .title
                .unwrap_or_else(|| format!("{op}: {}", if ok { "done" } else { "stopped" })),
            body,
            error: !ok && !cancelled,
        });
    }
}

/// The request a dialog key turns `p`'s into, with the chain to keep offering; `None` when
/// the key changes nothing here (or only the plan in place: keeping a commit's top).
fn changed_ask(p: &mut OpPopup, action: Action) -> Option<(Ask, Vec<PathBuf>)> {
    if action == Action::KeepTop {
        keep_or_empty_top(p);
        return None;
    }
    let chain = p.chain.clone();
    let back = action == Action::Prev;
    let cycle = matches!(action, Action::Deeper | Action::Next | Action::Prev) && !chain.is_empty();
    let mut ask = p.ask.clone();
    match (&mut ask, action) {
        // Down the top's chain; past its root, back to the backing file.
        (Ask::Commit(c), _) if cycle => {
            let at = chain.iter().position(|b| Some(b) == c.base.as_ref());
            let next = step(&chain, at.or(Some(0)), back);
            c.base = (next != chain[0]).then_some(next);
        }
        (Ask::Rebase(r), _) if cycle => {
            let at = chain.iter().position(|b| *b == r.backing);
            r.backing = step(&chain, at, back);
        }
        (Ask::Delete(d), Action::WithOverlays) if !d.with_overlays => d.with_overlays = true,
        // A defined VM's disk: deleting it anyway is a deliberate key of its own.
        (Ask::Delete(d), Action::Anyway)
            if !d.force && matches!(p.refusal, Some(Refusal::VmDisk { .. })) =>
        {
            d.force = true
        }
        // Over the other overlays of the base: a key of its own, offered only for that
        // refusal (a merge's VM-disk refusal is not lifted here).
        (Ask::Merge(m), Action::Shared)
            if !m.force && matches!(p.refusal, Some(Refusal::SharedBase { .. })) =>
        {
            m.force = true
        }
        (Ask::Commit(c), Action::Amend) if amendable(p) => c.amend = !c.amend,
        (Ask::Merge(m), Action::Amend) if amendable(p) => m.amend = !m.amend,
        (Ask::Rebase(r), Action::Amend) if amendable(p) => r.amend = !r.amend,
        (Ask::Flatten(f), Action::Amend) if amendable(p) => f.amend = !f.amend,
        (Ask::Repair(r), Action::Deeper | Action::Next | Action::Prev) => {
            let n = candidates(p);
            let to = if back {
                (r.pick + n - 1) % n
            } else {
                (r.pick + 1) % n
            };
            return repick(p, to);
        }
        _ => return None,
    }
    Some((ask, chain))
}

/// Whether the amend key means something in `p`: its refusal asks for it, or the image the
/// plan writes is qcow2 v2.
pub(crate) fn amendable(p: &OpPopup) -> bool {
    matches!(p.refusal, Some(Refusal::NeedsAmend { .. }))
        || p.plan
            .as_ref()
            .is_some_and(|plan| plan.amends_v2().is_some())
}

/// The image after (or, `back`, before) `at` in `chain`, round the end; the first without
/// `at`.
fn step(chain: &[PathBuf], at: Option<usize>, back: bool) -> PathBuf {
    let n = chain.len();
    let i = at.map_or(0, |i| if back { (i + n - 1) % n } else { (i + 1) % n });
    chain[i].clone()
}

/// Keeps a commit's top, or empties it: the plan changes in place.
fn keep_or_empty_top(p: &mut OpPopup) {
    let (refused, deeper) = (p.refusal.is_some(), p.deeper());
    if let (Ask::Commit(a), false, false) = (&mut p.ask, refused, deeper) {
        a.keep_top = !a.keep_top;
        if let Some(AnyPlan::Commit(c)) = &mut p.plan {
            c.keep_top = a.keep_top;
        }
    }
}

/// A repair's candidate picked by its number (1 to 9).
fn picked(p: &OpPopup, key: &KeyEvent) -> Option<(Ask, Vec<PathBuf>)> {
    match key.code {
        KeyCode::Char(d @ '1'..='9') if matches!(p.ask, Ask::Repair(_)) => {
            let n = candidates(p);
            repick(p, (d as usize - '1' as usize).min(n - 1))
        }
        _ => None,
    }
}

/// How many candidates a repair's plan offers (at least one).
fn candidates(p: &OpPopup) -> usize {
    match &p.plan {
        Some(AnyPlan::Repair(r)) => r.candidates.len().max(1),
        _ => 1,
    }
}

/// The repair of `p` with candidate `to`, unless that is the one picked already.
fn repick(p: &OpPopup, to: usize) -> Option<(Ask, Vec<PathBuf>)> {
    match &p.ask {
        Ask::Repair(r) if p.plan.is_some() && r.pick != to => Some((
            Ask::Repair(repair::Ask {
                image: r.image.clone(),
                pick: to,
            }),
            Vec::new(),
        )),
        _ => None,
    }
}
