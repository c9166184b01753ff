//! What the replication thread makes durable, for every Raft group the node hosts: one
//! shared WAL whose records are tagged with their group (hard states, entries, snapshot
//! markers), and one snapshot file per group. Recovery turns them back into one
//! `PersistedState` per group.
//!
//! One WAL for all groups means one fdatasync per round covers every group's writes (as
//! TiKV's raft-engine does): the replication thread stages each group's `Ready` with
//! [`Durable::stage`], then calls [`Durable::sync`] once. The WAL never rewrites records
//! in place; a group's snapshot makes its older records obsolete, and
//! [`Durable::checkpoint`] (after a snapshot, once the WAL has grown past
//! `checkpoint_bytes`) starts the WAL afresh with what every group still needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::proto::raft::{
    Entry, HardState, SnapshotFile, SnapshotMeta, WalRecord, wal_record::Record,
};
use crate::replication::{PersistedState, Ready, Snapshot};
use crate::storage::snapshot_file;
use crate::storage::wal::{TornTail, Wal, WalOptions};

const SNAPSHOT_DIR: &str = "snapshots";
/// The WAL is rewritten after a snapshot once it holds this many bytes since the last
/// rewrite; below it, obsolete records cost less than rewriting every group's log.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

pub struct Durable {
    wal: Wal,
    dir: PathBuf,
    /// The seeded bug `no-fsync`: records are written but never synced.
    pub skip_fsync: bool,
    /// Something staged since the last sync needs an fdatasync (entries, a vote).
    must_sync: bool,
    /// Record bytes appended since the WAL was last rewritten.
    bytes_since_checkpoint: u64,
}

pub struct Recovered {
    pub durable: Durable,
    /// Every group that has anything on disk, but those retired.
    pub groups: BTreeMap<u64, PersistedState>,
    /// Groups this node hosted and retired (a merge took their range): never hosted again,
    /// whatever the layout or the WAL says.
    pub tombstones: BTreeSet<u64>,
    pub torn_tail: Option<TornTail>,
}

/// The file that lists retired groups.
const TOMBSTONES_FILE: &str = "tombstones";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] crate::storage::wal::WalError),
    #[error(transparent)]
    Snapshot(#[from] snapshot_file::SnapshotFileError),
    #[error(
        "{path}: {reason}; the data directory is damaged: restore it from a backup or remove it so the node rejoins empty"
    )]
    Invalid { path: PathBuf, reason: String },
}

/// What one group's records in the WAL add up to, during replay.
#[derive(Default)]
struct Replayed {
    hard_state: HardState,
    entries: Vec<Entry>,
    /// Where the group's first surviving record is, for errors.
    first_record: usize,
}

fn invalid(path: &Path, reason: String) -> RecoveryError {
    RecoveryError::Invalid {
        path: path.to_path_buf(),
        reason,
    }
}

/// The file name of a group's snapshot.
pub fn snapshot_name(group: u64) -> String {
    format!("group-{group:016x}")
}

