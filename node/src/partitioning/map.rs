//! The partition map: every partition's descriptor, looked up by key. The consistent core
//! (group 0) keeps the authoritative copy as its state machine; every node and routing
//! client keeps a cache of it, corrected by the errors replicas return.
//!
//! Invariant ([`PartitionMap::validate`]): the spans tile the keyspace. Ranges are sorted,
//! contiguous from the empty key to the unbounded end, with no gap and no overlap; buckets
//! are `0..count`, each once. A change that would break it is refused whole, so a map is
//! never seen half-updated: a split reports all the descriptors it produced at once.

use std::collections::BTreeMap;

use super::descriptor::{KeySpan, NodeId, PartitionId, RangeDescriptor, RangeEpoch, printable};

/// The load a leader reports for its partition.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
}

/// Why a report was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The report describes a partition as it was before a change the map already has.
    #[error("stale report for partition {id} at epoch {reported}: the map has {current:?}")]
    StaleEpoch {
        id: PartitionId,
        reported: RangeEpoch,
        current: Vec<RangeDescriptor>,
    },
    /// Taking the report would leave the keyspace with a gap or an overlap.
    #[error("report would break the map: {0}")]
    WouldBreakTiling(String),
    #[error("invalid descriptor in report: {0}")]
    Invalid(String),
}

/// Where a node of the cluster stands, as the consistent core registered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    Active,
    /// Its replicas are being moved away; nothing new is placed on it.
    Draining,
    /// Out of the cluster for good; its id is not reused.
    Removed,
}

/// A node of the cluster: where it serves, and its state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRecord {
    pub address: String,
    pub state: NodeState,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionMap {
    /// The cluster's nodes: the bootstrap ones, and those that joined since.
    nodes: BTreeMap<NodeId, NodeRecord>,
    descriptors: BTreeMap<PartitionId, RangeDescriptor>,
    /// Range partitions by start key.
    by_start: BTreeMap<Vec<u8>, PartitionId>,
    /// Hash partitions by bucket index.
    by_bucket: Vec<PartitionId>,
    load: BTreeMap<PartitionId, Load>,
    /// Bumped by every change, so that a cache can tell whether it is behind.
    version: u64,
}

impl PartitionMap {
    pub fn new(descriptors: Vec<RangeDescriptor>) -> Result<Self, String> {
        let mut map = PartitionMap::default();
        for descriptor in descriptors {
            descriptor.validate()?;
            map.insert(descriptor);
        }
        map.version = 1;
        map.validate()?;
        Ok(map)
    }

    /// A map as a snapshot holds it: descriptors, their loads, and the version it was at.
    pub fn restore(
        descriptors: Vec<RangeDescriptor>,
        loads: Vec<(PartitionId, Load)>,
        version: u64,
    ) -> Result<Self, String> {
        let mut map = PartitionMap::new(descriptors)?;
        // A partition that never reported has no load entry; one of zeros reads the same.
        map.load = loads
            .into_iter()
            .filter(|(_, load)| *load != Load::default())
            .collect();
        map.version = version;
        Ok(map)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The map with `nodes` registered (the bootstrap nodes, or a snapshot's).
    pub fn with_nodes(mut self, nodes: impl IntoIterator<Item = (NodeId, NodeRecord)>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeRecord> {
        &self.nodes
    }

    /// Nodes that are not removed, with their addresses.
    pub fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &NodeRecord)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state != NodeState::Removed)
            .map(|(&id, n)| (id, n))
    }

    /// Registers a joining node. A retry of the same join changes nothing (`Ok(false)`);
    /// an id or address taken by another node, or the id of a removed one, is refused.
    pub fn add_node(&mut self, id: NodeId, address: &str) -> Result<bool, String> {
        if id == 0 {
            return Err("node id 0 is not valid; ids start at 1".into());
        }
        if let Some(known) = self.nodes.get(&id) {
            return match known.state {
                NodeState::Removed => Err(format!(
                    "node id {id} belonged to a node that was removed from the cluster; ids \
                     are not reused: choose another --id"
                )),
                _ if known.address == address => Ok(false),
                _ => Err(format!(
                    "node id {id} is in use by the node at {}; choose another --id",
                    known.address
                )),
            };
        }
        if let Some((other, _)) = self
            .nodes
            .iter()
            .find(|(_, n)| n.address == address && n.state != NodeState::Removed)
        {
            return Err(format!(
                "{address} is where node {other} serves; give the new node its own --listen"
            ));
        }
        self.nodes.insert(
            id,
            NodeRecord {
                address: address.to_string(),
                state: NodeState::Active,
            },
        );
        self.version += 1;
        Ok(true)
    }

