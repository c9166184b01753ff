//! The replication thread: the one owner of every Raft group the node hosts (one
//! `RaftCore` and one state machine per group: the consistent core's partition map for
//! group 0, a key-value store for each data partition) and of the WAL they share.
//!
//! It runs rounds: take a batch of events and step the cores they are for, tick the
//! groups that are not quiesced, then take a `Ready` from every group that has one,
//! stage them all in the WAL, fdatasync once (group commit across groups), and only then
//! send acknowledgements, advance and apply each, in the order the `Ready` contract
//! gives. It is a plain thread, not a tokio task, because fsync blocks.
//!
//! **Quiescence.** A node with a thousand idle partitions must stay cheap, so a leader
//! whose group has been idle for `QUIESCE_AFTER_TICKS` ticks ([`RaftCore::is_quiescent`])
//! tells its followers (`Quiesce`) and stops ticking the group; a follower whose log
//! matches what the leader said stops too. Anything for the group (a message, a
//! proposal, a read) wakes it. While quiesced, elections cannot notice a dead leader, so
//! nodes exchange one `NodeHeartbeat` per peer per heartbeat interval, whatever the number
//! of groups; a quiesced follower whose leader's node has been silent for an election
//! timeout wakes the group (which then elects), and a quiesced leader that hears from no
//! quorum of its voters wakes it (and check-quorum steps it down). CockroachDB quiesces
//! ranges the same way, with node liveness in place of these heartbeats.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::durable::Durable;
use super::transport::Transport;
use crate::cluster::lease::LeaseTimers;
use crate::cluster::watch::{Delivery, Sent, WatchBugs, WatchHub, WatchSpec};
use crate::partitioning::convert::to_wire;
use crate::partitioning::core_store::{CoreApplied, CoreStore};
use crate::partitioning::{
    Applied, CORE_GROUP, DataRange, Load, PartitionMap, RangeBugs, RangeDescriptor,
};
use crate::proto::kv::{GroupStatus, StatusResponse};
use crate::proto::raft::{
    ApplyResult, Command, CoreCommand, EntryKind, GroupRemoved, Message, NodeHeartbeat,
    PartitionReport, Quiesce, ReplicaCheck, core_command, message::Body,
};
use crate::proto::raft::{HardState, SnapshotMeta};
use crate::replication::{
    ConfChange, ConfChangeError, PersistedState, RaftConfig, RaftCore, Ready, Role, Snapshot,
};
use crate::store::ScanItem;
use crate::time::HybridClock;

/// Lease renewal rounds a group has in flight at most (lease reads start them ahead of
/// the lease's end).
const LEASE_RENEWALS_MAX: usize = 4;
/// Ticks fired by one forward clock step; more would only repeat elections.
const CLOCK_STEP_TICKS_MAX: i64 = 1_000;

/// A gap between two reads of the lease clock longer than this many ticks is a stall (a
/// pause, or starvation), whose time the lease clock drops.
const LEASE_STALL_TICKS: u32 = 5;
/// A leader's group quiesces after this many idle ticks in a row.
const QUIESCE_AFTER_TICKS: u32 = 20;
/// A leader reports its load to the consistent core this often (in ticks), if it had any.
const LOAD_REPORT_TICKS: u64 = 500;
/// Messages kept for a group not hosted yet, for how long (ticks), and for how many groups.
const ORPHAN_MESSAGES_MAX: usize = 32;
const ORPHAN_TICKS_MAX: u64 = 50;
const ORPHAN_GROUPS_MAX: usize = 64;
/// A leader whose range the map has at an older epoch reports again after this many ticks.
const MAP_BEHIND_CHECK_TICKS: u64 = 20;
/// A replica whose log says it was removed, or a learner, asks the members this often (in
/// ticks) whether it is still a member; one that was removed hears so.
const REMOVED_CHECK_TICKS: u64 = 100;
/// A split the hot-spot detector asks for must divide the sampled requests at least this
/// evenly (`|left - right| / (left + right)`).
const HOT_SPLIT_BALANCE_MAX: f64 = 0.3;
/// Digests of recent states kept over all groups (16 bytes each: 16 MiB), shared out
/// evenly; each group keeps at least `DIGESTS_KEPT_MIN`.
const DIGESTS_BUDGET: usize = 1 << 20;
const DIGESTS_KEPT_MIN: usize = 1_024;

pub enum WriteOutcome {
    /// Applied, or refused by the range at apply time (`epoch_not_match` set: not applied).
    Applied(Box<ApplyResult>),
    NotLeader(Option<u64>),
    /// Another leader's entry took the proposal's index: it was not applied.
    Superseded,
    /// This node holds no replica of the group.
    NoSuchGroup,
    /// A membership change the group refused, and whether it may succeed later (another
    /// change is still committing, say).
    Refused {
        why: String,
        retry: bool,
    },
}

/// How a read (a get: [`GetValue`]; a scan: [`ScanItems`]) ended.
pub enum ReadOutcome<T> {
    Value(T),
    NotLeader(Option<u64>),
    /// Leadership was lost before the read was confirmed.
    Dropped,
    NoSuchGroup,
    /// The range no longer holds what was asked (a split moved it): not served; the
    /// range's current descriptors.
    EpochNotMatch(Vec<RangeDescriptor>),
    /// An undecided transaction's intent is on a key read: not served until the reader
    /// has resolved it from the transaction's record (on partition `primary`).
    Held {
        txn: u64,
        primary: u64,
    },
}

/// Why a request for a group's leader was not taken here.
enum NotServed {
    NoSuchGroup,
    NotLeader(Option<u64>),
}

impl NotServed {
    fn outcome<T>(self) -> ReadOutcome<T> {
        match self {
            NotServed::NoSuchGroup => ReadOutcome::NoSuchGroup,
            NotServed::NotLeader(hint) => ReadOutcome::NotLeader(hint),
        }
    }
}

/// A lease as its leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseLife {
    pub remaining_ms: u64,
    pub granted_ttl_ms: u64,
    pub keys: Vec<Vec<u8>>,
}

/// What a get finds: the value and its revision, if the key exists.
pub type GetValue = Option<(Vec<u8>, u64)>;
/// What a scan finds: the items, and whether the limit left more out.
pub type ScanItems = (Vec<ScanItem>, bool);

impl<T> ReadOutcome<T> {
    /// Answers a read that will not be served here: `Some(hint)` if this replica does not
    /// lead, `None` if it stopped leading before the read was confirmed.
    fn refuse(reply: oneshot::Sender<ReadOutcome<T>>, not_leader: Option<Option<u64>>) {
        let outcome = match not_leader {
            Some(hint) => ReadOutcome::NotLeader(hint),
            None => ReadOutcome::Dropped,
        };
        let _ = reply.send(outcome);
    }
}

pub enum Event {
    Peer(Message),
    Write {
        group: u64,
        command: Command,
        reply: oneshot::Sender<WriteOutcome>,
    },
    /// A command for the consistent core (group 0).
    CoreWrite {
        command: CoreCommand,
        reply: oneshot::Sender<WriteOutcome>,
    },
    Read {
        group: u64,
        key: Vec<u8>,
        serializable: bool,
        /// Served from the leader's lease if it holds one (else through ReadIndex, which
        /// renews it).
        lease: bool,
        reply: oneshot::Sender<ReadOutcome<GetValue>>,
    },
    Scan {
        group: u64,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        serializable: bool,
        reply: oneshot::Sender<ReadOutcome<ScanItems>>,
    },
    /// A lease keep-alive (the range's leader only): renewed now, answered once a quorum
    /// confirms this node still leads (so a deposed leader cannot renew a lease that the
    /// new one is expiring). `Value(None)`: no such lease.
    LeaseRenew {
        group: u64,
        id: u64,
        reply: oneshot::Sender<ReadOutcome<Option<u64>>>,
    },
    /// What a lease has left, by this leader's clock, with its granted TTL and keys.
    LeaseTimeToLive {
        group: u64,
        id: u64,
        reply: oneshot::Sender<ReadOutcome<Option<LeaseLife>>>,
    },
    /// One membership change of `group` (the leader only); answered once it applies.
    ConfChange {
        group: u64,
        change: ConfChange,
        reply: oneshot::Sender<WriteOutcome>,
    },
    /// Host an empty replica of `group`, to be caught up by its leader: with the range's
    /// bootstrap descriptor if it has one (its log may then be replayed from the start),
    /// else with none (it waits for a snapshot). Answers whether it was created.
    CreateReplica {
        group: u64,
        initial: Option<RangeDescriptor>,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// A node joined the cluster: send to it, and count it for liveness.
    AddPeer {
        id: u64,
        addr: std::net::SocketAddr,
    },
    /// A node left the cluster.
    RemovePeer {
        id: u64,
    },
    /// Start handing leadership of `group` to `to` (the leader only).
    TransferLeader {
        group: u64,
        to: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The clock guard's verdict: while true, hand leaderships on and do not campaign.
    ClockFence(bool),
    Status {
        /// The group the top-level fields describe (None: the first data group).
        group: Option<u64>,
        all_groups: bool,
        /// The index to report the state digest at (0: the applied index), if wanted.
        digest_index: Option<u64>,
        reply: oneshot::Sender<StatusResponse>,
    },
    /// Watch a range hosted here (any replica: only committed changes are sent). The
    /// watch ends when `sender` is dropped or the range stops being what it was.
    Watch {
        group: u64,
        id: u64,
        spec: WatchSpec,
        sender: WatchSender,
    },
    Shutdown,
}

/// One partition's watch queue, from this thread to the watch's stream.
pub type WatchSender = mpsc::Sender<Delivery>;

/// Deliveries to a group's watchers: a full queue is left to catch up later.
fn watch_send(senders: &mut HashMap<u64, WatchSender>) -> impl FnMut(u64, Delivery) -> Sent + '_ {
    move |id, delivery| {
        let Some(sender) = senders.get(&id) else {
            return Sent::Closed;
        };
        match sender.try_send(delivery) {
            Ok(()) => Sent::Taken,
            Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                senders.remove(&id);
                Sent::Closed
            }
        }
    }
}

/// What request handlers need to know about a group without asking the thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub leader_id: Option<u64>,
    pub term: u64,
    pub lamport_time: u64,
    pub role: &'static str,
    /// A data range's own descriptor, as its log last set it (None: the consistent core,
    /// or a replica that does not know its range yet).
    pub descriptor: Option<RangeDescriptor>,
}

