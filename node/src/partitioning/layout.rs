//! The layout a cluster is formed with: how keys are partitioned and where the partitions
//! go. Given the same flags, every node computes the same initial descriptors, so the
//! first nodes need no coordination to agree on them; the layout is then written to each
//! node's data directory, and a restart with flags that disagree is refused.

use serde::{Deserialize, Serialize};

use super::descriptor::{CORE_GROUP, KeySpan, NodeId, PartitionId, RangeDescriptor, RangeEpoch};
use super::hashing::Placement;

/// Most partitions a cluster may be formed with: each is a Raft group on every replica.
pub const PARTITIONS_MAX: u32 = 4096;
/// Replicas per partition unless `--replicas` says otherwise (fewer if the cluster is
/// smaller), as in TiKV and CockroachDB.
pub const REPLICATION_FACTOR: u32 = 3;
/// Most replicas per partition: every one is a voter, and quorums grow with them.
pub const REPLICATION_FACTOR_MAX: u32 = 7;
/// Nodes holding the consistent core (group 0): the first ones by id.
pub const CORE_REPLICAS: usize = 3;
/// Longest split key, in bytes.
pub const SPLIT_KEY_BYTES_MAX: usize = 4096;

/// How keys are partitioned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Contiguous key ranges, split at given keys: scans stay in key order.
    #[default]
    Range,
    /// Buckets by a stable hash of the key: load spreads whatever the keys look like.
    Hash,
}

/// What the bootstrap flags say (`--partitions`, `--partitioning`, `--split-at`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    pub partitions: u32,
    pub scheme: Scheme,
    /// For `range`: the keys where one partition ends and the next begins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_keys: Vec<String>,
    /// The cluster's node ids when it was formed.
    pub nodes: Vec<NodeId>,
    /// Voting replicas per partition.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
}

fn default_replicas() -> u32 {
    REPLICATION_FACTOR
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("--partitions must be between 1 and {PARTITIONS_MAX}, got {0}")]
    PartitionCount(u32),
    #[error(
        "--split-at gives {given} keys, so there are {} partitions, but --partitions says {partitions}: give one more partition than split keys, or leave --partitions out",
        given + 1
    )]
    SplitCount { given: usize, partitions: u32 },
    #[error(
        "--split-at keys must be strictly increasing and not empty; {0:?} is out of order, repeated or empty"
    )]
    SplitOrder(String),
    #[error("--split-at key {0:?} is longer than {SPLIT_KEY_BYTES_MAX} bytes")]
    SplitTooLong(String),
    #[error("--split-at applies only to --partitioning range")]
    SplitWithHash,
    #[error("the cluster has no nodes")]
    NoNodes,
    #[error("--replicas must be between 1 and {REPLICATION_FACTOR_MAX}, got {0}")]
    ReplicaCount(u32),
}

