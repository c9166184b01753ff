//! Helpers shared by the faults that set up a condition step by step (`restart_voter`,
//! `diverge_leader`): poll a node's status until it shows what the next step needs, and
//! send single writes to a chosen node.
//!
//! Such a fault waits on observed state, not on time, so that it reaches the condition
//! its bug needs on every run whatever the machine's speed; when a wait runs out, the fault
//! says the condition was not reached instead of carrying on as if it had been.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{PutRequest, StatusResponse};
use faultline_node::server::transport::node_endpoint;
use serde::Serialize;

use crate::cluster;
use crate::nemesis::Nemesis;

/// How often a wait polls.
pub const POLL: Duration = Duration::from_millis(2);

/// Whether a fault reached the condition it exists to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Precondition {
    pub reached: bool,
    /// What was reached, or the step that was not.
    pub detail: String,
}

impl Precondition {
    pub fn reached(detail: impl Into<String>) -> Self {
        Precondition {
            reached: true,
            detail: detail.into(),
        }
    }

    pub fn missed(detail: impl Into<String>) -> Self {
        Precondition {
            reached: false,
            detail: detail.into(),
        }
    }
}

/// A Kv client of one node for a fault's steps: connected on first use, each call bounded
/// by `timeout`.
pub fn kv_client(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> faultline_node::proto::kv::kv_client::KvClient<tonic::transport::Channel> {
    faultline_node::proto::kv::kv_client::KvClient::new(
        faultline_node::server::transport::node_endpoint(
            addr,
            None,
            std::time::Duration::from_millis(500),
        )
        .timeout(timeout)
        .connect_lazy(),
    )
}

/// The running nodes, if the cluster has between `min` and `max` nodes and all of them
/// run; otherwise an error naming what `fault` needs.
pub async fn running_nodes(
    nemesis: &Nemesis,
    fault: &str,
    min: usize,
    max: usize,
) -> anyhow::Result<Vec<(u64, SocketAddr)>> {
    let cluster = nemesis.cluster.lock().await;
    let ids = cluster.ids();
    let wanted = if min == max {
        format!("exactly {min}")
    } else {
        format!("{min} to {max}")
    };
    anyhow::ensure!(
        (min..=max).contains(&ids.len()),
        "{fault} needs {wanted} nodes (the cluster has {})",
        ids.len()
    );
    if let Some(id) = ids.iter().find(|&&id| !cluster.is_running(id)) {
        anyhow::bail!("node {id} is down; {fault} needs every node running");
    }
    Ok(ids.into_iter().map(|id| (id, cluster.addr(id))).collect())
}

/// The node's status, noted for the election-safety check.
pub async fn status(nemesis: &Nemesis, addr: SocketAddr) -> anyhow::Result<StatusResponse> {
    let s = cluster::status(addr).await?;
    let at_secs = nemesis.history.elapsed_ns() as f64 / 1e9;
    nemesis.leaders.note(&s, at_secs);
    Ok(s)
}

/// The highest-term leader among `ids`, polled until there is one or `timeout` runs out.
pub async fn leader_among(
    nemesis: &Nemesis,
    ids: &[(u64, SocketAddr)],
    timeout: Duration,
    what: &str,
) -> anyhow::Result<StatusResponse> {
    wait_for(timeout, what, || async {
        let mut leader: Option<StatusResponse> = None;
        for &(_, addr) in ids {
            if let Ok(s) = status(nemesis, addr).await
                && s.role == "leader"
                && leader.as_ref().is_none_or(|l| s.term > l.term)
            {
                leader = Some(s);
            }
        }
        leader
    })
    .await
}

/// Polls `check` until it yields a value, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends one put to the node at `addr` and waits for its answer (at most `timeout`).
pub async fn put(
    addr: SocketAddr,
    key: &[u8],
    value: String,
    timeout: Duration,
) -> anyhow::Result<()> {
    let endpoint = node_endpoint(addr, None, Duration::from_millis(300)).timeout(timeout);
    let channel = endpoint.connect().await?;
    let request = PutRequest {
        key: key.to_vec(),
        value: value.into_bytes(),
        write_id: None,
        ..Default::default()
    };
    KvClient::new(channel).put(request).await?;
    Ok(())
}

/// Has the node at `addr` append a put without waiting for it: a cut-off leader appends
/// it to its log but cannot commit it, and the entry in the log is the point.
pub fn append_uncommittable(addr: SocketAddr, key: &'static [u8], value: String) {
    tokio::spawn(async move {
        let _ = put(addr, key, value, Duration::from_secs(1)).await;
    });
}
