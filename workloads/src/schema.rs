//! The workload file: what to run, against which model to check it, under which faults.
//!
//! A workload is a YAML mapping. Every struct denies unknown fields, so a typo (`mixx:`) is an
//! error with its line and column rather than a silently ignored setting. Loading happens in two
//! steps: serde_yaml checks the shape and types (its errors carry positions), then
//! [`Workload::validate`] checks ranges and the rules between fields, locating the offending field
//! in the text again (see `locate`).
//!
//! ```yaml
//! name: register
//! checker: linearizability
//! model: cas-register
//! keys: { count: 5, distribution: uniform }
//! mix: { read: 2, write: 1, cas: 1 }
//! concurrency: 10
//! time_limit_secs: 30
//! nemesis: { faults: [partition, kill, pause], interval_secs: 5 }
//! ```

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::WorkloadError;
use crate::locate::locate;

/// Largest keyspace: the zipf sampler keeps one `f64` per key, so this bounds its memory (8 MB).
pub const MAX_KEY_COUNT: u32 = 1_000_000;
/// Most logical client processes a workload may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Longest run: one day.
pub const MAX_TIME_LIMIT_SECS: u64 = 86_400;
/// Highest open-loop rate, in operations per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Shortest nemesis interval: faults closer than this would not let anything happen between them,
/// and it bounds the schedule to a million faults per day.
pub const MIN_INTERVAL_SECS: f64 = 0.1;
/// Longest request timeout: ten minutes.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 600_000;
/// Largest zipf exponent; beyond it nearly every operation hits `k0` anyway.
pub const MAX_ZIPF_EXPONENT: f64 = 10.0;
/// More resends than this only lengthen a run stuck behind a fault.
pub const MAX_WRITE_RETRIES: u32 = 10;

/// A workload, as read from YAML and validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Names the workload in reports and in the results directory (`store/<name>/...`), so it is
    /// limited to letters, digits, `-`, `_` and `.` (not leading). Required.
    pub name: String,
    /// Free text for people. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which consistency property the history is checked for. Required.
    pub checker: Checker,
    /// For `checker: linearizability`, the sequential object each key (or the whole map, for `kv`)
    /// is checked against. Defaults to `cas-register`, which also accepts histories without `cas`.
    /// Must be absent for `checker: causal`. Use [`Workload::model`] for the effective value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    /// The keyspace. Defaults to 5 keys, uniform.
    #[serde(default)]
    pub keys: Keys,
    /// Relative weights of the operations. Required.
    pub mix: Mix,
    /// Number of logical client processes, 1..=1024. Defaults to 10.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Open-loop arrival rate in operations per second, over all processes: operations are issued
    /// at exponentially distributed intervals whether or not earlier ones completed. Absent means
    /// closed loop: each process issues its next operation when the previous one completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How long clients issue operations, in seconds, 1..=86400. Required.
    pub time_limit_secs: u64,
    /// Consecutive phases from the start of the run, each able to change the mix and the rate.
    /// Their durations may sum to less than the time limit; the top-level `mix` and `rate` apply
    /// after the last phase. Optional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Faults to inject while the clients run. Absent means no faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nemesis: Option<Nemesis>,
    /// After the time limit and healing every fault, read every key once, so that lost writes show
    /// up even if no later read happened to look. Defaults to true.
    #[serde(default = "default_true")]
    pub final_reads: bool,
    /// Client request timeout in milliseconds, 1..=600000; a request that times out is recorded as
    /// `info` (outcome unknown). Defaults to 1000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How reads are made linearizable: `read-index` (the default: a round to a quorum per
    /// read) or `lease` (served from the leader's lease while it holds one; safe only while
    /// clocks drift apart by less than the node's `--lease-read-drift`).
    #[serde(default)]
    pub read_mode: ReadMode,
    /// How many times a client resends a write or cas whose outcome is unknown, with the same
    /// write id and to the next node, as etcd's and most production clients do, 0..=10. The node
    /// must apply it at most once; the history records one operation from the first send to the
    /// last answer. Defaults to 0: an unknown outcome is recorded as `info`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub write_retries: u32,
    /// Load-based splitting on the nodes for this workload's runs: a range served at this
    /// many operations per second or more over `hot_window_secs` splits at a key that
    /// divides its load (or, one hot key, its leadership moves). Absent: off, as for every
    /// run that does not ask (the node's own default is 500 over 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_ops_per_sec: Option<f64>,
    /// The window `hot_ops_per_sec` is measured over, in seconds. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_window_secs: Option<u64>,
    /// Which keyspace the clients use: `linearizable` (the Raft-replicated `Kv` API, the
    /// default) or `causal` (the leaderless causal keyspace, `faultline.causal.v1`: every
    /// node answers from its own replica, and sessions carry causal-context tokens).
    /// `causal` needs `checker: causal`; its runs also check that the replicas converge
    /// after healing and show the history's linearizability verdict for contrast.
    #[serde(default, skip_serializing_if = "Keyspace::is_linearizable")]
    pub keyspace: Keyspace,
    /// For `keyspace: causal`: how concurrent writes resolve, `siblings` (every one kept;
    /// a read returns them all, recorded as a list) or `lww` (the greatest HLC stamp
    /// wins). Defaults to `siblings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal_resolve: Option<CausalResolve>,
    /// For `keyspace: causal`: the chance, 0..=1, that a session sends an operation to a
    /// node other than its own, chosen at random. Sessions that move between replicas
    /// are what the causal-context tokens protect. Defaults to 0.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_hop: Option<f64>,
    /// For `checker: list-append` or `rw-register`: the shape of each transaction. `mix`
    /// then weighs its micro-ops: `read` reads a key, `write` appends to a list
    /// (list-append) or writes a register (rw-register). Defaults: 1 to 4 micro-ops, 32
    /// writes per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnShape>,
    /// For transactional checkers: the isolation level transactions ask for, and so the
    /// consistency model the history is checked against: `serializable`
    /// (strict-serializable), `snapshot` (snapshot-isolation) or `read-committed`.
    /// Defaults to `serializable`; `faultline run --isolation` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// For `checker: bank`: the money. `keys.count` is the number of accounts; `mix.read`
    /// weighs reads of every balance, `mix.write` transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<Bank>,
    /// For `checker: lock`: the leases and the holder's stalls. `keys.count` is the
    /// number of locks; `mix` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockSpec>,
    /// For `checker: watch`: the watchers. `keys.count` keys are written; `mix` is not
    /// used (every other client writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchWorkload>,
    /// For `checker: membership`: how the observers poll and how fast the nodes gossip.
    /// Every client observes (one per node in turn); `keys` and `mix` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipWorkload>,
}

