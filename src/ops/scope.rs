//! Where an operation looks for the images its guards must know about (ARCHITECTURE.md §3).
//! The UI and the CLI plan from the same [`discover`], so a narrow or stale view can never
//! hide another VM's overlay: the directories of the image and of every image in its chain,
//! the directories the user named (`--scan`, the UI's paths), and every place of the
//! dependents search.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Refusal;
use super::dependents::{self, Searched};
use super::guards::descendants;
use super::plan_image::PlanImage;
use super::settings::Settings;
use crate::forest::{NodeId, Protect, Scan, ScanOptions};
use crate::image::file::FileId;
use crate::text::Names;

/// What to scan around an image.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Directories searched besides those of the chain.
    pub dirs: Vec<PathBuf>,
    /// How deep to look under each of them.
    pub scan: ScanOptions,
    /// What is keep-RO on request.
    pub protect: Protect,
    /// The session's settings: where images built on the chain are looked for besides, and
    /// how a copy may move data (for the space a plan needs).
    pub settings: Arc<Settings>,
}

/// A fresh scan around one image.
pub struct Discovered {
    pub scan: Scan,
    /// The image's node.
    pub image: NodeId,
    /// Where images built on it were looked for, and what was found there.
    pub searched: Vec<Searched>,
}

/// Scans `image`'s directory and `scope.dirs`, then again with the directory of every image
/// in its backing chain and every place the dependents search looks
/// ([`dependents::places`]), and applies `scope.protect`.
pub fn discover(image: &Path, scope: &Scope) -> Result<Discovered, Refusal> {
    let failed = |what: String| Refusal::Scan {
        path: image.to_path_buf(),
        what,
    };
    let lost = || failed(format!("{} was not found after scanning it", image.shown()));
    let mut paths = vec![image.to_path_buf()];
    paths.extend(image.parent().map(PathBuf::from));
    paths.extend(scope.dirs.iter().cloned());
    let scan_all = |paths: &[PathBuf], opts: &ScanOptions| {
        let mut scan = crate::forest::scan(paths, opts).map_err(|e| failed(e.to_string()))?;
        scope.protect.apply(&mut scan.forest);
        Ok::<_, Refusal>(scan)
    };
    let narrow = ScanOptions {
        overlay_dirs: Vec::new(),
        ..scope.scan.clone()
    };
    let first = scan_all(&paths, &narrow)?;
    let id = first.forest.find(image).ok_or_else(lost)?;
    paths.extend(
        first
            .forest
            .chain(id)
            .filter_map(|c| first.forest.node(c).path.parent().map(PathBuf::from)),
    );
    let mut dirs: Vec<PathBuf> = paths[1..].to_vec();
    dirs.sort();
    dirs.dedup();
    let mut searched: Vec<Searched> = dirs
        .iter()
        .map(|d| place("scanned", d))
        .chain(
            scope
                .scan
                .overlay_dirs
                .iter()
                .map(|d| place("overlay_dirs", d)),
        )
        .collect();
    searched.extend(dependents::places(&dirs, &scope.settings.search).map_err(failed)?);
    let mut opts = scope.scan.clone();
    opts.overlay_dirs = searched
        .iter()
        .filter(|s| s.kind != "scanned")
        .flat_map(|s| s.paths.iter().cloned())
        .collect();
    let scan = scan_all(&paths, &opts)?;
    let id = scan.forest.find(image).ok_or_else(lost)?;
    dependents::fill(&mut searched, &scan.forest, id);
    searched.extend(outside(&scan, id, image, scope));
    Ok(Discovered {
        scan,
        image: id,
        searched,
    })
}

/// The images of `id`'s chain reached only through names in headers: outside the tree around
/// `image`, the paths the user named and the overlay directories.
fn outside(scan: &Scan, id: NodeId, image: &Path, scope: &Scope) -> Vec<Searched> {
    let mut asked: Vec<&Path> = scope.dirs.iter().map(PathBuf::as_path).collect();
    asked.extend(scope.scan.overlay_dirs.iter().map(PathBuf::as_path));
    asked.extend(image.parent());
    asked.extend(image.parent().and_then(dependents::around));
    scan.forest
        .chain(id)
        .map(|c| &scan.forest.node(c).path)
        .filter(|path| !asked.iter().any(|a| path.starts_with(a)))
        .map(|path| Searched {
            kind: dependents::OUTSIDE,
            place: path.shown().to_string(),
            paths: Vec::new(),
            found: Vec::new(),
        })
        .collect()
}

