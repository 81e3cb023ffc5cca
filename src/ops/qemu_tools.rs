//! Running QEMU's own tools (qemu-img, qemu-io) on images imgchain holds (ARCHITECTURE.md §8):
//! an image is given as the fd imgchain opened and checked (`/proc/self/fd/N` in a `json:`
//! name, its backing file never opened, QEMU's locking off: imgchain holds the locks), never
//! by name; the fd is kept open in the child only.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The first of `tools` that is not installed, if any.
pub fn found(tools: &[&'static str]) -> Result<(), &'static str> {
    for &tool in tools {
        let ran = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if ran.is_err() {
            return Err(tool);
        }
    }
    Ok(())
}

/// A qcow2 image as QEMU's tools get it: the fd imgchain opened, and its external data file's.
#[derive(Clone, Copy)]
pub struct Fds<'a> {
    pub image: BorrowedFd<'a>,
    pub data: Option<BorrowedFd<'a>>,
}

impl<'a> From<BorrowedFd<'a>> for Fds<'a> {
    fn from(image: BorrowedFd<'a>) -> Fds<'a> {
        Fds { image, data: None }
    }
}

/// The `file` node of a file imgchain opened, as QEMU gets it: through our fd, with none of
/// QEMU's locks (we hold them).
pub fn file_node(fd: RawFd) -> serde_json::Value {
    serde_json::json!({
        "driver": "file",
        "filename": format!("/proc/self/fd/{fd}"),
        "locking": "off",
    })
}

impl Fds<'_> {
    /// The image as QEMU opens it through our fds: never its backing file, its data file only
    /// through ours.
    pub fn spec(&self) -> String {
        let mut node = serde_json::json!({
            "driver": "qcow2",
            "backing": null,
            "file": file_node(self.image.as_raw_fd()),
        });
        if let Some(d) = self.data {
            node["data-file"] = file_node(d.as_raw_fd());
        }
        format!("json:{node}")
    }

    /// The fds to keep open in the tool.
    pub fn raw(&self) -> Vec<RawFd> {
        std::iter::once(self.image.as_raw_fd())
            .chain(self.data.map(|d| d.as_raw_fd()))
            .collect()
    }
}

/// Runs a QEMU tool with `fds` kept open in it and `input` on its stdin (fed from a thread, so
/// that a long script never waits on a full pipe); what it prints on stdout is dropped.
pub fn tool(cmd: &mut Command, fds: &[RawFd], input: &str) -> Result<(), String> {
    output(cmd, fds, input).map(|_| ())
}

/// [`tool`], returning what the tool printed on stdout.
pub fn output(cmd: &mut Command, fds: &[RawFd], input: &str) -> Result<Vec<u8>, String> {
    let keep = fds.to_vec();
    // SAFETY: between fork and exec only fcntl(2), which is async-signal-safe, is called.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let feeder = child.stdin.take().map(|mut stdin| {
        let input = input.to_string();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown} did not finish: {e}"))?;
    let fed = feeder.map_or(Ok(Ok(())), std::thread::JoinHandle::join);
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{shown} failed ({}): {}", out.status, said.trim()));
    }
    match fed {
        Ok(Ok(())) => Ok(out.stdout),
        Ok(Err(e)) => Err(format!("cannot feed {shown}: {e}")),
        Err(_) => Err(format!("cannot feed {shown}: the feeding thread stopped")),
    }
}
