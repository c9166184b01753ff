//! The client API. Any node accepts any request and acts as its coordinator: it looks the
//! key up in its partition map and serves the request from the partition's replica here
//! if that replica leads, or forwards it to the partition's leader through the routing
//! client ([`crate::client`]), whose rules it shares with every other client: a routed
//! request names the partition and epoch it was routed at and is never forwarded again;
//! a replica that should not serve it says why with a typed refusal (`NotLeader`,
//! `EpochNotMatch`, `KeyNotInRange`, `PartitionNotHere`, in the details of an ABORTED
//! status), and the sender corrects its route and tries again, a bounded number of
//! times. With no leader known, a request waits for an election until its deadline;
//! with no partition map known (a node that has not heard from its consistent core), it
//! waits for one until its deadline, then fails `UNAVAILABLE`.
//!
//! Status codes, so that a client can tell what happened to a write:
//! - `INVALID_ARGUMENT`: the request breaks a limit; nothing was done.
//! - `ABORTED`: definitely not applied (the node stopped leading before proposing it,
//!   another leader's entry took its place, or it was routed to the wrong replica).
//!   Safe to retry.
//! - `RESOURCE_EXHAUSTED`: the node's queue is full; not applied. Retry later.
//! - `UNAVAILABLE`: the deadline passed without an answer; a write may or may not
//!   have been applied (the outcome is unknown), a read returned nothing.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::driver::{Event, GetValue, ReadOutcome, ScanItems, View, Views, WriteOutcome};
use crate::client::router::{prepare, scan_response};
use crate::client::scan::{self, join_all};
use crate::client::wire::{RoutedAt, refusal, routed_at, routed_request};
use crate::client::{RoutingClient, Target};
use crate::partitioning::convert::{from_wire, to_wire};
use crate::partitioning::{
    EpochCommand, KeySpan, PartitionMap, RangeDescriptor, RouteError, check_request,
};
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::kv_server::Kv;
use crate::proto::kv::{
    AllocatePartitionIdRequest, AllocatePartitionIdResponse, BatchGetRequest, BatchGetResponse,
    BatchGetResult, ChangeReplicasRequest, ChangeReplicasResponse, CompareAndSwapRequest,
    CompareAndSwapResponse, CreateReplicaRequest, CreateReplicaResponse, DeleteRequest,
    DeleteResponse, GetPartitionMapRequest, GetPartitionMapResponse, GetRequest, GetResponse,
    JoinRequest, JoinResponse, MergeRequest, MergeResponse, MoveReplicaRequest,
    MoveReplicaResponse, NodeAddress, PrepareMergeRequest, PrepareMergeResponse, PutRequest,
    PutResponse, RemoveNodeRequest, RemoveNodeResponse, ReplicaChange, ReportPartitionRequest,
    ReportPartitionResponse, ResponseHeader, ScanRequest, ScanResponse, SplitRequest,
    SplitResponse, StatusRequest, StatusResponse, TransferLeaderRequest, TransferLeaderResponse,
    TxnPartRequest, TxnPartResponse, TxnRequest, TxnResponse, WriteId, compare_and_swap_request,
};
use crate::proto::raft::{
    self, ApplyResult, Command, CoreCommand, PartitionReport, command::Op,
    compare_and_swap::Expected, core_command,
};
use crate::replication::ConfChange;

mod lease;
use crate::replication::membership::LEADER_REMOVAL;
pub use lease::lock_key;

/// The timeout the caller's deadline leaves (the `grpc-timeout` header), if it set one.
fn asked_timeout<T>(request: &Request<T>) -> Option<Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Keys one BatchGet may ask for.
pub const BATCH_GET_KEYS_MAX: usize = 1_000;

/// Seeded bugs of the routing layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteBugs {
    /// A scan across range partitions leaves out the first key of every partition after
    /// the first.
    pub scan_skips_boundary: bool,
    /// Reads go to the leader the coordinator saw first for the partition, and a forwarded
    /// read is served from the replica's local state whatever its role.
    pub stale_leader_route: bool,
}

pub struct KvService {
    pub node_id: u64,
    pub events: SyncSender<Event>,
    /// The Raft groups hosted here (splits add to them).
    pub views: Views,
    /// The partition map as this node knows it; empty until the node has one.
    pub map: watch::Receiver<Arc<PartitionMap>>,
    pub core_replicas: Vec<u64>,
    /// Where every node serves (this one included), for clients that route themselves.
    pub addresses: Vec<(u64, SocketAddr)>,
    /// Forwards what this node cannot serve, with the corrections every client makes.
    pub router: Arc<RoutingClient>,
    /// Start and commit timestamps of the transactions this node coordinates.
    pub txn_clock: Arc<super::txn::TxnClock>,
    pub txn_bugs: crate::partitioning::txn::TxnBugs,
    pub txn_blockers: super::txn::Blockers,
    pub txn_stats: super::txn::TxnStats,
    pub failpoints: super::clock::Failpoints,
    pub request_timeout: Duration,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub scan_limit_max: u32,
    /// The seeded bug `stale-read`: every get is answered from this node's local state,
    /// without confirming leadership.
    pub stale_read: bool,
    pub bugs: RouteBugs,
    pub range_bugs: crate::partitioning::RangeBugs,
    /// For `stale-leader-route`: the first leader seen per partition.
    pub first_leaders: std::sync::Mutex<HashMap<u64, u64>>,
    /// The bootstrap layout's descriptors: a replica created for a move of one of these
    /// ranges starts from it, so that any leader can catch it up from its log's start.
    pub initial: Arc<BTreeMap<u64, RangeDescriptor>>,
    /// The layout the cluster was formed with, as the data directory's `layout` file
    /// holds it: what a joining node is given.
    pub layout: String,
    /// The clock the node's hybrid logical clock reads (for `Status`).
    pub clock: super::clock::TimerClock,
    /// Set while this node's clock is too far off its peers' to serve.
    pub clock_guard: super::clock::ClockGuard,
    /// A lease asked for with a shorter TTL gets this one.
    pub lease_ttl_min_ms: u64,
}

/// Metadata on a request forwarded to the consistent core's leader: the receiver serves
/// it only if it leads the core, and never forwards it again.
const CORE_FORWARDED: &str = "faultline-core-forwarded";

/// How long a replica change or move may take unless the caller's deadline says less:
/// catching a replica up can take a while.
const ADMIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
const ADMIN_TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// How often a membership change that must wait for another (still committing) is retried.
const CONF_CHANGE_RETRY: Duration = Duration::from_millis(20);

/// Most micro-ops one transaction may carry.
pub const TXN_OPS_MAX: usize = 256;
/// Most distinct keys one transaction may touch.
pub const TXN_KEYS_MAX: usize = 64;

/// One partition's part of a scan.
#[derive(Clone, Copy)]
struct ScanRange<'a> {
    start: &'a [u8],
    end: &'a [u8],
    limit: usize,
    serializable: bool,
}

/// How a request is served: here, or by another node's answer.
enum Route<T> {
    Local(T),
    Forward(u64),
}

impl<T> Route<T> {
    /// For a routed request, which is never forwarded again: the answer from here, or the
    /// refusal that tells the sender who leads `partition`.
    fn served_here(self, partition: u64) -> Result<T, Status> {
        match self {
            Route::Local(value) => Ok(value),
            Route::Forward(leader) => Err(refusal(&RouteError::NotLeader {
                partition,
                hint: Some(leader),
            })),
        }
    }
}

const NO_MAP_YET: &str = "this node does not know the partition map yet (its consistent core has not answered); not applied, retry";

impl KvService {
    /// Refuses a read or write while this node's clock is fenced (see `clock::guard_clock`).
    /// The refusal is a not-leader one with no hint: nothing was applied, and a routing
    /// client moves on to another replica instead of waiting on this one.
    fn serving(&self) -> Result<(), Status> {
        use crate::proto::kv::{NotLeaderError, RouteErrorDetail, route_error_detail};
        let Some(reason) = self.clock_guard.fence() else {
            return Ok(());
        };
        let detail = RouteErrorDetail {
            error: Some(route_error_detail::Error::NotLeader(NotLeaderError {
                partition: 0,
                leader_hint: 0,
            })),
        };
        Err(Status::with_details(
            tonic::Code::Aborted,
            format!("{reason}; not applied"),
            prost::Message::encode_to_vec(&detail).into(),
        ))
    }

    /// The deadline of an administrative request (a replica change or move): the caller's,
    /// up to `ADMIN_TIMEOUT_MAX`, else `ADMIN_TIMEOUT_DEFAULT`.
    fn admin_deadline<T>(&self, request: &Request<T>) -> Instant {
        Instant::now()
            + asked_timeout(request).map_or(ADMIN_TIMEOUT_DEFAULT, |t| t.min(ADMIN_TIMEOUT_MAX))
    }

