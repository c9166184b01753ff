//! The key-value state machine that the replicated log drives. Deterministic: the same
//! entries in the same order give the same state on every replica.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;

use crate::proto::kv::HlcTimestamp;
use crate::time::Timestamp;

use crate::proto::raft::{
    ApplyResult, ClientSession, Command, StoreSnapshot, StoredKey, command::Op,
    compare_and_swap::Expected,
};

/// A key, its value and its revision, as a scan returns them.
pub type ScanItem = (Vec<u8>, Vec<u8>, u64);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvStore {
    /// key -> (value, revision): the revision is the log index of the last write.
    data: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// client_id -> (last applied sequence, its result): exactly-once retries.
    sessions: HashMap<String, (u64, ApplyResult)>,
    /// Sum of one hash per key and per session, kept up to date by every change so that
    /// a replica can report the digest of each state it passes through (see `digest`).
    digest: u64,
    /// The timestamp of the last write that changed the state: every later one is
    /// stamped above it, so timestamps grow with revisions whichever leader proposed.
    last_timestamp: Timestamp,
}

impl KvStore {
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], u64)> {
        self.data
            .get(key)
            .map(|(value, revision)| (value.as_slice(), *revision))
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Keys in `[start, end)` in key order (an empty `end`: to the end), at most `limit`;
    /// true if more keys in the range were left out.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> (Vec<ScanItem>, bool) {
        let mut items = Vec::new();
        let range = self
            .data
            .range(start.to_vec()..)
            .take_while(|(key, _)| end.is_empty() || key.as_slice() < end);
        for (key, (value, revision)) in range {
            if items.len() == limit {
                return (items, true);
            }
            items.push((key.clone(), value.clone(), *revision));
        }
        (items, false)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies the command of the entry at `index`. `double_apply` is the seeded bug that
    /// ignores the session table.
    pub fn apply(&mut self, index: u64, command: &Command, double_apply: bool) -> ApplyResult {
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
        let result = self.execute(index, command);
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

    /// Sets or removes `key`, keeping the digest.
    fn set(&mut self, key: &[u8], value: Option<(Vec<u8>, u64)>) -> bool {
        if let Some((value, revision)) = &value {
            self.digest = self.digest.wrapping_add(key_hash(key, value, *revision));
        }
        let old = match value {
            Some(value) => self.data.insert(key.to_vec(), value),
            None => self.data.remove(key),
        };
        if let Some((value, revision)) = &old {
            self.digest = self.digest.wrapping_sub(key_hash(key, value, *revision));
        }
        old.is_some()
    }

    fn execute(&mut self, index: u64, command: &Command) -> ApplyResult {
        match &command.op {
            // Splits and merges change the range: `DataRange` applies them.
            None
            | Some(
                Op::Split(_) | Op::PrepareMerge(_) | Op::CommitMerge(_) | Op::RollbackMerge(_),
            ) => ApplyResult::default(),
            Some(Op::Put(put)) => {
                self.set(&put.key, Some((put.value.clone(), index)));
                ApplyResult {
                    succeeded: true,
                    revision: index,
                    timestamp: Some(self.stamp(command)),
                    ..Default::default()
                }
            }
            Some(Op::Delete(delete)) => {
                let existed = self.set(&delete.key, None);
                ApplyResult {
                    succeeded: existed,
                    revision: index,
                    found: existed,
                    timestamp: existed.then(|| self.stamp(command)),
                    ..Default::default()
                }
            }
            Some(Op::CompareAndSwap(cas)) => {
                let current = self.data.get(&cas.key);
                let matches = match (&cas.expected, current) {
                    (Some(Expected::ExpectedValue(v)), Some((value, _))) => v == value,
                    (Some(Expected::ExpectedRevision(r)), Some((_, revision))) => r == revision,
                    (Some(Expected::ExpectedAbsent(_)), None) => true,
                    _ => false,
                };
                if matches {
                    self.set(&cas.key, Some((cas.new_value.clone(), index)));
                    ApplyResult {
                        succeeded: true,
                        revision: index,
                        found: true,
                        timestamp: Some(self.stamp(command)),
                        ..Default::default()
                    }
                } else {
                    ApplyResult {
                        succeeded: false,
                        revision: current.map_or(0, |(_, r)| *r),
                        found: current.is_some(),
                        current_value: current.map(|(v, _)| v.clone()).unwrap_or_default(),
                        ..Default::default()
                    }
                }
            }
        }
    }

    /// The timestamp a state-changing write applies at: the leader's stamp, or just
    /// above the last write's if that is later (a new leader whose clock is behind).
    /// Deterministic, so every replica gives the same answer.
    fn stamp(&mut self, command: &Command) -> HlcTimestamp {
        let proposed = command.hlc.map_or(Timestamp::default(), from_wire);
        let floor = Timestamp {
            wall_ms: self.last_timestamp.wall_ms,
            logical: self.last_timestamp.logical.saturating_add(1),
        };
        self.last_timestamp = proposed.max(floor);
        to_wire(self.last_timestamp)
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
            .map(|(key, (value, revision))| StoredKey {
                key: key.clone(),
                value: value.clone(),
                revision: *revision,
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
            ..Default::default()
        }
    }

    /// A digest of the whole state (keys, values, revisions, sessions): replicas that
    /// applied the same entries agree on it, and one that applied something else almost
    /// surely does not. Order-independent (a sum of per-key and per-session hashes), so a
    /// change costs one hash instead of a pass over the state.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::from_proto(StoreSnapshot::decode(bytes)?)
    }

    pub fn from_proto(snapshot: StoreSnapshot) -> Result<Self, prost::DecodeError> {
        let data = snapshot
            .keys
            .into_iter()
            .map(|k| (k.key, (k.value, k.revision)))
            .collect();
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
        };
        store.digest = store.full_digest();
        Ok(store)
    }

    /// The digest computed from scratch.
    fn full_digest(&self) -> u64 {
        let keys = self
            .data
            .iter()
            .fold(0u64, |sum, (key, (value, revision))| {
                sum.wrapping_add(key_hash(key, value, *revision))
            });
        self.sessions
            .iter()
            .fold(keys, |sum, (client_id, (sequence, result))| {
                sum.wrapping_add(session_hash(client_id, *sequence, result))
            })
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

fn key_hash(key: &[u8], value: &[u8], revision: u64) -> u64 {
    fnv(&[b"key", key, value, &revision.to_le_bytes()])
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
}
