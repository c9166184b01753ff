//! Hybrid-logical-clock timestamps on the linearizable store's writes, on real processes:
//! every acknowledged write carries one, near wall time, growing with the revision, and
//! still growing when leadership moves to a node whose clock is 400 ms behind (the new
//! leader stamps above the range's last write) or away from one 700 ms ahead (the new
//! leader refuses to adopt a timestamp past the 500 ms maximum offset, logs it, and the
//! range still stamps forward).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, group_status_with_digest,
};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::admin::ClockOffset;
use faultline_node::proto::admin::fault_injection_client::FaultInjectionClient;
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{GetPartitionMapRequest, TransferLeaderRequest};
use faultline_node::server::transport::node_endpoint;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn leader_of(cluster: &LocalCluster, group: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (id, addr) in cluster.running() {
            if let Ok(s) = group_status_with_digest(addr, Some(group), 0).await
                && s.group_id == group
                && s.role == "leader"
            {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "group {group} elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `n` keys and returns each acknowledged write's (revision, timestamp).
async fn write(router: &RoutingClient, prefix: &str, n: usize) -> Vec<(u64, (u64, u32))> {
    let mut stamped = Vec::new();
    for i in 0..n {
        let reply = router
            .put(
                format!("{prefix}{i}").into_bytes(),
                b"v".to_vec(),
                None,
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged");
        let t = reply.timestamp.expect("every write is stamped");
        stamped.push((reply.revision, (t.wall_ms, t.logical)));
    }
    stamped
}

fn assert_increasing(stamped: &[(u64, (u64, u32))], when: &str) {
    let mut sorted = stamped.to_vec();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "{when}: revision {} at {:?} but revision {} at {:?}",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
}

async fn step_clock(cluster: &LocalCluster, id: u64, offset_ms: i64) {
    let endpoint = node_endpoint(cluster.addr(id), None, Duration::from_secs(2));
    FaultInjectionClient::new(endpoint.connect().await.expect("reachable"))
        .set_clock_offset(ClockOffset { offset_ms })
        .await
        .expect("stepped");
}

async fn move_leader(cluster: &LocalCluster, group: u64, from: u64, to: u64) {
    let endpoint = node_endpoint(cluster.addr(from), None, Duration::from_secs(2));
    KvClient::new(endpoint.connect_lazy())
        .transfer_leader(TransferLeaderRequest {
            partition: group,
            to,
        })
        .await
        .expect("transfer started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_of(cluster, group).await != to {
        assert!(Instant::now() < deadline, "n{to} did not take over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_stamped_forward_across_leaders_with_skewed_clocks() {
    let root = tempfile::tempdir().expect("tempdir");
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = vec!["--enable-fault-injection".to_string()];
    let mut cluster = LocalCluster::new(&node_bin, root.path(), &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    let seeds = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.addr(id))
        .collect();
    let router = RoutingClient::new(seeds, Routing::Direct, None, Duration::from_secs(2));
    let endpoint = node_endpoint(cluster.addr(1), None, Duration::from_secs(2));
    let map = loop {
        let mut kv = KvClient::new(endpoint.connect_lazy());
        if let Ok(map) = kv.get_partition_map(GetPartitionMapRequest {}).await {
            break map.into_inner();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let group = map.partitions[0].id;
    let first = leader_of(&cluster, group).await;

    let before = wall_ms();
    let mut stamped = write(&router, "a", 20).await;
    let after = wall_ms();
    assert_increasing(&stamped, "one leader");
    for (revision, (wall, _)) in &stamped {
        assert!(
            (before.saturating_sub(1_000)..=after + 1_000).contains(wall),
            "revision {revision} stamped at {wall} ms, outside [{before}, {after}] ± 1 s"
        );
    }

    // A new leader 400 ms behind: it still stamps above its predecessor's writes.
    let behind = cluster
        .ids()
        .into_iter()
        .find(|&n| n != first)
        .expect("three nodes");
    step_clock(&cluster, behind, -400).await;
    move_leader(&cluster, group, first, behind).await;
    stamped.extend(write(&router, "b", 20).await);
    assert_increasing(&stamped, "after a leader 400 ms behind took over");

    // A leader 700 ms ahead, then one at true time: the true one refuses to adopt the
    // stamps past the maximum offset (and says so), and the range still stamps forward.
    step_clock(&cluster, behind, 0).await;
    step_clock(&cluster, first, 700).await;
    move_leader(&cluster, group, behind, first).await;
    stamped.extend(write(&router, "c", 20).await);
    let third = cluster
        .ids()
        .into_iter()
        .find(|&n| n != first && n != behind)
        .expect("three nodes");
    move_leader(&cluster, group, first, third).await;
    stamped.extend(write(&router, "d", 20).await);
    assert_increasing(&stamped, "after a leader 700 ms ahead handed over");
    let log = std::fs::read_to_string(
        &cluster
            .nodes()
            .iter()
            .find(|n| n.id == third)
            .expect("a node")
            .log_path,
    )
    .expect("log");
    assert!(
        log.contains("a write timestamp was refused") && log.contains("past the maximum offset"),
        "n{third} logs the refused timestamp"
    );
    drop(cluster);
}
