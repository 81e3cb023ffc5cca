//! What a safe rebase copies: the image's unallocated runs split by what the old and new
//! chains read there, the data taken through the copy pipeline (cloned where the filesystem
//! shares blocks), zeroes made, and the rest compared cluster by cluster.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imago::ShallowMapping;

use crate::image::file::OpenMode;
use crate::image::handle::Handle;
use crate::ops::datapath::CopyError;
use crate::ops::datapath::{self, Done, Transfer, kernel_move};
use crate::ops::guards;
use crate::ops::window::RwWindow;
use crate::ops::{Phase, Refusal};

use super::outcome::Outcome;
use super::plan::Plan;

/// Reports a phase with bytes done, bytes in all, and whether the image is open to write.
pub(super) type Reporter<'a> = dyn FnMut(Phase, u64, u64, bool) + 'a;

/// A chain opened by [`open_chain`]: its handles, top-down, and the top's access.
pub(super) type Opened = (
    Vec<Handle>,
    Option<std::sync::Arc<crate::image::handle::ImageAccess>>,
);

const REPORT_EVERY: Duration = Duration::from_millis(100);

/// The safe part of a rebase: copies into the image what the old and new chains read
/// differently, with the image read-write only for the copy, into `outcome`. A refusal means
/// nothing was written.
pub(super) fn copy_safely(
    plan: &Plan,
    ((old_handles, old_top), (new_handles, new_top)): (&Opened, &Opened),
    (settings, cancel): (&crate::ops::settings::Settings, &AtomicBool),
    (report, restart): (&mut Reporter<'_>, &dyn Fn()),
    outcome: &mut Outcome,
) -> Result<(), Refusal> {
    let mut image = plan.image.open(OpenMode::ReadOnly, old_top.clone())?;
    if plan.amend {
        report(Phase::Amend, 0, 0, true);
        crate::ops::amend::to_v3(&plan.image.path, &mut image)?;
    }
    let total = unallocated(&image, plan.image.virtual_size).map_err(|source| Refusal::Map {
        path: plan.image.path.clone(),
        source,
    })?;
    // What can differ is at most what either chain allocates.
    let mut allocated = 0;
    for h in old_handles.iter().chain(new_handles) {
        let own = crate::ops::extents::own_ranges(h).map_err(|source| Refusal::Map {
            path: h.path().to_path_buf(),
            source,
        })?;
        allocated += own.guest.iter().map(|(_, l)| l).sum::<u64>();
    }
    guards::v2_room(&image, &plan.image, total.min(allocated))?;
    let old_layers: Vec<&Handle> = old_handles.iter().rev().collect();
    let new_layers: Vec<&Handle> = new_handles.iter().rev().collect();
    let chains = Chains {
        old: &old_layers,
        new: &new_layers,
        new_top: new_top.as_deref(),
        new_size: plan.new.first().map_or(0, |b| b.virtual_size),
    };
    let g = Geometry {
        end: plan.image.virtual_size,
        cluster: plan.cluster,
        chunk: settings
            .copy
            .chunk
            .clamp(64 << 10, 64 << 20)
            .max(plan.cluster),
        v2: plan.image.version == Some(2) && !plan.amend,
    };
    carry_bitmaps(plan, &mut image, (&chains, g, &settings.copy), &mut || {
        report(Phase::Bitmaps, 0, total, true)
    })?;
    report(Phase::ReopenRw, 0, total, false);
    let mut window = RwWindow::open(&mut image, settings.copy.write_behind)
        .map_err(|e| Refusal::ReopenRw(Box::new(e)))?;
    restart();
    report(Phase::Copy, 0, total, true);
    let io = |op, source| CopyError::Io {
        op,
        path: plan.image.path.clone(),
        offset: 0,
        source,
    };
    let copy = window
        .mark_dirty()
        .map_err(|e| io("cannot mark dirty", e))
        .and_then(|()| {
            copy_differences(
                window.handle(),
                chains,
                g,
                (cancel, &settings.copy),
                outcome,
                &mut |done| report(Phase::Copy, done, total, true),
            )
        });
    report(Phase::Flush, outcome.copied, total, true);
    let flushed = window.flush().map_err(|e| io("cannot flush", e));
    outcome.copy = copy.and(flushed);
    report(Phase::ReopenRo, outcome.copied, total, true);
    let closed = window.close();
    outcome.left_dirty = closed.left_dirty;
    outcome.reopen_ro = closed.reopen_ro;
    Ok(())
}

/// Marks every stretch the copy may write (all but those both chains read alike) in the
/// image's recording bitmaps before the image is written, so that they stay valid through it.
fn carry_bitmaps(
    plan: &Plan,
    image: &mut Handle,
    (chains, g, copy): (&Chains<'_>, Geometry, &crate::ops::settings::Copy),
    marking: &mut dyn FnMut(),
) -> Result<(), Refusal> {
    use crate::ops::bitmaps;
    let failed = |what: String| Refusal::Bitmaps {
        path: plan.image.path.clone(),
        what,
    };
    let Some(h) = bitmaps::header_of(image.fd())
        .map_err(failed)?
        .filter(|h| h.bitmaps())
    else {
        return Ok(());
    };
    let recording = bitmaps::recording(image.fd(), &h).map_err(failed)?;
    if !recording.is_empty() {
        marking();
        let steps = steps(image, chains, g, copy).map_err(|source| Refusal::Map {
            path: plan.image.path.clone(),
            source,
        })?;
        let written: Ranges = steps
            .into_iter()
            .filter(|(step, _, _)| *step != Step::Skip)
            .map(|(_, offset, len)| (offset, len))
            .collect();
        bitmaps::mark(image.fd().into(), h.virtual_size, &recording, &written).map_err(failed)?;
    }
    image.keep_bitmaps();
    Ok(())
}

/// The image's unallocated runs, split by what each stretch needs ([`classify`]).
fn steps(
    image: &Handle,
    chains: &Chains<'_>,
    g: Geometry,
    copy: &crate::ops::settings::Copy,
) -> io::Result<Vec<(Step, u64, u64)>> {
    let mut runs = Vec::new();
    walk_unallocated(image, g.end, |o, l| {
        runs.push((o, l));
        Ok(())
    })?;
    classify(chains, &runs, g, &cloneable(image, chains, copy))
}

/// Bytes of `image` it does not allocate itself (its guest reads them from its backing chain).
fn unallocated(image: &Handle, end: u64) -> io::Result<u64> {
    let mut total = 0;
    walk_unallocated(image, end, |_, len| {
        total += len;
        Ok(())
    })?;
    Ok(total)
}

/// Calls `f(offset, len)` for each run of `image` that it does not allocate itself.
fn walk_unallocated(
    image: &Handle,
    end: u64,
    mut f: impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut offset = 0;
    while offset < end {
        let (mapping, len) = image.access().get_shallow_mapping(offset, end - offset)?;
        if len == 0 {
            break;
        }
        match mapping {
            ShallowMapping::Indirect { .. }
            | ShallowMapping::Zero {
                explicit: false, ..
            } => f(offset, len)?,
            ShallowMapping::Eof { .. } => break,
            _ => {}
        }
        offset += len;
    }
    Ok(())
}

/// The image's shape for the copy.
#[derive(Clone, Copy)]
struct Geometry {
    end: u64,
    cluster: u64,
    chunk: u64,
    v2: bool,
}

/// Both chains, top-down, and the new chain's top to read it through.
struct Chains<'a> {
    old: &'a [&'a Handle],
    new: &'a [&'a Handle],
    /// `None`: no new backing file, all zeroes.
    new_top: Option<&'a crate::image::handle::ImageAccess>,
    new_size: u64,
}

