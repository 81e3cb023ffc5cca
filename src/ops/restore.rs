//! What the trash holds, and taking it back (ARCHITECTURE.md §3, "Trash"): restoring a file
//! under the name it had, refused when that name is taken or when what it read through changed
//! since (restored, it would not read as it did); emptying entries older than a retention.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Refusal;
use crate::text::Names;
use crate::trash::record::{Backing, Record, Trashed};
use crate::trash::{Listed, Present, Trash, TrashError};

/// A file in the trash, found for restoring.
#[derive(Clone, Debug)]
pub struct Found {
    /// The name it comes back under.
    pub path: PathBuf,
    pub entry: String,
    pub file: Present,
    pub trashed: Trashed,
    pub record: Record,
    /// Its external data file, trashed with it, restored first.
    pub data_file: Option<(String, Present)>,
}

/// A restore that passed every check: the files to move back, in order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub found: Found,
}

/// Finds `image` (the path it had) in the trash beside it — the newest entry holding a file
/// of that name — and checks it can come back: the name is free, and the file it read
/// through is the same file, unchanged since it was trashed.
pub fn plan(image: &Path) -> Result<Plan, Refusal> {
    let found = find(image)?;
    if std::fs::symlink_metadata(image).is_ok() {
        return Err(Refusal::Trash {
            path: image.to_path_buf(),
            what: "exists: another file has that name now; move it away first".into(),
        });
    }
    if let Some(b) = &found.trashed.backing {
        backing_unchanged(image, b)?;
    }
    Ok(Plan { found })
}

/// Moves the plan's files back (its data file first), re-checking each right before.
pub fn run(plan: &Plan) -> Result<(), Refusal> {
    let f = &plan.found;
    let dir = f.path.parent().unwrap_or(Path::new("/"));
    let trash = Trash::open(dir)?.ok_or_else(|| not_there(&f.path))?;
    if let Some((entry, d)) = &f.data_file {
        trash.restore(entry, &d.name, d.ident)?;
    }
    if let Some(b) = &f.trashed.backing {
        backing_unchanged(&f.path, b)?;
    }
    Ok(trash.restore(&f.entry, &f.file.name, f.file.ident)?)
}

fn not_there(image: &Path) -> Refusal {
    Refusal::Trash {
        path: image.to_path_buf(),
        what: format!("is not in the trash beside it ({})", crate::trash::DIR),
    }
}

fn find(image: &Path) -> Result<Found, Refusal> {
    let (Some(dir), Some(name)) = (image.parent(), image.file_name()) else {
        return Err(not_there(image));
    };
    let trash = Trash::open(dir)?.ok_or_else(|| not_there(image))?;
    let entries = trash.entries();
    let (listed, file, trashed, record) = entries
        .iter()
        .rev()
        .find_map(|l| {
            let record = l.record.as_ref().ok()?;
            let file = l.files.iter().find(|f| f.name == name)?;
            let t = record.files.iter().find(|t| t.ident == file.ident)?;
            (t.data_file_of.is_none()).then(|| (l, file.clone(), t.clone(), record.clone()))
        })
        .ok_or_else(|| not_there(image))?;
    let data_file = entries.iter().find_map(|l| {
        let r = l.record.as_ref().ok()?;
        let t = r.files.iter().find(|t| {
            r.group == record.group && t.data_file_of.as_deref() == Some(&trashed.name)
        })?;
        let f = l.files.iter().find(|f| f.ident == t.ident)?;
        Some((l.entry.clone(), f.clone()))
    });
    Ok(Found {
        path: image.to_path_buf(),
        entry: listed.entry.clone(),
        file,
        trashed,
        record,
        data_file,
    })
}

/// Refused unless the file `b` recorded is still at its path, the same file, unchanged.
fn backing_unchanged(image: &Path, b: &Backing) -> Result<(), Refusal> {
    let path = PathBuf::from(&b.path);
    let now = Backing::now(&path);
    let why = match &now {
        Some(n) if n == b => return Ok(()),
        Some(n) if n.ident != b.ident => "another file has its name now",
        Some(_) => "it was written since",
        None if in_trash(&path) => "it is in the trash too: restore it first",
        None => "it is gone",
    };
    Err(Refusal::Trash {
        path: image.to_path_buf(),
        what: format!(
            "was built on {}, and {why}; restored now, it would not read as it did",
            path.shown()
        ),
    })
}

