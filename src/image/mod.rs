//! Image files: header probing.

pub mod probe;
