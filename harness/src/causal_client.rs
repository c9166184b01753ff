//! A session of the node's causal keyspace (`faultline.causal.v1`): one logical client
//! that keeps its causal-context token from reply to reply and sends each operation to
//! its own node or, now and then, to another (`session_hop`), as a client behind a load
//! balancer would. A node behind the session's context refuses with a node that has it
//! (`faultline-causal-try`); the session follows that hint once.

use std::net::SocketAddr;
use std::time::Duration;

use faultline_node::proto::causal::causal_client::CausalClient;
use faultline_node::proto::causal::{CausalGetRequest, CausalPutRequest};
use faultline_node::server::causal::TRY_METADATA;
use faultline_node::server::transport::node_endpoint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tonic::transport::Channel;

use crate::client::{Client, Completion, Operation, decode};

/// One lazily connected channel per node, each sent from that node's own address (so a
/// partition that cuts a node off cuts off the clients talking to it, and no other).
pub fn channels(addrs: &[SocketAddr], sources: &[std::net::IpAddr]) -> Vec<Channel> {
    addrs
        .iter()
        .zip(sources)
        .map(|(&addr, &source)| {
            node_endpoint(addr, Some(source), Duration::from_millis(300)).connect_lazy()
        })
        .collect()
}

/// A client of one node's causal keyspace (no source address: for checks, benches and
/// people, not for sessions cut off with their node), each call given `timeout`. Dumps
/// with data can be large, hence the decoding limit.
pub fn connect(addr: SocketAddr, timeout: Duration) -> CausalClient<Channel> {
    CausalClient::new(
        node_endpoint(addr, None, Duration::from_millis(300))
            .timeout(timeout)
            .connect_lazy(),
    )
    .max_decoding_message_size(256 << 20)
}

pub struct CausalSession {
    nodes: Vec<CausalClient<Channel>>,
    home: usize,
    hop: f64,
    rng: ChaCha8Rng,
    token: Vec<u8>,
    timeout: Duration,
    last: usize,
}

impl CausalSession {
    /// A session at node `home`; where it hops is drawn from `seed` and `process`, so a
    /// run's seed replays it.
    pub fn new(
        channels: &[Channel],
        home: usize,
        hop: f64,
        seed: u64,
        process: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            nodes: channels.iter().cloned().map(CausalClient::new).collect(),
            home,
            hop,
            rng: ChaCha8Rng::seed_from_u64(seed ^ process.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            token: Vec::new(),
            timeout,
            last: home,
        }
    }

    fn pick(&mut self) -> usize {
        let n = self.nodes.len();
        if n > 1 && self.rng.random_bool(self.hop) {
            let other = self.rng.random_range(0..n - 1);
            if other >= self.home { other + 1 } else { other }
        } else {
            self.home
        }
    }

    /// The node a refusal names, if it names one other than `at`.
    fn hint(&self, status: &tonic::Status, at: usize) -> Option<usize> {
        let id: usize = status
            .metadata()
            .get(TRY_METADATA)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        (id >= 1 && id <= self.nodes.len() && id - 1 != at).then(|| id - 1)
    }

    async fn get(&mut self, at: usize, key: &str) -> Result<Value, tonic::Status> {
        let mut request = tonic::Request::new(CausalGetRequest {
            key: key.as_bytes().to_vec(),
            context: self.token.clone(),
            wait_ms: 0,
        });
        request.set_timeout(self.timeout);
        let reply = self.nodes[at].get(request).await?.into_inner();
        self.token = reply.context;
        let mut values: Vec<Value> = reply.values.iter().map(|s| decode(&s.value)).collect();
        Ok(match values.len() {
            0 => Value::Null,
            1 => values.remove(0),
            // Siblings, recorded as a list (the checkers read a list as "any of these").
            _ => {
                values.sort_by_key(|v| v.as_i64());
                Value::Array(values)
            }
        })
    }

    async fn put(&mut self, at: usize, key: &str, value: i64) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(CausalPutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_string().into_bytes(),
            context: self.token.clone(),
            wait_ms: 0,
        });
        request.set_timeout(self.timeout);
        let reply = self.nodes[at].put(request).await?.into_inner();
        self.token = reply.context;
        Ok(())
    }

    async fn send(&mut self, operation: &Operation, at: usize) -> Result<Value, tonic::Status> {
        self.last = at;
        match operation {
            Operation::Read { key } => self.get(at, key).await,
            Operation::Write { key, value } => self
                .put(at, key, *value)
                .await
                .map(|()| Value::from(*value)),
            other => Err(tonic::Status::unimplemented(format!(
                "the causal keyspace has only reads and writes, not {other:?}"
            ))),
        }
    }
}

/// A causal write is taken by one node: refused means it did not happen there (the node
/// was behind, fenced, or the request was malformed); anything else may have happened.
fn write_failure(status: &tonic::Status) -> Completion {
    let error = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Aborted
        | tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::ResourceExhausted
        | tonic::Code::Unimplemented => Completion::Refused { error },
        _ => Completion::Info { error },
    }
}

#[tonic::async_trait]
impl Client for CausalSession {
    async fn invoke(&mut self, operation: &Operation) -> Completion {
        let at = self.pick();
        let mut result = self.send(operation, at).await;
        if let Err(status) = &result
            && let Some(next) = self.hint(status, at)
        {
            result = self.send(operation, next).await;
        }
        match result {
            Ok(value) => Completion::Ok { value },
            Err(status) if matches!(operation, Operation::Read { .. }) => Completion::Refused {
                error: format!("{:?}: {}", status.code(), status.message()),
            },
            Err(status) => write_failure(&status),
        }
    }

    async fn resend(&mut self, operation: &Operation) -> Completion {
        // Never called: causal workloads have no write retries (the schema refuses them).
        self.invoke(operation).await
    }

    fn answered_by(&self) -> Option<usize> {
        Some(self.last)
    }
}
