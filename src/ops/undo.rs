//! Undo on cloning filesystems (ARCHITECTURE.md §3, "Undo"): before a commit, merge, flatten
//! or rebase writes, each image it changes or removes is cloned (`FICLONE`: blocks shared,
//! nothing copied) into the trash beside it, with a record synced before the run starts and
//! completed with what the run left when it ends. `Undo` puts the newest such record back,
//! byte for byte, refused if an image changed since or is in use. Where the filesystem cannot
//! clone, the plan says so before anything is asked.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub use super::clones::{Undo, offered, support};
use super::plan_image::PlanImage;
use super::{Operation, Refusal, Report, Run};
use crate::image::file::{self, FileId, OpenMode};
use crate::text::Names;
use crate::trash::record::{FileState, Record, UndoPart, VERSION};
use crate::trash::{Listed, Throw, Trash};

/// Runs `plan` as [`Operation::run`] does, with an undo record made first when the plan's
/// images are on a cloning filesystem; a record that cannot be made refuses the run before
/// it writes (the plan promised it).
pub fn run<O: Operation>(plan: &O::Plan, run: Run<'_>) -> Result<O::Outcome, Refusal> {
    let images = O::changes(plan);
    let offer = run.settings.undo.then(|| offered(&images)).flatten();
    let recording = match offer {
        Some(Undo::Cloned(_)) => Some(Recording::make(O::KIND.as_str(), &images)?),
        _ => None,
    };
    let result = O::run(plan, run);
    // Kept for a run that did all it set out to do. One refused, failed or cancelled leaves
    // a chain that reads as before it (every operation's crash contract) and is finished by
    // running it again; a record of it would only hold the blocks it overwrote.
    if let Some(r) = recording {
        match &result {
            Ok(outcome) if outcome.exit_code() == crate::exit::OK => r.finish(),
            _ => r.discard(),
        }
    }
    result
}

/// An undo record being made: one trash entry per image.
struct Recording {
    parts: Vec<(PathBuf, String, Record)>,
}

