//! A stateright model of the node's own lease core (`faultline_node::cluster::lease`): the
//! replicated `LeaseTable` and each replica's `LeaseTimers`, with explicit time and clocks
//! that drift, clients that hold a lock with a lease and keep it alive, and leadership that
//! moves between replicas.
//!
//! Time is discrete. Every clock (each replica's and each client's) reads real time less its
//! lag; a `tick` advances real time and every clock, a `tick, x lags` advances real time but
//! not x's clock, so clocks stay monotonic and drift apart by at most `max_drift` ticks over
//! a run. Raft is abstracted: the table is one linearizable object (chapter 1's model covers
//! the log), and the leader applies an expiry the moment its timers say a lease ran out
//! (the earliest, so the most dangerous, moment the node could).
//!
//! A client believes it holds the lock from a successful acquire until `ttl - max_drift` past
//! the send time of its last acknowledged keep-alive, by its own clock: the margin is what
//! makes a lease safe against a client clock that runs slow.
//!
//! Properties:
//! - *at most one holder*: no two clients believe they hold the lock at once;
//! - *the table and a believer agree*: a client that believes it holds the lock holds it in
//!   the table.
//!
//! `sometimes` witnesses: a lease ran out and another client took the lock; a lease was
//! kept alive across an election.

use std::time::Duration;

use faultline_node::cluster::lease::{LeaseBugs, LeaseTable, LeaseTimers, lease_id};
use stateright::{Model, Property};

const LOCK: &[u8] = b"lock/x";
const GROUP: u64 = 1;

/// Bounds and switches.
#[derive(Clone, Debug)]
pub struct LeaseModelOptions {
    pub replicas: usize,
    pub clients: usize,
    /// Ticks.
    pub ttl: u64,
    /// What a new leader adds to every lease: an election timeout, in ticks.
    pub extension: u64,
    /// How far any clock may fall behind real time over a run.
    pub max_drift: u64,
    /// Real time the search runs to.
    pub max_time: u64,
    /// Leadership changes over a run.
    pub max_elections: usize,
    /// Grants over a run (each makes a new lease).
    pub max_grants: u64,
    /// The node's seeded bug `lease-no-extension-on-election`.
    pub no_extension_on_election: bool,
    /// The clients' seeded bug: no drift margin (believe for the whole TTL).
    pub client_no_margin: bool,
    pub threads: usize,
    pub timeout: Option<Duration>,
}

