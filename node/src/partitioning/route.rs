//! The replica-side routing check: may this replica serve a request for `key` that the
//! sender routed to partition `id` at `epoch`? A pure function of the replica's own
//! descriptor and role, returning the typed error that carries the correction: the
//! sender updates its cache from it and retries, never guessing.

use std::fmt;

use super::descriptor::{NodeId, PartitionId, RangeDescriptor, RangeEpoch, printable};
use super::epoch::{EpochCommand, matches};

/// Why a request was not served here, with what the sender needs to route it right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// This replica does not lead the partition; `hint` is the leader it knows of.
    NotLeader {
        partition: PartitionId,
        hint: Option<NodeId>,
    },
    /// The sender's descriptor is out of date (a split, merge or replica change since):
    /// here are the current descriptors that cover what it asked for.
    EpochNotMatch {
        requested: RangeEpoch,
        current: Vec<RangeDescriptor>,
    },
    /// The key is not in the partition the request was sent to.
    KeyNotInRange {
        key: Vec<u8>,
        descriptor: Box<RangeDescriptor>,
    },
    /// This node holds no replica of the partition.
    PartitionNotHere { partition: PartitionId },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NotLeader {
                partition,
                hint: Some(leader),
            } => write!(f, "not the leader of partition {partition}; n{leader} is"),
            RouteError::NotLeader {
                partition,
                hint: None,
            } => write!(
                f,
                "not the leader of partition {partition}, and no leader is known yet"
            ),
            RouteError::EpochNotMatch { requested, current } => {
                let now: Vec<String> = current
                    .iter()
                    .map(|d| format!("{} {} at {}", d.id, d.span, d.epoch))
                    .collect();
                write!(
                    f,
                    "the request was routed at epoch {requested}, which is stale; now: {}",
                    now.join(", ")
                )
            }
            RouteError::KeyNotInRange { key, descriptor } => write!(
                f,
                "key {} is not in partition {} ({})",
                printable(key),
                descriptor.id,
                descriptor.span
            ),
            RouteError::PartitionNotHere { partition } => {
                write!(f, "this node holds no replica of partition {partition}")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// The check a replica makes before it serves `command` on `key`: the epoch first (a stale
/// sender's idea of the span may be wrong in ways the key check cannot see), then the key
/// (None: a request that names no key, such as one bucket's part of a scan). Leadership
/// is not checked here: the Raft core knows it best, and refuses with `NotLeader` itself.
pub fn check_request(
    local: &RangeDescriptor,
    requested: RangeEpoch,
    key: Option<&[u8]>,
    command: EpochCommand,
) -> Result<(), RouteError> {
    if !matches(command, requested, local.epoch) {
        return Err(RouteError::EpochNotMatch {
            requested,
            current: vec![local.clone()],
        });
    }
    if let Some(key) = key
        && !local.contains(key)
    {
        return Err(RouteError::KeyNotInRange {
            key: key.to_vec(),
            descriptor: Box::new(local.clone()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::descriptor::KeySpan;

    fn descriptor(version: u64) -> RangeDescriptor {
        RangeDescriptor {
            id: 3,
            span: KeySpan::Range {
                start: b"b".to_vec(),
                end: b"d".to_vec(),
            },
            epoch: RangeEpoch {
                version,
                conf_version: 1,
            },
            replicas: vec![1, 2, 3],
            leader: Some(2),
            leader_term: 7,
            learners: Vec::new(),
        }
    }

    #[test]
    fn a_current_request_for_a_key_in_range_is_served_by_the_leader() {
        let local = descriptor(2);
        assert_eq!(
            check_request(&local, local.epoch, Some(b"c"), EpochCommand::Write),
            Ok(())
        );
    }

    #[test]
    fn each_misroute_gets_the_error_that_corrects_it() {
        let local = descriptor(2);
        let stale = RangeEpoch {
            version: 1,
            conf_version: 1,
        };
        match check_request(&local, stale, Some(b"c"), EpochCommand::Read) {
            Err(RouteError::EpochNotMatch { current, .. }) => {
                assert_eq!(current.as_slice(), std::slice::from_ref(&local))
            }
            other => panic!("{other:?}"),
        }
        // A stale epoch wins over a key outside the range: the sender's span is wrong.
        assert!(matches!(
            check_request(&local, stale, Some(b"z"), EpochCommand::Read),
            Err(RouteError::EpochNotMatch { .. })
        ));
        assert!(matches!(
            check_request(&local, local.epoch, Some(b"d"), EpochCommand::Read),
            Err(RouteError::KeyNotInRange { .. })
        ));
        // A bucket's part of a scan names no key: only the epoch is checked.
        assert_eq!(
            check_request(&local, local.epoch, None, EpochCommand::Read),
            Ok(())
        );
        // A replica move since the request was routed does not refuse a read or write.
        let mut moved = local.clone();
        moved.epoch.conf_version = 2;
        assert_eq!(
            check_request(&moved, local.epoch, Some(b"c"), EpochCommand::Write),
            Ok(())
        );
    }
}
