//! Snapshot: a new qcow2 overlay on an image, as `qemu-img create -b IMAGE -F FMT` makes it
//! (ARCHITECTURE.md §3). The image itself is never written: from then on it is a backing
//! file, read-only, and the new overlay takes the writes.
//!
//! The overlay is created as an unnamed file in its directory, synced, and linked into place
//! only if nothing has taken the name meanwhile; the directory is synced last. A crash leaves
//! either no overlay or a whole one (where the filesystem cannot make unnamed files, at worst a
//! hidden temporary file, never named like an image).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::guards;
use super::plan_image::PlanImage;
use super::scope::Discovered;
use super::settings::Settings;
use super::{Description, OpKind, Operation, Phase, Progress, Refusal, Report, Run, Selected};
use crate::forest::diag::ProblemKind;
use crate::forest::{Forest, NodeId};
use crate::image::create::{NewImage, create_in};
use crate::image::file::{FileId, Owner};
use crate::image::lock::Access;
use crate::image::newfile::{self, NewFile};
use crate::image::probe::Format;
use crate::text::Names;

/// What the user asks for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The image to put the overlay on.
    pub image: NodeId,
    /// The new overlay's path; `None`: the next free `STEM.N.qcow2` beside the image.
    pub new: Option<PathBuf>,
    /// Cluster size of the new overlay, in bytes.
    pub cluster_size: usize,
}

/// What the UI asks for: an overlay on `image`, named `name` beside it (`None`: the next
/// free name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub cluster_size: usize,
    pub name: Option<String>,
}

impl Ask {
    /// An overlay on the selected image.
    pub fn of(sel: &Selected) -> Ask {
        Ask {
            image: sel.image.clone(),
            cluster_size: sel.cluster_size,
            name: None,
        }
    }

    /// The request for the image it names, found in `found`.
    pub fn request(&self, found: &Discovered) -> Request {
        let dir = self.image.parent().unwrap_or(Path::new("/"));
        Request {
            image: found.image,
            new: self.name.as_ref().map(|n| dir.join(n)),
            cluster_size: self.cluster_size,
        }
    }
}

/// Whether `name` can name an overlay beside its image: a file name, not a path, not hidden
/// (imgchain's own temporary files are), with no control characters; why not otherwise.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("type a file name".into())
    } else if name.contains('/') || name == "." || name == ".." {
        Err("a file name beside the image, not a path".into())
    } else if name.starts_with('.') {
        Err("not a hidden name (imgchain's temporary files are hidden)".into())
    } else if name.chars().any(char::is_control) {
        Err("no control characters".into())
    } else {
        Ok(())
    }
}

/// A snapshot that passed every guard.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The image that becomes the backing file.
    pub image: PlanImage,
    /// The overlay to create.
    pub new: PathBuf,
    /// The backing name written into the overlay: the file name when both share a directory,
    /// else the image's absolute path.
    pub backing_name: String,
    pub cluster_size: usize,
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Creating and naming the overlay.
    pub created: Result<(), String>,
}

/// The snapshot operation.
#[derive(Debug)]
pub struct Snapshot;

impl Operation for Snapshot {
    const KIND: OpKind = OpKind::SNAPSHOT;
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req)
    }

    const ACTION: Option<&'static str> = Some("snapshot");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask::of(sel))
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        plan(&found.scan.forest, &ask.request(found))
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        vec![plan.new.clone()]
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        run(plan, r.progress)
    }
}

/// The overlay it creates and what becomes of the image.
pub fn describe(p: &Plan) -> Description {
    let name = crate::forest::model::file_name;
    let mut d = Description::new(format!(
        "Would create {} on {} (backing name \"{}\", format {}).",
        p.new.shown(),
        p.image.path.shown(),
        p.backing_name,
        p.image.format
    ));
    d.field("new", p.new.shown().to_string())
        .field(
            "backing",
            format!(
                "\"{}\" ({}), {} virtual, {} clusters",
                p.backing_name,
                p.image.format,
                crate::units::human_size(p.image.virtual_size),
                crate::units::human_size(p.cluster_size as u64)
            ),
        )
        .text(format!(
            "{} is never written and becomes a backing image (RO): point the VM at {}.",
            name(&p.image.path),
            name(&p.new)
        ));
    d
}

