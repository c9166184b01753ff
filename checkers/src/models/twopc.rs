//! A stateright model of the node's own two-phase commit cores
//! (`faultline_node::partitioning::txn`): coordinators driving transactions over two
//! partitions, over a network that reorders and loses messages, with coordinators that
//! crash (and never come back: their transactions are left to recovery) and partitions that
//! restart, and recovery started by any partition holding an undecided intent.
//!
//! Properties, checked in every reachable state:
//! - *atomicity*: every partition that resolved a transaction resolved it the same way, and
//!   the same way as its record;
//! - *no commit without every prepare*: a committed record's transaction prepared on every
//!   participant;
//! - *serializable*: replaying the transactions the clients were told committed, in
//!   commit-timestamp order, gives every one of them the values it read;
//! - *decided once faults stop*: from here, with no more crashes or losses, delivering every
//!   message and letting timeouts and recovery run leaves every transaction decided, no
//!   intent or marker anywhere, and every live coordinator done.
//!
//! `sometimes` witnesses: a transaction committed; one aborted after a conflict; recovery
//! decided a transaction whose coordinator had crashed.
//!
//! Abstracted away: each partition is one durable participant (its Raft group, modelled
//! by chapter 1's model, makes it so); time is one logical clock shared by all, so TTLs
//! never matter for safety (recovery may abort any pending record, as if its TTL passed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use faultline_node::partitioning::txn::{
    Coordinator, CoordinatorState, Part, Participant, Reply, Request, TxnBugs, TxnMeta, TxnStatus,
};
use stateright::{Checker, Model, Property};

/// A seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoPcBug {
    /// The coordinator commits once the primary has prepared.
    CommitBeforeAllPrepared,
    /// The primary keeps its decision in memory only.
    ForgetDecisionOnCrash,
}

impl std::str::FromStr for TwoPcBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "commit-before-all-prepared" => Ok(TwoPcBug::CommitBeforeAllPrepared),
            "forget-decision-on-crash" => Ok(TwoPcBug::ForgetDecisionOnCrash),
            other => Err(format!(
                "no 2pc bug {other:?}; choose commit-before-all-prepared or forget-decision-on-crash"
            )),
        }
    }
}

/// One transaction of the scenario: for each partition, keys read and keys written.
#[derive(Clone, Debug)]
pub struct ScriptTxn {
    /// `(partition, reads, writes)`, the first partition holding the record.
    pub parts: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

/// Bounds and switches.
#[derive(Clone, Debug)]
pub struct TwoPcOptions {
    /// Partitions, numbered 1..=n.
    pub partitions: u64,
    /// The transactions, one coordinator each.
    pub txns: Vec<ScriptTxn>,
    /// States with more messages in flight are not explored.
    pub max_in_flight: usize,
    /// Messages the network may lose over a run.
    pub max_drops: usize,
    /// Coordinator crashes over a run.
    pub max_coordinator_crashes: usize,
    /// Partition restarts over a run.
    pub max_restarts: usize,
    /// Timeouts (retries) per coordinator.
    pub max_timeouts: usize,
    /// Recoveries each partition may start.
    pub max_recoveries: usize,
    /// A seeded bug.
    pub bug: Option<TwoPcBug>,
    /// Checker threads.
    pub threads: usize,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// Stop at the first violation.
    pub stop_at_first_violation: bool,
}

impl Default for TwoPcOptions {
    /// The bounds CI checks exhaustively: a write skew attempt across two partitions (T1
    /// reads x on 1 and writes y on 2; T2 reads y on 2 and writes x on 1), each record on
    /// the partition of its first key.
    fn default() -> Self {
        TwoPcOptions {
            partitions: 2,
            txns: vec![
                ScriptTxn {
                    parts: vec![(1, vec![b'x'], vec![]), (2, vec![], vec![b'y'])],
                },
                ScriptTxn {
                    parts: vec![(2, vec![b'y'], vec![]), (1, vec![], vec![b'x'])],
                },
            ],
            max_in_flight: 3,
            max_drops: 1,
            max_coordinator_crashes: 1,
            max_restarts: 1,
            // Retries multiply states fastest; the liveness property retries anyway.
            max_timeouts: 0,
            max_recoveries: 1,
            bug: None,
            threads: 1,
            timeout: None,
            stop_at_first_violation: false,
        }
    }
}

/// Who a request is from, so its reply can go back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sender {
    /// Transaction `t`'s coordinator.
    Coordinator(usize),
    /// Partition `p`, recovering a transaction it holds an intent of.
    Recovery(u64),
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// A request to a partition.
    Request {
        /// Who asked.
        from: Sender,
        /// The partition.
        to: u64,
        /// The request.
        request: Request,
    },
    /// A reply from partition `from`.
    Reply {
        /// The partition that answered.
        from: u64,
        /// Who it goes to.
        to: Sender,
        /// The reply.
        reply: Reply,
    },
}

