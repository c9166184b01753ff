//! Stable hashing and consistent placement: which bucket a key falls in, and which nodes a
//! partition's replicas go to.
//!
//! Everything here is a pure function of its arguments, and the hash is fixed by this file,
//! not by a crate or the standard library (whose `DefaultHasher` may change between
//! releases): a bucket or a placement computed by one build must be the one every other
//! build computes, or a restarted node would look for keys in the wrong partition.
//!
//! Three placement schemes, to compare (BENCHMARKS.md, "Placement"):
//! - [`rendezvous`] (highest random weight, Thaler & Ravishankar 1998): every node scores
//!   the partition, the top `n` scores win. Adding a node moves only what the new node wins.
//! - [`jump`] (Lamping & Veach 2014): no state, minimal movement when nodes are added at the
//!   end of the list; removing a node from the middle reshuffles (nodes are slots, not ids).
//! - [`Ring`]: Karger et al.'s ring with virtual nodes; balance depends on the number of
//!   virtual nodes per node.

use std::collections::BTreeMap;

/// A stable 64-bit hash of `bytes`: FNV-1a, then a finalizer so that nearby keys ("k1",
/// "k2") spread over the whole range (FNV alone leaves the low bits poorly mixed, and
/// buckets are taken modulo small numbers).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix(hash)
}

/// The 64-bit finalizer of MurmurHash3 (`fmix64`): a bijection with full avalanche.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The bucket of `key` among `count` buckets (hash partitioning).
pub fn bucket_of(key: &[u8], count: u32) -> u32 {
    assert!(count > 0, "a hash partitioning has at least one bucket");
    (stable_hash(key) % u64::from(count)) as u32
}

/// Lamping and Veach's jump consistent hash: the slot in `0..slots` for `key`. Going from
/// `n` to `n + 1` slots moves about `1 / (n + 1)` of the keys, all of them to the new slot.
pub fn jump(mut key: u64, slots: u32) -> u32 {
    assert!(slots > 0, "jump hash needs at least one slot");
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(slots) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The `replicas` nodes of `nodes` with the highest score for `item` (rendezvous hashing),
/// best first. Fewer if there are fewer nodes.
pub fn rendezvous(item: u64, nodes: &[u64], replicas: usize) -> Vec<u64> {
    let mut scored: Vec<(u64, u64)> = nodes
        .iter()
        .map(|&node| {
            (
                mix(item.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(node)),
                node,
            )
        })
        .collect();
    // Ties are broken by node id, so the order is total and the same everywhere.
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored
        .into_iter()
        .take(replicas)
        .map(|(_, node)| node)
        .collect()
}

/// `replicas` distinct nodes for `item` by jump hashing over the sorted node list: the
/// first replica from the item's hash, each next one from a rehash, skipping nodes taken.
pub fn jump_replicas(item: u64, nodes: &[u64], replicas: usize) -> Vec<u64> {
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let wanted = replicas.min(sorted.len());
    let mut chosen = Vec::with_capacity(wanted);
    let mut key = mix(item);
    // Each round finds a new node with probability at least 1/len, so the bound is never
    // reached in practice; it only keeps the loop finite.
    let rounds_max = 64 * sorted.len().max(1);
    for _ in 0..rounds_max {
        if chosen.len() == wanted {
            break;
        }
        let node = sorted[jump(key, sorted.len() as u32) as usize];
        if !chosen.contains(&node) {
            chosen.push(node);
        }
        key = mix(key ^ 0x5851_f42d_4c95_7f2d);
    }
    // Fill deterministically if the rehashes were unlucky.
    for &node in &sorted {
        if chosen.len() == wanted {
            break;
        }
        if !chosen.contains(&node) {
            chosen.push(node);
        }
    }
    chosen
}

/// A consistent-hash ring with `vnodes` points per node.
#[derive(Clone, Debug)]
pub struct Ring {
    points: BTreeMap<u64, u64>,
}

impl Ring {
    pub fn new(nodes: &[u64], vnodes: u32) -> Self {
        assert!(vnodes > 0, "a ring needs at least one point per node");
        let mut points = BTreeMap::new();
        for &node in nodes {
            for v in 0..vnodes {
                // A collision keeps the smaller node id, so every build agrees.
                let point = mix(mix(node) ^ u64::from(v).wrapping_mul(0xd6e8_feb8_6659_fd93));
                points
                    .entry(point)
                    .and_modify(|n: &mut u64| *n = (*n).min(node))
                    .or_insert(node);
            }
        }
        Ring { points }
    }

    /// The first `replicas` distinct nodes clockwise from `item`'s point.
    pub fn replicas(&self, item: u64, replicas: usize) -> Vec<u64> {
        let start = mix(item);
        let mut chosen: Vec<u64> = Vec::with_capacity(replicas);
        for (_, &node) in self.points.range(start..).chain(self.points.range(..start)) {
            if chosen.len() == replicas {
                break;
            }
            if !chosen.contains(&node) {
                chosen.push(node);
            }
        }
        chosen
    }
}

/// How partitions are placed on nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    Rendezvous,
    Jump,
    /// A ring with this many virtual nodes per node.
    Ring(u32),
}

