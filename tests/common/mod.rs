//! Fixtures shared by the integration tests: real images built with qemu-img and qemu-io,
//! the imgchain binary, and before/after snapshots of a directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Whether a tool (a qemu tool, tmux, prlimit) is present. When it is missing and CI asks for the real peers
/// (`CI=true` or `IMGCHAIN_REQUIRE_QEMU=1`), this fails the test instead of skipping it.
pub fn have(tool: &str) -> bool {
    let found = ["--version", "-V"].iter().any(|flag| {
        Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        let required = std::env::var("IMGCHAIN_REQUIRE_QEMU").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !required,
            "{tool} is required (CI or IMGCHAIN_REQUIRE_QEMU=1) but not installed"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Runs a command and fails the test with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `qemu-img create -f FMT [-b BACKING -F BFMT] [OPTS] PATH SIZE` in `dir`.
pub fn create(
    dir: &Path,
    name: &str,
    fmt: &str,
    size: &str,
    backing: Option<(&str, &str)>,
    opts: &[&str],
) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let mut cmd = Command::new("qemu-img");
    cmd.current_dir(dir).args(["create", "-q", "-f", fmt]);
    if let Some((b, bf)) = backing {
        cmd.args(["-b", b, "-F", bf]);
    }
    cmd.args(opts).arg(name).arg(size);
    run(&mut cmd);
    path
}

/// `qemu-io -c "write -P PATTERN OFF LEN"` (or any other qemu-io command) on an image.
pub fn qemu_io(path: &Path, command: &str) {
    run(Command::new("qemu-io").args(["-c", command]).arg(path));
}

/// Copies a directory's contents, preserving sparseness and relative backing names.
pub fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to));
}

/// `qemu-img check -q` must find nothing at all (no leak, no corruption).
pub fn qemu_check(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(path)
        .output()
        .expect("run qemu-img check");
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A backing chain built the way a host builds one: `qemu-img create` for each layer, on the
/// one before it by relative name, and `qemu-io` for the data.
///
/// `Chain::new(dir, "64M").base("base.qcow2").io("write -P 0x11 0 4M").on("top.qcow2")`
pub struct Chain {
    dir: PathBuf,
    size: String,
    opts: Vec<String>,
    /// The last layer made: its name and format.
    last: Option<(String, String)>,
}

impl Chain {
    /// A chain in `dir` whose layers are `size` large.
    pub fn new(dir: &Path, size: &str) -> Chain {
        Chain {
            dir: dir.to_path_buf(),
            size: size.to_string(),
            opts: Vec::new(),
            last: None,
        }
    }

    /// `qemu-img create` options for the layers made from now on (`-o cluster_size=4k`).
    pub fn opts(mut self, opts: &[&str]) -> Chain {
        self.opts = opts.iter().map(|o| o.to_string()).collect();
        self
    }

    /// A layer of format `fmt` without a backing file.
    pub fn base_fmt(mut self, name: &str, fmt: &str) -> Chain {
        let opts: Vec<&str> = self.opts.iter().map(String::as_str).collect();
        create(&self.dir, name, fmt, &self.size, None, &opts);
        self.last = Some((name.to_string(), fmt.to_string()));
        self
    }

    /// A qcow2 layer without a backing file.
    pub fn base(self, name: &str) -> Chain {
        self.base_fmt(name, "qcow2")
    }

    /// A qcow2 layer on the last one.
    pub fn on(mut self, name: &str) -> Chain {
        let (below, fmt) = self.last.clone().expect("a layer to build on");
        let opts: Vec<&str> = self.opts.iter().map(String::as_str).collect();
        create(
            &self.dir,
            name,
            "qcow2",
            &self.size,
            Some((&below, &fmt)),
            &opts,
        );
        self.last = Some((name.to_string(), "qcow2".to_string()));
        self
    }

    /// A `qemu-io` command on the last layer (`write -P 0x11 0 4M`, `write -z 1M 64k`).
    pub fn io(self, command: &str) -> Chain {
        let (name, fmt) = self.last.clone().expect("a layer to write");
        qemu_io_fmt(&self.dir.join(name), &fmt, command);
        self
    }

    /// The path of the last layer.
    pub fn top(&self) -> PathBuf {
        let (name, _) = self.last.clone().expect("a layer");
        self.dir.join(name)
    }
}

/// The smallest chain: `base.qcow2` (16 MiB) <- `top.qcow2`, with relative names.
pub fn base_and_top(dir: &Path) {
    sized_base_and_top(dir, "16M");
}

/// `base.qcow2` <- `top.qcow2`, both of `size`, with relative names; returns the top's path.
pub fn sized_base_and_top(dir: &Path, size: &str) -> PathBuf {
    Chain::new(dir, size)
        .base("base.qcow2")
        .on("top.qcow2")
        .top()
}

/// `qemu-img map --output=json -U` of one image (its own layer and the chain below).
pub fn qemu_map(path: &Path) -> Value {
    let out = run(Command::new("qemu-img")
        .args(["map", "--output=json", "-U"])
        .arg(path));
    serde_json::from_slice(&out.stdout).expect("qemu-img map prints JSON")
}

/// Three copies of one set of images: `orig` as `build` made it, and `ours` and `theirs` for
/// running imgchain and its QEMU peer on the same input.
pub struct Twins {
    _root: tempfile::TempDir,
    pub orig: PathBuf,
    pub ours: PathBuf,
    pub theirs: PathBuf,
}

/// Builds the images with `build` and copies them twice ([`Twins`]).
pub fn twins(build: impl Fn(&Path)) -> Twins {
    let root = tempdir();
    let dir = |n: &str| {
        let d = root.path().join(n);
        std::fs::create_dir(&d).expect("mkdir");
        d
    };
    let (orig, ours, theirs) = (dir("orig"), dir("ours"), dir("theirs"));
    build(&orig);
    copy_dir(&orig, &ours);
    copy_dir(&orig, &theirs);
    Twins {
        _root: root,
        orig,
        ours,
        theirs,
    }
}

/// `qemu-io -f FMT -c COMMAND` on an image of a known format (raw needs it).
pub fn qemu_io_fmt(path: &Path, fmt: &str, command: &str) {
    run(Command::new("qemu-io")
        .args(["-f", fmt, "-c", command])
        .arg(path));
}

/// `qemu-img info --output=json -U` of one image.
pub fn qemu_info(path: &Path) -> Value {
    let out = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path));
    serde_json::from_slice(&out.stdout).expect("qemu-img info prints JSON")
}

