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

/// Opens `path` in `mode` with the flags every image open uses, only if it is a regular file
/// on a real filesystem (see [`look`]).
pub fn open(path: &Path, mode: OpenMode) -> io::Result<OwnedFd> {
    look(path)?.open(mode)
}

/// Opens `path` in `mode` only if it names the file `expect`: the identity is checked on the
/// `O_PATH` fd before the file is opened, so a name swapped for another file is never opened
/// read-write.
pub fn open_as(path: &Path, mode: OpenMode, expect: FileId) -> io::Result<OwnedFd> {
    let looked = look(path)?;
    if looked.ident() != expect {
        return Err(io::Error::other("the path now names another file"));
    }
    looked.open(mode)
}

/// What a name leads to, seen through an `O_PATH` fd: nothing is read and the open has no
/// side effect, so a FIFO, a device or a `/proc` file named in a header is never opened.
#[derive(Debug)]
pub struct Looked {
    fd: OwnedFd,
    pub stat: rustix::fs::Stat,
    /// Why it is no file to open: `None` for a regular file on a real filesystem.
    pub special: Option<&'static str>,
}

/// Looks at `path` (following symlinks) through an `O_PATH` fd.
pub fn look(path: &Path) -> io::Result<Looked> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, FileMode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    let special = match special_kind(stat.st_mode) {
        Some(kind) => Some(kind),
        None => pseudo_filesystem(rustix::fs::fstatfs(&fd)?.f_type as i64),
    };
    Ok(Looked { fd, stat, special })
}

impl Looked {
    /// Opens the very file it looked at, in `mode`; an error for anything but a regular file
    /// on a real filesystem.
    pub fn open(&self, mode: OpenMode) -> io::Result<OwnedFd> {
        if let Some(what) = self.special {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {what}, not an image file"),
            ));
        }
        let access = match mode {
            OpenMode::ReadOnly => OFlags::RDONLY,
            OpenMode::ReadWrite => OFlags::RDWR,
        };
        self.reopen(access | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK)
    }

    /// Whether this process may write the file (permissions, a read-only mount, the immutable
    /// flag), asked of the kernel without opening it.
    pub fn writable(&self) -> bool {
        use rustix::fs::{Access, AtFlags, accessat};
        let (access, flags) = (Access::WRITE_OK, AtFlags::EACCESS);
        // On the fd itself (faccessat2, Linux 5.8); else through /proc.
        match accessat(&self.fd, "", access, flags | AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => match proc_fds() {
                Some(dir) => accessat(dir, self.fd_name().as_str(), access, flags),
                None => accessat(rustix::fs::CWD, self.fd_path(), access, flags),
            },
            other => other,
        }
        .is_ok()
    }

    /// Its identity.
    pub fn ident(&self) -> FileId {
        FileId {
            dev: self.stat.st_dev,
            ino: self.stat.st_ino,
        }
    }

    /// Opens the file behind the `O_PATH` fd again, in `flags`: through this process's
    /// `/proc/self/fd`, opened once, so each reopen looks up one name.
    fn reopen(&self, flags: OFlags) -> io::Result<OwnedFd> {
        let name = self.fd_name();
        Ok(match proc_fds() {
            Some(dir) => rustix::fs::openat(dir, name.as_str(), flags, FileMode::empty())?,
            None => rustix::fs::open(self.fd_path(), flags, FileMode::empty())?,
        })
    }

    fn fd_name(&self) -> String {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd).to_string()
    }

    fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd_name())
    }
}

/// This process's `/proc/self/fd`, opened once (`None` where /proc cannot be opened).
fn proc_fds() -> Option<&'static OwnedFd> {
    static FDS: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    FDS.get_or_init(|| {
        rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            FileMode::empty(),
        )
        .ok()
    })
    .as_ref()
}

/// What a file of this `st_mode` is, when it is not a regular file.
pub fn special_kind(st_mode: u32) -> Option<&'static str> {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::BlockDevice => Some("a block device"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        _ => Some("not a regular file"),
    }
}

/// The kernel's own filesystems, whose files are interfaces, not data: a name leading there
/// is never opened nor walked.
pub fn pseudo_filesystem(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "a file of /proc",
        0x6265_6572 => "a file of /sys",
        0x1cd1 => "a terminal (devpts)",
        0x6462_6720 => "a file of debugfs",
        0x7472_6163 => "a file of tracefs",
        0x7363_6673 => "a file of securityfs",
        0x0027_e0eb | 0x6367_7270 => "a file of a cgroup filesystem",
        0xcafe_4a11 => "a file of bpffs",
        0x6265_6570 => "a file of configfs",
        0xde5e_81e4 => "a file of efivarfs",
        0x6165_676c => "a file of pstore",
        0xf97c_ff8c => "a file of selinuxfs",
        0x6573_5543 => "a file of fusectl",
        _ => return None,
    })
}

/// A file's identity, `(st_dev, st_ino)`: two names are the same file when their ids are equal.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

/// Who owns a file and its permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Owner {
    /// The owner of the open file `fd`.
    pub fn of_fd(fd: impl AsFd) -> io::Result<Owner> {
        let st = rustix::fs::fstat(fd)?;
        Ok(Owner {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
        })
    }

    /// The owner of the file `path` names, which must be the file `expect` (opened `O_PATH`,
    /// so nothing is read and no open has side effects).
    pub fn of_path(path: &Path, expect: FileId) -> io::Result<Owner> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, FileMode::empty())?;
        if FileId::of_fd(&fd)? != expect {
            return Err(io::Error::other("the path now names another file"));
        }
        Owner::of_fd(&fd)
    }

    /// The mode of an overlay on an image with these bits: its owner reads and writes it, and
    /// group and others get no more than they have on the image.
    pub fn overlay_mode(&self) -> u32 {
        (self.mode & 0o066) | 0o600
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
