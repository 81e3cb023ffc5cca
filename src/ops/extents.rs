//! The extent walk: what each stretch of a guest disk is, seen through the layers of a chain
//! from the top down, and what one layer maps by itself.

use std::borrow::Borrow;
use std::io;

use imago::ShallowMapping;

use crate::image::handle::Handle;
use crate::text::Names;

/// What one stretch of the guest disk is, seen from the top down to (not including) the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Data allocated in layer `i` (0 is the top).
    Data(usize),
    /// Reads as zeroes because a layer above the base says so.
    Zero,
    /// Not allocated above the base: the base shows through.
    Below,
    Eof,
}

/// The extent at `offset`, at most `max` bytes long.
pub fn next_extent<H: Borrow<Handle>>(
    layers: &[H],
    offset: u64,
    max: u64,
) -> io::Result<(Extent, u64)> {
    let mut len = max;
    for (i, layer) in layers.iter().map(Borrow::borrow).enumerate() {
        let (mapping, l) = layer.access().get_shallow_mapping(offset, len)?;
        if l == 0 && !matches!(mapping, ShallowMapping::Eof { .. }) {
            return Err(io::Error::other(format!(
                "empty mapping at offset {offset} of {}",
                layer.path().shown()
            )));
        }
        match mapping {
            ShallowMapping::Raw { .. } | ShallowMapping::Special { .. } => {
                return Ok((Extent::Data(i), l));
            }
            ShallowMapping::Zero { explicit: true, .. } => return Ok((Extent::Zero, l)),
            ShallowMapping::Zero { .. } | ShallowMapping::Indirect { .. } => len = l,
            ShallowMapping::Eof { .. } if i == 0 => return Ok((Extent::Eof, 0)),
            // A shorter image in between reads as zeroes past its end, from the top's view.
            ShallowMapping::Eof { .. } => return Ok((Extent::Zero, len)),
            _ => {
                return Err(io::Error::other(format!(
                    "unknown kind of mapping at offset {offset} of {}",
                    layer.path().shown()
                )));
            }
        }
    }
    Ok((Extent::Below, len))
}

/// Bytes of data and zero ranges allocated above the base, from the top's metadata alone.
pub fn measure(layers: &[Handle], end: u64) -> io::Result<u64> {
    sum_extents(layers, end, |ext, _, len| {
        Ok(match ext {
            Extent::Data(_) | Extent::Zero => len,
            _ => 0,
        })
    })
}

/// Bytes of data above the base that land where `base` allocates nothing of its own yet:
/// what a commit adds to the base's file at most (data written over the base's own clusters
/// takes no new room).
pub fn measure_new(layers: &[Handle], base: &Handle, end: u64) -> io::Result<u64> {
    sum_extents(layers, end, |ext, offset, len| match ext {
        Extent::Data(_) => Ok(len - allocated_in(base, offset, len)?),
        _ => Ok(0),
    })
}

/// The guest ranges allocated above the base (data and zeroes): what a commit writes.
pub fn above_base(layers: &[Handle], end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    sum_extents(layers, end, |ext, offset, len| {
        if matches!(ext, Extent::Data(_) | Extent::Zero) {
            push_merged(&mut ranges, offset, len);
        }
        Ok(0)
    })?;
    Ok(ranges)
}

/// The sum of `count(extent, offset, len)` over the extents above the base up to `end`.
fn sum_extents(
    layers: &[Handle],
    end: u64,
    mut count: impl FnMut(Extent, u64, u64) -> io::Result<u64>,
) -> io::Result<u64> {
    let (mut offset, mut total) = (0, 0);
    while offset < end {
        let (ext, len) = next_extent(layers, offset, end - offset)?;
        if ext == Extent::Eof {
            break;
        }
        total += count(ext, offset, len)?;
        offset += len;
    }
    Ok(total)
}

/// Bytes of `[offset, offset + len)` that `image` maps in its own layer.
fn allocated_in(image: &Handle, offset: u64, len: u64) -> io::Result<u64> {
    let end = (offset + len).min(image.access().size());
    let (mut at, mut found) = (offset, 0);
    while at < end {
        let (mapping, l) = image.access().get_shallow_mapping(at, end - at)?;
        if l == 0 {
            break;
        }
        if matches!(
            mapping,
            ShallowMapping::Raw { .. } | ShallowMapping::Special { .. }
        ) {
            found += l;
        }
        at += l;
    }
    Ok(found)
}

/// What an image maps in its own layer: guest ranges, and the host ranges of its data.
pub struct OwnRanges {
    pub guest: Vec<(u64, u64)>,
    pub host: Vec<(u64, u64)>,
}

/// Appends `(offset, len)` to `v`, merged with the last range when adjacent.
fn push_merged(v: &mut Vec<(u64, u64)>, offset: u64, len: u64) {
    match v.last_mut() {
        Some((o, l)) if *o + *l == offset => *l += len,
        _ => v.push((offset, len)),
    }
}

pub fn own_ranges(h: &Handle) -> io::Result<OwnRanges> {
    let end = h.access().size();
    let mut own = OwnRanges {
        guest: Vec::new(),
        host: Vec::new(),
    };
    let mut offset = 0;
    while offset < end {
        let (mapping, len) = h.access().get_shallow_mapping(offset, end - offset)?;
        if len == 0 {
            break;
        }
        match mapping {
            ShallowMapping::Raw { offset: host, .. } => {
                push_merged(&mut own.guest, offset, len);
                push_merged(&mut own.host, host, len);
            }
            ShallowMapping::Indirect { .. }
            | ShallowMapping::Zero {
                explicit: false, ..
            } => {}
            ShallowMapping::Eof { .. } => break,
            _ => push_merged(&mut own.guest, offset, len),
        }
        offset += len;
    }
    Ok(own)
}
