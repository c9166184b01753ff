//! [`RoutingClient`]: sends each request to the partition's leader, corrects its map from
//! refusals, and retries only what cannot have taken effect.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::cache::{MapCache, Next};
use super::scan::{self, Items, Scanned};
use super::wire::{Correction, correction, never_sent, routed_request};
use crate::partitioning::convert::from_wire;
use crate::partitioning::{NodeId, PartitionId, PartitionMap, RangeDescriptor};
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::{
    BatchGetRequest, BatchGetResponse, BatchGetResult, CompareAndSwapRequest,
    CompareAndSwapResponse, DeleteRequest, DeleteResponse, GetPartitionMapRequest,
    GetPartitionMapResponse, GetRequest, GetResponse, KeyValue, PutRequest, PutResponse,
    ScanRequest, ScanResponse, TxnRequest, TxnResponse, WriteId,
};
use crate::server::transport::node_endpoint;

/// Sends one request makes at most, corrections and unreachable replicas included.
pub const ATTEMPTS_MAX: usize = 8;
/// The first pause after a refusal that brought nothing new (an election is under way);
/// it doubles each time, up to [`PAUSE_MAX`].
const PAUSE_MIN: Duration = Duration::from_millis(20);
const PAUSE_MAX: Duration = Duration::from_millis(320);
/// How long one node is given to hand out the map before the next is asked.
const MAP_FETCH_TIMEOUT: Duration = Duration::from_millis(1000);

/// How requests find their partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Routing {
    /// Each request goes straight to its partition's leader, as the cached map says.
    #[default]
    Direct,
    /// Every request goes, unrouted, to one node, which coordinates it.
    Node,
}

impl std::str::FromStr for Routing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(Routing::Direct),
            "node" => Ok(Routing::Node),
            other => Err(format!(
                "unknown routing {other:?}: use direct (to each partition's leader) or node (through one node)"
            )),
        }
    }
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Routing::Direct => "direct",
            Routing::Node => "node",
        })
    }
}

/// Where the client's map comes from.
enum Source {
    /// Fetched with `GetPartitionMap` from the nodes the map names, or these seeds.
    Fetch(Vec<SocketAddr>),
    /// A node's own copy, kept current by its consistent core.
    Local(watch::Receiver<Arc<PartitionMap>>),
}

/// What a request is for: a key, or a whole partition (one part of a scan).
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Key(&'a [u8]),
    Partition(PartitionId),
}

/// A client of a Faultline cluster. One per session: it keeps a connection per node
/// (made on first use) and its own cache of the map. Cheap to share behind `&`.
pub struct RoutingClient {
    routing: Routing,
    source: Source,
    cache: Mutex<MapCache>,
    channels: Mutex<HashMap<NodeId, KvClient<Channel>>>,
    /// The node every request goes to with [`Routing::Node`].
    via: Option<KvClient<Channel>>,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
    attempts_max: usize,
}

impl RoutingClient {
    /// A client that learns the map from `seeds` (any nodes of the cluster). Its
    /// connections are made from `source_ip` if given.
    pub fn new(
        seeds: Vec<SocketAddr>,
        routing: Routing,
        source_ip: Option<IpAddr>,
        connect_timeout: Duration,
    ) -> Self {
        let via = match (routing, seeds.first()) {
            (Routing::Node, Some(&addr)) => Some(KvClient::new(
                node_endpoint(addr, source_ip, connect_timeout).connect_lazy(),
            )),
            _ => None,
        };
        Self {
            routing,
            source: Source::Fetch(seeds),
            cache: Mutex::new(MapCache::new()),
            channels: Mutex::new(HashMap::new()),
            via,
            source_ip,
            connect_timeout,
            attempts_max: ATTEMPTS_MAX,
        }
    }

    /// The forwarding client of a node: its map is the node's own, its connections the
    /// node's (to every node, itself included: a correction may name this node).
    pub fn for_node(
        map: watch::Receiver<Arc<PartitionMap>>,
        channels: HashMap<NodeId, KvClient<Channel>>,
    ) -> Self {
        Self {
            routing: Routing::Direct,
            source: Source::Local(map),
            cache: Mutex::new(MapCache::new()),
            channels: Mutex::new(channels),
            via: None,
            source_ip: None,
            connect_timeout: Duration::from_millis(500),
            attempts_max: ATTEMPTS_MAX,
        }
    }

