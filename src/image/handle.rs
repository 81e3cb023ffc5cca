//! An open image: our own fd, its identity, its mode, its QEMU locks and imago's access.
//!
//! A handle changes mode (RO ↔ RW) only through a reopen transaction, which fixes what the
//! 2010 review of QEMU's "readonly changes" found:
//! - the new fd is opened through `/proc/self/fd/N` of the held one, never by name, and its
//!   `(st_dev, st_ino)` must equal the handle's: a renamed or replaced file is never touched;
//! - the old fd stays open and locked until the new one is ready, so a failed reopen leaves
//!   the handle exactly as it was ([`Handle::abort_reopen`]);
//! - before a RW → RO reopen the old access is flushed and fsynced, and the header is re-read
//!   through the new fd and checked, so the new handle never sees stale metadata;
//! - lock bytes are copied onto the new description before the old one lets go.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};

use super::file::{self, FileId, OpenMode};
use super::ordered::Ordered;
use super::probe::{self, Format};
use crate::image::lock::{Access, ImageLock, LockError};
use crate::text::Names;

/// The lock bytes an open in `mode` holds.
fn access(mode: OpenMode) -> Access {
    match mode {
        OpenMode::ReadOnly => Access::READ_ONLY,
        OpenMode::ReadWrite => Access::READ_WRITE,
    }
}

/// The step of a reopen that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReopenStep {
    /// Flushing and fsyncing the old access (RW → RO only).
    Flush,
    /// Opening the new fd through /proc/self/fd.
    Open,
    /// The new fd is not the same file.
    Identity,
    /// Taking or copying QEMU lock bytes.
    Locks,
    /// Re-reading and checking the header through the new fd.
    Header,
}

impl fmt::Display for ReopenStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReopenStep::Flush => "flushing the image",
            ReopenStep::Open => "opening the new handle",
            ReopenStep::Identity => "checking the new handle is the same file",
            ReopenStep::Locks => "moving the QEMU locks",
            ReopenStep::Header => "re-reading the header",
        })
    }
}

/// Opening an image failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {} {mode}: {source}", path.shown())]
    Io {
        path: PathBuf,
        mode: OpenMode,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// A reopen failed; the handle is exactly as it was before.
#[derive(Debug, thiserror::Error)]
#[error("could not reopen {} {to}: {step} failed: {detail}; it stays {from}", path.shown())]
pub struct ReopenError {
    pub path: PathBuf,
    pub from: OpenMode,
    pub to: OpenMode,
    pub step: ReopenStep,
    pub detail: String,
    /// The conflicting holder, when the locks step failed because another process holds them.
    #[source]
    pub lock: Option<Box<LockError>>,
}

/// imago's access to an image through one of our fds, with writes ordered for crash safety.
pub type ImageAccess = FormatAccess<Ordered>;

/// An open image.
pub struct Handle {
    path: PathBuf,
    format: Format,
    ident: FileId,
    mode: OpenMode,
    /// Our own duplicate of the fd imago uses: the source of `/proc/self/fd/N` for reopens.
    fd: OwnedFd,
    /// Shared only when this image serves as another handle's backing (then never written).
    access: Arc<ImageAccess>,
    /// The storage layer under `access`.
    storage: Ordered,
    /// The backing image's access, for copy-on-write of partial clusters; kept to rebuild
    /// the access on reopen.
    backing: Option<Arc<ImageAccess>>,
    lock: Option<ImageLock>,
    /// Reopened read-write, the image keeps its persistent bitmaps valid ([`Handle::keep_bitmaps`]).
    keep_bitmaps: bool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("ident", &self.ident)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A new fd and access, ready to replace a handle's ([`Handle::commit_reopen`]) or to be
/// dropped ([`Handle::abort_reopen`]).
pub struct Prepared {
    mode: OpenMode,
    fd: OwnedFd,
    access: Arc<ImageAccess>,
    storage: Ordered,
    lock: Option<ImageLock>,
}

/// Builds imago's access over a duplicate of `fd`. Nothing is opened by name: the backing
/// image is the given access (or none), and external data files are never followed.
fn imago_access(
    fd: &OwnedFd,
    path: &Path,
    format: Format,
    mode: OpenMode,
    backing: Option<Arc<ImageAccess>>,
    keep_bitmaps: bool,
) -> io::Result<(ImageAccess, Ordered)> {
    let file = std::fs::File::from(fd.try_clone()?);
    let writable = mode == OpenMode::ReadWrite;
    let opts = StorageOpenOptions::new().filename(path).write(writable);
    let storage = Ordered::new(
        ImagoFile::from_open_file(file, opts)?,
        fd.try_clone()?,
        format == Format::Qcow2,
        keep_bitmaps && writable,
    )?;
    let gate = DenyImplicitOpenGate::default();
    match format {
        Format::Qcow2 => {
            let q = Qcow2::<Ordered, Arc<ImageAccess>>::builder(storage.clone())
                .write(writable)
                .backing(backing)
                .data_file(None)
                .open(gate)?;
            Ok((FormatAccess::new(q), storage))
        }
        Format::Raw => {
            let r = Raw::<Ordered>::builder(storage.clone())
                .write(writable)
                .open(gate)?;
            Ok((FormatAccess::new(r), storage))
        }
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{other} images cannot be opened for commit"),
        )),
    }
}

