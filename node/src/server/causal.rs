//! The IO shell of the causal keyspace (`faultline.causal.v1`): the gRPC service, the
//! durable log, the anti-entropy and push tasks around the sans-IO core in
//! `time::causal`.
//!
//! Durability: a write is appended to the causal WAL (`DATA_DIR/causal/`) and fsynced
//! before the client hears of it and before any peer can be sent it. The core stays
//! locked from the write to the fsync, so no read or exchange sees a write that a crash
//! could still take back: a restarted node would number its next write the same and two
//! different writes would share a dot. Remote writes are appended without an fsync of
//! their own (a crash loses them here, and anti-entropy brings them back); the next
//! fsync covers them, and the log is replayed in the order it was written, which is an
//! order the core applied them in.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::clock::{ClockGuard, TimerClock};
use crate::proto::causal::causal_client::CausalClient;
use crate::proto::causal::causal_server::Causal;
use crate::proto::causal::{
    CausalDeleteRequest, CausalGetRequest, CausalGetResponse, CausalPutRequest, CausalPutResponse,
    ContextToken, DumpRequest, DumpResponse, DumpedKey, ExchangeMessage, ListOverwrittenRequest,
    ListOverwrittenResponse, OverwrittenWrite, Sibling, VectorEntry, WriteRecord,
};
use crate::proto::kv::HlcTimestamp;
use crate::storage::wal::{Wal, WalOptions};
use crate::store::{from_wire, to_wire};
use crate::time::causal::{
    CausalBugs, CausalError, CausalOptions, CausalReplica, Exchange, Overwritten, Received,
    Resolve, Write,
};
use crate::time::{Dot, Timestamp, VectorClock};

/// The metadata entry of a refusal that names a replica which has what the client needs.
pub const TRY_METADATA: &str = "faultline-causal-try";
/// How long a request waits for this node to catch up with its context, by default.
pub const DEFAULT_WAIT_MS: u32 = 200;
/// The longest wait a request may ask for.
const WAIT_MS_MAX: u32 = 10_000;
/// Writes the writer thread takes in one batch (one fsync).
const WRITE_BATCH_MAX: usize = 256;
/// Client writes queued for the writer thread; beyond it, RESOURCE_EXHAUSTED.
const WRITE_QUEUE_MAX: usize = 4_096;
/// A read repairs its key at most this often.
const READ_REPAIR_EVERY: Duration = Duration::from_millis(250);
/// Peer requests give up after this long (anti-entropy tries again next round).
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// At rest, anti-entropy runs one round in this many.
const QUIET_EVERY: usize = 10;
/// Most LWW losses a node keeps for ListOverwritten.
const OVERWRITTEN_KEPT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct CausalConfig {
    pub resolve: Resolve,
    pub anti_entropy_ms: u64,
    pub max_clock_offset_ms: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub bugs: CausalBugs,
}

struct State {
    core: CausalReplica,
    wal: Wal,
    /// Remote writes appended since the last fsync.
    unsynced: bool,
    overwritten: Vec<Overwritten>,
    /// Dots whose far-ahead stamps were already logged.
    refused_logged: std::collections::BTreeSet<Dot>,
}

struct Shared {
    /// The keyspace's replicas, this node included.
    members: Vec<u64>,
    state: Mutex<State>,
    /// Woken whenever the applied vector moves.
    advanced: Notify,
    clock: TimerClock,
    guard: ClockGuard,
    config: CausalConfig,
    cluster: u64,
    peers: HashMap<u64, CausalClient<Channel>>,
    /// One exchange in flight per peer: pushes behind it wait for the next round.
    busy: HashMap<u64, AtomicBool>,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    repaired: std::sync::Mutex<HashMap<Vec<u8>, tokio::time::Instant>>,
    /// The storage failed: the node stops serving the keyspace rather than acknowledge
    /// what it cannot persist.
    failed: std::sync::Mutex<Option<String>>,
}

