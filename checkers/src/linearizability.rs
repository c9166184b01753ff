//! Linearizability checking by just-in-time linearization.
//!
//! The search is Wing & Gong's ("Testing and verifying concurrent objects", JPDC 1993): walk a
//! list of call and return events in time order; at a call, try to linearize that operation
//! now (the model accepts it from the current state), remove it from the list and start over;
//! at a return whose operation is not yet linearized, undo the last choice. Lowe ("Testing for
//! linearizability", Concurrency and Computation 2017) makes it practical with a cache of
//! configurations already explored: a (set of linearized operations, state) pair seen before
//! cannot lead anywhere new, so the search skips it. This is the algorithm of Porcupine's
//! `checker.go`, including P-compositionality: the model splits the history into independent
//! partitions (keys), each checked on its own, in parallel.
//!
//! Unknown-outcome operations get a return time of +infinity: they may be linearized anywhere
//! after their call, or never, so the search is done once every operation with a known
//! outcome is. A configuration with fewer of them linearized dominates one with more (same
//! completed operations, same state), and the cache prunes by that, not only by equality
//! (see [`Search`]).
//!
//! The hot loop allocates nothing but new states: the event list is index arrays, the
//! linearized set is a bitset with an incremental (Zobrist) hash, and the cache is an
//! open-addressing table over flat arrays. Cache entries keep the set as a watermark plus a
//! window ([`LinearizedSet`]), so memory grows with the history's length, not its square.
//! Operations that never change the state (reads) are linearized as soon as the model accepts
//! them and never tried later instead ([`Model::never_changes_state`]). A deadline and a
//! memory bound turn an over-long search into `Unknown`, never a guess.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::history::{History, Operation, Outcome};
use crate::model::{CasFail, Model, Transition};

/// Limits and choices for a check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Give up (verdict `Unknown`) after this long; `None` for no deadline.
    pub timeout: Option<Duration>,
    /// Give up on a partition (verdict `Unknown`) once its cache holds about this many bytes.
    /// Each partition being checked has its own cache, so peak use is up to one bound per
    /// thread.
    pub cache_bytes_max: usize,
    /// Threads to check partitions on; 0 means one per core.
    pub threads_max: usize,
    /// Stop checking other partitions once one is found invalid; they report `Unknown`. On by
    /// default, as in Porcupine: an invalid partition can take far longer to refute than a
    /// valid one to confirm, and one explained anomaly is what a report needs. Turn it off to
    /// explain every failing key.
    pub stop_at_first_invalid: bool,
    /// How a failed `cas` is read when the model is chosen by name ([`crate::check_file`]).
    pub cas_fail: CasFail,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            timeout: None,
            cache_bytes_max: 1 << 30,
            threads_max: 0,
            stop_at_first_invalid: true,
            cas_fail: CasFail::default(),
        }
    }
}

/// The answer for a history or a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum CheckResult {
    /// Some linearization exists.
    Valid,
    /// No linearization exists.
    Invalid,
    /// The search was cut short; nothing is claimed.
    Unknown {
        /// Why it was cut short.
        reason: String,
    },
}

/// Why a partition is not linearizable, in terms of its operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The partition's key, for keyed models.
    pub key: Option<String>,
    /// The operation whose completion the search could not get past: once it returned it must
    /// have been linearized, and no order of the operations before it allows that.
    pub failing_op: usize,
    /// The longest linearizable prefix found, as operation ids in linearization order.
    pub prefix: Vec<usize>,
    /// `states[0]` is the initial state and `states[i + 1]` the state after `prefix[i]`.
    pub states: Vec<String>,
}

/// The result for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResult {
    /// The partition's key (that of its operations), for keyed models.
    pub key: Option<String>,
    /// Ids of the partition's operations, including those dropped before checking.
    pub operations: Vec<usize>,
    /// How many of them took part in the search (see [`Model::include`]).
    pub checked_operations: usize,
    /// The partition's answer.
    pub result: CheckResult,
    /// Present when `result` is `Invalid`.
    pub explanation: Option<Explanation>,
    /// Configurations the cache held at the end.
    pub cache_entries: usize,
    /// Time spent on this partition, in microseconds.
    pub elapsed_us: u64,
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `Invalid` if any partition is, else `Unknown` if any is, else `Valid`.
    pub result: CheckResult,
    /// One per partition, in the order the model gave them.
    pub partitions: Vec<PartitionResult>,
}