/// What a whole chain (top-down) reads at `offset..` from its metadata alone — the data of
/// layer `i` (`Some(i)`) or zeroes (`None`) — and for how many bytes (at most `max`).
fn reader(layers: &[&Handle], offset: u64, max: u64) -> io::Result<(Option<usize>, u64)> {
    let mut len = max;
    for (i, layer) in layers.iter().enumerate() {
        let (mapping, l) = layer.access().get_shallow_mapping(offset, len)?;
        match mapping {
            ShallowMapping::Zero { explicit: true, .. } => return Ok((None, l.max(1).min(max))),
            ShallowMapping::Zero { .. } | ShallowMapping::Indirect { .. } if l > 0 => len = l,
            // Past a layer's end its overlays read zeroes.
            ShallowMapping::Eof { .. } => return Ok((None, len)),
            _ if l == 0 => return Ok((Some(i), len)),
            _ => return Ok((Some(i), l)),
        }
    }
    Ok((None, len))
}

/// What one stretch of the image's unallocated runs needs, from both chains' metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Both chains read the same there: one layer's data, or zeroes.
    Skip,
    /// The old chain has data where the new one reads zeroes, or where the data can be
    /// cloned: it is taken as it is through the copy pipeline, without reading the new chain.
    Take,
    /// The old chain reads zeroes where the new one has data: made zero, nothing read.
    Zero,
    /// Both may differ: read, compared cluster by cluster, and what differs written.
    Compare,
}

