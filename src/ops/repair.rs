//! Repair: for each image whose backing file is missing, the images of the forest that could
//! be that file (ARCHITECTURE.md §3), best first: the same name, then the same size and format;
//! base images before overlays. Applying one is an unsafe rebase (`-u`) onto it, with all
//! of rebase's guards: a candidate of another virtual size is refused there.

use std::path::PathBuf;

use super::guards;
use crate::forest::diag::ProblemKind;
use crate::forest::{Forest, NodeId};

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

/// A missing backing file and what could stand in for it, best first.
#[derive(Clone, Debug)]
pub struct Fix {
    pub image: NodeId,
    /// The path the header's backing name resolves to.
    pub missing: PathBuf,
    pub candidates: Vec<(NodeId, Match)>,
}

/// At most this many candidates per image.
const MOST: usize = 5;

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
        let wanted_name = b.path.file_name();
        let wanted_format = b.format.as_deref();
        let mut candidates: Vec<(NodeId, Match)> = forest
            .nodes
            .iter()
            .enumerate()
            .map(|(j, c)| (NodeId(j), c))
            .filter(|(j, _)| *j != id && !above.contains(j))
            .filter_map(|(j, c)| {
                let same_size = c.virtual_size.is_some() && c.virtual_size == n.virtual_size;
                let same_format =
                    wanted_format.is_none_or(|f| c.format.is_some_and(|cf| cf.as_str() == f));
                let m = if c.path.file_name() == wanted_name && same_format {
                    if same_size {
                        Match::SameNameAndSize
                    } else {
                        Match::SameName
                    }
                } else if same_size && same_format && wanted_format.is_some() {
                    Match::SameSizeAndFormat
                } else {
                    return None;
                };
                Some((j, m))
            })
            .collect();
        // Within a kind of match, base images (no backing file of their own) come first: a
        // moved base is more likely one than some VM's overlay is.
        candidates.sort_by_key(|&(c, m)| {
            let n = forest.node(c);
            (m, n.backing.is_some(), n.path.clone())
        });
        candidates.truncate(MOST);
        fixes.push(Fix {
            image: id,
            missing: b.path.clone(),
            candidates,
        });
    }
    fixes
}
