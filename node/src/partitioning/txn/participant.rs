//! One partition's side of a transaction: intents, read markers, records, versions.
//!
//! Everything here is the partition's replicated state (in the node, each [`Request`] is a
//! command in the partition's log), so a restart loses nothing: [`Participant::restart`]
//! drops only what the `forget_decision_on_crash` bug keeps in memory.

use std::collections::{BTreeMap, BTreeSet};

use super::{Key, Level, Part, Refusal, Reply, Request, TxnBugs, TxnId, TxnMeta, TxnStatus, Value};

/// A write waiting for its transaction's decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Intent {
    /// The transaction.
    pub txn: TxnId,
    /// Where its record is.
    pub primary: super::PartitionId,
    /// The value it writes.
    pub value: Value,
    /// Its transaction's start timestamp: it commits above it, so a snapshot read at an
    /// earlier timestamp can read past it.
    pub start_ts: u64,
}

/// A transaction record, on the primary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The decision (or `Pending`).
    pub status: TxnStatus,
    /// When the coordinator was last heard from.
    pub heartbeat: u64,
}

/// How a participant resolved one transaction's part, for checking atomicity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// Its intents became versions at this timestamp.
    Committed(u64),
    /// Its intents were dropped.
    Aborted,
}

/// Where a participant's committed versions live: a map of its own in the model
/// ([`VersionMap`]), the partition's MVCC store in the node. Only committed data: intents
/// and markers stay in the [`Participant`].
pub trait Versions {
    /// The timestamp of the newest committed version of `key` (a delete counts).
    fn newest(&self, key: &[u8]) -> Option<u64>;
    /// The value of `key` as of `ts`: the newest version at or before it.
    fn read_at(&self, key: &[u8], ts: u64) -> Value;
    /// Commits `value` (`None`: a delete) to `key` at `ts`. The participant calls it only
    /// for a key its intent held, so no other version landed there since the prepare.
    fn commit(&mut self, key: &[u8], ts: u64, value: Value);
    /// A transaction committed at `ts` here (a write or a read of it): later plain writes
    /// must be stamped above it, or one could land below a read that did not see it.
    fn observe(&mut self, _ts: u64) {}
    /// The value `key` holds after appending `elements` to `base` (its value at the start
    /// timestamp), or why it cannot. Where versions have no lists (the model), appends are
    /// refused.
    fn append(&self, _base: Value, _elements: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        Err("appends are not supported by these versions".to_string())
    }
}

/// Committed versions by key, oldest first: `(commit_ts, value)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionMap(pub BTreeMap<Key, Vec<(u64, Value)>>);

impl Versions for VersionMap {
    fn newest(&self, key: &[u8]) -> Option<u64> {
        self.0.get(key).and_then(|vs| vs.last()).map(|(t, _)| *t)
    }

    fn read_at(&self, key: &[u8], ts: u64) -> Value {
        self.0
            .get(key)
            .and_then(|vs| vs.iter().rev().find(|(t, _)| *t <= ts))
            .and_then(|(_, v)| v.clone())
    }

    fn commit(&mut self, key: &[u8], ts: u64, value: Value) {
        let versions = self.0.entry(key.to_vec()).or_default();
        versions.push((ts, value));
        versions.sort_by_key(|(t, _)| *t);
    }
}

/// One partition's transactional state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Participant {
    /// Committed versions, when the participant keeps its own (`handle`); empty when the
    /// caller keeps them (`handle_with`).
    versions: VersionMap,
    /// Write intents by key (one at a time).
    intents: BTreeMap<Key, Intent>,
    /// Read markers by key: transactions holding a read of it until resolved.
    markers: BTreeMap<Key, BTreeSet<TxnId>>,
    /// Records of the transactions this partition is primary for.
    records: BTreeMap<TxnId, Record>,
    /// Decisions the `forget_decision_on_crash` bug holds only in memory.
    volatile_decisions: BTreeMap<TxnId, TxnStatus>,
    /// Per key, the highest commit timestamp of a transaction that read it (its marker
    /// released): a later write must not commit below a read that did not see it, so a
    /// writer that started before this is refused (CockroachDB's timestamp cache).
    read_ts: BTreeMap<Key, u64>,
    /// The primary of each transaction holding markers here.
    marker_primaries: BTreeMap<TxnId, super::PartitionId>,
    /// Every transaction this partition prepared (its intents or markers were laid).
    prepared: BTreeSet<TxnId>,
    /// How each transaction's part here was resolved (also where it never prepared, so a
    /// late prepare is refused).
    resolved: BTreeMap<TxnId, Resolution>,
    /// This partition's id (records are kept for transactions whose primary it is).
    me: super::PartitionId,
    bugs: TxnBugs,
}

