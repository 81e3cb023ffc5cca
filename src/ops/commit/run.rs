//! Running a commit (ARCHITECTURE.md §3).
//!
//! 1. open the top, the images in between, the base and the base's own backing chain, with
//!    QEMU's locks (top read-write unless it is kept; the rest read-only), and check each is
//!    the file the plan saw; the base gets its backing chain for copy-on-write;
//! 2. reopen the base read-write (a transaction: on failure nothing was written);
//! 3. set the base's dirty bit (qcow2 v3), so a crash leaves it marked for repair
//!    (ARCHITECTURE.md §4);
//! 4. grow the base to the top's size if it is smaller (the grown part reads as zeroes);
//! 5. copy every range allocated above the base — data, and zero ranges as zeroes — in
//!    chunks, reporting progress and checking the cancel flag between chunks;
//! 6. flush and fsync the base, then clear its dirty bit;
//! 7. reopen the base read-only — always, also after an error or a cancel — unless its dirty
//!    bit had to stay set: then the read-write handle is closed instead;
//! 8. empty the top (unless kept), only after the base is on disk, and free its space;
//! 9. release the locks (dropping the handles).
//!
//! The [`Outcome`] keeps the copy's result and the reopen's result apart: a successful
//! reopen never hides a failed copy, and a failed reopen never hides a successful one.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imago::Storage;

use super::Plan;
use crate::exit;
use crate::image::file::OpenMode;
use crate::image::handle::{Handle, ReopenError};
use crate::image::probe::Format;
use crate::ops::datapath::{self, CopyError, Done, Tally, Transfer};
use crate::ops::extents::{measure, own_ranges};
use crate::ops::window::RwWindow;
use crate::ops::{OpKind, Phase, Progress, Refusal, Run};
use crate::text::Names;
use crate::units::human_size;

