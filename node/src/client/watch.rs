//! A watch's cursor: per partition, the first revision it has not seen. A watch that was
//! cut off (its node died, or a partition split) resumes by asking for exactly that in
//! every partition, so that it sees each change once.

use std::collections::BTreeMap;

use crate::proto::kv::{WatchRequest, WatchResponse};

/// The `range_end` that watches every key starting with `prefix` (etcd's convention):
/// the prefix with its last byte below 0xff raised by one; `"\0"` (every key) if there
/// is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCursor {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_value: bool,
    pub progress_notify_ms: u64,
    /// For a partition not seen yet: the first revision wanted (0: from now).
    pub start_revision: u64,
    /// Per partition seen, the first revision not seen yet.
    pub next: BTreeMap<u64, u64>,
}

/// What a response told the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Events or progress; nothing to do.
    Progress,
    /// The watch ended; resume it (with `request`) to go on. `compacted`: the partition
    /// can no longer resume where it was: the cursor moved on past the compaction
    /// revision, and the changes in between are lost to this watch.
    Canceled {
        partition: u64,
        reason: String,
        compacted: Option<u64>,
    },
}

impl WatchCursor {
    /// The request that starts the watch, or resumes it where it got to.
    pub fn request(&self) -> WatchRequest {
        WatchRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            start_revision: self.start_revision,
            start_revisions: self.next.clone().into_iter().collect(),
            prev_value: self.prev_value,
            progress_notify_ms: self.progress_notify_ms,
            partitions: Vec::new(),
        }
    }

    /// Takes in one response of the watch.
    pub fn observe(&mut self, response: &WatchResponse) -> Observed {
        let partition = response.partition;
        let mut seen = response.revision;
        if let Some(last) = response.events.last() {
            seen = seen.max(last.revision);
        }
        // A from-now watch is created at the revision the replica had applied: after it.
        if response.created || seen > 0 || !response.events.is_empty() {
            let next = self.next.entry(partition).or_insert(0);
            *next = (*next).max(seen + 1);
        }
        if !response.canceled {
            return Observed::Progress;
        }
        let compacted = (response.compact_revision > 0).then_some(response.compact_revision);
        if let Some(revision) = compacted {
            let next = self.next.entry(partition).or_insert(0);
            *next = (*next).max(revision + 1);
        }
        Observed::Canceled {
            partition,
            reason: response.cancel_reason.clone(),
            compacted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::kv::WatchEvent;

    #[test]
    fn a_cursor_resumes_each_partition_after_what_it_saw() {
        let mut cursor = WatchCursor {
            start_revision: 1,
            ..Default::default()
        };
        cursor.observe(&WatchResponse {
            partition: 2,
            events: vec![WatchEvent {
                revision: 7,
                ..Default::default()
            }],
            revision: 7,
            ..Default::default()
        });
        cursor.observe(&WatchResponse {
            partition: 3,
            revision: 12,
            ..Default::default()
        });
        let request = cursor.request();
        assert_eq!(request.start_revisions.get(&2), Some(&8));
        assert_eq!(request.start_revisions.get(&3), Some(&13));
        assert_eq!(
            request.start_revision, 1,
            "unseen partitions from the start"
        );
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
