//! Faultline's harness: local clusters of real `faultline-node` processes, and (to
//! come) nemeses, workloads and history recording.
//!
//! - `cluster`: start, stop, kill and restart node processes; find the leader.

pub mod cluster;
