//! The storage layer under every image imgchain writes: it puts imago's writes on disk in an
//! order that a power loss cannot turn into a corrupt image (ARCHITECTURE.md §4).
//!
//! A power loss keeps every write that was synced and any subset of those that were not. So
//! a write that must reach the disk after another needs a sync between the two. QEMU's qcow2
//! driver syncs refcount blocks before the L2 tables that use their clusters, L2 tables before
//! the L1 entries that point at them, and data before the L2 entries that map it. imago orders
//! these writes in its program order but issues them with no sync in between, so this layer
//! sorts every write into a class — data, refcount block, L2 table, or pointer (header, L1
//! table, refcount table) — by the image's current layout, and syncs whenever the class
//! changes. Writes of one class never depend on each other, and those of different classes
//! reach the disk in the order imago issued them.
//!
//! imago still issues one dependency out of order: it writes the L1 (or refcount table) entry
//! for a new table before the refcount block that counts the table's cluster. So L1 entry
//! writes are held in memory until the next flush, when the tables and refcounts they point
//! at are synced first (or until the header or the refcount table is written, before which
//! they go out in order). That also spares a sync per new L2 table during a copy. Refcount
//! table entries for new refcount blocks, and a growing L1 table, still go out early: on qcow2
//! v3 the image's dirty bit covers that ([`Ordered::set_dirty`]): it says "refcounts may be
//! inconsistent", QEMU repairs them on its next read-write open, and imgchain refuses to
//! write a dirty image until it is repaired. qcow2 v2 has no dirty bit, so there a write to
//! the header or the refcount table is refused.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imago::Storage;
use imago::StorageExt;
use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::storage::PreallocateMode;
use imago::storage::drivers::CommonStorageHelper;

/// Byte offset of the qcow2 v3 incompatible-features field; bit 0 is the dirty bit.
const INCOMPATIBLE_FEATURES: u64 = 72;
const DIRTY: u64 = 1;
/// Byte offset of the autoclear-features field; bit 0 says the persistent bitmaps are valid.
const AUTOCLEAR_FEATURES: u64 = 88;
const AUTOCLEAR_BITMAPS: u64 = 1;

/// What a write changes, for ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Data,
    Refcount,
    L2,
    /// The header, the L1 table and the refcount table.
    Pointer,
}

/// Where a qcow2 image keeps its metadata, as far as ordering needs to know.
#[derive(Debug, Default)]
struct Layout {
    cluster_bits: u32,
    version: u32,
    l1_offset: u64,
    l1_entries: u64,
    rt_offset: u64,
    rt_bytes: u64,
    /// Host cluster indices of L2 tables and refcount blocks.
    l2: HashSet<u64>,
    rb: HashSet<u64>,
    /// Refcount table entries in use before the first empty one.
    rt_used: u64,
}

/// Host offset bits of L1 and refcount table entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

impl Layout {
    /// Reads the layout of the qcow2 image in `file`.
    fn load(file: &ImagoFile) -> io::Result<Layout> {
        let mut h = vec![0u8; 72];
        file.read(&mut h[..], 0)?;
        let mut l = Layout {
            version: be32(&h, 4),
            cluster_bits: be32(&h, 20),
            ..Layout::default()
        };
        if !(9..=21).contains(&l.cluster_bits) {
            return Err(io::Error::other(
                "the qcow2 header names no valid cluster size",
            ));
        }
        l.set_tables(&h);
        l.reload_l1(file)?;
        l.reload_rt(file)?;
        Ok(l)
    }

    fn set_tables(&mut self, h: &[u8]) {
        self.l1_entries = u64::from(be32(h, 36));
        self.l1_offset = be64(h, 40);
        self.rt_offset = be64(h, 48);
        self.rt_bytes = u64::from(be32(h, 56)) << self.cluster_bits;
    }