/// `qemu-img rebase -u -b BACKING [-F FMT] IMAGE`: rewrites only the header.
pub fn rebase_unsafe(image: &Path, backing: &str, fmt: &str) {
    run(Command::new("qemu-img")
        .args(["rebase", "-u", "-b", backing, "-F", fmt])
        .arg(image));
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `qemu-img compare -U A B`: the two guest views must be equal.
pub fn qemu_compare(a: &Path, b: &Path) {
    run(Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(a)
        .arg(b));
}

/// The backing file name and format `qemu-img info` reports for `image` (empty: none).
pub fn backing_of(image: &Path) -> (String, String) {
    let v = qemu_info(image);
    let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
    (field("backing-filename"), field("backing-filename-format"))
}

/// Runs imgchain with `args`; asserts its exit code, that stderr names every needle, and that
/// nothing under `dir` changed.
pub fn refused_in(dir: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let before = snapshot(dir);
    let out = imgchain(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: wanted {n:?} in {err}");
    }
    assert!(
        before == snapshot(dir),
        "{args:?} changed something on disk"
    );
}

/// Runs the imgchain binary with no user config, killing it after a minute.
pub fn imgchain(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgchain"));
    cmd.args(args);
    finish(cmd)
}

/// Runs the imgchain binary as [`imgchain`] does, with `COLUMNS` set to `cols`.
pub fn imgchain_columns(cols: usize, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgchain"));
    cmd.args(args).env("COLUMNS", cols.to_string());
    finish(cmd)
}

/// Runs imgchain without the power to bypass file permissions, even as root (setpriv drops
/// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so mode bits mean what they say.
pub fn imgchain_unprivileged(args: &[&str]) -> Output {
    if rustix::process::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--bounding-set=-dac_override,-dac_read_search")
            .arg(env!("CARGO_BIN_EXE_imgchain"))
            .args(args);
        finish(cmd)
    } else {
        imgchain(args)
    }
}

fn finish(mut cmd: Command) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    if !cmd.get_envs().any(|(k, _)| k == "COLUMNS") {
        cmd.env_remove("COLUMNS");
    }
    let mut child = cmd
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NO_COLOR")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imgchain");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Drain pipes on threads so a large output cannot block the child.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("{cmd:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout thread"),
        stderr: t_err.join().expect("stderr thread"),
    }
}

