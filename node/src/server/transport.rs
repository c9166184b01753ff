//! Peer transport: one gRPC channel, one long-lived stream and one sender task per
//! peer. The task takes everything queued for its peer as one batch (batching) and
//! writes it to the stream without waiting for earlier batches to be answered
//! (pipelining). Messages that do not fit in the bounded queues are dropped: Raft
//! retransmits, and a slow or cut-off peer must not grow memory without bound
//! (backpressure). A broken stream is reopened after a short pause.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::driver::Event;
use crate::proto::admin::DropRule;
use crate::proto::raft::message::Body;
use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::raft_server::Raft;
use crate::proto::raft::{DeliverAck, Message, MessageBatch};

pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
    runtime: tokio::runtime::Handle,
    options: TransportOptions,
    drops: DropRules,
}

/// Messages the fault-injection service told this node to drop (see the admin proto's
/// `DropPeerMessages`). Empty unless a harness asks; the send path then pays one atomic
/// load.
#[derive(Clone, Debug, Default)]
pub struct DropRules {
    any: Arc<AtomicBool>,
    rules: Arc<Mutex<Vec<DropRule>>>,
}

impl DropRules {
    /// Clears the rules if asked, then adds `add`. Returns the rules in force.
    pub fn update(
        &self,
        clear: bool,
        add: &[DropRule],
        max: usize,
    ) -> Result<Vec<DropRule>, String> {
        let mut rules = self.rules.lock().expect("drop rules lock");
        if clear {
            rules.clear();
        }
        if rules.len() + add.len() > max {
            return Err(format!(
                "at most {max} drop rules; clear them first (clear: true)"
            ));
        }
        if let Some(rule) = add.iter().find(|r| r.group_id == 0 || r.to == 0) {
            return Err(format!(
                "a drop rule names a group and a peer (both nonzero): {rule:?}"
            ));
        }
        rules.extend_from_slice(add);
        self.any.store(!rules.is_empty(), Ordering::Relaxed);
        Ok(rules.clone())
    }

    fn drops(&self, message: &Message) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let vote = matches!(
            message.body,
            Some(Body::RequestVote(_)) | Some(Body::RequestVoteResponse(_))
        );
        self.rules.lock().expect("drop rules lock").iter().any(|r| {
            r.group_id == message.group_id && r.to == message.to && !(vote && r.keep_votes)
        })
    }
}

#[derive(Clone)]
pub struct TransportOptions {
    pub source_ip: Option<IpAddr>,
    pub queue_max: usize,
    pub batch_messages_max: usize,
    pub drops: DropRules,
}

impl Transport {
    pub fn start(
        runtime: &tokio::runtime::Handle,
        peers: &BTreeMap<u64, SocketAddr>,
        options: &TransportOptions,
    ) -> Self {
        let mut transport = Self {
            peers: HashMap::new(),
            runtime: runtime.clone(),
            options: options.clone(),
            drops: options.drops.clone(),
        };
        for (&id, &addr) in peers {
            transport.add_peer(id, addr);
        }
        transport
    }

    /// Starts talking to a node (one that joined since this one started).
    pub fn add_peer(&mut self, id: u64, addr: SocketAddr) {
        if self.peers.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.options.queue_max);
        self.runtime.spawn(deliver_loop(
            id,
            addr,
            self.options.source_ip,
            self.options.batch_messages_max,
            rx,
        ));
        self.peers.insert(id, tx);
    }

    /// Stops talking to a node removed from the cluster: its sender task ends with the
    /// queue.
    pub fn remove_peer(&mut self, id: u64) {
        self.peers.remove(&id);
    }

    pub fn send(&self, messages: impl Iterator<Item = Message>) {
        for message in messages {
            if self.drops.drops(&message) {
                continue;
            }
            if let Some(peer) = self.peers.get(&message.to) {
                let _ = peer.try_send(message);
            }
        }
    }
}

/// A gRPC endpoint for a node at `addr`, with Nagle off and connections bound to
/// `source_ip` when given (so firewall rules can match both ends). Every client of a
/// node — peers, forwarding, the harness — starts from this.
pub fn node_endpoint(
    addr: SocketAddr,
    source_ip: Option<IpAddr>,
    connect_timeout: Duration,
) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .local_address(source_ip)
}

