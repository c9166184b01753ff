//! A partitioned store of real processes: 3 nodes host 16 partitions (each its own Raft
//! group) and the consistent core; any node serves any key; a killed node does not stop any
//! partition, and nothing acknowledged is lost. Also the bad-input cases a user meets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, status_all_groups,
};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{
    BatchGetRequest, GetPartitionMapRequest, GetRequest, PutRequest, ScanRequest, WriteId,
};
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

fn start(root: &std::path::Path, args: &[&str]) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = args.iter().map(|a| a.to_string()).collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

/// Waits until every hosted group on every running node knows a leader.
async fn wait_for_every_leader(cluster: &LocalCluster, groups: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut led: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, addr) in cluster.running() {
            if let Ok(s) = status_all_groups(addr).await {
                for g in s.groups.iter().filter(|g| g.role == "leader") {
                    led.insert(g.group_id, g.term);
                }
            }
        }
        if led.len() >= groups {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {groups} groups have a leader: {led:?}",
            led.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str, sequence: u64) -> bool {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        write_id: Some(WriteId {
            client_id: "partitions-test".into(),
            sequence,
        }),
        ..Default::default()
    };
    match kv.put(request).await {
        Ok(_) => true,
        Err(status) => {
            eprintln!("put {key}: {:?}: {}", status.code(), status.message());
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_partitions_keep_serving_when_a_node_is_killed_and_lose_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &["--partitions", "16", "--partitioning", "hash"],
    );
    // 16 partitions and the consistent core.
    wait_for_every_leader(&cluster, 17, Duration::from_secs(30)).await;

    let map = client(&cluster, 1)
        .get_partition_map(GetPartitionMapRequest {})
        .await
        .expect("map")
        .into_inner();
    assert_eq!(map.partitioning, "hash");
    assert_eq!(map.partitions.len(), 16);
    assert!(map.partitions.iter().all(|p| p.replicas.len() == 3));

    let mut acked = BTreeMap::new();
    let mut sequence = 0;
    for i in 0..64 {
        // Through every node in turn: each coordinates keys of every partition.
        let mut kv = client(&cluster, 1 + i % 3);
        sequence += 1;
        let (key, value) = (format!("user/{i}"), format!("before-{i}"));
        assert!(
            put(&mut kv, &key, &value, sequence).await,
            "healthy put {key}"
        );
        acked.insert(key, value);
    }

    cluster.kill(2).expect("SIGKILL node 2");
    for i in 0..64 {
        let via = if i % 2 == 0 { 1 } else { 3 };
        let mut kv = client(&cluster, via);
        sequence += 1;
        let (key, value) = (format!("user/{i}"), format!("after-{i}"));
        // Partitions that node 2 led elect another leader first; retry until then.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !put(&mut kv, &key, &value, sequence).await {
            assert!(
                Instant::now() < deadline,
                "{key} never served after the kill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked.insert(key, value);
    }

    cluster.start(2).expect("restart node 2");
    cluster
        .wait_until_serving(2, Duration::from_secs(20))
        .await
        .expect("node 2 serves again");
    let keys: Vec<Vec<u8>> = acked.keys().map(|k| k.clone().into_bytes()).collect();
    for via in [1, 2, 3] {
        let results = client(&cluster, via)
            .batch_get(BatchGetRequest {
                keys: keys.clone(),
                serializable: false,
            })
            .await
            .expect("batch get")
            .into_inner()
            .results;
        for ((key, value), result) in acked.iter().zip(results) {
            assert!(result.found, "{key} lost (read through node {via})");
            assert_eq!(String::from_utf8_lossy(&result.value), *value, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_range_partitions_returns_every_key_in_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &[
            "--partitioning",
            "range",
            "--split-at",
            "g",
            "--split-at",
            "p",
        ],
    );
    wait_for_every_leader(&cluster, 4, Duration::from_secs(30)).await;
    let mut kv = client(&cluster, 2);
    let keys = ["a", "f", "g", "h", "o", "p", "q", "z"];
    for (i, key) in keys.iter().enumerate() {
        assert!(put(&mut kv, key, key, i as u64 + 1).await);
    }
    let scan = |start: &str, end: &str, limit: u32| ScanRequest {
        start: start.as_bytes().to_vec(),
        end: end.as_bytes().to_vec(),
        limit,
        serializable: false,
    };
    let found = kv.scan(scan("", "", 100)).await.expect("scan").into_inner();
    let names: Vec<String> = found
        .items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.key).into_owned())
        .collect();
    assert_eq!(names, keys, "every key, boundaries included, in order");
    assert_eq!(found.partitions, [1, 2, 3]);
    assert!(!found.more);
    // The routing client reads each partition from its leader and promises the same.
    let router = RoutingClient::new(
        vec![cluster.addr(3)],
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    let direct = router
        .scan(scan("", "", 100), Duration::from_secs(5))
        .await
        .expect("direct scan");
    assert_eq!(direct.items, found.items);
    assert_eq!(direct.partitions, [1, 2, 3]);
    let direct = router
        .scan(scan("f", "q", 3), Duration::from_secs(5))
        .await
        .expect("direct scan");
    assert_eq!(direct.items, limited_items(&kv, scan("f", "q", 3)).await);
    assert!(direct.more);
    let limited = kv.scan(scan("f", "q", 3)).await.expect("scan").into_inner();
    assert_eq!(limited.items.len(), 3);
    assert!(limited.more);

    // An oversized limit is refused, naming the limit.
    let error = kv
        .scan(scan("", "", 1_000_000))
        .await
        .expect_err("too large");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("scan_limit_max"),
        "{}",
        error.message()
    );
}

async fn limited_items(
    kv: &KvClient<Channel>,
    request: ScanRequest,
) -> Vec<faultline_node::proto::kv::KeyValue> {
    kv.clone()
        .scan(request)
        .await
        .expect("scan")
        .into_inner()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_client_goes_to_each_leader_and_finds_the_new_one_after_a_kill() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &["--partitions", "8", "--partitioning", "hash"],
    );
    wait_for_every_leader(&cluster, 9, Duration::from_secs(30)).await;
    let router = RoutingClient::new(
        vec![cluster.addr(1)],
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    let timeout = Duration::from_secs(5);
    let mut served_by = BTreeMap::new();
    for i in 0..32u64 {
        let key = format!("user/{i}").into_bytes();
        let write_id = Some(WriteId {
            client_id: "router-test".into(),
            sequence: i + 1,
        });
        let reply = router
            .put(key, b"before".to_vec(), write_id, timeout)
            .await
            .expect("healthy put");
        let header = reply.header.expect("header");
        // Served by the leader itself: nothing was forwarded.
        assert_eq!(header.node_id, header.leader_id, "put {i}");
        *served_by.entry(header.node_id).or_insert(0) += 1;
    }
    // Kill the node that led the most of them; the client's map still names it.
    let (&victim, _) = served_by.iter().max_by_key(|(_, n)| **n).expect("some");
    cluster.kill(victim).expect("SIGKILL");
    for i in 0..32u64 {
        let key = format!("user/{i}").into_bytes();
        let write_id = Some(WriteId {
            client_id: "router-test".into(),
            sequence: 100 + i,
        });
        // A write whose outcome is unknown is resent with the same write id, as a
        // careful caller does: the client itself never resends it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let reply = loop {
            match router
                .put(key.clone(), b"after".to_vec(), write_id.clone(), timeout)
                .await
            {
                Ok(reply) => break reply,
                Err(status) => assert!(
                    Instant::now() < deadline,
                    "put {i} never served after the kill: {status}"
                ),
            }
        };
        let header = reply.header.expect("header");
        assert_ne!(header.node_id, victim, "put {i} served by the dead node");
        assert_eq!(header.node_id, header.leader_id, "put {i}");
    }
    for i in 0..32u64 {
        let got = router
            .get(format!("user/{i}").into_bytes(), false, timeout)
            .await
            .expect("get");
        assert!(got.found && got.value == b"after", "user/{i} lost or stale");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_layout_is_refused_naming_the_flags() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &["--partitions", "4", "--partitioning", "hash"],
    );
    wait_for_every_leader(&cluster, 5, Duration::from_secs(30)).await;
    let data_dir = cluster.nodes()[0].data_dir.clone();
    let addr = cluster.addr(1);
    cluster
        .stop(1, Duration::from_secs(5))
        .expect("stop node 1");
    let output = std::process::Command::new(find_node_bin().expect("node binary"))
        .args(["--id", "1", "--listen", &addr.to_string()])
        .args(["--peer", &format!("2={}", cluster.addr(2))])
        .args(["--peer", &format!("3={}", cluster.addr(3))])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--partitions", "8"])
        .output()
        .expect("run the node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--partitions 8 (stored: 4)") && !stderr.contains("--partitioning Range"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_linearizable_per_key_through_any_node() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &["--partitions", "8", "--partitioning", "hash"],
    );
    wait_for_every_leader(&cluster, 9, Duration::from_secs(30)).await;
    for i in 0..30u64 {
        let key = format!("k{i}");
        let mut writer = client(&cluster, 1 + i % 3);
        // Leadership may still move right after the first elections; the write is sent
        // again with the same write id (applied once) until it is acknowledged.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !put(&mut writer, &key, &format!("v{i}"), i + 1).await {
            assert!(Instant::now() < deadline, "{key} never acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for via in 1..=3 {
            let got = client(&cluster, via)
                .get(GetRequest {
                    key: key.clone().into_bytes(),
                    serializable: false,
                    lease_read: false,
                })
                .await
                .expect("get")
                .into_inner();
            assert!(got.found, "{key} via node {via}");
            assert_eq!(got.value, format!("v{i}").into_bytes());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_message_for_a_group_the_node_does_not_host_is_dropped_and_logged() {
    use faultline_node::proto::raft::raft_client::RaftClient;
    use faultline_node::proto::raft::{Message, MessageBatch, RequestVote, message::Body};
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path(), &["--partitions", "2"]);
    wait_for_every_leader(&cluster, 3, Duration::from_secs(30)).await;
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(1),
        None,
        Duration::from_secs(3),
    );
    let mut raft = RaftClient::new(endpoint.connect().await.expect("connect"));
    let stray = MessageBatch {
        messages: vec![Message {
            group_id: 999,
            from: 2,
            to: 1,
            term: 50,
            body: Some(Body::RequestVote(RequestVote {
                pre_vote: false,
                last_log_index: 1_000,
                last_log_term: 50,
                leader_transfer: false,
            })),
            ..Default::default()
        }],
    };
    // The stream ends when the request does; the node keeps serving.
    let _ = raft
        .deliver(tokio_stream::iter(vec![stray.clone(), stray]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&cluster.nodes()[0].log_path).unwrap_or_default();
        if log.contains("group this node does not host") {
            assert_eq!(
                log.matches("group this node does not host").count(),
                1,
                "logged once per group"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the stray group:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status_all_groups(cluster.addr(1))
        .await
        .expect("still serving");
    assert!(
        s.groups.iter().all(|g| g.term < 50),
        "a stray message moved no group's term"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_of_a_partition_moves_to_the_node_asked_for_through_any_node() {
    use faultline_node::proto::kv::TransferLeaderRequest;
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &["--partitions", "4", "--partitioning", "hash"],
    );
    wait_for_every_leader(&cluster, 5, Duration::from_secs(30)).await;
    let leader_of = |s: &faultline_node::proto::kv::StatusResponse, group: u64| {
        s.groups
            .iter()
            .find(|g| g.group_id == group && g.role == "leader")
            .map(|g| g.term)
    };
    // Partition 2's leader, and another of its replicas to hand it to.
    let mut from = None;
    for (id, addr) in cluster.running() {
        if leader_of(&status_all_groups(addr).await.expect("status"), 2).is_some() {
            from = Some(id);
        }
    }
    let from = from.expect("partition 2 has a leader");
    let to = if from == 3 { 1 } else { 3 };
    // Asked through the third node, which forwards it to the leader.
    let via = 6 - from - to;
    let reply = client(&cluster, via)
        .transfer_leader(TransferLeaderRequest { partition: 2, to })
        .await
        .expect("transfer started")
        .into_inner();
    assert_eq!(reply.from, from);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_all_groups(cluster.addr(to)).await.expect("status");
        if leader_of(&status, 2).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n{to} never took partition 2 over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It serves: a write to a key of partition 2 is acknowledged by n{to}.
    let router = RoutingClient::new(
        vec![cluster.addr(1)],
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    let map = router
        .partition_map(Duration::from_secs(5))
        .await
        .expect("map");
    let bucket = map
        .partitions
        .iter()
        .find(|p| p.id == 2)
        .expect("partition 2")
        .bucket;
    let key = (0..)
        .map(|i| format!("user/{i}"))
        .find(|k| faultline_node::partitioning::hashing::bucket_of(k.as_bytes(), 4) == bucket)
        .expect("a key of partition 2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match router
            .put(
                key.clone().into_bytes(),
                b"v".to_vec(),
                None,
                Duration::from_secs(5),
            )
            .await
        {
            Ok(reply) => break reply,
            Err(status) => assert!(Instant::now() < deadline, "never served: {status}"),
        }
    };
    assert_eq!(reply.header.expect("header").node_id, to);

    // A node that holds no replica, or a partition that does not exist, is refused.
    let error = client(&cluster, 1)
        .transfer_leader(TransferLeaderRequest {
            partition: 2,
            to: 9,
        })
        .await
        .expect_err("not a replica");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let error = client(&cluster, 1)
        .transfer_leader(TransferLeaderRequest {
            partition: 99,
            to: 1,
        })
        .await
        .expect_err("no such partition");
    assert_eq!(error.code(), tonic::Code::NotFound);
}
