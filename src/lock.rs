//! QEMU-compatible image locking (QEMU's block/file-posix.c), without the terminal.
//!
//! QEMU locks one byte per permission on the image file itself with open-file-description
//! (OFD) read locks: byte `100 + i` means "I hold permission i", byte `200 + i` means "I do
//! not share permission i". Conflicts are found with `F_OFD_GETLK` and a write-lock probe,
//! which never takes a lock and ignores the prober's own open file description.
//!
//! Invariants:
//! - [`probe`] takes no lock: browsing never stops a VM from starting.
//! - [`ImageLock`] locks first, then checks, and rolls back to its previous state on conflict,
//!   exactly like `raw_handle_perm_lock`, so two racing openers can both fail but never both
//!   succeed, and a QEMU that loses the race gets QEMU's own error.
//! - Locks belong to an open file description. [`ImageLock`] keeps its own `dup` of the fd, so
//!   the locks live as long as it does, whoever else closes their copy;
//!   [`ImageLock::duplicate_onto`] puts the same bytes on a reopened description while the old
//!   one still holds them, so a reopen never has a moment without locks.
//! - Only bytes 100-103 and 200-203 are touched (byte 0 is libvirt's; 104/204 are legacy).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

/// First "held permission" byte.
pub const PERM_BASE: u64 = 100;
/// First "unshared permission" byte.
pub const SHARED_BASE: u64 = 200;
/// Permission bits QEMU locks (`BLK_PERM_ALL`): bits 0 to 3.
const PERM_BITS: u32 = 4;

/// A set of QEMU block permissions (`BLK_PERM_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(pub u8);

impl Perms {
    /// No permission.
    pub const NONE: Perms = Perms(0);
    /// `BLK_PERM_CONSISTENT_READ`.
    pub const CONSISTENT_READ: Perms = Perms(0x01);
    /// `BLK_PERM_WRITE`.
    pub const WRITE: Perms = Perms(0x02);
    /// `BLK_PERM_WRITE_UNCHANGED`.
    pub const WRITE_UNCHANGED: Perms = Perms(0x04);
    /// `BLK_PERM_RESIZE`.
    pub const RESIZE: Perms = Perms(0x08);
    /// `BLK_PERM_ALL`.
    pub const ALL: Perms = Perms(0x0f);

    /// Every permission of `other` is in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }
    /// Permission bit `i` is in the set.
    pub fn has_bit(self, i: u32) -> bool {
        self.0 & (1 << i) != 0
    }
    /// Both sets together.
    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }
    /// No permission at all.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The permissions not in `self`.
    pub fn complement(self) -> Perms {
        Perms(!self.0 & Perms::ALL.0)
    }
    /// QEMU's names (`bdrv_perm_names`), in bit order.
    pub fn names(self) -> Vec<&'static str> {
        (0..PERM_BITS)
            .filter(|&i| self.has_bit(i))
            .map(perm_name)
            .collect()
    }
}

/// QEMU's name for permission bit `i`.
pub fn perm_name(i: u32) -> &'static str {
    match i {
        0 => "consistent read",
        1 => "write",
        2 => "write unchanged",
        3 => "resize",
        _ => "change children",
    }
}

/// What an open of an image holds and shares, as QEMU expresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub perm: Perms,
    pub shared: Perms,
}

