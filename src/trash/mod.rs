//! The trash (ARCHITECTURE.md §3, "Trash"): files a delete or a merge removes are renamed into
//! `.imgchain-trash/ENTRY/` beside them — the same directory, so the same filesystem: no copy,
//! and owner, mode and data as they were — with a record of where they came from, when, why,
//! and what they read through. Every step goes through directory fds: the trash directory is
//! opened without following a symlink and used only when this user owns it and no one else
//! may write it, so a tenant who owns the image's directory cannot steer a move or a restore.

pub mod record;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::image::file::FileId;
use crate::image::newfile::{NewFile, open_dir};
use crate::text::Names;
use record::Record;

/// The trash directory's name, in each directory imgchain removed files from.
pub const DIR: &str = ".imgchain-trash";

/// The record's name in an entry.
const RECORD: &str = "record.toml";

/// A trash that cannot be used or a file that cannot move: the path, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}", path.shown())]
pub struct TrashError {
    pub path: PathBuf,
    pub what: String,
}

fn fail(path: &Path, what: impl Into<String>) -> TrashError {
    TrashError {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The trash of one directory, opened and checked.
#[derive(Debug)]
pub struct Trash {
    /// The directory the files came from.
    pub dir: PathBuf,
    dir_fd: OwnedFd,
    fd: OwnedFd,
}

impl Trash {
    /// The trash of `dir`, if it has one.
    pub fn open(dir: &Path) -> Result<Option<Trash>, TrashError> {
        let dir_fd = open_dir(dir).map_err(|e| fail(dir, format!("cannot open: {e}")))?;
        match checked(&dir_fd, &dir.join(DIR)) {
            Ok(fd) => Ok(Some(Trash {
                dir: dir.to_path_buf(),
                dir_fd,
                fd,
            })),
            Err(Some(e)) => Err(e),
            Err(None) => Ok(None),
        }
    }

    /// The trash beside the file at `path`, made (mode 0700) when there is none — only once
    /// the directory opened is checked to hold that file, `ident`: a directory a tenant swapped
    /// for a symlink since never gets a trash made in it.
    pub fn beside(path: &Path, ident: FileId) -> Result<Trash, TrashError> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fail(path, "names no file in a directory"));
        };
        let dir_fd = open_dir(dir).map_err(|e| fail(dir, format!("cannot open: {e}")))?;
        let st = rustix::fs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(path, format!("cannot be found: {e}")))?;
        if (FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }) != ident
        {
            return Err(fail(
                path,
                "names another file than the one planned; left alone",
            ));
        }
        let at = dir.join(DIR);
        let made = match rustix::fs::mkdirat(&dir_fd, DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(fail(&at, format!("cannot be made: {e}"))),
        };
        let fd = checked(&dir_fd, &at)
            .map_err(|e| e.unwrap_or_else(|| fail(&at, "vanished as it was made")))?;
        if made {
            rustix::fs::fsync(&dir_fd).map_err(|e| fail(dir, format!("cannot be synced: {e}")))?;
        }
        Ok(Trash {
            dir: dir.to_path_buf(),
            dir_fd,
            fd,
        })
    }

    /// The trash directory's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(DIR)
    }

    /// A new entry holding `record`, written and synced before any file moves into it.
    pub fn begin(&self, record: &Record) -> Result<Entry<'_>, TrashError> {
        let (name, fd) = self.new_entry(record.when)?;
        let at = self.path().join(&name);
        let err = |e: io::Error| fail(&at, format!("cannot write its record: {e}"));
        let dup = fd.try_clone().map_err(err)?;
        let mut f = NewFile::create(dup, OsStr::new(RECORD)).map_err(err)?;
        f.file.write_all(record.text().as_bytes()).map_err(err)?;
        f.file.sync_all().map_err(err)?;
        f.link(OsStr::new(RECORD)).map_err(err)?;
        rustix::fs::fsync(&self.fd).map_err(|e| err(e.into()))?;
        Ok(Entry {
            trash: self,
            name,
            fd,
        })
    }

    /// A fresh entry directory, named by time and process so that entries sort by age.
    fn new_entry(&self, when: u64) -> Result<(String, OwnedFd), TrashError> {
        for n in 0u32..1000 {
            let name = format!("{when:011}-{}-{n}", std::process::id());
            match rustix::fs::mkdirat(&self.fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let fd = open_entry(&self.fd, OsStr::new(&name))
                        .map_err(|e| fail(&self.path().join(&name), e.to_string()))?;
                    return Ok((name, fd));
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(fail(&self.path(), format!("cannot make an entry: {e}"))),
            }
        }
        Err(fail(&self.path(), "no free entry name"))
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<Listed> {
        let mut names = dir_names(&self.fd);
        names.sort();
        names.into_iter().filter_map(|n| self.listed(&n)).collect()
    }

    fn listed(&self, name: &OsStr) -> Option<Listed> {
        let fd = open_entry(&self.fd, name).ok()?;
        let record = read_record(&fd);
        let files = dir_names(&fd)
            .into_iter()
            .filter(|n| n != RECORD)
            .filter_map(|n| present(&fd, n))
            .collect();
        Some(Listed {
            dir: self.dir.clone(),
            entry: name.to_string_lossy().into_owned(),
            record,
            files,
        })
    }

    /// Moves `name` of entry `entry` back into the directory, under the same name, only if
    /// that name is free and the file is still `ident`; then drops an entry left empty.
    pub fn restore(&self, entry: &str, name: &OsStr, ident: FileId) -> Result<(), TrashError> {
        let at = self.dir.join(name);
        let fd = open_entry(&self.fd, OsStr::new(entry))
            .map_err(|e| fail(&self.path().join(entry), e.to_string()))?;
        if present(&fd, name.to_os_string()).map(|p| p.ident) != Some(ident) {
            return Err(fail(&at, "is not in the trash as recorded; left alone"));
        }
        rename_checked(&fd, &self.dir_fd, name, ident).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => fail(&at, "is taken: another file has that name now"),
            _ => fail(&at, format!("cannot be moved back: {e}")),
        })?;
        sync(&[&self.dir_fd, &fd]).map_err(|e| fail(&at, e.to_string()))?;
        self.drop_if_empty(entry)
            .map_err(|e| fail(&self.path().join(entry), e.to_string()))
    }

    /// Writes `record` over entry `entry`'s record (a new file renamed over it), synced.
    pub fn rewrite(&self, entry: &str, record: &Record) -> io::Result<()> {
        let fd = open_entry(&self.fd, OsStr::new(entry))?;
        let mut f = NewFile::create(fd, OsStr::new(RECORD))?;
        f.file.write_all(record.text().as_bytes())?;
        f.file.sync_all()?;
        f.replace(OsStr::new(RECORD))
    }

    /// Swaps the file `clone` of entry `entry` with the directory's `name` in one step (or,
    /// with `now` `None`, moves it there only if the name is free): the directory then holds
    /// the clone, and the entry what was there. What was there must be the file `now`, or it
    /// is swapped back and left alone.
    pub fn put_back(
        &self,
        entry: &str,
        clone: &OsStr,
        name: &OsStr,
        now: Option<FileId>,
    ) -> io::Result<()> {
        let fd = open_entry(&self.fd, OsStr::new(entry))?;
        let Some(now) = now else {
            let noreplace = rustix::fs::RenameFlags::NOREPLACE;
            rustix::fs::renameat_with(&fd, clone, &self.dir_fd, name, noreplace)?;
            return sync(&[&self.dir_fd, &fd]);
        };
        let exchange = rustix::fs::RenameFlags::EXCHANGE;
        rustix::fs::renameat_with(&fd, clone, &self.dir_fd, name, exchange)?;
        let swapped = rustix::fs::statat(&fd, clone, AtFlags::SYMLINK_NOFOLLOW)?;
        if (FileId {
            dev: swapped.st_dev,
            ino: swapped.st_ino,
        }) != now
        {
            rustix::fs::renameat_with(&fd, clone, &self.dir_fd, name, exchange)?;
            return Err(io::Error::other(
                "another file took the image's name; it was left alone",
            ));
        }
        sync(&[&self.dir_fd, &fd])
    }

    /// Removes entry `entry` when only its record is left in it.
    pub fn drop_if_empty(&self, entry: &str) -> io::Result<()> {
        let fd = open_entry(&self.fd, OsStr::new(entry))?;
        if dir_names(&fd).iter().all(|n| n == RECORD) {
            self.purge(entry)?;
        }
        Ok(())
    }

    /// Removes entry `entry` and everything in it; the bytes its files took.
    pub fn purge(&self, entry: &str) -> io::Result<u64> {
        let fd = open_entry(&self.fd, OsStr::new(entry))?;
        let mut freed = 0;
        for n in dir_names(&fd) {
            if let Some(p) = present(&fd, n.clone()) {
                freed += p.bytes;
            }
            rustix::fs::unlinkat(&fd, &n, AtFlags::empty())?;
        }
        rustix::fs::unlinkat(&self.fd, entry, AtFlags::REMOVEDIR)?;
        rustix::fs::fsync(&self.fd)?;
        Ok(freed)
    }
}

