//! The Raft core (Ongaro & Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", 2014, and Ongaro's thesis, 2014), sans-IO.
//!
//! Inputs: [`RaftCore::step`] (a peer message), [`RaftCore::tick`] (logical time),
//! [`RaftCore::propose`], [`RaftCore::read_index`], [`RaftCore::compact`].
//! Outputs: [`RaftCore::ready`] returns a [`Ready`]; see its docs for the order in which
//! the driver must act on it. The core never touches the network, disk, clock or a
//! global RNG, so the node and the stateright model run exactly this code.

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::RaftConfig;
use super::log::RaftLog;
use super::membership::{ConfChange, ConfLog, Membership, config_entry};
use crate::proto::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryKind, HardState, InstallSnapshot,
    InstallSnapshotResponse, Message, RequestVote, RequestVoteResponse, SnapshotMeta, TimeoutNow,
    message::Body,
};
use crate::time::lamport::LamportClock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// What a node recovered from its disk.
#[derive(Clone, Debug, Default)]
pub struct PersistedState {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, in order, without gaps.
    pub entries: Vec<Entry>,
}

/// A linearizable read that may now be served: once the driver has applied up to
/// `index`, the state machine reflects every write acknowledged before the read arrived
/// (ReadIndex, thesis §6.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    pub request_id: u64,
    pub index: u64,
}

/// The outputs of the core since the previous `ready()`.
///
/// **Ordering contract.** The driver must, in this order:
/// 1. make `hard_state`, `snapshot` and `entries` durable (an entry supersedes any
///    stored entry with the same or a higher index);
/// 2. only then send `messages` (a vote or an append acknowledgement promises that
///    the state behind it survives a crash) and call [`RaftCore::advance`];
/// 3. restore the state machine from `snapshot`, if any, then apply
///    `committed_entries` in order, then serve `read_states` once applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    /// Whether step 1 needs an fsync: entries, a snapshot, or a new term or vote. A
    /// change of the commit index alone need not be durable at once (it is only a
    /// hint on restart; etcd's `MustSync` makes the same distinction).
    pub must_sync: bool,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// AppendEntries and InstallSnapshot from a leader may be sent before step 1
    /// (thesis §10.2.1: the leader writes its log in parallel with replicating it;
    /// it counts itself towards a quorum only after `advance`). Everything else —
    /// votes and acknowledgements — only after step 1.
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Reads that will never be confirmed (this node stopped leading): fail them.
    pub dropped_reads: Vec<u64>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_hint: Option<u64>,
}

/// Why a membership change was not proposed. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("not the leader (leader hint {:?})", .0.leader_hint)]
    NotLeader(NotLeader),
    #[error("the membership change at index {0} is not committed yet; one change at a time")]
    InProgress(u64),
    #[error("this leader has not committed an entry of its own term yet; try again shortly")]
    NoCommitInTerm,
    #[error("a leadership transfer is under way")]
    Transferring,
    #[error("{0}")]
    Invalid(String),
}

/// A leader handing over to `target` (thesis §3.10): proposals wait, the target is
/// brought up to date and told to campaign; given up after an election timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Transfer {
    target: u64,
    elapsed: u32,
}