/// What a transaction read: key to value.
pub type Reads = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A model state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Partitions 1..=n at positions 0..n.
    pub partitions: Vec<Participant>,
    /// Each transaction's coordinator: `None` before it starts or after it crashed.
    pub coordinators: Vec<Option<Coordinator>>,
    /// Whether each transaction has started.
    pub started: Vec<bool>,
    /// What each client was told, with the values its transaction read.
    pub told: Vec<Option<(TxnStatus, Reads)>>,
    /// The shared logical clock.
    pub clock: u64,
    /// In flight, kept sorted (a multiset).
    pub network: Vec<Message>,
    pub drops: usize,
    pub coordinator_crashes: usize,
    pub restarts: usize,
    pub timeouts: Vec<usize>,
    pub recoveries: Vec<usize>,
    /// Transactions a recovery decided while their coordinator was gone.
    pub recovered_orphan: bool,
}

/// A model action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Start(usize),
    Deliver(usize),
    Drop(usize),
    Timeout(usize),
    CrashCoordinator(usize),
    Restart(u64),
    Recover {
        partition: u64,
        txn: u64,
        primary: u64,
    },
}

/// The model.
pub struct TwoPcModel {
    pub options: TwoPcOptions,
}

fn txn_id(t: usize) -> u64 {
    t as u64 + 1
}

impl TwoPcModel {
    fn bugs(&self) -> TxnBugs {
        TxnBugs {
            commit_before_all_prepared: self.options.bug == Some(TwoPcBug::CommitBeforeAllPrepared),
            forget_decision_on_crash: self.options.bug == Some(TwoPcBug::ForgetDecisionOnCrash),
            snapshot_without_write_check: false,
            no_uncertainty_restart: false,
        }
    }

    fn value(t: usize) -> Option<Vec<u8>> {
        Some(vec![b'0' + t as u8 + 1])
    }

    fn coordinator(&self, t: usize, start_ts: u64) -> Coordinator {
        let script = &self.options.txns[t];
        let meta = TxnMeta {
            id: txn_id(t),
            primary: script.parts[0].0,
            participants: script.parts.iter().map(|p| p.0).collect(),
            start_ts,
            isolation: faultline_node::partitioning::txn::Level::Serializable,
        };
        let parts = script
            .parts
            .iter()
            .map(|(p, reads, writes)| {
                (
                    *p,
                    Part {
                        reads: reads.iter().map(|k| vec![*k]).collect(),
                        writes: writes.iter().map(|k| (vec![*k], Self::value(t))).collect(),
                        appends: Vec::new(),
                    },
                )
            })
            .collect();
        Coordinator::new(meta, parts, self.bugs())
    }

    fn send(
        state: &mut State,
        from: Sender,
        sends: Vec<faultline_node::partitioning::txn::coordinator::Send>,
    ) {
        for s in sends {
            state.network.push(Message::Request {
                from: from.clone(),
                to: s.to,
                request: s.request,
            });
        }
    }

    fn tell(state: &mut State, t: usize) {
        if state.told[t].is_none()
            && let Some(c) = &state.coordinators[t]
            && let Some(status) = c.outcome()
        {
            state.told[t] = Some((status, c.reads().clone()));
        }
    }

    /// Delivers message `i` (removing it); replies to a crashed coordinator vanish.
    fn deliver(state: &mut State, i: usize) {
        match state.network.remove(i) {
            Message::Request { from, to, request } => {
                let reply = state.partitions[to as usize - 1].handle(request);
                state.network.push(Message::Reply {
                    from: to,
                    to: from,
                    reply,
                });
            }
            Message::Reply {
                from,
                to: Sender::Coordinator(t),
                reply,
            } => {
                state.clock += 1;
                let now = state.clock;
                if let Some(c) = state.coordinators[t].as_mut() {
                    let sends = c.on_reply(from, reply, now);
                    Self::send(state, Sender::Coordinator(t), sends);
                    Self::tell(state, t);
                }
            }
            Message::Reply {
                to: Sender::Recovery(p),
                reply,
                ..
            } => {
                if let Reply::Status { id, status } = reply
                    && status.is_final()
                {
                    state.partitions[p as usize - 1].handle(Request::Resolve { id, status });
                    let t = (id - 1) as usize;
                    if state.coordinators[t].is_none() {
                        state.recovered_orphan = true;
                    }
                }
            }
        }
    }

