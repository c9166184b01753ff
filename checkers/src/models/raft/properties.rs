//! The properties the model checks, each citing where Raft states it. Every `always`
//! has a `sometimes` witness (see `WITNESSES`), so that no property passes because the
//! bounds never let the situation it speaks about arise.

use std::collections::BTreeMap;

use faultline_node::replication::RaftCore;

use super::server::{Disk, ServerState};
use super::{ActorState, RaftModel, RaftState};

/// Which `sometimes` property shows each `always` property is not vacuous.
pub const WITNESSES: &[(&str, &str)] = &[
    ("election safety", "a leader is elected"),
    ("leader append-only", "a value is committed"),
    ("log matching", "a value is committed"),
    (
        "leader completeness",
        "a second leader takes over after a crash",
    ),
    ("state machine safety", "a value is committed"),
    ("linearizable", "a read observes a write"),
    ("core assertions hold", "a snapshot is installed"),
];

/// A server as the properties see it: its disk (stateright's storage, which a crash
/// keeps) and, while it is up, its volatile state.
pub struct ServerView<'a> {
    pub id: u64,
    pub disk: &'a Disk,
    pub up: Option<&'a ServerState>,
}

pub fn servers(state: &RaftState) -> impl Iterator<Item = ServerView<'_>> {
    state
        .actor_states
        .iter()
        .enumerate()
        .filter_map(|(i, actor)| {
            let disk = state.actor_storages.get(i)?.as_ref()?;
            let up = match &**actor {
                ActorState::Server(server) => Some(server),
                ActorState::Down => None,
                ActorState::Client(_) => return None,
            };
            Some(ServerView {
                id: i as u64 + 1,
                disk,
                up,
            })
        })
}

fn up_servers(state: &RaftState) -> impl Iterator<Item = &ServerState> {
    servers(state).filter_map(|s| s.up)
}

fn live_leaders(state: &RaftState) -> impl Iterator<Item = &RaftCore> {
    up_servers(state)
        .map(|s| &s.core)
        .filter(|core| core.is_leader())
}

/// Raft §5.2 and Figure 3, Election Safety: at most one leader can be elected in a
/// given term. Checked over every (term, leader) the run ever saw, not only the current
/// leaders, so a leader that crashed still counts.
pub fn election_safety(_: &RaftModel, state: &RaftState) -> bool {
    let mut by_term = BTreeMap::new();
    let current = live_leaders(state).map(|core| (core.term(), core.id()));
    for (term, node) in state.history.leaders.iter().copied().chain(current) {
        if *by_term.entry(term).or_insert(node) != node {
            return false;
        }
    }
    true
}

/// Figure 3, Leader Append-Only: a leader never overwrites or deletes entries in its
/// log; it only appends. Checked on every step a server leads through (compaction into a
/// snapshot is not a deletion).
pub fn leader_append_only(_: &RaftModel, state: &RaftState) -> bool {
    up_servers(state).all(|s| s.ghost.append_only_violation.is_none())
}

/// §5.3 and Figure 3, Log Matching: if two logs contain an entry with the same index and
/// term, the logs are identical in all entries up through that index. Compared over the
/// indices both logs still hold (not compacted).
pub fn log_matching(_: &RaftModel, state: &RaftState) -> bool {
    let cores: Vec<&RaftCore> = up_servers(state).map(|s| &s.core).collect();
    for (i, a) in cores.iter().enumerate() {
        for b in &cores[i + 1..] {
            if !logs_match(a, b) {
                return false;
            }
        }
    }
    true
}

fn logs_match(a: &RaftCore, b: &RaftCore) -> bool {
    let (a, b) = (a.log(), b.log());
    let low = a.snapshot_index().max(b.snapshot_index()) + 1;
    let high = a.last_index().min(b.last_index());
    let Some(agreed) = (low..=high).rev().find(|&i| a.term(i) == b.term(i)) else {
        return true;
    };
    (low..=agreed).all(|i| a.entry(i) == b.entry(i))
}

