//! The module layering of ARCHITECTURE.md §1: no import cycle between the modules of `src/`
//! (each file is a module; a `mod.rs` is its directory's module), none between the top-level
//! modules either, and no terminal library below the UI.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`image::handle`) → source text without its `#[cfg(test)]` part.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.insert(module_name(&root, &p), code_of(&p));
            }
        }
    }
    out
}

fn module_name(root: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The file's code: comments and non-ASCII characters dropped, and everything from the first
/// `#[cfg(test)]` on.
fn code_of(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(|c: char| !c.is_ascii(), " ")
}

/// Every module path `text` refers to through `crate::` or `super::`, resolved from `module`,
/// with `use` groups (`use crate::{a, b::c}`) expanded.
fn references(module: &str, text: &str) -> BTreeSet<String> {
    let children = declared_children(text);
    let mut refs = BTreeSet::new();
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let bytes = flat.as_bytes();
    let mut i = 0;
    while i < flat.len() {
        let rest = &flat[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let after_path = i >= 2 && &flat[i - 2..i] == "::";
        let child = children
            .iter()
            .map(|c| format!("{c}::"))
            .find(|c| boundary && !after_path && rest.starts_with(c.as_str()));
        let start = ["crate::", "super::", "self::"]
            .into_iter()
            .map(String::from)
            .chain(child)
            .find(|s| boundary && rest.starts_with(s.as_str()));
        let Some(start) = start else {
            i += 1;
            continue;
        };
        let mut at_child = false;
        let own: Vec<String> = module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let base: Vec<String> = if start == "crate::" {
            Vec::new()
        } else if start == "self::" {
            own.clone()
        } else if start != "super::" {
            // A child module named without a prefix (`job::spawn` in `ops/mod.rs`).
            at_child = true;
            own.clone()
        } else {
            // `super` of a file module is its parent; of a mod.rs, the mod.rs's parent too
            // (the file is the module, so `super` leaves it).
            let mut m: Vec<String> = module.split("::").map(String::from).collect();
            m.pop();
            m
        };
        let mut base = base;
        let mut at = if at_child { i } else { i + start.len() };
        while flat[at..].starts_with("super::") {
            base.pop();
            at += "super::".len();
        }
        let (paths, used) = expand(&flat[at..]);
        for p in paths {
            let mut full = base.clone();
            full.extend(p.into_iter().filter(|s| s != "self"));
            refs.insert(full.join("::"));
        }
        i = at + used.max(1);
    }
    refs
}

/// Parses a path tail (`a::b::{c, d::e}`) into the paths it names; returns them and the bytes
/// read.
fn expand(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i > start {
            prefix.push(s[start..i].to_string());
        }
        let group = i == 0 && s.starts_with('{');
        if group || s[i..].starts_with("::") {
            if !group {
                i += 2;
            }
            if s[i..].starts_with('{') {
                i += 1;
                let mut out = Vec::new();
                loop {
                    while s[i..].starts_with(' ') || s[i..].starts_with(',') {
                        i += 1;
                    }
                    if i >= b.len() || s[i..].starts_with('}') {
                        i += 1;
                        break;
                    }
                    let (inner, used) = expand(&s[i..]);
                    i += used.max(1);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        out.push(full);
                    }
                }
                return (out, i);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The child modules a file declares (`mod job;`, `pub mod job;`).
fn declared_children(text: &str) -> Vec<String> {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split(';')
        .filter_map(|stmt| {
            let stmt = stmt.trim();
            let tail = stmt.rsplit_once("mod ")?;
            let head = tail.0.trim_end().trim_end_matches("pub(crate)").trim_end();
            let head = head.trim_end_matches("pub").trim();
            let name = tail.1.trim();
            let ident = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            (ident && (head.is_empty() || head.ends_with('}') || head.ends_with(']')))
                .then(|| name.to_string())
        })
        .collect()
}

/// What a module's `pub use` statements make it re-export: name → the full path it stands for.
fn reexports(module: &str, text: &str) -> BTreeMap<String, String> {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let children = declared_children(text).join(";\n mod ");
    let mut out = BTreeMap::new();
    for stmt in flat.split(';') {
        let stmt = stmt.trim();
        let Some(body) = ["pub use ", "pub(crate) use "]
            .iter()
            .find_map(|p| stmt.find(p).map(|at| &stmt[at + p.len()..]))
        else {
            continue;
        };
        let (body, alias) = match body.split_once(" as ") {
            Some((b, a)) if !body.contains('{') => (b, Some(a.trim())),
            _ => (body, None),
        };
        let context = format!("mod {children};\n use {body};");
        for full in references(module, &context) {
            let name = alias.unwrap_or_else(|| full.rsplit("::").next().unwrap_or(""));
            out.insert(name.to_string(), full.clone());
        }
    }
    out
}

/// The module a reference lands in: its longest prefix that is a module, followed through
/// that module's re-exports (`crate::ops::Refusal` is `ops::refusal`'s).
fn owner<'a>(mods: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    let mut path = path.to_string();
    for _ in 0..16 {
        let parts: Vec<&str> = path.split("::").collect();
        let (k, text) = (1..=parts.len())
            .rev()
            .find_map(|n| mods.get_key_value(&parts[..n].join("::")))?;
        let depth = if k.is_empty() {
            0
        } else {
            k.split("::").count()
        };
        let Some(next) = parts.get(depth) else {
            return Some(k);
        };
        match reexports(k, text).get(*next) {
            Some(target) if *target != path => {
                let mut full = target.clone();
                for p in &parts[depth + 1..] {
                    full = format!("{full}::{p}");
                }
                path = full;
            }
            _ => return Some(k),
        }
    }
    None
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn file_graph(mods: &BTreeMap<String, String>) -> Graph {
    let mut g = Graph::new();
    for (m, text) in mods {
        let deps = g.entry(m.clone()).or_default();
        for r in references(m, text) {
            if let Some(o) = owner(mods, &r)
                && o != m
                && !o.is_empty()
            {
                deps.insert(o.to_string());
            }
        }
    }
    g
}

/// Strongly connected components with more than one module: the cycles.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for d in g.get(&n).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    };
    let all: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (k, r) in &all {
        if !r.contains(*k) {
            continue;
        }
        let comp: Vec<String> = all
            .iter()
            .filter(|(o, ro)| r.contains(**o) && ro.contains(*k))
            .map(|(o, _)| (*o).clone())
            .collect();
        if !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

fn explain(g: &Graph, cycle: &[String]) -> String {
    let mut lines = Vec::new();
    for m in cycle {
        for d in g.get(m).into_iter().flatten() {
            if cycle.contains(d) {
                lines.push(format!("  {m} -> {d}"));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn no_import_cycle_between_modules() {
    let mods = modules();
    let g = file_graph(&mods);
    let found = cycles(&g);
    let text: Vec<String> = found.iter().map(|c| explain(&g, c)).collect();
    assert!(found.is_empty(), "import cycles:\n{}", text.join("\n--\n"));
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mods = modules();
    let mut g = Graph::new();
    for (m, deps) in file_graph(&mods) {
        let top = |s: &str| s.split("::").next().unwrap_or("").to_string();
        let entry = g.entry(top(&m)).or_default();
        for d in deps {
            if top(&d) != top(&m) {
                entry.insert(top(&d));
            }
        }
    }
    let found = cycles(&g);
    let text: Vec<String> = found.iter().map(|c| explain(&g, c)).collect();
    assert!(found.is_empty(), "import cycles:\n{}", text.join("\n--\n"));
}

#[test]
fn the_engine_never_touches_the_terminal() {
    for (m, text) in modules() {
        if m.starts_with("tui") || m.is_empty() {
            continue;
        }
        for lib in ["ratatui", "crossterm"] {
            assert!(!text.contains(lib), "{m} uses {lib}");
        }
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut mods = BTreeMap::new();
    mods.insert("a".to_string(), "use crate::b::{X, c::Y};".to_string());
    mods.insert("b".to_string(), String::new());
    mods.insert(
        "b::c".to_string(),
        "fn f() { super::super::a::g() }".to_string(),
    );
    let g = file_graph(&mods);
    assert_eq!(g["a"], BTreeSet::from(["b".into(), "b::c".into()]));
    assert_eq!(g["b::c"], BTreeSet::from(["a".into()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b::c".to_string()]]);
}

#[test]
fn the_checker_follows_re_exports_groups_and_child_paths() {
    let mut mods = BTreeMap::new();
    // `ops` defines `Kind` and re-exports its child's `Job`; the child imports `Kind` back.
    mods.insert(
        "ops".to_string(),
        "pub mod job; pub enum Kind {} pub use job::Job;".to_string(),
    );
    mods.insert("ops::job".to_string(), "use super::{Kind};".to_string());
    mods.insert(
        "ui".to_string(),
        "use crate::ops::Job; fn f() { crate::ops::job::Job::new() }".to_string(),
    );
    let g = file_graph(&mods);
    assert_eq!(g["ops"], BTreeSet::from(["ops::job".into()]));
    assert_eq!(g["ops::job"], BTreeSet::from(["ops".into()]));
    assert_eq!(
        g["ui"],
        BTreeSet::from(["ops::job".into()]),
        "through the re-export"
    );
    assert_eq!(
        cycles(&g),
        vec![vec!["ops".to_string(), "ops::job".to_string()]]
    );
    // With `Kind` in a leaf of its own, the re-export is no cycle.
    mods.insert(
        "ops".to_string(),
        "pub mod job; pub mod kind; pub use job::Job; pub use kind::Kind;".to_string(),
    );
    mods.insert("ops::kind".to_string(), String::new());
    assert!(cycles(&file_graph(&mods)).is_empty());
    // A child module named inline, without `use`, is an edge too.
    mods.insert(
        "ops::kind".to_string(),
        "fn g() { crate::ops::Job::new() }".to_string(),
    );
    mods.insert(
        "ops::job".to_string(),
        "use super::Kind; fn h() { kind::x() }".to_string(),
    );
    assert!(!cycles(&file_graph(&mods)).is_empty());
}