struct WriteJob {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    context: VectorClock,
    reply: oneshot::Sender<Result<(Write, VectorClock), CausalError>>,
}

#[derive(Clone)]
pub struct CausalService {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteJob>,
    /// Set on a node that joined after the cluster was formed: it holds no replica.
    absent: Option<String>,
}

/// A stable fingerprint of the founding members, so that a token from another cluster
/// is recognised (FNV-1a: it must be the same in every build and process).
pub fn cluster_fingerprint(members: &BTreeMap<u64, SocketAddr>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in members {
        for byte in format!("{id}={addr};").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn vector_to_wire(v: &VectorClock) -> Vec<VectorEntry> {
    v.iter()
        .map(|(node, counter)| VectorEntry { node, counter })
        .collect()
}

fn vector_from_wire(entries: &[VectorEntry]) -> VectorClock {
    entries.iter().map(|e| (e.node, e.counter)).collect()
}

fn stamp_from_wire(t: Option<HlcTimestamp>) -> Timestamp {
    t.map(from_wire).unwrap_or_default()
}

fn dot_to_wire(d: Dot) -> crate::proto::causal::Dot {
    crate::proto::causal::Dot {
        node: d.node,
        counter: d.counter,
    }
}

fn dot_from_wire(d: Option<crate::proto::causal::Dot>) -> Dot {
    d.map(|d| Dot {
        node: d.node,
        counter: d.counter,
    })
    .unwrap_or(Dot {
        node: 0,
        counter: 0,
    })
}

pub fn write_to_wire(w: &Write) -> WriteRecord {
    WriteRecord {
        dot: Some(dot_to_wire(w.dot)),
        deps: vector_to_wire(&w.deps),
        key: w.key.clone(),
        value: w.value.clone(),
        timestamp: Some(to_wire(w.stamp)),
    }
}

fn write_from_wire(r: WriteRecord) -> Write {
    Write {
        dot: dot_from_wire(r.dot),
        deps: vector_from_wire(&r.deps),
        key: r.key,
        value: r.value,
        stamp: stamp_from_wire(r.timestamp),
    }
}

fn resolve_from_wire(text: &str) -> Option<Resolve> {
    match text {
        "siblings" => Some(Resolve::Siblings),
        "lww" => Some(Resolve::Lww),
        _ => None,
    }
}

fn exchange_to_wire(e: &Exchange, cluster: u64) -> ExchangeMessage {
    ExchangeMessage {
        from: e.from,
        cluster,
        resolve: e.resolve.as_str().to_string(),
        applied: vector_to_wire(&e.applied),
        writes: e.writes.iter().map(write_to_wire).collect(),
        repair_key: e.repair_key.clone(),
    }
}

fn exchange_from_wire(m: ExchangeMessage) -> Result<Exchange, String> {
    let resolve = resolve_from_wire(&m.resolve)
        .ok_or_else(|| format!("unknown resolve mode {:?}", m.resolve))?;
    Ok(Exchange {
        from: m.from,
        resolve,
        applied: vector_from_wire(&m.applied),
        writes: m.writes.into_iter().map(write_from_wire).collect(),
        repair_key: m.repair_key,
    })
}

fn refusal(error: CausalError) -> Status {
    match &error {
        CausalError::Behind(behind) => {
            let mut status = Status::aborted(format!("{error}; not applied"));
            if let Ok(value) = behind.try_instead.to_string().parse() {
                status.metadata_mut().insert(TRY_METADATA, value);
            }
            status
        }
        CausalError::Clock(_) => Status::aborted(format!("{error}; not applied")),
        CausalError::ResolveMismatch { .. } => Status::failed_precondition(error.to_string()),
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    fn encode_token(&self, context: &VectorClock) -> Vec<u8> {
        ContextToken {
            cluster: self.cluster,
            entries: vector_to_wire(context),
        }
        .encode_to_vec()
    }

    fn decode_token(&self, token: &[u8]) -> Result<VectorClock, Status> {
        if token.is_empty() {
            return Ok(VectorClock::new());
        }
        let decoded = ContextToken::decode(token).map_err(|e| {
            Status::invalid_argument(format!(
                "the causal context token does not decode ({e}): send back the `context` of \
                 the last reply unchanged, or none to start a new session"
            ))
        })?;
        if decoded.cluster != self.cluster {
            return Err(Status::invalid_argument(format!(
                "the causal context token was issued by another cluster (its fingerprint is \
                 {:016x}, this cluster's {:016x}): start a new session with an empty context",
                decoded.cluster, self.cluster
            )));
        }
        if let Some(stranger) = decoded
            .entries
            .iter()
            .find(|e| !self.members.contains(&e.node))
        {
            return Err(Status::invalid_argument(format!(
                "the causal context token names node {}, which holds no replica of this \
                 cluster's causal keyspace: send back the `context` of a reply unchanged",
                stranger.node
            )));
        }
        Ok(vector_from_wire(&decoded.entries))
    }

    fn serving(&self) -> Result<(), Status> {
        if let Some(reason) = self.failed.lock().expect("failed lock").clone() {
            return Err(Status::unavailable(format!(
                "the causal keyspace's storage failed ({reason}); restart the node"
            )));
        }
        if let Some(reason) = self.guard.fence() {
            return Err(Status::aborted(format!("{reason}; not applied")));
        }
        Ok(())
    }

    /// Keeps what happened on apply: persists received writes, logs refused stamps and
    /// LWW losses, wakes waiters.
    fn absorb(&self, state: &mut State, received: Received) {
        for (dot, error) in received.refused_stamps {
            if state.refused_logged.insert(dot) {
                tracing::warn!(origin = dot.node, counter = dot.counter, %error, "causal write held back");
            }
        }
        if !received.applied.is_empty() {
            for write in &received.applied {
                if let Err(e) = state.wal.append(&write_to_wire(write).encode_to_vec()) {
                    self.fail(format!("{e}"));
                    return;
                }
            }
            state.unsynced = true;
            self.advanced.notify_waiters();
        }
        self.take_overwritten(state);
    }

    fn take_overwritten(&self, state: &mut State) {
        for lost in state.core.drain_overwritten() {
            tracing::info!(
                key = %String::from_utf8_lossy(&lost.key),
                lost = ?lost.lost,
                winner = ?lost.winner,
                "LWW overwrote a concurrent write"
            );
            if state.overwritten.len() < OVERWRITTEN_KEPT {
                state.overwritten.push(lost);
            }
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "causal keyspace storage failed; it serves nothing more");
        *self.failed.lock().expect("failed lock") = Some(reason);
    }

    /// One exchange with `peer` (anti-entropy, a push, or read repair for `key`).
    async fn exchange(self: &Arc<Self>, peer: u64, repair_key: Option<Vec<u8>>) {
        let Some(busy) = self.busy.get(&peer) else {
            return;
        };
        if busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let message = {
            let state = self.state.lock().await;
            exchange_to_wire(&state.core.exchange_for(peer, repair_key), self.cluster)
        };
        self.bytes_sent
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
        let mut client = self.peers[&peer].clone();
        let reply = tokio::time::timeout(PEER_TIMEOUT, client.exchange(message)).await;
        busy.store(false, Ordering::Release);
        let Ok(Ok(reply)) = reply else {
            return;
        };
        let reply = reply.into_inner();
        self.bytes_received
            .fetch_add(reply.encoded_len() as u64, Ordering::Relaxed);
        let reply = match exchange_from_wire(reply) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(peer, error = %e, "a malformed causal exchange reply");
                return;
            }
        };
        let now = self.now_ms();
        let mut state = self.state.lock().await;
        match state.core.on_reply(reply, now) {
            Ok(received) => self.absorb(&mut state, received),
            Err(e) => tracing::error!(peer, error = %e, "causal exchange refused"),
        }
    }

    /// Waits (at most `wait`) for this replica to catch up with `context`, pulling from
    /// the replica that has it meanwhile.
    async fn wait_for(
        self: &Arc<Self>,
        context: &VectorClock,
        wait: Duration,
    ) -> Result<(), CausalError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.advanced.notified();
            let behind = {
                let state = self.state.lock().await;
                match state.core.caught_up_with(context) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(behind);
            }
            if let CausalError::Behind(b) = &behind
                && self.peers.contains_key(&b.try_instead)
            {
                let shared = self.clone();
                let peer = b.try_instead;
                tokio::spawn(async move { shared.exchange(peer, None).await });
            }
            let _ = tokio::time::timeout(
                Duration::from_millis(20).min(deadline - tokio::time::Instant::now()),
                notified,
            )
            .await;
        }
    }

    fn push_all(self: &Arc<Self>) {
        for &peer in self.peers.keys() {
            let shared = self.clone();
            tokio::spawn(async move { shared.exchange(peer, None).await });
        }
    }

    fn repair(self: &Arc<Self>, key: &[u8]) {
        {
            let mut repaired = self.repaired.lock().expect("repair lock");
            let now = tokio::time::Instant::now();
            if repaired
                .get(key)
                .is_some_and(|at| now.duration_since(*at) < READ_REPAIR_EVERY)
            {
                return;
            }
            if repaired.len() > 100_000 {
                repaired.clear();
            }
            repaired.insert(key.to_vec(), now);
        }
        for &peer in self.peers.keys() {
            let shared = self.clone();
            let key = key.to_vec();
            tokio::spawn(async move { shared.exchange(peer, Some(key)).await });
        }
    }
}

