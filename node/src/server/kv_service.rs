//! The client API. Any node accepts any request and acts as its coordinator: it looks the
//! key up in its partition map and serves the request from the partition's replica here
//! if that replica leads, or forwards it to the partition's leader (once: a forwarded
//! request carries `faultline-forwarded`, the partition and the epoch it was routed at,
//! and is never forwarded again). A replica that should not serve a forwarded request
//! says why with a typed refusal (`NotLeader`, `EpochNotMatch`, `KeyNotInRange`,
//! `PartitionNotHere`, in the details of an ABORTED status); the coordinator corrects
//! its route from it and tries again, a bounded number of times. With no leader known,
//! a request waits for an election until its deadline.
//!
//! Status codes, so that a client can tell what happened to a write:
//! - `INVALID_ARGUMENT`: the request breaks a limit; nothing was done.
//! - `ABORTED`: definitely not applied (the node stopped leading before proposing it,
//!   another leader's entry took its place, or it was routed to the wrong replica).
//!   Safe to retry.
//! - `RESOURCE_EXHAUSTED`: the node's queue is full; not applied. Retry later.
//! - `UNAVAILABLE`: the deadline passed without an answer; a write may or may not
//!   have been applied (the outcome is unknown), a read returned nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::driver::{Event, GetValue, ReadOutcome, ScanItems, View, WriteOutcome};
use crate::partitioning::convert::{from_wire, to_wire};
use crate::partitioning::{
    EpochCommand, KeySpan, PartitionMap, RangeDescriptor, RangeEpoch, RouteError, check_request,
};
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::kv_server::Kv;
use crate::proto::kv::{
    BatchGetRequest, BatchGetResponse, BatchGetResult, CompareAndSwapRequest,
    CompareAndSwapResponse, DeleteRequest, DeleteResponse, EpochNotMatchError,
    GetPartitionMapRequest, GetPartitionMapResponse, GetRequest, GetResponse, KeyNotInRangeError,
    KeyValue, NotLeaderError, PartitionNotHereError, PutRequest, PutResponse,
    ReportPartitionRequest, ReportPartitionResponse, ResponseHeader, RouteErrorDetail, ScanRequest,
    ScanResponse, StatusRequest, StatusResponse, WriteId, compare_and_swap_request,
    route_error_detail,
};
use crate::proto::raft::{
    self, ApplyResult, Command, CoreCommand, PartitionReport, command::Op,
    compare_and_swap::Expected, core_command,
};

const FORWARDED: &str = "faultline-forwarded";
const PARTITION: &str = "faultline-partition";
const EPOCH: &str = "faultline-epoch";
/// Routes a coordinator tries for one request before giving up (each correction is one).
const ROUTE_ATTEMPTS_MAX: usize = 4;
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
    /// The Raft groups hosted here.
    pub views: Arc<HashMap<u64, watch::Receiver<View>>>,
    pub map: watch::Receiver<Arc<PartitionMap>>,
    pub core_replicas: Vec<u64>,
    /// Clients of every other node.
    pub peers: HashMap<u64, KvClient<Channel>>,
    pub request_timeout: Duration,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub scan_limit_max: u32,
    /// The seeded bug `stale-read`: every get is answered from this node's local state,
    /// without confirming leadership.
    pub stale_read: bool,
    pub bugs: RouteBugs,
    /// For `stale-leader-route`: the first leader seen per partition.
    pub first_leaders: std::sync::Mutex<HashMap<u64, u64>>,
}

/// Where a forwarded request was routed: the partition and the epoch the coordinator
/// saw. None for a request straight from a client.
#[derive(Clone, Copy, Debug)]
struct Routed {
    partition: u64,
    epoch: RangeEpoch,
}

