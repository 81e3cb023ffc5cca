//! Repair: for each image whose backing file is missing, the images of the forest that could
//! be that file (ARCHITECTURE.md §3), best first: those nothing speaks against before those
//! a VM uses, other images are built on or another user owns; then the same name, then the
//! same size and format; base images before overlays. Applying one is an unsafe rebase (`-u`)
//! onto it, with all of rebase's guards: a candidate of another virtual size is refused there.

use std::path::{Path, PathBuf};

use super::rebase::{self, Outcome, Rebase};
use super::scope::Discovered;
use super::settings::Settings;
use super::space::Space;
use super::{Description, OpKind, Operation, Refusal, Run, Selected, guards};
use crate::forest::diag::ProblemKind;
use crate::forest::model::{Backing, Node};
use crate::forest::{Forest, NodeId};
use crate::text::Names;

/// Why an image is offered as the missing backing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// The file name the header names, and the virtual size.
    SameNameAndSize,
    /// The file name only.
    SameName,
    /// The virtual size and the format the header names, under another name.
    SameSizeAndFormat,
}

impl Match {
    /// How the match is described.
    pub fn describe(self) -> &'static str {
        match self {
            Match::SameNameAndSize => "same file name and virtual size",
            Match::SameName => "same file name, another virtual size",
            Match::SameSizeAndFormat => "same virtual size and format",
        }
    }
}

/// An image that could be the missing backing file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub how: Match,
    /// Evidence against it (a VM uses it, other images are built on it, another user owns
    /// it): such a candidate is never offered as the equal of one without.
    pub caveat: Option<String>,
}

impl Candidate {
    /// Why it is offered, and what speaks against it.
    pub fn describe(&self) -> String {
        match &self.caveat {
            None => self.how.describe().to_string(),
            Some(c) => format!("{}; but {c}", self.how.describe()),
        }
    }

    /// Whether `repair --yes` may apply it: it has the missing file's name and size, and
    /// nothing speaks against it.
    pub fn sure(&self) -> bool {
        self.how == Match::SameNameAndSize && self.caveat.is_none()
    }
}

/// A missing backing file and what could stand in for it, best first: every candidate, none
/// left out.
#[derive(Clone, Debug)]
pub struct Fix {
    pub image: NodeId,
    /// The path the header's backing name resolves to.
    pub missing: PathBuf,
    pub candidates: Vec<Candidate>,
}

/// Every image of `forest` with a missing backing file, with its candidates.
pub fn find(forest: &Forest) -> Vec<Fix> {
    let mut fixes = Vec::new();
    for (i, n) in forest.nodes.iter().enumerate() {
        let id = NodeId(i);
        let Some(b) = &n.backing else { continue };
        if !n
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingBacking)
        {
            continue;
        }
        let above = guards::descendants(forest, id);
        let mut candidates: Vec<Candidate> = forest
            .nodes
            .iter()
            .enumerate()
            .map(|(j, c)| (NodeId(j), c))
            .filter(|(j, _)| *j != id && !above.contains(j))
            .filter_map(|(j, c)| {
                let how = matches(n, b, c)?;
                let mut caveat = caveat(forest, n, c);
                if caveat.is_none() && how == Match::SameSizeAndFormat && c.backing.is_some() {
                    caveat = Some("it is an overlay itself, as a VM's disk is".into());
                }
                Some(Candidate { id: j, how, caveat })
            })
            .collect();
        // Within a kind of match, base images (no backing file of their own) come first: a
        // moved base is more likely one than some VM's overlay is.
        candidates.sort_by_key(|c| {
            let n = forest.node(c.id);
            (
                c.caveat.is_some(),
                c.how,
                n.backing.is_some(),
                n.path.clone(),
            )
        });
        fixes.push(Fix {
            image: id,
            missing: b.path.clone(),
            candidates,
        });
    }
    fixes
}

/// How `c` matches the backing file `b` of `n` names, if at all.
fn matches(n: &Node, b: &Backing, c: &Node) -> Option<Match> {
    let wanted_format = b.format.as_deref();
    let same_size = c.virtual_size.is_some() && c.virtual_size == n.virtual_size;
    let same_format = wanted_format.is_none_or(|f| c.format.is_some_and(|cf| cf.as_str() == f));
    if c.path.file_name() == b.path.file_name() && same_format {
        Some(if same_size {
            Match::SameNameAndSize
        } else {
            Match::SameName
        })
    } else if same_size && same_format && wanted_format.is_some() {
        Some(Match::SameSizeAndFormat)
    } else {
        None
    }
}