/// The membership workload: every client polls its node's gossip view (`Members`) every
/// `poll_ms`, while the nemesis kills, pauses, cuts off and drops. The nodes gossip with
/// `--gossip-probe-interval-ms probe_interval_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipWorkload {
    /// 10..=10000 ms. Defaults to 100.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The nodes' probe interval, 10..=60000 ms. Defaults to 200 (memberlist's 1000 would
    /// need faults of tens of seconds to see a death).
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// A node killed for longer than this must be seen suspect or dead by every observer
    /// that answers by then. Defaults to (2 × nodes + 1) probe intervals: each member
    /// probes every other at least once in two rounds of its shuffled list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_within_ms: Option<u64>,
}

impl Default for MembershipWorkload {
    fn default() -> Self {
        MembershipWorkload {
            poll_ms: default_poll_ms(),
            probe_interval_ms: default_probe_interval_ms(),
            detect_within_ms: None,
        }
    }
}

fn default_poll_ms() -> u64 {
    100
}

fn default_probe_interval_ms() -> u64 {
    200
}

/// The watch workload: `watchers` clients (the first ones, one per node in turn) watch
/// every key in segments: each waits `gap_ms` disconnected, then resumes its watch from
/// the last revision it saw in each partition for `segment_ms`, so every segment after
/// the first is a resume with changes to catch up on. The other clients write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchWorkload {
    /// Watching clients, 1..concurrency. Defaults to 3.
    #[serde(default = "default_watchers")]
    pub watchers: u32,
    /// How long a segment watches, 100..=60000 ms. Defaults to 1000.
    #[serde(default = "default_segment_ms")]
    pub segment_ms: u64,
    /// How long a watcher stays away between segments, 0..=10000 ms. Defaults to 200.
    #[serde(default = "default_gap_ms")]
    pub gap_ms: u64,
}

impl Default for WatchWorkload {
    fn default() -> Self {
        WatchWorkload {
            watchers: default_watchers(),
            segment_ms: default_segment_ms(),
            gap_ms: default_gap_ms(),
        }
    }
}

fn default_watchers() -> u32 {
    3
}

fn default_segment_ms() -> u64 {
    1_000
}

fn default_gap_ms() -> u64 {
    200
}

/// The lock workload: clients take a lock with a lease, write a register the lock
/// protects with its fencing token (`writes` times), and release it. Every `stall_every`th
/// critical section of a client stalls between its writes, keep-alives stopped, for the
/// lease's TTL plus `stall_extra_ms`, as a holder paused by a GC or a VM would: another
/// client takes the lock meanwhile, and the stalled holder's late write must be refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// The lease's TTL, 1000..=60000 ms (the node raises a shorter one to its minimum).
    /// Defaults to 1000.
    #[serde(default = "default_lock_ttl_ms")]
    pub ttl_ms: u64,
    /// Writes per critical section, 1..=100. Defaults to 2.
    #[serde(default = "default_lock_writes")]
    pub writes: u32,
    /// Every how many critical sections a client stalls (0: never). Defaults to 3.
    #[serde(default = "default_stall_every")]
    pub stall_every: u32,
    /// How long past the TTL a stall lasts, 0..=60000 ms. Defaults to 2000.
    #[serde(default = "default_stall_extra_ms")]
    pub stall_extra_ms: u64,
    /// How long a section that does not stall holds the lock between its first write and
    /// the rest, keep-alives running, 0..=60000 ms. Defaults to 0. A hold longer than the
    /// TTL is what a lease needs to outlive its grant's count: the condition under which a
    /// new leader that forgets the renewals (`lease-no-extension-on-election`) expires it
    /// early, which the checker sees as a renewal answered NOT_FOUND within the TTL of an
    /// acknowledged one.
    #[serde(default)]
    pub hold_ms: u64,
}