/// The next free `STEM.N.qcow2` beside `image`: `disk.qcow2` → `disk.1.qcow2`, and
/// `disk.1.qcow2` → `disk.2.qcow2`.
pub fn default_name(image: &Path) -> PathBuf {
    let dir = image.parent().unwrap_or(Path::new("/"));
    let stem = image
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let (base, mut n) = match stem.rsplit_once('.') {
        Some((b, num)) if !b.is_empty() && num.parse::<u32>().is_ok() => {
            (b.to_string(), num.parse::<u32>().unwrap_or(0) + 1)
        }
        _ => (stem, 1),
    };
    loop {
        let p = dir.join(format!("{base}.{n}.qcow2"));
        if std::fs::symlink_metadata(&p).is_err() {
            return p;
        }
        n += 1;
    }
}

/// Checks the guards and works out the overlay's name; nothing is written.
pub fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
    plan_for(forest, req, false)
}

/// [`plan`], for an image a running QEMU writes when `live` (the QEMU moves onto the overlay
/// itself, see `ops::live`).
pub(super) fn plan_for(forest: &Forest, req: &Request, live: bool) -> Result<Plan, Refusal> {
    let n = forest.node(req.image);
    let unsupported = |what: String| Refusal::Unsupported {
        path: n.path.clone(),
        what,
    };
    if let Some(p) = n.problems.iter().find(|p| {
        matches!(
            p.kind,
            ProblemKind::BadHeader | ProblemKind::Unreadable | ProblemKind::NotAnImage
        )
    }) {
        return Err(unsupported(format!(
            "cannot take an overlay: {}",
            p.message
        )));
    }
    if !matches!(n.format, Some(Format::Qcow2 | Format::Raw)) {
        return Err(unsupported(format!(
            "is a {} image; imgchain puts overlays on qcow2 and raw images (qemu-img create -b \
             works for any format)",
            n.format.map_or("unknown", |f| f.as_str())
        )));
    }
    if n.qcow2.as_ref().is_some_and(|h| h.corrupt()) {
        return Err(unsupported(
            "is marked corrupt by QEMU and must not be used; inspect it with qemu-img check".into(),
        ));
    }
    if let Some(p) = n.problems.iter().find(|p| {
        matches!(
            p.kind,
            ProblemKind::MissingBacking | ProblemKind::BackingLoop | ProblemKind::ProtocolBacking
        )
    }) {
        return Err(Refusal::BrokenChain {
            top: n.path.clone(),
            op: OpKind::SNAPSHOT,
            message: format!("its own chain is broken ({}); repair it first", p.message),
        });
    }
    let chain: Vec<NodeId> = std::iter::once(req.image)
        .chain(forest.chain(req.image))
        .collect();
    guards::links_name_their_format(forest, &chain)?;
    // A VM writing the image would change the new overlay's disk under it.
    if !live {
        guards::not_in_use(forest, [(req.image, Access::READ_ONLY)])?;
    }
    if !(512..=2 << 20).contains(&req.cluster_size) || !req.cluster_size.is_power_of_two() {
        return Err(Refusal::Unsupported {
            path: n.path.clone(),
            what: format!(
                "cannot take an overlay with {}-byte clusters: use a power of two from 512 bytes \
                 to 2 MiB",
                req.cluster_size
            ),
        });
    }
    let image = PlanImage::of(forest, req.image)?;
    let new = match &req.new {
        Some(p) => std::path::absolute(p).map_err(|e| Refusal::Scan {
            path: p.clone(),
            what: format!("cannot resolve the new overlay's path {}: {e}", p.shown()),
        })?,
        None => default_name(&n.path),
    };
    if std::fs::symlink_metadata(&new).is_ok() {
        return Err(Refusal::Exists { path: new });
    }
    let backing_name = if new.parent() == n.path.parent() {
        let name = n.path.file_name().unwrap_or_default().to_string_lossy();
        crate::forest::model::header_name(&name)
    } else {
        n.path.display().to_string()
    };
    Ok(Plan {
        image,
        new,
        backing_name,
        cluster_size: req.cluster_size,
    })
}

