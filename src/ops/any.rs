//! Every chain operation but commit behind one request type, planned by one function: the UI
//! plans through [`plan`] and the CLI through the very same discovery and guards
//! (ARCHITECTURE.md §3), and a finished run is told the same way by [`Finished`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::dependents::Searched;
use super::job::{self, Job, JobId};
use super::scope::{self, Scope};
use super::settings::Settings;
use super::{Description, Event, OpKind, Operation, Progress, Refusal, Report};
use super::{commit, delete, live, merge, rebase, repair, snapshot, space};
use crate::forest::{Forest, NodeId};
use crate::text::Names;

/// What the user asks of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Commit it into its backing file, or into `base` further down its chain.
    Commit {
        image: PathBuf,
        base: Option<PathBuf>,
        keep_top: bool,
    },
    /// A new overlay beside it, named by default.
    Snapshot {
        image: PathBuf,
        cluster_size: usize,
    },
    Delete {
        image: PathBuf,
        with_overlays: bool,
        /// Also a disk a defined libvirt VM names.
        force: bool,
    },
    Flatten {
        image: PathBuf,
    },
    /// Rebase onto another image (safe), keeping the guest view.
    Rebase {
        image: PathBuf,
        backing: PathBuf,
    },
    Merge {
        image: PathBuf,
        force: bool,
    },
    /// Point an image whose backing file is missing at candidate `pick` of
    /// [`repair::find`]'s list.
    Repair {
        image: PathBuf,
        pick: usize,
    },
    /// Have the running QEMU that writes the image commit it (`commit --live`).
    LiveCommit {
        image: PathBuf,
    },
    /// Have the running QEMU whose chain runs through the image merge it (`merge --live`).
    LiveMerge {
        image: PathBuf,
    },
    /// Put an overlay on the image a running QEMU writes and move it there
    /// (`snapshot --live`).
    LiveSnapshot {
        image: PathBuf,
        cluster_size: usize,
    },
}

impl Ask {
    /// The request's name in dialog titles.
    pub fn title(&self) -> &'static str {
        match self {
            Ask::Commit { .. } => "Commit",
            Ask::Snapshot { .. } => "Snapshot",
            Ask::Delete { .. } => "Delete",
            Ask::Flatten { .. } => "Flatten",
            Ask::Rebase { .. } => "Rebase",
            Ask::Merge { .. } => "Merge",
            Ask::Repair { .. } => "Repair",
            Ask::LiveCommit { .. } => "Live commit",
            Ask::LiveMerge { .. } => "Live merge",
            Ask::LiveSnapshot { .. } => "Live snapshot",
        }
    }

    /// The image the request is about.
    pub fn image(&self) -> &PathBuf {
        match self {
            Ask::Commit { image, .. }
            | Ask::Snapshot { image, .. }
            | Ask::Delete { image, .. }
            | Ask::Flatten { image }
            | Ask::Rebase { image, .. }
            | Ask::Merge { image, .. }
            | Ask::Repair { image, .. }
            | Ask::LiveCommit { image }
            | Ask::LiveMerge { image }
            | Ask::LiveSnapshot { image, .. } => image,
        }
    }
}

/// A plan of any of them.
#[derive(Clone, Debug)]
pub enum AnyPlan {
    Commit(Box<CommitPlan>),
    Snapshot(snapshot::Plan),
    Delete(delete::Plan),
    Rebase(rebase::Plan),
    Merge(Box<merge::Plan>),
    /// An unsafe rebase onto the picked candidate, with every candidate to show.
    Repair(Box<RepairPlan>),
    /// Done by the running QEMU that holds the image.
    Live(live::LivePlan),
}

/// A commit, with what its dialog shows beside the plan.
#[derive(Clone, Debug)]
pub struct CommitPlan {
    /// Forced over `shared_with` when the base has other overlays: confirming must accept
    /// them with a key of its own.
    pub plan: commit::Plan,
    /// Other overlays of the base whose disks the commit would change.
    pub shared_with: Vec<PathBuf>,
    /// Bytes it copies, or why they could not be measured.
    pub bytes: Result<u64, String>,
    /// What it writes and frees, and the room there (when measured).
    pub space: Option<space::Space>,
}

