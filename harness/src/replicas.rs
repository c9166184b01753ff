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

use crate::cluster::{status, status_with_digest};

/// How long the nodes get to reach one applied index once the run is over.
pub const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Replicas {
    /// Every node reached `applied_index` with the same state.
    Agree { applied_index: u64, digest: String },
    /// Nodes at `applied_index` hold different states (node id -> digest).
    Diverged {
        applied_index: u64,
        digests: BTreeMap<u64, String>,
    },
    /// The nodes did not reach one applied index in time (node id -> applied index, for
    /// the nodes that answered), and no two that shared an index disagreed.
    Unsettled { applied: BTreeMap<u64, u64> },
}

impl Replicas {
    /// One line for the summary.
    pub fn describe(&self) -> String {
        match self {
            Replicas::Agree {
                applied_index,
                digest,
            } => format!(
                "replicas agree: every node at applied index {applied_index}, state digest {digest}"
            ),
            Replicas::Diverged {
                applied_index,
                digests,
            } => {
                let nodes: Vec<String> = digests
                    .iter()
                    .map(|(id, digest)| format!("node {id} {digest}"))
                    .collect();
                format!(
                    "REPLICAS DIVERGED at applied index {applied_index}: {} (they applied different commands at or below that index: state machine safety is broken)",
                    nodes.join(", ")
                )
            }
            Replicas::Unsettled { applied } => {
                let nodes: Vec<String> = applied
                    .iter()
                    .map(|(id, index)| format!("node {id} at {index}"))
                    .collect();
                format!(
                    "replicas did not reach one applied index within {SETTLE:?} ({}); their states agreed where compared, at the lowest of those indices",
                    nodes.join(", ")
                )
            }
        }
    }
}

/// Polls every node until all stand at one applied index, or `settle` runs out. At each
/// poll the nodes are compared at the lowest applied index among them (each node keeps the
/// digests of its recent states), so a node left behind, by a wedged replication for
/// instance, is still compared with the others; every comparison made counts, so a
/// divergence seen once is reported even if the cluster never settles.
pub async fn compare(nodes: &[(u64, SocketAddr)], settle: Duration) -> Replicas {
    let deadline = Instant::now() + settle;
    // applied index -> node id -> digest
    let mut seen: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    loop {
        let mut applied = BTreeMap::new();
        for &(id, addr) in nodes {
            if let Ok(status) = status(addr).await {
                applied.insert(id, status.applied_index);
            }
        }
        // Index 0 is the empty state everywhere (and asks a node for its current one).
        if let Some(&common) = applied.values().min().filter(|&&index| index > 0) {
            for &(id, addr) in nodes {
                if let Ok(status) = status_with_digest(addr, common).await
                    && let Some(digest) = status.state_digest
                {
                    seen.entry(common).or_default().insert(id, digest);
                }
            }
        }
        if let Some(diverged) = first_divergence(&seen) {
            return diverged;
        }
        let indices: BTreeSet<u64> = applied.values().copied().collect();
        if applied.len() == nodes.len() && indices.len() == 1 {
            let applied_index = *indices.first().expect("one index");
            if let Some(states) = seen.get(&applied_index)
                && states.len() == nodes.len()
            {
                let digest = states.values().next().copied().unwrap_or(0);
                return Replicas::Agree {
                    applied_index,
                    digest: hex(digest),
                };
            }
        }
        if Instant::now() >= deadline {
            return Replicas::Unsettled { applied };
        }
        tokio::time::sleep(POLL).await;
    }
}

fn first_divergence(seen: &BTreeMap<u64, BTreeMap<u64, u64>>) -> Option<Replicas> {
    seen.iter().find_map(|(&applied_index, digests)| {
        let distinct: BTreeSet<u64> = digests.values().copied().collect();
        (distinct.len() > 1).then(|| Replicas::Diverged {
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
        assert_eq!(first_divergence(&seen), None, "same index, same state");
        seen.insert(9, BTreeMap::from([(1, 0xb), (3, 0xc)]));
        let Some(Replicas::Diverged {
            applied_index,
            digests,
        }) = first_divergence(&seen)
        else {
            panic!("index 9 diverges");
        };
        assert_eq!(applied_index, 9);
        assert_eq!(digests[&3], "000000000000000c");
    }
}