/// Opens the causal keyspace: replays its WAL and starts the writer thread and the
/// anti-entropy task. `members` are the founding members (this node included); a node
/// that is not one of them serves nothing of the keyspace.
pub fn start(
    id: u64,
    members: BTreeMap<u64, SocketAddr>,
    source_ip: Option<std::net::IpAddr>,
    data_dir: &Path,
    config: CausalConfig,
    clock: TimerClock,
    guard: ClockGuard,
) -> anyhow::Result<CausalService> {
    let cluster = cluster_fingerprint(&members);
    let absent = (!members.contains_key(&id)).then(|| {
        format!(
            "node {id} joined after the cluster was formed and holds no replica of the causal \
             keyspace (its replicas are the founding members {:?}): send causal requests to one of them",
            members.keys().collect::<Vec<_>>()
        )
    });
    let dir = data_dir.join("causal");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the causal log directory {}", dir.display()))?;
    let replay = Wal::open(&dir, WalOptions::default())
        .with_context(|| format!("cannot open the causal log in {}", dir.display()))?;
    if let Some(torn) = &replay.torn_tail {
        tracing::warn!(path = %torn.path.display(), "causal log: cut off an interrupted last write");
    }
    let mut core = CausalReplica::new(
        id,
        members.keys().copied(),
        CausalOptions {
            resolve: config.resolve,
            max_clock_offset_ms: config.max_clock_offset_ms,
            bugs: config.bugs,
            ..CausalOptions::default()
        },
    );
    for (n, record) in replay.records.iter().enumerate() {
        let write = WriteRecord::decode(record.as_slice()).with_context(|| {
            format!(
                "causal log record {n} in {} does not decode: the log is corrupt; restore the \
                 data directory from a replica or remove {} to rebuild it from the other nodes",
                dir.display(),
                dir.display()
            )
        })?;
        core.recover(write_from_wire(write));
    }
    let _ = core.drain_overwritten();
    tracing::info!(writes = replay.records.len(), applied = ?core.applied(), resolve = config.resolve.as_str(), "causal keyspace recovered");
    let peers: HashMap<u64, CausalClient<Channel>> = members
        .iter()
        .filter(|&(&peer, _)| peer != id)
        .map(|(&peer, &addr)| {
            let channel =
                super::transport::node_endpoint(addr, source_ip, Duration::from_millis(300))
                    .timeout(PEER_TIMEOUT)
                    .connect_lazy();
            (
                peer,
                CausalClient::new(channel).max_decoding_message_size(64 << 20),
            )
        })
        .collect();
    let busy = peers.keys().map(|&p| (p, AtomicBool::new(false))).collect();
    let shared = Arc::new(Shared {
        members: members.keys().copied().collect(),
        state: Mutex::new(State {
            core,
            wal: replay.wal,
            unsynced: false,
            overwritten: Vec::new(),
            refused_logged: Default::default(),
        }),
        advanced: Notify::new(),
        clock,
        guard,
        config,
        cluster,
        peers,
        busy,
        bytes_sent: AtomicU64::new(0),
        bytes_received: AtomicU64::new(0),
        repaired: std::sync::Mutex::new(HashMap::new()),
        failed: std::sync::Mutex::new(None),
    });
    let (writes, jobs) = mpsc::channel(WRITE_QUEUE_MAX);
    if absent.is_none() {
        let writer = shared.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("causal-writer".into())
            .spawn(move || write_loop(writer, jobs, runtime))
            .context("cannot start the causal writer thread")?;
        tokio::spawn(anti_entropy(shared.clone()));
    }
    Ok(CausalService {
        shared,
        writes,
        absent,
    })
}

