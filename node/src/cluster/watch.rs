//! Watches on one range, sans-IO (README.md). A watcher asks for the changes of a key
//! span from a revision on; the hub hands it what the range's store already holds
//! (catching up) and then what each applied entry changes (synced), in revision order,
//! each change once.
//!
//! Delivery is the caller's: every send goes through a closure that says whether the
//! watcher took it, was full, or is gone. A full watcher is not waited for and its
//! changes are not buffered: it falls back to catching up from the store on a later
//! tick, from the first revision it did not take (etcd's unsynced watchers). So a slow
//! reader costs the node nothing but a read of the store when it is ready again, and the
//! only thing that can end a watch early is compaction overtaking it.

use std::collections::BTreeMap;

use crate::store::{Change, KvStore};

/// Changes one catch-up delivery carries at most (whole revisions: it may go over to
/// finish the last one).
pub const CATCH_UP_CHANGES_MAX: usize = 1_000;

/// What one watcher asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// Keys in `[start, end)`; an empty `end`: every key from `start` on.
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// The first revision wanted; 0: from the next entry applied here.
    pub from: u64,
    /// Whether changes carry the value before.
    pub prev_value: bool,
    /// A progress notification at most this often (ms) while nothing else is sent; 0: none.
    pub progress_every_ms: u64,
}

impl WatchSpec {
    fn covers(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// What a watcher is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The watch is in place; it delivers changes from `from` on.
    Created { from: u64 },
    /// Changes in revision order, and `progress`: every change up to this revision has
    /// been delivered.
    Changes { changes: Vec<Change>, progress: u64 },
    /// Nothing new: every change up to `revision` has been delivered.
    Progress { revision: u64 },
    /// The watch has ended. `compacted`: it needs revisions that compaction dropped (the
    /// compaction revision); otherwise `reason` says why (the range split, merged or left
    /// this node) and `progress` how far it got.
    Canceled {
        reason: String,
        compacted: Option<u64>,
        progress: u64,
    },
}

/// Whether a watcher took a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Taken,
    /// Its queue is full: it catches up from the store later.
    Full,
    /// It is gone.
    Closed,
}

/// Seeded bugs, off unless the node is started with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchBugs {
    /// `watch-skip-on-resume`: a watch from a past revision drops the first change it
    /// catches up on.
    pub skip_on_resume: bool,
    /// `watch-uncommitted`: puts and deletes are sent when their entry is appended to the
    /// log, before it commits (the driver's part; see `server/driver.rs`).
    pub uncommitted: bool,
}

#[derive(Clone, Debug)]
struct Watcher {
    spec: WatchSpec,
    /// The first revision not delivered yet.
    next: u64,
    /// Takes live changes; false while it has to catch up from the store first.
    synced: bool,
    /// It has not caught up since it was created (for `skip_on_resume`).
    first_catch_up: bool,
    /// When it was last sent anything (ms, the caller's clock).
    last_sent_ms: u64,
}

/// The watchers of one range replica.
#[derive(Clone, Debug, Default)]
pub struct WatchHub {
    watchers: BTreeMap<u64, Watcher>,
    bugs: WatchBugs,
}