pub fn endpoint(addr: SocketAddr, source_ip: Option<IpAddr>) -> Endpoint {
    node_endpoint(addr, source_ip, Duration::from_millis(500))
        // A partition that drops packets silently is noticed by missing pings.
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true)
}

/// Batches written to one stream and not yet taken by HTTP/2; beyond it batches are
/// dropped, as a congested network would.
const STREAM_BATCHES_MAX: usize = 64;
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// A batch stops growing past this many bytes.
const BATCH_BYTES_MAX: usize = 16 << 20;
/// What a node decodes from a peer in one batch: a batch of BATCH_BYTES_MAX plus one
/// message (an AppendEntries of `append_bytes_max`, or a whole snapshot, which is not
/// chunked yet and so bounds the store's size).
pub const PEER_MESSAGE_BYTES_MAX: usize = 256 << 20;

async fn deliver_loop(
    peer: u64,
    addr: SocketAddr,
    source_ip: Option<IpAddr>,
    batch_messages_max: usize,
    mut queue: mpsc::Receiver<Message>,
) {
    let client = RaftClient::new(endpoint(addr, source_ip).connect_lazy())
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let mut failures = 0u32;
    loop {
        let (stream_tx, stream_rx) = mpsc::channel::<MessageBatch>(STREAM_BATCHES_MAX);
        let mut call_client = client.clone();
        let mut call =
            tokio::spawn(async move { call_client.deliver(ReceiverStream::new(stream_rx)).await });
        loop {
            tokio::select! {
                first = queue.recv() => {
                    let Some(first) = first else {
                        call.abort();
                        return;
                    };
                    let mut messages = vec![first];
                    let mut bytes = messages[0].encoded_len();
                    while messages.len() < batch_messages_max && bytes < BATCH_BYTES_MAX {
                        match queue.try_recv() {
                            Ok(message) => {
                                bytes += message.encoded_len();
                                messages.push(message);
                            }
                            Err(_) => break,
                        }
                    }
                    match stream_tx.try_send(MessageBatch { messages }) {
                        Ok(()) => failures = 0,
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                ended = &mut call => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        let reason = match ended {
                            Ok(Ok(_)) => "the peer closed the stream".to_string(),
                            Ok(Err(status)) => status.message().to_string(),
                            Err(join) => join.to_string(),
                        };
                        tracing::debug!(peer, %addr, failures, "stream to peer ended: {reason}");
                    }
                    break;
                }
            }
        }
        call.abort();
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// The receiving end: hands peer messages to the replication thread.
pub struct RaftService {
    pub events: SyncSender<Event>,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn deliver(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<DeliverAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            for message in batch.messages {
                // A full queue drops the message, as a lossy network would.
                let _ = self.events.try_send(Event::Peer(message));
            }
        }
        Ok(Response::new(DeliverAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raft::{AppendEntries, RequestVote};

    fn message(group_id: u64, to: u64, body: Body) -> Message {
        Message {
            group_id,
            from: 1,
            to,
            body: Some(body),
            ..Message::default()
        }
    }

    #[test]
    fn drop_rules_drop_one_groups_messages_to_one_peer_and_can_keep_votes() {
        let drops = DropRules::default();
        let append = |group, to| message(group, to, Body::AppendEntries(AppendEntries::default()));
        let vote = |group, to| message(group, to, Body::RequestVote(RequestVote::default()));
        assert!(
            !drops.drops(&append(7, 3)),
            "nothing is dropped without a rule"
        );
        let rule = DropRule {
            group_id: 7,
            to: 3,
            keep_votes: true,
        };
        drops.update(false, &[rule], 4).expect("a valid rule");
        assert!(drops.drops(&append(7, 3)));
        assert!(!drops.drops(&vote(7, 3)), "votes pass");
        assert!(!drops.drops(&append(8, 3)), "another group passes");
        assert!(!drops.drops(&append(7, 2)), "another peer hears everything");

        let zero = DropRule {
            group_id: 0,
            ..rule
        };
        let error = drops
            .update(false, &[zero], 4)
            .expect_err("a rule without a group");
        assert!(error.contains("nonzero"), "{error}");
        let error = drops.update(false, &[rule; 4], 4).expect_err("too many");
        assert!(error.contains("clear"), "{error}");
        assert_eq!(drops.update(true, &[], 4).expect("cleared"), Vec::new());
        assert!(!drops.drops(&append(7, 3)));
    }
}
