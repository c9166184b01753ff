//! One transaction's driver. It holds nothing durable: what it knows is in the
//! participants' logs, and recovery finishes its work if it dies.
//!
//! Inputs are replies and timeouts; outputs are requests to send, drained as data. The
//! decision is known ([`Coordinator::outcome`]) once the primary has answered the commit or
//! abort: that is when the client is told.

use std::collections::{BTreeMap, BTreeSet};

use super::{Key, Part, PartitionId, Refusal, Reply, Request, TxnBugs, TxnMeta, TxnStatus, Value};

/// A request for one participant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Send {
    /// The participant.
    pub to: PartitionId,
    /// The request.
    pub request: Request,
}

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordinatorState {
    /// Waiting for every participant to prepare.
    Preparing,
    /// Every participant prepared; the primary is asked to commit at this timestamp.
    Committing(u64),
    /// A participant refused; the primary is asked to abort.
    Aborting,
    /// Decided; telling the other participants.
    Resolving(TxnStatus),
    /// Decided, and every participant knows.
    Done(TxnStatus),
}

/// One transaction's coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Coordinator {
    meta: TxnMeta,
    parts: BTreeMap<PartitionId, Part>,
    state: CoordinatorState,
    prepared: BTreeSet<PartitionId>,
    resolved: BTreeSet<PartitionId>,
    reads: BTreeMap<Key, Value>,
    refusal: Option<Refusal>,
    bugs: TxnBugs,
}

impl Coordinator {
    /// A transaction over `parts` (one per participant); the primary is `meta.primary`,
    /// which must be one of them.
    pub fn new(meta: TxnMeta, parts: BTreeMap<PartitionId, Part>, bugs: TxnBugs) -> Coordinator {
        debug_assert!(parts.contains_key(&meta.primary), "the primary takes part");
        Coordinator {
            meta,
            parts,
            state: CoordinatorState::Preparing,
            prepared: BTreeSet::new(),
            resolved: BTreeSet::new(),
            reads: BTreeMap::new(),
            refusal: None,
            bugs,
        }
    }

    /// The transaction.
    pub fn meta(&self) -> &TxnMeta {
        &self.meta
    }

    /// What each participant does.
    pub fn parts(&self) -> &BTreeMap<PartitionId, Part> {
        &self.parts
    }

    /// Where it is.
    pub fn state(&self) -> CoordinatorState {
        self.state
    }

    /// The decision, once the primary has made it.
    pub fn outcome(&self) -> Option<TxnStatus> {
        match self.state {
            CoordinatorState::Resolving(s) | CoordinatorState::Done(s) => Some(s),
            _ => None,
        }
    }

    /// What the transaction read (complete once every participant prepared).
    pub fn reads(&self) -> &BTreeMap<Key, Value> {
        &self.reads
    }

    /// Why it aborted, if a participant refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// The first requests: a prepare to every participant.
    pub fn start(&mut self, now: u64) -> Vec<Send> {
        self.parts
            .iter()
            .map(|(&to, part)| Send {
                to,
                request: Request::Prepare {
                    meta: self.meta.clone(),
                    part: part.clone(),
                    now,
                },
            })
            .collect()
    }

