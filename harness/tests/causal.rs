//! The causal keyspace on real processes: a lone node takes writes with the rest of the
//! cluster down, and they reach the others when they return; writes made apart become
//! siblings everywhere (or, with LWW, one winner and a reported loss); acknowledged
//! writes survive a crash of every node; a node behind a session refuses it, naming who
//! can serve it; bad tokens and a corrupt causal log get clear errors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultline_harness::causal_store::{agree, dump_all};
use faultline_harness::cluster::{LocalCluster, find_node_bin, free_loopback_addrs};
use faultline_node::proto::causal::causal_client::CausalClient;
use faultline_node::proto::causal::{
    CausalGetRequest, CausalPutRequest, ContextToken, DumpRequest, ListOverwrittenRequest,
    VectorEntry,
};
use faultline_node::server::causal::{TRY_METADATA, cluster_fingerprint};
use prost::Message as _;
use tonic::transport::Channel;

fn start(root: &std::path::Path, args: &[&str]) -> LocalCluster {
    let node_bin = find_node_bin().expect("node binary");
    let addrs = free_loopback_addrs(3).expect("ports");
    let args = args.iter().map(|a| a.to_string()).collect();
    let mut cluster = LocalCluster::new(&node_bin, root, &addrs, args).expect("layout");
    cluster.start_all().expect("start");
    cluster
}

fn client(cluster: &LocalCluster, id: u64) -> CausalClient<Channel> {
    faultline_harness::causal_client::connect(cluster.addr(id), Duration::from_secs(5))
}

