//! The persistent dirty bitmaps a qcow2 image carries (its bitmap directory and tables): read
//! only, bounded by QEMU's own limits, and checked against the file's length. Writing them is
//! QEMU's job (`ops::bitmaps`); this module says what is there and how much each marks dirty.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::probe::Qcow2Header;

/// One entry of the bitmap directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    pub name: String,
    /// Bytes of guest disk per bit.
    pub granularity: u64,
    /// QEMU records writes in it (the `auto` flag); a disabled bitmap is kept as it is.
    pub enabled: bool,
    /// The `in-use` flag: a QEMU had it open when it stopped, so it may miss writes; QEMU will
    /// not use it again (inconsistent).
    pub in_use: bool,
    table_offset: u64,
    table_entries: u32,
}

impl Bitmap {
    /// QEMU records writes in it: enabled and consistent.
    pub fn recording(&self) -> bool {
        self.enabled && !self.in_use
    }
}

/// QEMU's limits (block/qcow2-bitmap.c): granularity 512 B to 2 GiB, names up to 1023 bytes,
/// 65535 bitmaps, a directory of 64 MiB, a bitmap of 512 MiB.
const MIN_GRANULARITY_BITS: u8 = 9;
const MAX_GRANULARITY_BITS: u8 = 31;
const MAX_NAME: usize = 1023;
const MAX_COUNT: u32 = 65535;
const MAX_DIRECTORY: u64 = 64 << 20;
const MAX_BITMAP_BYTES: u64 = 512 << 20;
/// Flags in a directory entry.
const IN_USE: u32 = 1;
const AUTO: u32 = 2;
const EXTRA_DATA_COMPATIBLE: u32 = 4;
/// Bits 9-55 of a table entry: the data cluster's offset.
const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// A table entry of 1: every bit of the cluster is set.
const ALL_ONES: u64 = 1;

fn bad(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bitmap directory: {what}"),
    )
}

/// The bitmaps of the qcow2 image open as `file` whose header is `h`, in directory order;
/// none when its bitmaps are not valid (no extension, or the autoclear bit cleared by a
/// program that did not keep them).
pub fn list(file: &File, h: &Qcow2Header) -> io::Result<Vec<Bitmap>> {
    let Some(ext) = h.bitmaps_ext.filter(|_| h.bitmaps()) else {
        return Ok(Vec::new());
    };
    if ext.count == 0 || ext.count > MAX_COUNT {
        return Err(bad(format!("{} bitmaps recorded", ext.count)));
    }
    if ext.directory_size > MAX_DIRECTORY || ext.directory_size < 24 {
        return Err(bad(format!("{} bytes long", ext.directory_size)));
    }
    let dir = read_exact_at(file, ext.directory_offset, ext.directory_size)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..ext.count {
        let (bitmap, len) = entry(&dir, at, h).map_err(|e| bad(format!("entry {i}: {e}")))?;
        out.push(bitmap);
        at += len;
    }
    Ok(out)
}

/// The directory entry at `at` and its length with padding.
fn entry(dir: &[u8], at: usize, h: &Qcow2Header) -> Result<(Bitmap, usize), String> {
    let field = |from: usize, n: usize| {
        dir.get(at + from..at + from + n)
            .ok_or_else(|| "runs past the end of the directory".to_string())
    };
    let be = |from: usize, n: usize| -> Result<u64, String> {
        Ok(field(from, n)?
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    };
    let table_offset = be(0, 8)?;
    let table_entries = be(8, 4)? as u32;
    let flags = be(12, 4)? as u32;
    let (kind, granularity_bits) = (be(16, 1)?, be(17, 1)? as u8);
    let name_len = be(18, 2)? as usize;
    let extra = be(20, 4)? as usize;
    if kind != 1 {
        return Err(format!("type {kind} is not a dirty-tracking bitmap"));
    }
    if !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&granularity_bits) {
        return Err(format!("granularity 2^{granularity_bits} is out of range"));
    }
    if extra != 0 && flags & EXTRA_DATA_COMPATIBLE == 0 {
        return Err("has extra data QEMU does not know".into());
    }
    if name_len == 0 || name_len > MAX_NAME {
        return Err(format!("a name of {name_len} bytes"));
    }
    let name = String::from_utf8_lossy(field(24 + extra, name_len)?).into_owned();
    let granularity = 1u64 << granularity_bits;
    let bitmap = Bitmap {
        name,
        granularity,
        enabled: flags & AUTO != 0,
        in_use: flags & IN_USE != 0,
        table_offset,
        table_entries,
    };
    if u64::from(table_entries) != table_len(h, granularity) {
        return Err(format!(
            "bitmap {:?} has {table_entries} table entries, not the {} its disk needs",
            bitmap.name,
            table_len(h, granularity)
        ));
    }
    Ok((bitmap, (24 + extra + name_len).next_multiple_of(8)))
}

/// Bits a bitmap of `granularity` needs for the image's disk.
fn bits(h: &Qcow2Header, granularity: u64) -> u64 {
    h.virtual_size.div_ceil(granularity)
}

/// Bits one data cluster holds.
fn bits_per_cluster(h: &Qcow2Header) -> u64 {
    h.cluster_size() * 8
}