/// Every group this node hosts, by id: the driver adds the groups splits create.
pub type Views = Arc<RwLock<HashMap<u64, watch::Receiver<View>>>>;

/// What the replication thread asks the node's async side to do about a hot range (see
/// `hot_spots` in `mod.rs`, which carries it out with the node's own RPCs).
#[derive(Clone, Debug)]
pub enum HotAction {
    /// Split the range at `key`, then hand the new half's leadership to another node.
    Split {
        group: u64,
        key: Vec<u8>,
        why: String,
    },
    /// No key divides the load (one hot key, or a hash bucket): move the leadership.
    MoveLeader { group: u64, why: String },
}

/// The Raft configuration of a group the node hosts, by group id and voters.
pub type GroupConfig = Arc<dyn Fn(u64, Vec<u64>) -> RaftConfig + Send + Sync>;

pub struct DriverOptions {
    pub node_id: u64,
    /// Every other node of the cluster.
    pub peers: Vec<u64>,
    pub tick: Duration,
    /// The clock the timers read; the fault-injection service may step it.
    pub clock: super::clock::TimerClock,
    pub snapshot_interval_entries: u64,
    pub batch_events_max: usize,
    pub heartbeat_interval_ticks: u32,
    /// How long a silent node is taken to be alive, for quiesced groups.
    pub liveness_ticks: u64,
    pub double_apply: bool,
    pub early_ack: bool,
    pub range_bugs: RangeBugs,
    pub seeded_bugs: Vec<String>,
    /// For the groups a split creates.
    pub group_config: GroupConfig,
    /// A range this node leads that serves at least this many operations per second over
    /// a window of `hot_window_ticks` is hot: split at a key that divides its load, or its
    /// leadership moved. 0: never.
    pub hot_ops_per_sec: f64,
    pub hot_window_ticks: u64,
    pub hot_actions: Option<mpsc::Sender<HotAction>>,
    /// The hybrid logical clock's maximum offset (ms): a remote timestamp further ahead
    /// is refused, not adopted.
    pub max_clock_offset_ms: u64,
    /// What a new leader adds to every lease: the longest election timeout (ms).
    pub lease_extension_ms: u64,
    pub lease_bugs: crate::cluster::lease::LeaseBugs,
    pub watch_bugs: WatchBugs,
    /// How long a confirmed ReadIndex round lets a leader serve lease reads without
    /// another (ms): the shortest election timeout less the clock-drift margin (0: lease
    /// reads are served through ReadIndex).
    pub lease_read_ms: u64,
}

/// A group's state machine.
// One per group hosted, and the data variant is the common one: boxing it would add an
// indirection to every apply to save a few hundred bytes per core replica.
#[allow(clippy::large_enum_variant)]
pub enum Machine {
    Data(DataRange),
    Core(CoreStore),
}

impl Machine {
    fn digest(&self) -> u64 {
        match self {
            Machine::Data(store) => store.digest(),
            Machine::Core(core) => core.digest(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        match self {
            Machine::Data(store) => store.snapshot(),
            Machine::Core(core) => core.snapshot(),
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Machine::Data(range) => {
                let known = range.descriptor().cloned();
                *range = DataRange::restore(bytes, known.as_ref())
                    .map_err(|e| anyhow::anyhow!("the range's snapshot from the leader: {e}"))?
            }
            Machine::Core(core) => *core = CoreStore::restore(bytes).map_err(anyhow::Error::msg)?,
        }
        Ok(())
    }
}

/// One group as the node starts it.
pub struct GroupStart {
    pub core: RaftCore,
    pub machine: Machine,
}

enum PendingRead {
    Get {
        key: Vec<u8>,
        reply: oneshot::Sender<ReadOutcome<GetValue>>,
    },
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reply: oneshot::Sender<ReadOutcome<ScanItems>>,
    },
    /// A keep-alive already renewed, waiting for the quorum's confirmation.
    Renew {
        id: u64,
        reply: oneshot::Sender<ReadOutcome<Option<u64>>>,
    },
}

impl PendingRead {
    fn drop_with(self, not_leader: Option<Option<u64>>) {
        match self {
            PendingRead::Get { reply, .. } => ReadOutcome::refuse(reply, not_leader),
            PendingRead::Scan { reply, .. } => ReadOutcome::refuse(reply, not_leader),
            PendingRead::Renew { reply, .. } => ReadOutcome::refuse(reply, not_leader),
        }
    }
}

struct Group {
    core: RaftCore,
    machine: Machine,
    pending_writes: HashMap<u64, (u64, oneshot::Sender<WriteOutcome>)>,
    pending_reads: HashMap<u64, PendingRead>,
    /// Confirmed reads waiting for the state machine to reach their index.
    confirmed_reads: Vec<(u64, u64)>,
    applied_index: u64,
    /// (applied index, state digest) for the group's recent states, so that replicas at
    /// different indices can still be compared at a common one after a run.
    digests: VecDeque<(u64, u64)>,
    digests_kept: usize,
    quiesced: bool,
    idle_ticks: u32,
    view: watch::Sender<View>,
    /// The term in which this node last reported leading the group to the core.
    reported_term: u64,
    reads_since_report: u64,
    writes_since_report: u64,
    ticks_since_report: u64,
    reported_load: Load,
    /// Load-based splitting: the requests of the current window, and where they fall.
    hot_window: crate::partitioning::load::LoadWindow,
    hot_finder: crate::partitioning::load::SplitFinder,
    hot_ticks: u64,
    /// When this range's leases run out, while this replica leads it.
    lease_timers: LeaseTimers,
    /// The watches of this replica's range, and their queues.
    watches: WatchHub,
    watch_senders: HashMap<u64, WatchSender>,
    /// Leader-lease reads (Raft thesis §6.4.1): the term and the time (ms, the tick
    /// clock) until which no other leader can have been elected, and the ReadIndex rounds
    /// in flight that will extend it (read id -> term, when the round started).
    lease_read: Option<(u64, u64)>,
    read_rounds: HashMap<u64, (u64, u64)>,
}

impl Group {
    /// The index a lease read may be served at now, if this replica holds a lease: it
    /// leads in the term the lease was confirmed in, no transfer is under way, and the
    /// lease has not run out by its own clock.
    fn lease_read_index(&self, now_ms: u64) -> Option<u64> {
        let (term, until) = self.lease_read?;
        (self.core.role() == Role::Leader
            && self.core.term() == term
            && !self.core.transferring()
            && now_ms < until)
            .then(|| self.core.commit_index())
    }

    fn extend_lease(&mut self, term: u64, until: u64) {
        if self.core.role() != Role::Leader || self.core.term() != term || self.core.transferring()
        {
            return;
        }
        self.lease_read = match self.lease_read {
            Some((t, before)) if t == term => Some((term, before.max(until))),
            _ => Some((term, until)),
        };
    }

    /// Ends every watch of the range (it split, merged or leaves this node).
    fn cancel_watches(&mut self, reason: &str) {
        if self.watches.is_empty() {
            return;
        }
        self.watches
            .cancel_all(reason, &mut watch_send(&mut self.watch_senders));
        // Dropped: each stream ends once it has read its cancellation.
        self.watch_senders.clear();
    }

    /// Counts a request this replica serves as leader, for the hot-spot detector.
    fn record_request(&mut self, key: &[u8], bytes: usize, write: bool) {
        if !self.core.is_leader() {
            return;
        }
        if write {
            self.hot_window.write(bytes);
        } else {
            self.hot_window.read(bytes);
        }
        self.hot_finder.record(key);
    }

    /// Resumes ticking a quiesced group. A message to a group that is not quiesced (a
    /// heartbeat's answer) changes nothing: whether it is idle is judged at each tick.
    fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.idle_ticks = 0;
        }
    }

    fn remember_digest(&mut self) {
        if self.digests.len() >= self.digests_kept {
            self.digests.pop_front();
        }
        self.digests
            .push_back((self.applied_index, self.machine.digest()));
    }

    fn digest_at(&self, index: u64) -> Option<u64> {
        // Indices only grow within `digests` (a snapshot clears it).
        let position = self
            .digests
            .binary_search_by_key(&index, |&(i, _)| i)
            .ok()?;
        Some(self.digests[position].1)
    }

    fn status(&self) -> GroupStatus {
        let log = self.core.log();
        GroupStatus {
            group_id: self.core.group_id(),
            role: self.core.role().as_str().to_string(),
            term: self.core.term(),
            leader_id: self.core.leader_id().unwrap_or(0),
            commit_index: self.core.commit_index(),
            applied_index: self.applied_index,
            last_index: log.last_index(),
            snapshot_index: log.snapshot_index(),
            voters: self.core.membership().voters.iter().copied().collect(),
            quiesced: self.quiesced,
        }
    }

    /// Serves a read from the state machine, if the range still holds what it asks for:
    /// a split applied since the read was checked may have moved it.
    fn serve(&self, read: PendingRead, bugs: RangeBugs) {
        let Machine::Data(range) = &self.machine else {
            read.drop_with(None);
            return;
        };
        let store = range.store();
        match read {
            PendingRead::Get { key, reply } => {
                let intent = range
                    .txn()
                    .intent(&key)
                    .filter(|_| !bugs.skip_intent_resolution);
                let outcome = match (range.check_key(&key, bugs), intent) {
                    (Err(current), _) => ReadOutcome::EpochNotMatch(current),
                    (Ok(()), Some(i)) => ReadOutcome::Held {
                        txn: i.txn,
                        primary: i.primary,
                    },
                    (Ok(()), None) => {
                        ReadOutcome::Value(store.get(&key).map(|(v, r)| (v.to_vec(), r)))
                    }
                };
                let _ = reply.send(outcome);
            }
            PendingRead::Scan {
                start,
                end,
                limit,
                reply,
            } => {
                let intent = range
                    .txn()
                    .intent_in(&start, &end)
                    .filter(|_| !bugs.skip_intent_resolution);
                let outcome = match (range.check_span(&start, &end, bugs), intent) {
                    (Err(current), _) => ReadOutcome::EpochNotMatch(current),
                    (Ok(()), Some((_, i))) => ReadOutcome::Held {
                        txn: i.txn,
                        primary: i.primary,
                    },
                    (Ok(()), None) => ReadOutcome::Value(store.scan(&start, &end, limit)),
                };
                let _ = reply.send(outcome);
            }
            PendingRead::Renew { id, reply } => {
                let ttl = range.leases().get(id).map(|record| record.ttl_ms);
                let _ = reply.send(ReadOutcome::Value(ttl));
            }
        }
    }

    fn descriptor(&self) -> Option<&RangeDescriptor> {
        match &self.machine {
            Machine::Data(range) => range.descriptor(),
            Machine::Core(_) => None,
        }
    }
}

