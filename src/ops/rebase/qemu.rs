//! A flatten or safe rebase QEMU's own code runs (ARCHITECTURE.md §3, "Features only QEMU
//! handles"): when the image or either chain uses extended L2 entries, zstd compression or an
//! external data file. `qemu-img map` on both chains (given as fds) says what each holds;
//! `qemu-io`, on the image through a copy-on-read node over its old chain, makes zero where the
//! old chain reads zeroes and the new one has data, and reads what the old chain holds in
//! layers the new chain does not share, so QEMU writes it into the image — what the image's
//! guest already reads there, so its disk never changes. The image is synced, and only then
//! does imgchain rewrite its header.

use std::process::Command;
use std::time::Instant;

use super::outcome::Outcome;
use super::plan::Plan;
use super::run::relink;
use crate::image::file::OpenMode;
use crate::ops::datapath::{CopyError, Tally};
use crate::ops::qemu_chain::{Given, fds, give, spec, sync};
use crate::ops::{Phase, Progress, Refusal, Run, qemu_tools};

/// The largest read qemu-io is asked for at once (its buffer).
const READ_MAX: u64 = 64 << 20;

/// Guest ranges: `(offset, length)`.
type Ranges = Vec<(u64, u64)>;

/// One entry of `qemu-img map --output=json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    start: u64,
    len: u64,
    depth: u64,
    data: bool,
}

fn entries(map: &[u8]) -> Result<Vec<Entry>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(map).map_err(|e| format!("qemu-img map printed no JSON: {e}"))?;
    let list = v.as_array().ok_or("qemu-img map printed no list")?;
    list.iter()
        .map(|e| {
            let num = |k: &str| e[k].as_u64().ok_or_else(|| format!("qemu-img map: no {k}"));
            Ok(Entry {
                start: num("start")?,
                len: num("length")?,
                depth: num("depth")?,
                data: e["data"] == true,
            })
        })
        .collect()
}

/// Appends `(start, len)` to `v`, merged with the last range when adjacent.
fn push(v: &mut Vec<(u64, u64)>, start: u64, len: u64) {
    match v.last_mut() {
        Some((o, l)) if *o + *l == start => *l += len,
        _ => v.push((start, len)),
    }
}

/// What the image must get: the old chain's data where the new chain does not read the same
/// layer there, and zeroes where the old chain reads zeroes and the new one has data. `same`
/// says whether old layer `i` (depth `i + 1`) is new layer `j` (depth `j`).
fn needs(old: &[Entry], new: &[Entry], same: impl Fn(u64, u64) -> bool) -> (Ranges, Ranges) {
    let (mut take, mut zero) = (Vec::new(), Vec::new());
    for o in old.iter().filter(|e| e.depth > 0) {
        let mut at = o.start;
        for n in new
            .iter()
            .filter(|n| n.start < o.start + o.len && n.start + n.len > o.start)
        {
            let (lo, hi) = (at.max(n.start), (o.start + o.len).min(n.start + n.len));
            if lo > at {
                uncovered(o, (at, lo - at), &mut take);
            }
            match (o.data, n.data) {
                (true, true) if same(o.depth - 1, n.depth) => {}
                (true, _) => push(&mut take, lo, hi - lo),
                (false, true) => push(&mut zero, lo, hi - lo),
                (false, false) => {}
            }
            at = hi;
        }
        if at < o.start + o.len {
            uncovered(o, (at, o.start + o.len - at), &mut take);
        }
    }
    (take, zero)
}

/// A stretch of old entry `o` the new chain's map does not cover (past its end, or no new
/// chain): the new chain reads zeroes there.
fn uncovered(o: &Entry, (start, len): (u64, u64), take: &mut Vec<(u64, u64)>) {
    if o.data {
        push(take, start, len);
    }
}

/// `qemu-img map` of the chain `given`.
fn map(given: &[Given]) -> Result<Vec<Entry>, String> {
    let out = qemu_tools::output(
        Command::new("qemu-img")
            .args(["map", "--output=json"])
            .arg(spec(given)),
        &fds(given),
        "",
    )?;
    entries(&out)
}

/// The qemu-io script: zeroes first, then the reads (at most [`READ_MAX`] each).
fn script(take: &[(u64, u64)], zero: &[(u64, u64)]) -> String {
    let zeroes = zero.iter().map(|(o, l)| format!("write -z {o} {l}\n"));
    let reads = take
        .iter()
        .flat_map(|&(o, l)| {
            (o..o + l)
                .step_by(READ_MAX as usize)
                .map(move |a| (a, (o + l - a).min(READ_MAX)))
        })
        .map(|(o, l)| format!("read {o} {l}\n"));
    zeroes.chain(reads).collect()
}