/// What speaks against `c` being what `n` was built on: a base holds no VM's running disk,
/// nothing else built on it (the broken image would be its only overlay), and belongs to the
/// same user as the image built on it.
fn caveat(forest: &Forest, n: &Node, c: &Node) -> Option<String> {
    if let Some(h) = c.holders.first() {
        return Some(format!("it is in use by {h}"));
    }
    if c.in_use() {
        return Some("it is in use by another process".into());
    }
    if let Some(d) = c.vm_disks.first() {
        return Some(format!(
            "it is disk {} of the libvirt VM {}",
            crate::text::escape(&d.target),
            crate::text::escape(&d.domain)
        ));
    }
    if !c.overlays.is_empty() {
        return Some(format!(
            "other images are built on it ({})",
            forest.node(c.overlays[0]).name()
        ));
    }
    match (n.owner, c.owner) {
        (Some(a), Some(b)) if a.uid != b.uid => Some(format!(
            "it belongs to uid {}, the image to uid {}",
            b.uid, a.uid
        )),
        _ => None,
    }
}

/// Repairing one image: the unsafe rebase onto candidate `pick` of [`find`]'s list.
#[derive(Clone, Debug)]
pub struct Request {
    pub image: NodeId,
    pub pick: usize,
}

/// What the UI asks for: the repair of `image` with candidate `pick` (from 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub image: PathBuf,
    pub pick: usize,
}

/// A repair: the rebase it runs, and the candidates it was picked from.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rebase: rebase::Plan,
    pub missing: PathBuf,
    /// Each candidate's path and why it is offered (and what speaks against it), best first.
    pub candidates: Vec<(PathBuf, String)>,
    pub pick: usize,
}

/// The repair operation: a rebase that only rewrites names ([`Rebase`] runs it).
#[derive(Debug)]
pub struct Repair;

impl Operation for Repair {
    const KIND: OpKind = OpKind::REBASE;
    const TITLE: &'static str = "Repair";
    type Request = Request;
    type Ask = Ask;
    type Plan = Plan;
    type Outcome = Outcome;

    fn plan(forest: &Forest, req: &Request) -> Result<Plan, Refusal> {
        plan(forest, req.image, req.pick)
    }

    const ACTION: Option<&'static str> = Some("repair");

    fn ask_for(sel: &Selected) -> Result<Ask, String> {
        Ok(Ask {
            image: sel.image.clone(),
            pick: 0,
        })
    }

    fn asked(ask: &Ask) -> &Path {
        &ask.image
    }

    fn plan_asked(ask: &Ask, found: &Discovered, _: &Settings) -> Result<Plan, Refusal> {
        plan(&found.scan.forest, found.image, ask.pick)
    }

    fn writes(plan: &Plan) -> Vec<PathBuf> {
        Rebase::writes(&plan.rebase)
    }

    fn describe(plan: &Plan) -> Description {
        describe(plan)
    }

    fn space(plan: &Plan, clone: bool) -> Result<Option<Space>, Refusal> {
        Rebase::space(&plan.rebase, clone)
    }

    fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
        Rebase::run(&plan.rebase, r)
    }
}

/// The missing file, the candidates with the pick marked, and what changes.
pub fn describe(p: &Plan) -> Description {
    let image = crate::forest::model::file_name(&p.rebase.image.path);
    let pick = p.candidates.get(p.pick).map(|(c, _)| c.shown().to_string());
    let mut d = Description::new(format!(
        "Would point {} at {} in place of the missing {}.",
        p.rebase.image.path.shown(),
        pick.unwrap_or_default(),
        p.missing.shown()
    ));
    d.field("missing", p.missing.shown().to_string());
    d.text("Files that could be it:");
    for (i, (c, why)) in p.candidates.iter().enumerate() {
        let mark = if i == p.pick { "→" } else { " " };
        d.then(format!("{mark} {}) {} ({why})", i + 1, c.shown()));
    }
    d.text(format!(
        "Only the header's backing name changes (as qemu-img rebase -u): pick the file that \
         holds what {image} was built on."
    ));
    d
}

/// The repair of `image`'s missing backing file with candidate `pick` of [`find`]'s.
pub fn plan(forest: &Forest, image: NodeId, pick: usize) -> Result<Plan, Refusal> {
    let path = &forest.node(image).path;
    let fix = find(forest)
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
    let req = rebase::Request {
        image,
        backing: Some(candidate.id),
        format: None,
        unsafe_names: true,
        name: kept_relative(forest, image, candidate.id),
        amend: false,
    };
    let rebase = rebase::plan(forest, &req)?;
    Ok(Plan {
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

/// The name to write for `candidate` in `image`'s header: relative to the image's directory
/// when the missing name was relative (a chain moved as a whole keeps working), else `None`
/// (the usual choice: the file name in the same directory, or the absolute path). The name is
/// made from the two paths as written, so it is kept only if, resolved from the image's
/// directory as QEMU resolves it (through any symlinked directory), it reaches the candidate.
pub fn kept_relative(forest: &Forest, image: NodeId, candidate: NodeId) -> Option<String> {
    let n = forest.node(image);
    if Path::new(&n.backing.as_ref()?.raw).is_absolute() {
        return None;
    }
    let dir = n.path.parent()?;
    let target = forest.node(candidate);
    let from: Vec<_> = dir.components().collect();
    let to: Vec<_> = target.path.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    rel.extend(&to[common..]);
    let reaches = crate::image::file::FileId::of_path(&dir.join(&rel));
    (reaches.is_some() && reaches == target.ident).then(|| rel.to_str().map(String::from))?
}
