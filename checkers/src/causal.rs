//! Causal consistency of read/write histories, by the bad patterns of Bouajjani, Enea,
//! Guerraoui and Hamza, "On Verifying Causal Consistency" (POPL 2017).
//!
//! # The model
//!
//! Each process is a *session*; operations are `write` (key, value) and `read` (key) returning
//! a value or nil, the initial value. Every value written to a key must be unique (the paper's
//! *differentiated* histories), so that a read names the write it saw; otherwise
//! [`check_causal`] returns [`Error::DuplicateWrite`]. Only `ok` operations have known
//! effects; an `info` write may or may not have happened (one that a read saw did), and a
//! `fail` operation did not happen. The `relations` submodule says exactly how each takes part.
//!
//! # The relations
//!
//! - PO, program order: a session's completed operations by invocation.
//! - RF, read-from: a write to a read that returned its value.
//! - CO, causal order: (PO ∪ RF)+, computed as a transitive closure over bit rows.
//! - CF, conflict (for CCv): w1 CF w2 when both write key x, and some read of x that returned
//!   w2's value has w1 in its causal past: w1 must be arbitrated before w2.
//! - Siblings: a read whose value is a list (written values never are) returned several
//!   concurrent values, as a leaderless store's multi-value register does. It reads from
//!   each of them (RF from every one, and each must survive its causal past), and it
//!   orders no writes for CF: what it left out was overwritten by some visible write, not
//!   by one it returned.
//!
//! # What is checked
//!
//! For differentiated histories the paper shows that each criterion is the absence of a few
//! *bad patterns* (its table of bad patterns, and the lemmas that characterise each criterion
//! by them):
//!
//! | pattern | meaning | CC | CCv |
//! | --- | --- | --- | --- |
//! | [`AnomalyKind::CyclicCO`] | CO is cyclic | ✓ | ✓ |
//! | [`AnomalyKind::WriteCOInitRead`] | a read returns nil though a write of its key is CO-before it | ✓ | ✓ |
//! | [`AnomalyKind::ThinAirRead`] | a read returns a value no write (that may have happened) wrote | ✓ | ✓ |
//! | [`AnomalyKind::WriteCORead`] | w1 CO w2 CO r on one key, and r reads w1 | ✓ | ✓ |
//! | [`AnomalyKind::CyclicCF`] | CF ∪ CO is cyclic: no total arbitration order exists | | ✓ |
//!
//! [`ConsistencyLevel::CausalConsistency`] (CC, the default) checks the first four;
//! [`ConsistencyLevel::CausalConvergence`] (CCv, causal consistency with one arbitration order
//! of writes that all sessions converge to, "causal+") adds CyclicCF. Causal memory (CM, the
//! paper's third criterion, with the patterns WriteHBInitRead and CyclicHB over a happens-before
//! relation built per operation) is **not** checked: its per-operation relation costs a
//! closure per session, far beyond the bound below.
//!
//! # Session guarantees
//!
//! The four guarantees of Terry et al. ("Session Guarantees for Weakly Consistent Replicated
//! Data", PDIS 1994) are checked too, each as its own anomaly kind, because they tell an
//! anomaly in a session's own terms. A read r of key x *misses* a write w of x when it returns
//! an older value than w: nil, or the value of a write w' with w' CO w (the per-key write order
//! that CO implies). For a read r of session B:
//!
//! - [`AnomalyKind::ReadYourWrites`]: some write w of B with w PO r, on r's key, is missed by r.
//! - [`AnomalyKind::MonotonicReads`]: some read r1 of B with r1 PO r, on r's key, read a write
//!   w1 that r misses.
//! - [`AnomalyKind::MonotonicWrites`]: a session A ≠ B wrote w1 PO w2, a read r' of B with
//!   r' PO r read w2, and r (on w1's key) misses w1.
//! - [`AnomalyKind::WritesFollowReads`]: a session A ≠ B read w1 in r1 and then wrote w2
//!   (r1 PO w2), a read r' of B with r' PO r read w2, and r (on w1's key) misses w1.
//!
//! In each case the PO/RF chain puts the missed write CO-before r, so every violation is also a
//! WriteCOInitRead (r returned nil) or a WriteCORead: the guarantees are implied by CC and never
//! change the verdict, only its words. Each read is reported at most once, under the first of
//! ReadYourWrites, MonotonicReads, MonotonicWrites, WritesFollowReads, WriteCOInitRead,
//! WriteCORead that it violates. When CO is cyclic, "before" means nothing, so only CyclicCO
//! and ThinAirRead are looked for.
//!
//! # Bounds
//!
//! CO is a matrix of `n²` bits for `n` operations taking part, and CF another of
//! `writes × n` bits: about 64 MiB at the default bound of
//! [`CausalOptions::operations_max`] = 16,384 operations. Time is `O(n² / 64)` word operations
//! for the closure and `O(reads × writes per key)` bit tests for the patterns. Larger histories
//! are refused with [`Error::TooManyOperations`]: split them into time windows.

