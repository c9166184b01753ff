//! Peer transport: one gRPC channel and one sender task per peer. Each task takes
//! everything queued for its peer and delivers it in one call (batching); while a call
//! is in flight the next batch accumulates. Messages that do not fit in the bounded
//! queue are dropped: Raft retransmits, and a slow peer must not grow memory without
//! bound (backpressure).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::driver::Event;
use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::raft_server::Raft;
use crate::proto::raft::{DeliverAck, Message, MessageBatch};

pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
}

pub struct TransportOptions {
    pub source_ip: Option<IpAddr>,
    pub queue_max: usize,
    pub batch_messages_max: usize,
}

impl Transport {
    pub fn start(
        runtime: &tokio::runtime::Handle,
        peers: &BTreeMap<u64, SocketAddr>,
        options: &TransportOptions,
    ) -> Self {
        let mut senders = HashMap::new();
        for (&id, &addr) in peers {
            let (tx, rx) = mpsc::channel(options.queue_max);
            runtime.spawn(deliver_loop(
                id,
                addr,
                options.source_ip,
                options.batch_messages_max,
                rx,
            ));
            senders.insert(id, tx);
        }
        Self { peers: senders }
    }

    pub fn send(&self, messages: impl Iterator<Item = Message>) {
        for message in messages {
            if let Some(peer) = self.peers.get(&message.to) {
                let _ = peer.try_send(message);
            }
        }
    }
}

pub fn endpoint(addr: SocketAddr, source_ip: Option<IpAddr>) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .local_address(source_ip)
}

async fn deliver_loop(
    peer: u64,
    addr: SocketAddr,
    source_ip: Option<IpAddr>,
    batch_messages_max: usize,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut client = RaftClient::new(endpoint(addr, source_ip).connect_lazy());
    let mut failures = 0u32;
    while let Some(first) = queue.recv().await {
        let mut messages = vec![first];
        while messages.len() < batch_messages_max {
            match queue.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        match client.deliver(MessageBatch { messages }).await {
            Ok(_) => failures = 0,
            Err(status) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::debug!(peer, %addr, failures, "cannot deliver to peer: {}", status.message());
                }
            }
        }
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
        request: Request<MessageBatch>,
    ) -> Result<Response<DeliverAck>, Status> {
        for message in request.into_inner().messages {
            // A full queue drops the message, as a lossy network would.
            let _ = self.events.try_send(Event::Peer(message));
        }
        Ok(Response::new(DeliverAck {}))
    }
}