/// What a commit that started did. Built only once the base was reopened read-write.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Bytes of allocated data and zero ranges to commit.
    pub total: u64,
    /// Bytes committed before the copy finished or stopped.
    pub copied: u64,
    /// How the data bytes moved: cloned, copied in the kernel, copied through memory.
    pub tally: Tally,
    /// `(old, new)` virtual size of the base, when it grew.
    pub grew: Option<(u64, u64)>,
    /// The copy, growth and flush.
    pub copy: Result<(), CopyError>,
    /// The base's qcow2 dirty bit stayed set because its metadata could not be put on disk:
    /// its refcounts may be inconsistent until `qemu-img check -r all` repairs them.
    pub left_dirty: bool,
    /// Returning the base to read-only; `None` when the base was left dirty, which no tool
    /// opens read-only before a repair: then the read-write handle was closed instead.
    pub reopen_ro: Option<Result<(), ReopenError>>,
    /// A cancel arrived after the copy had finished, too late to stop the commit.
    pub cancel_too_late: bool,
    /// Emptying the top: `None` when it is kept (or the copy did not finish).
    pub top_emptied: Option<Result<(), String>>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The process exit code (ARCHITECTURE.md §5).
    pub fn exit_code(&self) -> u8 {
        match (&self.copy, &self.reopen_ro, &self.top_emptied) {
            (Err(CopyError::Cancelled), Some(Ok(())), _) => exit::CANCELLED,
            (Err(_), _, _) => exit::IO_ERROR,
            (Ok(()), Some(Err(_)), _) => exit::REOPEN_FAILED,
            (Ok(()), None, _) => exit::IO_ERROR,
            (Ok(()), Some(Ok(())), Some(Err(_))) => exit::IO_ERROR,
            (Ok(()), Some(Ok(())), _) => exit::OK,
        }
    }

    /// The mode imgchain's handle on the base had when the commit ended: read-only unless
    /// the reopen failed.
    pub fn base_mode(&self) -> OpenMode {
        if !matches!(self.reopen_ro, Some(Err(_))) {
            OpenMode::ReadOnly
        } else {
            OpenMode::ReadWrite
        }
    }

    /// One paragraph for people: what happened to the data, the base and the top.
    pub fn summary(&self) -> String {
        let base = self.plan.base.path.shown();
        let top = self.plan.top.path.shown();
        let mut s = String::new();
        if self.plan.amend {
            s.push_str(&format!("{base} was upgraded to compat=1.1 first. "));
        }
        if self.cancel_too_late {
            s.push_str("Too late to cancel: the copy had finished, so the commit was completed. ");
        }
        let flush_failed = matches!(
            &self.copy,
            Err(CopyError::Io {
                op: "cannot flush",
                ..
            })
        );
        let state = if self.left_dirty {
            format!(
                "{base} holds part of {top}'s data and is marked dirty: its refcounts may be \
                 inconsistent. Repair it with qemu-img check -r all {base} before anything uses it"
            )
        } else if flush_failed {
            format!(
                "{base} holds part of {top}'s data, but putting it on disk failed, so what \
                 the disk holds is uncertain: check it with qemu-img check {base}"
            )
        } else {
            format!("{base} holds part of {top}'s data and is consistent on disk")
        };
        match &self.copy {
            Ok(()) if !self.plan.by_qemu.is_empty() => s.push_str(&format!(
                "Committed {top} into {base} through qemu-img commit ({} need QEMU's own code).",
                self.plan.by_qemu.join(", ")
            )),
            Ok(()) => s.push_str(&format!(
                "Committed {} bytes of {top} into {base} ({}).",
                self.total,
                self.tally.describe()
            )),
            Err(CopyError::Cancelled) => s.push_str(&format!(
                "Cancelled after {} of {} ({} of {} bytes) were in {base}: {state}; {top} is \
                 unchanged, so its disk reads as before. Run the same commit again to finish \
                 it.",
                human_size(self.copied),
                human_size(self.total),
                self.copied,
                self.total
            )),
            Err(e) => s.push_str(&format!(
                "The commit failed after {} of {} bytes: {e}. {state}; {top} is unchanged, so its \
                 disk reads as before. Fix the cause (free space, file size limit, disk errors) \
                 and commit again.",
                self.copied, self.total
            )),
        }
        if let Some((old, new)) = self.grew {
            s.push_str(&format!(" {base} grew from {old} to {new} bytes."));
        }
        match &self.reopen_ro {
            Some(Ok(())) => s.push_str(&format!(" {base} is read-only again.")),
            Some(Err(e)) => s.push_str(&format!(
                " But returning the base to read-only failed: {e}. The data is on disk; the read-write handle was closed when the commit \
                 ended. Check {base} with qemu-img check before using it."
            )),
            None => s.push_str(" The read-write handle on the base was closed."),
        }
        match &self.top_emptied {
            Some(Ok(())) => s.push_str(&format!(" {top} was emptied.")),
            Some(Err(e)) => s.push_str(&format!(
                " Emptying {top} failed ({e}); its disk still reads as before (what it no longer \
                 holds is in the base). Run the commit again to finish emptying it, or keep it."
            )),
            None if self.copy.is_ok() => s.push_str(&format!(" {top} keeps its data.")),
            None => {}
        }
        s
    }
}

/// The images of a commit, opened and locked.
struct Opened {
    /// The top and the images in between, top first, as the copy reads them.
    layers: Vec<Handle>,
    /// The base's own backing chain, bottom-up: held until the end.
    below: Vec<Handle>,
    base: Handle,
    /// Bytes of data and zero ranges to commit.
    total: u64,
}