    /// Moves a node to `state`: active to draining (and back), either to removed. A
    /// removed node stays removed.
    pub fn set_node_state(&mut self, id: NodeId, state: NodeState) -> Result<(), String> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Err(format!("there is no node {id} in the cluster"));
        };
        if node.state == NodeState::Removed && state != NodeState::Removed {
            return Err(format!("node {id} was removed from the cluster"));
        }
        if node.state != state {
            node.state = state;
            self.version += 1;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.descriptors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }

    pub fn get(&self, id: PartitionId) -> Option<&RangeDescriptor> {
        self.descriptors.get(&id)
    }

    pub fn load(&self, id: PartitionId) -> Load {
        self.load.get(&id).copied().unwrap_or_default()
    }

    /// Every descriptor, by id.
    pub fn descriptors(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.descriptors.values()
    }

    /// The partition holding `key`. A valid map always has one.
    pub fn locate(&self, key: &[u8]) -> &RangeDescriptor {
        let id = if let Some(count) = self.bucket_count() {
            self.by_bucket[super::hashing::bucket_of(key, count) as usize]
        } else {
            *self
                .by_start
                .range(..=key.to_vec())
                .next_back()
                .expect("ranges start at the empty key")
                .1
        };
        &self.descriptors[&id]
    }

    /// Range partitions that hold keys in `[start, end)` (empty `end`: unbounded), in key
    /// order. For hash partitioning every bucket may, so all of them, by bucket.
    pub fn covering(&self, start: &[u8], end: &[u8]) -> Vec<&RangeDescriptor> {
        if self.bucket_count().is_some() {
            return self
                .by_bucket
                .iter()
                .map(|id| &self.descriptors[id])
                .collect();
        }
        let first = self.locate(start).id;
        let mut covering = vec![&self.descriptors[&first]];
        let after = self
            .by_start
            .range(start.to_vec()..)
            .filter(|(s, _)| s.as_slice() > start)
            .take_while(|(s, _)| end.is_empty() || s.as_slice() < end);
        covering.extend(after.map(|(_, id)| &self.descriptors[id]));
        covering
    }

    /// Takes a leader's report: the descriptors of its partition (several after a split,
    /// all at once), the term it leads in, and its load. Refused whole if any reported
    /// descriptor is older than what the map has for the keys it covers, or if the map
    /// would no longer tile the keyspace.
    pub fn apply_report(
        &mut self,
        reported: &[RangeDescriptor],
        term: u64,
        load: Load,
    ) -> Result<(), ReportError> {
        for descriptor in reported {
            descriptor.validate().map_err(ReportError::Invalid)?;
            let clashing: Vec<RangeDescriptor> = self
                .descriptors
                .values()
                .filter(|d| d.id == descriptor.id || d.span.overlaps(&descriptor.span))
                .filter(|d| supersedes(d, descriptor))
                .cloned()
                .collect();
            if !clashing.is_empty() {
                return Err(ReportError::StaleEpoch {
                    id: descriptor.id,
                    reported: descriptor.epoch,
                    current: clashing,
                });
            }
        }
        let mut next = self.clone();
        for descriptor in reported {
            // Whatever the new descriptor overlaps is what it came from (a split's parent,
            // a merge's halves): it goes.
            let replaced: Vec<PartitionId> = next
                .descriptors
                .values()
                .filter(|d| d.id == descriptor.id || d.span.overlaps(&descriptor.span))
                .map(|d| d.id)
                .collect();
            let mut descriptor = descriptor.clone();
            if let Some(known) = next.descriptors.get(&descriptor.id)
                && known.leader_term > term
            {
                // A leader of an older term reporting late: keep the newer leader.
                descriptor.leader = known.leader;
                descriptor.leader_term = known.leader_term;
            } else {
                descriptor.leader_term = term;
            }
            for id in replaced {
                next.remove(id);
            }
            next.load.insert(descriptor.id, load);
            next.insert(descriptor);
        }
        next.validate().map_err(ReportError::WouldBreakTiling)?;
        next.version = self.version + 1;
        *self = next;
        Ok(())
    }

    /// A cache's correction: descriptors a replica returned with `EpochNotMatch` or
    /// `KeyNotInRange`, newer than what the cache holds. Taken whole as a report would be
    /// (stale ones refused, tiling kept), but each keeps the leader it names: the replica
    /// knows better than the cache.
    pub fn absorb(&mut self, newer: &[RangeDescriptor]) -> Result<(), ReportError> {
        let mut next = self.clone();
        for descriptor in newer {
            descriptor.validate().map_err(ReportError::Invalid)?;
            let known_newer = next.descriptors.values().any(|d| {
                (d.id == descriptor.id || d.span.overlaps(&descriptor.span))
                    && supersedes(d, descriptor)
            });
            // A correction that raced a newer one says nothing the cache does not know.
            if !known_newer {
                next.replace_unchecked(descriptor.clone());
            }
        }
        // The halves of a split tile only together, so the check is on the whole.
        next.validate().map_err(ReportError::WouldBreakTiling)?;
        next.version = self.version + 1;
        *self = next;
        Ok(())
    }

    /// A cache's leader hint from a `NotLeader` refusal. Leadership is not part of the
    /// epoch, so the descriptor is otherwise unchanged.
    pub fn set_leader(&mut self, id: PartitionId, leader: NodeId) {
        if let Some(descriptor) = self.descriptors.get_mut(&id) {
            descriptor.leader = Some(leader);
        }
    }

    fn replace_unchecked(&mut self, descriptor: RangeDescriptor) {
        let replaced: Vec<PartitionId> = self
            .descriptors
            .values()
            .filter(|d| d.id == descriptor.id || d.span.overlaps(&descriptor.span))
            .map(|d| d.id)
            .collect();
        for id in replaced {
            self.remove(id);
        }
        self.insert(descriptor);
    }

    /// The tiling invariant; see the module doc.
    pub fn validate(&self) -> Result<(), String> {
        if self.descriptors.is_empty() {
            return Err("the map has no partitions".into());
        }
        if let Some(count) = self.bucket_count() {
            if self.by_bucket.len() != count as usize || !self.by_start.is_empty() {
                return Err(format!(
                    "hash map with {count} buckets has {} bucket partitions and {} ranges",
                    self.by_bucket.len(),
                    self.by_start.len()
                ));
            }
            for (index, id) in self.by_bucket.iter().enumerate() {
                // A descriptor from a peer may have left a bucket pointing at nothing.
                match self.descriptors.get(id).map(|d| &d.span) {
                    Some(KeySpan::Bucket { index: i, count: c })
                        if *i as usize == index && *c == count => {}
                    Some(other) => {
                        return Err(format!("bucket {index} is held by {id} ({other})"));
                    }
                    None => return Err(format!("bucket {index} names no partition ({id})")),
                }
            }
            return Ok(());
        }
        let mut expected_start: Vec<u8> = Vec::new();
        let mut ended = false;
        for (start, id) in &self.by_start {
            let KeySpan::Range { start: s, end } = &self.descriptors[id].span else {
                return Err(format!("partition {id} is a bucket in a range map"));
            };
            if ended || s != start || *start != expected_start {
                return Err(format!(
                    "the ranges leave a gap or overlap at {} (partition {id} starts at {})",
                    printable(&expected_start),
                    printable(start)
                ));
            }
            ended = end.is_empty();
            expected_start = end.clone();
        }
        if !ended {
            return Err(format!(
                "no partition holds keys from {}",
                printable(&expected_start)
            ));
        }
        if self.by_start.len() != self.descriptors.len() {
            return Err("some partitions are not indexed by their start key".into());
        }
        Ok(())
    }

    fn bucket_count(&self) -> Option<u32> {
        match &self.descriptors.values().next()?.span {
            KeySpan::Bucket { count, .. } => Some(*count),
            KeySpan::Range { .. } => None,
        }
    }

    fn insert(&mut self, descriptor: RangeDescriptor) {
        match &descriptor.span {
            KeySpan::Range { start, .. } => {
                self.by_start.insert(start.clone(), descriptor.id);
            }
            KeySpan::Bucket { index, count } => {
                if self.by_bucket.len() < *count as usize {
                    self.by_bucket.resize(*count as usize, descriptor.id);
                }
                self.by_bucket[*index as usize] = descriptor.id;
            }
        }
        self.descriptors.insert(descriptor.id, descriptor);
    }

    fn remove(&mut self, id: PartitionId) {
        if let Some(old) = self.descriptors.remove(&id)
            && let KeySpan::Range { start, .. } = &old.span
            && self.by_start.get(start) == Some(&id)
        {
            self.by_start.remove(start);
        }
        self.load.remove(&id);
    }
}

