//! What a trash entry records about the files moved into it (ARCHITECTURE.md §3, "Trash"):
//! written by imgchain before the first file moves, read back as untrusted input.

use serde::{Deserialize, Serialize};

use crate::image::file::FileId;

/// The record's format; a record of another version is listed and left alone.
pub const VERSION: u32 = 1;

/// One entry: the files one operation moved out of one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    /// The operation that removed them (`delete`, `merge`).
    pub operation: String,
    /// When, in seconds since the epoch.
    pub when: u64,
    /// Why, in words: the image the operation was asked about.
    pub why: String,
    /// The run's id, shared by the entries it made in other directories.
    pub group: String,
    pub files: Vec<Trashed>,
    /// In an undo record: the image this entry's clone holds as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoPart>,
}

/// One image of an operation's undo record: a clone of the image made before the operation
/// wrote, and the image as the operation left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndoPart {
    /// Every image the operation changes or removes, in the order an undo puts them back.
    pub images: Vec<String>,
    /// This entry's image: its place in `images`.
    pub index: usize,
    /// The image's identity before the operation (the clone's source).
    pub before: FileId,
    /// The clone's name in the entry, and its identity.
    pub clone: String,
    pub clone_ident: FileId,
    /// The operation ended (however it ended); `after` is then what it left.
    pub finished: bool,
    /// The image as the operation left it (`None` with `finished`: removed).
    pub after: Option<FileState>,
}

/// A file's identity, size and last modification: what tells that it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub ident: FileId,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileState {
    /// The file at `path` as it is now, without following a last symlink (`None`: none).
    pub fn now(path: &std::path::Path) -> Option<FileState> {
        std::fs::symlink_metadata(path)
            .ok()
            .map(|md| FileState::of(&md))
    }

    /// The file `md` describes.
    fn of(md: &std::fs::Metadata) -> FileState {
        use std::os::unix::fs::MetadataExt;
        FileState {
            ident: FileId::of(md),
            size: md.len(),
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
        }
    }
}

/// A file moved into the entry, under the name it had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trashed {
    /// Its name, for people (the name in the entry's directory is the one restored).
    pub name: String,
    pub ident: FileId,
    /// Bytes it takes on disk.
    pub bytes: u64,
    /// The file it read through, as it was when it was removed.
    pub backing: Option<Backing>,
    /// For an external data file: the name of the image whose data it holds.
    pub data_file_of: Option<String>,
}

/// A backing file as it was: restoring an overlay over anything else would not read as before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backing {
    /// The file's path, resolved as QEMU resolves the header's name.
    pub path: String,
    pub ident: FileId,
    pub size: u64,
    /// Its last modification, in nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Backing {
    /// The file at `path` as it is now (`None`: it cannot be seen).
    pub fn now(path: &std::path::Path) -> Option<Backing> {
        let s = FileState::of(&std::fs::metadata(path).ok()?);
        Some(Backing {
            path: crate::text::lossy(path),
            ident: s.ident,
            size: s.size,
            mtime_ns: s.mtime_ns,
        })
    }
}

impl Record {
    /// Parses a record's text; `Err`: why it cannot be read.
    pub fn parse(text: &str) -> Result<Record, String> {
        let r: Record = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if r.version != VERSION {
            return Err(format!("a record of version {}, not {VERSION}", r.version));
        }
        Ok(r)
    }

    /// The record as written.
    pub fn text(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        Record {
            version: VERSION,
            operation: "delete".into(),
            when: 1_765_000_000,
            why: "delete top.qcow2".into(),
            group: "1765000000-42".into(),
            files: vec![Trashed {
                name: "top.qcow2".into(),
                ident: FileId { dev: 2049, ino: 12 },
                bytes: 4 << 20,
                backing: Some(Backing {
                    path: "/v/base.qcow2".into(),
                    ident: FileId { dev: 2049, ino: 11 },
                    size: 196_928,
                    mtime_ns: 1_765_000_000_123_456_789,
                }),
                data_file_of: None,
            }],
            undo: None,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = sample();
        assert_eq!(Record::parse(&r.text()), Ok(r));
    }

    #[test]
    fn an_undo_record_reads_back_as_written() {
        let mut r = sample();
        r.files.clear();
        r.undo = Some(UndoPart {
            images: vec!["/v/top.qcow2".into(), "/v/base.qcow2".into()],
            index: 1,
            before: FileId { dev: 2049, ino: 11 },
            clone: "base.qcow2".into(),
            clone_ident: FileId { dev: 2049, ino: 99 },
            finished: true,
            after: None,
        });
        assert_eq!(Record::parse(&r.text()), Ok(r));
    }

    #[test]
    fn another_version_or_an_unknown_field_is_not_read() {
        let text = sample().text().replace("version = 1", "version = 2");
        assert!(Record::parse(&text).is_err());
        let text = format!("extra = 1\n{}", sample().text());
        assert!(Record::parse(&text).is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in ".{0,400}") {
            let _ = Record::parse(&s);
        }

        #[test]
        fn any_names_read_back(name in "\\PC{0,40}", why in "\\PC{0,80}") {
            let mut r = sample();
            r.files[0].name = name;
            r.why = why;
            prop_assert_eq!(Record::parse(&r.text()), Ok(r));
        }
    }
}
