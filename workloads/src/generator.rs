//! Seeded operation generators.
//!
//! A [`Generator`] turns a workload and a seed into operations. Determinism is what makes a
//! failing run reproducible, so:
//! - every random choice comes from ChaCha8 streams derived from the seed, never from the OS;
//! - each process draws its operation kinds and keys from its own stream, so what process 3 does
//!   depends only on the seed and process 3's own calls, not on how the processes interleaved;
//! - written values come from one counter shared by all processes, which makes them unique in the
//!   run (a read then names the write it saw) and increasing in invocation order.
//!
//! The same workload, seed and sequence of `(process, elapsed)` calls therefore give the same
//! operations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::schema::{Distribution, Mix, Workload};

/// Seed domains: independent streams for independent purposes, so that adding, say, a nemesis
/// draw never shifts the operations of the same seed.
pub(crate) const DOMAIN_OPS: u64 = 0x6f70_7300;
pub(crate) const DOMAIN_ARRIVALS: u64 = 0x6172_7200;
pub(crate) const DOMAIN_NEMESIS: u64 = 0x6e65_6d00;

/// Written values per key that `cas` draws its expected value from. Recent values are the likely
/// current ones, so cas operations succeed often enough to matter, and memory stays bounded.
const CAS_CANDIDATES: usize = 8;
/// Final watches of the watch workload: one per node of a 3-node cluster (a larger one has
/// the first three watched).
const FINAL_WATCHES: u64 = 3;
/// How often a `cas` expects the key to be absent (the initial nil) although it has been written.
const CAS_EXPECT_NIL_PROBABILITY: f64 = 0.1;

/// An RNG for `domain` of `seed`. SplitMix64's finaliser spreads nearby seeds (1, 2, 3) and
/// domains over unrelated ChaCha keys.
pub(crate) fn derive_rng(seed: u64, domain: u64) -> ChaCha8Rng {
    let mut z = seed ^ domain.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// The name of the key with index `index`: `k0`, `k1`, ...
pub fn key_name(index: u32) -> String {
    format!("k{index}")
}

/// The key under which the set workload stores an element: one key per element, so that
/// an add is a plain put, and the set is read back with one scan of the `set/` prefix.
/// Zero-padded, so key order is element order.
pub fn set_element_key(element: u64) -> String {
    format!("{SET_PREFIX}{element:020}")
}

/// The prefix of the set workload's keys.
pub const SET_PREFIX: &str = "set/";
/// The history `key` of the set workload's operations (the set, not an element).
pub const SET_KEY: &str = "set";

/// What an operation does, named as in the history's `f` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Read a key (`Get`, linearizable).
    Read,
    /// Write a key (`Put`).
    Write,
    /// Compare-and-set a key (`CompareAndSwap`).
    Cas,
    /// Add an element to the set (a `Put` of its own key).
    Add,
    /// Read the whole set (a `Scan` of its prefix); the history calls it `read`.
    ReadAll,
    /// A transaction of micro-ops (`Txn`); the history calls it `txn`.
    Txn,
    /// The bank: move money between two accounts.
    Transfer,
    /// The bank: read every balance at once; the history calls it `read`.
    Balances,
    /// The lock: grant a lease, keep it alive, take the lock (`acquire`).
    Acquire,
    /// The lock: write the protected register with the lock's fencing token; the history
    /// calls it `write`, with `[value, token]` on completion.
    FencedWrite,
    /// The lock: stop the keep-alives and sleep, as a paused holder (`stall`).
    Stall,
    /// The lock: hold it for a while, keep-alives running (`hold`).
    Hold,
    /// The lock: unlock and revoke the lease (`release`).
    Release,
    /// The watch: stay away for the gap, then resume the watch for a segment (`watch`).
    WatchSegment,
    /// The watch, after healing: every change from revision 1 on one node (`watch-all`).
    WatchAll,
    /// The membership workload: wait the poll interval, then read the node's gossip view
    /// (`members`).
    Members,
}

impl OpKind {
    /// The history's `f`: `read`, `write` or `cas`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Read | OpKind::ReadAll => "read",
            OpKind::Write => "write",
            OpKind::Cas => "cas",
            OpKind::Add => "add",
            OpKind::Txn => "txn",
            OpKind::Transfer => "transfer",
            OpKind::Balances => "read",
            OpKind::Acquire => "acquire",
            OpKind::FencedWrite => "write",
            OpKind::Stall => "stall",
            OpKind::Hold => "hold",
            OpKind::Release => "release",
            OpKind::WatchSegment => "watch",
            OpKind::WatchAll => "watch-all",
            OpKind::Members => "members",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OpKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What a micro-op does, named as in Elle's histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MicroOpKind {
    /// `r`: read a key (a list, or a register).
    Read,
    /// `append`: append an element to a key's list.
    Append,
    /// `w`: write a register.
    Write,
}