impl Participant {
    /// An empty partition `me`.
    pub fn new(me: super::PartitionId, bugs: TxnBugs) -> Participant {
        Participant {
            me,
            bugs,
            ..Participant::default()
        }
    }

    /// Applies one request and answers it, with the versions kept here.
    pub fn handle(&mut self, request: Request) -> Reply {
        let mut versions = std::mem::take(&mut self.versions);
        let reply = self.handle_with(&mut versions, request);
        self.versions = versions;
        reply
    }

    /// Applies one request and answers it, reading and committing versions in `versions`.
    pub fn handle_with(&mut self, versions: &mut impl Versions, request: Request) -> Reply {
        match request {
            Request::Prepare { meta, part, now } => self.prepare(versions, meta, part, now),
            Request::Commit { id, commit_ts } => {
                // Only a prepared record can commit; without one, write the abort so a late
                // prepare cannot bring it back.
                let decision = if self.records.contains_key(&id) {
                    TxnStatus::Committed(commit_ts)
                } else {
                    TxnStatus::Aborted
                };
                let status = self.decide(versions, id, decision);
                Reply::Status { id, status }
            }
            Request::Abort { id } => {
                let status = self.decide(versions, id, TxnStatus::Aborted);
                Reply::Status { id, status }
            }
            Request::Heartbeat { id, now } => {
                let status = self.status(id);
                if let Some(r) = self.records.get_mut(&id)
                    && status == TxnStatus::Pending
                {
                    r.heartbeat = r.heartbeat.max(now);
                }
                Reply::Status { id, status }
            }
            Request::Recover { id, now, ttl } => {
                let status = match self.records.get(&id) {
                    // Never prepared here: write the abort, so a late prepare is refused.
                    None => self.decide(versions, id, TxnStatus::Aborted),
                    Some(r)
                        if self.status(id) == TxnStatus::Pending
                            && now.saturating_sub(r.heartbeat) >= ttl =>
                    {
                        self.decide(versions, id, TxnStatus::Aborted)
                    }
                    Some(_) => self.status(id),
                };
                Reply::Status { id, status }
            }
            Request::Query { id } => Reply::Status {
                id,
                status: self.status(id),
            },
            Request::Resolve { id, status } => {
                self.resolve(versions, id, status);
                Reply::Resolved { id }
            }
        }
    }

    /// The status of a record here (`Pending` if there is none).
    pub fn status(&self, id: TxnId) -> TxnStatus {
        if let Some(s) = self.volatile_decisions.get(&id) {
            return *s;
        }
        self.records
            .get(&id)
            .map_or(TxnStatus::Pending, |r| r.status)
    }

    /// Whether this partition holds a record for `id`.
    pub fn has_record(&self, id: TxnId) -> bool {
        self.records.contains_key(&id)
    }

    /// Transactions with intents or markers here and no resolution yet, with their primary.
    pub fn unresolved(&self) -> BTreeSet<(TxnId, super::PartitionId)> {
        let mut out: BTreeSet<(TxnId, super::PartitionId)> =
            self.intents.values().map(|i| (i.txn, i.primary)).collect();
        for txns in self.markers.values() {
            for t in txns {
                if let Some(p) = self.marker_primary(*t) {
                    out.insert((*t, p));
                }
            }
        }
        out
    }

    fn marker_primary(&self, txn: TxnId) -> Option<super::PartitionId> {
        self.marker_primaries.get(&txn).copied()
    }

    /// How this partition resolved each transaction's part.
    pub fn resolutions(&self) -> &BTreeMap<TxnId, Resolution> {
        &self.resolved
    }

    /// Whether this partition ever prepared `id`.
    pub fn was_prepared(&self, id: TxnId) -> bool {
        self.prepared.contains(&id)
    }

    /// The latest committed value of `key` at or before `ts`.
    pub fn read_at(&self, key: &[u8], ts: u64) -> Value {
        self.versions.read_at(key, ts)
    }

    /// Every committed version, by key.
    pub fn versions(&self) -> &BTreeMap<Key, Vec<(u64, Value)>> {
        &self.versions.0
    }

    /// The transaction holding `key` (an intent on it, or a read marker), if any: a plain
    /// write there would slip under a transaction that has not been decided.
    pub fn holder(&self, key: &[u8]) -> Option<(TxnId, super::PartitionId)> {
        self.intents
            .get(key)
            .map(|i| (i.txn, i.primary))
            .or_else(|| {
                let txn = self
                    .markers
                    .get(key)
                    .and_then(|m| m.iter().next().copied())?;
                Some((txn, self.marker_primary(txn).unwrap_or_default()))
            })
    }

