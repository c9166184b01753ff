//! The server actor: the node's own `RaftCore`, driven the way the node's replication
//! thread drives it (`node/src/server/driver.rs`, `process_ready`), with the node's own
//! `KvStore` as the state machine and stateright's actor storage as the disk.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};

use faultline_node::proto::raft::{ApplyResult, Command, Entry, EntryKind};
use faultline_node::replication::{MemoryDisk, RaftConfig, RaftCore, Ready, Role, relabel_meta};
use faultline_node::store::KvStore;
use prost::Message as _;
use stateright::actor::{Id, Out, model_timeout};

use super::RaftActor;
use super::messages::{
    ClientOp, ClientRet, Msg, REGISTER_KEY, Timer, Value, command_for, first_byte,
};

/// One entry a server applied, kept for the properties (a ghost variable: the core and
/// the store never read it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppliedEntry {
    pub term: u64,
    /// The server's current term when it applied the entry: the entry was committed in
    /// this term or an earlier one, so every leader of a later term must hold it.
    pub applied_in_term: u64,
    /// Carried a client command (not a leader's no-op).
    pub command: bool,
}

/// A server's disk: what the node's WAL and snapshot file hold (hard state, snapshot,
/// entries after it). It lives in stateright's actor storage, so a crash keeps it and
/// `on_start` recovers from it. The `ghost_*` fields are the model's bookkeeping; they
/// survive crashes because the properties range over the whole run, and are never
/// handed to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Disk {
    /// Step 1 of the `Ready` contract persists here.
    pub durable: MemoryDisk,
    /// Ghost: how many times this server recovered from a crash.
    pub ghost_recoveries: u32,
    /// Ghost: every entry this server ever applied, by index.
    pub ghost_applied: BTreeMap<u64, AppliedEntry>,
}

/// A write a leader proposed and will answer once the entry applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingWrite {
    pub term: u64,
    pub client: usize,
    pub seq: u64,
    pub op: ClientOp,
}

/// What the model noticed about a server that the properties report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// The core panicked (one of its own `assert!`s): the message. The server is halted.
    pub core_panic: Option<String>,
    /// A leader dropped or changed an entry of its own log during its term.
    pub append_only_violation: Option<String>,
    /// The server applied a different entry at an index it had applied before.
    pub reapply_mismatch: Option<String>,
    /// The server installed a snapshot sent by a leader.
    pub installed_snapshot: bool,
}

/// A server's volatile state. Equality and hashing use a fingerprint of the core that
/// leaves out its Lamport clock and its RNG draw counter (see `core_fingerprint`).
#[derive(Clone, Debug)]
pub struct ServerState {
    pub core: RaftCore,
    core_fingerprint: u64,
    /// The disk as of the end of the last step, shared with stateright's storage slot
    /// (both are cloned on every step; the disk changes on few of them).
    pub disk: Arc<Disk>,
    /// The node's `KvStore`, held as its own deterministic snapshot encoding (the store
    /// keeps sessions in a `HashMap` and so is not `Hash`).
    pub store: Vec<u8>,
    pub applied_index: u64,
    /// By log index.
    pub pending_writes: BTreeMap<u64, PendingWrite>,
    /// Read id -> (client actor index, client sequence).
    pub pending_reads: BTreeMap<u64, (usize, u64)>,
    /// ReadIndex confirmations waiting for the state machine: (index, read id).
    pub confirmed_reads: Vec<(u64, u64)>,
    pub ghost: Ghost,
}

/// Everything that identifies a server's state but its disk, with the core as its
/// fingerprint: the one list equality and hashing both use, so that they cannot disagree.
/// The disk is left out because it is always the same as the server's storage slot, which
/// the system state hashes and compares already.
type StateKey<'a> = (
    u64,
    &'a [u8],
    u64,
    &'a BTreeMap<u64, PendingWrite>,
    &'a BTreeMap<u64, (usize, u64)>,
    &'a [(u64, u64)],
    &'a Ghost,
);

