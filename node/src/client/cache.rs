//! The routing client's cache of the partition map, sans-IO: what it knows, and how each
//! refusal corrects it. The IO around it (fetching a map, sending, waiting) is in
//! [`super::RoutingClient`]; keeping the decisions here lets them be tested as data.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::wire::Correction;
use crate::partitioning::{NodeId, PartitionId, PartitionMap, RangeDescriptor};

/// What the sender does after a correction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The cache is corrected: look the target up again and send.
    Retry,
    /// The refusal said nothing the cache did not know (its descriptors were no newer):
    /// the replica is behind, so wait a moment before sending again.
    Stale,
    /// The cache cannot be corrected from the refusal: fetch the whole map first.
    Refetch,
}

#[derive(Clone, Debug, Default)]
pub struct MapCache {
    map: Option<PartitionMap>,
    /// Where each node serves, as the map's source said.
    nodes: BTreeMap<NodeId, SocketAddr>,
    /// The source's version of the map last installed (corrections bump the cache's own).
    installed: Option<u64>,
}

impl MapCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the cache with a map fetched from its source, at the source's `version`.
    pub fn install(&mut self, map: PartitionMap, version: u64) {
        self.installed = Some(version);
        // A node's own map registers the nodes that joined since the cluster formed.
        for (id, node) in map.live_nodes() {
            if let Ok(addr) = node.address.parse() {
                self.nodes.insert(id, addr);
            }
        }
        self.map = (!map.is_empty()).then_some(map);
    }

    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>) {
        self.nodes.extend(nodes);
    }

    /// The source version last installed, if any.
    pub fn installed(&self) -> Option<u64> {
        self.installed
    }

    pub fn is_known(&self) -> bool {
        self.map.is_some()
    }

    pub fn map(&self) -> Option<&PartitionMap> {
        self.map.as_ref()
    }

    pub fn locate(&self, key: &[u8]) -> Option<RangeDescriptor> {
        Some(self.map.as_ref()?.locate(key).clone())
    }

    pub fn get(&self, id: PartitionId) -> Option<RangeDescriptor> {
        self.map.as_ref()?.get(id).cloned()
    }

    /// The partitions that may hold keys of `[start, end)`, as [`PartitionMap::covering`].
    pub fn covering(&self, start: &[u8], end: &[u8]) -> Option<Vec<RangeDescriptor>> {
        let map = self.map.as_ref()?;
        Some(map.covering(start, end).into_iter().cloned().collect())
    }

    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.nodes.get(&node).copied()
    }

    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.nodes.values().copied()
    }

    /// Takes what a refusal says. Never guesses: a refusal that does not say enough to
    /// fix the cache makes the sender fetch the map.
    pub fn correct(&mut self, correction: &Correction) -> Next {
        let Some(map) = self.map.as_mut() else {
            return Next::Refetch;
        };
        match correction {
            Correction::NotLeader {
                partition,
                hint: Some(leader),
            } => {
                map.set_leader(*partition, *leader);
                Next::Retry
            }
            // An election is under way; the sender tries the replicas in turn.
            Correction::NotLeader { hint: None, .. } => Next::Retry,
            Correction::Newer(descriptors) => {
                let before = map.clone();
                match map.absorb(descriptors) {
                    Ok(()) if map.descriptors().eq(before.descriptors()) => {
                        *map = before;
                        Next::Stale
                    }
                    Ok(()) => Next::Retry,
                    Err(_) => Next::Refetch,
                }
            }
            Correction::Refetch => Next::Refetch,
        }
    }

    /// The node to send to for `descriptor`: its leader, unless that is one of
    /// `unreachable`; else the replicas in turn from `turn`. None if every replica is.
    pub fn pick(
        descriptor: &RangeDescriptor,
        unreachable: &[NodeId],
        turn: usize,
    ) -> Option<NodeId> {
        if let Some(leader) = descriptor.leader
            && !unreachable.contains(&leader)
        {
            return Some(leader);
        }
        let replicas = &descriptor.replicas;
        (0..replicas.len())
            .map(|i| replicas[(turn + i) % replicas.len()])
            .find(|node| !unreachable.contains(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::{KeySpan, LayoutSpec, RangeEpoch, Scheme};

    fn cache() -> MapCache {
        let spec = LayoutSpec::from_flags(
            None,
            Scheme::Range,
            vec!["g".into(), "p".into()],
            vec![1, 2, 3],
        )
        .expect("spec");
        let map = PartitionMap::new(spec.initial_descriptors()).expect("map");
        let mut cache = MapCache::new();
        cache.install(map, 1);
        cache
    }

    #[test]
    fn a_leader_hint_moves_the_next_send_and_nothing_else() {
        let mut cache = cache();
        let before = cache.locate(b"k").expect("known");
        let next = cache.correct(&Correction::NotLeader {
            partition: before.id,
            hint: Some(3),
        });
        assert_eq!(next, Next::Retry);
        let after = cache.locate(b"k").expect("known");
        assert_eq!(after.leader, Some(3));
        assert_eq!((after.epoch, &after.span), (before.epoch, &before.span));
        assert_eq!(MapCache::pick(&after, &[], 0), Some(3));
        assert_eq!(MapCache::pick(&after, &[3], 0), Some(1));
        assert_eq!(MapCache::pick(&after, &[1, 2, 3], 0), None);
    }

    #[test]
    fn newer_descriptors_from_a_split_replace_the_parent_whole() {
        let mut cache = cache();
        let parent = cache.locate(b"k").expect("known");
        let KeySpan::Range { start, end } = parent.span.clone() else {
            panic!("range")
        };
        let epoch = RangeEpoch {
            version: parent.epoch.version + 1,
            ..parent.epoch
        };
        let left = RangeDescriptor {
            span: KeySpan::Range {
                start,
                end: b"k".to_vec(),
            },
            epoch,
            ..parent.clone()
        };
        let right = RangeDescriptor {
            id: 99,
            span: KeySpan::Range {
                start: b"k".to_vec(),
                end,
            },
            epoch,
            ..parent.clone()
        };
        // One half alone leaves a gap: the cache refuses it and asks for the map.
        let mut half = cache.clone();
        assert_eq!(
            half.correct(&Correction::Newer(vec![left.clone()])),
            Next::Refetch
        );
        assert_eq!(half.locate(b"k"), Some(parent.clone()));
        assert_eq!(
            cache.correct(&Correction::Newer(vec![left, right])),
            Next::Retry
        );
        assert_eq!(cache.locate(b"k").map(|d| d.id), Some(99));
        assert_eq!(cache.locate(b"h").map(|d| d.id), Some(parent.id));
        // The parent's old descriptor arriving late changes nothing: the sender waits.
        assert_eq!(cache.correct(&Correction::Newer(vec![parent])), Next::Stale);
        assert_eq!(cache.locate(b"k").map(|d| d.id), Some(99));
    }

    #[test]
    fn an_unknown_map_or_a_missing_partition_means_fetch_the_map() {
        let mut empty = MapCache::new();
        assert!(!empty.is_known());
        assert_eq!(
            empty.correct(&Correction::NotLeader {
                partition: 1,
                hint: Some(2)
            }),
            Next::Refetch
        );
        assert_eq!(cache().correct(&Correction::Refetch), Next::Refetch);
    }
}