impl MicroOpKind {
    /// The history's name: `r`, `append` or `w`.
    pub fn as_str(self) -> &'static str {
        match self {
            MicroOpKind::Read => "r",
            MicroOpKind::Append => "append",
            MicroOpKind::Write => "w",
        }
    }
}

/// One micro-op of a transaction, serialized as Elle's `[f, key, value]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MicroOp {
    /// What it does.
    pub f: MicroOpKind,
    /// Which key.
    pub key: String,
    /// The element appended or value written (unique in the run); `None` for a read.
    pub value: Option<u64>,
}

impl Serialize for MicroOp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3))?;
        seq.serialize_element(self.f.as_str())?;
        seq.serialize_element(&self.key)?;
        seq.serialize_element(&self.value)?;
        seq.end()
    }
}

/// The input of an operation, serialized as the history's `value` of an invocation: `null`, `5`,
/// `[expected, new]` with `null` for an expected absent key, or a transaction's micro-ops.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpValue {
    /// No input (reads).
    Nil,
    /// The value to write, unique in the run.
    Write(u64),
    /// The element to add, unique in the run.
    Add(u64),
    /// Compare-and-set: succeed only if the key holds `expected` (`None`: the key is absent), then
    /// write `new`, which is unique in the run.
    Cas {
        /// A value written to the key earlier in the run, or `None` for the initial absent key.
        expected: Option<u64>,
        /// The value to write.
        new: u64,
    },
    /// A transaction's micro-ops, in order.
    Txn(Vec<MicroOp>),
    /// The bank: `amount` from account `from` to account `to`, as `[from, to, amount]`.
    Transfer {
        /// The account debited.
        from: u32,
        /// The account credited.
        to: u32,
        /// How much.
        amount: i64,
    },
    /// The watch: a segment's gap and length, as `[gap_ms, segment_ms]`.
    Watch {
        /// Time away before resuming.
        gap_ms: u64,
        /// Time watching.
        segment_ms: u64,
    },
}

impl Serialize for OpValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OpValue::Nil => serializer.serialize_unit(),
            OpValue::Write(value) | OpValue::Add(value) => serializer.serialize_u64(*value),
            OpValue::Cas { expected, new } => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element(expected)?;
                seq.serialize_element(new)?;
                seq.end()
            }
            OpValue::Txn(ops) => ops.serialize(serializer),
            OpValue::Transfer { from, to, amount } => {
                let mut seq = serializer.serialize_seq(Some(3))?;
                seq.serialize_element(from)?;
                seq.serialize_element(to)?;
                seq.serialize_element(amount)?;
                seq.end()
            }
            OpValue::Watch { gap_ms, segment_ms } => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element(gap_ms)?;
                seq.serialize_element(segment_ms)?;
                seq.end()
            }
        }
    }
}

/// One operation for a client to invoke.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Op {
    /// What to do.
    pub f: OpKind,
    /// Which key, `k0` .. `k{count-1}`.
    pub key: String,
    /// The input.
    pub value: OpValue,
}

/// The mix and rate in force until `end` (elapsed since the start of the run).
#[derive(Clone, Debug)]
struct Plan {
    end: Duration,
    mix: Mix,
    rate: Option<f64>,
}

/// How keys are picked.
#[derive(Clone, Debug)]
enum KeyPicker {
    Uniform {
        count: u32,
    },
    /// Cumulative weights: `cumulative[i]` is the sum of 1/(j+1)^s for j <= i.
    Zipf {
        cumulative: Vec<f64>,
    },
}

