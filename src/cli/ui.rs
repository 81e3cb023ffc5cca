//! The interactive UI, on the given paths or on the demo forest.

use std::path::PathBuf;

use anyhow::Context;

use imgchain::exit;
use imgchain::forest::Protect;
use imgchain::ops::settings::Settings;
use imgchain::text::Names;

use super::failure::{Failure, usage};
use super::session::Session;

/// Opens the interactive UI on `paths`, or on the demo forest.
/// Runs the UI; the exit code is that of a commit the user quit during, else 0.
pub(crate) fn ui(
    ctx: &Session,
    paths: Vec<PathBuf>,
    demo: bool,
    dir: Option<PathBuf>,
) -> Result<u8, Failure> {
    let mut engine = Settings::clone(&ctx.settings);
    use imgchain::tui;
    let mut protect_globs = ctx.protect_globs.clone();
    // Kept alive until the UI exits: a temporary demo directory is removed then.
    let mut _temp = None;
    let mut scan = ctx.scan_options();
    let roots = if demo {
        let spec = imgchain::demo::spec().context("the built-in demo description is broken")?;
        let dir = match dir {
            Some(d) => {
                std::path::absolute(&d).with_context(|| format!("cannot resolve {}", d.shown()))?
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("imgchain-demo-")
                    .tempdir()
                    .context("cannot create a temporary directory for the demo")?;
                let p = t.path().join("demo");
                _temp = Some(t);
                p
            }
        };
        imgchain::demo::build(&dir, &spec)
            .with_context(|| format!("cannot build the demo in {}", dir.shown()))?;
        protect_globs.extend(spec.protect);
        scan.overlay_dirs.push(imgchain::demo::elsewhere(&dir));
        engine.overlay_dirs.push(imgchain::demo::elsewhere(&dir));
        vec![dir]
    } else if paths.is_empty() {
        vec![std::env::current_dir().context("cannot read the current directory")?]
    } else {
        paths
            .iter()
            .map(|p| {
                std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.shown()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    for r in &roots {
        std::fs::metadata(r).with_context(|| format!("cannot scan {}", r.shown()))?;
    }
    let protect = Protect::new(ctx.read_only, &protect_globs).map_err(usage)?;
    let settings = tui::app::Settings {
        roots,
        keymap: tui::keymap::Keymap::new(&ctx.config.keys),
        theme: tui::theme::Theme::new(&ctx.config.theme, ctx.colour_ui),
        protect,
        keep_top: ctx.config.commit.keep_top,
        snapshot_cluster: ctx.config.snapshot.cluster_size.0,
        read_only: ctx.read_only,
    };
    let report = tui::run(tui::Options {
        settings,
        workers: tui::Workers {
            scan,
            settings: std::sync::Arc::new(engine),
        },
    })?;
    Ok(match report {
        Some((summary, code)) => {
            println!("{summary}");
            code
        }
        None => exit::OK,
    })
}