fn routed<T>(request: &Request<T>) -> Option<Routed> {
    let metadata = request.metadata();
    metadata.get(FORWARDED)?;
    let partition = metadata.get(PARTITION)?.to_str().ok()?.parse().ok()?;
    let (version, conf_version) = metadata.get(EPOCH)?.to_str().ok()?.split_once('/')?;
    Some(Routed {
        partition,
        epoch: RangeEpoch {
            version: version.parse().ok()?,
            conf_version: conf_version.parse().ok()?,
        },
    })
}

fn forward_request<T>(message: T, deadline: Instant, to: &RangeDescriptor) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(FORWARDED, "1".parse().expect("ascii"));
    metadata.insert(
        PARTITION,
        to.id.to_string().parse().expect("digits are ascii"),
    );
    metadata.insert(
        EPOCH,
        format!("{}/{}", to.epoch.version, to.epoch.conf_version)
            .parse()
            .expect("digits are ascii"),
    );
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// A refusal that says how to route again, as an ABORTED status (not applied).
fn route_status(error: &RouteError) -> Status {
    let detail = match error {
        RouteError::NotLeader { partition, hint } => {
            route_error_detail::Error::NotLeader(NotLeaderError {
                partition: *partition,
                leader_hint: hint.unwrap_or(0),
            })
        }
        RouteError::EpochNotMatch { current, .. } => {
            route_error_detail::Error::EpochNotMatch(EpochNotMatchError {
                current: current
                    .iter()
                    .map(|d| to_wire(d, Default::default()))
                    .collect(),
            })
        }
        RouteError::KeyNotInRange { key, descriptor } => {
            route_error_detail::Error::KeyNotInRange(KeyNotInRangeError {
                key: key.clone(),
                descriptor: Some(to_wire(descriptor, Default::default())),
            })
        }
        RouteError::PartitionNotHere { partition } => {
            route_error_detail::Error::PartitionNotHere(PartitionNotHereError {
                partition: *partition,
            })
        }
    };
    let bytes = RouteErrorDetail {
        error: Some(detail),
    }
    .encode_to_vec();
    Status::with_details(
        tonic::Code::Aborted,
        format!("{error}; not applied"),
        bytes.into(),
    )
}

/// The correction a refusal carries, if it is one.
enum Correction {
    /// Send it to this node next.
    TryNode(u64),
    /// The map is out of date: look the key up again.
    Relocate,
}

fn correction(status: &Status) -> Option<Correction> {
    if status.code() != tonic::Code::Aborted || status.details().is_empty() {
        return None;
    }
    let detail = RouteErrorDetail::decode(status.details()).ok()?;
    match detail.error? {
        route_error_detail::Error::NotLeader(e) if e.leader_hint != 0 => {
            Some(Correction::TryNode(e.leader_hint))
        }
        route_error_detail::Error::NotLeader(_) => None,
        route_error_detail::Error::EpochNotMatch(_)
        | route_error_detail::Error::KeyNotInRange(_)
        | route_error_detail::Error::PartitionNotHere(_) => Some(Correction::Relocate),
    }
}

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

