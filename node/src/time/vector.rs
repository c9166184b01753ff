//! Vector clocks (Fidge 1988, Mattern 1989): one counter per node. Where a Lamport clock
//! only promises "if a happened before b then L(a) < L(b)", a vector clock also gives the
//! converse: V(a) < V(b) exactly when a happened before b, and two events whose clocks
//! are incomparable were concurrent. The price is one entry per node that ever acted.
//!
//! The comparison is a partial order, so the type implements `PartialOrd` and not `Ord`:
//! `partial_cmp` answers `None` for concurrent clocks.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A node's id, as everywhere in the node.
pub type NodeId = u64;

/// A vector clock. Absent entries are zero, so clocks of different sizes compare.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VectorClock {
    entries: BTreeMap<NodeId, u64>,
}

impl VectorClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// `node`'s counter (0 if it never ticked here).
    pub fn get(&self, node: NodeId) -> u64 {
        self.entries.get(&node).copied().unwrap_or(0)
    }

    /// A local event at `node`: its counter moves by one. Returns the new value.
    pub fn tick(&mut self, node: NodeId) -> u64 {
        let counter = self.entries.entry(node).or_insert(0);
        *counter = counter.saturating_add(1);
        *counter
    }

    /// The least clock at or above both: what a node knows after receiving `other`.
    pub fn merge(&mut self, other: &VectorClock) {
        for (&node, &counter) in &other.entries {
            let mine = self.entries.entry(node).or_insert(0);
            *mine = (*mine).max(counter);
        }
    }

    /// Receiving a message stamped `remote` at `node`: merge, then tick, so the receive
    /// is after both the send and everything `node` did before.
    pub fn observe(&mut self, node: NodeId, remote: &VectorClock) -> u64 {
        self.merge(remote);
        self.tick(node)
    }

    /// Every entry of `self` at or below `other`'s: everything `self` saw, `other` saw.
    pub fn descends_from(&self, other: &VectorClock) -> bool {
        other.entries.iter().all(|(&node, &c)| self.get(node) >= c)
    }

    /// Neither clock is at or below the other.
    pub fn concurrent_with(&self, other: &VectorClock) -> bool {
        self.partial_cmp(other).is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().map(|(&n, &c)| (n, c))
    }
}

impl FromIterator<(NodeId, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().filter(|&(_, c)| c > 0).collect(),
        }
    }
}

impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.descends_from(other), other.descends_from(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_orders_the_receive_after_the_send_and_strangers_are_concurrent() {
        let (mut a, mut b, mut c) = (VectorClock::new(), VectorClock::new(), VectorClock::new());
        a.tick(1);
        let sent = a.clone();
        b.observe(2, &sent);
        assert!(sent < b, "the receive happened after the send");
        c.tick(3);
        assert!(c.concurrent_with(&b), "c never heard of a or b");
        assert_eq!(c.partial_cmp(&b), None);
        // Absent entries are zero: a clock with an explicit zero is the same clock.
        let zero: VectorClock = [(1, 1), (2, 0)].into_iter().collect();
        assert_eq!(zero.partial_cmp(&sent), Some(Ordering::Equal));
    }

    fn clock() -> impl Strategy<Value = VectorClock> {
        proptest::collection::btree_map(1u64..5, 0u64..4, 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        // A partial order: reflexive, antisymmetric, transitive; and merge is the join.
        #[test]
        fn comparison_is_a_partial_order(a in clock(), b in clock(), c in clock()) {
            prop_assert_eq!(a.partial_cmp(&a), Some(Ordering::Equal));
            if a <= b && b <= a {
                prop_assert_eq!(&a, &b);
            }
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
            prop_assert_eq!(a.partial_cmp(&b), b.partial_cmp(&a).map(Ordering::reverse));
        }

        #[test]
        fn merge_is_the_least_upper_bound(a in clock(), b in clock(), c in clock()) {
            let mut join = a.clone();
            join.merge(&b);
            prop_assert!(a <= join && b <= join);
            if a <= c && b <= c {
                prop_assert!(join <= c, "no upper bound is below the join");
            }
        }

        // Happens-before, over random runs of three nodes sending to one another: an event
        // that a message chain connects to a later one is below it; and every pair the clock
        // calls ordered is connected.
        #[test]
        fn clocks_capture_happens_before(steps in proptest::collection::vec((0usize..3, 0usize..3), 1..30)) {
            let mut clocks = vec![VectorClock::new(); 3];
            // Every event's clock, and for each event the set of events before it.
            let mut events: Vec<(VectorClock, Vec<bool>)> = Vec::new();
            let mut last: Vec<Option<usize>> = vec![None; 3];
            for (from, to) in steps {
                let mut before = vec![false; events.len() + 2];
                let mark = |i: Option<usize>, before: &mut Vec<bool>, events: &Vec<(VectorClock, Vec<bool>)>| {
                    if let Some(i) = i {
                        before[i] = true;
                        for (j, &b) in events[i].1.iter().enumerate() {
                            if b { before[j] = true; }
                        }
                    }
                };
                // A send at `from`, then its receive at `to` (a tick if to == from).
                mark(last[from], &mut before, &events);
                clocks[from].tick(from as u64 + 1);
                let send = events.len();
                events.push((clocks[from].clone(), before.clone()));
                last[from] = Some(send);
                let mut after = vec![false; events.len() + 1];
                mark(Some(send), &mut after, &events);
                mark(last[to], &mut after, &events);
                let stamp = clocks[from].clone();
                clocks[to].observe(to as u64 + 1, &stamp);
                last[to] = Some(events.len());
                events.push((clocks[to].clone(), after));
            }
            for (i, (a, _)) in events.iter().enumerate() {
                for (j, (b, b_before)) in events.iter().enumerate() {
                    let happened_before = b_before.get(i).copied().unwrap_or(false);
                    prop_assert_eq!(happened_before, i != j && a < b, "events {} and {}", i, j);
                }
            }
        }
    }
}