    fn recover_request(partition: u64, txn: u64, primary: u64) -> Message {
        Message::Request {
            from: Sender::Recovery(partition),
            to: primary,
            // The model's clock never makes a TTL matter: any pending record may be aborted.
            request: Request::Recover {
                id: txn,
                now: u64::MAX,
                ttl: 0,
            },
        }
    }

    /// From `state`, with no more faults: deliver everything, retry, recover, until nothing
    /// changes (or a generous bound).
    fn settle(&self, state: &State) -> State {
        let mut s = state.clone();
        for _ in 0..64 {
            let before = s.clone();
            while !s.network.is_empty() {
                Self::deliver(&mut s, 0);
            }
            for t in 0..s.coordinators.len() {
                let now = s.clock;
                if let Some(c) = s.coordinators[t].as_mut()
                    && !matches!(c.state(), CoordinatorState::Done(_))
                {
                    let sends = c.on_timeout(now);
                    Self::send(&mut s, Sender::Coordinator(t), sends);
                }
            }
            for p in 1..=self.options.partitions {
                for (txn, primary) in s.partitions[p as usize - 1].unresolved() {
                    // Leave live coordinators to finish their own work first; an intent
                    // whose coordinator is gone or done is recovery's to resolve.
                    let t = (txn - 1) as usize;
                    let working = s.coordinators[t]
                        .as_ref()
                        .is_some_and(|c| !matches!(c.state(), CoordinatorState::Done(_)));
                    if !working {
                        s.network.push(Self::recover_request(p, txn, primary));
                    }
                }
            }
            if s.network.is_empty() && s == before {
                break;
            }
        }
        s
    }

    fn parts_of(&self, t: usize) -> impl Iterator<Item = u64> + '_ {
        self.options.txns[t].parts.iter().map(|p| p.0)
    }
}