    fn deadline<T>(&self, request: &Request<T>) -> Instant {
        let timeout =
            asked_timeout(request).map_or(self.request_timeout, |t| t.min(self.request_timeout));
        Instant::now() + timeout
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() || key.len() > self.key_bytes_max {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes; keys must be 1..={} bytes (key_bytes_max)",
                key.len(),
                self.key_bytes_max
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.value_bytes_max {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes; values may be at most {} bytes (value_bytes_max)",
                value.len(),
                self.value_bytes_max
            )));
        }
        Ok(())
    }

    /// Checks a transaction against the limits; its distinct keys, in the order first
    /// touched (the first is where it is routed).
    fn check_txn(&self, message: &TxnRequest) -> Result<Vec<Vec<u8>>, Status> {
        use crate::proto::kv::{Isolation, micro_op::Op as M, txn_compare};
        if Isolation::try_from(message.isolation).is_err() {
            return Err(Status::invalid_argument(format!(
                "isolation {} is not a level: use serializable (1), snapshot (2) or read-committed (3)",
                message.isolation
            )));
        }
        if message.ops.is_empty() {
            return Err(Status::invalid_argument(
                "a transaction needs at least one micro-op",
            ));
        }
        if message.ops.len() > TXN_OPS_MAX {
            return Err(Status::invalid_argument(format!(
                "the transaction has {} micro-ops; at most {TXN_OPS_MAX} are allowed (txn_ops_max)",
                message.ops.len()
            )));
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        for (i, op) in message.ops.iter().enumerate() {
            let (key, value): (&[u8], &[u8]) = match &op.op {
                None => {
                    return Err(Status::invalid_argument(format!(
                        "micro-op {} is empty: give one of read, write, append, compare or delete",
                        i + 1
                    )));
                }
                Some(M::Read(r)) => (&r.key, b""),
                Some(M::Delete(d)) => (&d.key, b""),
                Some(M::Write(w)) => (&w.key, &w.value),
                Some(M::Append(a)) => (&a.key, &a.element),
                Some(M::Compare(c)) => match &c.expected {
                    Some(txn_compare::Expected::Value(v)) => (&c.key, v),
                    Some(txn_compare::Expected::Absent(_)) => (&c.key, b""),
                    None => {
                        return Err(Status::invalid_argument(format!(
                            "micro-op {}: a compare needs value or absent",
                            i + 1
                        )));
                    }
                },
            };
            self.check_key(key)
                .and_then(|()| self.check_value(value))
                .map_err(|e| {
                    Status::invalid_argument(format!("micro-op {}: {}", i + 1, e.message()))
                })?;
            bytes += key.len() + value.len();
            if !keys.iter().any(|k| k.as_slice() == key) {
                keys.push(key.to_vec());
            }
        }
        if keys.len() > TXN_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "the transaction touches {} keys; at most {TXN_KEYS_MAX} are allowed (txn_keys_max)",
                keys.len()
            )));
        }
        if bytes > self.value_bytes_max {
            return Err(Status::invalid_argument(format!(
                "the transaction's keys and values are {bytes} bytes; at most {} are allowed (value_bytes_max)",
                self.value_bytes_max
            )));
        }
        Ok(keys)
    }

    /// The view of a group hosted here.
    fn view(&self, group: u64) -> Option<watch::Receiver<View>> {
        self.views
            .read()
            .expect("no thread panics holding the views")
            .get(&group)
            .cloned()
    }

    fn hosts(&self, group: u64) -> bool {
        self.views
            .read()
            .expect("no thread panics holding the views")
            .contains_key(&group)
    }

    fn header(&self, group: u64) -> ResponseHeader {
        let view = self
            .view(group)
            .map(|v| v.borrow().clone())
            .unwrap_or_default();
        ResponseHeader {
            node_id: self.node_id,
            term: view.term,
            lamport_time: view.lamport_time,
            leader_id: view.leader_id.unwrap_or(0),
        }
    }

    fn submit(&self, event: Event) -> Result<(), Status> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Status::resource_exhausted(
                "the node's request queue is full (client_queue_max); not applied, retry later",
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(Status::unavailable("the node is shutting down"))
            }
        }
    }

    /// The map, once this node knows one: a request made before waits for it until its
    /// deadline.
    async fn known_map(&self, deadline: Instant) -> Result<Arc<PartitionMap>, Status> {
        let mut map = self.map.clone();
        loop {
            let current = map.borrow_and_update().clone();
            if !current.is_empty() {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, map.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("the node is shutting down")),
                Err(_) => return Err(Status::unavailable(NO_MAP_YET)),
            }
        }
    }

    /// For a routed request: the replica's own check (partition here, epoch, key; None
    /// for a request that names no key) against the range's own descriptor, as its log
    /// last set it (the map may lag a split). Leadership is checked when it reaches the
    /// group, and the key again when the request applies.
    fn check_routed(
        &self,
        routed: RoutedAt,
        key: Option<&[u8]>,
        command: EpochCommand,
    ) -> Result<RangeDescriptor, Status> {
        let local = self
            .view(routed.partition)
            .and_then(|v| v.borrow().descriptor.clone());
        let Some(local) = local else {
            return Err(refusal(&RouteError::PartitionNotHere {
                partition: routed.partition,
            }));
        };
        if self.range_bugs.skip_epoch_check {
            return Ok(local);
        }
        check_request(&local, routed.epoch, key, command).map_err(|e| refusal(&e))?;
        Ok(local)
    }

    /// Waits until the group's view changes (a leader is elected or leadership moves), or
    /// the deadline passes. `view` is the request's own receiver: `borrow_and_update`
    /// marks what it has seen, so this waits for something new.
    async fn wait_for_leader_change(
        view: &mut watch::Receiver<View>,
        deadline: Instant,
        what: &str,
    ) -> Result<(), Status> {
        match tokio::time::timeout_at(deadline, view.changed()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Status::unavailable("the node is shutting down")),
            Err(_) => Err(Status::unavailable(format!(
                "no leader with a quorum before the deadline; {what}"
            ))),
        }
    }

    /// Serves `command` on the local replica of `group` if it leads, or says where to go.
    async fn write_local(
        &self,
        group: u64,
        command: &Command,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<ApplyResult>, Status> {
        let Some(mut view) = self.view(group) else {
            return Err(refusal(&RouteError::PartitionNotHere { partition: group }));
        };
        loop {
            let leader = view.borrow_and_update().leader_id;
            match leader {
                Some(leader) if leader == self.node_id => {
                    let (reply, outcome) = oneshot::channel();
                    self.submit(Event::Write {
                        group,
                        command: command.clone(),
                        reply,
                    })?;
                    match tokio::time::timeout_at(deadline, outcome).await {
                        Ok(Ok(WriteOutcome::Applied(result)))
                            if !result.epoch_not_match.is_empty() =>
                        {
                            let current = result
                                .epoch_not_match
                                .iter()
                                .filter_map(|w| from_wire(w).ok().map(|(d, _)| d))
                                .collect();
                            return Err(moved(current));
                        }
                        Ok(Ok(WriteOutcome::Applied(result))) if result.held_by != 0 => {
                            // Not applied: a transaction holds a key. Settled (from its
                            // record, or recovered once it has been in the way for a
                            // TTL), then the write goes again, until the deadline.
                            if Instant::now() + CONF_CHANGE_RETRY >= deadline {
                                return Err(Status::aborted(result.refused.clone()));
                            }
                            super::txn::settle(
                                &self.router,
                                &self.txn_blockers,
                                result.held_by,
                                result.held_primary,
                                group,
                                deadline,
                            )
                            .await;
                        }
                        Ok(Ok(WriteOutcome::Applied(result))) => {
                            if result.stale_sequence {
                                // An earlier attempt may have been applied before the later
                                // sequence was: the session table no longer knows. `Unknown`,
                                // not a refusal: a client must not read it as "not applied".
                                return Err(Status::unknown(
                                    "a later write of this client_id was applied already; whether this one was is no longer known",
                                ));
                            }
                            return Ok(Route::Local(*result));
                        }
                        Ok(Ok(WriteOutcome::NotLeader(_))) => {
                            Self::wait_for_leader_change(
                                &mut view,
                                deadline,
                                "the write was not applied",
                            )
                            .await?
                        }
                        Ok(Ok(WriteOutcome::Superseded)) => {
                            return Err(Status::aborted(
                                "leadership changed before the write committed; not applied",
                            ));
                        }
                        Ok(Ok(WriteOutcome::NoSuchGroup)) => {
                            return Err(refusal(&RouteError::PartitionNotHere {
                                partition: group,
                            }));
                        }
                        Ok(Ok(WriteOutcome::Refused { why, .. })) => {
                            return Err(Status::failed_precondition(why));
                        }
                        Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "the write was proposed but not committed before the deadline; it may or may not be applied",
                            ));
                        }
                    }
                }
                Some(leader) if forwarded => {
                    return Err(refusal(&RouteError::NotLeader {
                        partition: group,
                        hint: Some(leader),
                    }));
                }
                Some(leader) => return Ok(Route::Forward(leader)),
                None => {
                    Self::wait_for_leader_change(&mut view, deadline, "the write was not applied")
                        .await?
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_local(
        &self,
        group: u64,
        key: &[u8],
        serializable: bool,
        lease: bool,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<GetValue>, Status> {
        self.read_here(group, serializable, deadline, forwarded, "read", |reply| {
            Event::Read {
                group,
                key: key.to_vec(),
                serializable,
                lease,
                reply,
            }
        })
        .await
    }

    async fn scan_local(
        &self,
        group: u64,
        range: &ScanRange<'_>,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<ScanItems>, Status> {
        let serializable = range.serializable;
        self.read_here(group, serializable, deadline, forwarded, "scan", |reply| {
            Event::Scan {
                group,
                start: range.start.to_vec(),
                end: range.end.to_vec(),
                limit: range.limit,
                serializable,
                reply,
            }
        })
        .await
    }

    /// A read (get or scan) on the local replica of `group`: served here if it leads (or
    /// the read is serializable), else where to go. `event` makes the request for the
    /// replication thread.
    async fn read_here<T>(
        &self,
        group: u64,
        serializable: bool,
        deadline: Instant,
        forwarded: bool,
        what: &str,
        event: impl Fn(oneshot::Sender<ReadOutcome<T>>) -> Event,
    ) -> Result<Route<T>, Status> {
        let Some(mut view) = self.view(group) else {
            return Err(refusal(&RouteError::PartitionNotHere { partition: group }));
        };
        let not_served = format!("the {what} was not served");
        loop {
            let leader = view.borrow_and_update().leader_id;
            let here = serializable || leader == Some(self.node_id);
            match leader {
                _ if here => {
                    let (reply, outcome) = oneshot::channel();
                    self.submit(event(reply))?;
                    match tokio::time::timeout_at(deadline, outcome).await {
                        Ok(Ok(ReadOutcome::Value(value))) => return Ok(Route::Local(value)),
                        Ok(Ok(ReadOutcome::NotLeader(_))) if !serializable => {
                            Self::wait_for_leader_change(&mut view, deadline, &not_served).await?
                        }
                        Ok(Ok(ReadOutcome::Dropped)) => {
                            return Err(Status::aborted(format!(
                                "leadership was lost before the {what} was confirmed"
                            )));
                        }
                        Ok(Ok(ReadOutcome::NoSuchGroup)) => {
                            return Err(refusal(&RouteError::PartitionNotHere {
                                partition: group,
                            }));
                        }
                        Ok(Ok(ReadOutcome::EpochNotMatch(current))) => {
                            return Err(moved(current));
                        }
                        // A reader resolves the intent in its way, then reads again.
                        Ok(Ok(ReadOutcome::Held { txn, primary })) => {
                            if Instant::now() >= deadline {
                                return Err(Status::aborted(format!(
                                    "a key read is under an intent of transaction {txn}, still undecided at the deadline; the {what} was not served, retry"
                                )));
                            }
                            super::txn::settle(
                                &self.router,
                                &self.txn_blockers,
                                txn,
                                primary,
                                group,
                                deadline,
                            )
                            .await;
                        }
                        Ok(Ok(ReadOutcome::NotLeader(_))) | Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "no quorum confirmed this leader before the deadline",
                            ));
                        }
                    }
                }
                Some(leader) if forwarded => {
                    return Err(refusal(&RouteError::NotLeader {
                        partition: group,
                        hint: Some(leader),
                    }));
                }
                Some(leader) => return Ok(Route::Forward(leader)),
                None => Self::wait_for_leader_change(&mut view, deadline, &not_served).await?,
            }
        }
    }

    /// Runs a coordinator's request for `key`: on the replica here if it leads (`local`),
    /// else through the routing client (`remote` sends one routed attempt), starting
    /// from the leader this node's replica knows of.
    async fn coordinate<T, L, LF, R, RF>(
        &self,
        key: &[u8],
        deadline: Instant,
        mut local: L,
        mut remote: R,
    ) -> Result<(u64, T), Status>
    where
        L: FnMut(u64) -> LF,
        LF: Future<Output = Result<Route<T>, Status>>,
        R: FnMut(KvClient<Channel>, Request<()>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let descriptor = self.known_map(deadline).await?.locate(key).clone();
        if self.hosts(descriptor.id) {
            match local(descriptor.id).await {
                Ok(Route::Local(value)) => return Ok((descriptor.id, value)),
                Ok(Route::Forward(leader)) => self.router.hint_leader(descriptor.id, leader),
                // The range here no longer holds the key (a split the map has not caught
                // up with): its refusal corrects the route, then the router goes on.
                Err(status) if self.router.correct(&status) => {}
                Err(status) => return Err(status),
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (partition, value) = self
            .router
            .call(Target::Key(key), timeout, |client, to, left| {
                remote(client, prepare((), to.as_ref(), left))
            })
            .await?;
        Ok((partition.unwrap_or(descriptor.id), value))
    }

    /// A write (put, delete, compare-and-swap): a routed one is served by the replica
    /// here or refused; any other is coordinated. `send` forwards the client's `message`
    /// as one routed attempt and reads the reply back as an [`ApplyResult`].
    async fn write<M, S, SF>(
        &self,
        routed: Option<RoutedAt>,
        key: &[u8],
        command: &Command,
        deadline: Instant,
        message: &M,
        send: S,
    ) -> Result<(u64, ApplyResult), Status>
    where
        M: Clone,
        S: Fn(KvClient<Channel>, Request<M>) -> SF,
        SF: Future<Output = Result<ApplyResult, Status>>,
    {
        if let Some(routed) = routed {
            self.check_routed(routed, Some(key), EpochCommand::Write)?;
            return self
                .write_local(routed.partition, command, deadline, true)
                .await?
                .served_here(routed.partition)
                .map(|result| (routed.partition, result));
        }
        self.coordinate(
            key,
            deadline,
            |group| self.write_local(group, command, deadline, false),
            |client, routing| send(client, with_message(routing, message.clone())),
        )
        .await
    }

    /// One partition's part of a scan: from the replica here if it leads, else through
    /// the routing client.
    async fn scan_partition(
        &self,
        descriptor: &RangeDescriptor,
        range: ScanRange<'_>,
        deadline: Instant,
    ) -> Result<ScanItems, Status> {
        let group = descriptor.id;
        if self.hosts(group) {
            match self.scan_local(group, &range, deadline, false).await {
                Ok(Route::Local(found)) => return Ok(found),
                Ok(Route::Forward(leader)) => self.router.hint_leader(group, leader),
                // A split here since the scan was planned: the caller plans again.
                Err(status) => return Err(status),
            }
        }
        self.router
            .scan_part(
                descriptor,
                range.start.to_vec(),
                range.end.to_vec(),
                range.limit,
                range.serializable,
                deadline,
            )
            .await
    }
}

impl KvService {
    /// A transaction over several partitions: two-phase commit, coordinated here.
    async fn txn_across(
        &self,
        message: &TxnRequest,
        map: &PartitionMap,
        primary: u64,
        deadline: Instant,
    ) -> Result<TxnResponse, Status> {
        use super::txn::{Attempt, Outcome, plan};
        let parts =
            plan(&message.ops, |k| map.locate(k).id).map_err(Status::failed_precondition)?;
        let partitions: Vec<u64> = std::iter::once(primary)
            .chain(parts.keys().copied().filter(|p| *p != primary))
            .collect();
        let attempt = Attempt {
            router: &self.router,
            clock: &self.txn_clock,
            blockers: &self.txn_blockers,
            stats: &self.txn_stats,
            failpoints: &self.failpoints,
            ops: &message.ops,
            isolation: match crate::proto::kv::Isolation::try_from(message.isolation) {
                Ok(crate::proto::kv::Isolation::Snapshot) => {
                    crate::partitioning::txn::Level::Snapshot
                }
                Ok(crate::proto::kv::Isolation::ReadCommitted) => {
                    crate::partitioning::txn::Level::ReadCommitted
                }
                _ => crate::partitioning::txn::Level::Serializable,
            },
            bugs: self.txn_bugs,
        };
        let outcome = attempt.run(parts, primary, self.node_id, deadline).await?;
        let header = Some(self.header(primary));
        Ok(match outcome {
            Outcome::Committed {
                results,
                commit_ts,
                revision,
            } => TxnResponse {
                header,
                committed: true,
                results,
                revision,
                timestamp: Some(crate::store::to_wire(crate::store::unpack(commit_ts))),
                failed_compare: 0,
                partitions,
            },
            Outcome::FailedCompare { index, results } => TxnResponse {
                header,
                committed: false,
                results,
                revision: 0,
                timestamp: None,
                failed_compare: index,
                partitions,
            },
        })
    }
}

fn wire_epoch(epoch: crate::partitioning::RangeEpoch) -> crate::proto::kv::RangeEpoch {
    crate::proto::kv::RangeEpoch {
        version: epoch.version,
        conf_version: epoch.conf_version,
    }
}

/// The refusal for a request its range no longer holds (a split moved it, or the range
/// is frozen for a merge): the range's current descriptors, to route it again by.
fn moved(current: Vec<RangeDescriptor>) -> Status {
    refusal(&RouteError::EpochNotMatch {
        requested: current.first().map(|d| d.epoch).unwrap_or_default(),
        current,
    })
}

/// A request carrying `message` and whatever routing `routing` was given (its metadata
/// and deadline).
fn with_message<M>(routing: Request<()>, message: M) -> Request<M> {
    let (metadata, extensions, ()) = routing.into_parts();
    Request::from_parts(metadata, extensions, message)
}

fn command(write_id: Option<WriteId>, op: Op) -> Command {
    let write_id = write_id.unwrap_or_default();
    Command {
        client_id: write_id.client_id,
        sequence: write_id.sequence,
        // The leader's driver stamps it when it proposes.
        hlc: None,
        op: Some(op),
    }
}

/// Parses the gRPC `grpc-timeout` header: an integer and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    type LeaseKeepAliveStream = lease::KeepAliveStream;

    async fn lease_grant(
        &self,
        request: Request<crate::proto::kv::LeaseGrantRequest>,
    ) -> Result<Response<crate::proto::kv::LeaseGrantResponse>, Status> {
        self.lease_grant_rpc(request).await
    }

    async fn lease_revoke(
        &self,
        request: Request<crate::proto::kv::LeaseRevokeRequest>,
    ) -> Result<Response<crate::proto::kv::LeaseRevokeResponse>, Status> {
        self.lease_revoke_rpc(request).await
    }

    async fn lease_keep_alive(
        &self,
        request: Request<tonic::Streaming<crate::proto::kv::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.lease_keep_alive_rpc(request)
    }

    async fn lease_renew(
        &self,
        request: Request<crate::proto::kv::LeaseKeepAliveRequest>,
    ) -> Result<Response<crate::proto::kv::LeaseKeepAliveResponse>, Status> {
        self.lease_renew_rpc(request).await
    }

    async fn lease_time_to_live(
        &self,
        request: Request<crate::proto::kv::LeaseTimeToLiveRequest>,
    ) -> Result<Response<crate::proto::kv::LeaseTimeToLiveResponse>, Status> {
        self.lease_time_to_live_rpc(request).await
    }

    async fn lock(
        &self,
        request: Request<crate::proto::kv::LockRequest>,
    ) -> Result<Response<crate::proto::kv::LockResponse>, Status> {
        self.lock_rpc(request).await
    }

    async fn unlock(
        &self,
        request: Request<crate::proto::kv::UnlockRequest>,
    ) -> Result<Response<crate::proto::kv::UnlockResponse>, Status> {
        self.unlock_rpc(request).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        self.check_value(&message.value)?;
        let op = Op::Put(raft::Put {
            key: message.key.clone(),
            value: message.value.clone(),
            lease: message.lease,
            fencing_token: message.fencing_token,
        });
        let command = command(message.write_id.clone(), op);
        let (group, result) = self
            .write(
                routed,
                &message.key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.put(request).await?.into_inner();
                    Ok(ApplyResult {
                        revision: response.revision,
                        timestamp: response.timestamp,
                        succeeded: true,
                        ..Default::default()
                    })
                },
            )
            .await?;
        // The lease table's refusals: the lease is gone, or a stale fencing token.
        if !result.refused.is_empty() {
            return Err(lease::refused(&result));
        }
        Ok(Response::new(PutResponse {
            header: Some(self.header(group)),
            revision: result.revision,
            timestamp: result.timestamp,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        let serializable = message.serializable || self.stale_read;
        let reply = |group: u64, value: Option<(Vec<u8>, u64)>| {
            let (found, value, revision) = match value {
                Some((value, revision)) => (true, value, revision),
                None => (false, Vec::new(), 0),
            };
            Response::new(GetResponse {
                header: Some(self.header(group)),
                found,
                value,
                revision,
            })
        };
        if let Some(routed) = routed {
            self.check_routed(routed, Some(&message.key), EpochCommand::Read)?;
            // The seeded bug: a forwarded read is served from local state, whatever
            // this replica's role.
            let serializable = serializable || self.bugs.stale_leader_route;
            return self
                .read_local(
                    routed.partition,
                    &message.key,
                    serializable,
                    message.lease_read,
                    deadline,
                    true,
                )
                .await?
                .served_here(routed.partition)
                .map(|value| reply(routed.partition, value));
        }
        if self.bugs.stale_leader_route
            && let Some(response) = self.stale_leader_get(&message, deadline).await?
        {
            return Ok(response);
        }
        let (group, value) = self
            .coordinate(
                &message.key,
                deadline,
                |group| {
                    self.read_local(
                        group,
                        &message.key,
                        serializable,
                        message.lease_read,
                        deadline,
                        false,
                    )
                },
                |mut peer, routing| {
                    let request = with_message(routing, message.clone());
                    async move {
                        let response = peer.get(request).await?.into_inner();
                        Ok(response
                            .found
                            .then_some((response.value, response.revision)))
                    }
                },
            )
            .await?;
        Ok(reply(group, value))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        let op = Op::Delete(raft::Delete {
            key: message.key.clone(),
        });
        let command = command(message.write_id.clone(), op);
        let (group, result) = self
            .write(
                routed,
                &message.key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.delete(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: response.deleted,
                        revision: response.revision,
                        timestamp: response.timestamp,
                        ..Default::default()
                    })
                },
            )
            .await?;
        Ok(Response::new(DeleteResponse {
            header: Some(self.header(group)),
            deleted: result.succeeded,
            revision: result.revision,
            timestamp: result.timestamp,
        }))
    }

    async fn compact(
        &self,
        request: Request<crate::proto::kv::CompactRequest>,
    ) -> Result<Response<crate::proto::kv::CompactResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        if message.revision == 0 {
            return Err(Status::invalid_argument(
                "compact needs a revision above 0: versions no read or watch after it needs \
                 are dropped",
            ));
        }
        let op = Op::Compact(raft::Compact {
            revision: message.revision,
        });
        let command = command(None, op);
        let (group, result) = self
            .write(
                routed,
                &message.key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.compact(request).await?.into_inner();
                    Ok(ApplyResult {
                        revision: response.compact_revision,
                        succeeded: true,
                        ..Default::default()
                    })
                },
            )
            .await?;
        // A revision past the entry's own index compacts up to the entry.
        Ok(Response::new(crate::proto::kv::CompactResponse {
            header: Some(self.header(group)),
            partition: group,
            compact_revision: message.revision.min(result.revision),
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        self.check_value(&message.new_value)?;
        let expected = match &message.expected {
            Some(compare_and_swap_request::Expected::ExpectedValue(v)) => {
                self.check_value(v)?;
                Expected::ExpectedValue(v.clone())
            }
            Some(compare_and_swap_request::Expected::ExpectedRevision(r)) => {
                Expected::ExpectedRevision(*r)
            }
            Some(compare_and_swap_request::Expected::ExpectedAbsent(_)) => {
                Expected::ExpectedAbsent(true)
            }
            None => {
                return Err(Status::invalid_argument(
                    "compare_and_swap needs one of expected_value, expected_revision or expected_absent",
                ));
            }
        };
        let op = Op::CompareAndSwap(raft::CompareAndSwap {
            key: message.key.clone(),
            expected: Some(expected),
            new_value: message.new_value.clone(),
        });
        let command = command(message.write_id.clone(), op);
        let (group, result) = self
            .write(
                routed,
                &message.key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.compare_and_swap(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: response.succeeded,
                        revision: response.revision,
                        timestamp: response.timestamp,
                        found: response.found,
                        current_value: response.current_value,
                        ..Default::default()
                    })
                },
            )
            .await?;
        Ok(Response::new(CompareAndSwapResponse {
            header: Some(self.header(group)),
            succeeded: result.succeeded,
            revision: result.revision,
            found: result.found,
            current_value: result.current_value,
            timestamp: result.timestamp,
        }))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let keys = self.check_txn(&message)?;
        let first = keys[0].clone();
        if let Some(routed) = routed {
            let local = self.check_routed(routed, Some(&first), EpochCommand::Write)?;
            if keys.iter().any(|k| !local.contains(k)) {
                // A routed request is one partition's: the sender's map is behind a
                // split. Refused with the current descriptor, so it routes again.
                return Err(moved(vec![local]));
            }
        } else {
            let map = self.known_map(deadline).await?;
            let primary = map.locate(&first).id;
            let mut partitions: Vec<u64> = keys.iter().map(|k| map.locate(k).id).collect();
            partitions.sort_unstable();
            partitions.dedup();
            if partitions.len() > 1 {
                return self
                    .txn_across(&message, &map, primary, deadline)
                    .await
                    .map(Response::new);
            }
        }
        let op = Op::Txn(raft::Txn {
            ops: message.ops.clone(),
            isolation: message.isolation,
        });
        let command = command(message.write_id.clone(), op);
        let (group, result) = self
            .write(
                routed,
                &first,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.txn(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: response.committed,
                        revision: response.revision,
                        timestamp: response.timestamp,
                        txn_results: response.results,
                        failed_compare: response.failed_compare,
                        ..Default::default()
                    })
                },
            )
            .await?;
        if !result.refused.is_empty() {
            return Err(Status::failed_precondition(result.refused));
        }
        Ok(Response::new(TxnResponse {
            header: Some(self.header(group)),
            committed: result.succeeded,
            results: result.txn_results,
            revision: result.revision,
            timestamp: result.timestamp,
            failed_compare: result.failed_compare,
            partitions: vec![group],
        }))
    }

    async fn txn_part(
        &self,
        request: Request<TxnPartRequest>,
    ) -> Result<Response<TxnPartResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let Some(routed) = routed else {
            return Err(Status::invalid_argument(
                "TxnPart is node to node and must be routed to the partition it is for",
            ));
        };
        let local = self.check_routed(routed, None, EpochCommand::Write)?;
        let mut part =
            <raft::TxnPart as prost::Message>::decode(message.part.as_slice()).map_err(|e| {
                Status::invalid_argument(format!("the TxnPart request did not decode: {e}"))
            })?;
        // A record's heartbeat and TTL run on the clock of the partition's leader.
        part.now = crate::store::pack(crate::time::Timestamp {
            wall_ms: self.clock.wall_ms(),
            logical: 0,
        });
        let command = Command {
            op: Some(Op::TxnPart(part)),
            ..Default::default()
        };
        let result = match self.write_here(local.id, &command, deadline).await {
            Ok(result) => result,
            // The part's keys left the range since it was planned: not a route to fix
            // (the same partition would refuse again), so the coordinator plans again.
            Err(status)
                if matches!(
                    crate::client::wire::correction(&status),
                    Some(crate::client::wire::Correction::Newer(_))
                ) =>
            {
                return Err(Status::failed_precondition(format!(
                    "the transaction's keys are no longer all in partition {}: {}",
                    local.id,
                    status.message()
                )));
            }
            Err(status) => return Err(status),
        };
        if !result.refused.is_empty() {
            return Err(Status::failed_precondition(result.refused));
        }
        let reply = result.txn_part.ok_or_else(|| {
            Status::internal("the participant applied the request but gave no answer")
        })?;
        Ok(Response::new(TxnPartResponse {
            reply: prost::Message::encode_to_vec(&reply),
            revision: result.revision,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let deadline = self.deadline(&request);
        let (reply, status) = oneshot::channel();
        let wanted = request.get_ref();
        let digest_index = wanted.state_digest.then_some(wanted.digest_index);
        self.submit(Event::Status {
            group: wanted.group_id,
            all_groups: wanted.all_groups,
            digest_index,
            reply,
        })?;
        match tokio::time::timeout_at(deadline, status).await {
            Ok(Ok(mut status)) => {
                status.wall_clock_ms = self.clock.wall_ms();
                status.clock_fence = self.clock_guard.fence().unwrap_or_default();
                status.clock_offsets_ms = self.clock_guard.offsets_ms().into_iter().collect();
                let count =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                status.txns_coordinated = count(&self.txn_stats.transactions);
                status.txn_attempts = count(&self.txn_stats.attempts);
                Ok(Response::new(status))
            }
            _ => Err(Status::unavailable(
                "the node did not answer before the deadline",
            )),
        }
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        if message.limit == 0 || message.limit > self.scan_limit_max {
            return Err(Status::invalid_argument(format!(
                "scan limit is {}; it must be 1..={} (scan_limit_max)",
                message.limit, self.scan_limit_max
            )));
        }
        if !message.end.is_empty() && message.end <= message.start {
            return Err(Status::invalid_argument(
                "scan end must be after start (or empty for the end of the keyspace)",
            ));
        }
        let serializable = message.serializable || self.stale_read;
        let limit = message.limit as usize;
        let range = ScanRange {
            start: &message.start,
            end: &message.end,
            limit,
            serializable,
        };
        if let Some(routed) = routed {
            // One partition's part, for a sender that split the scan by partition: its
            // keys are the sender's clip of a range's span (a bucket's names no key).
            let local = self.map.borrow().get(routed.partition).cloned();
            let start = match local.as_ref().map(|d| &d.span) {
                Some(KeySpan::Bucket { .. }) => None,
                _ => Some(message.start.as_slice()),
            };
            let local = self.check_routed(routed, start, EpochCommand::Read)?;
            // The part must end inside the range too: keys past its end are another
            // partition's, and a sender that thinks otherwise would read them from here.
            if let KeySpan::Range { end, .. } = &local.span
                && !end.is_empty()
                && (message.end.is_empty() || message.end > *end)
            {
                return Err(refusal(&RouteError::KeyNotInRange {
                    key: message.end.clone(),
                    descriptor: Box::new(local),
                }));
            }
            return match self
                .scan_local(routed.partition, &range, deadline, true)
                .await?
            {
                Route::Local((items, more)) => {
                    let mut response = scan_response(scan::Scanned {
                        items,
                        more,
                        partitions: vec![routed.partition],
                    });
                    response.header = Some(self.header(routed.partition));
                    Ok(Response::new(response))
                }
                Route::Forward(leader) => Err(refusal(&RouteError::NotLeader {
                    partition: routed.partition,
                    hint: Some(leader),
                })),
            };
        }
        let map = self.known_map(deadline).await?;
        let covering: Vec<RangeDescriptor> = map
            .covering(&message.start, &message.end)
            .into_iter()
            .cloned()
            .collect();
        let scanned = scan::assemble(
            &covering,
            &message.start,
            &message.end,
            limit,
            self.bugs.scan_skips_boundary,
            |descriptor, from, to, limit| async move {
                let part = ScanRange {
                    start: &from,
                    end: &to,
                    limit,
                    serializable,
                };
                self.scan_partition(&descriptor, part, deadline).await
            },
        )
        .await?;
        let mut response = scan_response(scanned);
        response.header = Some(ResponseHeader {
            node_id: self.node_id,
            ..Default::default()
        });
        Ok(Response::new(response))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.serving()?;
        let timeout = self
            .deadline(&request)
            .saturating_duration_since(Instant::now());
        let message = request.into_inner();
        if message.keys.len() > BATCH_GET_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "batch_get asks for {} keys; at most {BATCH_GET_KEYS_MAX}",
                message.keys.len()
            )));
        }
        for key in &message.keys {
            self.check_key(key)?;
        }
        let gets = message.keys.iter().map(|key| {
            let mut get = Request::new(GetRequest {
                key: key.clone(),
                serializable: message.serializable,
                lease_read: false,
            });
            get.set_timeout(timeout);
            self.get(get)
        });
        let mut results = Vec::with_capacity(message.keys.len());
        for got in join_all(gets).await {
            let got = got?.into_inner();
            results.push(BatchGetResult {
                found: got.found,
                value: got.value,
                revision: got.revision,
            });
        }
        Ok(Response::new(BatchGetResponse {
            header: Some(ResponseHeader {
                node_id: self.node_id,
                ..Default::default()
            }),
            results,
        }))
    }

    async fn get_partition_map(
        &self,
        _request: Request<GetPartitionMapRequest>,
    ) -> Result<Response<GetPartitionMapResponse>, Status> {
        let map = self.map.borrow().clone();
        let partitioning = match map.descriptors().next().map(|d| &d.span) {
            Some(KeySpan::Bucket { .. }) => "hash",
            _ => "range",
        };
        let core_leader = self
            .view(crate::partitioning::CORE_GROUP)
            .and_then(|v| v.borrow().leader_id)
            .unwrap_or(0);
        Ok(Response::new(GetPartitionMapResponse {
            partitioning: partitioning.into(),
            version: map.version(),
            partitions: map
                .descriptors()
                .map(|d| to_wire(d, map.load(d.id)))
                .collect(),
            core_replicas: self.core_replicas.clone(),
            core_leader,
            nodes: self.nodes_wire(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let partition = message.partition;
        let map = self.known_map(deadline).await?;
        let Some(descriptor) = map.get(partition).cloned() else {
            return Err(Status::not_found(format!(
                "there is no partition {partition}; `faultline kv map` lists them"
            )));
        };
        if self.leads_here(partition, routed.is_some())? {
            // The leader's own descriptor, not the map: a replica added a moment ago
            // (a move's) may not be in the map yet.
            let own = self
                .view(partition)
                .and_then(|v| v.borrow().descriptor.clone())
                .unwrap_or(descriptor);
            if !own.replicas.contains(&message.to) {
                return Err(Status::invalid_argument(format!(
                    "node {} holds no voting replica of partition {partition} (replicas {:?}); nothing changed",
                    message.to, own.replicas
                )));
            }
            let (reply, outcome) = oneshot::channel();
            self.submit(Event::TransferLeader {
                group: partition,
                to: message.to,
                reply,
            })?;
            return match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(Ok(()))) => Ok(Response::new(TransferLeaderResponse { from: self.node_id })),
                Ok(Ok(Err(why))) => Err(Status::failed_precondition(why)),
                _ => Err(Status::unavailable(
                    "the node did not answer before the deadline",
                )),
            };
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (_, response) = self
            .router
            .call(Target::Partition(partition), timeout, |mut c, d, left| {
                let request = prepare(message, d.as_ref(), left);
                async move { c.transfer_leader(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn split(
        &self,
        request: Request<SplitRequest>,
    ) -> Result<Response<SplitResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        if let Some(routed) = routed {
            let local = self.check_routed(routed, Some(&message.key), EpochCommand::Split)?;
            return self.split_here(local, &message.key, deadline).await;
        }
        let map = self.known_map(deadline).await?;
        if map
            .descriptors()
            .any(|d| matches!(d.span, KeySpan::Bucket { .. }))
        {
            return Err(Status::invalid_argument(
                "split needs range partitioning: under --partitioning hash a partition is a \
                 hash bucket, not a key range, and has no key to split at; nothing changed",
            ));
        }
        let partition = map.locate(&message.key).id;
        let local = self
            .view(partition)
            .and_then(|v| v.borrow().descriptor.clone());
        if let Some(local) = local
            && local.contains(&message.key)
        {
            match self.split_here(local, &message.key, deadline).await {
                Err(status) if self.router.correct(&status) => {}
                done => return done,
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (_, response) = self
            .router
            .call(Target::Key(&message.key), timeout, |mut c, d, left| {
                let request = prepare(message.clone(), d.as_ref(), left);
                async move { c.split(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn merge(
        &self,
        request: Request<MergeRequest>,
    ) -> Result<Response<MergeResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        if let Some(routed) = routed {
            let local = self.check_routed(routed, None, EpochCommand::Merge)?;
            return self.merge_here(local, deadline).await;
        }
        let map = self.known_map(deadline).await?;
        let Some(left) = map.get(message.partition).cloned() else {
            return Err(Status::not_found(format!(
                "there is no partition {}; `faultline kv map` lists them",
                message.partition
            )));
        };
        let local = self
            .view(left.id)
            .and_then(|v| v.borrow().descriptor.clone());
        if let Some(local) = local {
            match self.merge_here(local, deadline).await {
                Err(status) if self.router.correct(&status) => {}
                done => return done,
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (_, response) = self
            .router
            .call(Target::Partition(left.id), timeout, |mut c, d, left| {
                let request = prepare(message, d.as_ref(), left);
                async move { c.merge(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn prepare_merge(
        &self,
        request: Request<PrepareMergeRequest>,
    ) -> Result<Response<PrepareMergeResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let Some(routed) = routed else {
            return Err(Status::invalid_argument(
                "PrepareMerge is node to node and must be routed to the range it freezes",
            ));
        };
        let local = self.check_routed(routed, None, EpochCommand::Merge)?;
        let command = Command {
            op: Some(Op::PrepareMerge(raft::PrepareMerge {
                planned: Some(wire_epoch(local.epoch)),
                into: message.into,
                into_planned: message.into_epoch,
            })),
            ..Default::default()
        };
        let result = self.write_here(local.id, &command, deadline).await?;
        if result.merge_state.is_empty() {
            return Err(Status::aborted(
                "the range did not freeze for the merge; not applied, retry",
            ));
        }
        Ok(Response::new(PrepareMergeResponse {
            source: Some(to_wire(&local, Default::default())),
            state: result.merge_state,
        }))
    }

    async fn allocate_partition_id(
        &self,
        request: Request<AllocatePartitionIdRequest>,
    ) -> Result<Response<AllocatePartitionIdResponse>, Status> {
        let deadline = self.deadline(&request);
        let partition = self.allocate_here(deadline).await?;
        Ok(Response::new(AllocatePartitionIdResponse { partition }))
    }

    async fn report_partition(
        &self,
        request: Request<ReportPartitionRequest>,
    ) -> Result<Response<ReportPartitionResponse>, Status> {
        let deadline = self.deadline(&request);
        let message = request.into_inner();
        for wire in &message.descriptors {
            from_wire(wire).map_err(Status::invalid_argument)?;
        }
        let report = core_command::Op::Report(PartitionReport {
            descriptors: message.descriptors,
            term: message.term,
            reads_per_sec: message.reads_per_sec,
            writes_per_sec: message.writes_per_sec,
        });
        self.core_write(report, deadline, "the report was not committed in time")
            .await?;
        Ok(Response::new(ReportPartitionResponse {}))
    }

    async fn change_replicas(
        &self,
        request: Request<ChangeReplicasRequest>,
    ) -> Result<Response<ChangeReplicasResponse>, Status> {
        let (deadline, routed) = (self.admin_deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let partition = message.partition;
        let change = match ReplicaChange::try_from(message.change) {
            Ok(ReplicaChange::AddVoter) => ConfChange::AddVoter(message.node),
            Ok(ReplicaChange::AddLearner) => ConfChange::AddLearner(message.node),
            Ok(ReplicaChange::Remove) => ConfChange::Remove(message.node),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown replica change {}; nothing changed",
                    message.change
                )));
            }
        };
        let map = self.known_map(deadline).await?;
        if map.get(partition).is_none() {
            return Err(Status::not_found(format!(
                "there is no partition {partition}; `faultline kv map` lists them"
            )));
        }
        if !matches!(change, ConfChange::Remove(_)) && !self.is_cluster_node(message.node) {
            return Err(Status::invalid_argument(format!(
                "node {} is not a member of the cluster (its nodes are {:?}): a replica can only \
                 go to one of them; nothing changed",
                message.node,
                self.addresses.iter().map(|(id, _)| *id).collect::<Vec<_>>()
            )));
        }
        if self.leads_here(partition, routed.is_some())? {
            return self
                .change_here(partition, change, deadline)
                .await
                .map(Response::new);
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (_, response) = self
            .router
            .call(Target::Partition(partition), timeout, |mut c, d, left| {
                let request = prepare(message, d.as_ref(), left);
                async move { c.change_replicas(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn create_replica(
        &self,
        request: Request<CreateReplicaRequest>,
    ) -> Result<Response<CreateReplicaResponse>, Status> {
        let deadline = self.admin_deadline(&request);
        let partition = request.into_inner().partition;
        let created = self.create_replica_here(partition, deadline).await?;
        Ok(Response::new(CreateReplicaResponse { created }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let deadline = self.deadline(&request);
        let forwarded = request.metadata().contains_key(CORE_FORWARDED);
        let message = request.into_inner();
        let addr: SocketAddr = message.address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "the joining node's address {:?} is not HOST:PORT with an IP host",
                message.address
            ))
        })?;
        if addr.ip().is_unspecified() {
            return Err(Status::invalid_argument(format!(
                "the joining node's address {addr} is unspecified; give the one its peers reach it at"
            )));
        }
        if !self.leads_core() {
            return self
                .forward_to_core(message, deadline, forwarded, |mut c, r| async move {
                    c.join(r).await
                })
                .await
                .map(Response::new);
        }
        // The core refuses the same; asking first names the problem without a log entry.
        // Only here, where the core leads: another node's map may lag (a node removed a
        // moment ago still holding its address there).
        let map = self.known_map(deadline).await?;
        let mut probe = (*map).clone();
        probe
            .add_node(message.id, &message.address)
            .map_err(|why| Status::already_exists(format!("{why}; nothing changed")))?;
        let add = core_command::Op::AddNode(raft::AddNode {
            id: message.id,
            address: message.address.clone(),
        });
        let result = self
            .core_write(
                add,
                deadline,
                "the consistent core did not commit the join in time",
            )
            .await?;
        if !result.refused.is_empty() {
            return Err(Status::already_exists(format!(
                "{}; nothing changed",
                result.refused
            )));
        }
        tracing::info!(node = message.id, address = %message.address, "a node joined the cluster");
        Ok(Response::new(JoinResponse {
            layout: self.layout.clone(),
            nodes: self.nodes_wire(),
        }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let deadline = self.admin_deadline(&request);
        let forwarded = request.metadata().contains_key(CORE_FORWARDED);
        let node = request.into_inner().node;
        let map = self.known_map(deadline).await?;
        let nodes = self.nodes_now();
        if !nodes.iter().any(|(id, ..)| *id == node) {
            return Err(Status::not_found(format!(
                "there is no node {node} in the cluster (its nodes are {:?}); nothing changed",
                nodes.iter().map(|(id, ..)| *id).collect::<Vec<_>>()
            )));
        }
        if self.core_replicas.contains(&node) {
            return Err(Status::failed_precondition(format!(
                "node {node} holds a replica of the consistent core (nodes {:?}), whose \
                 replicas are fixed when the cluster is formed; only nodes outside it can be \
                 removed; nothing changed",
                self.core_replicas
            )));
        }
        let holding: Vec<&RangeDescriptor> = map
            .descriptors()
            .filter(|d| d.replicas.contains(&node) || d.learners.contains(&node))
            .collect();
        let active: Vec<u64> = nodes
            .iter()
            .filter(|(id, _, state)| {
                *id != node && *state == crate::partitioning::NodeState::Active
            })
            .map(|(id, ..)| *id)
            .collect();
        if let Some(stuck) = holding.iter().find(|d| {
            !active
                .iter()
                .any(|n| !d.replicas.contains(n) && !d.learners.contains(n))
        }) {
            return Err(Status::failed_precondition(format!(
                "partition {} has a replica on every other node ({:?}): removing node {node} \
                 would leave it short of a replica; add a node first; nothing changed",
                stuck.id, stuck.replicas
            )));
        }
        // The drain runs where the core leads: the node's state changes there.
        if !self.leads_core() {
            let message = RemoveNodeRequest { node };
            return self
                .forward_to_core(message, deadline, forwarded, |mut c, r| async move {
                    c.remove_node(r).await
                })
                .await
                .map(Response::new);
        }
        self.set_node_state(node, crate::proto::kv::NodeState::Draining, deadline)
            .await?;
        tracing::info!(node, partitions = holding.len(), "draining a node");
        let mut moved = Vec::new();
        // Planned again from the map after every move, until nothing is left on the node:
        // a move that was under way when the drain began (the placement driver's) may
        // still land a replica there.
        loop {
            let map = self.known_map(deadline).await?;
            let Some(descriptor) = map
                .descriptors()
                .find(|d| d.replicas.contains(&node) || d.learners.contains(&node))
                .cloned()
            else {
                break;
            };
            if Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "draining node {node}: the deadline passed with partition {} still on it \
                     ({} moved; node {node} stays draining: run remove-node again)",
                    descriptor.id,
                    moved.len()
                )));
            }
            // The active node with the fewest replicas that lacks one of this partition.
            let mut load: BTreeMap<u64, usize> = active.iter().map(|&n| (n, 0)).collect();
            for d in map.descriptors() {
                for n in d.replicas.iter().chain(&d.learners) {
                    if let Some(count) = load.get_mut(n) {
                        *count += 1;
                    }
                }
            }
            let Some(to) = active
                .iter()
                .copied()
                .filter(|n| !descriptor.replicas.contains(n) && !descriptor.learners.contains(n))
                .min_by_key(|n| (load[n], *n))
            else {
                return Err(Status::failed_precondition(format!(
                    "draining node {node}: partition {} has a replica on every other node; \
                     add a node first ({} moved; node {node} stays draining)",
                    descriptor.id,
                    moved.len()
                )));
            };
            let mut request = Request::new(MoveReplicaRequest {
                partition: descriptor.id,
                from: node,
                to,
            });
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let response = self.move_replica(request).await.map_err(|status| {
                Status::new(
                    status.code(),
                    format!(
                        "draining node {node}: moving partition {}'s replica to node {to}: {} \
                         ({} moved before; node {node} stays draining: run remove-node again)",
                        descriptor.id,
                        status.message(),
                        moved.len()
                    ),
                )
            })?;
            let after = response.into_inner().descriptor;
            // Until the map shows the move, the next plan would pick the same partition.
            let mut watch = self.map.clone();
            let settle = Instant::now() + Duration::from_secs(5);
            while watch
                .borrow_and_update()
                .get(descriptor.id)
                .is_some_and(|d| d.replicas.contains(&node) || d.learners.contains(&node))
            {
                match tokio::time::timeout_at(settle, watch.changed()).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            moved.extend(after);
        }
        self.set_node_state(node, crate::proto::kv::NodeState::Removed, deadline)
            .await?;
        tracing::info!(
            node,
            moved = moved.len(),
            "node drained and removed from the cluster"
        );
        Ok(Response::new(RemoveNodeResponse { moved }))
    }

    async fn move_replica(
        &self,
        request: Request<MoveReplicaRequest>,
    ) -> Result<Response<MoveReplicaResponse>, Status> {
        let deadline = self.admin_deadline(&request);
        let MoveReplicaRequest {
            partition,
            from,
            to,
        } = request.into_inner();
        let map = self.known_map(deadline).await?;
        let Some(descriptor) = map.get(partition).cloned() else {
            return Err(Status::not_found(format!(
                "there is no partition {partition}; `faultline kv map` lists them"
            )));
        };
        if from == to {
            return Err(Status::invalid_argument(format!(
                "--from and --to are both node {from}; nothing changed"
            )));
        }
        if !descriptor.replicas.contains(&from) && !descriptor.learners.contains(&from) {
            return Err(Status::invalid_argument(format!(
                "node {from} holds no replica of partition {partition} (replicas {:?}); nothing changed",
                descriptor.replicas
            )));
        }
        if !self.is_cluster_node(to) {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a member of the cluster (its nodes are {:?}); nothing changed",
                self.addresses.iter().map(|(id, _)| *id).collect::<Vec<_>>()
            )));
        }
        let change = |change: ReplicaChange, node: u64| {
            let mut request = Request::new(ChangeReplicasRequest {
                partition,
                change: change as i32,
                node,
            });
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            request
        };
        if !descriptor.replicas.contains(&to) {
            tracing::info!(partition, from, to, "moving a replica: adding the new one");
            self.change_replicas(change(ReplicaChange::AddVoter, to))
                .await?;
        }
        loop {
            match self
                .change_replicas(change(ReplicaChange::Remove, from))
                .await
            {
                Ok(response) => {
                    tracing::info!(partition, from, to, "replica moved");
                    return Ok(Response::new(MoveReplicaResponse {
                        descriptor: response.into_inner().descriptor,
                    }));
                }
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message().contains(LEADER_REMOVAL) =>
                {
                    // The replica to remove leads: hand leadership to the new one first.
                    let mut transfer = Request::new(TransferLeaderRequest { partition, to });
                    transfer.set_timeout(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .min(self.request_timeout),
                    );
                    self.transfer_leader(transfer).await?;
                    if Instant::now() + CONF_CHANGE_RETRY >= deadline {
                        return Err(Status::unavailable(format!(
                            "node {to} was added to partition {partition}, but node {from} kept \
                             leading it until the deadline; it is still a replica"
                        )));
                    }
                    tokio::time::sleep(CONF_CHANGE_RETRY).await;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

impl KvService {
    /// The cluster's nodes that are not removed: as the consistent core registered them,
    /// or the ones the cluster was formed with while this node has no map.
    fn nodes_now(&self) -> Vec<(u64, String, crate::partitioning::NodeState)> {
        let map = self.map.borrow().clone();
        if map.nodes().is_empty() {
            return self
                .addresses
                .iter()
                .map(|(id, addr)| {
                    (
                        *id,
                        addr.to_string(),
                        crate::partitioning::NodeState::Active,
                    )
                })
                .collect();
        }
        map.live_nodes()
            .map(|(id, n)| (id, n.address.clone(), n.state))
            .collect()
    }

    fn nodes_wire(&self) -> Vec<NodeAddress> {
        self.nodes_now()
            .into_iter()
            .map(|(id, address, state)| {
                crate::partitioning::convert::node_to_wire(
                    id,
                    &crate::partitioning::NodeRecord { address, state },
                )
            })
            .collect()
    }

    /// Whether `node` may be given a replica: an active node of the cluster.
    fn is_cluster_node(&self, node: u64) -> bool {
        self.nodes_now()
            .iter()
            .any(|(id, _, state)| *id == node && *state == crate::partitioning::NodeState::Active)
    }

    /// For a request only `partition`'s leader serves (a leadership transfer, a replica
    /// change): whether this node's replica leads. A request routed here that it cannot
    /// serve is refused with the leader it knows of; an unrouted one is forwarded by the
    /// caller, to the leader this node knows of first.
    fn leads_here(&self, partition: u64, routed: bool) -> Result<bool, Status> {
        match self.view(partition).and_then(|v| v.borrow().leader_id) {
            Some(leader) if leader == self.node_id => Ok(true),
            hint if routed => Err(refusal(&RouteError::NotLeader { partition, hint })),
            Some(leader) => {
                self.router.hint_leader(partition, leader);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    fn leads_core(&self) -> bool {
        self.view(crate::partitioning::CORE_GROUP)
            .and_then(|v| v.borrow().leader_id)
            == Some(self.node_id)
    }

    /// Sends a request only the consistent core's leader serves (a partition id, a join, a
    /// node's removal) to it: the leader this node knows of first, then each core node in
    /// turn.
    /// A forwarded request is not forwarded again; its receiver refuses it unless it leads.
    async fn forward_to_core<Req, Resp, F, Fut>(
        &self,
        message: Req,
        deadline: Instant,
        forwarded: bool,
        call: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let core = crate::partitioning::CORE_GROUP;
        let known = self.view(core).and_then(|v| v.borrow().leader_id);
        if forwarded {
            return Err(refusal(&RouteError::NotLeader {
                partition: core,
                hint: known,
            }));
        }
        let mut targets: Vec<u64> = known.into_iter().collect();
        targets.extend(self.core_replicas.iter().copied());
        let mut tried = Vec::new();
        let mut last = None;
        while !targets.is_empty() {
            let target = targets.remove(0);
            if tried.contains(&target) || target == self.node_id {
                continue;
            }
            tried.push(target);
            let Some(client) = self.router.connection(target) else {
                continue;
            };
            let mut request = Request::new(message.clone());
            request
                .metadata_mut()
                .insert(CORE_FORWARDED, "1".parse().expect("ascii"));
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match call(client, request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => {
                    let hint = match crate::client::wire::correction(&status) {
                        Some(crate::client::wire::Correction::NotLeader { hint, .. }) => hint,
                        Some(_) => None,
                        // Not a routing refusal: the leader's own answer.
                        None if status.code() != tonic::Code::Unavailable => return Err(status),
                        None => None,
                    };
                    if let Some(hint) = hint {
                        targets.insert(0, hint);
                    }
                    last = Some(status);
                }
            }
        }
        Err(Status::unavailable(format!(
            "no leader of the consistent core answered ({}); nothing changed",
            last.map_or("no core node reachable".to_string(), |s| s
                .message()
                .to_string())
        )))
    }

    async fn set_node_state(
        &self,
        node: u64,
        state: crate::proto::kv::NodeState,
        deadline: Instant,
    ) -> Result<(), Status> {
        let set = core_command::Op::SetNodeState(raft::SetNodeState {
            id: node,
            state: state as i32,
        });
        let result = self
            .core_write(
                set,
                deadline,
                "the consistent core did not commit the node's state in time",
            )
            .await?;
        if !result.refused.is_empty() {
            return Err(Status::failed_precondition(result.refused));
        }
        Ok(())
    }

    /// Hosts an empty replica of `partition` here (for its leader to catch up).
    async fn create_replica_here(&self, partition: u64, deadline: Instant) -> Result<bool, Status> {
        let (reply, outcome) = oneshot::channel();
        self.submit(Event::CreateReplica {
            group: partition,
            initial: self.initial.get(&partition).cloned(),
            reply,
        })?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(Ok(created))) => Ok(created),
            Ok(Ok(Err(why))) => Err(Status::failed_precondition(why)),
            _ => Err(Status::unavailable(
                "the node did not create the replica before the deadline",
            )),
        }
    }

    /// One membership change of `partition`, whose replica here leads: for an added
    /// replica, an empty one is hosted on its node first; an added voter is waited for
    /// until the leader has promoted it.
    async fn change_here(
        &self,
        partition: u64,
        change: ConfChange,
        deadline: Instant,
    ) -> Result<ChangeReplicasResponse, Status> {
        if let ConfChange::AddLearner(node) | ConfChange::AddVoter(node) = change {
            if node == self.node_id {
                self.create_replica_here(partition, deadline).await?;
            } else {
                let Some(mut client) = self.router.connection(node) else {
                    return Err(Status::unavailable(format!(
                        "no connection to node {node}; nothing changed"
                    )));
                };
                let mut request = Request::new(CreateReplicaRequest { partition });
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                client.create_replica(request).await.map_err(|status| {
                    Status::new(
                        status.code(),
                        format!(
                            "node {node} did not host a replica of partition {partition}: {}; nothing changed",
                            status.message()
                        ),
                    )
                })?;
            }
        }
        loop {
            let (reply, outcome) = oneshot::channel();
            self.submit(Event::ConfChange {
                group: partition,
                change,
                reply,
            })?;
            match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(WriteOutcome::Applied(_))) => break,
                Ok(Ok(WriteOutcome::NotLeader(hint))) => {
                    return Err(refusal(&RouteError::NotLeader { partition, hint }));
                }
                Ok(Ok(WriteOutcome::Refused { why, retry: true })) => {
                    if Instant::now() + CONF_CHANGE_RETRY >= deadline {
                        return Err(Status::unavailable(format!(
                            "{why}; the deadline passed while waiting, nothing changed"
                        )));
                    }
                    tokio::time::sleep(CONF_CHANGE_RETRY).await;
                }
                Ok(Ok(WriteOutcome::Refused { why, retry: false })) => {
                    return Err(Status::failed_precondition(format!(
                        "{why}; nothing changed"
                    )));
                }
                Ok(Ok(WriteOutcome::Superseded)) => {
                    return Err(Status::aborted(
                        "leadership changed before the membership change committed; not applied",
                    ));
                }
                Ok(Ok(WriteOutcome::NoSuchGroup)) => {
                    return Err(refusal(&RouteError::PartitionNotHere { partition }));
                }
                Ok(Err(_)) | Err(_) => {
                    return Err(Status::unavailable(
                        "the membership change was proposed but not committed before the deadline; it may or may not be applied",
                    ));
                }
            }
        }
        let done = |d: &RangeDescriptor| match change {
            ConfChange::AddVoter(n) | ConfChange::Promote(n) => d.replicas.contains(&n),
            ConfChange::AddLearner(n) => d.learners.contains(&n),
            ConfChange::Remove(n) => !d.replicas.contains(&n) && !d.learners.contains(&n),
        };
        let Some(mut view) = self.view(partition) else {
            return Err(Status::unavailable(format!(
                "the membership change applied, but this node no longer hosts partition {partition}"
            )));
        };
        loop {
            if let Some(descriptor) = view.borrow_and_update().descriptor.clone()
                && done(&descriptor)
            {
                return Ok(ChangeReplicasResponse {
                    descriptor: Some(to_wire(&descriptor, Default::default())),
                });
            }
            match tokio::time::timeout_at(deadline, view.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(Status::unavailable(format!(
                        "the change applied, but partition {partition} did not reach it before \
                         the deadline (an added voter is promoted once it has caught up; the \
                         leader keeps trying)"
                    )));
                }
            }
        }
    }

    /// Splits `local` (this node's replica of the range holding `key`) at `key`, if the
    /// replica leads: a new partition id from the core, then the split entry, planned at
    /// the range's epoch now, through the range's own log.
    async fn split_here(
        &self,
        local: RangeDescriptor,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Response<SplitResponse>, Status> {
        let KeySpan::Range { start, .. } = &local.span else {
            return Err(Status::invalid_argument(
                "split needs range partitioning: under --partitioning hash a partition is a \
                 hash bucket, not a key range; nothing changed",
            ));
        };
        if key == start.as_slice() {
            return Err(Status::invalid_argument(format!(
                "{} is where partition {} ({}) starts already: a split key must be strictly \
                 inside the range; nothing changed",
                crate::partitioning::descriptor::printable(key),
                local.id,
                local.span
            )));
        }
        let leader = self.view(local.id).and_then(|v| v.borrow().leader_id);
        if leader != Some(self.node_id) {
            return Err(refusal(&RouteError::NotLeader {
                partition: local.id,
                hint: leader,
            }));
        }
        let new_partition = self.allocate(deadline).await?;
        let command = Command {
            op: Some(Op::Split(raft::Split {
                split_key: key.to_vec(),
                new_partition,
                planned: Some(crate::proto::kv::RangeEpoch {
                    version: local.epoch.version,
                    conf_version: local.epoch.conf_version,
                }),
            })),
            ..Default::default()
        };
        let result = self.write_here(local.id, &command, deadline).await?;
        let [left, right] = &result.split[..] else {
            return Err(Status::aborted(
                "the range changed before the split applied; not applied, retry",
            ));
        };
        Ok(Response::new(SplitResponse {
            left: Some(left.clone()),
            right: Some(right.clone()),
        }))
    }

    /// Merges `local` (this node's replica of the left range) with the range right after
    /// it, if the replica leads: the right range freezes through its own log and hands
    /// over its final state, which then joins this range through this range's log.
    async fn merge_here(
        &self,
        local: RangeDescriptor,
        deadline: Instant,
    ) -> Result<Response<MergeResponse>, Status> {
        let KeySpan::Range { end, .. } = &local.span else {
            return Err(Status::invalid_argument(
                "merge needs range partitioning: under --partitioning hash a partition is a \
                 hash bucket with no neighbour to merge with; nothing changed",
            ));
        };
        if end.is_empty() {
            return Err(Status::invalid_argument(format!(
                "partition {} ({}) is the last range: there is no range after it to merge \
                 with (merge the one before it); nothing changed",
                local.id, local.span
            )));
        }
        let leader = self.view(local.id).and_then(|v| v.borrow().leader_id);
        if leader != Some(self.node_id) {
            return Err(refusal(&RouteError::NotLeader {
                partition: local.id,
                hint: leader,
            }));
        }
        let map = self.known_map(deadline).await?;
        let right = map.locate(end).clone();
        let mut ours = local.replicas.clone();
        let mut theirs = right.replicas.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        if ours != theirs {
            return Err(Status::failed_precondition(format!(
                "partition {} is on nodes {ours:?} and partition {} after it on {theirs:?}: a \
                 merge needs both on the same nodes (move a replica first); nothing changed",
                local.id, right.id
            )));
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let into_epoch = wire_epoch(local.epoch);
        let (_, prepared) = self
            .router
            .call(Target::Partition(right.id), timeout, |mut c, d, left| {
                let request = prepare(
                    PrepareMergeRequest {
                        into: local.id,
                        into_epoch: Some(into_epoch),
                    },
                    d.as_ref(),
                    left,
                );
                async move { c.prepare_merge(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        let command = Command {
            op: Some(Op::CommitMerge(raft::CommitMerge {
                source: prepared.source,
                source_state: prepared.state,
                planned: Some(into_epoch),
            })),
            ..Default::default()
        };
        let result = self.write_here(local.id, &command, deadline).await?;
        let Some(merged) = result.merged else {
            return Err(Status::aborted(
                "the range changed before the merge applied; not applied (the frozen range \
                 rolls back once it sees the change), retry",
            ));
        };
        Ok(Response::new(MergeResponse {
            merged: Some(merged),
        }))
    }

    /// A partition id from the consistent core's leader: this node's core replica if it
    /// leads, else the core's nodes in turn (the leader it knows of first).
    async fn allocate(&self, deadline: Instant) -> Result<u64, Status> {
        if self.leads_core()
            && let Ok(id) = self.allocate_here(deadline).await
        {
            return Ok(id);
        }
        let response = self
            .forward_to_core(
                AllocatePartitionIdRequest {},
                deadline,
                false,
                |mut c, r| async move { c.allocate_partition_id(r).await },
            )
            .await?;
        Ok(response.partition)
    }

    /// Allocates on this node's core replica, which must lead.
    async fn allocate_here(&self, deadline: Instant) -> Result<u64, Status> {
        let allocate = core_command::Op::AllocatePartitionId(raft::AllocatePartitionId {});
        let result = self
            .core_write(
                allocate,
                deadline,
                "the consistent core did not commit the id in time; nothing changed",
            )
            .await?;
        Ok(result.revision)
    }

    /// Proposes `op` to this node's consistent-core replica, which must lead, and waits
    /// until it applies; `late` says what a deadline passing means.
    async fn core_write(
        &self,
        op: core_command::Op,
        deadline: Instant,
        late: &str,
    ) -> Result<ApplyResult, Status> {
        let core = crate::partitioning::CORE_GROUP;
        let Some(view) = self.view(core) else {
            return Err(refusal(&RouteError::PartitionNotHere { partition: core }));
        };
        let leader = view.borrow().leader_id;
        if leader != Some(self.node_id) {
            return Err(refusal(&RouteError::NotLeader {
                partition: core,
                hint: leader,
            }));
        }
        let (reply, outcome) = oneshot::channel();
        self.submit(Event::CoreWrite {
            command: CoreCommand { op: Some(op) },
            reply,
        })?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(WriteOutcome::Applied(result))) => Ok(*result),
            Ok(Ok(WriteOutcome::NotLeader(hint))) => Err(refusal(&RouteError::NotLeader {
                partition: core,
                hint,
            })),
            _ => Err(Status::unavailable(late.to_string())),
        }
    }

    /// A routed write (split, merge step) on the replica here, which must lead.
    async fn write_here(
        &self,
        group: u64,
        command: &Command,
        deadline: Instant,
    ) -> Result<ApplyResult, Status> {
        self.write_local(group, command, deadline, true)
            .await?
            .served_here(group)
    }

    /// The seeded bug `stale-leader-route`: a read goes to the first leader this node saw
    /// for the partition, however long ago. None when no leader was seen yet.
    async fn stale_leader_get(
        &self,
        message: &GetRequest,
        deadline: Instant,
    ) -> Result<Option<Response<GetResponse>>, Status> {
        let descriptor = self.known_map(deadline).await?.locate(&message.key).clone();
        let first = self.view(descriptor.id).and_then(|v| v.borrow().leader_id);
        let Some(first) = first else {
            return Ok(None);
        };
        let pinned = *self
            .first_leaders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(descriptor.id)
            .or_insert(first);
        let timeout = deadline.saturating_duration_since(Instant::now());
        if pinned == self.node_id {
            let Route::Local(value) = self
                .read_local(descriptor.id, &message.key, true, false, deadline, false)
                .await?
            else {
                return Ok(None);
            };
            let (found, value, revision) = match value {
                Some((value, revision)) => (true, value, revision),
                None => (false, Vec::new(), 0),
            };
            return Ok(Some(Response::new(GetResponse {
                header: Some(self.header(descriptor.id)),
                found,
                value,
                revision,
            })));
        }
        let Some(mut peer) = self.router.connection(pinned) else {
            return Ok(None);
        };
        let request = routed_request(message.clone(), &descriptor, timeout);
        peer.get(request).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None, "at most 8 digits");
    }

    /// A node that has not heard from its consistent core has no map to route by.
    fn service_without_a_map() -> (KvService, watch::Sender<Arc<PartitionMap>>) {
        let (events, _) = std::sync::mpsc::sync_channel(1);
        let (map_tx, map) = watch::channel(Arc::new(PartitionMap::default()));
        let service = KvService {
            node_id: 1,
            events,
            views: Arc::default(),
            map: map.clone(),
            core_replicas: vec![1],
            addresses: Vec::new(),
            router: Arc::new(RoutingClient::for_node(map, HashMap::new())),
            txn_clock: Arc::new(crate::server::txn::TxnClock::new(Default::default(), 500)),
            txn_bugs: Default::default(),
            txn_blockers: Default::default(),
            txn_stats: Default::default(),
            failpoints: Default::default(),
            request_timeout: Duration::from_millis(200),
            key_bytes_max: 64,
            value_bytes_max: 64,
            scan_limit_max: 10,
            stale_read: false,
            bugs: RouteBugs::default(),
            range_bugs: Default::default(),
            first_leaders: std::sync::Mutex::new(HashMap::new()),
            initial: Arc::default(),
            layout: String::new(),
            clock: Default::default(),
            clock_guard: Default::default(),
            lease_ttl_min_ms: 1_000,
        };
        (service, map_tx)
    }

    #[tokio::test]
    async fn a_request_made_before_the_map_is_known_waits_then_is_unavailable() {
        let (service, _map) = service_without_a_map();
        let started = Instant::now();
        let get = GetRequest {
            key: b"k".to_vec(),
            serializable: false,
            lease_read: false,
        };
        let status = service
            .get(Request::new(get))
            .await
            .expect_err("no map, no answer");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("partition map"), "{status}");
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
        let scan = ScanRequest {
            start: Vec::new(),
            end: Vec::new(),
            limit: 5,
            serializable: false,
        };
        let status = service.scan(Request::new(scan)).await.expect_err("no map");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn an_oversized_scan_limit_is_refused_naming_the_limit() {
        let (service, _map) = service_without_a_map();
        let scan = ScanRequest {
            start: Vec::new(),
            end: Vec::new(),
            limit: 11,
            serializable: false,
        };
        let status = service.scan(Request::new(scan)).await.expect_err("too big");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("scan_limit_max"), "{status}");
    }

    fn txn_of(ops: Vec<crate::proto::kv::micro_op::Op>) -> TxnRequest {
        TxnRequest {
            ops: ops
                .into_iter()
                .map(|op| crate::proto::kv::MicroOp { op: Some(op) })
                .collect(),
            isolation: 0,
            write_id: None,
        }
    }

    fn read_op(key: &str) -> crate::proto::kv::micro_op::Op {
        crate::proto::kv::micro_op::Op::Read(crate::proto::kv::TxnRead { key: key.into() })
    }

    #[tokio::test]
    async fn a_transaction_over_a_limit_or_with_an_unknown_level_is_refused_naming_it() {
        let (service, _map) = service_without_a_map();
        let refused = |message: TxnRequest| async {
            let status = service
                .txn(Request::new(message))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
            status.message().to_string()
        };
        let many = (0..=TXN_OPS_MAX).map(|_| read_op("k")).collect();
        assert!(refused(txn_of(many)).await.contains("txn_ops_max"));
        let keys = (0..=TXN_KEYS_MAX)
            .map(|i| read_op(&format!("k{i}")))
            .collect();
        assert!(refused(txn_of(keys)).await.contains("txn_keys_max"));
        let big = (0..3)
            .map(|i| {
                crate::proto::kv::micro_op::Op::Write(crate::proto::kv::TxnWrite {
                    key: format!("k{i}").into(),
                    value: vec![b'x'; 40],
                })
            })
            .collect();
        assert!(refused(txn_of(big)).await.contains("value_bytes_max"));
        let mut level = txn_of(vec![read_op("k")]);
        level.isolation = 9;
        assert!(refused(level).await.contains("isolation 9 is not a level"));
        assert!(
            refused(txn_of(vec![]))
                .await
                .contains("at least one micro-op")
        );
        let mut empty = txn_of(vec![read_op("k")]);
        empty.ops.push(crate::proto::kv::MicroOp { op: None });
        assert!(refused(empty).await.contains("micro-op 2 is empty"));
        let long_key = txn_of(vec![read_op(&"k".repeat(65))]);
        assert!(
            refused(long_key)
                .await
                .contains("micro-op 1: key is 65 bytes")
        );
    }

    #[tokio::test]
    async fn a_transaction_across_partitions_whose_participants_cannot_be_reached_is_unknown() {
        let (service, map) = service_without_a_map();
        let spec = crate::partitioning::LayoutSpec::from_flags(
            None,
            crate::partitioning::Scheme::Range,
            vec!["m".into()],
            vec![1],
        )
        .unwrap();
        let descriptors = spec.initial_descriptors();
        map.send(Arc::new(PartitionMap::new(descriptors).unwrap()))
            .unwrap();
        let status = service
            .txn(Request::new(txn_of(vec![read_op("a"), read_op("z")])))
            .await
            .expect_err("no participant answers");
        // A prepare may have been applied without its answer arriving: not "not applied".
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        assert!(status.message().contains("may or may not"), "{status}");
        assert_eq!(
            crate::client::effect(&status),
            crate::client::Effect::Unknown
        );
    }
}