/// The writer thread: takes queued client writes in batches, applies them, makes them
/// durable with one fsync, then answers and pushes them to the peers.
fn write_loop(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<WriteJob>,
    runtime: tokio::runtime::Handle,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = shared.now_ms();
        let mut state = shared.state.blocking_lock();
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = None;
        for job in batch {
            match state.core.write(job.key, job.value, &job.context, now) {
                Ok(done) => {
                    if let Err(e) = state
                        .wal
                        .append(&write_to_wire(&done.write).encode_to_vec())
                    {
                        failed = Some(e.to_string());
                    }
                    answers.push((job.reply, Ok((done.write, done.context))));
                }
                Err(e) => answers.push((job.reply, Err(e))),
            }
        }
        let wrote = answers.iter().any(|(_, a)| a.is_ok());
        if failed.is_none() && (wrote || state.unsynced) {
            match state.wal.sync() {
                Ok(()) => state.unsynced = false,
                Err(e) => failed = Some(e.to_string()),
            }
        }
        shared.take_overwritten(&mut state);
        drop(state);
        if let Some(reason) = failed {
            // Nothing of this batch is acknowledged: the node cannot say it is durable.
            shared.fail(reason);
            return;
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        if wrote {
            shared.advanced.notify_waiters();
            let pusher = shared.clone();
            runtime.spawn(async move { pusher.push_all() });
        }
    }
}