    /// Reads a table of big-endian entries and returns the clusters they point at.
    fn clusters_of(&self, file: &ImagoFile, offset: u64, bytes: u64) -> io::Result<HashSet<u64>> {
        if bytes > 256 << 20 {
            return Err(io::Error::other(
                "a qcow2 metadata table is implausibly large",
            ));
        }
        let mut buf = vec![0u8; bytes as usize];
        file.read(&mut buf[..], offset)?;
        Ok(buf
            .chunks_exact(8)
            .map(|e| be64(e, 0) & OFFSET_MASK)
            .filter(|&o| o != 0)
            .map(|o| o >> self.cluster_bits)
            .collect())
    }

    fn reload_l1(&mut self, file: &ImagoFile) -> io::Result<()> {
        self.l2 = self.clusters_of(file, self.l1_offset, self.l1_entries * 8)?;
        Ok(())
    }

    fn reload_rt(&mut self, file: &ImagoFile) -> io::Result<()> {
        self.rb = self.clusters_of(file, self.rt_offset, self.rt_bytes)?;
        let mut first = [0u8; 8];
        let mut used = 0;
        while used * 8 < self.rt_bytes {
            file.read(&mut first[..], self.rt_offset + used * 8)?;
            if be64(&first, 0) & OFFSET_MASK == 0 {
                break;
            }
            used += 1;
        }
        self.rt_used = used;
        Ok(())
    }

    fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
        a < b.saturating_add(blen) && b < a.saturating_add(alen)
    }

    /// The class of a write of `len` bytes at `offset`: the most significant class it touches.
    fn classify(&self, offset: u64, len: u64) -> Class {
        let cluster = 1u64 << self.cluster_bits;
        if offset < cluster
            || Layout::overlaps(offset, len, self.l1_offset, self.l1_entries * 8)
            || Layout::overlaps(offset, len, self.rt_offset, self.rt_bytes)
        {
            return Class::Pointer;
        }
        let first = offset >> self.cluster_bits;
        let last = (offset + len.max(1) - 1) >> self.cluster_bits;
        let mut class = Class::Data;
        for c in first..=last {
            if self.l2.contains(&c) {
                class = Class::L2;
            } else if self.rb.contains(&c) && class == Class::Data {
                class = Class::Refcount;
            }
        }
        class
    }

    /// Whether a write is whole entries of the L1 table and nothing else.
    fn l1_entries_only(&self, offset: u64, len: u64) -> bool {
        offset >= self.l1_offset
            && offset + len <= self.l1_offset + self.l1_entries * 8
            && (offset - self.l1_offset).is_multiple_of(8)
            && len.is_multiple_of(8)
    }

    /// Updates the layout after a pointer write at `offset`.
    fn update(&mut self, file: &ImagoFile, offset: u64, len: u64) -> io::Result<()> {
        if offset < 72 {
            let mut h = vec![0u8; 72];
            file.read(&mut h[..], 0)?;
            let (l1, rt) = (
                (self.l1_offset, self.l1_entries),
                (self.rt_offset, self.rt_bytes),
            );
            self.set_tables(&h);
            if (self.l1_offset, self.l1_entries) != l1 {
                self.reload_l1(file)?;
            }
            if (self.rt_offset, self.rt_bytes) != rt {
                self.reload_rt(file)?;
            }
        }
        if Layout::overlaps(offset, len, self.l1_offset, self.l1_entries * 8) {
            self.reload_l1(file)?;
        }
        if Layout::overlaps(offset, len, self.rt_offset, self.rt_bytes) {
            self.reload_rt(file)?;
        }
        Ok(())
    }
}

/// Ordering state, behind one lock: writes are issued one at a time.
#[derive(Debug)]
struct State {
    /// `None` for raw images: every write is data.
    layout: Option<Layout>,
    /// The class of the writes issued since the last sync.
    unsynced: Option<Class>,
    /// While set, every header write keeps the dirty bit set.
    dirty: bool,
    /// Autoclear bits every header write keeps: the bitmaps bit, when the caller marked what it
    /// writes in the bitmaps first (imago clears every autoclear bit it opens read-write).
    keep_autoclear: u64,
    /// L1 entry writes, held until the next flush (or a write to the header or the refcount
    /// table), when every table and refcount they point at is on disk first. imago flushes
    /// when its access is dropped; if that flush fails before reaching this layer, they are
    /// never written: the tables they point at are leaked, not exposed half-counted.
    deferred: Vec<(u64, Vec<u8>)>,
    /// A qcow2 image without a dirty bit (v2): the header and the refcount table are never
    /// written.
    strict: bool,
    /// Starts writeback after this many data bytes (0: never); see [`Ordered::write_behind`].
    behind_every: u64,
    /// The span of the data written since writeback was last started, and its bytes.
    behind: Option<(u64, u64, u64)>,
}

