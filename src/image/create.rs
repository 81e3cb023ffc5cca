//! Creating images through imago: by name for the demo and the benchmarks (tests use
//! qemu-img), and through an open file for the overlays operations create.

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

/// Creates (or truncates and recreates) an image at `path`. Only for paths imgchain made
/// itself: it follows symlinks. Operations use [`create_in`].
pub fn create(path: &Path, new: &NewImage<'_>) -> io::Result<()> {
    let storage = File::create_open(StorageCreateOptions::new().filename(path).overwrite(true))?;
    create_on(storage, new)
}

/// Writes a new image into `file`, an empty regular file open read-write. The file is never
/// reopened by a name, so nothing can swap it for another between its creation and this write.
pub fn create_in(file: &std::fs::File, new: &NewImage<'_>) -> io::Result<()> {
    create_on(File::try_from(file.try_clone()?)?, new)
}

fn create_on(storage: File, new: &NewImage<'_>) -> io::Result<()> {
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
