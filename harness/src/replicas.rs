//! After a run, do the replicas agree? Raft's state machine safety says that nodes which
//! applied the log up to the same index hold the same state. Each node reports a digest of
//! its state machine at its applied index (`StatusRequest.state_digest`); two nodes at one
//! index with different digests applied different commands somewhere below it. This catches
//! what a client history can miss: a follower that applied entries no quorum agreed on
//! (`keep-conflicts`) diverges even when no client happens to read from it. etcd's
//! robustness tests compare members' HashKV at one revision in the same spirit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{group_status_with_digest, status_all_groups};

/// How long the nodes get to reach one applied index once the run is over.
pub const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Replicas {
    /// Every group's replicas reached one applied index with the same state; the index
    /// and digest are the first data partition's (group 1 on a one-partition cluster).
    Agree {
        groups: usize,
        applied_index: u64,
        digest: String,
    },
    /// Replicas of `group` at `applied_index` hold different states (node id -> digest).
    Diverged {
        group: u64,
        applied_index: u64,
        digests: BTreeMap<u64, String>,
    },
    /// The replicas of `group` did not reach one applied index in time (node id ->
    /// applied index, for the nodes that answered), and no two that shared an index
    /// disagreed, in that group or any other.
    Unsettled {
        group: u64,
        applied: BTreeMap<u64, u64>,
    },
}

fn group_name(group: u64) -> String {
    if group == 0 {
        "the consistent core (group 0)".into()
    } else {
        format!("partition {group}")
    }
}

impl Replicas {
    /// One line for the summary.
    pub fn describe(&self) -> String {
        match self {
            Replicas::Agree {
                groups,
                applied_index,
                digest,
            } => format!(
                "replicas agree: every node at applied index {applied_index}, state digest {digest}{}",
                if *groups > 1 {
                    format!(" (and the same for each of the {groups} groups on its replicas)")
                } else {
                    String::new()
                }
            ),
            Replicas::Diverged {
                group,
                applied_index,
                digests,
            } => {
                let nodes: Vec<String> = digests
                    .iter()
                    .map(|(id, digest)| format!("node {id} {digest}"))
                    .collect();
                format!(
                    "REPLICAS DIVERGED in {} at applied index {applied_index}: {} (they applied different commands at or below that index: state machine safety is broken)",
                    group_name(*group),
                    nodes.join(", ")
                )
            }
            Replicas::Unsettled { group, applied } => {
                let nodes: Vec<String> = applied
                    .iter()
                    .map(|(id, index)| format!("node {id} at {index}"))
                    .collect();
                format!(
                    "replicas of {} did not reach one applied index within {SETTLE:?} ({}); their states agreed where compared, at the lowest of those indices",
                    group_name(*group),
                    nodes.join(", ")
                )
            }
        }
    }
}

/// One group's comparison so far: applied index -> node id -> digest.
#[derive(Default)]
struct GroupSeen {
    seen: BTreeMap<u64, BTreeMap<u64, u64>>,
    applied: BTreeMap<u64, u64>,
    settled: Option<(u64, u64)>,
}

