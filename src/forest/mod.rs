//! The forest of backing chains: scanning, the node arena, the state model and diagnostics.

pub mod diag;
pub mod domains;
pub mod model;
pub mod protect;
pub mod query;
pub mod scan;
pub mod snapmeta;
pub mod state;

pub use model::{Backing, Forest, Node, NodeId, Row};
pub use protect::Protect;
pub use scan::{Scan, ScanCounts, ScanError, ScanOptions, ScanProgress, scan};
pub use state::{KeepRoReason, Mode};