impl Verdict {
    /// Partitions found invalid.
    pub fn invalid_partitions(&self) -> impl Iterator<Item = &PartitionResult> {
        self.partitions
            .iter()
            .filter(|p| p.result == CheckResult::Invalid)
    }
}

/// Checks `history` against `model`.
///
/// Errors only when the model cannot interpret an operation; a search that is cut short gives
/// an `Unknown` verdict instead.
pub fn check<M: Model>(
    model: &M,
    history: &History,
    options: &CheckOptions,
) -> Result<Verdict, Error> {
    let ops = &history.operations;
    for op in ops {
        model.validate(op).map_err(|message| Error::Model {
            id: op.id,
            line: op.line,
            message,
        })?;
    }
    let groups = model.partition(ops);
    let mut seen = vec![false; ops.len()];
    for &i in groups.iter().flatten() {
        assert!(i < ops.len(), "partition index {i} out of range");
        assert!(!seen[i], "operation {i} in two partitions");
        seen[i] = true;
    }
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let stop = AtomicBool::new(false);
    let limits = Limits {
        deadline,
        cache_bytes_max: options.cache_bytes_max,
        stop: &stop,
        stop_at_first_invalid: options.stop_at_first_invalid,
    };
    // Largest first, so one big partition does not start last and set the wall time.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].len()));
    let threads = if ops.len() < PARALLEL_OPERATIONS_MIN || groups.len() < 2 {
        // Starting a thread costs more than checking a small history.
        1
    } else {
        match options.threads_max {
            0 => cores(),
            n => n,
        }
        .min(groups.len())
    };
    let results: Mutex<Vec<Option<PartitionResult>>> = Mutex::new(vec![None; groups.len()]);
    // When one invalid partition ends the check, a hard partition that happens to come first
    // must not hide an easy invalid one behind it (c50-bad spends seconds on a valid key and
    // milliseconds on the bad one): so every partition first gets a small budget, and those
    // that exceed it go to the back of the queue with no budget.
    let first_budget =
        (options.stop_at_first_invalid && groups.len() > 1).then_some(FIRST_ROUND_ITERATIONS);
    let queue: Mutex<VecDeque<(usize, Option<u64>)>> =
        Mutex::new(order.iter().map(|&g| (g, first_budget)).collect());
    let work = || {
        loop {
            let task = queue.lock().expect("no panics under the lock").pop_front();
            let Some((g, budget)) = task else {
                break;
            };
            match check_partition(model, ops, &groups[g], &limits, budget) {
                Some(result) => {
                    results.lock().expect("no panics under the lock")[g] = Some(result);
                }
                None => queue
                    .lock()
                    .expect("no panics under the lock")
                    .push_back((g, None)),
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        // The calling thread is one of the workers.
        work();
    });
    let partitions: Vec<PartitionResult> = results
        .into_inner()
        .expect("no thread panicked")
        .into_iter()
        .map(|r| r.expect("every partition was checked"))
        .collect();
    let result = if partitions.iter().any(|p| p.result == CheckResult::Invalid) {
        CheckResult::Invalid
    } else if let Some(p) = partitions
        .iter()
        .find(|p| matches!(p.result, CheckResult::Unknown { .. }))
    {
        p.result.clone()
    } else {
        CheckResult::Valid
    };
    Ok(Verdict { result, partitions })
}

/// The number of cores, asked once: the standard library reads cgroup files to answer, which
/// costs more than checking a small history.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

struct Limits<'a> {
    deadline: Option<Instant>,
    cache_bytes_max: usize,
    stop: &'a AtomicBool,
    stop_at_first_invalid: bool,
}

impl Limits<'_> {
    /// Why no more searching should be done, if it should not.
    fn stopped(&self) -> Option<String> {
        if self.stop.load(Ordering::Relaxed) {
            return Some("not checked to the end: another partition is not linearizable".into());
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some("deadline reached".into());
        }
        None
    }
}