/// Every round: one exchange with the next peer in turn, held writes retried, and the
/// remote writes appended since the last fsync made durable.
async fn anti_entropy(shared: Arc<Shared>) {
    let mut peers: Vec<u64> = shared.peers.keys().copied().collect();
    peers.sort_unstable();
    if peers.is_empty() {
        return;
    }
    let mut ticker =
        tokio::time::interval(Duration::from_millis(shared.config.anti_entropy_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    for round in 0usize.. {
        ticker.tick().await;
        // At rest (every peer known to hold what this node holds) one round in ten is
        // enough to notice a peer that moved on; any write here or there ends the rest.
        let quiet = shared.state.lock().await.core.quiet();
        if quiet && round % QUIET_EVERY != 0 {
            continue;
        }
        let peer = peers[turn % peers.len()];
        turn += 1;
        let exchanging = shared.clone();
        tokio::spawn(async move { exchanging.exchange(peer, None).await });
        let now = shared.now_ms();
        let mut state = shared.state.lock().await;
        let received = state.core.deliver(now);
        shared.absorb(&mut state, received);
        if state.unsynced {
            let synced = tokio::task::block_in_place(|| state.wal.sync());
            match synced {
                Ok(()) => state.unsynced = false,
                Err(e) => shared.fail(e.to_string()),
            }
        }
    }
}

impl CausalService {
    /// Refuses every request on a node that holds no replica.
    fn present(&self) -> Result<(), Status> {
        match &self.absent {
            Some(reason) => Err(Status::failed_precondition(reason.clone())),
            None => Ok(()),
        }
    }

    fn check(&self) -> Result<(), Status> {
        self.present()?;
        self.shared.serving()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "the key is empty; give a key of 1 or more bytes",
            ));
        }
        if key.len() > self.shared.config.key_bytes_max {
            return Err(Status::invalid_argument(format!(
                "the key is {} bytes, over the limit of {} (--config key_bytes_max)",
                key.len(),
                self.shared.config.key_bytes_max
            )));
        }
        Ok(())
    }

    fn wait(wait_ms: u32) -> Result<Duration, Status> {
        if wait_ms > WAIT_MS_MAX {
            return Err(Status::invalid_argument(format!(
                "wait_ms is {wait_ms}, over the most a request may wait ({WAIT_MS_MAX} ms)"
            )));
        }
        Ok(Duration::from_millis(u64::from(if wait_ms == 0 {
            DEFAULT_WAIT_MS
        } else {
            wait_ms
        })))
    }

    async fn write(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        token: &[u8],
        wait_ms: u32,
    ) -> Result<Response<CausalPutResponse>, Status> {
        self.check()?;
        self.check_key(&key)?;
        if let Some(v) = &value
            && v.len() > self.shared.config.value_bytes_max
        {
            return Err(Status::invalid_argument(format!(
                "the value is {} bytes, over the limit of {} (--config value_bytes_max)",
                v.len(),
                self.shared.config.value_bytes_max
            )));
        }
        let context = self.shared.decode_token(token)?;
        let wait = Self::wait(wait_ms)?;
        self.shared
            .wait_for(&context, wait)
            .await
            .map_err(refusal)?;
        let (reply, answer) = oneshot::channel();
        self.writes
            .try_send(WriteJob {
                key,
                value,
                context,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Status::resource_exhausted(
                    "too many causal writes queued; not applied, retry later",
                ),
                mpsc::error::TrySendError::Closed(_) => Status::unavailable(
                    "the causal keyspace's storage failed; not applied; restart the node",
                ),
            })?;
        let (write, context) = answer
            .await
            .map_err(|_| {
                Status::unavailable(
                    "the causal keyspace's storage failed while writing; outcome unknown",
                )
            })?
            .map_err(refusal)?;
        Ok(Response::new(CausalPutResponse {
            dot: Some(dot_to_wire(write.dot)),
            timestamp: Some(to_wire(write.stamp)),
            context: self.shared.encode_token(&context),
        }))
    }
}