impl Default for LeaseModelOptions {
    /// The bounds CI checks exhaustively.
    fn default() -> Self {
        LeaseModelOptions {
            replicas: 2,
            clients: 2,
            ttl: 4,
            extension: 1,
            max_drift: 1,
            max_time: 8,
            max_elections: 1,
            max_grants: 2,
            no_extension_on_election: false,
            client_no_margin: false,
            threads: 1,
            timeout: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// The lease it holds the lock with, and until when (its clock) it believes it does.
    lease: Option<u64>,
    believes_until: u64,
    lag: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    now: u64,
    table: LeaseTable,
    timers: Vec<LeaseTimers>,
    lags: Vec<u64>,
    leader: Option<usize>,
    elections: usize,
    grants: u64,
    clients: Vec<Client>,
    /// For the witnesses.
    taken_over: bool,
    renewed_across_election: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Tick,
    /// Real time advances; this clock does not (replica `Ok`, client `Err`).
    TickLag(Result<usize, usize>),
    Elect(usize),
    Acquire(usize),
    KeepAlive(usize),
    Release(usize),
}

pub struct LeaseModel {
    options: LeaseModelOptions,
}

impl LeaseModel {
    fn replica_clock(&self, state: &State, replica: usize) -> u64 {
        state.now - state.lags[replica]
    }

    fn client_clock(state: &State, client: usize) -> u64 {
        state.now - state.clients[client].lag
    }

    fn believes(state: &State, client: usize) -> bool {
        let c = &state.clients[client];
        c.lease.is_some() && Self::client_clock(state, client) < c.believes_until
    }

    fn margin(&self) -> u64 {
        if self.options.client_no_margin {
            0
        } else {
            self.options.max_drift
        }
    }

    /// The leader applies the expiries its timers call for.
    fn expire(&self, state: &mut State) {
        let Some(leader) = state.leader else {
            return;
        };
        let now = self.replica_clock(state, leader);
        for id in state.timers[leader].due(now) {
            if state.table.revoke(id).is_some() {
                for timers in &mut state.timers {
                    timers.forget(id);
                }
            }
        }
    }
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let bugs = LeaseBugs {
            no_extension_on_election: self.options.no_extension_on_election,
        };
        let mut timers = vec![LeaseTimers::new(bugs); self.options.replicas];
        let table = LeaseTable::default();
        timers[0].promote(&table, 0, self.options.extension);
        vec![State {
            now: 0,
            table,
            timers,
            lags: vec![0; self.options.replicas],
            leader: Some(0),
            elections: 0,
            grants: 0,
            clients: vec![
                Client {
                    lease: None,
                    believes_until: 0,
                    lag: 0,
                };
                self.options.clients
            ],
            taken_over: false,
            renewed_across_election: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.now < self.options.max_time {
            actions.push(Action::Tick);
            for r in 0..self.options.replicas {
                if state.lags[r] < self.options.max_drift {
                    actions.push(Action::TickLag(Ok(r)));
                }
            }
            for c in 0..self.options.clients {
                if state.clients[c].lag < self.options.max_drift {
                    actions.push(Action::TickLag(Err(c)));
                }
            }
        }
        if state.elections < self.options.max_elections {
            for r in 0..self.options.replicas {
                if state.leader != Some(r) {
                    actions.push(Action::Elect(r));
                }
            }
        }
        for c in 0..self.options.clients {
            match state.clients[c].lease {
                None if state.grants < self.options.max_grants
                    && state.leader.is_some()
                    && state.table.lease_of(LOCK).is_none() =>
                {
                    actions.push(Action::Acquire(c));
                }
                None => {}
                Some(_) if state.leader.is_some() => {
                    actions.push(Action::KeepAlive(c));
                    actions.push(Action::Release(c));
                }
                Some(_) => actions.push(Action::Release(c)),
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let ttl = self.options.ttl;
        match action {
            Action::Tick => {
                state.now += 1;
                self.expire(&mut state);
            }
            Action::TickLag(who) => {
                state.now += 1;
                match who {
                    Ok(r) => state.lags[r] += 1,
                    Err(c) => state.clients[c].lag += 1,
                }
                self.expire(&mut state);
            }
            Action::Elect(r) => {
                if let Some(old) = state.leader {
                    state.timers[old].demote();
                }
                let now = self.replica_clock(&state, r);
                state.timers[r].promote(&state.table, now, self.options.extension);
                state.leader = Some(r);
                state.elections += 1;
                self.expire(&mut state);
            }
            Action::Acquire(c) => {
                let sent = Self::client_clock(&state, c);
                state.grants += 1;
                let id = lease_id(GROUP, state.grants);
                state.table.grant(id, ttl);
                for r in 0..self.options.replicas {
                    let now = self.replica_clock(&state, r);
                    state.timers[r].granted(id, ttl, now);
                }
                // The lock is free (the action is only offered then): taken at once.
                state.table.attach(LOCK, id);
                if state.clients.iter().any(|other| other.lease.is_some()) {
                    state.taken_over = true;
                }
                state.clients[c].lease = Some(id);
                state.clients[c].believes_until = sent + ttl - self.margin();
            }
            Action::KeepAlive(c) => {
                let sent = Self::client_clock(&state, c);
                let id = state.clients[c].lease.expect("offered with a lease");
                let leader = state.leader.expect("offered with a leader");
                let now = self.replica_clock(&state, leader);
                if state.timers[leader].renew(id, ttl, now) && state.table.get(id).is_some() {
                    state.clients[c].believes_until = sent + ttl - self.margin();
                    if state.elections > 0 {
                        state.renewed_across_election = true;
                    }
                } else {
                    // NOT_FOUND: the client knows it lost the lock.
                    state.clients[c].lease = None;
                }
            }
            Action::Release(c) => {
                let id = state.clients[c].lease.take()?;
                if state.table.revoke(id).is_some() {
                    for timers in &mut state.timers {
                        timers.forget(id);
                    }
                }
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one holder", |model: &LeaseModel, state: &State| {
                (0..model.options.clients)
                    .filter(|&c| LeaseModel::believes(state, c))
                    .count()
                    <= 1
            }),
            Property::always(
                "a believer holds the lock in the table",
                |model: &LeaseModel, state: &State| {
                    (0..model.options.clients).all(|c| {
                        !LeaseModel::believes(state, c)
                            || state.table.lease_of(LOCK) == state.clients[c].lease
                    })
                },
            ),
            Property::sometimes(
                "a lease ran out and another client took the lock",
                |_, state: &State| state.taken_over,
            ),
            Property::sometimes(
                "a lease was kept alive across an election",
                |_, state: &State| state.renewed_across_election,
            ),
        ]
    }
}

fn describe(before: &State, action: &Action) -> String {
    match action {
        Action::Tick => format!("t={}: every clock ticks", before.now + 1),
        Action::TickLag(Ok(r)) => format!("t={}: replica {r}'s clock lags", before.now + 1),
        Action::TickLag(Err(c)) => format!("t={}: client {c}'s clock lags", before.now + 1),
        Action::Elect(r) => format!("t={}: replica {r} becomes the leader", before.now),
        Action::Acquire(c) => format!(
            "t={}: client {c} grants a lease and takes the lock",
            before.now
        ),
        Action::KeepAlive(c) => format!("t={}: client {c} keeps its lease alive", before.now),
        Action::Release(c) => format!("t={}: client {c} releases the lock", before.now),
    }
}

/// What a check found.
pub type LeaseReport = super::bfs::Report;

/// Checks the model exhaustively (BFS) at `options`' bounds.
pub fn check(options: LeaseModelOptions) -> LeaseReport {
    let (threads, timeout) = (options.threads, options.timeout);
    super::bfs::check(
        "lease model",
        LeaseModel { options },
        threads,
        timeout,
        describe,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_core_keeps_one_holder_at_the_default_bounds() {
        let report = check(LeaseModelOptions::default());
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn no_extension_on_election_gives_two_holders() {
        let report = check(LeaseModelOptions {
            no_extension_on_election: true,
            ..LeaseModelOptions::default()
        });
        assert_eq!(report.exit_code(), 1, "{report}");
        let text = report.to_string();
        assert!(text.contains("becomes the leader"), "{text}");
    }

    #[test]
    fn a_client_without_a_drift_margin_gives_two_holders() {
        let report = check(LeaseModelOptions {
            client_no_margin: true,
            ..LeaseModelOptions::default()
        });
        assert_eq!(report.exit_code(), 1, "{report}");
        assert!(report.to_string().contains("lags"), "{report}");
    }
}
