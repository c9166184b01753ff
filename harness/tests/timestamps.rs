//! Hybrid-logical-clock timestamps on the linearizable store's writes, on real processes:
//! every acknowledged write carries one, near wall time, growing with the revision, and
//! still growing when leadership moves to a node whose clock is 400 ms behind (the new
//! leader stamps above the range's last write) or away from one 700 ms ahead (which fences
//! itself and hands its leadership on). A node whose clock is off from a majority by more
//! than 80 % of the maximum offset serves nothing and says so in Status and health.

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

/// Three nodes whose clocks the test can step.
fn start(root: &std::path::Path) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = vec!["--enable-fault-injection".to_string()];
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_stamped_forward_across_leaders_with_skewed_clocks() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
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

    // A leader 700 ms ahead of the others fences itself and leads no more (the jump
    // itself may already have cost it its leadership); writes go on elsewhere, still
    // stamped forward.
    step_clock(&cluster, behind, 700).await;
    wait_fence(&cluster, behind, true).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_of(&cluster, group).await == behind {
        assert!(
            Instant::now() < deadline,
            "the fenced n{behind} kept leading"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stamped.extend(write(&router, "c", 20).await);
    assert_increasing(&stamped, "after a leader 700 ms ahead fenced itself");
    drop(cluster);
}

async fn fence_of(cluster: &LocalCluster, id: u64) -> String {
    group_status_with_digest(cluster.addr(id), None, 0)
        .await
        .map(|s| s.clock_fence)
        .unwrap_or_default()
}

/// The Kv service's health on node `id` once it reads `want`, or what it read last after
/// 10 s: health is re-judged every 250 ms, so it follows the fence within that.
async fn serving_within(cluster: &LocalCluster, id: u64, want: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = serving(cluster, id).await;
        if got == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serving(cluster: &LocalCluster, id: u64) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = node_endpoint(cluster.addr(id), None, Duration::from_secs(2));
    HealthClient::new(endpoint.connect_lazy())
        .check(HealthCheckRequest {
            service: "faultline.kv.v1.Kv".to_string(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Waits until `id`'s fence is up (or down), checking the other nodes never fence.
async fn wait_fence(cluster: &LocalCluster, id: u64, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if fence_of(cluster, id).await.is_empty() != up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "n{id}'s clock fence did not go {}",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_off_from_a_majority_fences_itself_until_it_agrees_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    let put = |id: u64| {
        let endpoint = node_endpoint(cluster.addr(id), None, Duration::from_secs(2))
            .timeout(Duration::from_secs(10));
        async move {
            KvClient::new(endpoint.connect_lazy())
                .put(faultline_node::proto::kv::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    write_id: None,
                    ..Default::default()
                })
                .await
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while put(3).await.is_err() {
        assert!(Instant::now() < deadline, "the cluster serves");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 300 ms ahead is within 80 % of the 500 ms maximum: nobody fences.
    step_clock(&cluster, 3, 300).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        assert_eq!(fence_of(&cluster, id).await, "", "n{id} serves at 300 ms");
    }
    assert!(put(3).await.is_ok());

    // 450 ms ahead: off from both peers, a majority of three.
    step_clock(&cluster, 3, 450).await;
    wait_fence(&cluster, 3, true).await;
    let fence = fence_of(&cluster, 3).await;
    assert!(fence.contains("off from 2 of the 3 nodes"), "{fence}");
    let refused = put(3).await.expect_err("a fenced node serves nothing");
    assert_eq!(refused.code(), tonic::Code::Aborted, "refused, not applied");
    assert!(
        refused.message().contains("time sync"),
        "{}",
        refused.message()
    );
    assert_eq!(
        serving_within(&cluster, 3, 2).await,
        2,
        "health says NOT_SERVING"
    );
    for id in [1, 2] {
        assert_eq!(
            fence_of(&cluster, id).await,
            "",
            "n{id} is off from n3 alone"
        );
        // Once n3 has handed on whatever it led.
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(status) = put(id).await {
            assert!(Instant::now() < deadline, "n{id} serves: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Made leader while fenced (told to campaign at once), n3 hands the leadership on.
    let group = group_status_with_digest(cluster.addr(1), None, 0)
        .await
        .expect("status")
        .group_id;
    let leader = leader_of(&cluster, group).await;
    let endpoint = node_endpoint(cluster.addr(leader), None, Duration::from_secs(2));
    KvClient::new(endpoint.connect_lazy())
        .transfer_leader(TransferLeaderRequest {
            partition: group,
            to: 3,
        })
        .await
        .expect("transfer started");
    let log_of_n3 = || std::fs::read_to_string(&cluster.nodes()[2].log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log_of_n3().contains("clock fenced: handing leadership on") {
        assert!(Instant::now() < deadline, "n3 never handed a leadership on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_of(&cluster, group).await == 3 {
        assert!(Instant::now() < deadline, "the fenced n3 kept leading");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    step_clock(&cluster, 3, 0).await;
    wait_fence(&cluster, 3, false).await;
    assert_eq!(
        serving_within(&cluster, 3, 1).await,
        1,
        "health says SERVING again"
    );
    assert!(put(3).await.is_ok());
    drop(cluster);
}
