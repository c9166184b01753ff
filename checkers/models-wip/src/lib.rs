//! Model checking of Faultline's Raft core with stateright, on the node's own code.
//!
//! - `raft`: the model (server actors wrapping `faultline_node::replication::RaftCore`,
//!   register clients), its properties, and [`raft::check`], which runs a checker and
//!   returns a [`raft::ModelReport`].
//!
//! See README.md for what is modelled, what is abstracted, and the bounds.

pub mod raft;

pub use raft::{Bug, CheckerKind, ModelOptions, ModelReport, NetworkKind, check, replay};
