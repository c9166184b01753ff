//! The node's coordinator for transactions across partitions: the sans-IO
//! [`Coordinator`] core driven over the network.
//!
//! A transaction whose keys are all in one partition never comes here (one log entry,
//! `store::KvStore::transact`). One that spans partitions is planned into a part per
//! partition ([`plan`]), then run as two-phase commit: every request is a `TxnPart` RPC
//! routed to the partition's leader, which applies it through the partition's log. The
//! coordinator keeps nothing durable; the record on the primary (the first key's
//! partition) decides.
//!
//! Why it is shaped this way:
//! - Writes must be known when intents are laid, but a micro-op's result may depend on
//!   what is read. So a key's writes are planned as a final value (a write or delete
//!   last) or as elements appended to whatever the key holds at the start timestamp,
//!   which the participant computes; the client's results are computed afterwards from
//!   the values the prepares read, by the same [`execute`] the fast path runs.
//! - Compares are checked once every participant has prepared and before the commit is
//!   sent: a failed one aborts instead (`Coordinator::withdraw`).
//! - A refusal (a conflicting intent, a version newer than the start) aborts the attempt;
//!   the transaction is tried again with a new id and a later start timestamp. A
//!   conflicting transaction whose record is past its TTL is aborted at its primary and
//!   its intent resolved, so a dead coordinator blocks nobody for long.
//! - The level it asks for is its participants' to apply (`txn::Level`): serializable
//!   reads hold markers until it is decided and are refused past the start timestamp;
//!   snapshot reads take the snapshot at the start and hold nothing (write skew can
//!   commit); read-committed reads take the latest committed value. Writes are checked
//!   first-committer-wins at every level.
//! - The client is answered once the primary has decided; telling the other
//!   participants goes on in the background.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::time::Instant;
use tonic::Status;

use crate::client::router::{RoutingClient, Target, prepare};
use crate::partitioning::txn::coordinator::Send;
use crate::partitioning::txn::{
    Coordinator, CoordinatorState, Part, PartitionId, Refusal, Reply, Request, TxnBugs, TxnId,
    TxnMeta, TxnStatus, wire,
};
use crate::proto::kv::{MicroOp, MicroOpResult, TxnPartRequest, micro_op};
use crate::store::{Executed, decode_list, encode_list, execute, not_a_list, pack, unpack};
use crate::time::hlc::HybridClock;

/// Attempts of one transaction (each a fresh id and start timestamp) before the client
/// is told it conflicted.
pub const ATTEMPTS_MAX: usize = 8;
/// A pending record not heard from for this long may be aborted by whoever meets its
/// intents. Heartbeats come far more often; it is well above the clocks' allowed offset.
pub const TXN_TTL: Duration = Duration::from_secs(2);
/// How long one round of requests may wait before the unanswered ones are sent again.
const ROUND_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long the background resolution after a decision keeps trying; past it, whoever
/// meets a leftover intent resolves it from the record.
const RESOLVE_FOR: Duration = Duration::from_secs(30);
/// Pause before an attempt that conflicted is tried again, doubled each time.
const CONFLICT_PAUSE: Duration = Duration::from_millis(5);

/// The TTL in packed-timestamp units (milliseconds above the logical bits).
pub fn ttl_packed() -> u64 {
    pack(crate::time::Timestamp {
        wall_ms: TXN_TTL.as_millis() as u64,
        logical: 0,
    })
}

/// The coordinator's hybrid clock: start and commit timestamps, moved forward by every
/// newer timestamp a participant reports.
pub struct TxnClock {
    hlc: Mutex<HybridClock>,
    wall: super::clock::TimerClock,
}

impl TxnClock {
    pub fn new(wall: super::clock::TimerClock, max_offset_ms: u64) -> TxnClock {
        TxnClock {
            hlc: Mutex::new(HybridClock::new(max_offset_ms)),
            wall,
        }
    }

    /// A packed timestamp above every one issued or witnessed.
    pub fn now(&self) -> u64 {
        let mut hlc = self.hlc.lock().expect("the clock lock is never poisoned");
        let physical = self.wall.wall_ms();
        match hlc.now(physical) {
            Ok(t) => pack(t),
            // The logical counter overflowed: the last timestamp still orders.
            Err(_) => pack(hlc.last()) + 1,
        }
    }

