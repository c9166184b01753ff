//! Range splits on real processes: a split is an entry in the range's own log, so every
//! replica narrows its span at the same index and starts the new range's group from the
//! same state. Keys on both sides stay readable through every node, the split survives a
//! restart of every node, writes racing the split are served by the right range or
//! refused (never lost), and bad splits are refused naming the problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, status_all_groups,
};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{GetPartitionMapRequest, PartitionDescriptor, SplitRequest};
use tonic::transport::Channel;

fn client(cluster: &LocalCluster, id: u64) -> KvClient<Channel> {
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(id),
        None,
        Duration::from_secs(3),
    )
    .timeout(Duration::from_secs(10));
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

fn router(cluster: &LocalCluster, routing: Routing, via: u64) -> RoutingClient {
    let mut seeds = vec![cluster.addr(via)];
    seeds.extend(cluster.ids().into_iter().map(|id| cluster.addr(id)));
    RoutingClient::new(seeds, routing, None, Duration::from_secs(2))
}

/// Waits until `groups` groups have a leader on the running nodes.
async fn wait_for_leaders(cluster: &LocalCluster, groups: usize, timeout: Duration) {
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

async fn map_of(cluster: &LocalCluster, id: u64) -> Vec<PartitionDescriptor> {
    client(cluster, id)
        .get_partition_map(GetPartitionMapRequest {})
        .await
        .expect("map")
        .into_inner()
        .partitions
}

/// Waits until node `id`'s map holds partition `partition`.
async fn wait_for_partition(
    cluster: &LocalCluster,
    id: u64,
    partition: u64,
) -> PartitionDescriptor {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(p) = map_of(cluster, id)
            .await
            .into_iter()
            .find(|p| p.id == partition)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}'s map never showed partition {partition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

async fn read_all(router: &RoutingClient, written: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (key, value) in written {
        let got = router
            .get(key.clone(), false, Duration::from_secs(10))
            .await
            .unwrap_or_else(|s| panic!("get {:?}: {s}", String::from_utf8_lossy(key)));
        assert!(got.found, "{:?} is missing", String::from_utf8_lossy(key));
        assert_eq!(&got.value, value, "{:?}", String::from_utf8_lossy(key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_serves_both_halves_through_every_node_and_survives_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &[
            "--partitions",
            "2",
            "--partitioning",
            "range",
            "--split-at",
            "m",
        ],
    );
    wait_for_leaders(&cluster, 3, Duration::from_secs(30)).await;
    let direct = router(&cluster, Routing::Direct, 1);
    let mut written = BTreeMap::new();
    for i in 0..40 {
        let value = format!("v{i}").into_bytes();
        direct
            .put(key(i), value.clone(), None, Duration::from_secs(10))
            .await
            .expect("put");
        written.insert(key(i), value);
    }
    let before = map_of(&cluster, 1).await;
    let parent = before
        .iter()
        .find(|p| p.start.is_empty())
        .expect("first range")
        .clone();

    // Asked through node 3; whichever node leads the range splits it.
    let reply = client(&cluster, 3)
        .split(SplitRequest { key: key(20) })
        .await
        .expect("split")
        .into_inner();
    let (left, right) = (reply.left.expect("left"), reply.right.expect("right"));
    assert_eq!(left.id, parent.id);
    assert_eq!(
        (left.start.as_slice(), left.end.as_slice()),
        (&b""[..], &key(20)[..])
    );
    assert_eq!(
        (right.start.as_slice(), right.end.as_slice()),
        (&key(20)[..], &b"m"[..])
    );
    let version = parent.epoch.unwrap_or_default().version;
    assert_eq!(left.epoch.unwrap_or_default().version, version + 1);
    assert_eq!(right.epoch.unwrap_or_default().version, version + 1);
    assert_eq!(right.replicas, parent.replicas);
    for id in [1, 2, 3] {
        wait_for_partition(&cluster, id, right.id).await;
    }
    wait_for_leaders(&cluster, 4, Duration::from_secs(30)).await;

    // Every key from every node, by both routings; then writes on both sides.
    for via in [1, 2, 3] {
        read_all(&router(&cluster, Routing::Node, via), &written).await;
    }
    read_all(&direct, &written).await;
    for i in 40..60 {
        let k = if i % 2 == 0 { key(i - 40) } else { key(i) };
        let value = format!("w{i}").into_bytes();
        direct
            .put(k.clone(), value.clone(), None, Duration::from_secs(10))
            .await
            .expect("put after the split");
        written.insert(k, value);
    }
    let scanned = direct
        .scan(
            faultline_node::proto::kv::ScanRequest {
                start: Vec::new(),
                end: b"m".to_vec(),
                limit: 1000,
                serializable: false,
            },
            Duration::from_secs(10),
        )
        .await
        .expect("scan");
    let keys: Vec<Vec<u8>> = scanned.items.iter().map(|i| i.key.clone()).collect();
    assert_eq!(keys, written.keys().cloned().collect::<Vec<_>>());
    assert!(
        scanned.partitions.contains(&right.id),
        "{:?}",
        scanned.partitions
    );

    // Every node restarts: the new range comes back from its own files on each.
    for id in [1, 2, 3] {
        cluster.kill(id).expect("kill");
    }
    cluster.start_all().expect("restart");
    wait_for_leaders(&cluster, 4, Duration::from_secs(30)).await;
    let map = map_of(&cluster, 2).await;
    assert!(
        map.iter().any(|p| p.id == right.id && p.start == key(20)),
        "{map:?}"
    );
    read_all(&router(&cluster, Routing::Direct, 2), &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_split_are_applied_by_the_right_range_or_refused_never_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &["--partitions", "1", "--partitioning", "range"],
    );
    wait_for_leaders(&cluster, 2, Duration::from_secs(30)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let routing = if w % 2 == 0 {
            Routing::Direct
        } else {
            Routing::Node
        };
        let router = router(&cluster, routing, w % 3 + 1);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Keys on both sides of every split point below.
                let k = format!("{}{w}-{i:04}", (b'a' + (i % 26) as u8) as char).into_bytes();
                let value = format!("{w}:{i}").into_bytes();
                if router
                    .put(k.clone(), value.clone(), None, Duration::from_secs(10))
                    .await
                    .is_ok()
                {
                    acked.insert(k, value);
                }
                i += 1;
            }
            acked
        }));
    }
    let mut kv = client(&cluster, 2);
    for at in ["f", "m", "t", "c", "p"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reply = kv
            .split(SplitRequest {
                key: at.as_bytes().to_vec(),
            })
            .await
            .unwrap_or_else(|s| panic!("split at {at}: {s}"))
            .into_inner();
        assert_eq!(reply.right.expect("right").start, at.as_bytes());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert!(
        acked.len() > 100,
        "the writers made progress: {}",
        acked.len()
    );
    let map = map_of(&cluster, 1).await;
    assert_eq!(map.len(), 6, "five splits of one range: {map:?}");
    read_all(&router(&cluster, Routing::Direct, 3), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_split_is_refused_naming_the_problem_and_changes_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &[
            "--partitions",
            "2",
            "--partitioning",
            "range",
            "--split-at",
            "m",
        ],
    );
    wait_for_leaders(&cluster, 3, Duration::from_secs(30)).await;
    let before = map_of(&cluster, 1).await;
    let mut kv = client(&cluster, 1);
    let at_start = kv
        .split(SplitRequest { key: b"m".to_vec() })
        .await
        .expect_err("m starts a range already");
    assert_eq!(at_start.code(), tonic::Code::InvalidArgument);
    assert!(
        at_start.message().contains("starts already"),
        "{}",
        at_start.message()
    );
    let empty = kv
        .split(SplitRequest { key: Vec::new() })
        .await
        .expect_err("an empty key");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(map_of(&cluster, 1).await.len(), before.len());

    let root = tempfile::tempdir().expect("tempdir");
    let hashed = start(
        root.path(),
        &["--partitions", "2", "--partitioning", "hash"],
    );
    wait_for_leaders(&hashed, 3, Duration::from_secs(30)).await;
    let refused = client(&hashed, 1)
        .split(SplitRequest { key: b"k".to_vec() })
        .await
        .expect_err("hash buckets do not split");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("range partitioning"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_joins_two_ranges_that_serve_every_key_and_survive_a_restart() {
    use faultline_node::proto::kv::MergeRequest;
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &[
            "--partitions",
            "2",
            "--partitioning",
            "range",
            "--split-at",
            "m",
        ],
    );
    wait_for_leaders(&cluster, 3, Duration::from_secs(30)).await;
    let direct = router(&cluster, Routing::Direct, 1);
    let mut written = BTreeMap::new();
    for i in 0..30 {
        let k = if i % 2 == 0 {
            key(i)
        } else {
            format!("z{i:03}").into_bytes()
        };
        let value = format!("v{i}").into_bytes();
        direct
            .put(k.clone(), value.clone(), None, Duration::from_secs(10))
            .await
            .expect("put");
        written.insert(k, value);
    }
    let before = map_of(&cluster, 1).await;
    let left = before
        .iter()
        .find(|p| p.start.is_empty())
        .expect("first")
        .clone();
    let right = before
        .iter()
        .find(|p| p.start == b"m")
        .expect("second")
        .clone();
    // The last range has nothing after it.
    let last = client(&cluster, 2)
        .merge(MergeRequest {
            partition: right.id,
        })
        .await
        .expect_err("nothing after the last range");
    assert_eq!(last.code(), tonic::Code::InvalidArgument);
    assert!(last.message().contains("last range"), "{}", last.message());

    let merged = client(&cluster, 3)
        .merge(MergeRequest { partition: left.id })
        .await
        .expect("merge")
        .into_inner()
        .merged
        .expect("merged range");
    assert_eq!(merged.id, left.id);
    assert!(
        merged.start.is_empty() && merged.end.is_empty(),
        "{merged:?}"
    );
    let versions = [left.epoch, right.epoch].map(|e| e.unwrap_or_default().version);
    assert_eq!(
        merged.epoch.unwrap_or_default().version,
        versions[0].max(versions[1]) + 1
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while map_of(&cluster, 2).await.len() != 1 {
        assert!(Instant::now() < deadline, "the map never showed one range");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_all(&direct, &written).await;
    for via in [1, 2, 3] {
        read_all(&router(&cluster, Routing::Node, via), &written).await;
    }
    direct
        .put(
            b"z999".to_vec(),
            b"after".to_vec(),
            None,
            Duration::from_secs(10),
        )
        .await
        .expect("a write to a moved key");
    written.insert(b"z999".to_vec(), b"after".to_vec());

    // No node hosts the merged-away group any more, and none brings it back on restart.
    for id in [1, 2, 3] {
        cluster.kill(id).expect("kill");
    }
    cluster.start_all().expect("restart");
    wait_for_leaders(&cluster, 2, Duration::from_secs(30)).await;
    for (_, addr) in cluster.running() {
        let groups = status_all_groups(addr).await.expect("status").groups;
        assert!(
            groups.iter().all(|g| g.group_id != right.id),
            "group {} came back: {groups:?}",
            right.id
        );
    }
    read_all(&router(&cluster, Routing::Direct, 3), &written).await;
}
