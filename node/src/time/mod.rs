//! Chapter 3, time: the clocks a distributed system orders events with. Sans-IO: physical
//! time, where a clock needs it, is an argument (the node passes its injectable clock).
//!
//! - `lamport`: Lamport clocks (stamped on every Raft message).
//! - `vector`: vector clocks, a partial order that tells concurrent events apart.
//! - `dvv`: dotted version vectors with siblings, so concurrent writes are kept.
//! - `hlc`: the hybrid logical clock with the maximum-offset guard, and the offset monitor
//!   that fences a node whose clock is off from most of its peers.
//! - `causal`: the leaderless causal replication core (the causal keyspace): causal
//!   delivery on version vectors, siblings or LWW on the HLC, anti-entropy, read repair.
//!
//! The generation clock is Raft's term (`replication::raft`): a number that only grows,
//! persisted before it is used, stamped on every message, so that whatever an older
//! generation (a deposed leader) says is recognised and refused. Every fencing token in
//! the node (terms, range epochs, the partition map's version) is one.
//!
//! See README.md in this folder for each clock working and breaking.

pub mod causal;
pub mod dvv;
pub mod hlc;
pub mod lamport;
pub mod vector;

pub use dvv::{Dot, Siblings};
pub use hlc::{ClockError, ClockHealth, HybridClock, OffsetMonitor, Timestamp};
pub use lamport::LamportClock;
pub use vector::VectorClock;