impl Access {
    /// A read-only backing image: consistent read; others may read but not write or resize
    /// (QEMU's `bdrv_default_perms_for_cow`).
    pub const READ_ONLY: Access = Access {
        perm: Perms::CONSISTENT_READ,
        shared: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE_UNCHANGED.0),
    };
    /// A writable image, e.g. a commit's base: consistent read, write, resize; others may read.
    pub const READ_WRITE: Access = Access {
        perm: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE.0 | Perms::RESIZE.0),
        shared: Perms(Perms::CONSISTENT_READ.0 | Perms::WRITE_UNCHANGED.0),
    };
    /// Nothing held, everything shared.
    pub const NONE: Access = Access {
        perm: Perms::NONE,
        shared: Perms::ALL,
    };

    /// The bytes this access locks: `100 + i` per held permission, `200 + i` per unshared one.
    pub fn bytes(self) -> Vec<u64> {
        let unshared = self.shared.complement();
        (0..PERM_BITS)
            .filter(|&i| self.perm.has_bit(i))
            .map(|i| PERM_BASE + u64::from(i))
            .chain(
                (0..PERM_BITS)
                    .filter(|&i| unshared.has_bit(i))
                    .map(|i| SHARED_BASE + u64::from(i)),
            )
            .collect()
    }

    /// The first permission that `foreign` locks forbid this access, as `(name, shared)`:
    /// `shared == false` when someone refuses to share a permission we hold, `true` when
    /// someone holds a permission we refuse to share. Same rules as [`ImageLock`]'s check.
    pub fn conflict(self, foreign: Foreign) -> Option<(&'static str, bool)> {
        (0..PERM_BITS).find_map(|i| {
            if self.perm.has_bit(i) && foreign.unshared.has_bit(i) {
                Some((perm_name(i), false))
            } else if !self.shared.has_bit(i) && foreign.held.has_bit(i) {
                Some((perm_name(i), true))
            } else {
                None
            }
        })
    }

    /// The union QEMU locks while changing from `self` to `new`.
    fn union(self, new: Access) -> Access {
        Access {
            perm: self.perm.union(new.perm),
            shared: Perms(self.shared.0 & new.shared.0),
        }
    }
}

/// What other processes hold on an image, seen through `F_OFD_GETLK`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Foreign {
    /// Permissions someone holds (bytes 100+).
    pub held: Perms,
    /// Permissions someone refuses to share (bytes 200+).
    pub unshared: Perms,
}

impl Foreign {
    /// Someone holds or unshares anything.
    pub fn in_use(self) -> bool {
        !self.held.is_empty() || !self.unshared.is_empty()
    }
    /// Someone holds the write permission: the contents may change under us.
    pub fn writer(self) -> bool {
        self.held.contains(Perms::WRITE)
    }
}

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

/// A process that has an image open, found through `/proc/<pid>/fdinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The command line, arguments separated by spaces.
    pub command: String,
    /// What its locks on the image say.
    pub foreign: Foreign,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// Finds the processes holding QEMU lock bytes on the files `idents` (`(st_dev, st_ino)`),
/// by reading every `/proc/<pid>/fd` link and the `lock:` lines of its fdinfo. Processes
/// this one may not inspect are passed over: their images show an unknown holder.
pub fn holders(idents: &HashSet<(u64, u64)>) -> HashMap<(u64, u64), Vec<Holder>> {
    let mut out: HashMap<(u64, u64), Vec<Holder>> = HashMap::new();
    if idents.is_empty() {
        return out;
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let proc_dir = entry.path();
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(md) = std::fs::metadata(fd.path()) else {
                continue;
            };
            let ident = (md.dev(), md.ino());
            if !idents.contains(&ident) {
                continue;
            }
            let info = proc_dir.join("fdinfo").join(fd.file_name());
            let foreign = std::fs::read_to_string(info)
                .map(|t| parse_fdinfo_locks(&t))
                .unwrap_or_default();
            if !foreign.in_use() {
                continue;
            }
            let command = std::fs::read(proc_dir.join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let list = out.entry(ident).or_default();
            match list.iter_mut().find(|h| h.pid == pid) {
                Some(h) => {
                    h.foreign.held = h.foreign.held.union(foreign.held);
                    h.foreign.unshared = h.foreign.unshared.union(foreign.unshared);
                }
                None => list.push(Holder {
                    pid,
                    command,
                    foreign,
                }),
            }
        }
    }
    for list in out.values_mut() {
        // Writers first: they are the ones a user must stop.
        list.sort_by_key(|h| (!h.foreign.writer(), h.pid));
    }
    out
}

