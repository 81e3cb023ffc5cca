//! How data moves from one image into another (ARCHITECTURE.md §3, §4), in three tiers chosen
//! per range: the kernel shares the blocks (a reflink, on XFS and btrfs), or copies them
//! itself (`copy_file_range`, when configured), or imgchain reads them and writes them through
//! imago, with several reads in flight. Each
//! range is mapped in the target first without being visible, filled, and only then made
//! visible, so the storage layer syncs the data before the table that maps it, whichever
//! tier moved it.

mod error;
mod pipeline;
mod tier;

pub use error::CopyError;
pub use pipeline::{Done, Transfer, copy};
pub use tier::{Tally, kernel_move, tiers, zero};
