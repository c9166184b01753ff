//! A stateright model of the node's Raft core.
//!
//! **System.** `servers` server actors, each wrapping the node's own
//! `faultline_node::replication::RaftCore` and `faultline_node::store::KvStore`, driven
//! the way the node's replication thread drives them; `clients` client actors, each
//! running a short script of put / get / compare-and-swap on one register.
//!
//! **Environment.** An unordered network (non-duplicating, duplicating, or
//! non-duplicating and lossy); a nondeterministic `Tick` timer per server; crashes that
//! lose everything but the disk (stateright's actor storage), at most `crashes` per run.
//!
//! **Properties.** Always: election safety (over the whole history), leader append-only,
//! log matching, leader completeness, state machine safety, linearizability of what
//! clients accept, and the core's own assertions. Sometimes (witnesses that the bounds
//! reach the interesting situations): a leader is elected, a value is committed, a read
//! observes a write, a second leader takes over after a crash, a snapshot is installed.
//!
//! **Bounds.** By state, not depth: every server's term ≤ `max_term` and last log index
//! ≤ `max_log`, at most `max_in_flight` messages in the network, at most `crashes`
//! crashes over the run. Symmetry reduction is opt-in (`symmetry`): see the README.

pub mod client;
mod history;
mod messages;
pub mod properties;
mod report;
pub mod server;
mod symmetry;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use faultline_node::replication::{ConfChange, RaftConfig, Role, SeededBugs};
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
};
use stateright::{Checker, CheckerBuilder, HasDiscoveries, Model, Path, Property, UniformChooser};
use std::sync::Arc;

pub use client::{ClientActor, ClientState, script};
pub use history::{History, RegisterSpec};
pub use messages::{ClientOp, ClientRet, Msg, Timer, Value};
pub use report::{ModelReport, PropertyReport, Verdict};
pub use server::{AppliedEntry, Disk, Ghost, ServerActor, ServerState};

/// The actor system: servers, clients, network, crashes, history.
pub type RaftSystem = ActorModel<RaftActor, ModelConfig, History>;
/// One state of the whole system.
pub type RaftState = ActorModelState<RaftActor, History>;
/// One step: deliver, drop, tick, crash, recover.
pub type RaftAction = ActorModelAction<Msg, Timer, ()>;

/// The model stateright checks: the actor system, with the properties, the boundary and
/// the timer policy on top (stateright's `ActorModel` fires a timer at any moment; see
/// `ModelConfig::quiescent_timers`).
#[derive(Clone)]
pub struct RaftModel {
    pub system: RaftSystem,
    pub cfg: ModelConfig,
    properties: Vec<Property<RaftModel>>,
    /// Where the search starts when `ModelOptions::start` is set, with the steps that led
    /// there in words.
    start: Option<(RaftState, Vec<String>)>,
}

impl RaftModel {
    /// The steps `ModelOptions::start` played before the search, in words.
    pub fn start_steps(&self) -> &[String] {
        self.start.as_ref().map_or(&[], |(_, steps)| steps)
    }
}

impl Model for RaftModel {
    type State = RaftState;
    type Action = RaftAction;

    fn init_states(&self) -> Vec<RaftState> {
        match &self.start {
            Some((state, _)) => vec![state.clone()],
            None => self.system.init_states(),
        }
    }

    fn actions(&self, state: &RaftState, actions: &mut Vec<RaftAction>) {
        self.system.actions(state, actions);
        let servers = self.cfg.servers;
        let quiescent_timers = self.cfg.network == NetworkKind::Unordered;
        actions.retain(|action| match action {
            // Clients do not crash: a restarted client would reissue its operations.
            ActorModelAction::Crash(id) => usize::from(*id) < servers,
            ActorModelAction::Timeout(id, _) if quiescent_timers => !has_undelivered(state, *id),
            _ => true,
        });
    }