impl Default for LockSpec {
    fn default() -> Self {
        LockSpec {
            ttl_ms: default_lock_ttl_ms(),
            writes: default_lock_writes(),
            stall_every: default_stall_every(),
            stall_extra_ms: default_stall_extra_ms(),
            hold_ms: 0,
        }
    }
}

fn default_lock_ttl_ms() -> u64 {
    1_000
}

fn default_lock_writes() -> u32 {
    2
}

fn default_stall_every() -> u32 {
    3
}

fn default_stall_extra_ms() -> u64 {
    2_000
}

/// Jepsen's bank: accounts, the total they hold, and what a transfer may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bank {
    /// The total over all accounts, set up evenly before the run, 1..=10^12. Defaults
    /// to 100.
    #[serde(default = "default_bank_total")]
    pub total: i64,
    /// The largest amount one transfer moves, 1..=total. Defaults to 5.
    #[serde(default = "default_max_transfer")]
    pub max_transfer: i64,
    /// Whether a balance may go below zero (a transfer that would overdraw is refused by
    /// the client otherwise, and a negative balance read is an anomaly). Defaults to false.
    #[serde(default)]
    pub negative_balances: bool,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            total: default_bank_total(),
            max_transfer: default_max_transfer(),
            negative_balances: false,
        }
    }
}

fn default_bank_total() -> i64 {
    100
}

fn default_max_transfer() -> i64 {
    5
}

/// The shape of a transactional workload's transactions (Elle's generator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnShape {
    /// Fewest micro-ops in a transaction, at least 1. Defaults to 1.
    #[serde(default = "default_min_ops")]
    pub min_ops: u32,
    /// Most micro-ops in a transaction, at most 64. Defaults to 4.
    #[serde(default = "default_max_ops")]
    pub max_ops: u32,
    /// Writes a key takes before a fresh key replaces it in the active set (`keys.count`
    /// keys are active at a time), 1..=100000. Short lists keep reads small and
    /// inference sharp. Defaults to 32.
    #[serde(default = "default_max_writes_per_key")]
    pub max_writes_per_key: u32,
}

impl Default for TxnShape {
    fn default() -> Self {
        TxnShape {
            min_ops: default_min_ops(),
            max_ops: default_max_ops(),
            max_writes_per_key: default_max_writes_per_key(),
        }
    }
}

fn default_min_ops() -> u32 {
    1
}

fn default_max_ops() -> u32 {
    4
}

fn default_max_writes_per_key() -> u32 {
    32
}

/// Most micro-ops a generated transaction may have.
pub const MAX_TXN_OPS: u32 = 64;

/// The isolation level a transactional workload asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    #[default]
    Serializable,
    Snapshot,
    ReadCommitted,
}

impl Isolation {
    /// The name on command lines and in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Serializable => "serializable",
            Isolation::Snapshot => "snapshot",
            Isolation::ReadCommitted => "read-committed",
        }
    }

    /// The consistency model (Elle's name) a history at this level must satisfy.
    pub fn consistency_model(self) -> &'static str {
        match self {
            Isolation::Serializable => "strict-serializable",
            Isolation::Snapshot => "snapshot-isolation",
            Isolation::ReadCommitted => "read-committed",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Isolation> {
        [
            Isolation::Serializable,
            Isolation::Snapshot,
            Isolation::ReadCommitted,
        ]
        .into_iter()
        .find(|i| i.as_str() == name)
    }
}

/// How a linearizable read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    #[default]
    ReadIndex,
    Lease,
}

/// Which of the node's keyspaces a workload's clients use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keyspace {
    #[default]
    Linearizable,
    Causal,
}

impl Keyspace {
    fn is_linearizable(&self) -> bool {
        *self == Keyspace::Linearizable
    }
}

/// How the causal keyspace resolves concurrent writes (the nodes' `--causal-resolve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CausalResolve {
    #[default]
    Siblings,
    Lww,
}

impl CausalResolve {
    pub fn as_str(self) -> &'static str {
        match self {
            CausalResolve::Siblings => "siblings",
            CausalResolve::Lww => "lww",
        }
    }
}

/// The default `session_hop`.
pub const DEFAULT_SESSION_HOP: f64 = 0.3;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_concurrency() -> u32 {
    10
}

fn default_true() -> bool {
    true
}

fn default_request_timeout_ms() -> u64 {
    1000
}

