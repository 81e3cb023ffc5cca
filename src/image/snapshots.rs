//! The internal snapshots a qcow2 image lists in its snapshot table (names, dates, sizes):
//! read-only, bounded, and checked against the file's length.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::probe::Qcow2Header;

/// One entry of the snapshot table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalSnapshot {
    pub id: String,
    pub name: String,
    /// Seconds since the epoch, as QEMU recorded the snapshot's creation.
    pub date_sec: u32,
    /// The guest clock at the snapshot, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state (0: a disk-only snapshot).
    pub vm_state_size: u64,
    /// The virtual disk size at the snapshot, when the entry records it.
    pub disk_size: Option<u64>,
}

/// QEMU's own limit on the snapshot table (`QCOW_MAX_SNAPSHOTS_SIZE`).
const MAX_TABLE: u64 = 64 << 20;

/// The snapshot table of the qcow2 image at `path` whose header is `h`, in table order.
pub fn list(path: &Path, h: &Qcow2Header) -> io::Result<Vec<InternalSnapshot>> {
    table(path, h.nb_snapshots, h.snapshots_offset)
}

/// The `count` entries of the snapshot table at `offset` in the file at `path`.
fn table(path: &Path, count: u32, offset: u64) -> io::Result<Vec<InternalSnapshot>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot table: {what}"),
        )
    };
    if offset >= len {
        return Err(bad(format!(
            "offset {} is past the end of the file ({len} bytes)",
            offset
        )));
    }
    let size = (len - offset).min(MAX_TABLE);
    let mut table = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
    let got = read_full(&file, &mut table, offset)?;
    table.truncate(got);
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..count {
        let field = |from: usize, n: usize| {
            table
                .get(at + from..at + from + n)
                .ok_or_else(|| bad(format!("entry {i} runs past the end of the file")))
        };
        let be = |from: usize, n: usize| -> io::Result<u64> {
            Ok(field(from, n)?
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
        };
        let id_len = be(12, 2)? as usize;
        let name_len = be(14, 2)? as usize;
        let date_sec = be(16, 4)? as u32;
        let vm_clock_nsec = be(24, 8)?;
        let vm_state_32 = be(32, 4)?;
        let extra = be(36, 4)? as usize;
        let vm_state_size = if extra >= 8 { be(40, 8)? } else { vm_state_32 };
        let disk_size = if extra >= 16 { Some(be(48, 8)?) } else { None };
        let text = |from: usize, n: usize| -> io::Result<String> {
            Ok(String::from_utf8_lossy(field(from, n)?).into_owned())
        };
        let id = text(40 + extra, id_len)?;
        let name = text(40 + extra + id_len, name_len)?;
        out.push(InternalSnapshot {
            id,
            name,
            date_sec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
        });
        at += (40 + extra + id_len + name_len).next_multiple_of(8);
    }
    Ok(out)
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, name: &str, date: u32, extra: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 40];
        e[12..14].copy_from_slice(&(id.len() as u16).to_be_bytes());
        e[14..16].copy_from_slice(&(name.len() as u16).to_be_bytes());
        e[16..20].copy_from_slice(&date.to_be_bytes());
        e[36..40].copy_from_slice(&(extra.len() as u32).to_be_bytes());
        e.extend_from_slice(extra);
        e.extend_from_slice(id.as_bytes());
        e.extend_from_slice(name.as_bytes());
        while !e.len().is_multiple_of(8) {
            e.push(0);
        }
        e
    }

    #[test]
    fn reads_entries_and_stops_at_a_truncated_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        let mut extra = vec![0u8; 16];
        extra[0..8].copy_from_slice(&4096u64.to_be_bytes());
        extra[8..16].copy_from_slice(&(1u64 << 30).to_be_bytes());
        let mut data = vec![0u8; 512];
        data.extend(entry("1", "before-upgrade", 1_700_000_000, &extra));
        data.extend(entry("2", "x", 5, &[]));
        std::fs::write(&path, &data).expect("write");
        let got = table(&path, 2, 512).expect("list");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "before-upgrade");
        assert_eq!(got[0].vm_state_size, 4096);
        assert_eq!(got[0].disk_size, Some(1 << 30));
        assert_eq!((got[1].id.as_str(), got[1].date_sec), ("2", 5));
        let err = table(&path, 3, 512).expect_err("a third entry is not there");
        assert!(err.to_string().contains("entry 2"), "{err}");
        let err = table(&path, 1, 1 << 20).expect_err("offset past the end");
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