/// The files that carry lock bytes in QEMU's range (100 to 203), from `/proc/locks`, as
/// `(st_dev, st_ino)`. One read of one file: cheap enough to poll.
pub fn locked_files() -> io::Result<HashSet<(u64, u64)>> {
    Ok(parse_proc_locks(&std::fs::read_to_string("/proc/locks")?))
}

/// Re-probes, without taking locks, those of `images` (path and identity) that `/proc/locks`
/// says carry QEMU lock bytes, and names their holders. Returns only images in use.
pub fn sweep(images: &[(PathBuf, (u64, u64))]) -> Vec<(PathBuf, Foreign, Vec<Holder>)> {
    let Ok(locked) = locked_files() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (path, ident) in images.iter().filter(|(_, i)| locked.contains(i)) {
        let Ok(fd) = crate::image::file::open(path, crate::image::handle::OpenMode::ReadOnly)
        else {
            continue;
        };
        let same = crate::image::file::identity(&fd).is_ok_and(|i| i == *ident);
        if let Some(f) = same
            .then(|| probe(fd.as_fd()).ok())
            .flatten()
            .filter(|f| f.in_use())
        {
            found.push((path.clone(), *ident, f));
        }
    }
    let mut names = holders(&found.iter().map(|(_, i, _)| *i).collect());
    found
        .into_iter()
        .map(|(p, i, f)| (p, f, names.remove(&i).unwrap_or_default()))
        .collect()
}

/// Parses `/proc/locks` lines such as `1: OFDLCK ADVISORY  READ -1 fe:00:10027013 100 101`
/// (device major:minor in hex, inode in decimal, an inclusive range whose end may be `EOF`).
pub fn parse_proc_locks(text: &str) -> HashSet<(u64, u64)> {
    let mut out = HashSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
            continue;
        };
        let mut id = fields[at].split(':');
        let (Some(maj), Some(min), Some(ino)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let (Ok(maj), Ok(min), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        let start = fields.get(at + 1).and_then(|s| s.parse::<u64>().ok());
        let end = fields.get(at + 2).and_then(|s| {
            if *s == "EOF" {
                Some(u64::MAX)
            } else {
                s.parse().ok()
            }
        });
        if let (Some(start), Some(end)) = (start, end)
            && start < SHARED_BASE + u64::from(PERM_BITS)
            && end >= PERM_BASE
        {
            out.insert((rustix::fs::makedev(maj, min), ino));
        }
    }
    out
}

/// Reads the OFD lock bytes of one fd from its fdinfo text, e.g.
/// `lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:10027013 100 101`.
pub fn parse_fdinfo_locks(text: &str) -> Foreign {
    let mut f = Foreign::default();
    for line in text.lines().filter_map(|l| l.strip_prefix("lock:")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.contains(&"OFDLCK") || fields.len() < 2 {
            continue;
        }
        let (Some(end), Some(start)) = (
            fields[fields.len() - 1].parse::<u64>().ok(),
            fields[fields.len() - 2].parse::<u64>().ok(),
        ) else {
            continue;
        };
        for i in 0..PERM_BITS {
            let inside = |b: u64| (start..=end).contains(&b);
            if inside(PERM_BASE + u64::from(i)) {
                f.held.0 |= 1 << i;
            }
            if inside(SHARED_BASE + u64::from(i)) {
                f.unshared.0 |= 1 << i;
            }
        }
    }
    f
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
    #[error("cannot lock {}: {source}; the file system may not support OFD locks", path.display())]
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
         Shut the VM (or tool) down first, or commit while it runs through QEMU itself \
         (virsh blockcommit, or QMP block-commit)",
        path.display()
    )
}

