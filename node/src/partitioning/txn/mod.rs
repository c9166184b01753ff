//! Cross-partition transactions: two-phase commit in the style of Percolator and
//! CockroachDB, as two sans-IO cores.
//!
//! - [`participant::Participant`]: one partition's transactional state, the part of its
//!   state machine a transaction touches: write intents, read markers, transaction records,
//!   and the versions it commits. Every request is one command applied through the
//!   partition's log, so all of it is durable and replicated; its answer is data.
//! - [`coordinator::Coordinator`]: one transaction's driver: it asks every participant to
//!   prepare, commits at the transaction record, then resolves the other participants. It
//!   keeps nothing durable: if it dies, readers finish its work from the record.
//!
//! The protocol, and why each step is there:
//! 1. **Prepare.** Each participant checks its part (no other transaction's intent or read
//!    marker on a key it writes, no intent on a key it reads, nothing committed to either
//!    after the transaction's start), then lays intents on its writes and markers on its
//!    reads, and answers with the values read at the start timestamp. The *primary*
//!    participant (the first key's partition) also writes the transaction record, `Pending`.
//!    A participant that cannot prepare refuses: the transaction aborts (no waiting, so no
//!    deadlock).
//! 2. **Commit point.** Once every participant has prepared, the coordinator asks the
//!    primary to flip the record to `Committed` at a commit timestamp. That one durable
//!    write decides the transaction; the client is told it committed when it is applied.
//! 3. **Resolve.** The coordinator tells the other participants the outcome; each turns its
//!    intents into committed versions (or drops them) and releases its markers.
//! 4. **Recovery.** A coordinator can die anywhere. A participant (in the node: a reader
//!    that meets an intent) asks the primary for the record: a `Pending` record past its
//!    heartbeat TTL is aborted there, durably, so a late `Commit` is refused; a missing
//!    record is written `Aborted` for the same reason. The answer resolves the intent.
//!
//! The record's status only ever moves `Pending → Committed` or `Pending → Aborted`, once:
//! every participant's resolution follows it, so either all commit or none does.
//! Serializability comes from the markers: a transaction holds its reads against writers
//! until it is resolved, and a commit timestamp above every start timestamp it read at.
//!
//! Seeded bugs ([`TxnBugs`]): `commit_before_all_prepared` (the coordinator commits once the
//! primary alone has prepared) and `forget_decision_on_crash` (the primary keeps a record's
//! decision in memory only, so a restart brings it back to `Pending`).

pub mod coordinator;
pub mod participant;
pub mod wire;

use serde::{Deserialize, Serialize};

pub use coordinator::{Coordinator, CoordinatorState};
pub use participant::{Participant, Resolution, VersionMap, Versions};

/// A transaction's id: unique in the cluster (the coordinating node's id and a counter).
pub type TxnId = u64;
/// A partition taking part in a transaction.
pub type PartitionId = u64;
/// A key, as the store holds it.
pub type Key = Vec<u8>;
/// A value; `None` deletes.
pub type Value = Option<Vec<u8>>;

/// A transaction record's status: the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TxnStatus {
    /// Undecided: the coordinator may still commit it, or recovery abort it.
    Pending,
    /// Committed at this timestamp.
    Committed(u64),
    /// Aborted: nothing it wrote is visible, ever.
    Aborted,
}

impl TxnStatus {
    /// Decided, either way.
    pub fn is_final(self) -> bool {
        !matches!(self, TxnStatus::Pending)
    }
}

/// What one participant does for one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Part {
    /// Keys read (at the start timestamp).
    pub reads: Vec<Key>,
    /// Keys written, with their new values.
    pub writes: Vec<(Key, Value)>,
    /// Keys appended to, with the elements: the participant computes the new list from
    /// the value at the start timestamp (which the prepare's checks make the newest), so
    /// a coordinator need not know it before laying the intent.
    pub appends: Vec<(Key, Vec<Vec<u8>>)>,
}

/// The isolation a transaction asks for, as its participants apply it at prepare.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Level {
    /// Reads hold markers against writers until the transaction is decided, and are
    /// refused if anything newer than the start was committed: serializable, and strict
    /// (a read never misses what committed before the transaction began).
    #[default]
    Serializable,
    /// Reads see the snapshot at the start timestamp and hold nothing; a write is refused
    /// if anything newer than the start was committed to its key (first committer wins):
    /// snapshot isolation, which allows write skew.
    Snapshot,
    /// Reads see the latest committed value when they prepare, whatever the start;
    /// writes as under snapshot isolation.
    ReadCommitted,
}

