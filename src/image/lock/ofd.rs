//! QEMU lock bytes on an open file: probing them with `F_OFD_GETLK` without taking any, and
//! [`ImageLock`], which takes them as QEMU does.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use super::super::file::FileId;
use super::holders::{Holder, holders};
use super::model::{Access, Foreign, PERM_BASE, PERM_BITS, SHARED_BASE, perm_name};
use crate::text::Names;

fn flock(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// Whether another open file description holds a lock overlapping `start..start+len`.
fn test_range(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, start, len);
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn set_byte(fd: BorrowedFd<'_>, byte: u64, lock: bool) -> io::Result<()> {
    let kind = if lock { libc::F_RDLCK } else { libc::F_UNLCK };
    fcntl(fd, FcntlArg::F_OFD_SETLK(&flock(kind, byte, 1)))?;
    Ok(())
}

/// What other processes hold on the file behind `fd`. Takes no lock; the open file
/// description of `fd` itself is ignored by the kernel, so it should hold nothing.
pub fn probe(fd: BorrowedFd<'_>) -> io::Result<Foreign> {
    let mut f = Foreign::default();
    // One call answers the common case: nobody holds anything in 100..=203.
    if !test_range(
        fd,
        PERM_BASE,
        SHARED_BASE + u64::from(PERM_BITS) - PERM_BASE,
    )? {
        return Ok(f);
    }
    for i in 0..PERM_BITS {
        if test_range(fd, PERM_BASE + u64::from(i), 1)? {
            f.held.0 |= 1 << i;
        }
        if test_range(fd, SHARED_BASE + u64::from(i), 1)? {
            f.unshared.0 |= 1 << i;
        }
    }
    Ok(f)
}

/// Another process uses the image in a way that conflicts with what we asked for.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}", in_use_message(path, holder.as_ref(), permission, *shared))]
    InUse {
        path: PathBuf,
        /// The process found holding the conflicting lock, if /proc tells.
        holder: Option<Holder>,
        /// QEMU's name of the permission that conflicts.
        permission: &'static str,
        /// `true`: we could not refuse to share it (someone holds it); `false`: we could not
        /// take it (someone refuses to share it).
        shared: bool,
    },
    #[error("cannot lock {}: {source}; the file system may not support OFD locks", path.shown())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn in_use_message(path: &Path, holder: Option<&Holder>, perm: &str, shared: bool) -> String {
    let shared = if shared { "shared " } else { "" };
    let who = match holder {
        Some(h) => format!("it is held by {h}"),
        None => "unknown holder (no process visible in /proc holds it)".to_string(),
    };
    format!(
        "Failed to get {shared}\"{perm}\" lock\nIs another process using the image [{}]? {who}. \
         Shut the VM (or tool) down first",
        path.shown()
    )
}

/// QEMU lock bytes held on one image through our own duplicate of its fd.
#[derive(Debug)]
pub struct ImageLock {
    fd: OwnedFd,
    path: PathBuf,
    access: Access,
    ident: FileId,
}