/// Splits the runs into stretches by what they need. Where the old chain's layer `i` has data
/// over the new chain's, it is taken without comparing when `cloned[i]` (the filesystem shares
/// the blocks: taking identical data costs no room), and compared otherwise. Every stretch but
/// the last of a run ends on a cluster boundary of the image, so that a compared one covers
/// whole clusters.
fn classify(
    chains: &Chains<'_>,
    runs: &[(u64, u64)],
    g: Geometry,
    cloned: &[bool],
) -> io::Result<Vec<(Step, u64, u64)>> {
    let mut out: Vec<(Step, u64, u64)> = Vec::new();
    for &(start, run) in runs {
        let end = start + run;
        let mut at = start;
        while at < end {
            let want = g.chunk.min(end - at);
            let (old, lo) = reader(chains.old, at, want)?;
            let (new, ln) = if chains.new_top.is_none() || at >= chains.new_size {
                (None, want)
            } else {
                reader(chains.new, at, want.min(chains.new_size - at))?
            };
            let len = want.min(lo.max(1)).min(ln.max(1));
            let step = match (old, new) {
                (None, None) => Step::Skip,
                (Some(i), Some(j)) if chains.old[i].ident() == chains.new[j].ident() => Step::Skip,
                (Some(_), None) => Step::Take,
                (Some(i), Some(_)) if cloned[i] => Step::Take,
                (None, Some(_)) => Step::Zero,
                (Some(_), Some(_)) => Step::Compare,
            };
            let aligned = if at + len == end {
                end
            } else {
                (at + len) / g.cluster * g.cluster
            };
            let (step, stop) = match step {
                Step::Compare => (step, at + len.div_ceil(g.cluster) * g.cluster),
                _ if aligned > at => (step, aligned),
                _ => (Step::Compare, at + g.cluster),
            };
            let stop = stop.min(end).max(at + len.min(want));
            match out.last_mut() {
                Some((s, o, l)) if *s == step && *o + *l == at => *l += stop - at,
                _ => out.push((step, at, stop - at)),
            }
            at = stop;
        }
    }
    Ok(out)
}

/// Writes into `image` what its old chain shows where the new chain shows something else:
/// stretches where the old chain has data over the new one's zeroes go through the copy
/// pipeline as they are; the others the chains may read differently are compared.
fn copy_differences(
    image: &mut Handle,
    chains: Chains<'_>,
    g: Geometry,
    (cancel, copy): (&AtomicBool, &crate::ops::settings::Copy),
    outcome: &mut Outcome,
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let path = outcome.plan.image.path.clone();
    steps(image, &chains, g, copy)
        .map(|steps| runs_of(&steps, &mut outcome.compared))
        .map_err(|e| CopyError::Io {
            op: "cannot map",
            path: path.clone(),
            offset: 0,
            source: e,
        })
        .and_then(|(take, zeroes, compare)| {
            for &(offset, len) in &zeroes {
                datapath::zero(image, g.v2, offset, len).map_err(|e| CopyError::Io {
                    op: "cannot zero",
                    path: path.clone(),
                    offset,
                    source: e,
                })?;
                outcome.compared += len;
            }
            let t = Transfer {
                layers: chains.old,
                ranges: &take,
                zeroes: false,
                sparse: Some(g.cluster),
                v2: g.v2,
            };
            let mut done = Done::default();
            let skipped = outcome.compared;
            let taken = datapath::copy(&t, image, (copy, cancel), &mut done, &mut |d| {
                report(skipped + d)
            });
            outcome.compared += done.handled;
            outcome.copied += done.written;
            outcome.tally.add(&done.tally);
            taken?;
            compare_all(image, &chains, g, &compare, (cancel, copy), outcome, report)
        })
}

/// Guest ranges: `(offset, length)`.
type Ranges = Vec<(u64, u64)>;