#[derive(Debug)]
struct Inner {
    file: ImagoFile,
    /// The same open file, for the kernel's copy and clone calls (imago keeps its own fd).
    fd: OwnedFd,
    state: Mutex<State>,
    syncs: AtomicU64,
}

/// How [`Ordered::take_from`] moved a range: the kernel shared the blocks (a reflink), or
/// copied them without passing them through user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    Cloned,
    Copied,
}

/// What the kernel refused so far between the files of one copy, so that it is not asked
/// again: it falls through from cloning to copying in the kernel to copying through memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelTiers {
    pub no_clone: bool,
    pub no_copy: bool,
}

/// `struct file_clone_range` of `FICLONERANGE`.
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

nix::ioctl_write_ptr!(ficlonerange, 0x94, 13, FileCloneRange);

/// Errors that mean "this filesystem, or this pair of files, cannot do that": fall through to
/// the next tier, never an error to the user.
fn unsupported(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(
        e,
        Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS
    )
}

/// An imago storage object that orders writes by their metadata class (see the module docs).
/// Clones share one file and one ordering state.
#[derive(Clone, Debug)]
pub struct Ordered(Arc<Inner>);

impl fmt::Display for Ordered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.file, f)
    }
}

impl Ordered {
    /// Wraps `file`, whose open file `fd` also is; `qcow2` says whether it holds a qcow2 image
    /// (whose layout is read now).
    ///
    /// With `keep_bitmaps`, the image's persistent bitmaps stay valid while it is written: the
    /// caller has marked in them every range it will write (`ops::bitmaps`).
    pub fn new(
        file: ImagoFile,
        fd: OwnedFd,
        qcow2: bool,
        keep_bitmaps: bool,
    ) -> io::Result<Ordered> {
        let layout = if qcow2 {
            Some(Layout::load(&file)?)
        } else {
            None
        };
        let keep_autoclear = if keep_bitmaps && layout.as_ref().is_some_and(|l| l.version >= 3) {
            let mut field = [0u8; 8];
            file.read(&mut field[..], AUTOCLEAR_FEATURES)?;
            u64::from_be_bytes(field) & AUTOCLEAR_BITMAPS
        } else {
            0
        };
        let strict = layout.as_ref().is_some_and(|l| l.version < 3);
        Ok(Ordered(Arc::new(Inner {
            file,
            fd,
            state: Mutex::new(State {
                layout,
                unsynced: None,
                dirty: false,
                keep_autoclear,
                strict,
                deferred: Vec::new(),
                behind_every: 0,
                behind: None,
            }),
            syncs: AtomicU64::new(0),
        })))
    }

