//! Descriptors to and from their wire form (`faultline.kv.v1.PartitionDescriptor`).
//! Decoding validates: a descriptor from a peer or a client breaks no invariant.

use super::descriptor::{KeySpan, RangeDescriptor, RangeEpoch};
use super::map::Load;
use crate::proto::kv::{self, PartitionDescriptor};

pub fn to_wire(descriptor: &RangeDescriptor, load: Load) -> PartitionDescriptor {
    let (start, end, bucket, bucket_count) = match &descriptor.span {
        KeySpan::Range { start, end } => (start.clone(), end.clone(), 0, 0),
        KeySpan::Bucket { index, count } => (Vec::new(), Vec::new(), *index, *count),
    };
    PartitionDescriptor {
        id: descriptor.id,
        start,
        end,
        bucket,
        bucket_count,
        epoch: Some(kv::RangeEpoch {
            version: descriptor.epoch.version,
            conf_version: descriptor.epoch.conf_version,
        }),
        replicas: descriptor.replicas.clone(),
        leader: descriptor.leader.unwrap_or(0),
        leader_term: descriptor.leader_term,
        reads_per_sec: load.reads_per_sec,
        writes_per_sec: load.writes_per_sec,
        learners: descriptor.learners.clone(),
    }
}

pub fn node_to_wire(id: super::NodeId, node: &super::NodeRecord) -> kv::NodeAddress {
    let state = match node.state {
        super::NodeState::Active => kv::NodeState::Active,
        super::NodeState::Draining => kv::NodeState::Draining,
        super::NodeState::Removed => kv::NodeState::Removed,
    };
    kv::NodeAddress {
        id,
        address: node.address.clone(),
        state: state as i32,
    }
}

pub fn node_from_wire(wire: &kv::NodeAddress) -> (super::NodeId, super::NodeRecord) {
    let state = match kv::NodeState::try_from(wire.state) {
        Ok(kv::NodeState::Draining) => super::NodeState::Draining,
        Ok(kv::NodeState::Removed) => super::NodeState::Removed,
        // An unknown state from a newer node reads as active: it still serves.
        _ => super::NodeState::Active,
    };
    (
        wire.id,
        super::NodeRecord {
            address: wire.address.clone(),
            state,
        },
    )
}

pub fn from_wire(wire: &PartitionDescriptor) -> Result<(RangeDescriptor, Load), String> {
    if wire.bucket_count > super::layout::PARTITIONS_MAX {
        return Err(format!(
            "descriptor {} has {} buckets; at most {} partitions exist",
            wire.id,
            wire.bucket_count,
            super::layout::PARTITIONS_MAX
        ));
    }
    let span = if wire.bucket_count > 0 {
        KeySpan::Bucket {
            index: wire.bucket,
            count: wire.bucket_count,
        }
    } else {
        KeySpan::Range {
            start: wire.start.clone(),
            end: wire.end.clone(),
        }
    };
    let epoch = wire.epoch.unwrap_or_default();
    let descriptor = RangeDescriptor {
        id: wire.id,
        span,
        epoch: RangeEpoch {
            version: epoch.version,
            conf_version: epoch.conf_version,
        },
        replicas: wire.replicas.clone(),
        leader: (wire.leader != 0).then_some(wire.leader),
        leader_term: wire.leader_term,
        learners: wire.learners.clone(),
    };
    descriptor.validate()?;
    let load = Load {
        reads_per_sec: wire.reads_per_sec,
        writes_per_sec: wire.writes_per_sec,
    };
    Ok((descriptor, load))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_bad_ones_are_refused() {
        for span in [
            KeySpan::Range {
                start: b"a".to_vec(),
                end: Vec::new(),
            },
            KeySpan::Bucket { index: 3, count: 8 },
        ] {
            let descriptor = RangeDescriptor {
                id: 4,
                span,
                epoch: RangeEpoch {
                    version: 2,
                    conf_version: 3,
                },
                replicas: vec![1, 2, 3],
                leader: Some(3),
                leader_term: 9,
                learners: Vec::new(),
            };
            let load = Load {
                reads_per_sec: 1.5,
                writes_per_sec: 2.0,
            };
            assert_eq!(
                from_wire(&to_wire(&descriptor, load)),
                Ok((descriptor, load))
            );
        }
        let mut wire = to_wire(
            &RangeDescriptor {
                id: 1,
                span: KeySpan::everything(),
                epoch: RangeEpoch::default(),
                replicas: vec![1],
                leader: None,
                leader_term: 0,
                learners: Vec::new(),
            },
            Load::default(),
        );
        wire.leader = 7;
        assert!(from_wire(&wire).unwrap_err().contains("n7"));
    }
}