impl Durable {
    pub fn recover(data_dir: &Path) -> Result<Recovered, RecoveryError> {
        let invalid = |path: &Path, reason: String| RecoveryError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let snapshot_dir = data_dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| invalid(&snapshot_dir, format!("cannot create the directory: {e}")))?;
        let wal_dir = data_dir.join("wal");
        let replay = Wal::open(&wal_dir, WalOptions::default())?;
        let mut replayed: BTreeMap<u64, Replayed> = BTreeMap::new();
        for (number, bytes) in replay.records.iter().enumerate() {
            let record = WalRecord::decode(bytes.as_slice()).map_err(|e| {
                invalid(
                    &wal_dir,
                    format!("record {number} passed its checksum but does not decode: {e}"),
                )
            })?;
            // A first-format segment's header names no group; the record itself does.
            if let Some(Some(tagged)) = replay.groups.get(number)
                && *tagged != record.group_id
            {
                return Err(invalid(
                    &wal_dir,
                    format!(
                        "record {number}'s header says group {tagged} but the record says group {}",
                        record.group_id
                    ),
                ));
            }
            let group = replayed.entry(record.group_id).or_insert_with(|| Replayed {
                first_record: number,
                ..Replayed::default()
            });
            match record.record {
                Some(Record::HardState(hs)) => group.hard_state = hs,
                Some(Record::Entry(entry)) => {
                    // A later record for an index supersedes it and everything after.
                    group.entries.retain(|e| e.index < entry.index);
                    group.entries.push(entry);
                }
                Some(Record::Snapshot(meta)) => {
                    group.entries.retain(|e| e.index > meta.last_included_index)
                }
                None => {}
            }
        }
        // A group may have a snapshot and no record left (a checkpoint kept none).
        for group in snapshot_groups(&snapshot_dir)? {
            replayed.entry(group).or_default();
        }
        // A retired group's records stay in the WAL until a checkpoint, without the
        // snapshot they continue: they are not checked, only dropped.
        let tombstones = read_tombstones(data_dir)?;
        replayed.retain(|id, _| !tombstones.contains(id));
        let mut groups = BTreeMap::new();
        for (id, group) in replayed {
            let snapshot = read_snapshot(&snapshot_dir, id)?;
            let base = snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
            let mut entries = group.entries;
            entries.retain(|e| e.index > base);
            for (offset, entry) in entries.iter().enumerate() {
                let expected = base + 1 + offset as u64;
                if entry.index != expected {
                    return Err(invalid(
                        &wal_dir,
                        format!(
                            "group {id}'s log has a gap: expected index {expected} after its \
                             snapshot at {base}, found {} (its records start at record {})",
                            entry.index, group.first_record
                        ),
                    ));
                }
            }
            groups.insert(
                id,
                PersistedState {
                    hard_state: group.hard_state,
                    snapshot,
                    entries,
                },
            );
        }
        let durable = Durable {
            wal: replay.wal,
            dir: data_dir.to_path_buf(),
            skip_fsync: false,
            must_sync: false,
            bytes_since_checkpoint: replay.records.iter().map(|r| r.len() as u64).sum(),
        };
        Ok(Recovered {
            durable,
            groups,
            tombstones,
            torn_tail: replay.torn_tail,
        })
    }

    /// Retires `group` for good: it joins the tombstone list (written atomically, before
    /// anything else can happen), and its snapshot file goes. Its WAL records stay until the
    /// next checkpoint, which keeps only hosted groups', and are ignored meanwhile.
    pub fn tombstone(&mut self, group: u64) -> Result<(), RecoveryError> {
        let mut tombstones = read_tombstones(&self.dir)?;
        tombstones.insert(group);
        let text: String = tombstones.iter().map(|id| format!("{id}\n")).collect();
        snapshot_file::write_atomic(&self.dir, TOMBSTONES_FILE, text.as_bytes())?;
        let snapshot = self.dir.join(SNAPSHOT_DIR).join(snapshot_name(group));
        match std::fs::remove_file(&snapshot) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(invalid(&snapshot, format!("cannot remove it: {e}"))),
        }
    }

    /// Whether `group` was retired here.
    pub fn is_tombstoned(&self, group: u64) -> Result<bool, RecoveryError> {
        Ok(read_tombstones(&self.dir)?.contains(&group))
    }

    /// Takes `group` off the tombstone list, for a replica added back to a node it was
    /// removed from. The caller checkpoints the WAL first: the retired replica's records
    /// must be gone before a new one's records for the same group can be told apart.
    pub fn untombstone(&mut self, group: u64) -> Result<(), RecoveryError> {
        let mut tombstones = read_tombstones(&self.dir)?;
        if tombstones.remove(&group) {
            let text: String = tombstones.iter().map(|id| format!("{id}\n")).collect();
            snapshot_file::write_atomic(&self.dir, TOMBSTONES_FILE, text.as_bytes())?;
        }
        Ok(())
    }

    /// Step 1 of a group's `Ready` contract, without the fsync: the snapshot file (synced
    /// on its own), then the entries and hard state as WAL records. [`Durable::sync`]
    /// makes the records durable, for every group staged since the last one.
    pub fn stage(
        &mut self,
        group: u64,
        ready: &Ready,
        retained: impl FnOnce() -> (HardState, Vec<Entry>),
    ) -> Result<(), RecoveryError> {
        if let Some(snapshot) = &ready.snapshot {
            let (hard_state, _) = retained();
            self.write_snapshot(group, snapshot, hard_state)?;
        }
        // Entries before the hard state: a torn write may then lose the hard state's new
        // commit index (harmless: it is a hint), never keep a commit index whose entries
        // were lost (which would apply entries this node never had committed).
        for entry in &ready.entries {
            self.append(group, Record::Entry(entry.clone()))?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.append(group, Record::HardState(hard_state))?;
        }
        self.must_sync |= ready.must_sync;
        Ok(())
    }

    /// Writes everything staged, with one fdatasync if any staged `Ready` needed one.
    pub fn sync(&mut self) -> Result<(), RecoveryError> {
        if std::mem::take(&mut self.must_sync) && !self.skip_fsync {
            self.wal.sync()?;
        }
        Ok(())
    }

    /// Both steps for one group: the single-group path, and tests.
    pub fn persist(
        &mut self,
        group: u64,
        ready: &Ready,
        retained: impl FnOnce() -> (HardState, Vec<Entry>),
    ) -> Result<(), RecoveryError> {
        self.stage(group, ready, retained)?;
        self.sync()
    }

    fn append(&mut self, group: u64, record: Record) -> Result<(), RecoveryError> {
        let bytes = WalRecord {
            record: Some(record),
            group_id: group,
        }
        .encode_to_vec();
        self.bytes_since_checkpoint += bytes.len() as u64;
        self.wal.append_for(group, &bytes)?;
        Ok(())
    }

    /// Writes the group's snapshot file, then a WAL record saying its log up to the
    /// snapshot's index is obsolete, and the hard state that goes with it, synced.
    pub fn write_snapshot(
        &mut self,
        group: u64,
        snapshot: &Snapshot,
        hard_state: HardState,
    ) -> Result<(), RecoveryError> {
        let file = SnapshotFile {
            meta: Some(snapshot.meta.clone()),
            data: snapshot.data.clone(),
        };
        snapshot_file::write_atomic(
            &self.dir.join(SNAPSHOT_DIR),
            &snapshot_name(group),
            &file.encode_to_vec(),
        )?;
        self.append(group, Record::HardState(hard_state))?;
        self.append(group, Record::Snapshot(snapshot.meta.clone()))?;
        self.must_sync = true;
        self.sync()
    }

    /// Whether the WAL has grown enough since it was last rewritten that a checkpoint
    /// pays for itself.
    pub fn wants_checkpoint(&self) -> bool {
        self.bytes_since_checkpoint >= CHECKPOINT_BYTES
    }

    /// Starts the WAL afresh with only what every group needs (its hard state, its
    /// snapshot marker, its entries after the snapshot) and deletes the older segments.
    /// `groups` must list every group the node hosts.
    pub fn checkpoint<'a>(
        &mut self,
        groups: impl Iterator<Item = (u64, HardState, Option<&'a SnapshotMeta>, Vec<Entry>)>,
    ) -> Result<(), RecoveryError> {
        let mut records = Vec::new();
        for (group, hard_state, snapshot, entries) in groups {
            let encode = |record: Record| {
                WalRecord {
                    record: Some(record),
                    group_id: group,
                }
                .encode_to_vec()
            };
            records.push((group, encode(Record::HardState(hard_state))));
            let base = snapshot.map_or(0, |meta| meta.last_included_index);
            if let Some(meta) = snapshot {
                records.push((group, encode(Record::Snapshot(meta.clone()))));
            }
            records.extend(
                entries
                    .into_iter()
                    .filter(|e| e.index > base)
                    .map(|e| (group, encode(Record::Entry(e)))),
            );
        }
        let tagged: Vec<(u64, &[u8])> = records.iter().map(|(g, r)| (*g, r.as_slice())).collect();
        self.wal.checkpoint_for(&tagged)?;
        self.bytes_since_checkpoint = records.iter().map(|(_, r)| r.len() as u64).sum();
        Ok(())
    }
}

