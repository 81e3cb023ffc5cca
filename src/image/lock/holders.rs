//! Who holds an image: the processes whose open files carry QEMU lock bytes, read from
//! `/proc/<pid>/fd`, `/proc/<pid>/fdinfo` and `/proc/locks`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;

use super::super::file::FileId;
use super::model::{Foreign, PERM_BASE, PERM_BITS, SHARED_BASE};
use super::owner::{self, Owner};

/// A process that has an image open, found through `/proc/<pid>/fdinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The command line, arguments separated by spaces.
    pub command: String,
    /// What its locks on the image say.
    pub foreign: Foreign,
    /// The VM or tool, as its command line tells.
    pub owner: Box<Owner>,
}

impl Holder {
    /// How the holder is named in one word: the VM's name, else the program's.
    pub fn label(&self) -> &str {
        self.owner.name.as_deref().unwrap_or(&self.owner.program)
    }
}

impl fmt::Display for Holder {
    /// `web03 (libvirt VM, pid 4242, writing)` or `qemu-io (pid 77, reading)`: never the whole
    /// command line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.foreign.writer() {
            "writing"
        } else {
            "reading"
        };
        let what = match self.owner.manager {
            owner::Manager::Libvirt => "libvirt VM, ",
            owner::Manager::Proxmox => "Proxmox VM, ",
            owner::Manager::Qemu if self.owner.name.is_some() => "QEMU VM, ",
            owner::Manager::StorageDaemon if self.owner.name.is_some() => "qemu-storage-daemon, ",
            _ => "",
        };
        let label = crate::text::escape(self.label());
        write!(f, "{label} ({what}pid {}, {how})", self.pid)
    }
}

/// Finds the processes holding QEMU lock bytes on the files `idents` (`(st_dev, st_ino)`),
/// by reading every `/proc/<pid>/fd` link and the `lock:` lines of its fdinfo. Processes
/// this one may not inspect are passed over: their images show an unknown holder.
pub fn holders(idents: &HashSet<FileId>) -> HashMap<FileId, Vec<Holder>> {
    let mut out: HashMap<FileId, Vec<Holder>> = HashMap::new();
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
            let ident = FileId::of(&md);
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
            let argv: Vec<String> = std::fs::read(proc_dir.join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let command = argv.join(" ");
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
                    owner: Box::new(owner::parse(&argv)),
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
pub fn locked_files() -> io::Result<HashSet<FileId>> {
    Ok(parse_proc_locks(&std::fs::read_to_string("/proc/locks")?))
}

/// Parses `/proc/locks` lines such as `1: OFDLCK ADVISORY  READ -1 fe:00:10027013 100 101`
/// (device major:minor in hex, inode in decimal, an inclusive range whose end may be `EOF`).
pub fn parse_proc_locks(text: &str) -> HashSet<FileId> {
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
            out.insert(FileId {
                dev: rustix::fs::makedev(maj, min),
                ino,
            });
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

/// Whether process `pid` is a QEMU imgchain may ask to work on an image (ARCHITECTURE.md §8):
/// its program is a QEMU binary owned by root and writable by nobody else, and it holds the
/// file `writes` open for writing. A command line can claim anything; these cannot be faked
/// by a user who can only read the image.
pub fn verify_qemu(pid: u32, writes: FileId) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let program = std::fs::read_link(&exe)
        .map_err(|e| format!("cannot tell which program pid {pid} runs: {e}"))?;
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let name = name.trim_end_matches(" (deleted)");
    let shown = crate::text::escape_bytes(program.as_os_str().as_encoded_bytes()).into_owned();
    if !(name.starts_with("qemu-system-") || name == "qemu-kvm" || name == "qemu-storage-daemon") {
        return Err(format!(
            "pid {pid} runs {shown}, which is not a QEMU program"
        ));
    }
    let md = std::fs::metadata(&exe).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(format!(
            "pid {pid} runs {shown}, which is not owned by root and protected from other users"
        ));
    }
    if writes_file(pid, writes) {
        Ok(())
    } else {
        Err(format!(
            "pid {pid} does not have the image open for writing"
        ))
    }
}

/// Whether process `pid` has the file `id` open for writing (`/proc/<pid>/fdinfo` flags).
fn writes_file(pid: u32, id: FileId) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        let same = std::fs::metadata(fd.path()).is_ok_and(|m| FileId::of(&m) == id);
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ));
        same && info.is_ok_and(|i| {
            i.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .is_some_and(|flags| matches!(flags & 0o3, 1 | 2))
        })
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::image::lock::{Access, ImageLock, Perms};
    #[test]
    fn proc_locks_lines() {
        let id = |maj, min, ino| FileId {
            dev: rustix::fs::makedev(maj, min),
            ino,
        };
        let text = "1: OFDLCK ADVISORY  READ -1 fe:00:10027012 203 203\n\
                    2: POSIX  ADVISORY  WRITE 77 08:01:42 0 0\n\
                    3: FLOCK  ADVISORY  WRITE 78 08:01:43 0 EOF\n\
                    4: OFDLCK ADVISORY  READ -1 103:02:99 100 101\n";
        let set = parse_proc_locks(text);
        assert_eq!(set.len(), 3, "{set:?}");
        assert!(set.contains(&id(0xfe, 0, 10_027_012)));
        assert!(set.contains(&id(0x103, 2, 99)));
        assert!(!set.contains(&id(8, 1, 42)), "byte 0 only");
        // A real file we lock shows up under its stat identity.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let _l = ImageLock::acquire(f.as_fd(), &p, Access::READ_ONLY).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert!(locked_files().unwrap().contains(&FileId::of(&md)));
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
}