/// Runs `plan` in this thread, with `r`'s settings, cancel flag and progress (at phase changes
/// and at least every 100 ms while copying).
///
/// Returns an error only for a commit that wrote nothing (guards at open time, a refused
/// read-write reopen); everything after the base became writable is in the [`Outcome`].
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    let Run {
        settings,
        cancel,
        progress,
    } = r;
    let start = Instant::now();
    // Rates are measured from the start of the copy, not of the whole run.
    let since = std::cell::Cell::new(start);
    let mut report = |phase, done, total, writing| {
        progress(Progress {
            op: OpKind::COMMIT,
            phase,
            done,
            total,
            elapsed: since.get().elapsed(),
            writing,
        })
    };
    let Opened {
        layers,
        below,
        mut base,
        total,
    } = prepare(plan, settings, &mut report)?;

    // Base read-write, as a transaction: a failure here has written nothing.
    report(Phase::ReopenRw, 0, total, false);
    let mut window = RwWindow::open(&mut base, settings.copy.write_behind)
        .map_err(|e| Refusal::ReopenRw(Box::new(e)))?;
    report(Phase::ReopenRw, 0, total, true);

    // Mark dirty, grow, copy: any failure stops here but still reopens read-only.
    let mut done = Done::default();
    let mut grew = None;
    let copy = fill(plan, &mut window, &mut grew, &mut |phase, d, w| {
        if phase == Phase::Copy && d == 0 {
            since.set(Instant::now());
        }
        report(phase, d, total, w)
    })
    .and_then(|()| {
        let run = (settings, cancel, &mut done);
        copy_top(plan, &layers, window.handle(), run, &mut |d| {
            report(Phase::Copy, d, total, true)
        })
    });
    let copied = done.handled;
    // Flush whatever was written, whether the copy finished or not, then clear the dirty bit:
    // only once every table is on disk.
    report(Phase::Flush, copied, total, true);
    let flushed = window.flush().map_err(|e| CopyError::Io {
        op: "cannot flush",
        path: plan.base.path.clone(),
        offset: 0,
        source: e,
    });
    let copy = copy.and(flushed);
    let cancel_too_late = copy.is_ok() && cancel.load(Ordering::Relaxed);
    let (closed, top_emptied) = close(plan, window, layers, copy.is_ok(), &mut |p, w| {
        report(p, copied, total, w)
    });
    // Dropping the handles releases the locks.
    drop(base);
    drop(below);
    Ok(Outcome {
        plan: plan.clone(),
        total,
        copied,
        tally: done.tally,
        grew,
        copy,
        left_dirty: closed.left_dirty,
        reopen_ro: closed.reopen_ro,
        cancel_too_late,
        top_emptied,
        elapsed: start.elapsed(),
    })
}

/// Everything before the base opens read-write: the re-check of its overlays, the images
/// opened and locked, the v2 upgrade (`--amend`), the v2 room guard, and the bitmaps marked.
fn prepare(
    plan: &Plan,
    settings: &crate::ops::settings::Settings,
    report: &mut dyn FnMut(Phase, u64, u64, bool),
) -> Result<Opened, Refusal> {
    report(Phase::Open, 0, 0, false);
    super::plan::recheck_overlays(plan, settings)?;
    let mut opened = open(plan)?;
    let total = opened.total;
    if plan.amend {
        report(Phase::Amend, 0, total, true);
        crate::ops::amend::to_v3(&plan.base.path, &mut opened.base)?;
    }
    crate::ops::guards::v2_room(&opened.base, &plan.base, total)?;
    carry_bitmaps(plan, &opened.layers, &mut opened.base, &mut || {
        report(Phase::Bitmaps, 0, total, true)
    })?;
    Ok(opened)
}

/// Marks everything the commit will write in the base's recording bitmaps (before any data
/// write), so that the base may keep them valid while it is written.
fn carry_bitmaps(
    plan: &Plan,
    layers: &[Handle],
    base: &mut Handle,
    marking: &mut dyn FnMut(),
) -> Result<(), Refusal> {
    use crate::ops::bitmaps;
    let failed = |what: String| Refusal::Bitmaps {
        path: plan.base.path.clone(),
        what,
    };
    let Some(h) = bitmaps::header_of(base.fd()).map_err(failed)? else {
        return Ok(());
    };
    let recording = match h.bitmaps() {
        true => bitmaps::recording(base.fd(), &h).map_err(failed)?,
        false => Vec::new(),
    };
    if !plan.merged_bitmaps.is_empty() || !recording.is_empty() {
        marking();
    }
    if !plan.merged_bitmaps.is_empty() {
        let top = &layers[0];
        let top_h = bitmaps::header_of(top.fd())
            .map_err(failed)?
            .ok_or_else(|| failed("the top is no longer qcow2".into()))?;
        bitmaps::merge_into((top.fd().into(), &top_h), (base.fd().into(), &h)).map_err(failed)?;
    }
    if !recording.is_empty() {
        let ranges =
            crate::ops::extents::above_base(layers, plan.top.virtual_size).map_err(|source| {
                Refusal::Map {
                    path: plan.top.path.clone(),
                    source,
                }
            })?;
        bitmaps::mark(base.fd().into(), h.virtual_size, &recording, &ranges).map_err(failed)?;
    }
    if bitmaps::header_of(base.fd())
        .map_err(failed)?
        .is_some_and(|h| h.bitmaps())
    {
        base.keep_bitmaps();
    }
    Ok(())
}