impl LayoutSpec {
    /// A spec from the flags. `partitions` may be left out when split keys are given.
    pub fn from_flags(
        partitions: Option<u32>,
        scheme: Scheme,
        split_keys: Vec<String>,
        nodes: Vec<NodeId>,
    ) -> Result<Self, LayoutError> {
        let partitions = match (partitions, split_keys.len()) {
            (Some(n), _) => n,
            (None, 0) => 1,
            (None, given) => u32::try_from(given + 1).unwrap_or(u32::MAX),
        };
        let mut nodes = nodes;
        nodes.sort_unstable();
        nodes.dedup();
        let spec = LayoutSpec {
            partitions,
            scheme,
            split_keys,
            nodes,
            replicas: REPLICATION_FACTOR,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), LayoutError> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(LayoutError::PartitionCount(self.partitions));
        }
        if self.nodes.is_empty() {
            return Err(LayoutError::NoNodes);
        }
        if !(1..=REPLICATION_FACTOR_MAX).contains(&self.replicas) {
            return Err(LayoutError::ReplicaCount(self.replicas));
        }
        if self.scheme == Scheme::Hash && !self.split_keys.is_empty() {
            return Err(LayoutError::SplitWithHash);
        }
        if !self.split_keys.is_empty() && self.split_keys.len() + 1 != self.partitions as usize {
            return Err(LayoutError::SplitCount {
                given: self.split_keys.len(),
                partitions: self.partitions,
            });
        }
        let mut previous: Option<&str> = None;
        for key in &self.split_keys {
            if key.len() > SPLIT_KEY_BYTES_MAX {
                return Err(LayoutError::SplitTooLong(key.clone()));
            }
            if key.is_empty() || previous.is_some_and(|p| p >= key.as_str()) {
                return Err(LayoutError::SplitOrder(key.clone()));
            }
            previous = Some(key);
        }
        Ok(())
    }

    /// The split points of a range layout: the given keys, or `partitions - 1` points
    /// spread evenly over the first two bytes of the keyspace.
    pub fn split_points(&self) -> Vec<Vec<u8>> {
        if !self.split_keys.is_empty() {
            return self
                .split_keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect();
        }
        let n = u64::from(self.partitions);
        (1..n)
            .map(|i| {
                let point = (i * 65_536 / n) as u16;
                point.to_be_bytes().to_vec()
            })
            .collect()
    }

    /// The nodes holding the consistent core.
    pub fn core_replicas(&self) -> Vec<NodeId> {
        self.nodes.iter().copied().take(CORE_REPLICAS).collect()
    }

    /// The initial descriptors, ids 1..=partitions, at epoch v1/c1, placed by rendezvous
    /// hashing on the partition id.
    pub fn initial_descriptors(&self) -> Vec<RangeDescriptor> {
        let replicas =
            |id: PartitionId| Placement::Rendezvous.place(id, &self.nodes, self.replicas as usize);
        let epoch = RangeEpoch {
            version: 1,
            conf_version: 1,
        };
        let spans: Vec<KeySpan> = match self.scheme {
            Scheme::Hash => (0..self.partitions)
                .map(|index| KeySpan::Bucket {
                    index,
                    count: self.partitions,
                })
                .collect(),
            Scheme::Range => {
                let points = self.split_points();
                let starts = std::iter::once(Vec::new()).chain(points.iter().cloned());
                let ends = points.iter().cloned().chain(std::iter::once(Vec::new()));
                starts
                    .zip(ends)
                    .map(|(start, end)| KeySpan::Range { start, end })
                    .collect()
            }
        };
        spans
            .into_iter()
            .zip(1..)
            .map(|(span, id)| {
                debug_assert_ne!(id, CORE_GROUP);
                RangeDescriptor {
                    id,
                    span,
                    epoch,
                    replicas: replicas(id),
                    leader: None,
                    leader_term: 0,
                    learners: Vec::new(),
                }
            })
            .collect()
    }

    /// Where a stored layout and the flags disagree, for the error a restart gives.
    pub fn differences(&self, flags: &LayoutSpec) -> Vec<String> {
        let mut differences = Vec::new();
        if self.partitions != flags.partitions {
            differences.push(format!(
                "--partitions {} (stored: {})",
                flags.partitions, self.partitions
            ));
        }
        if self.scheme != flags.scheme {
            differences.push(format!(
                "--partitioning {:?} (stored: {:?})",
                flags.scheme, self.scheme
            ));
        }
        if self.replicas != flags.replicas {
            differences.push(format!(
                "--replicas {} (stored: {})",
                flags.replicas, self.replicas
            ));
        }
        if self.split_keys != flags.split_keys {
            differences.push(format!(
                "--split-at {:?} (stored: {:?})",
                flags.split_keys, self.split_keys
            ));
        }
        differences
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_layout_tiles_the_keyspace_at_the_split_keys() {
        let spec = LayoutSpec::from_flags(
            None,
            Scheme::Range,
            vec!["g".into(), "p".into()],
            vec![3, 1, 2, 4],
        )
        .unwrap();
        assert_eq!(spec.partitions, 3);
        assert_eq!(spec.nodes, [1, 2, 3, 4]);
        let descriptors = spec.initial_descriptors();
        let spans: Vec<String> = descriptors.iter().map(|d| d.span.to_string()).collect();
        assert_eq!(spans, ["[\"\", \"g\")", "[\"g\", \"p\")", "[\"p\", +inf)"]);
        for d in &descriptors {
            assert_eq!(d.validate(), Ok(()));
            assert_eq!(d.replicas.len(), 3);
        }
        assert_eq!(spec.core_replicas(), [1, 2, 3]);
    }

    #[test]
    fn a_hash_layout_has_one_bucket_per_partition() {
        let spec = LayoutSpec::from_flags(Some(8), Scheme::Hash, vec![], vec![1, 2]).unwrap();
        let descriptors = spec.initial_descriptors();
        assert_eq!(descriptors.len(), 8);
        assert!(descriptors.iter().all(|d| d.replicas.len() == 2));
        for key in ["a", "k1", "user/9"] {
            let holders = descriptors
                .iter()
                .filter(|d| d.contains(key.as_bytes()))
                .count();
            assert_eq!(holders, 1, "{key}");
        }
    }

    #[test]
    fn even_split_points_increase() {
        let spec = LayoutSpec::from_flags(Some(7), Scheme::Range, vec![], vec![1]).unwrap();
        let points = spec.split_points();
        assert_eq!(points.len(), 6);
        assert!(points.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bad_flags_are_named() {
        let flags = |n, scheme, keys: &[&str]| {
            LayoutSpec::from_flags(
                n,
                scheme,
                keys.iter().map(|k| k.to_string()).collect(),
                vec![1],
            )
        };
        assert_eq!(
            flags(Some(0), Scheme::Range, &[]),
            Err(LayoutError::PartitionCount(0))
        );
        assert_eq!(
            flags(Some(5), Scheme::Range, &["a"]),
            Err(LayoutError::SplitCount {
                given: 1,
                partitions: 5
            })
        );
        assert_eq!(
            flags(None, Scheme::Range, &["b", "a"]),
            Err(LayoutError::SplitOrder("a".into()))
        );
        assert_eq!(
            flags(None, Scheme::Hash, &["a"]),
            Err(LayoutError::SplitWithHash)
        );
        let message = flags(Some(5), Scheme::Range, &["a"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("--split-at gives 1 keys"), "{message}");
    }

    #[test]
    fn a_stored_layout_names_each_flag_that_disagrees() {
        let stored = LayoutSpec::from_flags(Some(8), Scheme::Hash, vec![], vec![1, 2, 3]).unwrap();
        let flags = LayoutSpec::from_flags(Some(4), Scheme::Range, vec![], vec![1, 2, 3]).unwrap();
        let differences = stored.differences(&flags);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].contains("--partitions 4 (stored: 8)"));
        assert!(stored.differences(&stored).is_empty());
    }
}