/// Whether the map's `known` descriptor is newer than `reported` for the keys they share:
/// then the report is stale. For the same partition both epoch parts count; for another
/// partition whose span overlaps, only the version does (its replica changes say nothing
/// about this one's keys).
fn supersedes(known: &RangeDescriptor, reported: &RangeDescriptor) -> bool {
    if known.id == reported.id {
        reported.epoch.is_stale_against(&known.epoch)
    } else {
        reported.epoch.version <= known.epoch.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::layout::{LayoutSpec, Scheme};

    fn range_map() -> PartitionMap {
        let spec = LayoutSpec::from_flags(
            None,
            Scheme::Range,
            vec!["g".into(), "p".into()],
            vec![1, 2, 3],
        )
        .unwrap();
        PartitionMap::new(spec.initial_descriptors()).unwrap()
    }

    fn span(start: &str, end: &str) -> KeySpan {
        KeySpan::Range {
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn keys_are_found_in_the_range_that_holds_them() {
        let map = range_map();
        assert_eq!(map.locate(b"").id, 1);
        assert_eq!(map.locate(b"f\xff").id, 1);
        assert_eq!(map.locate(b"g").id, 2);
        assert_eq!(map.locate(b"zzz").id, 3);
        let ids = |s: &str, e: &str| -> Vec<u64> {
            map.covering(s.as_bytes(), e.as_bytes())
                .iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids("a", "h"), [1, 2]);
        assert_eq!(
            ids("g", "p"),
            [2],
            "an end at a boundary excludes the next range"
        );
        assert_eq!(ids("h", ""), [2, 3]);
        assert_eq!(ids("", ""), [1, 2, 3]);
    }

    #[test]
    fn a_hash_map_finds_every_key_in_its_bucket() {
        let spec = LayoutSpec::from_flags(Some(16), Scheme::Hash, vec![], vec![1, 2, 3]).unwrap();
        let map = PartitionMap::new(spec.initial_descriptors()).unwrap();
        for i in 0..200 {
            let key = format!("k{i}");
            assert!(map.locate(key.as_bytes()).contains(key.as_bytes()));
        }
        assert_eq!(map.covering(b"a", b"b").len(), 16);
    }

    #[test]
    fn a_report_from_an_older_epoch_is_rejected_and_names_the_current_one() {
        let mut map = range_map();
        let mut moved = map.get(2).unwrap().clone();
        moved.epoch.conf_version += 1;
        moved.leader = Some(moved.replicas[0]);
        map.apply_report(std::slice::from_ref(&moved), 5, Load::default())
            .unwrap();
        assert_eq!(map.version(), 2);
        let mut stale = moved.clone();
        stale.epoch.conf_version -= 1;
        match map.apply_report(&[stale], 6, Load::default()) {
            Err(ReportError::StaleEpoch { current, .. }) => {
                assert_eq!(current.len(), 1);
                assert_eq!((current[0].id, current[0].epoch), (moved.id, moved.epoch));
                assert_eq!(
                    current[0].leader_term, 5,
                    "the map keeps the reporting term"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(map.version(), 2, "a refused report changes nothing");
    }

    #[test]
    fn a_split_reported_whole_keeps_the_tiling_and_a_half_report_is_refused() {
        let mut map = range_map();
        let parent = map.get(2).unwrap().clone();
        let mut left = parent.clone();
        left.span = span("g", "k");
        left.epoch.version += 1;
        let mut right = left.clone();
        right.id = 4;
        right.span = span("k", "p");
        assert!(matches!(
            map.apply_report(std::slice::from_ref(&left), 1, Load::default()),
            Err(ReportError::WouldBreakTiling(_))
        ));
        map.apply_report(&[left, right], 1, Load::default())
            .unwrap();
        assert_eq!(map.locate(b"h").id, 2);
        assert_eq!(map.locate(b"m").id, 4);
        assert_eq!(map.validate(), Ok(()));
        // The parent's old descriptor, reported late by a deposed leader, is stale now.
        assert!(matches!(
            map.apply_report(&[parent], 9, Load::default()),
            Err(ReportError::StaleEpoch { .. })
        ));
    }

    #[test]
    fn a_late_report_from_an_older_term_keeps_the_newer_leader() {
        let mut map = range_map();
        let mut now = map.get(1).unwrap().clone();
        now.leader = Some(now.replicas[1]);
        map.apply_report(std::slice::from_ref(&now), 8, Load::default())
            .unwrap();
        let mut late = now.clone();
        late.leader = Some(now.replicas[0]);
        map.apply_report(&[late], 7, Load::default()).unwrap();
        assert_eq!(map.get(1).unwrap().leader, now.leader);
        assert_eq!(map.get(1).unwrap().leader_term, 8);
    }

    #[test]
    fn a_map_with_a_gap_is_refused() {
        let mut descriptors = range_map().descriptors().cloned().collect::<Vec<_>>();
        descriptors.remove(1);
        let error = PartitionMap::new(descriptors).unwrap_err();
        assert!(error.contains("gap"), "{error}");
    }
}
