//! An in-memory disk that keeps what the node's WAL and snapshot file keep (hard state,
//! snapshot, entries after it), following step 1 of the [`Ready`] contract. The simulated
//! cluster of the core's tests and the model checker (`faultline-checkers`) both store a
//! node's durable state in it, so that they recover exactly as the node does.

use crate::proto::raft::{Entry, HardState};

use super::{PersistedState, Ready, Snapshot};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemoryDisk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl MemoryDisk {
    /// Makes a `Ready`'s hard state, snapshot and entries durable. An entry supersedes any
    /// stored entry at the same or a higher index.
    pub fn persist(&mut self, ready: &Ready) {
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(snapshot) = &ready.snapshot {
            self.keep_snapshot(snapshot.clone());
        }
        for entry in &ready.entries {
            self.entries.retain(|e| e.index < entry.index);
            self.entries.push(entry.clone());
        }
    }

    /// Stores a snapshot (received, or taken locally) and drops the entries it covers.
    pub fn keep_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.last_included_index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = Some(snapshot);
    }

    /// What `RaftCore::new` starts from after a restart.
    pub fn recover(&self) -> PersistedState {
        let base = self
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_included_index);
        PersistedState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| e.index > base)
                .cloned()
                .collect(),
        }
    }
}
