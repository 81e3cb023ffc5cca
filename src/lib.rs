//! imgchain: see every image under some paths as a forest of qcow2 backing chains, with each
//! node's RW / RO / keep-RO state, and commit overlays into their backing files safely.
//!
//! Engine modules (`image`, `forest`, `ops`) never touch the terminal;
//! `output` renders what the CLI prints, `tui` is the interactive UI.

pub mod actions;
pub mod config;
pub mod demo;
pub mod exit;
pub mod forest;
pub mod image;
pub mod ops;
pub mod output;
pub mod text;
pub mod tui;
pub mod units;