/// A repair: the rebase it runs, and the candidates it was picked from.
#[derive(Clone, Debug)]
pub struct RepairPlan {
    pub rebase: rebase::Plan,
    pub missing: PathBuf,
    /// Each candidate's path and why it is offered (and what speaks against it), best first.
    pub candidates: Vec<(PathBuf, String)>,
    pub pick: usize,
}

impl RepairPlan {
    /// The missing file, the candidates with the pick marked, and what changes.
    pub fn describe(&self) -> Description {
        let image = crate::forest::model::file_name(&self.rebase.image.path);
        let pick = self
            .candidates
            .get(self.pick)
            .map(|(c, _)| c.shown().to_string());
        let mut d = Description::new(format!(
            "Would point {} at {} in place of the missing {}.",
            self.rebase.image.path.shown(),
            pick.unwrap_or_default(),
            self.missing.shown()
        ));
        d.field("missing", self.missing.shown().to_string());
        d.text("Files that could be it:");
        for (i, (c, why)) in self.candidates.iter().enumerate() {
            let mark = if i == self.pick { "→" } else { " " };
            d.then(format!("{mark} {}) {} ({why})", i + 1, c.shown()));
        }
        d.text(format!(
            "Only the header's backing name changes (as qemu-img rebase -u): pick the file \
             that holds what {image} was built on."
        ));
        d
    }
}

/// The registry: every kind of plan, the operation that runs it, and where its plan is.
/// `with_op!(plan, |p: O| body)` evaluates `body` with `O` the operation and `p` its plan.
macro_rules! with_op {
    ($plan:expr, |$p:ident: $O:ident| $body:expr) => {
        match $plan {
            AnyPlan::Commit(c) => {
                type $O = commit::Commit;
                let $p = &c.plan;
                $body
            }
            AnyPlan::Snapshot($p) => {
                type $O = snapshot::Snapshot;
                $body
            }
            AnyPlan::Delete($p) => {
                type $O = delete::Delete;
                $body
            }
            AnyPlan::Rebase($p) => {
                type $O = rebase::Rebase;
                $body
            }
            AnyPlan::Merge(m) => {
                type $O = merge::Merge;
                let $p = &**m;
                $body
            }
            AnyPlan::Repair(r) => {
                type $O = rebase::Rebase;
                let $p = &r.rebase;
                $body
            }
            AnyPlan::Live($p) => match $p.kind {
                live::LiveKind::Commit => {
                    type $O = live::LiveCommit;
                    $body
                }
                live::LiveKind::Merge { .. } => {
                    type $O = live::LiveMerge;
                    $body
                }
                live::LiveKind::Snapshot(_) => {
                    type $O = live::LiveSnapshot;
                    $body
                }
            },
        }
    };
}

impl AnyPlan {
    /// The images the run writes, the one whose data changes first (for a live operation,
    /// those the QEMU that holds them writes).
    pub fn writes(&self) -> Vec<PathBuf> {
        with_op!(self, |p: O| O::writes(p))
    }
}

impl AnyPlan {
    /// What the run will do, as the dialog and a dry run both show it.
    pub fn describe(&self) -> Description {
        match self {
            AnyPlan::Commit(c) => commit::describe_with(&c.plan, Some(&c.bytes)),
            AnyPlan::Repair(p) => p.describe(),
            _ => with_op!(self, |p: O| O::describe(p)),
        }
    }

    /// The operation, as its progress names it.
    pub fn kind(&self) -> OpKind {
        match self {
            AnyPlan::Rebase(r) => r.kind,
            _ => with_op!(self, |_p: O| O::KIND),
        }
    }

