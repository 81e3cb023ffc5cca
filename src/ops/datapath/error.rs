//! Why a copy stopped early.

use std::io;
use std::path::PathBuf;

use crate::text::Names;

/// Why the copy stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cancelled")]
    Cancelled,
    #[error("{op} {} at offset {offset}: {source}", path.shown())]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
}
