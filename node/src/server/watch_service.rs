//! The `Watch` service (node/src/cluster/README.md). A watch covers the partitions its
//! key range touches; each partition is watched on a replica: this node's if it hosts
//! one (any replica will do: replicas apply only committed entries, in log order), else
//! through a node that does, by forwarding the watch for that partition alone. The
//! partitions' responses are merged into the one stream; each carries its partition, and
//! order is promised only within a partition (revisions are each partition's own log
//! indices, so there is no order across partitions to give).

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::driver::{Event, Views};
use crate::client::RoutingClient;
use crate::cluster::watch::{Delivery, WatchSpec};
use crate::partitioning::PartitionMap;
use crate::proto::kv::watch_server::Watch;
use crate::proto::kv::{EventType, WatchEvent, WatchRequest, WatchResponse};
use crate::store::Change;

/// Deliveries a partition's queue from the replication thread holds before its watcher
/// falls back to catching up from the store.
const PARTITION_QUEUE: usize = 64;
/// Responses buffered towards the client.
const CLIENT_QUEUE: usize = 256;
/// How long a watch waits for this node to learn the partition map.
const MAP_WAIT: Duration = Duration::from_secs(5);

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

pub struct WatchService {
    pub node_id: u64,
    pub events: SyncSender<Event>,
    pub views: Views,
    pub map: watch::Receiver<Arc<PartitionMap>>,
    /// Reaches the nodes a forwarded watch goes to.
    pub router: Arc<RoutingClient>,
    pub key_bytes_max: usize,
    pub next_id: AtomicU64,
}

/// The key span `[start, end)` (empty `end`: unbounded) of a request, on etcd's
/// conventions, or why it is not one.
pub fn request_span(key: &[u8], range_end: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        return Ok((key.to_vec(), end));
    }
    if range_end == [0] {
        return Ok((key.to_vec(), Vec::new()));
    }
    if range_end <= key {
        return Err(format!(
            "range_end {:?} is not above key {:?}: the range is empty. Leave range_end empty \
             to watch the key alone, or give \"\\0\" for every key from it on",
            String::from_utf8_lossy(range_end),
            String::from_utf8_lossy(key)
        ));
    }
    Ok((key.to_vec(), range_end.to_vec()))
}

fn event(change: Change) -> WatchEvent {
    let (kind, value) = match change.value {
        Some(value) => (EventType::Put, value),
        None => (EventType::Delete, Vec::new()),
    };
    WatchEvent {
        r#type: kind as i32,
        key: change.key,
        value,
        revision: change.revision,
        has_prev_value: change.prev.is_some(),
        prev_value: change.prev.unwrap_or_default(),
    }
}

fn response(node_id: u64, partition: u64, delivery: Delivery) -> WatchResponse {
    let mut out = WatchResponse {
        node_id,
        partition,
        ..Default::default()
    };
    match delivery {
        Delivery::Created { from } => {
            out.created = true;
            out.revision = from.saturating_sub(1);
        }
        Delivery::Changes { changes, progress } => {
            out.events = changes.into_iter().map(event).collect();
            out.revision = progress;
        }
        Delivery::Progress { revision } => out.revision = revision,
        Delivery::Canceled {
            reason,
            compacted,
            progress,
        } => {
            out.canceled = true;
            out.cancel_reason = reason;
            out.compact_revision = compacted.unwrap_or(0);
            out.revision = progress;
        }
    }
    out
}