/// Opens every image of the plan, locked as QEMU would lock it: the top read-write unless it
/// is kept, the rest read-only; the base gets its backing chain for copy-on-write.
fn open(plan: &Plan) -> Result<Opened, Refusal> {
    let top_mode = if plan.keep_top {
        OpenMode::ReadOnly
    } else {
        OpenMode::ReadWrite
    };
    // The top opens read-only first: read-write, it keeps its bitmaps (emptying it does not
    // change its disk), which a handle must know before it is writable.
    let mut top = plan.top.open(OpenMode::ReadOnly, None)?;
    if top_mode == OpenMode::ReadWrite {
        top.keep_bitmaps();
        top.reopen(OpenMode::ReadWrite)
            .map_err(|e| Refusal::ReopenRw(Box::new(e)))?;
    }
    let mut layers = vec![top];
    for m in &plan.intermediates {
        layers.push(m.open(OpenMode::ReadOnly, None)?);
    }
    // The base's own backing chain, read-only and locked as QEMU locks backing files, from the
    // bottom up: writing part of a cluster the base does not allocate copies the rest from it.
    let mut below = Vec::new();
    let mut backing = None;
    for img in plan.below.iter().rev() {
        let h = img.open(OpenMode::ReadOnly, backing.take())?;
        backing = Some(h.shared_access());
        below.push(h);
    }
    let base = plan.base.open(OpenMode::ReadOnly, backing)?;
    let total = measure(&layers, plan.top.virtual_size).map_err(|source| Refusal::Map {
        path: plan.top.path.clone(),
        source,
    })?;
    Ok(Opened {
        layers,
        below,
        base,
        total,
    })
}

/// Copies the top's (and the layers in between) data and zeroes into the base through the
/// data path, counting into `done`.
fn copy_top(
    plan: &Plan,
    layers: &[Handle],
    base: &mut Handle,
    (settings, cancel, done): (&crate::ops::settings::Settings, &AtomicBool, &mut Done),
    report: &mut dyn FnMut(u64),
) -> Result<(), CopyError> {
    let ranges = [(0, plan.top.virtual_size)];
    let t = Transfer {
        layers,
        ranges: &ranges,
        zeroes: true,
        sparse: None,
        v2: plan.base.version == Some(2),
    };
    datapath::copy(&t, base, (&settings.copy, cancel), done, report)
}

/// Marks the base dirty and grows it when the top is larger (the grown part reads as
/// zeroes); reports the phases with `(phase, done, writing)`.
fn fill(
    plan: &Plan,
    window: &mut RwWindow<'_>,
    grew: &mut Option<(u64, u64)>,
    report: &mut dyn FnMut(Phase, u64, bool),
) -> Result<(), CopyError> {
    let io = |op, offset, source| CopyError::Io {
        op,
        path: plan.base.path.clone(),
        offset,
        source,
    };
    window
        .mark_dirty()
        .map_err(|e| io("cannot mark dirty", 0, e))?;
    let base = window.handle();
    if let Some(new) = plan.grow_to {
        report(Phase::Grow, 0, true);
        let old = base.access().size();
        base.access_mut()
            .and_then(|a| a.resize(new, imago::format::PreallocateMode::None))
            .map_err(|e| io("cannot grow", old, e))?;
        // The grown area must read as zeroes, not as whatever the base's own backing file has
        // there (QEMU's bdrv_co_truncate does the same with BDRV_REQ_ZERO_WRITE).
        let backing_len = plan.below.first().map_or(0, |b| b.virtual_size);
        let visible_end = backing_len.min(new);
        if visible_end > old {
            let v2 = plan.base.version == Some(2);
            datapath::zero(base, v2, old, visible_end - old)
                .map_err(|e| io("cannot zero the grown area of", old, e))?;
        }
        *grew = Some((old, new));
    }
    report(Phase::Copy, 0, true);
    Ok(())
}

