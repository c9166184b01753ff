//! The `config-race` fault: two leaders of one partition each make a one-server
//! membership change from the same configuration, the race Ongaro described in 2015.
//!
//! A partition with four voters a (its leader), b, c and d:
//! 1. b drops everything it sends c in this group but votes (a failpoint: the network
//!    cannot cut one group on a link all groups share); c and d are cut off from each
//!    other, and a from everyone (from b last, once b holds all that c and d hold, or
//!    c and d would refuse b their votes).
//! 2. a appends `Remove(d)` (C1 = {a, b, c}, a majority is 2), which nobody else gets, and
//!    is killed.
//! 3. Only b can be elected now: c and d cannot reach each other, and each needs the
//!    other's vote. b wins with both votes, and its no-op cannot commit (d alone answers it;
//!    c hears nothing from b). The fault asks b for `Remove(c)`. A correct leader refuses
//!    until an entry of its own term commits (the 2015 fix), which cannot happen here. With
//!    the `config-before-noop` seeded bug, b appends it (C2 = {a, b, d}, a majority is 2)
//!    and commits it with d, then acknowledges writes.
//! 4. The cut becomes {a, c} | {b, d} and a restarts. a is elected with c's vote, a
//!    majority of C1 that shares no node with C2's. Under the bug both sides now commit
//!    writes; when the cut heals the longer term's log replaces the other's and one side's
//!    acknowledged writes are lost, which the checker sees.
//!
//! Needs four nodes and partitions with four replicas (a schedule with this fault places
//! four). The fault waits on observed state (a's appended index, b's leadership, a's),
//! so the condition holds on every run.

use std::net::SocketAddr;
use std::time::Duration;

use faultline_node::proto::admin::fault_injection_client::FaultInjectionClient;
use faultline_node::proto::admin::{DropPeerMessagesRequest, DropRule};
use faultline_node::proto::kv::{ChangeReplicasRequest, GetPartitionMapRequest, ReplicaChange};
use faultline_node::server::transport::node_endpoint;

use crate::choreography::{Precondition, kv_client as kv, running_nodes, wait_for};
use crate::cluster::group_status_with_digest;
use crate::nemesis::Nemesis;
use crate::net::namespace::node_ip;

/// Longest wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long b is asked for its change before the fault takes the refusal as final.
const ASK: Duration = Duration::from_secs(3);
/// How long each side holds before the next step: past two of the longest default
/// election timeouts (300 ms), so that whatever can be elected or committed has been.
const HOLD: Duration = Duration::from_millis(700);

/// What `end` undoes.
#[derive(Clone, Copy, Debug)]
pub struct Raced {
    /// The node that drops its messages to c.
    pub dropping: u64,
    /// The killed leader, restarted by the fault (and by `end` if it is not running).
    pub killed: u64,
    pub partition: u64,
    /// The partition's four voters before the fault: `end` gives it four again, so that
    /// the next fault finds one to race in.
    pub replicas: [u64; 4],
}

