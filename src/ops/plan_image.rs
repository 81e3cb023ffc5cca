//! One image as a plan saw it, and opening it again for the run with the check that it is
//! still that file (ARCHITECTURE.md §3).

use std::path::PathBuf;
use std::sync::Arc;

use super::Refusal;
use crate::forest::{Forest, NodeId};
use crate::image::file::{FileId, OpenMode};
use crate::image::handle::{Handle, ImageAccess};
use crate::image::probe::Format;

/// An image held with a reader's locks ([`PlanImage::hold`]) until dropped.
#[derive(Debug)]
pub struct Held {
    _file: std::fs::File,
    _lock: crate::image::lock::ImageLock,
}

/// One image taking part in an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanImage {
    pub path: PathBuf,
    pub format: Format,
    pub virtual_size: u64,
    pub ident: FileId,
    /// qcow2 version, for re-checking the header at open time.
    pub version: Option<u32>,
}

/// The advice for what imgchain refuses to write but QEMU can.
pub const QEMU_IMG: &str = "qemu-img can do this for it";

impl PlanImage {
    /// Node `id` as the plan records it.
    pub fn of(forest: &Forest, id: NodeId) -> Result<PlanImage, Refusal> {
        let n = forest.node(id);
        let unsupported = |what: &str| Refusal::Unsupported {
            path: n.path.clone(),
            what: format!("{what}; {QEMU_IMG}"),
        };
        Ok(PlanImage {
            path: n.path.clone(),
            format: n.format.ok_or_else(|| unsupported("could not be read"))?,
            virtual_size: n
                .virtual_size
                .ok_or_else(|| unsupported("has no known virtual size"))?,
            ident: n.ident.ok_or_else(|| unsupported("could not be opened"))?,
            version: n.qcow2.as_ref().map(|h| h.version),
        })
    }

    /// Opens the image with QEMU's locks for `mode` and checks it is the file, of the size,
    /// the plan saw.
    pub fn open(
        &self,
        mode: OpenMode,
        backing: Option<Arc<ImageAccess>>,
    ) -> Result<Handle, Refusal> {
        let changed = |what: String| Refusal::Changed {
            path: self.path.clone(),
            what,
        };
        // Another file under the name is never opened (least of all read-write).
        if crate::image::file::look(&self.path).is_ok_and(|l| l.ident() != self.ident) {
            return Err(changed("the path now names another file".into()));
        }
        let h = Handle::open(
            &self.path,
            self.format,
            mode,
            (true, Some(self.ident)),
            backing,
        )?;
        if h.ident() != self.ident {
            return Err(changed("the path now names another file".into()));
        }
        if h.access().size() != self.virtual_size {
            return Err(changed(format!(
                "its virtual size is now {} bytes, not {}",
                h.access().size(),
                self.virtual_size
            )));
        }
        Ok(h)
    }

    /// Holds it with a reader's QEMU locks without opening it as an image, for an operation
    /// that reads nothing but its header (a snapshot, a header-only rebase), whatever features
    /// it uses: the same file, the same format and virtual size, read from the header now.
    pub fn hold(&self) -> Result<Held, Refusal> {
        use crate::image::file;
        let changed = |what: String| Refusal::Changed {
            path: self.path.clone(),
            what,
        };
        let fd = file::open_as(&self.path, OpenMode::ReadOnly, self.ident)
            .map_err(|e| changed(format!("it cannot be opened again: {e}")))?;
        let lock = crate::image::lock::ImageLock::acquire(
            std::os::fd::AsFd::as_fd(&fd),
            &self.path,
            crate::image::lock::Access::READ_ONLY,
        )?;
        let f = std::fs::File::from(fd);
        let len = f.metadata().map_err(|e| changed(e.to_string()))?.len();
        let probed = file::read_header(&f, len)
            .map_err(|e| changed(e.to_string()))?
            .map_err(|e| changed(format!("its header no longer reads: {e}")))?;
        if probed.format != self.format || probed.virtual_size != Some(self.virtual_size) {
            return Err(changed(format!(
                "its header now says a {} image of {:?} bytes, not {} of {}",
                probed.format, probed.virtual_size, self.format, self.virtual_size
            )));
        }
        Ok(Held {
            _file: f,
            _lock: lock,
        })
    }

    /// Opens it read-only without locks, to read metadata (measuring a plan).
    pub fn peek(&self) -> Result<Handle, Refusal> {
        Ok(Handle::open(
            &self.path,
            self.format,
            OpenMode::ReadOnly,
            (false, Some(self.ident)),
            None,
        )?)
    }
}