    /// The first intent on a key in `[start, end)` (`end` empty: no end), with its
    /// transaction and primary: a scan over it must wait for its decision.
    pub fn intent_in(&self, start: &[u8], end: &[u8]) -> Option<(&[u8], &Intent)> {
        self.intents
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(k, i)| (k.as_slice(), i))
            .next()
    }

    /// The intent on `key`: its transaction and primary.
    pub fn intent(&self, key: &[u8]) -> Option<&Intent> {
        self.intents.get(key)
    }

    /// The state as a range snapshot holds it (the versions are the store's; the
    /// `forget_decision_on_crash` bug's memory is not state).
    pub fn to_wire(&self) -> crate::proto::raft::TxnPartState {
        use crate::proto::raft::{
            TxnIntent, TxnKeyTimestamp, TxnMarker, TxnPartState, TxnPrimary, TxnRecord,
            TxnResolution,
        };
        TxnPartState {
            intents: self
                .intents
                .iter()
                .map(|(key, i)| TxnIntent {
                    key: key.clone(),
                    txn: i.txn,
                    primary: i.primary,
                    value: Some(super::wire::write_to_wire(key, &i.value)),
                    start_ts: i.start_ts,
                })
                .collect(),
            markers: self
                .markers
                .iter()
                .map(|(key, txns)| TxnMarker {
                    key: key.clone(),
                    txns: txns.iter().copied().collect(),
                })
                .collect(),
            records: self
                .records
                .iter()
                .map(|(id, r)| TxnRecord {
                    id: *id,
                    status: Some(super::wire::status_to_wire(r.status)),
                    heartbeat: r.heartbeat,
                })
                .collect(),
            read_ts: self
                .read_ts
                .iter()
                .map(|(key, ts)| TxnKeyTimestamp {
                    key: key.clone(),
                    ts: *ts,
                })
                .collect(),
            marker_primaries: self
                .marker_primaries
                .iter()
                .map(|(txn, primary)| TxnPrimary {
                    txn: *txn,
                    primary: *primary,
                })
                .collect(),
            prepared: self.prepared.iter().copied().collect(),
            resolved: self
                .resolved
                .iter()
                .map(|(txn, r)| TxnResolution {
                    txn: *txn,
                    committed: matches!(r, Resolution::Committed(_)),
                    commit_ts: match r {
                        Resolution::Committed(ts) => *ts,
                        Resolution::Aborted => 0,
                    },
                })
                .collect(),
        }
    }

    /// The participant a snapshot holds, for partition `me`.
    pub fn from_wire(
        state: &crate::proto::raft::TxnPartState,
        me: super::PartitionId,
        bugs: TxnBugs,
    ) -> Result<Participant, String> {
        let mut p = Participant::new(me, bugs);
        for i in &state.intents {
            let value = i
                .value
                .as_ref()
                .map(super::wire::write_from_wire)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("the intent on {:?} has no value", i.key))?;
            p.intents.insert(
                i.key.clone(),
                Intent {
                    txn: i.txn,
                    primary: i.primary,
                    value,
                    start_ts: i.start_ts,
                },
            );
        }
        for m in &state.markers {
            p.markers
                .insert(m.key.clone(), m.txns.iter().copied().collect());
        }
        for r in &state.records {
            p.records.insert(
                r.id,
                Record {
                    status: super::wire::status_from_wire(r.status.as_ref())?,
                    heartbeat: r.heartbeat,
                },
            );
        }
        p.read_ts = state
            .read_ts
            .iter()
            .map(|k| (k.key.clone(), k.ts))
            .collect();
        p.marker_primaries = state
            .marker_primaries
            .iter()
            .map(|m| (m.txn, m.primary))
            .collect();
        p.prepared = state.prepared.iter().copied().collect();
        p.resolved = state
            .resolved
            .iter()
            .map(|r| {
                let resolution = if r.committed {
                    Resolution::Committed(r.commit_ts)
                } else {
                    Resolution::Aborted
                };
                (r.txn, resolution)
            })
            .collect();
        Ok(p)
    }

    /// A split at `at`: the right half (partition `right`) takes the timestamp cache of
    /// its keys and a copy of the decisions (so a late prepare is refused on either side).
    /// Only called with nothing undecided here.
    pub fn split_off(&mut self, at: &[u8], right: super::PartitionId) -> Participant {
        let mut other = Participant::new(right, self.bugs);
        other.read_ts = self.read_ts.split_off(at);
        other.resolved = self.resolved.clone();
        other
    }

    /// A merge: takes in the other range's timestamp cache, decisions and records (the
    /// records of transactions it was primary for, for late recoveries).
    pub fn absorb(&mut self, other: Participant) {
        self.read_ts.extend(other.read_ts);
        for (id, resolution) in other.resolved {
            self.resolved.entry(id).or_insert(resolution);
        }
        for (id, record) in other.records {
            self.records.entry(id).or_insert(record);
        }
        self.prepared.extend(other.prepared);
    }

    /// Switches the seeded bugs a range's participant takes from the node's flags (the
    /// range applies every entry with them).
    pub fn set_bugs(&mut self, bugs: TxnBugs) {
        self.bugs = bugs;
    }

    /// The node restarts: the replicated state is replayed from the log; only what the
    /// `forget_decision_on_crash` bug keeps in memory is gone.
    pub fn restart(&mut self) {
        self.volatile_decisions.clear();
    }

    fn prepare(
        &mut self,
        versions: &mut impl Versions,
        meta: TxnMeta,
        part: Part,
        now: u64,
    ) -> Reply {
        let id = meta.id;
        let primary_here = self.is_primary(&meta);
        if let Some(r) = self.resolved.get(&id) {
            // A retry after the decision reached us: nothing to lay again.
            let status = match r {
                Resolution::Committed(ts) => TxnStatus::Committed(*ts),
                Resolution::Aborted => TxnStatus::Aborted,
            };
            return Reply::Refused {
                id,
                reason: Refusal::AlreadyDecided(status),
            };
        }
        if primary_here && self.records.contains_key(&id) && self.status(id) != TxnStatus::Pending {
            return Reply::Refused {
                id,
                reason: Refusal::AlreadyDecided(self.status(id)),
            };
        }
        let level = meta.isolation;
        if self.prepared.contains(&id) && self.holds_part(id, &part, level) {
            // A retried prepare: answer as before.
            return Reply::Prepared {
                id,
                reads: read_values(versions, &part, read_ts_for(&meta)),
            };
        }
        // Read committed reads the latest committed values and never an intent, so it
        // checks nothing. Snapshot isolation reads at its start, which an intent may
        // commit below: it waits for none (refuses). Serializable also refuses a read of
        // something committed after its start.
        for key in part.reads.iter().filter(|_| level != Level::ReadCommitted) {
            // A snapshot read can pass an intent of a transaction that started after its
            // snapshot: that one commits above its own start, so not in the snapshot.
            if let Some(i) = self.intents.get(key)
                && i.txn != id
                && !(level == Level::Snapshot && i.start_ts > meta.start_ts)
            {
                return conflict(id, key, i.txn, i.primary);
            }
            if level == Level::Serializable
                && !self.bugs.no_uncertainty_restart
                && let Some(t) = versions.newest(key)
                && t > meta.start_ts
            {
                return too_old(id, key, t);
            }
        }
        let write_check = !(level == Level::Snapshot && self.bugs.snapshot_without_write_check);
        let written = part
            .writes
            .iter()
            .map(|(k, _)| k)
            .chain(part.appends.iter().map(|(k, _)| k));
        for key in written {
            if let Some(i) = self.intents.get(key)
                && i.txn != id
            {
                return conflict(id, key, i.txn, i.primary);
            }
            if let Some(other) = self
                .markers
                .get(key)
                .and_then(|m| m.iter().find(|t| **t != id))
            {
                return conflict(
                    id,
                    key,
                    *other,
                    self.marker_primary(*other).unwrap_or_default(),
                );
            }
            // First committer wins, at every level: a write never lands below a newer
            // version (the seeded bug skips it under snapshot isolation).
            if write_check
                && let Some(t) = versions.newest(key)
                && t > meta.start_ts
            {
                return too_old(id, key, t);
            }
            if let Some(&t) = self.read_ts.get(key)
                && t > meta.start_ts
            {
                return too_old(id, key, t);
            }
        }
        // Every check passed, so the value at the start timestamp is the newest: the
        // appended list is computed from it before anything is laid.
        let mut appended = Vec::with_capacity(part.appends.len());
        for (key, elements) in &part.appends {
            match versions.append(versions.read_at(key, meta.start_ts), elements) {
                Ok(value) => appended.push((key.clone(), Some(value))),
                Err(why) => {
                    return Reply::Refused {
                        id,
                        reason: Refusal::Invalid {
                            key: key.clone(),
                            why,
                        },
                    };
                }
            }
        }
        if level == Level::Serializable {
            for key in &part.reads {
                self.markers.entry(key.clone()).or_default().insert(id);
            }
            self.marker_primaries.insert(id, meta.primary);
        }
        for (key, value) in part.writes.iter().chain(&appended) {
            self.intents.insert(
                key.clone(),
                Intent {
                    txn: id,
                    primary: meta.primary,
                    value: value.clone(),
                    start_ts: meta.start_ts,
                },
            );
        }
        if primary_here {
            self.records.entry(id).or_insert(Record {
                status: TxnStatus::Pending,
                heartbeat: now,
            });
        }
        self.prepared.insert(id);
        Reply::Prepared {
            id,
            reads: read_values(versions, &part, read_ts_for(&meta)),
        }
    }

    fn is_primary(&self, meta: &TxnMeta) -> bool {
        self.me == meta.primary
    }

    fn holds_part(&self, id: TxnId, part: &Part, level: Level) -> bool {
        part.writes
            .iter()
            .map(|(k, _)| k)
            .chain(part.appends.iter().map(|(k, _)| k))
            .all(|k| self.intents.get(k).is_some_and(|i| i.txn == id))
            && (level != Level::Serializable
                || part
                    .reads
                    .iter()
                    .all(|k| self.markers.get(k).is_some_and(|m| m.contains(&id))))
    }

    /// Moves a record from `Pending` to `decision` (writing one if there is none); a record
    /// already decided keeps its decision. Returns the status after. The primary resolves
    /// its own part at once.
    fn decide(
        &mut self,
        versions: &mut impl Versions,
        id: TxnId,
        decision: TxnStatus,
    ) -> TxnStatus {
        let current = self.status(id);
        if current.is_final() {
            return current;
        }
        if self.bugs.forget_decision_on_crash && self.records.contains_key(&id) {
            self.volatile_decisions.insert(id, decision);
        } else {
            let record = self.records.entry(id).or_insert(Record {
                status: TxnStatus::Pending,
                heartbeat: 0,
            });
            record.status = decision;
        }
        self.resolve(versions, id, decision);
        decision
    }

    fn resolve(&mut self, versions: &mut impl Versions, id: TxnId, status: TxnStatus) {
        let resolution = match status {
            TxnStatus::Committed(ts) => Resolution::Committed(ts),
            TxnStatus::Aborted => Resolution::Aborted,
            TxnStatus::Pending => return,
        };
        let keys: Vec<Key> = self
            .intents
            .iter()
            .filter(|(_, i)| i.txn == id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let intent = self.intents.remove(&key).expect("listed above");
            if let Resolution::Committed(ts) = resolution {
                versions.commit(&key, ts, intent.value);
            }
        }
        if let Resolution::Committed(ts) = resolution {
            versions.observe(ts);
        }
        let read_ts = &mut self.read_ts;
        self.markers.retain(|key, txns| {
            if txns.remove(&id)
                && let Resolution::Committed(ts) = resolution
            {
                let seen = read_ts.entry(key.clone()).or_insert(0);
                *seen = (*seen).max(ts);
            }
            !txns.is_empty()
        });
        self.marker_primaries.remove(&id);
        // Remembered even where nothing was prepared: a prepare that arrives after the
        // decision (delayed, or retried) must be refused, or it would lay an intent no one
        // will ever resolve (the model found this: its coordinator had already finished).
        self.resolved.entry(id).or_insert(resolution);
    }
}

/// Where a transaction's reads look: its snapshot, or for read committed the latest
/// committed version.
fn read_ts_for(meta: &TxnMeta) -> u64 {
    match meta.isolation {
        Level::ReadCommitted => u64::MAX,
        Level::Serializable | Level::Snapshot => meta.start_ts,
    }
}

fn read_values(versions: &impl Versions, part: &Part, ts: u64) -> Vec<(Key, Value)> {
    part.reads
        .iter()
        .map(|k| (k.clone(), versions.read_at(k, ts)))
        .collect()
}

fn conflict(id: TxnId, key: &[u8], other: TxnId, primary: super::PartitionId) -> Reply {
    Reply::Refused {
        id,
        reason: Refusal::Conflict {
            key: key.to_vec(),
            other,
            primary,
        },
    }
}

fn too_old(id: TxnId, key: &[u8], committed_at: u64) -> Reply {
    Reply::Refused {
        id,
        reason: Refusal::TooOld {
            key: key.to_vec(),
            committed_at,
        },
    }
}
