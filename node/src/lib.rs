//! Faultline's key-value node.
//!
//! - `replication/`: chapter 1, the sans-IO Raft core (no IO, no clock, no global RNG).
//! - `storage/`: the write-ahead log and snapshot files.
//! - `store/`: the key-value state machine the log drives.
//! - `server/`: the async shell: drives the core, serves gRPC, talks to peers.

pub mod replication;
pub mod server;
pub mod storage;
pub mod store;

pub mod proto {
    pub mod kv {
        tonic::include_proto!("faultline.kv.v1");
    }
    pub mod raft {
        tonic::include_proto!("faultline.raft.v1");
    }
    pub mod admin {
        tonic::include_proto!("faultline.admin.v1");
    }
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("faultline_descriptor");
}
