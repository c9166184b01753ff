//! The consistent core's state machine: the partition map, driven by the log of group 0.
//! Deterministic like the key-value store: the same commands in the same order give the
//! same map on every core replica.
//!
//! The map starts from the bootstrap layout, which every node computes alike from its
//! flags, so it needs no log entry; leaders of data partitions then report their leader,
//! epoch and load (`PartitionReport`), and the map takes or rejects each report
//! ([`PartitionMap::apply_report`]: an older epoch is refused).

use prost::Message as _;

use super::convert::{from_wire, node_from_wire, node_to_wire, to_wire};
use super::hashing::stable_hash;
use super::map::{Load, PartitionMap};
use crate::proto::raft::{CoreCommand, CoreSnapshot, PartitionReport, core_command::Op};

#[derive(Clone, Debug, PartialEq)]
pub struct CoreStore {
    map: PartitionMap,
    /// The next partition id to hand out: above every id the map has ever held, so a
    /// split's new range never takes the id of a live or merged-away one.
    next_partition_id: u64,
    digest: u64,
}

/// What applying one core command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreApplied {
    /// The map changed.
    Taken,
    /// A partition id was handed out.
    Allocated(u64),
    /// The command was refused by the map, or did not decode; nothing changed.
    Refused(String),
}

impl CoreStore {
    pub fn new(map: PartitionMap) -> Self {
        let next_partition_id = map.descriptors().map(|d| d.id + 1).max().unwrap_or(1);
        let mut store = CoreStore {
            map,
            next_partition_id,
            digest: 0,
        };
        store.digest = store.digest_now();
        store
    }

    fn digest_now(&self) -> u64 {
        stable_hash(
            &[
                digest_of(&self.map).to_le_bytes(),
                self.next_partition_id.to_le_bytes(),
            ]
            .concat(),
        )
    }

    pub fn map(&self) -> &PartitionMap {
        &self.map
    }

    /// A core restored from a snapshot written before nodes were registered knows none:
    /// it takes the bootstrap nodes, as every core replica does alike.
    pub fn fill_nodes(&mut self, bootstrap: &[(super::NodeId, super::NodeRecord)]) {
        if self.map.nodes().is_empty() {
            self.map = self.map.clone().with_nodes(bootstrap.iter().cloned());
            self.digest = self.digest_now();
        }
    }

    /// A digest of the map (descriptors, leaders, loads), for comparing replicas.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Applies an entry of group 0's log. Refusals are data, not errors: every replica
    /// refuses the same report.
    pub fn apply(&mut self, data: &[u8]) -> CoreApplied {
        let command = match CoreCommand::decode(data) {
            Ok(command) => command,
            Err(e) => return CoreApplied::Refused(format!("core command does not decode: {e}")),
        };
        match command.op {
            Some(Op::Report(report)) => self.apply_report(&report),
            Some(Op::AllocatePartitionId(_)) => {
                let id = self.next_partition_id;
                self.next_partition_id += 1;
                self.digest = self.digest_now();
                CoreApplied::Allocated(id)
            }
            Some(Op::AddNode(add)) => match self.map.add_node(add.id, &add.address) {
                Ok(_) => {
                    self.digest = self.digest_now();
                    CoreApplied::Taken
                }
                Err(why) => CoreApplied::Refused(why),
            },
            Some(Op::SetNodeState(set)) => {
                let (_, record) = node_from_wire(&crate::proto::kv::NodeAddress {
                    id: set.id,
                    address: String::new(),
                    state: set.state,
                });
                match self.map.set_node_state(set.id, record.state) {
                    Ok(()) => {
                        self.digest = self.digest_now();
                        CoreApplied::Taken
                    }
                    Err(why) => CoreApplied::Refused(why),
                }
            }
            None => CoreApplied::Refused("empty core command".into()),
        }
    }

