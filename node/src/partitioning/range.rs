//! A data partition's state machine: the range's own descriptor and its keys, driven by
//! the range's log. The descriptor lives here, not only in the consistent core's map,
//! because the range's log is what changes it: a split is an entry of this log, so every
//! replica narrows its span at the same index, and a request checked against the span at
//! apply time is never applied by a range that no longer holds its key. The map learns of
//! a split afterwards, from the leader's report, and may lag; replicas never do.
//!
//! Deterministic like [`KvStore`]: the same entries in the same order give the same state
//! (descriptor included) on every replica.

use prost::Message as _;

use super::convert::{from_wire, to_wire};
use super::descriptor::{KeySpan, RangeDescriptor, RangeEpoch};
use super::epoch::{EpochCommand, bumped, matches};
use super::hashing::stable_hash;
use super::map::Load;
use crate::cluster::lease::{LeaseRefusal, LeaseTable, lease_group, lease_id};
use crate::partitioning::txn::{Participant, TxnBugs};
use crate::proto::raft::{
    ApplyResult, Command, CommitMerge, MergeTarget, PrepareMerge, RollbackMerge, Split,
    StoreSnapshot, command::Op,
};
use crate::store::{KvStore, StoreBugs, StoreVersions};

/// Seeded bugs of this state machine, off unless `--unsafe-seeded-bug` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeBugs {
    /// `skip-epoch-check`: the replica serves and applies keys whatever its span, so a
    /// range keeps serving the keys a split moved away.
    pub skip_epoch_check: bool,
    /// `split-lose-writes`: a write whose key a split moved while it was in flight is
    /// acknowledged as applied, but applied to neither half.
    pub split_lose_writes: bool,
    /// `txn-no-read-your-writes`: a transaction's reads see the state before it, not its
    /// own earlier writes (Elle's `internal` anomaly).
    pub txn_no_read_your_writes: bool,
    /// `txn-skip-compare`: a transaction's compares always hold (lost updates).
    pub txn_skip_compare: bool,
    /// `skip-intent-resolution`: a read (a get, a scan, a single-partition transaction's
    /// read) ignores an undecided transaction's intent and returns the committed value
    /// under it, though the transaction may have committed already.
    pub skip_intent_resolution: bool,
    /// `read-committed-as-si`: a cross-partition transaction at snapshot isolation skips
    /// the write-write check, so two that read one snapshot both write (lost updates).
    pub read_committed_as_si: bool,
    /// `no-uncertainty-restart`: see `TxnBugs::no_uncertainty_restart`.
    pub no_uncertainty_restart: bool,
    /// `no-fencing`: a protected write's fencing token is not checked, so a lock holder
    /// that paused past its lease writes over its successor.
    pub no_fencing: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataRange {
    /// None: a replica created before it knows its range (it waits for a snapshot).
    descriptor: Option<RangeDescriptor>,
    store: KvStore,
    /// The range the last split made, named in refusals so that a sender can route the
    /// moved keys without asking the map (which learns of the split later).
    split_off: Vec<RangeDescriptor>,
    /// Frozen for a merge into this range (id, and the epoch the merge was planned at):
    /// nothing is served or applied until the merge commits or is rolled back.
    merging: Option<(u64, RangeEpoch)>,
    /// The range's side of cross-partition transactions: intents, read markers, and the
    /// records of those it is primary for. Committed versions go to `store`.
    txn: Box<Participant>,
    /// The leases this range granted, the keys they carry, and protected keys' fences.
    leases: Box<LeaseTable>,
}

/// What applying one entry did.
#[derive(Debug)]
pub enum Applied {
    Done(ApplyResult),
    /// The range split: this one kept the keys before the split key, `right` holds the
    /// rest and is the new group's state at the split entry's index.
    Split {
        result: ApplyResult,
        right: Box<DataRange>,
    },
    /// The range froze for a merge: its state is final.
    Frozen(ApplyResult),
    /// Range `source` joined this one; its group is to go.
    Merged {
        result: ApplyResult,
        source: u64,
    },
}

impl Applied {
    pub fn result(&self) -> &ApplyResult {
        match self {
            Applied::Done(result)
            | Applied::Split { result, .. }
            | Applied::Frozen(result)
            | Applied::Merged { result, .. } => result,
        }
    }
}

impl DataRange {
    pub fn new(mut descriptor: RangeDescriptor) -> Self {
        // Who leads is the Raft core's to say; a descriptor kept here would go stale.
        descriptor.leader = None;
        descriptor.leader_term = 0;
        DataRange {
            txn: Box::new(Participant::new(descriptor.id, TxnBugs::default())),
            descriptor: Some(descriptor),
            store: KvStore::default(),
            split_off: Vec::new(),
            merging: None,
            leases: Box::default(),
        }
    }

    /// A replica that does not know its range yet: it serves nothing until a snapshot
    /// from the range's leader gives it one.
    pub fn uninitialized() -> Self {
        DataRange::default()
    }

