//! Dotted version vectors with siblings (Preguiça et al., "Dotted Version Vectors:
//! Logical Clocks for Optimistic Replication", 2010; Riak's `dvvset`).
//!
//! A key's value in a leaderless store is a set of siblings, each a value with its *dot*:
//! the (node, counter) event that wrote it. The set also holds a version vector, the
//! causal past every replica of it has seen. A client reads the siblings and a *context*
//! (that vector joined with the dots it read) and sends the context back with its next
//! write, which says which siblings the write overwrites: those the context covers. A
//! write with an older context leaves the siblings it never saw alone, so two clients
//! writing concurrently leave two siblings, not one lost write.
//!
//! Why dots and not a plain version vector per value: with per-value vectors, a node
//! that coordinates two concurrent writes must give both the same entry for itself, and
//! one looks like it overwrote the other (the "sibling explosion" or the lost write of
//! Riak's early vclocks). The dot names each write apart from its causal past.

use std::collections::BTreeMap;

use super::vector::{NodeId, VectorClock};

/// The event that wrote a value: `node`'s `counter`-th write of this key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

impl Dot {
    fn covered_by(&self, clock: &VectorClock) -> bool {
        clock.get(self.node) >= self.counter
    }
}

/// One key's siblings and their shared causal past.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Siblings<V> {
    /// What every replica holding this set has seen, writes since overwritten included.
    clock: VectorClock,
    /// The values no write has overwritten yet, by their dots.
    values: BTreeMap<Dot, V>,
}

impl<V> Default for Siblings<V> {
    fn default() -> Self {
        Self {
            clock: VectorClock::new(),
            values: BTreeMap::new(),
        }
    }
}