fn place(kind: &'static str, dir: &Path) -> Searched {
    Searched {
        kind,
        place: dir.shown().to_string(),
        paths: vec![dir.to_path_buf()],
        found: Vec::new(),
    }
}

/// The shared-base guard again, right before the first write, on a fresh scan of the
/// directories of every image `involved`: an overlay of `written` that is not involved, not
/// built on one of `spared`, and not among the `accepted` ones the plan was forced over —
/// created since, or outside what the plan's scan saw — refuses the run, even with `--force`.
pub fn recheck_overlays(
    (written, involved): (&PlanImage, &[&PlanImage]),
    spared: &[&PlanImage],
    accepted: &[PathBuf],
    settings: &Settings,
) -> Result<(), Refusal> {
    let mut dirs: Vec<PathBuf> = involved
        .iter()
        .filter_map(|i| i.path.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    let changed = |what: String| Refusal::Changed {
        path: written.path.clone(),
        what,
    };
    let mut overlay_dirs = settings.overlay_dirs.clone();
    for p in dependents::places(&dirs, &settings.search).map_err(changed)? {
        overlay_dirs.extend(p.paths);
    }
    let opts = ScanOptions {
        max_depth: 0,
        overlay_dirs,
        ..Default::default()
    };
    let scan = crate::forest::scan(&dirs, &opts)
        .map_err(|e| changed(format!("it could not be scanned again: {e}")))?;
    let forest = &scan.forest;
    let Some(base) = forest.find(&written.path) else {
        return Err(changed("it is gone".into()));
    };
    let mut known: HashSet<FileId> = involved.iter().map(|i| i.ident).collect();
    known.extend(accepted.iter().filter_map(|p| FileId::of_path(p)));
    for s in spared {
        if let Some(top) = forest.find(&s.path) {
            known.extend(
                descendants(forest, top)
                    .into_iter()
                    .filter_map(|d| forest.node(d).ident),
            );
        }
    }
    let mut others: Vec<PathBuf> = descendants(forest, base)
        .into_iter()
        .map(|d| forest.node(d))
        .filter(|n| n.ident.is_none_or(|i| !known.contains(&i)))
        .map(|n| n.path.clone())
        .collect();
    others.sort();
    if others.is_empty() {
        Ok(())
    } else {
        Err(Refusal::SharedBase {
            base: written.path.clone(),
            others,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::create::{NewImage, create};
    use crate::image::probe::Format;

    #[test]
    fn the_run_s_recheck_finds_an_overlay_that_appeared_in_an_overlay_directory() {
        // Apart, so that the search around the pool does not find the other VM's disk.
        let (tmp, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (pool, vms) = (tmp.path().join("pool"), elsewhere.path().join("vms"));
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::create_dir_all(&vms).unwrap();
        let base = pool.join("base.qcow2");
        create(&base, &NewImage::qcow2(1 << 20)).unwrap();
        let overlay = |path: &Path| {
            let name = base.to_string_lossy().into_owned();
            let new = NewImage {
                backing: Some((&name, Format::Qcow2)),
                ..NewImage::qcow2(1 << 20)
            };
            create(path, &new).unwrap();
        };
        let top = pool.join("top.qcow2");
        overlay(&top);
        let opts = ScanOptions {
            max_depth: 0,
            ..Default::default()
        };
        let forest = crate::forest::scan(std::slice::from_ref(&pool), &opts)
            .unwrap()
            .forest;
        let image = |p: &Path| PlanImage::of(&forest, forest.find(p).unwrap()).unwrap();
        let (b, t) = (image(&base), image(&top));
        // Another VM's disk on the base appears in a directory of scan.overlay_dirs.
        let other = vms.join("other.qcow2");
        overlay(&other);
        let mut settings = Settings::default();
        let written = (&b, &[&b, &t][..]);
        assert!(recheck_overlays(written, &[&t], &[], &settings).is_ok());
        settings.overlay_dirs = vec![vms.clone()];
        let e = recheck_overlays(written, &[&t], &[], &settings).unwrap_err();
        // One the user accepted (--force over it) passes.
        let accepted = recheck_overlays(written, &[&t], std::slice::from_ref(&other), &settings);
        assert!(accepted.is_ok(), "{accepted:?}");
        assert!(
            matches!(&e, Refusal::SharedBase { others, .. } if others.as_slice() == std::slice::from_ref(&other)),
            "{e}"
        );
    }
}
