//! Model checking of Faultline's protocols with stateright, on the node's own code.
//!
//! - [`raft`]: server actors wrapping the node's `faultline_node::replication::RaftCore`,
//!   register clients, the properties of the Raft paper, and [`raft::check`], which runs a
//!   checker and returns a [`raft::ModelReport`]. `faultline model raft` is its command.
//!
//! - [`causal`]: the node's `faultline_node::time::causal::CausalReplica` as three
//!   replicas with sessions moving between them and lossy anti-entropy; checks the
//!   sessions' history with the causal checker, convergence and that no sibling is lost.
//!   `faultline model causal` is its command.
//!
//! - [`twopc`]: the node's two-phase commit cores (`faultline_node::partitioning::txn`):
//!   coordinators and partitions over a lossy network with crashes and recovery; checks
//!   atomicity, no commit without every prepare, serializability and that every transaction
//!   is decided once faults stop. `faultline model 2pc` is its command.
//!
//! - [`lease`]: the node's lease core (`faultline_node::cluster::lease`): the replicated
//!   table and each replica's timers, with explicit time and drifting clocks, clients
//!   holding a lock with a lease, and leadership moving; checks that at most one client
//!   believes it holds the lock. `faultline model lease` is its command.
//!
//! - [`membership`]: the node's SWIM gossip core (`faultline_node::cluster::swim`): a few
//!   members' cores, their timers in discrete time, a network that reorders and may lose
//!   packets, one pause and one kill; checks that no live member is declared dead unless a
//!   packet was lost. `faultline model membership` is its command.
//!
//! README.md in this folder says what is modelled, what is abstracted away, the bounds and
//! how to read and replay a counterexample.

pub mod bfs;
pub mod causal;
pub mod lease;
pub mod membership;
pub mod raft;
pub mod twopc;