/// Re-reads and probes the header of the file behind `fd`; it must still be `format`.
fn reread_header(fd: &OwnedFd, format: Format) -> Result<probe::Probed, String> {
    let file = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?);
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    match file::read_header(&file, len).map_err(|e| e.to_string())? {
        Ok(p) if p.format == format => Ok(p),
        Ok(p) => Err(format!("the file now reads as {}, not {format}", p.format)),
        Err(e) => Err(e.to_string()),
    }
}

impl Handle {
    /// Opens `path` as a `format` image in `mode`, taking QEMU's locks for that mode when
    /// `lock` is set; with `expect`, only if the path names that file (checked before it is
    /// opened). `backing` is the image's backing file, already open (qcow2 only); without it,
    /// partial-cluster writes would fill the rest of the cluster with zeroes.
    pub fn open(
        path: &Path,
        format: Format,
        mode: OpenMode,
        (lock, expect): (bool, Option<file::FileId>),
        backing: Option<Arc<ImageAccess>>,
    ) -> Result<Handle, OpenError> {
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            mode,
            source,
        };
        let fd = match expect {
            Some(id) => file::open_as(path, mode, id),
            None => file::open(path, mode),
        }
        .map_err(io)?;
        let ident = file::identity(&fd).map_err(io)?;
        let lock = if lock {
            Some(ImageLock::acquire(fd.as_fd(), path, access(mode))?)
        } else {
            None
        };
        let (access, storage) =
            imago_access(&fd, path, format, mode, backing.clone(), false).map_err(io)?;
        Ok(Handle {
            path: path.to_path_buf(),
            format,
            ident,
            mode,
            fd,
            access: Arc::new(access),
            storage,
            backing,
            lock,
            keep_bitmaps: false,
        })
    }

    /// Keeps the image's persistent bitmaps valid when it is next written: the caller has
    /// marked in every recording bitmap each range it will write (`ops::bitmaps`). Without
    /// this, a read-write reopen leaves them invalid (imago clears the autoclear bits).
    pub fn keep_bitmaps(&mut self) {
        self.keep_bitmaps = true;
    }

    /// The open file, for the QEMU tools that write what imago cannot (`ops::bitmaps`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path the image was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The image format.
    pub fn format(&self) -> Format {
        self.format
    }
    /// How the file is open now.
    pub fn mode(&self) -> OpenMode {
        self.mode
    }
    /// `(st_dev, st_ino)` of the open file.
    pub fn ident(&self) -> FileId {
        self.ident
    }
    /// imago's access for reading and writing guest data.
    pub fn access(&self) -> &ImageAccess {
        &self.access
    }
    /// Mutable access (discards and resizes need it); fails while the access is shared as
    /// another image's backing.
    pub fn access_mut(&mut self) -> io::Result<&mut ImageAccess> {
        Arc::get_mut(&mut self.access).ok_or_else(|| {
            io::Error::other("the image is open as another image's backing and cannot be changed")
        })
    }

    /// The access, shared, to serve as another image's backing.
    pub fn shared_access(&self) -> Arc<ImageAccess> {
        Arc::clone(&self.access)
    }

    /// The ordered storage layer under the access: the dirty bit, hole punching, sync counts.
    pub fn storage(&self) -> &Ordered {
        &self.storage
    }

    /// Flushes imago's caches and fsyncs the file.
    pub fn flush(&self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }

    /// Prepares a reopen in `to` mode. On error the handle is unchanged (its locks included).
    pub fn prepare_reopen(&mut self, to: OpenMode) -> Result<Prepared, ReopenError> {
        let from = self.mode;
        let path = self.path.clone();
        let fail = |step, detail: String, lock: Option<LockError>| ReopenError {
            path: path.clone(),
            from,
            to,
            step,
            detail,
            lock: lock.map(Box::new),
        };
        if to == OpenMode::ReadOnly && from == OpenMode::ReadWrite {
            if fault::hit(ReopenStep::Flush, to) {
                return Err(fail(ReopenStep::Flush, "injected fault".into(), None));
            }
            self.flush()
                .map_err(|e| fail(ReopenStep::Flush, e.to_string(), None))?;
        }
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        if fault::hit(ReopenStep::Open, to) {
            return Err(fail(ReopenStep::Open, "injected fault".into(), None));
        }
        let fd =
            file::open(&proc_path, to).map_err(|e| fail(ReopenStep::Open, e.to_string(), None))?;
        let ident =
            file::identity(&fd).map_err(|e| fail(ReopenStep::Identity, e.to_string(), None))?;
        if ident != self.ident || fault::hit(ReopenStep::Identity, to) {
            return Err(fail(
                ReopenStep::Identity,
                format!("the reopened file is {ident}, not {}", self.ident),
                None,
            ));
        }
        let (lock, upgraded) = self.reopen_lock(&fd, to, &fail)?;
        let undo_lock = |h: &mut Handle| {
            if upgraded && let Some(l) = &mut h.lock {
                let _ = l.change(Access::READ_ONLY);
            }
        };
        if to == OpenMode::ReadOnly {
            let header = if fault::hit(ReopenStep::Header, to) {
                Err("injected fault".to_string())
            } else {
                reread_header(&fd, self.format)
            };
            if let Err(detail) = header {
                drop(lock);
                undo_lock(self);
                return Err(fail(ReopenStep::Header, detail, None));
            }
        }
        let access = imago_access(
            &fd,
            &self.path,
            self.format,
            to,
            self.backing.clone(),
            self.keep_bitmaps,
        );
        match access {
            Ok((access, storage)) => Ok(Prepared {
                mode: to,
                fd,
                access: Arc::new(access),
                storage,
                lock,
            }),
            Err(e) => {
                drop(lock);
                undo_lock(self);
                Err(fail(ReopenStep::Header, e.to_string(), None))
            }
        }
    }

    /// The reopen's lock step: RO → RW upgrades our lock in place first (this is where
    /// another process's lock refuses us), then copies it onto the new description `fd`;
    /// RW → RO copies the RW bytes, narrowed once the old description is gone
    /// (`commit_reopen`). The copy, and whether the old lock was upgraded.
    fn reopen_lock(
        &mut self,
        fd: &OwnedFd,
        to: OpenMode,
        fail: &dyn Fn(ReopenStep, String, Option<LockError>) -> ReopenError,
    ) -> Result<(Option<ImageLock>, bool), ReopenError> {
        let mut upgraded = false;
        let lock = match &mut self.lock {
            None => None,
            Some(l) => {
                if fault::hit(ReopenStep::Locks, to) {
                    return Err(fail(ReopenStep::Locks, "injected fault".into(), None));
                }
                if to == OpenMode::ReadWrite && l.access() != Access::READ_WRITE {
                    l.change(Access::READ_WRITE).map_err(|e| {
                        fail(
                            ReopenStep::Locks,
                            e.to_string().lines().next().unwrap_or("").into(),
                            Some(e),
                        )
                    })?;
                    upgraded = true;
                }
                match l.duplicate_onto(fd.as_fd()) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        if upgraded {
                            let _ = l.change(Access::READ_ONLY);
                        }
                        return Err(fail(ReopenStep::Locks, e.to_string(), Some(e)));
                    }
                }
            }
        };
        Ok((lock, upgraded))
    }

    /// Swaps in the prepared fd and access and drops the old ones.
    pub fn commit_reopen(&mut self, p: Prepared) {
        self.mode = p.mode;
        self.fd = p.fd;
        self.access = p.access;
        self.storage = p.storage;
        let old_lock = std::mem::replace(&mut self.lock, p.lock);
        drop(old_lock);
        if let Some(l) = &mut self.lock {
            // Only our new description holds bytes now; narrowing cannot conflict with us.
            let _ = l.change(access(p.mode));
        }
    }

    /// Drops a prepared reopen and keeps the handle as it was, restoring a lock upgrade.
    pub fn abort_reopen(&mut self, p: Prepared) {
        let to = p.mode;
        drop(p);
        if to == OpenMode::ReadWrite
            && self.mode == OpenMode::ReadOnly
            && let Some(l) = &mut self.lock
        {
            let _ = l.change(Access::READ_ONLY);
        }
    }

    /// Prepares and commits a reopen in one step.
    pub fn reopen(&mut self, to: OpenMode) -> Result<(), ReopenError> {
        let p = self.prepare_reopen(to)?;
        self.commit_reopen(p);
        Ok(())
    }
}

/// Makes reopen steps fail on demand, for tests of every failure path.
#[cfg(test)]
pub mod fault {
    use std::cell::Cell;

    use super::ReopenStep;

    thread_local! {
        static FAIL: Cell<Option<(ReopenStep, super::OpenMode)>> = const { Cell::new(None) };
    }

    /// The next reopen to `mode` on this thread fails at `step`.
    pub fn inject(step: ReopenStep, mode: super::OpenMode) {
        FAIL.with(|f| f.set(Some((step, mode))));
    }

    pub fn clear() {
        FAIL.with(|f| f.set(None));
    }

    pub(super) fn hit(step: ReopenStep, mode: super::OpenMode) -> bool {
        FAIL.with(|f| {
            if f.get() == Some((step, mode)) {
                f.set(None);
                true
            } else {
                false
            }
        })
    }
}

#[cfg(not(test))]
mod fault {
    #[inline(always)]
    pub(super) fn hit(_: super::ReopenStep, _: super::OpenMode) -> bool {
        false
    }
}
