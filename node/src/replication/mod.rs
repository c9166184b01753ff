//! Chapter 1, data replication: a sans-IO Raft core and its log (its Lamport clock lives
//! in `crate::time`, with the other clocks).
//! See README.md in this folder for the patterns and where each lives.

pub mod config;
/// The Lamport clock moved to `crate::time`; this path stays for callers of round 1.
pub use crate::time::lamport;
pub mod log;
pub mod membership;
pub mod memory_disk;
pub mod raft;

#[cfg(test)]
mod tests;

pub use config::{RaftConfig, SeededBugs};
pub use membership::{ConfChange, Membership};
pub use memory_disk::MemoryDisk;
pub use raft::{
    ConfChangeError, NotLeader, PersistedState, RaftCore, ReadState, Ready, Role, Snapshot,
    relabel_meta,
};