/// The budget of a partition's first try when one invalid partition ends the check.
const FIRST_ROUND_ITERATIONS: u64 = 1 << 15;
/// Histories with fewer operations are checked on the calling thread alone.
const PARALLEL_OPERATIONS_MIN: usize = 1000;
/// Marks the end of the event list and empty table slots.
const NONE: u32 = u32::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;
/// Deadline and stop flag are looked at once per this many iterations (a power of two).
const LIMIT_CHECK_ITERATIONS: u64 = 1 << 12;

fn check_partition<M: Model>(
    model: &M,
    all_ops: &[Operation],
    group: &[usize],
    limits: &Limits,
    iterations_max: Option<u64>,
) -> Option<PartitionResult> {
    let started = Instant::now();
    let ops: Vec<&Operation> = group
        .iter()
        .map(|&i| &all_ops[i])
        .filter(|op| model.include(op))
        .collect();
    let mut search = Search::new(model, &ops);
    let outcome = match limits.stopped() {
        Some(reason) => SearchOutcome::GaveUp(reason),
        None => search.run(limits, iterations_max),
    };
    let key = group.first().and_then(|&i| all_ops[i].key.clone());
    let (result, explanation) = match outcome {
        SearchOutcome::OverBudget => return None,
        SearchOutcome::Linearizable => (CheckResult::Valid, None),
        SearchOutcome::GaveUp(reason) => (CheckResult::Unknown { reason }, None),
        SearchOutcome::NotLinearizable => {
            if limits.stop_at_first_invalid {
                limits.stop.store(true, Ordering::Relaxed);
            }
            (CheckResult::Invalid, Some(search.explain(key.clone())))
        }
    };
    Some(PartitionResult {
        key,
        operations: group.to_vec(),
        checked_operations: ops.len(),
        result,
        explanation,
        cache_entries: search.cache_len(),
        elapsed_us: started.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
    })
}

enum SearchOutcome {
    /// The iteration budget ran out; try again later without one.
    OverBudget,
    Linearizable,
    NotLinearizable,
    GaveUp(String),
}

/// The doubly linked list of call and return events, as index arrays.
///
/// Node 0 is the head sentinel; nodes 1.. are events in time order. A call node knows its
/// return node (`matching`); lifting a call removes both, unlifting restores both. Because
/// lifts and unlifts are strictly nested (a stack), restoring the saved neighbours is exact.
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For a call node, its return node; `NONE` for return nodes and the head.
    matching: Vec<u32>,
    /// The (partition-local) operation of each node.
    op: Vec<u32>,
}

impl EventList {
    fn new(ops: &[&Operation]) -> EventList {
        // (time, 0 = call / 1 = return, op): at equal times calls come first, so operations
        // that touch at an instant count as concurrent, as in Porcupine.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).expect("partition fits u32");
            events.push((op.invoke_time, 0, i));
            let returned = match op.outcome {
                Outcome::Unknown => u64::MAX,
                Outcome::Ok | Outcome::Fail => op.complete_time.unwrap_or(u64::MAX),
            };
            events.push((returned, 1, i));
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut list = EventList {
            next: (1..=nodes as u32).collect(),
            prev: (0..nodes as u32).map(|n| n.wrapping_sub(1)).collect(),
            matching: vec![NONE; nodes],
            op: vec![NONE; nodes],
        };
        list.next[nodes - 1] = NONE;
        list.prev[HEAD] = NONE;
        let mut call_node = vec![NONE; ops.len()];
        for (position, &(_, kind, op)) in events.iter().enumerate() {
            let node = position as u32 + 1;
            list.op[node as usize] = op;
            if kind == 0 {
                call_node[op as usize] = node;
            } else {
                let call = call_node[op as usize];
                assert_ne!(call, NONE, "a return follows its call");
                list.matching[call as usize] = node;
            }
        }
        list
    }

    fn is_call(&self, node: usize) -> bool {
        self.matching[node] != NONE
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        let (p, n) = (self.prev[call], self.next[call]);
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
        let ret = self.matching[call] as usize;
        let (p, n) = (self.prev[ret], self.next[ret]);
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
    }