impl ImageLock {
    /// Takes `access` on the file behind `fd` as QEMU would: lock, then check, then roll back
    /// on conflict. `path` is for messages only.
    pub fn acquire(
        fd: BorrowedFd<'_>,
        path: &Path,
        access: Access,
    ) -> Result<ImageLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fd = fd.try_clone_to_owned().map_err(io)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
        let mut lock = ImageLock {
            fd,
            path: path.to_path_buf(),
            access: Access::NONE,
            ident: FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
        };
        lock.change(access)?;
        Ok(lock)
    }

    /// What this lock holds now.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Changes the held access in place (e.g. RO → RW before a commit), as QEMU's permission
    /// update does: lock the union of old and new, check the new access, then drop the bytes
    /// only the old one needed. On conflict the old state is restored.
    pub fn change(&mut self, new: Access) -> Result<(), LockError> {
        let old = self.access;
        let union = old.union(new);
        if let Err(source) = self.apply(union) {
            let _ = self.apply(old);
            return Err(LockError::Io {
                path: self.path.clone(),
                source,
            });
        }
        if let Err(e) = self.check(new) {
            let _ = self.apply(old);
            return Err(e);
        }
        self.apply(new).map_err(|source| LockError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.access = new;
        Ok(())
    }

    /// Puts the same bytes on the open file description of `new_fd` (a reopened handle of the
    /// same file) without checking: this lock already checked them, and our own two
    /// descriptions must not refuse each other (QEMU's `raw_apply_lock_bytes(NULL, new_fd)`).
    /// This lock keeps its bytes until it is dropped or released, so a reopen that is aborted
    /// loses nothing. Fails, leaving nothing on `new_fd`, if `new_fd` is another file.
    pub fn duplicate_onto(&self, new_fd: BorrowedFd<'_>) -> Result<ImageLock, LockError> {
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let st = rustix::fs::fstat(new_fd).map_err(|e| io(e.into()))?;
        if (FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }) != self.ident
        {
            return Err(io(io::Error::other(
                "the new handle is another file; locks stay where they are",
            )));
        }
        let mut new = ImageLock {
            fd: new_fd.try_clone_to_owned().map_err(io)?,
            path: self.path.clone(),
            access: Access::NONE,
            ident: self.ident,
        };
        // On failure, dropping `new` unlocks whatever was set.
        new.apply(self.access).map_err(io)?;
        new.access = self.access;
        Ok(new)
    }

    /// Locks exactly the bytes of `access` on our description, unlocking the others.
    fn apply(&self, access: Access) -> io::Result<()> {
        let want = access.bytes();
        for i in 0..PERM_BITS {
            for base in [PERM_BASE, SHARED_BASE] {
                let b = base + u64::from(i);
                set_byte(self.fd.as_fd(), b, want.contains(&b))?;
            }
        }
        Ok(())
    }

    /// QEMU's `raw_check_lock_bytes`: each permission we hold must not be unshared by anyone,
    /// and each we do not share must not be held by anyone.
    fn check(&self, access: Access) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        for i in 0..PERM_BITS {
            let conflict = if access.perm.has_bit(i)
                && test_range(self.fd.as_fd(), SHARED_BASE + u64::from(i), 1).map_err(io)?
            {
                Some(false)
            } else if !access.shared.has_bit(i)
                && test_range(self.fd.as_fd(), PERM_BASE + u64::from(i), 1).map_err(io)?
            {
                Some(true)
            } else {
                None
            };
            if let Some(shared) = conflict {
                let holder = holders(&HashSet::from([self.ident]))
                    .remove(&self.ident)
                    .and_then(|mut l| (!l.is_empty()).then(|| l.remove(0)));
                return Err(LockError::InUse {
                    path: self.path.clone(),
                    holder,
                    permission: perm_name(i),
                    shared,
                });
            }
        }
        Ok(())
    }

    /// Releases every byte (dropping the lock does the same).
    pub fn release(self) {}
}

impl Drop for ImageLock {
    /// Unlocks explicitly: other fds may share our open file description (imago's copy, the
    /// caller's), and closing our duplicate alone would leave the bytes locked.
    fn drop(&mut self) {
        let _ = self.apply(Access::NONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::lock::Perms;
    #[test]
    fn two_descriptions_in_one_process_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let a = std::fs::File::open(&p).unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert!(!probe(a.as_fd()).unwrap().in_use());

        let mut ro = ImageLock::acquire(a.as_fd(), &p, Access::READ_ONLY).unwrap();
        let seen = probe(b.as_fd()).unwrap();
        assert_eq!(seen.held, Perms::CONSISTENT_READ);
        assert_eq!(seen.unshared, Perms(Perms::WRITE.0 | Perms::RESIZE.0));
        // Our own description's locks are invisible to a probe through it.
        assert!(!probe(a.as_fd()).unwrap().in_use());

        // A writer on another description is refused with QEMU's words.
        let err = ImageLock::acquire(b.as_fd(), &p, Access::READ_WRITE).unwrap_err();
        assert!(
            err.to_string().starts_with("Failed to get \"write\" lock"),
            "{err}"
        );
        // ...and its refused attempt left nothing behind.
        assert_eq!(probe(a.as_fd()).unwrap(), Foreign::default());

        // Upgrade in place, then hand over to a new description.
        ro.change(Access::READ_WRITE).unwrap();
        assert!(probe(b.as_fd()).unwrap().writer());
        let c = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut moved = ro.duplicate_onto(c.as_fd()).unwrap();
        drop(ro);
        assert!(
            probe(b.as_fd()).unwrap().writer(),
            "held through the new description"
        );
        // The old description is still open (through `a`) but holds nothing now.
        assert_eq!(probe(c.as_fd()).unwrap(), Foreign::default());
        moved.change(Access::READ_ONLY).unwrap();
        assert!(!probe(b.as_fd()).unwrap().writer());
        moved.release();
        assert!(!probe(b.as_fd()).unwrap().in_use());
        drop(a);
    }

    #[test]
    fn duplicate_onto_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, q) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&p, b"a").unwrap();
        std::fs::write(&q, b"b").unwrap();
        let a = std::fs::File::open(&p).unwrap();
        let other = std::fs::File::open(&q).unwrap();
        let l = ImageLock::acquire(a.as_fd(), &p, Access::READ_ONLY).unwrap();
        assert!(l.duplicate_onto(other.as_fd()).is_err());
        let witness = std::fs::File::open(&p).unwrap();
        assert!(
            probe(witness.as_fd()).unwrap().in_use(),
            "still held on the old file"
        );
        assert!(!probe(other.as_fd()).unwrap().in_use());
    }
}