    fn next_state(&self, state: &RaftState, action: RaftAction) -> Option<RaftState> {
        let mut next = if let (NetworkKind::Lossy, ActorModelAction::Timeout(id, _)) =
            (self.cfg.network, &action)
            && has_undelivered(state, *id)
        {
            let mut lossy = state.clone();
            without_messages(&mut lossy.network, |e| {
                matches!(e.msg, Msg::Raft(_)) && (e.src == *id || e.dst == *id)
            });
            self.system
                .next_state(&lossy, action.clone())
                .unwrap_or(lossy)
        } else {
            self.system.next_state(state, action.clone())?
        };
        if let ActorModelAction::Crash(id) = action {
            debug_assert!(usize::from(id) < self.cfg.servers, "only servers crash");
            next.actor_states[usize::from(id)] = Arc::new(ActorState::Down);
        }
        // A client's copies of a request it no longer waits for are withdrawn. The node's
        // clients send to one server, which forwards; the model sends to every server so
        // that any of them can be the leader that takes it, and stale copies left in the
        // network would only multiply states (a new leader taking an old copy is the
        // duplicate-delivery case, which exactly-once sessions handle and the node's tests
        // cover).
        let awaiting: Vec<(Id, Option<u64>)> = next
            .actor_states
            .iter()
            .enumerate()
            .filter_map(|(i, actor)| match &**actor {
                ActorState::Client(client) => Some((Id::from(i), client.awaiting)),
                _ => None,
            })
            .collect();
        if next.network.iter_deliverable().any(|e| {
            matches!(e.msg, Msg::Request { seq, .. }
                if awaiting.iter().any(|&(id, waiting)| id == e.src && waiting != Some(*seq)))
        }) {
            without_messages(&mut next.network, |e| {
                matches!(e.msg, Msg::Request { seq, .. }
                    if awaiting.iter().any(|&(id, waiting)| id == e.src && waiting != Some(seq)))
            });
        }
        // A crashed server loses what is sent to it (its connections are gone).
        if next.crashed.iter().any(|&c| c) {
            let crashed = next.crashed.clone();
            without_messages(&mut next.network, |e| crashed[usize::from(e.dst)]);
        }
        if self.cfg.symmetry {
            next = symmetry::canonical(&self.system, self.cfg.servers, next);
        }
        Some(next)
    }

    fn format_action(&self, action: &RaftAction) -> String {
        self.system.format_action(action)
    }

    fn format_step(&self, state: &RaftState, action: RaftAction) -> Option<String> {
        self.system.format_step(state, action)
    }

    fn as_svg(&self, path: Path<RaftState, RaftAction>) -> Option<String> {
        self.system.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        self.properties.clone()
    }

    fn within_boundary(&self, state: &RaftState) -> bool {
        within_boundary(&self.cfg, state)
    }
}

/// Whether a peer message to or from `server` is still in the network.
fn has_undelivered(state: &RaftState, server: Id) -> bool {
    state.network.iter_deliverable().any(|envelope| {
        (envelope.src == server || envelope.dst == server) && matches!(envelope.msg, Msg::Raft(_))
    })
}

/// Removes the messages `lost` picks out (every copy).
fn without_messages(network: &mut Network<Msg>, lost: impl Fn(&Envelope<Msg>) -> bool) {
    match network {
        Network::UnorderedNonDuplicating(multiset) => multiset.retain(|e, _| !lost(e)),
        Network::UnorderedDuplicating(set, _) => set.retain(|e| !lost(e)),
        Network::Ordered(_) => unreachable!("the model uses unordered networks"),
    }
}

/// Peer messages in the network, copies counted.
fn peer_messages_in_flight(network: &Network<Msg>) -> usize {
    let is_peer = |msg: &Msg| matches!(msg, Msg::Raft(_));
    match network {
        Network::UnorderedNonDuplicating(multiset) => multiset
            .iter()
            .filter(|(envelope, _)| is_peer(&envelope.msg))
            .map(|(_, count)| *count)
            .sum(),
        Network::UnorderedDuplicating(set, _) => set.iter().filter(|e| is_peer(&e.msg)).count(),
        Network::Ordered(flows) => flows.values().flatten().filter(|m| is_peer(m)).count(),
    }
}

/// Which network stateright simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkKind {
    /// Messages race one another; each is delivered at most once; none is lost.
    Unordered,
    /// Messages race one another and may be delivered any number of times.
    Duplicating,
    /// Unordered, each delivered at most once, and any may be lost.
    Lossy,
}