/// A learner's catch-up round (thesis §4.2.1): it must reach `target` (the leader's last
/// index when the round began); a round that takes less than an election timeout
/// promotes it, a slower one starts another. Counted per round, not from a clock that
/// always runs, so that a group with no learner has no state that changes per tick (the
/// model checker's state space depends on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CatchUp {
    target: u64,
    elapsed: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ProgressState {
    /// Unknown where the follower's log matches: one AppendEntries at a time.
    Probe,
    /// Matching: stream entries optimistically (pipelining) within the inflight window.
    Replicate,
    /// A snapshot is on its way; wait for its response.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Progress {
    next_index: u64,
    match_index: u64,
    state: ProgressState,
    probe_sent: bool,
    /// Last index carried by each unacknowledged AppendEntries, oldest first.
    inflight: VecDeque<u64>,
    /// Heard from since the last check-quorum round.
    recent_active: bool,
    /// Highest read context this follower echoed in the current term.
    read_ack: u64,
    /// match_index when the previous heartbeat went out; no progress over a whole
    /// heartbeat interval with appends in flight means one was lost.
    match_at_heartbeat: u64,
    /// Heartbeats since a snapshot was sent: it is resent only after
    /// `RaftConfig::snapshot_resend_heartbeats`, not on every heartbeat (it may be large).
    heartbeats_since_snapshot: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PendingRead {
    request_id: u64,
    index: u64,
    context: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftCore {
    config: RaftConfig,
    role: Role,
    term: u64,
    /// 0 means no vote in this term.
    voted_for: u64,
    leader_id: Option<u64>,
    log: RaftLog,
    lamport: LamportClock,
    rng_seed: u64,
    rng_draws: u64,
    election_elapsed: u32,
    randomized_election_timeout: u32,
    heartbeat_elapsed: u32,
    votes: BTreeMap<u64, bool>,
    progress: BTreeMap<u64, Progress>,
    /// Highest index of ours that the driver has made durable.
    persisted_index: u64,
    pending_persist: Option<(u64, u64)>,
    snapshot: Option<Snapshot>,
    snapshot_to_install: Option<Snapshot>,
    persisted_hard_state: HardState,
    messages: Vec<Message>,
    broadcast_append_pending: bool,
    /// Reads waiting for this leader's first commit in its term (thesis §6.4 step 1).
    reads_awaiting_commit: Vec<u64>,
    reads: VecDeque<PendingRead>,
    read_context_next: u64,
    read_broadcast_pending: bool,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    /// The group's memberships as the log holds them; the newest is in force.
    conf: ConfLog,
    /// Leader only: learners being caught up for promotion.
    catch_up: BTreeMap<u64, CatchUp>,
    transfer: Option<Transfer>,
}

impl RaftCore {
    pub fn new(config: RaftConfig, persisted: PersistedState) -> Self {
        if let Err(e) = config.validate() {
            panic!("{e}");
        }
        let (snapshot_index, snapshot_term) = persisted.snapshot.as_ref().map_or((0, 0), |s| {
            (s.meta.last_included_index, s.meta.last_included_term)
        });
        let mut log = RaftLog::new(snapshot_index, snapshot_term, persisted.entries);
        log.commit_index = persisted
            .hard_state
            .commit
            .clamp(snapshot_index, log.last_index());
        // Recovered entries are durable already; committed ones are re-applied by the
        // driver from the snapshot onwards (the state machine is not persisted).
        let last_index = log.last_index();
        let base = match persisted.snapshot.as_ref().map(|s| &s.meta) {
            Some(meta) if !meta.voters.is_empty() => membership_of(meta),
            _ => Membership::with_voters(config.voters.iter().copied()),
        };
        let mut conf = ConfLog::new(base);
        for index in log.first_index()..=last_index {
            if let Some(entry) = log.entry(index) {
                conf.appended(entry);
            }
        }
        let mut core = Self {
            role: Role::Follower,
            term: persisted.hard_state.term,
            voted_for: persisted.hard_state.voted_for,
            leader_id: None,
            log,
            lamport: LamportClock::default(),
            rng_seed: config.seed,
            rng_draws: 0,
            election_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks_min,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            persisted_index: last_index,
            pending_persist: None,
            snapshot: persisted.snapshot,
            snapshot_to_install: None,
            persisted_hard_state: persisted.hard_state,
            messages: Vec::new(),
            broadcast_append_pending: false,
            reads_awaiting_commit: Vec::new(),
            reads: VecDeque::new(),
            read_context_next: 1,
            read_broadcast_pending: false,
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            conf,
            catch_up: BTreeMap::new(),
            transfer: None,
            config,
        };
        core.reset_election_timeout();
        core
    }

    // ----- observers -------------------------------------------------------------

    pub fn id(&self) -> u64 {
        self.config.id
    }
    pub fn group_id(&self) -> u64 {
        self.config.group_id
    }
    /// This core with every server id renamed by `rename` and `config` (the renamed
    /// server's own) in place of its configuration: what a model checker's symmetry
    /// reduction needs, so that two states differing only in which server is which are
    /// explored once. `None` if the log holds a membership change (its ids live inside
    /// the entry's encoded data, which this does not rewrite).
    pub fn relabeled(&self, config: RaftConfig, rename: &dyn Fn(u64) -> u64) -> Option<Self> {
        let conf = self.conf.relabeled(rename)?;
        let id = |id: u64| if id == 0 { 0 } else { rename(id) };
        let mut core = self.clone();
        // The renamed server draws from its own seed: a model that reduces by symmetry
        // must make the draws not matter (a timeout range of one value).
        core.rng_seed = config.seed;
        core.config = config;
        core.voted_for = id(self.voted_for);
        core.leader_id = self.leader_id.map(id);
        core.votes = renamed_keys(&self.votes, rename);
        core.progress = renamed_keys(&self.progress, rename);
        core.persisted_hard_state.voted_for = id(self.persisted_hard_state.voted_for);
        for snapshot in [&mut core.snapshot, &mut core.snapshot_to_install]
            .into_iter()
            .flatten()
        {
            relabel_meta(&mut snapshot.meta, rename);
        }
        for message in &mut core.messages {
            message.from = id(message.from);
            message.to = id(message.to);
        }
        core.conf = conf;
        core.catch_up = renamed_keys(&self.catch_up, rename);
        if let Some(transfer) = &mut core.transfer {
            transfer.target = rename(transfer.target);
        }
        Some(core)
    }

    pub fn config(&self) -> &RaftConfig {
        &self.config
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn voted_for(&self) -> u64 {
        self.voted_for
    }
    pub fn leader_id(&self) -> Option<u64> {
        self.leader_id
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// A leadership transfer is under way: the target may win an election at once, so
    /// this leader's lease (if it reads by one) is void.
    pub fn transferring(&self) -> bool {
        self.transfer.is_some()
    }

    pub fn commit_index(&self) -> u64 {
        self.log.commit_index
    }
    pub fn lamport_time(&self) -> u64 {
        self.lamport.time()
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            commit: self.log.commit_index,
        }
    }
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// Whether this leader's group has nothing left to do until a proposal or a message
    /// arrives: every follower holds the whole log, all of it is committed, applied and
    /// durable, and no read or message is waiting. The host may then stop ticking it
    /// (quiescence, as CockroachDB quiesces idle ranges): no heartbeats, no elections.
    pub fn is_quiescent(&self) -> bool {
        self.quiescence_blocker().is_none()
    }

    /// What keeps this group from being quiescent ([`RaftCore::is_quiescent`]), if anything.
    pub fn quiescence_blocker(&self) -> Option<&'static str> {
        let last = self.log.last_index();
        if self.role != Role::Leader {
            Some("not the leader")
        } else if self.log.commit_index != last {
            Some("uncommitted entries")
        } else if self.log.applied_index != last {
            Some("unapplied entries")
        } else if self.persisted_index != last {
            Some("entries not yet durable")
        } else if !self.messages.is_empty() {
            Some("messages to send")
        } else if !self.reads.is_empty() || !self.reads_awaiting_commit.is_empty() {
            Some("reads waiting")
        } else if self.broadcast_append_pending || self.read_broadcast_pending {
            Some("a broadcast pending")
        } else if self
            .progress
            .values()
            .any(|p| p.match_index != last || !p.inflight.is_empty())
        {
            Some("a follower behind")
        } else {
            None
        }
    }

    /// Whether a follower's log is exactly what an idle leader said it has (`last_index`,
    /// `commit`), all applied: then it may stop ticking too.
    pub fn may_quiesce_with(&self, leader: u64, last_index: u64, commit: u64) -> bool {
        self.role == Role::Follower
            && self.leader_id == Some(leader)
            && self.log.last_index() == last_index
            && self.log.commit_index == commit
            && self.log.applied_index == commit
            && self.persisted_index == last_index
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The membership in force: the newest configuration in the log.
    pub fn membership(&self) -> &Membership {
        self.conf.current()
    }

    /// The membership in force once the log ends at `index` (at or after the snapshot).
    pub fn membership_at(&self, index: u64) -> &Membership {
        self.conf.at(index)
    }

    fn quorum(&self) -> usize {
        self.conf.current().quorum()
    }

    /// Whether `node` is outside the group both as the log stands and as it is committed:
    /// a message from it comes from a replica that missed its own removal (or from one
    /// that never belonged), never from a member being added.
    pub fn is_stranger(&self, node: u64) -> bool {
        !self.conf.current().is_member(node) && !self.conf.at(self.log.commit_index).is_member(node)
    }

    /// Whether this replica may retire on hearing that the group committed, at `index`, a
    /// membership without it: only if its whole log is at or below `index` (an entry
    /// beyond, such as a change adding it back, may have counted it toward a quorum), and
    /// only if it has been a member (a replica created for a move, catching up on entries
    /// from before the change that adds it, is not removed by them).
    pub fn removed_at(&self, index: u64) -> bool {
        self.log.last_index() > 0 && self.log.last_index() <= index && self.was_member()
    }

    /// Whether any membership this replica's snapshot or log holds includes it.
    pub fn was_member(&self) -> bool {
        self.conf.has_included(self.config.id)
    }

    fn is_voter(&self) -> bool {
        self.conf.current().is_voter(self.config.id)
    }

    /// Whether this node is the group's only voter: it commits and confirms alone.
    fn alone(&self) -> bool {
        let voters = &self.conf.current().voters;
        voters.len() == 1 && voters.contains(&self.config.id)
    }

    /// The voters other than this node: whom a candidate asks for votes. With the
    /// seeded bug `learner-votes`, learners are asked too, and their votes count.
    fn peers(&self) -> Vec<u64> {
        let membership = self.conf.current();
        let mut peers: Vec<u64> = membership
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.config.id)
            .collect();
        if self.config.bugs.learner_votes {
            peers.extend(membership.learners.iter().filter(|&&l| l != self.config.id));
        }
        peers
    }

    /// Every member other than this node: whom a leader replicates to.
    fn replicas(&self) -> Vec<u64> {
        self.conf.current().others(self.config.id).collect()
    }

    /// Whether `node`'s vote or acknowledgement counts toward a quorum.
    fn counts(&self, node: u64) -> bool {
        node == self.config.id && self.is_voter()
            || self.conf.current().is_voter(node)
            || self.config.bugs.learner_votes && self.conf.current().is_member(node)
    }

    // ----- inputs ----------------------------------------------------------------

    /// Campaigns now, without waiting out the election timeout: for a group every replica
    /// starts at the same log (a split's new range), where the node that led the parent
    /// should lead the child. A learner, or a node outside the group, does nothing.
    pub fn campaign_now(&mut self) {
        if self.is_voter() && self.role != Role::Leader {
            self.campaign(false);
        }
    }

    /// One unit of logical time. Elections and heartbeats are counted in ticks.
    pub fn tick(&mut self) {
        self.election_elapsed += 1;
        if !self.is_voter() && self.role != Role::Leader {
            // A learner or a node outside the group never campaigns: counting past the
            // timeout would only make every tick a new state (the model checker's space).
            self.election_elapsed = self.election_elapsed.min(self.randomized_election_timeout);
        }
        if self.role == Role::Leader {
            self.tick_transfer();
            self.promote_caught_up();
            self.heartbeat_elapsed += 1;
            if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat(0);
            }
            if self.config.check_quorum
                && self.election_elapsed >= self.config.election_timeout_ticks_min
            {
                self.election_elapsed = 0;
                let active = usize::from(self.is_voter())
                    + self
                        .progress
                        .iter()
                        .filter(|(peer, p)| p.recent_active && self.counts(**peer))
                        .count();
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
                if active < self.quorum() {
                    // Thesis §6.2: a leader cut off from a quorum steps down so that
                    // clients look for the new one.
                    self.become_follower(self.term, None);
                }
            }
        } else if self.election_elapsed >= self.randomized_election_timeout && self.is_voter() {
            // A learner, or a node removed from the group, never campaigns.
            if self.config.pre_vote {
                self.become_pre_candidate();
            } else {
                self.become_candidate();
            }
        }
    }

    /// Appends a client command. On success, the entry's (index, term): the command took
    /// effect iff the entry committed at that index has that term.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), NotLeader> {
        if self.role != Role::Leader || self.transfer.is_some() {
            // During a transfer the new leader takes proposals; the caller waits for it.
            return Err(NotLeader {
                leader_hint: self.leader_id.filter(|_| self.transfer.is_none()),
            });
        }
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            data,
            kind: EntryKind::Command as i32,
        });
        self.broadcast_append_pending = true;
        if self.alone() {
            self.maybe_commit();
        }
        Ok((index, self.term))
    }

    /// Proposes one membership change (see [`super::membership`]). On success, the
    /// configuration entry's (index, term); the new membership is in force at once.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(u64, u64), ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader(NotLeader {
                leader_hint: self.leader_id,
            }));
        }
        if self.transfer.is_some() {
            return Err(ConfChangeError::Transferring);
        }
        let pending = self.conf.last_change_index();
        if pending > self.log.commit_index {
            return Err(ConfChangeError::InProgress(pending));
        }
        // The 2015 fix: a leader that has not committed an entry of its term may not know
        // of a change its predecessor made; changing again could give two configurations
        // whose majorities do not overlap.
        if self.log.term(self.log.commit_index) != Some(self.term)
            && !self.config.bugs.config_before_noop
        {
            return Err(ConfChangeError::NoCommitInTerm);
        }
        let next = self
            .conf
            .current()
            .apply(change, self.config.id)
            .map_err(ConfChangeError::Invalid)?;
        let index = self.log.last_index() + 1;
        let entry = config_entry(index, self.term, &next);
        self.conf.appended(&entry);
        self.log.push(entry);
        self.sync_progress();
        self.broadcast_append_pending = true;
        if self.alone() {
            self.maybe_commit();
        }
        Ok((index, self.term))
    }

    /// Hands leadership to `target`, a voter: it is brought up to date, then told to
    /// campaign at once (TimeoutNow). Proposals are refused meanwhile; the transfer is
    /// given up after an election timeout.
    pub fn transfer_leadership(&mut self, target: u64) -> Result<(), ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader(NotLeader {
                leader_hint: self.leader_id,
            }));
        }
        if target == self.config.id {
            return Ok(());
        }
        if !self.conf.current().is_voter(target) {
            return Err(ConfChangeError::Invalid(format!(
                "node {target} is not a voter of the group"
            )));
        }
        self.transfer = Some(Transfer { target, elapsed: 0 });
        self.maybe_send_timeout_now();
        self.send_appends(target);
        Ok(())
    }

    fn maybe_send_timeout_now(&mut self) {
        let Some(transfer) = self.transfer else {
            return;
        };
        let caught_up = self
            .progress
            .get(&transfer.target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(transfer.target, self.term, Body::TimeoutNow(TimeoutNow {}));
        }
    }

    fn tick_transfer(&mut self) {
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed += 1;
            if transfer.elapsed >= self.config.election_timeout_ticks_max {
                // The target did not take over in time: lead on.
                self.transfer = None;
            }
        }
    }

    /// Leader: progress for every member, none for former ones; catch-up rounds for the
    /// learners being promoted.
    fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.replicas();
        self.progress.retain(|peer, _| members.contains(peer));
        let next_index = self.log.last_index() + 1;
        for peer in members {
            self.progress
                .entry(peer)
                .or_insert_with(|| new_progress(next_index));
        }
        let promoting = self.conf.current().promoting.clone();
        self.catch_up.retain(|peer, _| promoting.contains(peer));
    }

    /// Leader: promotes a learner whose catch-up round ended within an election timeout;
    /// starts a new round for one that was slower.
    fn promote_caught_up(&mut self) {
        let promoting: Vec<u64> = self.conf.current().promoting.iter().copied().collect();
        for learner in promoting {
            let matched = self.progress.get(&learner).map_or(0, |p| p.match_index);
            let last = self.log.last_index();
            let round = self.catch_up.entry(learner).or_insert(CatchUp {
                target: last,
                elapsed: 0,
            });
            // Past an election timeout the round has failed whatever comes next; the
            // count stops there, so a learner that never catches up is one state.
            round.elapsed = (round.elapsed + 1).min(self.config.election_timeout_ticks_min + 1);
            let round = *round;
            if matched < round.target {
                continue;
            }
            if round.elapsed <= self.config.election_timeout_ticks_min {
                // Fails harmlessly while another change is uncommitted; retried next tick.
                if self
                    .propose_conf_change(ConfChange::Promote(learner))
                    .is_ok()
                {
                    self.catch_up.remove(&learner);
                }
            } else {
                self.catch_up.insert(
                    learner,
                    CatchUp {
                        target: last,
                        elapsed: 0,
                    },
                );
            }
        }
    }

    /// Starts a linearizable read (ReadIndex, thesis §6.4): the read will appear in
    /// `Ready::read_states` once a quorum has confirmed this node still leads.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.config.bugs.stale_read {
            self.read_states.push(ReadState {
                request_id,
                index: self.log.commit_index,
            });
            return Ok(());
        }
        if self.log.term(self.log.commit_index) != Some(self.term) {
            // Until an entry of its own term commits, a new leader does not know the
            // commit index of its predecessor.
            self.reads_awaiting_commit.push(request_id);
            return Ok(());
        }
        self.queue_read(request_id);
        Ok(())
    }

    fn queue_read(&mut self, request_id: u64) {
        let read = PendingRead {
            request_id,
            index: self.log.commit_index,
            context: self.read_context_next,
        };
        self.reads.push_back(read);
        self.read_broadcast_pending = true;
        self.advance_reads();
    }

    /// The driver took a snapshot of the state machine at `index` (applied): drop the log
    /// up to it. `data` is kept to send to followers that fell behind the log.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        assert!(
            index <= self.log.applied_index,
            "snapshot of unapplied state"
        );
        if index <= self.log.snapshot_index() {
            return;
        }
        let term = self.log.term(index).expect("applied entry is in the log");
        self.log.compact(index, term);
        self.conf.compact(index);
        let membership = self.conf.at(index).clone();
        let meta = SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            voters: membership.voters.iter().copied().collect(),
            learners: membership.learners.iter().copied().collect(),
            promoting: membership.promoting.iter().copied().collect(),
        };
        self.snapshot = Some(Snapshot { meta, data });
    }

    pub fn step(&mut self, message: Message) {
        if message.group_id != self.config.group_id || message.to != self.config.id {
            return;
        }
        let Some(body) = message.body.clone() else {
            return;
        };
        if !self.is_well_formed(&message, &body) {
            return;
        }
        self.lamport.observe(message.lamport_time);
        if message.term > self.term {
            match &body {
                Body::RequestVote(rv) if rv.pre_vote => {}
                Body::RequestVoteResponse(r) if r.pre_vote && r.granted => {}
                Body::RequestVote(rv) if !rv.leader_transfer && self.in_leader_lease() => {
                    // Thesis §4.2.3: a node that hears from its leader ignores
                    // RequestVote so that a removed or partitioned node cannot disrupt.
                    return;
                }
                Body::AppendEntries(_) | Body::InstallSnapshot(_) => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.term {
            match &body {
                // Tell a stale leader or pre-candidate about the newer term.
                Body::AppendEntries(_) | Body::InstallSnapshot(_) => {
                    let reply = AppendEntriesResponse {
                        success: false,
                        ..Default::default()
                    };
                    self.send(message.from, self.term, Body::AppendEntriesResponse(reply));
                }
                Body::RequestVote(rv) => {
                    let reply = RequestVoteResponse {
                        pre_vote: rv.pre_vote,
                        granted: false,
                    };
                    self.send(message.from, self.term, Body::RequestVoteResponse(reply));
                }
                _ => {}
            }
            return;
        }
        match body {
            Body::RequestVote(rv) => self.handle_request_vote(&message, rv),
            Body::RequestVoteResponse(r) => self.handle_vote_response(&message, r),
            Body::AppendEntries(ae) => self.handle_append_entries(&message, ae),
            Body::AppendEntriesResponse(r) => self.handle_append_response(&message, r),
            Body::InstallSnapshot(s) => self.handle_install_snapshot(&message, s),
            Body::InstallSnapshotResponse(r) => self.handle_snapshot_response(&message, r),
            Body::TimeoutNow(_) => {
                // The leader hands over: campaign now, without a pre-vote (the leader is
                // alive, so a pre-vote would be refused).
                if self.is_voter() && self.role == Role::Follower {
                    self.campaign(true);
                }
            }
            Body::Quiesce(_)
            | Body::NodeHeartbeat(_)
            | Body::GroupRemoved(_)
            | Body::ReplicaCheck(_) => {
                unreachable!("is_well_formed drops host-to-host messages")
            }
        }
    }

    /// Peer input is not trusted to be well formed: a message that breaks the
    /// protocol's shape (a sender outside the group, entries that do not follow `prev`,
    /// a match beyond our log) is dropped, as a lossy network would, instead of
    /// tripping an assertion.
    fn is_well_formed(&self, message: &Message, body: &Body) -> bool {
        if message.from == self.config.id {
            return false;
        }
        // A node that has just joined does not know the membership until the leader's
        // log or snapshot tells it: it takes the leader's messages from anyone (the term
        // rules still apply). Everything else comes from members only.
        let from_leader = matches!(
            body,
            Body::AppendEntries(_) | Body::InstallSnapshot(_) | Body::TimeoutNow(_)
        );
        if !from_leader && !self.conf.current().is_member(message.from) {
            return false;
        }
        match body {
            Body::AppendEntries(append) => {
                let mut previous_term = append.prev_log_term;
                for (offset, entry) in append.entries.iter().enumerate() {
                    let expected_index = append.prev_log_index.checked_add(1 + offset as u64);
                    if Some(entry.index) != expected_index
                        || entry.term < previous_term
                        || entry.term > message.term
                    {
                        return false;
                    }
                    previous_term = entry.term;
                }
                true
            }
            Body::AppendEntriesResponse(response) => {
                !response.success || response.match_index <= self.log.last_index()
            }
            Body::InstallSnapshotResponse(response) => response.last_index <= self.log.last_index(),
            Body::InstallSnapshot(install) => install
                .meta
                .as_ref()
                .is_some_and(|m| m.last_included_term <= message.term),
            Body::RequestVote(_) | Body::RequestVoteResponse(_) | Body::TimeoutNow(_) => true,
            // Host-to-host messages (quiescence, node liveness) are the host's business;
            // one that reaches a core is dropped.
            Body::Quiesce(_)
            | Body::NodeHeartbeat(_)
            | Body::GroupRemoved(_)
            | Body::ReplicaCheck(_) => false,
        }
    }

    // ----- outputs ---------------------------------------------------------------

    pub fn has_ready(&self) -> bool {
        let hard_state = self.hard_state();
        hard_state != self.persisted_hard_state
            || self.snapshot_to_install.is_some()
            || self.log.unstable_from <= self.log.last_index()
            || !self.messages.is_empty()
            || self.log.applied_index < self.log.commit_index
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || self.broadcast_append_pending
            || self.read_broadcast_pending
    }

    pub fn ready(&mut self) -> Ready {
        if self.broadcast_append_pending {
            self.broadcast_append_pending = false;
            self.broadcast_append();
        }
        if self.read_broadcast_pending {
            self.read_broadcast_pending = false;
            let context = self.read_context_next;
            self.read_context_next += 1;
            self.broadcast_heartbeat(context);
        }
        let hard_state = self.hard_state();
        let vote_changed = hard_state.term != self.persisted_hard_state.term
            || hard_state.voted_for != self.persisted_hard_state.voted_for;
        let hard_state = (hard_state != self.persisted_hard_state).then(|| {
            self.persisted_hard_state = hard_state;
            hard_state
        });
        let entries = self.log.take_unstable();
        self.pending_persist = entries.last().map(|e| (e.index, e.term));
        let snapshot = self.snapshot_to_install.take();
        Ready {
            hard_state,
            must_sync: vote_changed || !entries.is_empty() || snapshot.is_some(),
            snapshot,
            entries,
            messages: std::mem::take(&mut self.messages),
            committed_entries: self.log.take_committed(self.config.apply_batch_max),
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
        }
    }

    /// The driver has made the previous `Ready` durable.
    pub fn advance(&mut self) {
        if let Some((index, term)) = self.pending_persist.take()
            && self.log.term(index) == Some(term)
        {
            self.persisted_index = self.persisted_index.max(index);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ----- roles -----------------------------------------------------------------

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader_id.is_some()
            && self.election_elapsed < self.config.election_timeout_ticks_min
    }

    fn reset_election_timeout(&mut self) {
        self.election_elapsed = 0;
        // A fresh RNG per draw, seeded from (seed, draws), keeps the core hashable and
        // its timeouts reproducible from the seed.
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.rng_seed ^ self.rng_draws.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        self.rng_draws += 1;
        self.randomized_election_timeout = rng.random_range(
            self.config.election_timeout_ticks_min..self.config.election_timeout_ticks_max,
        );
    }

    fn become_follower(&mut self, term: u64, leader: Option<u64>) {
        if term > self.term {
            self.term = term;
            self.voted_for = 0;
        }
        if self.role == Role::Leader {
            self.progress.clear();
        }
        self.fail_pending_reads();
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.transfer = None;
        self.catch_up.clear();
        self.reset_election_timeout();
    }

    fn become_pre_candidate(&mut self) {
        // Thesis §9.6: ask first whether an election could be won, without raising the
        // term, so a node that was cut off cannot force the cluster into a new term.
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.reset_election_timeout();
        if self.votes.len() >= self.quorum() {
            self.become_candidate();
            return;
        }
        let request = RequestVote {
            pre_vote: true,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leader_transfer: false,
        };
        for peer in self.peers() {
            self.send(
                peer,
                self.term.saturating_add(1),
                Body::RequestVote(request),
            );
        }
    }

    fn become_candidate(&mut self) {
        self.campaign(false);
    }

    /// A real election: a new term, a vote for itself, RequestVote to the voters.
    /// `leader_transfer` when the leader asked for it (TimeoutNow).
    fn campaign(&mut self, leader_transfer: bool) {
        self.term = self.term.saturating_add(1);
        self.voted_for = self.config.id;
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.reset_election_timeout();
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        let request = RequestVote {
            pre_vote: false,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leader_transfer,
        };
        for peer in self.peers() {
            self.send(peer, self.term, Body::RequestVote(request));
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.voted_for, self.config.id, "a leader voted for itself");
        self.role = Role::Leader;
        self.leader_id = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .replicas()
            .into_iter()
            .map(|peer| (peer, new_progress(next_index)))
            .collect();
        self.catch_up.clear();
        self.transfer = None;
        self.read_context_next = 1;
        // Thesis §6.4: a no-op entry of the new term lets the leader learn the commit
        // index, which reads need (and, by the 2015 fix, which membership changes need).
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            data: Vec::new(),
            kind: EntryKind::Command as i32,
        });
        self.broadcast_append_pending = true;
        if self.alone() {
            self.maybe_commit();
        }
    }

    fn fail_pending_reads(&mut self) {
        self.dropped_reads.append(&mut self.reads_awaiting_commit);
        self.dropped_reads
            .extend(self.reads.drain(..).map(|r| r.request_id));
        self.read_broadcast_pending = false;
    }

    // ----- elections -------------------------------------------------------------

    fn handle_request_vote(&mut self, message: &Message, request: RequestVote) {
        let candidate = message.from;
        let free_to_vote = self.voted_for == candidate
            || (self.voted_for == 0 && self.leader_id.is_none())
            || (request.pre_vote && message.term > self.term)
            || self.config.bugs.double_vote;
        let lease_blocks = request.pre_vote && self.in_leader_lease();
        let granted = free_to_vote
            && !lease_blocks
            && self
                .log
                .is_up_to_date(request.last_log_index, request.last_log_term);
        if granted && !request.pre_vote {
            // Persisted (hard state) before the reply leaves: see Ready.
            self.voted_for = candidate;
            self.election_elapsed = 0;
        }
        let reply_term = if request.pre_vote && granted {
            message.term
        } else {
            self.term
        };
        let reply = RequestVoteResponse {
            pre_vote: request.pre_vote,
            granted,
        };
        self.send(candidate, reply_term, Body::RequestVoteResponse(reply));
    }

    fn handle_vote_response(&mut self, message: &Message, response: RequestVoteResponse) {
        let counts = match self.role {
            Role::PreCandidate => {
                response.pre_vote && message.term == self.term.saturating_add(1)
                    || !response.granted
            }
            Role::Candidate => !response.pre_vote && message.term == self.term,
            _ => false,
        };
        if !counts
            || response.pre_vote != (self.role == Role::PreCandidate)
            || !self.counts(message.from)
        {
            return;
        }
        self.votes.insert(message.from, response.granted);
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        if granted >= self.quorum() {
            if self.role == Role::PreCandidate {
                self.become_candidate();
            } else {
                self.become_leader();
            }
        } else if rejected >= self.quorum() {
            self.become_follower(self.term, None);
        }
    }

    // ----- replication: follower side --------------------------------------------

    fn handle_append_entries(&mut self, message: &Message, append: AppendEntries) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(message.from));
        }
        self.leader_id = Some(message.from);
        self.election_elapsed = 0;
        let mut reply = AppendEntriesResponse {
            read_context: append.read_context,
            ..Default::default()
        };
        if append.prev_log_index < self.log.commit_index {
            // Everything up to our commit index matches any leader's log (Leader
            // Completeness); say so and let the leader continue from there.
            reply.success = true;
            reply.match_index = self.log.commit_index;
        } else if self
            .log
            .matches(append.prev_log_index, append.prev_log_term)
        {
            let matched = self.log.append_after(
                append.prev_log_index,
                &append.entries,
                self.config.bugs.keep_conflicts,
            );
            // A truncated suffix takes its configurations with it; the appended entries
            // bring theirs, in force at once.
            let log = &self.log;
            self.conf.retain_matching(|index| log.term(index));
            let snapshot_index = self.log.snapshot_index();
            for entry in &append.entries {
                if entry.index > snapshot_index && self.log.term(entry.index) == Some(entry.term) {
                    self.conf.appended(entry);
                }
            }
            self.persisted_index = self.persisted_index.min(self.log.unstable_from - 1);
            // Receiver rule 5: commit up to the last entry known to match this leader.
            let commit = append.leader_commit.min(matched);
            if commit > self.log.commit_index {
                self.log.commit_index = commit;
            }
            reply.success = true;
            reply.match_index = matched;
        } else {
            // Fast backtracking (thesis §5.3): tell the leader where our log diverges.
            let last = self.log.last_index();
            if append.prev_log_index > last {
                reply.conflict_term = 0;
                reply.conflict_index = last + 1;
            } else {
                let term = self.log.term(append.prev_log_index).unwrap_or(0);
                reply.conflict_term = term;
                reply.conflict_index = self.log.first_index_of_term(term, append.prev_log_index);
            }
        }
        self.send(message.from, self.term, Body::AppendEntriesResponse(reply));
    }

    fn handle_install_snapshot(&mut self, message: &Message, install: InstallSnapshot) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(message.from));
        }
        self.leader_id = Some(message.from);
        self.election_elapsed = 0;
        let Some(meta) = install.meta else { return };
        let (index, term) = (meta.last_included_index, meta.last_included_term);
        let last_index = if index <= self.log.commit_index {
            self.log.commit_index
        } else if self.log.matches(index, term) {
            // We hold the snapshot's last entry: it is committed, keep what follows.
            self.log.commit_index = index;
            index
        } else {
            // Thesis §5.2 (InstallSnapshot): discard the log, adopt the snapshot.
            self.log.compact(index, term);
            if !meta.voters.is_empty() {
                self.conf = ConfLog::new(membership_of(&meta));
            }
            self.persisted_index = index;
            let snapshot = Snapshot {
                meta,
                data: install.data,
            };
            self.snapshot = Some(snapshot.clone());
            self.snapshot_to_install = Some(snapshot);
            index
        };
        let reply = InstallSnapshotResponse { last_index };
        self.send(
            message.from,
            self.term,
            Body::InstallSnapshotResponse(reply),
        );
    }

    // ----- replication: leader side ----------------------------------------------

    fn handle_append_response(&mut self, message: &Message, response: AppendEntriesResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&message.from) else {
            return;
        };
        progress.recent_active = true;
        if response.read_context > progress.read_ack {
            // Any reply in our term, even a rejection, shows the follower still
            // recognises this leader: that is all ReadIndex needs.
            progress.read_ack = response.read_context;
        }
        if response.success {
            if response.match_index > progress.match_index {
                progress.match_index = response.match_index;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            let matched = progress.match_index;
            progress.inflight.retain(|&last| last > matched);
            if progress.state != ProgressState::Replicate {
                progress.state = ProgressState::Replicate;
                progress.inflight.clear();
                progress.next_index = matched + 1;
            }
            self.maybe_commit();
            if self.transfer.is_some_and(|t| t.target == message.from) {
                self.maybe_send_timeout_now();
            }
        } else {
            let hint = if response.conflict_term > 0 {
                match self.log.last_index_of_term(response.conflict_term) {
                    Some(index) => index + 1,
                    None => response.conflict_index,
                }
            } else {
                response.conflict_index
            };
            if response.conflict_index == 0 && response.conflict_term == 0 {
                // A rejection without a hint is a stale-term reply; the term check
                // already handled it.
                return;
            }
            progress.next_index = hint.clamp(progress.match_index + 1, last_index + 1);
            progress.state = ProgressState::Probe;
            progress.probe_sent = false;
            progress.inflight.clear();
        }
        self.advance_reads();
        self.send_appends(message.from);
    }

    fn handle_snapshot_response(&mut self, message: &Message, response: InstallSnapshotResponse) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&message.from) else {
            return;
        };
        progress.recent_active = true;
        progress.match_index = progress.match_index.max(response.last_index);
        progress.next_index = progress.match_index + 1;
        progress.state = ProgressState::Replicate;
        progress.inflight.clear();
        self.maybe_commit();
        self.send_appends(message.from);
    }

    fn broadcast_append(&mut self) {
        for peer in self.replicas() {
            self.send_appends(peer);
        }
    }

    /// Sends as many AppendEntries to `peer` as its state and the inflight window allow.
    fn send_appends(&mut self, peer: u64) {
        loop {
            if !self.send_one_append(peer) {
                return;
            }
        }
    }

    fn send_one_append(&mut self, peer: u64) -> bool {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get(&peer) else {
            return false;
        };
        let can_send = match progress.state {
            ProgressState::Probe => !progress.probe_sent,
            ProgressState::Replicate => progress.inflight.len() < self.config.inflight_appends_max,
            ProgressState::Snapshot => false,
        };
        if !can_send
            || (progress.state == ProgressState::Replicate && progress.next_index > last_index)
        {
            return false;
        }
        let prev_index = progress.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(peer);
            return false;
        };
        let mut entries =
            self.log
                .slice(prev_index + 1, last_index, self.config.append_entries_max);
        // At least one entry, then no more than append_bytes_max: a message must stay
        // below what a peer will decode.
        let mut bytes = 0usize;
        let keep = entries
            .iter()
            .take_while(|e| {
                bytes += e.data.len();
                bytes <= self.config.append_bytes_max
            })
            .count()
            .max(1);
        entries.truncate(keep);
        let sent_last = entries.last().map_or(prev_index, |e| e.index);
        let append = AppendEntries {
            prev_log_index: prev_index,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.commit_index,
            read_context: 0,
        };
        let progress = self.progress.get_mut(&peer).expect("checked above");
        let keep_going = match progress.state {
            ProgressState::Probe => {
                progress.probe_sent = true;
                false
            }
            _ => {
                progress.next_index = sent_last + 1;
                progress.inflight.push_back(sent_last);
                true
            }
        };
        self.send(peer, self.term, Body::AppendEntries(append));
        keep_going
    }

    fn send_snapshot(&mut self, peer: u64) {
        let Some(snapshot) = self.snapshot.clone() else {
            panic!(
                "log compacted to {} without a snapshot",
                self.log.snapshot_index()
            );
        };
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        progress.state = ProgressState::Snapshot;
        progress.heartbeats_since_snapshot = 0;
        progress.inflight.clear();
        let install = InstallSnapshot {
            meta: Some(snapshot.meta),
            data: snapshot.data,
        };
        self.send(peer, self.term, Body::InstallSnapshot(install));
    }

    fn broadcast_heartbeat(&mut self, read_context: u64) {
        let last_index = self.log.last_index();
        for peer in self.replicas() {
            let Some(progress) = self.progress.get_mut(&peer) else {
                continue;
            };
            if progress.state == ProgressState::Replicate
                && !progress.inflight.is_empty()
                && progress.match_index == progress.match_at_heartbeat
                && progress.match_index < last_index
            {
                // No progress for a whole heartbeat interval: an append was lost.
                progress.state = ProgressState::Probe;
                progress.next_index = progress.match_index + 1;
                progress.inflight.clear();
            }
            progress.match_at_heartbeat = progress.match_index;
            progress.probe_sent = false;
            if progress.state == ProgressState::Snapshot {
                progress.heartbeats_since_snapshot += 1;
                if progress.heartbeats_since_snapshot >= self.config.snapshot_resend_heartbeats {
                    // The snapshot or its answer was probably lost: send it again.
                    progress.state = ProgressState::Probe;
                    progress.next_index = progress.match_index + 1;
                }
            }
            // A heartbeat is an empty AppendEntries at the point known to match, so it
            // never truncates anything (thesis §3.5).
            let prev_index = progress.match_index.max(self.log.snapshot_index());
            let prev_term = self.log.term(prev_index).unwrap_or(0);
            let heartbeat = AppendEntries {
                prev_log_index: prev_index,
                prev_log_term: prev_term,
                entries: Vec::new(),
                leader_commit: self.log.commit_index,
                read_context,
            };
            self.send(peer, self.term, Body::AppendEntries(heartbeat));
            self.send_appends(peer);
        }
        if self.alone() {
            self.advance_reads();
        }
    }

    /// Raft §5.3/§5.4.2: the commit index is the highest index stored on a quorum, and
    /// only an entry of the current term is committed by counting replicas.
    fn maybe_commit(&mut self) {
        // Only voters count (the membership in force, thesis §4.1); learners do not.
        let mut matched: Vec<u64> = self
            .progress
            .iter()
            .filter(|(peer, _)| self.counts(**peer))
            .map(|(_, p)| p.match_index)
            .collect();
        if self.is_voter() {
            matched.push(self.persisted_index);
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum() - 1) else {
            return;
        };
        if candidate <= self.log.commit_index {
            return;
        }
        let current_term = self.log.term(candidate) == Some(self.term);
        if !current_term && !self.config.bugs.commit_old_term {
            return;
        }
        let first_commit_of_term = self.log.term(self.log.commit_index) != Some(self.term);
        self.log.commit_index = candidate;
        if first_commit_of_term && self.log.term(candidate) == Some(self.term) {
            for request_id in std::mem::take(&mut self.reads_awaiting_commit) {
                self.queue_read(request_id);
            }
        }
        // Followers learn the new commit index with the next append or heartbeat.
    }

    fn advance_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .progress
            .iter()
            .filter(|(peer, _)| self.counts(**peer))
            .map(|(_, p)| p.read_ack)
            .collect();
        if self.is_voter() {
            acks.push(u64::MAX);
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&confirmed) = acks.get(self.quorum() - 1) else {
            return;
        };
        while let Some(read) = self.reads.front() {
            if read.context > confirmed {
                break;
            }
            let read = self.reads.pop_front().expect("front exists");
            self.read_states.push(ReadState {
                request_id: read.request_id,
                index: read.index,
            });
        }
    }

    fn send(&mut self, to: u64, term: u64, body: Body) {
        let message = Message {
            group_id: self.config.group_id,
            from: self.config.id,
            to,
            term,
            lamport_time: self.lamport.tick(),
            body: Some(body),
        };
        self.messages.push(message);
    }

    /// Checks invariants that hold between any two inputs; tests call it after every step.
    pub fn validate(&self) {
        assert!(
            self.log.commit_index <= self.log.last_index(),
            "commit beyond the log"
        );
        assert!(
            self.log.applied_index <= self.log.commit_index,
            "applied beyond commit"
        );
        assert!(
            self.log.snapshot_index() <= self.log.commit_index,
            "snapshot of uncommitted state"
        );
        if self.role == Role::Leader {
            assert_eq!(self.leader_id, Some(self.config.id));
            assert_eq!(self.voted_for, self.config.id);
            for (peer, progress) in &self.progress {
                assert!(
                    progress.match_index < progress.next_index,
                    "peer {peer}: match >= next"
                );
                assert!(
                    progress.next_index <= self.log.last_index() + 1,
                    "peer {peer}: next beyond log"
                );
            }
        } else {
            assert!(self.progress.is_empty(), "only a leader tracks progress");
        }
    }
}

