//! The copy pipeline every copying operation runs (commit, merge, flatten, rebase): a mapper
//! walks the source layers' extents over the ranges asked for; data extents go to the kernel
//! (cloned or copied, when the tiers allow) or to `in_flight` readers that read them into
//! memory ahead of the writer; the writer, on the caller's thread, puts each piece into the
//! target in order. Reading, mapping and writing overlap, and nobody waits for anybody once
//! one side stops.

use std::borrow::Borrow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use super::error::CopyError;
use super::tier::{Tally, kernel_move, tiers, zero};
use crate::image::handle::Handle;
use crate::image::ordered::KernelTiers;
use crate::ops::extents::{Extent, next_extent};
use crate::ops::settings::Copy;

/// How often progress is reported while copying (at least 5 Hz).
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// The longest piece the kernel is asked to move at once: it reads nothing into memory, so
/// the copy step does not bound it.
const KERNEL_PIECE: u64 = 64 << 20;

/// What one copy reads and how it writes.
pub struct Transfer<'a, H> {
    /// The layers data comes from, top-down: an extent allocated in layer `i` is read there.
    pub layers: &'a [H],
    /// The guest ranges to walk, ascending.
    pub ranges: &'a [(u64, u64)],
    /// Make the layers' zero extents read zeroes in the target (a commit); `false` leaves
    /// them, where the target reads zeroes once done (a flatten).
    pub zeroes: bool,
    /// Skip the clusters of this size that read all zero in data read into memory, as
    /// `qemu-img rebase` does when it compares (the target reads zeroes there once done).
    pub sparse: Option<u64>,
    /// The target is qcow2 v2, which has no zero clusters.
    pub v2: bool,
}

/// What a copy has done so far: kept up to date even when it stops early.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    /// Guest bytes walked in data and zero extents (what progress counts).
    pub handled: u64,
    /// Data bytes written into the target.
    pub written: u64,
    /// How the written bytes moved.
    pub tally: Tally,
}

/// A stretch the mapper or a reader hands to the writer.
struct Piece {
    offset: u64,
    len: u64,
    body: Body,
}

enum Body {
    Zero,
    /// Read into memory already.
    Read(Vec<u8>),
    /// Allocated in layer `i`, not read: the writer moves it through the kernel if it can.
    Layer(usize),
}

/// Raises its flag when dropped: the writer is done, whichever way it ended.
struct Stopping<'a>(&'a AtomicBool);

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The channels and flags the pipeline's threads share.
struct Shared<'a, H> {
    t: &'a Transfer<'a, H>,
    chunk: u64,
    cancel: &'a AtomicBool,
    /// Data pieces go to the writer unread while the kernel may move them.
    kernel: AtomicBool,
    /// Set when the writer stops: the mapper stops, the readers drain.
    gone: AtomicBool,
    reads: Mutex<Receiver<(u64, u64, usize)>>,
    spare: Mutex<Receiver<Vec<u8>>>,
}

/// Copies the extents of `t.layers` over `t.ranges` into `target`: data (through the tiers
/// `copy` allows), and zero extents as zeroes when `t.zeroes`. Stops at the first error or
/// when `cancel` is set between pieces; `done` says how far it came either way. `progress`
/// gets the bytes handled at least every 100 ms.
pub fn copy<H: Borrow<Handle> + Sync>(
    t: &Transfer<'_, H>,
    target: &mut Handle,
    (copy, cancel): (&Copy, &AtomicBool),
    done: &mut Done,
    progress: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let in_flight = copy.in_flight.clamp(1, 64);
    let mut tiers = tiers(copy);
    let (tx, rx) = sync_channel::<Result<Piece, CopyError>>(in_flight);
    let (to_read, reads) = sync_channel::<(u64, u64, usize)>(in_flight);
    let (give_back, spare) = channel::<Vec<u8>>();
    let shared = Shared {
        t,
        chunk: copy.chunk.clamp(64 << 10, 64 << 20),
        cancel,
        kernel: AtomicBool::new(!(tiers.no_clone && tiers.no_copy)),
        gone: AtomicBool::new(false),
        reads: Mutex::new(reads),
        spare: Mutex::new(spare),
    };
    let shared = &shared;
    std::thread::scope(|s| {
        for _ in 0..in_flight {
            let tx = tx.clone();
            s.spawn(move || read(shared, tx));
        }
        s.spawn(move || map(shared, tx, to_read));
        let _stopping = Stopping(&shared.gone);
        let mut last = Instant::now();
        for piece in rx {
            let p = piece?;
            write(shared, target, p, &mut tiers, done, &give_back)?;
            if last.elapsed() >= REPORT_EVERY {
                last = Instant::now();
                progress(done.handled);
            }
        }
        Ok(())
    })
}

