//! Header probe: recognises an image format from the first bytes of a file.
//!
//! [`probe`] is a pure function over a prefix of the file and the file's length. It never does
//! I/O, never panics, and allocates only what it returns (a backing name of at most 1023 bytes,
//! short format strings, and header-extension facts bounded by the prefix it was given). When
//! the prefix is too short it says how many bytes it needs ([`ProbeError::Short`]); it never asks
//! for more than [`PROBE_MAX`] bytes, whatever the header claims.
//!
//! qcow2 validation follows QEMU's `qcow2_do_open` (block/qcow2.c) closely enough that an image
//! we accept is one QEMU opens, and an image QEMU refuses is reported as a bad header here.

use std::fmt;

/// The largest prefix the probe ever asks for.
pub const PROBE_MAX: usize = 1 << 20;

/// Bytes worth reading first: the header, extensions and backing name of images qemu-img
/// creates fit unless the backing name is longer than about 490 bytes; then the probe asks
/// for more and the caller reads again.
pub const PROBE_FIRST: usize = 1024;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
const QED_MAGIC: &[u8; 4] = b"QED\0";
const VMDK_SPARSE_MAGIC: &[u8; 4] = b"KDMV";
const VMDK_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
const VDI_SIGNATURE: u32 = 0xbeda_107f;
const VHDX_MAGIC: &[u8; 8] = b"vhdxfile";
const VPC_MAGIC: &[u8; 8] = b"conectix";
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// qcow2 header extension types (docs/interop/qcow2.txt).
const EXT_END: u32 = 0x0000_0000;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_FDE: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// The image is marked corrupt and must not be written.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// The compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// L2 entries carry subcluster bitmaps.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = (1 << 5) - 1;
/// Compatible feature bit: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit: persistent bitmaps are consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit: the external data file is valid raw.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

const QCOW_MAX_SNAPSHOTS: u32 = 65536;
const BACKING_NAME_MAX: u32 = 1023;
/// QEMU's `sizeof(bs->backing_format)` is 16, NUL included.
const BACKING_FORMAT_MAX: u32 = 15;
/// QEMU's QCOW_MAX_L1_SIZE (32 MiB of L1 table).
const QCOW_MAX_L1_BYTES: u64 = 32 << 20;

/// An image format we recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Qcow2,
    /// qcow version 1.
    Qcow,
    Qed,
    Vmdk,
    Vdi,
    Vhdx,
    Vpc,
    Luks,
    Raw,
}

impl Format {
    /// The name QEMU uses for this format (`qemu-img info`'s `format`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Qcow => "qcow",
            Format::Qed => "qed",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhdx => "vhdx",
            Format::Vpc => "vpc",
            Format::Luks => "luks",
            Format::Raw => "raw",
        }
    }

    /// Parses a QEMU format name.
    pub fn from_name(name: &str) -> Option<Format> {
        [
            Format::Qcow2,
            Format::Qcow,
            Format::Qed,
            Format::Vmdk,
            Format::Vdi,
            Format::Vhdx,
            Format::Vpc,
            Format::Luks,
            Format::Raw,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the probe learnt about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub format: Format,
    /// Guest-visible size in bytes, where the header states it plainly.
    pub virtual_size: Option<u64>,
    /// Allocation unit as `qemu-img info` reports it (`cluster-size`).
    pub cluster_size: Option<u64>,
    /// The full qcow2 header, for qcow2 images.
    pub qcow2: Option<Qcow2Header>,
}

/// The bitmaps header extension (0x23852875), as the header records it; unchecked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapsExt {
    pub count: u32,
    pub directory_size: u64,
    pub directory_offset: u64,
}