fn canceled(node_id: u64, partition: u64, reason: String) -> WatchResponse {
    WatchResponse {
        node_id,
        partition,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
}

impl WatchService {
    async fn known_map(&self) -> Result<Arc<PartitionMap>, Status> {
        let mut map = self.map.clone();
        let deadline = tokio::time::Instant::now() + MAP_WAIT;
        loop {
            let current = map.borrow_and_update().clone();
            if !current.is_empty() {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, map.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("the node is shutting down")),
                Err(_) => {
                    return Err(Status::unavailable(
                        "this node does not know the partition map yet (is the consistent \
                         core up?); try again",
                    ));
                }
            }
        }
    }

    fn hosts(&self, group: u64) -> bool {
        self.views
            .read()
            .expect("no thread panics holding the views")
            .contains_key(&group)
    }

    /// Watches partition `partition` on this node's replica, into `out`.
    fn watch_here(
        &self,
        partition: u64,
        spec: WatchSpec,
        out: mpsc::Sender<WatchResponse>,
    ) -> Result<(), Status> {
        let (sender, mut deliveries) = mpsc::channel(PARTITION_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let event = Event::Watch {
            group: partition,
            id,
            spec,
            sender,
        };
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Status::resource_exhausted(
                    "the node's request queue is full (client_queue_max); watch again later",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Status::unavailable("the node is shutting down"));
            }
        }
        let node_id = self.node_id;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // The client left: dropping `deliveries` ends the watcher.
                    () = out.closed() => return,
                    delivery = deliveries.recv() => {
                        let Some(delivery) = delivery else {
                            let _ = out
                                .send(canceled(
                                    node_id,
                                    partition,
                                    format!(
                                        "node {node_id} stopped watching partition {partition}; \
                                         watch again from the last revision seen"
                                    ),
                                ))
                                .await;
                            return;
                        };
                        let end = matches!(delivery, Delivery::Canceled { .. });
                        if out.send(response(node_id, partition, delivery)).await.is_err() || end {
                            return;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Watches partition `partition` through node `via`, which hosts a replica of it.
    fn watch_through(
        &self,
        via: u64,
        partition: u64,
        mut request: WatchRequest,
        out: mpsc::Sender<WatchResponse>,
    ) {
        let node_id = self.node_id;
        let client = self.router.watch_connection(via);
        request.partitions = vec![partition];
        tokio::spawn(async move {
            let ended = |why: String| {
                canceled(
                    node_id,
                    partition,
                    format!(
                        "the watch of partition {partition} through node {via} ended: {why}; \
                         watch again from the last revision seen"
                    ),
                )
            };
            let Some(mut client) = client else {
                let _ = out
                    .send(ended("its address is not known here".into()))
                    .await;
                return;
            };
            let mut stream = match client.watch(request).await {
                Ok(reply) => reply.into_inner(),
                Err(status) => {
                    let _ = out.send(ended(status.message().to_string())).await;
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = out.closed() => return,
                    next = stream.message() => match next {
                        Ok(Some(reply)) => {
                            let end = reply.canceled;
                            if out.send(reply).await.is_err() || end {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = out.send(ended("the stream ended".into())).await;
                            return;
                        }
                        Err(status) => {
                            let _ = out.send(ended(status.message().to_string())).await;
                            return;
                        }
                    }
                }
            }
        });
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let message = request.into_inner();
        for (what, bytes) in [("key", &message.key), ("range_end", &message.range_end)] {
            if bytes.len() > self.key_bytes_max {
                return Err(Status::invalid_argument(format!(
                    "the {what} is {} bytes, above this node's limit of {} (--key-bytes-max)",
                    bytes.len(),
                    self.key_bytes_max
                )));
            }
        }
        let (start, end) =
            request_span(&message.key, &message.range_end).map_err(Status::invalid_argument)?;
        let map = self.known_map().await?;
        let only: HashSet<u64> = message.partitions.iter().copied().collect();
        let partitions: Vec<(u64, Vec<u64>)> = map
            .covering(&start, &end)
            .into_iter()
            .filter(|d| only.is_empty() || only.contains(&d.id))
            .map(|d| {
                let mut via: Vec<u64> = d.leader.into_iter().collect();
                via.extend(d.replicas.iter().filter(|&&n| Some(n) != d.leader));
                (d.id, via)
            })
            .collect();
        if partitions.is_empty() {
            return Err(Status::not_found(format!(
                "none of partitions {:?} holds keys of this range (the map may have moved on: \
                 watch without `partitions`)",
                message.partitions
            )));
        }
        let starts: BTreeMap<u64, u64> = message.start_revisions.clone().into_iter().collect();
        let (inner, mut merged) = mpsc::channel::<WatchResponse>(CLIENT_QUEUE);
        for (partition, via) in partitions {
            let from = starts
                .get(&partition)
                .copied()
                .unwrap_or(message.start_revision);
            if self.hosts(partition) {
                let spec = WatchSpec {
                    start: start.clone(),
                    end: end.clone(),
                    from,
                    prev_value: message.prev_value,
                    progress_every_ms: message.progress_notify_ms,
                };
                self.watch_here(partition, spec, inner.clone())?;
            } else if let Some(&node) = via.iter().find(|&&n| n != self.node_id) {
                let mut forwarded = message.clone();
                forwarded.start_revision = from;
                forwarded.start_revisions.clear();
                self.watch_through(node, partition, forwarded, inner.clone());
            } else {
                return Err(Status::unavailable(format!(
                    "partition {partition} has no replica this node can reach; watch through \
                     another node"
                )));
            }
        }
        drop(inner);
        // One partition's end ends the watch: the client resumes every partition from
        // what it saw, rather than keep a stream that silently covers less than asked.
        let (client, out) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            while let Some(reply) = merged.recv().await {
                let end = reply.canceled;
                if client.send(Ok(reply)).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_etcds_conventions_and_an_empty_range_is_refused() {
        assert_eq!(
            request_span(b"k", b"").unwrap(),
            (b"k".to_vec(), b"k\0".to_vec())
        );
        assert_eq!(
            request_span(b"k", b"\0").unwrap(),
            (b"k".to_vec(), Vec::new())
        );
        assert_eq!(
            request_span(b"a", b"c").unwrap(),
            (b"a".to_vec(), b"c".to_vec())
        );
        let refused = request_span(b"c", b"a").unwrap_err();
        assert!(refused.contains("empty"), "{refused}");
    }
}
