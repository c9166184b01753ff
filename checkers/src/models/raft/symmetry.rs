//! Symmetry reduction: the servers are interchangeable (same code, same configuration but
//! their ids, timeouts that draw no randomness), so two states that differ only in which
//! server is which lead to the same verdicts, and the search needs to visit one of them.
//! Every state the model produces is replaced by its representative: the servers sorted
//! by a key that names no server, and every id renamed to match.
//!
//! stateright 0.31 reduces by symmetry only in its depth-first checker, and there it
//! keeps exploring the original state; the model canonicalises in `next_state` instead,
//! so breadth-first search, simulation and path replay all see the same (deterministic)
//! representatives. A counterexample found this way names servers as the representative
//! does, which may differ from step to step: rerun without `--symmetry` to read it.
//!
//! Soundness needs only that the representative is a renaming of the state: the sort
//! key breaks ties by position, which can leave two renamings of one state apart (less
//! reduction), never merge two states that are not renamings of each other.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use faultline_node::proto::raft::message::Body;
use faultline_node::replication::relabel_meta;
use stateright::actor::{Envelope, Id, Network};

use super::messages::Msg;
use super::server::Disk;
use stateright::Model;

use super::{ActorState, RaftAction, RaftActor, RaftModel, RaftState, RaftSystem};

/// A server's place in the order: what it holds, with no server id in it.
fn sort_key(actor: &ActorState, disk: Option<&Disk>) -> (u8, u8, u64, u64, u64, u64, u64) {
    let digest = |value: &dyn Fn(&mut ahash::AHasher)| {
        let mut hasher = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
        value(&mut hasher);
        hasher.finish()
    };
    let disk_digest = disk.map_or(0, |d| {
        digest(&|h| {
            d.durable.entries.hash(h);
            d.durable.hard_state.term.hash(h);
            (d.durable.hard_state.voted_for != 0).hash(h);
            d.durable.snapshot.as_ref().map(|s| &s.data).hash(h);
            d.ghost_recoveries.hash(h);
            d.ghost_applied.hash(h);
        })
    });
    match actor {
        ActorState::Server(server) => {
            let core = &server.core;
            let volatile = digest(&|h| {
                server.store.hash(h);
                server.applied_index.hash(h);
                server.pending_writes.hash(h);
                server.pending_reads.hash(h);
                server.confirmed_reads.hash(h);
                server.ghost.hash(h);
                core.leader_id().is_some().hash(h);
            });
            (
                0,
                core.role() as u8,
                core.term(),
                core.log().last_index(),
                core.commit_index(),
                disk_digest,
                volatile,
            )
        }
        ActorState::Down => (1, 0, 0, 0, 0, disk_digest, 0),
        ActorState::Client(_) => unreachable!("only servers are sorted"),
    }
}

/// The representative of `state`: its servers (actors `0..servers`) sorted by
/// `sort_key`, renamed to match. The state itself if it is sorted already, or if a
/// server cannot be renamed (a membership change in its log). Ties keep their order, so
/// two renamings of one state can have different representatives.
pub fn canonical(system: &RaftSystem, servers: usize, state: RaftState) -> RaftState {
    let keys: Vec<_> = (0..servers)
        .map(|i| sort_key(&state.actor_states[i], state.actor_storages[i].as_deref()))
        .collect();
    let mut order: Vec<usize> = (0..servers).collect();
    order.sort_by_key(|&i| keys[i]);
    // Servers with equal keys differ only in ids (whom they voted for, follow, track):
    // of the orders that sort the keys, take the renaming with the least hash, which is
    // the same whichever renaming of the state we started from.
    let mut tied = Vec::new();
    let mut start = 0;
    while start < servers {
        let end = (start..servers)
            .find(|&j| keys[order[j]] != keys[order[start]])
            .unwrap_or(servers);
        if end - start > 1 {
            tied.push(start..end);
        }
        start = end;
    }
    if tied.is_empty() {
        return renamed(system, &order, &state).unwrap_or(state);
    }
    let mut best: Option<(u64, Option<RaftState>)> = None;
    for candidate in tie_orders(&order, &tied) {
        let next = renamed(system, &candidate, &state);
        let hash = state_hash(next.as_ref().unwrap_or(&state));
        if best.as_ref().is_none_or(|(least, _)| hash < *least) {
            best = Some((hash, next));
        }
    }
    best.and_then(|(_, next)| next).unwrap_or(state)
}

fn state_hash(state: &RaftState) -> u64 {
    ahash::RandomState::with_seeds(5, 6, 7, 8).hash_one(state)
}

/// Every order that permutes `order` only within the `tied` ranges.
fn tie_orders(order: &[usize], tied: &[std::ops::Range<usize>]) -> Vec<Vec<usize>> {
    let mut all = vec![order.to_vec()];
    for range in tied {
        let mut next = Vec::new();
        for base in &all {
            for shuffle in permutations(range.len()) {
                let mut candidate = base.clone();
                for (k, &from) in shuffle.iter().enumerate() {
                    candidate[range.start + k] = base[range.start + from];
                }
                next.push(candidate);
            }
        }
        all = next;
    }
    all
}

