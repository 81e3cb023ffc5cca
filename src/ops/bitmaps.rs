//! Persistent dirty bitmaps carried through a write (ARCHITECTURE.md §3, "Bitmaps"): before an
//! operation writes an image, every range it will write is marked in each bitmap QEMU records
//! writes in, by QEMU's own code (`qemu-img bitmap --merge` from a scratch image whose bitmap
//! `qemu-io` marks), on the image's fd. Marked first, a bitmap never misses a write a power
//! loss keeps; it may mark a range the run then left as it was, which costs a backup a copy.
//! Each mark is read back by `image::bitmaps` before the first data write.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::qemu_tools::{Fds, tool};
use crate::image::bitmaps::{self, Bitmap};
use crate::image::probe::Qcow2Header;

/// Whether the QEMU tools are installed: without them an image with bitmaps is not written.
pub fn tools_found() -> Result<(), String> {
    super::qemu_tools::found(&["qemu-img", "qemu-io"]).map_err(|tool| {
        format!(
            "{tool} is not installed, and imgchain has QEMU's own code mark what it writes in \
             persistent bitmaps; install qemu-utils (qemu-img, qemu-io)"
        )
    })
}

/// A private directory for the scratch image, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let base = std::env::temp_dir();
        for n in 0..100u32 {
            let dir = base.join(format!("imgchain-bitmaps.{}.{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
            }
        }
        Err(format!("no free scratch directory in {}", base.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch image of `size` bytes whose bitmap `m` (of `granularity`) marks `ranges`, checked.
fn marks_image(
    dir: &Path,
    size: u64,
    granularity: u64,
    ranges: &[(u64, u64)],
) -> Result<PathBuf, String> {
    let path = dir.join("marks.qcow2");
    let p = path.to_string_lossy().into_owned();
    tool(
        Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", &p, &size.to_string()]),
        &[],
        "",
    )?;
    let g = granularity.to_string();
    tool(
        Command::new("qemu-img").args(["bitmap", "--add", "-g", &g, &p, "m"]),
        &[],
        "",
    )?;
    let script: String = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|(o, l)| format!("write -z {o} {l}\n"))
        .collect();
    tool(
        Command::new("qemu-io").args(["-f", "qcow2", &p]),
        &[],
        &script,
    )?;
    let file = File::open(&path).map_err(|e| format!("cannot read back {p}: {e}"))?;
    let marked = read_back(&file, "m", ranges)?;
    if !marked {
        return Err(format!("qemu-io did not mark every range in {p}"));
    }
    Ok(path)
}

/// Whether bitmap `name` of the qcow2 image open as `file` marks every range.
fn read_back(file: &File, name: &str, ranges: &[(u64, u64)]) -> Result<bool, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let h = crate::image::file::read_header(file, len)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .qcow2
        .ok_or("not a qcow2 image")?;
    let list = bitmaps::list(file, &h).map_err(|e| e.to_string())?;
    let b = list
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| format!("bitmap {name:?} is gone"))?;
    bitmaps::covers(file, &h, b, ranges).map_err(|e| e.to_string())
}

/// Marks `ranges` (guest bytes) in each of `recording` (bitmaps of the image open as `on`, of
/// virtual size `size`), through QEMU; each is read back. Returns their names.
pub fn mark(
    on: Fds<'_>,
    size: u64,
    recording: &[Bitmap],
    ranges: &[(u64, u64)],
) -> Result<Vec<String>, String> {
    let Some(granularity) = recording.iter().map(|b| b.granularity).min() else {
        return Ok(Vec::new());
    };
    let scratch = Scratch::new()?;
    let marks = marks_image(&scratch.0, size, granularity, ranges)?;
    for b in recording {
        tool(
            Command::new("qemu-img")
                .args(["bitmap", "--merge", "m", "-b"])
                .arg(&marks)
                .args(["-F", "qcow2", &on.spec(), &b.name]),
            &on.raw(),
            "",
        )?;
    }
    let file = File::from(on.image.try_clone_to_owned().map_err(|e| e.to_string())?);
    for b in recording {
        if !read_back(&file, &b.name, ranges)? {
            return Err(format!(
                "bitmap {:?} does not mark every range after the merge",
                b.name
            ));
        }
    }
    Ok(recording.iter().map(|b| b.name.clone()).collect())
}

/// Merges every bitmap of the image open as `from` into the bitmap of the same name of the
/// image open as `into`, adding it there (same granularity, enabled or not) when missing:
/// what libvirt does with a layer it merges away. Returns the names.
pub fn merge_into(
    from: (Fds<'_>, &Qcow2Header),
    into: (Fds<'_>, &Qcow2Header),
) -> Result<Vec<String>, String> {
    let from_file = File::from(
        from.0
            .image
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    );
    let into_file = File::from(
        into.0
            .image
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    );
    let theirs = bitmaps::list(&from_file, from.1).map_err(|e| e.to_string())?;
    let ours = bitmaps::list(&into_file, into.1).map_err(|e| e.to_string())?;
    let (source, target) = (from.0.spec(), into.0.spec());
    let fds: Vec<_> = from.0.raw().into_iter().chain(into.0.raw()).collect();
    for b in theirs.iter().filter(|b| !b.in_use) {
        let mut cmd = Command::new("qemu-img");
        cmd.arg("bitmap");
        if !ours.iter().any(|o| o.name == b.name) {
            cmd.args(["--add", "-g", &b.granularity.to_string()]);
            if !b.enabled {
                cmd.arg("--disable");
            }
        }
        cmd.args(["--merge", &b.name, "-b", &source, &target, &b.name]);
        tool(&mut cmd, &fds, "")?;
    }
    Ok(theirs
        .into_iter()
        .filter(|b| !b.in_use)
        .map(|b| b.name)
        .collect())
}

/// The bitmaps of the image open as `fd` that QEMU records writes in.
pub fn recording(fd: impl AsFd, h: &Qcow2Header) -> Result<Vec<Bitmap>, String> {
    let file = File::from(fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?);
    Ok(bitmaps::list(&file, h)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(Bitmap::recording)
        .collect())
}

/// The qcow2 header of the image open as `fd`, read now (`None`: not qcow2).
pub fn header_of(fd: BorrowedFd<'_>) -> Result<Option<Qcow2Header>, String> {
    let file = File::from(fd.try_clone_to_owned().map_err(|e| e.to_string())?);
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    Ok(crate::image::file::read_header(&file, len)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .qcow2)
}