impl KvService {
    fn deadline<T>(&self, request: &Request<T>) -> Instant {
        let asked = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let timeout = asked.map_or(self.request_timeout, |t| t.min(self.request_timeout));
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

    fn header(&self, group: u64) -> ResponseHeader {
        let view = self
            .views
            .get(&group)
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

    fn locate(&self, key: &[u8]) -> RangeDescriptor {
        self.map.borrow().locate(key).clone()
    }

    /// For a forwarded request: the replica's own check (epoch, key, partition here).
    /// Leadership is checked when the request reaches the group.
    fn check_routed(
        &self,
        routed: Routed,
        key: &[u8],
        command: EpochCommand,
    ) -> Result<RangeDescriptor, Status> {
        if !self.views.contains_key(&routed.partition) {
            return Err(route_status(&RouteError::PartitionNotHere {
                partition: routed.partition,
            }));
        }
        let local = self
            .map
            .borrow()
            .get(routed.partition)
            .cloned()
            .ok_or_else(|| {
                route_status(&RouteError::PartitionNotHere {
                    partition: routed.partition,
                })
            })?;
        check_request(&local, true, routed.epoch, key, command).map_err(|e| route_status(&e))?;
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

    /// The node to forward a request for `descriptor` to when this node has no replica
    /// of it: the reported leader, else the replicas in turn.
    fn remote_target(descriptor: &RangeDescriptor, attempt: usize) -> u64 {
        match descriptor.leader {
            Some(leader) if attempt == 0 => leader,
            _ => descriptor.replicas[attempt % descriptor.replicas.len()],
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
        let Some(view) = self.views.get(&group) else {
            return Err(route_status(&RouteError::PartitionNotHere {
                partition: group,
            }));
        };
        let mut view = view.clone();
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
                        Ok(Ok(WriteOutcome::Applied(result))) => {
                            if result.stale_sequence {
                                // An earlier attempt may have been applied before the later
                                // sequence was: the session table no longer knows. `Unknown`,
                                // not a refusal: a client must not read it as "not applied".
                                return Err(Status::unknown(
                                    "a later write of this client_id was applied already; whether this one was is no longer known",
                                ));
                            }
                            return Ok(Route::Local(result));
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
                            return Err(route_status(&RouteError::PartitionNotHere {
                                partition: group,
                            }));
                        }
                        Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "the write was proposed but not committed before the deadline; it may or may not be applied",
                            ));
                        }
                    }
                }
                Some(leader) if forwarded => {
                    return Err(route_status(&RouteError::NotLeader {
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

    async fn read_local(
        &self,
        group: u64,
        key: &[u8],
        serializable: bool,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<GetValue>, Status> {
        self.read_here(group, serializable, deadline, forwarded, "read", |reply| {
            Event::Read {
                group,
                key: key.to_vec(),
                serializable,
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
        let Some(view) = self.views.get(&group) else {
            return Err(route_status(&RouteError::PartitionNotHere {
                partition: group,
            }));
        };
        let not_served = format!("the {what} was not served");
        let mut view = view.clone();
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
                            return Err(route_status(&RouteError::PartitionNotHere {
                                partition: group,
                            }));
                        }
                        Ok(Ok(ReadOutcome::NotLeader(_))) | Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "no quorum confirmed this leader before the deadline",
                            ));
                        }
                    }
                }
                Some(leader) if forwarded => {
                    return Err(route_status(&RouteError::NotLeader {
                        partition: group,
                        hint: Some(leader),
                    }));
                }
                Some(leader) => return Ok(Route::Forward(leader)),
                None => Self::wait_for_leader_change(&mut view, deadline, &not_served).await?,
            }
        }
    }

    fn peer(&self, node: u64) -> Result<KvClient<Channel>, Status> {
        self.peers.get(&node).cloned().ok_or_else(|| {
            Status::aborted(format!(
                "node {node} is not among this node's peers; not applied"
            ))
        })
    }

    /// Runs a coordinator's request: the replica here if it leads, else the leader it
    /// names, else another node; each typed refusal corrects the next attempt. `local`
    /// serves on this node's replica, `remote` forwards to a node.
    async fn coordinate<T, L, LF, R, RF>(
        &self,
        key: &[u8],
        mut local: L,
        mut remote: R,
    ) -> Result<(u64, T), Status>
    where
        L: FnMut(u64) -> LF,
        LF: std::future::Future<Output = Result<Route<T>, Status>>,
        R: FnMut(u64, RangeDescriptor) -> RF,
        RF: std::future::Future<Output = Result<T, Status>>,
    {
        let mut descriptor = self.locate(key);
        let mut next: Option<u64> = None;
        let mut last_error = None;
        for attempt in 0..ROUTE_ATTEMPTS_MAX {
            let target = match next.take() {
                Some(node) => node,
                None if self.views.contains_key(&descriptor.id) => {
                    match local(descriptor.id).await? {
                        Route::Local(value) => return Ok((descriptor.id, value)),
                        Route::Forward(leader) => leader,
                    }
                }
                None => Self::remote_target(&descriptor, attempt),
            };
            if target == self.node_id {
                match local(descriptor.id).await? {
                    Route::Local(value) => return Ok((descriptor.id, value)),
                    Route::Forward(leader) => {
                        next = Some(leader);
                        continue;
                    }
                }
            }
            match remote(target, descriptor.clone()).await {
                Ok(value) => return Ok((descriptor.id, value)),
                Err(status) => {
                    match correction(&status) {
                        Some(Correction::TryNode(node)) => next = Some(node),
                        Some(Correction::Relocate) => descriptor = self.locate(key),
                        None => return Err(status),
                    }
                    last_error = Some(status);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Status::aborted("the request could not be routed to a leader; not applied")
        }))
    }

