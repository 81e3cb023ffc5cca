//! New files in directories a tenant may own (ARCHITECTURE.md §8): made without a name,
//! written and synced through their fd, then linked under their final name only if it is free.
//! Nothing is ever opened again by a name, so no symlink swapped in can redirect a write.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::file::{FileId, Owner};

/// A directory opened for creating files in it by fd.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A new regular file in a directory, not yet under its final name.
#[derive(Debug)]
pub struct NewFile {
    pub file: File,
    dir: OwnedFd,
    /// The temporary name it has where the filesystem cannot make unnamed files.
    temp: Option<OsString>,
}

impl NewFile {
    /// A new empty file in `dir`, open read-write, mode 0600: unnamed (`O_TMPFILE`) where the
    /// filesystem allows, else under a fresh hidden name made with `O_EXCL | O_NOFOLLOW`.
    pub fn create(dir: OwnedFd, hint: &OsStr) -> io::Result<NewFile> {
        let flags = OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::openat(
            &dir,
            ".",
            flags | OFlags::TMPFILE,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                return Ok(NewFile {
                    file: File::from(fd),
                    dir,
                    temp: None,
                });
            }
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        for attempt in 0u32.. {
            let mut name = OsString::from(".");
            name.push(hint);
            name.push(format!(".{}.{attempt}.imgchain-tmp", std::process::id()));
            let excl = flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            match rustix::fs::openat(&dir, &name, excl, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    return Ok(NewFile {
                        file: File::from(fd),
                        dir,
                        temp: Some(name),
                    });
                }
                Err(Errno::EXIST) if attempt < 100 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("no free temporary name"))
    }

    /// Gives the file `owner`'s user and group (when imgchain may) and `mode`, through its fd.
    pub fn set_owner(&self, owner: &Owner, mode: u32) -> io::Result<()> {
        if rustix::process::geteuid().is_root() {
            rustix::fs::fchown(
                &self.file,
                Some(rustix::process::Uid::from_raw(owner.uid)),
                Some(rustix::process::Gid::from_raw(owner.gid)),
            )?;
        }
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Names the file `name` in its directory unless that name exists (`AlreadyExists`), then
    /// drops its temporary name and syncs the directory. The link is made from the fd.
    pub fn link(mut self, name: &OsStr) -> io::Result<()> {
        let me = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.file)
        );
        rustix::fs::linkat(
            rustix::fs::CWD,
            me.as_str(),
            &self.dir,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| match e {
            Errno::EXIST => io::Error::new(io::ErrorKind::AlreadyExists, "the name exists already"),
            e => e.into(),
        })?;
        self.drop_temp_name();
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }

    /// Names the file `name` in its directory, replacing what has that name: it is linked
    /// under a fresh temporary name and renamed over `name`; the result must be this file.
    /// Then syncs the directory.
    pub fn replace(mut self, name: &OsStr) -> io::Result<()> {
        if self.temp.is_none() {
            let mut temp = OsString::from(".");
            temp.push(name);
            temp.push(format!(".{}.imgchain-tmp", std::process::id()));
            let me = format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&self.file)
            );
            let _ = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty());
            rustix::fs::linkat(
                rustix::fs::CWD,
                me.as_str(),
                &self.dir,
                &temp,
                AtFlags::SYMLINK_FOLLOW,
            )?;
            self.temp = Some(temp);
        }
        let temp = self.temp.take().unwrap_or_default();
        rustix::fs::renameat(&self.dir, &temp, &self.dir, name)?;
        let there = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileId::of_fd(&self.file)?
            != (FileId {
                dev: there.st_dev,
                ino: there.st_ino,
            })
        {
            return Err(io::Error::other(
                "another file took its place while it was being named",
            ));
        }
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }

    /// Removes the temporary name, if it still names this file.
    fn drop_temp_name(&mut self) {
        let Some(name) = self.temp.take() else { return };
        let ours = FileId::of_fd(&self.file).ok();
        let there = rustix::fs::statat(&self.dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            });
        if ours.is_some() && ours == there {
            let _ = rustix::fs::unlinkat(&self.dir, &name, AtFlags::empty());
        }
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        self.drop_temp_name();
    }
}
