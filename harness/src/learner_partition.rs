//! The `learner-partition` fault: a learner is added to a partition and caught up, then it
//! and one of the partition's voters are cut off together from everyone else.
//!
//! A learner receives the log but must neither vote nor count toward a quorum (Raft thesis
//! §4.2.1): the two cut-off nodes hold one voter of three, a minority, and cannot elect or
//! commit anything. A node whose learners' votes count (the `learner-votes` seeded bug)
//! lets the cut-off voter win an election with the learner's vote and commit writes with
//! the learner's acknowledgements while the real majority keeps committing others: two
//! leaders serving one partition at once. When the cut heals one side's log replaces the
//! other's, and acknowledged writes are lost, which the checker sees.
//!
//! Random faults almost never make this happen: a learner exists only during a replica
//! move, for a moment. The fault waits on observed state (the learner's applied index) and
//! holds the cut for longer than two election timeouts before counting it in force, so the
//! condition the bug needs is there on every run. Needs four nodes or more, with fewer
//! replicas per partition than nodes.

use std::net::SocketAddr;
use std::time::Duration;

use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{ChangeReplicasRequest, GetPartitionMapRequest, ReplicaChange};

use crate::choreography::{Precondition, kv_client, running_nodes, wait_for};
use crate::cluster::group_status_with_digest;
use crate::nemesis::Nemesis;
use crate::net::namespace::node_ip;

/// Longest wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cut holds before the fault counts as in force: past two of the longest
/// default election timeouts (300 ms), so a voter that can win with a learner's vote has.
const HOLD: Duration = Duration::from_millis(700);

/// What `end` undoes: the partition and its learner.
#[derive(Clone, Copy, Debug)]
pub struct Added {
    pub partition: u64,
    pub learner: u64,
}

fn client(addr: SocketAddr) -> KvClient<tonic::transport::Channel> {
    kv_client(addr, STEP_TIMEOUT)
}

pub async fn start(nemesis: &Nemesis) -> anyhow::Result<(String, Precondition)> {
    let nodes = running_nodes(nemesis, "learner-partition", 4, 64).await?;
    let addr = |id: u64| {
        nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, a)| *a)
            .expect("a running node")
    };
    let mut kv = client(nodes[0].1);
    let map = kv
        .get_partition_map(GetPartitionMapRequest {})
        .await?
        .into_inner();
    let partition = map
        .partitions
        .iter()
        .filter(|p| p.learners.is_empty() && p.replicas.len() >= 3)
        .min_by_key(|p| p.id)
        .ok_or_else(|| anyhow::anyhow!("no partition with three replicas and no learner"))?
        .clone();
    let learner = nodes
        .iter()
        .map(|(id, _)| *id)
        .find(|id| !partition.replicas.contains(id))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "every node holds a replica of partition {}: learner-partition needs more \
                 nodes than replicas",
                partition.id
            )
        })?;
    let group = partition.id;
    // The leader as the replicas say (the map's may be stale).
    let leader = wait_for(STEP_TIMEOUT, "the partition to have a leader", || async {
        for &replica in &partition.replicas {
            if let Ok(s) = group_status_with_digest(addr(replica), Some(group), 0).await
                && s.role == "leader"
            {
                return Some((replica, s.commit_index));
            }
        }
        None
    })
    .await?;
    let (leader, commit) = leader;
    let voter = partition
        .replicas
        .iter()
        .copied()
        .find(|&n| n != leader)
        .expect("three replicas");
    kv.change_replicas(ChangeReplicasRequest {
        partition: group,
        change: ReplicaChange::AddLearner as i32,
        node: learner,
    })
    .await
    .map_err(|s| anyhow::anyhow!("adding n{learner} as a learner: {}", s.message()))?;
    *nemesis.learner_added.lock().expect("learner lock") = Some(Added {
        partition: group,
        learner,
    });
    let caught_up = wait_for(STEP_TIMEOUT, "the learner to catch up", || async {
        group_status_with_digest(addr(learner), Some(group), 0)
            .await
            .ok()
            .filter(|s| s.group_id == group && s.applied_index >= commit)
            .map(|s| s.applied_index)
    })
    .await;
    let Ok(applied) = caught_up else {
        return Ok((
            format!("partition {group}: learner n{learner} added"),
            Precondition::missed(format!(
                "learner n{learner} did not apply index {commit} within {STEP_TIMEOUT:?}"
            )),
        ));
    };
    let inside = [voter, learner];
    let mut links = Vec::new();
    for &(other, _) in nodes.iter().filter(|(n, _)| !inside.contains(n)) {
        for &cut in &inside {
            let (a, b) = (node_ip(cut as usize - 1), node_ip(other as usize - 1));
            links.push((a, b));
            links.push((b, a));
        }
    }
    nemesis.firewall()?.drop_links(&links)?;
    tokio::time::sleep(HOLD).await;
    let detail = format!(
        "partition {group}: learner n{learner} (applied {applied}) and voter n{voter} cut off from leader n{leader} and the rest"
    );
    Ok((
        detail.clone(),
        Precondition::reached(format!("{detail} for {HOLD:?}")),
    ))
}

/// Heals the cut, then removes the learner so that the next fault can add one again.
pub async fn end(nemesis: &Nemesis) -> anyhow::Result<()> {
    nemesis.firewall()?.heal()?;
    let added = nemesis.learner_added.lock().expect("learner lock").take();
    let Some(Added { partition, learner }) = added else {
        return Ok(());
    };
    let running: Vec<SocketAddr> = nemesis
        .cluster
        .lock()
        .await
        .running()
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let mut last = None;
    for attempt in 0..20 {
        let addr = running[attempt % running.len()];
        match client(addr)
            .change_replicas(ChangeReplicasRequest {
                partition,
                change: ReplicaChange::Remove as i32,
                node: learner,
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if status.message().contains("not a member") => return Ok(()),
            Err(status) => last = Some(status),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "the learner n{learner} of partition {partition} was not removed: {}",
        last.map_or(String::new(), |s| s.message().to_string())
    )
}
