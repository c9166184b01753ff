//! `faultline kv`: a small client for trying the store by hand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{
    CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest, ResponseHeader, StatusRequest,
    compare_and_swap_request::Expected,
};
use tonic::transport::Channel;

#[derive(Args)]
pub struct KvArgs {
    /// The node to talk to (any node: followers forward to the leader).
    #[arg(long, global = true, default_value = "127.0.0.1:7001")]
    endpoint: String,
    /// Give up after this many milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum KvOp {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Read KEY (linearizable unless --serializable).
    Get {
        key: String,
        /// Read the contacted node's local state, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Remove KEY.
    Delete { key: String },
    /// Set KEY to NEW if it holds EXPECTED (or --absent, or --revision N).
    Cas {
        key: String,
        /// The value KEY must hold.
        #[arg(long, conflicts_with_all = ["revision", "absent"])]
        expected: Option<String>,
        /// The revision KEY must have.
        #[arg(long, conflicts_with = "absent")]
        revision: Option<u64>,
        /// KEY must not exist.
        #[arg(long)]
        absent: bool,
        new: String,
    },
    /// Show the node's Raft status.
    Status,
}

pub async fn connect(endpoint: &str) -> anyhow::Result<KvClient<Channel>> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .with_context(|| format!("{endpoint:?} is not a valid endpoint; use HOST:PORT"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| {
            format!("cannot connect to {endpoint}; is a faultline-node listening there?")
        })?;
    Ok(KvClient::new(channel))
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn describe(header: Option<ResponseHeader>) -> String {
    let h = header.unwrap_or_default();
    format!(
        "(node {}, leader {}, term {}, lamport {})",
        h.node_id, h.leader_id, h.term, h.lamport_time
    )
}

pub async fn run(args: KvArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(&args.endpoint).await?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let outcome = match args.op {
        KvOp::Put { key, value } => client
            .put(request(PutRequest { key: key.into_bytes(), value: value.into_bytes(), write_id: None }, timeout))
            .await
            .map(|r| {
                let r = r.into_inner();
                println!("OK revision {} {}", r.revision, describe(r.header));
            }),
        KvOp::Get { key, serializable } => {
            client.get(request(GetRequest { key: key.into_bytes(), serializable }, timeout)).await.map(|r| {
                let r = r.into_inner();
                if r.found {
                    println!("{} (revision {}) {}", String::from_utf8_lossy(&r.value), r.revision, describe(r.header));
                } else {
                    println!("(not found) {}", describe(r.header));
                }
            })
        }
        KvOp::Delete { key } => client
            .delete(request(DeleteRequest { key: key.into_bytes(), write_id: None }, timeout))
            .await
            .map(|r| {
                let r = r.into_inner();
                println!("{} {}", if r.deleted { "DELETED" } else { "(not found)" }, describe(r.header));
            }),
        KvOp::Cas { key, expected, revision, absent, new } => {
            let expected = match (expected, revision, absent) {
                (Some(value), _, _) => Expected::ExpectedValue(value.into_bytes()),
                (None, Some(revision), _) => Expected::ExpectedRevision(revision),
                (None, None, true) => Expected::ExpectedAbsent(true),
                (None, None, false) => anyhow::bail!("cas needs --expected VALUE, --revision N or --absent"),
            };
            let message = CompareAndSwapRequest {
                key: key.into_bytes(),
                expected: Some(expected),
                new_value: new.into_bytes(),
                write_id: None,
            };
            match client.compare_and_swap(request(message, timeout)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.succeeded {
                        println!("OK revision {} {}", r.revision, describe(r.header));
                    } else {
                        let current = if r.found { String::from_utf8_lossy(&r.current_value).into_owned() } else { "(absent)".into() };
                        println!("MISMATCH current {current} (revision {}) {}", r.revision, describe(r.header));
                        return Ok(ExitCode::from(1));
                    }
                    Ok(())
                }
                Err(status) => Err(status),
            }
        }
        KvOp::Status => client.status(request(StatusRequest::default(), timeout)).await.map(|r| {
            let s = r.into_inner();
            println!(
                "node {} {} term {} leader {} commit {} applied {} last {} snapshot {} lamport {} voters {:?}{}",
                s.id,
                s.role,
                s.term,
                s.leader_id,
                s.commit_index,
                s.applied_index,
                s.last_index,
                s.snapshot_index,
                s.lamport_time,
                s.voters,
                if s.seeded_bugs.is_empty() { String::new() } else { format!(" SEEDED BUGS {:?}", s.seeded_bugs) }
            );
        }),
    };
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(status) => {
            eprintln!("faultline: {:?}: {}", status.code(), status.message());
            Ok(ExitCode::from(2))
        }
    }
}
