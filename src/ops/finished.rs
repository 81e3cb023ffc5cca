//! How a run of any operation ended, told without the operation's own outcome type: what the
//! UI's worker sends back ([`super::AnyPlan::spawn`]).

use std::path::PathBuf;

use super::{Event, Operation, Progress, Refusal, Report};

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