/// QEMU lock bytes held on one image through our own duplicate of its fd.
#[derive(Debug)]
pub struct ImageLock {
    fd: OwnedFd,
    path: PathBuf,
    access: Access,
    ident: (u64, u64),
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
            ident: (st.st_dev, st.st_ino),
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
        if (st.st_dev, st.st_ino) != self.ident {
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

    #[test]
    fn bytes_match_qemu() {
        // ARCHITECTURE.md §7: an RW open locks 100, 101, 103, 201, 203; a backing 100, 201, 203.
        assert_eq!(Access::READ_WRITE.bytes(), vec![100, 101, 103, 201, 203]);
        assert_eq!(Access::READ_ONLY.bytes(), vec![100, 201, 203]);
        assert!(Access::NONE.bytes().is_empty());
        // What a running VM's locks forbid: its top (held RW) and its backing (held RO).
        let vm_top = Foreign {
            held: Access::READ_WRITE.perm,
            unshared: Access::READ_WRITE.shared.complement(),
        };
        let vm_base = Foreign {
            held: Access::READ_ONLY.perm,
            unshared: Access::READ_ONLY.shared.complement(),
        };
        assert_eq!(Access::READ_WRITE.conflict(vm_top), Some(("write", false)));
        assert_eq!(Access::READ_WRITE.conflict(vm_base), Some(("write", false)));
        assert_eq!(Access::READ_ONLY.conflict(vm_top), Some(("write", true)));
        assert_eq!(Access::READ_ONLY.conflict(vm_base), None);
        let force_share_reader = Foreign {
            held: Perms::CONSISTENT_READ,
            unshared: Perms::NONE,
        };
        assert_eq!(Access::READ_WRITE.conflict(force_share_reader), None);
        assert_eq!(
            Access::READ_ONLY.union(Access::READ_WRITE),
            Access::READ_WRITE
        );
        assert_eq!(PERM_BASE, 100);
        assert_eq!(SHARED_BASE, 200);
        assert_eq!(
            Perms::ALL.names(),
            ["consistent read", "write", "write unchanged", "resize"]
        );
    }

    #[test]
    fn proc_locks_lines() {
        let text = "1: OFDLCK ADVISORY  READ -1 fe:00:10027012 203 203\n\
                    2: POSIX  ADVISORY  WRITE 77 08:01:42 0 0\n\
                    3: FLOCK  ADVISORY  WRITE 78 08:01:43 0 EOF\n\
                    4: OFDLCK ADVISORY  READ -1 103:02:99 100 101\n";
        let set = parse_proc_locks(text);
        assert_eq!(set.len(), 3, "{set:?}");
        assert!(set.contains(&(rustix::fs::makedev(0xfe, 0), 10_027_012)));
        assert!(set.contains(&(rustix::fs::makedev(0x103, 2), 99)));
        assert!(
            !set.contains(&(rustix::fs::makedev(8, 1), 42)),
            "byte 0 only"
        );
        // A real file we lock shows up under its stat identity.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let _l = ImageLock::acquire(f.as_fd(), &p, Access::READ_ONLY).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert!(locked_files().unwrap().contains(&(md.dev(), md.ino())));
    }

    #[test]
    fn fdinfo_lines() {
        let text = "pos:\t0\nflags:\t0100002\nlock:\t1: OFDLCK ADVISORY  READ -1 fe:00:10027013 100 101\n\
                    lock:\t2: OFDLCK ADVISORY  READ -1 fe:00:10027013 103 103\n\
                    lock:\t3: OFDLCK ADVISORY  READ -1 fe:00:10027013 201 201\n\
                    lock:\t4: POSIX  ADVISORY  WRITE 77 fe:00:10027013 0 0\n";
        let f = parse_fdinfo_locks(text);
        assert_eq!(f.held, Perms(0b1011));
        assert_eq!(f.unshared, Perms::WRITE);
        assert!(f.writer() && f.in_use());
        assert!(!parse_fdinfo_locks("flags:\t0\n").in_use());
    }

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