    /// Scans one partition's part of `[start, end)`.
    async fn scan_partition(
        &self,
        descriptor: &RangeDescriptor,
        start: &[u8],
        end: &[u8],
        limit: usize,
        serializable: bool,
        deadline: Instant,
    ) -> Result<ScanItems, Status> {
        let group = descriptor.id;
        let request = ScanRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            limit: limit as u32,
            serializable,
        };
        if self.views.contains_key(&group) {
            let range = ScanRange {
                start,
                end,
                limit,
                serializable,
            };
            match self.scan_local(group, &range, deadline, false).await? {
                Route::Local(found) => return Ok(found),
                Route::Forward(leader) => {
                    let response = self
                        .peer(leader)?
                        .scan(forward_request(request, deadline, descriptor))
                        .await?
                        .into_inner();
                    return Ok(items_of(response));
                }
            }
        }
        let mut last = None;
        for attempt in 0..descriptor.replicas.len() {
            let target = Self::remote_target(descriptor, attempt);
            match self
                .peer(target)?
                .scan(forward_request(request.clone(), deadline, descriptor))
                .await
            {
                Ok(response) => return Ok(items_of(response.into_inner())),
                Err(status) if correction(&status).is_some() => last = Some(status),
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no replica answered the scan")))
    }
}

fn items_of(response: ScanResponse) -> ScanItems {
    let items = response
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.revision))
        .collect();
    (items, response.more)
}

fn command(write_id: Option<WriteId>, op: Op) -> Command {
    let write_id = write_id.unwrap_or_default();
    Command {
        client_id: write_id.client_id,
        sequence: write_id.sequence,
        op: Some(op),
    }
}