impl Model for TwoPcModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.options.txns.len();
        vec![State {
            partitions: (1..=self.options.partitions)
                .map(|p| Participant::new(p, self.bugs()))
                .collect(),
            coordinators: vec![None; n],
            started: vec![false; n],
            told: vec![None; n],
            clock: 1,
            network: Vec::new(),
            drops: 0,
            coordinator_crashes: 0,
            restarts: 0,
            timeouts: vec![0; n],
            recoveries: vec![0; self.options.partitions as usize],
            recovered_orphan: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let o = &self.options;
        for t in 0..o.txns.len() {
            if !state.started[t] {
                actions.push(Action::Start(t));
            }
            if let Some(c) = &state.coordinators[t] {
                if !matches!(c.state(), CoordinatorState::Done(_))
                    && state.timeouts[t] < o.max_timeouts
                {
                    actions.push(Action::Timeout(t));
                }
                if state.coordinator_crashes < o.max_coordinator_crashes {
                    actions.push(Action::CrashCoordinator(t));
                }
            }
        }
        for i in 0..state.network.len() {
            if i > 0 && state.network[i] == state.network[i - 1] {
                continue;
            }
            actions.push(Action::Deliver(i));
            if state.drops < o.max_drops {
                actions.push(Action::Drop(i));
            }
        }
        if state.restarts < o.max_restarts {
            for p in 1..=o.partitions {
                actions.push(Action::Restart(p));
            }
        }
        for p in 1..=o.partitions {
            if state.recoveries[p as usize - 1] >= o.max_recoveries {
                continue;
            }
            for (txn, primary) in state.partitions[p as usize - 1].unresolved() {
                actions.push(Action::Recover {
                    partition: p,
                    txn,
                    primary,
                });
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Start(t) => {
                state.started[t] = true;
                state.clock += 1;
                let mut c = self.coordinator(t, state.clock);
                let sends = c.start(state.clock);
                state.coordinators[t] = Some(c);
                Self::send(&mut state, Sender::Coordinator(t), sends);
            }
            Action::Deliver(i) => Self::deliver(&mut state, i),
            Action::Drop(i) => {
                state.drops += 1;
                state.network.remove(i);
            }
            Action::Timeout(t) => {
                state.timeouts[t] += 1;
                let now = state.clock;
                let sends = state.coordinators[t].as_mut()?.on_timeout(now);
                Self::send(&mut state, Sender::Coordinator(t), sends);
            }
            Action::CrashCoordinator(t) => {
                state.coordinator_crashes += 1;
                state.coordinators[t] = None;
            }
            Action::Restart(p) => {
                state.restarts += 1;
                state.partitions[p as usize - 1].restart();
            }
            Action::Recover {
                partition,
                txn,
                primary,
            } => {
                state.recoveries[partition as usize - 1] += 1;
                state
                    .network
                    .push(Self::recover_request(partition, txn, primary));
            }
        }
        if state.network.len() > self.options.max_in_flight {
            return None;
        }
        state.network.sort_by_cached_key(|m| format!("{m:?}"));
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("atomicity", |model: &TwoPcModel, state: &State| {
                atomic(model, state)
            }),
            Property::always(
                "no commit without every prepare",
                |model: &TwoPcModel, state: &State| all_prepared(model, state),
            ),
            Property::always("serializable", |model: &TwoPcModel, state: &State| {
                // Every transaction its record says committed, told or not, in commit order;
                // the reads of those whose clients were told must match the replay.
                let mut committed: Vec<(u64, usize)> = (0..model.options.txns.len())
                    .filter_map(|t| {
                        let primary = model.options.txns[t].parts[0].0;
                        match state.partitions[primary as usize - 1].status(txn_id(t)) {
                            TxnStatus::Committed(ts) => Some((ts, t)),
                            _ => None,
                        }
                    })
                    .collect();
                committed.sort();
                let mut data: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
                for (_, t) in committed {
                    if let Some((TxnStatus::Committed(_), reads)) = &state.told[t] {
                        for (k, v) in reads {
                            if data.get(k).cloned().flatten() != *v {
                                return false;
                            }
                        }
                    }
                    for (_, _, writes) in &model.options.txns[t].parts {
                        for k in writes {
                            data.insert(vec![*k], TwoPcModel::value(t));
                        }
                    }
                }
                true
            }),
            Property::always(
                "decided once faults stop",
                |model: &TwoPcModel, state: &State| {
                    let settled = model.settle(state);
                    // Settling retries everything, so this is also where retried and
                    // duplicated requests meet the safety properties.
                    atomic(model, &settled)
                        && all_prepared(model, &settled)
                        && settled.partitions.iter().all(|p| p.unresolved().is_empty())
                        && settled
                            .coordinators
                            .iter()
                            .flatten()
                            .all(|c| matches!(c.state(), CoordinatorState::Done(_)))
                        && (0..model.options.txns.len()).all(|t| {
                            let primary = model.options.txns[t].parts[0].0;
                            let p = &settled.partitions[primary as usize - 1];
                            // A transaction whose prepare never reached its primary left nothing
                            // to decide.
                            !p.has_record(txn_id(t)) || p.status(txn_id(t)).is_final()
                        })
                },
            ),
            Property::sometimes("a transaction committed", |_, state: &State| {
                state
                    .told
                    .iter()
                    .flatten()
                    .any(|(s, _)| matches!(s, TxnStatus::Committed(_)))
            }),
            Property::sometimes("a transaction aborted", |_, state: &State| {
                state
                    .told
                    .iter()
                    .flatten()
                    .any(|(s, _)| *s == TxnStatus::Aborted)
            }),
            Property::sometimes("recovery decided an orphan", |_, state: &State| {
                state.recovered_orphan
            }),
        ]
    }
}

fn atomic(model: &TwoPcModel, state: &State) -> bool {
    (0..model.options.txns.len()).all(|t| {
        let id = txn_id(t);
        let mut outcomes: BTreeSet<Option<u64>> = BTreeSet::new();
        for p in model.parts_of(t) {
            if let Some(r) = state.partitions[p as usize - 1].resolutions().get(&id) {
                outcomes.insert(match r {
                    faultline_node::partitioning::txn::Resolution::Committed(ts) => Some(*ts),
                    faultline_node::partitioning::txn::Resolution::Aborted => None,
                });
            }
        }
        let primary = model.options.txns[t].parts[0].0;
        match state.partitions[primary as usize - 1].status(id) {
            TxnStatus::Committed(ts) => {
                outcomes.insert(Some(ts));
            }
            TxnStatus::Aborted => {
                outcomes.insert(None);
            }
            TxnStatus::Pending => {}
        }
        outcomes.len() <= 1
    })
}

