//! imgchain: see every image under some paths as a forest of qcow2 backing chains, with each
//! node's RW / RO / keep-RO state, and commit overlays into their backing files safely.
//!
//! Engine modules (`image`, `forest`, `ops`) never touch the terminal;
//! `words` tells images and plans in the words the CLI and the UI share, `tui` is the
//! interactive UI; the CLI's printer is the binary's own.

pub mod actions;
pub mod config;
pub mod demo;
pub mod exit;
pub mod fit;
pub mod forest;
pub mod image;
pub mod ops;
pub mod text;
pub mod trash;
pub mod tui;
pub mod units;
pub mod words;
