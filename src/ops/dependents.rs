//! Where images built on an image may live (ARCHITECTURE.md §3, "Dependents"): before a write
//! that could change what another image reads, the plan and the run's re-check look beyond
//! the scanned paths — the tree around the image, every libvirt domain's disks (defined here,
//! in a storage pool, or on another host through a libvirt URI), every file a running QEMU has
//! open, and Proxmox's storages — and every plan says where it looked.

use std::path::{Path, PathBuf};

use crate::forest::{Forest, NodeId, domains};
use crate::image::file::FileId;
use crate::text::Names;

/// Where the dependents search looks besides the image's own tree (from the configuration).
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// Directories of libvirt domain definitions (`scan.libvirt_domains`).
    pub libvirt_domains: Vec<PathBuf>,
    /// Directories of libvirt storage pool definitions (`scan.libvirt_pools`).
    pub libvirt_pools: Vec<PathBuf>,
    /// Other libvirt connections whose domains' disks count (`scan.libvirt_uris`).
    pub libvirt_uris: Vec<String>,
    /// Proxmox's configuration directory (`scan.proxmox`).
    pub proxmox: Option<PathBuf>,
    /// A libvirt URI that cannot be reached is passed over (`--skip-unreachable`) instead of
    /// refusing the write.
    pub skip_unreachable: bool,
}

/// The kind of a [`Searched`] that is no place searched but an image of the chain reached
/// only through a name in a header: outside everything imgchain was pointed at.
pub const OUTSIDE: &str = "outside";

/// One place searched, and the images built on the target found there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Searched {
    /// What kind of place: `scanned`, `around`, `overlay_dirs`, `libvirt-domain`,
    /// `libvirt-pool`, `libvirt-uri`, `qemu-open-files`, `proxmox`.
    pub kind: &'static str,
    /// The directory or file, or the URI and domain.
    pub place: String,
    /// The files scanned for it: directories and disk images.
    #[serde(skip)]
    pub paths: Vec<PathBuf>,
    /// Images built on the target found there.
    pub found: Vec<PathBuf>,
}

/// The places to search around images in `dirs`; a libvirt URI that cannot be reached is an
/// error unless the search was set to skip it.
pub fn places(dirs: &[PathBuf], s: &Search) -> Result<Vec<Searched>, String> {
    let mut out = Vec::new();
    let mut place = |kind, place: String, paths: Vec<PathBuf>| {
        out.push(Searched {
            kind,
            place,
            paths,
            found: Vec::new(),
        })
    };
    let mut around: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| around(d))
        .map(Path::to_path_buf)
        .collect();
    around.sort();
    around.dedup();
    for a in around {
        place("around", a.shown().to_string(), vec![a]);
    }
    for dir in &s.libvirt_domains {
        for (file, domain, disks) in definitions(dir) {
            let shown = format!("{} ({})", domain.shown(), file.shown());
            place("libvirt-domain", shown, disks);
        }
    }
    for dir in &s.libvirt_pools {
        for (file, target) in pools(dir) {
            place(
                "libvirt-pool",
                format!("{} ({})", target.shown(), file.shown()),
                vec![target],
            );
        }
    }
    for uri in &s.libvirt_uris {
        for (place_name, disks) in uri_places(uri, s.skip_unreachable)? {
            place("libvirt-uri", place_name, disks);
        }
    }
    let open = qemu_open_files();
    if !open.is_empty() {
        place(
            "qemu-open-files",
            "files running QEMUs have open".into(),
            open,
        );
    }
    if let Some(pve) = &s.proxmox {
        for dir in proxmox_dirs(pve) {
            place("proxmox", dir.shown().to_string(), vec![dir]);
        }
    }
    Ok(out)
}

/// The directory above an image's directory `dir`, searched around it: not `/`, and not a
/// shared scratch directory (world-writable and sticky, as `/tmp`), whose other directories
/// belong to unrelated users and jobs.
pub fn around(dir: &Path) -> Option<&Path> {
    use std::os::unix::fs::MetadataExt;
    let up = dir.parent()?;
    let wide = up.parent().is_some()
        && std::fs::metadata(up).is_ok_and(|m| m.is_dir() && m.mode() & 0o1002 != 0o1002);
    wide.then_some(up)
}

/// Fills in what each place holds of `forest`'s images built on `image` or on any image of its
/// chain (what a commit, merge, rebase or delete of it could change), other than those.
pub fn fill(places: &mut [Searched], forest: &Forest, image: NodeId) {
    let chain: Vec<NodeId> = std::iter::once(image).chain(forest.chain(image)).collect();
    let mut built_on: Vec<NodeId> = chain
        .iter()
        .flat_map(|&c| super::guards::descendants(forest, c))
        .filter(|d| !chain.contains(d))
        .collect();
    built_on.sort();
    built_on.dedup();
    if built_on.is_empty() {
        return;
    }
    for p in places {
        // Each place's files by identity, looked up once (a disk may be named by a link).
        let ids: Vec<FileId> = p.paths.iter().filter_map(|q| FileId::of_path(q)).collect();
        p.found = built_on
            .iter()
            .map(|&d| forest.node(d))
            .filter(|n| {
                n.ident.is_some_and(|i| ids.contains(&i))
                    || p.paths.iter().any(|q| {
                        n.path.starts_with(q) || n.aliases.iter().any(|a| a.starts_with(q))
                    })
            })
            .map(|n| n.path.clone())
            .collect();
    }
}