/// Table entries a bitmap of `granularity` needs: one per data cluster.
fn table_len(h: &Qcow2Header, granularity: u64) -> u64 {
    bits(h, granularity).div_ceil(bits_per_cluster(h))
}

/// Bytes of disk `b` marks dirty, as QEMU counts them (set bits times the granularity).
pub fn dirty_bytes(file: &File, h: &Qcow2Header, b: &Bitmap) -> io::Result<u64> {
    let mut set = 0u64;
    for_each_cluster(file, h, b, |_, bits| {
        set += bits.count_ones();
        Ok(())
    })?;
    Ok(set * b.granularity)
}

/// Whether `b` marks every byte of each `(offset, length)` range of the disk.
pub fn covers(file: &File, h: &Qcow2Header, b: &Bitmap, ranges: &[(u64, u64)]) -> io::Result<bool> {
    let per = bits_per_cluster(h);
    let mut all = true;
    for_each_cluster(file, h, b, |index, bits| {
        let (lo, hi) = (index * per, (index + 1) * per);
        for &(off, len) in ranges.iter().filter(|r| r.1 > 0) {
            let (first, last) = (off / b.granularity, (off + len - 1) / b.granularity);
            for bit in first.max(lo)..=last.min(hi - 1) {
                all &= bits.get(bit - lo);
            }
        }
        Ok(())
    })?;
    Ok(all)
}

/// The bits of one data cluster of a bitmap (the last one cut at the disk's end).
pub struct ClusterBits<'a> {
    data: Option<&'a [u8]>,
    len: u64,
}

impl ClusterBits<'_> {
    fn get(&self, bit: u64) -> bool {
        bit < self.len
            && self
                .data
                .is_none_or(|d| d[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }
    fn count_ones(&self) -> u64 {
        match self.data {
            None => self.len,
            Some(d) => {
                let whole = (self.len / 8) as usize;
                let tail = (whole as u64 * 8..self.len)
                    .filter(|&i| self.get(i))
                    .count();
                d[..whole]
                    .iter()
                    .map(|b| u64::from(b.count_ones()))
                    .sum::<u64>()
                    + tail as u64
            }
        }
    }
}

/// Calls `f` with each data cluster's index and bits that has any set (all-zero clusters are
/// skipped), reading the table and the clusters bounded by QEMU's limits.
fn for_each_cluster(
    file: &File,
    h: &Qcow2Header,
    b: &Bitmap,
    mut f: impl FnMut(u64, &ClusterBits<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let total = bits(h, b.granularity);
    if total.div_ceil(8) > MAX_BITMAP_BYTES {
        return Err(bad(format!(
            "bitmap {:?} is larger than QEMU allows",
            b.name
        )));
    }
    let table = read_exact_at(file, b.table_offset, u64::from(b.table_entries) * 8)?;
    let per = bits_per_cluster(h);
    let mut data = vec![0u8; h.cluster_size() as usize];
    for (index, e) in table.chunks_exact(8).enumerate() {
        let index = index as u64;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(e);
        let entry = u64::from_be_bytes(raw);
        let len = (total - index * per).min(per);
        let offset = entry & TABLE_OFFSET_MASK;
        if offset == 0 {
            match entry {
                0 => {}
                ALL_ONES => f(index, &ClusterBits { data: None, len })?,
                _ => {
                    return Err(bad(format!(
                        "bitmap {:?}: bad table entry {entry:#x}",
                        b.name
                    )));
                }
            }
            continue;
        }
        if entry & !TABLE_OFFSET_MASK != 0 || !offset.is_multiple_of(h.cluster_size()) {
            return Err(bad(format!(
                "bitmap {:?}: bad table entry {entry:#x}",
                b.name
            )));
        }
        read_into(file, offset, &mut data)?;
        f(
            index,
            &ClusterBits {
                data: Some(&data),
                len,
            },
        )?;
    }
    Ok(())
}

/// `len` bytes at `offset`, all within the file.
fn read_exact_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    read_into(file, offset, &mut buf)?;
    Ok(buf)
}

fn read_into(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let file_len = file.metadata()?.len();
    let end = offset.checked_add(buf.len() as u64);
    if end.is_none_or(|e| e > file_len) {
        return Err(bad(format!(
            "{} bytes at {offset:#x} run past the end of the file ({file_len} bytes)",
            buf.len()
        )));
    }
    file.read_exact_at(buf, offset)
}

/// Bitmaps with the bytes each marks dirty.
pub type Counted = Vec<(Bitmap, u64)>;

/// The bitmaps of the qcow2 image at `path` (opened as every image is, `file::open`) with the
/// bytes each marks dirty.
pub fn read(path: &std::path::Path, h: &Qcow2Header) -> io::Result<Counted> {
    if h.bitmaps_ext.is_none() {
        return Ok(Vec::new());
    }
    let file = File::from(super::file::open(path, super::file::OpenMode::ReadOnly)?);
    list(&file, h)?
        .into_iter()
        .map(|b| {
            let dirty = dirty_bytes(&file, h, &b)?;
            Ok((b, dirty))
        })
        .collect()
}
