//! The power-loss harness: runs a command with `trace.c` preloaded, which records every write,
//! zeroing, resize and sync it makes to the watched files, then rebuilds the files a power loss
//! could leave behind and judges each with `qemu-img check`.
//!
//! A power loss keeps every record before a sync and any subset of those after it. For each
//! window between two syncs the harness rebuilds, on top of everything before the window,
//! every in-order prefix of the window and a number of random subsets. It first asserts that
//! replaying every record onto the original gives the final file byte for byte: a write that
//! bypassed the recorder would otherwise go unseen.
#![allow(dead_code)]

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// One recorded operation.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        off: u64,
        data: Vec<u8>,
    },
    Zero {
        off: u64,
        len: u64,
        keep_size: bool,
    },
    Alloc {
        off: u64,
        len: u64,
        keep_size: bool,
    },
    Truncate(u64),
    /// Every record before index `first` is on disk.
    Sync {
        first: usize,
    },
    /// Writeback started early (`sync_file_range`): no bound, nothing made durable.
    Hint,
    Unsupported,
}

/// What a command did to one file.
pub struct Trace {
    pub path: PathBuf,
    pub original: Vec<u8>,
    pub ops: Vec<Op>,
    pub last: Vec<u8>,
}

/// The shim, compiled once per test binary.
pub fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crash/trace.c");
        let out = std::env::temp_dir().join(format!("imgchain-trace-{}.so", std::process::id()));
        let status = Command::new("cc")
            .args(["-O2", "-Wall", "-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("a C compiler (cc) is needed to build the trace shim");
        assert!(status.success(), "building {} failed", src.display());
        out
    })
}

/// Runs `cmd` with every write to `targets` recorded; returns its output and one trace per target.
pub fn traced(mut cmd: Command, targets: &[&Path]) -> (Output, Vec<Trace>) {
    let logs = tempfile::tempdir().expect("tempdir");
    let originals: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| std::fs::read(t).expect("read target"))
        .collect();
    let list = targets
        .iter()
        .map(|t| t.to_str().expect("utf-8 path"))
        .collect::<Vec<_>>()
        .join(":");
    let out = cmd
        .env("LD_PRELOAD", shim())
        .env("TRACE_TARGETS", list)
        .env("TRACE_DIR", logs.path())
        .output()
        .expect("run the traced command");
    let traces = targets
        .iter()
        .zip(originals)
        .enumerate()
        .map(|(i, (t, original))| Trace {
            path: t.to_path_buf(),
            original,
            ops: parse(&std::fs::read(logs.path().join(format!("{i}.log"))).unwrap_or_default()),
            last: std::fs::read(t).expect("read target"),
        })
        .collect();
    (out, traces)
}

fn parse(log: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut at = 0;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    while at + 25 <= log.len() {
        let (kind, a, b, c) = (
            log[at],
            u64_at(log, at + 1),
            u64_at(log, at + 9),
            u64_at(log, at + 17),
        );
        at += 25;
        ops.push(match kind {
            b'W' => {
                let data = log[at..at + b as usize].to_vec();
                at += b as usize;
                Op::Write { off: a, data }
            }
            b'Z' => Op::Zero {
                off: a,
                len: b,
                keep_size: c != 0,
            },
            b'A' => Op::Alloc {
                off: a,
                len: b,
                keep_size: c != 0,
            },
            b'T' => Op::Truncate(a),
            b'S' => Op::Sync { first: a as usize },
            b'H' => Op::Hint,
            _ => Op::Unsupported,
        });
    }
    assert_eq!(
        at,
        log.len(),
        "the trace log ends in the middle of a record"
    );
    ops
}