impl FromStr for NetworkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unordered" | "unordered_nonduplicating" => Ok(Self::Unordered),
            "duplicating" | "unordered_duplicating" => Ok(Self::Duplicating),
            "lossy" => Ok(Self::Lossy),
            _ => Err(format!(
                "unknown network {s:?}: unordered, duplicating or lossy"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckerKind {
    /// Breadth-first: shortest counterexamples; memory grows with the frontier.
    Bfs,
    /// Depth-first: less memory, longer counterexamples.
    Dfs,
    /// Random walks from the initial state (seeded), for spaces too large to exhaust.
    Simulation,
}

impl FromStr for CheckerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bfs" => Ok(Self::Bfs),
            "dfs" => Ok(Self::Dfs),
            "simulation" => Ok(Self::Simulation),
            _ => Err(format!("unknown checker {s:?}: bfs, dfs or simulation")),
        }
    }
}

/// The seeded bugs: the core's `SeededBugs`, plus one in the model's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Core: grant a vote twice in one term.
    DoubleVote,
    /// Core: commit an entry of an earlier term by counting replicas (Raft §5.4.2).
    CommitOldTerm,
    /// Core: a follower keeps a conflicting suffix instead of truncating it.
    KeepConflicts,
    /// Core: answer a ReadIndex read without confirming leadership.
    StaleRead,
    /// Model: the disk forgets `voted_for` across a crash.
    VoteAmnesia,
    /// Core: a learner's vote counts (`--membership`).
    LearnerVotes,
    /// Core: a new leader changes membership before its no-op commits (`--membership`).
    ConfigBeforeNoop,
}

impl Bug {
    pub const ALL: [Bug; 7] = [
        Bug::DoubleVote,
        Bug::CommitOldTerm,
        Bug::KeepConflicts,
        Bug::StaleRead,
        Bug::VoteAmnesia,
        Bug::LearnerVotes,
        Bug::ConfigBeforeNoop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::DoubleVote => "double_vote",
            Bug::CommitOldTerm => "commit_old_term",
            Bug::KeepConflicts => "keep_conflicts",
            Bug::StaleRead => "stale_read",
            Bug::VoteAmnesia => "vote_amnesia",
            Bug::LearnerVotes => "learner_votes",
            Bug::ConfigBeforeNoop => "config_before_noop",
        }
    }

    fn seeded_bugs(bug: Option<Bug>) -> SeededBugs {
        SeededBugs {
            double_vote: bug == Some(Bug::DoubleVote),
            commit_old_term: bug == Some(Bug::CommitOldTerm),
            keep_conflicts: bug == Some(Bug::KeepConflicts),
            stale_read: bug == Some(Bug::StaleRead),
            learner_votes: bug == Some(Bug::LearnerVotes),
            config_before_noop: bug == Some(Bug::ConfigBeforeNoop),
        }
    }
}