/// The property a history is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checker {
    /// Every operation appears to take effect at one instant between its invocation and completion.
    Linearizability,
    /// Every process observes writes in an order that respects causality (sessions: read your
    /// writes, monotonic reads, writes follow reads). Reads and writes only.
    Causal,
    /// Jepsen's set: clients add unique elements, and a read after healing must return every
    /// acknowledged one and nothing never added. Adds only (`mix: {add: 1}`).
    Set,
    /// Elle's list-append: transactions of reads and appends to lists, checked for the
    /// isolation level asked for (cycles in the dependency graph).
    ListAppend,
    /// Elle's rw-register: transactions of reads and writes of registers.
    RwRegister,
    /// Jepsen's bank: transfers between accounts (each a transaction guarded by the
    /// balances it read) and reads of every balance; totals are conserved.
    Bank,
    /// Locks held by leases, protecting a register through fencing tokens: no write with
    /// a lower token is accepted after one with a higher token, and tokens grow with
    /// every holder.
    Lock,
    /// Writers and watchers: every watcher's events, resumed streams included, against the
    /// committed history (no missed, duplicated, reordered or phantom events).
    Watch,
    /// Observers of the gossip view against the nemesis's faults: every killed node is
    /// detected within a bound, no live node is declared dead without a fault that
    /// excuses it; false suspicions are counted.
    Membership,
}

impl Checker {
    /// Whether the workload's operations are transactions.
    pub fn is_transactional(self) -> bool {
        matches!(self, Checker::ListAppend | Checker::RwRegister)
    }
}

/// The sequential model a linearizability checker replays operations against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// A read/write register per key; `cas` is not allowed in the mix.
    Register,
    /// A register per key with compare-and-set.
    CasRegister,
    /// One map over all keys, checked as a whole (slower: no per-key decomposition).
    Kv,
}

/// The keyspace: keys are named `k0` .. `k{count-1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Number of keys, 1..=1000000. Few keys mean more contention, which is what finds bugs.
    /// Defaults to 5.
    #[serde(default = "default_key_count")]
    pub count: u32,
    /// How operations pick keys. Defaults to `uniform`.
    #[serde(default)]
    pub distribution: Distribution,
    /// For `distribution: zipf`, the exponent s: key `k{i}` is picked with weight 1/(i+1)^s.
    /// In (0, 10]; defaults to 1.0. Not allowed with `uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipf_exponent: Option<f64>,
}

fn default_key_count() -> u32 {
    5
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            count: default_key_count(),
            distribution: Distribution::Uniform,
            zipf_exponent: None,
        }
    }
}

impl Keys {
    /// The zipf exponent in force (1.0 unless given).
    pub fn zipf_exponent(&self) -> f64 {
        self.zipf_exponent.unwrap_or(1.0)
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every key equally likely.
    #[default]
    Uniform,
    /// Low keys much more likely than high ones (hot keys).
    Zipf,
}

/// Relative weights of the operations; each defaults to 0 and at least one must be nonzero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Weight of reads.
    #[serde(default)]
    pub read: u32,
    /// Weight of writes (each writes a value unique in the run).
    #[serde(default)]
    pub write: u32,
    /// Weight of compare-and-set (linearizability with `cas-register` or `kv` only).
    #[serde(default)]
    pub cas: u32,
    /// Weight of adding an element to the set (`checker: set` only; each element unique in
    /// the run).
    #[serde(default)]
    pub add: u32,
}

impl Mix {
    /// Sum of the weights, in u64 so that four `u32::MAX` weights do not overflow.
    pub fn total(&self) -> u64 {
        u64::from(self.read) + u64::from(self.write) + u64::from(self.cas) + u64::from(self.add)
    }
}

/// A stretch of the run with its own mix and rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Names the phase in reports. Required, unique within the workload.
    pub name: String,
    /// Length of the phase in seconds, at least 1. Required.
    pub duration_secs: u64,
    /// Replaces the top-level mix during this phase. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    /// Replaces the top-level rate (ops/s) during this phase. Only for open-loop workloads (those
    /// with a top-level `rate`), so that a run is either open or closed loop throughout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// The faults to inject: one every `interval_secs`, starting one interval into the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nemesis {
    /// Faults to pick from, uniformly per slot; a fault listed twice is picked twice as often.
    /// At least one.
    pub faults: Vec<FaultName>,
    /// Seconds between the starts of consecutive faults, at least 0.1. Each fault lasts a seeded
    /// fraction of it, so the cluster is healthy for a while between faults. Two intervals must fit
    /// in the time limit. Defaults to 5.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: f64,
    /// Partition shapes to pick from. Only with the `partition` fault; defaults to all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_shapes: Option<Vec<ShapeName>>,
    /// Which node `kill` hits. Only with the `kill` fault; defaults to `random`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_target: Option<KillTarget>,
    /// How far the `clock` fault steps a clock, in milliseconds (negative: back). Only
    /// with the `clock` fault; defaults to a seeded size, 10 ms to 60 s either way, as
    /// often small as large. Fix it to test one side of the clock fence: below 80 % of
    /// the nodes' maximum offset (400 of 500 ms) a node keeps serving, above it fences
    /// itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
}