fn injector(addr: SocketAddr) -> FaultInjectionClient<tonic::transport::Channel> {
    FaultInjectionClient::new(
        node_endpoint(addr, None, Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect_lazy(),
    )
}

async fn leader_of(addr: SocketAddr, group: u64) -> Option<(u64, u64)> {
    let s = group_status_with_digest(addr, Some(group), 0).await.ok()?;
    (s.group_id == group && s.role == "leader").then_some((s.term, s.commit_index))
}

pub async fn start(nemesis: &Nemesis) -> anyhow::Result<(String, Precondition)> {
    let nodes = running_nodes(nemesis, "config-race", 4, 64).await?;
    let addr = |id: u64| {
        nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, a)| *a)
            .expect("a running node")
    };
    let map = kv(nodes[0].1, STEP_TIMEOUT)
        .get_partition_map(GetPartitionMapRequest {})
        .await?
        .into_inner();
    let partition = map
        .partitions
        .iter()
        .filter(|p| p.learners.is_empty() && p.replicas.len() == 4)
        .filter(|p| p.replicas.iter().all(|r| nodes.iter().any(|(n, _)| n == r)))
        .min_by_key(|p| p.id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "config-race needs a partition with four voters on running nodes and no \
                 learner (run it with --replicas 4)"
            )
        })?
        .clone();
    let group = partition.id;
    let a = wait_for(STEP_TIMEOUT, "the partition to have a leader", || async {
        for &replica in &partition.replicas {
            if leader_of(addr(replica), group).await.is_some() {
                return Some(replica);
            }
        }
        None
    })
    .await?;
    let mut others = partition.replicas.iter().copied().filter(|&n| n != a);
    let (b, c, d) = (
        others.next().expect("four replicas"),
        others.next().expect("four replicas"),
        others.next().expect("four replicas"),
    );
    let ip = |id: u64| node_ip(id as usize - 1);
    let both = |x: u64, y: u64| [(ip(x), ip(y)), (ip(y), ip(x))];

    // 1. b -> c carries only votes; c and d cannot talk; a talks to nobody.
    injector(addr(b))
        .drop_peer_messages(DropPeerMessagesRequest {
            add: vec![DropRule {
                group_id: group,
                to: c,
                keep_votes: true,
            }],
            clear: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("n{b} would not drop its messages: {}", s.message()))?;
    *nemesis.raced.lock().expect("race lock") = Some(Raced {
        dropping: b,
        killed: a,
        partition: group,
        replicas: [a, b, c, d],
    });
    // Cut at once, a's last appends could reach c and d but not b, and commit with
    // them (three of four); c and d would then refuse b their votes and nobody could be
    // elected. So a keeps b a moment longer, until b holds everything c and d hold:
    // a cannot commit with b alone, and its leadership outlasts the moment (check-quorum
    // waits a whole election timeout).
    let mut first_cut: Vec<_> = both(c, d).to_vec();
    for x in [c, d] {
        first_cut.extend(both(a, x));
    }
    let firewall = nemesis.firewall()?;
    firewall.drop_links(&first_cut)?;
    let last_index = |id: u64| async move {
        group_status_with_digest(addr(id), Some(group), 0)
            .await
            .ok()
            .map(|s| s.last_index)
    };
    let caught_up = wait_for(
        Duration::from_secs(2),
        &format!("n{b} to hold every entry n{c} and n{d} hold"),
        || async {
            let (hb, hc, hd) = (
                last_index(b).await?,
                last_index(c).await?,
                last_index(d).await?,
            );
            (hb >= hc.max(hd)).then_some(())
        },
    )
    .await;
    firewall.drop_links(&both(a, b))?;
    if let Err(e) = caught_up {
        return Ok((
            format!("partition {group}: n{b} did not catch up"),
            Precondition::missed(format!("{e} (partition {group}, leader n{a})")),
        ));
    }

    // 2. a appends Remove(d) alone, then dies with it on its disk.
    let before = group_status_with_digest(addr(a), Some(group), 0).await?;
    let mut asking = kv(addr(a), STEP_TIMEOUT);
    let removal = tokio::spawn(async move {
        asking
            .change_replicas(ChangeReplicasRequest {
                partition: group,
                change: ReplicaChange::Remove as i32,
                node: d,
            })
            .await
    });
    let appended = wait_for(
        Duration::from_secs(2),
        "the leader to append the removal",
        || async {
            group_status_with_digest(addr(a), Some(group), 0)
                .await
                .ok()
                .filter(|s| s.last_index > before.last_index)
                .map(|s| s.last_index)
        },
    )
    .await;
    // The entry is durable before the status shows it (the node persists, then
    // advances); a moment more covers the status racing the fsync's return.
    tokio::time::sleep(Duration::from_millis(100)).await;
    nemesis.cluster.lock().await.kill(a)?;
    removal.abort();
    let Ok(appended) = appended else {
        return Ok((
            format!("partition {group}: n{a} did not append Remove(n{d})"),
            Precondition::missed(format!(
                "leader n{a} of partition {group} did not append Remove(n{d}) while cut off"
            )),
        ));
    };

    // 3. b is elected (only it can be) and is asked to remove c.
    let elected = wait_for(STEP_TIMEOUT, &format!("n{b} to be elected"), || async {
        leader_of(addr(b), group).await
    })
    .await;
    let Ok((term, _)) = elected else {
        return Ok((
            format!("partition {group}: n{b} was not elected"),
            Precondition::missed(format!(
                "n{b} was not elected in partition {group} within {STEP_TIMEOUT:?}"
            )),
        ));
    };
    let asked_until = tokio::time::Instant::now() + ASK;
    let answer = loop {
        let reply = kv(addr(b), Duration::from_secs(2))
            .change_replicas(ChangeReplicasRequest {
                partition: group,
                change: ReplicaChange::Remove as i32,
                node: c,
            })
            .await;
        match reply {
            Ok(_) => break format!("n{b} removed n{c} in term {term}"),
            Err(status) if tokio::time::Instant::now() >= asked_until => {
                break format!("n{b} refused to remove n{c}: {}", status.message());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    tokio::time::sleep(HOLD).await;

    // 4. {a, c} | {b, d}, and a comes back with C1.
    let mut second_cut = Vec::new();
    for x in [a, c] {
        for y in [b, d] {
            second_cut.extend(both(x, y));
        }
    }
    firewall.drop_links(&second_cut)?;
    firewall.undrop_links(&both(a, c))?;
    nemesis.cluster.lock().await.start(a)?;
    let restarted = wait_for(
        STEP_TIMEOUT,
        &format!("n{a} to be elected again"),
        || async { leader_of(addr(a), group).await },
    )
    .await;
    let detail = format!(
        "partition {group}: n{a} appended Remove(n{d}) at {appended} and was killed; {answer}; \
         cut {{n{a}, n{c}}} | {{n{b}, n{d}}}"
    );
    let Ok((a_term, _)) = restarted else {
        return Ok((
            detail.clone(),
            Precondition::missed(format!("{detail}; n{a} was not elected again")),
        ));
    };
    tokio::time::sleep(HOLD).await;
    Ok((
        detail.clone(),
        Precondition::reached(format!(
            "{detail}; n{a} leads term {a_term} with n{c}, for {HOLD:?}"
        )),
    ))
}

/// Heals the cut and the dropping, restarts the killed leader if it is down, and adds
/// back the voter the surviving configuration removed.
pub async fn end(nemesis: &Nemesis) -> anyhow::Result<()> {
    nemesis.firewall()?.heal()?;
    let raced = nemesis.raced.lock().expect("race lock").take();
    let Some(Raced {
        dropping,
        killed,
        partition,
        replicas,
    }) = raced
    else {
        return Ok(());
    };
    let mut cluster = nemesis.cluster.lock().await;
    if !cluster.is_running(killed) {
        cluster.start(killed)?;
    }
    let addr = cluster.addr(dropping);
    drop(cluster);
    injector(addr)
        .drop_peer_messages(DropPeerMessagesRequest {
            add: Vec::new(),
            clear: true,
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "n{dropping} would not clear its drop rules: {}",
                s.message()
            )
        })?;
    let addresses: Vec<(u64, SocketAddr)> = {
        let cluster = nemesis.cluster.lock().await;
        replicas.iter().map(|&r| (r, cluster.addr(r))).collect()
    };
    let mut last = String::from("no replica leads it");
    for _ in 0..60 {
        // The leader's own configuration: the map can lag behind it.
        let mut leading = None;
        for &(_, at) in &addresses {
            if let Ok(s) = group_status_with_digest(at, Some(partition), 0).await
                && s.group_id == partition
                && s.role == "leader"
            {
                leading = Some((at, s.voters));
            }
        }
        if let Some((at, voters)) = leading {
            let mut client = kv(at, STEP_TIMEOUT);
            match replicas.iter().copied().find(|r| !voters.contains(r)) {
                Some(missing) => {
                    match client
                        .change_replicas(ChangeReplicasRequest {
                            partition,
                            change: ReplicaChange::AddVoter as i32,
                            node: missing,
                        })
                        .await
                    {
                        Ok(_) => continue,
                        Err(status) => last = status.message().to_string(),
                    }
                }
                None => {
                    let map = client.get_partition_map(GetPartitionMapRequest {}).await;
                    let shown = map.ok().and_then(|m| {
                        m.into_inner()
                            .partitions
                            .into_iter()
                            .find(|p| p.id == partition)
                    });
                    if shown.is_some_and(|p| p.replicas.len() == 4 && p.learners.is_empty()) {
                        return Ok(());
                    }
                    last = "the partition map does not show four voters yet".to_string();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("partition {partition} did not get its fourth voter back: {last}")
}
