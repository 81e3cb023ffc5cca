//! An operation is one `Operation` implementation: a no-op defined here, and nothing else,
//! gets the engine's job, panic guard, description, JSON and space guard (ARCHITECTURE.md §3,
//! "Adding an operation").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use imgchain::forest::Forest;
use imgchain::ops::scope::Discovered;
use imgchain::ops::settings::Settings;
use imgchain::ops::space::Space;
use imgchain::ops::{
    Description, Event, Job, OpKind, Operation, Phase, Progress, Refusal, Report, Run, Said,
    Selected,
};

/// Touches nothing: reports one step of progress, or panics when asked to.
#[derive(Debug)]
struct Noop;

#[derive(Clone, Debug)]
struct Plan {
    image: PathBuf,
    panic: bool,
    /// Bytes it claims to need on a filesystem with `free` bytes.
    need: u64,
    free: u64,
}

#[derive(Debug)]
struct Outcome(PathBuf);

impl Report for Outcome {
    fn exit_code(&self) -> u8 {
        imgchain::exit::OK
    }

    fn summary(&self) -> String {
        format!("Did nothing to {}.", self.0.display())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"image": self.0, "exit_code": self.exit_code()})
    }
}

impl Operation for Noop {
    const KIND: OpKind = OpKind::new("noop", "No-op", "be left alone");
    const ACTION: Option<&'static str> = Some("noop");
    type Request = PathBuf;
    type Ask = PathBuf;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(_forest: &Forest, image: &PathBuf) -> Result<Plan, Refusal> {
        Ok(Plan {
            image: image.clone(),
            panic: false,
            need: 0,
            free: 1,
        })
    }

    fn ask_for(sel: &Selected) -> Result<PathBuf, String> {
        Ok(sel.image.clone())
    }

    fn asked(ask: &PathBuf) -> &Path {
        ask
    }

    fn plan_asked(ask: &PathBuf, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        Self::plan(&found.scan.forest, ask)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        vec![plan.image.clone()]
    }

    fn describe(plan: &Plan) -> Description {
        let mut d = Description::new(format!("Would do nothing to {}.", plan.image.display()));
        d.field("image", plan.image.display().to_string());
        d
    }

    fn space(plan: &Plan, _clone: bool) -> Result<Option<Space>, Refusal> {
        Ok(Some(Space {
            target: plan.image.clone(),
            writes: plan.need,
            metadata: 0,
            new_data: plan.need,
            frees: 0,
            trashed: 0,
            clone_on: None,
            available: Some(plan.free),
        }))
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        assert!(!plan.panic, "asked to panic");
        (r.progress)(Progress {
            op: Self::KIND,
            phase: Phase::Open,
            done: 0,
            total: 0,
            elapsed: Duration::ZERO,
            writing: false,
        });
        Ok(Outcome(plan.image.clone()))
    }
}

/// Runs `plan` through the engine's spawn; the events it sent, in order.
fn run(plan: Plan) -> Vec<Event<Noop>> {
    let job = Job::new::<Noop>(1, &plan);
    let (tx, rx) = mpsc::channel();
    let settings = Arc::new(imgchain::ops::settings::Settings::default());
    let handle = imgchain::ops::spawn::<Noop>(&job, plan, settings, move |e| {
        let _ = tx.send(e);
    });
    handle.join().expect("the worker ends");
    rx.iter().collect()
}

fn plan() -> Plan {
    Noop::plan(&Forest::default(), &PathBuf::from("/nowhere/x.qcow2")).expect("plans")
}

#[test]
fn a_new_operation_runs_through_the_engine_with_nothing_registered() {
    let events = run(plan());
    assert!(matches!(events.first(), Some(Event::Progress(_))));
    let Some(Event::Done(done)) = events.last() else {
        panic!("the run ends with its outcome")
    };
    let outcome = done.as_ref().as_ref().expect("it ran");
    assert_eq!(outcome.json()["image"], "/nowhere/x.qcow2");
    let d = Noop::describe(&plan());
    assert_eq!(d.would, "Would do nothing to /nowhere/x.qcow2.");
    assert_eq!(d.lines, [Said::Field("image", "/nowhere/x.qcow2".into())]);
    assert_eq!(
        (Noop::TITLE, Noop::kind(&plan()).as_str()),
        ("No-op", "noop")
    );
}

#[test]
fn its_key_asks_for_the_selected_image() {
    let sel = Selected {
        image: PathBuf::from("/nowhere/x.qcow2"),
        written: false,
        below: Vec::new(),
        keep_top: false,
        cluster_size: 65536,
    };
    let ask = Noop::ask_for(&sel).expect("applies");
    assert_eq!(Noop::asked(&ask), Path::new("/nowhere/x.qcow2"));
}

#[test]
fn its_panic_is_reported_and_its_space_guarded() {
    let events = run(Plan {
        panic: true,
        ..plan()
    });
    let Some(Event::Done(done)) = events.last() else {
        panic!("a panic still ends the run")
    };
    assert!(matches!(**done, Err(Refusal::Internal { .. })), "{done:?}");
    let big = Plan { need: 2, ..plan() };
    assert!(matches!(
        Noop::room(&big, false, &Settings::default()),
        Err(Refusal::NoSpace { .. })
    ));
    assert!(
        Noop::room(&big, true, &Settings::default()).is_ok(),
        "forced through"
    );
}

#[test]
fn every_registered_operation_has_a_key_row_and_a_default() {
    let defaults = imgchain::config::Config::default();
    for name in imgchain::ops::actions() {
        let action = imgchain::actions::Action::named(name)
            .unwrap_or_else(|| panic!("{name}: no row in actions.rs"));
        assert!(
            !defaults.keys.of(action).is_empty(),
            "{name}: no default key in config.toml"
        );
    }
}
