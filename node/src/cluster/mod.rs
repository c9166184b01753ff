//! Chapter 4, cluster management, sans-IO: leases (the replicated table and the leader's
//! timers), the lock service's fencing, watches, gossip membership (SWIM with Lifeguard)
//! and the phi-accrual failure detector. See README.md.

pub mod lease;
pub mod phi;
pub mod swim;
pub mod swim_sim;
pub mod watch;
