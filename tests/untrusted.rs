//! A tenant's files cannot steer root (ARCHITECTURE.md §8). The tenant is the real user
//! `nobody`, who owns the image directory and the images; imgchain runs as root.

mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{arg, create, imgchain, qemu_check, qemu_io, refused_in, tempdir};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// Whether the test can play root against a tenant: it must run as root, and CI always does.
/// A scratch directory the tenant owns (0755), inside a root-owned one others can search.
fn tenant_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempdir();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = t.path().join("tenant");
    std::fs::create_dir(&dir).expect("mkdir");
    chown(&dir);
    (t, dir)
}

fn chown(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOGROUP)).expect("chown");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A root-only file standing in for `/etc/shadow`, 1 MiB, outside the tenant's directory.
fn root_only(t: &Path) -> PathBuf {
    let secret = t.join("secret");
    std::fs::create_dir(&secret).expect("mkdir");
    chmod(&secret, 0o700);
    let f = secret.join("shadow");
    let mut data = b"root:$6$secret:19000:0:99999:7:::\n".to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&f, data).expect("write");
    chmod(&f, 0o600);
    f
}

/// A command run as the tenant.
fn tenant(cmd: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        cmd,
    ]);
    c
}

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv)),
    ignore = "needs root, qemu-img, setpriv"
)]
fn the_snapshot_temporary_file_cannot_be_swapped_for_a_link() {
    let (t, dir) = tenant_dir();
    let victim = root_only(t.path());
    let before = std::fs::read(&victim).expect("read");
    create(&dir, "base.qcow2", "qcow2", "16M", None, &[]);
    chown(&dir.join("base.qcow2"));
    // The tenant replaces every temporary name it sees with a link to the victim, as fast as
    // it can, until told to stop; it counts the names it saw.
    let script = format!(
        "cd {} && n=0; while [ ! -e stop ]; do for f in .*imgchain-tmp*; do \
         [ -e \"$f\" ] || continue; n=$((n+1)); rm -f \"$f\"; ln -s {} \"$f\"; done; done; \
         echo $n > seen",
        arg(&dir),
        arg(&victim)
    );
    let mut attacker = tenant(&script)
        .stdout(Stdio::null())
        .spawn()
        .expect("attacker");
    for i in 0..200 {
        let new = dir.join(format!("snap{i}.qcow2"));
        let out = imgchain(&["snapshot", arg(&dir.join("base.qcow2")), arg(&new)]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    std::fs::write(dir.join("stop"), b"").expect("stop");
    let deadline = Instant::now() + Duration::from_secs(20);
    while attacker.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = attacker.kill();
    assert_eq!(
        std::fs::read(&victim).expect("read"),
        before,
        "root wrote the victim"
    );
    let seen = std::fs::read_to_string(dir.join("seen")).unwrap_or_default();
    assert_eq!(
        seen.trim(),
        "0",
        "a temporary name was visible to the tenant"
    );
    for i in [0, 99, 199] {
        qemu_check(&dir.join(format!("snap{i}.qcow2")));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("imgchain-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv)),
    ignore = "needs root, qemu-img, setpriv"
)]
fn a_new_overlay_takes_its_base_owner_and_no_wider_mode() {
    let (_t, dir) = tenant_dir();
    for (mode, want) in [
        (0o600, 0o600),
        (0o640, 0o640),
        (0o644, 0o644),
        (0o444, 0o644),
    ] {
        let name = format!("b{mode:o}.qcow2");
        let base = create(&dir, &name, "qcow2", "1M", None, &[]);
        chown(&base);
        chmod(&base, mode);
        let new = dir.join(format!("b{mode:o}.1.qcow2"));
        let out = imgchain(&["snapshot", arg(&base), arg(&new)]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let md = std::fs::metadata(&new).expect("stat");
        assert_eq!(
            (md.uid(), md.gid()),
            (NOBODY, NOGROUP),
            "owner of {name}'s overlay"
        );
        assert_eq!(md.mode() & 0o7777, want, "mode of {name}'s overlay");
    }
}

/// `top.qcow2`, the tenant's, with its own data, whose header names `victim` (raw).
fn tenant_overlay_on(dir: &Path, name: &str, victim: &Path) -> PathBuf {
    let top = create(
        dir,
        name,
        "qcow2",
        "1M",
        Some((arg(victim), "raw")),
        &["-u"],
    );
    qemu_io(&top, "write -P 0x41 0 64k");
    chown(&top);
    top
}

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv)),
    ignore = "needs root, qemu-img, setpriv"
)]
fn commit_never_writes_a_file_the_tenant_could_not_write() {
    let (t, dir) = tenant_dir();
    let victim = root_only(t.path());
    let top = tenant_overlay_on(&dir, "top.qcow2", &victim);
    for extra in [&[][..], &["--force"], &["-d"]] {
        let mut args = vec!["commit"];
        args.extend_from_slice(extra);
        args.push(arg(&top));
        refused_in(
            t.path(),
            &args,
            18,
            &["nobody", "could not write", arg(&victim)],
        );
    }
}

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv)),
    ignore = "needs root, qemu-img, setpriv"
)]
fn flatten_and_rebase_never_copy_a_file_the_tenant_could_not_read() {
    let (t, dir) = tenant_dir();
    let victim = root_only(t.path());
    let top = tenant_overlay_on(&dir, "leak.qcow2", &victim);
    let other = create(&dir, "other.qcow2", "qcow2", "1M", None, &[]);
    chown(&other);
    refused_in(t.path(), &["flatten", arg(&top)], 18, &["could not read"]);
    refused_in(
        t.path(),
        &["rebase", "-b", arg(&other), arg(&top)],
        18,
        &["could not read", arg(&victim)],
    );
    // The same chain readable by the tenant is flattened.
    chmod(&victim, 0o644);
    chmod(victim.parent().expect("dir"), 0o755);
    let out = imgchain(&["flatten", arg(&top)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv, tool_mkfifo)),
    ignore = "needs root, qemu-img, setpriv, mkfifo"
)]
fn a_scan_never_opens_fifos_or_proc_files_and_never_walks_into_proc() {
    let (_t, dir) = tenant_dir();
    common::run(Command::new("mkfifo").arg(dir.join("pipe")));
    for (name, backing) in [("kmsg.qcow2", "/proc/kmsg"), ("fifo.qcow2", "pipe")] {
        create(&dir, name, "qcow2", "1M", Some((backing, "raw")), &["-u"]);
    }
    std::os::unix::fs::symlink("/proc", dir.join("proc-link")).expect("symlink");
    // A writer blocks on the FIFO until somebody opens it for reading.
    let mut writer = Command::new("sh")
        .args(["-c", "exec 3>pipe; touch opened"])
        .current_dir(&dir)
        .spawn()
        .expect("writer");
    let started = Instant::now();
    let out = imgchain(&["tree", "--json", arg(&dir)]);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let opened = dir.join("opened").exists();
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(!opened, "the scan opened the FIFO");
    assert!(took < Duration::from_secs(20), "the scan took {took:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = v.to_string();
    assert!(text.contains("a file of /proc"), "{text}");
    assert!(text.contains("a FIFO"), "{text}");
    let skipped = v["skipped"].as_array().expect("skipped");
    assert!(
        skipped
            .iter()
            .any(|s| s["path"].as_str().is_some_and(|p| p.ends_with("proc-link"))),
        "{skipped:?}"
    );
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_missing_or_protocol_layer_deeper_in_the_chain_refuses_flatten_as_qemu_img_does() {
    let t = tempdir();
    let d = t.path();
    create(d, "mid.qcow2", "qcow2", "1M", None, &[]);
    create(
        d,
        "top.qcow2",
        "qcow2",
        "1M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    create(
        d,
        "over.qcow2",
        "qcow2",
        "1M",
        Some(("top.qcow2", "qcow2")),
        &[],
    );
    std::fs::remove_file(d.join("mid.qcow2")).expect("rm");
    let qemu = Command::new("qemu-img")
        .args(["rebase", "-b", "", "-f", "qcow2"])
        .arg(d.join("over.qcow2"))
        .output()
        .expect("qemu-img");
    assert!(
        !qemu.status.success(),
        "qemu-img flattened through a missing layer"
    );
    let over = d.join("over.qcow2");
    refused_in(
        d,
        &["flatten", arg(&over)],
        1,
        &["mid.qcow2", "cannot be opened"],
    );
    common::rebase_unsafe(
        &d.join("top.qcow2"),
        "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/dev/null\"}}",
        "raw",
    );
    refused_in(d, &["flatten", arg(&over)], 1, &["json:"]);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn a_directory_deeper_than_max_depth_is_reported_with_the_setting() {
    let t = tempdir();
    let mut deep = t.path().to_path_buf();
    for i in 0..20 {
        deep.push(format!("d{i}"));
    }
    create(&deep, "deep.qcow2", "qcow2", "1M", None, &[]);
    let v = common::imgchain_json(&["tree", "--json", arg(t.path())], 0);
    let skipped = v["skipped"].as_array().expect("skipped");
    assert!(
        skipped.iter().any(|s| s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("scan.max_depth"))),
        "{skipped:?}"
    );
    let text = imgchain(&["tree", arg(t.path())]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(all.contains("scan.max_depth"), "{all}");
    assert!(all.contains("1 path was passed over"), "{all}");
}

/// Names a tenant can give files, each with something a terminal or a shell would act on.
const HOSTILE: [&str; 4] = [
    "a\x1b]0;pwned\x07.qcow2",
    "b\nerror[x] forged.qcow2",
    "c\u{202e}2wocq.qcow2",
    "d$(touch INJECTED).qcow2",
];

/// No byte of `out` is a control character but the newlines between lines, and no line was
/// forged by a name.
fn no_raw_control(out: &[u8], what: &str) {
    let text = String::from_utf8_lossy(out);
    for c in text.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{what} printed {c:?} raw: {text}"
        );
    }
    assert!(
        !text.lines().any(|l| l.starts_with("error[x]")),
        "{what}: a name forged a line: {text}"
    );
}

#[test]
#[cfg_attr(not(all(tool_qemu_img, tool_bash)), ignore = "needs qemu-img, bash")]
fn names_never_reach_the_terminal_raw_and_suggested_commands_paste_safely() {
    let t = tempdir();
    let d = t.path();
    for name in HOSTILE {
        create(d, name, "qcow2", "1M", None, &[]);
    }
    // A missing backing file and a dirty image: both problems suggest a command.
    create(
        d,
        "e'$(touch INJ3)'.qcow2",
        "qcow2",
        "1M",
        Some(("gone$(touch INJ2).qcow2", "qcow2")),
        &["-u"],
    );
    common::patch(&d.join(HOSTILE[3]), 72, &[0, 0, 0, 0, 0, 0, 0, 1]);
    for args in [
        &["tree"][..],
        &["check"],
        &["tree", "--json"],
        &["check", "--json"],
    ] {
        let mut a = args.to_vec();
        a.push(arg(d));
        let out = imgchain(&a);
        no_raw_control(&out.stdout, &format!("{a:?} stdout"));
        no_raw_control(&out.stderr, &format!("{a:?} stderr"));
    }
    for name in HOSTILE {
        let out = imgchain(&["info", arg(&d.join(name))]);
        no_raw_control(&out.stdout, &format!("info {name:?}"));
        no_raw_control(&out.stderr, &format!("info {name:?} stderr"));
    }
    // Each suggested command, pasted into bash with the tool replaced by a recorder, runs
    // nothing hidden in a name and passes the file's real name.
    let out = imgchain(&["check", arg(d)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(": qemu-img ").nth(1))
        .collect();
    assert!(commands.len() >= 2, "{text}");
    let scratch = tempdir();
    for cmd in commands {
        let script =
            format!("qemu-img() {{ printf '%s\\n' \"${{@: -1}}\" > last; }}; qemu-img {cmd}");
        common::run(
            Command::new("bash")
                .current_dir(scratch.path())
                .args(["-c", &script]),
        );
        let last = std::fs::read_to_string(scratch.path().join("last")).expect("recorded");
        assert!(
            Path::new(last.trim_end_matches('\n')).exists(),
            "{cmd} passed {last:?}, which is no file"
        );
    }
    for leftover in ["INJECTED", "INJ2", "INJ3"] {
        assert!(
            !scratch.path().join(leftover).exists(),
            "a pasted command ran touch"
        );
        assert!(!d.join(leftover).exists());
    }
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn read_only_refuses_every_write_command() {
    let t = tempdir();
    let d = t.path();
    common::base_and_top(d);
    let (top, base) = (d.join("top.qcow2"), d.join("base.qcow2"));
    let cases: [&[&str]; 7] = [
        &["snapshot", arg(&top)],
        &["delete", "--yes", arg(&top)],
        &["commit", arg(&top)],
        &["merge", "--yes", arg(&top)],
        &["rebase", "-b", arg(&base), arg(&top)],
        &["flatten", arg(&top)],
        &["repair", "--yes", arg(d)],
    ];
    for c in cases {
        let mut args = vec!["--read-only"];
        args.extend_from_slice(c);
        refused_in(d, &args, 11, &["--read-only"]);
    }
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_mkfifo)),
    ignore = "needs qemu-img, mkfifo"
)]
fn a_planted_fifo_or_linked_merge_journal_changes_nothing() {
    let t = tempdir();
    let d = t.path();
    create(d, "base.qcow2", "qcow2", "4M", None, &[]);
    create(
        d,
        "mid.qcow2",
        "qcow2",
        "4M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    create(
        d,
        "top.qcow2",
        "qcow2",
        "4M",
        Some(("mid.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&d.join("mid.qcow2"), "write -P 0x42 0 1M");
    let journal = d.join(".mid.qcow2.imgchain-merge");
    let mid = d.join("mid.qcow2");
    let planted = serde_json::json!({
        "image": arg(&mid),
        "base": arg(&d.join("base.qcow2")),
        "overlays": [arg(&d.join("top.qcow2"))],
        "committed": true,
    })
    .to_string();
    // A tenant's journal (another owner, or readable by others) claiming the commit is done.
    std::fs::write(&journal, &planted).expect("write");
    chmod(&journal, 0o644);
    refused_in(
        d,
        &["merge", "--yes", arg(&mid)],
        1,
        &["not a journal imgchain wrote"],
    );
    // Even root's own mode, without the identities of the files, is not taken.
    chmod(&journal, 0o600);
    refused_in(
        d,
        &["merge", "--yes", arg(&mid)],
        1,
        &["not written for a merge"],
    );
    // A link to /dev/zero, and a FIFO nobody writes: refused at once, no hang.
    std::fs::remove_file(&journal).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &journal).expect("symlink");
    refused_in(d, &["merge", "--yes", arg(&mid)], 1, &["symbolic link"]);
    std::fs::remove_file(&journal).expect("rm");
    common::run(Command::new("mkfifo").arg(&journal));
    refused_in(d, &["merge", "--yes", arg(&mid)], 1, &["FIFO"]);
    assert!(mid.exists());
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn merge_of_an_image_nothing_is_built_on_is_refused() {
    let t = tempdir();
    let d = t.path();
    common::base_and_top(d);
    qemu_io(&d.join("top.qcow2"), "write -P 0x42 0 1M");
    refused_in(
        d,
        &["merge", "--yes", arg(&d.join("top.qcow2"))],
        2,
        &["commit it", "delete it"],
    );
}

/// A tenant's stand-in for QEMU: takes a writer's lock bytes with read access only (OFD read
/// locks), claims to be `qemu-system-x86_64 -name web03 -qmp unix:SOCK` in its argv, and
/// answers every QMP command with success, reporting a finished job.
const FAKE_QEMU: &str = r#"
import fcntl, json, os, socket, struct, sys, time
img, sock = sys.argv[-2], sys.argv[-1]
fd = os.open(img, os.O_RDONLY)
for b in (100, 101, 103, 201, 203):
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, b, 1, 0))
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(4)
while True:
    c, _ = s.accept()
    f = c.makefile("rw")
    f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\n"); f.flush()
    for line in f:
        cmd = json.loads(line).get("execute")
        ret = {}
        if cmd == "query-named-block-nodes":
            ret = [{"node-name": "n0", "drv": "qcow2", "file": img}]
        if cmd == "query-jobs":
            ret = [{"id": "x", "status": "concluded", "current-progress": 10, "total-progress": 10}]
        f.write(json.dumps({"return": ret}) + "\n"); f.flush()
"#;

#[test]
#[cfg_attr(
    not(all(as_root, tool_qemu_img, tool_setpriv, tool_python3, tool_bash)),
    ignore = "needs root, qemu-img, setpriv, python3, bash"
)]
fn a_fake_qemu_holding_the_image_is_not_believed() {
    let (t, dir) = tenant_dir();
    create(&dir, "base.qcow2", "qcow2", "4M", None, &[]);
    create(
        &dir,
        "top.qcow2",
        "qcow2",
        "4M",
        Some(("base.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&dir.join("top.qcow2"), "write -P 0x42 0 1M");
    for f in ["base.qcow2", "top.qcow2"] {
        chown(&dir.join(f));
        chmod(&dir.join(f), 0o644);
    }
    let script = dir.join("fake.py");
    std::fs::write(&script, FAKE_QEMU).expect("write");
    let sock = dir.join("evil.sock");
    let cmd = format!(
        "exec -a qemu-system-x86_64 python3 {} -name web03 -qmp unix:{},server=on,wait=off {} {}",
        arg(&script),
        arg(&sock),
        arg(&dir.join("top.qcow2")),
        arg(&sock)
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "bash",
        "-c",
        &cmd,
    ]);
    let held = common::hold(c, &dir.join("top.qcow2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = common::imgchain_json(&["info", "--json", arg(&dir.join("top.qcow2"))], 0);
    assert_eq!(info["in_use"]["owner"]["qmp"], arg(&sock), "{info}");
    let top = dir.join("top.qcow2");
    for args in [&["commit", "--live"][..], &["snapshot", "--live"]] {
        let mut a = args.to_vec();
        a.push(arg(&top));
        refused_in(t.path(), &a, 18, &["not a QEMU program"]);
    }
    drop(held);
}

#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn names_with_a_colon_and_symlinked_names_are_written_as_qemu_needs_them() {
    let t = tempdir();
    let d = t.path();
    create(d, "./b:0.qcow2", "qcow2", "4M", None, &[]);
    qemu_io(&d.join("b:0.qcow2"), "write -P 0x11 0 1M");
    // snapshot: the new overlay names its base in the ./ form.
    let out = imgchain(&[
        "snapshot",
        arg(&d.join("b:0.qcow2")),
        arg(&d.join("m:1.qcow2")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(common::backing_of(&d.join("m:1.qcow2")).0, "./b:0.qcow2");
    qemu_io(&d.join("m:1.qcow2"), "write -P 0x22 1M 1M");
    // Reached through a symlinked directory, as the top names it.
    std::os::unix::fs::symlink(d, t.path().join("link")).expect("symlink");
    let top = create(
        d,
        "top.qcow2",
        "qcow2",
        "4M",
        Some(("link/m:1.qcow2", "qcow2")),
        &[],
    );
    qemu_io(&top, "write -P 0x33 2M 1M");
    let before = tempdir();
    common::run(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&top)
            .arg(before.path().join("view.raw")),
    );
    let out = imgchain(&["merge", "--yes", arg(&d.join("m:1.qcow2"))]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(common::backing_of(&top).0, "link/b:0.qcow2");
    common::qemu_check(&top);
    common::run(
        Command::new("qemu-img")
            .args(["compare", "-U", "-F", "raw"])
            .arg(&top)
            .arg(before.path().join("view.raw")),
    );
    // rebase keeps the name the user gives, as qemu-img does.
    let out = imgchain(&["rebase", "-u", "-b", "./b:0.qcow2", arg(&top)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(common::backing_of(&top).0, "./b:0.qcow2");
    common::qemu_check(&top);
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_mkfifo)),
    ignore = "needs qemu-img, mkfifo"
)]
fn a_name_flipping_between_a_file_and_a_fifo_link_is_never_opened_as_the_fifo() {
    let t = tempdir();
    let d = t.path();
    create(d, "real.qcow2", "qcow2", "1M", None, &[]);
    common::run(Command::new("mkfifo").arg(d.join("pipe")));
    create(
        d,
        "over.qcow2",
        "qcow2",
        "1M",
        Some(("flip.qcow2", "qcow2")),
        &["-u"],
    );
    // The tenant flips flip.qcow2 between the image and a link to the FIFO, as fast as it can;
    // a writer waits on the FIFO and leaves a mark once somebody opens it for reading.
    let script = format!(
        "cd {} || exit 1; (exec 3>pipe; touch opened) & \
         while [ ! -e stop ]; do ln -sf real.qcow2 flip.qcow2; ln -sf pipe flip.qcow2; done",
        arg(d)
    );
    let mut flipper = Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("flipper");
    for _ in 0..150 {
        let _ = imgchain(&["tree", "--json", arg(&d.join("over.qcow2"))]);
    }
    std::fs::write(d.join("stop"), b"").expect("stop");
    let _ = flipper.wait();
    std::thread::sleep(Duration::from_millis(100));
    let opened = d.join("opened").exists();
    // Release the writer if it is still waiting.
    if !opened {
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(d.join("pipe"));
    }
    assert!(!opened, "a scan opened the FIFO behind a flipping name");
}

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_strace)),
    ignore = "needs qemu-img, strace"
)]
fn a_snapshot_is_synced_before_it_gets_its_name_and_never_opened_by_it() {
    let t = tempdir();
    let d = t.path();
    create(d, "b.qcow2", "qcow2", "1M", None, &[]);
    let log = d.join("trace");
    common::run(
        Command::new("strace")
            .args([
                "-f",
                "-e",
                "trace=openat,open,fsync,fdatasync,linkat,renameat2",
                "-o",
            ])
            .arg(&log)
            .arg(env!("CARGO_BIN_EXE_imgchain"))
            .args([
                "snapshot",
                arg(&d.join("b.qcow2")),
                arg(&d.join("new.qcow2")),
            ])
            .env("HOME", "/nonexistent"),
    );
    let trace = std::fs::read_to_string(&log).expect("trace");
    let lines: Vec<&str> = trace.lines().collect();
    let at = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let made = at(&|l| l.contains("O_TMPFILE")).expect("an unnamed file");
    let fd = lines[made].rsplit("= ").next().expect("fd").trim();
    let dir = lines[made]
        .split('(')
        .nth(1)
        .and_then(|a| a.split(',').next())
        .expect("dirfd")
        .trim();
    let synced = at(&|l| l.contains(&format!("fsync({fd})"))).expect("the file synced");
    let named = at(&|l| l.contains("linkat(") && l.contains(&format!("/proc/self/fd/{fd}\"")))
        .expect("linked from its fd");
    let dir_synced = at(&|l| l.contains(&format!("fsync({dir})"))).expect("the directory synced");
    assert!(
        made < synced && synced < named && named < dir_synced,
        "{trace}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| (l.contains("openat(") || l.contains("open(")) && l.contains("new.qcow2")),
        "the new overlay was opened by its name: {trace}"
    );
    qemu_check(&d.join("new.qcow2"));
}
