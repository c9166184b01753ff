//! Partition shapes: which directed links between nodes to cut.
//!
//! Pure functions over node indices, after Jepsen's nemesis "grudges". They
//! contain no randomness: the caller passes the victim or a permutation
//! derived from the test seed, so a run can be replayed exactly. Functions
//! that take only `nodes` use the order given (shuffle it to vary the shape).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A set of directed links to cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grudge {
    /// `(from, to)`: packets sent by node `from` to node `to` are dropped.
    pub dropped: BTreeSet<(usize, usize)>,
}

impl Grudge {
    /// True if no link is cut.
    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty()
    }

    /// Whether packets from `from` reach `to`. A node always reaches itself.
    pub fn can_send(&self, from: usize, to: usize) -> bool {
        from == to || !self.dropped.contains(&(from, to))
    }

    /// The nodes among `nodes` that `node` can send to, itself included.
    pub fn reachable_from(&self, node: usize, nodes: &[usize]) -> BTreeSet<usize> {
        let targets = nodes.iter().copied();
        targets.filter(|&to| self.can_send(node, to)).collect()
    }

    /// The nodes among `nodes` that can send to `node`, itself included.
    pub fn heard_by(&self, node: usize, nodes: &[usize]) -> BTreeSet<usize> {
        let sources = nodes.iter().copied();
        sources.filter(|&from| self.can_send(from, node)).collect()
    }

    /// Groups of `nodes` connected through links that work in both
    /// directions (what a request/response protocol like TCP needs), smallest
    /// group first, ties broken by lowest member. For a clean partition these
    /// are its sides; a bridge or majority ring stays one component.
    pub fn components(&self, nodes: &[usize]) -> Vec<BTreeSet<usize>> {
        let mut unvisited: BTreeSet<usize> = nodes.iter().copied().collect();
        let mut components = Vec::new();
        while let Some(start) = unvisited.pop_first() {
            let mut component = BTreeSet::from([start]);
            let mut frontier = vec![start];
            while let Some(node) = frontier.pop() {
                let linked: Vec<usize> = unvisited
                    .iter()
                    .copied()
                    .filter(|&other| self.can_send(node, other) && self.can_send(other, node))
                    .collect();
                for other in linked {
                    unvisited.remove(&other);
                    component.insert(other);
                    frontier.push(other);
                }
            }
            components.push(component);
        }
        components.sort_by_key(|c| (c.len(), c.first().copied()));
        components
    }

    /// The dropped links as address pairs, for
    /// [`Firewall::drop_links`](super::firewall::Firewall::drop_links);
    /// pass [`node_ip`](super::namespace::node_ip) as `ip`.
    pub fn ip_links(&self, ip: impl Fn(usize) -> Ipv4Addr) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.dropped.iter().map(|&(a, b)| (ip(a), ip(b))).collect()
    }

    /// Adds every link cut by `other`.
    pub fn extend(&mut self, other: &Grudge) {
        self.dropped.extend(other.dropped.iter().copied());
    }
}

/// A clean partition: every link between nodes on different sides is cut in
/// both directions; links within a side are untouched.
pub fn split(sides: &[&[usize]]) -> Grudge {
    let mut dropped = BTreeSet::new();
    for (i, side) in sides.iter().enumerate() {
        for other in sides.iter().skip(i + 1) {
            for &a in *side {
                for &b in *other {
                    if a != b {
                        dropped.insert((a, b));
                        dropped.insert((b, a));
                    }
                }
            }
        }
    }
    Grudge { dropped }
}

/// Cuts `victim` off from every other node, both directions.
///
/// # Panics
/// If `victim` is not in `nodes`: isolating a node outside the cluster would
/// silently be a no-op fault.
pub fn isolate_one(nodes: &[usize], victim: usize) -> Grudge {
    assert!(
        nodes.contains(&victim),
        "isolate_one: victim {victim} is not one of the nodes {nodes:?}"
    );
    let others: Vec<usize> = nodes.iter().copied().filter(|&n| n != victim).collect();
    split(&[&[victim], &others])
}

