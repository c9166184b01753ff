//! A partition's descriptor: which keys it holds, on which nodes, and the epoch that says
//! how current this description is.

use std::fmt;

use super::hashing::bucket_of;

/// A partition is one Raft group; its id is the group id. Group 0 is the consistent core.
pub type PartitionId = u64;
pub type NodeId = u64;

/// The consistent core's group: it holds the partition map, not keys.
pub const CORE_GROUP: PartitionId = 0;

/// How current a descriptor is, in two parts that change for different reasons (TiKV's
/// `RegionEpoch`): `version` when the key span changes (split, merge), `conf_version` when
/// the replica set does. Which command checks and bumps which part is in
/// [`super::epoch::rule`]. Leadership is not part of the epoch: it changes far more often,
/// and a request sent to the wrong leader is corrected by `NotLeader`, not by the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeEpoch {
    pub version: u64,
    pub conf_version: u64,
}

impl RangeEpoch {
    /// Whether `self` is older than `other` in either part: a descriptor with such an
    /// epoch describes a state the partition has left.
    pub fn is_stale_against(&self, other: &RangeEpoch) -> bool {
        self.version < other.version || self.conf_version < other.conf_version
    }
}

impl fmt::Display for RangeEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}/c{}", self.version, self.conf_version)
    }
}

/// The keys a partition holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySpan {
    /// Keys `k` with `start <= k < end` in byte order; an empty `end` is unbounded.
    Range { start: Vec<u8>, end: Vec<u8> },
    /// Keys whose stable hash modulo `count` is `index` ([`bucket_of`]).
    Bucket { index: u32, count: u32 },
}

impl KeySpan {
    /// The whole keyspace, as one range.
    pub fn everything() -> Self {
        KeySpan::Range {
            start: Vec::new(),
            end: Vec::new(),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySpan::Range { start, end } => {
                key >= start.as_slice() && (end.is_empty() || key < end.as_slice())
            }
            KeySpan::Bucket { index, count } => bucket_of(key, *count) == *index,
        }
    }

    /// For range spans: whether the two share a key.
    pub fn overlaps(&self, other: &KeySpan) -> bool {
        match (self, other) {
            (KeySpan::Range { start: a0, end: a1 }, KeySpan::Range { start: b0, end: b1 }) => {
                (a1.is_empty() || b0 < a1) && (b1.is_empty() || a0 < b1)
            }
            (
                KeySpan::Bucket {
                    index: a,
                    count: ca,
                },
                KeySpan::Bucket {
                    index: b,
                    count: cb,
                },
            ) => a == b && ca == cb,
            _ => true,
        }
    }
}

impl fmt::Display for KeySpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpan::Range { start, end } => {
                let end = if end.is_empty() {
                    "+inf".to_string()
                } else {
                    printable(end)
                };
                write!(f, "[{}, {end})", printable(start))
            }
            KeySpan::Bucket { index, count } => write!(f, "bucket {index}/{count}"),
        }
    }
}

/// A key as text when it is printable ASCII, else as hex.
pub fn printable(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(key))
    } else {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}

/// One partition as the map knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RangeDescriptor {
    pub id: PartitionId,
    pub span: KeySpan,
    pub epoch: RangeEpoch,
    /// Node ids holding a voting replica, in placement order.
    pub replicas: Vec<NodeId>,
    /// The last leader reported, and the Raft term it reported from (a report from an
    /// older term does not replace a newer one's leader).
    pub leader: Option<NodeId>,
    pub leader_term: u64,
    /// Node ids holding a non-voting replica (being caught up, or kept as a read copy).
    pub learners: Vec<NodeId>,
}

impl RangeDescriptor {
    pub fn contains(&self, key: &[u8]) -> bool {
        self.span.contains(key)
    }

    /// Invariants every descriptor keeps; broken ones are bugs, not bad input.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == CORE_GROUP {
            return Err("partition id 0 is the consistent core's group".into());
        }
        if self.replicas.is_empty() {
            return Err(format!("partition {} has no replicas", self.id));
        }
        let mut sorted = self.replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.replicas.len() {
            return Err(format!(
                "partition {} lists a replica twice: {:?}",
                self.id, self.replicas
            ));
        }
        if let Some(both) = self.learners.iter().find(|n| self.replicas.contains(n)) {
            return Err(format!(
                "partition {} lists n{both} as both a voter and a learner",
                self.id
            ));
        }
        if let Some(leader) = self.leader
            && !self.replicas.contains(&leader)
        {
            return Err(format!(
                "partition {}'s leader n{leader} is not among its replicas {:?}",
                self.id, self.replicas
            ));
        }
        match &self.span {
            KeySpan::Range { start, end } if !end.is_empty() && start >= end => Err(format!(
                "partition {} has an empty range {}",
                self.id, self.span
            )),
            KeySpan::Bucket { index, count } if index >= count || *count == 0 => Err(format!(
                "partition {} has bucket {index} of {count}",
                self.id
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> KeySpan {
        KeySpan::Range {
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn a_range_holds_its_start_and_not_its_end() {
        let span = range("b", "d");
        assert!(!span.contains(b"a"));
        assert!(span.contains(b"b"));
        assert!(span.contains(b"c\xff"));
        assert!(!span.contains(b"d"));
        assert!(range("d", "").contains(b"\xff\xff"));
        assert!(KeySpan::everything().contains(b""));
    }

    #[test]
    fn ranges_overlap_when_they_share_a_key() {
        assert!(range("a", "c").overlaps(&range("b", "d")));
        assert!(!range("a", "b").overlaps(&range("b", "c")));
        assert!(range("a", "").overlaps(&range("x", "y")));
        assert!(!range("c", "").overlaps(&range("a", "c")));
    }

    #[test]
    fn a_stale_epoch_is_older_in_either_part() {
        let current = RangeEpoch {
            version: 3,
            conf_version: 5,
        };
        let split_since = RangeEpoch {
            version: 2,
            conf_version: 5,
        };
        let moved_since = RangeEpoch {
            version: 3,
            conf_version: 4,
        };
        assert!(split_since.is_stale_against(&current));
        assert!(moved_since.is_stale_against(&current));
        assert!(!current.is_stale_against(&current));
        assert!(!current.is_stale_against(&split_since));
    }

    #[test]
    fn descriptors_that_break_an_invariant_are_named() {
        let good = RangeDescriptor {
            id: 1,
            span: range("a", "b"),
            epoch: RangeEpoch::default(),
            replicas: vec![1, 2, 3],
            leader: Some(2),
            leader_term: 4,
            learners: Vec::new(),
        };
        assert_eq!(good.validate(), Ok(()));
        let mut core = good.clone();
        core.id = CORE_GROUP;
        assert!(core.validate().is_err());
        let mut twice = good.clone();
        twice.replicas = vec![1, 1];
        assert!(twice.validate().unwrap_err().contains("twice"));
        let mut stranger = good.clone();
        stranger.leader = Some(9);
        assert!(stranger.validate().unwrap_err().contains("n9"));
        let mut empty = good;
        empty.span = range("b", "a");
        assert!(empty.validate().unwrap_err().contains("empty range"));
    }
}
