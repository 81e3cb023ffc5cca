//! libvirt domain definitions: which VM each image is a disk of, so that a stopped VM's disks
//! are labelled too (ARCHITECTURE.md §7). Read from the XML files libvirt keeps for its
//! domains (`scan.libvirt_domains`, by default `/etc/libvirt/qemu`); only file-backed disks
//! (`<disk type='file'><source file=…/>`) count, matched to images by file identity.

use std::path::{Path, PathBuf};

use super::model::{Forest, VmDisk};
use crate::image::file::FileId;

/// A domain's name and its file disks (source, target), from one XML document: a `<domain>`,
/// or libvirt's `<domstatus>` around one.
pub fn parse(xml: &str) -> Result<(String, Vec<(PathBuf, String)>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let domain = doc
        .descendants()
        .find(|n| n.has_tag_name("domain"))
        .ok_or("it holds no <domain> element")?;
    let name = child(domain, "name")
        .and_then(|n| n.text())
        .ok_or("its <domain> has no <name>")?
        .trim()
        .to_string();
    Ok((name, disks_of(domain)))
}

/// The file disks (source, target) of a `<domain>` element.
pub fn disks_of(domain: roxmltree::Node<'_, '_>) -> Vec<(PathBuf, String)> {
    child(domain, "devices")
        .into_iter()
        .flat_map(|d| d.children().filter(|c| c.has_tag_name("disk")))
        .filter(|d| d.attribute("type") == Some("file"))
        .filter_map(|d| {
            let source = child(d, "source")?.attribute("file")?;
            let target = child(d, "target")
                .and_then(|t| t.attribute("dev"))
                .unwrap_or("?");
            Some((PathBuf::from(source), target.to_string()))
        })
        .collect()
}

/// Labels the forest's images with the disks of the domains defined under `dirs`. A directory
/// that does not exist is no libvirt host; one that cannot be read, and a definition that does
/// not parse, are returned with the reason, to be reported as skipped.
pub fn label(forest: &mut Forest, dirs: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut skipped = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                skipped.push((
                    dir.clone(),
                    format!(
                        "libvirt's domain definitions cannot be read ({e}), so stopped VMs' \
                         disks are not labelled"
                    ),
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "xml"))
            .collect();
        files.sort();
        for file in files {
            match read(&file) {
                Ok((domain, disks)) => {
                    for (source, target) in disks {
                        attach(forest, &source, &domain, &target, &file);
                    }
                }
                Err(reason) => skipped.push((
                    file,
                    format!("not a libvirt domain definition imgchain can read: {reason}"),
                )),
            }
        }
    }
    skipped
}

/// The first child element of `n` named `tag`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.has_tag_name(tag))
}

fn read(file: &Path) -> Result<(String, Vec<(PathBuf, String)>), String> {
    let xml = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    parse(&xml)
}

fn attach(forest: &mut Forest, source: &Path, domain: &str, target: &str, definition: &Path) {
    let Some(id) = FileId::of_path(source) else {
        return;
    };
    if let Some(n) = forest.nodes.iter_mut().find(|n| n.ident == Some(id)) {
        let disk = VmDisk {
            domain: domain.to_string(),
            target: target.to_string(),
            definition: definition.to_path_buf(),
        };
        if !n.vm_disks.contains(&disk) {
            n.vm_disks.push(disk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_disks_are_read_from_a_definition_and_from_a_status_file() {
        let xml = "<domain type='kvm'><name>web03</name><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
            <source file='/var/lib/libvirt/images/web03.qcow2'/><target dev='vda' bus='virtio'/>\
            <backingStore type='file'><source file='/srv/golden.qcow2'/></backingStore></disk>\
            <disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb'/></disk>\
            <disk type='file' device='cdrom'><target dev='sda'/></disk>\
            </devices></domain>";
        let (name, disks) = parse(xml).unwrap();
        assert_eq!(name, "web03");
        assert_eq!(
            disks,
            vec![(
                PathBuf::from("/var/lib/libvirt/images/web03.qcow2"),
                "vda".to_string()
            )]
        );
        let status = format!("<domstatus state='running' pid='4242'>{xml}</domstatus>");
        assert_eq!(parse(&status).unwrap().1.len(), 1);
        assert!(parse("<network><name>default</name></network>").is_err());
        assert!(parse("<domain><name>x</name>").is_err(), "not well-formed");
    }
}