impl Recording {
    /// Clones each image into the trash beside it, while holding a reader's lock that keeps
    /// writers out, and checks the image did not change while it was cloned.
    fn make(operation: &'static str, images: &[PlanImage]) -> Result<Recording, Refusal> {
        let throw = Throw::new(operation, &images[0].path);
        let all: Vec<String> = images.iter().map(|i| crate::text::lossy(&i.path)).collect();
        let mut made = Recording { parts: Vec::new() };
        for (index, img) in images.iter().enumerate() {
            match clone_one(&throw, &all, index, img) {
                Ok(part) => made.parts.push(part),
                Err(e @ Refusal::Trash { .. }) => {
                    made.discard();
                    return Err(e.with(super::refusal::Way {
                        cli: "add --no-undo to run it without one".into(),
                        ui: super::refusal::UiWay::Words(
                            "set [trash] undo = false to run it without one".into(),
                        ),
                    }));
                }
                Err(e) => {
                    made.discard();
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Completes each record with what the run left (read by name after the run: only
    /// compared later, never opened).
    fn finish(self) {
        for (dir, entry, mut record) in self.parts {
            if let Some(u) = &mut record.undo {
                u.finished = true;
                u.after = FileState::now(&PathBuf::from(&u.images[u.index]));
            }
            if let Ok(Some(t)) = Trash::open(&dir) {
                let _ = t.rewrite(&entry, &record);
            }
        }
    }

    /// Removes the record: the run wrote nothing.
    fn discard(self) {
        for (dir, entry, _) in self.parts {
            if let Ok(Some(t)) = Trash::open(&dir) {
                let _ = t.purge(&entry);
            }
        }
    }
}

fn clone_one(
    throw: &Throw,
    all: &[String],
    index: usize,
    img: &PlanImage,
) -> Result<(PathBuf, String, Record), Refusal> {
    let fail = |what: String| Refusal::Trash {
        path: img.path.clone(),
        what: format!(
            "cannot be cloned for the undo the plan offered, so nothing was written: {what}"
        ),
    };
    let dir = img.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = img.path.file_name().unwrap_or(OsStr::new(""));
    let _lock = super::delete::lock_unused(&img.path, img.ident)?;
    let src = std::fs::File::from(
        file::open_as(&img.path, OpenMode::ReadOnly, img.ident).map_err(|e| fail(e.to_string()))?,
    );
    let before = FileState::now(&img.path);
    let trash = Trash::beside(&img.path, img.ident)?;
    let mut record = Record {
        version: VERSION,
        operation: throw.operation.into(),
        when: throw.when,
        why: throw.why.clone(),
        group: throw.group.clone(),
        files: Vec::new(),
        undo: Some(UndoPart {
            images: all.to_vec(),
            index,
            before: img.ident,
            clone: name.to_string_lossy().into_owned(),
            clone_ident: img.ident,
            finished: false,
            after: None,
        }),
    };
    let entry = trash.begin(&record)?;
    let entry_name = entry.name.clone();
    let cloned = entry.clone_in(&src, name).map_err(|e| fail(e.to_string()));
    let unchanged = FileState::now(&img.path) == before;
    let ident = match cloned {
        Ok(ident) if unchanged => ident,
        Ok(_) => {
            let _ = trash.purge(&entry_name);
            return Err(fail("it changed while it was being cloned".into()));
        }
        Err(e) => {
            let _ = trash.purge(&entry_name);
            return Err(e);
        }
    };
    if let Some(u) = &mut record.undo {
        u.clone_ident = ident;
    }
    trash
        .rewrite(&entry_name, &record)
        .map_err(|e| fail(e.to_string()))?;
    Ok((dir, entry_name, record))
}

/// The request of an undo: the directories whose trashes hold the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
}

/// The newest undo record under the directories asked, checked: every image it touches as
/// the operation left it (or put back already, by an undo a crash cut short), none in use.
#[derive(Clone, Debug)]
pub struct Plan {
    pub operation: String,
    pub when: u64,
    pub group: String,
    /// In the order they go back.
    pub parts: Vec<Part>,
}

/// One image of the record.
#[derive(Clone, Debug)]
pub struct Part {
    pub path: PathBuf,
    /// The trash entry holding its clone.
    pub entry: String,
    pub clone: String,
    pub clone_ident: FileId,
    /// The image now (`None`: the operation removed it).
    pub now: Option<FileId>,
    /// Put back already.
    pub done: bool,
}

/// Finds the newest finished undo record in the trashes of `dirs` and checks it.
pub fn plan(dirs: &[PathBuf]) -> Result<Plan, Refusal> {
    let (listed, _) = super::restore::list(dirs);
    let newest = listed
        .iter()
        .filter_map(|l| l.record.as_ref().ok().filter(|r| r.undo.is_some()))
        .max_by_key(|r| (r.when, r.group.clone()))
        .ok_or_else(|| nothing(dirs))?
        .clone();
    let Some(first) = &newest.undo else {
        return Err(nothing(dirs));
    };
    // Every directory of the record's images listed once (they may lie outside `dirs`).
    let mut image_dirs: Vec<PathBuf> = first
        .images
        .iter()
        .filter_map(|i| Path::new(i).parent().map(Path::to_path_buf))
        .collect();
    image_dirs.sort();
    image_dirs.dedup();
    let (around, _) = super::restore::list(&image_dirs);
    let mut parts = Vec::new();
    for (index, image) in first.images.iter().enumerate() {
        parts.push(part_of(&around, &newest, index, Path::new(image))?);
    }
    Ok(Plan {
        operation: newest.operation.clone(),
        when: newest.when,
        group: newest.group.clone(),
        parts,
    })
}

fn nothing(dirs: &[PathBuf]) -> Refusal {
    let shown: Vec<String> = dirs.iter().map(|d| d.shown().to_string()).collect();
    Refusal::Trash {
        path: dirs.first().cloned().unwrap_or_default(),
        what: format!(
            "has nothing to undo: no operation recorded an undo under {} (only commit, merge, \
             flatten and rebase do, on XFS with reflink or btrfs)",
            shown.join(", ")
        ),
    }
}

/// The record's part for image `index`, found among the `listed` entries of the trash beside
/// it, checked against the image now.
fn part_of(listed: &[Listed], group: &Record, index: usize, path: &Path) -> Result<Part, Refusal> {
    let refuse = |what: String| Refusal::Trash {
        path: path.to_path_buf(),
        what,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let (entry, u) = listed
        .iter()
        .filter(|l| l.dir == dir)
        .find_map(|l| {
            let r = l.record.as_ref().ok()?;
            let u = r
                .undo
                .as_ref()
                .filter(|u| r.group == group.group && u.index == index)?;
            Some((l.entry.clone(), u.clone()))
        })
        .ok_or_else(|| refuse("has lost its part of the undo record".into()))?;
    if !u.finished {
        return Err(refuse(format!(
            "was being changed by a {} that did not finish (the process was stopped); its \
             images are as it left them, and its clones are in {}",
            group.operation,
            dir.join(crate::trash::DIR).shown()
        )));
    }
    let now = FileState::now(path);
    let done = now.map(|n| n.ident) == Some(u.clone_ident);
    if !done && now != u.after {
        return Err(refuse(format!(
            "changed since the {} (written, replaced or removed), so undoing it would lose that \
             change",
            group.operation
        )));
    }
    if let (false, Some(n)) = (done, now) {
        drop(super::delete::lock_unused(path, n.ident)?);
    }
    Ok(Part {
        path: path.to_path_buf(),
        entry,
        clone: u.clone,
        clone_ident: u.clone_ident,
        now: now.map(|n| n.ident),
        done,
    })
}

/// Puts each image back in order (each in one step: its clone swapped in), holding a
/// reader's lock on the image it replaces; then removes the record. A crash between two
/// images leaves a chain that reads as before the operation or after it (overlays go back
/// before what they are built on), and the undo can be run again. The images put back, and
/// what stopped it.
pub fn run_undo(plan: &Plan) -> (Vec<PathBuf>, Option<Refusal>) {
    let mut back = Vec::new();
    for p in plan.parts.iter().filter(|p| !p.done) {
        match put_back(p) {
            Ok(()) => back.push(p.path.clone()),
            Err(e) => return (back, Some(e)),
        }
    }
    for p in &plan.parts {
        let dir = p.path.parent().unwrap_or(Path::new("/"));
        if let Ok(Some(t)) = Trash::open(dir) {
            let _ = t.purge(&p.entry);
        }
    }
    (back, None)
}

fn put_back(p: &Part) -> Result<(), Refusal> {
    let dir = p.path.parent().unwrap_or(Path::new("/"));
    let name = p.path.file_name().unwrap_or(OsStr::new(""));
    let trash = Trash::open(dir)?.ok_or_else(|| Refusal::Trash {
        path: p.path.clone(),
        what: "has lost its undo record".into(),
    })?;
    let _lock = match p.now {
        Some(ident) => Some(super::delete::lock_unused(&p.path, ident)?),
        None => None,
    };
    trash
        .put_back(&p.entry, OsStr::new(&p.clone), name, p.now)
        .map_err(|e| Refusal::Trash {
            path: p.path.clone(),
            what: format!("cannot be put back: {e}"),
        })
}

/// The undo operation, registered for the UI's undo key and run by `imgchain undo`.
#[derive(Debug)]
pub struct UndoOp;

/// What an undo did.
#[derive(Debug)]
pub struct Undone {
    pub plan: Plan,
    /// The images put back.
    pub back: Vec<PathBuf>,
    /// Why it stopped before the end (the images not put back are as the operation left them).
    pub error: Option<String>,
}

impl Operation for UndoOp {
    const KIND: super::OpKind = super::OpKind::UNDO;
    type Request = Vec<PathBuf>;
    const ACTION: Option<&'static str> = Some("undo");
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Undone;

    fn plan(_forest: &crate::forest::Forest, dirs: &Vec<PathBuf>) -> Result<Plan, Refusal> {
        plan(dirs)
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn ask_for(sel: &super::Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
        })
    }

    /// The trashes the scan around the image met, and the image's own directory.
    fn plan_asked(
        ask: &Ask,
        found: &super::scope::Discovered,
        _: &super::settings::Settings,
    ) -> Result<Plan, Refusal> {
        let mut dirs = found.scan.trash.clone();
        dirs.extend(ask.image.parent().map(Path::to_path_buf));
        dirs.sort();
        dirs.dedup();
        plan(&dirs)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        plan.parts.iter().map(|p| p.path.clone()).collect()
    }

    fn describe(plan: &Plan) -> super::Description {
        let when = crate::units::utc_minute(i64::try_from(plan.when).unwrap_or(i64::MAX));
        let mut d = super::Description::new(format!(
            "Would undo the {} of {when}: put back, as they were before it, {}.",
            plan.operation,
            names(plan.parts.iter().map(|p| &p.path))
        ));
        d.field("undoes", format!("the {} of {when}", plan.operation));
        for p in &plan.parts {
            let how = match (p.done, p.now) {
                (true, _) => "put back already",
                (false, None) => "back where the operation removed it",
                (false, Some(_)) => "as it was before, its later state dropped",
            };
            d.item(format!("{} ({how})", p.path.shown()));
        }
        d
    }

    /// Refused when the first image cannot go back (nothing was changed).
    fn run(plan: &Plan, _: Run<'_>) -> Result<Undone, Refusal> {
        match run_undo(plan) {
            (back, Some(e)) if back.is_empty() => Err(e),
            (back, error) => Ok(Undone {
                plan: plan.clone(),
                back,
                error: error.map(|e| e.to_string()),
            }),
        }
    }
}

fn names<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> String {
    paths
        .map(|p| p.shown().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl super::Report for Undone {
    fn exit_code(&self) -> u8 {
        match self.error {
            Some(_) => crate::exit::IO_ERROR,
            None => crate::exit::OK,
        }
    }

    fn summary(&self) -> String {
        match &self.error {
            None => format!(
                "Undid the {}: {} as before it.",
                self.plan.operation,
                names(self.plan.parts.iter().map(|p| &p.path))
            ),
            Some(e) => format!(
                "The undo of the {} stopped: {e}. Put back: {}; run the undo again to finish.",
                self.plan.operation,
                names(self.back.iter())
            ),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "operation": "undo",
            "undone": self.plan.operation,
            "restored": self.plan.parts.iter().map(|p| crate::text::lossy(&p.path)).collect::<Vec<_>>(),
            "error": self.error,
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }
}
