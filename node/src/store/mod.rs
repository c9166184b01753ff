//! The key-value state machine that the replicated log drives. Deterministic: the same
//! entries in the same order give the same state on every replica.
//!
//! It is an MVCC map (GUIDE.md): every write adds a version of its key, stamped with the
//! entry's revision (log index) and the range's hybrid timestamp, and a delete adds a
//! tombstone. Reads see the newest version, or the newest at or before a timestamp
//! (`get_at`). Old versions stay until an explicit `Compact` entry drops the ones no read
//! at or after its revision can see, so every replica compacts at the same point.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;

use crate::proto::kv::{HlcTimestamp, ListValue, MicroOp, MicroOpResult, micro_op, txn_compare};
use crate::time::Timestamp;

use crate::proto::raft::{
    ApplyResult, ClientSession, Command, StoreSnapshot, StoredKey, Txn, command::Op,
    compare_and_swap::Expected,
};

/// A key, its value and its revision, as a scan returns them.
pub type ScanItem = (Vec<u8>, Vec<u8>, u64);

/// The bytes a list value starts with: a value is a list only if an append made it one, so
/// a read can tell a list from a plain value that happens to decode as one.
pub const LIST_MAGIC: &[u8] = b"\0lst";

/// Encodes `elements` as a list value.
pub fn encode_list(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = LIST_MAGIC.to_vec();
    ListValue {
        elements: elements.to_vec(),
    }
    .encode(&mut bytes)
    .expect("a Vec grows as needed");
    bytes
}

/// The elements of a list value, or None if `value` is not one.
pub fn decode_list(value: &[u8]) -> Option<Vec<Vec<u8>>> {
    let body = value.strip_prefix(LIST_MAGIC)?;
    ListValue::decode(body).ok().map(|l| l.elements)
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The log index of the entry that wrote it.
    pub revision: u64,
    /// The range's timestamp for that entry.
    pub timestamp: Timestamp,
    /// The value; `None` is a tombstone (a delete).
    pub value: Option<Vec<u8>>,
}

/// A read at a timestamp below what compaction kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// Versions older than this are gone.
    pub timestamp: Timestamp,
}

/// Seeded bugs of the state machine, off unless `--unsafe-seeded-bug` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreBugs {
    /// `double-apply`: a retry is applied again instead of answered from the session table.
    pub double_apply: bool,
    /// `txn-no-read-your-writes`: a transaction's reads see the state before it.
    pub txn_no_read_your_writes: bool,
    /// `txn-skip-compare`: a transaction's compares always hold.
    pub txn_skip_compare: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvStore {
    /// key -> its versions, oldest first; the last is the key's current state.
    data: BTreeMap<Vec<u8>, Vec<Version>>,
    /// client_id -> (last applied sequence, its result): exactly-once retries.
    sessions: HashMap<String, (u64, ApplyResult)>,
    /// Sum of one hash per version and per session, kept up to date by every change so
    /// that a replica can report the digest of each state it passes through (see `digest`).
    digest: u64,
    /// The timestamp of the last write that changed the state: every later one is
    /// stamped above it, so timestamps grow with revisions whichever leader proposed.
    last_timestamp: Timestamp,
    /// The last compaction's revision and the timestamp of the newest version it could
    /// have dropped: a read below that timestamp may miss versions, so it is refused.
    compacted_revision: u64,
    compacted_timestamp: Timestamp,
    /// Keys written since the driver last took them, for watches.
    changes: Changes,
}

/// Keys written since they were last taken (`KvStore::take_changes`). Not state: two
/// stores compare equal whatever they hold, a clone starts empty, and neither the digest
/// nor a snapshot sees them.
#[derive(Debug, Default)]
struct Changes(Vec<Vec<u8>>);