/// Creates the overlay. Before anything is created, the image is opened again with a
/// reader's QEMU locks (a VM that started writing it refuses the run) and must be the file
/// of the plan; it stays open, locked, until the overlay has its name.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(Progress)) -> Result<Outcome, Refusal> {
    let started = Instant::now();
    let report = |progress: &mut dyn FnMut(Progress), phase| {
        progress(Progress {
            op: OpKind::SNAPSHOT,
            phase,
            done: 0,
            total: 0,
            elapsed: started.elapsed(),
            writing: false,
        })
    };
    report(progress, Phase::Open);
    let held = plan.image.hold()?;
    report(progress, Phase::Create);
    let created = create_in_place(plan).map(|_| ()).map_err(|e| e.to_string());
    drop(held);
    report(progress, Phase::Done);
    match created {
        Err(e) if e.contains("exists") && std::fs::symlink_metadata(&plan.new).is_ok() => {
            Err(Refusal::Exists {
                path: plan.new.clone(),
            })
        }
        created => Ok(Outcome {
            plan: plan.clone(),
            created,
        }),
    }
}

/// Writes the overlay into a new unnamed file in its directory, gives it the image's owner
/// and no wider mode than the image's, syncs it, links it as `plan.new` unless that name is
/// taken, and syncs the directory. Every step goes through the fds (ARCHITECTURE.md §8).
pub(super) fn create_in_place(plan: &Plan) -> io::Result<FileId> {
    let dir = plan.new.parent().unwrap_or(Path::new("/"));
    let name = plan.new.file_name().unwrap_or_default();
    let owner = Owner::of_path(&plan.image.path, plan.image.ident)?;
    let dir_fd = newfile::open_dir(dir)?;
    // Beside the image, the overlay names it by its file name: the directory opened must be
    // the one that holds the image, not one swapped in for it since the plan.
    if plan.new.parent() == plan.image.path.parent() {
        let image_name = plan.image.path.file_name().unwrap_or_default();
        let there = rustix::fs::statat(&dir_fd, image_name, rustix::fs::AtFlags::empty())?;
        if (FileId {
            dev: there.st_dev,
            ino: there.st_ino,
        }) != plan.image.ident
        {
            return Err(io::Error::other(
                "its directory changed since the plan: it no longer holds the image",
            ));
        }
    }
    let new = NewFile::create(dir_fd, name)?;
    new.set_owner(&owner, owner.overlay_mode())?;
    create_in(
        &new.file,
        &NewImage {
            format: Format::Qcow2,
            virtual_size: plan.image.virtual_size,
            backing: Some((&plan.backing_name, plan.image.format)),
            cluster_size: plan.cluster_size,
        },
    )?;
    new.file.sync_all()?;
    let ident = FileId::of(&new.file.metadata()?);
    new.link(name)?;
    Ok(ident)
}

impl Report for Outcome {
    /// `snapshot --json`: the overlay made (or why not).
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": crate::text::lossy(&self.plan.image.path),
            "new": crate::text::lossy(&self.plan.new),
            "backing": {"name": self.plan.backing_name, "format": self.plan.image.format.as_str()},
            "virtual_size": self.plan.image.virtual_size,
            "cluster_size": self.plan.cluster_size,
            "created": self.created.is_ok(),
            "error": self.created.as_ref().err(),
            "exit_code": self.exit_code(),
            "summary": self.summary(),
        })
    }

    fn exit_code(&self) -> u8 {
        match self.created {
            Ok(()) => crate::exit::OK,
            Err(_) => crate::exit::IO_ERROR,
        }
    }

    fn summary(&self) -> String {
        let p = &self.plan;
        match &self.created {
            Ok(()) => format!(
                "Created {}: a qcow2 overlay of {} (backing name \"{}\", format {}; {} virtual, \
                 {} clusters). {} is a backing image now (RO): point the VM at {}, since \
                 writing {} would change the overlay's disk.",
                p.new.shown(),
                p.image.path.shown(),
                p.backing_name,
                p.image.format,
                crate::units::human_size(p.image.virtual_size),
                crate::units::human_size(p.cluster_size as u64),
                crate::forest::model::file_name(&p.image.path),
                crate::forest::model::file_name(&p.new),
                crate::forest::model::file_name(&p.image.path),
            ),
            Err(e) => format!(
                "Could not create {}: {e}. Nothing was named {}; {} is unchanged.",
                p.new.shown(),
                crate::forest::model::file_name(&p.new),
                p.image.path.shown()
            ),
        }
    }
}