/// A qcow2 header (v2 or v3) with its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Raw bytes of the backing file name (not NUL-terminated on disk).
    pub backing_file: Option<Vec<u8>>,
    /// Backing format from header extension 0xe2792aca (v2 images carry it too).
    pub backing_format: Option<String>,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    /// 0 zlib, 1 zstd.
    pub compression_type: u8,
    pub refcount_order: u32,
    pub header_length: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    /// The bitmaps extension: where the bitmap directory is (`image::bitmaps` reads it).
    pub bitmaps_ext: Option<BitmapsExt>,
    /// The full-disk-encryption (LUKS) header pointer extension is present.
    pub has_fde_ext: bool,
    /// External data file name from extension 0x44415441.
    pub data_file: Option<Vec<u8>>,
    /// Feature names from the feature name table: (type 0/1/2, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
}

impl Qcow2Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Incompatible bit 0: not closed cleanly (lazy refcounts).
    pub fn dirty(&self) -> bool {
        self.incompatible & INCOMPAT_DIRTY != 0
    }
    /// Incompatible bit 1: QEMU found corruption; must not be written.
    pub fn corrupt(&self) -> bool {
        self.incompatible & INCOMPAT_CORRUPT != 0
    }
    /// Incompatible bit 2: guest data lives in an external data file.
    pub fn external_data_file(&self) -> bool {
        self.incompatible & INCOMPAT_DATA_FILE != 0
    }
    /// Where the external data file of the image at `image` is, as imgchain resolves it: the
    /// header's name, from the image's directory.
    pub fn data_file_path(&self, image: &std::path::Path) -> Option<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(self.data_file.as_deref()?);
        let dir = image.parent().unwrap_or(std::path::Path::new("/"));
        Some(dir.join(name))
    }
    /// Incompatible bit 4: extended L2 entries (subclusters).
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
    /// Compatible bit 0: lazy refcounts.
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible & COMPAT_LAZY_REFCOUNTS != 0
    }
    /// Persistent bitmaps are present and consistent (autoclear bit 0).
    pub fn bitmaps(&self) -> bool {
        self.autoclear & AUTOCLEAR_BITMAPS != 0
    }
    /// The image is encrypted (AES or LUKS).
    pub fn encrypted(&self) -> bool {
        self.crypt_method != 0
    }
    /// Incompatible bits this probe (and QEMU 10) does not know.
    pub fn unknown_incompatible(&self) -> u64 {
        self.incompatible & !INCOMPAT_KNOWN
    }
    /// The features imgchain can show but not write safely, each named for people: extended L2
    /// entries, non-zlib compression, an external data file, encryption, and incompatible bits
    /// nobody knows. The one list both the scan's problems and the write guards use.
    pub fn unwritable_features(&self) -> Vec<String> {
        let mut features = Vec::new();
        if self.extended_l2() {
            features.push("extended L2 entries (extended_l2=on)".to_string());
        }
        if self.compression_type != 0 {
            features.push(format!("{} compression", self.compression_name()));
        }
        if self.external_data_file() || self.data_file.is_some() {
            features.push("an external data file".to_string());
        }
        if self.encrypted() {
            features.push(
                match self.crypt_method {
                    1 => "AES encryption",
                    _ => "LUKS encryption",
                }
                .to_string(),
            );
        }
        let unknown = self.unknown_incompatible();
        for bit in (0..64u8).filter(|b| unknown & (1 << b) != 0) {
            let name = self.feature_name(0, bit).unwrap_or("unnamed");
            features.push(format!(
                "unknown incompatible feature bit {bit} ({name}; QEMU 10 cannot open it either)"
            ));
        }
        features
    }
    /// Of [`Qcow2Header::unwritable_features`], those QEMU 10's own tools handle (extended L2
    /// entries, zstd compression, an external data file): an operation on such an image runs
    /// qemu-img under imgchain's plan and guards.
    pub fn qemu_features(&self) -> Vec<String> {
        let mut features = Vec::new();
        if self.extended_l2() {
            features.push("extended L2 entries".to_string());
        }
        if self.compression_type == 1 {
            features.push("zstd compression".to_string());
        }
        if self.external_data_file() || self.data_file.is_some() {
            features.push("an external data file".to_string());
        }
        features
    }

    /// Whether every feature imgchain cannot write is one QEMU's tools handle.
    pub fn only_qemu_features(&self) -> bool {
        self.unwritable_features().len() == self.qemu_features().len()
    }

    /// `qemu-img info`'s `compat` string.
    pub fn compat(&self) -> &'static str {
        if self.version == 2 { "0.10" } else { "1.1" }
    }
    /// `zlib` or `zstd`, as qemu-img prints it.
    pub fn compression_name(&self) -> &'static str {
        if self.compression_type == 1 {
            "zstd"
        } else {
            "zlib"
        }
    }
    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }
    /// The name the feature table gives an incompatible bit, if any.
    pub fn feature_name(&self, kind: u8, bit: u8) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|(k, b, _)| *k == kind && *b == bit)
            .map(|(_, _, n)| n.as_str())
    }
}