/// Marks the stretches QEMU will write in the image's recording bitmaps first (QEMU does not
/// mark what copy-on-read writes; qemu-img rebase's own writes are marked), as the data path's
/// runs do (`ops::bitmaps`).
fn mark_bitmaps(image: &Given, take: &[(u64, u64)], zero: &[(u64, u64)]) -> Result<(), String> {
    use crate::ops::bitmaps;
    let fd = image.fds().image;
    let Some(h) = bitmaps::header_of(fd)?.filter(|h| h.bitmaps()) else {
        return Ok(());
    };
    let recording = bitmaps::recording(fd, &h)?;
    if recording.is_empty() {
        return Ok(());
    }
    let mut ranges: Ranges = take.iter().chain(zero).copied().collect();
    ranges.sort_unstable();
    bitmaps::mark(image.fds(), h.virtual_size, &recording, &ranges)
        .map(|_| ())
        .map_err(|e| format!("cannot mark its persistent bitmaps: {e}"))
}

/// Runs `plan` through QEMU's tools; a refusal means nothing was written.
pub fn run(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
    let start = Instant::now();
    let mut report = |phase, done, writing| {
        (r.progress)(Progress {
            op: plan.kind,
            phase,
            done,
            total: 0,
            elapsed: start.elapsed(),
            writing,
        })
    };
    report(Phase::Open, 0, false);
    qemu_tools::found(&["qemu-img", "qemu-io"]).map_err(|t| Refusal::Unsupported {
        path: plan.image.path.clone(),
        what: format!(
            "uses {}, which only QEMU's own tools read and write, and {t} is not installed \
             (qemu-utils)",
            plan.by_qemu.join(", ")
        ),
    })?;
    let mut given = vec![give(&plan.image, OpenMode::ReadWrite)?];
    for img in &plan.old {
        given.push(give(img, OpenMode::ReadOnly)?);
    }
    let new = plan
        .new
        .iter()
        .map(|img| give(img, OpenMode::ReadOnly))
        .collect::<Result<Vec<_>, _>>()?;
    let same = |i: u64, j: u64| {
        let (o, n) = (plan.old.get(i as usize), plan.new.get(j as usize));
        o.zip(n).is_some_and(|(o, n)| o.ident == n.ident)
    };
    let planned = map(&given).and_then(|old| {
        let new = if new.is_empty() {
            Vec::new()
        } else {
            map(&new)?
        };
        Ok(needs(&old, &new, same))
    });
    let copied = planned
        .as_ref()
        .map_or(0, |(t, z)| t.iter().chain(z).map(|x| x.1).sum::<u64>());
    report(Phase::Copy, 0, true);
    let cor = format!(
        "json:{{\"driver\":\"copy-on-read\",\"file\":{}}}",
        spec(&given).trim_start_matches("json:")
    );
    let copy = planned
        .and_then(|(take, zero)| {
            mark_bitmaps(&given[0], &take, &zero)?;
            let mut cmd = Command::new("qemu-io");
            cmd.arg(&cor);
            qemu_tools::tool(&mut cmd, &fds(&given), &script(&take, &zero))
        })
        .and_then(|()| sync(&given[0]).map_err(|e| format!("cannot sync it: {e}")))
        .map_err(|what| CopyError::Io {
            op: "QEMU's copy failed",
            path: plan.image.path.clone(),
            offset: 0,
            source: std::io::Error::other(what),
        });
    drop(given);
    report(Phase::Relink, copied, true);
    let relinked = copy
        .is_ok()
        .then(|| relink(&plan.image, plan.name.as_ref()));
    drop(new);
    report(Phase::Done, copied, false);
    Ok(Outcome {
        plan: plan.clone(),
        compared: 0,
        copied: if copy.is_ok() { copied } else { 0 },
        tally: Tally::default(),
        copy,
        left_dirty: false,
        reopen_ro: Some(Ok(())),
        relinked,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: u64, len: u64, depth: u64, data: bool) -> Entry {
        Entry {
            start,
            len,
            depth,
            data,
        }
    }

    #[test]
    fn the_image_gets_what_the_new_chain_reads_differently() {
        let old = [
            e(0, 10, 0, true),
            e(10, 10, 1, true),
            e(20, 10, 2, true),
            e(30, 20, 2, false),
            e(50, 10, 1, true),
        ];
        // New layer 1 is old layer 2 (depth 2); new layer 0 has data over 25..35.
        let new = [e(0, 25, 1, true), e(25, 10, 0, true), e(35, 25, 1, false)];
        let same = |i: u64, j: u64| (i, j) == (1, 1);
        let (take, zero) = needs(&old, &new, same);
        assert_eq!(take, [(10, 10), (25, 5), (50, 10)]);
        assert_eq!(zero, [(30, 5)]);
        // Flatten: no new chain, every old datum is taken.
        let (take, zero) = needs(&old, &[], |_, _| false);
        assert_eq!(take, [(10, 20), (50, 10)]);
        assert!(zero.is_empty());
        assert!(entries(b"[{\"start\": 1}]").is_err());
        assert_eq!(
            script(&[(0, 100 << 20)], &[(5, 5)]),
            format!(
                "write -z 5 5\nread 0 {}\nread {} {}\n",
                64 << 20,
                64 << 20,
                36 << 20
            )
        );
    }
}
