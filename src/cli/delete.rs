//! `imgchain delete`.

use anyhow::Context;

use imgchain::ops::OpKind;
use imgchain::text::Names;

use super::args::DeleteArgs;
use super::failure::{Failure, usage};
use super::runner::{discover, dry_run, refused, refused_found, run_planned};
use super::session::Session;

pub(crate) fn delete(ctx: &Session, a: DeleteArgs) -> Result<u8, Failure> {
    use imgchain::ops::delete::{self, Request};
    let md = std::fs::symlink_metadata(&a.image)
        .with_context(|| format!("cannot delete {}", a.image.shown()))?;
    if md.file_type().is_symlink() {
        let target = std::fs::canonicalize(&a.image).unwrap_or_default();
        return Err(usage(anyhow::anyhow!(
            "{} is a symlink to {}: name the image itself to delete it, or remove the link with rm",
            a.image.shown(),
            target.shown()
        )));
    }
    let found = match discover(ctx, &a.image, &a.scan)? {
        Ok(f) => f,
        Err(e) => return Ok(refused(&e, a.json)),
    };
    let req = Request {
        image: found.image,
        with_overlays: a.with_overlays,
        force: a.force,
    };
    let plan = match delete::plan(&found.scan.forest, &req) {
        Ok(p) => p,
        Err(e) => return Ok(refused_found(&e, &found, a.json)),
    };
    if a.dry_run {
        let space = Some(delete::space(&plan).describe());
        let image = found.scan.forest.node(found.image).path.clone();
        let d = delete::describe(&plan);
        return Ok(dry_run(OpKind::Delete, &image, &d, space, &found, a.json));
    }
    if plan.images.len() > 1 && !a.json {
        let list: Vec<String> = plan
            .images
            .iter()
            .map(|i| i.path.shown().to_string())
            .collect();
        eprintln!("Deleting, in this order: {}", list.join(", "));
    }
    run_planned::<delete::Delete>(ctx, &plan, false, a.json)
}