impl Placement {
    /// The nodes for partition `item`, best first.
    pub fn place(self, item: u64, nodes: &[u64], replicas: usize) -> Vec<u64> {
        match self {
            Placement::Rendezvous => rendezvous(item, nodes, replicas),
            Placement::Jump => jump_replicas(item, nodes, replicas),
            Placement::Ring(vnodes) => Ring::new(nodes, vnodes).replicas(item, replicas),
        }
    }
}

/// For comparing schemes: how evenly `items` partitions of `replicas` replicas each spread
/// over `nodes`, and what fraction of replica placements change when `added` joins.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementStats {
    /// Most replicas on one node divided by the mean (1.0 is perfect).
    pub max_over_mean: f64,
    /// Fewest replicas on one node divided by the mean.
    pub min_over_mean: f64,
    /// Replica placements that differ after the node joins, as a fraction of all.
    pub moved_fraction: f64,
    /// The least any scheme must move: the new node's fair share.
    pub ideal_moved_fraction: f64,
}

pub fn placement_stats(
    scheme: Placement,
    items: u64,
    nodes: &[u64],
    replicas: usize,
    added: u64,
) -> PlacementStats {
    let mut load: BTreeMap<u64, u64> = nodes.iter().map(|&n| (n, 0)).collect();
    let mut with_added = nodes.to_vec();
    with_added.push(added);
    let (mut moved, mut total) = (0u64, 0u64);
    for item in 0..items {
        let before = scheme.place(item, nodes, replicas);
        let after = scheme.place(item, &with_added, replicas);
        for node in &before {
            *load.get_mut(node).expect("placed on a known node") += 1;
        }
        total += before.len() as u64;
        moved += before.iter().filter(|n| !after.contains(n)).count() as u64;
    }
    let mean = total as f64 / nodes.len() as f64;
    let max = load.values().copied().max().unwrap_or(0) as f64;
    let min = load.values().copied().min().unwrap_or(0) as f64;
    PlacementStats {
        max_over_mean: max / mean,
        min_over_mean: min / mean,
        moved_fraction: moved as f64 / total.max(1) as f64,
        ideal_moved_fraction: replicas.min(with_added.len()) as f64
            / with_added.len() as f64
            / replicas.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_hash_never_changes() {
        // Pinned: a change here moves every key of every hash-partitioned cluster.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(bucket_of(b"k0", 16), bucket_of(b"k0", 16));
        let pinned: Vec<u32> = ["k0", "k1", "k2", "k3", "user/42"]
            .iter()
            .map(|k| bucket_of(k.as_bytes(), 8))
            .collect();
        assert_eq!(pinned, PINNED_BUCKETS);
    }

    const PINNED_BUCKETS: [u32; 5] = [1, 5, 0, 3, 5];

    #[test]
    fn buckets_are_balanced_for_sequential_keys() {
        let count = 16;
        let mut per_bucket = vec![0u32; count as usize];
        for i in 0..16_000 {
            per_bucket[bucket_of(format!("k{i}").as_bytes(), count) as usize] += 1;
        }
        let (min, max) = (
            *per_bucket.iter().min().unwrap(),
            *per_bucket.iter().max().unwrap(),
        );
        assert!(min > 850 && max < 1150, "{per_bucket:?}");
    }

    #[test]
    fn jump_moves_keys_only_to_the_new_slot() {
        for key in 0..10_000u64 {
            let key = mix(key);
            let (before, after) = (jump(key, 7), jump(key, 8));
            assert!(after == before || after == 7, "{key}: {before} -> {after}");
        }
    }

    #[test]
    fn every_scheme_places_distinct_known_nodes() {
        let nodes = [1, 2, 3, 4, 5];
        for scheme in [Placement::Rendezvous, Placement::Jump, Placement::Ring(64)] {
            for item in 0..500 {
                let placed = scheme.place(item, &nodes, 3);
                assert_eq!(placed.len(), 3, "{scheme:?}");
                let mut unique = placed.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), 3, "{scheme:?} {placed:?}");
                assert!(placed.iter().all(|n| nodes.contains(n)));
                assert_eq!(placed, scheme.place(item, &nodes, 3), "deterministic");
            }
            assert_eq!(scheme.place(9, &[4, 2], 3).len(), 2, "capped by nodes");
        }
    }

    #[test]
    fn rendezvous_moves_only_what_the_new_node_wins() {
        let nodes = [1, 2, 3, 4];
        for item in 0..2_000 {
            let before = rendezvous(item, &nodes, 3);
            let after = rendezvous(item, &[1, 2, 3, 4, 5], 3);
            let lost: Vec<_> = before.iter().filter(|n| !after.contains(n)).collect();
            assert!(lost.len() <= 1, "{item}: {before:?} -> {after:?}");
            if lost.len() == 1 {
                assert!(after.contains(&5));
            }
        }
    }

    #[test]
    fn rendezvous_and_jump_move_about_the_fair_share_when_a_node_joins() {
        let nodes: Vec<u64> = (1..=5).collect();
        for scheme in [Placement::Rendezvous, Placement::Jump, Placement::Ring(256)] {
            let stats = placement_stats(scheme, 4_000, &nodes, 3, 6);
            assert!(
                stats.moved_fraction < stats.ideal_moved_fraction * 1.5,
                "{scheme:?}: {stats:?}"
            );
            assert!(stats.max_over_mean < 1.25, "{scheme:?}: {stats:?}");
        }
    }
}
