//! The causal replication core: a leaderless keyspace in which every replica accepts
//! reads and writes on its own, even cut off from all the others, and replicas converge
//! by exchanging what the other lacks. Sans-IO: writes, peer messages and `now` come in
//! as arguments; what to persist and what to send go out as data.
//!
//! # Causality
//!
//! Each replica numbers its own writes 1, 2, 3, ...: a write's *dot* is (origin, n). A
//! replica's `applied` vector says, per origin, how many of that origin's writes it has
//! applied, always a prefix. A write carries as its dependencies the vector of its origin
//! when it was made: everything the origin had applied, which includes everything the
//! writing client had seen (the origin serves a client only once it has applied the
//! client's context). A replica applies a remote write only once it has applied its
//! dependencies (causal delivery, as in Birman–Schiper–Stephenson broadcast), so what a
//! replica shows is always a causally closed cut: whoever reads a write at any replica
//! also finds everything that write depended on.
//!
//! Treating everything an origin had applied as a dependency over-approximates the
//! client's own causal past. It costs nothing in correctness (more order than needed,
//! never less) and keeps the dependencies one vector per write.
//!
//! # Concurrent writes
//!
//! Per key, values are dotted version vectors ([`Siblings`]): a write overwrites the
//! values its dependencies cover and stays beside those it never saw, so two replicas
//! writing one key while cut off from each other leave two siblings on every replica.
//! With [`Resolve::Lww`] the key keeps one value instead: the greatest HLC stamp wins
//! (dots break ties), and every value that lost to a write that had not seen it is
//! reported as [`Overwritten`], so the data LWW throws away is named, not silent. LWW
//! respects causality only because the HLC does: a write made after seeing another is
//! stamped above it. The seeded bug `lww-wall-clock` stamps with the raw wall clock, and
//! a later write from a slower clock loses to the write it overwrote.
//!
//! # Sessions
//!
//! A client carries a context, a vector: the dependencies and dots of everything it read
//! or wrote. A replica behind a client's context ([`Behind`]) does not serve it: the
//! shell waits a bounded time for anti-entropy to bring the missing writes, then refuses
//! with a replica that has them. Serving only clients it has caught up with is what gives
//! every session read-your-writes, monotonic reads, monotonic writes and
//! writes-follow-reads, whichever replica it talks to.
//!
//! # Anti-entropy
//!
//! Replicas exchange their `applied` vectors, the digest of everything they hold; each
//! side ships the writes the other's vector lacks, in an order that respects causality
//! (see [`CausalReplica::missing_for`]). Read repair is the same exchange narrowed to one
//! key: the replica that served a read asks its peers for the writes behind their copy of
//! the key. Once all replicas have applied a write it is dropped from the in-memory log.

use std::collections::{BTreeMap, BTreeSet};

use super::dvv::{Dot, Siblings};
use super::hlc::{ClockError, HybridClock, Timestamp};
use super::vector::{NodeId, VectorClock};

/// How a key's concurrent writes are resolved. All replicas of a cluster must agree;
/// exchanges between replicas that do not are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolve {
    /// Keep every concurrent write as a sibling; a read returns them all.
    #[default]
    Siblings,
    /// Keep the write with the greatest HLC stamp; report the concurrent ones it beat.
    Lww,
}

impl Resolve {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolve::Siblings => "siblings",
            Resolve::Lww => "lww",
        }
    }
}

/// Seeded bugs of the causal mode, each off unless a test asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CausalBugs {
    /// `ignore-causal-context`: serve a client whose context this replica has not applied.
    pub ignore_causal_context: bool,
    /// `vv-merge-drops-sibling`: applying a write drops the siblings it did not carry,
    /// seen or not (`Siblings::merge_with`).
    pub vv_merge_drops_sibling: bool,
    /// `lww-wall-clock`: stamp writes with the raw wall clock, not the HLC.
    pub lww_wall_clock: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CausalOptions {
    pub resolve: Resolve,
    pub max_clock_offset_ms: u64,
    /// Most writes one exchange carries; the rest follow in the next.
    pub exchange_writes_max: usize,
    /// Most remote writes held back for missing dependencies; beyond, new ones are
    /// dropped (anti-entropy sends them again).
    pub pending_max: usize,
    /// Most LWW losses kept for the shell to drain.
    pub overwritten_max: usize,
    pub bugs: CausalBugs,
}

