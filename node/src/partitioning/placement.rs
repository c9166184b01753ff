//! The placement driver's decisions, sans-IO: given the partition map and the cluster's
//! active nodes, the one action (a replica move or a leadership transfer) that brings the
//! cluster closest to balance, or none. The node's shell (`../server/placement.rs`) runs it
//! on the consistent core's leader, one action at a time, and carries the action out with
//! the same RPCs an operator would use (`MoveReplica`, `TransferLeader`).
//!
//! Two rules, as the chapter's placement driver has them:
//! - **Hash partitioning: consistent hashing.** Each partition's replicas belong on the
//!   nodes [`target_placement`] gives: rendezvous hashing over the active nodes, evened out
//!   so that no node holds more than 1.10 times the mean. A join or a leave changes the
//!   targets of only the partitions it must (about a quarter of the replicas when a 4th node
//!   joins 3), so only those move.
//! - **Range partitioning, and leaders in both schemes: a threshold.** A node that holds more
//!   than `max(1.25 × mean, mean + 1)` replicas (or leaders) gives one to the node with the
//!   fewest. Ranges split and merge, so their ids say nothing stable about where they
//!   belong; counts do.
//!
//! Nothing is decided while a move is under way (some partition has a learner): the map
//! would still show the move's source, and a second move planned from it could undo it.

use std::collections::{BTreeMap, BTreeSet};

use super::descriptor::{KeySpan, NodeId, PartitionId};
use super::hashing::rendezvous;
use super::map::{NodeState, PartitionMap};

/// How far above the mean the consistent-hashing targets let a node go.
pub const TARGET_SPREAD_MAX: f64 = 1.10;

/// One step toward balance, with the numbers that made it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Move {
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
        why: String,
    },
    TransferLeader {
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
        why: String,
    },
}

/// Where each partition's replicas belong under consistent hashing: the first `replicas`
/// nodes of its rendezvous ranking over `nodes`, then, while a node holds more than
/// [`TARGET_SPREAD_MAX`] times the mean, one of its partitions goes to the next node of
/// that partition's ranking that has room. A pure function of its inputs: every core
/// leader computes the same targets, so leadership changes do not make replicas wander.
pub fn target_placement(
    partitions: &[PartitionId],
    nodes: &[NodeId],
    replicas: usize,
) -> BTreeMap<PartitionId, Vec<NodeId>> {
    let replicas = replicas.min(nodes.len());
    let mut ranking: BTreeMap<PartitionId, Vec<NodeId>> = BTreeMap::new();
    let mut placed: BTreeMap<PartitionId, Vec<NodeId>> = BTreeMap::new();
    let mut count: BTreeMap<NodeId, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    for &partition in partitions {
        let ranked = rendezvous(partition, nodes, nodes.len());
        let chosen: Vec<NodeId> = ranked.iter().copied().take(replicas).collect();
        for node in &chosen {
            *count.get_mut(node).expect("a listed node") += 1;
        }
        placed.insert(partition, chosen);
        ranking.insert(partition, ranked);
    }
    if nodes.is_empty() || partitions.is_empty() {
        return placed;
    }
    let mean = (partitions.len() * replicas) as f64 / nodes.len() as f64;
    let cap = ((mean * TARGET_SPREAD_MAX).floor() as usize).max(mean.ceil() as usize);
    // Each pass moves one replica off the fullest node, to the node ranked next for one of
    // its partitions that is below the cap (the partition whose ranking deviates least).
    while let Some((&full, &held)) = count
        .iter()
        .max_by_key(|&(&n, &c)| (c, std::cmp::Reverse(n)))
    {
        if held <= cap {
            break;
        }
        let mut best: Option<(usize, PartitionId, NodeId)> = None;
        for (&partition, chosen) in &placed {
            if !chosen.contains(&full) {
                continue;
            }
            let ranked = &ranking[&partition];
            if let Some((rank, &to)) = ranked
                .iter()
                .enumerate()
                .find(|(_, n)| !chosen.contains(n) && count[n] < cap)
                && best.is_none_or(|(r, _, _)| rank < r)
            {
                best = Some((rank, partition, to));
            }
        }
        let Some((_, partition, to)) = best else {
            break;
        };
        let chosen = placed.get_mut(&partition).expect("listed");
        let slot = chosen.iter().position(|&n| n == full).expect("held");
        chosen[slot] = to;
        *count.get_mut(&full).expect("listed") -= 1;
        *count.get_mut(&to).expect("listed") += 1;
    }
    placed
}

/// The threshold a node's count must pass for the driver to act: a node holding more than
/// this many of `total` things spread over `nodes` nodes is overloaded.
pub fn overload_threshold(total: usize, nodes: usize) -> f64 {
    let mean = total as f64 / nodes.max(1) as f64;
    (1.25 * mean).max(mean + 1.0)
}

