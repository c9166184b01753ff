//! Faultline's harness: local clusters of real `faultline-node` processes, and (to
//! come) nemeses, workloads and history recording.
//!
//! - `cluster`: start, stop, kill and restart node processes; find the leader.
//! - `client`: the system under test behind a small trait, and Faultline's client;
//!   `causal_client`: a session of the causal keyspace.
//! - `history`: the JSON Lines history of a run.
//! - `net`: private network namespace, iptables, partition shapes.
//! - `nemesis`: carries out a seeded fault schedule and records it; `restart_voter`: the
//!   fault that puts two same-term candidates before one restarted voter; `diverge_leader`:
//!   the fault that leaves a deposed leader holding entries that conflict with committed
//!   ones; `choreography`: what such faults share (waits on observed state, preconditions).
//! - `workload`: workloads as plug-ins (each kind's checker and model);
//! - `run`: `faultline run` from start to verdict; `verdict`: the checkers and their guards;
//!   `replicas`: whether the nodes' states agree after the run; `leaders`: whether any
//!   term had two leaders.

pub mod causal_client;
pub mod causal_store;
pub mod choreography;
pub mod client;
pub mod cluster;
pub mod config_race;
pub mod diverge_leader;
pub mod history;
pub mod leaders;
pub mod learner_partition;
pub mod membership_client;
pub mod nemesis;
pub mod net;
pub mod replicas;
pub mod restart_voter;
pub mod run;
pub mod verdict;
pub mod watch_client;
pub mod workload;