fn default_interval_secs() -> f64 {
    5.0
}

/// A kind of fault, as named in YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultName {
    /// SIGKILL a node, restart it when the fault ends.
    Kill,
    /// Kill the node coordinating a cross-partition transaction between its prepares and
    /// its commit (a failpoint in the node), restart it when the fault ends.
    KillCoordinator,
    /// Kill the node coordinating a cross-partition transaction once it has committed at
    /// its primary and before it has told the other participants; restart it when the
    /// fault ends. Readers must resolve the intents it leaves.
    KillCoordinatorAfterCommit,
    /// SIGSTOP a node, SIGCONT it when the fault ends.
    Pause,
    /// Cut network links (see [`ShapeName`]).
    Partition,
    /// Drop a fraction of packets.
    Loss,
    /// Step a node's clock.
    Clock,
    /// Run a node's clock fast or slow.
    ClockRate,
    /// Jump a node's clock back and forth.
    ClockStrobe,
    /// Slow the leader's clock to a quarter of true time and cut it off from every other
    /// node, together: the condition under which a leader-lease read without a drift
    /// margin is stale (its lease outlasts the election of its successor).
    LeaseSkew,
    /// Damage a stopped node's write-ahead log, then restart it.
    CorruptWal,
    /// Restart a node right after it voted, and have a second candidate ask it for a vote
    /// in the same term (three nodes).
    RestartVoter,
    /// Cut the leader off until it holds entries nobody else has and a new leader has
    /// committed different entries at the same indices, then heal.
    DivergeLeader,
    /// Split a range at a key of the workload's inside it (range partitioning). The new
    /// range stays: there is nothing to heal.
    Split,
    /// Merge a range with the one after it (range partitioning). Nothing to heal either.
    Merge,
    /// Move a partition's replica to a node that holds none (a learner caught up by
    /// snapshot, promoted, then the old replica removed). Needs more nodes than replicas.
    Move,
    /// Hand a partition's leadership to another of its voters.
    ShuffleLeader,
    /// Add a node (it joins the running cluster), then drain and remove it when the fault
    /// ends.
    Membership,
    /// Add a learner to a partition, then cut it and one voter off from the rest (four
    /// nodes or more).
    LearnerPartition,
    /// Two leaders of one partition each change its membership from the same
    /// configuration (four replicas; four nodes or more).
    ConfigRace,
}

/// A partition shape, as named in YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeName {
    /// One node cut off from all others.
    IsolateOne,
    /// Whichever node leads when the fault starts, cut off from all others.
    IsolateLeader,
    /// A minority and a majority that cannot talk to each other.
    Halves,
    /// Every node sees a majority, but no two nodes see the same one.
    MajorityRing,
    /// Two halves that only one bridge node connects.
    Bridge,
    /// Traffic from (or to) one node is dropped, the other direction flows.
    OneWay,
}

/// Which node `kill` hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillTarget {
    /// A node chosen by the seed.
    #[default]
    Random,
    /// The leader when the fault starts.
    Leader,
    /// Every node at once, as a power failure would: what was not fsynced is lost.
    All,
    /// One node chosen by the seed, every time: the others never restart, so a recovery
    /// bug on it is always compared against replicas that never went through recovery.
    Same,
}

/// Every shape, in the order a default `partition_shapes` lists them.
pub const ALL_SHAPES: [ShapeName; 6] = [
    ShapeName::IsolateOne,
    ShapeName::IsolateLeader,
    ShapeName::Halves,
    ShapeName::MajorityRing,
    ShapeName::Bridge,
    ShapeName::OneWay,
];