    /// Undoes [`EventList::lift`]; must be called in reverse order of lifts.
    fn unlift(&mut self, call: usize) {
        let ret = self.matching[call] as usize;
        let (p, n) = (self.prev[ret], self.next[ret]);
        self.next[p as usize] = ret as u32;
        if n != NONE {
            self.prev[n as usize] = ret as u32;
        }
        let (p, n) = (self.prev[call], self.next[call]);
        self.next[p as usize] = call as u32;
        if n != NONE {
            self.prev[n as usize] = call as u32;
        }
    }
}

/// A map from 64-bit hashes to entry indices (open addressing, linear probing), giving the
/// head of the cache's chain of entries for one linearized-set hash.
struct HeadTable {
    /// (hash, head entry) per slot; entry `NONE` is an empty slot. Length is a power of two.
    slots: Vec<(u64, u32)>,
    len: usize,
}

impl HeadTable {
    fn new(operations: usize) -> HeadTable {
        // Small partitions are common; zeroing a large table would cost more than searching.
        let slots = (operations * 4).next_power_of_two().max(64);
        HeadTable {
            slots: vec![(0, NONE); slots],
            len: 0,
        }
    }

    fn slot_of(&self, hash: u64) -> usize {
        // Fibonacci hashing: the top bits of a multiply spread any input well.
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The slot holding `hash`, or the empty slot where it would go.
    fn probe(&self, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(hash);
        loop {
            let (h, head) = self.slots[slot];
            if head == NONE || h == hash {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Stores `entry` as the head for `hash` in `slot`, which [`HeadTable::probe`] returned
    /// for `hash` with no insertion since; the caller links `entry` to the previous head.
    fn set_head(&mut self, slot: usize, hash: u64, entry: u32) {
        if self.slots[slot].1 != NONE {
            self.slots[slot].1 = entry;
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
            let slot = self.probe(hash);
            self.slots[slot] = (hash, entry);
        } else {
            self.slots[slot] = (hash, entry);
        }
        self.len += 1;
    }

    fn grow(&mut self) {
        let doubled = vec![(0, NONE); self.slots.len() * 2];
        for (hash, head) in std::mem::replace(&mut self.slots, doubled) {
            if head != NONE {
                let slot = self.probe(hash);
                self.slots[slot] = (hash, head);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<(u64, u32)>()
    }
}

/// A small fast hasher (the rustc "Fx" hash) for states; the standard SipHash is built to
/// resist hostile keys, which a checker's own states are not, and costs several times more.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// splitmix64: deterministic, well-mixed per-operation keys for the Zobrist hash of the
/// linearized set.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The set of linearized operations, as a bitset that the cache stores compactly.
///
/// A full bitset per cache entry makes the cache grow with the square of the operations per
/// key. But the search only linearizes operations called before the first pending return, so
/// the set is always "every operation up to some point, plus some of those just after it":
/// ops with a known return get bits in order of invocation, and an entry keeps the index of
/// the first word that is not all ones (`low`) and the words from there to the last non-zero
/// one. Unknown-outcome ops may stay out of the set for ever and would hold `low` back, so
/// their bits live in a second region that entries keep whole. Equal sets give equal
/// (`low`, words), so entries compare exactly, and the second regions compare by subset
/// ([`Search::cache_insert`]).
struct LinearizedSet {
    words: Vec<u64>,
    /// Words of the first region (ops with a known return).
    known_words: usize,
    /// The first word of the first region that is not all ones (or `known_words`).
    low: usize,
    /// One past the last non-zero word of the first region; never below `low`.
    high: usize,
    /// Bit of each (partition-local) op.
    bit_of: Vec<u32>,
}

impl LinearizedSet {
    fn new(ops: &[&Operation]) -> LinearizedSet {
        let mut known: Vec<usize> = (0..ops.len()).filter(|&i| returns(ops[i])).collect();
        known.sort_by_key(|&i| ops[i].invoke_time);
        let known_words = known.len().div_ceil(64);
        let mut bit_of = vec![NONE; ops.len()];
        for (bit, &i) in known.iter().enumerate() {
            bit_of[i] = bit as u32;
        }
        let mut next = known_words * 64;
        for (i, op) in ops.iter().enumerate() {
            if !returns(op) {
                bit_of[i] = next as u32;
                next += 1;
            }
        }
        LinearizedSet {
            words: vec![0; next.div_ceil(64).max(1)],
            known_words,
            low: 0,
            high: 0,
            bit_of,
        }
    }

    fn insert(&mut self, op: usize) {
        let bit = self.bit_of[op] as usize;
        let word = bit / 64;
        self.words[word] |= 1 << (bit % 64);
        if word < self.known_words {
            self.high = self.high.max(word + 1);
            while self.low < self.known_words && self.words[self.low] == u64::MAX {
                self.low += 1;
            }
        }
    }

    fn remove(&mut self, op: usize) {
        let bit = self.bit_of[op] as usize;
        let word = bit / 64;
        self.words[word] &= !(1 << (bit % 64));
        if word < self.known_words {
            self.low = self.low.min(word);
            while self.high > self.low && self.words[self.high - 1] == 0 {
                self.high -= 1;
            }
        }
    }

    /// The words an entry keeps: the window of the first region, then the second region.
    fn window(&self) -> (&[u64], &[u64]) {
        (
            &self.words[self.low..self.high],
            &self.words[self.known_words..],
        )
    }
}

/// Whether `op`'s outcome is known, so the search must linearize it (an unknown outcome's
/// return is at +infinity and it may never have happened).
fn returns(op: &Operation) -> bool {
    op.outcome != Outcome::Unknown
}

/// One partition's search state.
///
/// The cache is keyed by a hash of (the linearized operations that return, state); entries
/// with the same key are chained and compared by set, then by state. Unknown-outcome
/// operations are left out of the key because a configuration is dominated by one with the
/// same returning operations and state and a subset of them: whatever completes from the
/// larger one completes from the smaller, by linearizing the missing ones last (nothing
/// must follow an operation that never returns, and the model accepts an unknown outcome
/// from any state). Histories with many timed-out writes (Jepsen's etcd runs) differ
/// mostly in which of them were linearized early, so this prunes most of their search.
///
/// A state's hash is computed once, when the model produces it (models with large states,
/// like kv's growing strings, carry their hash so this is cheap), and kept beside it.
struct Search<'m, 'o, M: Model> {
    model: &'m M,
    ops: &'o [&'o Operation],
    list: EventList,
    /// Zobrist key of each operation: the linearized set's hash is the XOR of its members'.
    zobrist: Vec<u64>,
    /// Operations that never change the state ([`Model::never_changes_state`]).
    pure: Vec<bool>,
    /// Per operation, the last state (index) the model rejected it from. States are never
    /// renumbered, so this stays true; it saves asking again after a pure operation is
    /// linearized, when the scan starts over from the same state.
    rejected_at: Vec<u32>,
    /// States by index; configurations and the call stack refer to states by index.
    states: Vec<M::State>,
    /// `state_hashes[i]` is the hash of `states[i]`.
    state_hashes: Vec<u64>,
    /// Configuration key -> first cache entry with that key.
    heads: HeadTable,
    /// Cache entry `e`: linearized set `entry_low[e]` and the words
    /// `entry_bits[entry_start[e]..entry_start[e + 1]]` ([`LinearizedSet::window`]), state
    /// `entry_state[e]`, next entry with the same key `entry_next[e]`.
    entry_bits: Vec<u64>,
    entry_start: Vec<usize>,
    entry_low: Vec<u32>,
    entry_state: Vec<u32>,
    entry_next: Vec<u32>,
    bytes: usize,
    /// The deepest point the search reached, for the explanation.
    longest: Option<DeepestPoint>,
}

/// A snapshot of the search where it got furthest.
struct DeepestPoint {
    /// (call node, state before it, forced) per linearized op, in order.
    calls: Vec<(u32, u32, bool)>,
    /// The state after the last of them.
    state: u32,
    /// The (partition-local) op whose return stopped the search there.
    blocked_by: u32,
}

/// What a step leads to, before the cache has seen it.
enum Candidate<S> {
    /// The state at this index (the op left it unchanged).
    Known(u32),
    /// A new state value.
    New(S),
}

impl<'m, 'o, M: Model> Search<'m, 'o, M> {
    fn new(model: &'m M, ops: &'o [&'o Operation]) -> Self {
        // Most searches cache a few configurations per operation; growing from empty would
        // reallocate a dozen times.
        let entries_guess = ops.len() * 2;
        Search {
            model,
            ops,
            list: EventList::new(ops),
            // Unknown-outcome operations stay out of the key (see above): zero.
            zobrist: (0..ops.len() as u64)
                .map(|i| {
                    if returns(ops[i as usize]) {
                        splitmix64(i)
                    } else {
                        0
                    }
                })
                .collect(),
            pure: ops.iter().map(|op| model.never_changes_state(op)).collect(),
            rejected_at: vec![NONE; ops.len()],
            states: Vec::with_capacity(entries_guess),
            state_hashes: Vec::with_capacity(entries_guess),
            heads: HeadTable::new(ops.len()),
            entry_bits: Vec::with_capacity(entries_guess * 2),
            entry_start: {
                let mut starts = Vec::with_capacity(entries_guess + 1);
                starts.push(0);
                starts
            },
            entry_low: Vec::with_capacity(entries_guess),
            entry_state: Vec::with_capacity(entries_guess),
            entry_next: Vec::with_capacity(entries_guess),
            bytes: 0,
            longest: None,
        }
    }

    fn cache_len(&self) -> usize {
        self.entry_state.len()
    }

    /// Adds (linearized, candidate) to the cache and returns its state's index, or `None` if
    /// an equal configuration, or one that dominates it (the same but for fewer
    /// unknown-outcome operations), is cached already.
    fn cache_insert(
        &mut self,
        linearized: &LinearizedSet,
        set_hash: u64,
        candidate: Candidate<M::State>,
    ) -> Option<u32> {
        let (window, unknown) = linearized.window();
        let low = linearized.low as u32;
        let state_hash = match &candidate {
            Candidate::Known(index) => self.state_hashes[*index as usize],
            Candidate::New(state) => {
                let mut hasher = FxHasher::default();
                state.hash(&mut hasher);
                hasher.finish()
            }
        };
        let key = set_hash ^ splitmix64(state_hash);
        let slot = self.heads.probe(key);
        // Entries this one dominates are unlinked on the way, so a chain holds only
        // configurations none of which dominates another.
        let mut head = self.heads.slots[slot].1;
        let mut previous = NONE;
        let mut entry = head;
        while entry != NONE {
            let e = entry as usize;
            let next = self.entry_next[e];
            let cached = self.entry_state[e] as usize;
            let bits = &self.entry_bits[self.entry_start[e]..self.entry_start[e + 1]];
            if self.state_hashes[cached] == state_hash
                && self.entry_low[e] == low
                && bits.len() == window.len() + unknown.len()
                && bits[..window.len()] == *window
            {
                let cached_unknown = &bits[window.len()..];
                let covered = cached_unknown
                    .iter()
                    .zip(unknown)
                    .all(|(cached, now)| cached & !now == 0);
                let covers = !covered
                    && cached_unknown
                        .iter()
                        .zip(unknown)
                        .all(|(cached, now)| now & !cached == 0);
                if (covered || covers)
                    && match &candidate {
                        Candidate::Known(index) => {
                            *index as usize == cached
                                || self.states[*index as usize] == self.states[cached]
                        }
                        Candidate::New(state) => *state == self.states[cached],
                    }
                {
                    if covered {
                        return None;
                    }
                    if previous == NONE {
                        head = next;
                    } else {
                        self.entry_next[previous as usize] = next;
                    }
                    entry = next;
                    continue;
                }
            }
            previous = entry;
            entry = next;
        }
        let state = match candidate {
            Candidate::Known(index) => index,
            Candidate::New(state) => {
                self.bytes +=
                    std::mem::size_of::<M::State>() + 8 + self.model.state_heap_bytes(&state);
                self.states.push(state);
                self.state_hashes.push(state_hash);
                u32::try_from(self.states.len() - 1).expect("fewer than 2^32 states")
            }
        };
        let new_entry = u32::try_from(self.entry_state.len()).expect("fewer than 2^32 entries");
        self.entry_bits.extend_from_slice(window);
        self.entry_bits.extend_from_slice(unknown);
        self.entry_start.push(self.entry_bits.len());
        self.entry_low.push(low);
        self.entry_state.push(state);
        self.entry_next.push(head);
        self.heads.set_head(slot, key, new_entry);
        self.bytes += (window.len() + unknown.len()) * 8 + 20;
        Some(state)
    }

    fn memory_bytes(&self) -> usize {
        self.bytes + self.heads.bytes()
    }

    fn run(&mut self, limits: &Limits, iterations_max: Option<u64>) -> SearchOutcome {
        let mut linearized = LinearizedSet::new(self.ops);
        let mut set_hash = 0u64;
        let init = self.model.init();
        let mut state = self
            .cache_insert(&linearized, set_hash, Candidate::New(init))
            .expect("the cache starts empty");
        // (call node, state before it, forced) for each linearized op, in order. A forced op
        // never changes the state and was linearized as soon as it could be: if nothing works
        // after it, nothing works without it either, so backtracking goes straight past it
        // (see `Model::never_changes_state`).
        let mut calls: Vec<(u32, u32, bool)> = Vec::with_capacity(self.ops.len());
        let mut node = self.list.next[HEAD];
        let mut iterations: u64 = 0;
        // Done once every operation that returns is linearized: the unknown-outcome ones
        // left can go after them all, in any order, since the model accepts them from any
        // state. Requiring them in the search too would undo the dominance pruning, which
        // relies on exactly that (see `Search`).
        let mut returning_left = self.ops.iter().filter(|op| returns(op)).count();
        while returning_left > 0 {
            iterations += 1;
            if iterations.is_multiple_of(LIMIT_CHECK_ITERATIONS) {
                if iterations_max.is_some_and(|max| iterations > max) {
                    return SearchOutcome::OverBudget;
                }
                if let Some(reason) = self.over_limit(limits) {
                    return SearchOutcome::GaveUp(reason);
                }
            }
            let current = node as usize;
            if self.list.is_call(current) {
                let op = self.list.op[current] as usize;
                if self.rejected_at[op] == state {
                    node = self.list.next[current];
                    continue;
                }
                let mut forced = false;
                let candidate = match self
                    .model
                    .transition(&self.states[state as usize], self.ops[op])
                {
                    Transition::Impossible => {
                        debug_assert!(
                            returns(self.ops[op]),
                            "the {} model rejected an operation whose outcome is unknown; the \
                             search relies on models accepting those from any state",
                            self.model.name()
                        );
                        self.rejected_at[op] = state;
                        node = self.list.next[current];
                        continue;
                    }
                    Transition::Unchanged => {
                        forced = self.pure[op];
                        Candidate::Known(state)
                    }
                    Transition::To(next) => Candidate::New(next),
                };
                linearized.insert(op);
                let next_hash = set_hash ^ self.zobrist[op];
                if let Some(next_state) = self.cache_insert(&linearized, next_hash, candidate) {
                    returning_left -= usize::from(returns(self.ops[op]));
                    calls.push((node, state, forced));
                    state = next_state;
                    set_hash = next_hash;
                    self.list.lift(current);
                    node = self.list.next[HEAD];
                } else {
                    // Explored before from an equivalent configuration: skip it.
                    linearized.remove(op);
                    node = self.list.next[current];
                }
            } else {
                // The return of an op not yet linearized: it must have taken effect by now.
                // Record the deepest point for the explanation, then backtrack.
                if self
                    .longest
                    .as_ref()
                    .is_none_or(|deepest| calls.len() > deepest.calls.len())
                {
                    self.longest = Some(DeepestPoint {
                        calls: calls.clone(),
                        state,
                        blocked_by: self.list.op[current],
                    });
                }
                loop {
                    let Some((call, before, forced)) = calls.pop() else {
                        return SearchOutcome::NotLinearizable;
                    };
                    let op = self.list.op[call as usize] as usize;
                    linearized.remove(op);
                    returning_left += usize::from(returns(self.ops[op]));
                    set_hash ^= self.zobrist[op];
                    state = before;
                    self.list.unlift(call as usize);
                    node = self.list.next[call as usize];
                    if !forced {
                        break;
                    }
                }
            }
        }
        SearchOutcome::Linearizable
    }

    fn over_limit(&self, limits: &Limits) -> Option<String> {
        if let Some(reason) = limits.stopped() {
            return Some(format!(
                "{reason} after exploring {} configurations",
                self.cache_len()
            ));
        }
        let bytes = self.memory_bytes();
        if bytes > limits.cache_bytes_max {
            return Some(format!(
                "cache grew past {} bytes ({} configurations); raise cache_bytes_max",
                limits.cache_bytes_max,
                self.cache_len()
            ));
        }
        None
    }

    fn explain(&self, key: Option<String>) -> Explanation {
        let DeepestPoint {
            calls,
            state: last_state,
            blocked_by: failing,
        } = self
            .longest
            .as_ref()
            .expect("a failed search passed at least one return event");
        let prefix = calls
            .iter()
            .map(|&(node, _, _)| self.ops[self.list.op[node as usize] as usize].id)
            .collect();
        let states = calls
            .iter()
            .map(|&(_, before, _)| before)
            .chain(std::iter::once(*last_state))
            .map(|s| self.model.describe_state(&self.states[s as usize]))
            .collect();
        Explanation {
            key,
            failing_op: self.ops[*failing as usize].id,
            prefix,
            states,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    /// The compact form computed from scratch: the first word not all ones, and the words up
    /// to the last non-zero one.
    fn expected_window(set: &LinearizedSet) -> (usize, Vec<u64>, Vec<u64>) {
        let known = &set.words[..set.known_words];
        let low = known
            .iter()
            .position(|&w| w != u64::MAX)
            .unwrap_or(known.len());
        let high = known
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i + 1)
            .max(low);
        (
            low,
            known[low..high].to_vec(),
            set.words[set.known_words..].to_vec(),
        )
    }

    fn op(id: usize, outcome: Outcome) -> Operation {
        Operation {
            id,
            process: id as u64 % 7,
            f: "write".into(),
            key: None,
            input: Value::Int(1),
            output: Some(Value::Int(1)),
            outcome,
            invoke_time: id as u64,
            complete_time: Some(id as u64 + 5),
            line: None,
            not_applied: false,
        }
    }

    #[test]
    fn the_compact_set_is_canonical_under_any_inserts_and_removes() {
        let ops: Vec<Operation> = (0..300)
            .map(|i| {
                op(
                    i,
                    if i % 37 == 5 {
                        Outcome::Unknown
                    } else {
                        Outcome::Ok
                    },
                )
            })
            .collect();
        let refs: Vec<&Operation> = ops.iter().collect();
        let mut rng = 0x1234_5678_u64;
        let mut members = vec![false; ops.len()];
        let mut set = LinearizedSet::new(&refs);
        assert!(
            set.known_words < set.words.len(),
            "unknown ops get a region"
        );
        let (mut longest_window, mut highest_low) = (0, 0);
        for step in 0..20_000 {
            rng = splitmix64(rng);
            // Mostly add one of the first few missing ops, as the search does, and now and
            // then flip any op.
            let op = if rng.is_multiple_of(10) {
                (rng >> 8) as usize % ops.len()
            } else {
                let nth = (rng >> 8) as usize % 8;
                let mut missing = (0..ops.len()).filter(|&i| !members[i]);
                missing.nth(nth).unwrap_or(0)
            };
            if members[op] {
                set.remove(op);
            } else {
                set.insert(op);
            }
            members[op] = !members[op];
            let (window, unknown) = set.window();
            let expected = expected_window(&set);
            assert_eq!(
                (set.low, window.to_vec(), unknown.to_vec()),
                expected,
                "step {step}"
            );
            longest_window = longest_window.max(window.len());
            highest_low = highest_low.max(set.low);
            if step % 5000 == 4999 {
                // Empty it: every path back to the empty set must be canonical too.
                for (i, m) in members.iter_mut().enumerate() {
                    if *m {
                        set.remove(i);
                        *m = false;
                    }
                }
                assert_eq!((set.low, set.high), (0, 0));
            }
        }
        assert!(longest_window > 1, "the test reached multi-word windows");
        assert!(highest_low > 1, "the test filled whole words");
    }
}
