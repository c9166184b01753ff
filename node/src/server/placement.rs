//! The placement driver's shell: on the node whose replica leads the consistent core, it
//! asks the sans-IO planner (`crate::partitioning::placement`) for the next action every
//! `PLACEMENT_INTERVAL` (at once after an action), carries it out through the node's own Kv service (the RPCs an
//! operator would use: `MoveReplica`, `TransferLeader`), and waits until the map shows the
//! result before planning again, so that it never plans twice from one stale map. One
//! action at a time: a cluster being rebalanced keeps serving, and a failed action is
//! logged and planned afresh.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;

use super::driver::View;
use crate::partitioning::PartitionMap;
use crate::partitioning::placement::{Action, plan};
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::{MoveReplicaRequest, TransferLeaderRequest};

const PLACEMENT_INTERVAL: Duration = Duration::from_millis(500);
/// A move catches a replica up by snapshot: give it time.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the map may take to show an action's result.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed action, before planning again.
const BACKOFF: Duration = Duration::from_secs(2);

pub async fn run(
    mut map: watch::Receiver<Arc<PartitionMap>>,
    core_view: Option<watch::Receiver<View>>,
    me: u64,
    own: KvClient<Channel>,
    replicas: usize,
) {
    let Some(core_view) = core_view else {
        // Not a consistent-core node: the driver runs where the core leads.
        return;
    };
    loop {
        if core_view.borrow().leader_id != Some(me) {
            tokio::time::sleep(PLACEMENT_INTERVAL).await;
            continue;
        }
        let current = map.borrow_and_update().clone();
        let Some(action) = plan(&current, replicas) else {
            tokio::time::sleep(PLACEMENT_INTERVAL).await;
            continue;
        };
        let done = match &action {
            Action::Move {
                partition,
                from,
                to,
                why,
            } => {
                tracing::info!(partition, from, to, "placement: moving a replica: {why}");
                let mut request = tonic::Request::new(MoveReplicaRequest {
                    partition: *partition,
                    from: *from,
                    to: *to,
                });
                request.set_timeout(MOVE_TIMEOUT);
                own.clone().move_replica(request).await.map(|_| ())
            }
            Action::TransferLeader {
                partition,
                from,
                to,
                why,
            } => {
                tracing::info!(
                    partition,
                    from,
                    to,
                    "placement: handing leadership on: {why}"
                );
                let mut request = tonic::Request::new(TransferLeaderRequest {
                    partition: *partition,
                    to: *to,
                });
                request.set_timeout(SETTLE_TIMEOUT);
                own.clone().transfer_leader(request).await.map(|_| ())
            }
        };
        if let Err(status) = done {
            tracing::warn!(
                ?action,
                "placement: the action failed: {}",
                status.message()
            );
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        settle(&mut map, &action).await;
    }
}

/// Waits (bounded) until the map shows what `action` did.
async fn settle(map: &mut watch::Receiver<Arc<PartitionMap>>, action: &Action) {
    let shows = |map: &PartitionMap| match action {
        Action::Move {
            partition,
            from,
            to,
            ..
        } => map
            .get(*partition)
            .is_none_or(|d| d.replicas.contains(to) && !d.replicas.contains(from)),
        Action::TransferLeader { partition, to, .. } => {
            map.get(*partition).is_none_or(|d| d.leader == Some(*to))
        }
    };
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        if shows(&map.borrow_and_update()) {
            return;
        }
        match tokio::time::timeout_at(deadline, map.changed()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
