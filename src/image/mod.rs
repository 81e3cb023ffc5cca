//! Image files: header probing and creation.

pub mod create;
pub mod probe;
