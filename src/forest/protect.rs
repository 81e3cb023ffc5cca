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
    /// The globs as written, in the order of each set (to name the rule that matched).
    name_globs: Vec<String>,
    path_globs: Vec<String>,
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
        let (mut name_globs, mut path_globs) = (Vec::new(), Vec::new());
        for g in globs {
            let g = g.as_ref();
            let glob = Glob::new(g).map_err(|source| BadGlob {
                glob: g.to_string(),
                source,
            })?;
            if g.contains('/') {
                paths.add(glob);
                path_globs.push(g.to_string());
            } else {
                names.add(glob);
                name_globs.push(g.to_string());
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
            name_globs,
            path_globs,
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

    /// The rule that protects `path`, in words, whatever this session toggled: `--read-only`
    /// or the first protect glob that matches it.
    pub fn rule_for(&self, path: &Path) -> Option<String> {
        if self.all {
            return Some("--read-only".into());
        }
        let by_name = path
            .file_name()
            .and_then(|n| self.names.matches(n).first().copied())
            .map(|i| &self.name_globs[i]);
        let by_path = || {
            self.paths
                .matches(path)
                .first()
                .map(|&i| &self.path_globs[i])
        };
        by_name
            .or_else(by_path)
            .map(|g| format!("the protect glob \"{g}\""))
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
    fn the_rule_that_protects_is_named() {
        let mut p = Protect::new(false, &["*.golden.qcow2", "/srv/tpl/**"]).unwrap();
        let tpl = Path::new("/srv/tpl/x.qcow2");
        assert_eq!(p.rule_for(tpl).unwrap(), "the protect glob \"/srv/tpl/**\"");
        p.set(tpl, false);
        assert!(!p.matches(tpl));
        assert!(p.rule_for(tpl).is_some(), "the rule is still there");
        assert_eq!(p.rule_for(Path::new("/a/b.qcow2")), None);
        let all = Protect::new(true, &[] as &[&str]).unwrap();
        assert_eq!(all.rule_for(tpl).unwrap(), "--read-only");
    }

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