impl Workload {
    /// Parses and validates a workload. `file` only names the text in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Workload, WorkloadError> {
        let workload: Workload =
            serde_yaml::from_str(text).map_err(|e| WorkloadError::from_yaml(file, &e))?;
        workload.validate(text, file)?;
        Ok(workload)
    }

    /// Reads, parses and validates a workload file.
    pub fn from_path(path: &Path) -> Result<Workload, WorkloadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            path: file.clone(),
            source,
        })?;
        Workload::from_yaml(&text, &file)
    }

    /// The model a linearizability checker uses (`None` for the causal checker).
    pub fn model(&self) -> Option<Model> {
        match self.checker {
            Checker::Linearizability => Some(self.model.unwrap_or(Model::CasRegister)),
            Checker::Causal
            | Checker::Set
            | Checker::ListAppend
            | Checker::RwRegister
            | Checker::Bank
            | Checker::Lock
            | Checker::Watch
            | Checker::Membership => None,
        }
    }

    /// Checks ranges and the rules between fields. `text` and `file` are the source the workload
    /// was parsed from, used to point at the offending field.
    pub fn validate(&self, text: &str, file: &str) -> Result<(), WorkloadError> {
        self.check()
            .map_err(|(field, message)| WorkloadError::Invalid {
                file: file.to_owned(),
                at: locate(text, &field),
                field,
                message,
            })
    }

    /// The first broken rule, as (field path, message), in the order fields are usually written.
    fn check(&self) -> Result<(), (String, String)> {
        check_name("name", &self.name)?;
        if self.checker != Checker::Linearizability && self.model.is_some() {
            return Err(fail(
                "model",
                "only applies to `checker: linearizability`; remove it for `checker: causal` or `set`",
            ));
        }
        self.check_keys()?;
        self.check_mix("mix", &self.mix)?;
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(fail(
                "concurrency",
                format!("must be 1..={MAX_CONCURRENCY}, got {}", self.concurrency),
            ));
        }
        if let Some(rate) = self.rate {
            check_rate("rate", rate)?;
        }
        if !(1..=MAX_TIME_LIMIT_SECS).contains(&self.time_limit_secs) {
            return Err(fail(
                "time_limit_secs",
                format!(
                    "must be 1..={MAX_TIME_LIMIT_SECS}, got {}",
                    self.time_limit_secs
                ),
            ));
        }
        self.check_phases()?;
        if let Some(nemesis) = &self.nemesis {
            self.check_nemesis(nemesis)?;
        }
        self.check_keyspace()?;
        self.check_txn()?;
        if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&self.request_timeout_ms) {
            return Err(fail(
                "request_timeout_ms",
                format!(
                    "must be 1..={MAX_REQUEST_TIMEOUT_MS}, got {}",
                    self.request_timeout_ms
                ),
            ));
        }
        if self.write_retries > MAX_WRITE_RETRIES {
            return Err(fail(
                "write_retries",
                format!(
                    "must be 0..={MAX_WRITE_RETRIES}, got {}",
                    self.write_retries
                ),
            ));
        }
        Ok(())
    }

    fn check_bank(&self) -> Result<(), (String, String)> {
        if self.checker != Checker::Bank {
            if self.bank.is_some() {
                return Err(fail("bank", "only applies to `checker: bank`; remove it"));
            }
            return Ok(());
        }
        if self.keys.count < 2 {
            return Err(fail(
                "keys.count",
                format!(
                    "the bank needs at least 2 accounts, got {}",
                    self.keys.count
                ),
            ));
        }
        if self.keys.count > 64 {
            return Err(fail(
                "keys.count",
                format!(
                    "a read of every balance is one transaction of at most 64 keys; got {} accounts",
                    self.keys.count
                ),
            ));
        }
        let bank = self.bank.clone().unwrap_or_default();
        if !(1..=1_000_000_000_000).contains(&bank.total) {
            return Err(fail(
                "bank.total",
                format!("must be 1..=1000000000000, got {}", bank.total),
            ));
        }
        if !(1..=bank.total).contains(&bank.max_transfer) {
            return Err(fail(
                "bank.max_transfer",
                format!(
                    "must be 1..=total ({}), got {}",
                    bank.total, bank.max_transfer
                ),
            ));
        }
        if self.mix.cas > 0 {
            return Err(fail(
                "mix.cas",
                "must be 0: the bank reads balances and transfers",
            ));
        }
        Ok(())
    }

    fn check_lock(&self) -> Result<(), (String, String)> {
        if self.checker != Checker::Lock {
            if self.lock.is_some() {
                return Err(fail("lock", "only applies to `checker: lock`; remove it"));
            }
            return Ok(());
        }
        let lock = self.lock.clone().unwrap_or_default();
        if !(1_000..=60_000).contains(&lock.ttl_ms) {
            return Err(fail(
                "lock.ttl_ms",
                format!("must be 1000..=60000, got {}", lock.ttl_ms),
            ));
        }
        if !(1..=100).contains(&lock.writes) {
            return Err(fail(
                "lock.writes",
                format!("must be 1..=100, got {}", lock.writes),
            ));
        }
        if lock.stall_extra_ms > 60_000 {
            return Err(fail(
                "lock.stall_extra_ms",
                format!("must be 0..=60000, got {}", lock.stall_extra_ms),
            ));
        }
        if lock.hold_ms > 60_000 {
            return Err(fail(
                "lock.hold_ms",
                format!("must be 0..=60000, got {}", lock.hold_ms),
            ));
        }
        Ok(())
    }

    fn check_watch(&self) -> Result<(), (String, String)> {
        if self.checker != Checker::Watch {
            if self.watch.is_some() {
                return Err(fail("watch", "only applies to `checker: watch`; remove it"));
            }
            return Ok(());
        }
        let watch = self.watch.clone().unwrap_or_default();
        if watch.watchers == 0 || watch.watchers >= self.concurrency {
            return Err(fail(
                "watch.watchers",
                format!(
                    "must be 1..concurrency ({}), so that some clients write; got {}",
                    self.concurrency, watch.watchers
                ),
            ));
        }
        if !(100..=60_000).contains(&watch.segment_ms) {
            return Err(fail(
                "watch.segment_ms",
                format!("must be 100..=60000, got {}", watch.segment_ms),
            ));
        }
        if watch.gap_ms > 10_000 {
            return Err(fail(
                "watch.gap_ms",
                format!("must be 0..=10000, got {}", watch.gap_ms),
            ));
        }
        Ok(())
    }

    fn check_membership(&self) -> Result<(), (String, String)> {
        if self.checker != Checker::Membership {
            if self.membership.is_some() {
                return Err(fail(
                    "membership",
                    "only applies to `checker: membership`; remove it",
                ));
            }
            return Ok(());
        }
        let membership = self.membership.clone().unwrap_or_default();
        if !(10..=10_000).contains(&membership.poll_ms) {
            return Err(fail(
                "membership.poll_ms",
                format!("must be 10..=10000, got {}", membership.poll_ms),
            ));
        }
        if !(10..=60_000).contains(&membership.probe_interval_ms) {
            return Err(fail(
                "membership.probe_interval_ms",
                format!("must be 10..=60000, got {}", membership.probe_interval_ms),
            ));
        }
        Ok(())
    }

    fn check_txn(&self) -> Result<(), (String, String)> {
        self.check_bank()?;
        self.check_lock()?;
        self.check_watch()?;
        self.check_membership()?;
        if !self.checker.is_transactional() {
            for (field, set) in [
                ("txn", self.txn.is_some()),
                ("isolation", self.isolation.is_some()),
            ] {
                if set {
                    return Err(fail(
                        field,
                        "only applies to `checker: list-append` or `rw-register`; remove it",
                    ));
                }
            }
            return Ok(());
        }
        if self.keyspace != Keyspace::Linearizable {
            return Err(fail(
                "keyspace",
                "transactions run on the linearizable keyspace; remove `keyspace`",
            ));
        }
        let shape = self.txn.clone().unwrap_or_default();
        if !(1..=MAX_TXN_OPS).contains(&shape.max_ops) {
            return Err(fail(
                "txn.max_ops",
                format!("must be 1..={MAX_TXN_OPS}, got {}", shape.max_ops),
            ));
        }
        if shape.min_ops == 0 || shape.min_ops > shape.max_ops {
            return Err(fail(
                "txn.min_ops",
                format!(
                    "must be 1..=max_ops ({}), got {}",
                    shape.max_ops, shape.min_ops
                ),
            ));
        }
        if !(1..=100_000).contains(&shape.max_writes_per_key) {
            return Err(fail(
                "txn.max_writes_per_key",
                format!("must be 1..=100000, got {}", shape.max_writes_per_key),
            ));
        }
        Ok(())
    }

    fn check_keyspace(&self) -> Result<(), (String, String)> {
        if self.keyspace == Keyspace::Linearizable {
            for (field, set) in [
                ("causal_resolve", self.causal_resolve.is_some()),
                ("session_hop", self.session_hop.is_some()),
            ] {
                if set {
                    return Err(fail(
                        field,
                        "only applies to `keyspace: causal`; add it or remove this field",
                    ));
                }
            }
            return Ok(());
        }
        if self.checker != Checker::Causal {
            return Err(fail(
                "keyspace",
                "`keyspace: causal` needs `checker: causal` (the causal keyspace promises no \
                 more; its runs show the linearizability verdict beside it)",
            ));
        }
        if let Some(hop) = self.session_hop
            && !(0.0..=1.0).contains(&hop)
        {
            return Err(fail(
                "session_hop",
                format!("must be a probability in 0..=1, got {hop}"),
            ));
        }
        if self.write_retries > 0 {
            return Err(fail(
                "write_retries",
                "must be 0 for `keyspace: causal`: a causal write is acknowledged by the node \
                 that takes it, and has no write id to resend",
            ));
        }
        Ok(())
    }

    fn check_keys(&self) -> Result<(), (String, String)> {
        let keys = &self.keys;
        if !(1..=MAX_KEY_COUNT).contains(&keys.count) {
            return Err(fail(
                "keys.count",
                format!("must be 1..={MAX_KEY_COUNT}, got {}", keys.count),
            ));
        }
        if let Some(s) = keys.zipf_exponent {
            if keys.distribution != Distribution::Zipf {
                return Err(fail(
                    "keys.zipf_exponent",
                    "only applies to `distribution: zipf`",
                ));
            }
            if !(s > 0.0 && s <= MAX_ZIPF_EXPONENT) {
                return Err(fail(
                    "keys.zipf_exponent",
                    format!("must be in (0, {MAX_ZIPF_EXPONENT}], got {s}"),
                ));
            }
        }
        Ok(())
    }

    fn check_mix(&self, field: &str, mix: &Mix) -> Result<(), (String, String)> {
        if mix.total() == 0 {
            return Err(fail(field, "needs at least one nonzero weight"));
        }
        if self.checker == Checker::Set {
            for (name, weight) in [("read", mix.read), ("write", mix.write), ("cas", mix.cas)] {
                if weight > 0 {
                    return Err(fail(
                        &format!("{field}.{name}"),
                        "must be 0: the set workload only adds (the set is read once, after healing)",
                    ));
                }
            }
            return Ok(());
        }
        if mix.add > 0 {
            return Err(fail(
                &format!("{field}.add"),
                "must be 0: only `checker: set` adds elements",
            ));
        }
        if self.checker.is_transactional() && mix.cas > 0 {
            return Err(fail(
                &format!("{field}.cas"),
                "must be 0: a transaction's micro-ops are reads and writes (appends for list-append)",
            ));
        }
        if mix.cas > 0 {
            let reason = match self.model() {
                None => Some("the causal checker handles only reads and writes"),
                Some(Model::Register) => Some("`model: register` has no compare-and-set"),
                Some(Model::CasRegister | Model::Kv) => None,
            };
            if let Some(reason) = reason {
                return Err(fail(
                    &format!("{field}.cas"),
                    format!("must be 0: {reason}"),
                ));
            }
        }
        Ok(())
    }

    fn check_phases(&self) -> Result<(), (String, String)> {
        let mut total_secs: u64 = 0;
        for (i, phase) in self.phases.iter().enumerate() {
            let at = |field: &str| format!("phases[{i}].{field}");
            check_name(&at("name"), &phase.name)?;
            if self.phases[..i].iter().any(|p| p.name == phase.name) {
                return Err(fail(
                    &at("name"),
                    format!("phase `{}` is defined twice", phase.name),
                ));
            }
            if phase.duration_secs == 0 {
                return Err(fail(&at("duration_secs"), "must be at least 1"));
            }
            total_secs = total_secs.saturating_add(phase.duration_secs);
            if total_secs > self.time_limit_secs {
                return Err(fail(
                    &at("duration_secs"),
                    format!(
                        "phases up to `{}` last {total_secs} s, more than time_limit_secs ({})",
                        phase.name, self.time_limit_secs
                    ),
                ));
            }
            if let Some(mix) = &phase.mix {
                self.check_mix(&at("mix"), mix)?;
            }
            if let Some(rate) = phase.rate {
                if self.rate.is_none() {
                    return Err(fail(
                        &at("rate"),
                        "a closed-loop workload (no top-level `rate`) cannot have open-loop phases",
                    ));
                }
                check_rate(&at("rate"), rate)?;
            }
        }
        Ok(())
    }

    fn check_nemesis(&self, nemesis: &Nemesis) -> Result<(), (String, String)> {
        if nemesis.faults.is_empty() {
            return Err(fail(
                "nemesis.faults",
                "needs at least one fault; remove `nemesis` for a run without faults",
            ));
        }
        let interval = nemesis.interval_secs;
        if !(interval.is_finite() && interval >= MIN_INTERVAL_SECS) {
            return Err(fail(
                "nemesis.interval_secs",
                format!("must be at least {MIN_INTERVAL_SECS}, got {interval}"),
            ));
        }
        // The first fault starts one interval in and none starts later than one interval before
        // the end, so a run shorter than two intervals would have no fault at all.
        if 2.0 * interval > self.time_limit_secs as f64 {
            return Err(fail(
                "nemesis.interval_secs",
                format!(
                    "{interval} s leaves no room for a fault: two intervals must fit in \
                     time_limit_secs ({})",
                    self.time_limit_secs
                ),
            ));
        }
        if let Some(shapes) = &nemesis.partition_shapes {
            if !nemesis.faults.contains(&FaultName::Partition) {
                return Err(fail(
                    "nemesis.partition_shapes",
                    "only applies when `faults` includes `partition`",
                ));
            }
            if shapes.is_empty() {
                return Err(fail(
                    "nemesis.partition_shapes",
                    "needs at least one shape; omit it for all shapes",
                ));
            }
        }
        if nemesis.kill_target.is_some() && !nemesis.faults.contains(&FaultName::Kill) {
            return Err(fail(
                "nemesis.kill_target",
                "only applies when `faults` includes `kill`",
            ));
        }
        if let Some(ms) = nemesis.clock_offset_ms {
            if !nemesis.faults.contains(&FaultName::Clock) {
                return Err(fail(
                    "nemesis.clock_offset_ms",
                    "only applies when `faults` includes `clock`",
                ));
            }
            if ms == 0 || ms.unsigned_abs() > 3_600_000 {
                return Err(fail(
                    "nemesis.clock_offset_ms",
                    format!("must be nonzero and at most an hour either way, got {ms}"),
                ));
            }
        }
        Ok(())
    }
}

fn fail(field: &str, message: impl Into<String>) -> (String, String) {
    (field.to_owned(), message.into())
}

/// Names end up in directory names and reports: keep them to a portable character set.
fn check_name(field: &str, name: &str) -> Result<(), (String, String)> {
    let portable = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if name.is_empty() || name.len() > 64 || !portable || name.starts_with('.') {
        return Err(fail(
            field,
            format!(
                "`{name}` must be 1 to 64 of letters, digits, `-`, `_`, `.`, not starting with `.`"
            ),
        ));
    }
    Ok(())
}

fn check_rate(field: &str, rate: f64) -> Result<(), (String, String)> {
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(fail(
            field,
            format!("must be in (0, {MAX_RATE}] ops/s, got {rate}"),
        ));
    }
    Ok(())
}