/// The two sides [`halves`] cuts apart, smaller side first: the first
/// `nodes.len() / 2` nodes in `permutation` order, then the rest.
///
/// `permutation` is a permutation of the positions `0..nodes.len()`, e.g. a
/// seeded shuffle; `nodes[permutation[0]]` is the first node picked.
///
/// # Panics
/// If `permutation` is not a permutation of `0..nodes.len()`.
pub fn halves_sides(nodes: &[usize], permutation: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut sorted = permutation.to_vec();
    sorted.sort_unstable();
    assert!(
        sorted.iter().copied().eq(0..nodes.len()),
        "halves: {permutation:?} is not a permutation of 0..{}",
        nodes.len()
    );
    let picked: Vec<usize> = permutation.iter().map(|&i| nodes[i]).collect();
    let (small, large) = picked.split_at(nodes.len() / 2);
    (small.to_vec(), large.to_vec())
}

/// Splits the nodes into two sides with no links between them, the smaller
/// side (a minority when the count is odd) chosen by `permutation`; see
/// [`halves_sides`].
pub fn halves(nodes: &[usize], permutation: &[usize]) -> Grudge {
    let (small, large) = halves_sides(nodes, permutation);
    split(&[&small, &large])
}

/// Jepsen's majorities ring: every node can reach a majority of the cluster
/// (counting itself), but no two nodes reach the same majority, so no two
/// nodes agree on who is "in".
///
/// Nodes are placed on a ring in the order given; each node can send only to
/// the `n / 2 + 1` consecutive ring members centred on itself. With 5 nodes
/// this is symmetric (each node talks to its two neighbours). When the window
/// has an odd number of other members it cannot be symmetric (3 nodes each
/// with exactly one partner is impossible), so some links work one way only:
/// node `x` may reach `y` without `y` reaching `x`.
///
/// With fewer than 3 nodes every majority is the whole cluster and the
/// grudge is empty.
pub fn majority_ring(nodes: &[usize]) -> Grudge {
    let n = nodes.len();
    let majority = n / 2 + 1;
    let mut dropped = BTreeSet::new();
    for (i, &from) in nodes.iter().enumerate() {
        // Window of `majority` ring positions starting a little before i.
        let start = i + n - (majority - 1) / 2;
        let window: BTreeSet<usize> = (0..majority).map(|k| nodes[(start + k) % n]).collect();
        for &to in nodes {
            if !window.contains(&to) {
                dropped.insert((from, to));
            }
        }
    }
    Grudge { dropped }
}

/// Two halves that cannot talk to each other, joined by one bridge node that
/// talks to both: the bridge is `nodes[nodes.len() / 2]`, the sides are the
/// nodes before and after it.
pub fn bridge(nodes: &[usize]) -> Grudge {
    let middle = nodes.len() / 2;
    split(&[&nodes[..middle], &nodes[(middle + 1).min(nodes.len())..]])
}

