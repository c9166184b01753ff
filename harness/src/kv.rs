//! `faultline kv`: a small client for trying the store by hand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{
    CompareAndSwapRequest, GetPartitionMapRequest, GetPartitionMapResponse, MergeRequest,
    MoveReplicaRequest, ResponseHeader, ScanRequest, SplitRequest, StatusRequest,
    TransferLeaderRequest, compare_and_swap_request::Expected,
};
use tonic::transport::Channel;

#[derive(Args)]
pub struct KvArgs {
    /// A node of the cluster (any node: the client learns the partition map from it).
    #[arg(long, global = true, default_value = "127.0.0.1:7001")]
    endpoint: String,
    /// direct: send each request to its partition's leader, as the map says (the routing
    /// client); node: send it to --endpoint, which serves it or forwards it.
    #[arg(long, global = true, default_value = "direct")]
    routing: Routing,
    /// Give up after this many milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum LeaseOp {
    /// A lease of TTL_MS (raised to the node's minimum if below it), in the partition
    /// holding --key (keys attached to it must be there; a lock's is lock/NAME).
    Grant {
        ttl_ms: u64,
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Keep lease ID alive, a keep-alive every --every-ms, until --count are answered
    /// (0: until interrupted); prints each answer.
    KeepAlive {
        id: u64,
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Revoke lease ID: its keys are deleted.
    Revoke { id: u64 },
    /// What lease ID has left, by its leader's clock (--keys: and the keys it carries).
    Ttl {
        id: u64,
        #[arg(long)]
        keys: bool,
    },
}

#[derive(Subcommand)]
enum KvOp {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Attach KEY to lease ID: it is deleted when the lease expires or is revoked.
        #[arg(long, value_name = "ID")]
        lease: Option<u64>,
        /// A write a lock protects: refused if KEY has accepted a higher token.
        #[arg(long, value_name = "TOKEN")]
        fencing_token: Option<u64>,
    },
    /// Leases: grant, keep alive, revoke, and ask what one has left.
    #[command(subcommand)]
    Lease(LeaseOp),
    /// Take lock NAME (the key lock/NAME) for lease ID, waiting while another holds it;
    /// prints the fencing token to send with every write the lock protects.
    Lock {
        name: String,
        #[arg(long, value_name = "ID")]
        lease: u64,
    },
    /// Release lock NAME if lease ID holds it.
    Unlock {
        name: String,
        #[arg(long, value_name = "ID")]
        lease: u64,
    },
    /// Print every change of KEY (--prefix: of every key starting with KEY; --range-end:
    /// of the keys from KEY up to END), from revision --from (0: from now), resuming after
    /// a disconnect from the last revision seen in each partition. Stops after --count
    /// events (0: when interrupted).
    Watch {
        key: String,
        #[arg(long, conflicts_with = "range_end")]
        prefix: bool,
        #[arg(long, value_name = "END")]
        range_end: Option<String>,
        #[arg(long, default_value_t = 0, value_name = "REV")]
        from: u64,
        /// With each change, the value before it.
        #[arg(long)]
        prev: bool,
        /// Print a progress line per partition at most this often while nothing changes.
        #[arg(long, default_value_t = 0, value_name = "MS")]
        progress_ms: u64,
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// One JSON object per line (type, key, value, partition, revision, prev_value).
        #[arg(long)]
        json: bool,
    },
    /// Drop the versions of KEY's partition that no read or watch after REVISION needs.
    Compact { key: String, revision: u64 },
    /// Every member of the cluster as the --endpoint node's gossip sees it: state
    /// (alive, suspect, dead, left), incarnation, address, roles, partitions led, load,
    /// health and services, and that node's phi for each; the coordinator (emergent
    /// leader) is marked.
    Members {
        /// A JSON list of objects (id, state, address, incarnation, roles, leads, load,
        /// phi, state_for_ms, coordinator, health, services).
        #[arg(long)]
        json: bool,
    },
    /// Read KEY (linearizable unless --serializable).
    Get {
        key: String,
        /// Read the contacted node's local state, possibly stale.
        #[arg(long, conflicts_with = "lease")]
        serializable: bool,
        /// Read from the leader's lease if it holds one (no round to a quorum; safe while
        /// clocks drift apart less than the nodes' --lease-read-drift).
        #[arg(long)]
        lease: bool,
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
    /// Show the node's Raft status (--groups: every Raft group it hosts).
    Status {
        /// List every group: the consistent core (0) and each partition replica.
        #[arg(long)]
        groups: bool,
    },
    /// Keys from START up to END (exclusive; empty: to the end), in key order.
    Scan {
        start: String,
        #[arg(default_value = "")]
        end: String,
        /// Most keys to return.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        serializable: bool,
    },
    /// Read several keys at once.
    BatchGet { keys: Vec<String> },
    /// Print the partition map: each partition's id, range or bucket, epoch, replicas,
    /// leader and load.
    Map {
        /// An array of objects (id, start, end or bucket, epoch, replicas, leader, ...).
        #[arg(long)]
        json: bool,
    },
    /// Hand partition ID's leadership to node N (a replica of it), and wait until the
    /// partition map shows N leading.
    TransferLeader {
        id: u64,
        #[arg(long, value_name = "N")]
        to: u64,
    },
    /// Split the range holding KEY at KEY: keys from KEY on move to a new partition on the
    /// same replicas (range partitioning). Waits until the partition map shows both.
    Split { key: String },
    /// Merge partition ID with the range right after it (same replicas): ID keeps its id
    /// and spans both. Waits until the partition map shows the merged range.
    Merge { id: u64 },
    /// Drain node N (move each of its replicas to the other nodes, fewest replicas first),
    /// then remove it from the cluster. Its process can be stopped afterwards.
    RemoveNode { node: u64 },
    /// Move partition ID's replica from node N to node M: M is added as a learner, caught
    /// up by snapshot and promoted; leadership moves off N if N leads; N is removed. Waits
    /// until the partition map shows M and not N (raise --timeout-ms for large ranges).
    Move {
        id: u64,
        #[arg(long, value_name = "N")]
        from: u64,
        #[arg(long, value_name = "M")]
        to: u64,
    },
    /// Write KEY=VALUE to the causal keyspace at --endpoint, which takes it alone (no
    /// quorum). Prints the write's dot and stamp and the session's new context: pass it as
    /// --context to the next causal command, at any node, to keep read-your-writes.
    CausalPut {
        key: String,
        value: String,
        /// The context (hex) the last causal command printed; none starts a session.
        #[arg(long, default_value = "")]
        context: String,
    },
    /// Read KEY from the causal keyspace at --endpoint: every concurrent value (siblings)
    /// and the new context. A node behind --context waits, then names one that is not.
    CausalGet {
        key: String,
        #[arg(long, default_value = "")]
        context: String,
    },
    /// Delete KEY in the causal keyspace at --endpoint.
    CausalDelete {
        key: String,
        #[arg(long, default_value = "")]
        context: String,
    },
    /// What --endpoint's causal replica holds: its applied vector, digest and counts
    /// (--data: every key with its siblings).
    CausalDump {
        #[arg(long)]
        data: bool,
    },
}

pub async fn connect(endpoint: &str) -> anyhow::Result<KvClient<Channel>> {
    Ok(KvClient::new(connect_channel(endpoint).await?))
}

/// A channel to `endpoint`, for any of the node's services.
pub async fn connect_channel(endpoint: &str) -> anyhow::Result<Channel> {
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
    Ok(channel)
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
    let seed =
        std::net::ToSocketAddrs::to_socket_addrs(args.endpoint.trim_start_matches("http://"))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .with_context(|| {
                format!(
                    "--endpoint {:?} is not an address; use HOST:PORT, e.g. 127.0.0.1:7001",
                    args.endpoint
                )
            })?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let router = RoutingClient::new(vec![seed], args.routing, None, Duration::from_secs(2));
    let needs_node = matches!(
        args.op,
        KvOp::Map { .. }
            | KvOp::Status { .. }
            | KvOp::TransferLeader { .. }
            | KvOp::Split { .. }
            | KvOp::Merge { .. }
            | KvOp::Move { .. }
            | KvOp::RemoveNode { .. }
    );
    let mut client = if needs_node {
        Some(connect(&args.endpoint).await?)
    } else {
        None
    };
    if let Some(outcome) = causal(&args.op, seed, timeout).await {
        return match outcome {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(CausalFailure::Status(status)) => {
                eprintln!("faultline: {:?}: {}", status.code(), status.message());
                if let Some(node) = status
                    .metadata()
                    .get(faultline_node::server::causal::TRY_METADATA)
                {
                    eprintln!("faultline: try node {}", node.to_str().unwrap_or("?"));
                }
                Ok(ExitCode::from(2))
            }
            Err(CausalFailure::Usage(message)) => {
                eprintln!("faultline: {message}");
                Ok(ExitCode::from(2))
            }
        };
    }
    if let KvOp::Watch {
        key,
        prefix,
        range_end,
        from,
        prev,
        progress_ms,
        count,
        json,
    } = &args.op
    {
        let range_end = match (prefix, range_end) {
            (true, _) => faultline_node::client::watch::prefix_end(key.as_bytes()),
            (false, Some(end)) => end.clone().into_bytes(),
            (false, None) => Vec::new(),
        };
        let cursor = faultline_node::client::watch::WatchCursor {
            key: key.clone().into_bytes(),
            range_end,
            prev_value: *prev,
            progress_notify_ms: *progress_ms,
            start_revision: *from,
            next: Default::default(),
        };
        return watch(&args.endpoint, cursor, *count, *json, timeout).await;
    }
    if let KvOp::Members { json } = &args.op {
        return members(&args.endpoint, *json, timeout).await;
    }
    let outcome = match args.op {
        KvOp::Watch { .. } | KvOp::Members { .. } => Ok(()),
        KvOp::Compact { key, revision } => {
            let message = faultline_node::proto::kv::CompactRequest {
                key: key.into_bytes(),
                revision,
            };
            let mut kv = connect(&args.endpoint).await?;
            kv.compact(message).await.map(|r| {
                let r = r.into_inner();
                println!("partition {} compacted at revision {} {}", r.partition, r.compact_revision, describe(r.header));
            })
        }
        // Answered above, by the node asked.
        KvOp::CausalPut { .. }
        | KvOp::CausalGet { .. }
        | KvOp::CausalDelete { .. }
        | KvOp::CausalDump { .. } => Ok(()),
        KvOp::Put { key, value, lease, fencing_token } => {
            let message = faultline_node::proto::kv::PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease: lease.unwrap_or(0),
                fencing_token: fencing_token.unwrap_or(0),
                ..Default::default()
            };
            router.put_request(message, timeout).await.map(|r| {
                println!("OK revision {}{} {}", r.revision, stamp(r.timestamp), describe(r.header));
            })
        }
        KvOp::Lease(LeaseOp::Grant { ttl_ms, key }) => {
            router.lease_grant(ttl_ms, key.into_bytes(), timeout).await.map(|r| {
                println!("lease {} ttl {} ms{} {}", r.id, r.ttl_ms, if r.note.is_empty() { String::new() } else { format!(" ({})", r.note) }, describe(r.header));
            })
        }
        KvOp::Lease(LeaseOp::KeepAlive { id, every_ms, count }) => {
            let mut answered = 0;
            loop {
                match router.lease_renew(id, timeout).await {
                    Ok(r) => println!("lease {} renewed: ttl {} ms {}", r.id, r.ttl_ms, describe(r.header)),
                    Err(status) => break Err(status),
                }
                answered += 1;
                if count > 0 && answered >= count {
                    break Ok(());
                }
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
        }
        KvOp::Lease(LeaseOp::Revoke { id }) => router.lease_revoke(id, timeout).await.map(|r| {
            println!("REVOKED lease {id}: {} keys deleted {}", r.deleted_keys, describe(r.header));
        }),
        KvOp::Lease(LeaseOp::Ttl { id, keys }) => router.lease_time_to_live(id, keys, timeout).await.map(|r| {
            println!("lease {}: {} ms left of {} ms {}", r.id, r.ttl_ms, r.granted_ttl_ms, describe(r.header));
            for key in &r.keys {
                println!("  {}", String::from_utf8_lossy(key));
            }
        }),
        KvOp::Lock { name, lease } => router.lock(&name, lease, timeout).await.map(|r| {
            println!("LOCKED {} token {} {}", String::from_utf8_lossy(&r.key), r.token, describe(r.header));
        }),
        KvOp::Unlock { name, lease } => router.unlock(&name, lease, timeout).await.map(|r| {
            println!("{} {}", if r.released { "RELEASED" } else { "(not held by this lease)" }, describe(r.header));
        }),
        KvOp::Get { key, serializable, lease } => {
            let message = faultline_node::proto::kv::GetRequest { key: key.into_bytes(), serializable, lease_read: lease };
            router.get_request(message, timeout).await.map(|r| {
                if r.found {
                    println!("{} (revision {}) {}", String::from_utf8_lossy(&r.value), r.revision, describe(r.header));
                } else {
                    println!("(not found) {}", describe(r.header));
                }
            })
        }
        KvOp::Delete { key } => router
            .delete(key.into_bytes(), None, timeout)
            .await
            .map(|r| {
                println!("{}{} {}", if r.deleted { "DELETED" } else { "(not found)" }, stamp(r.timestamp), describe(r.header));
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
            match router.compare_and_swap(message, timeout).await {
                Ok(r) => {
                    if r.succeeded {
                        println!("OK revision {}{} {}", r.revision, stamp(r.timestamp), describe(r.header));
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
        KvOp::Scan { start, end, limit, serializable } => {
            let message = ScanRequest { start: start.into_bytes(), end: end.into_bytes(), limit, serializable };
            router.scan(message, timeout).await.map(|r| {
                for item in &r.items {
                    println!("{} = {} (revision {})", String::from_utf8_lossy(&item.key), String::from_utf8_lossy(&item.value), item.revision);
                }
                println!("{} keys{} from partitions {:?}", r.items.len(), if r.more { " (more left: raise --limit)" } else { "" }, r.partitions);
            })
        }
        KvOp::BatchGet { keys } => {
            let wanted = keys.iter().map(|k| k.clone().into_bytes()).collect();
            router.batch_get(wanted, false, timeout).await.map(|r| {
                for (key, result) in keys.iter().zip(r.results) {
                    if result.found {
                        println!("{key} = {} (revision {})", String::from_utf8_lossy(&result.value), result.revision);
                    } else {
                        println!("{key} (not found)");
                    }
                }
            })
        }
        KvOp::TransferLeader { id, to } => {
            let kv = client.as_mut().expect("connected for transfer-leader");
            transfer_leader(kv, id, to, timeout).await
        }
        KvOp::RemoveNode { node } => {
            let kv = client.as_mut().expect("connected for remove-node");
            let started = std::time::Instant::now();
            kv.remove_node(request(
                faultline_node::proto::kv::RemoveNodeRequest { node },
                timeout,
            ))
            .await
            .map(|r| {
                let moved = r.into_inner().moved;
                for p in &moved {
                    println!("partition {}: replicas now {:?}", p.id, p.replicas);
                }
                println!(
                    "node {node} drained ({} replicas moved) and removed from the cluster in {} ms; its process can be stopped",
                    moved.len(),
                    started.elapsed().as_millis()
                );
            })
        }
        KvOp::Move { id, from, to } => {
            let kv = client.as_mut().expect("connected for move");
            move_replica(kv, id, from, to, timeout).await
        }
        KvOp::Split { key } => {
            let kv = client.as_mut().expect("connected for split");
            split(kv, key.into_bytes(), timeout).await
        }
        KvOp::Merge { id } => {
            let kv = client.as_mut().expect("connected for merge");
            merge(kv, id, timeout).await
        }
        KvOp::Map { json } => client.as_mut().expect("connected for map").get_partition_map(request(GetPartitionMapRequest {}, timeout)).await.map(|r| {
            print_map(&r.into_inner(), json);
        }),
        KvOp::Status { groups } => client.as_mut().expect("connected for status").status(request(StatusRequest { all_groups: groups, ..StatusRequest::default() }, timeout)).await.map(|r| {
            let s = r.into_inner();
            for g in &s.groups {
                println!(
                    "group {:>4} {:<9} term {} leader {} commit {} applied {} last {} voters {:?}{}",
                    g.group_id, g.role, g.term, g.leader_id, g.commit_index, g.applied_index, g.last_index, g.voters,
                    if g.quiesced { " quiesced" } else { "" }
                );
            }
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

/// `faultline kv watch`: prints each change; a stream cut off is resumed from the cursor
/// (every `timeout` of trying without a stream gives up); a compaction or any other
/// cancellation ends it with exit code 2.
async fn watch(
    endpoint: &str,
    mut cursor: faultline_node::client::watch::WatchCursor,
    count: u64,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    use faultline_node::client::watch::Observed;
    use faultline_node::proto::kv::EventType;
    use faultline_node::proto::kv::watch_client::WatchClient;
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .with_context(|| format!("{endpoint:?} is not a valid endpoint; use HOST:PORT"))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut client = WatchClient::new(channel);
    let mut printed = 0u64;
    let mut trying_since = std::time::Instant::now();
    loop {
        let mut stream = match client.watch(cursor.request()).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                eprintln!("faultline: {:?}: {}", status.code(), status.message());
                return Ok(ExitCode::from(2));
            }
            Err(status) => {
                if trying_since.elapsed() > timeout {
                    eprintln!(
                        "faultline: no watch for {} ms (last: {:?}: {}); giving up",
                        timeout.as_millis(),
                        status.code(),
                        status.message()
                    );
                    return Ok(ExitCode::from(2));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => break,
            };
            trying_since = std::time::Instant::now();
            for event in &response.events {
                let delete = event.r#type == EventType::Delete as i32;
                let key = String::from_utf8_lossy(&event.key);
                let value = String::from_utf8_lossy(&event.value);
                let prev = event
                    .has_prev_value
                    .then(|| String::from_utf8_lossy(&event.prev_value).into_owned());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "type": if delete { "delete" } else { "put" },
                            "key": key,
                            "value": if delete { serde_json::Value::Null } else { value.clone().into() },
                            "partition": response.partition,
                            "revision": event.revision,
                            "prev_value": prev,
                        })
                    );
                } else if delete {
                    println!(
                        "DELETE {key} (partition {} revision {}){}",
                        response.partition,
                        event.revision,
                        prev.map(|p| format!(" was {p}")).unwrap_or_default()
                    );
                } else {
                    println!(
                        "PUT {key} = {value} (partition {} revision {}){}",
                        response.partition,
                        event.revision,
                        prev.map(|p| format!(" was {p}")).unwrap_or_default()
                    );
                }
                printed += 1;
                if count > 0 && printed >= count {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            if response.events.is_empty() && !response.created && !response.canceled && !json {
                println!(
                    "PROGRESS partition {} revision {}",
                    response.partition, response.revision
                );
            }
            if let Observed::Canceled {
                reason, compacted, ..
            } = cursor.observe(&response)
            {
                eprintln!("faultline: the watch ended: {reason}");
                if compacted.is_some() {
                    return Ok(ExitCode::from(2));
                }
                break;
            }
        }
        eprintln!(
            "faultline: the watch was cut off; resuming from {:?}",
            cursor.next
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks for the transfer (any node routes it to the partition's leader), then waits
/// until the map says `to` leads.
async fn transfer_leader(
    kv: &mut KvClient<Channel>,
    id: u64,
    to: u64,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let started = std::time::Instant::now();
    let from = kv
        .transfer_leader(request(
            TransferLeaderRequest { partition: id, to },
            timeout,
        ))
        .await?
        .into_inner()
        .from;
    loop {
        let map = kv
            .get_partition_map(request(GetPartitionMapRequest {}, timeout))
            .await?
            .into_inner();
        if let Some(p) = map.partitions.iter().find(|p| p.id == id)
            && p.leader == to
        {
            println!(
                "partition {id}: leader n{from} -> n{to} (term {}) in {} ms",
                p.leader_term,
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(tonic::Status::deadline_exceeded(format!(
                "node {from} started handing partition {id} to n{to}, but the map does not show n{to} leading after {} ms (the transfer gives up after an election timeout if n{to} cannot win)",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks for the move (any node runs it), then waits until the map shows it.
async fn move_replica(
    kv: &mut KvClient<Channel>,
    id: u64,
    from: u64,
    to: u64,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let started = std::time::Instant::now();
    let moved = kv
        .move_replica(request(
            MoveReplicaRequest {
                partition: id,
                from,
                to,
            },
            timeout,
        ))
        .await?
        .into_inner()
        .descriptor
        .ok_or_else(|| tonic::Status::internal("the node's answer names no range"))?;
    let epoch = moved.epoch.unwrap_or_default();
    loop {
        let map = kv
            .get_partition_map(request(GetPartitionMapRequest {}, timeout))
            .await?
            .into_inner();
        if map.partitions.iter().any(|p| {
            p.id == id
                && p.epoch.unwrap_or_default().conf_version >= epoch.conf_version
                && p.replicas.contains(&to)
                && !p.replicas.contains(&from)
        }) {
            println!(
                "partition {id}: replica n{from} -> n{to}, replicas now {:?} (c{}) in {} ms",
                moved.replicas,
                epoch.conf_version,
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(tonic::Status::deadline_exceeded(format!(
                "the replica moved (replicas {:?}, c{}), but the map does not show it after {} ms",
                moved.replicas,
                epoch.conf_version,
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks for the split (any node routes it to the range's leader), then waits until the
/// map shows the new partition.
async fn split(
    kv: &mut KvClient<Channel>,
    key: Vec<u8>,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let started = std::time::Instant::now();
    let response = kv
        .split(request(SplitRequest { key: key.clone() }, timeout))
        .await?
        .into_inner();
    let (Some(left), Some(right)) = (response.left, response.right) else {
        return Err(tonic::Status::internal("the node's answer names no ranges"));
    };
    let span = |p: &faultline_node::proto::kv::PartitionDescriptor| {
        let epoch = p.epoch.unwrap_or_default();
        let end = if p.end.is_empty() {
            "+inf".to_string()
        } else {
            shown(&p.end)
        };
        format!(
            "{} [{}, {end}) v{}/c{}",
            p.id,
            shown(&p.start),
            epoch.version,
            epoch.conf_version
        )
    };
    loop {
        let map = kv
            .get_partition_map(request(GetPartitionMapRequest {}, timeout))
            .await?
            .into_inner();
        if map.partitions.iter().any(|p| p.id == right.id) {
            println!(
                "split at {}: {} and {} in {} ms",
                shown(&key),
                span(&left),
                span(&right),
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(tonic::Status::deadline_exceeded(format!(
                "the range split ({} and {}), but the map does not show partition {} after {} ms",
                span(&left),
                span(&right),
                right.id,
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks for the merge (any node routes it to the left range's leader), then waits until
/// the map shows the merged range.
async fn merge(
    kv: &mut KvClient<Channel>,
    id: u64,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let started = std::time::Instant::now();
    let merged = kv
        .merge(request(MergeRequest { partition: id }, timeout))
        .await?
        .into_inner()
        .merged
        .ok_or_else(|| tonic::Status::internal("the node's answer names no range"))?;
    let epoch = merged.epoch.unwrap_or_default();
    loop {
        let map = kv
            .get_partition_map(request(GetPartitionMapRequest {}, timeout))
            .await?
            .into_inner();
        if map
            .partitions
            .iter()
            .any(|p| p.id == id && p.epoch.unwrap_or_default().version >= epoch.version)
        {
            let end = if merged.end.is_empty() {
                "+inf".to_string()
            } else {
                shown(&merged.end)
            };
            println!(
                "merged: {id} [{}, {end}) v{}/c{} in {} ms",
                shown(&merged.start),
                epoch.version,
                epoch.conf_version,
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(tonic::Status::deadline_exceeded(format!(
                "the ranges merged into partition {id} (v{}), but the map does not show it after {} ms",
                epoch.version,
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A key for a person: text if printable, hex otherwise; empty as "".
fn shown(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(key).into_owned()
    } else {
        key.iter().map(|b| format!("{b:02x}")).collect::<String>()
    }
}

fn print_map(map: &GetPartitionMapResponse, json: bool) {
    if json {
        let partitions: Vec<serde_json::Value> = map
            .partitions
            .iter()
            .map(|p| {
                let epoch = p.epoch.unwrap_or_default();
                let mut object = serde_json::json!({
                    "id": p.id,
                    "epoch": {"version": epoch.version, "conf_version": epoch.conf_version},
                    "replicas": p.replicas,
                    "learners": p.learners,
                    "leader": (p.leader != 0).then_some(p.leader),
                    "leader_term": p.leader_term,
                    "reads_per_sec": p.reads_per_sec,
                    "writes_per_sec": p.writes_per_sec,
                });
                if p.bucket_count > 0 {
                    object["bucket"] = p.bucket.into();
                    object["buckets"] = p.bucket_count.into();
                } else {
                    object["start"] = shown(&p.start).into();
                    object["end"] = shown(&p.end).into();
                }
                object
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&partitions).unwrap_or_default()
        );
        return;
    }
    println!(
        "{} partitioning, map version {}, consistent core on {:?} (leader {})",
        map.partitioning,
        map.version,
        map.core_replicas,
        if map.core_leader == 0 {
            "unknown".to_string()
        } else {
            format!("n{}", map.core_leader)
        }
    );
    let nodes: Vec<String> = map
        .nodes
        .iter()
        .map(|n| {
            let state = match faultline_node::proto::kv::NodeState::try_from(n.state) {
                Ok(faultline_node::proto::kv::NodeState::Draining) => " (draining)",
                Ok(faultline_node::proto::kv::NodeState::Removed) => " (removed)",
                _ => "",
            };
            format!("n{} {}{state}", n.id, n.address)
        })
        .collect();
    println!("nodes: {}", nodes.join(", "));
    println!(
        "{:>4}  {:<28} {:>7}  {:<12} {:>7} {:>9}",
        "id", "range or bucket", "epoch", "replicas", "leader", "ops/s"
    );
    for p in &map.partitions {
        let span = if p.bucket_count > 0 {
            format!("bucket {}/{}", p.bucket, p.bucket_count)
        } else {
            let end = if p.end.is_empty() {
                "+inf".to_string()
            } else {
                shown(&p.end)
            };
            format!("[{}, {end})", shown(&p.start))
        };
        let epoch = p.epoch.unwrap_or_default();
        let replicas: Vec<String> = p
            .replicas
            .iter()
            .map(|r| format!("n{r}"))
            .chain(p.learners.iter().map(|l| format!("n{l}(learner)")))
            .collect();
        println!(
            "{:>4}  {:<28} {:>7}  {:<12} {:>7} {:>9.0}",
            p.id,
            span,
            format!("v{}/c{}", epoch.version, epoch.conf_version),
            replicas.join(","),
            if p.leader == 0 {
                "-".to_string()
            } else {
                format!("n{}", p.leader)
            },
            p.reads_per_sec + p.writes_per_sec
        );
    }
}

/// A write's hybrid-logical-clock timestamp, as ` at WALL_MS.LOGICAL` (empty if none).
fn stamp(timestamp: Option<faultline_node::proto::kv::HlcTimestamp>) -> String {
    timestamp.map_or(String::new(), |t| {
        format!(" at {}.{}", t.wall_ms, t.logical)
    })
}

enum CausalFailure {
    Status(tonic::Status),
    Usage(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, CausalFailure> {
    let bad = || {
        CausalFailure::Usage(format!(
            "--context {text:?} is not hex: pass the context a causal command printed"
        ))
    };
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// The causal commands (None: not one of them). They talk to --endpoint alone: the
/// causal keyspace is answered by whichever node is asked.
async fn causal(
    op: &KvOp,
    endpoint: std::net::SocketAddr,
    timeout: Duration,
) -> Option<Result<(), CausalFailure>> {
    use faultline_node::proto::causal::{
        CausalDeleteRequest, CausalGetRequest, CausalPutRequest, DumpRequest,
    };
    if !matches!(
        op,
        KvOp::CausalPut { .. }
            | KvOp::CausalGet { .. }
            | KvOp::CausalDelete { .. }
            | KvOp::CausalDump { .. }
    ) {
        return None;
    }
    let mut client = faultline_harness::causal_client::connect(endpoint, timeout);
    let stamp = |t: Option<faultline_node::proto::kv::HlcTimestamp>| {
        t.map(|t| format!("{}.{}", t.wall_ms, t.logical))
            .unwrap_or_default()
    };
    let put_reply = |r: faultline_node::proto::causal::CausalPutResponse| {
        let dot = r.dot.unwrap_or_default();
        println!(
            "OK n{}'s write {} at {}\ncontext {}",
            dot.node,
            dot.counter,
            stamp(r.timestamp),
            hex(&r.context)
        );
    };
    Some(
        async {
            match op {
                KvOp::CausalPut { key, value, context } => {
                    let context = unhex(context)?;
                    let reply = client
                        .put(CausalPutRequest {
                            key: key.clone().into_bytes(),
                            value: value.clone().into_bytes(),
                            context,
                            wait_ms: 0,
                        })
                        .await
                        .map_err(CausalFailure::Status)?;
                    put_reply(reply.into_inner());
                }
                KvOp::CausalDelete { key, context } => {
                    let context = unhex(context)?;
                    let reply = client
                        .delete(CausalDeleteRequest {
                            key: key.clone().into_bytes(),
                            context,
                            wait_ms: 0,
                        })
                        .await
                        .map_err(CausalFailure::Status)?;
                    put_reply(reply.into_inner());
                }
                KvOp::CausalGet { key, context } => {
                    let context = unhex(context)?;
                    let reply = client
                        .get(CausalGetRequest {
                            key: key.clone().into_bytes(),
                            context,
                            wait_ms: 0,
                        })
                        .await
                        .map_err(CausalFailure::Status)?
                        .into_inner();
                    if reply.values.is_empty() {
                        println!("(not found)");
                    }
                    for sibling in &reply.values {
                        let dot = sibling.dot.unwrap_or_default();
                        println!(
                            "{} (n{}'s write {} at {})",
                            String::from_utf8_lossy(&sibling.value),
                            dot.node,
                            dot.counter,
                            stamp(sibling.timestamp)
                        );
                    }
                    println!("context {}", hex(&reply.context));
                }
                KvOp::CausalDump { data } => {
                    let d = client
                        .dump(DumpRequest { include_data: *data })
                        .await
                        .map_err(CausalFailure::Status)?
                        .into_inner();
                    let applied: Vec<String> = d
                        .applied
                        .iter()
                        .map(|e| format!("n{}:{}", e.node, e.counter))
                        .collect();
                    println!(
                        "node {} ({}) applied [{}] digest {:016x} keys {} pending {} log {} exchanged {} B out, {} B in, LWW overwrote {}",
                        d.node_id,
                        d.resolve,
                        applied.join(" "),
                        d.digest,
                        d.keys,
                        d.pending,
                        d.log,
                        d.exchange_bytes_sent,
                        d.exchange_bytes_received,
                        d.overwritten_total
                    );
                    for key in &d.data {
                        let values: Vec<String> = key
                            .siblings
                            .iter()
                            .map(|s| faultline_harness::causal_store::value_text(&s.value))
                            .collect();
                        println!("{} = {}", String::from_utf8_lossy(&key.key), values.join(" | "));
                    }
                }
                // Not a causal command: refused above.
                _ => {}
            }
            Ok(())
        }
        .await,
    )
}

/// `faultline kv members`: the asked node's view of the membership.
async fn members(endpoint: &str, json: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    use faultline_node::proto::membership::MembersRequest;
    use faultline_node::proto::membership::membership_client::MembershipClient;
    let mut client = MembershipClient::new(connect_channel(endpoint).await?);
    let reply = match client.members(request(MembersRequest {}, timeout)).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            eprintln!("faultline: {:?}: {}", status.code(), status.message());
            return Ok(ExitCode::from(2));
        }
    };
    let rows: Vec<serde_json::Value> = reply
        .members
        .iter()
        .map(|m| {
            let meta = m.meta.clone().unwrap_or_default();
            let down: Vec<&faultline_node::proto::membership::ServiceHealth> =
                meta.services.iter().filter(|s| !s.serving).collect();
            let health = if meta.services.is_empty() {
                "unknown".to_string()
            } else if down.is_empty() {
                "serving".to_string()
            } else {
                "not-serving".to_string()
            };
            serde_json::json!({
                "id": m.id,
                "state": faultline_harness::membership_client::state_name(m.state),
                "address": meta.address,
                "incarnation": m.incarnation,
                "roles": meta.roles,
                "leads": meta.leads,
                "load": meta.load,
                "started_ms": meta.started_ms,
                "phi": (m.phi * 100.0).round() / 100.0,
                "state_for_ms": m.state_for_ms,
                "coordinator": m.id == reply.coordinator,
                "health": health,
                "services": meta.services.iter().map(|s| serde_json::json!({
                    "name": s.name, "serving": s.serving, "reason": s.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<4} {:<8} {:>4} {:<22} {:<10} {:<12} {:>6} {:>6} {:>9}  HEALTH",
        "ID", "STATE", "INC", "ADDRESS", "ROLES", "LEADS", "LOAD", "PHI", "FOR"
    );
    for (row, m) in rows.iter().zip(&reply.members) {
        let meta = m.meta.clone().unwrap_or_default();
        let leads: Vec<String> = meta.leads.iter().map(u64::to_string).collect();
        let reasons: Vec<String> = meta
            .services
            .iter()
            .filter(|s| !s.serving)
            .map(|s| {
                format!(
                    "{} ({})",
                    s.name.rsplit('.').next().unwrap_or(&s.name),
                    s.reason
                )
            })
            .collect();
        let health = if reasons.is_empty() {
            row["health"].as_str().unwrap_or("?").to_string()
        } else {
            format!("not-serving: {}", reasons.join("; "))
        };
        println!(
            "{:<4} {:<8} {:>4} {:<22} {:<10} {:<12} {:>6} {:>6.1} {:>8.1}s  {}{}",
            m.id,
            faultline_harness::membership_client::state_name(m.state),
            m.incarnation,
            meta.address,
            meta.roles.join(","),
            if leads.is_empty() {
                "-".to_string()
            } else {
                leads.join(",")
            },
            meta.load,
            m.phi,
            m.state_for_ms as f64 / 1000.0,
            health,
            if m.id == reply.coordinator {
                "  [coordinator]"
            } else {
                ""
            },
        );
    }
    println!(
        "as node {} sees it; phi above {} counts as unreachable from there; the coordinator is the oldest alive member",
        reply.node_id, reply.phi_threshold
    );
    Ok(ExitCode::SUCCESS)
}