/// Runs imgchain with `args`; it must succeed (the failure shows its stderr).
pub fn imgchain_ok(args: &[&str]) -> Output {
    let out = imgchain(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "imgchain {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs imgchain with `args` and parses its JSON output; the exit code must be `code`.
pub fn imgchain_json(args: &[&str], code: i32) -> Value {
    let out = imgchain(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "imgchain {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "imgchain {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `tree --json` of a directory, as a map from path to node.
pub fn tree(dir: &Path, extra: &[&str]) -> BTreeMap<String, Value> {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["tree", "--json"]);
    let d = dir.to_str().expect("utf-8 temp path");
    args.push(d);
    let v = imgchain_json(&args, 0);
    v["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| (n["path"].as_str().expect("path").to_string(), n.clone()))
        .collect()
}

/// The node of `tree` at `dir/name`.
pub fn node<'a>(tree: &'a BTreeMap<String, Value>, dir: &Path, name: &str) -> &'a Value {
    let p = dir.join(name);
    tree.get(p.to_str().expect("utf-8"))
        .unwrap_or_else(|| panic!("{} not in the forest: {:?}", p.display(), tree.keys()))
}

/// Every file under `dir` with its size, mtime (ns) and contents, to prove nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = std::fs::symlink_metadata(&p).expect("stat");
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                let data = std::fs::read(&p).unwrap_or_default();
                out.insert(p, (md.len(), md.mtime(), md.mtime_nsec(), data));
            } else {
                out.insert(p, (0, md.mtime(), md.mtime_nsec(), Vec::new()));
            }
        }
    }
    out
}

/// Overwrites bytes of a file at `off` (test fixtures only: damage or tweak a header).
pub fn patch(path: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patch");
    f.write_all_at(bytes, off).expect("patch");
}

/// Removes the backing-format header extension of a qcow2 image by turning its type into an
/// unknown one, which QEMU and imgchain ignore: the image then names its backing file without
/// a format, as images made by old QEMU versions do.
pub fn drop_backing_format(path: &Path) {
    let data = std::fs::read(path).expect("read");
    let hl = u32::from_be_bytes(data[100..104].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        &data[hl..hl + 4],
        &[0xe2, 0x79, 0x2a, 0xca],
        "first extension is the backing format"
    );
    patch(path, hl as u64, &[0x12, 0x34, 0x56, 0x78]);
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("imgchain-test-")
        .tempdir()
        .expect("tempdir")
}

/// A helper process (qemu-io, qemu-storage-daemon) that is killed by pid however the test ends.
pub struct Held {
    pub child: std::process::Child,
}

impl Held {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits (up to 20 s) until it has held QEMU lock bytes on `image` for
/// 300 ms.
pub fn hold(mut cmd: Command, image: &Path) -> Held {
    use std::os::fd::AsFd;
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let held = Held { child };
    let f = std::fs::File::open(image).expect("open image");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // QEMU takes and drops locks while it opens and probes an image: wait until they have
    // stayed taken for a while.
    let mut since: Option<std::time::Instant> = None;
    loop {
        let locked = imgchain::image::lock::probe(f.as_fd())
            .expect("probe")
            .in_use();
        match (locked, since) {
            (true, Some(t)) if t.elapsed() >= std::time::Duration::from_millis(300) => break,
            (true, None) => since = Some(std::time::Instant::now()),
            (false, _) => since = None,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{cmd:?} never locked {}",
            image.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    held
}

/// `qemu-io` holding `image` (and its backing chain) open read-write for a minute.
pub fn hold_with_qemu_io(image: &Path) -> Held {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-c", "sleep 60000"]).arg(image);
    hold(cmd, image)
}

/// `qemu-storage-daemon` with `image` as a qcow2 block node (read-write, backing chain opened).
pub fn hold_with_storage_daemon(image: &Path) -> Held {
    let mut cmd = Command::new("qemu-storage-daemon");
    cmd.arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=file0,filename={}",
            image.display()
        ))
        .args(["--blockdev", "driver=qcow2,node-name=fmt0,file=file0"]);
    hold(cmd, image)
}

/// `qemu-storage-daemon` running `DIR/top.qcow2` (and its chain) as a VM would, with a QMP
/// socket `DIR/qmp.sock` and a writable NBD export `top` on `DIR/nbd.sock`.
pub fn hold_with_qmp_daemon(dir: &Path) -> Held {
    let top = dir.join("top.qcow2");
    let mut cmd = Command::new("qemu-storage-daemon");
    cmd.arg("--blockdev")
        .arg(format!(
            "driver=file,node-name=top-file,filename={}",
            top.display()
        ))
        .args(["--blockdev", "driver=qcow2,node-name=top,file=top-file"])
        .arg("--chardev")
        .arg(format!(
            "socket,path={},server=on,wait=off,id=m",
            dir.join("qmp.sock").display()
        ))
        .args(["--monitor", "chardev=m"])
        .arg("--nbd-server")
        .arg(format!(
            "addr.type=unix,addr.path={}",
            dir.join("nbd.sock").display()
        ))
        .args(["--export", "type=nbd,id=e0,node-name=top,writable=on"]);
    hold(cmd, &top)
}

/// A small XFS filesystem (reflinks on) on a loop device, unmounted on drop. `None` (after
/// saying why) when mkfs.xfs is missing or loop mounts are refused; under `CI=true` a refused
/// mount fails the test instead (CI runs as root).
pub struct SmallFs {
    _img: tempfile::TempDir,
    mnt: tempfile::TempDir,
}

impl SmallFs {
    pub fn new(mib: u64) -> Option<SmallFs> {
        SmallFs::made_with(mib, &["-m", "reflink=1"])
    }