/// What a run says about the files it moves into the trash: the same for each of them.
#[derive(Clone, Debug)]
pub struct Throw {
    /// The operation (`delete`, `merge`).
    pub operation: &'static str,
    /// Why, in words: the image it was asked about.
    pub why: String,
    pub when: u64,
    /// The run's id, shared by every entry it makes.
    pub group: String,
}

impl Throw {
    /// A run of `operation` about `image`, now.
    pub fn new(operation: &'static str, image: &Path) -> Throw {
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Throw {
            operation,
            why: format!("{operation} {}", image.shown()),
            when,
            group: format!("{when}-{}", std::process::id()),
        }
    }

    /// Moves the file at `path`, which must be `ident`, into its directory's trash: an entry
    /// of its own whose record (with `backing`, the file it reads through, as it is now, and
    /// `data_file_of`, the image whose data it holds) is synced before the file moves.
    pub fn file(
        &self,
        path: &Path,
        ident: FileId,
        backing: Option<&Path>,
        data_file_of: Option<&Path>,
    ) -> Result<(), TrashError> {
        let trash = Trash::beside(path, ident)?;
        let name = path.file_name().unwrap_or_default();
        let st = rustix::fs::statat(&trash.dir_fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(path, format!("cannot be found: {e}")))?;
        let record = Record {
            version: record::VERSION,
            operation: self.operation.into(),
            when: self.when,
            why: self.why.clone(),
            group: self.group.clone(),
            undo: None,
            files: vec![record::Trashed {
                name: name.to_string_lossy().into_owned(),
                ident,
                bytes: u64::try_from(st.st_blocks).unwrap_or(0) * 512,
                backing: backing.and_then(record::Backing::now),
                data_file_of: data_file_of
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned()),
            }],
        };
        let entry = trash.begin(&record)?;
        entry.move_in(name, ident).map_err(|e| {
            let _ = trash.drop_if_empty(&entry.name);
            fail(
                path,
                format!("cannot be moved into {}: {e}", trash.path().shown()),
            )
        })
    }
}