impl Clone for Changes {
    fn clone(&self) -> Self {
        Changes::default()
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A change of one key as a watch reports it: the version an entry wrote, with the one
/// before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    pub key: Vec<u8>,
    /// The new value; `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The value before; `None`: the key did not exist (or compaction dropped what it was).
    pub prev: Option<Vec<u8>>,
}

impl KvStore {
    /// The current value of `key` and the revision that wrote it.
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], u64)> {
        let version = self.data.get(key)?.last()?;
        version.value.as_deref().map(|v| (v, version.revision))
    }

    /// The value of `key` as of `at`: the newest version stamped at or before it.
    pub fn get_at(&self, key: &[u8], at: Timestamp) -> Result<Option<(&[u8], u64)>, Compacted> {
        if at < self.compacted_timestamp {
            return Err(Compacted {
                timestamp: self.compacted_timestamp,
            });
        }
        let Some(versions) = self.data.get(key) else {
            return Ok(None);
        };
        Ok(versions
            .iter()
            .rev()
            .find(|v| v.timestamp <= at)
            .and_then(|v| v.value.as_deref().map(|value| (value, v.revision))))
    }

    /// Every version kept of `key`, oldest first.
    pub fn versions(&self, key: &[u8]) -> &[Version] {
        self.data.get(key).map_or(&[], Vec::as_slice)
    }

    /// Keys that currently hold a value.
    pub fn len(&self) -> usize {
        self.data
            .values()
            .filter(|vs| vs.last().is_some_and(|v| v.value.is_some()))
            .count()
    }

    /// Versions kept, tombstones included (what compaction shrinks).
    pub fn version_count(&self) -> usize {
        self.data.values().map(Vec::len).sum()
    }

    /// The last compaction's revision (0: never compacted).
    pub fn compacted_revision(&self) -> u64 {
        self.compacted_revision
    }

    /// What the entries applied since the last call changed, in revision order (then key
    /// order): a watch's live events. The caller takes them after every entry it applies,
    /// so each key's newest version is the change.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut keys = std::mem::take(&mut self.changes.0);
        keys.sort();
        keys.dedup();
        let mut changes: Vec<Change> = keys
            .into_iter()
            .filter_map(|key| {
                let versions = self.data.get(&key)?;
                let (last, before) = versions.split_last()?;
                Some(Change {
                    revision: last.revision,
                    prev: before.last().and_then(|v| v.value.clone()),
                    value: last.value.clone(),
                    key,
                })
            })
            .collect();
        changes.sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        changes
    }

    /// Every change of keys in `[start, end)` (an empty `end`: to the end) at revisions
    /// `from..=to`, in revision order (then key order), as kept: a watch catching up from
    /// a revision. Only revisions above the compaction revision are all kept.
    pub fn changes_between(&self, start: &[u8], end: &[u8], from: u64, to: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        let range = self
            .data
            .range(start.to_vec()..)
            .take_while(|(key, _)| end.is_empty() || key.as_slice() < end);
        for (key, versions) in range {
            for (i, version) in versions.iter().enumerate() {
                if version.revision < from || version.revision > to {
                    continue;
                }
                changes.push(Change {
                    revision: version.revision,
                    key: key.clone(),
                    value: version.value.clone(),
                    prev: i
                        .checked_sub(1)
                        .and_then(|before| versions[before].value.clone()),
                });
            }
        }
        changes.sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        changes
    }

    /// Keys in `[start, end)` in key order (an empty `end`: to the end), at most `limit`;
    /// true if more keys in the range were left out.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<ScanItem>, bool) {
        let mut items = Vec::new();
        let range = self
            .data
            .range(start.to_vec()..)
            .take_while(|(key, _)| end.is_empty() || key.as_slice() < end);
        for (key, versions) in range {
            let Some(Version {
                value: Some(value),
                revision,
                ..
            }) = versions.last()
            else {
                continue;
            };
            if items.len() == limit {
                return (items, true);
            }
            items.push((key.clone(), value.clone(), *revision));
        }
        (items, false)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the command of the entry at `index`. `double_apply` is the seeded bug that
    /// ignores the session table.
    pub fn apply(&mut self, index: u64, command: &Command, double_apply: bool) -> ApplyResult {
        self.apply_with(
            index,
            command,
            StoreBugs {
                double_apply,
                ..StoreBugs::default()
            },
        )
    }

    /// Whether the session table answers `command` (a retry of a write already applied, or
    /// older): then it is answered as before, whatever holds its key now.
    pub fn answers(&self, command: &Command) -> bool {
        !command.client_id.is_empty()
            && command.sequence > 0
            && self
                .sessions
                .get(&command.client_id)
                .is_some_and(|(sequence, _)| command.sequence <= *sequence)
    }

    /// `apply`, with any of the store's seeded bugs.
    pub fn apply_with(&mut self, index: u64, command: &Command, bugs: StoreBugs) -> ApplyResult {
        let double_apply = bugs.double_apply;
        let tracked = !command.client_id.is_empty() && command.sequence > 0;
        if tracked
            && !double_apply
            && let Some((sequence, result)) = self.sessions.get(&command.client_id)
        {
            if command.sequence == *sequence {
                return result.clone();
            }
            if command.sequence < *sequence {
                return ApplyResult {
                    stale_sequence: true,
                    ..Default::default()
                };
            }
        }
        let result = self.execute(index, command, bugs);
        if tracked {
            self.digest = self.digest.wrapping_add(session_hash(
                &command.client_id,
                command.sequence,
                &result,
            ));
            if let Some((sequence, old)) = self.sessions.insert(
                command.client_id.clone(),
                (command.sequence, result.clone()),
            ) {
                self.digest =
                    self.digest
                        .wrapping_sub(session_hash(&command.client_id, sequence, &old));
            }
        }
        result
    }

    /// Adds a version of `key` (`None`: a tombstone), keeping the digest. True if the key
    /// held a value before.
    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>, revision: u64, at: Timestamp) -> bool {
        let versions = self.data.entry(key.to_vec()).or_default();
        let existed = versions.last().is_some_and(|v| v.value.is_some());
        if !existed && value.is_none() {
            // Deleting what is not there adds nothing.
            if versions.is_empty() {
                self.data.remove(key);
            }
            return false;
        }
        self.changes.0.push(key.to_vec());
        let version = Version {
            revision,
            timestamp: at,
            value,
        };
        self.digest = self.digest.wrapping_add(version_hash(key, &version));
        match versions.last_mut() {
            // The same entry writing the key again: the entry's last write wins. (After a
            // merge a revision alone may repeat from the other range's log.)
            Some(last) if last.revision == revision && last.timestamp == at => {
                let old = std::mem::replace(last, version);
                self.digest = self.digest.wrapping_sub(version_hash(key, &old));
            }
            _ => versions.push(version),
        }
        existed
    }

    fn execute(&mut self, index: u64, command: &Command, bugs: StoreBugs) -> ApplyResult {
        match &command.op {
            // Splits and merges change the range, and leases and locks are the range's
            // lease table's: `DataRange` applies them.
            None
            | Some(
                Op::Split(_)
                | Op::PrepareMerge(_)
                | Op::CommitMerge(_)
                | Op::RollbackMerge(_)
                | Op::LeaseGrant(_)
                | Op::LeaseRevoke(_)
                | Op::Lock(_)
                | Op::Unlock(_),
            ) => ApplyResult::default(),
            Some(Op::Put(put)) => {
                let at = self.stamp(command);
                self.set(&put.key, Some(put.value.clone()), index, at);
                ApplyResult {
                    succeeded: true,
                    revision: index,
                    timestamp: Some(to_wire(at)),
                    ..Default::default()
                }
            }
            Some(Op::Delete(delete)) => {
                if self.get(&delete.key).is_none() {
                    return ApplyResult {
                        revision: index,
                        ..Default::default()
                    };
                }
                let at = self.stamp(command);
                self.set(&delete.key, None, index, at);
                ApplyResult {
                    succeeded: true,
                    revision: index,
                    found: true,
                    timestamp: Some(to_wire(at)),
                    ..Default::default()
                }
            }
            Some(Op::CompareAndSwap(cas)) => {
                let current = self.get(&cas.key);
                let matches = match (&cas.expected, current) {
                    (Some(Expected::ExpectedValue(v)), Some((value, _))) => v == value,
                    (Some(Expected::ExpectedRevision(r)), Some((_, revision))) => *r == revision,
                    (Some(Expected::ExpectedAbsent(_)), None) => true,
                    _ => false,
                };
                if matches {
                    let at = self.stamp(command);
                    self.set(&cas.key, Some(cas.new_value.clone()), index, at);
                    ApplyResult {
                        succeeded: true,
                        revision: index,
                        found: true,
                        timestamp: Some(to_wire(at)),
                        ..Default::default()
                    }
                } else {
                    ApplyResult {
                        succeeded: false,
                        revision: current.map_or(0, |(_, r)| r),
                        found: current.is_some(),
                        current_value: current.map(|(v, _)| v.to_vec()).unwrap_or_default(),
                        ..Default::default()
                    }
                }
            }
            Some(Op::Txn(txn)) => self.transact(index, command, txn, bugs),
            // The range's transaction participant applies these.
            Some(Op::TxnPart(_)) => ApplyResult::default(),
            Some(Op::Compact(compact)) => {
                self.compact(compact.revision.min(index));
                ApplyResult {
                    succeeded: true,
                    revision: index,
                    ..Default::default()
                }
            }
        }
    }

    /// A single-partition transaction: its micro-ops run in order against the state plus
    /// its own earlier writes; then all its writes apply at this one revision and
    /// timestamp, or (a compare failed, or an append met a value that is not a list) none
    /// does. One entry, so it is atomic and strictly serializable.
    fn transact(
        &mut self,
        index: u64,
        command: &Command,
        txn: &Txn,
        bugs: StoreBugs,
    ) -> ApplyResult {
        let own_writes = !bugs.txn_no_read_your_writes;
        let executed = execute(
            &txn.ops,
            |key| self.get(key).map(|(v, _)| v.to_vec()),
            own_writes,
            bugs.txn_skip_compare,
        );
        let (results, mut written) = match executed {
            Executed::Done { results, written } => (results, written),
            Executed::FailedCompare {
                index,
                current,
                results,
            } => {
                return ApplyResult {
                    succeeded: false,
                    failed_compare: index,
                    found: current.is_some(),
                    current_value: current.unwrap_or_default(),
                    txn_results: results,
                    ..Default::default()
                };
            }
            Executed::Refused(why) => {
                return ApplyResult {
                    refused: why,
                    ..Default::default()
                };
            }
        };
        // Deletes of absent keys change nothing; a transaction that changes nothing is not
        // stamped (as a failed swap is not).
        written.retain(|key, value| value.is_some() || self.get(key).is_some());
        let timestamp = if written.is_empty() {
            None
        } else {
            let at = self.stamp(command);
            for (key, value) in written {
                self.set(&key, value, index, at);
            }
            Some(to_wire(at))
        };
        ApplyResult {
            succeeded: true,
            revision: index,
            timestamp,
            txn_results: results,
            ..Default::default()
        }
    }

    /// Drops every version that no read at or after `revision` can see: for each key, the
    /// versions older than its newest at or before `revision`, and that one too if it is a
    /// tombstone. Compacting to an older revision than before does nothing.
    pub fn compact(&mut self, revision: u64) {
        if revision <= self.compacted_revision {
            return;
        }
        let mut floor = self.compacted_timestamp;
        self.data.retain(|_, versions| {
            let kept_from = versions.iter().rposition(|v| v.revision <= revision);
            if let Some(at) = kept_from {
                floor = floor.max(versions[at].timestamp);
                let drop = if versions[at].value.is_none() {
                    at + 1
                } else {
                    at
                };
                versions.drain(..drop);
            }
            !versions.is_empty()
        });
        self.compacted_revision = revision;
        self.compacted_timestamp = floor;
        self.digest = self.full_digest();
    }

    /// The timestamp a state-changing write applies at: the leader's stamp, or just
    /// above the last write's if that is later (a new leader whose clock is behind).
    /// Deterministic, so every replica gives the same answer.
    fn stamp(&mut self, command: &Command) -> Timestamp {
        let proposed = command.hlc.map_or(Timestamp::default(), from_wire);
        let floor = Timestamp {
            wall_ms: self.last_timestamp.wall_ms,
            logical: self.last_timestamp.logical.saturating_add(1),
        };
        self.last_timestamp = proposed.max(floor);
        self.last_timestamp
    }

    /// Writes `writes` (a `None` value deletes) at the entry `index`, all at one timestamp,
    /// for a range's own entries that are not client writes (a lease's expiry deleting its
    /// keys, a lock taken). The timestamp, if anything changed.
    pub fn write_all(
        &mut self,
        index: u64,
        command: &Command,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Option<Timestamp> {
        let writes: Vec<_> = writes
            .into_iter()
            .filter(|(key, value)| value.is_some() || self.get(key).is_some())
            .collect();
        if writes.is_empty() {
            return None;
        }
        let at = self.stamp(command);
        for (key, value) in writes {
            self.set(&key, value, index, at);
        }
        Some(at)
    }

    /// The timestamp of the last state-changing write.
    pub fn last_timestamp(&self) -> Timestamp {
        self.last_timestamp
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Moves the keys from `at` on into a store of their own (a split's new range). Both
    /// keep every client session: a client's retry may reach either half, and each must
    /// answer it as the whole range would have.
    pub fn split_off(&mut self, at: &[u8]) -> KvStore {
        let data = self.data.split_off(at);
        let mut right = KvStore {
            data,
            sessions: self.sessions.clone(),
            digest: 0,
            last_timestamp: self.last_timestamp,
            compacted_revision: self.compacted_revision,
            compacted_timestamp: self.compacted_timestamp,
            changes: Changes::default(),
        };
        right.digest = right.full_digest();
        self.digest = self.full_digest();
        right
    }

    /// Takes in the keys of `other`, a range next to this one (a merge: no key is in
    /// both). A client's session keeps the later of its two sequences.
    pub fn absorb(&mut self, other: KvStore) {
        self.data.extend(other.data);
        self.last_timestamp = self.last_timestamp.max(other.last_timestamp);
        // Revisions are this range's log indexes: the other's compaction revision means
        // nothing here (its horizon timestamp does).
        self.compacted_timestamp = self.compacted_timestamp.max(other.compacted_timestamp);
        for (client, (sequence, result)) in other.sessions {
            let newer = self
                .sessions
                .get(&client)
                .is_none_or(|(ours, _)| *ours < sequence);
            if newer {
                self.sessions.insert(client, (sequence, result));
            }
        }
        self.digest = self.full_digest();
    }

    /// The state as a snapshot holds it (without a range: see `DataRange`).
    pub fn to_proto(&self) -> StoreSnapshot {
        let keys = self
            .data
            .iter()
            .flat_map(|(key, versions)| {
                versions.iter().map(|v| StoredKey {
                    key: key.clone(),
                    value: v.value.clone().unwrap_or_default(),
                    revision: v.revision,
                    timestamp: Some(to_wire(v.timestamp)),
                    deleted: v.value.is_none(),
                })
            })
            .collect();
        let mut sessions: Vec<ClientSession> = self
            .sessions
            .iter()
            .map(|(client_id, (sequence, result))| ClientSession {
                client_id: client_id.clone(),
                sequence: *sequence,
                result: result.encode_to_vec(),
            })
            .collect();
        // Deterministic bytes for the same state.
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        StoreSnapshot {
            keys,
            sessions,
            last_timestamp: Some(to_wire(self.last_timestamp)),
            compacted_revision: self.compacted_revision,
            compacted_timestamp: Some(to_wire(self.compacted_timestamp)),
            ..Default::default()
        }
    }

    /// A digest of the whole state (versions, sessions): replicas that applied the same
    /// entries agree on it, and one that applied something else almost surely does not.
    /// Order-independent (a sum of per-version and per-session hashes), so a change costs
    /// one hash instead of a pass over the state.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::from_proto(StoreSnapshot::decode(bytes)?)
    }

    /// A store from its snapshot. Versions arrive oldest first, key by key; a snapshot
    /// written before versions were kept has one (the current value) per key.
    pub fn from_proto(snapshot: StoreSnapshot) -> Result<Self, prost::DecodeError> {
        let mut data: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
        for k in snapshot.keys {
            data.entry(k.key).or_default().push(Version {
                revision: k.revision,
                timestamp: k.timestamp.map_or(Timestamp::default(), from_wire),
                value: (!k.deleted).then_some(k.value),
            });
        }
        // Kept in the snapshot's order, oldest first: after a merge a key's revisions come
        // from two logs, so revision order is not version order (timestamps are).
        let mut sessions = HashMap::new();
        for session in snapshot.sessions {
            let result = ApplyResult::decode(session.result.as_slice())?;
            sessions.insert(session.client_id, (session.sequence, result));
        }
        let mut store = Self {
            data,
            sessions,
            digest: 0,
            last_timestamp: snapshot
                .last_timestamp
                .map_or(Timestamp::default(), from_wire),
            compacted_revision: snapshot.compacted_revision,
            compacted_timestamp: snapshot
                .compacted_timestamp
                .map_or(Timestamp::default(), from_wire),
            changes: Changes::default(),
        };
        store.digest = store.full_digest();
        Ok(store)
    }

    /// The digest computed from scratch.
    fn full_digest(&self) -> u64 {
        let keys = self.data.iter().fold(0u64, |sum, (key, versions)| {
            versions
                .iter()
                .fold(sum, |sum, v| sum.wrapping_add(version_hash(key, v)))
        });
        self.sessions
            .iter()
            .fold(keys, |sum, (client_id, (sequence, result))| {
                sum.wrapping_add(session_hash(client_id, *sequence, result))
            })
    }
}

/// Bits of a packed timestamp that hold the logical counter.
const LOGICAL_BITS: u32 = 20;

/// A hybrid timestamp as one integer that orders as the timestamps do (the transaction
/// cores work on integers): the wall clock above, the logical counter in the low 20 bits
/// (a counter past a million in one millisecond saturates, which no range reaches).
/// What a transaction's micro-ops did, run in order against `base` (each key's value
/// before the transaction) with its own writes visible to its later micro-ops.
#[derive(Clone, Debug, PartialEq)]
pub enum Executed {
    /// Every micro-op ran: the results in order, and each written key's final value
    /// (`None`: deleted).
    Done {
        results: Vec<MicroOpResult>,
        written: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    },
    /// The compare at 1-based `index` did not hold: nothing is written. `current` is the
    /// value it met.
    FailedCompare {
        index: u32,
        current: Option<Vec<u8>>,
        results: Vec<MicroOpResult>,
    },
    /// A micro-op cannot apply (an append to a value that is not a list): nothing is
    /// written.
    Refused(String),
}

/// Runs micro-ops against `base`: the one meaning of a transaction, shared by the
/// single-partition fast path (base: the store now) and the cross-partition coordinator
/// (base: the values its participants read at the start timestamp). `own_writes` false
/// and `skip_compare` true are the seeded bugs.
pub fn execute(
    ops: &[MicroOp],
    base: impl Fn(&[u8]) -> Option<Vec<u8>>,
    own_writes: bool,
    skip_compare: bool,
) -> Executed {
    let mut written: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let current = |key: &[u8]| -> Option<Vec<u8>> {
            match written.get(key) {
                Some(value) if own_writes => value.clone(),
                _ => base(key),
            }
        };
        let mut result = MicroOpResult::default();
        match &op.op {
            Some(micro_op::Op::Read(read)) => {
                if let Some(value) = current(&read.key) {
                    result.found = true;
                    if let Some(elements) = decode_list(&value) {
                        result.is_list = true;
                        result.elements = elements;
                    } else {
                        result.value = value;
                    }
                }
            }
            Some(micro_op::Op::Write(write)) => {
                written.insert(write.key.clone(), Some(write.value.clone()));
            }
            Some(micro_op::Op::Delete(delete)) => {
                written.insert(delete.key.clone(), None);
            }
            Some(micro_op::Op::Append(append)) => {
                let mut elements = match current(&append.key) {
                    None => Vec::new(),
                    Some(value) => match decode_list(&value) {
                        Some(elements) => elements,
                        None => return Executed::Refused(not_a_list(i + 1, &append.key)),
                    },
                };
                elements.push(append.element.clone());
                written.insert(append.key.clone(), Some(encode_list(&elements)));
            }
            Some(micro_op::Op::Compare(compare)) => {
                let value = current(&compare.key);
                let holds = match (&compare.expected, &value) {
                    (Some(txn_compare::Expected::Value(v)), Some(value)) => v == value,
                    (Some(txn_compare::Expected::Absent(_)), None) => true,
                    _ => false,
                };
                if !holds && !skip_compare {
                    return Executed::FailedCompare {
                        index: i as u32 + 1,
                        current: value,
                        results,
                    };
                }
            }
            None => {
                return Executed::Refused(format!(
                    "micro-op {} is empty; nothing was written",
                    i + 1
                ));
            }
        }
        results.push(result);
    }
    Executed::Done { results, written }
}

