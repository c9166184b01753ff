//! Replica moves on real processes: a move adds the new replica as a learner (caught up
//! by snapshot), promotes it, hands leadership on if the old replica leads, and removes
//! the old one, which retires. Writes keep being acknowledged through it and none is lost;
//! a replica that was down when it was removed retires when it comes back; a replica can
//! move back to a node it left; bad moves are refused naming the problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, group_status_with_digest, status_all_groups,
};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{
    ChangeReplicasRequest, GetPartitionMapRequest, MoveReplicaRequest, PartitionDescriptor,
    ReplicaChange,
};
use tonic::transport::Channel;

fn client(cluster: &LocalCluster, id: u64) -> KvClient<Channel> {
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(id),
        None,
        Duration::from_secs(3),
    )
    .timeout(Duration::from_secs(30));
    KvClient::new(endpoint.connect_lazy())
}

/// Four nodes, so that every partition (three replicas) has a node to move to.
fn start(root: &std::path::Path, args: &[&str]) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(4).expect("ports");
    let args = args.iter().map(|a| a.to_string()).collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

fn router(cluster: &LocalCluster) -> RoutingClient {
    let seeds = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.addr(id))
        .collect();
    RoutingClient::new(seeds, Routing::Direct, None, Duration::from_secs(2))
}

/// Which running nodes host `group`, and which of them leads it.
async fn hosts(cluster: &LocalCluster, group: u64) -> (Vec<u64>, Option<u64>) {
    let mut hosting = Vec::new();
    let mut leader = None;
    for (id, addr) in cluster.running() {
        if let Ok(s) = status_all_groups(addr).await
            && let Some(g) = s.groups.iter().find(|g| g.group_id == group)
        {
            hosting.push(id);
            if g.role == "leader" {
                leader = Some(id);
            }
        }
    }
    (hosting, leader)
}