/// An entry being filled: files move into it from the trash's directory.
#[derive(Debug)]
pub struct Entry<'t> {
    trash: &'t Trash,
    pub name: String,
    fd: OwnedFd,
}

impl Entry<'_> {
    /// A clone of `src` (`FICLONE`: its blocks shared, nothing copied) named `name` in the
    /// entry, with `src`'s owner and permission bits, synced; its identity.
    pub fn clone_in(&self, src: &std::fs::File, name: &OsStr) -> io::Result<FileId> {
        use std::os::fd::AsRawFd;
        let dup = self.fd.try_clone()?;
        let f = NewFile::create(dup, name)?;
        // SAFETY: FICLONE reads one int, the source's fd, passed by value.
        unsafe { ficlone(f.file.as_raw_fd(), src.as_raw_fd() as u64) }.map_err(io::Error::from)?;
        let st = rustix::fs::fstat(src)?;
        let owner = crate::image::file::Owner::of_fd(src)?;
        f.set_owner(&owner, st.st_mode & 0o7777)?;
        f.file.sync_all()?;
        let ident = FileId::of_fd(&f.file)?;
        f.link(name)?;
        Ok(ident)
    }

    /// Moves the directory's file `name` into the entry, only if that is the file `ident`
    /// (anything else that took the name is moved back and left alone); synced.
    pub fn move_in(&self, name: &OsStr, ident: FileId) -> io::Result<()> {
        rename_checked(&self.trash.dir_fd, &self.fd, name, ident)?;
        sync(&[&self.fd, &self.trash.dir_fd])
    }
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// One entry as listed: its record (or why it cannot be read) and the files in it.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The directory the files came from.
    pub dir: PathBuf,
    pub entry: String,
    pub record: Result<Record, String>,
    pub files: Vec<Present>,
}

