//! Chapter 4, cluster management, sans-IO: leases (the replicated table and the leader's
//! timers), the lock service's fencing, and watches. See README.md.

pub mod lease;
pub mod watch;
