//! A stateright model of the node's own causal replication core
//! (`faultline_node::time::causal::CausalReplica`): three replicas, client sessions that
//! move between them carrying their contexts, and anti-entropy exchanges over a network
//! that reorders and (by default) loses messages.
//!
//! Properties, checked in every reachable state:
//! - *causal sessions*: the history the sessions have seen so far passes the causal
//!   checker at causal convergence (CCv), the checker the harness runs on real histories;
//! - *replicas converge*: delivering exchanges between every pair of replicas from here
//!   leaves all of them with the same data and nothing held back;
//! - *no sibling lost*: once converged, every key holds exactly the writes no other
//!   write to it had seen (siblings mode).
//!
//! `sometimes` witnesses: a read returned siblings, and a session moved to a replica it
//! had to wait for (an exchange had to come first).
//!
//! Abstracted away: time (every replica's clock reads the same `NOW`, so HLC stamps
//! differ only by their logical part), the durable log (a replica never crashes here),
//! read repair (an exchange narrowed to one key; the full exchange is modelled).

use std::time::{Duration, Instant};

use faultline_node::time::VectorClock;
use faultline_node::time::causal::{
    CausalBugs, CausalOptions, CausalReplica, Exchange, Resolve, Write,
};
use stateright::{Checker, Model, Property};

use crate::causal::{CausalOptions as CheckOptions, ConsistencyLevel, check_causal};
use crate::history::{History, Operation as HistoryOp, Outcome, Value};

const NOW: u64 = 1_000;