fn read_snapshot(dir: &Path, group: u64) -> Result<Option<Snapshot>, RecoveryError> {
    let name = snapshot_name(group);
    let Some(bytes) = snapshot_file::read(dir, &name)? else {
        return Ok(None);
    };
    let file = SnapshotFile::decode(bytes.as_slice()).map_err(|e| RecoveryError::Invalid {
        path: dir.join(&name),
        reason: format!("group {group}'s snapshot does not decode: {e}"),
    })?;
    Ok(Some(Snapshot {
        meta: file.meta.unwrap_or_default(),
        data: file.data,
    }))
}

fn read_tombstones(data_dir: &Path) -> Result<BTreeSet<u64>, RecoveryError> {
    let Some(bytes) = snapshot_file::read(data_dir, TOMBSTONES_FILE)? else {
        return Ok(BTreeSet::new());
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.trim().parse().map_err(|_| {
                invalid(
                    &data_dir.join(TOMBSTONES_FILE),
                    format!("{line:?} is not a group id"),
                )
            })
        })
        .collect()
}

/// The groups that have a snapshot file in `dir`.
fn snapshot_groups(dir: &Path) -> Result<Vec<u64>, RecoveryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RecoveryError::Invalid {
        path: dir.to_path_buf(),
        reason: format!("cannot list snapshots: {e}"),
    })?;
    let mut groups = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_prefix("group-")
            && hex.len() == 16
            && let Ok(group) = u64::from_str_radix(hex, 16)
        {
            groups.push(group);
        }
    }
    groups.sort_unstable();
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &str) -> Entry {
        Entry {
            term,
            index,
            data: data.as_bytes().to_vec(),
            ..Entry::default()
        }
    }

    fn ready(entries: Vec<Entry>, term: u64) -> Ready {
        Ready {
            hard_state: Some(HardState {
                term,
                voted_for: 1,
                commit: 0,
            }),
            must_sync: true,
            entries,
            ..Ready::default()
        }
    }

    fn nothing() -> (HardState, Vec<Entry>) {
        (HardState::default(), Vec::new())
    }

    #[test]
    fn interleaved_groups_recover_each_their_own_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            for round in 1..=5u64 {
                for group in [0u64, 1, 7] {
                    let data = format!("g{group}r{round}");
                    durable
                        .stage(
                            group,
                            &ready(vec![entry(group + 1, round, &data)], group + 1),
                            nothing,
                        )
                        .unwrap();
                }
                durable.sync().unwrap();
            }
            // Group 7 overwrites its last two entries in a new term.
            durable
                .persist(7, &ready(vec![entry(9, 4, "g7 new")], 9), nothing)
                .unwrap();
        }
        let recovered = Durable::recover(dir.path()).unwrap();
        assert_eq!(
            recovered.groups.keys().copied().collect::<Vec<_>>(),
            [0, 1, 7]
        );
        for (group, state) in &recovered.groups {
            let expected_last = if *group == 7 { 4 } else { 5 };
            assert_eq!(state.entries.len() as u64, expected_last, "group {group}");
            for entry in &state.entries[..3] {
                assert_eq!(
                    entry.data,
                    format!("g{group}r{}", entry.index).into_bytes(),
                    "group {group} got another group's entry"
                );
            }
        }
        assert_eq!(recovered.groups[&7].entries[3].data, b"g7 new");
        assert_eq!(recovered.groups[&7].hard_state.term, 9);
        assert_eq!(recovered.groups[&1].hard_state.term, 2);
    }

    #[test]
    fn a_retired_group_is_never_recovered_whatever_its_records_and_snapshot_say() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            // Group 3 starts from a snapshot at 7 (a split's new range), then has entries.
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_included_index: 7,
                    last_included_term: 1,
                    voters: vec![1, 2, 3],
                    ..SnapshotMeta::default()
                },
                data: b"state of group 3 at 7".to_vec(),
            };
            durable
                .write_snapshot(3, &snapshot, HardState::default())
                .unwrap();
            for index in 8..=9 {
                durable
                    .stage(3, &ready(vec![entry(1, index, "three")], 1), nothing)
                    .unwrap();
                durable
                    .stage(1, &ready(vec![entry(1, index - 7, "one")], 1), nothing)
                    .unwrap();
                durable.sync().unwrap();
            }
            durable.tombstone(3).unwrap();
        }
        // Without its snapshot the records of group 3 would be a gap; retired, they are
        // not looked at.
        let recovered = Durable::recover(dir.path()).unwrap();
        assert!(recovered.tombstones.contains(&3));
        assert_eq!(recovered.groups.keys().copied().collect::<Vec<_>>(), [1]);
        drop(recovered);
        snapshot_file::write_atomic(dir.path(), TOMBSTONES_FILE, b"3\nthree\n").unwrap();
        let error = Durable::recover(dir.path())
            .err()
            .expect("a bad tombstone list");
        assert!(
            error.to_string().contains("\"three\" is not a group id"),
            "{error}"
        );
    }

    #[test]
    fn a_snapshot_makes_only_its_own_groups_records_obsolete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            for index in 1..=4 {
                durable
                    .stage(1, &ready(vec![entry(1, index, "one")], 1), nothing)
                    .unwrap();
                durable
                    .stage(2, &ready(vec![entry(1, index, "two")], 1), nothing)
                    .unwrap();
                durable.sync().unwrap();
            }
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_included_index: 3,
                    last_included_term: 1,
                    voters: vec![1, 2, 3],
                    ..SnapshotMeta::default()
                },
                data: b"state of group 1 at 3".to_vec(),
            };
            durable
                .write_snapshot(1, &snapshot, HardState::default())
                .unwrap();
        }
        let recovered = Durable::recover(dir.path()).unwrap();
        let one = &recovered.groups[&1];
        assert_eq!(one.snapshot.as_ref().unwrap().meta.last_included_index, 3);
        assert_eq!(one.entries.iter().map(|e| e.index).collect::<Vec<_>>(), [4]);
        assert_eq!(recovered.groups[&2].entries.len(), 4);
        assert!(recovered.groups[&2].snapshot.is_none());
    }

    #[test]
    fn a_checkpoint_keeps_what_every_group_needs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            for index in 1..=3 {
                for group in [1, 2] {
                    durable
                        .stage(group, &ready(vec![entry(1, index, "x")], 1), nothing)
                        .unwrap();
                }
                durable.sync().unwrap();
            }
            let meta = SnapshotMeta {
                last_included_index: 2,
                last_included_term: 1,
                voters: vec![1],
                ..SnapshotMeta::default()
            };
            let snapshot = Snapshot {
                meta: meta.clone(),
                data: Vec::new(),
            };
            durable
                .write_snapshot(2, &snapshot, HardState::default())
                .unwrap();
            let hard = HardState {
                term: 1,
                voted_for: 1,
                commit: 3,
            };
            durable
                .checkpoint(
                    [
                        (
                            1,
                            hard,
                            None,
                            vec![entry(1, 1, "x"), entry(1, 2, "x"), entry(1, 3, "x")],
                        ),
                        (2, hard, Some(&meta), vec![entry(1, 3, "x")]),
                    ]
                    .into_iter(),
                )
                .unwrap();
            assert!(!durable.wants_checkpoint());
        }
        let recovered = Durable::recover(dir.path()).unwrap();
        assert_eq!(recovered.groups[&1].entries.len(), 3);
        assert_eq!(recovered.groups[&2].entries.len(), 1);
        assert_eq!(recovered.groups[&1].hard_state.commit, 3);
    }

    #[test]
    fn a_gap_in_one_groups_log_is_named_with_the_group() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            durable
                .persist(
                    3,
                    &ready(vec![entry(1, 1, "a"), entry(1, 3, "c")], 1),
                    nothing,
                )
                .unwrap();
        }
        let error = Durable::recover(dir.path()).err().unwrap().to_string();
        assert!(error.contains("group 3's log has a gap"), "{error}");
        assert!(error.contains("wal"), "{error}");
    }

    #[test]
    fn a_torn_tail_after_interleaved_groups_loses_only_the_unsynced_record() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            for index in 1..=3 {
                for group in [1, 2] {
                    durable
                        .stage(group, &ready(vec![entry(1, index, "x")], 1), nothing)
                        .unwrap();
                }
                durable.sync().unwrap();
            }
        }
        let segment = std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "wal"))
            .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&crate::storage::wal::torn_record(40, 10, false))
            .unwrap();
        drop(file);
        let recovered = Durable::recover(dir.path()).unwrap();
        assert!(recovered.torn_tail.is_some());
        assert_eq!(recovered.groups[&1].entries.len(), 3);
        assert_eq!(recovered.groups[&2].entries.len(), 3);
    }

    #[test]
    fn corruption_before_the_tail_names_group_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut durable = Durable::recover(dir.path()).unwrap().durable;
            for index in 1..=3 {
                durable
                    .persist(5, &ready(vec![entry(1, index, "payload")], 1), nothing)
                    .unwrap();
            }
        }
        let segment = std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "wal"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        // Flip a byte inside the first record's payload (after the 8-byte magic and the
        // 20-byte header): its header, and so its group, is intact.
        bytes[8 + 20 + 3] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
        let error = Durable::recover(dir.path()).err().unwrap().to_string();
        assert!(error.contains("offset 8"), "{error}");
        assert!(error.contains(&segment.display().to_string()), "{error}");
        assert!(error.contains("group 5"), "{error}");
    }

    #[test]
    fn a_log_of_the_first_format_is_read_and_continued_in_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        // A first-format segment: `len | crc(len) | crc(payload) | payload`, no group.
        let mut segment = b"FLWAL001".to_vec();
        for index in 1..=2 {
            let payload = WalRecord {
                record: Some(Record::Entry(entry(1, index, "old"))),
                group_id: 5,
            }
            .encode_to_vec();
            let len = (payload.len() as u32).to_le_bytes();
            segment.extend_from_slice(&len);
            segment.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
            segment.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            segment.extend_from_slice(&payload);
        }
        std::fs::write(wal_dir.join(format!("{:016x}.wal", 1)), segment).unwrap();
        {
            let mut recovered = Durable::recover(dir.path()).unwrap();
            assert_eq!(recovered.groups[&5].entries.len(), 2);
            recovered
                .durable
                .persist(5, &ready(vec![entry(1, 3, "new")], 1), nothing)
                .unwrap();
        }
        let recovered = Durable::recover(dir.path()).unwrap();
        assert_eq!(recovered.groups[&5].entries.len(), 3);
    }
}
