//! Rewriting the backing file name and format in a qcow2 header, as QEMU's
//! `qcow2_change_backing_file` does. imago 0.2.6 can set both only when it creates an image,
//! so this one edit is ours (ARCHITECTURE.md §4): every other header byte and every other
//! header extension is kept as it is.
//!
//! Layout (docs/interop/qcow2.txt): the header (`header_length` bytes; 72 for v2), then the
//! extensions (type, length, data padded to 8 bytes) up to an end marker, then the backing
//! file name, all inside the first cluster. The new header area is built in memory, checked
//! by our own probe, and written in one `pwrite` from offset 0 (QEMU writes it in one request
//! too), then synced: a power loss leaves the old or the new name.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::probe::{Format, Probed, probe};

const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// QEMU refuses longer backing names.
const BACKING_NAME_MAX: usize = 1023;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn be32(b: &[u8], off: usize) -> io::Result<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad("the header is cut short"))
}

/// The header area with `backing` (name, format) in place of the current backing file, or
/// without one for `None`; `cluster` is the image's first cluster as it is on disk.
pub fn with_backing(cluster: &[u8], backing: Option<(&str, Format)>) -> io::Result<Vec<u8>> {
    if cluster.get(..4) != Some(b"QFI\xfb") {
        return Err(bad("not a qcow2 image"));
    }
    let version = be32(cluster, 4)?;
    let header_length = match version {
        2 => 72,
        3 => be32(cluster, 100)? as usize,
        v => return Err(bad(format!("qcow2 version {v} is not supported"))),
    };
    let cluster_size = 1usize
        .checked_shl(be32(cluster, 20)?)
        .ok_or_else(|| bad("bad cluster size"))?;
    let area = cluster_size.min(cluster.len());
    if header_length < 72 || header_length > area {
        return Err(bad(format!("bad header length {header_length}")));
    }
    let (name_offset, name_len) = (
        u64::from_be_bytes(
            cluster[8..16]
                .try_into()
                .map_err(|_| bad("the header is cut short"))?,
        ),
        u64::from(be32(cluster, 16)?),
    );
    let old_name_end = if name_offset == 0 {
        0
    } else {
        usize::try_from(name_offset + name_len).unwrap_or(usize::MAX)
    };
    let (kept, off) = kept_extensions(cluster, header_length, (name_offset, area))?;
    let old_end = off.max(old_name_end).min(area);

    let mut out = cluster[..header_length].to_vec();
    if let Some((name, format)) = backing {
        if name.is_empty() || name.len() > BACKING_NAME_MAX {
            return Err(bad(format!(
                "a backing file name must have 1 to {BACKING_NAME_MAX} bytes"
            )));
        }
        let f = format.as_str().as_bytes();
        out.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    for e in &kept {
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&[0u8; 8]);
    let (name_off, name_len) = match backing {
        Some((name, _)) => {
            let at = out.len();
            out.extend_from_slice(name.as_bytes());
            (at as u64, name.len() as u32)
        }
        None => (0, 0),
    };
    out[8..16].copy_from_slice(&name_off.to_be_bytes());
    out[16..20].copy_from_slice(&name_len.to_be_bytes());
    if out.len() > cluster_size {
        return Err(bad(
            "the header, its extensions and the backing name do not fit in the first cluster",
        ));
    }
    // Clear what is left of the old extensions and name.
    if old_end > out.len() {
        out.resize(old_end, 0);
    }
    Ok(out)
}

/// The header extensions to keep, as they are, and where the extension area ended. As QEMU
/// reads them, they run up to the backing name (or the cluster's end, `area`), and fewer than
/// 8 bytes left there, or a zero type, end them: images from old QEMU versions have their
/// backing name right after the header. The backing format extension is left out (the caller
/// writes its own).
fn kept_extensions(
    cluster: &[u8],
    header_length: usize,
    (name_offset, area): (u64, usize),
) -> io::Result<(Vec<Vec<u8>>, usize)> {
    let ext_end = match usize::try_from(name_offset) {
        Ok(0) | Err(_) => area,
        Ok(o) => o.min(area),
    };
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut off = header_length;
    while off + 8 <= ext_end {
        let ty = be32(cluster, off)?;
        let len = be32(cluster, off + 4)? as usize;
        if ty == 0 {
            off += 8;
            break;
        }
        let end = off + 8 + len.next_multiple_of(8);
        if off + 8 + len > ext_end {
            return Err(bad(format!(
                "header extension {ty:#010x} runs past the extension area"
            )));
        }
        if ty != EXT_BACKING_FORMAT {
            let mut e = cluster[off..off + 8 + len].to_vec();
            e.resize(e.len().next_multiple_of(8), 0);
            kept.push(e);
        }
        off = end;
    }
    Ok((kept, off))
}

/// Points the qcow2 image open read-write as `file` at `backing` (or at none), then syncs.
/// The new header is probed before it is written and read back after: it must name exactly
/// the backing file asked for.
pub fn set_backing(file: &File, backing: Option<(&str, Format)>) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut head = [0u8; 24];
    if read_at_most(file, &mut head, 0)? < head.len() {
        return Err(bad("the file is too short for a qcow2 header"));
    }
    let bits = be32(&head, 20)?;
    if !(9..=21).contains(&bits) {
        return Err(bad(format!("bad cluster size (2^{bits})")));
    }
    let mut first = vec![0u8; (1usize << bits).min(usize::try_from(len).unwrap_or(usize::MAX))];
    let n = read_at_most(file, &mut first, 0)?;
    first.truncate(n);
    let new = with_backing(&first, backing)?;
    let names_it = |bytes: &[u8]| match probe(bytes, len) {
        Ok(Probed {
            format: Format::Qcow2,
            qcow2: Some(h),
            ..
        }) => {
            h.backing_file.as_deref() == backing.map(|(n, _)| n.as_bytes())
                && h.backing_format.as_deref() == backing.map(|(_, f)| f.as_str())
        }
        _ => false,
    };
    let mut check = first.clone();
    if new.len() > check.len() {
        return Err(bad(
            "the new header would not fit in the file's first cluster",
        ));
    }
    check[..new.len()].copy_from_slice(&new);
    if !names_it(&check) {
        return Err(bad(
            "the rewritten header would not read back as asked; nothing was written",
        ));
    }
    file.write_all_at(&new, 0)?;
    file.sync_all()?;
    let mut back = vec![0u8; first.len()];
    let n = read_at_most(file, &mut back, 0)?;
    back.truncate(n);
    if !names_it(&back) {
        return Err(bad(
            "the header read back does not name the new backing file",
        ));
    }
    Ok(())
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::create::{NewImage, create};

    fn first_cluster(path: &std::path::Path) -> Vec<u8> {
        let mut b = std::fs::read(path).unwrap();
        b.truncate(64 << 10);
        b
    }

    /// The probed header of a first cluster.
    fn header(bytes: &[u8], len: u64) -> crate::image::probe::Qcow2Header {
        match probe(bytes, len).unwrap() {
            Probed { qcow2: Some(h), .. } => h,
            other => panic!("not qcow2: {other:?}"),
        }
    }

    #[test]
    fn names_of_every_length_read_back_and_the_rest_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("o.qcow2");
        let mut new = NewImage::qcow2(1 << 20);
        new.backing = Some(("a-rather-long-original-backing-name.qcow2", Format::Qcow2));
        create(&path, &new).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let before = first_cluster(&path);
        let features = header(&before, len).feature_names;
        for name in ["b", "x.raw", &"n".repeat(BACKING_NAME_MAX)] {
            for fmt in [Format::Qcow2, Format::Raw] {
                let out = with_backing(&before, Some((name, fmt))).unwrap();
                let mut cluster = before.clone();
                cluster[..out.len()].copy_from_slice(&out);
                let h = header(&cluster, len);
                assert_eq!(h.backing_file.as_deref(), Some(name.as_bytes()));
                assert_eq!(h.backing_format.as_deref(), Some(fmt.as_str()));
                assert_eq!(h.feature_names, features, "other extensions kept");
                assert_eq!(cluster[..8], before[..8], "magic and version kept");
                assert_eq!(cluster[20..72], before[20..72], "geometry and tables kept");
            }
        }
        let out = with_backing(&before, None).unwrap();
        let mut cluster = before.clone();
        cluster[..out.len()].copy_from_slice(&out);
        assert_eq!(header(&cluster, len).backing_file, None);
        assert!(with_backing(&before, Some(("", Format::Qcow2))).is_err());
        let too_long = "n".repeat(BACKING_NAME_MAX + 1);
        assert!(with_backing(&before, Some((&too_long, Format::Qcow2))).is_err());
        assert!(with_backing(b"not an image at all", None).is_err());
        // An image from an old QEMU: a v2 header with the backing name right after it, and no
        // extension area at all.
        let mut old = vec![0u8; 64 << 10];
        old[..4].copy_from_slice(b"QFI\xfb");
        old[4..8].copy_from_slice(&2u32.to_be_bytes());
        old[8..16].copy_from_slice(&72u64.to_be_bytes());
        old[16..20].copy_from_slice(&8u32.to_be_bytes());
        old[20..24].copy_from_slice(&16u32.to_be_bytes());
        old[72..80].copy_from_slice(b"base.img");
        let out = with_backing(&old, Some(("new-base.qcow2", Format::Qcow2))).unwrap();
        let name_at = u64::from_be_bytes(out[8..16].try_into().unwrap()) as usize;
        assert_eq!(&out[name_at..name_at + 14], b"new-base.qcow2");
        assert_eq!(
            &out[72..76],
            &EXT_BACKING_FORMAT.to_be_bytes(),
            "the format is recorded"
        );
        // Through a file: the edit is written, synced and read back.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        set_backing(&f, Some(("../moved/base.qcow2", Format::Qcow2))).unwrap();
        let h = header(&first_cluster(&path), len);
        assert_eq!(h.backing_file.as_deref(), Some(&b"../moved/base.qcow2"[..]));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "the file did not grow"
        );
    }
}