/// Back to read-only, on every path — unless the base stays dirty: then no tool may open it
/// before a repair, and the read-write handle is closed instead. Then the top is emptied
/// (unless kept), only once the base holds its data on disk (`copied`).
fn close(
    plan: &Plan,
    window: RwWindow<'_>,
    mut layers: Vec<Handle>,
    copied: bool,
    report: &mut dyn FnMut(Phase, bool),
) -> (crate::ops::window::Closed, Option<Result<(), String>>) {
    report(Phase::ReopenRo, true);
    let closed = window.close();
    let base_rw = matches!(closed.reopen_ro, Some(Err(_)));
    report(Phase::ReopenRo, base_rw);
    let top_emptied = if copied && !plan.keep_top {
        report(Phase::EmptyTop, base_rw);
        Some(empty(&mut layers[0]))
    } else {
        None
    };
    report(Phase::Done, base_rw);
    (closed, top_emptied)
}

/// Makes every cluster of the top unallocated, so that reads fall through to the base
/// (qemu-img's `blk_make_empty`), puts that on disk, and gives the freed clusters' disk space
/// back. A qcow2 v3 top carries the dirty bit meanwhile, as QEMU's make-empty does. Only the
/// ranges the top maps are discarded, so no table is allocated and no freed cluster reused.
///
/// A top with internal snapshots shares L2 tables with them, and discarding through a shared
/// table first copies it into a new cluster, which could be one the same emptying just freed
/// (a power loss could then catch the table half written over data still mapped on disk).
/// So each L2 table to change is made the top's own first, by rewriting one of its clusters
/// with what it holds (an allocation that frees nothing), and synced; only then are the
/// ranges discarded. Clusters a snapshot still counts are not freed, so no hole is punched.
fn empty(top: &mut Handle) -> Result<(), String> {
    if top.format() != Format::Qcow2 {
        return Err("only qcow2 overlays can be emptied".into());
    }
    let own = own_ranges(top).map_err(|e| format!("cannot map it: {e}"))?;
    let dirty = top.storage().has_dirty_bit();
    if dirty {
        top.storage()
            .set_dirty(true)
            .map_err(|e| format!("cannot mark it dirty: {e}"))?;
    }
    let path = top.path().to_path_buf();
    let dirty_hint = |e: io::Error| {
        if dirty {
            format!(
                "{e}; it is marked dirty: repair it with qemu-img check -r all {}",
                path.quoted()
            )
        } else {
            e.to_string()
        }
    };
    let shared = has_snapshots(&path);
    if shared {
        own_every_l2_table(top, &own.guest).map_err(&dirty_hint)?;
        top.flush().map_err(&dirty_hint)?;
    }
    let access = top.access_mut().map_err(&dirty_hint)?;
    for r in &own.guest {
        access.discard_to_backing(r.0, r.1).map_err(&dirty_hint)?;
    }
    top.flush().map_err(&dirty_hint)?;
    if dirty {
        top.storage().set_dirty(false).map_err(&dirty_hint)?;
    }
    // The tables that mapped these clusters are on disk without them: nothing refers to them.
    let freed = |e: io::Error| format!("emptied, but freeing its disk space failed: {e}");
    if shared {
        return top.storage().sync().map_err(freed);
    }
    for &(offset, len) in &own.host {
        top.storage().punch_hole(offset, len).map_err(freed)?;
    }
    top.storage().sync().map_err(freed)
}

