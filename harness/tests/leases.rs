//! Leases and the lock service on real processes: 3 nodes, two range partitions (keys
//! before "m" and after). A key attached to a lease goes when the lease runs out, not
//! while it is kept alive, and not when the partition's leader is SIGKILLed (the new
//! leader gives every lease a fresh TTL and an election timeout); a lock's fencing token
//! grows with every holder, and a protected register refuses a stale one.

use std::time::{Duration, Instant};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, status_all_groups,
};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::cluster::lease::lease_group;
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::{GetRequest, LeaseKeepAliveRequest, PutRequest};
use tonic::Code;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(root: &std::path::Path) -> LocalCluster {
    start_with(root, &[])
}

fn start_with(root: &std::path::Path, extra: &[&str]) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = ["--partitioning", "range", "--split-at", "m"]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
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

fn client(cluster: &LocalCluster, id: u64) -> KvClient<Channel> {
    let endpoint = faultline_node::server::transport::node_endpoint(
        cluster.addr(id),
        None,
        Duration::from_secs(3),
    )
    .timeout(TIMEOUT);
    KvClient::new(endpoint.connect_lazy())
}

/// Retries what fails while the cluster elects its first leaders.
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(value) => return value,
            Err(status) if Instant::now() < deadline => {
                eprintln!("retrying: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("never succeeded: {status}"),
        }
    }
}

async fn present(router: &RoutingClient, key: &str) -> bool {
    eventually(|| router.get(key.as_bytes().to_vec(), false, TIMEOUT))
        .await
        .found
}

fn put_with(key: &str, value: &str, lease: u64, token: u64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        fencing_token: token,
        ..Default::default()
    }
}

/// Which node leads `group`.
async fn leader_of(cluster: &LocalCluster, group: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (id, addr) in cluster.running() {
            if let Ok(s) = status_all_groups(addr).await
                && s.groups
                    .iter()
                    .any(|g| g.group_id == group && g.role == "leader")
            {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "group {group} elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_lives_while_kept_alive_and_goes_when_the_lease_runs_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(root.path());
    let router = router(&cluster);

    // Below the minimum: raised, and the reply says so.
    let short = eventually(|| router.lease_grant(10, b"a".to_vec(), TIMEOUT)).await;
    assert!(short.ttl_ms >= 1_000, "{short:?}");
    assert!(short.note.contains("minimum"), "{short:?}");

    let lease = eventually(|| router.lease_grant(1_500, b"a".to_vec(), TIMEOUT)).await;
    assert_eq!(lease.ttl_ms, 1_500);
    let id = lease.id;
    eventually(|| router.put_request(put_with("a", "held", id, 0), TIMEOUT)).await;
    eventually(|| router.put_request(put_with("b", "held", id, 0), TIMEOUT)).await;
    // A key of the other partition cannot go with it: refused, naming the fix.
    let refused = router
        .put_request(put_with("z", "elsewhere", id, 0), TIMEOUT)
        .await
        .expect_err("a lease of another partition");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("partition"), "{refused}");
    let ttl = eventually(|| router.lease_time_to_live(id, true, TIMEOUT)).await;
    assert_eq!(ttl.granted_ttl_ms, 1_500);
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);

    // Kept alive through a stream (on a node that does not lead the partition) for three
    // TTLs, across a SIGKILL of the partition's leader: the keys stay.
    if let Err(why) = keep_alive_across_leader_kill(&mut cluster, id).await {
        panic!("{why}");
    }
    assert!(present(&router, "a").await, "a kept-alive lease's key went");

    // Left alone: gone within TTL + an election timeout + the expiry's own commit.
    let stopped = Instant::now();
    while present(&router, "a").await {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!present(&router, "b").await, "the lease's keys go together");
    let gone = router
        .lease_renew(id, TIMEOUT)
        .await
        .expect_err("a keep-alive of an expired lease");
    assert_eq!(gone.code(), Code::NotFound, "{gone}");
    let gone = router
        .put_request(put_with("a", "late", id, 0), TIMEOUT)
        .await
        .expect_err("a put with an expired lease");
    assert_eq!(gone.code(), Code::NotFound, "{gone}");
}

