//! Load-based splitting on real processes: a range that serves more than the threshold
//! splits at a key that divides its load and the new half's leadership moves to another
//! node; a single hot key, which no split divides, has its leadership moved instead.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use faultline_harness::cluster::{LocalCluster, find_node_bin, free_loopback_addrs};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::GetPartitionMapRequest;
use faultline_node::proto::kv::kv_client::KvClient;

fn start(root: &std::path::Path) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = [
        "--partitions",
        "1",
        "--partitioning",
        "range",
        "--hot-ops-per-sec",
        "50",
        "--hot-window-secs",
        "2",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

/// Every node's log, one after the other.
fn all_logs(cluster: &LocalCluster) -> String {
    cluster
        .nodes()
        .iter()
        .map(|n| std::fs::read_to_string(&n.log_path).unwrap_or_default())
        .collect()
}

async fn map(cluster: &LocalCluster) -> Vec<faultline_node::proto::kv::PartitionDescriptor> {
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(1),
        None,
        Duration::from_secs(2),
    );
    KvClient::new(endpoint.connect_lazy())
        .get_partition_map(GetPartitionMapRequest {})
        .await
        .expect("map")
        .into_inner()
        .partitions
}

/// Sends puts for `keys()` from 4 clients until `done` says so or 40 s pass.
async fn load_until<K, D, F>(cluster: &LocalCluster, keys: K, mut done: D)
where
    K: Fn(u64) -> Vec<u8> + Clone + Send + 'static,
    D: FnMut(Vec<faultline_node::proto::kv::PartitionDescriptor>) -> F,
    F: std::future::Future<Output = bool>,
{
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let seeds = cluster
            .ids()
            .into_iter()
            .map(|id| cluster.addr(id))
            .collect();
        let router = RoutingClient::new(seeds, Routing::Direct, None, Duration::from_secs(2));
        let (stop, keys) = (stop.clone(), keys.clone());
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = router
                    .put(keys(i), b"v".to_vec(), None, Duration::from_secs(5))
                    .await;
                i += 4;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if done(map(cluster).await).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never did what was expected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_range_splits_on_its_own_and_its_halves_are_led_by_different_nodes() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    // Two hundred keys, uniform: any sampled key near the middle divides the load.
    load_until(
        &cluster,
        |i| format!("key-{:03}", i % 200).into_bytes(),
        |map| async move {
            let leaders: BTreeSet<u64> = map.iter().map(|p| p.leader).filter(|&l| l != 0).collect();
            map.len() >= 2 && leaders.len() >= 2
        },
    )
    .await;
    let logs = all_logs(&cluster);
    assert!(logs.contains("hot range split"), "the split was not logged");
    assert!(
        logs.contains("ops/s over"),
        "the decision's numbers were not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_hot_key_moves_its_leadership_instead_of_splitting() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let mut first = 0;
    while first == 0 {
        first = map(&cluster).await[0].leader;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load_until(
        &cluster,
        |_| b"the-hot-key".to_vec(),
        |map| async move { map.len() == 1 && map[0].leader != 0 && map[0].leader != first },
    )
    .await;
    assert_eq!(map(&cluster).await.len(), 1, "one key cannot be split");
    let logs = all_logs(&cluster);
    assert!(
        logs.contains("one hot key"),
        "the decision was not logged with its reason"
    );
    assert!(
        logs.contains("hot range: leadership moves"),
        "the move was not logged"
    );
}