impl ServerState {
    fn key(&self) -> StateKey<'_> {
        (
            self.core_fingerprint,
            &self.store,
            self.applied_index,
            &self.pending_writes,
            &self.pending_reads,
            &self.confirmed_reads,
            &self.ghost,
        )
    }
}

impl Disk {
    /// The same disk with every server id renamed (see `symmetry`).
    pub fn relabeled(&self, rename: &dyn Fn(u64) -> u64) -> Disk {
        let mut disk = self.clone();
        let voted_for = &mut disk.durable.hard_state.voted_for;
        if *voted_for != 0 {
            *voted_for = rename(*voted_for);
        }
        if let Some(snapshot) = &mut disk.durable.snapshot {
            relabel_meta(&mut snapshot.meta, rename);
        }
        disk
    }
}

impl ServerState {
    /// The same server under another name: `config` is the renamed server's own, and
    /// every id inside the core and the disk goes through `rename`. `None` when the core
    /// cannot be renamed (its log holds a membership change).
    pub fn relabeled(
        &self,
        config: RaftConfig,
        disk: Arc<Disk>,
        rename: &dyn Fn(u64) -> u64,
    ) -> Option<ServerState> {
        let core = self.core.relabeled(config, rename)?;
        Some(ServerState {
            core_fingerprint: core_fingerprint(&core),
            core,
            disk,
            ..self.clone()
        })
    }
}

impl PartialEq for ServerState {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ServerState {}

impl Hash for ServerState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// A fingerprint of the core that leaves out its Lamport clock and its RNG draw counter.
/// Both grow without bound and neither changes what the core does next under the
/// model's configuration: the Lamport clock is only stamped on messages, and with
/// `election_timeout_ticks_max == election_timeout_ticks_min + 1` every draw of the
/// randomized timeout gives the same value. Without this, no bound on terms or logs
/// would make the space finite.
///
/// The core's fields are private, so the fingerprint feeds its derived `Hash` through
/// [`SkippingHasher`], which recognises the two fields by their position around
/// `rng_seed` (see there). It asserts that it found them, so a change to the core's
/// layout fails loudly instead of silently keeping them.
pub fn core_fingerprint(core: &RaftCore) -> u64 {
    let mut hasher = SkippingHasher {
        inner: fingerprint_hasher(),
        seed: core.config().seed,
        held: None,
        skip_next_u64: false,
        seeds_seen: 0,
        skipped: 0,
    };
    core.hash(&mut hasher);
    hasher.flush();
    assert_eq!(
        (hasher.seeds_seen, hasher.skipped),
        (2, 2),
        "RaftCore's Hash layout changed (config.seed, then lamport, rng_seed, rng_draws \
         expected): update core_fingerprint"
    );
    hasher.inner.finish()
}

/// stateright's own hasher with fixed keys: several times cheaper than SipHash on the
/// core's many small fields, and collision-resistant enough for a 64-bit fingerprint.
fn fingerprint_hasher() -> ahash::AHasher {
    ahash::RandomState::with_seeds(0x5eed, 0xfa17, 0x11e5, 0x0de1).build_hasher()
}

/// The derived `Hash` of `RaftCore` writes, in field order, `config` (whose `seed` is
/// followed by booleans), ..., `lamport` (one u64), `rng_seed` (the seed), `rng_draws`
/// (one u64), .... So: a u64 written right before a u64 equal to the seed, and a u64
/// written right after it, are dropped. The model gives every server a seed no term,
/// index or count can equal (see `raft_config`).
struct SkippingHasher {
    inner: ahash::AHasher,
    seed: u64,
    /// The last u64 written, held until we know whether the seed follows it.
    held: Option<u64>,
    skip_next_u64: bool,
    seeds_seen: u32,
    skipped: u32,
}

impl SkippingHasher {
    fn flush(&mut self) {
        if let Some(value) = self.held.take() {
            self.inner.write_u64(value);
        }
    }
}

impl Hasher for SkippingHasher {
    fn finish(&self) -> u64 {
        unreachable!("use core_fingerprint")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.flush();
        self.skip_next_u64 = false;
        self.inner.write(bytes);
    }