fn apply(file: &mut Vec<u8>, op: &Op) {
    let grow = |file: &mut Vec<u8>, end: u64| {
        if file.len() < end as usize {
            file.resize(end as usize, 0);
        }
    };
    match op {
        Op::Write { off, data } => {
            grow(file, off + data.len() as u64);
            file[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        Op::Zero {
            off,
            len,
            keep_size,
        } => {
            if !keep_size {
                grow(file, off + len);
            }
            let end = ((off + len) as usize).min(file.len());
            if (*off as usize) < end {
                file[*off as usize..end].fill(0);
            }
        }
        Op::Alloc {
            off,
            len,
            keep_size,
        } => {
            if !keep_size {
                grow(file, off + len);
            }
        }
        Op::Truncate(size) => file.resize(*size as usize, 0),
        Op::Sync { .. } | Op::Hint => {}
        Op::Unsupported => panic!("the trace holds an operation the harness cannot replay"),
    }
}

impl Trace {
    /// Syncs that reached this file.
    pub fn syncs(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::Sync { .. }))
            .count()
    }

    /// Writebacks started early (`sync_file_range`), which make nothing durable.
    pub fn hints(&self) -> usize {
        self.ops.iter().filter(|o| matches!(o, Op::Hint)).count()
    }

    /// Records other than syncs and writeback hints.
    pub fn writes(&self) -> usize {
        self.ops.len() - self.syncs() - self.hints()
    }

    /// Asserts that the records account for every change to the file.
    pub fn assert_replay_is_complete(&self) {
        let mut file = self.original.clone();
        for op in &self.ops {
            apply(&mut file, op);
        }
        assert!(
            file == self.last,
            "{}: replaying all {} records does not give the final file: something wrote to it \
             behind the recorder",
            self.path.display(),
            self.ops.len()
        );
    }

    /// Calls `judge` on every distinct file a power loss could leave, with a label saying
    /// which: in each window, every prefix, and every subset of a window of up to 5 records
    /// or `subsets` random subsets of a larger one.
    pub fn for_each_crash_state(
        &self,
        subsets: usize,
        seed: u64,
        mut judge: impl FnMut(&str, &[u8]),
    ) {
        let mut bounds: Vec<usize> = self
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Sync { first } => Some(*first),
                _ => None,
            })
            .collect();
        bounds.push(0);
        bounds.push(self.ops.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut seen = HashSet::new();
        let mut emit = |label: String, bytes: &[u8], judge: &mut dyn FnMut(&str, &[u8])| {
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            if seen.insert(h.finish()) {
                judge(&label, bytes);
            }
        };
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut durable = self.original.clone();
        for w in bounds.windows(2) {
            let window: Vec<(usize, &Op)> = (w[0]..w[1])
                .map(|i| (i, &self.ops[i]))
                .filter(|(_, o)| !matches!(o, Op::Sync { .. } | Op::Hint))
                .collect();
            let mut file = durable.clone();
            emit(
                format!("window {}..{}: none", w[0], w[1]),
                &file,
                &mut judge,
            );
            for (i, op) in &window {
                apply(&mut file, op);
                emit(
                    format!("window {}..{}: prefix to {i}", w[0], w[1]),
                    &file,
                    &mut judge,
                );
            }
            // Small windows: every subset; larger ones: `subsets` random ones.
            let all = window.len() <= 5;
            let tries = if all { 1usize << window.len() } else { subsets };
            if window.len() > 1 {
                for k in 0..tries {
                    let mut sub = durable.clone();
                    let mut picked = Vec::new();
                    for (bit, (i, op)) in window.iter().enumerate() {
                        let take = if all {
                            k >> bit & 1 == 1
                        } else {
                            next() % 2 == 0
                        };
                        if take {
                            apply(&mut sub, op);
                            picked.push(*i);
                        }
                    }
                    emit(
                        format!("window {}..{}: subset {k} {picked:?}", w[0], w[1]),
                        &sub,
                        &mut judge,
                    );
                }
            }
            durable = file;
        }
    }
}

/// How `qemu-img check` judges one rebuilt qcow2 file, opened alone (its backing file is not
/// opened, so a missing one cannot make the check fail).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// Leaked clusters only: lost space, not lost data.
    Leaks,
    /// Errors, but the dirty bit is set and `qemu-img check -r all` repairs them all.
    Repaired,
    Corrupt(String),
}

fn check_json(path: &Path) -> String {
    format!(
        r#"json:{{"driver":"qcow2","backing":null,"file":{{"driver":"file","filename":"{}"}}}}"#,
        path.display()
    )
}

fn qemu_check(path: &Path, repair: bool) -> Output {
    let mut cmd = Command::new("qemu-img");
    cmd.arg("check");
    if repair {
        cmd.args(["-r", "all"]);
    }
    cmd.arg(check_json(path))
        .output()
        .expect("run qemu-img check")
}

/// Judges `bytes` as a qcow2 image, written to a scratch file in `dir`.
pub fn judge_qcow2(dir: &Path, bytes: &[u8]) -> Verdict {
    let path = dir.join("state.qcow2");
    std::fs::write(&path, bytes).expect("write state");
    let out = qemu_check(&path, false);
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    match out.status.code() {
        Some(0) => Verdict::Clean,
        Some(3) => Verdict::Leaks,
        Some(2) if bytes.len() > 79 && bytes[7] >= 3 && bytes[79] & 1 == 1 => {
            let fixed = qemu_check(&path, true);
            let again = qemu_check(&path, false);
            if fixed.status.success() && again.status.success() {
                Verdict::Repaired
            } else {
                Verdict::Corrupt(format!(
                    "dirty, but -r all did not repair it: {}",
                    text(&again)
                ))
            }
        }
        _ => Verdict::Corrupt(text(&out)),
    }
}

/// Counts over all the crash states of one trace.
#[derive(Debug, Default)]
pub struct Tally {
    pub states: usize,
    pub clean: usize,
    pub leaks: usize,
    pub repaired: usize,
    pub corrupt: Vec<String>,
}

impl Tally {
    /// Adds the counts of `other` (another trace of the same file, a later step's).
    pub fn extend(&mut self, other: Tally) {
        self.states += other.states;
        self.clean += other.clean;
        self.leaks += other.leaks;
        self.repaired += other.repaired;
        self.corrupt.extend(other.corrupt);
    }

    pub fn add(&mut self, label: &str, v: Verdict) {
        self.states += 1;
        match v {
            Verdict::Clean => self.clean += 1,
            Verdict::Leaks => self.leaks += 1,
            Verdict::Repaired => self.repaired += 1,
            Verdict::Corrupt(why) => self.corrupt.push(format!(
                "{label}: {}",
                why.lines().take(3).collect::<Vec<_>>().join(" | ")
            )),
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} states: {} clean, {} leaks only, {} dirty and repaired, {} corrupt",
            self.states,
            self.clean,
            self.leaks,
            self.repaired,
            self.corrupt.len()
        )
    }
}

/// Every crash state of a qcow2 trace, judged alone.
pub fn tally_qcow2(trace: &Trace, subsets: usize) -> Tally {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut t = Tally::default();
    trace.for_each_crash_state(subsets, 0x5eed, |label, bytes| {
        t.add(label, judge_qcow2(scratch.path(), bytes))
    });
    t
}