impl KeyPicker {
    fn new(workload: &Workload) -> KeyPicker {
        // Clamped so that an unvalidated workload cannot make an empty keyspace (a panic on the
        // first draw) or allocate without bound.
        let count = workload.keys.count.clamp(1, crate::schema::MAX_KEY_COUNT);
        match workload.keys.distribution {
            Distribution::Uniform => KeyPicker::Uniform { count },
            Distribution::Zipf => {
                let s = workload.keys.zipf_exponent();
                let mut total = 0.0;
                let cumulative = (1..=count)
                    .map(|rank| {
                        total += 1.0 / f64::from(rank).powf(s);
                        total
                    })
                    .collect();
                KeyPicker::Zipf { cumulative }
            }
        }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> u32 {
        match self {
            KeyPicker::Uniform { count } => rng.random_range(0..*count),
            KeyPicker::Zipf { cumulative } => {
                // Inverse CDF: the first key whose cumulative weight exceeds a uniform draw.
                let total = cumulative.last().copied().unwrap_or(0.0);
                let u = rng.random::<f64>() * total;
                let index = cumulative.partition_point(|&c| c <= u);
                // A non-finite total (an absurd exponent) or rounding at the top end lands past
                // the last key; the last key is the right answer then.
                index.min(cumulative.len().saturating_sub(1)) as u32
            }
        }
    }

    fn count(&self) -> u32 {
        match self {
            KeyPicker::Uniform { count } => *count,
            KeyPicker::Zipf { cumulative } => cumulative.len() as u32,
        }
    }
}

/// Generates the operations of one run. See the module documentation for what is deterministic.
#[derive(Clone, Debug)]
pub struct Generator {
    ops_seed_rng: ChaCha8Rng,
    process_rngs: BTreeMap<u64, ChaCha8Rng>,
    arrivals_rng: ChaCha8Rng,
    plans: Vec<Plan>,
    keys: KeyPicker,
    next_value: u64,
    /// The last [`CAS_CANDIDATES`] values possibly written to each key, oldest first.
    recent: HashMap<u32, VecDeque<u64>>,
    /// Where the open-loop schedule has got to: the sum of the intervals handed out so far.
    scheduled: Duration,
    final_reads: bool,
    time_limit: Duration,
    /// The set workload: adds, and one read of the whole set at the end.
    set: bool,
    /// Transactional workloads: what their transactions look like.
    txn: Option<TxnGen>,
    /// The bank: accounts and the largest transfer.
    bank: Option<(u32, i64)>,
    /// The lock: its settings, and each process's rest of its critical section.
    lock: Option<LockGen>,
    /// The watch: its settings, and the clients (by worker index) that watch.
    watch: Option<(crate::schema::WatchWorkload, u32)>,
    /// The membership workload's poll interval (every client observes).
    membership: Option<u64>,
}

/// The lock workload's sections: each process takes a lock, writes, maybe stalls, writes
/// again and releases, in that order; the lock and the stalls come from its stream.
#[derive(Clone, Debug)]
struct LockGen {
    spec: crate::schema::LockSpec,
    /// Operations left of each process's current section.
    pending: HashMap<u64, VecDeque<Op>>,
    /// Sections begun per process, for `stall_every`.
    sections: HashMap<u64, u32>,
}

/// Elle's transaction generator: `keys.count` keys are active at a time; each takes
/// `max_writes_per_key` writes and is then replaced by a fresh key, so that lists stay short
/// and every key's history is small enough to infer exactly.
#[derive(Clone, Debug)]
struct TxnGen {
    write: MicroOpKind,
    shape: crate::schema::TxnShape,
    /// Key indices of the active keys.
    active: Vec<u32>,
    /// Writes handed out per active key.
    writes: HashMap<u32, u32>,
    /// The index the next fresh key takes.
    next_key: u32,
}

impl Generator {
    /// A generator for `workload` (assumed validated; an unvalidated one does not panic but may
    /// be clamped) and `seed`.
    pub fn new(workload: &Workload, seed: u64) -> Generator {
        let mut plans = Vec::with_capacity(workload.phases.len() + 1);
        let mut end = Duration::ZERO;
        for phase in &workload.phases {
            end = end.saturating_add(Duration::from_secs(phase.duration_secs));
            plans.push(Plan {
                end,
                mix: phase.mix.unwrap_or(workload.mix),
                rate: phase.rate.or(workload.rate),
            });
        }
        plans.push(Plan {
            end: Duration::MAX,
            mix: workload.mix,
            rate: workload.rate,
        });
        Generator {
            ops_seed_rng: derive_rng(seed, DOMAIN_OPS),
            process_rngs: BTreeMap::new(),
            arrivals_rng: derive_rng(seed, DOMAIN_ARRIVALS),
            plans,
            keys: KeyPicker::new(workload),
            next_value: 1,
            recent: HashMap::new(),
            scheduled: Duration::ZERO,
            final_reads: workload.final_reads,
            time_limit: Duration::from_secs(workload.time_limit_secs),
            set: workload.checker == crate::schema::Checker::Set,
            bank: (workload.checker == crate::schema::Checker::Bank).then(|| {
                let bank = workload.bank.clone().unwrap_or_default();
                (workload.keys.count.max(2), bank.max_transfer.max(1))
            }),
            membership: (workload.checker == crate::schema::Checker::Membership)
                .then(|| workload.membership.clone().unwrap_or_default().poll_ms),
            watch: (workload.checker == crate::schema::Checker::Watch).then(|| {
                (
                    workload.watch.clone().unwrap_or_default(),
                    workload.concurrency.max(1),
                )
            }),
            lock: (workload.checker == crate::schema::Checker::Lock).then(|| LockGen {
                spec: workload.lock.clone().unwrap_or_default(),
                pending: HashMap::new(),
                sections: HashMap::new(),
            }),
            txn: workload.checker.is_transactional().then(|| {
                let count = workload.keys.count.clamp(1, crate::schema::MAX_KEY_COUNT);
                TxnGen {
                    write: if workload.checker == crate::schema::Checker::ListAppend {
                        MicroOpKind::Append
                    } else {
                        MicroOpKind::Write
                    },
                    shape: workload.txn.clone().unwrap_or_default(),
                    active: (0..count).collect(),
                    writes: HashMap::new(),
                    next_key: count,
                }
            }),
        }
    }