    /// A timestamp seen elsewhere: later ones issued here are above it (unless it is
    /// further ahead than clocks may be apart, which the caller handles).
    pub fn witness(&self, ts: u64) {
        let mut hlc = self.hlc.lock().expect("the clock lock is never poisoned");
        let physical = self.wall.wall_ms();
        let _ = hlc.update(unpack(ts), physical);
    }
}

/// Transactions met in the way of this node's requests, since when, and when this node
/// last asked their primary to recover them. Only the primary can tell a dead coordinator
/// from a slow one (it holds the record's last heartbeat, on its own clock, and aborts only
/// a record past its TTL), so the first ask comes once the transaction has been in the way
/// for half a TTL and then again every quarter TTL: a coordinator that died is then
/// recovered within about a quarter TTL of its record going stale, however late this node
/// first met it. Asking at once would abort live transactions whose record is not written
/// yet (their prepares run in parallel), and contended keys would livelock; each ask is a
/// write to the primary's log, so they are spaced.
#[derive(Default)]
pub struct Blockers {
    seen: Mutex<std::collections::HashMap<TxnId, Blocker>>,
}

#[derive(Clone, Copy)]
struct Blocker {
    since: Instant,
    asked: Option<Instant>,
}

impl Blockers {
    /// Notes `txn` in the way; whether to ask its primary to recover it now.
    pub fn due(&self, txn: TxnId) -> bool {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .expect("the blockers lock is never poisoned");
        if seen.len() > 4_096 {
            seen.retain(|_, b| now.duration_since(b.since) < 10 * TXN_TTL);
        }
        let blocker = seen.entry(txn).or_insert(Blocker {
            since: now,
            asked: None,
        });
        let due = now.duration_since(blocker.since) >= TXN_TTL / 2
            && blocker
                .asked
                .is_none_or(|asked| now.duration_since(asked) >= TXN_TTL / 4);
        if due {
            blocker.asked = Some(now);
        }
        due
    }
}

/// Counts of the cross-partition transactions this node has coordinated, for `Status`:
/// attempts over transactions is how often one was refused and tried again.
#[derive(Default)]
pub struct TxnStats {
    pub transactions: std::sync::atomic::AtomicU64,
    pub attempts: std::sync::atomic::AtomicU64,
}

/// What a transaction does to one key, planned before anything is read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    Untouched,
    /// Its final value (`None`: deleted), whatever it held before.
    Set(Option<Vec<u8>>),
    /// Elements appended to what it held at the start timestamp.
    Append(Vec<Vec<u8>>),
}

/// Splits a transaction into one part per partition (`locate` names a key's partition):
/// the keys whose value at the start timestamp a result or a compare depends on are
/// read; every other touched key is written or appended to. An append after a write of
/// a value that is not a list is refused here, as the fast path refuses it.
pub fn plan(
    ops: &[MicroOp],
    locate: impl Fn(&[u8]) -> PartitionId,
) -> Result<BTreeMap<PartitionId, Part>, String> {
    let mut keys: BTreeMap<Vec<u8>, (Effect, bool)> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let key = crate::partitioning::range::micro_op_key(op)
            .ok_or_else(|| format!("micro-op {} is empty; nothing was written", i + 1))?;
        let (effect, needs_base) = keys
            .entry(key.to_vec())
            .or_insert((Effect::Untouched, false));
        let base_visible = !matches!(effect, Effect::Set(_));
        match op.op.as_ref().expect("checked above") {
            micro_op::Op::Read(_) | micro_op::Op::Compare(_) => *needs_base |= base_visible,
            micro_op::Op::Write(w) => *effect = Effect::Set(Some(w.value.clone())),
            micro_op::Op::Delete(_) => *effect = Effect::Set(None),
            micro_op::Op::Append(a) => match effect {
                Effect::Untouched => *effect = Effect::Append(vec![a.element.clone()]),
                Effect::Append(elements) => elements.push(a.element.clone()),
                Effect::Set(None) => {
                    *effect = Effect::Set(Some(encode_list(std::slice::from_ref(&a.element))))
                }
                Effect::Set(Some(value)) => {
                    let mut list = decode_list(value).ok_or_else(|| not_a_list(i + 1, key))?;
                    list.push(a.element.clone());
                    *effect = Effect::Set(Some(encode_list(&list)));
                }
            },
        }
    }
    let mut parts: BTreeMap<PartitionId, Part> = BTreeMap::new();
    for (key, (effect, needs_base)) in keys {
        let part = parts.entry(locate(&key)).or_insert_with(|| Part {
            reads: Vec::new(),
            writes: Vec::new(),
            appends: Vec::new(),
        });
        if needs_base {
            part.reads.push(key.clone());
        }
        match effect {
            Effect::Untouched => {}
            Effect::Set(value) => part.writes.push((key, value)),
            Effect::Append(elements) => part.appends.push((key, elements)),
        }
    }
    Ok(parts)
}

