//! Chapter 4, cluster management, sans-IO: leases (the replicated table and the leader's
//! timers) and the lock service's fencing. See README.md.

pub mod lease;