/// Whether a file of `path`'s name is in the trash beside it.
fn in_trash(path: &Path) -> bool {
    find(path).is_ok()
}

/// The entries of the trashes of `dirs`, oldest first, with the trashes that could not be
/// read.
pub fn list(dirs: &[PathBuf]) -> (Vec<Listed>, Vec<TrashError>) {
    let mut listed = Vec::new();
    let mut errors = Vec::new();
    for d in dirs {
        match Trash::open(d) {
            Ok(Some(t)) => listed.extend(t.entries()),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    listed.sort_by_key(|l| (l.record.as_ref().map_or(0, |r| r.when), l.entry.clone()));
    (listed, errors)
}

/// How long ago entry `l` was made (an unreadable record: as old as can be, so that emptying
/// the trash takes it).
pub fn age(l: &Listed) -> Duration {
    match &l.record {
        Ok(r) => since(r.when),
        Err(_) => Duration::MAX,
    }
}

/// How long ago `when` (seconds since the epoch) was.
fn since(when: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(now.saturating_sub(when))
}

/// What emptying the trash did: each entry removed with the bytes freed, and each failure.
#[derive(Debug, Default)]
pub struct Emptied {
    pub removed: Vec<(Listed, u64)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// Removes `entries` (those a list found and the user confirmed), each from its own trash.
pub fn empty<'a>(entries: impl IntoIterator<Item = &'a Listed>) -> Emptied {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for l in entries {
        let at = l.dir.join(crate::trash::DIR).join(&l.entry);
        match Trash::open(&l.dir).map(|t| t.map(|t| t.purge(&l.entry))) {
            Ok(Some(Ok(freed))) => done.push((l.clone(), freed)),
            Ok(Some(Err(e))) => failed.push((at, e.to_string())),
            Ok(None) => {}
            Err(e) => failed.push((e.path, e.what)),
        }
    }
    Emptied {
        removed: done,
        failed,
    }
}

/// The path a trashed file had.
pub fn original(l: &Listed, name: &OsString) -> PathBuf {
    l.dir.join(name)
}

/// What the UI would ask (it offers no key for it: the trash is not in the forest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
}

/// What a restore did: the files moved back, a data file first.
#[derive(Debug)]
pub struct Restored {
    pub plan: Plan,
    pub back: Vec<PathBuf>,
}

/// The restore operation, registered like every write (`imgchain trash restore`).
#[derive(Debug)]
pub struct Restore;

impl super::Operation for Restore {
    const KIND: super::OpKind = super::OpKind::new("restore", "Restore", "be restored");
    type Request = PathBuf;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Restored;

    fn plan(_: &crate::forest::Forest, image: &PathBuf) -> Result<Plan, Refusal> {
        plan(image)
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(
        ask: &Ask,
        _: &super::scope::Discovered,
        _: &super::settings::Settings,
    ) -> Result<Plan, Refusal> {
        plan(&ask.image)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        vec![plan.found.path.clone()]
    }

    fn describe(plan: &Plan) -> super::Description {
        let f = &plan.found;
        let mut d = super::Description::new(format!(
            "Would move {} back from the trash.",
            f.path.shown()
        ));
        d.field("image", f.path.shown().to_string());
        d.field("removed by", f.record.why.clone());
        if let Some(b) = &f.trashed.backing {
            d.field("built on", format!("{} (unchanged since)", b.path));
        }
        d
    }

    fn run(plan: &Plan, _: super::Run<'_>) -> Result<Restored, Refusal> {
        run(plan)?;
        let f = &plan.found;
        let mut back: Vec<PathBuf> = f
            .data_file
            .iter()
            .map(|(_, d)| f.path.with_file_name(&d.name))
            .collect();
        back.push(f.path.clone());
        Ok(Restored {
            plan: plan.clone(),
            back,
        })
    }
}

impl super::Report for Restored {
    fn exit_code(&self) -> u8 {
        crate::exit::OK
    }

    fn summary(&self) -> String {
        let names: Vec<String> = self.back.iter().map(|p| p.shown().to_string()).collect();
        let r = &self.plan.found.record;
        format!(
            "Restored {} from the trash ({} ago, by {}).",
            names.join(" and "),
            crate::units::human_age(since(r.when)),
            r.operation
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "restored": self.back.iter().map(|p| crate::text::lossy(p)).collect::<Vec<_>>(),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }
}
