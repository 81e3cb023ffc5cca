//! Opening image files and reading their headers: the one place that knows the open flags
//! (close-on-exec, never blocking on a FIFO, never taking a controlling terminal), the
//! regular-file identity check, and the loop that reads as much header as the probe asks for.

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rustix::fs::{Mode as FileMode, OFlags};

use super::probe::{self, PROBE_FIRST, ProbeError, Probed};

/// How a handle has its file open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    ReadOnly,
    ReadWrite,
}

impl fmt::Display for OpenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenMode::ReadOnly => "read-only",
            OpenMode::ReadWrite => "read-write",
        })
    }
}

/// Opens `path` in `mode` with the flags every image open uses.
pub fn open(path: &Path, mode: OpenMode) -> io::Result<OwnedFd> {
    let access = match mode {
        OpenMode::ReadOnly => OFlags::RDONLY,
        OpenMode::ReadWrite => OFlags::RDWR,
    };
    let flags = access | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    Ok(rustix::fs::open(path, flags, FileMode::empty())?)
}

/// A file's identity, `(st_dev, st_ino)`: two names are the same file when their ids are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The id of the file `md` describes.
    pub fn of(md: &Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
        }
    }

    /// The id of the file `path` names (following symlinks), if it can be stat'ed.
    pub fn of_path(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }

    /// The id of the file behind `fd`.
    pub fn of_fd(fd: impl AsFd) -> io::Result<FileId> {
        let st = rustix::fs::fstat(fd)?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {:#x} inode {}", self.dev, self.ino)
    }
}

/// The id of an open regular file; an error for anything else.
pub fn identity(fd: impl AsFd) -> io::Result<FileId> {
    let st = rustix::fs::fstat(fd)?;
    if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Reads up to `len` bytes from the start of `file` (fewer at its end).
pub fn read_prefix(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Probes the header of `file` (`len` bytes long), reading more as long as the probe asks
/// for more. The outer error is I/O; the inner one is what the probe thinks of the header.
pub fn read_header(file: &File, len: u64) -> io::Result<Result<Probed, ProbeError>> {
    let mut want = PROBE_FIRST;
    loop {
        let prefix = read_prefix(file, want)?;
        match probe::probe(&prefix, len) {
            Err(ProbeError::Short { need }) if need > prefix.len() && prefix.len() == want => {
                want = need;
            }
            Err(ProbeError::Short { need }) => {
                // The file ended before the header did (it shrank while we read it).
                return Ok(Err(ProbeError::Invalid(format!(
                    "truncated: the header needs {need} bytes but only {} could be read",
                    prefix.len()
                ))));
            }
            other => return Ok(other),
        }
    }
}