/// §5.4 and Figure 3, Leader Completeness: if an entry is committed in a term, it is in
/// the log of every leader of a higher term. An entry counts as committed by the term in
/// which some server applied it (an upper bound on the term it committed in).
pub fn leader_completeness(_: &RaftModel, state: &RaftState) -> bool {
    for leader in live_leaders(state) {
        let log = leader.log();
        for server in servers(state) {
            for (&index, applied) in &server.disk.ghost_applied {
                if applied.applied_in_term >= leader.term() || index < log.snapshot_index() {
                    continue;
                }
                if log.term(index) != Some(applied.term) {
                    return false;
                }
            }
        }
    }
    true
}

/// §5.4.3 and Figure 3, State Machine Safety: if a server has applied an entry at an
/// index, no other server ever applies a different entry at that index. Every entry a
/// server ever applied is kept (on its disk, as a ghost), so crashes do not hide one.
pub fn state_machine_safety(_: &RaftModel, state: &RaftState) -> bool {
    if up_servers(state).any(|s| s.ghost.reapply_mismatch.is_some()) {
        return false;
    }
    let all: Vec<ServerView> = servers(state).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            for (index, applied) in &a.disk.ghost_applied {
                if let Some(other) = b.disk.ghost_applied.get(index)
                    && other.term != applied.term
                {
                    return false;
                }
            }
        }
    }
    true
}

/// Thesis §6 (client interaction): the operations clients accepted are linearizable
/// against a single register (Herlihy & Wing 1990), reads included (ReadIndex, §6.4).
pub fn linearizable(_: &RaftModel, state: &RaftState) -> bool {
    state.history.linearizability.serialized_history().is_some()
}

/// The core's own `assert!`s (its invariants) never fire.
pub fn core_assertions_hold(_: &RaftModel, state: &RaftState) -> bool {
    up_servers(state).all(|s| s.ghost.core_panic.is_none())
}

pub fn leader_elected(_: &RaftModel, state: &RaftState) -> bool {
    !state.history.leaders.is_empty() || live_leaders(state).next().is_some()
}

pub fn value_committed(_: &RaftModel, state: &RaftState) -> bool {
    servers(state).any(|s| s.disk.ghost_applied.values().any(|a| a.command))
}

pub fn read_observes_write(_: &RaftModel, state: &RaftState) -> bool {
    state.actor_states.iter().any(|actor| match &**actor {
        ActorState::Client(client) => client
            .accepted
            .iter()
            .any(|(op, ret)| *op == super::ClientOp::Get && *ret != super::ClientRet::GetOk(0)),
        ActorState::Server(_) | ActorState::Down => false,
    })
}

/// A node that led an earlier term has crashed (it is down, or came back), and another
/// node leads a later term.
pub fn second_leader_after_crash(_: &RaftModel, state: &RaftState) -> bool {
    let has_crashed = |node: u64| {
        servers(state).any(|s| s.id == node && (s.up.is_none() || s.disk.ghost_recoveries > 0))
    };
    live_leaders(state).any(|leader| {
        state
            .history
            .leaders
            .iter()
            .any(|&(term, node)| term < leader.term() && node != leader.id() && has_crashed(node))
    })
}

pub fn snapshot_installed(_: &RaftModel, state: &RaftState) -> bool {
    up_servers(state).any(|s| s.ghost.installed_snapshot)
}

/// With `--membership`: the joining server became a voter somewhere (it was added as a
/// learner and promoted).
pub fn new_voter_promoted(model: &RaftModel, state: &RaftState) -> bool {
    let joining = model.cfg.servers as u64;
    up_servers(state).any(|s| s.core.membership().voters.contains(&joining))
}

/// With `--membership`: a server's log holds more than one configuration entry and the
/// joining server is no member any more (it was added, then removed again).
pub fn joined_voter_removed(model: &RaftModel, state: &RaftState) -> bool {
    let joining = model.cfg.servers as u64;
    let config = faultline_node::proto::raft::EntryKind::Config as i32;
    up_servers(state).any(|s| {
        let log = s.core.log();
        let changes = (log.first_index()..=log.last_index())
            .filter(|&i| log.entry(i).is_some_and(|e| e.kind == config))
            .count();
        changes >= 2 && !s.core.membership().is_member(joining)
    })
}