/// The next action, if any. `replicas` is the layout's replicas per partition.
pub fn plan(map: &PartitionMap, replicas: usize) -> Option<Action> {
    let active: Vec<NodeId> = map
        .nodes()
        .iter()
        .filter(|(_, n)| n.state == NodeState::Active)
        .map(|(&id, _)| id)
        .collect();
    if active.is_empty() || map.is_empty() {
        return None;
    }
    if map.descriptors().any(|d| !d.learners.is_empty()) {
        return None;
    }
    let hash = map
        .descriptors()
        .any(|d| matches!(d.span, KeySpan::Bucket { .. }));
    let replica_step = if hash {
        toward_targets(map, &active, replicas)
    } else {
        even_out_replicas(map, &active)
    };
    replica_step.or_else(|| even_out_leaders(map, &active))
}

/// Hash partitioning: the first partition (by id) whose replicas are not its targets gets
/// one replica moved onto a target node, off a node that is not a target (its leader last).
fn toward_targets(map: &PartitionMap, active: &[NodeId], replicas: usize) -> Option<Action> {
    let ids: Vec<PartitionId> = map.descriptors().map(|d| d.id).collect();
    let targets = target_placement(&ids, active, replicas);
    for descriptor in map.descriptors() {
        let target: BTreeSet<NodeId> = targets[&descriptor.id].iter().copied().collect();
        let Some(&to) = target.iter().find(|n| !descriptor.replicas.contains(n)) else {
            continue;
        };
        let mut off: Vec<NodeId> = descriptor
            .replicas
            .iter()
            .copied()
            .filter(|n| !target.contains(n))
            .collect();
        off.sort_by_key(|&n| (Some(n) == descriptor.leader, n));
        let Some(&from) = off.first() else {
            continue;
        };
        let moved = map
            .descriptors()
            .filter(|d| {
                let t = &targets[&d.id];
                d.replicas.iter().any(|n| !t.contains(n))
            })
            .count();
        return Some(Action::Move {
            partition: descriptor.id,
            from,
            to,
            why: format!(
                "consistent hashing over nodes {active:?} places partition {} on {:?}, not {:?} \
                 ({moved} partitions off their targets)",
                descriptor.id, targets[&descriptor.id], descriptor.replicas
            ),
        });
    }
    None
}

fn counts(active: &[NodeId], held: impl Iterator<Item = NodeId>) -> BTreeMap<NodeId, usize> {
    let mut count: BTreeMap<NodeId, usize> = active.iter().map(|&n| (n, 0)).collect();
    for node in held {
        if let Some(c) = count.get_mut(&node) {
            *c += 1;
        }
    }
    count
}

/// Range partitioning: the most loaded node, if past the threshold, gives a replica (of a
/// partition it does not lead, if it has one) to the least loaded node that lacks it.
fn even_out_replicas(map: &PartitionMap, active: &[NodeId]) -> Option<Action> {
    let count = counts(
        active,
        map.descriptors().flat_map(|d| d.replicas.iter().copied()),
    );
    let total: usize = count.values().sum();
    let threshold = overload_threshold(total, active.len());
    let (&full, &held) = count
        .iter()
        .max_by_key(|&(&n, &c)| (c, std::cmp::Reverse(n)))?;
    if held as f64 <= threshold {
        return None;
    }
    let mut candidates: Vec<_> = map
        .descriptors()
        .filter(|d| d.replicas.contains(&full))
        .collect();
    candidates.sort_by_key(|d| (d.leader == Some(full), d.id));
    for descriptor in candidates {
        let to = count
            .iter()
            .filter(|(n, _)| !descriptor.replicas.contains(n))
            .min_by_key(|&(&n, &c)| (c, n))
            .map(|(&n, &c)| (n, c));
        if let Some((to, fewest)) = to
            && fewest + 1 < held
        {
            return Some(Action::Move {
                partition: descriptor.id,
                from: full,
                to,
                why: format!(
                    "node {full} holds {held} replicas, over max(1.25 x mean, mean + 1) = \
                     {threshold:.1}; node {to} holds {fewest}"
                ),
            });
        }
    }
    None
}

