//! Filters and sort orders over the forest (the UI's `/` and `s`). A filter is words, all of
//! which must match: plain text matches the path (case-insensitive), and tokens match facts:
//! `is:problem`, `is:inuse`, `is:orphan` (its backing file is missing, or it is a base that
//! nothing uses: no overlay, no process, no libvirt VM names it), `mode:rw|ro|kro`,
//! `fmt:NAME`, `size:>N` / `size:<N` (bytes on disk; N like `10G`, `512M`).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::diag::{ProblemKind, Severity};
use super::model::{Forest, Node, NodeId, Row};
use super::state::Mode;
use crate::text::Names;

/// One word of a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Text(String),
    Problem,
    InUse,
    Orphan,
    Mode(Mode),
    Format(String),
    Larger(u64),
    Smaller(u64),
}

/// A parsed filter: every term must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

/// Bytes from `10G`, `512M`, `64K` or a plain number (powers of 1024).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => {
            let mult: u64 = match s[i..].to_ascii_lowercase().trim_end_matches("ib") {
                "" | "b" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return None,
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

impl Filter {
    /// Parses a filter; an unknown `key:value` token or a bad value is an error that says
    /// what is understood.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for word in text.split_whitespace() {
            let term = match word.split_once(':') {
                Some(("is", "problem" | "problems")) => Term::Problem,
                Some(("is", "inuse" | "in-use" | "used")) => Term::InUse,
                Some(("is", "orphan")) => Term::Orphan,
                Some(("mode", v)) => Term::Mode(match v.to_ascii_lowercase().as_str() {
                    "rw" => Mode::Rw,
                    "ro" => Mode::Ro,
                    "kro" | "keep-ro" => Mode::KeepRo,
                    _ => return Err(format!("mode:{v}? use mode:rw, mode:ro or mode:kro")),
                }),
                Some(("fmt", v)) if !v.is_empty() => Term::Format(v.to_ascii_lowercase()),
                Some(("size", v)) => {
                    let bad = || format!("size:{v}? use size:>10G or size:<512M");
                    match v.split_at_checked(1) {
                        Some((">", n)) => Term::Larger(parse_bytes(n).ok_or_else(bad)?),
                        Some(("<", n)) => Term::Smaller(parse_bytes(n).ok_or_else(bad)?),
                        _ => return Err(bad()),
                    }
                }
                Some((key @ ("is" | "fmt"), v)) => {
                    return Err(format!(
                        "{key}:{v}? use is:problem, is:inuse, is:orphan or fmt:qcow2"
                    ));
                }
                _ => Term::Text(word.to_lowercase()),
            };
            terms.push(term);
        }
        Ok(Filter { terms })
    }

    /// Whether the filter has no terms (everything matches).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The plain-text words, lowercased, for highlighting.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().filter_map(|t| match t {
            Term::Text(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Whether `n` matches every term.
    pub fn matches(&self, n: &Node) -> bool {
        let path = n.path.to_string_lossy().to_lowercase();
        let size = n.allocated.or(n.file_size).unwrap_or(0);
        self.terms.iter().all(|t| match t {
            Term::Text(s) => path.contains(s.as_str()),
            Term::Problem => n.problems.iter().any(|p| p.severity() >= Severity::Warning),
            Term::InUse => n.in_use(),
            Term::Orphan => {
                n.problems
                    .iter()
                    .any(|p| p.kind == ProblemKind::MissingBacking)
                    || (n.backing.is_none()
                        && n.overlays.is_empty()
                        && !n.in_use()
                        && n.vm_disks.is_empty())
            }
            Term::Mode(m) => n.mode == *m,
            Term::Format(f) => n.format.is_some_and(|x| x.as_str() == f),
            Term::Larger(b) => size > *b,
            Term::Smaller(b) => size < *b,
        })
    }
}

/// How roots and siblings are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// By path (the scan's order).
    #[default]
    Name,
    /// Largest on disk first.
    Size,
    /// Most recently modified first.
    Modified,
    /// Images with problems first, then by path.
    Problems,
}

impl Sort {
    /// The next order `s` switches to.
    pub fn next(self) -> Sort {
        match self {
            Sort::Name => Sort::Size,
            Sort::Size => Sort::Modified,
            Sort::Modified => Sort::Problems,
            Sort::Problems => Sort::Name,
        }
    }