/// The refusal of an append (micro-op `position`, 1-based) to a value that is not a list.
pub fn not_a_list(position: usize, key: &[u8]) -> String {
    format!(
        "micro-op {position}: append to {:?}, which holds a value that is not a list (written by a put?); nothing was written",
        String::from_utf8_lossy(key)
    )
}

pub fn pack(t: Timestamp) -> u64 {
    (t.wall_ms << LOGICAL_BITS) | u64::from(t.logical.min((1 << LOGICAL_BITS) - 1))
}

/// The timestamp `pack` made.
pub fn unpack(ts: u64) -> Timestamp {
    Timestamp {
        wall_ms: ts >> LOGICAL_BITS,
        logical: (ts & ((1 << LOGICAL_BITS) - 1)) as u32,
    }
}

/// The store as a transaction participant's committed versions: what a resolution commits
/// lands at the entry being applied (`revision`) and at the transaction's commit timestamp,
/// and the range's clock moves past it, so later writes stamp above every commit.
pub struct StoreVersions<'a> {
    pub store: &'a mut KvStore,
    pub revision: u64,
}

impl crate::partitioning::txn::Versions for StoreVersions<'_> {
    /// Below the compaction horizon the store cannot say what was committed, so the
    /// horizon counts as a commit to every key: a transaction starting below it is too
    /// old to prepare, and its reads never meet dropped versions.
    fn newest(&self, key: &[u8]) -> Option<u64> {
        let newest = self.store.versions(key).last().map(|v| v.timestamp);
        let horizon = (self.store.compacted_timestamp > Timestamp::default())
            .then_some(self.store.compacted_timestamp);
        newest.max(horizon).map(pack)
    }

    fn observe(&mut self, ts: u64) {
        self.store.last_timestamp = self.store.last_timestamp.max(unpack(ts));
    }

    fn read_at(&self, key: &[u8], ts: u64) -> Option<Vec<u8>> {
        // Below the horizon `newest` refuses the prepare first; a retried prepare answered
        // as before reads above it.
        self.store
            .get_at(key, unpack(ts))
            .ok()
            .flatten()
            .map(|(v, _)| v.to_vec())
    }

    fn append(&self, base: Option<Vec<u8>>, elements: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let mut list = match base {
            None => Vec::new(),
            Some(value) => decode_list(&value).ok_or_else(|| {
                "append to a key holding a value that is not a list (written by a put?); nothing was written".to_string()
            })?,
        };
        list.extend(elements.iter().cloned());
        Ok(encode_list(&list))
    }

    fn commit(&mut self, key: &[u8], ts: u64, value: Option<Vec<u8>>) {
        let at = unpack(ts);
        self.observe(ts);
        self.store.set(key, value, self.revision, at);
    }
}

