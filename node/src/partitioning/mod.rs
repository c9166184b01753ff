//! Chapter 2, partitioning: which partition holds a key, where partitions live, and how
//! stale routing is detected and corrected. Sans-IO: plain data and pure functions, used
//! by the node's shell, the routing client and the models alike. See README.md here.
//!
//! - [`descriptor`]: a partition's descriptor (id, key span, epoch, replicas, leader).
//! - [`epoch`]: the table of which command checks and bumps which part of the epoch.
//! - [`hashing`]: the stable key hash, buckets, and consistent placement (rendezvous,
//!   jump, a ring of virtual nodes).
//! - [`layout`]: the bootstrap layout from the node's flags (`--partitions`,
//!   `--partitioning`, `--split-at`), computed alike on every node.
//! - [`map`]: the partition map: lookup by key, ranges covering a scan, leader reports
//!   with stale-epoch rejection, and the tiling invariant.
//! - [`route`]: the replica-side check that returns `NotLeader`, `EpochNotMatch` or
//!   `KeyNotInRange`.
//! - [`core_store`]: the consistent core's state machine (group 0): the map, changed by
//!   leaders' reports through the log.
//! - [`range`]: a data partition's state machine: its own descriptor and its keys; a
//!   split is an entry of the range's log.
//! - [`load`]: a range's load statistics and the split finder that picks a key dividing
//!   its load (groundwork for load-based splitting; not wired in yet).
//! - [`convert`]: descriptors to and from their wire form.
//! - [`txn`]: two-phase commit across partitions: the participant and coordinator cores.

pub mod convert;
pub mod core_store;
pub mod descriptor;
pub mod epoch;
pub mod hashing;
pub mod layout;
pub mod load;
pub mod map;
pub mod placement;
pub mod range;
pub mod route;
pub mod txn;

pub use descriptor::{CORE_GROUP, KeySpan, NodeId, PartitionId, RangeDescriptor, RangeEpoch};
pub use epoch::EpochCommand;
pub use layout::{LayoutSpec, Scheme};
pub use map::{Load, NodeRecord, NodeState, PartitionMap, ReportError};
pub use range::{Applied, DataRange, RangeBugs};
pub use route::{RouteError, check_request};