/// What the thread shares with the request handlers: per-group views and the map.
pub struct Published {
    pub views: Views,
}

pub struct Driver {
    /// What lease deadlines are counted on (not the ticks, which drop time under load).
    lease_clock: crate::cluster::lease::LeaseClock,
    groups: BTreeMap<u64, Group>,
    views: Views,
    digests_kept: usize,
    durable: Durable,
    transport: Transport,
    options: DriverOptions,
    /// The partition map as the consistent core's replica here applied it.
    map: Arc<watch::Sender<Arc<PartitionMap>>>,
    /// Reports for a core leader on another node.
    reports: mpsc::Sender<PartitionReport>,
    next_read_id: u64,
    ticks: u64,
    /// The tick at which each peer node was last heard from.
    last_heard: HashMap<u64, u64>,
    unknown_groups_logged: HashSet<u64>,
    /// Messages for groups not hosted here yet, with the tick they came at: a split's new
    /// range is created on each replica when it applies the split, and the first replica
    /// to get there campaigns at once; its vote requests wait here for the others.
    orphans: HashMap<u64, Vec<(u64, Message)>>,
    /// This node's clock is too far off its peers' (see `clock::guard_clock`).
    clock_fenced: bool,
    /// Stamps the writes this node's leaders propose.
    hlc: HybridClock,
    /// A refused timestamp is logged once per range, not once per write.
    hlc_refusals_logged: HashSet<u64>,
}

impl Driver {
    pub fn new(
        starts: Vec<GroupStart>,
        durable: Durable,
        transport: Transport,
        options: DriverOptions,
        map: Arc<watch::Sender<Arc<PartitionMap>>>,
        reports: mpsc::Sender<PartitionReport>,
    ) -> (Self, Published) {
        let max_clock_offset_ms = options.max_clock_offset_ms;
        let options_tick = options.tick;
        let digests_kept = (DIGESTS_BUDGET / starts.len().max(1)).max(DIGESTS_KEPT_MIN);
        let views: Views = Arc::default();
        let mut driver = Self {
            groups: BTreeMap::new(),
            views: views.clone(),
            digests_kept,
            durable,
            transport,
            options,
            map,
            reports,
            next_read_id: 1,
            lease_clock: crate::cluster::lease::LeaseClock::new(options_tick * LEASE_STALL_TICKS),
            ticks: 0,
            last_heard: HashMap::new(),
            unknown_groups_logged: HashSet::new(),
            orphans: HashMap::new(),
            hlc: HybridClock::new(max_clock_offset_ms),
            hlc_refusals_logged: HashSet::new(),
            clock_fenced: false,
        };
        for start in starts {
            driver.host(start);
        }
        (driver, Published { views })
    }

    /// Starts hosting a group: at bootstrap, and when a split creates one.
    fn host(&mut self, start: GroupStart) {
        let applied_index = start.core.log().snapshot_index();
        let digests = VecDeque::from([(applied_index, start.machine.digest())]);
        let (view, receiver) = watch::channel(View::default());
        let id = start.core.group_id();
        self.views
            .write()
            .expect("no thread panics holding the views")
            .insert(id, receiver);
        self.groups.insert(
            id,
            Group {
                core: start.core,
                machine: start.machine,
                pending_writes: HashMap::new(),
                pending_reads: HashMap::new(),
                confirmed_reads: Vec::new(),
                applied_index,
                digests,
                digests_kept: self.digests_kept,
                quiesced: false,
                idle_ticks: 0,
                view,
                reported_term: 0,
                reads_since_report: 0,
                writes_since_report: 0,
                ticks_since_report: 0,
                reported_load: Load::default(),
                hot_window: Default::default(),
                hot_finder: crate::partitioning::load::SplitFinder::new(
                    crate::partitioning::hashing::mix(id ^ self.options.node_id),
                ),
                hot_ticks: 0,
                lease_timers: LeaseTimers::new(self.options.lease_bugs),
                watches: WatchHub::new(self.options.watch_bugs),
                watch_senders: HashMap::new(),
                lease_read: None,
                read_rounds: HashMap::new(),
            },
        );
        if let Some(waiting) = self.orphans.remove(&id) {
            let group = self.groups.get_mut(&id).expect("just hosted");
            for (_, message) in waiting {
                group.core.step(message);
            }
        }
    }

