//! Faultline's key-value node.
//!
//! - `replication/`: chapter 1, the sans-IO Raft core (no IO, no clock, no global RNG).
//! - `partitioning/`: chapter 2, sans-IO: descriptors and epochs, partitioners,
//!   consistent placement, the partition map and the routing check.
//! - `time/`: chapter 3, sans-IO: Lamport, vector and hybrid logical clocks, dotted
//!   version vectors, and the clock-offset guard.
//! - `storage/`: the write-ahead log and snapshot files.
//! - `store/`: the key-value state machine the log drives.
//! - `server/`: the async shell: drives the core, serves gRPC, talks to peers.
//! - `cluster/`: chapter 4, sans-IO: leases and fencing.
//! - `client/`: the routing client (map cache, corrections, retries) that `faultline kv`,
//!   the harness and node-to-node forwarding share.

pub mod client;
pub mod cluster;
pub mod partitioning;
pub mod replication;
pub mod server;
pub mod storage;
pub mod store;
pub mod time;

pub mod proto {
    //! The generated gRPC and message types, nested as their packages are (so that one
    //! package's messages can name another's), with short aliases.
    pub mod faultline {
        pub mod kv {
            pub mod v1 {
                tonic::include_proto!("faultline.kv.v1");
            }
        }
        pub mod raft {
            pub mod v1 {
                tonic::include_proto!("faultline.raft.v1");
            }
        }
        pub mod causal {
            pub mod v1 {
                tonic::include_proto!("faultline.causal.v1");
            }
        }
        pub mod admin {
            pub mod v1 {
                tonic::include_proto!("faultline.admin.v1");
            }
        }
        pub mod membership {
            pub mod v1 {
                tonic::include_proto!("faultline.membership.v1");
            }
        }
    }
    pub use faultline::admin::v1 as admin;
    pub use faultline::causal::v1 as causal;
    pub use faultline::kv::v1 as kv;
    pub use faultline::membership::v1 as membership;
    pub use faultline::raft::v1 as raft;
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("faultline_descriptor");
}
