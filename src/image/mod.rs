//! Image files: header probing, creation, and open handles.

pub mod bitmaps;
pub mod create;
pub mod file;
pub mod handle;
pub mod header;
pub mod lock;
pub mod map;
pub mod newfile;
pub mod ordered;
pub mod probe;
pub mod snapshots;