/// Keeps lease `id` alive every 300 ms through a stream on a node that does not lead its
/// partition, for three TTLs of 1.5 s, and SIGKILLs the partition's leader 1.5 s in. An
/// error if a keep-alive was refused or went unanswered.
async fn keep_alive_across_leader_kill(cluster: &mut LocalCluster, id: u64) -> Result<(), String> {
    let leader = leader_of(cluster, lease_group(id)).await;
    let streamer = if leader == 3 { 2 } else { 3 };
    let mut kv = client(cluster, streamer);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = kv
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("keep-alive stream: {e}"))?
        .into_inner();
    let began = Instant::now();
    let mut killed = false;
    while began.elapsed() < Duration::from_millis(4_500) {
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|e| format!("send: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(3), answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl_ms == 1_500 => {}
            other => {
                return Err(format!(
                    "a keep-alive {} ms in (leader {} killed: {killed}) was answered {other:?}",
                    began.elapsed().as_millis(),
                    leader
                ));
            }
        }
        if !killed && began.elapsed() >= Duration::from_millis(1_500) {
            cluster.kill(leader).expect("kill the partition's leader");
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(killed, "the partition's leader was never killed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_bug_lease_no_extension_on_election_expires_a_kept_alive_lease() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start_with(
        root.path(),
        &["--unsafe-seeded-bug", "lease-no-extension-on-election"],
    );
    let router = router(&cluster);
    let lease = eventually(|| router.lease_grant(1_500, b"a".to_vec(), TIMEOUT)).await;
    eventually(|| router.put_request(put_with("a", "held", lease.id, 0), TIMEOUT)).await;
    // The new leader gives the lease what it had left by the grant's count (nothing, by
    // then): the holder's next keep-alive hears NOT_FOUND though it never stopped.
    let why = keep_alive_across_leader_kill(&mut cluster, lease.id)
        .await
        .expect_err("the seeded bug let a lease outlive its leader's death");
    assert!(why.contains("NotFound"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locks_fencing_token_grows_and_a_stale_one_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path());
    let router = router(&cluster);
    let lock_key = faultline_node::server::lock_key("x");

    let first = eventually(|| router.lease_grant(5_000, lock_key.clone(), TIMEOUT)).await;
    let second = eventually(|| router.lease_grant(5_000, lock_key.clone(), TIMEOUT)).await;
    let held = eventually(|| router.lock("x", first.id, TIMEOUT)).await;
    // Taking it again with the same lease is the same hold.
    let again = eventually(|| router.lock("x", first.id, TIMEOUT)).await;
    assert_eq!(again.token, held.token);
    // Another lease waits, and gives up at its deadline.
    let waited = router
        .lock("x", second.id, Duration::from_millis(500))
        .await
        .expect_err("the lock is held");
    assert!(
        matches!(
            waited.code(),
            Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled
        ),
        "{waited}"
    );
    // The holder writes the protected register with its token.
    eventually(|| router.put_request(put_with("register", "first", 0, held.token), TIMEOUT)).await;

    // The holder's lease goes (revoked, as an expiry would): so does the lock.
    let revoked = eventually(|| router.lease_revoke(first.id, TIMEOUT)).await;
    assert_eq!(revoked.deleted_keys, 1);
    let taken = eventually(|| router.lock("x", second.id, TIMEOUT)).await;
    assert!(taken.token > held.token, "{taken:?} after {held:?}");
    eventually(|| router.put_request(put_with("register", "second", 0, taken.token), TIMEOUT))
        .await;
    // The old holder, writing late with its token, is refused.
    let stale = router
        .put_request(put_with("register", "late", 0, held.token), TIMEOUT)
        .await
        .expect_err("a stale token");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
    assert!(stale.message().contains("stale fencing token"), "{stale}");
    let value = client(&cluster, 1)
        .get(GetRequest {
            key: b"register".to_vec(),
            serializable: false,
            lease_read: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(value.value, b"second");
    // A lock with a lease that is gone is refused.
    let refused = router
        .lock("y", first.id, TIMEOUT)
        .await
        .expect_err("a revoked lease");
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
    let released = eventually(|| router.unlock("x", second.id, TIMEOUT)).await;
    assert!(released.released);
    assert!(!present(&router, "lock/x").await);
}