/// The mapper: walks the ranges extent by extent; data to read goes to the readers, the rest
/// straight to the writer.
fn map<H: Borrow<Handle>>(
    sh: &Shared<'_, H>,
    tx: SyncSender<Result<Piece, CopyError>>,
    to_read: SyncSender<(u64, u64, usize)>,
) {
    let top = sh.t.layers.first().map(|h| h.borrow().path());
    for &(start, len) in sh.t.ranges {
        let end = start + len;
        let mut offset = start;
        while offset < end && !sh.gone.load(Ordering::Relaxed) {
            if sh.cancel.load(Ordering::Relaxed) {
                let _ = tx.send(Err(CopyError::Cancelled));
                return;
            }
            let kernel = sh.kernel.load(Ordering::Relaxed);
            let max = if kernel { KERNEL_PIECE } else { sh.chunk }.min(end - offset);
            let (ext, len) = match next_extent(sh.t.layers, offset, max) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(io("cannot map", top, offset, e)));
                    return;
                }
            };
            let body = match ext {
                Extent::Eof => return,
                Extent::Below => None,
                Extent::Zero => sh.t.zeroes.then_some(Body::Zero),
                Extent::Data(i) if kernel => Some(Body::Layer(i)),
                Extent::Data(i) => {
                    // Through memory: at most a buffer's worth at a time.
                    let len = len.min(sh.chunk);
                    if to_read.send((offset, len, i)).is_err() {
                        return;
                    }
                    offset += len;
                    continue;
                }
            };
            if let Some(body) = body
                && tx.send(Ok(Piece { offset, len, body })).is_err()
            {
                return;
            }
            offset += len;
        }
    }
}

/// A reader: reads the data pieces it is given into buffers the writer gives back.
fn read<H: Borrow<Handle>>(sh: &Shared<'_, H>, tx: SyncSender<Result<Piece, CopyError>>) {
    loop {
        let job = sh.reads.lock().map(|r| r.recv());
        let Ok(Ok((offset, len, i))) = job else {
            return;
        };
        if sh.gone.load(Ordering::Relaxed) {
            continue;
        }
        let reused = sh.spare.lock().ok().and_then(|s| s.try_recv().ok());
        let mut buf = reused.unwrap_or_else(|| vec![0u8; sh.chunk as usize]);
        let layer = sh.t.layers[i].borrow();
        let piece = match layer.access().read(&mut buf[..len as usize], offset) {
            Ok(()) => Ok(Piece {
                offset,
                len,
                body: Body::Read(buf),
            }),
            Err(e) => Err(io("cannot read", Some(layer.path()), offset, e)),
        };
        if tx.send(piece).is_err() {
            sh.gone.store(true, Ordering::Relaxed);
        }
    }
}

/// The writer's part for one piece.
fn write<H: Borrow<Handle>>(
    sh: &Shared<'_, H>,
    target: &mut Handle,
    p: Piece,
    tiers: &mut KernelTiers,
    done: &mut Done,
    give_back: &mpsc::Sender<Vec<u8>>,
) -> Result<(), CopyError> {
    let path = target.path().to_path_buf();
    let wrote = |e, at| io("cannot write", Some(&path), at, e);
    match p.body {
        Body::Read(buf) => {
            put(sh.t, target, &buf[..p.len as usize], p.offset, done)
                .map_err(|e| wrote(e, p.offset))?;
            let _ = give_back.send(buf);
        }
        Body::Layer(i) => {
            let layer = sh.t.layers[i].borrow();
            let moved = kernel_move(target, layer, p.offset, p.len, tiers, &mut done.tally)
                .map_err(|e| wrote(e, p.offset))?;
            done.written += moved;
            if tiers.no_clone && tiers.no_copy {
                sh.kernel.store(false, Ordering::Relaxed);
            }
            // What the kernel did not take goes through memory, a buffer at a time.
            let mut at = p.offset + moved;
            while at < p.offset + p.len {
                let n = sh.chunk.min(p.offset + p.len - at);
                let mut buf = vec![0u8; n as usize];
                layer
                    .access()
                    .read(&mut buf, at)
                    .map_err(|e| io("cannot read", Some(layer.path()), at, e))?;
                put(sh.t, target, &buf, at, done).map_err(|e| wrote(e, at))?;
                at += n;
            }
        }
        Body::Zero => zero(target, sh.t.v2, p.offset, p.len).map_err(|e| wrote(e, p.offset))?,
    }
    done.handled += p.len;
    Ok(())
}

/// Writes `data` read from `offset` into the target, leaving out the clusters that read all
/// zero when the transfer is sparse.
fn put<H>(
    t: &Transfer<'_, H>,
    target: &Handle,
    data: &[u8],
    offset: u64,
    done: &mut Done,
) -> std::io::Result<()> {
    let Some(cluster) = t.sparse.filter(|c| *c > 0) else {
        target.access().write(data, offset)?;
        done.written += data.len() as u64;
        done.tally.copied += data.len() as u64;
        return Ok(());
    };
    let end = offset + data.len() as u64;
    let next = |at: u64| ((at / cluster + 1) * cluster).min(end);
    let zero = |from: u64, to: u64| {
        data[(from - offset) as usize..(to - offset) as usize]
            .iter()
            .all(|&b| b == 0)
    };
    let mut at = offset;
    while at < end {
        if zero(at, next(at)) {
            at = next(at);
            continue;
        }
        // A run of clusters with data in each, written at once.
        let mut stop = next(at);
        while stop < end && !zero(stop, next(stop)) {
            stop = next(stop);
        }
        target
            .access()
            .write(&data[(at - offset) as usize..(stop - offset) as usize], at)?;
        done.written += stop - at;
        done.tally.copied += stop - at;
        at = stop;
    }
    Ok(())
}

fn io(op: &'static str, path: Option<&Path>, offset: u64, source: std::io::Error) -> CopyError {
    CopyError::Io {
        op,
        path: path.map(Path::to_path_buf).unwrap_or_default(),
        offset,
        source,
    }
}
