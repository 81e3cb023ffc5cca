//! Process exit codes (ARCHITECTURE.md §5). Scripts rely on them; never renumber.

/// Success.
pub const OK: u8 = 0;
/// Any error without a code of its own.
pub const FAILURE: u8 = 1;
/// Bad command line or configuration.
pub const USAGE: u8 = 2;
/// `check` found warnings or errors.
pub const PROBLEMS: u8 = 3;
/// Commit refused: the image has no backing file.
pub const NO_BACKING: u8 = 10;
/// Commit refused: the base (or an image between) is keep-RO.
pub const KEEP_READ_ONLY: u8 = 11;
/// Commit refused: another process uses the top or the base.
pub const IN_USE: u8 = 12;
/// Commit refused: the base has other overlays (use --force).
pub const SHARED_BASE: u8 = 13;
/// I/O error during a commit; the base was left consistent.
pub const IO_ERROR: u8 = 14;
/// Data committed, but the base could not be returned to read-only.
pub const REOPEN_FAILED: u8 = 15;
/// The image uses a format or feature imgchain cannot write safely.
pub const UNSUPPORTED: u8 = 16;
/// Refused: the written file's filesystem has not the room the run may need (use --force).
pub const NO_SPACE: u8 = 17;
/// Refused: the chain leads to a file the images' owners could not write or read themselves
/// (ARCHITECTURE.md §8); `--force` does not lift it.
pub const UNTRUSTED: u8 = 18;
/// Cancelled by the user.
pub const CANCELLED: u8 = 130;

/// Every exit code and what it means, as `--help` lists them.
pub const ALL: [(u8, &str); 14] = [
    (OK, "ok"),
    (FAILURE, "error"),
    (
        USAGE,
        "usage or config error (or the file to create exists)",
    ),
    (PROBLEMS, "check found problems"),
    (NO_BACKING, "no backing file"),
    (KEEP_READ_ONLY, "keep-RO"),
    (IN_USE, "in use"),
    (
        SHARED_BASE,
        "shared base, images built on it, or a VM's disk",
    ),
    (IO_ERROR, "I/O error (images consistent)"),
    (REOPEN_FAILED, "base could not be reopened read-only"),
    (
        UNSUPPORTED,
        "unsupported (format, feature, or an image to repair or upgrade first)",
    ),
    (NO_SPACE, "not enough free space"),
    (
        UNTRUSTED,
        "a file the images' owners could not write or read",
    ),
    (CANCELLED, "cancelled"),
];

/// The exit codes as `--help` ends with them.
pub fn help() -> String {
    let codes: Vec<String> = ALL.iter().map(|(c, what)| format!("{c} {what}")).collect();
    format!("Exit codes: {}.", codes.join("; "))
}