    /// Runs until `Event::Shutdown` or every sender is gone. An error is a storage
    /// failure: the node must stop rather than acknowledge what it cannot persist.
    pub fn run(mut self, events: Receiver<Event>) -> anyhow::Result<()> {
        let mut next_tick = Instant::now() + self.options.tick;
        let mut clock_offset_ms = self.options.clock.offset_ms();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut handled = 0;
            match events.recv_timeout(wait) {
                Ok(Event::Shutdown) => return Ok(()),
                Ok(event) => {
                    self.handle(event)?;
                    handled += 1;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Batch what else is queued: one round, one fsync for all of it.
            while handled < self.options.batch_events_max {
                match events.try_recv() {
                    Ok(Event::Shutdown) => return Ok(()),
                    Ok(event) => {
                        self.handle(event)?;
                        handled += 1;
                    }
                    Err(_) => break,
                }
            }
            let offset_ms = self.options.clock.offset_ms();
            if offset_ms != clock_offset_ms {
                self.step_clock(offset_ms - clock_offset_ms, &mut next_tick);
                clock_offset_ms = offset_ms;
            }
            if Instant::now() >= next_tick {
                self.tick();
                // A fast clock fires its ticks more often in true time, a slow one less.
                next_tick += self.options.tick.div_f64(self.options.clock.rate());
                if next_tick < Instant::now() {
                    // Paused (SIGSTOP) or overloaded: do not replay the missed ticks in
                    // a burst, which would start an election at once. The tick clock
                    // lost that time, so a lease counted on it would outlast true time:
                    // every lease read waits for a fresh round.
                    next_tick = Instant::now() + self.options.tick;
                    self.void_lease_reads();
                }
            }
            self.process_ready()?;
            self.publish_views();
        }
    }

    /// A clock step. Ticks are due on the node's own clock, so every deadline moves with
    /// it: backward holds the next tick back by the step; forward brings it nearer and fires
    /// every tick whose time the step skipped (bounded). A forward step that only undoes an
    /// earlier backward one therefore fires nothing, as on a real clock.
    /// The driver's monotonic clock in milliseconds: its ticks, which the injectable clock
    /// paces (election timeouts, leader-lease reads, watches' progress). Lease TTLs count on
    /// [`Self::lease_ms`], which the same clock scales and steps.
    fn now_ms(&self) -> u64 {
        self.ticks * self.options.tick.as_millis() as u64
    }

    /// The lease clock now (see [`crate::cluster::lease::LeaseClock`]).
    fn lease_ms(&mut self) -> u64 {
        let rate = self.options.clock.rate();
        self.lease_clock.read(Instant::now(), rate)
    }

    /// The time a lease deadline is counted from: the lease clock, rounded up.
    fn lease_now_ms(&mut self) -> u64 {
        self.lease_ms() + 1
    }

    /// Proposes the expiry of leases that ran out on ranges this node leads.
    fn expire_leases(&mut self, expiries: Vec<(u64, u64)>) {
        for (group, lease) in expiries {
            let physical = self.options.clock.wall_ms();
            let hlc = self.hlc.now(physical).ok().map(crate::store::to_wire);
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let command = Command {
                hlc,
                op: Some(crate::proto::raft::command::Op::LeaseRevoke(
                    crate::proto::raft::LeaseRevoke {
                        id: lease,
                        expired: true,
                    },
                )),
                ..Default::default()
            };
            g.wake();
            tracing::debug!(group, lease, "lease ran out: proposing its expiry");
            let _ = g.core.propose(command.encode_to_vec());
        }
    }

    fn step_clock(&mut self, delta_ms: i64, next_tick: &mut Instant) {
        if delta_ms < 0 {
            // Held-back ticks stretch a lease in true time, as a pause does.
            self.void_lease_reads();
        }
        self.lease_ms();
        self.lease_clock.step(
            delta_ms,
            CLOCK_STEP_TICKS_MAX as u64 * self.options.tick.as_millis() as u64,
        );
        let (ticks, next) = clock_step(*next_tick, delta_ms, Instant::now(), self.options.tick);
        for _ in 0..ticks {
            self.tick();
        }
        *next_tick = next;
    }

    /// Ends every leader lease and forgets the rounds that would renew one: the next lease
    /// read goes through ReadIndex, whose round starts a lease afresh.
    fn void_lease_reads(&mut self) {
        for group in self.groups.values_mut() {
            group.lease_read = None;
            group.read_rounds.clear();
        }
    }

    /// One tick for every group that is not quiesced; quiescence and liveness; reports.
    fn tick(&mut self) {
        self.ticks += 1;
        let now = self.ticks;
        self.orphans.retain(|_, waiting| {
            waiting.retain(|(at, _)| now.saturating_sub(*at) <= ORPHAN_TICKS_MAX);
            !waiting.is_empty()
        });
        if self
            .ticks
            .is_multiple_of(u64::from(self.options.heartbeat_interval_ticks))
        {
            let heartbeats = self.options.peers.iter().map(|&peer| Message {
                group_id: CORE_GROUP,
                from: self.options.node_id,
                to: peer,
                body: Some(Body::NodeHeartbeat(NodeHeartbeat {})),
                ..Default::default()
            });
            self.transport.send(heartbeats);
        }
        let node_id = self.options.node_id;
        if now.is_multiple_of(REMOVED_CHECK_TICKS) {
            let checks: Vec<Message> = self
                .groups
                .iter()
                .filter(|(id, g)| {
                    **id != CORE_GROUP
                        && g.core.log().last_index() > 0
                        // A learner asks too: one removed while cut off never hears of
                        // it otherwise (learners never campaign), and a member that is
                        // still a learner gets no answer.
                        && !g.core.membership().is_voter(node_id)
                        && g.core.was_member()
                })
                .flat_map(|(&id, g)| {
                    g.core
                        .membership()
                        .voters
                        .iter()
                        .map(move |&voter| Message {
                            group_id: id,
                            from: node_id,
                            to: voter,
                            term: g.core.term(),
                            lamport_time: g.core.lamport_time(),
                            body: Some(Body::ReplicaCheck(ReplicaCheck {})),
                        })
                })
                .collect();
            self.transport.send(checks.into_iter());
        }
        let mut quiesce_messages = Vec::new();
        let mut reports = Vec::new();
        let mut hot = Vec::new();
        let map = self.map.borrow().clone();
        let fenced = self.clock_fenced;
        let now_ms = self.now_ms();
        let lease_ms = self.lease_ms();
        let extension = self.options.lease_extension_ms;
        let mut expiries = Vec::new();
        for (&id, group) in &mut self.groups {
            if id != CORE_GROUP {
                sync_lease_timers(group, lease_ms, extension);
                expiries.extend(
                    group
                        .lease_timers
                        .due(lease_ms)
                        .into_iter()
                        .map(|l| (id, l)),
                );
            }
            if group.quiesced
                && !keeps_quiet(
                    group,
                    node_id,
                    self.ticks,
                    &self.last_heard,
                    self.options.liveness_ticks,
                )
            {
                tracing::debug!(
                    group = id,
                    "woken: its leader's node (or a quorum) went silent"
                );
                group.wake();
            }
            if group.quiesced {
                continue;
            }
            // Judged before this tick: the last round has sent what the previous one
            // produced, so a heartbeat waiting to go out does not count as work.
            if group.core.is_quiescent() {
                group.idle_ticks += 1;
                if group.idle_ticks >= QUIESCE_AFTER_TICKS {
                    tracing::debug!(group = id, "quiescing");
                    group.quiesced = true;
                    let log = group.core.log();
                    let members: Vec<u64> = group.core.membership().others(node_id).collect();
                    for member in members {
                        quiesce_messages.push(Message {
                            group_id: id,
                            from: node_id,
                            to: member,
                            term: group.core.term(),
                            lamport_time: group.core.lamport_time(),
                            body: Some(Body::Quiesce(Quiesce {
                                last_index: log.last_index(),
                                commit: group.core.commit_index(),
                            })),
                        });
                    }
                    continue;
                }
            } else {
                group.idle_ticks = 0;
            }
            // A node whose clock is fenced does not campaign (its followers' election
            // timers stand still); its leaderships are handed on (`hand_on_leaderships`).
            let leads = group.core.role() == Role::Leader;
            if !fenced || leads {
                group.core.tick();
            }
            if group.core.role() == Role::Leader
                && now.is_multiple_of(MAP_BEHIND_CHECK_TICKS)
                && let Machine::Data(range) = &group.machine
                && let (Some((into, planned)), Some(own)) = (range.merging(), range.descriptor())
                && map.get(into).is_some_and(|target| {
                    !target.epoch.is_stale_against(&planned)
                        && target.epoch != planned
                        && !target.span.overlaps(&own.span)
                })
            {
                // The target moved on without this range (its epoch changed, so the commit
                // planned against the old one can never apply): serve again.
                let rollback = Command {
                    op: Some(crate::proto::raft::command::Op::RollbackMerge(
                        crate::proto::raft::RollbackMerge {
                            planned: Some(crate::proto::kv::RangeEpoch {
                                version: own.epoch.version,
                                conf_version: own.epoch.conf_version,
                            }),
                        },
                    )),
                    ..Default::default()
                };
                tracing::info!(
                    group = id,
                    into,
                    "rolling back a merge whose target moved on"
                );
                let _ = group.core.propose(rollback.encode_to_vec());
            }
            // Auto-compaction (etcd's revision retention): the leader proposes a Compact
            // entry, so every replica drops the same versions at the same point.
            if group.core.role() == Role::Leader
                && now.is_multiple_of(MAP_BEHIND_CHECK_TICKS)
                && let Machine::Data(range) = &group.machine
                && group.applied_index
                    >= range.store().compacted_revision() + 2 * COMPACTION_RETAIN_REVISIONS
            {
                let compact = Command {
                    op: Some(crate::proto::raft::command::Op::Compact(
                        crate::proto::raft::Compact {
                            revision: group.applied_index - COMPACTION_RETAIN_REVISIONS,
                        },
                    )),
                    ..Default::default()
                };
                let _ = group.core.propose(compact.encode_to_vec());
            }
            if id != CORE_GROUP && group.core.role() == Role::Leader {
                group.hot_ticks += 1;
                if group.hot_ticks >= self.options.hot_window_ticks {
                    let seconds = group.hot_ticks as f64 * self.options.tick.as_secs_f64();
                    if let Some(action) = hot_spot(id, group, seconds, self.options.hot_ops_per_sec)
                    {
                        hot.push(action);
                    }
                    group.hot_ticks = 0;
                    group.hot_window = Default::default();
                    group.hot_finder = crate::partitioning::load::SplitFinder::new(
                        crate::partitioning::hashing::mix(id ^ now),
                    );
                }
                group.ticks_since_report += 1;
                let changed_term = group.reported_term != group.core.term();
                let due = group.ticks_since_report >= LOAD_REPORT_TICKS
                    && (group.reads_since_report + group.writes_since_report > 0
                        || group.reported_load != Load::default());
                // A report the core refused or never got (a split's, say) is sent again
                // until the map has the range as its log has it.
                let map_behind = group.ticks_since_report >= MAP_BEHIND_CHECK_TICKS
                    && group.descriptor().is_some_and(|own| {
                        map.get(own.id)
                            .is_none_or(|known| known.epoch.is_stale_against(&own.epoch))
                    });
                if changed_term || due || map_behind {
                    let seconds = (group.ticks_since_report as f64
                        * self.options.tick.as_secs_f64())
                    .max(0.001);
                    let load = Load {
                        reads_per_sec: group.reads_since_report as f64 / seconds,
                        writes_per_sec: group.writes_since_report as f64 / seconds,
                    };
                    group.reported_term = group.core.term();
                    group.reads_since_report = 0;
                    group.writes_since_report = 0;
                    group.ticks_since_report = 0;
                    group.reported_load = load;
                    reports.push((id, group.core.term(), load));
                }
            }
        }
        self.transport.send(quiesce_messages.into_iter());
        if let Some(actions) = &self.options.hot_actions {
            for action in hot {
                // A full queue drops it: the next window decides again.
                let _ = actions.try_send(action);
            }
        }
        self.expire_leases(expiries);
        for group in self.groups.values_mut() {
            if group.lease_read.is_some()
                && (group.core.transferring() || group.core.role() != Role::Leader)
            {
                // A transfer's target may be elected at once: the lease is void, and
                // stays so (a new one needs a round started after the transfer).
                group.lease_read = None;
            }
            if group.core.transferring() {
                group.read_rounds.clear();
            }
            if group.watches.is_empty() {
                continue;
            }
            group.watch_senders.retain(|_, sender| !sender.is_closed());
            let senders = &group.watch_senders;
            group.watches.retain(|id| senders.contains_key(&id));
            if let Machine::Data(range) = &group.machine {
                group.watches.tick(
                    range.store(),
                    group.applied_index,
                    now_ms,
                    &mut watch_send(&mut group.watch_senders),
                );
            }
        }
        for (id, term, load) in reports {
            self.report(id, term, load);
        }
    }

    /// Tells the consistent core that this node leads `group` in `term`: through the
    /// local core replica if it leads, else through the reporter task.
    fn report(&mut self, group: u64, term: u64, load: Load) {
        let Some(Machine::Data(range)) = self.groups.get(&group).map(|g| &g.machine) else {
            return;
        };
        // The range's own descriptor, and the range its last split made unless the map
        // has it already (or newer): the halves of a split tile the keyspace only
        // together, so the map takes them in one report.
        let map = self.map.borrow().clone();
        let mut descriptors: Vec<RangeDescriptor> =
            range.descriptor().cloned().into_iter().collect();
        let Some(own) = descriptors.first_mut() else {
            return;
        };
        own.leader = Some(self.options.node_id);
        let split_off = range.current().into_iter().skip(1).filter(|d| {
            map.get(d.id)
                .is_none_or(|known| known.epoch.is_stale_against(&d.epoch))
        });
        descriptors.extend(split_off);
        let report = PartitionReport {
            descriptors: descriptors.iter().map(|d| to_wire(d, load)).collect(),
            term,
            reads_per_sec: load.reads_per_sec,
            writes_per_sec: load.writes_per_sec,
        };
        if let Some(core) = self.groups.get_mut(&CORE_GROUP)
            && core.core.role() == Role::Leader
        {
            core.wake();
            let command = CoreCommand {
                op: Some(core_command::Op::Report(report)),
            };
            // A refusal here means leadership just moved; the next term change reports again.
            let _ = core.core.propose(command.encode_to_vec());
            return;
        }
        // A full queue drops the report: the next one carries the same news.
        let _ = self.reports.try_send(report);
    }

    fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Peer(message) => self.handle_peer(message)?,
            Event::Write {
                group,
                command,
                reply,
            } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    let _ = reply.send(WriteOutcome::NoSuchGroup);
                    return Ok(());
                };
                g.wake();
                g.writes_since_report += 1;
                let writes_a_key = match command_key(&command) {
                    Some(key) => {
                        g.record_request(key, command.encoded_len(), true);
                        true
                    }
                    None => false,
                };
                let mut command = command;
                if writes_a_key && let Machine::Data(range) = &g.machine {
                    // Above the range's last write, so that a leader whose clock is behind
                    // its predecessor's still stamps forward (the range enforces it too).
                    let physical = self.options.clock.wall_ms();
                    let last = range.store().last_timestamp();
                    if let Err(refused) = self.hlc.update(last, physical)
                        && self.hlc_refusals_logged.insert(group)
                    {
                        tracing::warn!(group, %refused, "a write timestamp was refused");
                    }
                    command.hlc = self.hlc.now(physical).ok().map(crate::store::to_wire);
                }
                match g.core.propose(command.encode_to_vec()) {
                    Ok(_) if self.options.early_ack => {
                        // The seeded bug: answer from a speculative copy of the state
                        // machine, before the entry is durable on a quorum.
                        let index = g.core.log().last_index();
                        let result = match &g.machine {
                            Machine::Data(range) => range
                                .clone()
                                .apply(
                                    index,
                                    &command,
                                    self.options.double_apply,
                                    self.options.range_bugs,
                                )
                                .result()
                                .clone(),
                            Machine::Core(_) => ApplyResult::default(),
                        };
                        let _ = reply.send(WriteOutcome::Applied(Box::new(result)));
                    }
                    Ok((index, term)) => {
                        g.pending_writes.insert(index, (term, reply));
                    }
                    Err(not_leader) => {
                        let _ = reply.send(WriteOutcome::NotLeader(not_leader.leader_hint));
                    }
                }
            }
            Event::TransferLeader { group, to, reply } => {
                let outcome = match self.groups.get_mut(&group) {
                    Some(g) => {
                        g.wake();
                        g.core
                            .transfer_leadership(to)
                            .map_err(|e| format!("partition {group}: {e}"))
                    }
                    None => Err(format!("this node holds no replica of partition {group}")),
                };
                let _ = reply.send(outcome);
            }
            Event::CoreWrite { command, reply } => {
                let Some(g) = self.groups.get_mut(&CORE_GROUP) else {
                    let _ = reply.send(WriteOutcome::NoSuchGroup);
                    return Ok(());
                };
                g.wake();
                match g.core.propose(command.encode_to_vec()) {
                    Ok((index, term)) => {
                        g.pending_writes.insert(index, (term, reply));
                    }
                    Err(not_leader) => {
                        let _ = reply.send(WriteOutcome::NotLeader(not_leader.leader_hint));
                    }
                }
            }
            Event::Read {
                group,
                key,
                serializable,
                lease,
                reply,
            } => self.read(group, PendingRead::Get { key, reply }, serializable, lease),
            Event::Scan {
                group,
                start,
                end,
                limit,
                serializable,
                reply,
            } => self.read(
                group,
                PendingRead::Scan {
                    start,
                    end,
                    limit,
                    reply,
                },
                serializable,
                false,
            ),
            Event::ClockFence(fenced) => {
                self.clock_fenced = fenced;
                if fenced {
                    self.hand_on_leaderships();
                }
            }
            Event::Status {
                group,
                all_groups,
                digest_index,
                reply,
            } => {
                let _ = reply.send(self.status(group, all_groups, digest_index));
            }
            Event::LeaseRenew { group, id, reply } => {
                let now = self.lease_ms();
                let from = self.lease_now_ms();
                let g = match self.leading_data_group(group, now) {
                    Ok(g) => g,
                    Err(refused) => {
                        let _ = reply.send(refused.outcome());
                        return Ok(());
                    }
                };
                let ttl = match &g.machine {
                    Machine::Data(range) => range.leases().get(id).map(|r| r.ttl_ms),
                    Machine::Core(_) => None,
                };
                if !ttl.is_some_and(|ttl| g.lease_timers.renew(id, ttl, from)) {
                    let _ = reply.send(ReadOutcome::Value(None));
                    return Ok(());
                }
                self.confirm(group, PendingRead::Renew { id, reply });
            }
            Event::LeaseTimeToLive { group, id, reply } => {
                let now = self.lease_ms();
                let g = match self.leading_data_group(group, now) {
                    Ok(g) => g,
                    Err(refused) => {
                        let _ = reply.send(refused.outcome());
                        return Ok(());
                    }
                };
                let life = match &g.machine {
                    Machine::Data(range) => range.leases().get(id).map(|record| LeaseLife {
                        remaining_ms: g.lease_timers.remaining(id, now).unwrap_or(0),
                        granted_ttl_ms: record.ttl_ms,
                        keys: record.keys.iter().cloned().collect(),
                    }),
                    Machine::Core(_) => None,
                };
                let _ = reply.send(ReadOutcome::Value(life));
            }
            Event::ConfChange {
                group,
                change,
                reply,
            } => self.conf_change(group, change, reply)?,
            Event::CreateReplica {
                group,
                initial,
                reply,
            } => {
                let created = self.create_replica(group, initial)?;
                let _ = reply.send(Ok(created));
            }
            Event::AddPeer { id, addr } => {
                if id != self.options.node_id && !self.options.peers.contains(&id) {
                    tracing::info!(peer = id, %addr, "a node joined the cluster: talking to it");
                    self.transport.add_peer(id, addr);
                    self.options.peers.push(id);
                }
            }
            Event::RemovePeer { id } => {
                if self.options.peers.contains(&id) {
                    tracing::info!(
                        peer = id,
                        "a node left the cluster: no longer talking to it"
                    );
                    self.transport.remove_peer(id);
                    self.options.peers.retain(|&p| p != id);
                }
            }
            Event::Watch {
                group,
                id,
                spec,
                sender,
            } => {
                let now_ms = self.now_ms();
                let Some(g) = self.groups.get_mut(&group) else {
                    let _ = sender.try_send(Delivery::Canceled {
                        reason: format!("partition {group} has no replica on this node"),
                        compacted: None,
                        progress: 0,
                    });
                    return Ok(());
                };
                let Machine::Data(range) = &g.machine else {
                    return Ok(());
                };
                g.watch_senders.insert(id, sender);
                tracing::debug!(
                    group,
                    id,
                    from = spec.from,
                    applied = g.applied_index,
                    "watch"
                );
                g.watches.add(
                    id,
                    spec,
                    range.store(),
                    g.applied_index,
                    now_ms,
                    &mut watch_send(&mut g.watch_senders),
                );
            }
            Event::Shutdown => {}
        }
        Ok(())
    }

    /// Proposes one membership change. A replica added to a group whose log was never
    /// compacted would be caught up entry by entry from the first; the leader takes a
    /// snapshot first, so that it is caught up by snapshot, as a move asks.
    fn conf_change(
        &mut self,
        id: u64,
        change: ConfChange,
        reply: oneshot::Sender<WriteOutcome>,
    ) -> anyhow::Result<()> {
        let Some(group) = self.groups.get_mut(&id) else {
            let _ = reply.send(WriteOutcome::NoSuchGroup);
            return Ok(());
        };
        group.wake();
        if let Machine::Data(range) = &group.machine
            && range.merging().is_some()
        {
            let _ = reply.send(WriteOutcome::Refused {
                why: format!("partition {id} is frozen for a merge; its replicas cannot change until the merge ends"),
                retry: true,
            });
            return Ok(());
        }
        let adding = matches!(change, ConfChange::AddLearner(_) | ConfChange::AddVoter(_));
        if adding
            && group.core.is_leader()
            && group.core.log().snapshot_index() == 0
            && group.applied_index > 0
        {
            self.snapshot_now(id)?;
        }
        let group = self.groups.get_mut(&id).expect("checked above");
        match group.core.propose_conf_change(change) {
            Ok((index, term)) => {
                tracing::info!(group = id, index, ?change, "membership change proposed");
                group.pending_writes.insert(index, (term, reply));
            }
            Err(ConfChangeError::NotLeader(not_leader)) => {
                let _ = reply.send(WriteOutcome::NotLeader(not_leader.leader_hint));
            }
            Err(e) => {
                let retry = !matches!(e, ConfChangeError::Invalid(_));
                let _ = reply.send(WriteOutcome::Refused {
                    why: format!("partition {id}: {e}"),
                    retry,
                });
            }
        }
        Ok(())
    }

    /// Hosts an empty replica of `id` for its leader to catch up. Its first state is
    /// written at once (a snapshot file at index 0), so that a restart hosts it again
    /// whatever it has received by then. A replica added back to a node it was removed
    /// from starts afresh: the WAL is rewritten without the old one's records first.
    fn create_replica(
        &mut self,
        id: u64,
        initial: Option<RangeDescriptor>,
    ) -> anyhow::Result<bool> {
        if self.groups.contains_key(&id) {
            return Ok(false);
        }
        if self.durable.is_tombstoned(id)? {
            self.checkpoint()?;
            self.durable.untombstone(id)?;
        }
        let range = initial.map_or_else(DataRange::uninitialized, DataRange::new);
        let snapshot = Snapshot {
            meta: SnapshotMeta::default(),
            data: range.snapshot(),
        };
        self.durable
            .write_snapshot(id, &snapshot, HardState::default())?;
        let persisted = PersistedState {
            hard_state: HardState::default(),
            snapshot: Some(snapshot),
            entries: Vec::new(),
        };
        let core = RaftCore::new((self.options.group_config)(id, Vec::new()), persisted);
        tracing::info!(
            group = id,
            "hosting an empty replica for its leader to catch up"
        );
        self.host(GroupStart {
            core,
            machine: Machine::Data(range),
        });
        Ok(true)
    }

    fn handle_peer(&mut self, message: Message) -> anyhow::Result<()> {
        self.last_heard.insert(message.from, self.ticks);
        match &message.body {
            Some(Body::NodeHeartbeat(_)) => return Ok(()),
            Some(Body::Quiesce(quiesce)) => {
                if let Some(group) = self.groups.get_mut(&message.group_id)
                    && group.core.term() == message.term
                    && group
                        .core
                        .may_quiesce_with(message.from, quiesce.last_index, quiesce.commit)
                {
                    group.quiesced = true;
                }
                return Ok(());
            }
            Some(Body::GroupRemoved(removed)) => {
                if let Some(group) = self.groups.get(&message.group_id)
                    && message.group_id != CORE_GROUP
                    && group.core.removed_at(removed.index)
                {
                    tracing::info!(
                        group = message.group_id,
                        from = message.from,
                        index = removed.index,
                        "removed from the group: retiring the replica"
                    );
                    self.retire_group(message.group_id)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let from_leader = matches!(
            message.body,
            Some(Body::AppendEntries(_) | Body::InstallSnapshot(_) | Body::TimeoutNow(_))
        );
        if let Some(group) = self.groups.get(&message.group_id)
            && !from_leader
            && group.core.membership().is_member(self.options.node_id)
            && group.core.is_stranger(message.from)
        {
            // A replica that missed its removal (it was down, or cut off, when it
            // happened) would campaign or ask forever: tell it.
            let removed = Message {
                group_id: message.group_id,
                from: self.options.node_id,
                to: message.from,
                term: group.core.term(),
                lamport_time: group.core.lamport_time(),
                body: Some(Body::GroupRemoved(GroupRemoved {
                    index: group.core.commit_index(),
                })),
            };
            self.transport.send(std::iter::once(removed));
            return Ok(());
        }
        if matches!(message.body, Some(Body::ReplicaCheck(_))) {
            return Ok(());
        }
        match self.groups.get_mut(&message.group_id) {
            Some(group) => {
                if group.quiesced {
                    tracing::debug!(
                        group = message.group_id,
                        from = message.from,
                        "woken by a message"
                    );
                }
                group.wake();
                group.core.step(message);
            }
            None => {
                if self.orphans.len() < ORPHAN_GROUPS_MAX
                    || self.orphans.contains_key(&message.group_id)
                {
                    let waiting = self.orphans.entry(message.group_id).or_default();
                    if waiting.len() >= ORPHAN_MESSAGES_MAX {
                        waiting.remove(0);
                    }
                    waiting.push((self.ticks, message.clone()));
                }
                if self.unknown_groups_logged.insert(message.group_id) {
                    tracing::warn!(
                        group = message.group_id,
                        from = message.from,
                        "a peer message for a group this node does not host: kept for a moment in case a split creates it here, then dropped (logged once per group)"
                    );
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, group: u64, read: PendingRead, serializable: bool, lease: bool) {
        let now = self.now_ms();
        let Some(g) = self.groups.get_mut(&group) else {
            match read {
                PendingRead::Get { reply, .. } => {
                    let _ = reply.send(ReadOutcome::NoSuchGroup);
                }
                PendingRead::Scan { reply, .. } => {
                    let _ = reply.send(ReadOutcome::NoSuchGroup);
                }
                PendingRead::Renew { reply, .. } => {
                    let _ = reply.send(ReadOutcome::NoSuchGroup);
                }
            }
            return;
        };
        g.reads_since_report += 1;
        let key = match &read {
            PendingRead::Get { key, .. } => Some(key.clone()),
            PendingRead::Scan { start, .. } => Some(start.clone()),
            PendingRead::Renew { .. } => None,
        };
        if let Some(key) = key {
            g.record_request(&key, key.len(), false);
        }
        if serializable {
            g.serve(read, self.options.range_bugs);
            return;
        }
        if lease && let Some(index) = g.lease_read_index(now) {
            // As a confirmed ReadIndex at the commit index: served once applied.
            let id = self.next_read_id;
            self.next_read_id += 1;
            g.pending_reads.insert(id, read);
            g.confirmed_reads.push((index, id));
            serve_confirmed_reads(g, self.options.range_bugs);
            // Renewed ahead of time, so that steady lease reads never wait a round.
            let renew = g.lease_read.is_some_and(|(_, until)| {
                until.saturating_sub(now) < self.options.lease_read_ms / 2
            });
            if renew && g.read_rounds.len() < LEASE_RENEWALS_MAX {
                g.wake();
                let id = self.next_read_id;
                self.next_read_id += 1;
                if g.core.read_index(id).is_ok() {
                    g.read_rounds.insert(id, (g.core.term(), now));
                }
            }
            return;
        }
        self.confirm(group, read);
    }

    /// Serves `read` once a ReadIndex round confirms this replica of `group` still leads.
    fn confirm(&mut self, group: u64, read: PendingRead) {
        let Some(g) = self.groups.get_mut(&group) else {
            read.drop_with(None);
            return;
        };
        g.wake();
        let id = self.next_read_id;
        self.next_read_id += 1;
        let now = self.ticks * self.options.tick.as_millis() as u64;
        match g.core.read_index(id) {
            Ok(()) => {
                g.pending_reads.insert(id, read);
                // Its confirmation also starts a lease, counted from now: every voter
                // that confirms heard from this leader after now.
                // Not while a transfer is under way: its target may be elected right
                // after this round's acks, with votes that ignore leader stickiness.
                if self.options.lease_read_ms > 0 && !g.core.transferring() {
                    g.read_rounds.insert(id, (g.core.term(), now));
                }
            }
            Err(not_leader) => read.drop_with(Some(not_leader.leader_hint)),
        }
    }

    /// The replica of `group` here, if it leads, with its lease clocks running.
    fn leading_data_group(&mut self, group: u64, now: u64) -> Result<&mut Group, NotServed> {
        let extension = self.options.lease_extension_ms;
        let g = self.groups.get_mut(&group).ok_or(NotServed::NoSuchGroup)?;
        if g.core.role() != Role::Leader {
            return Err(NotServed::NotLeader(g.core.leader_id()));
        }
        sync_lease_timers(g, now, extension);
        Ok(g)
    }

    /// While this node's clock is fenced (the guard says so every half second), every
    /// group it leads is asked to hand leadership to another voter, a different one each
    /// time, so that one unreachable voter does not keep the range here.
    fn hand_on_leaderships(&mut self) {
        let node_id = self.options.node_id;
        let turn = self.ticks as usize;
        for (&id, group) in &mut self.groups {
            if group.core.role() != Role::Leader {
                continue;
            }
            let membership = group.core.membership();
            let voters: Vec<u64> = membership
                .others(node_id)
                .filter(|n| membership.voters.contains(n))
                .collect();
            if voters.is_empty() {
                continue;
            }
            let to = voters[turn % voters.len()];
            group.wake();
            if group.core.transfer_leadership(to).is_ok() {
                tracing::warn!(group = id, to, "clock fenced: handing leadership on");
            }
        }
    }

    fn process_ready(&mut self) -> anyhow::Result<()> {
        let now_ms = self.now_ms();
        loop {
            let ready_groups: Vec<u64> = self
                .groups
                .iter()
                .filter(|(_, g)| g.core.has_ready())
                .map(|(&id, _)| id)
                .collect();
            if ready_groups.is_empty() {
                break;
            }
            let mut staged = Vec::with_capacity(ready_groups.len());
            for id in ready_groups {
                let group = self.groups.get_mut(&id).expect("listed above");
                let mut ready = group.core.ready();
                if self.options.watch_bugs.uncommitted {
                    send_uncommitted(group, &ready.entries, now_ms);
                }
                let (replication, acknowledgements): (Vec<Message>, Vec<Message>) =
                    std::mem::take(&mut ready.messages)
                        .into_iter()
                        .partition(|m| {
                            matches!(
                                m.body,
                                Some(Body::AppendEntries(_)) | Some(Body::InstallSnapshot(_))
                            )
                        });
                self.transport.send(replication.into_iter());
                let core = &group.core;
                self.durable.stage(id, &ready, || {
                    let log = core.log();
                    (
                        core.hard_state(),
                        log.slice(log.first_index(), log.last_index(), usize::MAX),
                    )
                })?;
                staged.push((id, ready, acknowledgements));
            }
            // One fdatasync for every group's records of this round.
            self.durable.sync()?;
            for (id, ready, acknowledgements) in staged {
                // A merge applied earlier in this round may have retired the group: what
                // it staged is moot (its range lives on in the merged one).
                let Some(group) = self.groups.get_mut(&id) else {
                    continue;
                };
                self.transport.send(acknowledgements.into_iter());
                group.core.advance();
                self.apply(id, ready)?;
            }
        }
        for group in self.groups.values_mut() {
            serve_confirmed_reads(group, self.options.range_bugs);
        }
        Ok(())
    }

    fn apply(&mut self, id: u64, ready: Ready) -> anyhow::Result<()> {
        let now_ms = self.now_ms();
        let lease_now_ms = self.lease_now_ms();
        let double_apply = self.options.double_apply;
        let bugs = self.options.range_bugs;
        let group = self.groups.get_mut(&id).expect("applying a known group");
        let mut map_changed = false;
        let mut splits = Vec::new();
        let mut merged_away = Vec::new();
        // The members of the newest configuration entry applied, and who it dropped.
        let mut members_now: Option<Vec<u64>> = None;
        let mut dropped = Vec::new();
        // What the entries applied changed, for the range's watches.
        let mut changes = Vec::new();
        let watch_uncommitted = self.options.watch_bugs.uncommitted;
        if let Some(snapshot) = &ready.snapshot {
            group.machine.restore(&snapshot.data)?;
            group.applied_index = snapshot.meta.last_included_index;
            // What the snapshot skipped is in its store's versions: catch up from there.
            group.watches.restored();
            // Earlier digests belong to a history this node no longer holds.
            group.digests.clear();
            group.remember_digest();
            map_changed = matches!(group.machine, Machine::Core(_));
        }
        for entry in &ready.committed_entries {
            // A configuration entry is the Raft core's business, in force since it was
            // appended; the state machine has nothing to apply.
            let result = if entry.kind == EntryKind::Config as i32 {
                let wire =
                    crate::proto::raft::Membership::decode(entry.data.as_slice()).map_err(|e| {
                        anyhow::anyhow!(
                            "group {id}: configuration entry {} does not decode: {e}",
                            entry.index
                        )
                    })?;
                let members: Vec<u64> = wire.voters.iter().chain(&wire.learners).copied().collect();
                if let Machine::Data(range) = &mut group.machine {
                    if let Some(before) = range.descriptor() {
                        dropped.extend(
                            before
                                .replicas
                                .iter()
                                .chain(&before.learners)
                                .filter(|n| !members.contains(n))
                                .map(|&n| (n, entry.index)),
                        );
                    }
                    range.set_members(&wire.voters, &wire.learners);
                    tracing::info!(
                        group = id,
                        index = entry.index,
                        voters = ?wire.voters,
                        learners = ?wire.learners,
                        "membership changed"
                    );
                }
                members_now = Some(members);
                ApplyResult {
                    succeeded: true,
                    revision: entry.index,
                    ..Default::default()
                }
            } else if entry.data.is_empty() {
                ApplyResult::default()
            } else {
                match &mut group.machine {
                    Machine::Data(range) if range.descriptor().is_none() => {
                        // Only a snapshot gives a replica created empty its range; the
                        // leader sends one before any entry (it compacts before adding a
                        // replica whose range was not laid out at bootstrap).
                        anyhow::bail!(
                            "group {id}: committed entry {} reached a replica that has no state yet \
                             (it needed a snapshot first); stopping rather than diverge",
                            entry.index
                        );
                    }
                    Machine::Data(range) => {
                        let command = Command::decode(entry.data.as_slice()).map_err(|e| {
                            anyhow::anyhow!(
                                "group {id}: committed entry {} does not decode: {e}",
                                entry.index
                            )
                        })?;
                        let applied = range.apply(entry.index, &command, double_apply, bugs);
                        let entry_changes = range.take_changes();
                        // The seeded bug sent these when the entry was appended.
                        if !(watch_uncommitted && sent_on_append(&command)) {
                            changes.extend(entry_changes);
                        }
                        match applied {
                            Applied::Done(result) => {
                                note_lease_entry(
                                    &mut group.lease_timers,
                                    id,
                                    &command,
                                    &result,
                                    lease_now_ms,
                                );
                                result
                            }
                            Applied::Split { mut result, right } => {
                                let halves = range.current();
                                tracing::info!(
                                    group = id,
                                    index = entry.index,
                                    left = %halves.first().map(|d| d.span.to_string()).unwrap_or_default(),
                                    right = %halves.get(1).map(|d| format!("{} {}", d.id, d.span)).unwrap_or_default(),
                                    "range split"
                                );
                                result.split =
                                    halves.iter().map(|d| to_wire(d, Load::default())).collect();
                                // Up to the split, the watches had the whole range; they
                                // end there, and resume on the halves.
                                group.watches.committed(
                                    &std::mem::take(&mut changes),
                                    entry.index,
                                    now_ms,
                                    &mut watch_send(&mut group.watch_senders),
                                );
                                let right_id = right.descriptor().map_or(0, |d| d.id);
                                group.cancel_watches(&format!(
                                    "partition {id} split at revision {index}: keys from {key} \
                                     on are partition {right_id} now; watch again, resuming \
                                     both from revision {next}",
                                    index = entry.index,
                                    key = halves
                                        .get(1)
                                        .map(|d| d.span.to_string())
                                        .unwrap_or_default(),
                                    next = entry.index + 1,
                                ));
                                splits.push((*right, entry.index, entry.term));
                                result
                            }
                            Applied::Frozen(mut result) => {
                                // Only the proposer carries the state on; it alone waits.
                                if group.pending_writes.contains_key(&entry.index) {
                                    result.merge_state = range.snapshot();
                                }
                                tracing::info!(
                                    group = id,
                                    index = entry.index,
                                    "range frozen for a merge"
                                );
                                result
                            }
                            Applied::Merged { result, source } => {
                                tracing::info!(
                                    group = id,
                                    index = entry.index,
                                    source,
                                    span = %range.descriptor().map(|d| d.span.to_string()).unwrap_or_default(),
                                    "range merged"
                                );
                                merged_away.push(source);
                                group.watches.committed(
                                    &std::mem::take(&mut changes),
                                    entry.index,
                                    now_ms,
                                    &mut watch_send(&mut group.watch_senders),
                                );
                                group.cancel_watches(&format!(
                                    "partition {id} took in partition {source} at revision {}: \
                                     its revisions mix two logs from here; watch the merged \
                                     range again from now",
                                    entry.index
                                ));
                                result
                            }
                        }
                    }
                    Machine::Core(core) => match core.apply(&entry.data) {
                        CoreApplied::Taken => {
                            map_changed = true;
                            ApplyResult::default()
                        }
                        CoreApplied::Allocated(partition) => ApplyResult {
                            succeeded: true,
                            revision: partition,
                            ..Default::default()
                        },
                        CoreApplied::Refused(why) => {
                            tracing::debug!(index = entry.index, "core refused: {why}");
                            ApplyResult {
                                refused: why,
                                ..Default::default()
                            }
                        }
                    },
                }
            };
            group.applied_index = entry.index;
            group.remember_digest();
            if let Some((term, reply)) = group.pending_writes.remove(&entry.index) {
                let outcome = if term == entry.term {
                    WriteOutcome::Applied(Box::new(result))
                } else {
                    WriteOutcome::Superseded
                };
                let _ = reply.send(outcome);
            }
        }
        if !changes.is_empty() || !group.watches.is_empty() {
            group.watches.committed(
                &changes,
                group.applied_index,
                now_ms,
                &mut watch_send(&mut group.watch_senders),
            );
        }
        let lease_read_ms = self.options.lease_read_ms;
        for read in &ready.read_states {
            group.confirmed_reads.push((read.index, read.request_id));
            if let Some((term, started)) = group.read_rounds.remove(&read.request_id) {
                group.extend_lease(term, started + lease_read_ms);
            }
        }
        for read_id in &ready.dropped_reads {
            group.read_rounds.remove(read_id);
            if let Some(read) = group.pending_reads.remove(read_id) {
                read.drop_with(None);
            }
        }
        if group.core.role() != Role::Leader && !group.pending_writes.is_empty() {
            // Proposals of a deposed leader may still commit (a new leader can carry
            // them) or be superseded; both resolve when their index applies. Handlers
            // time out meanwhile, with an unknown outcome.
            group
                .pending_writes
                .retain(|_, (_, reply)| !reply.is_closed());
        }
        if map_changed && let Machine::Core(core) = &group.machine {
            self.map.send_replace(Arc::new(core.map().clone()));
        }
        let leads = group.core.role() == Role::Leader;
        let term = group.core.term();
        let reshaped = !splits.is_empty() || !merged_away.is_empty() || members_now.is_some();
        // One added back later in the same batch is a member again: not told.
        if let Some(members) = &members_now {
            dropped.retain(|(node, _)| !members.contains(node));
        }
        if leads && !dropped.is_empty() {
            let removed = dropped.iter().map(|&(node, index)| Message {
                group_id: id,
                from: self.options.node_id,
                to: node,
                term,
                lamport_time: group.core.lamport_time(),
                body: Some(Body::GroupRemoved(GroupRemoved { index })),
            });
            self.transport.send(removed);
        }
        for (right, index, entry_term) in splits {
            self.start_split_group(id, right, index, entry_term, leads)?;
        }
        for source in merged_away {
            self.retire_group(source)?;
        }
        // A replica removed by an entry it applies does not retire here: the entry may be
        // history it is catching up on (it was added again later). The leader tells it
        // (`GroupRemoved`) once the removal has committed, and `removed_at` decides.
        if leads && reshaped {
            // Tell the core at once: until it knows, requests routed by the map reach the
            // old range and are sent on from there. A report lost on the way is sent again
            // by the tick (`map_behind`), not by every later round.
            let load = self.groups[&id].reported_load;
            self.report(id, term, load);
        }
        self.maybe_snapshot(id)
    }

    /// Stops hosting a group whose range a merge took into another: its tombstone is
    /// written first, so that a restart never brings it back. Requests still waiting on it
    /// are dropped (their entries will not apply here any more).
    fn retire_group(&mut self, id: u64) -> anyhow::Result<()> {
        let Some(mut group) = self.groups.remove(&id) else {
            return Ok(());
        };
        group.cancel_watches(&format!(
            "partition {id} was merged into its left neighbour: watch the merged range again"
        ));
        self.durable.tombstone(id)?;
        self.views
            .write()
            .expect("no thread panics holding the views")
            .remove(&id);
        tracing::info!(group = id, "retired");
        Ok(())
    }

    /// Hosts the group a split of `parent` made, at the split entry's index: every replica
    /// of the parent applies the split at the same index and starts the same group, from
    /// the same state (a snapshot at that index), so no data needs to travel. Its log
    /// continues the parent's index, so a moved key's revisions keep growing. On replay
    /// after a restart the group is there already, from its own files.
    fn start_split_group(
        &mut self,
        parent: u64,
        right: DataRange,
        index: u64,
        term: u64,
        parent_leader_here: bool,
    ) -> anyhow::Result<()> {
        let Some(id) = right.descriptor().map(|d| d.id) else {
            return Ok(());
        };
        if self.groups.contains_key(&id) {
            return Ok(());
        }
        // The parent's members as of the split, not as its log stands now: changes after
        // the split are the parent's alone. A replica added to the parent after the split,
        // catching up on the entries before it, applies the split too, but the new range
        // is not one of its replicas.
        let membership = self.groups[&parent].core.membership_at(index).clone();
        if !membership.is_member(self.options.node_id) {
            tracing::debug!(
                group = id,
                parent,
                index,
                "a split from before this replica joined the parent: its range is not hosted here"
            );
            return Ok(());
        }
        let voters: Vec<u64> = membership.voters.iter().copied().collect();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_included_index: index,
                last_included_term: term,
                voters: voters.clone(),
                learners: membership.learners.iter().copied().collect(),
                promoting: membership.promoting.iter().copied().collect(),
            },
            data: right.snapshot(),
        };
        let hard_state = HardState {
            term,
            voted_for: 0,
            commit: index,
        };
        self.durable.write_snapshot(id, &snapshot, hard_state)?;
        let persisted = PersistedState {
            hard_state,
            snapshot: Some(snapshot),
            entries: Vec::new(),
        };
        let mut core = RaftCore::new((self.options.group_config)(id, voters), persisted);
        if parent_leader_here {
            // The parent's leader leads the new range first, as TiKV's split does: the
            // other replicas start from the same log and grant the vote at once.
            core.campaign_now();
        }
        tracing::info!(group = id, parent, index, "hosting the range a split made");
        self.host(GroupStart {
            core,
            machine: Machine::Data(right),
        });
        Ok(())
    }

    fn maybe_snapshot(&mut self, id: u64) -> anyhow::Result<()> {
        let group = self.groups.get_mut(&id).expect("a known group");
        let since = group
            .applied_index
            .saturating_sub(group.core.log().snapshot_index());
        if since < self.options.snapshot_interval_entries {
            return Ok(());
        }
        self.snapshot_now(id)?;
        if self.durable.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Takes a snapshot of `id` now and compacts its log.
    fn snapshot_now(&mut self, id: u64) -> anyhow::Result<()> {
        let group = self.groups.get_mut(&id).expect("a known group");
        let data = group.machine.snapshot();
        group.core.compact(group.applied_index, data);
        let snapshot = group.core.snapshot().expect("just compacted").clone();
        self.durable
            .write_snapshot(id, &snapshot, group.core.hard_state())?;
        tracing::info!(
            group = id,
            index = group.applied_index,
            "snapshot written, log compacted"
        );
        Ok(())
    }

    /// Rewrites the WAL with only what the hosted groups still need.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        let groups = self.groups.iter().map(|(&id, g)| {
            let log = g.core.log();
            (
                id,
                g.core.hard_state(),
                g.core.snapshot().map(|s| &s.meta),
                log.slice(log.first_index(), log.last_index(), usize::MAX),
            )
        });
        self.durable.checkpoint(groups)?;
        tracing::info!("WAL rewritten with what every group still needs");
        Ok(())
    }

    fn status(
        &self,
        group: Option<u64>,
        all_groups: bool,
        digest_index: Option<u64>,
    ) -> StatusResponse {
        let wanted = group.or_else(|| {
            self.groups
                .keys()
                .copied()
                .find(|&id| id != CORE_GROUP)
                .or_else(|| self.groups.keys().next().copied())
        });
        let mut status = StatusResponse {
            id: self.options.node_id,
            seeded_bugs: self.options.seeded_bugs.clone(),
            ..Default::default()
        };
        if let Some(g) = wanted.and_then(|id| self.groups.get(&id)) {
            let s = g.status();
            status.role = s.role;
            status.term = s.term;
            status.leader_id = s.leader_id;
            status.commit_index = s.commit_index;
            status.applied_index = s.applied_index;
            status.last_index = s.last_index;
            status.lamport_time = g.core.lamport_time();
            status.snapshot_index = s.snapshot_index;
            status.group_id = s.group_id;
            status.voters = s.voters;
            if let Some(index) = digest_index {
                let index = if index == 0 { g.applied_index } else { index };
                status.state_digest = g.digest_at(index);
                status.digest_index = index;
            }
        } else {
            status.role = "none".into();
            status.group_id = group.unwrap_or(0);
        }
        if all_groups {
            status.groups = self.groups.values().map(Group::status).collect();
        }
        status
    }

    fn publish_views(&self) {
        for group in self.groups.values() {
            let view = View {
                leader_id: group.core.leader_id(),
                term: group.core.term(),
                lamport_time: group.core.lamport_time(),
                role: group.core.role().as_str(),
                descriptor: group.descriptor().cloned(),
            };
            group.view.send_if_modified(|current| {
                // The Lamport time moves with every message; publish it only with another
                // change so that waiters are not woken for nothing.
                let changed = current.leader_id != view.leader_id
                    || current.term != view.term
                    || current.role != view.role
                    || current.descriptor != view.descriptor;
                if changed {
                    *current = view;
                } else {
                    current.lamport_time = view.lamport_time;
                }
                changed
            });
        }
    }
}

/// The key a write is for, for the hot-spot detector.
/// Revisions of history a range keeps for reads at a timestamp: auto-compaction drops
/// what is older, once twice this many have gone by since the last compaction.
pub const COMPACTION_RETAIN_REVISIONS: u64 = 10_000;

/// The seeded bug `watch-uncommitted` sends the changes of these commands when their entry
/// is appended.
fn sent_on_append(command: &Command) -> bool {
    use crate::proto::raft::command::Op;
    matches!(command.op, Some(Op::Put(_)) | Some(Op::Delete(_)))
}

/// `watch-uncommitted`: the changes a put or delete entry will make, sent to the range's
/// watches as it is appended, before anyone knows it will commit.
fn send_uncommitted(group: &mut Group, entries: &[crate::proto::raft::Entry], now_ms: u64) {
    use crate::proto::raft::command::Op;
    if group.watches.is_empty() {
        return;
    }
    let Machine::Data(range) = &group.machine else {
        return;
    };
    for entry in entries {
        if entry.kind == EntryKind::Config as i32 || entry.data.is_empty() {
            continue;
        }
        let Ok(command) = Command::decode(entry.data.as_slice()) else {
            continue;
        };
        let (key, value) = match &command.op {
            Some(Op::Put(put)) => (put.key.clone(), Some(put.value.clone())),
            Some(Op::Delete(delete)) => (delete.key.clone(), None),
            _ => continue,
        };
        let prev = range.store().get(&key).map(|(v, _)| v.to_vec());
        let change = crate::store::Change {
            revision: entry.index,
            key,
            value,
            prev,
        };
        group.watches.committed(
            &[change],
            entry.index,
            now_ms,
            &mut watch_send(&mut group.watch_senders),
        );
    }
}

fn command_key(command: &Command) -> Option<&[u8]> {
    use crate::proto::raft::command::Op;
    match &command.op {
        Some(Op::Put(put)) => Some(&put.key),
        Some(Op::Lock(lock)) => Some(&lock.key),
        Some(Op::Unlock(unlock)) => Some(&unlock.key),
        Some(Op::Delete(delete)) => Some(&delete.key),
        Some(Op::CompareAndSwap(cas)) => Some(&cas.key),
        // Load is counted at the key it is routed by.
        Some(Op::Txn(txn)) => txn
            .ops
            .iter()
            .find_map(crate::partitioning::range::micro_op_key),
        _ => None,
    }
}

/// Keeps the lease clocks in step with the entry just applied: a grant starts one, an
/// expiry or revoke ends it.
fn note_lease_entry(
    timers: &mut LeaseTimers,
    group: u64,
    command: &Command,
    result: &ApplyResult,
    now: u64,
) {
    use crate::proto::raft::command::Op;
    match &command.op {
        Some(Op::LeaseGrant(grant)) if result.succeeded => {
            timers.granted(result.lease, grant.ttl_ms, now);
        }
        Some(Op::LeaseRevoke(revoke)) => {
            if result.succeeded {
                tracing::info!(
                    group,
                    lease = revoke.id,
                    expired = revoke.expired,
                    deleted_keys = result.deleted_keys,
                    "lease {}",
                    if revoke.expired { "expired" } else { "revoked" }
                );
            }
            timers.forget(revoke.id);
        }
        _ => {}
    }
}

/// Starts a new leader's lease clocks (every lease gets its TTL plus an election timeout)
/// or stops a deposed one's. Called before the timers are read, so that a keep-alive
/// reaching a leader before its next tick is not refused.
fn sync_lease_timers(group: &mut Group, now: u64, extension_ms: u64) {
    let leads = group.core.role() == Role::Leader;
    match (&group.machine, leads, group.lease_timers.leading()) {
        (Machine::Data(range), true, false) => {
            group
                .lease_timers
                .promote(range.leases(), now, extension_ms);
        }
        (_, false, true) => group.lease_timers.demote(),
        _ => {}
    }
}

/// At the end of a leader's load window: whether its range is hot, and what to do about it.
/// Every decision is logged with the numbers that made it.
fn hot_spot(id: u64, group: &Group, seconds: f64, threshold: f64) -> Option<HotAction> {
    let ops = group.hot_window.ops_per_sec(seconds);
    if threshold <= 0.0 || ops < threshold {
        return None;
    }
    let Machine::Data(range) = &group.machine else {
        return None;
    };
    let descriptor = range.descriptor()?;
    if range.merging().is_some() {
        return None;
    }
    let observed = group.hot_finder.seen();
    let splittable = matches!(descriptor.span, crate::partitioning::KeySpan::Range { .. });
    let advice = splittable
        .then(|| group.hot_finder.advice(HOT_SPLIT_BALANCE_MAX))
        .flatten()
        .filter(|a| descriptor.contains(&a.key) && !descriptor_starts_at(descriptor, &a.key));
    let action = match advice {
        Some(advice) => {
            let why = format!(
                "{ops:.0} ops/s over {seconds:.0} s (threshold {threshold:.0}); {} of {observed} \
                 sampled requests fall {} before and {} after {} (balance {:.2})",
                advice.left + advice.right,
                advice.left,
                advice.right,
                crate::partitioning::descriptor::printable(&advice.key),
                advice.balance
            );
            HotAction::Split {
                group: id,
                key: advice.key,
                why,
            }
        }
        None => HotAction::MoveLeader {
            group: id,
            why: format!(
                "{ops:.0} ops/s over {seconds:.0} s (threshold {threshold:.0}); no key divides \
                 the {observed} sampled requests within balance {HOT_SPLIT_BALANCE_MAX}{}",
                if splittable {
                    " (one hot key)"
                } else {
                    " (a hash bucket cannot split)"
                }
            ),
        },
    };
    tracing::info!(group = id, ?action, "hot range");
    Some(action)
}

fn descriptor_starts_at(descriptor: &RangeDescriptor, key: &[u8]) -> bool {
    matches!(&descriptor.span, crate::partitioning::KeySpan::Range { start, .. } if start.as_slice() == key)
}

/// Whether a quiesced group may stay quiet: its leader's node is alive (a follower), or a
/// quorum of its voters is (a leader).
fn keeps_quiet(
    group: &Group,
    node_id: u64,
    now: u64,
    last_heard: &HashMap<u64, u64>,
    liveness_ticks: u64,
) -> bool {
    let alive = |node: u64| {
        last_heard
            .get(&node)
            .is_some_and(|&at| now.saturating_sub(at) <= liveness_ticks)
    };
    match group.core.role() {
        Role::Leader => {
            let voters = &group.core.membership().voters;
            let heard = voters.iter().filter(|&&v| v == node_id || alive(v)).count();
            heard > voters.len() / 2
        }
        _ => group.core.leader_id().is_some_and(alive),
    }
}

fn serve_confirmed_reads(group: &mut Group, bugs: RangeBugs) {
    let applied = group.applied_index;
    let confirmed = std::mem::take(&mut group.confirmed_reads);
    let mut waiting = Vec::new();
    for (index, id) in confirmed {
        if index > applied {
            waiting.push((index, id));
            continue;
        }
        if let Some(read) = group.pending_reads.remove(&id) {
            group.serve(read, bugs);
        }
    }
    group.confirmed_reads = waiting;
}

/// For a clock step of `delta_ms` at `now`: how many ticks the step skipped (bounded) and
/// when the next tick is due, in real time.
fn clock_step(next_tick: Instant, delta_ms: i64, now: Instant, tick: Duration) -> (i64, Instant) {
    let step = Duration::from_millis(delta_ms.unsigned_abs());
    if delta_ms < 0 {
        return (0, next_tick + step);
    }
    let mut due = next_tick.checked_sub(step).unwrap_or(now);
    let mut skipped = 0;
    while due <= now && skipped < CLOCK_STEP_TICKS_MAX {
        due += tick;
        skipped += 1;
    }
    (skipped, due.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_forward_step_fires_the_ticks_it_skips() {
        let now = Instant::now();
        let (ticks, next) = clock_step(now + TICK, 300, now, TICK);
        assert_eq!(ticks, 30);
        assert_eq!(next, now + TICK);
    }

    #[test]
    fn a_forward_step_that_undoes_a_backward_one_fires_nothing() {
        let now = Instant::now();
        let (ticks, held) = clock_step(now + TICK, -5_000, now, TICK);
        assert_eq!((ticks, held), (0, now + TICK + Duration::from_secs(5)));
        let (ticks, next) = clock_step(held, 5_000, now, TICK);
        assert_eq!((ticks, next), (0, now + TICK));
        // Going past where the clock stood fires what the excess skipped.
        let (ticks, _) = clock_step(held, 5_300, now, TICK);
        assert_eq!(ticks, 30);
    }

    #[test]
    fn a_huge_forward_step_fires_a_bounded_number_of_ticks() {
        let now = Instant::now();
        let (ticks, next) = clock_step(now + TICK, 3_600_000, now, TICK);
        assert_eq!(ticks, CLOCK_STEP_TICKS_MAX);
        assert_eq!(next, now);
    }
}
