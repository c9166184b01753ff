//! The client API. Any node accepts any request: the leader serves it; a follower that
//! knows the leader forwards it once (marked with `faultline-forwarded`, so a request is
//! never forwarded twice); with no leader known, the request waits for an election
//! until its deadline.
//!
//! Status codes, so that a client can tell what happened to a write:
//! - `INVALID_ARGUMENT`: the request breaks a limit; nothing was done.
//! - `ABORTED`: definitely not applied (the node stopped leading before proposing it,
//!   or another leader's entry took its place). Safe to retry.
//! - `RESOURCE_EXHAUSTED`: the node's queue is full; not applied. Retry later.
//! - `UNAVAILABLE`: the deadline passed without an answer; a write may or may not
//!   have been applied (the outcome is unknown), a read returned nothing.

use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::driver::{Event, ReadOutcome, View, WriteOutcome};
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::kv_server::Kv;
use crate::proto::kv::{
    CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest, DeleteResponse, GetRequest,
    GetResponse, PutRequest, PutResponse, ResponseHeader, StatusRequest, StatusResponse, WriteId,
    compare_and_swap_request,
};
use crate::proto::raft::{self, ApplyResult, Command, command::Op, compare_and_swap::Expected};

const FORWARDED: &str = "faultline-forwarded";

pub struct KvService {
    pub node_id: u64,
    pub events: SyncSender<Event>,
    pub view: watch::Receiver<View>,
    pub leaders: HashMap<u64, KvClient<Channel>>,
    pub request_timeout: Duration,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// The seeded bug `stale-read`: every get is answered from this node's local state,
    /// without confirming leadership.
    pub stale_read: bool,
}

enum Route<T> {
    Local(T),
    Forward(KvClient<Channel>),
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

    fn header(&self) -> ResponseHeader {
        let view = self.view.borrow();
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

    /// Waits until the view changes (a leader is elected or leadership moves), or the
    /// deadline passes. `view` is the request's own receiver: `borrow_and_update` marks
    /// what it has seen, so this waits for something new.
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

    fn route_to<T>(&self, forwarded: bool, leader: u64) -> Result<Route<T>, Status> {
        if forwarded {
            return Err(Status::aborted(format!(
                "node {} is not the leader (leader hint: {leader}); not applied",
                self.node_id
            )));
        }
        match self.leaders.get(&leader) {
            Some(client) => Ok(Route::Forward(client.clone())),
            None => Err(Status::aborted(format!(
                "leader {leader} is not among this node's peers; not applied"
            ))),
        }
    }

    async fn write(
        &self,
        command: Command,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<ApplyResult>, Status> {
        let mut view = self.view.clone();
        loop {
            let leader = view.borrow_and_update().leader_id;
            match leader {
                Some(leader) if leader == self.node_id => {
                    let (reply, outcome) = oneshot::channel();
                    self.submit(Event::Write {
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
                        Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "the write was proposed but not committed before the deadline; it may or may not be applied",
                            ));
                        }
                    }
                }
                Some(leader) => return self.route_to(forwarded, leader),
                None => {
                    Self::wait_for_leader_change(&mut view, deadline, "the write was not applied")
                        .await?
                }
            }
        }
    }

    async fn read(
        &self,
        key: Vec<u8>,
        serializable: bool,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<Route<Option<(Vec<u8>, u64)>>, Status> {
        let mut view = self.view.clone();
        loop {
            let leader = view.borrow_and_update().leader_id;
            match leader {
                _ if serializable => {
                    let (reply, outcome) = oneshot::channel();
                    self.submit(Event::Read {
                        key,
                        serializable,
                        reply,
                    })?;
                    return match tokio::time::timeout_at(deadline, outcome).await {
                        Ok(Ok(ReadOutcome::Value(value))) => Ok(Route::Local(value)),
                        _ => Err(Status::unavailable(
                            "the node did not answer before the deadline",
                        )),
                    };
                }
                Some(leader) if leader == self.node_id => {
                    let (reply, outcome) = oneshot::channel();
                    self.submit(Event::Read {
                        key: key.clone(),
                        serializable,
                        reply,
                    })?;
                    match tokio::time::timeout_at(deadline, outcome).await {
                        Ok(Ok(ReadOutcome::Value(value))) => return Ok(Route::Local(value)),
                        Ok(Ok(ReadOutcome::NotLeader(_))) => {
                            Self::wait_for_leader_change(
                                &mut view,
                                deadline,
                                "the read was not served",
                            )
                            .await?
                        }
                        Ok(Ok(ReadOutcome::Dropped)) => {
                            return Err(Status::aborted(
                                "leadership was lost before the read was confirmed",
                            ));
                        }
                        Ok(Err(_)) | Err(_) => {
                            return Err(Status::unavailable(
                                "no quorum confirmed this leader before the deadline",
                            ));
                        }
                    }
                }
                Some(leader) => return self.route_to(forwarded, leader),
                None => {
                    Self::wait_for_leader_change(&mut view, deadline, "the read was not served")
                        .await?
                }
            }
        }
    }
}

fn forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}

fn forward_request<T>(message: T, deadline: Instant) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii"));
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

fn command(write_id: Option<WriteId>, op: Op) -> Command {
    let write_id = write_id.unwrap_or_default();
    Command {
        client_id: write_id.client_id,
        sequence: write_id.sequence,
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
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (deadline, forwarded) = (self.deadline(&request), forwarded(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        self.check_value(&message.value)?;
        let op = Op::Put(raft::Put {
            key: message.key.clone(),
            value: message.value.clone(),
        });
        match self
            .write(command(message.write_id.clone(), op), deadline, forwarded)
            .await?
        {
            Route::Local(result) => Ok(Response::new(PutResponse {
                header: Some(self.header()),
                revision: result.revision,
            })),
            Route::Forward(mut leader) => leader.put(forward_request(message, deadline)).await,
        }
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (deadline, forwarded) = (self.deadline(&request), forwarded(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        let serializable = message.serializable || self.stale_read;
        match self
            .read(message.key.clone(), serializable, deadline, forwarded)
            .await?
        {
            Route::Local(value) => {
                let (found, value, revision) = match value {
                    Some((value, revision)) => (true, value, revision),
                    None => (false, Vec::new(), 0),
                };
                Ok(Response::new(GetResponse {
                    header: Some(self.header()),
                    found,
                    value,
                    revision,
                }))
            }
            Route::Forward(mut leader) => leader.get(forward_request(message, deadline)).await,
        }
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (deadline, forwarded) = (self.deadline(&request), forwarded(&request));
        let message = request.into_inner();
        self.check_key(&message.key)?;
        let op = Op::Delete(raft::Delete {
            key: message.key.clone(),
        });
        match self
            .write(command(message.write_id.clone(), op), deadline, forwarded)
            .await?
        {
            Route::Local(result) => Ok(Response::new(DeleteResponse {
                header: Some(self.header()),
                deleted: result.succeeded,
                revision: result.revision,
            })),
            Route::Forward(mut leader) => leader.delete(forward_request(message, deadline)).await,
        }
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let (deadline, forwarded) = (self.deadline(&request), forwarded(&request));
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
        match self
            .write(command(message.write_id.clone(), op), deadline, forwarded)
            .await?
        {
            Route::Local(result) => Ok(Response::new(CompareAndSwapResponse {
                header: Some(self.header()),
                succeeded: result.succeeded,
                revision: result.revision,
                found: result.found,
                current_value: result.current_value,
            })),
            Route::Forward(mut leader) => {
                leader
                    .compare_and_swap(forward_request(message, deadline))
                    .await
            }
        }
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
}