impl WatchHub {
    pub fn new(bugs: WatchBugs) -> Self {
        WatchHub {
            watchers: BTreeMap::new(),
            bugs,
        }
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Adds watcher `id` over `store`, which has applied up to `applied`. A watch from a
    /// revision at or below the compaction revision is refused (`Canceled` with
    /// `compacted`): the store no longer holds every change after it. A watch from a
    /// revision above `applied` waits for it. One from the past catches up at once if its
    /// first delivery fits.
    pub fn add(
        &mut self,
        id: u64,
        spec: WatchSpec,
        store: &KvStore,
        applied: u64,
        now_ms: u64,
        send: &mut impl FnMut(u64, Delivery) -> Sent,
    ) {
        let compacted = store.compacted_revision();
        if spec.from > 0 && compacted > 0 && spec.from <= compacted {
            send(
                id,
                Delivery::Canceled {
                    reason: format!(
                        "revision {} has been compacted (compaction revision {compacted}): \
                         watch from {} or later, or from now",
                        spec.from,
                        compacted + 1
                    ),
                    compacted: Some(compacted),
                    progress: 0,
                },
            );
            return;
        }
        let next = if spec.from == 0 {
            applied + 1
        } else {
            spec.from
        };
        if send(id, Delivery::Created { from: next }) == Sent::Closed {
            return;
        }
        let watcher = Watcher {
            synced: next > applied,
            first_catch_up: spec.from > 0,
            spec,
            next,
            last_sent_ms: now_ms,
        };
        self.watchers.insert(id, watcher);
        self.catch_up(id, store, applied, now_ms, send);
    }

    /// Removes watcher `id` (its stream was dropped).
    pub fn remove(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Keeps only the watchers `keep` says are still wanted (a stream dropped while its
    /// watcher had nothing to send goes here, not through a failed send).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.watchers.retain(|&id, _| keep(id));
    }

    /// The changes of the entries just applied (up to `applied`, in revision order) go to
    /// every synced watcher they concern.
    pub fn committed(
        &mut self,
        changes: &[Change],
        applied: u64,
        now_ms: u64,
        send: &mut impl FnMut(u64, Delivery) -> Sent,
    ) {
        let mut closed = Vec::new();
        for (&id, watcher) in self.watchers.iter_mut().filter(|(_, w)| w.synced) {
            let mine: Vec<Change> = changes
                .iter()
                .filter(|c| c.revision >= watcher.next && watcher.spec.covers(&c.key))
                .map(|c| strip(c, watcher.spec.prev_value))
                .collect();
            if mine.is_empty() {
                watcher.next = watcher.next.max(applied + 1);
                continue;
            }
            let delivery = Delivery::Changes {
                changes: mine,
                progress: applied,
            };
            match send(id, delivery) {
                Sent::Taken => {
                    watcher.next = applied + 1;
                    watcher.last_sent_ms = now_ms;
                }
                // What it missed is in the store: it catches up from `next` later.
                Sent::Full => watcher.synced = false,
                Sent::Closed => closed.push(id),
            }
        }
        for id in closed {
            self.watchers.remove(&id);
        }
    }

    /// Catches up the watchers that fell behind, ends the ones compaction overtook, and
    /// sends progress notifications that are due.
    pub fn tick(
        &mut self,
        store: &KvStore,
        applied: u64,
        now_ms: u64,
        send: &mut impl FnMut(u64, Delivery) -> Sent,
    ) {
        let ids: Vec<u64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if !watcher.synced {
                self.catch_up(id, store, applied, now_ms, send);
                continue;
            }
            let every = watcher.spec.progress_every_ms;
            if every == 0 || now_ms.saturating_sub(watcher.last_sent_ms) < every {
                continue;
            }
            let revision = watcher.next.saturating_sub(1).min(applied);
            match send(id, Delivery::Progress { revision }) {
                Sent::Taken => {
                    if let Some(w) = self.watchers.get_mut(&id) {
                        w.last_sent_ms = now_ms;
                    }
                }
                Sent::Full => {}
                Sent::Closed => self.remove(id),
            }
        }
    }

    /// The store was replaced (a snapshot installed): every watcher catches up from it.
    pub fn restored(&mut self) {
        for watcher in self.watchers.values_mut() {
            watcher.synced = false;
        }
    }

    /// Ends every watch: the range changed shape or left this node.
    pub fn cancel_all(&mut self, reason: &str, send: &mut impl FnMut(u64, Delivery) -> Sent) {
        for (id, watcher) in std::mem::take(&mut self.watchers) {
            send(
                id,
                Delivery::Canceled {
                    reason: reason.to_string(),
                    compacted: None,
                    progress: watcher.next.saturating_sub(1),
                },
            );
        }
    }

    /// One catch-up delivery for watcher `id` from the store; synced once it has
    /// everything up to `applied`.
    fn catch_up(
        &mut self,
        id: u64,
        store: &KvStore,
        applied: u64,
        now_ms: u64,
        send: &mut impl FnMut(u64, Delivery) -> Sent,
    ) {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return;
        };
        if watcher.next > applied {
            watcher.synced = true;
            return;
        }
        let compacted = store.compacted_revision();
        if compacted > 0 && watcher.next <= compacted {
            let from = watcher.next;
            self.watchers.remove(&id);
            send(
                id,
                Delivery::Canceled {
                    reason: format!(
                        "the watch fell behind to revision {from}, which has been compacted \
                         (compaction revision {compacted}): watch again from {} or from now",
                        compacted + 1
                    ),
                    compacted: Some(compacted),
                    progress: from - 1,
                },
            );
            return;
        }
        let spec = &watcher.spec;
        let mut changes = store.changes_between(&spec.start, &spec.end, watcher.next, applied);
        // Whole revisions only, so that `progress` is exact.
        let mut upto = applied;
        if changes.len() > CATCH_UP_CHANGES_MAX {
            let last = changes[CATCH_UP_CHANGES_MAX - 1].revision;
            changes.retain(|c| c.revision <= last);
            upto = last;
        }
        if watcher.first_catch_up && self.bugs.skip_on_resume && !changes.is_empty() {
            changes.remove(0);
        }
        let changes: Vec<Change> = changes.iter().map(|c| strip(c, spec.prev_value)).collect();
        let delivery = if changes.is_empty() {
            Delivery::Progress { revision: upto }
        } else {
            Delivery::Changes {
                changes,
                progress: upto,
            }
        };
        match send(id, delivery) {
            Sent::Taken => {
                watcher.next = upto + 1;
                watcher.synced = upto == applied;
                watcher.first_catch_up = false;
                watcher.last_sent_ms = now_ms;
            }
            Sent::Full => watcher.synced = false,
            Sent::Closed => {
                self.watchers.remove(&id);
            }
        }
    }
}