#[tonic::async_trait]
impl Causal for CausalService {
    async fn put(
        &self,
        request: Request<CausalPutRequest>,
    ) -> Result<Response<CausalPutResponse>, Status> {
        let r = request.into_inner();
        self.write(r.key, Some(r.value), &r.context, r.wait_ms)
            .await
    }

    async fn delete(
        &self,
        request: Request<CausalDeleteRequest>,
    ) -> Result<Response<CausalPutResponse>, Status> {
        let r = request.into_inner();
        self.write(r.key, None, &r.context, r.wait_ms).await
    }

    async fn get(
        &self,
        request: Request<CausalGetRequest>,
    ) -> Result<Response<CausalGetResponse>, Status> {
        self.check()?;
        let r = request.into_inner();
        self.check_key(&r.key)?;
        let context = self.shared.decode_token(&r.context)?;
        let wait = Self::wait(r.wait_ms)?;
        self.shared
            .wait_for(&context, wait)
            .await
            .map_err(refusal)?;
        let read = {
            let state = self.shared.state.lock().await;
            state.core.read(&r.key, &context).map_err(refusal)?
        };
        self.shared.repair(&r.key);
        Ok(Response::new(CausalGetResponse {
            values: read
                .values
                .into_iter()
                .map(|(dot, value, stamp)| Sibling {
                    dot: Some(dot_to_wire(dot)),
                    value,
                    timestamp: Some(to_wire(stamp)),
                })
                .collect(),
            context: self.shared.encode_token(&read.context),
        }))
    }