fn new_progress(next_index: u64) -> Progress {
    Progress {
        next_index,
        match_index: 0,
        state: ProgressState::Probe,
        probe_sent: false,
        inflight: VecDeque::new(),
        recent_active: true,
        read_ack: 0,
        match_at_heartbeat: 0,
        heartbeats_since_snapshot: 0,
    }
}

/// The membership a snapshot records (at its last index).
fn renamed_keys<V: Clone>(map: &BTreeMap<u64, V>, rename: &dyn Fn(u64) -> u64) -> BTreeMap<u64, V> {
    map.iter().map(|(&k, v)| (rename(k), v.clone())).collect()
}

/// Renames the member ids a snapshot's metadata carries (see `RaftCore::relabeled`).
pub fn relabel_meta(meta: &mut SnapshotMeta, rename: &dyn Fn(u64) -> u64) {
    for ids in [&mut meta.voters, &mut meta.learners, &mut meta.promoting] {
        for id in ids.iter_mut() {
            *id = rename(*id);
        }
        // The node writes member lists sorted; keep them so.
        ids.sort_unstable();
    }
}

fn membership_of(meta: &SnapshotMeta) -> Membership {
    Membership::from_wire(&crate::proto::raft::Membership {
        voters: meta.voters.clone(),
        learners: meta.learners.clone(),
        promoting: meta.promoting.clone(),
    })
}
