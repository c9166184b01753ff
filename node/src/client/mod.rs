//! The routing client: how a request finds the partition that holds its key.
//!
//! One client serves three callers: `faultline kv`, the harness's workload clients and
//! benchmark, and a coordinating node forwarding a request it cannot serve itself. So
//! there is one place that decides how a stale route is corrected and which failures
//! may be retried.
//!
//! - [`cache`]: the map cache and its corrections, sans-IO.
//! - [`wire`]: routed requests, typed refusals and what a failure means for a write.
//! - [`scan`]: a scan across partitions, assembled from one read per partition.
//! - [`router`]: [`RoutingClient`], the IO around them.
//! - [`watch`]: where a watch has got to, per partition, so that it can resume.
//!
//! The rules, as TiKV's and CockroachDB's clients keep them:
//! - a request is sent to the leader the cache names, routed at the descriptor's epoch;
//! - a refusal (`NotLeader`, `EpochNotMatch`, `KeyNotInRange`, `PartitionNotHere`) is
//!   proof the request was not applied: the cache takes the correction it carries (or
//!   the map is fetched again) and the request is sent again, a bounded number of times;
//! - a connection that was never made is tried on the next replica;
//! - anything else is returned to the caller as it is: a write whose outcome is unknown
//!   is never sent again by the client (the caller may, with the same write id, which
//!   the store applies once);
//! - with no map known, a request waits for one until its deadline, then fails
//!   `UNAVAILABLE` naming what it asked.

pub mod cache;
pub mod router;
pub mod scan;
pub mod watch;
pub mod wire;

pub use cache::MapCache;
pub use router::{Routing, RoutingClient, Target};
pub use wire::{Correction, Effect, effect};