    /// A transaction for a process whose stream is `rng`.
    fn next_txn(&mut self, process: u64, mix: Mix) -> Op {
        let rng = self
            .process_rngs
            .get_mut(&process)
            .expect("next_op made the process's stream");
        let txn = self.txn.as_mut().expect("a transactional workload");
        let (min, max) = (txn.shape.min_ops.max(1), txn.shape.max_ops.max(1));
        let length = rng.random_range(min..=max.max(min));
        let reads = u64::from(mix.read);
        let total = reads + u64::from(mix.write);
        let mut ops = Vec::with_capacity(length as usize);
        for _ in 0..length {
            let slot = rng.random_range(0..txn.active.len());
            let key_index = txn.active[slot];
            let read = total == 0 || rng.random_range(0..total) < reads;
            if read {
                ops.push(MicroOp {
                    f: MicroOpKind::Read,
                    key: key_name(key_index),
                    value: None,
                });
                continue;
            }
            let value = self.next_value;
            self.next_value += 1;
            ops.push(MicroOp {
                f: txn.write,
                key: key_name(key_index),
                value: Some(value),
            });
            let writes = txn.writes.entry(key_index).or_insert(0);
            *writes += 1;
            if *writes >= txn.shape.max_writes_per_key {
                txn.writes.remove(&key_index);
                txn.active[slot] = txn.next_key;
                txn.next_key += 1;
            }
        }
        Op {
            f: OpKind::Txn,
            key: String::new(),
            value: OpValue::Txn(ops),
        }
    }

    /// The next step of `process`'s critical section, starting a new one when the last is
    /// done. A stall sits between the first write and the rest, where the holder believes
    /// it still holds the lock.
    fn next_lock_op(&mut self, process: u64) -> Op {
        let rng = self
            .process_rngs
            .get_mut(&process)
            .expect("next_op made the process's stream");
        let lock = self.lock.as_mut().expect("a lock workload");
        if let Some(op) = lock.pending.get_mut(&process).and_then(VecDeque::pop_front) {
            return op;
        }
        let index = self.keys.pick(rng);
        let key = key_name(index);
        let section = lock.sections.entry(process).or_insert(0);
        *section += 1;
        let stalls = lock.spec.stall_every > 0 && section.is_multiple_of(lock.spec.stall_every);
        let mut steps = VecDeque::new();
        for write in 0..lock.spec.writes {
            let value = self.next_value;
            self.next_value += 1;
            steps.push_back(Op {
                f: OpKind::FencedWrite,
                key: key.clone(),
                value: OpValue::Write(value),
            });
            if write == 0 && stalls {
                steps.push_back(Op {
                    f: OpKind::Stall,
                    key: key.clone(),
                    value: OpValue::Write(lock.spec.ttl_ms + lock.spec.stall_extra_ms),
                });
            } else if write == 0 && lock.spec.hold_ms > 0 {
                steps.push_back(Op {
                    f: OpKind::Hold,
                    key: key.clone(),
                    value: OpValue::Write(lock.spec.hold_ms),
                });
            }
        }
        steps.push_back(Op {
            f: OpKind::Release,
            key: key.clone(),
            value: OpValue::Nil,
        });
        lock.pending.insert(process, steps);
        Op {
            f: OpKind::Acquire,
            key,
            value: OpValue::Nil,
        }
    }