/// One step of a session's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptOp {
    /// Write `value` (unique in the run) to `key` at `replica`.
    Write {
        replica: usize,
        key: u8,
        value: u8,
    },
    Read {
        replica: usize,
        key: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CausalBug {
    IgnoreCausalContext,
    VvMergeDropsSibling,
}

impl std::str::FromStr for CausalBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore-causal-context" => Ok(CausalBug::IgnoreCausalContext),
            "vv-merge-drops-sibling" => Ok(CausalBug::VvMergeDropsSibling),
            other => Err(format!(
                "no causal-model bug {other:?}; choose ignore-causal-context or vv-merge-drops-sibling"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CausalModelOptions {
    pub replicas: usize,
    pub sessions: Vec<Vec<ScriptOp>>,
    /// 0: each exchange is delivered with its reply at once, or its reply is lost (when
    /// `lossy`). More: exchanges and replies are messages, reordered and (when `lossy`)
    /// dropped, and states with more than this many in flight are not explored.
    pub max_in_flight: usize,
    /// Whether the network may drop messages (it always reorders them).
    pub lossy: bool,
    /// Exchanges opened over a run. Each replica's knowledge of every peer's progress is
    /// state, so unbounded exchanges multiply states without end; the convergence
    /// property delivers the rest (`settle`), so a bound loses no verdict on it.
    pub max_exchanges: usize,
    pub resolve: Resolve,
    pub bug: Option<CausalBug>,
    pub threads: usize,
    pub timeout: Option<Duration>,
    /// Stop at the first violated property (the report is then not exhaustive).
    pub stop_at_first_violation: bool,
}

impl Default for CausalModelOptions {
    /// The pinned bounds CI checks exhaustively: session 0 writes two keys in order at
    /// replica 0; session 1 reads them in the other order at replica 1 (if it sees the
    /// second it must see the first); session 2 writes the first key concurrently at
    /// replica 2 and reads it back at replica 0 (its own write must be there: it waits).
    fn default() -> Self {
        use ScriptOp::{Read, Write};
        Self {
            replicas: 3,
            sessions: vec![
                vec![
                    Write {
                        replica: 0,
                        key: 0,
                        value: 1,
                    },
                    Write {
                        replica: 0,
                        key: 1,
                        value: 2,
                    },
                ],
                vec![Read { replica: 1, key: 1 }, Read { replica: 1, key: 0 }],
                vec![
                    Write {
                        replica: 2,
                        key: 0,
                        value: 3,
                    },
                    Read { replica: 0, key: 0 },
                ],
            ],
            max_in_flight: 0,
            lossy: true,
            max_exchanges: 3,
            resolve: Resolve::Siblings,
            bug: None,
            threads: 1,
            timeout: None,
            stop_at_first_violation: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub to: usize,
    pub reply: bool,
    pub exchange: Exchange,
}

/// What a session did, for the causal checker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Done {
    pub session: usize,
    pub key: u8,
    /// A write's value, or what a read returned (sorted; empty: nothing).
    pub values: Vec<u8>,
    pub write: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub replicas: Vec<CausalReplica>,
    pub next_op: Vec<usize>,
    pub contexts: Vec<VectorClock>,
    /// In flight, kept sorted: the network is a multiset.
    pub network: Vec<Message>,
    /// Exchanges opened so far (bounded by `max_exchanges`).
    pub exchanges: usize,
    pub done: Vec<Done>,
    pub writes: Vec<Write>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Op(usize),
    /// An exchange and its reply, delivered at once (with `max_in_flight` 0).
    Sync {
        from: usize,
        to: usize,
    },
    /// An exchange delivered, its reply lost.
    SyncReplyLost {
        from: usize,
        to: usize,
    },
    Send {
        from: usize,
        to: usize,
    },
    Deliver(usize),
    Drop(usize),
}

pub struct CausalModel {
    pub options: CausalModelOptions,
}

impl CausalModel {
    fn replica_options(&self) -> CausalOptions {
        CausalOptions {
            resolve: self.options.resolve,
            bugs: CausalBugs {
                ignore_causal_context: self.options.bug == Some(CausalBug::IgnoreCausalContext),
                vv_merge_drops_sibling: self.options.bug == Some(CausalBug::VvMergeDropsSibling),
                lww_wall_clock: false,
            },
            ..CausalOptions::default()
        }
    }

    fn op(&self, state: &State, session: usize) -> Option<ScriptOp> {
        self.options.sessions[session]
            .get(state.next_op[session])
            .copied()
    }
}

fn key_bytes(key: u8) -> Vec<u8> {
    vec![b'k', b'0' + key]
}

/// Exchanges between every pair until nothing moves: where the replicas go once the
/// network delivers.
pub fn settle(replicas: &[CausalReplica]) -> Vec<CausalReplica> {
    let mut rs = replicas.to_vec();
    // A round in which no replica applied anything leaves the next one nothing to do.
    // Bounded all the same: each round applies at least one of finitely many writes.
    for _ in 0..=rs.len() * 64 {
        let mut moved = false;
        for a in 0..rs.len() {
            for b in 0..rs.len() {
                if a == b {
                    continue;
                }
                let peer = rs[b].id();
                let message = rs[a].exchange_for(peer, None);
                if let Ok((reply, there)) = rs[b].on_exchange(message, NOW) {
                    moved |= !there.applied.is_empty();
                    if let Ok(here) = rs[a].on_reply(reply, NOW) {
                        moved |= !here.applied.is_empty();
                    }
                }
            }
        }
        if !moved {
            break;
        }
    }
    rs
}

impl State {
    /// The sessions' history in the checker's terms: one operation per step, in order.
    pub fn history(&self) -> History {
        let operations = self
            .done
            .iter()
            .enumerate()
            .map(|(id, d)| {
                let value = |v: u8| Value::Int(i64::from(v));
                let output = if d.write {
                    value(d.values[0])
                } else {
                    match d.values[..] {
                        [] => Value::Nil,
                        [one] => value(one),
                        _ => Value::List(d.values.iter().map(|&v| value(v)).collect()),
                    }
                };
                HistoryOp {
                    id,
                    process: d.session as u64,
                    f: if d.write { "write" } else { "read" }.into(),
                    key: Some(format!("k{}", d.key)),
                    input: if d.write { output.clone() } else { Value::Nil },
                    output: Some(output),
                    outcome: Outcome::Ok,
                    invoke_time: 2 * id as u64,
                    complete_time: Some(2 * id as u64 + 1),
                    line: None,
                    not_applied: false,
                }
            })
            .collect();
        History {
            operations,
            nemesis: Vec::new(),
        }
    }
}

impl Model for CausalModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.options.replicas as u64;
        let replicas = (1..=n)
            .map(|id| CausalReplica::new(id, 1..=n, self.replica_options()))
            .collect();
        let sessions = self.options.sessions.len();
        vec![State {
            replicas,
            next_op: vec![0; sessions],
            contexts: vec![VectorClock::new(); sessions],
            network: Vec::new(),
            exchanges: 0,
            done: Vec::new(),
            writes: Vec::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for session in 0..self.options.sessions.len() {
            let Some(op) = self.op(state, session) else {
                continue;
            };
            let replica = match op {
                ScriptOp::Write { replica, .. } | ScriptOp::Read { replica, .. } => replica,
            };
            // A replica behind the session does not serve it (the shell waits, then
            // refuses): the step waits for an exchange.
            if state.replicas[replica]
                .caught_up_with(&state.contexts[session])
                .is_ok()
            {
                actions.push(Action::Op(session));
            }
        }
        let may_open = state.exchanges < self.options.max_exchanges;
        if self.options.max_in_flight == 0 && may_open {
            for from in 0..self.options.replicas {
                for to in 0..self.options.replicas {
                    if from != to {
                        actions.push(Action::Sync { from, to });
                        if self.options.lossy {
                            actions.push(Action::SyncReplyLost { from, to });
                        }
                    }
                }
            }
        }
        if state.network.len() < self.options.max_in_flight && may_open {
            for from in 0..self.options.replicas {
                for to in 0..self.options.replicas {
                    if from != to {
                        actions.push(Action::Send { from, to });
                    }
                }
            }
        }
        for i in 0..state.network.len() {
            if i > 0 && state.network[i] == state.network[i - 1] {
                continue;
            }
            actions.push(Action::Deliver(i));
            if self.options.lossy {
                actions.push(Action::Drop(i));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Op(session) => {
                let op = self.op(&state, session)?;
                state.next_op[session] += 1;
                match op {
                    ScriptOp::Write {
                        replica,
                        key,
                        value,
                    } => {
                        let done = state.replicas[replica]
                            .write(
                                key_bytes(key),
                                Some(vec![value]),
                                &state.contexts[session],
                                NOW,
                            )
                            .ok()?;
                        state.contexts[session] = done.context;
                        state.writes.push(done.write);
                        state.done.push(Done {
                            session,
                            key,
                            values: vec![value],
                            write: true,
                        });
                    }
                    ScriptOp::Read { replica, key } => {
                        let read = state.replicas[replica]
                            .read(&key_bytes(key), &state.contexts[session])
                            .ok()?;
                        state.contexts[session] = read.context;
                        let mut values: Vec<u8> =
                            read.values.iter().map(|(_, v, _)| v[0]).collect();
                        values.sort_unstable();
                        state.done.push(Done {
                            session,
                            key,
                            values,
                            write: false,
                        });
                    }
                }
            }
            Action::Sync { from, to } | Action::SyncReplyLost { from, to } => {
                state.exchanges += 1;
                let peer = state.replicas[to].id();
                let exchange = state.replicas[from].exchange_for(peer, None);
                let (reply, _) = state.replicas[to].on_exchange(exchange, NOW).ok()?;
                if matches!(action, Action::Sync { .. }) {
                    state.replicas[from].on_reply(reply, NOW).ok()?;
                }
            }
            Action::Send { from, to } => {
                state.exchanges += 1;
                let peer = state.replicas[to].id();
                let exchange = state.replicas[from].exchange_for(peer, None);
                state.network.push(Message {
                    to,
                    reply: false,
                    exchange,
                });
            }
            Action::Deliver(i) => {
                let message = state.network.remove(i);
                let to = message.to;
                if message.reply {
                    state.replicas[to].on_reply(message.exchange, NOW).ok()?;
                } else {
                    let from = (message.exchange.from - 1) as usize;
                    let (reply, _) = state.replicas[to].on_exchange(message.exchange, NOW).ok()?;
                    state.network.push(Message {
                        to: from,
                        reply: true,
                        exchange: reply,
                    });
                }
            }
            Action::Drop(i) => {
                state.network.remove(i);
            }
        }
        state.network.sort_by_cached_key(|m| format!("{m:?}"));
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("causal sessions", |_, state: &State| {
                let options = CheckOptions {
                    level: ConsistencyLevel::CausalConvergence,
                    ..CheckOptions::default()
                };
                check_causal(&state.history(), &options).is_ok_and(|v| v.valid)
            }),
            Property::always("replicas converge", |_, state: &State| {
                let settled = settle(&state.replicas);
                settled
                    .iter()
                    .all(|r| r.digest() == settled[0].digest() && r.pending_len() == 0)
            }),
            Property::always("no sibling lost", |model: &CausalModel, state: &State| {
                if model.options.resolve != Resolve::Siblings {
                    return true;
                }
                let settled = settle(&state.replicas);
                settled.iter().all(|replica| {
                    state.writes.iter().all(|w| {
                        let seen_later = state.writes.iter().any(|l| {
                            l.key == w.key
                                && l.dot != w.dot
                                && l.deps.get(w.dot.node) >= w.dot.counter
                        });
                        let held = replica.dump().any(|(k, s)| {
                            k == w.key.as_slice() && s.values().any(|(d, _)| d == w.dot)
                        });
                        held != seen_later
                    })
                })
            }),
            Property::sometimes("a read returned siblings", |_, state: &State| {
                state.done.iter().any(|d| !d.write && d.values.len() > 1)
            }),
            Property::sometimes(
                "a session waited for an exchange",
                |model: &CausalModel, state: &State| {
                    (0..model.options.sessions.len()).any(|s| {
                        model.op(state, s).is_some_and(|op| {
                            let replica = match op {
                                ScriptOp::Write { replica, .. }
                                | ScriptOp::Read { replica, .. } => replica,
                            };
                            state.replicas[replica]
                                .caught_up_with(&state.contexts[s])
                                .is_err()
                        })
                    })
                },
            ),
        ]
    }
}

/// What a check found.
#[derive(Debug)]
pub struct CausalReport {
    pub unique_states: usize,
    pub states: usize,
    pub duration: Duration,
    pub complete: bool,
    /// (property, always?, verdict words, counterexample steps).
    pub properties: Vec<(&'static str, bool, &'static str, Vec<String>)>,
}

impl CausalReport {
    /// 0 all hold and every witness seen, 1 a property failed, 2 not exhaustive or a
    /// witness missing.
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

impl std::fmt::Display for CausalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "causal model: {} unique states ({} generated) in {:.1} s, {}",
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
            writeln!(f, "  {kind:<9} {name:<36} {verdict}")?;
            for (i, step) in steps.iter().enumerate() {
                writeln!(f, "      {:>2}. {step}", i + 1)?;
            }
        }
        Ok(())
    }
}

fn describe(before: &State, state: &State, action: &Action, model: &CausalModel) -> String {
    let message = |i: &usize| {
        before.network.get(*i).map_or_else(String::new, |m| {
            let kind = if m.reply { "reply" } else { "exchange" };
            format!(
                "r{} -> r{}: {kind} (applied {:?}, {} writes)",
                m.exchange.from,
                m.to + 1,
                m.exchange.applied.iter().collect::<Vec<_>>(),
                m.exchange.writes.len()
            )
        })
    };
    match action {
        Action::Op(s) => {
            let done = state.done.last();
            match (model.options.sessions[*s].get(state.next_op[*s] - 1), done) {
                (
                    Some(ScriptOp::Write {
                        replica,
                        key,
                        value,
                    }),
                    _,
                ) => {
                    format!("session {s} writes k{key}={value} at r{}", replica + 1)
                }
                (Some(ScriptOp::Read { replica, key }), Some(d)) => {
                    format!(
                        "session {s} reads k{key} at r{}: {:?}",
                        replica + 1,
                        d.values
                    )
                }
                _ => format!("session {s} acts"),
            }
        }
        Action::Sync { from, to } => format!("r{} and r{} exchange", from + 1, to + 1),
        Action::SyncReplyLost { from, to } => format!(
            "r{} sends r{} an exchange; the reply is lost",
            from + 1,
            to + 1
        ),
        Action::Send { from, to } => format!("r{} opens an exchange with r{}", from + 1, to + 1),
        Action::Deliver(i) => format!("delivered: {}", message(i)),
        Action::Drop(i) => format!("lost: {}", message(i)),
    }
}

/// Checks the model exhaustively (BFS) at `options`' bounds.
pub fn check(options: CausalModelOptions) -> CausalReport {
    let model = CausalModel { options };
    let timeout = model.options.timeout;
    let threads = model.options.threads.max(1);
    let started = Instant::now();
    let stop_early = model.options.stop_at_first_violation;
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
    let stopped = timed_out || (stop_early && violated);
    let complete = !stopped;
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
                    let states = path.clone().into_vec();
                    states
                        .windows(2)
                        .filter_map(|pair| {
                            let action = pair[0].1.as_ref()?;
                            Some(describe(&pair[0].0, &pair[1].0, action, model))
                        })
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
    let report = CausalReport {
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
