//! Creating images through imago (used by the demo and the benchmarks; tests use qemu-img).

use std::io;
use std::path::Path;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{
    FormatAccess, FormatCreateBuilder, FormatDriverBuilder, PermissiveImplicitOpenGate, Storage,
    StorageCreateOptions,
};

use super::probe::Format;

/// What to create.
#[derive(Clone, Debug)]
pub struct NewImage<'a> {
    pub format: Format,
    pub virtual_size: u64,
    /// Backing file name as written into the header (relative to the image's directory) and
    /// its format. qcow2 only.
    pub backing: Option<(&'a str, Format)>,
    /// qcow2 cluster size in bytes (512 to 2 MiB).
    pub cluster_size: usize,
}

impl NewImage<'_> {
    /// A qcow2 image with 64 KiB clusters.
    pub fn qcow2(virtual_size: u64) -> NewImage<'static> {
        NewImage {
            format: Format::Qcow2,
            virtual_size,
            backing: None,
            cluster_size: 64 << 10,
        }
    }
}

/// Creates (or truncates and recreates) an image at `path`.
pub fn create(path: &Path, new: &NewImage<'_>) -> io::Result<()> {
    let storage = File::create_open(StorageCreateOptions::new().filename(path).overwrite(true))?;
    match new.format {
        Format::Qcow2 => {
            let mut b = Qcow2::<File>::create_builder(storage)
                .size(new.virtual_size)
                .cluster_size(new.cluster_size);
            if let Some((name, fmt)) = new.backing {
                b = b.backing(name.to_string(), fmt.as_str().to_string());
            }
            b.create()
        }
        Format::Raw => {
            if new.backing.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "raw images have no backing file",
                ));
            }
            Raw::<File>::create_builder(storage)
                .size(new.virtual_size)
                .create()
        }
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot create {other} images"),
        )),
    }
}

/// Writes `data` at guest offset `offset` of the image at `path` (its own layer only: the
/// backing file is not opened, so the image must not need it for this write).
pub fn write(path: &Path, format: Format, offset: u64, data: &[u8]) -> io::Result<()> {
    let access = match format {
        Format::Qcow2 => {
            let q = Qcow2::<File>::builder_path(path)
                .write(true)
                .backing(None)
                .open(PermissiveImplicitOpenGate::default())?;
            FormatAccess::new(q)
        }
        Format::Raw => {
            let r = Raw::<File>::builder_path(path)
                .write(true)
                .open(PermissiveImplicitOpenGate::default())?;
            FormatAccess::new(r)
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("cannot write {other} images"),
            ));
        }
    };
    access.write(data, offset)?;
    access.flush()
}