    /// A job for this plan, with a fresh cancel flag.
    pub fn job(&self, id: JobId) -> Job {
        Job {
            id,
            op: self.kind(),
            writes: self.writes(),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Runs `plan` as `job` on a worker, with [`job::spawn`]'s guard that turns a panic into a
/// report; `on` receives its progress and, last, how it ended.
pub fn spawn(
    job: &Job,
    plan: AnyPlan,
    settings: Arc<Settings>,
    mut on: impl FnMut(Finished) + Send + 'static,
) {
    let send = move |e| on(e);
    with_op!(&plan, |p: O| run_as::<O>(job, p.clone(), settings, send))
}

fn run_as<O: Operation>(
    job: &Job,
    plan: O::Plan,
    settings: Arc<Settings>,
    mut on: impl FnMut(Finished) + Send + 'static,
) {
    job::spawn::<O>(job, plan, settings, move |e| on(Finished::of(e)));
}

/// Discovers the images around the request's image ([`scope::discover`]) and plans it; with
/// the plan, where images built on its chain were looked for.
pub fn plan(ask: &Ask, scope: &Scope) -> Result<(AnyPlan, Vec<Searched>), Refusal> {
    let mut scope = scope.clone();
    if let Ask::Rebase { backing, .. } = ask {
        scope.dirs.extend(backing.parent().map(PathBuf::from));
    }
    let found = scope::discover(ask.image(), &scope)?;
    let plan = plan_in(ask, &found, scope.settings.copy.clone)?;
    Ok((plan, found.searched))
}

/// Plans `ask` on the images discovered around it.
fn plan_in(ask: &Ask, found: &scope::Discovered, clone: bool) -> Result<AnyPlan, Refusal> {
    let forest = &found.scan.forest;
    let image = found.image;
    let live = live::Request {
        image,
        force: false,
        speed: 0,
    };
    let overlay = |cluster_size: usize| snapshot::Request {
        image,
        new: None,
        cluster_size,
    };
    Ok(match ask {
        Ask::Commit { base, keep_top, .. } => {
            let p = commit::propose_in(forest, image, (base.clone(), *keep_top), clone);
            AnyPlan::Commit(Box::new(CommitPlan {
                plan: p.plan?,
                shared_with: p.shared_with,
                bytes: p.bytes.unwrap_or_else(|| Err("not measured".into())),
                space: p.space,
            }))
        }
        Ask::Snapshot { cluster_size, .. } => {
            AnyPlan::Snapshot(snapshot::plan(forest, &overlay(*cluster_size))?)
        }
        Ask::Delete {
            with_overlays,
            force,
            ..
        } => AnyPlan::Delete(delete::plan(
            forest,
            &delete::Request {
                image,
                with_overlays: *with_overlays,
                force: *force,
            },
        )?),
        Ask::Flatten { .. } => AnyPlan::Rebase(plan_rebase(forest, image, None)?),
        Ask::Rebase { backing, .. } => AnyPlan::Rebase(plan_rebase(forest, image, Some(backing))?),
        Ask::Repair { pick, .. } => AnyPlan::Repair(Box::new(plan_repair(forest, image, *pick)?)),
        Ask::LiveCommit { .. } => AnyPlan::Live(live::LiveCommit::plan(forest, &live)?),
        Ask::LiveMerge { .. } => AnyPlan::Live(live::LiveMerge::plan(forest, &live)?),
        Ask::LiveSnapshot { cluster_size, .. } => {
            AnyPlan::Live(live::LiveSnapshot::plan(forest, &overlay(*cluster_size))?)
        }
        Ask::Merge { image: path, force } => {
            let journal = merge::read_journal(path).map_err(|e| Refusal::Changed {
                path: merge::journal_path(path),
                what: format!("the merge journal cannot be read: {e}"),
            })?;
            let req = merge::Request {
                image,
                force: *force,
                vm_disk: false,
                keep: false,
            };
            AnyPlan::Merge(Box::new(merge::plan(forest, &req, journal.as_ref())?))
        }
    })
}

/// A safe rebase of `image` onto `backing`, or a flatten (`None`).
fn plan_rebase(
    forest: &Forest,
    image: NodeId,
    backing: Option<&PathBuf>,
) -> Result<rebase::Plan, Refusal> {
    let backing = match backing {
        Some(b) => Some(forest.find(b).ok_or_else(|| Refusal::BadTarget {
            path: b.clone(),
            what: "is not an image imgchain found".into(),
        })?),
        None => None,
    };
    rebase::plan(
        forest,
        &rebase::Request {
            image,
            backing,
            format: None,
            unsafe_names: false,
            name: None,
        },
    )
}

/// The repair of `image`'s missing backing file with candidate `pick` of [`repair::find`]'s.
fn plan_repair(forest: &Forest, image: NodeId, pick: usize) -> Result<RepairPlan, Refusal> {
    let path = &forest.node(image).path;
    let fix = repair::find(forest)
        .into_iter()
        .find(|f| f.image == image)
        .ok_or_else(|| Refusal::BadTarget {
            path: path.clone(),
            what: "has no missing backing file to repair".into(),
        })?;
    let Some(candidate) = fix.candidates.get(pick).or(fix.candidates.first()) else {
        return Err(Refusal::BadTarget {
            path: fix.missing.clone(),
            what: format!(
                "is missing, and no image under the scanned paths could be it; open imgchain on \
                 the directory that holds it, or point {} at it with imgchain rebase -u",
                path.shown()
            ),
        });
    };
    let rebase = rebase::plan(
        forest,
        &rebase::Request {
            image,
            backing: Some(candidate.id),
            format: None,
            unsafe_names: true,
            name: None,
        },
    )?;
    Ok(RepairPlan {
        rebase,
        candidates: fix
            .candidates
            .iter()
            .map(|c| (forest.node(c.id).path.clone(), c.describe()))
            .collect(),
        pick: pick.min(fix.candidates.len() - 1),
        missing: fix.missing,
    })
}

/// What a plan writes and frees, and the room there, through the operation's own guard
/// ([`Operation::room`]; a commit's was checked when it was proposed); `force` lets a merge
/// that cannot fit through.
pub fn space(plan: &AnyPlan, force: bool, clone: bool) -> Result<Option<space::Space>, Refusal> {
    match plan {
        AnyPlan::Commit(c) => Ok(c.space.clone()),
        _ => with_op!(plan, |p: O| O::room(p, force, clone)),
    }
}

/// What a worker reports of any operation: progress, then how it ended.
#[derive(Debug)]
pub enum Finished {
    Progress(Progress),
    Done(Box<Ended>),
}

/// How a run ended, told without the operation's own outcome type.
#[derive(Debug)]
pub struct Ended {
    pub exit_code: u8,
    pub summary: String,
    /// Why it did not start: nothing was written.
    pub refused: Option<Refusal>,
    /// [`Report::headline`].
    pub headline: Option<String>,
    /// [`Report::title`].
    pub title: Option<String>,
    /// [`Report::left_writable`].
    pub left_writable: Vec<PathBuf>,
}

impl Finished {
    /// How a run that could not start is told.
    pub fn refused(e: Refusal) -> Finished {
        Finished::Done(Box::new(Ended {
            exit_code: e.exit_code(),
            summary: e.to_string(),
            refused: Some(e),
            headline: None,
            title: None,
            left_writable: Vec::new(),
        }))
    }

    /// The same event, told without the operation's own outcome type.
    pub fn of<O: Operation>(e: Event<O>) -> Finished {
        match e {
            Event::Progress(p) => Finished::Progress(p),
            Event::Done(r) => match *r {
                Ok(o) => Finished::Done(Box::new(Ended {
                    exit_code: o.exit_code(),
                    summary: o.summary(),
                    refused: None,
                    headline: o.headline(),
                    title: o.title(),
                    left_writable: o.left_writable(),
                })),
                Err(e) => Finished::refused(e),
            },
        }
    }
}
