//! What the replication thread makes durable: WAL records for the hard state and
//! entries, and the snapshot file. Recovery turns them back into a `PersistedState`.

use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::proto::raft::{
    Entry, HardState, SnapshotFile, SnapshotMeta, WalRecord, wal_record::Record,
};
use crate::replication::{PersistedState, Ready, Snapshot};
use crate::storage::snapshot_file;
use crate::storage::wal::{TornTail, Wal, WalOptions};

const SNAPSHOT_FILE: &str = "snapshot";

pub struct Durable {
    wal: Wal,
    dir: PathBuf,
    /// The seeded bug `no-fsync`: records are written but never synced.
    pub skip_fsync: bool,
}

pub struct Recovered {
    pub durable: Durable,
    pub state: PersistedState,
    pub torn_tail: Option<TornTail>,
}

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

impl Durable {
    pub fn recover(data_dir: &Path) -> Result<Recovered, RecoveryError> {
        std::fs::create_dir_all(data_dir).map_err(|e| RecoveryError::Invalid {
            path: data_dir.to_path_buf(),
            reason: format!("cannot create the data directory: {e}"),
        })?;
        let snapshot = match snapshot_file::read(data_dir, SNAPSHOT_FILE)? {
            None => None,
            Some(bytes) => {
                let file =
                    SnapshotFile::decode(bytes.as_slice()).map_err(|e| RecoveryError::Invalid {
                        path: data_dir.join(SNAPSHOT_FILE),
                        reason: format!("snapshot does not decode: {e}"),
                    })?;
                let meta = file.meta.unwrap_or_default();
                Some(Snapshot {
                    meta,
                    data: file.data,
                })
            }
        };
        let wal_dir = data_dir.join("wal");
        let replay = Wal::open(&wal_dir, WalOptions::default())?;
        let mut hard_state = HardState::default();
        let mut entries: Vec<Entry> = Vec::new();
        for (number, bytes) in replay.records.iter().enumerate() {
            let record =
                WalRecord::decode(bytes.as_slice()).map_err(|e| RecoveryError::Invalid {
                    path: wal_dir.clone(),
                    reason: format!("record {number} passed its checksum but does not decode: {e}"),
                })?;
            match record.record {
                Some(Record::HardState(hs)) => hard_state = hs,
                Some(Record::Entry(entry)) => {
                    // A later record for an index supersedes it and everything after.
                    entries.retain(|e| e.index < entry.index);
                    entries.push(entry);
                }
                Some(Record::Snapshot(meta)) => {
                    entries.retain(|e| e.index > meta.last_included_index)
                }
                None => {}
            }
        }
        let base = snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
        entries.retain(|e| e.index > base);
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != base + 1 + offset as u64 {
                return Err(RecoveryError::Invalid {
                    path: wal_dir,
                    reason: format!(
                        "the log has a gap: expected index {} after the snapshot at {base}, found {}",
                        base + 1 + offset as u64,
                        entry.index
                    ),
                });
            }
        }
        let durable = Durable {
            wal: replay.wal,
            dir: data_dir.to_path_buf(),
            skip_fsync: false,
        };
        let state = PersistedState {
            hard_state,
            snapshot,
            entries,
        };
        Ok(Recovered {
            durable,
            state,
            torn_tail: replay.torn_tail,
        })
    }

    /// Step 1 of the `Ready` contract: everything in it durable, with one fsync.
    pub fn persist(
        &mut self,
        ready: &Ready,
        retained: impl FnOnce() -> (HardState, Vec<Entry>),
    ) -> Result<(), RecoveryError> {
        if let Some(snapshot) = &ready.snapshot {
            let (hard_state, entries) = retained();
            self.write_snapshot(snapshot, hard_state, &entries)?;
        }
        // Entries before the hard state: a torn write may then lose the hard state's new
        // commit index (harmless: it is a hint), never keep a commit index whose entries
        // were lost (which would apply entries this node never had committed).
        for entry in &ready.entries {
            self.append(Record::Entry(entry.clone()))?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.append(Record::HardState(hard_state))?;
        }
        if ready.must_sync && !self.skip_fsync {
            self.wal.sync()?;
        }
        Ok(())
    }

    fn append(&mut self, record: Record) -> Result<(), RecoveryError> {
        let bytes = WalRecord {
            record: Some(record),
        }
        .encode_to_vec();
        self.wal.append(&bytes)?;
        Ok(())
    }

    /// Writes the snapshot file, then starts the WAL afresh with only what must outlive
    /// it: the hard state, the snapshot marker and the entries after it.
    pub fn write_snapshot(
        &mut self,
        snapshot: &Snapshot,
        hard_state: HardState,
        entries: &[Entry],
    ) -> Result<(), RecoveryError> {
        let file = SnapshotFile {
            meta: Some(snapshot.meta.clone()),
            data: snapshot.data.clone(),
        };
        snapshot_file::write_atomic(&self.dir, SNAPSHOT_FILE, &file.encode_to_vec())?;
        let meta: SnapshotMeta = snapshot.meta.clone();
        let index = meta.last_included_index;
        let mut records = vec![
            WalRecord {
                record: Some(Record::HardState(hard_state)),
            }
            .encode_to_vec(),
            WalRecord {
                record: Some(Record::Snapshot(meta)),
            }
            .encode_to_vec(),
        ];
        records.extend(entries.iter().filter(|e| e.index > index).map(|e| {
            WalRecord {
                record: Some(Record::Entry(e.clone())),
            }
            .encode_to_vec()
        }));
        self.wal.checkpoint(&records)?;
        Ok(())
    }
}