    fn others(&self) -> impl Iterator<Item = PartitionId> + '_ {
        let primary = self.meta.primary;
        self.parts.keys().copied().filter(move |p| *p != primary)
    }

    fn resolve_requests(&self, status: TxnStatus) -> Vec<Send> {
        let id = self.meta.id;
        self.others()
            .filter(|p| !self.resolved.contains(p))
            .map(|to| Send {
                to,
                request: Request::Resolve { id, status },
            })
            .collect()
    }

    fn decided(&mut self, status: TxnStatus) -> Vec<Send> {
        self.state = CoordinatorState::Resolving(status);
        if self.others().all(|p| self.resolved.contains(&p)) {
            self.state = CoordinatorState::Done(status);
            return Vec::new();
        }
        self.resolve_requests(status)
    }

    /// Takes a participant's reply; `now` is the coordinator's clock, the commit timestamp
    /// when this reply completes the prepares.
    pub fn on_reply(&mut self, from: PartitionId, reply: Reply, now: u64) -> Vec<Send> {
        let id = self.meta.id;
        let reply_id = match &reply {
            Reply::Prepared { id, .. }
            | Reply::Refused { id, .. }
            | Reply::Status { id, .. }
            | Reply::Resolved { id } => *id,
        };
        // A reply for another transaction, or from a partition not taking part, is stray.
        if reply_id != id || !self.parts.contains_key(&from) {
            return Vec::new();
        }
        match (self.state, reply) {
            (CoordinatorState::Preparing, Reply::Prepared { reads, .. }) => {
                self.prepared.insert(from);
                self.reads.extend(reads);
                let ready = if self.bugs.commit_before_all_prepared {
                    self.prepared.contains(&self.meta.primary)
                } else {
                    self.prepared.len() == self.parts.len()
                };
                if !ready {
                    return Vec::new();
                }
                // Above every start timestamp read at, so the commit order is a serial order.
                let commit_ts = now.max(self.meta.start_ts + 1);
                self.state = CoordinatorState::Committing(commit_ts);
                vec![Send {
                    to: self.meta.primary,
                    request: Request::Commit { id, commit_ts },
                }]
            }
            (CoordinatorState::Preparing, Reply::Refused { reason, .. }) => {
                self.refusal = Some(reason);
                self.state = CoordinatorState::Aborting;
                vec![Send {
                    to: self.meta.primary,
                    request: Request::Abort { id },
                }]
            }
            (CoordinatorState::Committing(_), Reply::Status { status, .. })
                if from == self.meta.primary && status.is_final() =>
            {
                self.decided(status)
            }
            // Aborting, only an abort can come back: a `Committed` here would be another
            // transaction's record under a reused id, and must never reach the client.
            (CoordinatorState::Aborting, Reply::Status { status, .. })
                if from == self.meta.primary && status == TxnStatus::Aborted =>
            {
                self.decided(status)
            }
            (CoordinatorState::Resolving(status), Reply::Resolved { .. }) => {
                self.resolved.insert(from);
                if self.others().all(|p| self.resolved.contains(&p)) {
                    self.state = CoordinatorState::Done(status);
                }
                Vec::new()
            }
            // Late or duplicated replies change nothing.
            _ => Vec::new(),
        }
    }

    /// Turns a commit decided here but not yet sent into an abort: the node's coordinator
    /// checks the transaction's compares against what the participants read before it
    /// sends the commit, and a compare that fails aborts it. Only while `Committing`, and
    /// only if the commit request was never sent (else the primary may have committed).
    pub fn withdraw(&mut self) -> Vec<Send> {
        if !matches!(self.state, CoordinatorState::Committing(_)) {
            return Vec::new();
        }
        self.state = CoordinatorState::Aborting;
        vec![Send {
            to: self.meta.primary,
            request: Request::Abort { id: self.meta.id },
        }]
    }

    /// No reply came in time: send again what is still unanswered (and keep the record
    /// alive while preparing).
    pub fn on_timeout(&mut self, now: u64) -> Vec<Send> {
        let id = self.meta.id;
        match self.state {
            CoordinatorState::Preparing => {
                let mut out: Vec<Send> = self
                    .start(now)
                    .into_iter()
                    .filter(|s| !self.prepared.contains(&s.to))
                    .collect();
                if self.prepared.contains(&self.meta.primary) {
                    out.push(Send {
                        to: self.meta.primary,
                        request: Request::Heartbeat { id, now },
                    });
                }
                out
            }
            CoordinatorState::Committing(commit_ts) => vec![Send {
                to: self.meta.primary,
                request: Request::Commit { id, commit_ts },
            }],
            CoordinatorState::Aborting => vec![Send {
                to: self.meta.primary,
                request: Request::Abort { id },
            }],
            CoordinatorState::Resolving(status) => self.resolve_requests(status),
            CoordinatorState::Done(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::participant::{Participant, Resolution};
    use super::*;

    fn key(s: &str) -> Key {
        s.as_bytes().to_vec()
    }

    fn run(
        coordinators: &mut [Coordinator],
        parts: &mut BTreeMap<PartitionId, Participant>,
        clock: &mut u64,
    ) {
        let mut queue: Vec<(usize, Send)> = Vec::new();
        for (i, c) in coordinators.iter_mut().enumerate() {
            for s in c.start(*clock) {
                queue.push((i, s));
            }
        }
        while let Some((i, send)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let reply = parts
                .get_mut(&send.to)
                .expect("a participant")
                .handle(send.request);
            *clock += 1;
            for s in coordinators[i].on_reply(send.to, reply, *clock) {
                queue.push((i, s));
            }
        }
    }

    /// `(partition, keys read, (key, value) written)`.
    type Script<'a> = (PartitionId, &'a [&'a str], &'a [(&'a str, &'a str)]);

    fn txn(id: u64, start_ts: u64, parts: &[Script<'_>]) -> Coordinator {
        let meta = TxnMeta {
            id,
            primary: parts[0].0,
            participants: parts.iter().map(|p| p.0).collect(),
            start_ts,
            isolation: crate::partitioning::txn::Level::Serializable,
        };
        let parts = parts
            .iter()
            .map(|(p, reads, writes)| {
                (
                    *p,
                    Part {
                        reads: reads.iter().map(|k| key(k)).collect(),
                        writes: writes
                            .iter()
                            .map(|(k, v)| (key(k), Some(v.as_bytes().to_vec())))
                            .collect(),
                        appends: Vec::new(),
                    },
                )
            })
            .collect();
        Coordinator::new(meta, parts, TxnBugs::default())
    }

    fn partitions() -> BTreeMap<PartitionId, Participant> {
        (1..=2)
            .map(|p| (p, Participant::new(p, TxnBugs::default())))
            .collect()
    }

    #[test]
    fn a_transaction_over_two_partitions_commits_on_both() {
        let mut parts = partitions();
        let mut clock = 10;
        let mut c = [txn(
            1,
            5,
            &[(1, &[], &[("x", "1")]), (2, &[], &[("y", "1")])],
        )];
        run(&mut c, &mut parts, &mut clock);
        let CoordinatorState::Done(TxnStatus::Committed(ts)) = c[0].state() else {
            panic!("{:?}", c[0].state());
        };
        assert_eq!(parts[&1].read_at(b"x", ts), Some(b"1".to_vec()));
        assert_eq!(parts[&2].read_at(b"y", ts), Some(b"1".to_vec()));
        assert_eq!(parts[&2].read_at(b"y", ts - 1), None);
        assert_eq!(parts[&2].resolutions()[&1], Resolution::Committed(ts));
    }

    #[test]
    fn a_conflicting_intent_aborts_the_second_and_leaves_nothing_behind() {
        let mut parts = partitions();
        let mut clock = 10;
        let mut first = txn(1, 5, &[(1, &[], &[("x", "1")]), (2, &[], &[("y", "1")])]);
        // The first lays its intents but its coordinator stops before committing.
        for s in first.start(clock) {
            parts.get_mut(&s.to).unwrap().handle(s.request);
        }
        let mut second = [txn(
            2,
            6,
            &[(2, &[], &[("y", "2")]), (1, &[], &[("x", "2")])],
        )];
        run(&mut second, &mut parts, &mut clock);
        assert_eq!(
            second[0].state(),
            CoordinatorState::Done(TxnStatus::Aborted)
        );
        assert!(matches!(
            second[0].refusal(),
            Some(Refusal::Conflict { other: 1, .. })
        ));
        // Recovery at the first's primary aborts it once its record is stale, and the
        // other participant follows the record.
        let reply = parts.get_mut(&1).unwrap().handle(Request::Recover {
            id: 1,
            now: 100,
            ttl: 50,
        });
        assert_eq!(
            reply,
            Reply::Status {
                id: 1,
                status: TxnStatus::Aborted
            }
        );
        parts.get_mut(&2).unwrap().handle(Request::Resolve {
            id: 1,
            status: TxnStatus::Aborted,
        });
        assert!(parts[&1].unresolved().is_empty() && parts[&2].unresolved().is_empty());
        // A commit arriving late is refused: the record stays aborted.
        let late = parts.get_mut(&1).unwrap().handle(Request::Commit {
            id: 1,
            commit_ts: 200,
        });
        assert_eq!(
            late,
            Reply::Status {
                id: 1,
                status: TxnStatus::Aborted
            }
        );
    }

    #[test]
    fn snapshot_isolation_lets_write_skew_commit_where_serializable_refuses_it() {
        use crate::partitioning::txn::Level;
        let committed = |level: Level| {
            let mut parts = partitions();
            let mut clock = 10;
            // T1 reads x and writes y; T2 reads y and writes x; T2's snapshot is older,
            // so its read of y passes T1's intent under snapshot isolation.
            let mut both = [
                txn(1, 6, &[(1, &["x"], &[]), (2, &[], &[("y", "1")])]),
                txn(2, 5, &[(2, &["y"], &[]), (1, &[], &[("x", "1")])]),
            ];
            for c in &mut both {
                c.meta.isolation = level;
            }
            run(&mut both, &mut parts, &mut clock);
            both.iter()
                .filter(|c| matches!(c.outcome(), Some(TxnStatus::Committed(_))))
                .count()
        };
        assert_eq!(committed(Level::Snapshot), 2, "write skew commits");
        assert_eq!(committed(Level::Serializable), 1, "the markers refuse one");
    }

    #[test]
    fn snapshot_isolation_still_refuses_a_lost_update_unless_the_bug_is_on() {
        use crate::partitioning::txn::Level;
        let committed = |bugs: TxnBugs| {
            let mut parts: BTreeMap<PartitionId, Participant> =
                (1..=2).map(|p| (p, Participant::new(p, bugs))).collect();
            let mut clock = 10;
            let mut first = [txn(
                1,
                5,
                &[(1, &["x"], &[("x", "a")]), (2, &[], &[("y", "1")])],
            )];
            first[0].meta.isolation = Level::Snapshot;
            run(&mut first, &mut parts, &mut clock);
            // The second read x at the same snapshot, before the first committed.
            let mut second = [txn(
                2,
                5,
                &[(1, &["x"], &[("x", "b")]), (2, &[], &[("z", "1")])],
            )];
            second[0].meta.isolation = Level::Snapshot;
            run(&mut second, &mut parts, &mut clock);
            matches!(second[0].outcome(), Some(TxnStatus::Committed(_)))
        };
        assert!(!committed(TxnBugs::default()), "first committer wins");
        let bug = TxnBugs {
            snapshot_without_write_check: true,
            ..TxnBugs::default()
        };
        assert!(committed(bug), "the seeded bug loses the first update");
    }

    #[test]
    fn write_skew_is_refused_by_the_read_markers() {
        let mut parts = partitions();
        parts.get_mut(&1).unwrap().handle(Request::Prepare {
            meta: TxnMeta {
                id: 9,
                primary: 1,
                participants: vec![1],
                start_ts: 1,
                isolation: crate::partitioning::txn::Level::Serializable,
            },
            part: Part {
                reads: vec![],
                writes: vec![(key("x"), Some(b"0".to_vec()))],
                appends: Vec::new(),
            },
            now: 1,
        });
        parts.get_mut(&1).unwrap().handle(Request::Commit {
            id: 9,
            commit_ts: 2,
        });
        // T1 reads x, writes y; T2 reads y, writes x: both cannot commit.
        let mut clock = 10;
        let mut both = [
            txn(1, 5, &[(1, &["x"], &[]), (2, &[], &[("y", "1")])]),
            txn(2, 5, &[(2, &["y"], &[]), (1, &[], &[("x", "1")])]),
        ];
        run(&mut both, &mut parts, &mut clock);
        let committed = both
            .iter()
            .filter(|c| matches!(c.outcome(), Some(TxnStatus::Committed(_))))
            .count();
        assert!(
            committed <= 1,
            "{:?} {:?}",
            both[0].state(),
            both[1].state()
        );
    }

    #[test]
    fn a_writer_that_started_before_a_committed_read_is_refused() {
        let mut parts = partitions();
        let mut clock = 100;
        // T reads x at 100 and writes y: it commits above 100.
        let mut t = [txn(1, 100, &[(1, &["x"], &[]), (2, &[], &[("y", "1")])])];
        run(&mut t, &mut parts, &mut clock);
        assert!(matches!(t[0].outcome(), Some(TxnStatus::Committed(_))));
        // W's clock lags: it started at 40 and writes x. Committing it below T's commit
        // would put a write T did not see before T in the version order.
        let mut clock = 50;
        let mut w = [txn(2, 40, &[(1, &[], &[("x", "2")])])];
        run(&mut w, &mut parts, &mut clock);
        assert_eq!(w[0].outcome(), Some(TxnStatus::Aborted));
        assert!(
            matches!(w[0].refusal(), Some(Refusal::TooOld { .. })),
            "{:?}",
            w[0].refusal()
        );
    }

    #[test]
    fn a_committed_status_while_aborting_never_reaches_the_client() {
        let mut c = txn(7, 5, &[(1, &[], &[("x", "1")])]);
        c.start(1);
        c.on_reply(
            1,
            Reply::Refused {
                id: 7,
                reason: Refusal::AlreadyDecided(TxnStatus::Committed(3)),
            },
            2,
        );
        c.on_reply(
            1,
            Reply::Status {
                id: 7,
                status: TxnStatus::Committed(3),
            },
            3,
        );
        assert_eq!(c.outcome(), None);
        // A stray reply for another transaction changes nothing either.
        c.on_reply(
            1,
            Reply::Status {
                id: 8,
                status: TxnStatus::Aborted,
            },
            4,
        );
        assert_eq!(c.state(), CoordinatorState::Aborting);
    }

    #[test]
    fn a_recovery_before_the_commit_wins_and_the_coordinator_learns_it() {
        let mut parts = partitions();
        let mut c = txn(1, 5, &[(1, &[], &[("x", "1")]), (2, &[], &[("y", "1")])]);
        let sends = c.start(10);
        let mut replies = Vec::new();
        for s in sends {
            let to = s.to;
            replies.push((to, parts.get_mut(&to).unwrap().handle(s.request)));
        }
        parts.get_mut(&1).unwrap().handle(Request::Recover {
            id: 1,
            now: 1_000,
            ttl: 10,
        });
        let mut out = Vec::new();
        for (from, r) in replies {
            out.extend(c.on_reply(from, r, 20));
        }
        let commit = out.pop().expect("a commit request");
        let status = parts.get_mut(&1).unwrap().handle(commit.request);
        let resolve = c.on_reply(1, status, 21);
        assert_eq!(c.outcome(), Some(TxnStatus::Aborted));
        for s in resolve {
            let to = s.to;
            let r = parts.get_mut(&to).unwrap().handle(s.request);
            c.on_reply(to, r, 22);
        }
        assert_eq!(c.state(), CoordinatorState::Done(TxnStatus::Aborted));
        assert_eq!(parts[&2].read_at(b"y", 100), None);
    }
}