    pub fn routing(&self) -> Routing {
        self.routing
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, MapCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a node knows of a partition's leader (a coordinating node's own view).
    pub fn hint_leader(&self, partition: PartitionId, leader: NodeId) {
        let _ = self.cache().correct(&Correction::NotLeader {
            partition,
            hint: Some(leader),
        });
    }

    /// Takes the correction a refusal carries, as a call would. False if `status` is no
    /// refusal (nothing was learned from it).
    pub fn correct(&self, status: &Status) -> bool {
        let Some(correction) = correction(status) else {
            return false;
        };
        self.sync_local();
        let _ = self.cache().correct(&correction);
        true
    }

    /// Runs `send` against the node that should serve `target`, correcting and resending
    /// while refusals say how, at most `attempts_max` times and never past `timeout`.
    /// Retried only when the failure proves the request was not applied (a typed refusal,
    /// or a connection never made): any other error is returned as it is, since a write
    /// whose outcome is unknown must not be sent again blindly. `send` gets a connection,
    /// the descriptor the request is routed at (None with [`Routing::Node`]: unrouted)
    /// and the time left.
    pub async fn call<T, F, Fut>(
        &self,
        target: Target<'_>,
        timeout: Duration,
        mut send: F,
    ) -> Result<(Option<PartitionId>, T), Status>
    where
        F: FnMut(KvClient<Channel>, Option<RangeDescriptor>, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if let Some(via) = &self.via {
            return send(via.clone(), None, timeout).await.map(|v| (None, v));
        }
        let deadline = deadline_in(timeout);
        let mut unreachable: Vec<NodeId> = Vec::new();
        let mut pause = PAUSE_MIN;
        let mut last: Option<Status> = None;
        for attempt in 0..self.attempts_max {
            let descriptor = self.descriptor(target, deadline).await?;
            let Some(node) = MapCache::pick(&descriptor, &unreachable, attempt) else {
                // No replica could be reached in this call: give them a moment, then all
                // of them are worth trying again.
                unreachable.clear();
                self.pause(&mut pause, deadline).await?;
                continue;
            };
            let Some(client) = self.channel(node) else {
                unreachable.push(node);
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let status = match send(client, Some(descriptor.clone()), left).await {
                Ok(value) => return Ok((Some(descriptor.id), value)),
                Err(status) => status,
            };
            match correction(&status) {
                Some(correction) => {
                    // A hint naming the node just asked, or one already found down, is
                    // stale news: an election is under way, so wait before the next try.
                    let mut nothing_new = match &correction {
                        Correction::NotLeader { hint: None, .. } => true,
                        Correction::NotLeader { hint: Some(h), .. } => {
                            *h == node || unreachable.contains(h)
                        }
                        _ => false,
                    };
                    if let Correction::NotLeader { hint: None, .. } = correction {
                        unreachable.push(node);
                    }
                    // The guard must be gone before the refetch awaits (it locks again).
                    let next = self.cache().correct(&correction);
                    match next {
                        Next::Retry => {}
                        Next::Stale => nothing_new = true,
                        Next::Refetch => self.refetch(deadline).await?,
                    }
                    if nothing_new {
                        self.pause(&mut pause, deadline).await?;
                    }
                }
                None if never_sent(&status) => unreachable.push(node),
                None => return Err(status),
            }
            last = Some(status);
        }
        Err(last.unwrap_or_else(|| {
            Status::aborted(format!(
                "no replica served the request in {} attempts; not applied",
                self.attempts_max
            ))
        }))
    }

    async fn pause(&self, pause: &mut Duration, deadline: Instant) -> Result<(), Status> {
        let wake = Instant::now() + *pause;
        if wake >= deadline {
            return Err(Status::unavailable(
                "no leader answered before the deadline; the request was not applied",
            ));
        }
        tokio::time::sleep_until(wake).await;
        *pause = (*pause * 2).min(PAUSE_MAX);
        Ok(())
    }

    /// The connection to `node`, made on first use, if its address is known.
    pub fn connection(&self, node: NodeId) -> Option<KvClient<Channel>> {
        self.channel(node)
    }

    /// A `Watch` client of `node`, if its address is known (a connection of its own: a
    /// watch is long-lived and must not queue behind the node's other requests).
    pub fn watch_connection(
        &self,
        node: NodeId,
    ) -> Option<crate::proto::kv::watch_client::WatchClient<Channel>> {
        let addr = match self.cache().address(node) {
            Some(addr) => addr,
            None => {
                self.sync_local();
                self.cache().address(node)?
            }
        };
        Some(crate::proto::kv::watch_client::WatchClient::new(
            node_endpoint(addr, self.source_ip, self.connect_timeout).connect_lazy(),
        ))
    }

    fn channel(&self, node: NodeId) -> Option<KvClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = channels.get(&node) {
            return Some(client.clone());
        }
        let known = self.cache().address(node);
        let addr = match known {
            Some(addr) => addr,
            None => {
                // A node that joined since the cache was last installed.
                self.sync_local();
                self.cache().address(node)?
            }
        };
        let client =
            KvClient::new(node_endpoint(addr, self.source_ip, self.connect_timeout).connect_lazy());
        channels.insert(node, client.clone());
        Some(client)
    }

