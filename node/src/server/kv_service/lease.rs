//! The lease and lock RPCs (node/src/cluster/README.md). A lease lives in one partition,
//! the one holding the key it was granted with; its id names that partition, so every
//! later call is routed by id. Grants, revokes, locks and unlocks are entries of the
//! partition's log; keep-alives are not (see `cluster::lease`): the partition's leader
//! renews the lease on its own clock and answers once a quorum confirms it still leads.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{KvService, Route, with_message};
use crate::client::Target;
use crate::client::router::prepare;
use crate::client::wire::{RoutedAt, routed_at};
use crate::cluster::lease::lease_group;
use crate::partitioning::EpochCommand;
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};
use crate::proto::raft::{self, ApplyResult, Command, command::Op};
use crate::server::driver::{Event, LeaseLife};

/// Where lock `name` is kept: an ordinary key, readable (it holds the holder's lease id).
pub fn lock_key(name: &str) -> Vec<u8> {
    format!("lock/{name}").into_bytes()
}

/// Keep-alive answers a stream buffers before it stops reading requests (backpressure on
/// a client that does not read its answers).
const KEEP_ALIVE_QUEUE: usize = 16;

/// How often a lock request that found the lock held asks again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

/// A lease-table refusal (the lease is gone, or a stale fencing token) as the client sees
/// it: NOT_FOUND for a lease that is gone, FAILED_PRECONDITION otherwise.
pub(super) fn refused(result: &ApplyResult) -> Status {
    if result.refused.contains("not found") {
        Status::not_found(result.refused.clone())
    } else {
        Status::failed_precondition(result.refused.clone())
    }
}

fn lease_gone(id: u64) -> Status {
    Status::not_found(format!(
        "lease {id} not found: it expired or was revoked (grant a new one)"
    ))
}