/// A transaction's shape, as every participant learns it at prepare.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnMeta {
    /// Its id.
    pub id: TxnId,
    /// The partition holding its record.
    pub primary: PartitionId,
    /// Every participant, the primary included.
    pub participants: Vec<PartitionId>,
    /// Reads see what was committed at or before this timestamp.
    pub start_ts: u64,
    /// How its reads and writes are checked.
    pub isolation: Level,
}

/// Why a participant refused to prepare.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// Another transaction's intent or marker is on a key this one needs.
    Conflict {
        /// The key.
        key: Key,
        /// The other transaction.
        other: TxnId,
        /// Where its record is: whoever meets it can ask there what became of it.
        primary: PartitionId,
    },
    /// A version newer than the start timestamp was committed to a key read or written.
    TooOld {
        /// The key.
        key: Key,
        /// The newer version's timestamp.
        committed_at: u64,
    },
    /// The transaction is already decided here (recovery aborted it, or a retry came late).
    AlreadyDecided(TxnStatus),
    /// The part cannot apply as asked (an append to a value that is not a list).
    Invalid {
        /// The key.
        key: Key,
        /// Why, for the client.
        why: String,
    },
}

/// A request to a participant (a command through its log, in the node).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request {
    /// Phase one: check, lay intents and markers, read.
    Prepare {
        /// The transaction.
        meta: TxnMeta,
        /// This participant's part.
        part: Part,
        /// The participant's clock, for the record's heartbeat (primary only).
        now: u64,
    },
    /// To the primary: decide commit at `commit_ts` (if still pending).
    Commit {
        /// The transaction.
        id: TxnId,
        /// Its commit timestamp.
        commit_ts: u64,
    },
    /// To the primary: decide abort (if still pending).
    Abort {
        /// The transaction.
        id: TxnId,
    },
    /// To the primary: the coordinator is alive; push the record's expiry.
    Heartbeat {
        /// The transaction.
        id: TxnId,
        /// The primary's clock.
        now: u64,
    },
    /// To the primary: what became of `id`? Aborts a pending record older than `ttl`.
    Recover {
        /// The transaction.
        id: TxnId,
        /// The primary's clock.
        now: u64,
        /// How long a record may go without a heartbeat.
        ttl: u64,
    },
    /// To the primary: the record's status, changing nothing (a reader that met an
    /// intent asks it before it resolves anything).
    Query {
        /// The transaction.
        id: TxnId,
    },
    /// To a participant: the decision; resolve intents and release markers.
    Resolve {
        /// The transaction.
        id: TxnId,
        /// Committed or aborted.
        status: TxnStatus,
    },
}

/// A participant's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// Prepared, with the values read (in the order asked).
    Prepared {
        /// The transaction.
        id: TxnId,
        /// Each read key's value at the start timestamp.
        reads: Vec<(Key, Value)>,
    },
    /// Could not prepare.
    Refused {
        /// The transaction.
        id: TxnId,
        /// Why.
        reason: Refusal,
    },
    /// The record's status (to Commit, Abort, Heartbeat and Recover).
    Status {
        /// The transaction.
        id: TxnId,
        /// Its status now.
        status: TxnStatus,
    },
    /// Intents resolved.
    Resolved {
        /// The transaction.
        id: TxnId,
    },
}

/// Seeded bugs, to show the model and the tests catching them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnBugs {
    /// The coordinator decides commit once the primary has prepared, without waiting for
    /// the other participants.
    pub commit_before_all_prepared: bool,
    /// The primary keeps a record's decision only in memory: a restart forgets it.
    pub forget_decision_on_crash: bool,
    /// `read-committed-as-si`: snapshot isolation without its write-write check, so two
    /// transactions that read the same snapshot both write the key (lost updates).
    pub snapshot_without_write_check: bool,
    /// `no-uncertainty-restart`: a serializable read of a key written after its start
    /// timestamp reads the older version instead of restarting above it, so a
    /// coordinator whose clock is behind reads values overwritten before it began.
    pub no_uncertainty_restart: bool,
}
