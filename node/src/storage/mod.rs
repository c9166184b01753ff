//! Durable storage: the segmented write-ahead log and atomically written snapshot files.

pub mod snapshot_file;
pub mod wal;
