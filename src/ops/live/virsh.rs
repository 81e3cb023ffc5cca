//! virsh, for a VM libvirt runs: imgchain never attaches to libvirt's monitor.

use std::path::{Path, PathBuf};

use crate::text::Names;

/// Whether `virsh` is on the PATH.
pub(super) fn virsh_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| std::fs::metadata(d.join("virsh")).is_ok_and(|m| m.is_file()))
    })
}

/// virsh, on one domain of one libvirt connection.
pub(super) struct Virsh<'a> {
    pub(super) uri: &'a str,
    pub(super) domain: &'a str,
}

impl Virsh<'_> {
    /// Runs `virsh -q -c URI COMMAND --domain DOMAIN ARGS...`: its output, or what it printed
    /// as error.
    pub(super) fn run(&self, command: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec![command, "--domain", self.domain];
        all.extend_from_slice(args);
        crate::ops::dependents::virsh(self.uri, &all).map_err(|e| format!("virsh {command}: {e}"))
    }

    /// The target (`vda`) of the domain's disk whose active layer is `path`.
    pub(super) fn target_of(&self, path: &Path) -> Result<String, String> {
        let want = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.shown()))?;
        let list = self.run("domblklist", &["--details"])?;
        list.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (_kind, _device, target) = (f.next()?, f.next()?, f.next()?);
                let source = f.collect::<Vec<_>>().join(" ");
                (std::fs::canonicalize(&source).ok()? == want).then(|| target.to_string())
            })
            .ok_or_else(|| {
                format!(
                    "libvirt lists no disk of {} running on {}",
                    self.domain,
                    path.shown()
                )
            })
    }
}

/// `cur=` and `end=` of `virsh blockjob --raw`; `None` when no job runs.
pub(super) fn job_progress(raw: &str) -> Option<(u64, u64)> {
    let field = |k: &str| {
        raw.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse::<u64>().ok()))
    };
    raw.contains("type=")
        .then(|| (field("cur=").unwrap_or(0), field("end=").unwrap_or(0)))
}

/// The pid libvirt recorded for a running domain (`/run/libvirt/qemu/NAME.pid`).
pub(super) fn libvirt_pid(uri: &str, domain: &str) -> Option<u32> {
    if domain.contains('/') || domain.starts_with('.') {
        return None;
    }
    let dir = if uri.ends_with("/system") {
        PathBuf::from("/run/libvirt/qemu")
    } else {
        PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("libvirt/qemu/run")
    };
    let text = std::fs::read_to_string(dir.join(format!("{domain}.pid"))).ok()?;
    text.trim().parse().ok()
}