    /// A small XFS made with `mkfs.xfs OPTS`.
    pub fn made_with(mib: u64, opts: &[&str]) -> Option<SmallFs> {
        if !have("mkfs.xfs") {
            return None;
        }
        let img = tempdir();
        let file = img.path().join("fs.img");
        run(Command::new("truncate").arg(format!("-s{mib}M")).arg(&file));
        run(Command::new("mkfs.xfs").arg("-q").args(opts).arg(&file));
        let mnt = tempdir();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(mnt.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            let required = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !required,
                "mount -o loop failed (CI runs as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "skipping: cannot loop-mount an XFS image (not root?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallFs { _img: img, mnt })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mnt.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
    }
}

/// `base.qcow2` (data at 0, 8 MiB, and at 20 MiB, 1 MiB) under `mid.qcow2` (data at 4 MiB,
/// 8 MiB; zeroes at 20 MiB, 512 KiB), `size` virtual, made with `opts`: the chain is left at
/// the middle layer, for a test to add to it and put its top on.
pub fn base_and_mid(d: &Path, size: &str, opts: &[&str]) -> Chain {
    Chain::new(d, size)
        .opts(opts)
        .base("base.qcow2")
        .io("write -P 0x11 0 8M")
        .io("write -P 0x12 20M 1M")
        .on("mid.qcow2")
        .io("write -P 0x22 4M 8M")
        .io("write -z 20M 512k")
}

/// A host with `templates/GOLDEN` and a 600-layer chain off it in `vms/` (app-layer-1 to 600,
/// each built on the one before), beside two snapshots of one VM whose names differ only in
/// their dates: what deep chains and long sibling names are tested on. Made with imgchain's
/// own image creation, so it takes a second.
pub fn deep_host(dir: &Path, golden: &str) {
    use imgchain::image::create::{NewImage, create};
    use imgchain::image::probe::Format;
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir templates");
    std::fs::create_dir_all(dir.join("vms")).expect("mkdir vms");
    let golden_path = dir.join("templates").join(golden);
    create(&golden_path, &NewImage::qcow2(1 << 30)).expect("create the golden image");
    let golden = format!("../templates/{golden}");
    let on = |backing: &str, name: &str| {
        let new = NewImage {
            backing: Some((backing, Format::Qcow2)),
            ..NewImage::qcow2(1 << 30)
        };
        create(&dir.join("vms").join(name), &new).expect("create a layer");
    };
    let mut below = golden.clone();
    for i in 1..=600 {
        let layer = format!("app-layer-{i}.qcow2");
        on(&below, &layer);
        below = layer;
    }
    for date in ["20240301", "20240415"] {
        on(
            &golden,
            &format!("web02-snapshot-before-upgrade-{date}.qcow2"),
        );
    }
}

/// Asserts that every key of the JSON document `v`, at any depth, is one ARCHITECTURE.md §5
/// names (`what`: the command, for the message).
pub fn assert_documented(v: &Value, what: &str) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let section = doc
        .split("## 5. CLI and JSON contract")
        .nth(1)
        .and_then(|s| s.split("\n## 6.").next())
        .expect("§5 of ARCHITECTURE.md");
    let mut keys = std::collections::BTreeSet::new();
    json_keys(v, &mut keys);
    let undocumented: Vec<_> = keys.iter().filter(|k| !names_word(section, k)).collect();
    assert!(
        undocumented.is_empty(),
        "{what}: not in ARCHITECTURE.md §5: {undocumented:?}"
    );
}

/// Every object key in `v`, at any depth.
fn json_keys(v: &Value, keys: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                keys.insert(k.clone());
                json_keys(x, keys);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| json_keys(x, keys)),
        _ => {}
    }
}

/// Whether `text` has `word` on its own: not inside a longer name.
fn names_word(text: &str, word: &str) -> bool {
    let name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(name)
            && !text[at + word.len()..].chars().next().is_some_and(name)
    })
}