impl<V: Clone> Siblings<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The values a read returns (one, or several concurrent ones), by their dots.
    pub fn values(&self) -> impl Iterator<Item = (Dot, &V)> {
        self.values.iter().map(|(d, v)| (*d, v))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The context a read hands the client: everything its values descend from.
    pub fn context(&self) -> VectorClock {
        let mut context = self.clock.clone();
        for dot in self.values.keys() {
            context.merge(&[(dot.node, dot.counter)].into_iter().collect());
        }
        context
    }

    /// A client's write, coordinated by `node`, of a value it wrote having read `context`:
    /// the siblings `context` covers are overwritten, the others stay beside the new one.
    /// Returns the new value's dot.
    pub fn write(&mut self, node: NodeId, context: &VectorClock, value: V) -> Dot {
        let mine = self
            .values
            .keys()
            .filter(|d| d.node == node)
            .map(|d| d.counter)
            .chain([self.clock.get(node), context.get(node)])
            .max()
            .unwrap_or(0);
        let dot = Dot {
            node,
            counter: mine + 1,
        };
        self.values.retain(|d, _| !d.covered_by(context));
        self.clock.merge(context);
        self.values.insert(dot, value);
        dot
    }

    /// Anti-entropy or read repair: the set both replicas would hold had each seen
    /// every write the other saw. A sibling survives unless the other side has seen its
    /// dot and no longer holds it (it was overwritten there).
    pub fn merge(&mut self, other: &Siblings<V>) {
        self.merge_with(other, false);
    }

    /// `merge` with the seeded bug `vv-merge-drops-sibling`: a sibling the other side does
    /// not hold is dropped even when the other side never saw it, so a write concurrent
    /// with the other side's is lost in the merge.
    pub fn merge_with(&mut self, other: &Siblings<V>, drop_unseen_siblings: bool) {
        let mut kept: BTreeMap<Dot, V> = BTreeMap::new();
        for (dot, value) in &self.values {
            let other_saw = dot.covered_by(&other.clock) || drop_unseen_siblings;
            if !other_saw || other.values.contains_key(dot) {
                kept.insert(*dot, value.clone());
            }
        }
        for (dot, value) in &other.values {
            if !dot.covered_by(&self.clock) || self.values.contains_key(dot) {
                kept.insert(*dot, value.clone());
            }
        }
        self.clock.merge(&other.clock);
        self.values = kept;
    }

    /// The siblings' shared causal past (for digests and the wire).
    pub fn clock(&self) -> &VectorClock {
        &self.clock
    }

    /// Rebuilds a set from its parts (the wire, a snapshot).
    pub fn from_parts(clock: VectorClock, values: impl IntoIterator<Item = (Dot, V)>) -> Self {
        Self {
            clock,
            values: values.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn concurrent_writes_stay_siblings_and_a_write_that_saw_both_replaces_them() {
        let mut key = Siblings::new();
        let empty = key.context();
        key.write(1, &empty, "a");
        // Two clients both read nothing and write through different nodes.
        let mut other = Siblings::new();
        other.write(2, &empty, "b");
        key.merge(&other);
        let mut values: Vec<&str> = key.values().map(|(_, v)| *v).collect();
        values.sort_unstable();
        assert_eq!(values, ["a", "b"], "neither write is lost");
        // A client that read both writes one value over them.
        let seen = key.context();
        key.write(1, &seen, "c");
        assert_eq!(key.values().map(|(_, v)| *v).collect::<Vec<_>>(), ["c"]);
        // A replica that still holds "b" learns it was overwritten.
        other.merge(&key);
        assert_eq!(other.values().map(|(_, v)| *v).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn one_node_coordinating_two_concurrent_writes_keeps_both() {
        let mut key = Siblings::new();
        let empty = key.context();
        key.write(1, &empty, 1);
        key.write(1, &empty, 2);
        assert_eq!(
            key.len(),
            2,
            "a stale context overwrites nothing it did not see"
        );
    }

    #[test]
    fn the_seeded_merge_drops_a_concurrent_sibling() {
        let mut key = Siblings::new();
        let empty = key.context();
        key.write(1, &empty, "a");
        let mut other = Siblings::new();
        other.write(2, &empty, "b");
        let mut buggy = key.clone();
        buggy.merge_with(&other, true);
        assert_eq!(buggy.values().map(|(_, v)| *v).collect::<Vec<_>>(), ["b"]);
    }

    /// A run: writes at random replicas with the context of a random earlier read of that
    /// replica, and merges between random replicas.
    #[derive(Clone, Debug)]
    enum Step {
        Write { replica: usize, stale: bool },
        Merge { from: usize, to: usize },
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, any::<bool>())
                    .prop_map(|(replica, stale)| Step::Write { replica, stale }),
                (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Merge { from, to }),
            ],
            1..40,
        )
    }

    proptest! {
        // Never a lost write: after every replica merges with every other, the values left
        // are exactly the writes that no later write's context covered.
        #[test]
        fn merging_never_loses_a_concurrent_write(steps in steps()) {
            let mut replicas: Vec<Siblings<u32>> = vec![Siblings::new(); 3];
            // Each write: its dot, and the context it was written with.
            let mut writes: Vec<(Dot, VectorClock)> = Vec::new();
            for (n, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Write { replica, stale } => {
                        let context = if stale { VectorClock::new() } else { replicas[replica].context() };
                        let dot = replicas[replica].write(replica as u64 + 1, &context, n as u32);
                        writes.push((dot, context));
                    }
                    Step::Merge { from, to } => {
                        let source = replicas[from].clone();
                        replicas[to].merge(&source);
                    }
                }
            }
            for _ in 0..2 {
                for from in 0..3 {
                    for to in 0..3 {
                        let source = replicas[from].clone();
                        replicas[to].merge(&source);
                    }
                }
            }
            let overwritten = |dot: &Dot| writes.iter().any(|(_, context)| dot.covered_by(context));
            let expected: Vec<Dot> = writes.iter().map(|(d, _)| *d).filter(|d| !overwritten(d)).collect();
            for replica in &replicas {
                let held: Vec<Dot> = replica.values().map(|(d, _)| d).collect();
                let mut want = expected.clone();
                want.sort_unstable();
                prop_assert_eq!(&held, &want);
                prop_assert_eq!(replica, &replicas[0], "replicas converge");
            }
            // Dots are unique: no two writes share one.
            let mut dots: Vec<Dot> = writes.iter().map(|(d, _)| *d).collect();
            dots.sort_unstable();
            dots.dedup();
            prop_assert_eq!(dots.len(), writes.len());
        }
    }
}