mod bad_patterns;
mod convergence;
mod graph;
mod relations;
mod session_guarantees;
mod story;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::history::History;
use story::Teller;

/// Which criterion a check decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsistencyLevel {
    /// CC: causal consistency (the paper's weakest criterion).
    #[default]
    #[serde(rename = "cc")]
    CausalConsistency,
    /// CCv: causal convergence, CC with a single arbitration order of writes.
    #[serde(rename = "ccv")]
    CausalConvergence,
}

impl ConsistencyLevel {
    /// The short name used in reports and on command lines: `CC` or `CCv`.
    pub fn name(self) -> &'static str {
        match self {
            ConsistencyLevel::CausalConsistency => "CC",
            ConsistencyLevel::CausalConvergence => "CCv",
        }
    }
}

/// Choices and limits for a causal check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CausalOptions {
    /// The criterion to decide.
    pub level: ConsistencyLevel,
    /// At most this many anomalies are listed in the verdict; all are counted.
    pub anomalies_max: usize,
    /// Histories with more operations taking part (`ok` reads and writes, `info` writes) are
    /// refused: CO alone takes `operations_max² / 8` bytes.
    pub operations_max: usize,
}

/// The default for [`CausalOptions::operations_max`].
pub const OPERATIONS_MAX_DEFAULT: usize = 16_384;

impl Default for CausalOptions {
    fn default() -> CausalOptions {
        CausalOptions {
            level: ConsistencyLevel::default(),
            anomalies_max: 20,
            operations_max: OPERATIONS_MAX_DEFAULT,
        }
    }
}

/// The kinds of anomaly, in the order a verdict lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// CO is cyclic: some operation causally precedes itself.
    CyclicCO,
    /// A read returned a value that no write (that may have happened) wrote.
    ThinAirRead,
    /// A session read a key and missed its own earlier write to it.
    ReadYourWrites,
    /// A session read a key and missed a write an earlier read of it had returned.
    MonotonicReads,
    /// A session saw a write of another session but missed that session's earlier write.
    MonotonicWrites,
    /// A session saw a write of another session but missed a write that session had read
    /// before it wrote.
    WritesFollowReads,
    /// A read returned nil though a write to its key is in its causal past.
    WriteCOInitRead,
    /// A read returned a value overwritten in its causal past: w1 CO w2 CO r, r reads w1.
    WriteCORead,
    /// CF ∪ CO is cyclic: no single arbitration order of writes explains all reads (CCv).
    CyclicCF,
}

/// One anomaly: what kind, which operations, and the story.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The bad pattern or session guarantee.
    pub kind: AnomalyKind,
    /// Ids of the operations involved, in the order the explanation names them.
    pub ops: Vec<usize>,
    /// One line, e.g. "session 3 wrote x=5 (op 12), session 1 read x=5 (op 20) then read x=nil
    /// (op 22), the initial value: monotonic reads violated".
    pub explanation: String,
}