/// The stretches to take, to make zero and to compare; the skipped ones are counted as
/// compared already.
fn runs_of(steps: &[(Step, u64, u64)], compared: &mut u64) -> (Ranges, Ranges, Ranges) {
    let (mut take, mut zero, mut compare) = (Vec::new(), Vec::new(), Vec::new());
    for &(step, offset, len) in steps {
        match step {
            Step::Skip => *compared += len,
            Step::Take => take.push((offset, len)),
            Step::Zero => zero.push((offset, len)),
            Step::Compare => compare.push((offset, len)),
        }
    }
    (take, zero, compare)
}

/// For each layer of the old chain, whether its data can be cloned into `image`: cloning is on,
/// the image's filesystem shares blocks, and the layer is on the same one.
fn cloneable(image: &Handle, chains: &Chains<'_>, copy: &crate::ops::settings::Copy) -> Vec<bool> {
    let shares = copy.clone && crate::ops::space::cloning_filesystem(image.path()).is_some();
    chains
        .old
        .iter()
        .map(|l| shares && l.ident().dev == image.ident().dev)
        .collect()
}

/// Compares the stretches chunk by chunk, cluster by cluster, and writes what differs.
fn compare_all(
    image: &mut Handle,
    chains: &Chains<'_>,
    g: Geometry,
    stretches: &[(u64, u64)],
    (cancel, copy): (&AtomicBool, &crate::ops::settings::Copy),
    outcome: &mut Outcome,
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let mut bufs = (vec![0u8; g.chunk as usize], vec![0u8; g.chunk as usize]);
    let mut tiers = datapath::tiers(copy);
    let mut last = Instant::now();
    for &(start, len) in stretches {
        let mut at = start;
        while at < start + len {
            if cancel.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled);
            }
            let n = g.chunk.min(start + len - at);
            compare(image, chains, g, (at, n), &mut bufs, &mut tiers, outcome)?;
            at += n;
            outcome.compared += n;
            if last.elapsed() >= REPORT_EVERY {
                last = Instant::now();
                report(outcome.compared);
            }
        }
    }
    Ok(())
}

/// Reads `len` bytes at `at` through both chains and writes the clusters that differ, merged
/// into runs, each as data or as zeroes.
fn compare(
    image: &mut Handle,
    chains: &Chains<'_>,
    g: Geometry,
    (at, len): (u64, u64),
    (old, theirs): &mut (Vec<u8>, Vec<u8>),
    tiers: &mut crate::image::ordered::KernelTiers,
    outcome: &mut Outcome,
) -> Result<(), CopyError> {
    let io = |op, offset, source| CopyError::Io {
        op,
        path: outcome.plan.image.path.clone(),
        offset,
        source,
    };
    let n = len as usize;
    image
        .access()
        .read(&mut old[..n], at)
        .map_err(|e| io("cannot read", at, e))?;
    theirs[..n].fill(0);
    if let Some(new) = chains.new_top
        && at < chains.new_size
    {
        let m = (chains.new_size - at).min(len) as usize;
        new.read(&mut theirs[..m], at)
            .map_err(|e| io("cannot read the new backing chain at", at, e))?;
    }
    let step = g.cluster as usize;
    let differs = |c: usize| old[c..(c + step).min(n)] != theirs[c..(c + step).min(n)];
    let zero = |c: usize| old[c..(c + step).min(n)].iter().all(|&b| b == 0);
    let mut c = 0;
    while c < n {
        if !differs(c) {
            c += step;
            continue;
        }
        let (from, z) = (c, zero(c));
        while c < n && differs(c) && zero(c) == z {
            c += step;
        }
        let c = c.min(n);
        let (off, run) = (at + from as u64, (c - from) as u64);
        if z {
            datapath::zero(image, g.v2, off, run).map_err(|e| io("cannot zero", off, e))?;
        } else {
            // From the old backing file through the kernel where it can (the image reads
            // those clusters through it), the rest from memory.
            let moved = kernel_move(image, image, off, run, tiers, &mut outcome.tally)
                .map_err(|e| io("cannot write", off, e))?;
            if moved < run {
                image
                    .access()
                    .write(&old[from + moved as usize..c], off + moved)
                    .map_err(|e| io("cannot write", off + moved, e))?;
                outcome.tally.copied += run - moved;
            }
        }
        outcome.copied += run;
    }
    Ok(())
}