/// FNV-1a over length-prefixed fields, so that field boundaries count.
fn fnv(fields: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for byte in (field.len() as u64).to_le_bytes().iter().chain(*field) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

pub fn to_wire(t: Timestamp) -> HlcTimestamp {
    HlcTimestamp {
        wall_ms: t.wall_ms,
        logical: t.logical,
    }
}

pub fn from_wire(t: HlcTimestamp) -> Timestamp {
    Timestamp {
        wall_ms: t.wall_ms,
        logical: t.logical,
    }
}

fn version_hash(key: &[u8], version: &Version) -> u64 {
    let (kind, value): (&[u8], &[u8]) = match &version.value {
        Some(value) => (b"key", value),
        None => (b"tombstone", b""),
    };
    fnv(&[
        kind,
        key,
        value,
        &version.revision.to_le_bytes(),
        &version.timestamp.wall_ms.to_le_bytes(),
        &version.timestamp.logical.to_le_bytes(),
    ])
}

fn session_hash(client_id: &str, sequence: u64, result: &ApplyResult) -> u64 {
    fnv(&[
        b"session",
        client_id.as_bytes(),
        &sequence.to_le_bytes(),
        &result.encode_to_vec(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raft::{CompareAndSwap, Delete, Put};

    fn put(key: &str, value: &str, client: &str, sequence: u64) -> Command {
        Command {
            client_id: client.into(),
            sequence,
            hlc: None,
            op: Some(Op::Put(Put {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })),
        }
    }

    fn cas(key: &str, expected: Expected, new_value: &str) -> Command {
        Command {
            client_id: String::new(),
            sequence: 0,
            hlc: None,
            op: Some(Op::CompareAndSwap(CompareAndSwap {
                key: key.into(),
                expected: Some(expected),
                new_value: new_value.into(),
            })),
        }
    }

    #[test]
    fn replicas_that_applied_the_same_entries_agree_on_the_digest() {
        let (mut a, mut b) = (KvStore::default(), KvStore::default());
        for (index, command) in [put("k", "1", "c", 1), put("j", "2", "c", 2)]
            .iter()
            .enumerate()
        {
            a.apply(index as u64 + 1, command, false);
            b.apply(index as u64 + 1, command, false);
        }
        assert_eq!(a.digest(), b.digest());
        let restored = KvStore::restore(&a.snapshot()).expect("decodes");
        assert_eq!(restored.digest(), a.digest(), "a snapshot keeps the digest");
        a.apply(3, &put("k", "3", "c", 3), false);
        a.apply(
            4,
            &cas("j", Expected::ExpectedValue(b"2".to_vec()), "5"),
            false,
        );
        assert_ne!(a.digest(), b.digest());
        assert_eq!(
            a.digest(),
            a.full_digest(),
            "kept up to date by every change"
        );
        // The same key and value written at another index is another state.
        let mut c = KvStore::default();
        c.apply(1, &put("j", "2", "d", 1), false);
        c.apply(2, &put("k", "1", "d", 2), false);
        assert_ne!(c.digest(), a.digest());
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        let mut store = KvStore::default();
        let first = store.apply(1, &put("k", "a", "c1", 1), false);
        store.apply(2, &put("k", "b", "c2", 1), false);
        let retry = store.apply(3, &put("k", "a", "c1", 1), false);
        assert_eq!(first, retry, "the retry is answered from the session table");
        assert_eq!(
            store.get(b"k"),
            Some((&b"b"[..], 2)),
            "and does not overwrite the later write"
        );
        let stale = store.apply(4, &put("k", "old", "c1", 1), false);
        assert_eq!(stale, first);
        store.apply(5, &put("k", "c", "c1", 2), false);
        assert!(
            store
                .apply(6, &put("k", "x", "c1", 1), false)
                .stale_sequence
        );
        assert_eq!(store.get(b"k"), Some((&b"c"[..], 5)));
    }

    #[test]
    fn seeded_bug_double_apply_applies_a_retry_again() {
        let mut store = KvStore::default();
        store.apply(1, &put("k", "a", "c1", 1), true);
        store.apply(2, &put("k", "b", "c2", 1), true);
        store.apply(3, &put("k", "a", "c1", 1), true);
        assert_eq!(
            store.get(b"k"),
            Some((&b"a"[..], 3)),
            "the bug lets the retry overwrite b"
        );
    }

    #[test]
    fn compare_and_swap_on_value_revision_and_absence() {
        let mut store = KvStore::default();
        assert!(
            store
                .apply(1, &cas("k", Expected::ExpectedAbsent(true), "v1"), false)
                .succeeded
        );
        assert!(
            !store
                .apply(2, &cas("k", Expected::ExpectedAbsent(true), "v2"), false)
                .succeeded
        );
        let failed = store.apply(
            3,
            &cas("k", Expected::ExpectedValue(b"nope".to_vec()), "v2"),
            false,
        );
        assert!(!failed.succeeded);
        assert_eq!(
            (failed.current_value.as_slice(), failed.revision),
            (&b"v1"[..], 1)
        );
        assert!(
            store
                .apply(4, &cas("k", Expected::ExpectedRevision(1), "v2"), false)
                .succeeded
        );
        assert!(
            store
                .apply(
                    5,
                    &cas("k", Expected::ExpectedValue(b"v2".to_vec()), "v3"),
                    false
                )
                .succeeded
        );
        assert_eq!(store.get(b"k"), Some((&b"v3"[..], 5)));
        let delete = Command {
            client_id: String::new(),
            sequence: 0,
            hlc: None,
            op: Some(Op::Delete(Delete { key: b"k".to_vec() })),
        };
        assert!(store.apply(6, &delete, false).succeeded);
        assert_eq!(store.get(b"k"), None);
    }

    #[test]
    fn a_scan_returns_keys_in_order_within_its_range_and_limit() {
        let mut store = KvStore::default();
        for (index, key) in ["b", "a", "d", "c"].iter().enumerate() {
            store.apply(index as u64 + 1, &put(key, "v", "", 0), false);
        }
        let keys = |start: &str, end: &str, limit| {
            let (items, more) = store.scan(start.as_bytes(), end.as_bytes(), limit);
            let keys: Vec<String> = items
                .into_iter()
                .map(|(k, _, _)| String::from_utf8(k).unwrap())
                .collect();
            (keys, more)
        };
        assert_eq!(
            keys("", "", 10),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
        );
        assert_eq!(keys("b", "d", 10), (vec!["b".into(), "c".into()], false));
        assert_eq!(keys("a", "", 2), (vec!["a".into(), "b".into()], true));
        assert_eq!(keys("e", "", 2), (vec![], false));
    }

    #[test]
    fn snapshot_round_trips_data_and_sessions() {
        let mut store = KvStore::default();
        store.apply(1, &put("a", "1", "c1", 7), false);
        store.apply(2, &put("b", "2", "", 0), false);
        let restored = KvStore::restore(&store.snapshot()).expect("decodes");
        assert_eq!(restored, store);
        assert!(KvStore::restore(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn writes_apply_at_their_stamp_or_just_above_the_last_and_the_stamp_survives_a_snapshot() {
        let stamped = |wall_ms, key: &str| Command {
            hlc: Some(HlcTimestamp {
                wall_ms,
                logical: 0,
            }),
            ..put(key, "v", "", 0)
        };
        let mut store = KvStore::default();
        let at = |r: ApplyResult| r.timestamp.map(|t| (t.wall_ms, t.logical));
        assert_eq!(
            at(store.apply(1, &stamped(1_000, "a"), false)),
            Some((1_000, 0))
        );
        // A leader whose clock is behind: just above the last write instead.
        assert_eq!(
            at(store.apply(2, &stamped(900, "b"), false)),
            Some((1_000, 1))
        );
        assert_eq!(
            at(store.apply(3, &stamped(1_200, "c"), false)),
            Some((1_200, 0))
        );
        // A failed swap changes nothing and is not stamped.
        let failed = store.apply(
            4,
            &cas("a", Expected::ExpectedValue(b"x".to_vec()), "y"),
            false,
        );
        assert!(!failed.succeeded && failed.timestamp.is_none());
        let restored = KvStore::restore(&store.snapshot()).expect("decodes");
        assert_eq!(restored.last_timestamp(), store.last_timestamp());
        let mut left = restored;
        let right = left.split_off(b"b");
        assert_eq!(
            right.last_timestamp(),
            left.last_timestamp(),
            "both halves go on above it"
        );
    }

    fn stamped(command: Command, wall_ms: u64) -> Command {
        Command {
            hlc: Some(HlcTimestamp {
                wall_ms,
                logical: 0,
            }),
            ..command
        }
    }

    fn txn(ops: Vec<crate::proto::kv::micro_op::Op>) -> Command {
        use crate::proto::kv::MicroOp;
        Command {
            client_id: String::new(),
            sequence: 0,
            hlc: None,
            op: Some(Op::Txn(Txn {
                ops: ops.into_iter().map(|op| MicroOp { op: Some(op) }).collect(),
                isolation: 0,
            })),
        }
    }

    fn read(key: &str) -> crate::proto::kv::micro_op::Op {
        crate::proto::kv::micro_op::Op::Read(crate::proto::kv::TxnRead { key: key.into() })
    }

    fn append(key: &str, element: &str) -> crate::proto::kv::micro_op::Op {
        crate::proto::kv::micro_op::Op::Append(crate::proto::kv::TxnAppend {
            key: key.into(),
            element: element.into(),
        })
    }

    fn write(key: &str, value: &str) -> crate::proto::kv::micro_op::Op {
        crate::proto::kv::micro_op::Op::Write(crate::proto::kv::TxnWrite {
            key: key.into(),
            value: value.into(),
        })
    }

    fn compare(key: &str, value: Option<&str>) -> crate::proto::kv::micro_op::Op {
        crate::proto::kv::micro_op::Op::Compare(crate::proto::kv::TxnCompare {
            key: key.into(),
            expected: Some(match value {
                Some(v) => txn_compare::Expected::Value(v.into()),
                None => txn_compare::Expected::Absent(true),
            }),
        })
    }

    fn at(wall_ms: u64) -> Timestamp {
        Timestamp {
            wall_ms,
            logical: 0,
        }
    }

    #[test]
    fn every_write_is_a_version_and_a_read_at_a_timestamp_sees_the_one_then() {
        let mut store = KvStore::default();
        store.apply(1, &stamped(put("k", "a", "", 0), 100), false);
        store.apply(2, &stamped(put("k", "b", "", 0), 200), false);
        let delete = Command {
            op: Some(Op::Delete(crate::proto::raft::Delete {
                key: b"k".to_vec(),
            })),
            ..put("k", "", "", 0)
        };
        store.apply(3, &stamped(delete, 300), false);
        store.apply(4, &stamped(put("k", "c", "", 0), 400), false);
        assert_eq!(store.versions(b"k").len(), 4, "a tombstone is a version");
        let value = |ts| {
            store
                .get_at(b"k", at(ts))
                .unwrap()
                .map(|(v, r)| (v.to_vec(), r))
        };
        assert_eq!(value(99), None);
        assert_eq!(value(150), Some((b"a".to_vec(), 1)));
        assert_eq!(value(250), Some((b"b".to_vec(), 2)));
        assert_eq!(value(300), None, "deleted then");
        assert_eq!(value(1_000), Some((b"c".to_vec(), 4)));
        assert_eq!(store.get(b"k"), Some((&b"c"[..], 4)));
        let restored = KvStore::restore(&store.snapshot()).expect("decodes");
        assert_eq!(restored, store, "a snapshot keeps every version");
        assert_eq!(restored.digest(), store.digest());
    }

    #[test]
    fn compaction_drops_only_what_no_later_read_can_see_and_refuses_older_reads() {
        let mut store = KvStore::default();
        for (i, (key, value)) in [("k", "a"), ("k", "b"), ("j", "x"), ("k", "c")]
            .iter()
            .enumerate()
        {
            let index = i as u64 + 1;
            store.apply(index, &stamped(put(key, value, "", 0), index * 100), false);
        }
        let delete = Command {
            op: Some(Op::Delete(crate::proto::raft::Delete {
                key: b"j".to_vec(),
            })),
            ..put("j", "", "", 0)
        };
        store.apply(5, &stamped(delete, 500), false);
        let before = store.clone();
        let compact = Command {
            op: Some(Op::Compact(crate::proto::raft::Compact { revision: 5 })),
            ..put("", "", "", 0)
        };
        let mut other = store.clone();
        store.apply(6, &compact, false);
        assert_eq!(store.versions(b"k").len(), 1, "only k's newest stays");
        assert!(
            store.versions(b"j").is_empty(),
            "a tombstone at the horizon goes"
        );
        assert_eq!(store.get(b"k"), before.get(b"k"));
        assert_eq!(
            store.get_at(b"k", at(550)).unwrap(),
            before.get_at(b"k", at(550)).unwrap()
        );
        // j was x at 450: with x and its tombstone gone, a read there would miss it, so
        // the horizon is the newest version compaction looked at.
        assert!(store.get_at(b"j", at(450)).is_err(), "below the horizon");
        assert!(store.get_at(b"k", at(150)).is_err(), "below the horizon");
        assert_eq!(store.digest(), store.full_digest());
        other.apply(6, &compact, false);
        assert_eq!(other.digest(), store.digest(), "replicas compact alike");
        let restored = KvStore::restore(&store.snapshot()).expect("decodes");
        assert!(
            restored.get_at(b"k", at(150)).is_err(),
            "the horizon survives a snapshot"
        );
    }

    #[test]
    fn a_transaction_reads_its_own_writes_and_applies_at_one_revision() {
        let mut store = KvStore::default();
        let result = store.apply(
            1,
            &stamped(
                txn(vec![
                    append("l", "1"),
                    read("l"),
                    write("r", "5"),
                    append("l", "2"),
                    read("l"),
                    read("r"),
                ]),
                100,
            ),
            false,
        );
        assert!(result.succeeded);
        let lists: Vec<Vec<Vec<u8>>> = result
            .txn_results
            .iter()
            .map(|r| r.elements.clone())
            .collect();
        assert_eq!(lists[1], vec![b"1".to_vec()]);
        assert_eq!(lists[4], vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(result.txn_results[5].value, b"5");
        assert!(!result.txn_results[5].is_list);
        assert_eq!(store.versions(b"l").len(), 1, "two appends, one version");
        assert_eq!(store.get(b"r"), Some((&b"5"[..], 1)));
    }

    #[test]
    fn a_failed_compare_or_an_append_to_a_plain_value_writes_nothing() {
        let mut store = KvStore::default();
        store.apply(1, &put("v", "plain", "", 0), false);
        let failed = store.apply(
            2,
            &txn(vec![write("a", "1"), compare("v", Some("other"))]),
            false,
        );
        assert!(!failed.succeeded && failed.failed_compare == 2);
        assert_eq!(failed.current_value, b"plain");
        assert_eq!(store.get(b"a"), None);
        let refused = store.apply(3, &txn(vec![write("a", "1"), append("v", "x")]), false);
        assert!(
            refused.refused.contains("not a list"),
            "{}",
            refused.refused
        );
        assert_eq!(store.get(b"a"), None);
        let held = store.apply(
            4,
            &txn(vec![
                compare("v", Some("plain")),
                compare("b", None),
                write("a", "1"),
            ]),
            false,
        );
        assert!(held.succeeded);
        assert_eq!(store.get(b"a"), Some((&b"1"[..], 4)));
        let read_only = store.apply(5, &txn(vec![read("a")]), false);
        assert!(
            read_only.succeeded && read_only.timestamp.is_none(),
            "nothing to stamp"
        );
    }

    #[test]
    fn packed_timestamps_order_as_timestamps_do() {
        let a = Timestamp {
            wall_ms: 1_764_000_000_000,
            logical: 7,
        };
        let b = Timestamp {
            wall_ms: 1_764_000_000_000,
            logical: 8,
        };
        let c = Timestamp {
            wall_ms: 1_764_000_000_001,
            logical: 0,
        };
        assert!(pack(a) < pack(b) && pack(b) < pack(c));
        assert_eq!(unpack(pack(a)), a);
    }

    #[test]
    fn the_participant_core_commits_its_intents_into_the_mvcc_store() {
        use crate::partitioning::txn::{Part, Participant, Reply, Request, TxnMeta, TxnStatus};
        let mut store = KvStore::default();
        store.apply(1, &stamped(put("x", "old", "", 0), 100), false);
        let mut participant = Participant::new(1, Default::default());
        let meta = |id, start_ms| TxnMeta {
            id,
            primary: 1,
            participants: vec![1],
            start_ts: pack(at(start_ms)),
            isolation: crate::partitioning::txn::Level::Serializable,
        };
        let part = Part {
            reads: vec![b"x".to_vec()],
            writes: vec![(b"x".to_vec(), Some(b"new".to_vec()))],
            appends: Vec::new(),
        };
        let mut versions = StoreVersions {
            store: &mut store,
            revision: 2,
        };
        let prepared = participant.handle_with(
            &mut versions,
            Request::Prepare {
                meta: meta(7, 150),
                part: part.clone(),
                now: 0,
            },
        );
        assert_eq!(
            prepared,
            Reply::Prepared {
                id: 7,
                reads: vec![(b"x".to_vec(), Some(b"old".to_vec()))]
            }
        );
        versions.revision = 3;
        let committed = participant.handle_with(
            &mut versions,
            Request::Commit {
                id: 7,
                commit_ts: pack(at(200)),
            },
        );
        assert_eq!(
            committed,
            Reply::Status {
                id: 7,
                status: TxnStatus::Committed(pack(at(200)))
            }
        );
        assert_eq!(store.get(b"x"), Some((&b"new"[..], 3)));
        assert_eq!(
            store.get_at(b"x", at(150)).unwrap(),
            Some((&b"old"[..], 1)),
            "a read at the start timestamp still sees the old version"
        );
        assert!(
            store.last_timestamp() >= at(200),
            "later writes stamp above the commit"
        );
        // A transaction that started before the commit cannot write over it.
        let mut versions = StoreVersions {
            store: &mut store,
            revision: 4,
        };
        let late = participant.handle_with(
            &mut versions,
            Request::Prepare {
                meta: meta(8, 180),
                part,
                now: 0,
            },
        );
        assert!(matches!(late, Reply::Refused { .. }), "{late:?}");
    }

    #[test]
    fn after_a_merge_a_key_keeps_its_newest_version_last_through_a_snapshot() {
        // The source range's log is longer than the target's: its key carries revision 900,
        // and the target's next write to that key comes at revision 300 (with a later
        // timestamp). The current value must stay the one written last.
        let mut source = KvStore::default();
        source.apply(900, &stamped(put("k", "old", "", 0), 100), false);
        let mut target = KvStore::default();
        target.apply(1, &stamped(put("a", "x", "", 0), 50), false);
        target.absorb(source);
        target.apply(300, &stamped(put("k", "new", "", 0), 200), false);
        assert_eq!(target.get(b"k"), Some((&b"new"[..], 300)));
        assert_eq!(target.versions(b"k").len(), 2);
        let restored = KvStore::restore(&target.snapshot()).expect("decodes");
        assert_eq!(restored.get(b"k"), Some((&b"new"[..], 300)));
        assert_eq!(restored, target);
        assert_eq!(restored.digest(), target.digest());
    }

    #[test]
    fn a_transaction_starting_below_the_compaction_horizon_cannot_prepare() {
        use crate::partitioning::txn::{Part, Participant, Reply, Request, TxnMeta};
        let mut store = KvStore::default();
        store.apply(1, &stamped(put("x", "a", "", 0), 100), false);
        store.apply(2, &stamped(put("y", "b", "", 0), 300), false);
        store.apply(3, &stamped(put("y", "c", "", 0), 400), false);
        store.compact(3);
        let mut participant = Participant::new(1, Default::default());
        let mut versions = StoreVersions {
            store: &mut store,
            revision: 4,
        };
        // x was not written since 100, but what y held at 250 is gone: refuse, rather than
        // answer a read that compaction may have changed.
        let prepared = participant.handle_with(
            &mut versions,
            Request::Prepare {
                meta: TxnMeta {
                    id: 1,
                    primary: 1,
                    participants: vec![1],
                    start_ts: pack(at(250)),
                    isolation: crate::partitioning::txn::Level::Serializable,
                },
                part: Part {
                    reads: vec![b"x".to_vec()],
                    writes: vec![],
                    appends: Vec::new(),
                },
                now: 0,
            },
        );
        assert!(matches!(prepared, Reply::Refused { .. }), "{prepared:?}");
    }

    #[test]
    fn a_committed_read_moves_the_clock_so_later_writes_stamp_above_it() {
        use crate::partitioning::txn::{Part, Participant, Request, TxnMeta};
        let mut store = KvStore::default();
        store.apply(1, &stamped(put("x", "a", "", 0), 100), false);
        let mut participant = Participant::new(1, Default::default());
        let mut versions = StoreVersions {
            store: &mut store,
            revision: 2,
        };
        participant.handle_with(
            &mut versions,
            Request::Prepare {
                meta: TxnMeta {
                    id: 1,
                    primary: 1,
                    participants: vec![1],
                    start_ts: pack(at(150)),
                    isolation: crate::partitioning::txn::Level::Serializable,
                },
                part: Part {
                    reads: vec![b"x".to_vec()],
                    writes: vec![],
                    appends: Vec::new(),
                },
                now: 0,
            },
        );
        participant.handle_with(
            &mut versions,
            Request::Commit {
                id: 1,
                commit_ts: pack(at(500)),
            },
        );
        // A leader whose clock says 200 proposes a write: it lands above the read at 500.
        let result = store.apply(3, &stamped(put("x", "b", "", 0), 200), false);
        let stamped_at = result.timestamp.map(from_wire).expect("stamped");
        assert!(stamped_at > at(500), "{stamped_at}");
    }
}
