//! A flatten QEMU's own code runs (ARCHITECTURE.md §3, "Features only QEMU handles"): when
//! the image or its chain uses extended L2 entries, zstd compression or an external data file.
//! `qemu-img map` on the chain (given as fds) lists what the backing chain holds; `qemu-io`
//! reads exactly that through a copy-on-read node, so QEMU writes it into the image — data
//! the image's guest already reads there, so its disk never changes; the image is synced, and
//! only then does imgchain rewrite its header without a backing file.

use std::process::Command;
use std::time::Instant;

use super::outcome::Outcome;
use super::plan::Plan;
use super::run::relink;
use crate::image::file::OpenMode;
use crate::ops::datapath::{CopyError, Tally};
use crate::ops::qemu_chain::{fds, give, spec, sync};
use crate::ops::{Phase, Progress, Refusal, Run, qemu_tools};

/// The largest read qemu-io is asked for at once (its buffer).
const READ_MAX: u64 = 64 << 20;

/// The guest ranges the backing chain holds data for (depth > 0 in `qemu-img map`).
fn backing_data(map: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(map).map_err(|e| format!("qemu-img map printed no JSON: {e}"))?;
    let entries = v.as_array().ok_or("qemu-img map printed no list")?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in entries {
        let num = |k: &str| e[k].as_u64().ok_or_else(|| format!("qemu-img map: no {k}"));
        let (start, len, depth) = (num("start")?, num("length")?, num("depth")?);
        if depth == 0 || e["data"] != true {
            continue;
        }
        match out.last_mut() {
            Some((o, l)) if *o + *l == start => *l += len,
            _ => out.push((start, len)),
        }
    }
    Ok(out)
}

/// Runs the flatten `plan` through QEMU's tools; a refusal means nothing was written.
pub fn flatten(plan: &Plan, r: Run<'_>) -> Result<Outcome, Refusal> {
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
    let missing = qemu_tools::found(&["qemu-img", "qemu-io"]);
    missing.map_err(|t| Refusal::Unsupported {
        path: plan.image.path.clone(),
        what: format!(
            "uses {}, which only QEMU's own tools flatten, and {t} is not installed (qemu-utils)",
            plan.by_qemu.join(", ")
        ),
    })?;
    let mut given = vec![give(&plan.image, OpenMode::ReadWrite)?];
    for img in &plan.old {
        given.push(give(img, OpenMode::ReadOnly)?);
    }
    let chain = spec(&given);
    let failed = |what: String| CopyError::Io {
        op: "QEMU's copy failed",
        path: plan.image.path.clone(),
        offset: 0,
        source: std::io::Error::other(what),
    };
    let map = qemu_tools::output(
        Command::new("qemu-img")
            .args(["map", "--output=json"])
            .arg(&chain),
        &fds(&given),
        "",
    );
    let ranges = map.and_then(|m| backing_data(&m));
    let copied: u64 = ranges.as_ref().map_or(0, |r| r.iter().map(|x| x.1).sum());
    report(Phase::Copy, 0, true);
    let copy = ranges
        .and_then(|ranges| {
            let script: String = ranges
                .iter()
                .flat_map(|&(o, l)| {
                    (o..o + l)
                        .step_by(READ_MAX as usize)
                        .map(move |a| (a, (o + l - a).min(READ_MAX)))
                })
                .map(|(o, l)| format!("read {o} {l}\n"))
                .collect();
            let cor = format!(
                "json:{{\"driver\":\"copy-on-read\",\"file\":{}}}",
                chain.trim_start_matches("json:")
            );
            qemu_tools::tool(Command::new("qemu-io").arg(&cor), &fds(&given), &script)
        })
        .and_then(|()| sync(&given[0]).map_err(|e| format!("cannot sync it: {e}")))
        .map_err(failed);
    drop(given);
    report(Phase::Relink, copied, true);
    let relinked = copy.is_ok().then(|| relink(&plan.image, None));
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

    #[test]
    fn only_what_the_backing_chain_holds_is_read() {
        let map =
            br#"[{"start":0,"length":65536,"depth":0,"present":true,"zero":false,"data":true},
            {"start":65536,"length":65536,"depth":1,"present":true,"zero":false,"data":true},
            {"start":131072,"length":65536,"depth":2,"present":true,"zero":false,"data":true},
            {"start":196608,"length":65536,"depth":1,"present":true,"zero":true,"data":false},
            {"start":262144,"length":65536,"depth":1,"present":true,"zero":false,"data":true}]"#;
        assert_eq!(
            backing_data(map).unwrap(),
            [(65536, 131072), (262144, 65536)]
        );
        assert!(backing_data(b"not json").is_err());
    }
}
