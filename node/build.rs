//! Compiles node/proto with protox (pure Rust, so a fresh machine needs no `protoc`)
//! and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/faultline/kv/v1/kv.proto",
        "proto/faultline/raft/v1/raft.proto",
        "proto/faultline/admin/v1/admin.proto",
        "proto/faultline/causal/v1/causal.proto",
        "proto/faultline/membership/v1/membership.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("faultline_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // The model checker hashes whole cluster states, messages included. prost derives
    // Eq and Hash itself on most messages, but not on these (a oneof, repeated messages).
    tonic_prost_build::configure()
        .message_attribute(".faultline.raft.v1.Message", "#[derive(Eq, Hash)]")
        .enum_attribute(".faultline.raft.v1.Message.body", "#[derive(Eq, Hash)]")
        .message_attribute(".faultline.raft.v1.AppendEntries", "#[derive(Eq, Hash)]")
        .message_attribute(".faultline.membership.v1.Packet", "#[derive(Eq, Hash)]")
        .enum_attribute(
            ".faultline.membership.v1.Packet.body",
            "#[derive(Eq, Hash)]",
        )
        .message_attribute(".faultline.membership.v1.Update", "#[derive(Eq, Hash)]")
        .message_attribute(".faultline.membership.v1.MemberMeta", "#[derive(Eq, Hash)]")
        .message_attribute(".faultline.membership.v1.PushPull", "#[derive(Eq, Hash)]")
        .compile_fds(descriptors)?;
    Ok(())
}