    /// The descriptor to route `target` at, from the cache, fetching the map first if
    /// it is not known.
    async fn descriptor(
        &self,
        target: Target<'_>,
        deadline: Instant,
    ) -> Result<RangeDescriptor, Status> {
        self.sync_local();
        let found = |cache: &MapCache| match target {
            Target::Key(key) => cache.locate(key),
            Target::Partition(id) => cache.get(id),
        };
        if let Some(descriptor) = found(&self.cache()) {
            return Ok(descriptor);
        }
        if self.cache().is_known() {
            // The map is known and lacks the partition: it was split, merged or moved
            // since the caller looked. The caller plans again.
            return Err(Status::aborted(
                "the partition map changed while the request was planned; not applied, retry",
            ));
        }
        self.refetch(deadline).await?;
        found(&self.cache()).ok_or_else(|| {
            Status::aborted(
                "the partition map changed while the request was planned; not applied, retry",
            )
        })
    }

    /// A node's client takes its node's map whenever the core has changed it.
    fn sync_local(&self) {
        if let Source::Local(map) = &self.source {
            let current = map.borrow().clone();
            let mut cache = self.cache();
            if cache.installed() != Some(current.version()) {
                cache.install((*current).clone(), current.version());
            }
        }
    }

    /// Fetches the map (a node's own: waits for it to be known), until the deadline.
    async fn refetch(&self, deadline: Instant) -> Result<(), Status> {
        match &self.source {
            Source::Local(map) => {
                let mut map = map.clone();
                loop {
                    let current = map.borrow_and_update().clone();
                    if !current.is_empty() {
                        self.cache().install((*current).clone(), current.version());
                        return Ok(());
                    }
                    match tokio::time::timeout_at(deadline, map.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Status::unavailable("the node is shutting down")),
                        Err(_) => {
                            return Err(Status::unavailable(
                                "this node does not know the partition map yet (its consistent core has not answered); not applied, retry",
                            ));
                        }
                    }
                }
            }
            Source::Fetch(seeds) => {
                let mut pause = PAUSE_MIN;
                loop {
                    let error = match self.fetch(seeds, deadline).await {
                        Ok(response) => return self.install(&response),
                        Err(error) => error,
                    };
                    let wake = Instant::now() + pause;
                    if wake >= deadline {
                        return Err(Status::unavailable(format!(
                            "the partition map is not known: {error}; is the cluster up, and is --endpoint one of its nodes?"
                        )));
                    }
                    tokio::time::sleep_until(wake).await;
                    pause = (pause * 2).min(PAUSE_MAX);
                }
            }
        }
    }

    /// Asks the nodes the cache knows, then the seeds, for the map, one at a time.
    async fn fetch(
        &self,
        seeds: &[SocketAddr],
        deadline: Instant,
    ) -> Result<GetPartitionMapResponse, String> {
        let mut addrs: Vec<SocketAddr> = self.cache().addresses().collect();
        for seed in seeds {
            if !addrs.contains(seed) {
                addrs.push(*seed);
            }
        }
        let mut errors = Vec::new();
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut client = KvClient::new(
                node_endpoint(addr, self.source_ip, self.connect_timeout).connect_lazy(),
            );
            let mut request = Request::new(GetPartitionMapRequest {});
            request.set_timeout(left.min(MAP_FETCH_TIMEOUT));
            match client.get_partition_map(request).await {
                Ok(response) if !response.get_ref().partitions.is_empty() => {
                    return Ok(response.into_inner());
                }
                Ok(_) => errors.push(format!("{addr} does not know the map yet")),
                Err(status) => errors.push(format!("{addr}: {}", status.message())),
            }
        }
        if errors.is_empty() {
            errors.push("no node to ask".into());
        }
        Err(errors.join("; "))
    }

    fn install(&self, response: &GetPartitionMapResponse) -> Result<(), Status> {
        let descriptors = response
            .partitions
            .iter()
            .map(|w| from_wire(w).map(|(d, _)| d))
            .collect::<Result<Vec<_>, _>>()
            .and_then(PartitionMap::new)
            .map_err(|e| Status::internal(format!("a node handed out a broken map: {e}")))?;
        let nodes = response.nodes.iter().filter_map(|n| {
            n.address
                .parse::<SocketAddr>()
                .ok()
                .map(|addr| (n.id, addr))
        });
        let mut cache = self.cache();
        cache.set_nodes(nodes);
        cache.install(descriptors, response.version);
        Ok(())
    }

    /// The map as the client now knows it, fetched if it is not known.
    pub async fn partition_map(
        &self,
        timeout: Duration,
    ) -> Result<GetPartitionMapResponse, Status> {
        let deadline = deadline_in(timeout);
        match &self.source {
            Source::Fetch(seeds) => self
                .fetch(seeds, deadline)
                .await
                .map_err(Status::unavailable),
            Source::Local(_) => Err(Status::unimplemented(
                "a node's own client does not hand out the map; ask the node",
            )),
        }
    }

    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        write_id: Option<WriteId>,
        timeout: Duration,
    ) -> Result<PutResponse, Status> {
        let message = PutRequest {
            key,
            value,
            write_id,
            ..Default::default()
        };
        self.put_request(message, timeout).await
    }

    /// A put with every field of the request (a lease, a fencing token).
    pub async fn put_request(
        &self,
        message: PutRequest,
        timeout: Duration,
    ) -> Result<PutResponse, Status> {
        self.call(Target::Key(&message.key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.put(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn get(
        &self,
        key: Vec<u8>,
        serializable: bool,
        timeout: Duration,
    ) -> Result<GetResponse, Status> {
        self.get_request(
            GetRequest {
                key,
                serializable,
                lease_read: false,
            },
            timeout,
        )
        .await
    }

    /// A get as asked (a lease read, say).
    pub async fn get_request(
        &self,
        message: GetRequest,
        timeout: Duration,
    ) -> Result<GetResponse, Status> {
        self.call(Target::Key(&message.key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.get(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn delete(
        &self,
        key: Vec<u8>,
        write_id: Option<WriteId>,
        timeout: Duration,
    ) -> Result<DeleteResponse, Status> {
        let message = DeleteRequest { key, write_id };
        self.call(Target::Key(&message.key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.delete(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn compare_and_swap(
        &self,
        message: CompareAndSwapRequest,
        timeout: Duration,
    ) -> Result<CompareAndSwapResponse, Status> {
        self.call(Target::Key(&message.key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.compare_and_swap(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    /// A one-shot transaction, routed by its first key (the node refuses one whose keys
    /// span partitions, and a split since routing, without applying it).
    /// A lease in the partition holding `key` (empty: the key `\0`'s).
    pub async fn lease_grant(
        &self,
        ttl_ms: u64,
        key: Vec<u8>,
        timeout: Duration,
    ) -> Result<crate::proto::kv::LeaseGrantResponse, Status> {
        let message = crate::proto::kv::LeaseGrantRequest { ttl_ms, key };
        let routing = if message.key.is_empty() {
            vec![0]
        } else {
            message.key.clone()
        };
        self.call(Target::Key(&routing), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.lease_grant(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    /// One keep-alive, to the lease's partition (its id names it).
    pub async fn lease_renew(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<crate::proto::kv::LeaseKeepAliveResponse, Status> {
        let message = crate::proto::kv::LeaseKeepAliveRequest { id };
        let partition = crate::cluster::lease::lease_group(id);
        self.call(Target::Partition(partition), timeout, |mut c, d, left| {
            let request = prepare(message, d.as_ref(), left);
            async move { c.lease_renew(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn lease_revoke(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<crate::proto::kv::LeaseRevokeResponse, Status> {
        let message = crate::proto::kv::LeaseRevokeRequest { id };
        let partition = crate::cluster::lease::lease_group(id);
        self.call(Target::Partition(partition), timeout, |mut c, d, left| {
            let request = prepare(message, d.as_ref(), left);
            async move { c.lease_revoke(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
        timeout: Duration,
    ) -> Result<crate::proto::kv::LeaseTimeToLiveResponse, Status> {
        let message = crate::proto::kv::LeaseTimeToLiveRequest { id, keys };
        let partition = crate::cluster::lease::lease_group(id);
        self.call(Target::Partition(partition), timeout, |mut c, d, left| {
            let request = prepare(message, d.as_ref(), left);
            async move { c.lease_time_to_live(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    /// Takes lock `name` for `lease`, waiting for it until `timeout`.
    pub async fn lock(
        &self,
        name: &str,
        lease: u64,
        timeout: Duration,
    ) -> Result<crate::proto::kv::LockResponse, Status> {
        let message = crate::proto::kv::LockRequest {
            name: name.to_string(),
            lease,
        };
        let key = crate::server::lock_key(name);
        self.call(Target::Key(&key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.lock(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn unlock(
        &self,
        name: &str,
        lease: u64,
        timeout: Duration,
    ) -> Result<crate::proto::kv::UnlockResponse, Status> {
        let message = crate::proto::kv::UnlockRequest {
            name: name.to_string(),
            lease,
        };
        let key = crate::server::lock_key(name);
        self.call(Target::Key(&key), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.unlock(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    pub async fn txn(&self, message: TxnRequest, timeout: Duration) -> Result<TxnResponse, Status> {
        let first = message
            .ops
            .iter()
            .find_map(crate::partitioning::range::micro_op_key)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Status::invalid_argument("a transaction needs at least one micro-op"))?;
        self.call(Target::Key(&first), timeout, |mut c, d, left| {
            let request = prepare(message.clone(), d.as_ref(), left);
            async move { c.txn(request).await.map(|r| r.into_inner()) }
        })
        .await
        .map(|(_, r)| r)
    }

    /// Keys of `[start, end)` in key order, up to `limit`. Direct routing reads each
    /// partition from its leader and assembles them as a node would (see [`scan`]).
    pub async fn scan(
        &self,
        message: ScanRequest,
        timeout: Duration,
    ) -> Result<ScanResponse, Status> {
        if self.via.is_some() {
            return self
                .call(Target::Key(&message.start), timeout, |mut c, _, left| {
                    let request = prepare(message.clone(), None, left);
                    async move { c.scan(request).await.map(|r| r.into_inner()) }
                })
                .await
                .map(|(_, r)| r);
        }
        if message.limit == 0 {
            return Err(Status::invalid_argument("scan limit must be at least 1"));
        }
        let deadline = deadline_in(timeout);
        // The first descriptor fetches the map if it is not known yet.
        self.descriptor(Target::Key(&message.start), deadline)
            .await?;
        let covering = self
            .cache()
            .covering(&message.start, &message.end)
            .unwrap_or_default();
        let serializable = message.serializable;
        let scanned = scan::assemble(
            &covering,
            &message.start,
            &message.end,
            message.limit as usize,
            false,
            |descriptor, from, to, limit| async move {
                self.scan_part(&descriptor, from, to, limit, serializable, deadline)
                    .await
            },
        )
        .await?;
        Ok(scan_response(scanned))
    }

    /// One partition's part of a scan, from its leader: `[start, end)` clipped to
    /// `planned`, the descriptor the scan was planned with. If the partition has changed
    /// since (a split would leave keys outside the planned bounds unread), the part is
    /// refused, not served short.
    pub async fn scan_part(
        &self,
        planned: &RangeDescriptor,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        serializable: bool,
        deadline: Instant,
    ) -> Result<(Items, bool), Status> {
        let message = ScanRequest {
            start,
            end,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            serializable,
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (_, response) = self
            .call(Target::Partition(planned.id), timeout, |mut c, d, left| {
                let changed = d
                    .as_ref()
                    .is_some_and(|d| d.epoch != planned.epoch || d.span != planned.span);
                let request = prepare(message.clone(), d.as_ref(), left);
                let id = planned.id;
                async move {
                    if changed {
                        return Err(Status::aborted(format!(
                            "partition {id} changed (split, merge or move) while the scan was under way; not served, retry"
                        )));
                    }
                    c.scan(request).await.map(|r| r.into_inner())
                }
            })
            .await?;
        let items = response
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.revision))
            .collect();
        Ok((items, response.more))
    }

    /// Several keys at once; each is a linearizable read of its own (unless serializable).
    pub async fn batch_get(
        &self,
        keys: Vec<Vec<u8>>,
        serializable: bool,
        timeout: Duration,
    ) -> Result<BatchGetResponse, Status> {
        if let Some(via) = &self.via {
            let mut via = via.clone();
            let mut request = Request::new(BatchGetRequest { keys, serializable });
            request.set_timeout(timeout);
            return via.batch_get(request).await.map(|r| r.into_inner());
        }
        let gets = keys
            .into_iter()
            .map(|key| self.get(key, serializable, timeout));
        let mut results = Vec::new();
        for got in scan::join_all(gets).await {
            let got = got?;
            results.push(BatchGetResult {
                found: got.found,
                value: got.value,
                revision: got.revision,
            });
        }
        Ok(BatchGetResponse {
            header: None,
            results,
        })
    }
}

/// The deadline `timeout` from now (an hour at most: a huge timeout must not overflow).
fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout.min(Duration::from_secs(3600))
}

/// The request to send: routed at `descriptor` if there is one, else a plain request for
/// a coordinating node.
pub fn prepare<T>(
    message: T,
    descriptor: Option<&RangeDescriptor>,
    timeout: Duration,
) -> Request<T> {
    match descriptor {
        Some(descriptor) => routed_request(message, descriptor, timeout),
        None => {
            let mut request = Request::new(message);
            request.set_timeout(timeout);
            request
        }
    }
}

pub fn scan_response(scanned: Scanned) -> ScanResponse {
    ScanResponse {
        header: None,
        items: scanned
            .items
            .into_iter()
            .map(|(key, value, revision)| KeyValue {
                key,
                value,
                revision,
            })
            .collect(),
        more: scanned.more,
        partitions: scanned.partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_no_node_to_ask_for_the_map_a_request_is_unavailable_and_says_why() {
        // A port nothing listens on: bind one, then let it go.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let client = RoutingClient::new(
            vec![addr],
            Routing::Direct,
            None,
            Duration::from_millis(100),
        );
        let status = client
            .put(
                b"k".to_vec(),
                b"v".to_vec(),
                None,
                Duration::from_millis(300),
            )
            .await
            .expect_err("nobody to route to");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("partition map is not known")
                && status.message().contains(&addr.to_string()),
            "{status}"
        );
    }

    #[test]
    fn routing_is_named_as_the_flags_spell_it() {
        assert_eq!("direct".parse::<Routing>(), Ok(Routing::Direct));
        assert_eq!("node".parse::<Routing>(), Ok(Routing::Node));
        assert!("leader".parse::<Routing>().is_err());
        assert_eq!(Routing::Node.to_string(), "node");
    }
}
