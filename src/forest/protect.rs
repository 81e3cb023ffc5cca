//! Protect rules: which nodes are keep-RO on request (`--read-only`, `--protect GLOB`, config
//! `protect.globs`).
//!
//! A glob without a `/` matches the file name (`*.golden.qcow2`); a glob with a `/` matches the
//! whole absolute path as the node was found (`/srv/images/templates/**`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::model::Forest;

/// Compiled protect rules.
#[derive(Clone, Debug)]
pub struct Protect {
    all: bool,
    names: GlobSet,
    paths: GlobSet,
    /// Paths protected (`true`) or unprotected (`false`) one by one, over the rules.
    toggled: BTreeMap<PathBuf, bool>,
}

/// A protect glob that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid protect glob \"{glob}\"")]
pub struct BadGlob {
    pub glob: String,
    #[source]
    pub source: globset::Error,
}

impl Protect {
    /// `all` protects every node (`--read-only`); `globs` protect the nodes they match.
    pub fn new<S: AsRef<str>>(all: bool, globs: &[S]) -> Result<Protect, BadGlob> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for g in globs {
            let g = g.as_ref();
            let glob = Glob::new(g).map_err(|source| BadGlob {
                glob: g.to_string(),
                source,
            })?;
            if g.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| BadGlob {
                glob: globs
                    .iter()
                    .map(|g| g.as_ref())
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })
        };
        Ok(Protect {
            all,
            names: build(names)?,
            paths: build(paths)?,
            toggled: BTreeMap::new(),
        })
    }

    /// Protects (or unprotects) the image at `path`, whatever the rules say.
    pub fn set(&mut self, path: &Path, protected: bool) {
        self.toggled.insert(path.to_path_buf(), protected);
    }

    /// Whether a node at `path` is protected.
    pub fn matches(&self, path: &Path) -> bool {
        if let Some(&on) = self.toggled.get(path) {
            return on;
        }
        self.all
            || path.file_name().is_some_and(|n| self.names.is_match(n))
            || self.paths.is_match(path)
    }

    /// Sets every node's `requested` flag from these rules and recomputes all states.
    pub fn apply(&self, forest: &mut Forest) {
        for n in &mut forest.nodes {
            n.requested = self.matches(&n.path);
        }
        forest.apply_state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let p = Protect::new(false, &["*.golden.qcow2", "/srv/tpl/**"]).unwrap();
        assert!(p.matches(Path::new("/a/b/win.golden.qcow2")));
        assert!(p.matches(Path::new("/srv/tpl/x/y.qcow2")));
        assert!(!p.matches(Path::new("/srv/vm/y.qcow2")));
        assert!(!p.matches(Path::new("/a/golden.qcow2.bak")));
        assert!(
            Protect::new(true, &[] as &[&str])
                .unwrap()
                .matches(Path::new("/x"))
        );
    }

    #[test]
    fn bad_glob_names_itself() {
        let e = Protect::new(false, &["a[b"]).unwrap_err();
        assert!(e.to_string().contains("a[b"), "{e}");
    }
}
