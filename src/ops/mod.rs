//! The operation layer: every write imgchain makes goes through one shape
//! (ARCHITECTURE.md §3) — a request is planned against a scanned forest by the guards
//! ([`guards`]), the plan runs as a job ([`job`]) that opens every image again, re-checks what
//! may have changed since the plan, writes through a read-write window ([`window`]) and the
//! crash-ordering storage layer, and ends in an outcome that reports each step apart.
//!
//! The UI and the CLI discover the images around a request with [`scope::discover`] and plan
//! it with the operation's [`Operation::plan`]: they cannot reach different decisions.
//!
//! Every operation is registered here: its module, and one line of [`registry!`], from which
//! the UI's [`Ask`] and [`AnyPlan`] and everything done with them follow (ARCHITECTURE.md §3,
//! "Adding an operation").

pub mod amend;
pub mod bitmaps;
pub mod clean;
pub mod clones;
pub mod commit;
pub mod datapath;
pub mod delete;
pub mod dependents;
pub mod describe;
pub mod extents;
pub mod finished;
pub mod flatten;
pub mod guards;
pub mod job;
pub mod kind;
pub mod libvirt_snapshots;
pub mod live;
pub mod merge;
pub mod operation;
pub mod plan_image;
pub mod progress;
pub mod qemu_chain;
pub mod qemu_tools;
pub mod rebase;
pub mod refusal;
pub mod repair;
pub mod restore;
pub mod scope;
pub mod settings;
pub mod snapshot;
pub mod space;
pub mod trust;
pub mod undo;
pub mod window;

pub use describe::{Description, Said};
pub use job::{Event, Job, JobId, spawn};
pub use kind::OpKind;
pub use operation::{Operation, Report, Selected};
pub use plan_image::PlanImage;
pub use progress::{Phase, Progress, Run};
pub use refusal::Refusal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dependents::Searched;
use finished::Finished;
use scope::{Discovered, Scope};
use settings::Settings;