impl Default for CausalOptions {
    fn default() -> Self {
        Self {
            resolve: Resolve::Siblings,
            max_clock_offset_ms: super::hlc::DEFAULT_MAX_OFFSET_MS,
            exchange_writes_max: 512,
            pending_max: 65_536,
            overwritten_max: 10_000,
            bugs: CausalBugs::default(),
        }
    }
}

/// One write as it travels and as it is persisted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Write {
    pub dot: Dot,
    /// The origin's applied vector when it made the write.
    pub deps: VectorClock,
    pub key: Vec<u8>,
    /// `None` deletes (a tombstone, so that the delete overwrites what it saw).
    pub value: Option<Vec<u8>>,
    pub stamp: Timestamp,
}

impl Write {
    /// Position in a causal order: a write's dependencies sum to more than any of its
    /// dependencies' own, so sorting by this sum never puts a write before one it
    /// depends on.
    fn depth(&self) -> u64 {
        self.deps.iter().map(|(_, c)| c).sum()
    }

    /// Rough wire size, for the anti-entropy byte counts.
    pub fn size(&self) -> usize {
        32 + self.key.len()
            + self.value.as_ref().map_or(0, Vec::len)
            + 16 * self.deps.iter().count()
    }
}

/// A value as a key holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    pub value: Option<Vec<u8>>,
    pub stamp: Timestamp,
    /// The write's dependencies: LWW needs them to tell an overwrite from a conflict.
    pub deps: VectorClock,
}

/// A value LWW discarded although the write that beat it had not seen it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Overwritten {
    pub key: Vec<u8>,
    pub lost: Dot,
    pub lost_value: Option<Vec<u8>>,
    pub lost_stamp: Timestamp,
    pub winner: Dot,
    pub winner_value: Option<Vec<u8>>,
    pub winner_stamp: Timestamp,
}

/// This replica has not applied all of a client's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    /// Per origin: (what this replica has applied, what the context needs).
    pub missing: BTreeMap<NodeId, (u64, u64)>,
    /// A replica known (from its last exchange) to have applied the whole context, or
    /// else the origin of the first missing write, which always has its own writes.
    pub try_instead: NodeId,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this replica is behind the client's causal context (")?;
        for (i, (origin, (have, need))) in self.missing.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "n{origin}: has {have} of {need} writes")?;
        }
        write!(f, "); try n{}", self.try_instead)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CausalError {
    #[error("{0}")]
    Behind(Behind),
    #[error("cannot stamp the write: {0}")]
    Clock(ClockError),
    #[error(
        "n{peer} resolves concurrent writes by {theirs} and this replica by {ours}: every \
         replica of a cluster must be started with the same --causal-resolve"
    )]
    ResolveMismatch {
        peer: NodeId,
        ours: &'static str,
        theirs: &'static str,
    },
}

/// What a read returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The live values, by dot (none: the key is absent or deleted).
    pub values: Vec<(Dot, Vec<u8>, Timestamp)>,
    /// The client's context joined with the causal past of what it read.
    pub context: VectorClock,
}

/// A write made here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub write: Write,
    /// The client's new context: the write and everything it depends on.
    pub context: VectorClock,
}

/// One side of an anti-entropy exchange (or of a push after a write, or of read repair).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Exchange {
    pub from: NodeId,
    pub resolve: Resolve,
    /// The sender's applied vector: the digest of what it holds.
    pub applied: VectorClock,
    /// Writes the sender believes the receiver lacks, in causal order.
    pub writes: Vec<Write>,
    /// Read repair: the reply should carry only the writes behind this key's value.
    pub repair_key: Option<Vec<u8>>,
}

/// What receiving writes did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Newly applied, in the order applied: the shell persists them in this order.
    pub applied: Vec<Write>,
    /// Held back for a stamp past the maximum offset ahead of this node's clock: not
    /// applied and not adopted until the clock is within the offset of it.
    pub refused_stamps: Vec<(Dot, ClockError)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CausalReplica {
    id: NodeId,
    /// Every replica of the keyspace, this one included.
    members: BTreeSet<NodeId>,
    options: CausalOptions,
    hlc: HybridClock,
    applied: VectorClock,
    store: BTreeMap<Vec<u8>, Siblings<Version>>,
    /// Applied writes not yet known to be applied everywhere, per origin by number.
    log: BTreeMap<NodeId, BTreeMap<u64, Write>>,
    /// Each peer's applied vector as of its last exchange.
    peer_applied: BTreeMap<NodeId, VectorClock>,
    /// Remote writes whose dependencies (or stamp) are not satisfied yet.
    pending: BTreeMap<Dot, Write>,
    overwritten: Vec<Overwritten>,
    overwritten_total: u64,
}