/// Each domain definition under `dir`: its file, the domain's name and its file disks.
fn definitions(dir: &Path) -> Vec<(PathBuf, String, Vec<PathBuf>)> {
    xml_files(dir)
        .into_iter()
        .filter_map(|f| {
            let xml = std::fs::read_to_string(&f).ok()?;
            let (name, disks) = domains::parse(&xml).ok()?;
            Some((f, name, disks.into_iter().map(|(s, _)| s).collect()))
        })
        .collect()
}

/// Each directory-like storage pool under `dir`: its definition and its target path.
fn pools(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    xml_files(dir)
        .into_iter()
        .filter_map(|f| {
            let xml = std::fs::read_to_string(&f).ok()?;
            let doc = roxmltree::Document::parse(&xml).ok()?;
            let pool = doc.descendants().find(|n| n.has_tag_name("pool"))?;
            let path = pool
                .descendants()
                .find(|n| n.has_tag_name("target"))?
                .children()
                .find(|n| n.has_tag_name("path"))?
                .text()?
                .trim()
                .to_string();
            Some((f, PathBuf::from(path)))
        })
        .collect()
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files
}

/// Runs `virsh -q -c URI ARGS...` without input: its output, or what it printed as error
/// (one line, without virsh's `error: ` prefixes).
pub fn virsh(uri: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .trim()
            .trim_start_matches("error: ")
            .replace("\nerror: ", ": ")
            .replace('\n', "; "))
    }
}

/// The places of libvirt connection `uri`: each domain with its file disks. One that cannot be
/// reached is an error, or with `skip`, a place that says so.
fn uri_places(uri: &str, skip: bool) -> Result<Vec<(String, Vec<PathBuf>)>, String> {
    match remote_disks(uri) {
        Ok(domains) => Ok(domains
            .into_iter()
            .map(|(domain, disks)| (format!("{uri} {}", domain.shown()), disks))
            .collect()),
        Err(e) if skip => Ok(vec![(format!("{uri} (skipped: {e})"), Vec::new())]),
        Err(e) => Err(format!(
            "the libvirt connection {uri} (scan.libvirt_uris) cannot be reached ({e}), so the \
             VMs there cannot be checked for disks built on it; fix the connection, or start \
             imgchain with --skip-unreachable to go on without them"
        )),
    }
}

/// The file disks of every domain of libvirt connection `uri`, by domain name.
fn remote_disks(uri: &str) -> Result<Vec<(String, Vec<PathBuf>)>, String> {
    let virsh = |args: &[&str]| virsh(uri, args);
    let names = virsh(&["list", "--all", "--name"])?;
    names
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let list = virsh(&["domblklist", "--details", "--domain", name])?;
            let disks = list
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let kind = f.next()?;
                    let (_device, _target) = (f.next()?, f.next()?);
                    let source = f.collect::<Vec<_>>().join(" ");
                    (kind == "file" && source.starts_with('/')).then(|| PathBuf::from(source))
                })
                .collect();
            Ok((name.to_string(), disks))
        })
        .collect()
}

/// The regular files every running QEMU (any user's) has open: VM disks outside every
/// scanned path, and the chains under them.
fn qemu_open_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return files;
    };
    for p in procs.filter_map(Result::ok) {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let exe = std::fs::read_link(p.path().join("exe")).unwrap_or_default();
        let name = exe.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with("qemu") {
            continue;
        }
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path())
                && target.is_absolute()
                && std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file())
            {
                files.push(target);
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Proxmox's file storages (`storage.cfg`: `dir`, `nfs`, `cifs`, `glusterfs` with a `path`),
/// each with its `images` directory, where its VMs' disks live.
fn proxmox_dirs(pve: &Path) -> Vec<PathBuf> {
    let Ok(cfg) = std::fs::read_to_string(pve.join("storage.cfg")) else {
        return Vec::new();
    };
    cfg.lines()
        .filter_map(|l| l.trim().strip_prefix("path "))
        .map(|p| Path::new(p.trim()).join("images"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_proxmox_storages_are_read_from_their_files() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("vms.xml"),
            "<pool type='dir'><name>vms</name><target><path>/srv/vms</path></target></pool>",
        )
        .expect("write");
        std::fs::write(d.path().join("broken.xml"), "<pool").expect("write");
        assert_eq!(
            pools(d.path()),
            vec![(d.path().join("vms.xml"), PathBuf::from("/srv/vms"))]
        );
        std::fs::write(
            d.path().join("storage.cfg"),
            "dir: local\n\tpath /var/lib/vz\n\tcontent images\n\nlvmthin: data\n\tvgname pve\n",
        )
        .expect("write");
        assert_eq!(
            proxmox_dirs(d.path()),
            vec![PathBuf::from("/var/lib/vz/images")]
        );
    }
}