    /// Starts writeback after every `bytes` of data written (`copy.write_behind`; 0: only at
    /// the next sync). A new image starts with 0.
    pub fn set_write_behind(&self, bytes: u64) {
        self.state().behind_every = bytes;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_locked(&self, st: &mut State) -> io::Result<()> {
        self.0.file.sync()?;
        self.0.syncs.fetch_add(1, Ordering::Relaxed);
        st.unsynced = None;
        Ok(())
    }

    /// Syncs first when the write about to be issued is of another class than the unsynced ones
    /// (and writes deferred L1 entries first if it overlaps them).
    fn barrier(&self, st: &mut State, offset: u64, len: u64) -> io::Result<Class> {
        if st
            .deferred
            .iter()
            .any(|(o, b)| Layout::overlaps(offset, len, *o, b.len() as u64))
        {
            self.release(st)?;
        }
        let class = st
            .layout
            .as_ref()
            .map_or(Class::Data, |l| l.classify(offset, len));
        if st.unsynced.is_some_and(|c| c != class) {
            self.sync_locked(st)?;
        }
        Ok(class)
    }

    fn after(&self, st: &mut State, class: Class, offset: u64, len: u64) -> io::Result<()> {
        st.unsynced = Some(class);
        if class == Class::Data {
            self.write_behind(st, offset, len)?;
        }
        if class == Class::Pointer
            && let Some(l) = &mut st.layout
        {
            l.update(&self.0.file, offset, len)?;
        }
        Ok(())
    }

    /// Starts the writeback of the data written since the last start, once it comes to
    /// `behind_every` bytes, without waiting for it (`sync_file_range` with
    /// `SYNC_FILE_RANGE_WRITE`; neither rustix nor nix wraps it). The disk then writes while
    /// the copy reads on, instead of all at the next sync, which then has little left to wait
    /// for. It orders nothing and promises nothing: a power loss may still keep any subset of
    /// the writes since the last sync, and the syncs stay as they are.
    fn write_behind(&self, st: &mut State, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if st.behind_every == 0 {
            return Ok(());
        }
        let (lo, hi, bytes) = st
            .behind
            .map_or((offset, offset + len, len), |(lo, hi, n)| {
                (lo.min(offset), hi.max(offset + len), n + len)
            });
        if bytes < st.behind_every {
            st.behind = Some((lo, hi, bytes));
            return Ok(());
        }
        st.behind = None;
        let (Ok(start), Ok(count)) = (i64::try_from(lo), i64::try_from(hi - lo)) else {
            return Ok(());
        };
        // SAFETY: a plain syscall on our own open fd; it reads and writes no memory of ours.
        let r = unsafe {
            nix::libc::sync_file_range(
                self.0.fd.as_raw_fd(),
                start,
                count,
                nix::libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = nix::errno::Errno::last();
        if unsupported(e) || e == nix::errno::Errno::ESPIPE {
            // Not for this file: the next sync writes everything, as without it.
            st.behind_every = 0;
            return Ok(());
        }
        Err(e.into())
    }

    /// Writes the deferred L1 entries, after a sync that puts everything they point at on disk.
    fn release(&self, st: &mut State) -> io::Result<()> {
        if st.deferred.is_empty() {
            return Ok(());
        }
        if st.unsynced.is_some() {
            self.sync_locked(st)?;
        }
        for (offset, bytes) in std::mem::take(&mut st.deferred) {
            self.0.file.write(&bytes[..], offset)?;
        }
        st.unsynced = Some(Class::Pointer);
        Ok(())
    }

    /// An L1 entry write, deferred until the next flush; the layout learns its L2 tables now.
    fn defer(st: &mut State, bufv: &IoVector<'_>, offset: u64) {
        let mut bytes = vec![0u8; bufv.len() as usize];
        bufv.copy_into_slice(&mut bytes);
        if let Some(l) = st.layout.as_mut() {
            let bits = l.cluster_bits;
            l.l2.extend(
                bytes
                    .chunks_exact(8)
                    .map(|e| be64(e, 0) & OFFSET_MASK)
                    .filter(|&o| o != 0)
                    .map(|o| o >> bits),
            );
        }
        st.deferred.push((offset, bytes));
    }

    /// For a v2 image (16-bit refcounts): the bytes of file that existing refcount blocks can
    /// count — a write past them needs a new refcount block, which v2 cannot take safely — and
    /// the cluster size.
    pub fn v2_refcount_room(&self) -> Option<(u64, u64)> {
        let st = self.state();
        let l = st.layout.as_ref().filter(|l| l.version < 3)?;
        let cluster = 1u64 << l.cluster_bits;
        Some((l.rt_used * (cluster / 2) * cluster, cluster))
    }

    /// Puts `len` bytes at `src_off` of `src`'s file at `dst_off` of this one without passing
    /// them through user space, ordered as a data write: the blocks shared (`FICLONERANGE`)
    /// where the filesystem can and the range is block-aligned, else copied by
    /// `copy_file_range`. `Ok(None)`: neither can be done here (or the range is not data);
    /// nothing was written, copy through memory instead. `tiers` remembers what was refused.
    pub fn take_from(
        &self,
        src: &Ordered,
        src_off: u64,
        dst_off: u64,
        len: u64,
        tiers: &mut KernelTiers,
    ) -> io::Result<Option<Moved>> {
        use std::os::fd::AsRawFd;
        if tiers.no_clone && tiers.no_copy || len == 0 {
            return Ok(None);
        }
        let mut st = self.state();
        let class = self.barrier(&mut st, dst_off, len)?;
        if class != Class::Data {
            return Ok(None);
        }
        // imago keeps the file's length: grow it first, so that it knows the range is there.
        let end = dst_off + len;
        if end > self.0.file.size()? {
            self.0.file.resize(end, PreallocateMode::None)?;
            st.unsynced = Some(Class::Data);
        }
        let block = rustix::fs::fstat(&self.0.fd).map_or(4096, |s| s.st_blksize.max(512) as u64);
        if !tiers.no_clone && [src_off, dst_off, len].iter().all(|v| v % block == 0) {
            let range = FileCloneRange {
                src_fd: i64::from(src.0.fd.as_raw_fd()),
                src_offset: src_off,
                src_length: len,
                dest_offset: dst_off,
            };
            // SAFETY: the ioctl reads one valid `file_clone_range` and writes nothing back.
            match unsafe { ficlonerange(self.0.fd.as_raw_fd(), &range) } {
                Ok(_) => {
                    self.after(&mut st, class, dst_off, len)?;
                    return Ok(Some(Moved::Cloned));
                }
                Err(e) if unsupported(e) => tiers.no_clone = true,
                Err(e) => {
                    st.unsynced = Some(Class::Data);
                    return Err(e.into());
                }
            }
        }
        if tiers.no_copy {
            return Ok(None);
        }
        let (mut from, mut to) = (src_off as i64, dst_off as i64);
        let mut left = len;
        while left > 0 {
            let step = left.min(1 << 30) as usize;
            match nix::fcntl::copy_file_range(
                &src.0.fd,
                Some(&mut from),
                &self.0.fd,
                Some(&mut to),
                step,
            ) {
                Ok(0) => {
                    st.unsynced = Some(Class::Data);
                    return Err(io::Error::other(
                        "the source ended before the range to copy did",
                    ));
                }
                Ok(n) => left -= n as u64,
                Err(e) if unsupported(e) && left == len => {
                    tiers.no_copy = true;
                    return Ok(None);
                }
                Err(e) => {
                    st.unsynced = Some(Class::Data);
                    return Err(e.into());
                }
            }
        }
        self.after(&mut st, class, dst_off, len)?;
        Ok(Some(Moved::Copied))
    }

    /// How many syncs this layer has issued.
    pub fn syncs(&self) -> u64 {
        self.0.syncs.load(Ordering::Relaxed)
    }

    /// Whether the image is qcow2 v3 or later, so that it has a dirty bit.
    pub fn has_dirty_bit(&self) -> bool {
        self.state().layout.as_ref().is_some_and(|l| l.version >= 3)
    }

    /// Sets or clears the qcow2 dirty bit, each time with everything written before it on disk
    /// first and the bit itself on disk when this returns. While it is set, refcounts on disk
    /// may lag behind the tables that use them; QEMU repairs them when it next opens the image
    /// read-write. Only for qcow2 v3 images.
    pub fn set_dirty(&self, on: bool) -> io::Result<()> {
        let mut st = self.state();
        if st.layout.as_ref().is_none_or(|l| l.version < 3) {
            return Err(io::Error::other("only qcow2 v3 images have a dirty bit"));
        }
        self.sync_locked(&mut st)?;
        let mut field = [0u8; 8];
        self.0.file.read(&mut field[..], INCOMPATIBLE_FEATURES)?;
        let flags = u64::from_be_bytes(field);
        let flags = if on { flags | DIRTY } else { flags & !DIRTY };
        st.dirty = on;
        self.0
            .file
            .write(&flags.to_be_bytes()[..], INCOMPATIBLE_FEATURES)?;
        self.sync_locked(&mut st)
    }

    /// Frees the disk space of the clusters in `len` bytes at `offset` that no metadata refers
    /// to any more (on disk, not only in a cache): they then read as zeroes. Clusters that have
    /// become metadata tables since are left alone.
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut st = self.state();
        let bits = st.layout.as_ref().map_or(16, |l| l.cluster_bits);
        let cluster = 1u64 << bits;
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let step = (cluster - at % cluster).min(end - at);
            let mut run = step;
            let class = self.barrier(&mut st, at, step)?;
            if class == Class::Data {
                while at + run < end {
                    let next = cluster.min(end - at - run);
                    let data = st
                        .layout
                        .as_ref()
                        .is_none_or(|l| l.classify(at + run, next) == Class::Data);
                    if !data {
                        break;
                    }
                    run += next;
                }
                // SAFETY: a discard of free clusters, issued with the ordering lock held.
                unsafe { self.0.file.pure_discard(at, run) }?;
                self.after(&mut st, class, at, run)?;
            }
            at += run;
        }
        Ok(())
    }

    /// Runs one write-like request in order.
    fn ordered<T>(
        &self,
        offset: u64,
        len: u64,
        f: impl FnOnce(&ImagoFile) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.state();
        let class = self.barrier(&mut st, offset, len)?;
        let r = f(&self.0.file)?;
        self.after(&mut st, class, offset, len)?;
        Ok(r)
    }
}

/// Whether a write of `len` bytes at `offset` covers the dirty bit's byte.
/// Sets `bits` of the big-endian 8-byte field at `field` in `buf`, written at `offset`, where
/// the write covers them.
fn keep_bits(buf: &mut [u8], offset: u64, field: u64, bits: u64) {
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        let at = field + i as u64;
        if byte != 0 && at >= offset && at < offset + buf.len() as u64 {
            buf[(at - offset) as usize] |= byte;
        }
    }
}