fn strip(change: &Change, prev_value: bool) -> Change {
    let mut change = change.clone();
    if !prev_value {
        change.prev = None;
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raft::{Command, Compact, Put, command::Op};

    fn put(store: &mut KvStore, index: u64, key: &str, value: &str) {
        let command = Command {
            op: Some(Op::Put(Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        store.apply(index, &command, false);
    }

    fn spec(from: u64) -> WatchSpec {
        WatchSpec {
            start: b"a".to_vec(),
            end: b"m".to_vec(),
            from,
            prev_value: true,
            progress_every_ms: 100,
        }
    }

    /// Every delivery, with a queue of `room` deliveries (None: unbounded).
    struct Inbox {
        got: Vec<(u64, Delivery)>,
        room: Option<usize>,
    }

    impl Inbox {
        fn sender(&mut self) -> impl FnMut(u64, Delivery) -> Sent + '_ {
            |id, d| match &mut self.room {
                Some(0) => Sent::Full,
                room => {
                    if let Some(r) = room {
                        *r -= 1;
                    }
                    self.got.push((id, d));
                    Sent::Taken
                }
            }
        }

        fn revisions(&self) -> Vec<(u64, String)> {
            self.got
                .iter()
                .flat_map(|(_, d)| match d {
                    Delivery::Changes { changes, .. } => changes.clone(),
                    _ => Vec::new(),
                })
                .map(|c| (c.revision, String::from_utf8(c.key).unwrap()))
                .collect()
        }
    }

    fn apply(hub: &mut WatchHub, store: &mut KvStore, index: u64, key: &str, inbox: &mut Inbox) {
        put(store, index, key, &format!("v{index}"));
        let changes = store.take_changes();
        hub.committed(&changes, index, 0, &mut inbox.sender());
    }

    #[test]
    fn a_watch_from_the_past_catches_up_then_follows_each_change_once_in_order() {
        let mut store = KvStore::default();
        put(&mut store, 1, "b", "1");
        put(&mut store, 2, "x", "2"); // outside the span
        put(&mut store, 3, "b", "3");
        store.take_changes();
        let mut hub = WatchHub::default();
        let mut inbox = Inbox {
            got: Vec::new(),
            room: None,
        };
        hub.add(7, spec(2), &store, 3, 0, &mut inbox.sender());
        apply(&mut hub, &mut store, 4, "c", &mut inbox);
        apply(&mut hub, &mut store, 5, "b", &mut inbox);
        assert_eq!(
            inbox.revisions(),
            vec![(3, "b".into()), (4, "c".into()), (5, "b".into())]
        );
        let Delivery::Changes { changes, .. } = &inbox.got[1].1 else {
            panic!("catch-up first: {:?}", inbox.got)
        };
        assert_eq!(changes[0].prev.as_deref(), Some(b"1".as_slice()));
    }

    #[test]
    fn a_full_watcher_catches_up_from_the_store_and_misses_nothing() {
        let mut store = KvStore::default();
        let mut hub = WatchHub::default();
        let mut inbox = Inbox {
            got: Vec::new(),
            room: Some(2),
        };
        hub.add(1, spec(0), &store, 0, 0, &mut inbox.sender());
        for index in 1..=5 {
            apply(&mut hub, &mut store, index, "b", &mut inbox);
        }
        assert_eq!(inbox.revisions(), vec![(1, "b".into())], "room ran out");
        inbox.room = None;
        hub.tick(&store, 5, 10, &mut inbox.sender());
        apply(&mut hub, &mut store, 6, "c", &mut inbox);
        let revisions: Vec<u64> = inbox.revisions().iter().map(|r| r.0).collect();
        assert_eq!(revisions, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn compaction_refuses_a_watch_from_before_it_and_ends_one_it_overtakes() {
        let mut store = KvStore::default();
        for index in 1..=4 {
            put(&mut store, index, "b", "v");
        }
        let compact = Command {
            op: Some(Op::Compact(Compact { revision: 3 })),
            ..Default::default()
        };
        store.apply(5, &compact, false);
        let mut hub = WatchHub::default();
        let mut inbox = Inbox {
            got: Vec::new(),
            room: None,
        };
        hub.add(1, spec(3), &store, 5, 0, &mut inbox.sender());
        assert!(matches!(
            inbox.got[0].1,
            Delivery::Canceled {
                compacted: Some(3),
                ..
            }
        ));
        assert!(hub.is_empty());
        hub.add(2, spec(4), &store, 5, 0, &mut inbox.sender());
        assert_eq!(inbox.revisions(), vec![(4, "b".into())]);
    }

    #[test]
    fn progress_is_sent_when_due_and_says_how_far_delivery_got() {
        let mut store = KvStore::default();
        let mut hub = WatchHub::default();
        let mut inbox = Inbox {
            got: Vec::new(),
            room: None,
        };
        hub.add(1, spec(0), &store, 0, 0, &mut inbox.sender());
        put(&mut store, 1, "z", "out of the span");
        let changes = store.take_changes();
        hub.committed(&changes, 1, 50, &mut inbox.sender());
        hub.tick(&store, 1, 50, &mut inbox.sender());
        assert_eq!(inbox.got.len(), 1, "not due yet: {:?}", inbox.got);
        hub.tick(&store, 1, 150, &mut inbox.sender());
        assert_eq!(inbox.got[1].1, Delivery::Progress { revision: 1 });
    }

    #[test]
    fn the_seeded_skip_on_resume_drops_the_first_change_caught_up() {
        let mut store = KvStore::default();
        put(&mut store, 1, "b", "1");
        put(&mut store, 2, "c", "2");
        let mut hub = WatchHub::new(WatchBugs {
            skip_on_resume: true,
            ..Default::default()
        });
        let mut inbox = Inbox {
            got: Vec::new(),
            room: None,
        };
        hub.add(1, spec(1), &store, 2, 0, &mut inbox.sender());
        assert_eq!(inbox.revisions(), vec![(2, "c".into())]);
    }
}
