//! What the commands share: discovery around the image, a planned run with Ctrl-C and
//! progress, live runs, dry runs, and how a refusal is told.

use std::path::PathBuf;

use anyhow::Context;

use imgchain::exit;
use imgchain::ops::live;
use imgchain::text::Names;

use super::failure::Failure;
use super::output;
use super::session::{Session, print_json};

/// A cancel flag that Ctrl-C and SIGTERM set.
pub(crate) fn ctrl_c() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, Failure> {
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&cancel))
            .context("cannot install the Ctrl-C handler")?;
    }
    Ok(cancel)
}

/// The forest around `image` as every operation plans on it: the image, its directory, the
/// directories of its chain and the `--scan` paths, with the protect rules applied.
pub(crate) fn discover(
    ctx: &Session,
    image: &std::path::Path,
    scan: &[PathBuf],
) -> Result<Result<imgchain::ops::scope::Discovered, imgchain::ops::Refusal>, Failure> {
    use imgchain::ops::scope::{self, Scope};
    let image =
        std::path::absolute(image).with_context(|| format!("cannot resolve {}", image.shown()))?;
    let mut opts = ctx.scan_options();
    opts.max_depth = 0;
    let scope = Scope {
        dirs: scan.to_vec(),
        scan: opts,
        protect: ctx.protect.clone(),
        settings: std::sync::Arc::clone(&ctx.settings),
    };
    Ok(scope::discover(&image, &scope))
}

/// Runs a planned operation with Ctrl-C as its cancel and, with `progress`, a progress line;
/// prints its outcome (text or JSON) or why it could not start, and returns the exit code.
pub(crate) fn run_planned<O: imgchain::ops::Operation>(
    ctx: &Session,
    plan: &O::Plan,
    progress: bool,
    json: bool,
) -> Result<u8, Failure> {
    use imgchain::ops::Report;
    let cancel = ctrl_c()?;
    let written = O::writes(plan);
    let mut bar = output::ProgressLine::new(
        progress,
        written
            .first()
            .map_or(std::path::Path::new(""), |p| p.as_path()),
    );
    let result = imgchain::ops::undo::run::<O>(
        plan,
        imgchain::ops::Run {
            settings: &ctx.settings,
            cancel: &cancel,
            progress: &mut |p| bar.update(&p),
        },
    );
    bar.finish();
    match result {
        Ok(outcome) => {
            if json {
                print_json(&outcome.json())?;
            } else {
                println!("{}", outcome.summary());
            }
            Ok(outcome.exit_code())
        }
        Err(e) => Ok(refused(&e, json)),
    }
}

/// Says on stderr which images of the chain lie outside everything imgchain was pointed at,
/// reached only through backing names in headers, before a run writes.
pub(crate) fn note_outside(found: &imgchain::ops::scope::Discovered) {
    let outside: Vec<&str> = found
        .searched
        .iter()
        .filter(|s| s.kind == imgchain::ops::dependents::OUTSIDE)
        .map(|s| s.place.as_str())
        .collect();
    if !outside.is_empty() {
        eprintln!(
            "imgchain: note: {} lies outside everything imgchain was pointed at, reached only \
             through a backing name in a header",
            outside.join(", ")
        );
    }
}

/// Prints what a dry run would do (the plan's description, as the UI's dialog shows it), its
/// space, and where it looked for images built on the target (`--json`: one object with
/// `would`, `lines`, `space` and `searched`).
pub(crate) fn dry_run<O: imgchain::ops::Operation>(
    ctx: &Session,
    plan: &O::Plan,
    image: &std::path::Path,
    d: &imgchain::ops::Description,
    space: Option<imgchain::ops::space::Space>,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    let op = O::kind(plan);
    let undo = imgchain::ops::clones::offer(ctx.settings.undo, &O::changes(plan));
    if json {
        let space_bytes = space.as_ref().map(|s| {
            serde_json::json!({
                "writes": s.writes,
                "needs": s.needed(),
                "frees": s.frees,
                "trashed": s.trashed,
                "available": s.available,
                "cloned_on": s.clone_on,
            })
        });
        let (searched, outside) = output::json_searched(&found.searched);
        let v = serde_json::json!({
            "operation": op.as_str(),
            "dry_run": true,
            "image": image,
            "would": d.would,
            "lines": d.plain(),
            "space": space.as_ref().map(|s| s.describe()),
            "space_bytes": space_bytes,
            "undo": undo.as_ref().map(undo_json),
            "searched": searched,
            "outside": outside,
            "exit_code": exit::OK,
            "summary": d.would,
        });
        if let Err(e) = print_json(&v) {
            eprintln!("imgchain: {:#}", e.error);
        }
    } else {
        println!("{}", d.would);
        for line in d.plain() {
            println!("{line}");
        }
        println!();
        if let Some(s) = space {
            println!("Space: {}.", s.describe());
        }
        if let Some(u) = &undo {
            println!("Undo: {}.", u.describe());
        }
        println!("{}", imgchain::words::searched_text(&found.searched));
    }
    exit::OK
}