async fn wait_for_leader_of(cluster: &LocalCluster, group: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let (_, Some(leader)) = hosts(cluster, group).await {
            return leader;
        }
        assert!(Instant::now() < deadline, "group {group} elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn partition(cluster: &LocalCluster, via: u64, id: u64) -> PartitionDescriptor {
    client(cluster, via)
        .get_partition_map(GetPartitionMapRequest {})
        .await
        .expect("map")
        .into_inner()
        .partitions
        .into_iter()
        .find(|p| p.id == id)
        .expect("the partition is in the map")
}

/// Waits until the running nodes hosting `group` are exactly `expected`.
async fn wait_for_hosts(cluster: &LocalCluster, group: u64, expected: &[u64]) {
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (hosting, _) = hosts(cluster, group).await;
        if hosting == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} is hosted on {hosting:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn move_request(partition: u64, from: u64, to: u64) -> MoveReplicaRequest {
    MoveReplicaRequest {
        partition,
        from,
        to,
    }
}

/// Puts `i` (little-endian) at `key(i)` for each `i` in `count`, through `router`; returns
/// what was written.
async fn write_keys(
    router: &RoutingClient,
    count: u32,
    key: impl Fn(u32) -> Vec<u8>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut written = BTreeMap::new();
    for i in 0..count {
        let key = key(i);
        router
            .put(
                key.clone(),
                i.to_le_bytes().to_vec(),
                None,
                Duration::from_secs(10),
            )
            .await
            .expect("put");
        written.insert(key, i.to_le_bytes().to_vec());
    }
    written
}

/// Every key of `written` reads back with its value through `router`; `when` names the
/// moment in the failure message.
async fn read_back(router: &RoutingClient, written: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
    for (key, value) in written {
        // A read has no effect, so a refused one (leadership still moving after a
        // rebalance outran the router's corrections) is simply asked again.
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            match router
                .get(key.clone(), false, Duration::from_secs(10))
                .await
            {
                Ok(got) => break got,
                Err(s) if s.code() == tonic::Code::Aborted && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("get {when}: {s}"),
            }
        };
        assert!(
            got.found && &got.value == value,
            "{when}: acknowledged {:?} is lost",
            String::from_utf8_lossy(key)
        );
    }
}

/// Every replica of `group` reaches the same applied index with the same state.
async fn replicas_agree(cluster: &LocalCluster, group: u64, replicas: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = BTreeMap::new();
        for &id in replicas {
            let s = group_status_with_digest(cluster.addr(id), Some(group), 0)
                .await
                .expect("status");
            seen.insert(id, (s.applied_index, s.state_digest));
        }
        let states: std::collections::BTreeSet<_> = seen.values().collect();
        if states.len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas of group {group} disagree: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_off_its_leader_and_back_under_writes_and_no_acknowledged_write_is_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &[
            "--partitions",
            "1",
            "--partitioning",
            "range",
            "--snapshot-interval-entries",
            "100",
        ],
    );
    let group = 1;
    let leader = wait_for_leader_of(&cluster, group).await;
    let before = partition(&cluster, 1, group).await;
    let spare = (1..=4)
        .find(|n| !before.replicas.contains(n))
        .expect("a node without the partition");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let router = router(&cluster);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{w}-{i:05}").into_bytes();
                let value = format!("{w}:{i}").into_bytes();
                if router
                    .put(key.clone(), value.clone(), None, Duration::from_secs(10))
                    .await
                    .is_ok()
                {
                    acked.insert(key, value);
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Off the leader: the move must hand leadership on before it can remove it.
    let via = spare % 4 + 1;
    let moved = client(&cluster, via)
        .move_replica(move_request(group, leader, spare))
        .await
        .expect("move off the leader")
        .into_inner()
        .descriptor
        .expect("descriptor");
    assert!(moved.replicas.contains(&spare) && !moved.replicas.contains(&leader));
    assert!(moved.learners.is_empty(), "{moved:?}");
    assert!(
        moved.epoch.unwrap_or_default().conf_version
            > before.epoch.unwrap_or_default().conf_version
    );
    wait_for_hosts(&cluster, group, &moved.replicas).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back onto the node it just left (its old replica retired there): it starts afresh.
    let other = moved
        .replicas
        .iter()
        .copied()
        .find(|&n| n != spare)
        .expect("a replica that did not move");
    let back = client(&cluster, leader)
        .move_replica(move_request(group, other, leader))
        .await
        .expect("move back")
        .into_inner()
        .descriptor
        .expect("descriptor");
    assert!(back.replicas.contains(&leader) && !back.replicas.contains(&other));
    wait_for_hosts(&cluster, group, &back.replicas).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert!(
        acked.len() > 50,
        "only {} writes were acknowledged",
        acked.len()
    );
    let reader = router(&cluster);
    read_back(&reader, &acked, "after the moves").await;
    replicas_agree(&cluster, group, &back.replicas).await;
    let map = partition(&cluster, 2, group).await;
    let mut shown = map.replicas.clone();
    shown.sort_unstable();
    let mut expected = back.replicas.clone();
    expected.sort_unstable();
    assert_eq!(shown, expected, "the map shows the replicas the move left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_when_it_was_removed_retires_when_it_comes_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        root.path(),
        &["--partitions", "1", "--partitioning", "range"],
    );
    let group = 1;
    let leader = wait_for_leader_of(&cluster, group).await;
    let before = partition(&cluster, leader, group).await;
    let spare = (1..=4)
        .find(|n| !before.replicas.contains(n))
        .expect("a node without the partition");
    let down = before
        .replicas
        .iter()
        .copied()
        .find(|&n| n != leader)
        .expect("a follower");
    let router = router(&cluster);
    router
        .put(
            b"before".to_vec(),
            b"1".to_vec(),
            None,
            Duration::from_secs(10),
        )
        .await
        .expect("put");
    cluster.kill(down).expect("kill");
    client(&cluster, leader)
        .move_replica(move_request(group, down, spare))
        .await
        .expect("a move off a node that is down");
    cluster.start(down).expect("restart");
    let mut expected = before.replicas.clone();
    expected.retain(|&n| n != down);
    expected.push(spare);
    wait_for_hosts(&cluster, group, &expected).await;
    let got = router
        .get(b"before".to_vec(), false, Duration::from_secs(10))
        .await
        .expect("get");
    assert!(got.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moves_and_replica_changes_are_refused_naming_the_problem_and_change_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &["--partitions", "1", "--partitioning", "range"],
    );
    let group = 1;
    let leader = wait_for_leader_of(&cluster, group).await;
    let before = partition(&cluster, 1, group).await;
    let spare = (1..=4)
        .find(|n| !before.replicas.contains(n))
        .expect("a node without the partition");
    let follower = before
        .replicas
        .iter()
        .copied()
        .find(|&n| n != leader)
        .expect("a follower");
    let mut kv = client(&cluster, spare);
    let cases = [
        (
            move_request(group, follower, 9),
            "not a member of the cluster",
        ),
        (move_request(group, spare, follower), "holds no replica"),
        (move_request(group, follower, follower), "both node"),
        (move_request(77, follower, spare), "no partition 77"),
    ];
    for (request, why) in cases {
        let status = kv.move_replica(request).await.expect_err("refused");
        assert!(status.message().contains(why), "{request:?}: {status:?}");
    }
    let add_existing = ChangeReplicasRequest {
        partition: group,
        change: ReplicaChange::AddVoter as i32,
        node: follower,
    };
    let status = kv.change_replicas(add_existing).await.expect_err("refused");
    assert!(
        status.message().contains("voter of the group already"),
        "{status:?}"
    );

    // Down to the leader alone, then the last replica is refused.
    for node in before.replicas.iter().copied().filter(|&n| n != leader) {
        kv.change_replicas(ChangeReplicasRequest {
            partition: group,
            change: ReplicaChange::Remove as i32,
            node,
        })
        .await
        .expect("remove a follower");
    }
    let status = kv
        .change_replicas(ChangeReplicasRequest {
            partition: group,
            change: ReplicaChange::Remove as i32,
            node: leader,
        })
        .await
        .expect_err("the last replica");
    assert!(status.message().contains("last voter"), "{status:?}");
    wait_for_hosts(&cluster, group, &[leader]).await;
    let got = router(&cluster)
        .put(
            b"alone".to_vec(),
            b"1".to_vec(),
            None,
            Duration::from_secs(10),
        )
        .await;
    assert!(got.is_ok(), "the last replica serves alone: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_takes_replicas_survives_restarts_and_is_drained_and_removed() {
    let root = tempfile::tempdir().expect("tempdir");
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(5).expect("ports");
    let args = ["--partitions", "3", "--partitioning", "range"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mut cluster = LocalCluster::new(&node_bin, root.path(), &addrs[..3], args).expect("layout");
    cluster.start_all().expect("start");
    for group in 1..=3 {
        wait_for_leader_of(&cluster, group).await;
    }
    let writes = router(&cluster);
    // Keys spread over the three ranges (split over the first two key bytes).
    let written = write_keys(&writes, 60, |i| vec![(i * 4) as u8, b'k', i as u8]).await;

    let joined = cluster
        .add_joining_node(addrs[3], 2)
        .expect("lay out node 4");
    cluster.start(joined).expect("start node 4");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut listed = 0;
        for id in 1..=3 {
            let map = client(&cluster, id)
                .get_partition_map(GetPartitionMapRequest {})
                .await
                .expect("map")
                .into_inner();
            listed += usize::from(map.nodes.iter().any(|n| n.id == joined));
        }
        if listed == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the map never listed node {joined}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for group in [1, 2] {
        client(&cluster, 3)
            .move_replica(move_request(group, 1, joined))
            .await
            .unwrap_or_else(|s| panic!("move partition {group} to the new node: {s}"));
        wait_for_hosts(&cluster, group, &[2, 3, joined]).await;
    }
    // The newcomer serves what it now holds, and restarts (from its data directory) like
    // the nodes the cluster was formed with.
    cluster.kill(joined).expect("kill node 4");
    cluster.kill(1).expect("kill node 1");
    cluster.start(joined).expect("restart node 4");
    cluster.start(1).expect("restart node 1");
    for group in 1..=3 {
        wait_for_leader_of(&cluster, group).await;
    }
    let through_newcomer = RoutingClient::new(
        vec![cluster.addr(joined)],
        Routing::Node,
        None,
        Duration::from_secs(2),
    );
    read_back(&through_newcomer, &written, "through node 4").await;

    // Another node asking for a taken id is turned away, naming the clash.
    let clash = std::process::Command::new(&node_bin)
        .args(["--id", "2", "--listen", &addrs[4].to_string(), "--join"])
        .arg(cluster.addr(1).to_string())
        .arg("--data-dir")
        .arg(root.path().join("clash"))
        .output()
        .expect("run a clashing node");
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(!clash.status.success(), "{stderr}");
    assert!(stderr.contains("node id 2 is in use"), "{stderr}");

    let removed = client(&cluster, 2)
        .remove_node(faultline_node::proto::kv::RemoveNodeRequest { node: joined })
        .await
        .expect("remove node 4")
        .into_inner();
    assert_eq!(removed.moved.len(), 2, "{removed:?}");
    for group in [1, 2] {
        let (hosting, _) = hosts(&cluster, group).await;
        assert!(
            !hosting.contains(&joined),
            "group {group} is still on node 4"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let map = client(&cluster, 3)
            .get_partition_map(GetPartitionMapRequest {})
            .await
            .expect("map")
            .into_inner();
        if map.nodes.iter().all(|n| n.id != joined) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 is still listed: {:?}",
            map.nodes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = client(&cluster, 3)
        .remove_node(faultline_node::proto::kv::RemoveNodeRequest { node: 1 })
        .await
        .expect_err("a core replica");
    assert!(status.message().contains("consistent core"), "{status:?}");
    read_back(&writes, &written, "after the removal").await;
}

/// Replicas on each node, and leaders on each node, as `via`'s map has them.
async fn per_node(
    cluster: &LocalCluster,
    via: u64,
) -> (
    Vec<PartitionDescriptor>,
    BTreeMap<u64, usize>,
    BTreeMap<u64, usize>,
) {
    let map = client(cluster, via)
        .get_partition_map(GetPartitionMapRequest {})
        .await
        .expect("map")
        .into_inner();
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for p in &map.partitions {
        for &n in &p.replicas {
            *replicas.entry(n).or_insert(0) += 1;
        }
        if p.leader != 0 {
            *leaders.entry(p.leader).or_insert(0) += 1;
        }
    }
    (map.partitions, replicas, leaders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_placement_driver_gives_a_joining_node_a_quarter_of_the_hash_replicas_and_some_leaders()
{
    let root = tempfile::tempdir().expect("tempdir");
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(4).expect("ports");
    let args = [
        "--partitions",
        "64",
        "--partitioning",
        "hash",
        "--placement",
        "on",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut cluster = LocalCluster::new(&node_bin, root.path(), &addrs[..3], args).expect("layout");
    cluster.start_all().expect("start");
    cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("every partition elects a leader");
    let writes = router(&cluster);
    let written = write_keys(&writes, 100, |i| format!("key-{i}").into_bytes()).await;

    let joined = cluster
        .add_joining_node(addrs[3], 1)
        .expect("lay out node 4");
    cluster.start(joined).expect("start node 4");
    let ids: Vec<u64> = (1..=64).collect();
    let target =
        faultline_node::partitioning::placement::target_placement(&ids, &[1, 2, 3, joined], 3);
    let deadline = Instant::now() + Duration::from_secs(240);
    let (partitions, replicas, _) = loop {
        let (partitions, replicas, leaders) = per_node(&cluster, 1).await;
        let settled = partitions.iter().all(|p| {
            let mut have = p.replicas.clone();
            have.sort_unstable();
            let mut want = target[&p.id].clone();
            want.sort_unstable();
            have == want && p.learners.is_empty()
        });
        if settled {
            break (partitions, replicas, leaders);
        }
        assert!(
            Instant::now() < deadline,
            "the placement driver did not reach its targets: replicas per node {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Only what consistent hashing must move went to the newcomer: about a quarter.
    let total = partitions.iter().map(|p| p.replicas.len()).sum::<usize>();
    let on_newcomer = replicas.get(&joined).copied().unwrap_or(0);
    assert!(
        on_newcomer as f64 <= total as f64 * 0.30 && on_newcomer as f64 >= total as f64 * 0.20,
        "node {joined} holds {on_newcomer} of {total} replicas"
    );
    let mean = total as f64 / 4.0;
    let most = *replicas.values().max().expect("nodes") as f64;
    assert!(most / mean <= 1.10, "replicas per node {replicas:?}");
    // Leaders even out too: the newcomer leads some.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, leaders) = per_node(&cluster, 1).await;
        if leaders.get(&joined).copied().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {joined} leads nothing: leaders per node {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    read_back(&writes, &written, "after rebalancing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moved_back_catches_up_through_the_entry_that_removed_it_and_stays() {
    // The leader's snapshot is from before the first move (it is taken when a replica is
    // first added), so the node the replica moves back to replays the entry that removed
    // it, then hundreds of writes, then the entry that adds it again, in separate batches.
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(
        root.path(),
        &["--partitions", "1", "--partitioning", "range"],
    );
    let group = 1;
    let leader = wait_for_leader_of(&cluster, group).await;
    let before = partition(&cluster, leader, group).await;
    let spare = (1..=4)
        .find(|n| !before.replicas.contains(n))
        .expect("a node without the partition");
    let writes = router(&cluster);
    client(&cluster, spare)
        .move_replica(move_request(group, leader, spare))
        .await
        .expect("move off the leader");
    let written = write_keys(&writes, 700, |i| format!("k{i:04}").into_bytes()).await;
    let other = before
        .replicas
        .iter()
        .copied()
        .find(|&n| n != leader)
        .expect("another replica");
    let back = client(&cluster, spare)
        .move_replica(move_request(group, other, leader))
        .await
        .expect("move back")
        .into_inner()
        .descriptor
        .expect("descriptor");
    wait_for_hosts(&cluster, group, &back.replicas).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hosting, _) = hosts(&cluster, group).await;
    assert!(
        hosting.contains(&leader),
        "node {leader} retired the replica it was given back: {hosting:?}"
    );
    replicas_agree(&cluster, group, &back.replicas).await;
    read_back(&writes, &written, "after the move back").await;
}