    fn plan_at(&self, elapsed: Duration) -> &Plan {
        // The last plan ends at Duration::MAX, so some plan always matches; the fallback only
        // keeps this total.
        self.plans
            .iter()
            .find(|plan| elapsed < plan.end)
            .unwrap_or(&self.plans[self.plans.len() - 1])
    }

    /// The next operation for `process`, `elapsed` after the start of the run (which selects the
    /// phase).
    pub fn next_op(&mut self, process: u64, elapsed: Duration) -> Op {
        let mix = self.plan_at(elapsed).mix;
        let base = &self.ops_seed_rng;
        let rng = self.process_rngs.entry(process).or_insert_with(|| {
            // Same key, one ChaCha stream per process: independent sequences.
            let mut rng = base.clone();
            rng.set_stream(process);
            rng
        });

        if self.txn.is_some() {
            return self.next_txn(process, mix);
        }
        if self.lock.is_some() {
            return self.next_lock_op(process);
        }
        if let Some(poll_ms) = self.membership {
            return Op {
                f: OpKind::Members,
                key: String::new(),
                value: OpValue::Write(poll_ms),
            };
        }
        if let Some((watch, concurrency)) = &self.watch
            && process % u64::from(*concurrency) < u64::from(watch.watchers)
        {
            // A worker keeps its index when it takes a fresh process: the watchers stay
            // the first `watchers` workers.
            return Op {
                f: OpKind::WatchSegment,
                key: String::new(),
                value: OpValue::Watch {
                    gap_ms: watch.gap_ms,
                    segment_ms: watch.segment_ms,
                },
            };
        }
        if let Some((accounts, max_transfer)) = self.bank {
            let total = u64::from(mix.read) + u64::from(mix.write);
            if total > 0 && rng.random_range(0..total) < u64::from(mix.read) {
                return Op {
                    f: OpKind::Balances,
                    key: String::new(),
                    value: OpValue::Nil,
                };
            }
            let from = rng.random_range(0..accounts);
            let to = (from + rng.random_range(1..accounts)) % accounts;
            return Op {
                f: OpKind::Transfer,
                key: String::new(),
                value: OpValue::Transfer {
                    from,
                    to,
                    amount: rng.random_range(1..=max_transfer),
                },
            };
        }
        let total = mix.total();
        // An all-zero mix (only possible unvalidated) reads.
        let draw = if total == 0 {
            0
        } else {
            rng.random_range(0..total)
        };
        let f = if draw < u64::from(mix.read) || total == 0 {
            OpKind::Read
        } else if draw < u64::from(mix.read) + u64::from(mix.write) {
            OpKind::Write
        } else if draw < u64::from(mix.read) + u64::from(mix.write) + u64::from(mix.cas) {
            OpKind::Cas
        } else {
            OpKind::Add
        };
        if f == OpKind::Add {
            let element = self.next_value;
            self.next_value += 1;
            return Op {
                f,
                key: SET_KEY.to_string(),
                value: OpValue::Add(element),
            };
        }
        let key_index = self.keys.pick(rng);

        let value = match f {
            OpKind::Read
            | OpKind::ReadAll
            | OpKind::Add
            | OpKind::Txn
            | OpKind::Transfer
            | OpKind::Balances
            | OpKind::Acquire
            | OpKind::FencedWrite
            | OpKind::Stall
            | OpKind::Hold
            | OpKind::Release
            | OpKind::WatchSegment
            | OpKind::WatchAll
            | OpKind::Members => OpValue::Nil,
            OpKind::Write => OpValue::Write(self.fresh_value(key_index)),
            OpKind::Cas => {
                let expected = match self.recent.get(&key_index) {
                    Some(values) if !rng.random_bool(CAS_EXPECT_NIL_PROBABILITY) => {
                        Some(values[rng.random_range(0..values.len())])
                    }
                    _ => None,
                };
                OpValue::Cas {
                    expected,
                    new: self.fresh_value(key_index),
                }
            }
        };
        Op {
            f,
            key: key_name(key_index),
            value,
        }
    }

