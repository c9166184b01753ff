//! Chapter 1, data replication: a sans-IO Raft core, its log, and a Lamport clock.
//! See README.md in this folder for the patterns and where each lives.

pub mod config;
pub mod lamport;
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
