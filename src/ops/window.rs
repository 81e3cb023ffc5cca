//! A read-write window on an image (ARCHITECTURE.md §3, §4): the image is reopened read-write
//! as a transaction (a failure writes nothing), carries the qcow2 v3 dirty bit while it is
//! written, and goes back to read-only on every path — after an error, a cancel, or a panic
//! (the window's drop) — unless the dirty bit had to stay set: then no tool may open it before
//! a repair, and the read-write handle is left for the caller to close.

use std::io;

use crate::image::file::OpenMode;
use crate::image::handle::{Handle, ReopenError};

/// An image open read-write for the length of this value.
pub struct RwWindow<'a> {
    handle: &'a mut Handle,
    /// The dirty bit is set on disk.
    marked: bool,
    closed: bool,
}

/// How a window ended.
#[derive(Debug)]
pub struct Closed {
    /// The dirty bit stayed set: the image's metadata could not be put on disk.
    pub left_dirty: bool,
    /// Returning to read-only; `None` when the image was left dirty.
    pub reopen_ro: Option<Result<(), ReopenError>>,
}

impl<'a> RwWindow<'a> {
    /// Reopens `handle` read-write (the same file, its locks upgraded in place).
    pub fn open(handle: &'a mut Handle, write_behind: u64) -> Result<RwWindow<'a>, ReopenError> {
        handle.reopen(OpenMode::ReadWrite)?;
        handle.storage().set_write_behind(write_behind);
        Ok(RwWindow {
            handle,
            marked: false,
            closed: false,
        })
    }

    /// Sets and syncs the dirty bit before the first write (qcow2 v3; other formats have none).
    pub fn mark_dirty(&mut self) -> io::Result<()> {
        if self.handle.storage().has_dirty_bit() {
            self.handle.storage().set_dirty(true)?;
            self.marked = true;
        }
        Ok(())
    }

    /// The image, to write through.
    pub fn handle(&mut self) -> &mut Handle {
        self.handle
    }

    /// Flushes and fsyncs everything written, then clears the dirty bit.
    pub fn flush(&mut self) -> io::Result<()> {
        self.handle.flush()?;
        if self.marked {
            self.handle.storage().set_dirty(false)?;
            self.marked = false;
        }
        Ok(())
    }

    /// Back to read-only, unless the dirty bit is still set.
    pub fn close(mut self) -> Closed {
        self.end()
    }

    fn end(&mut self) -> Closed {
        self.closed = true;
        let reopen_ro = (!self.marked).then(|| self.handle.reopen(OpenMode::ReadOnly));
        Closed {
            left_dirty: self.marked,
            reopen_ro,
        }
    }
}

impl Drop for RwWindow<'_> {
    /// A window left without [`RwWindow::close`] (a panic) still flushes and returns to
    /// read-only.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.flush();
            let _ = self.end();
        }
    }
}