    fn write_u8(&mut self, i: u8) {
        self.flush();
        self.skip_next_u64 = false;
        self.inner.write_u8(i);
    }

    fn write_u32(&mut self, i: u32) {
        self.flush();
        self.skip_next_u64 = false;
        self.inner.write_u32(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.flush();
        self.skip_next_u64 = false;
        self.inner.write_usize(i);
    }

    fn write_isize(&mut self, i: isize) {
        self.flush();
        self.skip_next_u64 = false;
        self.inner.write_isize(i);
    }

    fn write_u64(&mut self, i: u64) {
        if self.skip_next_u64 {
            self.skip_next_u64 = false;
            self.skipped += 1;
            return;
        }
        if i == self.seed {
            self.seeds_seen += 1;
            if self.held.take().is_some() {
                // Right before rng_seed: the Lamport clock.
                self.skipped += 1;
                self.skip_next_u64 = true;
            }
            self.inner.write_u64(i);
            return;
        }
        self.flush();
        self.held = Some(i);
    }
}

pub fn register_value(store: &[u8]) -> Value {
    let store = KvStore::restore(store).expect("the model's store encoding decodes");
    store
        .get(REGISTER_KEY)
        .map_or(0, |(value, _)| first_byte(value))
}

thread_local! {
    static IN_CORE: Cell<bool> = const { Cell::new(false) };
}

/// A core that trips its own `assert!` is a finding, not a crash of the checker: the
/// panic is caught, recorded in `Ghost::core_panic`, and kept off stderr.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CORE.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// A leader's log at the start of a step, to check Leader Append-Only at its end.
struct LeaderLog {
    term: u64,
    entries: Vec<(u64, u64)>,
}

impl LeaderLog {
    fn of(core: &RaftCore) -> Option<Self> {
        if !core.is_leader() {
            return None;
        }
        let log = core.log();
        let entries = (log.first_index()..=log.last_index())
            .map(|i| (i, log.term(i).expect("in the log")))
            .collect();
        Some(Self {
            term: core.term(),
            entries,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ServerActor {
    pub config: RaftConfig,
    /// Compact the log once this many entries applied since the last snapshot (0: never).
    pub snapshot_interval_entries: u64,
    /// Seeded bug: the disk loses `voted_for` in a crash.
    pub vote_amnesia: bool,
}

impl ServerActor {
    pub fn start(&self, storage: &Option<Arc<Disk>>, o: &mut Out<RaftActor>) -> ServerState {
        install_quiet_panic_hook();
        let mut disk = storage.as_deref().cloned().unwrap_or_default();
        if storage.is_some() {
            disk.ghost_recoveries += 1;
            if self.vote_amnesia {
                disk.durable.hard_state.voted_for = 0;
            }
        }
        let core = RaftCore::new(self.config.clone(), disk.durable.recover());
        // The state machine is not persisted: it restarts from the snapshot and the
        // core hands the committed entries after it out again.
        let (store, applied_index) = match &disk.durable.snapshot {
            Some(s) => (s.data.clone(), s.meta.last_included_index),
            None => (KvStore::default().snapshot(), 0),
        };
        let mut state = ServerState {
            core_fingerprint: core_fingerprint(&core),
            core,
            disk: Arc::new(disk),
            store,
            applied_index,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            ghost: Ghost::default(),
        };
        let mut out = Out::new();
        let result = guarded(|| state.process_ready(self, &mut out));
        if let Err(message) = result {
            state.ghost.core_panic = Some(message);
        } else {
            o.append(&mut out);
        }
        o.save(state.disk.clone());
        o.set_timer(Timer::Tick, model_timeout());
        state.core_fingerprint = core_fingerprint(&state.core);
        state
    }

    pub fn on_msg(
        &self,
        state: &mut Cow<ServerState>,
        src: Id,
        msg: Msg,
        o: &mut Out<RaftActor>,
    ) -> bool {
        match msg {
            Msg::Raft(message) => {
                let next = self.on_event(state, o, |s, _| s.core.step(message));
                // A peer message is consumed even when the core ignores it, so that
                // stale messages do not crowd the bounded network.
                *state = Cow::Owned(next.unwrap_or_else(|| (**state).clone()));
                true
            }
            Msg::Request { seq, op } => {
                // Only a leader takes a request. Elsewhere the delivery is a no-op and
                // the request stays in the network, as a client that retries until a
                // leader takes it (client traffic is outside the in-flight bound).
                match self.on_request(state, usize::from(src), seq, op, o) {
                    Some(next) => {
                        *state = Cow::Owned(next);
                        true
                    }
                    None => false,
                }
            }
            Msg::Reply { .. } => false,
        }
    }

    fn on_request(
        &self,
        state: &ServerState,
        client: usize,
        seq: u64,
        op: ClientOp,
        o: &mut Out<RaftActor>,
    ) -> Option<ServerState> {
        if !state.core.is_leader() {
            return None;
        }
        match op {
            ClientOp::Get => {
                let read_id = read_id(client, seq);
                if state.pending_reads.contains_key(&read_id) {
                    return None;
                }
                self.on_event(state, o, |s, _| {
                    s.core.read_index(read_id).expect("checked: leader");
                    s.pending_reads.insert(read_id, (client, seq));
                })
            }
            ClientOp::Reconfigure(change) => {
                if state
                    .pending_writes
                    .values()
                    .any(|p| p.client == client && p.seq == seq)
                {
                    return None;
                }
                // A change the leader refuses now (one is uncommitted, or its no-op is not)
                // stays in the network, as a client that retries.
                if state.core.clone().propose_conf_change(change).is_err() {
                    return None;
                }
                self.on_event(state, o, |s, _| {
                    let (index, term) = s
                        .core
                        .propose_conf_change(change)
                        .expect("checked on a copy");
                    s.pending_writes.insert(
                        index,
                        PendingWrite {
                            term,
                            client,
                            seq,
                            op: ClientOp::Reconfigure(change),
                        },
                    );
                })
            }
            op => {
                if state
                    .pending_writes
                    .values()
                    .any(|p| p.client == client && p.seq == seq)
                {
                    return None;
                }
                let data = command_for(&client_name(client), seq, &op).encode_to_vec();
                self.on_event(state, o, |s, _| {
                    let (index, term) = s.core.propose(data).expect("checked: leader");
                    s.pending_writes.insert(
                        index,
                        PendingWrite {
                            term,
                            client,
                            seq,
                            op,
                        },
                    );
                })
            }
        }
    }

    /// One `Tick` event advances the core's logical clock until it has something to do
    /// (a heartbeat, an election) — at most `election_timeout_ticks_max` ticks. The
    /// ticks in between only count towards the next timeout, and since the model lets
    /// a tick event happen at any moment, skipping them loses no behaviour.
    pub fn on_tick(&self, state: &mut Cow<ServerState>, o: &mut Out<RaftActor>) {
        let ticks_max = self.config.election_timeout_ticks_max;
        let next = self.on_event(state, o, |s, _| {
            for _ in 0..ticks_max {
                s.core.tick();
                if s.core.has_ready() {
                    break;
                }
            }
        });
        if let Some(next) = next {
            *state = Cow::Owned(next);
        }
        o.set_timer(Timer::Tick, model_timeout());
    }

    /// Runs one input against a copy of the state, drains the core, and returns the new
    /// state unless nothing changed. A panic in the core halts the server and is
    /// recorded for the `core assertions hold` property.
    fn on_event(
        &self,
        state: &ServerState,
        o: &mut Out<RaftActor>,
        input: impl FnOnce(&mut ServerState, &mut Out<RaftActor>),
    ) -> Option<ServerState> {
        if state.ghost.core_panic.is_some() {
            return None;
        }
        let mut next = state.clone();
        let leader_log = LeaderLog::of(&next.core);
        let mut out = Out::new();
        let result = guarded(|| {
            input(&mut next, &mut out);
            next.process_ready(self, &mut out);
        });
        if let Err(message) = result {
            let mut halted = state.clone();
            halted.ghost.core_panic = Some(message);
            return Some(halted);
        }
        next.check_append_only(leader_log);
        next.core_fingerprint = core_fingerprint(&next.core);
        if next.disk != state.disk {
            out.save(next.disk.clone());
        }
        if next == *state && out.is_empty() {
            return None;
        }
        o.append(&mut out);
        Some(next)
    }
}

fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    IN_CORE.with(|c| c.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_CORE.with(|c| c.set(false));
    result.map_err(panic_message)
}

/// Read ids name the client and its operation, so a read delivered twice is one read.
fn read_id(client: usize, seq: u64) -> u64 {
    ((client as u64) << 32) | seq
}

pub fn client_name(client: usize) -> String {
    format!("client-{client}")
}

impl ServerState {
    /// The node's `process_ready`: persist, send, advance, apply, snapshot; until the
    /// core has nothing more. Then serve the reads the state machine has caught up with.
    fn process_ready(&mut self, actor: &ServerActor, o: &mut Out<RaftActor>) {
        let mut rounds = 0;
        while self.core.has_ready() {
            rounds += 1;
            assert!(rounds <= 64, "Ready does not settle");
            let ready = self.core.ready();
            if ready.hard_state.is_some() || ready.snapshot.is_some() || !ready.entries.is_empty() {
                Arc::make_mut(&mut self.disk).durable.persist(&ready);
            }
            for message in &ready.messages {
                let mut message = message.clone();
                message.lamport_time = 0;
                let to = Id::from((message.to - 1) as usize);
                o.send(to, Msg::Raft(message));
            }
            self.core.advance();
            self.apply(ready, o);
            self.maybe_snapshot(actor);
        }
        self.serve_confirmed_reads(o);
    }

    /// Step 3 of the `Ready` contract, as the node's driver does it.
    fn apply(&mut self, ready: Ready, o: &mut Out<RaftActor>) {
        if let Some(snapshot) = &ready.snapshot {
            self.store = snapshot.data.clone();
            self.applied_index = snapshot.meta.last_included_index;
            self.ghost.installed_snapshot = true;
        }
        for entry in &ready.committed_entries {
            // A configuration entry is the core's business, as in the node's driver.
            let result = if entry.data.is_empty() || entry.kind == EntryKind::Config as i32 {
                ApplyResult::default()
            } else {
                let command = Command::decode(entry.data.as_slice()).expect("model entries decode");
                let mut store = KvStore::restore(&self.store).expect("store decodes");
                let result = store.apply(entry.index, &command, false);
                self.store = store.snapshot();
                result
            };
            self.applied_index = entry.index;
            self.record_applied(entry);
            if let Some(write) = self.pending_writes.remove(&entry.index)
                && write.term == entry.term
                && !result.stale_sequence
            {
                let ret = match write.op {
                    ClientOp::Put(_) => ClientRet::PutOk,
                    ClientOp::Cas { .. } if result.succeeded => ClientRet::CasOk,
                    ClientOp::Cas { .. } => ClientRet::CasFailed(first_byte(&result.current_value)),
                    ClientOp::Reconfigure(_) => ClientRet::Reconfigured,
                    ClientOp::Get => unreachable!("reads are not proposed"),
                };
                o.send(
                    Id::from(write.client),
                    Msg::Reply {
                        seq: write.seq,
                        ret,
                    },
                );
            }
        }
        for read in &ready.read_states {
            self.confirmed_reads.push((read.index, read.request_id));
        }
        for id in &ready.dropped_reads {
            self.pending_reads.remove(id);
        }
    }

    fn record_applied(&mut self, entry: &Entry) {
        let applied = AppliedEntry {
            term: entry.term,
            applied_in_term: self.core.term(),
            command: !entry.data.is_empty() && entry.kind != EntryKind::Config as i32,
        };
        match self.disk.ghost_applied.get(&entry.index) {
            Some(before) if before.term != entry.term => {
                self.ghost.reapply_mismatch.get_or_insert_with(|| {
                    format!(
                        "applied {}@{} where it had applied {}@{}",
                        entry.index, entry.term, entry.index, before.term
                    )
                });
            }
            Some(_) => {}
            None => {
                Arc::make_mut(&mut self.disk)
                    .ghost_applied
                    .insert(entry.index, applied);
            }
        }
    }

    /// The node's `maybe_snapshot`: compact once enough entries applied.
    fn maybe_snapshot(&mut self, actor: &ServerActor) {
        if actor.snapshot_interval_entries == 0 {
            return;
        }
        let since = self
            .applied_index
            .saturating_sub(self.core.log().snapshot_index());
        if since < actor.snapshot_interval_entries {
            return;
        }
        self.core.compact(self.applied_index, self.store.clone());
        let snapshot = self.core.snapshot().expect("just compacted").clone();
        Arc::make_mut(&mut self.disk)
            .durable
            .keep_snapshot(snapshot);
    }

    fn serve_confirmed_reads(&mut self, o: &mut Out<RaftActor>) {
        let applied = self.applied_index;
        let value = register_value(&self.store);
        let pending = &mut self.pending_reads;
        self.confirmed_reads.retain(|&(index, id)| {
            if index > applied {
                return true;
            }
            if let Some((client, seq)) = pending.remove(&id) {
                o.send(
                    Id::from(client),
                    Msg::Reply {
                        seq,
                        ret: ClientRet::GetOk(value),
                    },
                );
            }
            false
        });
    }

    fn check_append_only(&mut self, before: Option<LeaderLog>) {
        let Some(before) = before else { return };
        if !self.core.is_leader() || self.core.term() != before.term {
            return;
        }
        let log = self.core.log();
        for (index, term) in before.entries {
            if index > log.snapshot_index() && log.term(index) != Some(term) {
                self.ghost.append_only_violation.get_or_insert_with(|| {
                    format!(
                        "leader {} of term {} lost {index}@{term} (now {:?})",
                        self.core.id(),
                        before.term,
                        log.term(index)
                    )
                });
                return;
            }
        }
    }

    pub fn role(&self) -> Role {
        self.core.role()
    }

    /// One line: `leader t2 vote n1 log [1@1 noop, 2@2 ...] commit 2 applied 2 x=1`.
    pub fn summary(&self) -> String {
        let core = &self.core;
        let log = core.log();
        let mut entries = Vec::new();
        if log.snapshot_index() > 0 {
            entries.push(format!(
                "snapshot ..{}@{}",
                log.snapshot_index(),
                log.snapshot_term()
            ));
        }
        for i in log.first_index()..=log.last_index() {
            if let Some(entry) = log.entry(i) {
                entries.push(super::messages::EntryView(entry).to_string());
            }
        }
        let vote = match core.voted_for() {
            0 => "-".to_string(),
            n => format!("n{n}"),
        };
        let mut line = format!(
            "{} t{} vote {} log [{}] commit {} applied {} x={}",
            core.role().as_str(),
            core.term(),
            vote,
            entries.join(", "),
            core.commit_index(),
            self.applied_index,
            register_value(&self.store)
        );
        if let Some(message) = &self.ghost.core_panic {
            line.push_str(&format!(" PANICKED: {message}"));
        }
        line
    }
}