    async fn dump(&self, request: Request<DumpRequest>) -> Result<Response<DumpResponse>, Status> {
        self.present()?;
        let include = request.into_inner().include_data;
        let state = self.shared.state.lock().await;
        let data = if include {
            state
                .core
                .dump()
                .map(|(key, siblings)| DumpedKey {
                    key: key.to_vec(),
                    siblings: siblings
                        .values()
                        .map(|(dot, v)| WriteRecord {
                            dot: Some(dot_to_wire(dot)),
                            deps: vector_to_wire(&v.deps),
                            key: key.to_vec(),
                            value: v.value.clone(),
                            timestamp: Some(to_wire(v.stamp)),
                        })
                        .collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(DumpResponse {
            node_id: state.core.id(),
            applied: vector_to_wire(state.core.applied()),
            digest: state.core.digest(),
            keys: state.core.key_count() as u64,
            pending: state.core.pending_len() as u64,
            log: state.core.log_len() as u64,
            data,
            exchange_bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            exchange_bytes_received: self.shared.bytes_received.load(Ordering::Relaxed),
            overwritten_total: state.core.overwritten_total(),
            resolve: state.core.resolve().as_str().to_string(),
        }))
    }

    async fn list_overwritten(
        &self,
        _request: Request<ListOverwrittenRequest>,
    ) -> Result<Response<ListOverwrittenResponse>, Status> {
        let state = self.shared.state.lock().await;
        Ok(Response::new(ListOverwrittenResponse {
            overwritten: state
                .overwritten
                .iter()
                .map(|o| OverwrittenWrite {
                    key: o.key.clone(),
                    lost: Some(dot_to_wire(o.lost)),
                    lost_value: o.lost_value.clone(),
                    lost_timestamp: Some(to_wire(o.lost_stamp)),
                    winner: Some(dot_to_wire(o.winner)),
                    winner_value: o.winner_value.clone(),
                    winner_timestamp: Some(to_wire(o.winner_stamp)),
                })
                .collect(),
            total: state.core.overwritten_total(),
        }))
    }

    async fn exchange(
        &self,
        request: Request<ExchangeMessage>,
    ) -> Result<Response<ExchangeMessage>, Status> {
        self.present()?;
        let message = request.into_inner();
        self.shared
            .bytes_received
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
        if message.cluster != self.shared.cluster {
            return Err(Status::failed_precondition(format!(
                "n{} belongs to another cluster (fingerprint {:016x}, this one {:016x}): its \
                 founding members or their addresses differ",
                message.from, message.cluster, self.shared.cluster
            )));
        }
        let message = exchange_from_wire(message).map_err(Status::invalid_argument)?;
        let now = self.shared.now_ms();
        let mut state = self.shared.state.lock().await;
        let (reply, received) = state.core.on_exchange(message, now).map_err(|e| {
            tracing::error!(error = %e, "causal exchange refused");
            refusal(e)
        })?;
        self.shared.absorb(&mut state, received);
        drop(state);
        let reply = exchange_to_wire(&reply, self.shared.cluster);
        self.shared
            .bytes_sent
            .fetch_add(reply.encoded_len() as u64, Ordering::Relaxed);
        Ok(Response::new(reply))
    }
}
