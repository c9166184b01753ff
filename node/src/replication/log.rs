//! The in-memory Raft log: a compacted prefix (the snapshot, the low-water mark) and the
//! entries after it. Durability is the driver's job (it persists what `Ready` hands
//! out); this type only keeps the order and the indices straight.

use crate::proto::raft::Entry;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftLog {
    /// Index and term of the last entry folded into the snapshot (0, 0 when none).
    snapshot_index: u64,
    snapshot_term: u64,
    /// entries[i].index == snapshot_index + 1 + i
    entries: Vec<Entry>,
    /// The high-water mark: the highest index known to be committed.
    pub(crate) commit_index: u64,
    /// Highest index handed to the driver for applying.
    pub(crate) applied_index: u64,
    /// Entries after this index have not been handed to the driver for persisting yet.
    pub(crate) unstable_from: u64,
}

impl RaftLog {
    pub fn new(snapshot_index: u64, snapshot_term: u64, entries: Vec<Entry>) -> Self {
        for (offset, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                snapshot_index + 1 + offset as u64,
                "log has a gap"
            );
        }
        let last = snapshot_index + entries.len() as u64;
        Self {
            snapshot_index,
            snapshot_term,
            entries,
            commit_index: snapshot_index,
            applied_index: snapshot_index,
            unstable_from: last + 1,
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`; None if compacted away (below the snapshot) or
    /// beyond the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries in `[from, to]`, at most `max` of them.
    pub fn slice(&self, from: u64, to: u64, max: usize) -> Vec<Entry> {
        assert!(from > self.snapshot_index, "slice below the snapshot");
        let to = to.min(self.last_index());
        if from > to {
            return Vec::new();
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let end = ((to - self.snapshot_index) as usize).min(start.saturating_add(max));
        self.entries[start..end].to_vec()
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Appends entries that follow `prev_index`, truncating a conflicting suffix
    /// (Raft §5.3, AppendEntries receiver rule 3). Returns the index of the last entry
    /// now known to match the leader. `keep_conflicts` is the seeded bug that skips the
    /// truncation.
    pub fn append_after(
        &mut self,
        prev_index: u64,
        entries: &[Entry],
        keep_conflicts: bool,
    ) -> u64 {
        let mut last_matching = prev_index;
        for entry in entries {
            if entry.index <= self.snapshot_index {
                last_matching = entry.index;
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => last_matching = entry.index,
                Some(_) if keep_conflicts => last_matching = entry.index,
                Some(_) => {
                    assert!(
                        entry.index > self.commit_index,
                        "leader tried to overwrite committed entry {}",
                        entry.index
                    );
                    self.truncate_from(entry.index);
                    self.push(entry.clone());
                    last_matching = entry.index;
                }
                None => {
                    assert_eq!(entry.index, self.last_index() + 1, "append leaves a gap");
                    self.push(entry.clone());
                    last_matching = entry.index;
                }
            }
        }
        last_matching
    }

    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "append leaves a gap");
        assert!(
            entry.term >= self.last_term(),
            "terms in a log never decrease"
        );
        self.unstable_from = self.unstable_from.min(entry.index);
        self.entries.push(entry);
    }

    fn truncate_from(&mut self, index: u64) {
        assert!(index > self.snapshot_index);
        self.entries
            .truncate((index - self.snapshot_index - 1) as usize);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Entries not yet handed out for persisting. A driver writes them to the WAL; an
    /// entry whose index is already there supersedes the old one and everything after.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from;
        self.unstable_from = self.last_index() + 1;
        if from > self.last_index() {
            return Vec::new();
        }
        self.slice(from, self.last_index(), usize::MAX)
    }

    /// Fast backtracking hint (Raft thesis §5.3, end): the first index this log holds
    /// of `term`, not below the snapshot.
    pub fn first_index_of_term(&self, term: u64, at_or_before: u64) -> u64 {
        let mut index = at_or_before.min(self.last_index());
        while index > self.snapshot_index + 1 && self.term(index - 1) == Some(term) {
            index -= 1;
        }
        index
    }

    /// The last index this log holds of `term`, if any.
    pub fn last_index_of_term(&self, term: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// Drops entries up to and including `index` (they are in a snapshot now).
    pub fn compact(&mut self, index: u64, term: u64) {
        assert!(index >= self.snapshot_index, "compaction goes backwards");
        if index <= self.last_index() && self.term(index) == Some(term) {
            let keep_from = (index - self.snapshot_index) as usize;
            self.entries.drain(..keep_from);
        } else {
            // A snapshot from the leader that this log does not match: the log is
            // replaced by the snapshot.
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit_index = self.commit_index.max(index);
        self.applied_index = self.applied_index.max(index);
        self.unstable_from = self.unstable_from.max(index + 1);
    }

    /// Committed entries not yet handed out for applying, at most `max`.
    pub fn take_committed(&mut self, max: usize) -> Vec<Entry> {
        if self.applied_index >= self.commit_index {
            return Vec::new();
        }
        let entries = self.slice(self.applied_index + 1, self.commit_index, max);
        if let Some(last) = entries.last() {
            self.applied_index = last.index;
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: Vec::new(),
            ..Entry::default()
        }
    }

    fn log_of_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(i as u64 + 1, *t))
            .collect();
        RaftLog::new(0, 0, entries)
    }

    #[test]
    fn conflicting_suffix_is_truncated() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        let matched = log.append_after(2, &[entry(3, 3)], false);
        assert_eq!(matched, 3);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
    }

    #[test]
    fn matching_entries_do_not_truncate() {
        // Raft §5.3: a stale, reordered AppendEntries must not cut off later entries.
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        assert_eq!(log.append_after(1, &[entry(2, 1)], false), 2);
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn first_index_of_term_walks_back_to_the_term_start() {
        let log = log_of_terms(&[1, 2, 2, 2, 3]);
        assert_eq!(log.first_index_of_term(2, 4), 2);
        assert_eq!(log.first_index_of_term(1, 1), 1);
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(4), None);
    }

    #[test]
    fn compaction_keeps_later_entries() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.commit_index = 3;
        log.compact(2, 1);
        assert_eq!((log.first_index(), log.last_index()), (3, 4));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert_eq!(log.slice(3, 4, 10).len(), 2);
    }

    #[test]
    fn unstable_entries_are_handed_out_once() {
        let mut log = RaftLog::new(0, 0, Vec::new());
        log.push(entry(1, 1));
        log.push(entry(2, 1));
        assert_eq!(log.take_unstable().len(), 2);
        assert!(log.take_unstable().is_empty());
        log.append_after(1, &[entry(2, 2)], false);
        let unstable = log.take_unstable();
        assert_eq!(
            unstable,
            vec![entry(2, 2)],
            "the overwrite is persisted again"
        );
    }
}