impl KvService {
    /// A request about lease `id`, from its partition's replica here if that leads, else
    /// through the routing client to the partition's leader.
    async fn on_lease_partition<T, L, LF, R, RF>(
        &self,
        id: u64,
        deadline: Instant,
        local: L,
        remote: R,
    ) -> Result<T, Status>
    where
        L: FnOnce(u64) -> LF,
        LF: Future<Output = Result<Route<T>, Status>>,
        R: FnMut(KvClient<Channel>, Request<()>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let group = lease_group(id);
        let mut remote = remote;
        if self.hosts(group) {
            match local(group).await {
                Ok(Route::Local(value)) => return Ok(value),
                Ok(Route::Forward(leader)) => self.router.hint_leader(group, leader),
                Err(status) => return Err(status),
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.router
            .call(Target::Partition(group), timeout, |client, to, left| {
                remote(client, prepare((), to.as_ref(), left))
            })
            .await
            .map(|(_, value)| value)
            .map_err(|status| {
                if status.code() == tonic::Code::NotFound
                    || status.message().contains("no partition")
                {
                    lease_gone(id)
                } else {
                    status
                }
            })
    }

    /// A lease entry (revoke) for lease `id`'s partition.
    async fn lease_write(
        &self,
        routed: Option<RoutedAt>,
        id: u64,
        command: &Command,
        deadline: Instant,
        remote: impl FnMut(
            KvClient<Channel>,
            Request<()>,
        ) -> Pin<Box<dyn Future<Output = Result<ApplyResult, Status>> + Send>>,
    ) -> Result<ApplyResult, Status> {
        if let Some(routed) = routed {
            let local = self.check_routed(routed, None, EpochCommand::Write)?;
            return self.write_here(local.id, command, deadline).await;
        }
        self.on_lease_partition(
            id,
            deadline,
            |group| self.write_local(group, command, deadline, false),
            remote,
        )
        .await
    }

    async fn renew_once(
        &self,
        routed: Option<RoutedAt>,
        id: u64,
        deadline: Instant,
    ) -> Result<LeaseKeepAliveResponse, Status> {
        let renew_here = |group: u64, forwarded: bool| {
            self.read_here(
                group,
                false,
                deadline,
                forwarded,
                "keep-alive",
                move |reply| Event::LeaseRenew { group, id, reply },
            )
        };
        let ttl = if let Some(routed) = routed {
            let local = self.check_routed(routed, None, EpochCommand::Read)?;
            renew_here(local.id, true).await?.served_here(local.id)?
        } else {
            let message = LeaseKeepAliveRequest { id };
            self.on_lease_partition(
                id,
                deadline,
                |group| renew_here(group, false),
                |mut peer, routing| {
                    let request = with_message(routing, message);
                    async move {
                        peer.lease_renew(request)
                            .await
                            .map(|r| Some(r.into_inner().ttl_ms))
                    }
                },
            )
            .await?
        };
        let ttl_ms = ttl.ok_or_else(|| lease_gone(id))?;
        Ok(LeaseKeepAliveResponse {
            header: Some(self.header(lease_group(id))),
            id,
            ttl_ms,
        })
    }

    pub(super) async fn lease_grant_rpc(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        if !message.key.is_empty() {
            self.check_key(&message.key)?;
        }
        let (ttl_ms, note) = if message.ttl_ms < self.lease_ttl_min_ms {
            (
                self.lease_ttl_min_ms,
                format!(
                    "TTL {} ms is below the minimum of {} ms (three election timeouts): \
                     granted the minimum",
                    message.ttl_ms, self.lease_ttl_min_ms
                ),
            )
        } else {
            (message.ttl_ms, String::new())
        };
        let command = Command {
            op: Some(Op::LeaseGrant(raft::LeaseGrant { ttl_ms })),
            ..Default::default()
        };
        // The routing key: the first partition holds the empty key's neighbour.
        let key = if message.key.is_empty() {
            vec![0]
        } else {
            message.key.clone()
        };
        let (group, result) = self
            .write(
                routed,
                &key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.lease_grant(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: true,
                        lease: response.id,
                        ..Default::default()
                    })
                },
            )
            .await?;
        if !result.refused.is_empty() {
            return Err(refused(&result));
        }
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.header(group)),
            id: result.lease,
            ttl_ms,
            note,
        }))
    }

    pub(super) async fn lease_revoke_rpc(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let id = message.id;
        let command = Command {
            op: Some(Op::LeaseRevoke(raft::LeaseRevoke { id, expired: false })),
            ..Default::default()
        };
        let result = self
            .lease_write(routed, id, &command, deadline, |mut peer, routing| {
                let request = with_message(routing, message);
                Box::pin(async move {
                    let response = peer.lease_revoke(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: true,
                        deleted_keys: response.deleted_keys,
                        ..Default::default()
                    })
                })
            })
            .await?;
        if !result.refused.is_empty() {
            return Err(refused(&result));
        }
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.header(lease_group(id))),
            deleted_keys: result.deleted_keys,
        }))
    }

    pub(super) async fn lease_renew_rpc(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let id = request.into_inner().id;
        self.renew_once(routed, id, deadline)
            .await
            .map(Response::new)
    }

    /// Each keep-alive of the stream goes to the lease's partition leader as one
    /// `LeaseRenew` (through this node's routing client, which may route it back here).
    /// The stream ends at the first error: a lease that is gone ends it with NOT_FOUND.
    pub(super) fn lease_keep_alive_rpc(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        self.serving()?;
        let mut incoming = request.into_inner();
        let router = self.router.clone();
        let timeout = self.request_timeout;
        let (tx, rx) = tokio::sync::mpsc::channel(KEEP_ALIVE_QUEUE);
        tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let result = match next {
                    Ok(ask) => router.lease_renew(ask.id, timeout).await,
                    Err(status) => Err(status),
                };
                let end = result.is_err();
                if tx.send(result).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    pub(super) async fn lease_time_to_live_rpc(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let id = message.id;
        let ask_here = |group: u64, forwarded: bool| {
            self.read_here(
                group,
                false,
                deadline,
                forwarded,
                "lease query",
                move |reply| Event::LeaseTimeToLive { group, id, reply },
            )
        };
        let life: Option<LeaseLife> = if let Some(routed) = routed {
            let local = self.check_routed(routed, None, EpochCommand::Read)?;
            ask_here(local.id, true).await?.served_here(local.id)?
        } else {
            let forward = message;
            self.on_lease_partition(
                id,
                deadline,
                |group| ask_here(group, false),
                |mut peer, routing| {
                    let request = with_message(routing, forward);
                    async move {
                        let response = peer.lease_time_to_live(request).await?.into_inner();
                        Ok(Some(LeaseLife {
                            remaining_ms: response.ttl_ms,
                            granted_ttl_ms: response.granted_ttl_ms,
                            keys: response.keys,
                        }))
                    }
                },
            )
            .await?
        };
        let life = life.ok_or_else(|| lease_gone(id))?;
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(self.header(lease_group(id))),
            id,
            ttl_ms: life.remaining_ms,
            granted_ttl_ms: life.granted_ttl_ms,
            keys: if message.keys { life.keys } else { Vec::new() },
        }))
    }

    fn check_lock_name(&self, name: &str) -> Result<Vec<u8>, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("a lock needs a name"));
        }
        let key = lock_key(name);
        self.check_key(&key)?;
        Ok(key)
    }

    pub(super) async fn lock_rpc(
        &self,
        request: Request<LockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let key = self.check_lock_name(&message.name)?;
        if message.lease == 0 {
            return Err(Status::invalid_argument(
                "a lock is held by a lease: grant one (LeaseGrant with key lock/NAME) and name it",
            ));
        }
        let command = Command {
            op: Some(Op::Lock(raft::Lock {
                key: key.clone(),
                lease: message.lease,
            })),
            ..Default::default()
        };
        loop {
            let (group, result) = self
                .write(
                    routed,
                    &key,
                    &command,
                    deadline,
                    &message,
                    |mut peer, request| async move {
                        let response = peer.lock(request).await?.into_inner();
                        Ok(ApplyResult {
                            succeeded: true,
                            revision: response.token,
                            ..Default::default()
                        })
                    },
                )
                .await?;
            if !result.refused.is_empty() {
                return Err(refused(&result));
            }
            if result.succeeded {
                return Ok(Response::new(LockResponse {
                    header: Some(self.header(group)),
                    key,
                    token: result.revision,
                }));
            }
            // Held by another lease: wait for it to be released or to expire.
            if Instant::now() + LOCK_RETRY >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "lock {:?} is held by lease {}; not taken before the deadline",
                    message.name, result.lease
                )));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    pub(super) async fn unlock_rpc(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.serving()?;
        let (deadline, routed) = (self.deadline(&request), routed_at(&request));
        let message = request.into_inner();
        let key = self.check_lock_name(&message.name)?;
        let command = Command {
            op: Some(Op::Unlock(raft::Unlock {
                key: key.clone(),
                lease: message.lease,
            })),
            ..Default::default()
        };
        let (group, result) = self
            .write(
                routed,
                &key,
                &command,
                deadline,
                &message,
                |mut peer, request| async move {
                    let response = peer.unlock(request).await?.into_inner();
                    Ok(ApplyResult {
                        succeeded: response.released,
                        ..Default::default()
                    })
                },
            )
            .await?;
        if !result.refused.is_empty() {
            return Err(refused(&result));
        }
        Ok(Response::new(UnlockResponse {
            header: Some(self.header(group)),
            released: result.succeeded,
        }))
    }
}