/// Both schemes: the node leading the most partitions, if past the threshold, hands one
/// to the replica of it that leads the fewest.
fn even_out_leaders(map: &PartitionMap, active: &[NodeId]) -> Option<Action> {
    let count = counts(active, map.descriptors().filter_map(|d| d.leader));
    let total: usize = count.values().sum();
    let threshold = overload_threshold(total, active.len());
    let (&full, &led) = count
        .iter()
        .max_by_key(|&(&n, &c)| (c, std::cmp::Reverse(n)))?;
    if led as f64 <= threshold {
        return None;
    }
    for descriptor in map.descriptors().filter(|d| d.leader == Some(full)) {
        let to = descriptor
            .replicas
            .iter()
            .filter(|&&n| n != full)
            .filter_map(|n| count.get(n).map(|&c| (c, *n)))
            .min();
        if let Some((fewest, to)) = to
            && fewest + 1 < led
        {
            return Some(Action::TransferLeader {
                partition: descriptor.id,
                from: full,
                to,
                why: format!(
                    "node {full} leads {led} partitions, over max(1.25 x mean, mean + 1) = \
                     {threshold:.1}; node {to} leads {fewest}"
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::layout::{LayoutSpec, Scheme};
    use crate::partitioning::map::NodeRecord;

    fn nodes(ids: &[NodeId]) -> Vec<(NodeId, NodeRecord)> {
        ids.iter()
            .map(|&id| {
                (
                    id,
                    NodeRecord {
                        address: format!("127.0.0.1:{}", 7000 + id),
                        state: NodeState::Active,
                    },
                )
            })
            .collect()
    }

    fn per_node(placement: &BTreeMap<PartitionId, Vec<NodeId>>) -> BTreeMap<NodeId, usize> {
        let mut count = BTreeMap::new();
        for chosen in placement.values() {
            for &n in chosen {
                *count.entry(n).or_insert(0) += 1;
            }
        }
        count
    }

    #[test]
    fn a_fourth_node_takes_about_a_quarter_of_the_replicas_and_balance_holds() {
        let ids: Vec<PartitionId> = (1..=64).collect();
        let before = target_placement(&ids, &[1, 2, 3], 3);
        let after = target_placement(&ids, &[1, 2, 3, 4], 3);
        let moved: usize = ids
            .iter()
            .map(|p| after[p].iter().filter(|n| !before[p].contains(n)).count())
            .sum();
        let total = 64 * 3;
        assert!(
            moved as f64 <= total as f64 * (0.25 + 0.05),
            "{moved} of {total} replicas moved"
        );
        assert!(moved as f64 >= total as f64 * 0.20, "{moved} of {total}");
        let count = per_node(&after);
        let mean = total as f64 / 4.0;
        let max = *count.values().max().unwrap() as f64;
        assert!(max / mean <= TARGET_SPREAD_MAX, "{count:?}");
        // Only the newcomer gains: no replica moves between the nodes that were there.
        for p in &ids {
            for n in &after[p] {
                assert!(before[p].contains(n) || *n == 4, "partition {p}: {n}");
            }
        }
    }

    #[test]
    fn targets_are_even_for_many_node_counts() {
        for n in 3..=10u64 {
            let nodes: Vec<NodeId> = (1..=n).collect();
            let ids: Vec<PartitionId> = (1..=64).collect();
            let placement = target_placement(&ids, &nodes, 3);
            let count = per_node(&placement);
            let mean = (64 * 3) as f64 / n as f64;
            let max = *count.values().max().unwrap() as f64;
            assert!(
                max <= (mean * TARGET_SPREAD_MAX).floor().max(mean.ceil()),
                "{n} nodes: {count:?}"
            );
            for chosen in placement.values() {
                let distinct: BTreeSet<_> = chosen.iter().collect();
                assert_eq!(distinct.len(), 3, "{chosen:?}");
            }
        }
    }

    #[test]
    fn a_joined_node_gets_replicas_one_move_at_a_time_and_none_during_a_move() {
        let spec = LayoutSpec::from_flags(Some(16), Scheme::Hash, vec![], vec![1, 2, 3]).unwrap();
        let mut map = PartitionMap::new(spec.initial_descriptors())
            .unwrap()
            .with_nodes(nodes(&[1, 2, 3]));
        assert_eq!(plan(&map, 3), None, "a balanced cluster is left alone");
        map.add_node(4, "127.0.0.1:7004").unwrap();
        let Some(Action::Move { partition, to, .. }) = plan(&map, 3) else {
            panic!("the newcomer gets a replica");
        };
        assert_eq!(to, 4);
        let mut moving = map.get(partition).unwrap().clone();
        moving.learners = vec![4];
        moving.epoch.conf_version += 1;
        map.absorb(&[moving]).unwrap();
        assert_eq!(plan(&map, 3), None, "nothing while a move is under way");
    }

    #[test]
    fn range_replicas_and_leaders_move_only_past_the_threshold() {
        let spec = LayoutSpec::from_flags(Some(4), Scheme::Range, vec![], vec![1, 2, 3]).unwrap();
        let mut map = PartitionMap::new(spec.initial_descriptors())
            .unwrap()
            .with_nodes(nodes(&[1, 2, 3]));
        // Every range on nodes 1-3, node 4 empty: 12 replicas, mean 3, threshold 4.
        map.add_node(4, "127.0.0.1:7004").unwrap();
        assert_eq!(plan(&map, 3), None, "4 each is within max(3.75, 4)");
        // Four leaders on node 1: mean 1, threshold 2.
        let led: Vec<_> = map
            .descriptors()
            .map(|d| {
                let mut d = d.clone();
                d.leader = Some(d.replicas[0]);
                d
            })
            .collect();
        for d in &led {
            map.apply_report(std::slice::from_ref(d), 1, Default::default())
                .unwrap();
        }
        let leaders = counts(&[1, 2, 3, 4], map.descriptors().filter_map(|d| d.leader));
        let most = *leaders.values().max().unwrap();
        match plan(&map, 3) {
            Some(Action::TransferLeader { from, .. }) if most > 2 => {
                assert_eq!(leaders[&from], most)
            }
            None if most <= 2 => {}
            other => panic!("{leaders:?}: {other:?}"),
        }
    }
}