    pub fn descriptor(&self) -> Option<&RangeDescriptor> {
        self.descriptor.as_ref()
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// What the entries applied since the last call changed (see `KvStore::take_changes`).
    pub fn take_changes(&mut self) -> Vec<crate::store::Change> {
        self.store.take_changes()
    }

    /// The range's transaction participant.
    pub fn txn(&self) -> &Participant {
        &self.txn
    }

    /// The range's leases.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// The range this one is frozen to merge into, and the epoch that merge was planned at.
    pub fn merging(&self) -> Option<(u64, RangeEpoch)> {
        self.merging
    }

    /// What a refusal tells the sender: this range as it is now, and the range its last
    /// split made.
    pub fn current(&self) -> Vec<RangeDescriptor> {
        self.descriptor
            .iter()
            .chain(self.split_off.iter())
            .cloned()
            .collect()
    }

    /// Whether this range holds `key` now; if not, the descriptors to route it by.
    pub fn check_key(&self, key: &[u8], bugs: RangeBugs) -> Result<(), Vec<RangeDescriptor>> {
        match &self.descriptor {
            _ if bugs.skip_epoch_check => Ok(()),
            // Frozen: the sender is told the range as it is, which it knows; it waits and
            // asks again, and finds the merged range once the map has it.
            Some(_) if self.merging.is_some() => Err(self.current()),
            Some(descriptor) if descriptor.contains(key) => Ok(()),
            _ => Err(self.current()),
        }
    }

    /// Whether a scan of `[start, end)` (empty `end`: unbounded) planned against this range
    /// stays inside it. A bucket holds keys from all over the keyspace: any range does.
    pub fn check_span(
        &self,
        start: &[u8],
        end: &[u8],
        bugs: RangeBugs,
    ) -> Result<(), Vec<RangeDescriptor>> {
        let Some(descriptor) = &self.descriptor else {
            return Err(Vec::new());
        };
        if bugs.skip_epoch_check {
            return Ok(());
        }
        if self.merging.is_some() {
            return Err(self.current());
        }
        match &descriptor.span {
            KeySpan::Bucket { .. } => Ok(()),
            KeySpan::Range {
                start: own_start,
                end: own_end,
            } => {
                let starts_inside = start >= own_start.as_slice();
                let ends_inside =
                    own_end.is_empty() || (!end.is_empty() && end <= own_end.as_slice());
                if starts_inside && ends_inside {
                    Ok(())
                } else {
                    Err(self.current())
                }
            }
        }
    }

    /// Applies the entry at `index`. A write whose key is no longer here is refused (not
    /// applied, with the current descriptors); a split computed against another epoch, or
    /// whose key is not strictly inside the range, is refused the same way.
    pub fn apply(
        &mut self,
        index: u64,
        command: &Command,
        double_apply: bool,
        bugs: RangeBugs,
    ) -> Applied {
        let key = match &command.op {
            None => return Applied::Done(ApplyResult::default()),
            Some(Op::Split(split)) if self.merging.is_none() => return self.split(index, split),
            Some(Op::Split(_)) => return Applied::Done(refused(&self.current())),
            Some(Op::PrepareMerge(prepare)) => return self.prepare_merge(index, prepare),
            Some(Op::CommitMerge(commit)) => return self.commit_merge(index, commit),
            Some(Op::RollbackMerge(rollback)) => return self.rollback_merge(index, rollback),
            Some(Op::LeaseGrant(grant)) => return Applied::Done(self.grant(index, grant.ttl_ms)),
            Some(Op::LeaseRevoke(revoke)) => {
                return Applied::Done(self.revoke(index, command, revoke.id));
            }
            Some(Op::Lock(lock)) => return Applied::Done(self.lock(index, command, lock, bugs)),
            Some(Op::Unlock(unlock)) => {
                return Applied::Done(self.unlock(index, command, unlock, bugs));
            }
            Some(Op::Put(put)) => &put.key,
            Some(Op::Delete(delete)) => &delete.key,
            Some(Op::CompareAndSwap(cas)) => &cas.key,
            Some(Op::Compact(_)) => {
                return Applied::Done(self.store.apply(index, command, double_apply));
            }
            Some(Op::TxnPart(part)) => {
                return Applied::Done(self.apply_txn_part(index, part, bugs));
            }
            Some(Op::Txn(txn)) => {
                // Every key must still be here: a split since routing refuses the whole
                // transaction, which is then routed again.
                for key in txn.ops.iter().filter_map(micro_op_key) {
                    if let Err(current) = self.check_key(key, bugs) {
                        return Applied::Done(refused(&current));
                    }
                }
                // A key written must be free of other transactions' intents and markers;
                // a key only read, of intents (a marker holds off writers, not readers).
                for op in &txn.ops {
                    let Some(key) = micro_op_key(op) else {
                        continue;
                    };
                    let held = if micro_op_writes(op) {
                        self.held(key)
                    } else if bugs.skip_intent_resolution {
                        None
                    } else {
                        self.held_by_intent(key)
                    };
                    if let Some(held) = held
                        && !self.store.answers(command)
                    {
                        return Applied::Done(held);
                    }
                }
                return Applied::Done(self.store.apply_with(
                    index,
                    command,
                    StoreBugs {
                        double_apply,
                        txn_no_read_your_writes: bugs.txn_no_read_your_writes,
                        txn_skip_compare: bugs.txn_skip_compare,
                    },
                ));
            }
        };
        if let Err(current) = self.check_key(key, bugs) {
            if bugs.split_lose_writes {
                return Applied::Done(ApplyResult {
                    succeeded: true,
                    revision: index,
                    ..Default::default()
                });
            }
            return Applied::Done(refused(&current));
        }
        // A write under an undecided transaction's intent or read marker would slip
        // between its prepare and its commit: refused until it is resolved.
        if let Some(held) = self.held(key)
            && !self.store.answers(command)
        {
            return Applied::Done(held);
        }
        let retry = self.store.answers(command);
        let (lease, token) = match &command.op {
            Some(Op::Put(put)) => (put.lease, put.fencing_token),
            _ => (0, 0),
        };
        if !retry {
            let checked = if lease != 0 && lease_group(lease) != self.txn_range() {
                Err(LeaseRefusal::NotFound { lease })
            } else if lease != 0 {
                self.leases.check_attach(lease)
            } else {
                Ok(())
            };
            let checked = checked.and_then(|()| {
                if token != 0 && !bugs.no_fencing {
                    self.leases.check_fence(key, token)
                } else {
                    Ok(())
                }
            });
            if let Err(refusal) = checked {
                return Applied::Done(lease_refused(&refusal, lease, self.txn_range()));
            }
        }
        let key = key.clone();
        let result = self.store.apply(index, command, double_apply);
        if !retry && result.succeeded {
            // A put carries its lease (none: the key leaves the one it had, as in etcd);
            // a delete or a swap leaves it too.
            self.leases.attach(&key, lease);
            if token != 0 {
                self.leases.raise_fence(&key, token);
            }
        }
        Applied::Done(result)
    }

    /// The range's id, as lease ids name it (0 before a replica knows its range).
    fn txn_range(&self) -> u64 {
        self.descriptor.as_ref().map_or(0, |d| d.id)
    }

    fn grant(&mut self, index: u64, ttl_ms: u64) -> ApplyResult {
        if self.merging.is_some() {
            return refused(&self.current());
        }
        let id = lease_id(self.txn_range(), index);
        self.leases.grant(id, ttl_ms);
        ApplyResult {
            succeeded: true,
            revision: index,
            lease: id,
            ..Default::default()
        }
    }

    /// The lease goes and its keys with it, all at this entry's revision.
    fn revoke(&mut self, index: u64, command: &Command, id: u64) -> ApplyResult {
        let Some(keys) = self.leases.revoke(id) else {
            return ApplyResult {
                refused: LeaseRefusal::NotFound { lease: id }.to_string(),
                revision: index,
                ..Default::default()
            };
        };
        let deleted_keys = keys.len() as u64;
        let timestamp = self.store.write_all(
            index,
            command,
            keys.into_iter().map(|k| (k, None)).collect(),
        );
        ApplyResult {
            succeeded: true,
            revision: index,
            lease: id,
            deleted_keys,
            timestamp: timestamp.map(crate::store::to_wire),
            ..Default::default()
        }
    }

    /// Takes the lock if it is free or this lease holds it already (a retry): the token is
    /// the lock key's revision, so a later holder's is higher. Held by another lease: not
    /// taken, and the holder named.
    fn lock(
        &mut self,
        index: u64,
        command: &Command,
        lock: &crate::proto::raft::Lock,
        bugs: RangeBugs,
    ) -> ApplyResult {
        if let Err(current) = self.check_key(&lock.key, bugs) {
            return refused(&current);
        }
        if let Some(held) = self.held(&lock.key) {
            return held;
        }
        if lease_group(lock.lease) != self.txn_range() || self.leases.get(lock.lease).is_none() {
            return lease_refused(
                &LeaseRefusal::NotFound { lease: lock.lease },
                lock.lease,
                self.txn_range(),
            );
        }
        match self.leases.lease_of(&lock.key) {
            Some(holder) if holder == lock.lease => {
                let revision = self.store.get(&lock.key).map_or(index, |(_, r)| r);
                ApplyResult {
                    succeeded: true,
                    revision,
                    lease: holder,
                    ..Default::default()
                }
            }
            Some(holder) => ApplyResult {
                succeeded: false,
                revision: index,
                lease: holder,
                ..Default::default()
            },
            None => {
                let timestamp = self.store.write_all(
                    index,
                    command,
                    vec![(lock.key.clone(), Some(lock.lease.to_string().into_bytes()))],
                );
                self.leases.attach(&lock.key, lock.lease);
                ApplyResult {
                    succeeded: true,
                    revision: index,
                    lease: lock.lease,
                    timestamp: timestamp.map(crate::store::to_wire),
                    ..Default::default()
                }
            }
        }
    }

    fn unlock(
        &mut self,
        index: u64,
        command: &Command,
        unlock: &crate::proto::raft::Unlock,
        bugs: RangeBugs,
    ) -> ApplyResult {
        if let Err(current) = self.check_key(&unlock.key, bugs) {
            return refused(&current);
        }
        if self.leases.lease_of(&unlock.key) != Some(unlock.lease) {
            return ApplyResult {
                succeeded: false,
                revision: index,
                ..Default::default()
            };
        }
        if let Some(held) = self.held(&unlock.key) {
            return held;
        }
        let timestamp = self
            .store
            .write_all(index, command, vec![(unlock.key.clone(), None)]);
        self.leases.attach(&unlock.key, 0);
        ApplyResult {
            succeeded: true,
            revision: index,
            timestamp: timestamp.map(crate::store::to_wire),
            ..Default::default()
        }
    }

    /// The refusal for a write to `key` while a transaction holds it, if one does.
    fn held(&self, key: &[u8]) -> Option<ApplyResult> {
        let (txn, primary) = self.txn.holder(key)?;
        Some(ApplyResult {
            held_by: txn,
            held_primary: primary,
            refused: format!(
                "key {:?} is held by transaction {txn}, not yet decided; not applied, retry",
                String::from_utf8_lossy(key)
            ),
            ..Default::default()
        })
    }

    /// The refusal of a read of `key` while an undecided transaction's intent is on it: the
    /// transaction may have committed at its primary already, so the value under the
    /// intent may be stale. The reader resolves it (asks the record) and tries again.
    fn held_by_intent(&self, key: &[u8]) -> Option<ApplyResult> {
        let intent = self.txn.intent(key)?;
        Some(ApplyResult {
            held_by: intent.txn,
            held_primary: intent.primary,
            refused: format!(
                "key {:?} has an intent of transaction {}, not yet decided; not applied, retry",
                String::from_utf8_lossy(key),
                intent.txn
            ),
            ..Default::default()
        })
    }

    /// A request to the range's transaction participant: every key it names must be in
    /// the range; its answer goes back in the result.
    fn apply_txn_part(
        &mut self,
        index: u64,
        part: &crate::proto::raft::TxnPart,
        bugs: RangeBugs,
    ) -> ApplyResult {
        use crate::partitioning::txn::{Request, wire};
        let request = match wire::request_from_wire(part) {
            Ok(request) => request,
            Err(why) => {
                return ApplyResult {
                    refused: why,
                    ..Default::default()
                };
            }
        };
        if let Request::Prepare { part, .. } = &request {
            for key in part.reads.iter().chain(part.writes.iter().map(|(k, _)| k)) {
                if let Err(current) = self.check_key(key, bugs) {
                    return refused(&current);
                }
            }
        }
        let mut versions = StoreVersions {
            store: &mut self.store,
            revision: index,
        };
        self.txn.set_bugs(TxnBugs {
            snapshot_without_write_check: bugs.read_committed_as_si,
            no_uncertainty_restart: bugs.no_uncertainty_restart,
            ..TxnBugs::default()
        });
        let reply = self.txn.handle_with(&mut versions, request);
        ApplyResult {
            succeeded: true,
            revision: index,
            txn_part: Some(wire::reply_to_wire(&reply)),
            ..Default::default()
        }
    }

    fn split(&mut self, index: u64, split: &Split) -> Applied {
        let Some(descriptor) = &self.descriptor else {
            return Applied::Done(refused(&[]));
        };
        let planned = split
            .planned
            .map(|e| RangeEpoch {
                version: e.version,
                conf_version: e.conf_version,
            })
            .unwrap_or_default();
        let key = split.split_key.as_slice();
        let KeySpan::Range { start, end } = &descriptor.span else {
            return Applied::Done(refused(&self.current()));
        };
        let inside = key > start.as_slice() && (end.is_empty() || key < end.as_slice());
        if !matches(EpochCommand::Split, planned, descriptor.epoch)
            || !inside
            || split.new_partition == 0
            || split.new_partition == descriptor.id
        {
            return Applied::Done(refused(&self.current()));
        }
        if let Some((leased, lease)) = self.leases.leased_from(key) {
            // A lease's id names this range, so its keys stay here: a split that would
            // move one is refused (split further right, or once the lease is gone).
            return Applied::Done(ApplyResult {
                refused: format!(
                    "partition {} cannot split at {:?}: key {:?} at or after it goes with lease                      {lease}, which lives here; split after the leased keys, or once the lease                      is gone",
                    descriptor.id,
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(leased)
                ),
                ..Default::default()
            });
        }
        if !self.txn.unresolved().is_empty() {
            // Intents and markers on keys the split would move: refused until every
            // transaction here is resolved (the split is retried; transactions are short).
            return Applied::Done(ApplyResult {
                refused: format!(
                    "partition {} holds undecided transactions; split again once they resolve",
                    descriptor.id
                ),
                ..Default::default()
            });
        }
        let mut left = descriptor.clone();
        left.span = KeySpan::Range {
            start: start.clone(),
            end: key.to_vec(),
        };
        left.epoch.version += 1;
        let right = RangeDescriptor {
            id: split.new_partition,
            span: KeySpan::Range {
                start: key.to_vec(),
                end: end.clone(),
            },
            epoch: left.epoch,
            replicas: descriptor.replicas.clone(),
            leader: None,
            leader_term: 0,
            learners: descriptor.learners.clone(),
        };
        let right_store = self.store.split_off(key);
        let right_leases = self.leases.split_off(key);
        self.descriptor = Some(left);
        self.split_off = vec![right.clone()];
        Applied::Split {
            result: ApplyResult {
                succeeded: true,
                revision: index,
                ..Default::default()
            },
            right: Box::new(DataRange {
                txn: Box::new(self.txn.split_off(key, right.id)),
                descriptor: Some(right),
                store: right_store,
                split_off: Vec::new(),
                merging: None,
                leases: Box::new(right_leases),
            }),
        }
    }

    fn prepare_merge(&mut self, index: u64, prepare: &PrepareMerge) -> Applied {
        let Some(descriptor) = &self.descriptor else {
            return Applied::Done(refused(&[]));
        };
        let target = (prepare.into, epoch_of(prepare.into_planned));
        // Asked again for the merge it is frozen for (a retried `merge`): the same answer.
        if self.merging == Some(target) {
            return Applied::Frozen(succeeded(index));
        }
        if self.merging.is_some()
            || !matches(
                EpochCommand::Merge,
                epoch_of(prepare.planned),
                descriptor.epoch,
            )
            || !matches!(descriptor.span, KeySpan::Range { .. })
            || prepare.into == descriptor.id
        {
            return Applied::Done(refused(&self.current()));
        }
        if !self.txn.unresolved().is_empty() {
            // The frozen state carries keys, not intents: merge once every transaction
            // here is resolved.
            return Applied::Done(refused(&self.current()));
        }
        if !self.leases.is_empty() {
            // Lease ids name their range, and this one is to go.
            return Applied::Done(ApplyResult {
                refused: format!(
                    "partition {} holds {} leases, whose ids name it: it merges once they are                      gone",
                    descriptor.id,
                    self.leases.len()
                ),
                ..Default::default()
            });
        }
        self.merging = Some(target);
        Applied::Frozen(succeeded(index))
    }

    fn commit_merge(&mut self, index: u64, commit: &CommitMerge) -> Applied {
        let (Some(descriptor), false) = (&self.descriptor, self.merging.is_some()) else {
            return Applied::Done(refused(&self.current()));
        };
        let source = match commit.source.as_ref().map(from_wire) {
            Some(Ok((source, _))) => source,
            _ => return Applied::Done(refused(&self.current())),
        };
        let (
            KeySpan::Range { start, end },
            KeySpan::Range {
                start: s_start,
                end: s_end,
            },
        ) = (&descriptor.span, &source.span)
        else {
            return Applied::Done(refused(&self.current()));
        };
        let mut ours = descriptor.replicas.clone();
        let mut theirs = source.replicas.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        let adjacent = !end.is_empty() && end == s_start;
        if !matches(
            EpochCommand::Merge,
            epoch_of(commit.planned),
            descriptor.epoch,
        ) || !adjacent
            || ours != theirs
        {
            return Applied::Done(refused(&self.current()));
        }
        let Ok(frozen) = DataRange::restore(&commit.source_state, None) else {
            return Applied::Done(refused(&self.current()));
        };
        let mut merged = descriptor.clone();
        merged.span = KeySpan::Range {
            start: start.clone(),
            end: s_end.clone(),
        };
        // Above both halves' versions: a descriptor from before the merge, of either half,
        // is stale against it, and no later state reuses an older one (the ABA guard).
        merged.epoch.version = descriptor.epoch.version.max(source.epoch.version) + 1;
        self.store.absorb(frozen.store);
        self.txn.absorb(*frozen.txn);
        self.leases.absorb(*frozen.leases);
        self.descriptor = Some(merged.clone());
        self.split_off.clear();
        let mut result = succeeded(index);
        result.merged = Some(wire(&merged));
        Applied::Merged {
            result,
            source: source.id,
        }
    }

    fn rollback_merge(&mut self, index: u64, rollback: &RollbackMerge) -> Applied {
        match &mut self.descriptor {
            Some(descriptor)
                if self.merging.is_some() && epoch_of(rollback.planned) == descriptor.epoch =>
            {
                self.merging = None;
                descriptor.epoch.version += 1;
                Applied::Done(succeeded(index))
            }
            _ => Applied::Done(refused(&self.current())),
        }
    }

    /// A membership change applied (a configuration entry): the range's replicas are the
    /// group's members now, and its conf_version moves on (the epoch table's `change
    /// replicas` row), so that a descriptor from before the change reads as stale.
    pub fn set_members(&mut self, voters: &[u64], learners: &[u64]) {
        let Some(descriptor) = &mut self.descriptor else {
            return;
        };
        // Voters that stay keep their placement order; newcomers go last.
        let mut replicas: Vec<u64> = descriptor
            .replicas
            .iter()
            .copied()
            .filter(|n| voters.contains(n))
            .collect();
        for voter in voters {
            if !replicas.contains(voter) {
                replicas.push(*voter);
            }
        }
        descriptor.replicas = replicas;
        descriptor.learners = learners.to_vec();
        descriptor.epoch = bumped(EpochCommand::ChangeReplicas, descriptor.epoch);
    }

    /// The store's digest with the descriptor's: replicas that agree on keys but not on
    /// their span (one missed a split) differ.
    pub fn digest(&self) -> u64 {
        let span = self
            .descriptor
            .as_ref()
            .map(|d| to_wire(d, Load::default()).encode_to_vec())
            .unwrap_or_default();
        // Transactions' intents, markers and records are replicated state too.
        let txn = self.txn.to_wire().encode_to_vec();
        // Empty (no leases, no fences) encodes to nothing.
        let leases = self.leases.to_wire().encode_to_vec();
        stable_hash(
            &[
                self.store.digest().to_le_bytes().as_slice(),
                &span,
                &txn,
                &leases,
            ]
            .concat(),
        )
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut snapshot = self.store.to_proto();
        snapshot.range = self.descriptor.as_ref().map(wire);
        snapshot.split_off = self.split_off.iter().map(wire).collect();
        snapshot.txn = Some(self.txn.to_wire());
        snapshot.leases = Some(self.leases.to_wire());
        snapshot.merging = self.merging.map(|(into, planned)| MergeTarget {
            into,
            into_planned: Some(crate::proto::kv::RangeEpoch {
                version: planned.version,
                conf_version: planned.conf_version,
            }),
        });
        snapshot.encode_to_vec()
    }

    /// A range from its snapshot. One written before ranges kept their descriptor has
    /// none: `layout` (the bootstrap layout's descriptor for the group) is taken then.
    pub fn restore(bytes: &[u8], layout: Option<&RangeDescriptor>) -> Result<Self, String> {
        let snapshot =
            StoreSnapshot::decode(bytes).map_err(|e| format!("snapshot does not decode: {e}"))?;
        let descriptor = match &snapshot.range {
            Some(wire) => Some(from_wire(wire)?.0),
            None => layout.cloned(),
        };
        let split_off = snapshot
            .split_off
            .iter()
            .map(|w| from_wire(w).map(|(d, _)| d))
            .collect::<Result<_, _>>()?;
        let merging = snapshot
            .merging
            .as_ref()
            .map(|m| (m.into, epoch_of(m.into_planned)));
        let txn = match &snapshot.txn {
            Some(state) => Participant::from_wire(
                state,
                descriptor.as_ref().map_or(0, |d| d.id),
                TxnBugs::default(),
            )
            .map_err(|e| format!("snapshot's transaction state does not decode: {e}"))?,
            None => Participant::new(descriptor.as_ref().map_or(0, |d| d.id), TxnBugs::default()),
        };
        let leases = snapshot
            .leases
            .as_ref()
            .map(LeaseTable::from_wire)
            .unwrap_or_default();
        let store = KvStore::from_proto(snapshot)
            .map_err(|e| format!("snapshot's sessions do not decode: {e}"))?;
        Ok(DataRange {
            txn: Box::new(txn),
            descriptor,
            store,
            split_off,
            merging,
            leases: Box::new(leases),
        })
    }
}

/// A write or lock refused by the lease table.
fn lease_refused(refusal: &LeaseRefusal, lease: u64, range: u64) -> ApplyResult {
    let why = match refusal {
        LeaseRefusal::NotFound { lease } if lease_group(*lease) != range => format!(
            "lease {lease} lives in partition {}, not in partition {range} with the key: grant              the lease with a key of this partition (LeaseGrant's key)",
            lease_group(*lease)
        ),
        other => other.to_string(),
    };
    ApplyResult {
        refused: why,
        lease,
        ..Default::default()
    }
}

/// Descriptors in a snapshot or reply carry no leader: who leads is the Raft core's to
/// say, and a stale one would mislead.
fn wire(descriptor: &RangeDescriptor) -> crate::proto::kv::PartitionDescriptor {
    let mut descriptor = descriptor.clone();
    descriptor.leader = None;
    descriptor.leader_term = 0;
    to_wire(&descriptor, Load::default())
}

fn epoch_of(wire: Option<crate::proto::kv::RangeEpoch>) -> RangeEpoch {
    let wire = wire.unwrap_or_default();
    RangeEpoch {
        version: wire.version,
        conf_version: wire.conf_version,
    }
}

fn succeeded(index: u64) -> ApplyResult {
    ApplyResult {
        succeeded: true,
        revision: index,
        ..Default::default()
    }
}

fn refused(current: &[RangeDescriptor]) -> ApplyResult {
    ApplyResult {
        epoch_not_match: current.iter().map(wire).collect(),
        ..Default::default()
    }
}

/// The key a micro-op touches.
/// Whether a micro-op writes its key.
pub fn micro_op_writes(op: &crate::proto::kv::MicroOp) -> bool {
    use crate::proto::kv::micro_op::Op as M;
    matches!(
        op.op,
        Some(M::Write(_)) | Some(M::Delete(_)) | Some(M::Append(_))
    )
}

pub fn micro_op_key(op: &crate::proto::kv::MicroOp) -> Option<&[u8]> {
    use crate::proto::kv::micro_op::Op as M;
    Some(match op.op.as_ref()? {
        M::Read(r) => &r.key,
        M::Write(w) => &w.key,
        M::Delete(d) => &d.key,
        M::Append(a) => &a.key,
        M::Compare(c) => &c.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::kv;
    use crate::proto::raft::Put;

    fn range() -> DataRange {
        DataRange::new(RangeDescriptor {
            id: 1,
            span: KeySpan::Range {
                start: b"b".to_vec(),
                end: b"m".to_vec(),
            },
            epoch: RangeEpoch {
                version: 3,
                conf_version: 2,
            },
            replicas: vec![1, 2, 3],
            leader: Some(1),
            leader_term: 4,
            learners: Vec::new(),
        })
    }

    fn put(key: &str) -> Command {
        Command {
            op: Some(Op::Put(Put {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn split(key: &str, new: u64, version: u64, conf_version: u64) -> Command {
        Command {
            op: Some(Op::Split(Split {
                split_key: key.into(),
                new_partition: new,
                planned: Some(kv::RangeEpoch {
                    version,
                    conf_version,
                }),
            })),
            ..Default::default()
        }
    }

    fn split_apart(range: &mut DataRange, index: u64, command: &Command) -> DataRange {
        match range.apply(index, command, false, RangeBugs::default()) {
            Applied::Split { right, .. } => *right,
            other => panic!("not split: {other:?}"),
        }
    }

    #[test]
    fn a_split_moves_the_keys_from_the_split_key_on_and_bumps_both_versions() {
        let mut left = range();
        for (i, key) in ["c", "f", "g", "k"].iter().enumerate() {
            left.apply(i as u64 + 1, &put(key), false, RangeBugs::default());
        }
        let right = split_apart(&mut left, 5, &split("g", 7, 3, 2));
        let (l, r) = (left.descriptor().unwrap(), right.descriptor().unwrap());
        assert_eq!(l.span.to_string(), r#"["b", "g")"#);
        assert_eq!(r.span.to_string(), r#"["g", "m")"#);
        assert_eq!((l.epoch.version, r.epoch.version), (4, 4));
        assert_eq!((l.epoch.conf_version, r.epoch.conf_version), (2, 2));
        assert_eq!((r.id, r.replicas.clone()), (7, vec![1, 2, 3]));
        assert_eq!(left.store().len(), 2);
        assert_eq!(right.store().len(), 2);
        assert_eq!(right.store().get(b"g").map(|(_, rev)| rev), Some(3));
        assert_eq!(left.current().len(), 2, "a refusal names both halves");
    }

    #[test]
    fn a_write_applied_after_the_split_for_a_moved_key_is_refused_not_lost() {
        let mut left = range();
        split_apart(&mut left, 1, &split("g", 7, 3, 2));
        let result = left.apply(2, &put("h"), false, RangeBugs::default());
        let refusal = result.result();
        assert!(!refusal.succeeded);
        let ids: Vec<u64> = refusal.epoch_not_match.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![1, 7]);
        assert!(left.store().get(b"h").is_none());
        let kept = left.apply(3, &put("c"), false, RangeBugs::default());
        assert!(kept.result().succeeded);

        let lossy = RangeBugs {
            split_lose_writes: true,
            ..Default::default()
        };
        let lost = left.apply(4, &put("i"), false, lossy);
        assert!(lost.result().succeeded, "the seeded bug acknowledges it");
        assert!(left.store().get(b"i").is_none(), "and applies it nowhere");
        let skipping = RangeBugs {
            skip_epoch_check: true,
            ..Default::default()
        };
        left.apply(5, &put("j"), false, skipping);
        assert!(
            left.store().get(b"j").is_some(),
            "the seeded bug keeps serving it"
        );
    }

    #[test]
    fn a_split_planned_against_another_epoch_or_outside_the_range_changes_nothing() {
        for (key, version, conf_version) in [
            ("g", 2, 2),
            ("g", 3, 1),
            ("b", 3, 2),
            ("m", 3, 2),
            ("a", 3, 2),
        ] {
            let mut r = range();
            let before = r.clone();
            match r.apply(
                1,
                &split(key, 7, version, conf_version),
                false,
                RangeBugs::default(),
            ) {
                Applied::Done(result) => assert_eq!(result.epoch_not_match.len(), 1),
                other => panic!("split at {key} v{version}/c{conf_version}: {other:?}"),
            }
            assert_eq!(r, before);
        }
    }

    fn prepare(into: u64, planned: RangeEpoch, into_planned: RangeEpoch) -> Command {
        let wire = |e: RangeEpoch| kv::RangeEpoch {
            version: e.version,
            conf_version: e.conf_version,
        };
        Command {
            op: Some(Op::PrepareMerge(PrepareMerge {
                planned: Some(wire(planned)),
                into,
                into_planned: Some(wire(into_planned)),
            })),
            ..Default::default()
        }
    }

    fn commit(source: &DataRange, planned: RangeEpoch) -> Command {
        Command {
            op: Some(Op::CommitMerge(CommitMerge {
                source: source.descriptor().map(wire),
                source_state: source.snapshot(),
                planned: Some(kv::RangeEpoch {
                    version: planned.version,
                    conf_version: planned.conf_version,
                }),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_merge_freezes_the_right_range_then_the_left_spans_both_at_a_newer_version() {
        let ok = RangeBugs::default();
        let mut left = range();
        for (i, key) in ["c", "h", "k"].iter().enumerate() {
            left.apply(i as u64 + 1, &put(key), false, ok);
        }
        let mut right = split_apart(&mut left, 4, &split("g", 7, 3, 2));
        let (l_epoch, r_epoch) = (
            left.descriptor().unwrap().epoch,
            right.descriptor().unwrap().epoch,
        );
        right.apply(5, &put("i"), false, ok);
        assert!(matches!(
            right.apply(6, &prepare(1, r_epoch, l_epoch), false, ok),
            Applied::Frozen(_)
        ));
        // Frozen: nothing served or applied, and asking again is answered the same.
        assert!(right.check_key(b"h", ok).is_err());
        assert!(!right.apply(7, &put("j"), false, ok).result().succeeded);
        assert!(matches!(
            right.apply(8, &prepare(1, r_epoch, l_epoch), false, ok),
            Applied::Frozen(_)
        ));
        // A commit planned at another epoch, or of a range not next to this one, is refused.
        let stale = RangeEpoch {
            version: 1,
            ..l_epoch
        };
        assert!(
            !left
                .apply(5, &commit(&right, stale), false, ok)
                .result()
                .succeeded
        );
        let mut far = range();
        far.apply(1, &split("d", 9, 3, 2), false, ok);
        assert!(
            !far.apply(
                2,
                &commit(&right, far.descriptor().unwrap().epoch),
                false,
                ok
            )
            .result()
            .succeeded
        );

        match left.apply(6, &commit(&right, l_epoch), false, ok) {
            Applied::Merged { result, source } => {
                assert_eq!(source, 7);
                assert!(result.merged.is_some());
            }
            other => panic!("not merged: {other:?}"),
        }
        let merged = left.descriptor().unwrap();
        assert_eq!(merged.span.to_string(), r#"["b", "m")"#);
        assert_eq!(
            merged.epoch.version,
            l_epoch.version.max(r_epoch.version) + 1
        );
        for key in ["c", "h", "i", "k"] {
            assert!(left.store().get(key.as_bytes()).is_some(), "{key}");
        }
        assert!(left.store().get(b"j").is_none(), "refused while frozen");
        assert!(left.check_key(b"k", ok).is_ok());
    }

    #[test]
    fn a_rolled_back_merge_serves_again_at_a_newer_version() {
        let ok = RangeBugs::default();
        let mut r = range();
        let epoch = r.descriptor().unwrap().epoch;
        r.apply(1, &prepare(9, epoch, RangeEpoch::default()), false, ok);
        assert!(r.check_key(b"c", ok).is_err());
        let rollback = Command {
            op: Some(Op::RollbackMerge(RollbackMerge {
                planned: Some(kv::RangeEpoch {
                    version: epoch.version,
                    conf_version: epoch.conf_version,
                }),
            })),
            ..Default::default()
        };
        assert!(r.apply(2, &rollback, false, ok).result().succeeded);
        assert!(r.check_key(b"c", ok).is_ok());
        assert_eq!(r.descriptor().unwrap().epoch.version, epoch.version + 1);
        assert_eq!(DataRange::restore(&r.snapshot(), None).unwrap(), r);
    }

    #[test]
    fn a_scan_must_stay_inside_the_range() {
        let r = range();
        let ok = RangeBugs::default();
        assert!(r.check_span(b"b", b"m", ok).is_ok());
        assert!(r.check_span(b"c", b"d", ok).is_ok());
        assert!(r.check_span(b"a", b"d", ok).is_err());
        assert!(r.check_span(b"c", b"", ok).is_err());
        assert!(r.check_span(b"c", b"n", ok).is_err());
    }

    #[test]
    fn a_snapshot_keeps_the_descriptor_and_an_old_one_takes_the_layouts() {
        let mut left = range();
        left.apply(1, &put("h"), false, RangeBugs::default());
        let right = split_apart(&mut left, 2, &split("g", 7, 3, 2));
        for r in [&left, &right] {
            assert_eq!(&DataRange::restore(&r.snapshot(), None).unwrap(), r);
        }
        let old = KvStore::default().snapshot();
        let layout = range().descriptor().cloned();
        let restored = DataRange::restore(&old, layout.as_ref()).unwrap();
        assert_eq!(restored.descriptor(), layout.as_ref());
        assert_ne!(
            left.digest(),
            DataRange::restore(&old, None).unwrap().digest()
        );
    }

    fn part(request: crate::partitioning::txn::Request) -> Command {
        Command {
            op: Some(Op::TxnPart(
                crate::partitioning::txn::wire::request_to_wire(&request),
            )),
            ..Default::default()
        }
    }

    fn reply(applied: &Applied) -> crate::partitioning::txn::Reply {
        let wire = applied
            .result()
            .txn_part
            .as_ref()
            .expect("a participant reply");
        crate::partitioning::txn::wire::reply_from_wire(wire).expect("decodes")
    }

    fn prepare_d(id: u64) -> Command {
        use crate::partitioning::txn::{Part, Request, TxnMeta};
        part(Request::Prepare {
            meta: TxnMeta {
                id,
                primary: 1,
                participants: vec![1, 2],
                start_ts: 1 << 20,
                isolation: crate::partitioning::txn::Level::Serializable,
            },
            part: Part {
                reads: vec![b"c".to_vec()],
                writes: vec![(b"d".to_vec(), Some(b"txn".to_vec()))],
                appends: Vec::new(),
            },
            now: 10,
        })
    }

    #[test]
    fn an_intent_holds_its_key_against_writes_until_the_transaction_commits() {
        use crate::partitioning::txn::{Reply, Request, TxnStatus};
        let mut r = range();
        let none = RangeBugs::default();
        let prepared = r.apply(1, &prepare_d(7), false, none);
        assert!(matches!(reply(&prepared), Reply::Prepared { id: 7, .. }));
        for (index, key) in [(2, "d"), (3, "c")] {
            let held = r.apply(index, &put(key), false, none);
            assert_eq!(
                held.result().held_by,
                7,
                "{key} is held by the intent or marker"
            );
            assert!(held.result().refused.contains("not applied"));
        }
        assert_eq!(r.store().get(b"d"), None);
        // The record and the intent survive a snapshot.
        let mut r = DataRange::restore(&r.snapshot(), None).expect("restores");
        assert_eq!(r.apply(4, &put("d"), false, none).result().held_by, 7);
        assert!(
            r.apply(5, &split("e", 9, 3, 2), false, none)
                .result()
                .refused
                .contains("undecided transactions"),
            "no split while an intent is in the range"
        );
        let commit_ts = 2 << 20;
        let committed = r.apply(6, &part(Request::Commit { id: 7, commit_ts }), false, none);
        assert_eq!(
            reply(&committed),
            Reply::Status {
                id: 7,
                status: TxnStatus::Committed(commit_ts)
            }
        );
        assert_eq!(r.store().get(b"d"), Some((&b"txn"[..], 6)));
        assert!(r.apply(7, &put("d"), false, none).result().succeeded);
        assert!(r.txn().unresolved().is_empty());
    }

    #[test]
    fn a_participant_appends_to_the_list_it_holds_and_refuses_a_plain_value() {
        use crate::partitioning::txn::{Part, Refusal, Reply, Request, TxnMeta, TxnStatus};
        use crate::store::{decode_list, encode_list};
        let mut r = range();
        let none = RangeBugs::default();
        let list = Command {
            op: Some(Op::Put(Put {
                key: b"d".to_vec(),
                value: encode_list(&[b"1".to_vec()]),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(r.apply(1, &list, false, none).result().succeeded);
        assert!(r.apply(2, &put("c"), false, none).result().succeeded);
        let prepare = |id, key: &[u8]| {
            part(Request::Prepare {
                meta: TxnMeta {
                    id,
                    primary: 1,
                    participants: vec![1],
                    start_ts: u64::MAX >> 1,
                    isolation: crate::partitioning::txn::Level::Serializable,
                },
                part: Part {
                    reads: Vec::new(),
                    writes: Vec::new(),
                    appends: vec![(key.to_vec(), vec![b"2".to_vec(), b"3".to_vec()])],
                },
                now: 10,
            })
        };
        let refused = r.apply(3, &prepare(8, b"c"), false, none);
        assert!(
            matches!(&reply(&refused), Reply::Refused { reason: Refusal::Invalid { why, .. }, .. } if why.contains("not a list")),
            "{:?}",
            reply(&refused)
        );
        assert!(r.txn().unresolved().is_empty(), "nothing laid");
        let prepared = r.apply(4, &prepare(9, b"d"), false, none);
        assert!(matches!(reply(&prepared), Reply::Prepared { id: 9, .. }));
        let commit_ts = u64::MAX >> 1 | 1;
        let committed = r.apply(5, &part(Request::Commit { id: 9, commit_ts }), false, none);
        assert_eq!(
            reply(&committed),
            Reply::Status {
                id: 9,
                status: TxnStatus::Committed(commit_ts)
            }
        );
        let (value, _) = r.store().get(b"d").expect("committed");
        assert_eq!(
            decode_list(value),
            Some(vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()])
        );
    }

    #[test]
    fn a_prepare_naming_a_key_outside_the_range_is_refused_with_the_descriptors() {
        use crate::partitioning::txn::{Part, Request, TxnMeta};
        let mut r = range();
        let outside = part(Request::Prepare {
            meta: TxnMeta {
                id: 3,
                primary: 1,
                participants: vec![1],
                start_ts: 0,
                isolation: crate::partitioning::txn::Level::Serializable,
            },
            part: Part {
                reads: vec![],
                writes: vec![(b"z".to_vec(), None)],
                appends: Vec::new(),
            },
            now: 0,
        });
        let applied = r.apply(1, &outside, false, RangeBugs::default());
        assert!(!applied.result().epoch_not_match.is_empty());
        assert!(r.txn().unresolved().is_empty(), "nothing was laid");
    }

    #[test]
    fn a_retry_of_an_applied_write_is_answered_even_while_its_key_is_held() {
        let mut r = range();
        let none = RangeBugs::default();
        let mut first = put("d");
        first.client_id = "c".into();
        first.sequence = 1;
        let applied = r.apply(1, &first, false, none).result().clone();
        assert!(applied.succeeded);
        r.apply(2, &prepare_d(7), false, none);
        let retry = r.apply(3, &first, false, none);
        assert_eq!(retry.result(), &applied, "the session table answers it");
    }

    #[test]
    fn a_split_hands_the_right_half_its_keys_read_timestamps() {
        use crate::partitioning::txn::{Part, Reply, Request, TxnMeta};
        let mut r = range();
        let none = RangeBugs::default();
        let meta = |id, start_ts| TxnMeta {
            id,
            primary: 1,
            participants: vec![1],
            start_ts,
            isolation: crate::partitioning::txn::Level::Serializable,
        };
        // A transaction reads h and commits at 5 << 20.
        r.apply(
            1,
            &part(Request::Prepare {
                meta: meta(1, 1 << 20),
                part: Part {
                    reads: vec![b"h".to_vec()],
                    writes: vec![],
                    appends: Vec::new(),
                },
                now: 0,
            }),
            false,
            none,
        );
        r.apply(
            2,
            &part(Request::Commit {
                id: 1,
                commit_ts: 5 << 20,
            }),
            false,
            none,
        );
        let mut right = split_apart(&mut r, 3, &split("g", 9, 3, 2));
        // A writer of h that started before that read committed is refused on the right.
        let late = right.apply(
            1,
            &part(Request::Prepare {
                meta: TxnMeta {
                    primary: 9,
                    participants: vec![9],
                    ..meta(2, 2 << 20)
                },
                part: Part {
                    reads: vec![],
                    writes: vec![(b"h".to_vec(), Some(b"w".to_vec()))],
                    appends: Vec::new(),
                },
                now: 0,
            }),
            false,
            none,
        );
        assert!(
            matches!(reply(&late), Reply::Refused { .. }),
            "{:?}",
            reply(&late)
        );
    }

    fn op(op: Op) -> Command {
        Command {
            op: Some(op),
            ..Default::default()
        }
    }

    fn leased_put(key: &str, lease: u64, token: u64) -> Command {
        op(Op::Put(Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            fencing_token: token,
        }))
    }

    fn done(range: &mut DataRange, index: u64, command: &Command, bugs: RangeBugs) -> ApplyResult {
        range.apply(index, command, false, bugs).result().clone()
    }

    #[test]
    fn a_revoked_lease_takes_its_keys_in_one_entry_and_refuses_later_puts() {
        let mut range = range();
        let bugs = RangeBugs::default();
        let grant = done(
            &mut range,
            1,
            &op(Op::LeaseGrant(crate::proto::raft::LeaseGrant {
                ttl_ms: 2_000,
            })),
            bugs,
        );
        let lease = grant.lease;
        assert_eq!(lease_group(lease), 1);
        assert!(done(&mut range, 2, &leased_put("c", lease, 0), bugs).succeeded);
        assert!(done(&mut range, 3, &leased_put("d", lease, 0), bugs).succeeded);
        // Put again without the lease: the key leaves it.
        assert!(done(&mut range, 4, &put("d"), bugs).succeeded);
        let revoked = done(
            &mut range,
            5,
            &op(Op::LeaseRevoke(crate::proto::raft::LeaseRevoke {
                id: lease,
                expired: true,
            })),
            bugs,
        );
        assert_eq!(revoked.deleted_keys, 1);
        assert!(range.store().get(b"c").is_none());
        assert_eq!(range.store().versions(b"c").last().unwrap().revision, 5);
        assert!(range.store().get(b"d").is_some());
        let late = done(&mut range, 6, &leased_put("e", lease, 0), bugs);
        assert!(
            !late.succeeded && late.refused.contains("not found"),
            "{late:?}"
        );
        assert!(range.store().get(b"e").is_none());
        // A lease of another range is refused too, naming where it lives.
        let foreign = done(&mut range, 7, &leased_put("e", lease_id(9, 1), 0), bugs);
        assert!(foreign.refused.contains("partition 9"), "{foreign:?}");
    }

    #[test]
    fn a_stale_fencing_token_is_refused_unless_the_seeded_bug_skips_the_check() {
        let mut range = range();
        let bugs = RangeBugs::default();
        assert!(done(&mut range, 1, &leased_put("k", 0, 10), bugs).succeeded);
        let stale = done(&mut range, 2, &leased_put("k", 0, 9), bugs);
        assert!(stale.refused.contains("stale fencing token 9"), "{stale:?}");
        assert_eq!(range.store().get(b"k").unwrap().1, 1);
        let no_fencing = RangeBugs {
            no_fencing: true,
            ..Default::default()
        };
        assert!(done(&mut range, 3, &leased_put("k", 0, 9), no_fencing).succeeded);
    }

    #[test]
    fn a_lock_is_held_by_one_lease_at_a_time_and_its_token_grows() {
        let mut range = range();
        let bugs = RangeBugs::default();
        let grant = |ttl_ms| op(Op::LeaseGrant(crate::proto::raft::LeaseGrant { ttl_ms }));
        let a = done(&mut range, 1, &grant(1_000), bugs).lease;
        let b = done(&mut range, 2, &grant(1_000), bugs).lease;
        let lock = |lease| {
            op(Op::Lock(crate::proto::raft::Lock {
                key: b"lock/x".to_vec(),
                lease,
            }))
        };
        let first = done(&mut range, 3, &lock(a), bugs);
        assert!(first.succeeded);
        assert_eq!(first.revision, 3);
        let again = done(&mut range, 4, &lock(a), bugs);
        assert_eq!((again.succeeded, again.revision), (true, 3));
        let other = done(&mut range, 5, &lock(b), bugs);
        assert_eq!((other.succeeded, other.lease), (false, a));
        done(
            &mut range,
            6,
            &op(Op::LeaseRevoke(crate::proto::raft::LeaseRevoke {
                id: a,
                expired: true,
            })),
            bugs,
        );
        let second = done(&mut range, 7, &lock(b), bugs);
        assert_eq!((second.succeeded, second.revision), (true, 7));
        // A lease that is gone cannot take it.
        let gone = done(&mut range, 8, &lock(a), bugs);
        assert!(gone.refused.contains("not found"), "{gone:?}");
    }

    #[test]
    fn a_split_that_would_move_a_leased_key_is_refused_and_leases_survive_a_snapshot() {
        let mut range = range();
        let bugs = RangeBugs::default();
        let lease = done(
            &mut range,
            1,
            &op(Op::LeaseGrant(crate::proto::raft::LeaseGrant {
                ttl_ms: 1_000,
            })),
            bugs,
        )
        .lease;
        assert!(done(&mut range, 2, &leased_put("h", lease, 0), bugs).succeeded);
        let refused = done(&mut range, 3, &split("g", 7, 3, 2), bugs);
        assert!(refused.refused.contains("lease"), "{refused:?}");
        assert_eq!(
            range.descriptor().unwrap().span.to_string(),
            r#"["b", "m")"#
        );
        let right = split_apart(&mut range, 4, &split("i", 7, 3, 2));
        assert!(right.leases().is_empty());
        let restored = DataRange::restore(&range.snapshot(), None).unwrap();
        assert_eq!(restored.leases(), range.leases());
        assert_eq!(restored.digest(), range.digest());
    }
}