    /// How the status line names it.
    pub fn describe(self) -> &'static str {
        match self {
            Sort::Name => "by name",
            Sort::Size => "by size on disk, largest first",
            Sort::Modified => "by modification time, newest first",
            Sort::Problems => "problems first",
        }
    }

    /// Orders two nodes of `forest`.
    pub fn cmp(self, forest: &Forest, a: NodeId, b: NodeId) -> Ordering {
        let (x, y) = (forest.node(a), forest.node(b));
        let by_name = || x.path.cmp(&y.path);
        let size = |n: &Node| n.allocated.or(n.file_size).unwrap_or(0);
        let bad = |n: &Node| n.problems.iter().any(|p| p.severity() >= Severity::Warning);
        match self {
            Sort::Name => by_name(),
            Sort::Size => size(y).cmp(&size(x)).then_with(by_name),
            Sort::Modified => y.modified.cmp(&x.modified).then_with(by_name),
            Sort::Problems => bad(y).cmp(&bad(x)).then_with(by_name),
        }
    }
}

/// The forest's rows with roots and siblings in `sort`'s order.
pub fn rows(forest: &Forest, sort: Sort) -> Vec<Row> {
    match sort {
        Sort::Name => forest.rows(),
        s => forest.rows_ordered(Some(&|a, b| s.cmp(forest, a, b))),
    }
}

/// How a node is named in a tree: the file name for an overlay in its backing file's
/// directory, else its path relative to the scanned path it lies under (whole outside them).
pub fn label(forest: &Forest, scanned: &[PathBuf], id: NodeId) -> String {
    let n = forest.node(id);
    match n.backing_node() {
        Some(b) if forest.node(b).path.parent() == n.path.parent() => n.name(),
        _ => relative(scanned, &n.path),
    }
}

/// `path` relative to the scanned path that contains it, or whole.
pub fn relative(scanned: &[PathBuf], path: &Path) -> String {
    scanned
        .iter()
        .filter_map(|r| path.strip_prefix(r).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .min_by_key(|p| p.as_os_str().len())
        .map_or_else(|| path.shown().to_string(), |p| p.shown().to_string())
}

/// For each node (by id), where its label starts to differ from its siblings' (the other
/// roots, or the other overlays of its backing file), for [`crate::fit::fit`].
pub fn label_starts(forest: &Forest, labels: &[String]) -> Vec<usize> {
    let mut starts = vec![0; forest.nodes.len()];
    let groups = std::iter::once(&forest.roots).chain(forest.nodes.iter().map(|n| &n.overlays));
    for group in groups.filter(|g| g.len() > 1) {
        let names: Vec<String> = group.iter().map(|id| labels[id.0].clone()).collect();
        for (id, start) in group.iter().zip(crate::fit::distinct_starts(&names)) {
            starts[id.0] = start;
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::model::Node;
    use std::path::PathBuf;

    fn node(path: &str, size: u64) -> Node {
        let mut n = Node::new(PathBuf::from(path));
        n.file_size = Some(size);
        n.format = Some(crate::image::probe::Format::Qcow2);
        n.mode = Mode::Rw;
        n
    }

    #[test]
    fn tokens_combine_and_bad_ones_say_what_is_understood() {
        let n = node("/vm/Web01.qcow2", 12 << 30);
        assert!(
            Filter::parse("web size:>10G fmt:qcow2")
                .unwrap()
                .matches(&n)
        );
        assert!(!Filter::parse("web size:<10G").unwrap().matches(&n));
        assert!(!Filter::parse("db").unwrap().matches(&n));
        assert!(Filter::parse("mode:rw").unwrap().matches(&n));
        assert!(!Filter::parse("is:inuse").unwrap().matches(&n));
        assert!(
            Filter::parse("is:orphan").unwrap().matches(&n),
            "a standalone image nothing uses"
        );
        let mut used = node("/vm/disk.qcow2", 1 << 30);
        used.vm_disks.push(super::super::model::VmDisk {
            domain: "web".into(),
            target: "vda".into(),
            definition: "/etc/libvirt/qemu/web.xml".into(),
        });
        assert!(!Filter::parse("is:orphan").unwrap().matches(&used));
        assert!(Filter::parse("").unwrap().is_empty());
        assert!(Filter::parse("mode:xx").unwrap_err().contains("mode:rw"));
        assert!(Filter::parse("is:big").unwrap_err().contains("is:problem"));
        assert!(Filter::parse("size:10G").unwrap_err().contains("size:>10G"));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("7"), Some(7));
        assert_eq!(parse_bytes("x"), None);
    }
}