impl Storage for Ordered {
    fn mem_align(&self) -> usize {
        self.0.file.mem_align()
    }
    fn req_align(&self) -> usize {
        self.0.file.req_align()
    }
    fn zero_align(&self) -> usize {
        self.0.file.zero_align()
    }
    fn discard_align(&self) -> usize {
        self.0.file.discard_align()
    }
    fn size(&self) -> io::Result<u64> {
        self.0.file.size()
    }
    fn resolve_relative_path<P: AsRef<Path>>(&self, relative: P) -> io::Result<PathBuf> {
        self.0.file.resolve_relative_path(relative)
    }
    fn get_filename(&self) -> Option<PathBuf> {
        self.0.file.get_filename()
    }

    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        {
            let mut st = self.state();
            let len = bufv.len();
            if st
                .deferred
                .iter()
                .any(|(o, b)| Layout::overlaps(offset, len, *o, b.len() as u64))
            {
                self.release(&mut st)?;
            }
        }
        // SAFETY: forwarded as received.
        unsafe { self.0.file.pure_readv(bufv, offset) }
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        let len = bufv.len();
        let mut st = self.state();
        if let Some(l) = &st.layout
            && l.classify(offset, len) == Class::Pointer
        {
            if l.l1_entries_only(offset, len) {
                Ordered::defer(&mut st, &bufv, offset);
                return Ok(());
            }
            if st.strict {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the image would need its header or refcount table rewritten, which a \
                     qcow2 v2 (compat=0.10) image cannot survive a crash in: it has no dirty \
                     bit; convert it with qemu-img amend -f qcow2 -o compat=1.1 first",
                ));
            }
            // The header or the refcount table: deferred L1 entries go first, while the L1
            // table they belong to is still the one on disk.
            self.release(&mut st)?;
        }
        let class = self.barrier(&mut st, offset, len)?;
        let keep = [
            (INCOMPATIBLE_FEATURES, if st.dirty { DIRTY } else { 0 }),
            (AUTOCLEAR_FEATURES, st.keep_autoclear),
        ];
        if keep
            .iter()
            .any(|&(field, bits)| bits != 0 && Layout::overlaps(offset, len, field, 8))
        {
            // A header write while the dirty bit or the bitmaps bit must stay set.
            let mut buf = vec![0u8; len as usize];
            bufv.copy_into_slice(&mut buf);
            for (field, bits) in keep {
                keep_bits(&mut buf, offset, field, bits);
            }
            self.0.file.write(&buf[..], offset)?;
        } else {
            // SAFETY: forwarded as received.
            unsafe { self.0.file.pure_writev(bufv, offset) }?;
        }
        self.after(&mut st, class, offset, len)
    }

    unsafe fn pure_write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        // SAFETY: forwarded as received.
        self.ordered(offset, length, |f| unsafe {
            f.pure_write_zeroes(offset, length)
        })
    }

    unsafe fn pure_write_allocated_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        // SAFETY: forwarded as received.
        self.ordered(offset, length, |f| unsafe {
            f.pure_write_allocated_zeroes(offset, length)
        })
    }

    unsafe fn pure_discard(&self, offset: u64, length: u64) -> io::Result<()> {
        // SAFETY: forwarded as received.
        self.ordered(offset, length, |f| unsafe {
            f.pure_discard(offset, length)
        })
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.state();
        self.release(&mut st)?;
        self.0.file.flush()
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state();
        self.sync_locked(&mut st)
    }

    fn settle_writes(&self) -> io::Result<()> {
        self.0.file.settle_writes()
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        // SAFETY: forwarded as received.
        unsafe { self.0.file.invalidate_cache() }
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        self.0.file.get_storage_helper()
    }

    fn resize(&self, new_size: u64, prealloc_mode: PreallocateMode) -> io::Result<()> {
        let old = self.0.file.size()?;
        let (at, len) = (old.min(new_size), old.abs_diff(new_size));
        self.ordered(at, len, |f| f.resize(new_size, prealloc_mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            cluster_bits: 16,
            version: 3,
            l1_offset: 3 << 16,
            l1_entries: 16,
            rt_offset: 1 << 16,
            rt_bytes: 1 << 16,
            l2: [5u64].into_iter().collect(),
            rb: [2u64].into_iter().collect(),
            rt_used: 1,
        }
    }

    #[test]
    fn writes_are_classed_by_the_structure_they_touch() {
        let l = layout();
        assert_eq!(l.classify(0, 8), Class::Pointer, "header");
        assert_eq!(l.classify(72, 8), Class::Pointer, "dirty bit");
        assert_eq!(l.classify(1 << 16, 8), Class::Pointer, "refcount table");
        assert_eq!(l.classify((3 << 16) + 8, 8), Class::Pointer, "L1 entry");
        assert_eq!(l.classify(2 << 16, 1 << 16), Class::Refcount);
        assert_eq!(l.classify(5 << 16, 512), Class::L2);
        assert_eq!(l.classify(6 << 16, 2 << 20), Class::Data);
        assert_eq!(
            l.classify(4 << 16, 2 << 16),
            Class::L2,
            "data run over an L2 table"
        );
        assert_eq!(
            l.classify((3 << 16) + 128, 8),
            Class::Data,
            "past the L1 table"
        );
    }

    #[test]
    fn kept_bits_are_set_only_where_the_write_covers_them() {
        let mut header = vec![0u8; 104];
        keep_bits(&mut header, 0, INCOMPATIBLE_FEATURES, DIRTY);
        keep_bits(&mut header, 0, AUTOCLEAR_FEATURES, AUTOCLEAR_BITMAPS);
        assert_eq!((header[79], header[95]), (1, 1));
        assert_eq!(header.iter().filter(|&&b| b != 0).count(), 2);
        let mut early = vec![0u8; 72];
        keep_bits(&mut early, 0, INCOMPATIBLE_FEATURES, DIRTY);
        assert!(early.iter().all(|&b| b == 0));
        let mut tail = vec![0u8; 8];
        keep_bits(&mut tail, 90, AUTOCLEAR_FEATURES, AUTOCLEAR_BITMAPS);
        assert_eq!(tail[5], 1);
    }
}