/// How a cross-partition transaction ended, for the client.
#[derive(Debug)]
pub enum Outcome {
    /// Committed at `commit_ts`; `revision` is the primary's log entry that decided it.
    Committed {
        results: Vec<MicroOpResult>,
        commit_ts: u64,
        revision: u64,
    },
    /// A compare failed (1-based index): nothing was written.
    FailedCompare {
        index: u32,
        results: Vec<MicroOpResult>,
    },
}

/// One request to one participant, through the router (which finds the partition's
/// leader and follows redirections). The answer and the revision that applied it.
async fn send_part(
    router: &RoutingClient,
    send: &Send,
    timeout: Duration,
) -> Result<(Reply, u64), Status> {
    let part = wire::request_to_wire(&send.request).encode_to_vec();
    let (_, response) = router
        .call(Target::Partition(send.to), timeout, |mut c, d, left| {
            let request = prepare(TxnPartRequest { part: part.clone() }, d.as_ref(), left);
            async move { c.txn_part(request).await.map(|r| r.into_inner()) }
        })
        .await?;
    let reply = crate::proto::raft::TxnPartReply::decode(response.reply.as_slice())
        .map_err(|e| Status::internal(format!("a participant's answer did not decode: {e}")))?;
    let reply = wire::reply_from_wire(&reply).map_err(Status::internal)?;
    Ok((reply, response.revision))
}