/// The part of `[start, end)` inside a range span (bucket spans keep it whole).
fn clip(span: &KeySpan, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match span {
        KeySpan::Range { start: s, end: e } => {
            let from = if s.as_slice() > start {
                s.clone()
            } else {
                start.to_vec()
            };
            let to = match (e.is_empty(), end.is_empty()) {
                (true, _) => end.to_vec(),
                (false, true) => e.clone(),
                (false, false) => e.as_slice().min(end).to_vec(),
            };
            (from, to)
        }
        KeySpan::Bucket { .. } => (start.to_vec(), end.to_vec()),
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
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        self.check_value(&message.value)?;
        let op = Op::Put(raft::Put {
            key: message.key.clone(),
            value: message.value.clone(),
        });
        let command = command(message.write_id.clone(), op);
        if let Some(routed) = routed {
            self.check_routed(routed, &message.key, EpochCommand::Write)?;
            return match self
                .write_local(routed.partition, &command, deadline, true)
                .await?
            {
                Route::Local(result) => Ok(Response::new(PutResponse {
                    header: Some(self.header(routed.partition)),
                    revision: result.revision,
                })),
                Route::Forward(_) => unreachable!("a forwarded write is never forwarded again"),
            };
        }
        let (group, result) = self
            .coordinate(
                &message.key,
                |group| self.write_local(group, &command, deadline, false),
                |node, descriptor| {
                    let message = message.clone();
                    async move {
                        let response = self
                            .peer(node)?
                            .put(forward_request(message, deadline, &descriptor))
                            .await?
                            .into_inner();
                        Ok(ApplyResult {
                            revision: response.revision,
                            succeeded: true,
                            ..Default::default()
                        })
                    }
                },
            )
            .await?;
        Ok(Response::new(PutResponse {
            header: Some(self.header(group)),
            revision: result.revision,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed(&request));
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
            self.check_routed(routed, &message.key, EpochCommand::Read)?;
            // The seeded bug: a forwarded read is served from local state, whatever
            // this replica's role.
            let serializable = serializable || self.bugs.stale_leader_route;
            return match self
                .read_local(routed.partition, &message.key, serializable, deadline, true)
                .await?
            {
                Route::Local(value) => Ok(reply(routed.partition, value)),
                Route::Forward(_) => unreachable!("a forwarded read is never forwarded again"),
            };
        }
        if self.bugs.stale_leader_route {
            // The seeded bug: keep sending reads to the first leader seen.
            let descriptor = self.locate(&message.key);
            let first = self
                .views
                .get(&descriptor.id)
                .and_then(|v| v.borrow().leader_id);
            let pinned = first.map(|leader| {
                *self
                    .first_leaders
                    .lock()
                    .expect("first leaders lock")
                    .entry(descriptor.id)
                    .or_insert(leader)
            });
            match pinned {
                Some(node) if node == self.node_id => {
                    let value = match self
                        .read_local(descriptor.id, &message.key, true, deadline, false)
                        .await?
                    {
                        Route::Local(value) => value,
                        Route::Forward(_) => unreachable!("a serializable read is served here"),
                    };
                    return Ok(reply(descriptor.id, value));
                }
                Some(node) => {
                    return self
                        .peer(node)?
                        .get(forward_request(message, deadline, &descriptor))
                        .await;
                }
                None => {}
            }
        }
        let (group, value) = self
            .coordinate(
                &message.key,
                |group| self.read_local(group, &message.key, serializable, deadline, false),
                |node, descriptor| {
                    let message = message.clone();
                    async move {
                        let response = self
                            .peer(node)?
                            .get(forward_request(message, deadline, &descriptor))
                            .await?
                            .into_inner();
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
        let (deadline, routed) = (self.deadline(&request), routed(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        let op = Op::Delete(raft::Delete {
            key: message.key.clone(),
        });
        let command = command(message.write_id.clone(), op);
        let reply = |group: u64, result: ApplyResult| {
            Response::new(DeleteResponse {
                header: Some(self.header(group)),
                deleted: result.succeeded,
                revision: result.revision,
            })
        };
        if let Some(routed) = routed {
            self.check_routed(routed, &message.key, EpochCommand::Write)?;
            return match self
                .write_local(routed.partition, &command, deadline, true)
                .await?
            {
                Route::Local(result) => Ok(reply(routed.partition, result)),
                Route::Forward(_) => unreachable!("a forwarded write is never forwarded again"),
            };
        }
        let (group, result) = self
            .coordinate(
                &message.key,
                |group| self.write_local(group, &command, deadline, false),
                |node, descriptor| {
                    let message = message.clone();
                    async move {
                        let response = self
                            .peer(node)?
                            .delete(forward_request(message, deadline, &descriptor))
                            .await?
                            .into_inner();
                        Ok(ApplyResult {
                            succeeded: response.deleted,
                            revision: response.revision,
                            ..Default::default()
                        })
                    }
                },
            )
            .await?;
        Ok(reply(group, result))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed(&request));
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
        let reply = |group: u64, result: ApplyResult| {
            Response::new(CompareAndSwapResponse {
                header: Some(self.header(group)),
                succeeded: result.succeeded,
                revision: result.revision,
                found: result.found,
                current_value: result.current_value,
            })
        };
        if let Some(routed) = routed {
            self.check_routed(routed, &message.key, EpochCommand::Write)?;
            return match self
                .write_local(routed.partition, &command, deadline, true)
                .await?
            {
                Route::Local(result) => Ok(reply(routed.partition, result)),
                Route::Forward(_) => unreachable!("a forwarded write is never forwarded again"),
            };
        }
        let (group, result) = self
            .coordinate(
                &message.key,
                |group| self.write_local(group, &command, deadline, false),
                |node, descriptor| {
                    let message = message.clone();
                    async move {
                        let response = self
                            .peer(node)?
                            .compare_and_swap(forward_request(message, deadline, &descriptor))
                            .await?
                            .into_inner();
                        Ok(ApplyResult {
                            succeeded: response.succeeded,
                            revision: response.revision,
                            found: response.found,
                            current_value: response.current_value,
                            stale_sequence: false,
                        })
                    }
                },
            )
            .await?;
        Ok(reply(group, result))
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
            Ok(Ok(status)) => Ok(Response::new(status)),
            _ => Err(Status::unavailable(
                "the node did not answer before the deadline",
            )),
        }
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (deadline, routed) = (self.deadline(&request), routed(&request));
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
        if let Some(routed) = routed {
            // One partition's part, for a coordinator elsewhere.
            self.check_routed_scan(routed, &message.start)?;
            let range = ScanRange {
                start: &message.start,
                end: &message.end,
                limit,
                serializable,
            };
            return match self
                .scan_local(routed.partition, &range, deadline, true)
                .await?
            {
                Route::Local((items, more)) => Ok(Response::new(ScanResponse {
                    header: Some(self.header(routed.partition)),
                    items: items
                        .into_iter()
                        .map(|(key, value, revision)| KeyValue {
                            key,
                            value,
                            revision,
                        })
                        .collect(),
                    more,
                    partitions: vec![routed.partition],
                })),
                Route::Forward(_) => unreachable!("a forwarded scan is never forwarded again"),
            };
        }
        let covering: Vec<RangeDescriptor> = self
            .map
            .borrow()
            .covering(&message.start, &message.end)
            .into_iter()
            .cloned()
            .collect();
        let hashed = covering
            .first()
            .is_some_and(|d| matches!(d.span, KeySpan::Bucket { .. }));
        let mut items = Vec::new();
        let mut more = false;
        let mut partitions = Vec::new();
        if hashed {
            // Every bucket may hold keys of the range: ask them all, merge in key order.
            let scans = covering.iter().map(|d| {
                self.scan_partition(
                    d,
                    &message.start,
                    &message.end,
                    limit,
                    serializable,
                    deadline,
                )
            });
            for (descriptor, found) in covering.iter().zip(futures_join_all(scans).await) {
                let (part, part_more) = found?;
                more |= part_more;
                items.extend(part);
                partitions.push(descriptor.id);
            }
            items.sort_by(|a, b| a.0.cmp(&b.0));
            if items.len() > limit {
                items.truncate(limit);
                more = true;
            }
        } else {
            for (number, descriptor) in covering.iter().enumerate() {
                let (mut from, to) = clip(&descriptor.span, &message.start, &message.end);
                if number > 0 && self.bugs.scan_skips_boundary {
                    // The seeded bug: start past the partition's first key.
                    from.push(0);
                }
                let (part, part_more) = self
                    .scan_partition(
                        descriptor,
                        &from,
                        &to,
                        limit - items.len(),
                        serializable,
                        deadline,
                    )
                    .await?;
                items.extend(part);
                partitions.push(descriptor.id);
                if part_more || items.len() >= limit {
                    more = part_more || number + 1 < covering.len();
                    break;
                }
            }
        }
        Ok(Response::new(ScanResponse {
            header: Some(ResponseHeader {
                node_id: self.node_id,
                ..Default::default()
            }),
            items: items
                .into_iter()
                .map(|(key, value, revision)| KeyValue {
                    key,
                    value,
                    revision,
                })
                .collect(),
            more,
            partitions,
        }))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
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
            });
            get.set_timeout(timeout);
            self.get(get)
        });
        let mut results = Vec::with_capacity(message.keys.len());
        for got in futures_join_all(gets).await {
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
            .views
            .get(&crate::partitioning::CORE_GROUP)
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
        }))
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
        let Some(view) = self.views.get(&crate::partitioning::CORE_GROUP) else {
            return Err(route_status(&RouteError::PartitionNotHere {
                partition: crate::partitioning::CORE_GROUP,
            }));
        };
        let leader = view.borrow().leader_id;
        if leader != Some(self.node_id) {
            return Err(route_status(&RouteError::NotLeader {
                partition: crate::partitioning::CORE_GROUP,
                hint: leader,
            }));
        }
        let (reply, outcome) = oneshot::channel();
        self.submit(Event::CoreWrite {
            command: CoreCommand {
                op: Some(core_command::Op::Report(PartitionReport {
                    descriptors: message.descriptors,
                    term: message.term,
                    reads_per_sec: message.reads_per_sec,
                    writes_per_sec: message.writes_per_sec,
                })),
            },
            reply,
        })?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(WriteOutcome::Applied(_))) => Ok(Response::new(ReportPartitionResponse {})),
            _ => Err(Status::unavailable("the report was not committed in time")),
        }
    }
}