impl CausalReplica {
    pub fn new(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        options: CausalOptions,
    ) -> Self {
        let mut members: BTreeSet<NodeId> = members.into_iter().collect();
        members.insert(id);
        let hlc = HybridClock::new(options.max_clock_offset_ms)
            .with_raw_wall_clock(options.bugs.lww_wall_clock);
        Self {
            id,
            members,
            options,
            hlc,
            applied: VectorClock::new(),
            store: BTreeMap::new(),
            log: BTreeMap::new(),
            peer_applied: BTreeMap::new(),
            pending: BTreeMap::new(),
            overwritten: Vec::new(),
            overwritten_total: 0,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn resolve(&self) -> Resolve {
        self.options.resolve
    }

    pub fn applied(&self) -> &VectorClock {
        &self.applied
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied().filter(move |&m| m != self.id)
    }

    /// Every peer, as of its last exchange, has applied exactly what this replica has,
    /// and nothing is held back: an exchange now would most likely carry nothing.
    pub fn quiet(&self) -> bool {
        self.pending.is_empty()
            && self
                .peers()
                .all(|p| self.peer_applied.get(&p) == Some(&self.applied))
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn log_len(&self) -> usize {
        self.log.values().map(BTreeMap::len).sum()
    }

    pub fn key_count(&self) -> usize {
        self.store.len()
    }

    pub fn overwritten_total(&self) -> u64 {
        self.overwritten_total
    }

    /// The LWW losses since the last drain.
    pub fn drain_overwritten(&mut self) -> Vec<Overwritten> {
        std::mem::take(&mut self.overwritten)
    }

    /// Every key with its values (tombstones included), for convergence checks.
    pub fn dump(&self) -> impl Iterator<Item = (&[u8], &Siblings<Version>)> {
        self.store.iter().map(|(k, v)| (k.as_slice(), v))
    }

    /// Whether this replica can serve a client with `context` now.
    pub fn caught_up_with(&self, context: &VectorClock) -> Result<(), CausalError> {
        if self.options.bugs.ignore_causal_context || self.applied.descends_from(context) {
            return Ok(());
        }
        let missing: BTreeMap<NodeId, (u64, u64)> = context
            .iter()
            .filter(|&(origin, need)| self.applied.get(origin) < need)
            .map(|(origin, need)| (origin, (self.applied.get(origin), need)))
            .collect();
        let try_instead = self
            .peer_applied
            .iter()
            .find(|(_, applied)| applied.descends_from(context))
            .map(|(&peer, _)| peer)
            .or_else(|| missing.keys().next().copied())
            .unwrap_or(self.id);
        Err(CausalError::Behind(Behind {
            missing,
            try_instead,
        }))
    }

    pub fn read(&self, key: &[u8], context: &VectorClock) -> Result<ReadResult, CausalError> {
        self.caught_up_with(context)?;
        let mut out = context.clone();
        let mut values = Vec::new();
        if let Some(siblings) = self.store.get(key) {
            out.merge(&past(siblings));
            for (dot, version) in siblings.values() {
                if let Some(value) = &version.value {
                    values.push((dot, value.clone(), version.stamp));
                }
            }
        }
        Ok(ReadResult {
            values,
            context: out,
        })
    }

    /// A client's write (`None` deletes), applied here at once; the shell makes it
    /// durable before it answers the client or ships it.
    pub fn write(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        context: &VectorClock,
        now_ms: u64,
    ) -> Result<WriteResult, CausalError> {
        self.caught_up_with(context)?;
        let stamp = self.hlc.now(now_ms).map_err(CausalError::Clock)?;
        let mut deps = self.applied.clone();
        if self.options.bugs.ignore_causal_context {
            // The buggy replica still claims the client's past as its own.
            deps.merge(context);
        }
        let dot = Dot {
            node: self.id,
            counter: self.applied.get(self.id) + 1,
        };
        let write = Write {
            dot,
            deps,
            key,
            value,
            stamp,
        };
        self.apply(write.clone());
        let mut context = self.applied.clone();
        if self.options.bugs.ignore_causal_context {
            context.merge(&write.deps);
        }
        Ok(WriteResult { write, context })
    }

    /// Replays a persisted write at startup (they were persisted in an order in which
    /// each one's dependencies came first).
    pub fn recover(&mut self, write: Write) {
        if self.applied.get(write.dot.node) >= write.dot.counter {
            return;
        }
        // Stamps were accepted when first applied; re-adopting them keeps the HLC above
        // every write this replica holds, whatever the clock says after the restart.
        let _ = self.hlc.update(write.stamp, write.stamp.wall_ms);
        self.apply(write);
    }

    fn deliverable(&self, write: &Write) -> bool {
        self.applied.get(write.dot.node) + 1 == write.dot.counter
            && self.applied.descends_from(&write.deps)
    }

    fn apply(&mut self, write: Write) {
        let version = Version {
            value: write.value.clone(),
            stamp: write.stamp,
            deps: write.deps.clone(),
        };
        let siblings = self.store.entry(write.key.clone()).or_default();
        match self.options.resolve {
            Resolve::Siblings => {
                let incoming = Siblings::from_parts(write.deps.clone(), [(write.dot, version)]);
                siblings.merge_with(&incoming, self.options.bugs.vv_merge_drops_sibling);
            }
            Resolve::Lww => {
                let mut clock = siblings.clock().clone();
                clock.merge(&write.deps);
                let mut candidates: Vec<(Dot, Version)> =
                    siblings.values().map(|(d, v)| (d, v.clone())).collect();
                candidates.push((write.dot, version));
                let (winner, won) = candidates
                    .iter()
                    .max_by_key(|(dot, v)| (v.stamp, *dot))
                    .cloned()
                    .expect("at least the incoming write");
                for (dot, lost) in candidates {
                    if dot == winner {
                        continue;
                    }
                    // The loser joins the key's past, so that no later merge brings it back.
                    clock.merge(&[(dot.node, dot.counter)].into_iter().collect());
                    if won.deps.get(dot.node) < dot.counter {
                        self.overwritten_total += 1;
                        if self.overwritten.len() < self.options.overwritten_max {
                            self.overwritten.push(Overwritten {
                                key: write.key.clone(),
                                lost: dot,
                                lost_value: lost.value,
                                lost_stamp: lost.stamp,
                                winner,
                                winner_value: won.value.clone(),
                                winner_stamp: won.stamp,
                            });
                        }
                    }
                }
                *siblings = Siblings::from_parts(clock, [(winner, won)]);
            }
        }
        let (origin, counter) = (write.dot.node, write.dot.counter);
        self.log.entry(origin).or_default().insert(counter, write);
        self.applied
            .merge(&[(origin, counter)].into_iter().collect());
    }

    /// Takes remote writes: applies those whose dependencies are met, holds the rest.
    pub fn receive(&mut self, writes: Vec<Write>, now_ms: u64) -> Received {
        for write in writes {
            if self.applied.get(write.dot.node) >= write.dot.counter
                || self.pending.contains_key(&write.dot)
            {
                continue;
            }
            if self.pending.len() >= self.options.pending_max {
                break;
            }
            self.pending.insert(write.dot, write);
        }
        self.deliver(now_ms)
    }

    /// Applies every held write that has become deliverable (also worth calling on a
    /// tick: a stamp that was too far ahead may be within the offset now).
    pub fn deliver(&mut self, now_ms: u64) -> Received {
        let mut received = Received::default();
        let mut refused: BTreeSet<Dot> = BTreeSet::new();
        loop {
            // Only an origin with a held write can have its next write held.
            let next = self
                .pending
                .keys()
                .map(|d| d.node)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|origin| {
                    let dot = Dot {
                        node: origin,
                        counter: self.applied.get(origin) + 1,
                    };
                    self.pending
                        .get(&dot)
                        .filter(|w| self.deliverable(w))
                        .map(|_| dot)
                })
                .find(|dot| !refused.contains(dot));
            let Some(dot) = next else { break };
            let stamp = self.pending[&dot].stamp;
            if let Err(e) = self.hlc.update(stamp, now_ms) {
                refused.insert(dot);
                received.refused_stamps.push((dot, e));
                continue;
            }
            let write = self.pending.remove(&dot).expect("found above");
            self.apply(write.clone());
            received.applied.push(write);
        }
        received
    }

    /// The writes `applied` lacks, in causal order, at most `limit` of them. `upto`
    /// bounds them per origin (read repair: the causal past of one key).
    fn missing_for(
        &self,
        applied: &VectorClock,
        upto: Option<&VectorClock>,
        limit: usize,
    ) -> Vec<Write> {
        let mut out: Vec<&Write> = Vec::new();
        for (&origin, writes) in &self.log {
            let from = applied.get(origin);
            let to = upto.map_or(u64::MAX, |u| u.get(origin));
            if to <= from {
                continue;
            }
            // The lowest numbers first: a prefix per origin is what the peer can apply.
            out.extend(writes.range(from + 1..=to).map(|(_, w)| w).take(limit));
        }
        out.sort_by_key(|w| (w.depth(), w.dot));
        out.truncate(limit);
        out.into_iter().cloned().collect()
    }

    /// An exchange to open with `peer`: this replica's digest, and the writes the peer
    /// lacked at its last exchange (none if it never exchanged).
    pub fn exchange_for(&self, peer: NodeId, repair_key: Option<Vec<u8>>) -> Exchange {
        let writes = match self.peer_applied.get(&peer) {
            Some(theirs) if repair_key.is_none() => {
                self.missing_for(theirs, None, self.options.exchange_writes_max)
            }
            _ => Vec::new(),
        };
        Exchange {
            from: self.id,
            resolve: self.options.resolve,
            applied: self.applied.clone(),
            writes,
            repair_key,
        }
    }

    fn check_resolve(&self, message: &Exchange) -> Result<(), CausalError> {
        if message.resolve == self.options.resolve {
            Ok(())
        } else {
            Err(CausalError::ResolveMismatch {
                peer: message.from,
                ours: self.options.resolve.as_str(),
                theirs: message.resolve.as_str(),
            })
        }
    }

    fn learn_peer(&mut self, peer: NodeId, applied: &VectorClock) {
        if peer == self.id || !self.members.contains(&peer) {
            return;
        }
        self.peer_applied.entry(peer).or_default().merge(applied);
        self.truncate_log();
    }

    /// Drops the writes every replica is known to have applied.
    fn truncate_log(&mut self) {
        if self.peer_applied.len() + 1 < self.members.len() {
            return;
        }
        for (&origin, writes) in self.log.iter_mut() {
            let everywhere = self
                .peer_applied
                .values()
                .map(|a| a.get(origin))
                .min()
                .unwrap_or(0)
                .min(self.applied.get(origin));
            *writes = writes.split_off(&(everywhere + 1));
        }
    }

    /// Answers a peer's exchange: applies its writes, then sends back what it lacks.
    pub fn on_exchange(
        &mut self,
        message: Exchange,
        now_ms: u64,
    ) -> Result<(Exchange, Received), CausalError> {
        let (repair_key, theirs) = (message.repair_key.clone(), message.applied.clone());
        // Taking the peer's side of the exchange is what taking a reply is.
        let received = self.on_reply(message, now_ms)?;
        let upto = repair_key
            .as_ref()
            .and_then(|k| self.store.get(k))
            .map(past);
        let writes = match (&repair_key, &upto) {
            // Nothing here for that key: nothing to repair with.
            (Some(_), None) => Vec::new(),
            _ => self.missing_for(&theirs, upto.as_ref(), self.options.exchange_writes_max),
        };
        let reply = Exchange {
            from: self.id,
            resolve: self.options.resolve,
            applied: self.applied.clone(),
            writes,
            repair_key: None,
        };
        Ok((reply, received))
    }

    /// Takes a peer's answer to an exchange this replica opened.
    pub fn on_reply(&mut self, reply: Exchange, now_ms: u64) -> Result<Received, CausalError> {
        self.check_resolve(&reply)?;
        let received = self.receive(reply.writes, now_ms);
        self.learn_peer(reply.from, &reply.applied);
        Ok(received)
    }

    /// A digest of the whole keyspace's contents (values, siblings and their clocks),
    /// equal on two replicas exactly when they hold the same data.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.store.hash(&mut hasher);
        hasher.finish()
    }
}

/// Everything a key's values depend on: the writes that made them and all those saw.
/// What a read of the key joins its session's context with, and what read repair ships.
fn past(siblings: &Siblings<Version>) -> VectorClock {
    let mut past = siblings.context();
    for (_, version) in siblings.values() {
        past.merge(&version.deps);
    }
    past
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replicas(n: u64, resolve: Resolve, bugs: CausalBugs) -> Vec<CausalReplica> {
        (1..=n)
            .map(|id| {
                CausalReplica::new(
                    id,
                    1..=n,
                    CausalOptions {
                        resolve,
                        bugs,
                        ..CausalOptions::default()
                    },
                )
            })
            .collect()
    }

    /// One full exchange from `a` to `b` and back.
    fn sync(rs: &mut [CausalReplica], a: usize, b: usize, now: u64) {
        let peer = rs[b].id();
        let message = rs[a].exchange_for(peer, None);
        let (reply, _) = rs[b].on_exchange(message, now).unwrap();
        rs[a].on_reply(reply, now).unwrap();
    }

    fn values(r: &CausalReplica, key: &[u8]) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = r
            .read(key, &VectorClock::new())
            .unwrap()
            .values
            .into_iter()
            .map(|(_, v, _)| v)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_made_while_cut_off_reaches_the_others_by_anti_entropy() {
        let mut rs = replicas(3, Resolve::Siblings, CausalBugs::default());
        let empty = VectorClock::new();
        rs[0]
            .write(b"k".to_vec(), Some(b"a".to_vec()), &empty, 1000)
            .unwrap();
        assert!(values(&rs[1], b"k").is_empty());
        // The first exchange learns the peer's digest; the reply carries the write.
        sync(&mut rs, 1, 0, 1001);
        assert_eq!(values(&rs[1], b"k"), [b"a".to_vec()]);
        sync(&mut rs, 2, 1, 1002);
        assert_eq!(values(&rs[2], b"k"), [b"a".to_vec()]);
    }

    #[test]
    fn a_replica_behind_the_clients_context_refuses_and_names_who_has_it() {
        let mut rs = replicas(3, Resolve::Siblings, CausalBugs::default());
        let w = rs[0]
            .write(
                b"k".to_vec(),
                Some(b"a".to_vec()),
                &VectorClock::new(),
                1000,
            )
            .unwrap();
        let err = rs[1].read(b"k", &w.context).unwrap_err();
        let CausalError::Behind(behind) = err else {
            panic!("{err}")
        };
        assert_eq!(behind.try_instead, 1);
        assert_eq!(behind.missing[&1], (0, 1));
        assert!(
            behind.to_string().contains("n1: has 0 of 1 writes"),
            "{behind}"
        );
        // The seeded bug serves it anyway, stale.
        let buggy = replicas(
            3,
            Resolve::Siblings,
            CausalBugs {
                ignore_causal_context: true,
                ..CausalBugs::default()
            },
        );
        assert!(buggy[1].read(b"k", &w.context).unwrap().values.is_empty());
    }

    #[test]
    fn a_write_waits_for_its_dependencies() {
        let mut rs = replicas(3, Resolve::Siblings, CausalBugs::default());
        let x = rs[0]
            .write(
                b"x".to_vec(),
                Some(b"1".to_vec()),
                &VectorClock::new(),
                1000,
            )
            .unwrap();
        rs[1].receive(vec![x.write.clone()], 1000);
        let seen = rs[1].read(b"x", &VectorClock::new()).unwrap().context;
        let y = rs[1]
            .write(b"y".to_vec(), Some(b"2".to_vec()), &seen, 1001)
            .unwrap();
        // Replica 3 gets y before x: y waits, so no one reads y there without x.
        let got = rs[2].receive(vec![y.write.clone()], 1002);
        assert!(got.applied.is_empty());
        assert!(values(&rs[2], b"y").is_empty());
        let got = rs[2].receive(vec![x.write.clone()], 1003);
        assert_eq!(got.applied.len(), 2, "x, then y");
        assert_eq!(got.applied[0].dot, x.write.dot);
        assert_eq!(values(&rs[2], b"y"), [b"2".to_vec()]);
    }

    #[test]
    fn concurrent_writes_stay_siblings_everywhere_and_the_seeded_merge_loses_one() {
        for buggy in [false, true] {
            let bugs = CausalBugs {
                vv_merge_drops_sibling: buggy,
                ..CausalBugs::default()
            };
            let mut rs = replicas(2, Resolve::Siblings, bugs);
            let empty = VectorClock::new();
            rs[0]
                .write(b"k".to_vec(), Some(b"a".to_vec()), &empty, 1000)
                .unwrap();
            rs[1]
                .write(b"k".to_vec(), Some(b"b".to_vec()), &empty, 1000)
                .unwrap();
            sync(&mut rs, 0, 1, 1001);
            sync(&mut rs, 0, 1, 1002);
            if buggy {
                assert_ne!(
                    rs[0].digest(),
                    rs[1].digest(),
                    "each kept only the other's write"
                );
            } else {
                assert_eq!(values(&rs[0], b"k"), [b"a".to_vec(), b"b".to_vec()]);
                assert_eq!(rs[0].digest(), rs[1].digest());
                // A write that read both siblings overwrites both.
                let ctx = rs[0].read(b"k", &empty).unwrap().context;
                rs[0]
                    .write(b"k".to_vec(), Some(b"c".to_vec()), &ctx, 1003)
                    .unwrap();
                sync(&mut rs, 0, 1, 1004);
                assert_eq!(values(&rs[1], b"k"), [b"c".to_vec()]);
            }
        }
    }

    #[test]
    fn lww_keeps_the_latest_stamp_and_reports_the_concurrent_write_it_beat() {
        let mut rs = replicas(2, Resolve::Lww, CausalBugs::default());
        let empty = VectorClock::new();
        rs[0]
            .write(b"k".to_vec(), Some(b"a".to_vec()), &empty, 1000)
            .unwrap();
        rs[1]
            .write(b"k".to_vec(), Some(b"b".to_vec()), &empty, 2000)
            .unwrap();
        sync(&mut rs, 0, 1, 2001);
        sync(&mut rs, 0, 1, 2002);
        assert_eq!(values(&rs[0], b"k"), [b"b".to_vec()]);
        assert_eq!(rs[0].digest(), rs[1].digest());
        let lost = rs[0].drain_overwritten();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].lost_value.as_deref(), Some(&b"a"[..]));
        // A plain overwrite (the writer saw the old value) is not a loss.
        let ctx = rs[1].read(b"k", &empty).unwrap().context;
        rs[1]
            .write(b"k".to_vec(), Some(b"c".to_vec()), &ctx, 2003)
            .unwrap();
        assert!(
            rs[1]
                .drain_overwritten()
                .iter()
                .all(|o| o.lost_value.as_deref() != Some(&b"b"[..]))
        );
    }

    #[test]
    fn lww_on_the_wall_clock_lets_a_fast_clock_beat_a_later_write() {
        for raw in [false, true] {
            let bugs = CausalBugs {
                lww_wall_clock: raw,
                ..CausalBugs::default()
            };
            let mut rs = replicas(2, Resolve::Lww, bugs);
            // Replica 1's clock runs 300 ms ahead.
            let first = rs[0]
                .write(
                    b"k".to_vec(),
                    Some(b"old".to_vec()),
                    &VectorClock::new(),
                    1300,
                )
                .unwrap();
            rs[1].receive(vec![first.write], 1000);
            let ctx = rs[1].read(b"k", &first.context).unwrap().context;
            rs[1]
                .write(b"k".to_vec(), Some(b"new".to_vec()), &ctx, 1010)
                .unwrap();
            let want: &[u8] = if raw { b"old" } else { b"new" };
            assert_eq!(
                values(&rs[1], b"k"),
                [want.to_vec()],
                "raw wall clock: {raw}"
            );
        }
    }

    #[test]
    fn a_stamp_too_far_ahead_is_held_until_the_clock_catches_up() {
        let mut rs = replicas(2, Resolve::Siblings, CausalBugs::default());
        let w = rs[0]
            .write(
                b"k".to_vec(),
                Some(b"a".to_vec()),
                &VectorClock::new(),
                10_000,
            )
            .unwrap();
        let got = rs[1].receive(vec![w.write], 1000);
        assert!(got.applied.is_empty());
        assert_eq!(got.refused_stamps.len(), 1);
        assert!(got.refused_stamps[0].1.to_string().contains("not adopted"));
        assert!(rs[1].deliver(5000).applied.is_empty());
        assert_eq!(rs[1].deliver(9600).applied.len(), 1);
    }

    #[test]
    fn the_log_is_dropped_once_every_replica_has_it() {
        let mut rs = replicas(2, Resolve::Siblings, CausalBugs::default());
        rs[0]
            .write(
                b"k".to_vec(),
                Some(b"a".to_vec()),
                &VectorClock::new(),
                1000,
            )
            .unwrap();
        assert_eq!(rs[0].log_len(), 1);
        sync(&mut rs, 1, 0, 1001);
        sync(&mut rs, 0, 1, 1002);
        assert_eq!(rs[0].log_len(), 0);
    }

    #[test]
    fn read_repair_brings_exactly_the_past_of_one_key() {
        let mut rs = replicas(2, Resolve::Siblings, CausalBugs::default());
        let empty = VectorClock::new();
        rs[0]
            .write(b"x".to_vec(), Some(b"1".to_vec()), &empty, 1000)
            .unwrap();
        let c = rs[0]
            .write(b"y".to_vec(), Some(b"2".to_vec()), &empty, 1000)
            .unwrap();
        rs[0]
            .write(b"z".to_vec(), Some(b"3".to_vec()), &c.context, 1000)
            .unwrap();
        let ask = rs[1].exchange_for(1, Some(b"y".to_vec()));
        let (reply, _) = rs[0].on_exchange(ask, 1001).unwrap();
        rs[1].on_reply(reply, 1001).unwrap();
        assert_eq!(values(&rs[1], b"y"), [b"2".to_vec()]);
        assert!(
            values(&rs[1], b"z").is_empty(),
            "z came after y: not y's past"
        );
    }

    #[test]
    fn replicas_that_resolve_differently_refuse_each_other() {
        let mut a = replicas(2, Resolve::Siblings, CausalBugs::default());
        let b = replicas(2, Resolve::Lww, CausalBugs::default());
        let err = a[0].on_exchange(b[1].exchange_for(1, None), 0).unwrap_err();
        assert!(err.to_string().contains("--causal-resolve"), "{err}");
    }

    #[derive(Clone, Debug)]
    enum Step {
        Write {
            replica: usize,
            key: u8,
            delete: bool,
        },
        Read {
            replica: usize,
            key: u8,
        },
        Sync {
            from: usize,
            to: usize,
            drop_reply: bool,
        },
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..3, proptest::bool::weighted(0.1)).prop_map(
                    |(replica, key, delete)| Step::Write {
                        replica,
                        key,
                        delete
                    }
                ),
                (0usize..3, 0u8..3).prop_map(|(replica, key)| Step::Read { replica, key }),
                (0usize..3, 0usize..3, any::<bool>()).prop_map(|(from, to, drop_reply)| {
                    Step::Sync {
                        from,
                        to,
                        drop_reply,
                    }
                }),
            ],
            1..60,
        )
    }

    proptest! {
        // Whatever the order of exchanges (replies lost included), once everyone syncs
        // with everyone the replicas hold the same data, and no write that no later write
        // saw is missing: siblings are never lost.
        #[test]
        fn replicas_converge_and_keep_every_unseen_write(steps in steps()) {
            let mut rs = replicas(3, Resolve::Siblings, CausalBugs::default());
            let mut contexts = vec![VectorClock::new(); 3];
            let mut writes: Vec<Write> = Vec::new();
            for (n, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Write { replica, key, delete } => {
                        let value = (!delete).then(|| n.to_string().into_bytes());
                        let w = rs[replica].write(vec![key], value, &contexts[replica], 1000 + n as u64).unwrap();
                        contexts[replica] = w.context;
                        writes.push(w.write);
                    }
                    Step::Read { replica, key } => {
                        let r = rs[replica].read(&[key], &contexts[replica]).unwrap();
                        contexts[replica] = r.context;
                    }
                    Step::Sync { from, to, drop_reply } if from != to => {
                        let peer = rs[to].id();
                        let message = rs[from].exchange_for(peer, None);
                        let (reply, _) = rs[to].on_exchange(message, 5000).unwrap();
                        if !drop_reply {
                            rs[from].on_reply(reply, 5000).unwrap();
                        }
                    }
                    Step::Sync { .. } => {}
                }
            }
            for _ in 0..3 {
                for from in 0..3 {
                    for to in 0..3 {
                        if from != to {
                            sync(&mut rs, from, to, 5000);
                        }
                    }
                }
            }
            for r in &rs {
                prop_assert_eq!(r.digest(), rs[0].digest());
                prop_assert_eq!(r.applied(), rs[0].applied());
                prop_assert_eq!(r.pending_len(), 0);
            }
            for w in &writes {
                let seen_later = writes.iter().any(|l| l.key == w.key && l.dot != w.dot && l.deps.get(w.dot.node) >= w.dot.counter);
                let held = rs[0].store.get(&w.key).is_some_and(|s| s.values().any(|(d, _)| d == w.dot));
                prop_assert_eq!(held, !seen_later, "write {:?}", w.dot);
            }
        }
    }
}