impl FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.replace('-', "_");
        Bug::ALL
            .into_iter()
            .find(|bug| bug.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
                format!("unknown bug {s:?}: one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything `check` needs. `Default` is the CI configuration (see the README for why
/// each bound is what it is).
#[derive(Clone, Debug)]
pub struct ModelOptions {
    pub servers: usize,
    pub clients: usize,
    /// Operations each client runs from its script (`client::script`).
    pub client_ops: usize,
    pub max_term: u64,
    pub max_log: u64,
    pub max_in_flight: usize,
    pub network: NetworkKind,
    /// Crashes over the whole run (each followed by a possible recovery).
    pub crashes: usize,
    pub checker: CheckerKind,
    /// Seeds the simulation checker's random walks and the cores' RNGs.
    pub seed: u64,
    pub bug: Option<Bug>,
    /// Serve stateright's Explorer on this address instead of checking (blocks).
    pub explore: Option<String>,
    /// A server compacts its log once this many entries applied since its last
    /// snapshot (0: never).
    pub snapshot_interval_entries: u64,
    /// The node runs with pre-vote on; off gives a smaller model. (Check-quorum is always
    /// on, as in the node: without it a leader's `election_elapsed` counts up forever
    /// and no bound makes the space finite.)
    pub pre_vote: bool,
    /// Most entries in one AppendEntries (0: the node's default). 1 lets an old-term entry
    /// travel without the new leader's no-op, which a Figure 8 history needs.
    pub append_entries_max: usize,
    pub threads: usize,
    /// Stop after this long (the verdicts then say "unknown" where nothing was found).
    pub timeout: Option<Duration>,
    /// Stop after generating this many states (simulation: 1,000,000 unless set).
    pub max_states: Option<usize>,
    /// Stop at the first violated `always` (for the seeded-bug runs).
    pub stop_at_first_violation: bool,
    /// Steps played from the empty cluster before the search starts (see `start`); empty:
    /// the search starts from the empty cluster.
    pub start: Vec<String>,
    /// Membership changes during the search: one more server, which starts outside the
    /// group, and one admin client per script, each asking for its changes in order (the
    /// servers are numbered from 1; the joining one is `servers + 1`). Two admins let two
    /// leaders each start a different change, which the single-server bug needs.
    pub membership: Option<Vec<Vec<ConfChange>>>,
    /// Symmetry reduction: visit one of the states that differ only in which server is
    /// which (see `symmetry`). Not with `membership` (the joining server is not
    /// interchangeable with the others).
    pub symmetry: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            servers: 3,
            clients: 1,
            client_ops: 2,
            max_term: 3,
            max_log: 2,
            max_in_flight: 2,
            network: NetworkKind::Lossy,
            crashes: 1,
            checker: CheckerKind::Bfs,
            seed: 0,
            bug: None,
            explore: None,
            snapshot_interval_entries: 2,
            pre_vote: false,
            append_entries_max: 0,
            threads: 1,
            timeout: None,
            max_states: None,
            stop_at_first_violation: false,
            start: Vec::new(),
            membership: None,
            symmetry: false,
        }
    }
}

impl ModelOptions {
    /// Server actors in all: the group's, and the joining one with `membership`.
    pub fn server_actors(&self) -> usize {
        self.servers + usize::from(self.membership.is_some())
    }
}

/// The bounds, as the model's properties and boundary see them.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub servers: usize,
    /// Decides the timer policy (see the crate README, "Time and loss"): on the
    /// unordered network a server's timer fires only once every peer message to or from
    /// it has been delivered; on the lossy network a timer fires at any moment and the
    /// messages to or from the server still in flight are lost; on the duplicating
    /// network, which never forgets a message, timers fire at any moment.
    pub network: NetworkKind,
    pub max_term: u64,
    pub max_log: u64,
    pub max_in_flight: usize,
    pub crashes: usize,
    pub symmetry: bool,
}

#[derive(Clone, Debug)]
pub enum RaftActor {
    Server(ServerActor),
    Client(ClientActor),
}

// stateright keeps each actor's state behind an `Arc` already; boxing the server variant
// would add a second indirection to every hash and comparison of a state.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActorState {
    Server(ServerState),
    Client(ClientState),
    /// A crashed server. stateright keeps a crashed actor's last state; the model
    /// replaces it, since recovery starts from the disk alone and a stale copy would
    /// only multiply states.
    Down,
}

impl Actor for RaftActor {
    type Msg = Msg;
    type State = ActorState;
    type Timer = Timer;
    type Random = ();
    type Storage = Arc<Disk>;

