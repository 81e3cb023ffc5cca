//! Allocation maps: which parts of the virtual disk an image's own layer allocates.

use std::io;
use std::path::Path;

use imago::ShallowMapping;

use super::file::OpenMode;
use super::handle::Handle;
use super::probe::Format;

/// Mapping lookups after which a map is not worth computing (a very fragmented image).
const MAX_LOOKUPS: usize = 200_000;

/// How much of each of `buckets` equal stretches of the virtual disk the image's own layer
/// allocates (data, compressed data or explicit zeroes), in percent. Opens the image
/// read-only without locks. `Ok(None)` when the image is too fragmented to map cheaply.
pub fn allocation(path: &Path, format: Format, buckets: usize) -> io::Result<Option<Vec<u8>>> {
    let h = Handle::open(path, format, OpenMode::ReadOnly, (false, None), None)
        .map_err(io::Error::other)?;
    let size = h.access().size();
    let buckets = buckets.max(1);
    let mut filled = vec![0u64; buckets];
    if size == 0 {
        return Ok(Some(vec![0; buckets]));
    }
    let bucket_len = size.div_ceil(buckets as u64);
    let mut offset = 0;
    let mut lookups = 0;
    while offset < size {
        lookups += 1;
        if lookups > MAX_LOOKUPS {
            return Ok(None);
        }
        let (m, len) = h.access().get_shallow_mapping(offset, size - offset)?;
        let allocated = match m {
            ShallowMapping::Raw { .. } | ShallowMapping::Special { .. } => true,
            ShallowMapping::Zero { explicit, .. } => explicit,
            ShallowMapping::Eof { .. } => break,
            _ => false,
        };
        if len == 0 {
            break;
        }
        if allocated {
            // Spread [offset, offset + len) over the buckets it covers.
            let end = offset + len;
            let mut at = offset;
            while at < end {
                let b = (at / bucket_len) as usize;
                let b_end = ((b as u64 + 1) * bucket_len).min(end);
                filled[b.min(buckets - 1)] += b_end - at;
                at = b_end;
            }
        }
        offset += len;
    }
    Ok(Some(
        filled
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let start = i as u64 * bucket_len;
                let len = bucket_len.min(size.saturating_sub(start)).max(1);
                ((f * 100).div_ceil(len)).min(100) as u8
            })
            .collect(),
    ))
}