    fn apply_report(&mut self, report: &PartitionReport) -> CoreApplied {
        let mut descriptors = Vec::with_capacity(report.descriptors.len());
        for wire in &report.descriptors {
            match from_wire(wire) {
                Ok((descriptor, _)) => descriptors.push(descriptor),
                Err(e) => return CoreApplied::Refused(e),
            }
        }
        let load = Load {
            reads_per_sec: report.reads_per_sec,
            writes_per_sec: report.writes_per_sec,
        };
        match self.map.apply_report(&descriptors, report.term, load) {
            Ok(()) => {
                // A split's new id came from here, but a map restored from an older
                // snapshot may not have counted it: never hand out an id the map holds.
                let above = self.map.descriptors().map(|d| d.id + 1).max().unwrap_or(1);
                self.next_partition_id = self.next_partition_id.max(above);
                self.digest = self.digest_now();
                CoreApplied::Taken
            }
            Err(e) => CoreApplied::Refused(e.to_string()),
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        CoreSnapshot {
            descriptors: self
                .map
                .descriptors()
                .map(|d| to_wire(d, self.map.load(d.id)))
                .collect(),
            map_version: self.map.version(),
            next_partition_id: self.next_partition_id,
            nodes: self
                .map
                .nodes()
                .iter()
                .map(|(&id, n)| node_to_wire(id, n))
                .collect(),
        }
        .encode_to_vec()
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        let snapshot = CoreSnapshot::decode(bytes)
            .map_err(|e| format!("the core's snapshot does not decode: {e}"))?;
        let mut descriptors = Vec::new();
        let mut loads = Vec::new();
        for wire in &snapshot.descriptors {
            let (descriptor, load) = from_wire(wire)?;
            loads.push((descriptor.id, load));
            descriptors.push(descriptor);
        }
        let map = PartitionMap::restore(descriptors, loads, snapshot.map_version)?
            .with_nodes(snapshot.nodes.iter().map(node_from_wire));
        let mut store = CoreStore::new(map);
        store.next_partition_id = store.next_partition_id.max(snapshot.next_partition_id);
        store.digest = store.digest_now();
        Ok(store)
    }
}

/// Order-dependent over descriptors in id order: the map is small, and a report changes
/// few of them, so a full pass per change costs little.
fn digest_of(map: &PartitionMap) -> u64 {
    let mut digest = stable_hash(&map.version().to_le_bytes());
    for (&id, node) in map.nodes() {
        let wire = node_to_wire(id, node);
        digest = stable_hash(&[digest.to_le_bytes().as_slice(), &wire.encode_to_vec()].concat());
    }
    for descriptor in map.descriptors() {
        let wire = to_wire(descriptor, map.load(descriptor.id));
        digest = stable_hash(&[digest.to_le_bytes().as_slice(), &wire.encode_to_vec()].concat());
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::layout::{LayoutSpec, Scheme};

    fn store() -> CoreStore {
        let spec = LayoutSpec::from_flags(Some(4), Scheme::Hash, vec![], vec![1, 2, 3]).unwrap();
        CoreStore::new(PartitionMap::new(spec.initial_descriptors()).unwrap())
    }

    fn report(store: &CoreStore, id: u64, leader: u64, term: u64) -> Vec<u8> {
        let mut descriptor = store.map().get(id).unwrap().clone();
        descriptor.leader = Some(leader);
        CoreCommand {
            op: Some(Op::Report(PartitionReport {
                descriptors: vec![to_wire(&descriptor, Load::default())],
                term,
                reads_per_sec: 10.0,
                writes_per_sec: 5.0,
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn replicas_applying_the_same_reports_agree_and_round_trip_a_snapshot() {
        let (mut a, mut b) = (store(), store());
        let leader = a.map().get(2).unwrap().replicas[0];
        let command = report(&a, 2, leader, 3);
        assert_eq!(a.apply(&command), CoreApplied::Taken);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(b.apply(&command), CoreApplied::Taken);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.map().get(2).unwrap().leader, Some(leader));
        assert_eq!(a.map().load(2).writes_per_sec, 5.0);
        let restored = CoreStore::restore(&a.snapshot()).unwrap();
        assert_eq!(restored, a);
    }

    #[test]
    fn partition_ids_are_handed_out_once_and_survive_a_snapshot() {
        let mut s = store();
        let allocate = CoreCommand {
            op: Some(Op::AllocatePartitionId(Default::default())),
        }
        .encode_to_vec();
        assert_eq!(s.apply(&allocate), CoreApplied::Allocated(5));
        assert_eq!(s.apply(&allocate), CoreApplied::Allocated(6));
        let mut restored = CoreStore::restore(&s.snapshot()).unwrap();
        assert_eq!(restored, s);
        assert_eq!(restored.apply(&allocate), CoreApplied::Allocated(7));
    }

    #[test]
    fn bad_commands_are_refused_without_changing_the_map() {
        let mut s = store();
        let digest = s.digest();
        assert!(matches!(s.apply(b"\xff\xff"), CoreApplied::Refused(_)));
        let outsider = report(&s, 1, 99, 3);
        match s.apply(&outsider) {
            CoreApplied::Refused(why) => assert!(why.contains("n99"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.digest(), digest);
    }
}
