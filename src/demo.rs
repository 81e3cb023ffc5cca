//! `--demo`: builds the sample forest described in `assets/demo.toml` with imago.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::create::{NewImage, create, write};
use crate::image::probe::Format;
use crate::text::Names;

/// The embedded description.
pub const SPEC: &str = include_str!("../assets/demo.toml");

/// A file that marks a directory as a demo imgchain built (and may build again).
const MARKER: &str = ".imgchain-demo";

/// The demo description: protect globs and the images to build.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Globs protected (keep-RO) in the demo.
    pub protect: Vec<String>,
    pub image: Vec<ImageSpec>,
    /// Overlays built in the directory beside the demo ([`elsewhere`]), found through
    /// `scan.overlay_dirs`; their backing names are relative to the demo directory and are
    /// written absolute.
    #[serde(default)]
    pub elsewhere: Vec<ImageSpec>,
}

/// The directory beside `dir` that holds the demo's overlays kept apart: `DIR-elsewhere`.
pub fn elsewhere(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push("-elsewhere");
    dir.with_file_name(name)
}

/// One image of the demo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub path: String,
    #[serde(default = "qcow2")]
    pub format: String,
    pub size: String,
    pub backing: Option<String>,
    pub backing_format: Option<String>,
    #[serde(default)]
    pub writes: Vec<(String, String, u8)>,
    pub mode: Option<u32>,
}

fn qcow2() -> String {
    "qcow2".into()
}

fn bytes(s: &str) -> io::Result<u64> {
    crate::config::parse_size(s).map_err(io::Error::other)
}

fn format(name: &str) -> io::Result<Format> {
    Format::from_name(name)
        .filter(|f| matches!(f, Format::Qcow2 | Format::Raw))
        .ok_or_else(|| {
            io::Error::other(format!("the demo builds qcow2 and raw images, not {name}"))
        })
}

/// Parses the embedded description.
pub fn spec() -> io::Result<Spec> {
    toml::from_str(SPEC).map_err(|e| io::Error::other(format!("assets/demo.toml: {e}")))
}

/// Builds the demo forest in `dir` (created if needed). A directory that already holds a
/// demo is kept as it is; any other non-empty directory is refused, so nothing is overwritten.
pub fn build(dir: &Path, spec: &Spec) -> io::Result<()> {
    let apart = elsewhere(dir);
    for d in [dir, &apart] {
        std::fs::create_dir_all(d)?;
    }
    if dir.join(MARKER).exists() {
        return Ok(());
    }
    for d in [dir, &apart] {
        if std::fs::read_dir(d)?.next().is_some() {
            return Err(io::Error::other(format!(
                "{} is not empty; give --dir a new or empty directory (the demo also uses {})",
                d.shown(),
                apart.shown()
            )));
        }
    }
    for img in &spec.image {
        make(dir, img, img.backing.clone())?;
    }
    for img in &spec.elsewhere {
        let backing = img
            .backing
            .as_ref()
            .map(|b| dir.join(b).to_string_lossy().into_owned());
        make(&apart, img, backing)?;
    }
    std::fs::write(dir.join(MARKER), "built by imgchain --demo\n")
}

/// Builds one image of the spec under `dir`, with `backing` as its backing name.
fn make(dir: &Path, img: &ImageSpec, backing: Option<String>) -> io::Result<()> {
    let path: PathBuf = dir.join(&img.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let fmt = format(&img.format)?;
    let backing_fmt = format(img.backing_format.as_deref().unwrap_or("qcow2"))?;
    let new = NewImage {
        format: fmt,
        virtual_size: bytes(&img.size)?,
        backing: backing.as_deref().map(|b| (b, backing_fmt)),
        cluster_size: 64 << 10,
    };
    create(&path, &new)?;
    for (off, len, byte) in &img.writes {
        let data = vec![*byte; usize::try_from(bytes(len)?).map_err(io::Error::other)?];
        write(&path, fmt, bytes(off)?, &data)?;
    }
    if let Some(mode) = img.mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_spec_parses_and_builds() {
        let s = spec().unwrap();
        assert!(s.image.len() >= 14);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        build(&dir, &s).unwrap();
        let scan = crate::forest::scan(std::slice::from_ref(&dir), &Default::default()).unwrap();
        assert_eq!(scan.forest.nodes.len(), s.image.len());
        let opts = crate::forest::ScanOptions {
            overlay_dirs: vec![elsewhere(&dir)],
            ..Default::default()
        };
        let scan = crate::forest::scan(std::slice::from_ref(&dir), &opts).unwrap();
        assert_eq!(scan.forest.nodes.len(), s.image.len() + s.elsewhere.len());
        // Built again: kept as it is.
        build(&dir, &s).unwrap();
        // A foreign non-empty directory is refused.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("x"), "x").unwrap();
        assert!(build(other.path(), &s).is_err());
    }
}
