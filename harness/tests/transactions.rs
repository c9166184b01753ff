//! Transactions across partitions on real processes: 3 nodes, two range partitions (keys
//! before "m" and after). Two-phase commit through any node, compares checked against
//! what the prepares read, appends computed by the participants, and a transaction left
//! behind by a coordinator that never came back is settled once its TTL has passed.

use std::time::{Duration, Instant};

use faultline_harness::cluster::{LocalCluster, find_node_bin, free_loopback_addrs};
use faultline_node::client::{Routing, RoutingClient, Target};
use faultline_node::partitioning::txn::{Part, Request, TxnMeta, wire};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{
    Isolation, MicroOp, PutRequest, TxnAppend, TxnCompare, TxnPartRequest, TxnRead, TxnRequest,
    TxnResponse, TxnWrite, micro_op, txn_compare,
};
use prost::Message as _;
use tonic::transport::Channel;

fn client(cluster: &LocalCluster, id: u64) -> KvClient<Channel> {
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(id),
        None,
        Duration::from_secs(3),
    )
    .timeout(Duration::from_secs(5));
    KvClient::new(endpoint.connect_lazy())
}

fn start(root: &std::path::Path) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = ["--partitioning", "range", "--split-at", "m"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

fn op(op: micro_op::Op) -> MicroOp {
    MicroOp { op: Some(op) }
}
fn read(key: &str) -> MicroOp {
    op(micro_op::Op::Read(TxnRead {
        key: key.as_bytes().to_vec(),
    }))
}
fn append(key: &str, element: &str) -> MicroOp {
    op(micro_op::Op::Append(TxnAppend {
        key: key.as_bytes().to_vec(),
        element: element.as_bytes().to_vec(),
    }))
}
fn write(key: &str, value: &str) -> MicroOp {
    op(micro_op::Op::Write(TxnWrite {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }))
}
fn compare(key: &str, value: &str) -> MicroOp {
    op(micro_op::Op::Compare(TxnCompare {
        key: key.as_bytes().to_vec(),
        expected: Some(txn_compare::Expected::Value(value.as_bytes().to_vec())),
    }))
}

/// Sends a transaction until it is answered or refused for good; conflicts and an
/// election at the start are retried.
async fn txn(kv: &mut KvClient<Channel>, ops: Vec<MicroOp>) -> Result<TxnResponse, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = TxnRequest {
            ops: ops.clone(),
            isolation: Isolation::Serializable as i32,
            write_id: None,
        };
        match kv.txn(request).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Aborted
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

fn elements(reply: &TxnResponse, i: usize) -> Vec<String> {
    reply.results[i]
        .elements
        .iter()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_partitions_commits_on_both_or_on_neither() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    let mut kv = client(&cluster, 2);

    // Appends on both sides of the boundary, read back in the same transaction.
    let reply = txn(
        &mut kv,
        vec![append("a", "1"), append("z", "1"), read("a"), read("z")],
    )
    .await
    .expect("committed");
    assert!(reply.committed);
    assert_eq!(reply.partitions.len(), 2, "{:?}", reply.partitions);
    assert_eq!(elements(&reply, 2), ["1"]);
    assert_eq!(elements(&reply, 3), ["1"]);
    // Another, through another node: it sees the first, and its own append.
    let mut other = client(&cluster, 3);
    let reply = txn(&mut other, vec![read("a"), append("z", "2"), read("z")])
        .await
        .expect("committed");
    assert_eq!(elements(&reply, 0), ["1"]);
    assert_eq!(elements(&reply, 2), ["1", "2"]);
    // Each node counts what it coordinated (the bench's abort rate comes from these).
    let status = faultline_harness::cluster::status(cluster.addr(3))
        .await
        .expect("status");
    assert_eq!(status.txns_coordinated, 1, "{status:?}");
    assert!(status.txn_attempts >= 1, "{status:?}");

    // A compare that fails writes nothing anywhere, and says which one failed.
    let reply = txn(&mut kv, vec![write("b", "10"), write("y", "10")])
        .await
        .expect("committed");
    assert!(reply.committed);
    let reply = txn(
        &mut kv,
        vec![
            compare("b", "10"),
            compare("y", "11"),
            write("b", "5"),
            write("y", "15"),
        ],
    )
    .await
    .expect("answered");
    assert!(!reply.committed);
    assert_eq!(reply.failed_compare, 2);
    let reply = txn(&mut kv, vec![read("b"), read("y")])
        .await
        .expect("read");
    assert_eq!(reply.results[0].value, b"10");
    assert_eq!(reply.results[1].value, b"10");
    // One that holds moves both.
    let reply = txn(
        &mut kv,
        vec![
            compare("b", "10"),
            compare("y", "10"),
            write("b", "5"),
            write("y", "15"),
        ],
    )
    .await
    .expect("committed");
    assert!(reply.committed);
    let reply = txn(&mut other, vec![read("b"), read("y")])
        .await
        .expect("read");
    assert_eq!(
        (
            reply.results[0].value.as_slice(),
            reply.results[1].value.as_slice()
        ),
        (b"5".as_slice(), b"15".as_slice())
    );

    // An append to a plain value is refused by its participant, naming the problem,
    // and the other side is untouched.
    let put = PutRequest {
        key: b"c".to_vec(),
        value: b"plain".to_vec(),
        write_id: None,
        ..Default::default()
    };
    kv.put(put).await.expect("put");
    let status = txn(&mut kv, vec![append("z", "3"), append("c", "1")])
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("not a list"), "{status}");
    let reply = txn(&mut kv, vec![read("z")]).await.expect("read");
    assert_eq!(elements(&reply, 0), ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_whose_coordinator_never_came_back_is_recovered_after_its_ttl() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    let mut kv = client(&cluster, 1);
    // A committed value first, so that the key's partition is serving.
    let reply = txn(&mut kv, vec![write("q", "before"), write("d", "before")])
        .await
        .expect("committed");
    assert!(reply.committed);
    let router = RoutingClient::new(
        vec![cluster.addr(1)],
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    // Partition 1 holds the keys before "m", partition 2 the rest.
    let (primary, holder) = (1, 2);
    // What a coordinator that died after one prepare leaves: an intent on "q" whose
    // record on the primary was never written.
    let prepare = Request::Prepare {
        meta: TxnMeta {
            id: 77,
            primary,
            participants: vec![primary, holder],
            start_ts: u64::MAX >> 1,
            isolation: faultline_node::partitioning::txn::Level::Serializable,
        },
        part: Part {
            reads: Vec::new(),
            writes: vec![(b"q".to_vec(), Some(b"never".to_vec()))],
            appends: Vec::new(),
        },
        now: 0,
    };
    part_request(&router, holder, &prepare).await;
    // A plain write there waits while the intent stands; once the transaction has been in
    // its way for half a TTL, its primary is asked to recover it and aborts it (there is
    // no record), and the holder drops
    // the intent, so the write applies. Without recovery it would be refused, held, at
    // every attempt.
    let put = || PutRequest {
        key: b"q".to_vec(),
        value: b"after".to_vec(),
        write_id: None,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match kv.put(put()).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::Aborted => {
                assert!(status.message().contains("transaction 77"), "{status}");
                assert!(Instant::now() < deadline, "still held: {status}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("{status}"),
        }
    }
    let reply = txn(&mut kv, vec![read("q"), read("d")])
        .await
        .expect("read");
    assert_eq!(reply.results[0].value, b"after");
    assert_eq!(reply.results[1].value, b"before");
}

/// Sends one participant request to partition `to`, through the partition's leader.
async fn part_request(router: &RoutingClient, to: u64, request: &Request) {
    let part = wire::request_to_wire(request).encode_to_vec();
    router
        .call(
            Target::Partition(to),
            Duration::from_secs(10),
            |mut c, d, left| {
                let request = faultline_node::client::router::prepare(
                    TxnPartRequest { part: part.clone() },
                    d.as_ref(),
                    left,
                );
                async move { c.txn_part(request).await }
            },
        )
        .await
        .expect("applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_under_an_intent_resolves_it_from_the_record() {
    use faultline_node::proto::kv::GetRequest;
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    let mut kv = client(&cluster, 3);
    let reply = txn(&mut kv, vec![write("e", "old"), write("r", "old")])
        .await
        .expect("committed");
    assert!(reply.committed);
    let router = RoutingClient::new(
        vec![cluster.addr(1)],
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    // A coordinator that died right after its commit point: prepared on both partitions,
    // committed at the primary (1), partition 2 never told.
    let meta = TxnMeta {
        id: 99,
        primary: 1,
        participants: vec![1, 2],
        start_ts: u64::MAX >> 2,
        isolation: faultline_node::partitioning::txn::Level::Serializable,
    };
    for (to, key) in [(1, b"e"), (2, b"r")] {
        let prepare = Request::Prepare {
            meta: meta.clone(),
            part: Part {
                reads: Vec::new(),
                writes: vec![(key.to_vec(), Some(b"new".to_vec()))],
                appends: Vec::new(),
            },
            now: 0,
        };
        part_request(&router, to, &prepare).await;
    }
    let commit = Request::Commit {
        id: 99,
        commit_ts: (u64::MAX >> 2) + 1,
    };
    part_request(&router, 1, &commit).await;
    // The primary's side is visible at once; a read of the other side must not return
    // the value under the intent: it asks the record and resolves the intent first.
    let get = |key: &str| GetRequest {
        key: key.as_bytes().to_vec(),
        serializable: false,
        lease_read: false,
    };
    let e = kv.get(get("e")).await.expect("read").into_inner();
    assert_eq!(e.value, b"new");
    let r = kv.get(get("r")).await.expect("read").into_inner();
    assert_eq!(r.value, b"new", "read under the intent, not resolved");
    // And a single-partition transaction's read after it sees the same.
    let reply = txn(&mut kv, vec![read("r")]).await.expect("read");
    assert_eq!(reply.results[0].value, b"new");
}