/// Waits for node `id` to serve the causal keyspace.
async fn ready(cluster: &LocalCluster, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client(cluster, id)
        .dump(DumpRequest {
            include_data: false,
        })
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "n{id} never served the causal keyspace; its log ends:\n{}",
            faultline_harness::cluster::log_tail(&cluster.nodes()[id as usize - 1].log_path, 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(cluster: &LocalCluster, id: u64, key: &str, value: &str, context: Vec<u8>) -> Vec<u8> {
    client(cluster, id)
        .put(CausalPutRequest {
            key: key.into(),
            value: value.into(),
            context,
            wait_ms: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("n{id} refused put {key}={value}: {s}"))
        .into_inner()
        .context
}

async fn get(
    cluster: &LocalCluster,
    id: u64,
    key: &str,
    context: Vec<u8>,
) -> (Vec<String>, Vec<u8>) {
    let reply = client(cluster, id)
        .get(CausalGetRequest {
            key: key.into(),
            context,
            wait_ms: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("n{id} refused get {key}: {s}"))
        .into_inner();
    let mut values: Vec<String> = reply
        .values
        .iter()
        .map(|s| String::from_utf8_lossy(&s.value).into_owned())
        .collect();
    values.sort();
    (values, reply.context)
}

/// Waits until every running node's replica holds the same data.
async fn converged(cluster: &LocalCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dumps = dump_all(&cluster.running(), false).await;
        if agree(&dumps) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not converge: {dumps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_takes_writes_and_writes_made_apart_become_siblings_everywhere() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(root.path(), &[]);
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    // n1 alone: no majority anywhere, and it still takes writes.
    cluster.kill(2).expect("kill");
    cluster.kill(3).expect("kill");
    put(&cluster, 1, "k", "a", Vec::new()).await;
    put(&cluster, 1, "lone", "x", Vec::new()).await;
    // Then n2 alone, which never saw "a".
    cluster.kill(1).expect("kill");
    cluster.start(2).expect("restart");
    ready(&cluster, 2).await;
    put(&cluster, 2, "k", "b", Vec::new()).await;
    cluster.start(1).expect("restart");
    cluster.start(3).expect("restart");
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    converged(&cluster).await;
    for id in 1..=3 {
        let (values, _) = get(&cluster, id, "k", Vec::new()).await;
        assert_eq!(
            values,
            ["a", "b"],
            "n{id}: both concurrent writes, as siblings"
        );
        let (values, _) = get(&cluster, id, "lone", Vec::new()).await;
        assert_eq!(values, ["x"], "n{id}: the lone node's write reached it");
    }
    // A write that read both siblings overwrites both, everywhere.
    let (_, seen) = get(&cluster, 3, "k", Vec::new()).await;
    put(&cluster, 3, "k", "c", seen).await;
    converged(&cluster).await;
    for id in 1..=3 {
        assert_eq!(get(&cluster, id, "k", Vec::new()).await.0, ["c"], "n{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_keeps_one_value_and_reports_the_concurrent_write_it_overwrote() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(root.path(), &["--causal-resolve", "lww"]);
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    cluster.kill(2).expect("kill");
    cluster.kill(3).expect("kill");
    put(&cluster, 1, "k", "first", Vec::new()).await;
    cluster.kill(1).expect("kill");
    // Stamped later by the hybrid logical clock: it wins.
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.start(2).expect("restart");
    ready(&cluster, 2).await;
    put(&cluster, 2, "k", "second", Vec::new()).await;
    cluster.start(1).expect("restart");
    cluster.start(3).expect("restart");
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    converged(&cluster).await;
    let mut reported = 0;
    for id in 1..=3 {
        assert_eq!(
            get(&cluster, id, "k", Vec::new()).await.0,
            ["second"],
            "n{id}"
        );
        let lost = client(&cluster, id)
            .list_overwritten(ListOverwrittenRequest {})
            .await
            .expect("listed")
            .into_inner();
        for o in &lost.overwritten {
            assert_eq!(o.lost_value.as_deref(), Some(&b"first"[..]));
            assert_eq!(o.winner_value.as_deref(), Some(&b"second"[..]));
            reported += 1;
        }
    }
    assert!(
        reported >= 1,
        "the overwritten concurrent write was reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_every_node_crashing_at_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(root.path(), &[]);
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let node = 1 + i % 3;
        let key = format!("k{i}");
        put(&cluster, node, &key, &format!("v{i}"), Vec::new()).await;
        acked.insert(key, format!("v{i}"));
    }
    // Every process killed at once: what was acknowledged was in the log first.
    for id in 1..=3 {
        cluster.kill(id).expect("kill");
    }
    for id in 1..=3 {
        cluster.start(id).expect("restart");
    }
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    converged(&cluster).await;
    for id in 1..=3 {
        for (key, value) in &acked {
            assert_eq!(
                &get(&cluster, id, key, Vec::new()).await.0,
                std::slice::from_ref(value),
                "n{id} {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_session_refuses_it_and_bad_tokens_are_named() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path(), &[]);
    for id in 1..=3 {
        ready(&cluster, id).await;
    }
    let members: BTreeMap<u64, std::net::SocketAddr> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.addr(id)))
        .collect();
    let token = |cluster_id: u64, node: u64, counter: u64| {
        ContextToken {
            cluster: cluster_id,
            entries: vec![VectorEntry { node, counter }],
        }
        .encode_to_vec()
    };
    let ours = cluster_fingerprint(&members);
    // A session that has seen n1's 1000th write, which no node holds: refused after the
    // wait, not applied, naming the node to try.
    let refused = client(&cluster, 2)
        .get(CausalGetRequest {
            key: "k".into(),
            context: token(ours, 1, 1000),
            wait_ms: 100,
        })
        .await
        .expect_err("behind the context");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused}");
    assert!(
        refused.message().contains("n1: has 0 of 1000 writes"),
        "{refused}"
    );
    assert_eq!(
        refused
            .metadata()
            .get(TRY_METADATA)
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    // The same write refused too: a node never takes a write from a session it is behind.
    let refused = client(&cluster, 2)
        .put(CausalPutRequest {
            key: "k".into(),
            value: "v".into(),
            context: token(ours, 1, 1000),
            wait_ms: 50,
        })
        .await
        .expect_err("behind the context");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused}");
    assert!(
        get(&cluster, 2, "k", Vec::new()).await.0.is_empty(),
        "not applied"
    );

    for (context, words) in [
        (b"\xff\xff\xff".to_vec(), "does not decode"),
        (token(ours ^ 1, 1, 1), "another cluster"),
        (token(ours, 9, 1), "names node 9"),
    ] {
        let refused = client(&cluster, 1)
            .get(CausalGetRequest {
                key: "k".into(),
                context,
                wait_ms: 0,
            })
            .await
            .expect_err("a bad token");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains(words), "{refused}");
    }
    let refused = client(&cluster, 1)
        .put(CausalPutRequest {
            key: vec![b'k'; 5000],
            value: "v".into(),
            context: Vec::new(),
            wait_ms: 0,
        })
        .await
        .expect_err("an oversized key");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("over the limit"), "{refused}");
    // A context from a real reply is accepted by every node once it has caught up.
    let context = put(&cluster, 1, "k", "v", Vec::new()).await;
    for id in 2..=3 {
        assert_eq!(
            get(&cluster, id, "k", context.clone()).await.0,
            ["v"],
            "n{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_causal_log_stops_the_node_with_a_message_that_names_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(root.path(), &[]);
    ready(&cluster, 1).await;
    for i in 0..20 {
        put(&cluster, 1, &format!("k{i}"), "value", Vec::new()).await;
    }
    assert!(cluster.stop(1, Duration::from_secs(5)).expect("stop"));
    let dir = cluster.nodes()[0].data_dir.join("causal");
    let segment = std::fs::read_dir(&dir)
        .expect("the causal log directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 200))
        .expect("a segment with the writes");
    let mut bytes = std::fs::read(&segment).expect("read");
    // Inside an early record, far from the tail: corruption, not a torn last write.
    for b in &mut bytes[40..48] {
        *b ^= 0xff;
    }
    std::fs::write(&segment, bytes).expect("write");
    cluster.start(1).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&cluster.nodes()[0].log_path).unwrap_or_default();
        if log.contains("faultline-node: error") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not refuse its corrupt log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.contains("causal log"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