/// The result of a causal check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalVerdict {
    /// No anomaly was found: the history satisfies `level`.
    pub valid: bool,
    /// The criterion that was decided.
    pub level: ConsistencyLevel,
    /// Operations that took part: `ok` reads and writes, and `info` writes.
    pub checked_operations: usize,
    /// How many anomalies of each kind were found, listed or not.
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
    /// How many anomalies were found in all.
    pub anomalies_found: usize,
    /// The first [`CausalOptions::anomalies_max`] of them, by kind, then by operation.
    pub anomalies: Vec<Anomaly>,
}

impl CausalVerdict {
    /// Whether more anomalies were found than are listed.
    pub fn truncated(&self) -> bool {
        self.anomalies_found > self.anomalies.len()
    }
}

/// Anomalies as the checks find them, at most one per read among the read-centred kinds.
struct Findings {
    anomalies: Vec<Anomaly>,
    explained: Vec<bool>,
}

impl Findings {
    fn new(nodes: usize) -> Findings {
        Findings {
            anomalies: Vec::new(),
            explained: vec![false; nodes],
        }
    }

    /// Records an anomaly that is not about one read (a cycle, a thin-air read).
    fn add(&mut self, anomaly: Anomaly) {
        self.anomalies.push(anomaly);
    }

    /// Records an anomaly about `read` unless an earlier check already explained it.
    fn add_for_read(&mut self, read: usize, anomaly: impl FnOnce() -> Anomaly) {
        if !std::mem::replace(&mut self.explained[read], true) {
            self.anomalies.push(anomaly());
        }
    }
}

/// Checks `history` for the criterion `options.level` and the four session guarantees.
///
/// Errors when the history cannot be checked: an operation other than `read` and `write`, a
/// write of nil, two writes of one value to one key, or more operations than
/// `options.operations_max`. Anomalies are never errors: they are the verdict.
pub fn check_causal(history: &History, options: &CausalOptions) -> Result<CausalVerdict, Error> {
    let relations = relations::build(history, options.operations_max)?;
    let teller = Teller {
        history,
        relations: &relations,
    };
    let mut findings = Findings::new(relations.nodes.len());
    bad_patterns::thin_air_reads(&teller, &mut findings);
    match relations::causal_order(&relations) {
        Err(cycles) => bad_patterns::cyclic_co(&teller, &cycles, &mut findings),
        Ok(co) => {
            // Most specific first: a read already explained by a session guarantee is not
            // reported again as the bad pattern it also is.
            session_guarantees::read_your_writes(&teller, &co, &mut findings);
            session_guarantees::monotonic_reads(&teller, &co, &mut findings);
            session_guarantees::monotonic_writes(&teller, &co, &mut findings);
            session_guarantees::writes_follow_reads(&teller, &co, &mut findings);
            bad_patterns::write_co_init_read(&teller, &co, &mut findings);
            bad_patterns::write_co_read(&teller, &co, &mut findings);
            if options.level == ConsistencyLevel::CausalConvergence {
                convergence::cyclic_cf(&teller, &co, &mut findings);
            }
        }
    }
    let mut anomalies = findings.anomalies;
    anomalies.sort_by(|a, b| {
        (a.kind, a.ops.iter().max(), &a.ops).cmp(&(b.kind, b.ops.iter().max(), &b.ops))
    });
    let mut anomaly_counts = BTreeMap::new();
    for anomaly in &anomalies {
        *anomaly_counts.entry(anomaly.kind).or_insert(0) += 1;
    }
    let anomalies_found = anomalies.len();
    anomalies.truncate(options.anomalies_max);
    Ok(CausalVerdict {
        valid: anomalies_found == 0,
        level: options.level,
        checked_operations: relations.nodes.len(),
        anomaly_counts,
        anomalies_found,
        anomalies,
    })
}