    /// A value never handed out before, remembered as possibly written to the key.
    fn fresh_value(&mut self, key_index: u32) -> u64 {
        let value = self.next_value;
        self.next_value += 1;
        let values = self.recent.entry(key_index).or_default();
        if values.len() == CAS_CANDIDATES {
            values.pop_front();
        }
        values.push_back(value);
        value
    }

    /// For open-loop workloads, the time until the next operation should be issued: exponentially
    /// distributed (a Poisson process) at the rate of the phase the schedule has reached. The
    /// schedule keeps its own clock (the sum of the intervals so far), so it does not depend on
    /// how late the caller is. `None` for closed-loop workloads.
    pub fn next_interval(&mut self) -> Option<Duration> {
        let rate = self.plan_at(self.scheduled).rate?;
        // 1 - u is in (0, 1], so the logarithm is finite and the interval non-negative.
        let u: f64 = self.arrivals_rng.random();
        let secs = -(1.0 - u).ln() / rate;
        // A tiny rate (unvalidated) could ask for more than a Duration holds: cap it at the run.
        let interval = Duration::try_from_secs_f64(secs)
            .unwrap_or(self.time_limit)
            .min(self.time_limit);
        self.scheduled = self.scheduled.saturating_add(interval);
        Some(interval)
    }

    /// Where to split the keyspace into `partitions` ranges so that each holds some of this
    /// workload's keys: evenly among its key names in key order, or, for the set workload,
    /// at the keys of elements 10, 20, ... (added in the first moments of a run, so that a
    /// partition boundary falls exactly on an element that is surely there). Fewer points
    /// if the keys do not allow as many partitions.
    pub fn split_keys(&self, partitions: u32) -> Vec<String> {
        let wanted = partitions.saturating_sub(1) as usize;
        if self.set {
            return (1..=wanted as u64)
                .map(|i| set_element_key(10 * i))
                .collect();
        }
        let mut keys: Vec<String> = self.keys().collect();
        keys.sort();
        let mut splits: Vec<String> = (1..=wanted)
            .map(|i| keys[(i * keys.len() / (wanted + 1)).min(keys.len() - 1)].clone())
            .collect();
        splits.dedup();
        splits.retain(|k| Some(k) != keys.first());
        splits
    }

    /// Keys the `split` fault may split at, now: the workload's keys, or for the set
    /// workload the keys of the last 2,000 elements handed out (every 10th), so that the
    /// split lands where adds are going and the new range takes them over at once.
    pub fn split_candidates(&self) -> Vec<String> {
        if self.set {
            let newest = self.next_value.saturating_sub(1);
            let oldest = newest.saturating_sub(2_000).max(1);
            return (oldest..=newest).step_by(10).map(set_element_key).collect();
        }
        let mut keys: Vec<String> = self.keys().collect();
        keys.sort();
        keys
    }

    /// The names of all keys, `k0` .. `k{count-1}`.
    pub fn keys(&self) -> impl Iterator<Item = String> + use<> {
        (0..self.keys.count()).map(key_name)
    }

    /// The reads to issue after healing: one per key if the workload asks for final reads, else
    /// none.
    pub fn final_read_ops(&self) -> Vec<Op> {
        if !self.final_reads || self.membership.is_some() {
            return Vec::new();
        }
        if self.watch.is_some() {
            // One per node in turn (the client's own node first, then its peers): the
            // reference the watchers are checked against, from every replica.
            return (0..FINAL_WATCHES)
                .map(|node| Op {
                    f: OpKind::WatchAll,
                    key: String::new(),
                    value: OpValue::Write(node),
                })
                .collect();
        }
        if self.bank.is_some() {
            return vec![Op {
                f: OpKind::Balances,
                key: String::new(),
                value: OpValue::Nil,
            }];
        }
        if let Some(txn) = &self.txn {
            // One read-only transaction per key ever used, so that every list's final
            // state is observed.
            return (0..txn.next_key)
                .map(|index| Op {
                    f: OpKind::Txn,
                    key: String::new(),
                    value: OpValue::Txn(vec![MicroOp {
                        f: MicroOpKind::Read,
                        key: key_name(index),
                        value: None,
                    }]),
                })
                .collect();
        }
        if self.set {
            return vec![Op {
                f: OpKind::ReadAll,
                key: SET_KEY.to_string(),
                value: OpValue::Nil,
            }];
        }
        self.keys()
            .map(|key| Op {
                f: OpKind::Read,
                key,
                value: OpValue::Nil,
            })
            .collect()
    }
}
