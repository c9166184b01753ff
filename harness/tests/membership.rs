//! Gossip membership and health on real processes (3 nodes, UDP gossip on each node's
//! address): every node learns every other's metadata; a SIGKILLed node is suspected,
//! then declared dead, and rejoins at a higher incarnation when restarted; a SIGSTOPped
//! node that resumes before its suspicion runs out refutes it; a node that reaches no
//! majority turns its client-facing services NOT_SERVING (Raft stays SERVING); and
//! `faultline kv members --json` prints the view.

use std::time::{Duration, Instant};

use faultline_harness::cluster::{LocalCluster, find_node_bin, free_loopback_addrs};
use faultline_node::proto::membership::membership_client::MembershipClient;
use faultline_node::proto::membership::{MemberState, MembersRequest, MembersResponse};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Fast gossip so the test runs in seconds: 200 ms probes, so the shortest suspicion on
/// three nodes is 800 ms (the maximum, with no confirmations expected, is the same).
const GOSSIP: &[&str] = &["--gossip-probe-interval-ms", "200"];

fn start(root: &std::path::Path, extra: &[&str]) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = GOSSIP.iter().chain(extra).map(|a| a.to_string()).collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

fn channel(cluster: &LocalCluster, id: u64) -> Channel {
    faultline_node::server::transport::node_endpoint(cluster.addr(id), None, Duration::from_secs(3))
        .connect_lazy()
}

