//! Which of the tools the tests drive this machine has. Each becomes a `tool_*` cfg, so a test
//! whose tool is missing is listed as ignored, naming the tool, instead of passing without
//! having run. Under CI (`CI=true`) or with `IMGCHAIN_REQUIRE_QEMU=1` every tool counts as
//! present: the test then runs, and fails on the missing tool. `as_root` is set when the build
//! runs as root (or is required to, as in CI): the tests that switch to another user need it.

use std::path::PathBuf;

const TOOLS: &[&str] = &[
    "qemu-img",
    "qemu-io",
    "qemu-storage-daemon",
    "qemu-system-x86_64",
    "virsh",
    "tmux",
    "strace",
    "prlimit",
    "mkfifo",
    "bash",
    "mkfs.xfs",
    "cc",
    "setpriv",
    "python3",
    "zsh",
    "fish",
    "groff",
];

fn main() {
    for var in ["PATH", "CI", "IMGCHAIN_REQUIRE_QEMU"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("IMGCHAIN_REQUIRE_QEMU").is_ok_and(|v| v == "1");
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut missing = false;
    for tool in TOOLS {
        let cfg = format!("tool_{}", tool.replace(['-', '.'], "_"));
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        let found = dirs.iter().map(|d| d.join(tool)).find(|p| p.is_file());
        match &found {
            Some(p) => println!("cargo:rerun-if-changed={}", p.display()),
            None => missing = true,
        }
        if found.is_some() || required {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
    // The tenant tests switch to another user: only root can.
    println!("cargo:rustc-check-cfg=cfg(as_root)");
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if uid.as_deref() == Some("0") || required {
        println!("cargo:rustc-cfg=as_root");
    }
    // A tool installed later changes its directory: look again then.
    if missing {
        for d in dirs.iter().filter(|d| d.is_dir()) {
            println!("cargo:rerun-if-changed={}", d.display());
        }
    }
}