impl KvService {
    /// A forwarded scan's partition must be here and current; its keys are the
    /// coordinator's clip of the partition's span.
    fn check_routed_scan(&self, routed: Routed, start: &[u8]) -> Result<(), Status> {
        let local = self.check_routed_descriptor(routed)?;
        if let KeySpan::Range { .. } = local.span
            && !local.contains(start)
        {
            return Err(route_status(&RouteError::KeyNotInRange {
                key: start.to_vec(),
                descriptor: Box::new(local),
            }));
        }
        Ok(())
    }

    fn check_routed_descriptor(&self, routed: Routed) -> Result<RangeDescriptor, Status> {
        let local = self.map.borrow().get(routed.partition).cloned();
        match local {
            Some(local) if self.views.contains_key(&routed.partition) => {
                if crate::partitioning::epoch::matches(
                    EpochCommand::Read,
                    routed.epoch,
                    local.epoch,
                ) {
                    Ok(local)
                } else {
                    Err(route_status(&RouteError::EpochNotMatch {
                        requested: routed.epoch,
                        current: vec![local],
                    }))
                }
            }
            _ => Err(route_status(&RouteError::PartitionNotHere {
                partition: routed.partition,
            })),
        }
    }
}

/// Runs futures concurrently and collects their outputs in order (tokio has no join_all
/// for a dynamic number of borrowed futures).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in outputs.iter_mut().zip(pinned.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
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

    #[test]
    fn a_refusal_carries_its_correction_and_other_errors_carry_none() {
        let status = route_status(&RouteError::NotLeader {
            partition: 3,
            hint: Some(2),
        });
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(matches!(correction(&status), Some(Correction::TryNode(2))));
        let no_hint = route_status(&RouteError::NotLeader {
            partition: 3,
            hint: None,
        });
        assert!(correction(&no_hint).is_none());
        let moved = route_status(&RouteError::PartitionNotHere { partition: 3 });
        assert!(matches!(correction(&moved), Some(Correction::Relocate)));
        assert!(correction(&Status::unavailable("unknown outcome")).is_none());
        assert!(correction(&Status::aborted("superseded")).is_none());
    }

    #[test]
    fn a_scan_is_clipped_to_each_range() {
        let span = KeySpan::Range {
            start: b"g".to_vec(),
            end: b"p".to_vec(),
        };
        assert_eq!(clip(&span, b"a", b""), (b"g".to_vec(), b"p".to_vec()));
        assert_eq!(clip(&span, b"h", b"k"), (b"h".to_vec(), b"k".to_vec()));
        let last = KeySpan::Range {
            start: b"p".to_vec(),
            end: Vec::new(),
        };
        assert_eq!(clip(&last, b"a", b""), (b"p".to_vec(), Vec::new()));
    }
}