/// Why a prefix could not be probed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The header continues past the prefix: probe again with at least `need` bytes.
    #[error("header needs {need} bytes")]
    Short { need: usize },
    /// The header is damaged or uses something QEMU would refuse.
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ProbeError> {
    Err(ProbeError::Invalid(msg.into()))
}

/// A bounds-checked view of the prefix: reads past the end ask for more bytes, or report a
/// truncated file when the file itself ends there.
struct Bytes<'a> {
    buf: &'a [u8],
    file_len: u64,
}

impl<'a> Bytes<'a> {
    fn slice(&self, off: u64, len: u64) -> Result<&'a [u8], ProbeError> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| ProbeError::Invalid(format!("offset {off} + {len} overflows")))?;
        if end > self.file_len {
            return invalid(format!(
                "truncated: the header needs {end} bytes but the file has {}",
                self.file_len
            ));
        }
        if end > PROBE_MAX as u64 {
            return invalid(format!(
                "header data at byte {off} lies beyond the first {} MiB, which this probe reads at most",
                PROBE_MAX >> 20
            ));
        }
        match self.buf.get(off as usize..end as usize) {
            Some(s) => Ok(s),
            None => Err(ProbeError::Short { need: end as usize }),
        }
    }
    fn be32(&self, off: u64) -> Result<u32, ProbeError> {
        let s = self.slice(off, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn be64(&self, off: u64) -> Result<u64, ProbeError> {
        let s = self.slice(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Recognises the format of a file from `prefix`, its first bytes, and `file_len`, its length.
///
/// Anything without a known magic is [`Format::Raw`]. Whether a raw file counts as an image is
/// the caller's decision (by extension, or because an overlay names it as its backing file).
pub fn probe(prefix: &[u8], file_len: u64) -> Result<Probed, ProbeError> {
    let head = |n: usize| prefix.get(..n);
    // Magic checks need at most 72 bytes; ask for them unless the file is shorter.
    let want = 72usize.min(usize::try_from(file_len).unwrap_or(usize::MAX));
    if prefix.len() < want {
        return Err(ProbeError::Short { need: want });
    }
    if head(4) == Some(QCOW_MAGIC) {
        let version = Bytes {
            buf: prefix,
            file_len,
        }
        .be32(4)?;
        if version == 1 {
            let size = Bytes {
                buf: prefix,
                file_len,
            }
            .be64(24)?;
            return Ok(simple(Format::Qcow, Some(size), None));
        }
        return probe_qcow2(prefix, file_len).map(|h| Probed {
            format: Format::Qcow2,
            virtual_size: Some(h.virtual_size),
            cluster_size: Some(h.cluster_size()),
            qcow2: Some(h),
        });
    }
    if head(4) == Some(QED_MAGIC) {
        return Ok(simple(
            Format::Qed,
            le64(prefix, 48),
            le32(prefix, 4).map(u64::from),
        ));
    }
    if head(4) == Some(VMDK_SPARSE_MAGIC) {
        let capacity = le64(prefix, 12).and_then(|c| c.checked_mul(512));
        let grain = le64(prefix, 20).and_then(|g| g.checked_mul(512));
        return Ok(simple(Format::Vmdk, capacity, grain));
    }
    if prefix.starts_with(VMDK_DESCRIPTOR) {
        return Ok(simple(Format::Vmdk, None, None));
    }
    if le32(prefix, 64) == Some(VDI_SIGNATURE) {
        return Ok(simple(
            Format::Vdi,
            le64(prefix, 368),
            le32(prefix, 376).map(u64::from),
        ));
    }
    if head(8) == Some(VHDX_MAGIC) {
        return Ok(simple(Format::Vhdx, None, None));
    }
    if head(8) == Some(VPC_MAGIC) {
        return Ok(simple(Format::Vpc, None, None));
    }
    if head(6) == Some(LUKS_MAGIC) {
        return Ok(simple(Format::Luks, None, None));
    }
    Ok(simple(Format::Raw, Some(file_len), None))
}

fn simple(format: Format, virtual_size: Option<u64>, cluster_size: Option<u64>) -> Probed {
    Probed {
        format,
        virtual_size,
        cluster_size,
        qcow2: None,
    }
}

fn probe_qcow2(prefix: &[u8], file_len: u64) -> Result<Qcow2Header, ProbeError> {
    let b = Bytes {
        buf: prefix,
        file_len,
    };
    let mut header = qcow2_fields(&b)?;
    check_tables(&header, file_len)?;
    let backing_file_offset = b.be64(8)?;
    header.backing_file =
        backing_name(&b, backing_file_offset, b.be32(16)?, header.cluster_size())?;
    let ext_end = if backing_file_offset != 0 {
        backing_file_offset
    } else {
        header.cluster_size()
    };
    read_extensions(&b, u64::from(header.header_length), ext_end, &mut header)?;
    if header.crypt_method == 0 && header.has_fde_ext {
        return invalid("encryption header extension present in an unencrypted image");
    }
    Ok(header)
}

/// The fixed header fields, each within what QEMU accepts (the backing name and the header
/// extensions not read yet).
fn qcow2_fields(b: &Bytes<'_>) -> Result<Qcow2Header, ProbeError> {
    let version = b.be32(4)?;
    if version != 2 && version != 3 {
        return invalid(format!("unsupported qcow2 version {version}"));
    }
    let cluster_bits = b.be32(20)?;
    if !(9..=21).contains(&cluster_bits) {
        return invalid(format!(
            "unsupported cluster size 2^{cluster_bits} (QEMU accepts 512 bytes to 2 MiB)"
        ));
    }
    let cluster_size = 1u64 << cluster_bits;
    let virtual_size = b.be64(24)?;
    if virtual_size > i64::MAX as u64 {
        return invalid(format!("virtual size {virtual_size} is too large"));
    }
    let crypt_method = b.be32(32)?;
    if crypt_method > 2 {
        return invalid(format!("unsupported encryption method {crypt_method}"));
    }
    let l1_size = b.be32(36)?;
    let l1_table_offset = b.be64(40)?;
    let refcount_table_offset = b.be64(48)?;
    let refcount_table_clusters = b.be32(56)?;
    let nb_snapshots = b.be32(60)?;
    let snapshots_offset = b.be64(64)?;

    let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 2 {
        (0, 0, 0, 4, 72)
    } else {
        let hl = b.be32(100)?;
        if hl < 104 {
            return invalid(format!("qcow2 header too short ({hl} bytes)"));
        }
        (b.be64(72)?, b.be64(80)?, b.be64(88)?, b.be32(96)?, hl)
    };
    if u64::from(header_length) > cluster_size {
        return invalid("qcow2 header exceeds cluster size");
    }
    if refcount_order > 6 {
        return invalid(format!(
            "refcount width 2^{refcount_order} bits is not allowed (at most 64)"
        ));
    }
    let compression_type = if header_length > 104 {
        b.slice(104, 1)?[0]
    } else {
        0
    };
    if compression_type > 1 {
        return invalid(format!("unknown compression type {compression_type}"));
    }
    if (compression_type != 0) != (incompatible & INCOMPAT_COMPRESSION != 0) {
        return invalid("compression type field and its incompatible feature bit disagree");
    }
    if incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
        return invalid("extended L2 entries need clusters of at least 16 KiB");
    }
    Ok(Qcow2Header {
        version,
        cluster_bits,
        virtual_size,
        crypt_method,
        backing_file: None,
        backing_format: None,
        incompatible,
        compatible,
        autoclear,
        compression_type,
        refcount_order,
        header_length,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
        bitmaps_ext: None,
        has_fde_ext: false,
        data_file: None,
        feature_names: Vec::new(),
    })
}

/// The L1 and refcount tables lie inside the file and are as large as the disk needs; the
/// snapshot count and extended L2 entries are within QEMU's limits.
fn check_tables(h: &Qcow2Header, file_len: u64) -> Result<(), ProbeError> {
    let Qcow2Header {
        nb_snapshots,
        l1_size,
        l1_table_offset,
        incompatible,
        virtual_size,
        refcount_table_offset,
        refcount_table_clusters,
        ..
    } = *h;
    let cluster_size = h.cluster_size();
    if nb_snapshots > QCOW_MAX_SNAPSHOTS {
        return invalid(format!("too many snapshots ({nb_snapshots})"));
    }
    check_table(
        "L1 table",
        l1_table_offset,
        u64::from(l1_size) * 8,
        cluster_size,
        file_len,
    )?;
    if u64::from(l1_size) * 8 > QCOW_MAX_L1_BYTES {
        return invalid("active L1 table too large");
    }
    let l2_entry = if incompatible & INCOMPAT_EXTL2 != 0 {
        16
    } else {
        8
    };
    // Bytes of guest data one L1 entry covers: (cluster_size / l2_entry) clusters.
    let per_l1 = u128::from(cluster_size / l2_entry) * u128::from(cluster_size);
    let l1_needed = u128::from(virtual_size).div_ceil(per_l1);
    if u128::from(l1_size) < l1_needed {
        return invalid(format!(
            "L1 table is too small: {l1_size} entries for a {virtual_size}-byte disk"
        ));
    }
    check_table(
        "refcount table",
        refcount_table_offset,
        u64::from(refcount_table_clusters) * cluster_size,
        cluster_size,
        file_len,
    )?;
    if refcount_table_clusters == 0 {
        return invalid("refcount table is empty");
    }
    Ok(())
}

/// The backing file name at `offset` (`size` bytes) inside the first cluster, if any.
fn backing_name(
    b: &Bytes<'_>,
    backing_file_offset: u64,
    backing_file_size: u32,
    cluster_size: u64,
) -> Result<Option<Vec<u8>>, ProbeError> {
    Ok(if backing_file_offset != 0 {
        if backing_file_offset > cluster_size {
            return invalid("invalid backing file offset (beyond the first cluster)");
        }
        if backing_file_size > BACKING_NAME_MAX {
            return invalid(format!(
                "backing file name too long ({backing_file_size} bytes; at most {BACKING_NAME_MAX})"
            ));
        }
        Some(
            b.slice(backing_file_offset, u64::from(backing_file_size))?
                .to_vec(),
        )
    } else {
        None
    })
}

/// Mirrors QEMU's `validate_table_offset`: aligned, no overflow, and inside the file.
fn check_table(
    what: &str,
    offset: u64,
    len: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<(), ProbeError> {
    if len == 0 {
        return Ok(());
    }
    if !offset.is_multiple_of(cluster_size) {
        return invalid(format!("{what} offset {offset:#x} is not cluster aligned"));
    }
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => {
            if end > file_len {
                return invalid(format!(
                    "truncated: the {what} ends at byte {end} but the file has {file_len}"
                ));
            }
            Ok(())
        }
        _ => invalid(format!("{what} offset {offset:#x} is out of range")),
    }
}

fn read_extensions(
    b: &Bytes<'_>,
    mut off: u64,
    end: u64,
    h: &mut Qcow2Header,
) -> Result<(), ProbeError> {
    while off < end {
        if end - off < 8 {
            // QEMU reads a full extension header here and fails if it cannot.
            return invalid("header extension area ends inside an extension header");
        }
        let ty = b.be32(off)?;
        let len = b.be32(off + 4)?;
        off += 8;
        if u64::from(len) > end - off {
            return invalid(format!(
                "header extension {ty:#010x} is too large ({len} bytes)"
            ));
        }
        match ty {
            EXT_END => return Ok(()),
            EXT_BACKING_FORMAT => {
                if len > BACKING_FORMAT_MAX {
                    return invalid(format!("backing format name too long ({len} bytes)"));
                }
                let s = b.slice(off, u64::from(len))?;
                h.backing_format = Some(String::from_utf8_lossy(s).into_owned());
            }
            EXT_FEATURE_TABLE => {
                let s = b.slice(off, u64::from(len))?;
                h.feature_names = s
                    .chunks_exact(48)
                    .map(|e| {
                        let name = &e[2..];
                        let n = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                        (e[0], e[1], String::from_utf8_lossy(&name[..n]).into_owned())
                    })
                    .collect();
            }
            EXT_BITMAPS if len >= 24 => {
                h.bitmaps_ext = Some(BitmapsExt {
                    count: b.be32(off)?,
                    directory_size: b.be64(off + 8)?,
                    directory_offset: b.be64(off + 16)?,
                });
            }
            EXT_BITMAPS => return invalid("the bitmaps header extension is too short"),
            EXT_FDE => h.has_fde_ext = true,
            EXT_DATA_FILE => h.data_file = Some(b.slice(off, u64::from(len))?.to_vec()),
            _ => {}
        }
        off += u64::from(len).next_multiple_of(8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header: 64 KiB clusters, 1 MiB disk, tables in clusters 1-3.
    fn v3(size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 0x40000];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    fn put_ext(h: &mut [u8], off: usize, ty: u32, data: &[u8]) -> usize {
        h[off..off + 4].copy_from_slice(&ty.to_be_bytes());
        h[off + 4..off + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
        h[off + 8..off + 8 + data.len()].copy_from_slice(data);
        off + 8 + data.len().next_multiple_of(8)
    }

    fn set_backing(h: &mut [u8], off: u64, name: &[u8]) {
        h[8..16].copy_from_slice(&off.to_be_bytes());
        h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        h[off as usize..off as usize + name.len()].copy_from_slice(name);
    }

    #[test]
    fn v3_with_backing_and_format() {
        let mut h = v3(1 << 20);
        put_ext(&mut h, 112, EXT_BACKING_FORMAT, b"qcow2");
        set_backing(&mut h, 0x200, b"base.qcow2");
        let p = probe(&h, h.len() as u64).unwrap();
        assert_eq!(p.format, Format::Qcow2);
        assert_eq!(p.virtual_size, Some(1 << 20));
        assert_eq!(p.cluster_size, Some(65536));
        let q = p.qcow2.unwrap();
        assert_eq!(q.backing_file.as_deref(), Some(&b"base.qcow2"[..]));
        assert_eq!(q.backing_format.as_deref(), Some("qcow2"));
    }

    #[test]
    fn v2_reads_extensions_too() {
        let mut h = v3(1 << 20);
        h[4..8].copy_from_slice(&2u32.to_be_bytes());
        put_ext(&mut h, 72, EXT_BACKING_FORMAT, b"raw");
        set_backing(&mut h, 0x60, b"base.raw");
        let q = probe(&h, h.len() as u64).unwrap().qcow2.unwrap();
        assert_eq!(q.version, 2);
        assert_eq!(q.backing_format.as_deref(), Some("raw"));
        assert_eq!(q.refcount_order, 4);
    }

    #[test]
    fn feature_bits_and_names() {
        let mut h = v3(1 << 20);
        h[72..80].copy_from_slice(&(INCOMPAT_DIRTY | INCOMPAT_EXTL2).to_be_bytes());
        h[88..96].copy_from_slice(&AUTOCLEAR_BITMAPS.to_be_bytes());
        let mut entry = [0u8; 48];
        entry[1] = 4;
        entry[2..13].copy_from_slice(b"extended L2");
        let next = put_ext(&mut h, 112, EXT_FEATURE_TABLE, &entry);
        put_ext(&mut h, next, EXT_BITMAPS, &[0; 24]);
        let q = probe(&h, h.len() as u64).unwrap().qcow2.unwrap();
        assert!(q.dirty() && q.extended_l2() && q.bitmaps() && q.bitmaps_ext.is_some());
        assert!(!q.corrupt() && !q.external_data_file());
        assert_eq!(q.feature_name(0, 4), Some("extended L2"));
        assert_eq!(q.unknown_incompatible(), 0);
    }

    #[test]
    fn short_prefix_asks_for_more() {
        let mut h = v3(1 << 20);
        set_backing(&mut h, 0x8000, b"far.qcow2");
        // The extension area runs up to the backing name; an all-zero area is an end marker.
        assert_eq!(
            probe(&h[..0x1000], h.len() as u64).map(|_| ()),
            Err(ProbeError::Short { need: 0x8009 })
        );
        assert!(probe(&h[..0x8009], h.len() as u64).is_ok());
    }

    #[test]
    fn rejects_what_qemu_rejects() {
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|h| h[23] = 8), "cluster size"),
            (Box::new(|h| h[23] = 22), "cluster size"),
            (Box::new(|h| h[7] = 4), "version"),
            (Box::new(|h| h[103] = 100), "too short"),
            (Box::new(|h| h[99] = 7), "refcount width"),
            (Box::new(|h| h[46] = 1), "not cluster aligned"),
            (Box::new(|h| h[39] = 0), "too small"),
            (Box::new(|h| h[35] = 3), "encryption"),
            (Box::new(|h| h[58] = 0x40), "refcount table"),
            (
                Box::new(|h| set_backing(h, 0x200, &[b'a'; 1024])),
                "too long",
            ),
            (
                Box::new(|h| h[8..16].copy_from_slice(&0x20000u64.to_be_bytes())),
                "backing file offset",
            ),
            (
                Box::new(|h| {
                    put_ext(h, 112, EXT_BACKING_FORMAT, b"a-format-name-too-long");
                }),
                "format name too long",
            ),
            (
                Box::new(|h| {
                    h[112..116].copy_from_slice(&7u32.to_be_bytes());
                    h[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
                }),
                "too large",
            ),
            (Box::new(|h| h[104] = 1), "disagree"),
        ];
        for (mutate, want) in cases {
            let mut h = v3(1 << 20);
            mutate(&mut h);
            match probe(&h, h.len() as u64) {
                Err(ProbeError::Invalid(msg)) => assert!(msg.contains(want), "{msg} vs {want}"),
                other => panic!("expected an error containing {want:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_tables_are_reported() {
        let h = v3(1 << 20);
        match probe(&h[..0x20000], 0x20000) {
            Err(ProbeError::Invalid(msg)) => assert!(msg.contains("truncated"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_formats_by_magic() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        vdi[368..376].copy_from_slice(&(8u64 << 20).to_le_bytes());
        let p = probe(&vdi, 512).unwrap();
        assert_eq!((p.format, p.virtual_size), (Format::Vdi, Some(8 << 20)));

        let mut vmdk = vec![0u8; 512];
        vmdk[..4].copy_from_slice(VMDK_SPARSE_MAGIC);
        vmdk[12..20].copy_from_slice(&2048u64.to_le_bytes());
        let p = probe(&vmdk, 512).unwrap();
        assert_eq!((p.format, p.virtual_size), (Format::Vmdk, Some(1 << 20)));

        for (magic, fmt) in [
            (&b"vhdxfile"[..], Format::Vhdx),
            (b"conectix", Format::Vpc),
            (b"LUKS\xba\xbe", Format::Luks),
            (b"QED\0", Format::Qed),
            (b"# Disk DescriptorFile\n", Format::Vmdk),
        ] {
            let mut b = vec![0u8; 512];
            b[..magic.len()].copy_from_slice(magic);
            assert_eq!(probe(&b, 512).unwrap().format, fmt);
        }
        let p = probe(b"hello", 5).unwrap();
        assert_eq!((p.format, p.virtual_size), (Format::Raw, Some(5)));
        assert_eq!(probe(b"", 0).unwrap().format, Format::Raw);
    }
}