/// Rewrites, in each L2 table's span that `ranges` touch, one cluster of those ranges with what
/// it reads: the write makes the table the image's own (copying it out of a snapshot's) and
/// frees nothing, since the old table and data stay counted by the snapshot.
fn own_every_l2_table(top: &Handle, ranges: &[(u64, u64)]) -> io::Result<()> {
    let cluster = cluster_size_of(top.path())?;
    let span = cluster * (cluster / 8);
    let size = top.access().size();
    let mut buf = vec![0u8; cluster as usize];
    let mut last_span = None;
    for &(offset, len) in ranges {
        let mut at = offset / cluster * cluster;
        while at < offset + len {
            if last_span != Some(at / span) {
                last_span = Some(at / span);
                let n = cluster.min(size - at) as usize;
                top.access().read(&mut buf[..n], at)?;
                top.access().write(&buf[..n], at)?;
            }
            at = (at / span + 1) * span;
        }
    }
    Ok(())
}

fn cluster_size_of(path: &std::path::Path) -> io::Result<u64> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    match crate::image::file::read_header(&f, len)? {
        Ok(p) => p
            .cluster_size
            .ok_or_else(|| io::Error::other("no cluster size in its header")),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// Whether the qcow2 image at `path` has internal snapshots (unreadable counts as yes: the
/// careful path is taken).
fn has_snapshots(path: &std::path::Path) -> bool {
    let read = std::fs::File::open(path).and_then(|f| {
        let len = f.metadata()?.len();
        crate::image::file::read_header(&f, len)
    });
    !matches!(read, Ok(Ok(p)) if p.qcow2.as_ref().is_some_and(|h| h.nb_snapshots == 0))
}

#[cfg(test)]
mod tests {
    //! The failure paths of a running commit, in-process, with reopen faults injected.

    use std::os::fd::AsFd;
    use std::path::Path;
    use std::process::Command;

    use super::*;

    use crate::image::handle::{ReopenStep, fault};
    use crate::ops::commit::{Commit, Request, plan};
    use crate::ops::settings::Settings;
    use crate::ops::{Event, Job, spawn};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn qemu() -> bool {
        let found = Command::new("qemu-img").arg("--version").output().is_ok();
        assert!(
            found || std::env::var("IMGCHAIN_REQUIRE_QEMU").as_deref() != Ok("1"),
            "qemu-img is required"
        );
        found
    }

    fn sh(cmd: &mut Command) {
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A qcow2 overlay `name` on `base.qcow2` in `dir`.
    fn overlay_of_base(dir: &Path, name: &str) {
        sh(Command::new("qemu-img").current_dir(dir).args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            name,
        ]));
    }

    /// base (1 MiB of 0x11) <- top (512 KiB of 0x22 at 0, zeroes at 2M).
    fn chain(dir: &Path) -> Plan {
        sh(Command::new("qemu-img").current_dir(dir).args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "base.qcow2",
            "16M",
        ]));
        sh(Command::new("qemu-io").current_dir(dir).args([
            "-c",
            "write -P 0x11 0 4M",
            "base.qcow2",
        ]));
        overlay_of_base(dir, "top.qcow2");
        sh(Command::new("qemu-io").current_dir(dir).args([
            "-c",
            "write -P 0x22 0 512k",
            "-c",
            "write -z 2M 1M",
            "top.qcow2",
        ]));
        plan_of(dir, &dir.join("top.qcow2"), false).unwrap()
    }

    /// The plan to commit `top` (keeping it), from a scan of `scanned`.
    fn plan_of(scanned: &Path, top: &Path, force: bool) -> Result<Plan, Refusal> {
        let scan = crate::forest::scan(&[scanned.to_path_buf()], &Default::default()).unwrap();
        let top = scan.forest.find(top).unwrap();
        let req = Request {
            top,
            base: None,
            keep_top: true,
            force,
            amend: false,
        };
        plan(&scan.forest, &req)
    }

    /// The default settings with a copy step of `chunk`.
    fn chunked(chunk: u64) -> Arc<Settings> {
        let mut s = Settings::default();
        s.copy.chunk = chunk;
        Arc::new(s)
    }

    /// [`run`] with a copy step of `chunk`.
    fn run_with(
        plan: &Plan,
        chunk: u64,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Outcome, Refusal> {
        run(
            plan,
            Run {
                settings: &chunked(chunk),
                cancel,
                progress,
            },
        )
    }

    fn sum(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn reads(path: &Path, cmd: &str) -> bool {
        Command::new("qemu-io")
            .args(["-r", "-U", "-c", cmd])
            .arg(path)
            .output()
            .is_ok_and(|o| {
                o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("fail")
            })
    }

    fn base_locks(dir: &Path) -> crate::image::lock::Foreign {
        let f = std::fs::File::open(dir.join("base.qcow2")).unwrap();
        crate::image::lock::probe(f.as_fd()).unwrap()
    }

    #[test]
    fn ro_to_rw_failures_write_nothing_and_leave_the_base_ro() {
        if !qemu() {
            return;
        }
        for step in [ReopenStep::Open, ReopenStep::Identity, ReopenStep::Locks] {
            let tmp = tempfile::tempdir().unwrap();
            let plan = chain(tmp.path());
            let before = sum(&tmp.path().join("base.qcow2"));
            let mut saw_rw = false;
            fault::inject(step, OpenMode::ReadWrite);
            let r = run_with(&plan, 1 << 20, &AtomicBool::new(false), &mut |p| {
                saw_rw |= p.writing
            });
            fault::clear();
            match r {
                Err(Refusal::ReopenRw(e)) => {
                    assert_eq!(e.step, step);
                    let msg = Refusal::ReopenRw(e).to_string();
                    assert!(msg.starts_with("nothing was written"), "{msg}");
                    assert!(msg.contains("it stays read-only"), "{msg}");
                }
                other => panic!("{step:?}: expected ReopenRw, got {other:?}"),
            }
            assert!(!saw_rw, "{step:?}: the base was never shown RW");
            assert_eq!(
                before,
                sum(&tmp.path().join("base.qcow2")),
                "{step:?}: base untouched"
            );
            assert!(!base_locks(tmp.path()).in_use(), "{step:?}: locks released");
        }
    }

    #[test]
    fn rw_to_ro_failures_keep_the_data_and_report_the_base_rw() {
        if !qemu() {
            return;
        }
        for step in [
            ReopenStep::Flush,
            ReopenStep::Open,
            ReopenStep::Identity,
            ReopenStep::Locks,
            ReopenStep::Header,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let plan = chain(tmp.path());
            let mut last = None;
            fault::inject(step, OpenMode::ReadOnly);
            let o = run_with(&plan, 1 << 20, &AtomicBool::new(false), &mut |p| {
                last = Some(p)
            })
            .unwrap();
            fault::clear();
            assert!(o.copy.is_ok(), "{step:?}: {:?}", o.copy);
            let e = o.reopen_ro.as_ref().unwrap().as_ref().unwrap_err();
            assert_eq!(e.step, step);
            assert_eq!(o.exit_code(), exit::REOPEN_FAILED);
            assert_eq!(o.base_mode(), OpenMode::ReadWrite);
            assert!(
                last.is_some_and(|p| p.writing),
                "{step:?}: the last report shows RW"
            );
            let s = o.summary();
            assert!(
                s.contains("Committed")
                    && s.contains("returning the base to read-only failed")
                    && s.contains("qemu-img check"),
                "{s}"
            );
            let base = tmp.path().join("base.qcow2");
            assert!(
                reads(&base, "read -P 0x22 0 512k"),
                "{step:?}: data committed"
            );
            assert!(
                reads(&base, "read -P 0 2M 1M"),
                "{step:?}: zeroes committed"
            );
            assert!(
                reads(&base, "read -P 0x11 1M 1M"),
                "{step:?}: the rest kept"
            );
            sh(Command::new("qemu-img").args(["check", "-q"]).arg(&base));
        }
    }

    #[test]
    fn a_base_replaced_by_rename_is_never_written() {
        if !qemu() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let plan = chain(d);
        let (base, orig) = (d.join("base.qcow2"), d.join("base.orig"));
        let mut impostor = None;
        let o = run_with(&plan, 1 << 20, &AtomicBool::new(false), &mut |p| {
            if p.phase == Phase::ReopenRw && impostor.is_none() {
                std::fs::rename(&base, &orig).unwrap();
                sh(Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&base)
                    .arg("16M"));
                impostor = Some(sum(&base));
            }
        })
        .unwrap();
        assert!(o.copy.is_ok() && matches!(o.reopen_ro, Some(Ok(()))));
        assert_eq!(impostor, Some(sum(&base)), "the impostor is untouched");
        assert!(
            reads(&orig, "read -P 0x22 0 512k"),
            "the real base got the data"
        );
    }

    #[test]
    fn a_panicking_worker_still_reports_done() {
        if !qemu() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let plan = chain(tmp.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut first = true;
        let job = Job::new::<Commit>(1, &plan);
        let worker = spawn::<Commit>(&job, plan, chunked(1 << 20), move |e| {
            if std::mem::take(&mut first) {
                panic!("injected");
            }
            let _ = tx.send(e);
        });
        let done = rx
            .iter()
            .find_map(|e| match e {
                Event::Done(r) => Some(r),
                Event::Progress(_) => None,
            })
            .expect("a Done report");
        match *done {
            Err(e @ Refusal::Internal { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("injected") && msg.contains("qemu-img check"),
                    "{msg}"
                );
            }
            other => panic!("expected Internal, got {other:?}"),
        }
        worker.join().unwrap();
        assert!(!base_locks(tmp.path()).in_use(), "locks released");
    }

    #[test]
    fn overlays_the_plan_did_not_see_refuse_the_run_before_any_write() {
        if !qemu() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // A plan made when the base had one overlay (a stale forest), and one made from a scan
        // of the top alone (the UI opened on one file): another VM's overlay exists by the run.
        let stale = chain(d);
        let narrow = plan_of(&d.join("top.qcow2"), &d.join("top.qcow2"), false).unwrap();
        overlay_of_base(d, "other-vm.qcow2");
        let before = sum(&d.join("base.qcow2"));
        for (name, p) in [("stale", &stale), ("narrow", &narrow)] {
            match run_with(p, 1 << 20, &AtomicBool::new(false), &mut |_| {}) {
                Err(Refusal::SharedBase { others, .. }) => {
                    assert_eq!(others, vec![d.join("other-vm.qcow2")], "{name}")
                }
                other => panic!("{name}: expected SharedBase, got {other:?}"),
            }
            assert_eq!(before, sum(&d.join("base.qcow2")), "{name}: base untouched");
        }
        // Forced over it knowingly, the plan names it, and the run goes ahead.
        let forced = plan_of(d, &d.join("top.qcow2"), true).unwrap();
        assert!(run_with(&forced, 1 << 20, &AtomicBool::new(false), &mut |_| {}).is_ok());
    }

    #[test]
    fn a_cancel_after_the_copy_is_too_late_and_the_result_says_so() {
        if !qemu() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let plan = chain(tmp.path());
        let cancel = AtomicBool::new(false);
        let o = run_with(&plan, 64 << 10, &cancel, &mut |p| {
            if p.phase == Phase::Flush {
                assert!(!p.phase.cancellable());
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
        assert!(o.copy.is_ok() && o.cancel_too_late && !o.left_dirty);
        assert_eq!(o.exit_code(), exit::OK);
        let s = o.summary();
        assert!(
            s.starts_with("Too late to cancel: the copy had finished") && s.contains("Committed"),
            "{s}"
        );
        assert!(reads(&tmp.path().join("base.qcow2"), "read -P 0x22 0 512k"));
    }

    #[test]
    fn cancel_stops_between_chunks_and_still_reopens_ro() {
        if !qemu() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let plan = chain(tmp.path());
        let before_top = sum(&tmp.path().join("top.qcow2"));
        let cancel = AtomicBool::new(false);
        let o = run_with(&plan, 64 << 10, &cancel, &mut |p| {
            if p.phase == Phase::Copy {
                cancel.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
        assert!(matches!(o.copy, Err(CopyError::Cancelled)));
        assert!(matches!(o.reopen_ro, Some(Ok(()))));
        assert_eq!(o.exit_code(), exit::CANCELLED);
        assert!(o.top_emptied.is_none());
        assert_eq!(
            before_top,
            sum(&tmp.path().join("top.qcow2")),
            "top unchanged"
        );
        sh(Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(tmp.path().join("base.qcow2")));
        assert!(!base_locks(tmp.path()).in_use());
    }
}