async fn members(cluster: &LocalCluster, at: u64) -> Option<MembersResponse> {
    MembershipClient::new(channel(cluster, at))
        .members(MembersRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn state_of(view: &MembersResponse, id: u64) -> Option<MemberState> {
    view.members
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| MemberState::try_from(m.state).ok())
}

/// Polls node `at`'s view until `check` holds; panics with the last view after `limit`.
async fn wait_for(
    cluster: &LocalCluster,
    at: u64,
    limit: Duration,
    what: &str,
    check: impl Fn(&MembersResponse) -> bool,
) -> MembersResponse {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(view) = members(cluster, at).await {
            if check(&view) {
                return view;
            }
            last = Some(view);
        }
        assert!(
            Instant::now() < deadline,
            "node {at} never saw {what}; its last view: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(cluster: &LocalCluster, at: u64, service: &str) -> Option<ServingStatus> {
    let reply = HealthClient::new(channel(cluster, at))
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

async fn wait_health(cluster: &LocalCluster, at: u64, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = health(cluster, at, service).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service} on node {at} is {got:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_alive_with_meta(view: &MembersResponse) -> bool {
    view.members.len() == 3
        && view.members.iter().all(|m| {
            m.state == MemberState::Alive as i32
                && m.meta.as_ref().is_some_and(|meta| meta.started_ms > 0)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_suspected_then_dead_and_rejoins_when_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(dir.path(), &[]);
    for at in 1..=3 {
        wait_for(
            &cluster,
            at,
            Duration::from_secs(30),
            "3 alive members with metadata",
            all_alive_with_meta,
        )
        .await;
    }
    let view = members(&cluster, 1).await.expect("view");
    let coordinator = view.coordinator;
    assert!(coordinator != 0, "{view:#?}");
    let before = view.members.iter().find(|m| m.id == 3).unwrap().incarnation;

    cluster.kill(3).expect("kill");
    let killed = Instant::now();
    let suspect = wait_for(
        &cluster,
        1,
        Duration::from_secs(30),
        "node 3 suspect or dead",
        |v| {
            matches!(
                state_of(v, 3),
                Some(MemberState::Suspect | MemberState::Dead)
            )
        },
    )
    .await;
    eprintln!(
        "node 3 {:?} after {:?}",
        state_of(&suspect, 3),
        killed.elapsed()
    );
    wait_for(&cluster, 2, Duration::from_secs(30), "node 3 dead", |v| {
        state_of(v, 3) == Some(MemberState::Dead)
    })
    .await;
    eprintln!("node 3 dead at node 2 after {:?}", killed.elapsed());
    // Node 1's phi for node 3 climbs past the threshold: no heartbeats.
    let view = wait_for(
        &cluster,
        1,
        Duration::from_secs(30),
        "phi of node 3 past the threshold",
        |v| {
            v.members
                .iter()
                .any(|m| m.id == 3 && m.phi > v.phi_threshold)
        },
    )
    .await;
    assert!(
        view.members
            .iter()
            .filter(|m| m.id != 3)
            .all(|m| m.phi < view.phi_threshold)
    );

    cluster.start(3).expect("restart");
    let back = wait_for(
        &cluster,
        1,
        Duration::from_secs(30),
        "node 3 alive again",
        |v| state_of(v, 3) == Some(MemberState::Alive),
    )
    .await;
    let after = back.members.iter().find(|m| m.id == 3).unwrap().incarnation;
    assert!(
        after > before,
        "it refuted its death: incarnation {before} -> {after}"
    );
    // The restarted node started last: it is not the coordinator.
    assert_ne!(back.coordinator, 3);

    // The CLI prints the same view.
    let faultline = env!("CARGO_BIN_EXE_faultline");
    let output = tokio::process::Command::new(faultline)
        .args([
            "kv",
            "--endpoint",
            &cluster.addr(2).to_string(),
            "members",
            "--json",
        ])
        .output()
        .await
        .expect("faultline kv members");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert!(row["id"].is_u64() && row["state"].is_string() && row["address"].is_string());
    }
    assert!(rows.iter().any(|r| r["coordinator"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reaches_no_majority_stops_serving_clients_and_a_brief_pause_is_refuted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(dir.path(), &[]);
    for at in 1..=3 {
        wait_for(
            &cluster,
            at,
            Duration::from_secs(30),
            "3 alive members with metadata",
            all_alive_with_meta,
        )
        .await;
    }
    for service in [
        "faultline.kv.v1.Kv",
        "faultline.kv.v1.Watch",
        "faultline.raft.v1.Raft",
        "",
    ] {
        wait_health(&cluster, 1, service, ServingStatus::Serving).await;
    }

    // A pause shorter than the suspicion: whatever was said about node 2, it refutes.
    cluster.signal(2, libc::SIGSTOP).expect("stop");
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.signal(2, libc::SIGCONT).expect("cont");
    wait_for(
        &cluster,
        1,
        Duration::from_secs(20),
        "node 2 alive after its pause",
        |v| state_of(v, 2) == Some(MemberState::Alive),
    )
    .await;

    // Two of three gone: node 1 is out of quorum.
    cluster.kill(2).expect("kill 2");
    cluster.kill(3).expect("kill 3");
    for service in [
        "faultline.kv.v1.Kv",
        "faultline.kv.v1.Txn",
        "faultline.kv.v1.Lease",
        "faultline.kv.v1.Watch",
        "",
    ] {
        wait_health(&cluster, 1, service, ServingStatus::NotServing).await;
    }
    assert_eq!(
        health(&cluster, 1, "faultline.raft.v1.Raft").await,
        Some(ServingStatus::Serving),
        "Raft serves peers even out of quorum"
    );
    // Its metadata says so too, with the reason.
    wait_for(
        &cluster,
        1,
        Duration::from_secs(20),
        "node 1's Kv not serving in its metadata",
        |v| {
            v.members.iter().any(|m| {
                m.id == 1
                    && m.meta.as_ref().is_some_and(|meta| {
                        meta.services.iter().any(|s| {
                            s.name == "faultline.kv.v1.Kv"
                                && !s.serving
                                && s.reason.contains("out of quorum")
                        })
                    })
            })
        },
    )
    .await;

    cluster.start(2).expect("restart 2");
    wait_health(&cluster, 1, "faultline.kv.v1.Kv", ServingStatus::Serving).await;
}
