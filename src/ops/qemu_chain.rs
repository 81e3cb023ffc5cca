//! A chain handed to QEMU's own tools (ARCHITECTURE.md §3, "Features only QEMU handles";
//! §8): every image and external data file opened, identity-checked and locked by imgchain,
//! and the whole chain spelled out as one `json:` name of `/proc/self/fd/N` nodes, so that QEMU
//! opens nothing by a name from a header.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::plan_image::PlanImage;
use super::{Refusal, qemu_tools};
use crate::image::file::{self, OpenMode, Owner};
use crate::image::lock::{Access, ImageLock};
use crate::image::probe::Format;
use crate::text::Names;

/// One image of the chain as QEMU gets it: its fd, its data file's, and our lock.
pub struct Given {
    pub fd: OwnedFd,
    pub data: Option<OwnedFd>,
    format: Format,
    _lock: ImageLock,
}

fn changed(img: &PlanImage, what: String) -> Refusal {
    Refusal::Changed {
        path: img.path.clone(),
        what,
    }
}

/// Opens `img` as the plan saw it (and its external data file, named by its header from the
/// image's directory, only if it is a regular file the image's owner owns), locked for `mode`.
pub fn give(img: &PlanImage, mode: OpenMode) -> Result<Given, Refusal> {
    let fd = file::open_as(&img.path, mode, img.ident)
        .map_err(|e| changed(img, format!("it cannot be opened again: {e}")))?;
    let access = match mode {
        OpenMode::ReadOnly => Access::READ_ONLY,
        OpenMode::ReadWrite => Access::READ_WRITE,
    };
    let lock = ImageLock::acquire(fd.as_fd(), &img.path, access)?;
    let f = File::from(fd.try_clone().map_err(|e| changed(img, e.to_string()))?);
    let len = f.metadata().map_err(|e| changed(img, e.to_string()))?.len();
    let probed = file::read_header(&f, len)
        .map_err(|e| changed(img, e.to_string()))?
        .map_err(|e| changed(img, format!("its header no longer reads: {e}")))?;
    let data = match probed
        .qcow2
        .as_ref()
        .and_then(|h| h.data_file_path(&img.path))
    {
        Some(path) => Some(data_file(img, path, mode)?),
        None => None,
    };
    Ok(Given {
        fd,
        data,
        format: img.format,
        _lock: lock,
    })
}

/// The external data file `name` of `img`, resolved from the image's directory, opened as a
/// regular file and owned by the image's owner (a root-owned file is no tenant's to name).
fn data_file(
    img: &PlanImage,
    path: std::path::PathBuf,
    mode: OpenMode,
) -> Result<OwnedFd, Refusal> {
    let refuse = |what: String| Refusal::Untrusted {
        path: img.path.clone(),
        what: format!(
            "names the external data file {}, which {what}",
            path.shown()
        ),
    };
    let fd = file::open(&path, mode).map_err(|e| refuse(format!("cannot be opened: {e}")))?;
    let owner = Owner::of_fd(&fd).map_err(|e| refuse(e.to_string()))?;
    let image_owner = Owner::of_path(&img.path, img.ident).map_err(|e| refuse(e.to_string()))?;
    if owner.uid != image_owner.uid {
        return Err(refuse(format!(
            "belongs to another user (uid {}) than the image (uid {})",
            owner.uid, image_owner.uid
        )));
    }
    Ok(fd)
}

impl Given {
    /// The image's fds, as one image alone is given to a QEMU tool.
    pub fn fds(&self) -> qemu_tools::Fds<'_> {
        qemu_tools::Fds {
            image: self.fd.as_fd(),
            data: self.data.as_ref().map(AsFd::as_fd),
        }
    }
}

/// The `json:` name of the chain `given` (top first): every node through its fd.
pub fn spec(given: &[Given]) -> String {
    let file = |fd: &OwnedFd| qemu_tools::file_node(fd.as_raw_fd());
    let mut node = serde_json::Value::Null;
    for g in given.iter().rev() {
        let mut n = serde_json::json!({ "driver": g.format.as_str(), "file": file(&g.fd) });
        if g.format == Format::Qcow2 {
            n["backing"] = node;
            if let Some(d) = &g.data {
                n["data-file"] = file(d);
            }
        }
        node = n;
    }
    format!("json:{node}")
}

/// Every fd of `given`, to keep open in qemu-img.
pub fn fds(given: &[Given]) -> Vec<i32> {
    given
        .iter()
        .flat_map(|g| {
            std::iter::once(g.fd.as_raw_fd()).chain(g.data.as_ref().map(|d| d.as_raw_fd()))
        })
        .collect()
}

/// fsyncs an image and its data file.
pub fn sync(g: &Given) -> std::io::Result<()> {
    rustix::fs::fsync(&g.fd)?;
    if let Some(d) = &g.data {
        rustix::fs::fsync(d)?;
    }
    Ok(())
}