/// Runs one round: every send at once; the answers in order (an error for one that
/// failed or timed out).
async fn round(
    router: &Arc<RoutingClient>,
    sends: &[Send],
    deadline: Instant,
) -> Vec<Result<(Reply, u64), Status>> {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = left.min(ROUND_TIMEOUT);
    let tasks: Vec<_> = sends
        .iter()
        .map(|send| {
            let (router, send) = (router.clone(), send.clone());
            tokio::spawn(async move { send_part(&router, &send, timeout).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(
            task.await
                .unwrap_or_else(|e| Err(Status::internal(format!("a request task failed: {e}")))),
        );
    }
    answers
}

/// The coordinator's side of one transaction attempt.
pub struct Attempt<'a> {
    pub router: &'a Arc<RoutingClient>,
    pub clock: &'a Arc<TxnClock>,
    pub blockers: &'a Blockers,
    pub stats: &'a TxnStats,
    pub failpoints: &'a super::clock::Failpoints,
    pub ops: &'a [MicroOp],
    pub isolation: crate::partitioning::txn::Level,
    pub bugs: TxnBugs,
}

/// What one attempt came to.
enum Tried {
    Done(Outcome),
    /// Aborted before it committed anything; worth another attempt (the refusal says why).
    Retry(Option<Refusal>),
    /// Cannot succeed as asked: a participant refused it for good.
    Refused(String),
    /// The deadline passed before the primary decided: it may yet commit.
    Undecided,
    /// Aborted because its keys moved since it was planned.
    Moved,
}

impl Attempt<'_> {
    /// Runs the transaction to a decision, trying again after refusals that a later
    /// attempt can get past.
    pub async fn run(
        &self,
        parts: BTreeMap<PartitionId, Part>,
        primary: PartitionId,
        node_id: u64,
        deadline: Instant,
    ) -> Result<Outcome, Status> {
        // Stop short of the client's deadline, so that it hears how the transaction ended
        // instead of its own timeout.
        let margin = deadline
            .saturating_duration_since(Instant::now())
            .mul_f64(0.1)
            .min(Duration::from_millis(100));
        let deadline = deadline - margin;
        let mut pause = CONFLICT_PAUSE;
        let mut floor = 0;
        let mut last = None;
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        for _ in 0..ATTEMPTS_MAX {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let start_ts = self.clock.now().max(floor);
            let meta = TxnMeta {
                id: new_id(node_id),
                primary,
                participants: parts.keys().copied().collect(),
                start_ts,
                isolation: self.isolation,
            };
            let mut coordinator = Coordinator::new(meta, parts.clone(), self.bugs);
            match self.once(&mut coordinator, deadline).await {
                Tried::Done(outcome) => return Ok(outcome),
                Tried::Refused(why) => return Err(Status::failed_precondition(why)),
                Tried::Moved => {
                    return Err(Status::aborted(
                        "the transaction's keys moved to other partitions (a split or merge) since it was planned; not applied, retry",
                    ));
                }
                Tried::Undecided => {
                    return Err(Status::unavailable(
                        "the transaction was not decided before the deadline; it may or may not be applied",
                    ));
                }
                Tried::Retry(refusal) => {
                    match &refusal {
                        // Something newer was committed where it reads or writes: start
                        // above it, so the next attempt sees it.
                        Some(Refusal::TooOld { committed_at, .. }) => {
                            self.clock.witness(*committed_at);
                            floor = floor.max(committed_at + 1);
                        }
                        Some(Refusal::Conflict { .. }) | None | Some(_) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            tokio::time::sleep(pause.min(left)).await;
                            pause = (pause * 2).min(ROUND_TIMEOUT);
                        }
                    }
                    last = refusal;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(Status::aborted(format!(
            "the transaction was refused on every attempt (last: {}); not applied, retry",
            last.map_or_else(|| "no answer".to_string(), |r| describe(&r))
        )))
    }

    async fn once(&self, c: &mut Coordinator, deadline: Instant) -> Tried {
        let primary = c.meta().primary;
        let mut sends = c.start(self.clock.now());
        // Armed, txn-after-reads holds back the prepares that write until the read-only
        // ones have answered, and sits between them: two transactions that each read what
        // the other writes then both read before either writes, which is the write skew
        // snapshot isolation allows (a held-back message is only a slow one to the core).
        let mut held_back = Vec::new();
        if self.failpoints.armed("txn-after-reads") {
            let (reads, writes): (Vec<Send>, Vec<Send>) =
                sends.iter().cloned().partition(|s| match &s.request {
                    Request::Prepare { part, .. } => {
                        part.writes.is_empty() && part.appends.is_empty()
                    }
                    _ => false,
                });
            if !reads.is_empty() && !writes.is_empty() {
                sends = reads;
                held_back = writes;
            }
        }
        let mut revision = 0;
        let mut withdrawn = false;
        // Transactions whose intents or markers refused a prepare: settled (from their
        // record, or recovered once stale) before the next attempt.
        let mut in_the_way: Vec<(TxnId, PartitionId, PartitionId)> = Vec::new();
        loop {
            if let Some(status) = c.outcome() {
                let writes = |part: &Part| !(part.writes.is_empty() && part.appends.is_empty());
                let seen_and_unseen = c
                    .parts()
                    .iter()
                    .any(|(p, part)| *p != primary && writes(part))
                    && c.parts().get(&primary).is_some_and(writes);
                if let TxnStatus::Committed(_) = status
                    && seen_and_unseen
                {
                    // Decided at the primary (its writes there visible), no other
                    // participant told: readers must resolve the intents it leaves.
                    self.failpoints.hit("txn-after-commit").await;
                }
                let tried = match (status, c.refusal()) {
                    (TxnStatus::Committed(commit_ts), _) => match execute(
                        self.ops,
                        |k| c.reads().get(k).cloned().flatten(),
                        true,
                        false,
                    ) {
                        Executed::Done { results, .. } => Tried::Done(Outcome::Committed {
                            results,
                            commit_ts,
                            revision,
                        }),
                        // Checked before the commit was sent; a commit without it would
                        // be a bug here, not in the participants.
                        other => Tried::Refused(format!(
                            "the transaction committed but its results could not be computed: {other:?}"
                        )),
                    },
                    (_, Some(Refusal::Invalid { why, .. })) if !why.is_empty() => {
                        Tried::Refused(why.clone())
                    }
                    // A participant no longer holds its keys: planned against a map
                    // older than a split or merge.
                    (_, Some(Refusal::Invalid { .. })) => Tried::Moved,
                    // Withdrawn here: every participant prepared and a compare failed.
                    (_, None) if withdrawn => match self.compare_failure(c) {
                        Some(outcome) => Tried::Done(outcome),
                        None => Tried::Retry(None),
                    },
                    (_, refusal) => Tried::Retry(refusal.cloned()),
                };
                if !matches!(c.state(), CoordinatorState::Done(_)) {
                    tokio::spawn(finish(self.router.clone(), c.clone()));
                }
                if matches!(tried, Tried::Retry(_)) {
                    for (txn, at, holder) in in_the_way.drain(..) {
                        settle(self.router, self.blockers, txn, at, holder, deadline).await;
                    }
                }
                return tried;
            }
            if Instant::now() >= deadline {
                // Undecided: ask the primary to abort, so the client's "may or may not"
                // is resolved soon, and leave the rest to recovery.
                if let Some(abort) = undecided_abort(c) {
                    let router = self.router.clone();
                    tokio::spawn(async move {
                        let deadline = Instant::now() + ROUND_TIMEOUT;
                        let _ = round(&router, &abort, deadline).await;
                    });
                }
                return Tried::Undecided;
            }
            if sends.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(CONFLICT_PAUSE.min(left)).await;
                sends = c.on_timeout(self.clock.now());
                continue;
            }
            let answers = round(self.router, &sends, deadline).await;
            let mut next = Vec::new();
            let mut answered = false;
            for (send, answer) in sends.iter().zip(answers) {
                let reply = match answer {
                    Ok((reply, at)) => {
                        if send.to == primary {
                            revision = at;
                        }
                        reply
                    }
                    // A prepare a partition cannot take (its keys moved away since the
                    // plan, or a malformed part): the attempt aborts.
                    Err(status)
                        if status.code() == tonic::Code::FailedPrecondition
                            && matches!(send.request, Request::Prepare { .. }) =>
                    {
                        Reply::Refused {
                            id: c.meta().id,
                            reason: Refusal::Invalid {
                                key: Vec::new(),
                                why: String::new(),
                            },
                        }
                    }
                    Err(_) => continue,
                };
                answered = true;
                if let Reply::Refused {
                    reason: Refusal::Conflict { other, primary, .. },
                    ..
                } = &reply
                {
                    in_the_way.push((*other, *primary, send.to));
                }
                let out = c.on_reply(send.to, reply, self.clock.now());
                let committing = matches!(c.state(), CoordinatorState::Committing(_));
                if committing && !out.is_empty() {
                    // Every participant prepared, nothing decided: where a coordinator's
                    // death leaves the most behind.
                    self.failpoints.hit("txn-after-prepare").await;
                }
                if committing && !out.is_empty() && self.compare_failure(c).is_some() {
                    withdrawn = true;
                    next.extend(c.withdraw());
                } else {
                    next.extend(out);
                }
            }
            if !held_back.is_empty() {
                if matches!(c.state(), CoordinatorState::Preparing) {
                    self.failpoints.hit("txn-after-reads").await;
                    next.append(&mut held_back);
                } else {
                    // Refused or decided already: those prepares are never sent, as if
                    // lost, and the abort covers them.
                    held_back.clear();
                }
            }
            if !answered {
                // Nothing came back this round: the unanswered go again.
                sends = c.on_timeout(self.clock.now());
            } else if next.is_empty() && c.outcome().is_none() {
                sends = c.on_timeout(self.clock.now());
            } else {
                sends = next;
            }
        }
    }

    /// If every participant prepared and a compare (or an append) does not hold against
    /// what they read, the outcome to report instead of a commit.
    fn compare_failure(&self, c: &Coordinator) -> Option<Outcome> {
        match execute(
            self.ops,
            |k| c.reads().get(k).cloned().flatten(),
            true,
            false,
        ) {
            Executed::FailedCompare { index, results, .. } => {
                Some(Outcome::FailedCompare { index, results })
            }
            _ => None,
        }
    }
}

/// An undecided coordinator's abort request to its primary, if it has not sent a commit.
fn undecided_abort(c: &mut Coordinator) -> Option<Vec<Send>> {
    match c.state() {
        CoordinatorState::Preparing => {
            // A prepare refusal from nobody: the core aborts at the primary.
            let id = c.meta().id;
            let sends = c.on_reply(
                c.meta().primary,
                Reply::Refused {
                    id,
                    reason: Refusal::AlreadyDecided(TxnStatus::Aborted),
                },
                0,
            );
            Some(sends)
        }
        CoordinatorState::Aborting => Some(c.on_timeout(0)),
        _ => None,
    }
}

/// Tells the remaining participants the decision, in the background.
async fn finish(router: Arc<RoutingClient>, mut c: Coordinator) {
    let until = Instant::now() + RESOLVE_FOR;
    let mut sends = c.on_timeout(0);
    while !sends.is_empty() && Instant::now() < until {
        let answers = round(&router, &sends, until).await;
        for (send, answer) in sends.iter().zip(answers) {
            if let Ok((reply, _)) = answer {
                c.on_reply(send.to, reply, 0);
            }
        }
        if matches!(c.state(), CoordinatorState::Done(_)) {
            return;
        }
        tokio::time::sleep(CONFLICT_PAUSE).await;
        sends = c.on_timeout(0);
    }
}

/// One request to transaction `txn`'s record on `primary`, for a request held on
/// `holder`; its answer is logged at debug, since how resolution went is read from these.
async fn ask_primary(
    router: &Arc<RoutingClient>,
    (txn, primary, holder): (TxnId, PartitionId, PartitionId),
    request: Request,
    deadline: Instant,
) -> Option<Result<(Reply, u64), Status>> {
    let kind = match &request {
        Request::Recover { .. } => "recover",
        _ => "query",
    };
    let ask = Send {
        to: primary,
        request,
    };
    let asked = Instant::now();
    let answer = round(router, std::slice::from_ref(&ask), deadline)
        .await
        .pop();
    tracing::debug!(
        txn,
        primary,
        holder,
        ?answer,
        took_ms = asked.elapsed().as_millis() as u64,
        "{kind}"
    );
    answer
}

/// Recovery of a transaction met in the way: its primary aborts it if its record is past
/// its TTL (or never existed), and a decision is carried to the partition that holds its
/// intent or marker. A live transaction is left alone.
pub async fn recover(
    router: &Arc<RoutingClient>,
    txn: TxnId,
    primary: PartitionId,
    holder: PartitionId,
) {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let request = Request::Recover {
        id: txn,
        // The primary's leader puts in its own clock.
        now: 0,
        ttl: ttl_packed(),
    };
    let answer = ask_primary(router, (txn, primary, holder), request, deadline).await;
    let Some(Ok((Reply::Status { status, .. }, _))) = answer else {
        return;
    };
    if !status.is_final() || holder == primary {
        return;
    }
    let tell = Send {
        to: holder,
        request: Request::Resolve { id: txn, status },
    };
    let _ = round(router, std::slice::from_ref(&tell), deadline).await;
}

/// How long a reader or writer waits before it looks again at a live transaction in its
/// way.
const SETTLE_PAUSE: Duration = Duration::from_millis(10);

/// One step toward getting transaction `txn` (record on `primary`) out of the way of a
/// read or write on partition `holder`: if the record is decided, the holder is told
/// (its intent becomes a version or goes); if it is pending and has been in the way long
/// enough ([`Blockers::due`]), its primary is asked to recover it; otherwise a short
/// pause, since it is most likely finishing.
/// The caller tries its request again after each step.
pub async fn settle(
    router: &Arc<RoutingClient>,
    blockers: &Blockers,
    txn: TxnId,
    primary: PartitionId,
    holder: PartitionId,
    deadline: Instant,
) {
    let deadline = deadline.min(Instant::now() + ROUND_TIMEOUT);
    let request = Request::Query { id: txn };
    let answer = ask_primary(router, (txn, primary, holder), request, deadline).await;
    match answer {
        Some(Ok((Reply::Status { status, .. }, _))) if status.is_final() => {
            let tell = Send {
                to: holder,
                request: Request::Resolve { id: txn, status },
            };
            let _ = round(router, std::slice::from_ref(&tell), deadline).await;
        }
        Some(Ok(_)) if blockers.due(txn) => recover(router, txn, primary, holder).await,
        _ => {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(SETTLE_PAUSE.min(left)).await;
        }
    }
}

/// A transaction id: the node's id in the top bits (for reading logs) and random bits
/// below, so ids stay unique across restarts without anything stored.
fn new_id(node_id: u64) -> TxnId {
    ((node_id & 0xfff) << 52) | (rand::random::<u64>() >> 12)
}

/// A refusal in words.
fn describe(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Conflict { key, other, .. } => format!(
            "key {:?} is held by transaction {other}",
            String::from_utf8_lossy(key)
        ),
        Refusal::TooOld { key, .. } => format!(
            "key {:?} was written after the transaction started",
            String::from_utf8_lossy(key)
        ),
        Refusal::AlreadyDecided(status) => format!("already decided ({status:?})"),
        Refusal::Invalid { key, why } if why.is_empty() => format!(
            "a participant could not take its part (its keys moved{}); the map is being refreshed",
            if key.is_empty() {
                String::new()
            } else {
                format!(", at {:?}", String::from_utf8_lossy(key))
            }
        ),
        Refusal::Invalid { why, .. } => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::kv::{TxnAppend, TxnRead, TxnWrite};

    fn read(k: &str) -> MicroOp {
        MicroOp {
            op: Some(micro_op::Op::Read(TxnRead {
                key: k.as_bytes().to_vec(),
            })),
        }
    }
    fn write(k: &str, v: &str) -> MicroOp {
        MicroOp {
            op: Some(micro_op::Op::Write(TxnWrite {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })),
        }
    }
    fn append(k: &str, e: &str) -> MicroOp {
        MicroOp {
            op: Some(micro_op::Op::Append(TxnAppend {
                key: k.as_bytes().to_vec(),
                element: e.as_bytes().to_vec(),
            })),
        }
    }

    /// Keys before "m" are in partition 1, the rest in 2.
    fn locate(k: &[u8]) -> PartitionId {
        if k < b"m".as_slice() { 1 } else { 2 }
    }

    #[test]
    fn a_plan_reads_only_what_a_result_depends_on() {
        let ops = [
            append("a", "1"),
            read("a"),
            write("x", "v"),
            read("x"),
            append("y", "2"),
            append("y", "3"),
        ];
        let parts = plan(&ops, locate).unwrap();
        let one = &parts[&1];
        assert_eq!(one.reads, vec![b"a".to_vec()]);
        assert_eq!(one.appends, vec![(b"a".to_vec(), vec![b"1".to_vec()])]);
        let two = &parts[&2];
        // x's read sees the transaction's own write: no need for its old value.
        assert!(two.reads.is_empty(), "{two:?}");
        assert_eq!(two.writes, vec![(b"x".to_vec(), Some(b"v".to_vec()))]);
        assert_eq!(
            two.appends,
            vec![(b"y".to_vec(), vec![b"2".to_vec(), b"3".to_vec()])]
        );
    }

    #[test]
    fn an_append_after_a_plain_write_is_refused_naming_the_micro_op() {
        let why = plan(&[write("a", "v"), append("a", "1")], locate).unwrap_err();
        assert!(
            why.contains("micro-op 2") && why.contains("not a list"),
            "{why}"
        );
        // After a delete the key holds a fresh list.
        let parts = plan(
            &[
                write("a", "v"),
                MicroOp {
                    op: Some(micro_op::Op::Delete(crate::proto::kv::TxnDelete {
                        key: b"a".to_vec(),
                    })),
                },
                append("a", "1"),
            ],
            locate,
        )
        .unwrap();
        assert_eq!(
            parts[&1].writes,
            vec![(b"a".to_vec(), Some(encode_list(&[b"1".to_vec()])))]
        );
    }

    #[test]
    fn results_computed_from_the_prepared_reads_match_the_fast_path() {
        // The same micro-ops against the same starting values: the coordinator's results
        // (from the participants' reads) are the store's.
        let ops = [
            read("a"),
            append("a", "2"),
            read("a"),
            write("n", "x"),
            read("n"),
        ];
        let base: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            [(b"a".to_vec(), Some(encode_list(&[b"1".to_vec()])))].into();
        let Executed::Done { results, .. } =
            execute(&ops, |k| base.get(k).cloned().flatten(), true, false)
        else {
            panic!("runs");
        };
        assert_eq!(results[0].elements, vec![b"1".to_vec()]);
        assert_eq!(results[2].elements, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(results[4].value, b"x".to_vec());
    }
}
