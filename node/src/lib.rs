//! Faultline's key-value node.

pub mod proto {
    pub mod kv {
        tonic::include_proto!("faultline.kv.v1");
    }
    pub mod raft {
        tonic::include_proto!("faultline.raft.v1");
    }
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("faultline_descriptor");
}