/// The registry: every operation the UI offers, one line each (`Variant => operation`).
/// From it follow [`Ask`] (a request of any of them), [`AnyPlan`] (a plan of any of them) and
/// everything done with them without knowing which: planning, describing, the space guard,
/// the job and its worker.
macro_rules! registry {
    ($($(#[$doc:meta])* $V:ident => $O:ty),* $(,)?) => {
        /// What the user asks of one image.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Ask {
            $($(#[$doc])* $V(<$O as Operation>::Ask)),*
        }

        /// A plan of any of them.
        #[derive(Clone, Debug)]
        pub enum AnyPlan {
            $($V(Box<<$O as Operation>::Plan>)),*
        }

        impl Ask {
            /// The request's name in dialog titles.
            pub fn title(&self) -> &'static str {
                match self {
                    $(Ask::$V(_) => <$O>::TITLE),*
                }
            }

            /// The image the request is about.
            pub fn image(&self) -> &Path {
                match self {
                    $(Ask::$V(a) => <$O>::asked(a)),*
                }
            }

            /// What the UI key `action` asks for `sel`: the first operation registered for
            /// it that applies, or why the last one does not (`None`: no operation's key).
            pub fn for_action(action: &str, sel: &Selected) -> Option<Result<Ask, String>> {
                let mut not = None;
                $(if <$O>::ACTION == Some(action) {
                    match <$O>::ask_for(sel) {
                        Ok(a) => return Some(Ok(Ask::$V(a))),
                        Err(e) => not = Some(Err(e)),
                    }
                })*
                not
            }

            fn widen(&self, scope: &mut Scope) {
                match self {
                    $(Ask::$V(a) => <$O>::widen(a, scope)),*
                }
            }

            fn plan_in(&self, found: &Discovered, settings: &Settings) -> Result<AnyPlan, Refusal> {
                Ok(match self {
                    $(Ask::$V(a) => AnyPlan::$V(Box::new(<$O>::plan_asked(a, found, settings)?))),*
                })
            }
        }

        /// The UI actions that open an operation, in the registry's order (a key two
        /// operations share, more than once).
        pub fn actions() -> impl Iterator<Item = &'static str> {
            [$(<$O>::ACTION),*].into_iter().flatten()
        }

        impl AnyPlan {
            /// The images the run writes, the one whose data changes first (for a live
            /// operation, those the QEMU that holds them writes).
            pub fn writes(&self) -> Vec<PathBuf> {
                match self {
                    $(AnyPlan::$V(p) => <$O>::writes(p)),*
                }
            }

            /// What the run will do, as the dialog and a dry run both show it.
            pub fn describe(&self) -> Description {
                match self {
                    $(AnyPlan::$V(p) => <$O>::describe(p)),*
                }
            }

            /// The images the run changes, in the order an undo puts them back.
            pub fn changes(&self) -> Vec<PlanImage> {
                match self {
                    $(AnyPlan::$V(p) => <$O>::changes(p)),*
                }
            }

            /// The operation, as its progress names it.
            pub fn kind(&self) -> OpKind {
                match self {
                    $(AnyPlan::$V(p) => <$O>::kind(p)),*
                }
            }

            /// What the plan writes and frees, and the room there, through the operation's
            /// own guard ([`Operation::room`]); `force` lets a plan that cannot fit through.
            pub fn room(&self, force: bool, settings: &Settings) -> Result<Option<space::Space>, Refusal> {
                match self {
                    $(AnyPlan::$V(p) => <$O>::room(p, force, settings)),*
                }
            }

            /// Runs the plan as `job` on a worker, with [`job::spawn`]'s guard that turns a
            /// panic into a report; `on` receives its progress and, last, how it ended.
            pub fn spawn(
                self,
                job: &Job,
                settings: Arc<Settings>,
                mut on: impl FnMut(Finished) + Send + 'static,
            ) {
                match self {
                    $(AnyPlan::$V(p) => {
                        job::spawn::<$O>(job, *p, settings, move |e| on(Finished::of(e)));
                    })*
                }
            }
        }
    };
}

registry! {
    Commit => commit::Commit,
    /// Put an overlay on the image a running QEMU writes and move it there (before
    /// `Snapshot`: the same key, for an image a VM writes).
    LiveSnapshot => live::LiveSnapshot,
    /// A new overlay beside it, named by default.
    Snapshot => snapshot::Snapshot,
    Delete => delete::Delete,
    Flatten => flatten::Flatten,
    /// Rebase onto another image (safe), keeping the guest view.
    Rebase => rebase::Rebase,
    /// Remove a middle layer.
    Merge => merge::Merge,
    /// Point an image whose backing file is missing at a candidate.
    Repair => repair::Repair,
    /// Have the running QEMU that writes the image commit it (`commit --live`).
    LiveCommit => live::LiveCommit,
    /// Have the running QEMU whose chain runs through the image merge it (`merge --live`).
    LiveMerge => live::LiveMerge,
    /// Put back the images of the last commit, merge, flatten or rebase (cloning filesystems).
    Undo => undo::UndoOp,
    /// Move a file back from the trash (the CLI's `trash restore`; no UI key).
    Restore => restore::Restore,
}

impl AnyPlan {
    /// Whether the plan copies data into a qcow2 v2 image (`None`: it does not), and if so
    /// whether it upgrades it to compat=1.1 first (`--amend`, the dialogs' amend key).
    pub fn amends_v2(&self) -> Option<bool> {
        let v2 = |img: &PlanImage| img.version == Some(2);
        match self {
            AnyPlan::Commit(c) if v2(&c.base) => Some(c.amend),
            AnyPlan::Merge(m) => m.commit.as_ref().filter(|c| v2(&c.base)).map(|c| c.amend),
            AnyPlan::Flatten(r) | AnyPlan::Rebase(r) if r.safe && v2(&r.image) => Some(r.amend),
            _ => None,
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

/// Whether the UI action `name` opens an operation.
pub fn offers(name: &str) -> bool {
    actions().any(|a| a == name)
}

/// Discovers the images around the request's image ([`scope::discover`]) and plans it; with
/// the plan, where images built on its chain were looked for.
pub fn plan(ask: &Ask, scope: &Scope) -> Result<(AnyPlan, Vec<Searched>), Refusal> {
    let mut scope = scope.clone();
    ask.widen(&mut scope);
    let found = scope::discover(ask.image(), &scope)?;
    let plan = ask.plan_in(&found, &scope.settings)?;
    Ok((plan, found.searched))
}