    fn on_start(&self, _id: Id, storage: &Option<Arc<Disk>>, o: &mut Out<Self>) -> ActorState {
        match self {
            RaftActor::Server(server) => ActorState::Server(server.start(storage, o)),
            RaftActor::Client(client) => ActorState::Client(client.start(o)),
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ActorState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let next = match (self, state.as_ref()) {
            (RaftActor::Server(actor), ActorState::Server(server)) => {
                let mut inner = Cow::Borrowed(server);
                actor.on_msg(&mut inner, src, msg, o);
                match inner {
                    Cow::Owned(next) => Some(ActorState::Server(next)),
                    Cow::Borrowed(_) => None,
                }
            }
            (RaftActor::Client(actor), ActorState::Client(client)) => {
                let mut inner = Cow::Borrowed(client);
                actor.on_msg(&mut inner, msg, o);
                match inner {
                    Cow::Owned(next) => Some(ActorState::Client(next)),
                    Cow::Borrowed(_) => None,
                }
            }
            _ => unreachable!("actor and state kinds match"),
        };
        if let Some(next) = next {
            *state = Cow::Owned(next);
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<ActorState>, _timer: &Timer, o: &mut Out<Self>) {
        let next = match (self, state.as_ref()) {
            (RaftActor::Server(actor), ActorState::Server(server)) => {
                let mut inner = Cow::Borrowed(server);
                actor.on_tick(&mut inner, o);
                match inner {
                    Cow::Owned(next) => Some(ActorState::Server(next)),
                    Cow::Borrowed(_) => None,
                }
            }
            _ => None,
        };
        if let Some(next) = next {
            *state = Cow::Owned(next);
        }
    }

    fn name(&self) -> String {
        match self {
            RaftActor::Server(server) => format!("n{}", server.config.id),
            RaftActor::Client(_) => "client".to_string(),
        }
    }
}

/// The state-space boundary: states past it are neither checked nor expanded.
fn within_boundary(cfg: &ModelConfig, state: &RaftState) -> bool {
    // Client traffic is bounded by the scripts; the bound is on peer messages.
    if peer_messages_in_flight(&state.network) > cfg.max_in_flight {
        return false;
    }
    let mut crashes = 0;
    for (i, actor) in state.actor_states.iter().enumerate() {
        match &**actor {
            ActorState::Server(server) => {
                let core = &server.core;
                if core.term() > cfg.max_term || core.log().last_index() > cfg.max_log {
                    return false;
                }
                // A pre-vote campaign in the last term can only end in a term past the
                // bound, or back where it started: it is cut with the term bound.
                if core.term() == cfg.max_term && core.role() == Role::PreCandidate {
                    return false;
                }
                crashes += server.disk.ghost_recoveries as usize;
            }
            // Clients do not crash: a restarted client would reissue its operations.
            ActorState::Down => {
                let disk = state.actor_storages[i]
                    .as_ref()
                    .expect("a server saves its disk");
                crashes += disk.ghost_recoveries as usize + 1;
            }
            ActorState::Client(_) => {}
        }
    }
    crashes <= cfg.crashes
}

/// The node's `RaftConfig` as the model runs it: ticks scaled down so that one model
/// `Tick` event is one heartbeat and two make an election timeout.
pub fn raft_config(id: u64, options: &ModelOptions) -> RaftConfig {
    // A joining server knows no members until the leader's log tells it.
    let voters: Vec<u64> = if id <= options.servers as u64 {
        (1..=options.servers as u64).collect()
    } else {
        Vec::new()
    };
    let mut config = RaftConfig::new(id, voters);
    config.election_timeout_ticks_min = 2;
    // max == min + 1: every randomized timeout is 2, which lets the model leave the
    // core's RNG draw counter out of the state (see server::core_fingerprint).
    config.election_timeout_ticks_max = 3;
    config.heartbeat_interval_ticks = 1;
    // Each heartbeat waited for a lost snapshot's answer is a distinct state; resend after
    // one, which is allowed (a resent snapshot is idempotent) and keeps the counter 0 or 1.
    config.snapshot_resend_heartbeats = 1;
    config.pre_vote = options.pre_vote;
    if options.append_entries_max > 0 {
        config.append_entries_max = options.append_entries_max;
    }
    config.check_quorum = true;
    // A seed no term, index or counter can equal: server::core_fingerprint finds the
    // core's RNG fields next to it.
    config.seed = 0x5EED_0000_0000_0000 | (options.seed << 16) | id;
    config.bugs = Bug::seeded_bugs(options.bug);
    config
}

/// Builds the model, playing `options.start` if it is set. An error names the start step
/// that could not be played and what could have been.
pub fn build_model(options: &ModelOptions) -> Result<RaftModel, String> {
    if options.servers == 0 {
        return Err("--servers must be at least 1".to_string());
    }
    if options.symmetry && options.membership.is_some() {
        return Err(
            "--symmetry cannot be used with --membership: the joining server is not \
                    interchangeable with the others; drop one of the two"
                .to_string(),
        );
    }
    let cfg = ModelConfig {
        servers: options.server_actors(),
        network: options.network,
        max_term: options.max_term,
        max_log: options.max_log,
        max_in_flight: options.max_in_flight,
        crashes: options.crashes,
        symmetry: options.symmetry,
    };
    let mut system = ActorModel::new(cfg.clone(), History::default());
    for id in 1..=options.server_actors() as u64 {
        system = system.actor(RaftActor::Server(ServerActor {
            config: raft_config(id, options),
            snapshot_interval_entries: options.snapshot_interval_entries,
            vote_amnesia: options.bug == Some(Bug::VoteAmnesia),
        }));
    }
    for client in 0..options.clients {
        system = system.actor(RaftActor::Client(ClientActor {
            script: script(client, options.client_ops),
            servers: options.server_actors(),
        }));
    }
    for changes in options.membership.iter().flatten() {
        system = system.actor(RaftActor::Client(ClientActor {
            script: changes.iter().copied().map(ClientOp::Reconfigure).collect(),
            servers: options.server_actors(),
        }));
    }
    let network = match options.network {
        NetworkKind::Unordered | NetworkKind::Lossy => Network::new_unordered_nonduplicating([]),
        NetworkKind::Duplicating => Network::new_unordered_duplicating([]),
    };
    // Loss is the model's (at timer events, see `RaftModel::next_state`), not
    // stateright's, which may lose any message at any moment.
    let lossy = LossyNetwork::No;
    let system = system
        .init_network(network)
        .lossy_network(lossy)
        .max_crashes(options.crashes)
        .record_msg_in(history::record_in)
        .record_msg_out(history::record_out);
    use properties as p;
    let always = |name, condition| Property::always(name, condition);
    let sometimes = |name, condition| Property::sometimes(name, condition);
    let properties = vec![
        always(
            "election safety",
            p::election_safety as fn(&RaftModel, &RaftState) -> bool,
        ),
        always("leader append-only", p::leader_append_only),
        always("log matching", p::log_matching),
        always("leader completeness", p::leader_completeness),
        always("state machine safety", p::state_machine_safety),
        always("linearizable", p::linearizable),
        always("core assertions hold", p::core_assertions_hold),
        sometimes("a leader is elected", p::leader_elected),
        sometimes("a value is committed", p::value_committed),
        sometimes("a read observes a write", p::read_observes_write),
        sometimes(
            "a second leader takes over after a crash",
            p::second_leader_after_crash,
        ),
        sometimes("a snapshot is installed", p::snapshot_installed),
    ];
    let mut properties = properties;
    if options.membership.is_some() {
        properties.push(sometimes(
            "a joining server is promoted to voter",
            p::new_voter_promoted,
        ));
        properties.push(sometimes(
            "the joined voter is removed again",
            p::joined_voter_removed,
        ));
    }
    let mut model = RaftModel {
        system,
        cfg,
        properties,
        start: None,
    };
    if !options.start.is_empty() {
        // Steps name servers as the empty cluster does: played without renaming.
        let mut plain = model.clone();
        plain.cfg.symmetry = false;
        model.start = Some(play_start(&plain, &options.start)?);
    }
    Ok(model)
}

/// Plays `patterns` from the empty cluster. Each pattern picks the first enabled action
/// whose description, as a counterexample prints it (the part before `⇒`), starts with
/// the pattern: `n1 tick`, `n1 -> n2: RequestVote`, `c1 -> n1: Request`, `n2 crashed`.
/// The words, not action indices, so that a start survives changes to the action order.
pub fn play_start(
    model: &RaftModel,
    patterns: &[String],
) -> Result<(RaftState, Vec<String>), String> {
    let mut state = model
        .system
        .init_states()
        .into_iter()
        .next()
        .ok_or("the model has no initial state")?;
    let mut steps = Vec::new();
    for (n, pattern) in patterns.iter().enumerate() {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        let mut enabled = Vec::new();
        let mut played = None;
        for action in actions {
            let next = model
                .next_state(&state, action.clone())
                .unwrap_or_else(|| state.clone());
            let step = report::describe_step(model, &state, &action, &next);
            let words = step.split("  ⇒").next().unwrap_or_default().trim_end();
            if words.starts_with(pattern.trim()) {
                played = Some((next, step));
                break;
            }
            enabled.push(words.to_string());
        }
        let Some((next, step)) = played else {
            return Err(format!(
                "start step {} {pattern:?} matches no enabled action\nplayed:\n  {}\nenabled:\n  {}",
                n + 1,
                steps.join("\n  "),
                enabled.join("\n  ")
            ));
        };
        if !within_boundary(&model.cfg, &next) {
            return Err(format!(
                "start step {} {pattern:?} leaves the bounds (raise --max-term, --max-log, \
                 --max-in-flight or --crashes): {step}",
                n + 1
            ));
        }
        steps.push(step);
        state = next;
    }
    Ok((state, steps))
}

/// Reads a start: the name of a built-in one (`figure8`) or a file with one step per line
/// (`#` starts a comment).
pub fn read_start(name_or_path: &str) -> Result<Vec<String>, String> {
    let text = match START_SCENARIOS
        .iter()
        .find(|(name, _)| *name == name_or_path)
    {
        Some((_, text)) => (*text).to_string(),
        None => std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<_> = START_SCENARIOS.iter().map(|(name, _)| *name).collect();
            format!(
                "cannot read start {name_or_path:?}: {e} (give a file of steps, or one of: {})",
                names.join(", ")
            )
        })?,
    };
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// Built-in starts, by name.
pub const START_SCENARIOS: &[(&str, &str)] = &[
    ("figure8", include_str!("raft/figure8.steps")),
    ("learner-votes", include_str!("raft/learner-votes.steps")),
    (
        "config-before-noop",
        include_str!("raft/config-before-noop.steps"),
    ),
];

/// Checks the model under `options` and reports what it found. With `explore` set, serves
/// stateright's Explorer instead and does not return.
pub fn check(options: ModelOptions) -> Result<ModelReport, String> {
    let model = build_model(&options)?;
    let mut builder: CheckerBuilder<RaftModel> = model.checker().threads(options.threads.max(1));
    if options.stop_at_first_violation {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    if let Some(address) = &options.explore {
        eprintln!("Explorer on http://{address}/ (a counterexample path P opens at /#/steps/P)");
        builder.serve(address.as_str());
        unreachable!("the Explorer serves until the process stops");
    }
    if let Some(states) = options.max_states {
        builder = builder.target_state_count(states);
    }
    let started = Instant::now();
    Ok(match options.checker {
        CheckerKind::Bfs => finish(&options, builder.spawn_bfs(), started),
        CheckerKind::Dfs => finish(&options, builder.spawn_dfs(), started),
        CheckerKind::Simulation => {
            let builder = if options.max_states.is_none() {
                builder.target_state_count(1_000_000)
            } else {
                builder
            };
            finish(
                &options,
                builder.spawn_simulation(options.seed, UniformChooser),
                started,
            )
        }
    })
}

/// Waits for the checker, or for `options.timeout`. stateright 0.31's own timeout is only
/// looked at between work batches, which a single-threaded run never reaches, so the
/// timeout is kept here: past it, the report is taken from the running checker (its
/// threads are left to the process's end).
fn finish<C: Checker<RaftModel>>(
    options: &ModelOptions,
    checker: C,
    started: Instant,
) -> ModelReport {
    while !checker.is_done() {
        if options.timeout.is_some_and(|t| started.elapsed() >= t) {
            return report::build(options, &checker, started.elapsed(), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let checker = checker.join();
    report::build(options, &checker, started.elapsed(), false)
}

/// Replays a path (as `ModelReport` prints it: action indices joined by `/`, the first
/// one the initial state's) and returns its steps in words.
pub fn replay(options: &ModelOptions, path: &str) -> Result<Vec<String>, String> {
    let model = build_model(options)?;
    let mut indices = path.trim_matches('/').split('/').map(|i| {
        i.parse::<usize>()
            .map_err(|e| format!("bad path index {i:?}: {e}"))
    });
    let init = indices.next().ok_or("empty path")??;
    let mut state = model
        .init_states()
        .into_iter()
        .nth(init)
        .ok_or("no such initial state")?;
    let mut steps: Vec<String> = model
        .start_steps()
        .iter()
        .map(|s| format!("(start) {s}"))
        .collect();
    for index in indices {
        let index = index?;
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        let action = actions
            .get(index)
            .cloned()
            .ok_or_else(|| format!("step {}: no action {index}", steps.len() + 1))?;
        let next = model
            .next_state(&state, action.clone())
            .unwrap_or_else(|| state.clone());
        steps.push(report::describe_step(&model, &state, &action, &next));
        state = next;
    }
    Ok(steps)
}
