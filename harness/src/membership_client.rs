//! The membership workload's observer: one read of a node's gossip view, recorded as
//! `[observer, [[member, state, incarnation], ...]]` (the history holds integers, strings
//! and lists only).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use faultline_node::proto::membership::membership_client::MembershipClient;
use faultline_node::proto::membership::{MemberState, MembersRequest};
use serde_json::{Value, json};

/// A poll that takes longer than this is a refusal (the node is paused or cut off):
/// the observer tries again after its interval.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

pub fn state_name(state: i32) -> &'static str {
    match MemberState::try_from(state).unwrap_or(MemberState::Unspecified) {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
        MemberState::Unspecified => "unknown",
    }
}

pub async fn members(addr: SocketAddr, source: Option<IpAddr>) -> Result<Value, String> {
    let channel =
        faultline_node::server::transport::node_endpoint(addr, source, POLL_TIMEOUT).connect_lazy();
    let mut request = tonic::Request::new(MembersRequest {});
    request.set_timeout(POLL_TIMEOUT);
    let reply = MembershipClient::new(channel)
        .members(request)
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let members: Vec<Value> = reply
        .members
        .iter()
        .map(|m| json!([m.id, state_name(m.state), m.incarnation]))
        .collect();
    Ok(json!([reply.node_id, members]))
}
