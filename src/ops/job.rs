//! A running operation: its id, what it writes, its cancel flag, and the worker thread that
//! always ends with a report (ARCHITECTURE.md §3).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::progress::{Progress, Run};
use super::settings::Settings;
use super::{OpKind, Operation, Refusal};

/// A job's number, unique in one process.
pub type JobId = u64;

/// A started operation as its watchers see it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: JobId,
    pub op: OpKind,
    /// The images it writes, the first being the one whose data it changes.
    pub writes: Vec<PathBuf>,
    pub cancel: Arc<AtomicBool>,
}

impl Job {
    /// A job for `plan` with a fresh cancel flag.
    pub fn new<O: Operation>(id: JobId, plan: &O::Plan) -> Job {
        Job {
            id,
            op: O::kind(plan),
            writes: O::writes(plan),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the operation to stop at its next chance.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// What a worker sends.
#[derive(Debug)]
pub enum Event<O: Operation> {
    Progress(Progress),
    Done(Box<Result<O::Outcome, Refusal>>),
}

/// Runs `plan` on a new thread; `on_event` receives progress and, last, the result. A panic
/// in the operation still ends in a report ([`Refusal::Internal`]): whoever waits for the end
/// is never left waiting.
pub fn spawn<O: Operation>(
    job: &Job,
    plan: O::Plan,
    settings: Arc<Settings>,
    mut on_event: impl FnMut(Event<O>) + Send + 'static,
) -> JoinHandle<()> {
    let cancel = Arc::clone(&job.cancel);
    let written = job.writes.first().cloned().unwrap_or_default();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut progress = |p| on_event(Event::Progress(p));
            super::undo::run::<O>(
                &plan,
                Run {
                    settings: &settings,
                    cancel: &cancel,
                    progress: &mut progress,
                },
            )
        }))
        .unwrap_or_else(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(Refusal::Internal {
                path: written,
                what,
            })
        });
        on_event(Event::Done(Box::new(result)));
    })
}