fn all_prepared(model: &TwoPcModel, state: &State) -> bool {
    (0..model.options.txns.len()).all(|t| {
        let id = txn_id(t);
        let primary = model.options.txns[t].parts[0].0;
        !matches!(
            state.partitions[primary as usize - 1].status(id),
            TxnStatus::Committed(_)
        ) || model
            .parts_of(t)
            .all(|p| state.partitions[p as usize - 1].was_prepared(id))
    })
}

/// What a check found.
#[derive(Debug)]
pub struct TwoPcReport {
    pub unique_states: usize,
    pub states: usize,
    pub duration: Duration,
    pub complete: bool,
    /// (property, always?, verdict, counterexample steps).
    pub properties: Vec<(&'static str, bool, &'static str, Vec<String>)>,
}

impl TwoPcReport {
    /// 0 all hold and every witness seen, 1 a property failed, 2 not exhaustive or a witness
    /// missing.
    pub fn exit_code(&self) -> u8 {
        if self.properties.iter().any(|p| p.2 == "VIOLATED") {
            1
        } else if !self.complete
            || self
                .properties
                .iter()
                .any(|p| p.2 != "holds" && p.2 != "witnessed")
        {
            2
        } else {
            0
        }
    }
}

impl std::fmt::Display for TwoPcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "2pc model: {} unique states ({} generated) in {:.1} s, {}",
            self.unique_states,
            self.states,
            self.duration.as_secs_f64(),
            if self.complete {
                "exhaustive"
            } else {
                "NOT exhaustive (stopped early)"
            }
        )?;
        for (name, always, verdict, steps) in &self.properties {
            let kind = if *always { "always" } else { "sometimes" };
            writeln!(f, "  {kind:<9} {name:<34} {verdict}")?;
            for (i, step) in steps.iter().enumerate() {
                writeln!(f, "      {:>2}. {step}", i + 1)?;
            }
        }
        Ok(())
    }
}

fn describe(before: &State, action: &Action) -> String {
    let message = |i: usize| match before.network.get(i) {
        Some(Message::Request { from, to, request }) => format!("{from:?} -> p{to}: {request:?}"),
        Some(Message::Reply { from, to, reply }) => format!("p{from} -> {to:?}: {reply:?}"),
        None => String::new(),
    };
    match action {
        Action::Start(t) => format!("T{} starts", t + 1),
        Action::Deliver(i) => format!("delivered: {}", message(*i)),
        Action::Drop(i) => format!("lost: {}", message(*i)),
        Action::Timeout(t) => format!("T{}'s coordinator times out and retries", t + 1),
        Action::CrashCoordinator(t) => format!("T{}'s coordinator crashes", t + 1),
        Action::Restart(p) => format!("partition p{p} restarts"),
        Action::Recover {
            partition,
            txn,
            primary,
        } => {
            format!(
                "p{partition} holds an undecided intent of T{txn} and asks its primary p{primary}"
            )
        }
    }
}

/// Checks the model exhaustively (BFS) at `options`' bounds.
pub fn check(options: TwoPcOptions) -> TwoPcReport {
    let model = TwoPcModel { options };
    let timeout = model.options.timeout;
    let threads = model.options.threads.max(1);
    let stop_early = model.options.stop_at_first_violation;
    let started = Instant::now();
    let mut builder = model.checker().threads(threads);
    if stop_early {
        builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_bfs();
    let mut timed_out = false;
    while !checker.is_done() {
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let discoveries = checker.discoveries();
    let model = checker.model();
    let violated = model.properties().iter().any(|p| {
        p.expectation == stateright::Expectation::Always && discoveries.contains_key(p.name)
    });
    let complete = !(timed_out || (stop_early && violated));
    let properties = model
        .properties()
        .into_iter()
        .map(|p| {
            let always = p.expectation == stateright::Expectation::Always;
            let found = discoveries.get(p.name);
            let verdict = match (always, found.is_some(), complete) {
                (true, true, _) => "VIOLATED",
                (false, true, _) => "witnessed",
                (true, false, true) => "holds",
                (false, false, true) => "NOT WITNESSED",
                (_, false, false) => "unknown",
            };
            let steps = found
                .map(|path| {
                    path.clone()
                        .into_vec()
                        .windows(2)
                        .filter_map(|pair| Some(describe(&pair[0].0, pair[0].1.as_ref()?)))
                        .collect()
                })
                .unwrap_or_default();
            (
                p.name,
                always,
                verdict,
                if always { steps } else { Vec::new() },
            )
        })
        .collect();
    let report = TwoPcReport {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        duration: started.elapsed(),
        complete,
        properties,
    };
    if !timed_out {
        let _ = checker.join();
    }
    report
}