impl Listed {
    /// Bytes its files take on disk; none for an undo record, whose clone shares its blocks
    /// with the image until one of them is written.
    pub fn bytes(&self) -> u64 {
        if self.is_undo() {
            return 0;
        }
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Whether it is part of an operation's undo record.
    pub fn is_undo(&self) -> bool {
        self.record.as_ref().is_ok_and(|r| r.undo.is_some())
    }
}

/// A file in an entry.
#[derive(Clone, Debug)]
pub struct Present {
    pub name: OsString,
    pub ident: FileId,
    pub bytes: u64,
}

/// Opens `dir_fd`'s trash directory without following a symlink: `Err(None)` when there is
/// none; refused unless it is a directory this user owns that no one else may write.
fn checked(dir_fd: &OwnedFd, path: &Path) -> Result<OwnedFd, Option<TrashError>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir_fd, DIR, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(None),
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return Err(Some(fail(
                path,
                "is a symlink or a file, not imgchain's trash; move it away",
            )));
        }
        Err(e) => return Err(Some(fail(path, format!("cannot be opened: {e}")))),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Some(fail(path, e.to_string())))?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return Err(Some(fail(
            path,
            format!(
                "belongs to user {} or others may write it, so it is not imgchain's trash; \
                 move it away",
                st.st_uid
            ),
        )));
    }
    Ok(fd)
}

fn open_entry(trash: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(trash, name, flags, Mode::empty())?)
}

/// Renames `name` from one directory to another (never over a file), and back if what moved
/// is not `ident`.
fn rename_checked(from: &OwnedFd, to: &OwnedFd, name: &OsStr, ident: FileId) -> io::Result<()> {
    let noreplace = rustix::fs::RenameFlags::NOREPLACE;
    rustix::fs::renameat_with(from, name, to, name, noreplace).map_err(|e| match e {
        Errno::EXIST => io::Error::new(io::ErrorKind::AlreadyExists, "the name is taken"),
        e => e.into(),
    })?;
    let moved = rustix::fs::statat(to, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if (FileId {
        dev: moved.st_dev,
        ino: moved.st_ino,
    }) != ident
    {
        rustix::fs::renameat_with(to, name, from, name, noreplace)?;
        return Err(io::Error::other(
            "the name names another file than the one planned; it was left alone",
        ));
    }
    Ok(())
}

fn sync(dirs: &[&OwnedFd]) -> io::Result<()> {
    for d in dirs {
        rustix::fs::fsync(d)?;
    }
    Ok(())
}

/// The names in a directory, `.` and `..` left out.
fn dir_names(fd: &OwnedFd) -> Vec<OsString> {
    let Ok(dir) = rustix::fs::Dir::read_from(fd) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| {
            use std::os::unix::ffi::OsStrExt;
            OsStr::from_bytes(e.file_name().to_bytes()).to_os_string()
        })
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// A regular file `name` of the entry, as it is (`None`: not one).
fn present(entry: &OwnedFd, name: OsString) -> Option<Present> {
    let st = rustix::fs::statat(entry, &name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile).then(
        || Present {
            name,
            ident: FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
            bytes: u64::try_from(st.st_blocks).unwrap_or(0) * 512,
        },
    )
}

/// The entry's record, read without following a symlink or waiting on a FIFO, and at most
/// 1 MiB of it.
fn read_record(entry: &OwnedFd) -> Result<Record, String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(entry, RECORD, flags, Mode::empty())
        .map_err(|e| format!("its record cannot be opened: {e}"))?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("its record cannot be read: {e}"))?;
    Record::parse(&text).map_err(|e| format!("its record cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory swapped for a symlink to another one between plan and run: the planned
    /// file is not there, so no trash is made in the other directory.
    #[test]
    fn no_trash_is_made_where_the_planned_file_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let (real, other) = (tmp.path().join("real"), tmp.path().join("other"));
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(real.join("disk.qcow2"), b"planned").unwrap();
        std::fs::write(other.join("disk.qcow2"), b"someone else's").unwrap();
        let ident = FileId::of_path(&real.join("disk.qcow2")).unwrap();
        let swapped = tmp.path().join("vms");
        std::os::unix::fs::symlink(&other, &swapped).unwrap();
        let e = Trash::beside(&swapped.join("disk.qcow2"), ident).unwrap_err();
        assert!(e.what.contains("another file"), "{e}");
        assert!(
            !other.join(DIR).exists(),
            "a trash was made in the other directory"
        );
        let t = Trash::beside(&real.join("disk.qcow2"), ident).unwrap();
        assert!(t.path().is_dir());
    }
}