/// A plan's undo in JSON: `{offered, on, why}`.
fn undo_json(u: &imgchain::ops::undo::Undo) -> serde_json::Value {
    use imgchain::ops::undo::Undo;
    match u {
        Undo::Cloned(fs) => serde_json::json!({"offered": true, "on": fs, "why": null}),
        Undo::NotHere(why) => serde_json::json!({"offered": false, "on": null, "why": why}),
    }
}

/// Refuses as [`refused`] does, and says where images built on the target were looked for
/// (in JSON as `searched`; in text when others were found).
pub(crate) fn refused_found(
    e: &imgchain::ops::Refusal,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    if json {
        let mut v = e.json();
        (v["searched"], v["outside"]) = output::json_searched(&found.searched);
        if let Err(err) = print_json(&v) {
            eprintln!("imgchain: {:#}", err.error);
        }
        eprintln!("imgchain: {e}");
        return e.exit_code();
    }
    let code = refused(e, false);
    if code == exit::SHARED_BASE {
        eprintln!(
            "imgchain: {}",
            imgchain::words::searched_text(&found.searched)
        );
    }
    code
}

/// Refuses as [`refused_found`] does, with a hint to add `--live` when the image is refused
/// for being in use and its holder listens on QMP.
pub(crate) fn refused_live_hint(
    e: &imgchain::ops::Refusal,
    found: &imgchain::ops::scope::Discovered,
    json: bool,
) -> u8 {
    let code = refused_found(e, found, json);
    if let imgchain::ops::Refusal::InUse(imgchain::image::lock::LockError::InUse { path, .. }) = e {
        let qmp = found
            .scan
            .forest
            .find(path)
            .into_iter()
            .chain([found.image])
            .flat_map(|id| &found.scan.forest.node(id).holders)
            .find_map(|h| h.owner.qmp.as_ref());
        if let Some(q) = qmp {
            eprintln!(
                "imgchain: its holder listens on QMP at {}: add --live to have it do the job \
                 itself",
                q.shown()
            );
        }
    }
    code
}

/// The request of `commit --live` or `merge --live` of the discovered image.
pub(crate) fn live_request(
    found: &imgchain::ops::scope::Discovered,
    force: bool,
    speed: Option<u64>,
) -> live::Request {
    live::Request {
        image: found.image,
        force,
        speed: speed.unwrap_or(0),
    }
}

/// `--live`: the QEMU holding the image does the job, through its QMP socket or virsh;
/// Ctrl-C cancels a block job.
pub(crate) fn run_live<O>(
    ctx: &Session,
    found: &imgchain::ops::scope::Discovered,
    req: &O::Request,
    progress: bool,
    json: bool,
) -> Result<u8, Failure>
where
    O: imgchain::ops::Operation<Plan = live::LivePlan, Outcome = live::LiveOutcome>,
{
    match O::plan(&found.scan.forest, req) {
        Ok(plan) => run_planned::<O>(ctx, &plan, progress, json),
        Err(e) => Ok(refused(&e, json)),
    }
}

pub(crate) fn refused(e: &imgchain::ops::Refusal, json: bool) -> u8 {
    if json && let Err(f) = print_json(&e.json()) {
        eprintln!("imgchain: {:#}", f.error);
    }
    eprintln!("imgchain: {e}");
    e.exit_code()
}