/// `state` with server `order[k]` moved to place `k` and every id renamed to match; `None`
/// if the order is the identity or a server cannot be renamed.
fn renamed(system: &RaftSystem, order: &[usize], state: &RaftState) -> Option<RaftState> {
    let servers = order.len();
    if order
        .iter()
        .enumerate()
        .all(|(position, &old)| position == old)
    {
        return None;
    }
    // order[new] = old; position[old] = new.
    let mut position = vec![0; servers];
    for (new, &old) in order.iter().enumerate() {
        position[old] = new;
    }
    // Server ids are actor indices plus one; anything else (0 for "none") stays.
    let rename = |id: u64| -> u64 {
        match usize::try_from(id) {
            Ok(i) if (1..=servers).contains(&i) => position[i - 1] as u64 + 1,
            _ => id,
        }
    };
    let rename_actor = |id: Id| -> Id {
        let i = usize::from(id);
        if i < servers {
            Id::from(position[i])
        } else {
            id
        }
    };

    let mut next = state.clone();
    for (new, &old) in order.iter().enumerate() {
        let storage = state.actor_storages[old]
            .as_ref()
            .map(|disk| Arc::new(disk.relabeled(&rename)));
        next.actor_states[new] = match &*state.actor_states[old] {
            ActorState::Server(server) => {
                let RaftActor::Server(actor) = &system.actors[new] else {
                    unreachable!("servers come first");
                };
                let disk = storage
                    .clone()
                    .expect("a running server has saved its disk");
                Arc::new(ActorState::Server(server.relabeled(
                    actor.config.clone(),
                    disk,
                    &rename,
                )?))
            }
            other => Arc::new(other.clone()),
        };
        next.actor_storages[new] = storage;
        next.timers_set[new] = state.timers_set[old].clone();
        next.random_choices[new] = state.random_choices[old].clone();
        next.crashed[new] = state.crashed[old];
    }
    next.network = renamed_network(&state.network, &rename, &rename_actor);
    next.history.leaders = state
        .history
        .leaders
        .iter()
        .map(|&(term, leader)| (term, rename(leader)))
        .collect();
    Some(next)
}

fn renamed_network(
    network: &Network<Msg>,
    rename: &dyn Fn(u64) -> u64,
    rename_actor: &dyn Fn(Id) -> Id,
) -> Network<Msg> {
    let envelope = |e: &Envelope<Msg>| Envelope {
        src: rename_actor(e.src),
        dst: rename_actor(e.dst),
        msg: renamed_msg(&e.msg, rename),
    };
    match network {
        Network::UnorderedNonDuplicating(multiset) => {
            let mut renamed = stateright::util::HashableHashMap::with_capacity(multiset.len());
            for (e, count) in multiset.iter() {
                renamed.insert(envelope(e), *count);
            }
            Network::UnorderedNonDuplicating(renamed)
        }
        Network::UnorderedDuplicating(set, last) => {
            let mut renamed = stateright::util::HashableHashSet::with_capacity(set.len());
            for e in set.iter() {
                renamed.insert(envelope(e));
            }
            Network::UnorderedDuplicating(renamed, last.as_ref().map(envelope))
        }
        Network::Ordered(_) => unreachable!("the model uses unordered networks"),
    }
}

fn renamed_msg(msg: &Msg, rename: &dyn Fn(u64) -> u64) -> Msg {
    let Msg::Raft(message) = msg else {
        return msg.clone();
    };
    let mut message = message.clone();
    message.from = rename(message.from);
    message.to = rename(message.to);
    if let Some(Body::InstallSnapshot(snapshot)) = &mut message.body
        && let Some(meta) = &mut snapshot.meta
    {
        relabel_meta(meta, rename);
    }
    Msg::Raft(message)
}

/// A path as stateright gives it: each state with the action taken from it.
pub type Steps = Vec<(RaftState, Option<RaftAction>)>;

/// A path the reduced search found, played again without renaming: each step is the
/// action that, taken from the real state, reaches a renaming of the path's next state.
/// Counterexamples are printed from this, so that a server keeps its name from step to
/// step. Returns the steps and the path's action indices (for `--replay` without
/// `--symmetry`); `None` if a step has no match (which would mean the model is not
/// symmetric after all).
pub fn unreduced(model: &RaftModel, path: &Steps) -> Option<(Steps, String)> {
    let mut plain = model.clone();
    plain.cfg.symmetry = false;
    let (first, _) = path.first()?;
    let init = plain.init_states().iter().position(|s| s == first)?;
    let orders = permutations(model.cfg.servers);
    let mut encoded = init.to_string();
    let mut state = first.clone();
    let mut steps = Vec::with_capacity(path.len());
    for (target, _) in &path[1..] {
        let mut actions = Vec::new();
        plain.actions(&state, &mut actions);
        let found = actions.into_iter().enumerate().find_map(|(i, action)| {
            let next = plain.next_state(&state, action.clone())?;
            let matches = next == *target
                || orders
                    .iter()
                    .any(|order| renamed(&model.system, order, &next).as_ref() == Some(target));
            matches.then_some((i, action, next))
        });
        let (index, action, next) = found?;
        encoded.push_str(&format!("/{index}"));
        steps.push((state, Some(action)));
        state = next;
    }
    steps.push((state, None));
    Some((steps, encoded))
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for at in 0..n {
            let mut order = shorter.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}