/// Polls every node until, in every group, all replicas stand at one applied index, or
/// `settle` runs out. At each poll a group's replicas are compared at the lowest applied
/// index among them (each node keeps the digests of its recent states), so a replica left
/// behind, by a wedged replication for instance, is still compared with the others; every
/// comparison made counts, so a divergence seen once is reported even if the cluster never
/// settles.
pub async fn compare(nodes: &[(u64, SocketAddr)], settle: Duration) -> Replicas {
    let deadline = Instant::now() + settle;
    // Which nodes host which group, from their own lists.
    let mut hosts: BTreeMap<u64, Vec<(u64, SocketAddr)>> = BTreeMap::new();
    while hosts.is_empty() {
        for &(id, addr) in nodes {
            if let Ok(status) = status_all_groups(addr).await {
                for group in &status.groups {
                    hosts.entry(group.group_id).or_default().push((id, addr));
                }
            }
        }
        if hosts.is_empty() {
            if Instant::now() >= deadline {
                return Replicas::Unsettled {
                    group: 1,
                    applied: BTreeMap::new(),
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let mut groups: BTreeMap<u64, GroupSeen> =
        hosts.keys().map(|&g| (g, GroupSeen::default())).collect();
    loop {
        for (&group, state) in groups.iter_mut().filter(|(_, s)| s.settled.is_none()) {
            let mut applied = BTreeMap::new();
            let mut retired = Vec::new();
            for &(id, addr) in &hosts[&group] {
                match group_status_with_digest(addr, Some(group), 0).await {
                    // A replica a move removed retires when it hears of it, maybe only now.
                    Ok(status) if status.role == "none" => retired.push(id),
                    Ok(status) if status.group_id == group => {
                        applied.insert(id, status.applied_index);
                    }
                    _ => {}
                }
            }
            let replicas = hosts.get_mut(&group).expect("listed");
            replicas.retain(|(id, _)| !retired.contains(id));
            let replicas = &hosts[&group];
            // Index 0 is the empty state everywhere (and asks a node for its current one).
            if let Some(&common) = applied.values().min().filter(|&&index| index > 0) {
                for &(id, addr) in replicas {
                    if let Ok(status) = group_status_with_digest(addr, Some(group), common).await
                        && let Some(digest) = status.state_digest
                    {
                        state.seen.entry(common).or_default().insert(id, digest);
                    }
                }
            }
            if let Some(diverged) = first_divergence(group, &state.seen) {
                return diverged;
            }
            let indices: BTreeSet<u64> = applied.values().copied().collect();
            if applied.len() == replicas.len() && indices.len() == 1 {
                let applied_index = *indices.first().expect("one index");
                if let Some(states) = state.seen.get(&applied_index)
                    && states.len() == replicas.len()
                {
                    let digest = states.values().next().copied().unwrap_or(0);
                    state.settled = Some((applied_index, digest));
                }
            }
            state.applied = applied;
        }
        if groups.values().all(|s| s.settled.is_some()) {
            let seen = groups
                .iter()
                .find(|(g, _)| **g != 0)
                .or_else(|| groups.iter().next())
                .map(|(_, seen)| seen)
                .expect("at least one group");
            let (applied_index, digest) = seen.settled.expect("all settled");
            return Replicas::Agree {
                groups: groups.len(),
                applied_index,
                digest: hex(digest),
            };
        }
        if Instant::now() >= deadline {
            let (&group, state) = groups
                .iter()
                .find(|(_, s)| s.settled.is_none())
                .expect("not all settled");
            return Replicas::Unsettled {
                group,
                applied: state.applied.clone(),
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

fn first_divergence(group: u64, seen: &BTreeMap<u64, BTreeMap<u64, u64>>) -> Option<Replicas> {
    seen.iter().find_map(|(&applied_index, digests)| {
        let distinct: BTreeSet<u64> = digests.values().copied().collect();
        (distinct.len() > 1).then(|| Replicas::Diverged {
            group,
            applied_index,
            digests: digests.iter().map(|(&id, &d)| (id, hex(d))).collect(),
        })
    })
}

fn hex(digest: u64) -> String {
    format!("{digest:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_at_one_index_with_different_states_diverge() {
        let mut seen = BTreeMap::new();
        seen.insert(7, BTreeMap::from([(1, 0xa), (2, 0xa)]));
        assert_eq!(first_divergence(1, &seen), None, "same index, same state");
        seen.insert(9, BTreeMap::from([(1, 0xb), (3, 0xc)]));
        let Some(Replicas::Diverged {
            applied_index,
            digests,
            ..
        }) = first_divergence(1, &seen)
        else {
            panic!("index 9 diverges");
        };
        assert_eq!(applied_index, 9);
        assert_eq!(digests[&3], "000000000000000c");
    }
}