/// Asymmetric cut: packets from any node in `from` to any node in `to` are
/// dropped; the reverse direction keeps working.
pub fn one_way(from: &[usize], to: &[usize]) -> Grudge {
    let dropped = from
        .iter()
        .flat_map(|&a| to.iter().map(move |&b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect();
    Grudge { dropped }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 3] = [3, 5, 7];

    fn cluster(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    /// A deterministic, non-trivial permutation of 0..n (what a caller would
    /// derive from its seed). A permutation because 2 is coprime with odd n.
    fn scrambled(n: usize) -> Vec<usize> {
        assert!(n % 2 == 1);
        (0..n).map(|i| (i * 2 + 1) % n).collect()
    }

    #[test]
    fn isolate_one_leaves_victim_without_links() {
        for n in SIZES {
            let nodes = cluster(n);
            for victim in 0..n {
                let g = isolate_one(&nodes, victim);
                assert_eq!(g.reachable_from(victim, &nodes), BTreeSet::from([victim]));
                assert_eq!(g.heard_by(victim, &nodes), BTreeSet::from([victim]));
                for &a in nodes.iter().filter(|&&a| a != victim) {
                    assert_eq!(g.reachable_from(a, &nodes).len(), n - 1);
                }
                let others: BTreeSet<usize> =
                    nodes.iter().copied().filter(|&a| a != victim).collect();
                assert_eq!(g.components(&nodes), vec![BTreeSet::from([victim]), others]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "not one of the nodes")]
    fn isolate_one_rejects_unknown_victim() {
        isolate_one(&[0, 1, 2], 9);
    }

    #[test]
    fn halves_have_no_links_between_sides() {
        for n in SIZES {
            let nodes = cluster(n);
            let (small, large) = halves_sides(&nodes, &scrambled(n));
            assert_eq!((small.len(), large.len()), (n / 2, n - n / 2));
            let g = halves(&nodes, &scrambled(n));
            for &a in &small {
                for &b in &large {
                    assert!(!g.can_send(a, b) && !g.can_send(b, a), "{a} <-> {b}");
                }
            }
            for side in [&small, &large] {
                for &a in side {
                    assert!(side.iter().all(|&b| g.can_send(a, b)));
                }
            }
            let sides: Vec<BTreeSet<usize>> =
                [small, large].map(|s| s.into_iter().collect()).into();
            assert_eq!(g.components(&nodes), sides);
        }
    }

    #[test]
    fn halves_follow_the_permutation() {
        let (small, large) = halves_sides(&[10, 20, 30, 40, 50], &[4, 0, 2, 1, 3]);
        assert_eq!((small, large), (vec![50, 10], vec![30, 20, 40]));
    }

    #[test]
    #[should_panic(expected = "not a permutation")]
    fn halves_rejects_bad_permutation() {
        halves(&[0, 1, 2], &[0, 0, 1]);
    }

    #[test]
    fn majority_ring_gives_each_node_a_distinct_majority() {
        for n in SIZES {
            // Also with a non-identity ring order and non-contiguous ids.
            let orders = [
                cluster(n),
                scrambled(n).iter().map(|i| i * 10 + 3).collect(),
            ];
            for nodes in orders {
                let g = majority_ring(&nodes);
                let mut seen = BTreeSet::new();
                for &a in &nodes {
                    let reach = g.reachable_from(a, &nodes);
                    assert!(reach.len() > n / 2, "n={n}: {a} reaches only {reach:?}");
                    assert!(seen.insert(reach.clone()), "n={n}: {reach:?} seen twice");
                }
            }
        }
    }

    #[test]
    fn majority_ring_of_five_is_symmetric_neighbours() {
        let g = majority_ring(&cluster(5));
        assert_eq!(g.reachable_from(0, &cluster(5)), BTreeSet::from([4, 0, 1]));
        assert!(g.dropped.iter().all(|&(a, b)| g.dropped.contains(&(b, a))));
    }

    #[test]
    fn bridge_node_reaches_both_sides_which_are_cut_apart() {
        for n in SIZES {
            let nodes = scrambled(n);
            let g = bridge(&nodes);
            let middle = n / 2;
            let bridge_node = nodes[middle];
            let all: BTreeSet<usize> = nodes.iter().copied().collect();
            assert_eq!(g.reachable_from(bridge_node, &nodes), all);
            assert_eq!(g.heard_by(bridge_node, &nodes), all);
            for &a in &nodes[..middle] {
                for &b in &nodes[middle + 1..] {
                    assert!(!g.can_send(a, b) && !g.can_send(b, a), "{a} <-> {b}");
                }
            }
            assert_eq!(g.components(&nodes).len(), 1, "bridged, so connected");
        }
    }

    #[test]
    fn one_way_drops_only_one_direction() {
        for n in SIZES {
            let nodes = cluster(n);
            let (from, to) = nodes.split_at(n / 2);
            let g = one_way(from, to);
            assert_eq!(g.dropped.len(), from.len() * to.len());
            for &a in from {
                for &b in to {
                    assert!(!g.can_send(a, b));
                    assert!(g.can_send(b, a));
                }
            }
        }
    }

    #[test]
    fn one_way_never_cuts_a_node_from_itself() {
        let g = one_way(&[0, 1], &[1, 2]);
        assert_eq!(g.dropped, BTreeSet::from([(0, 1), (0, 2), (1, 2)]));
    }

    #[test]
    fn ip_links_map_through_the_given_function() {
        let g = one_way(&[0], &[1]);
        let links = g.ip_links(super::super::namespace::node_ip);
        assert_eq!(
            links,
            vec![(Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12))]
        );
    }
}
