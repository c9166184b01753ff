//! Watches on real processes: 3 nodes, two range partitions (keys before "m" and after).
//! A watch from a revision catches up, then follows, each change once and in order per
//! partition, with the values before; a watch cut off by a SIGKILL of its node resumes
//! on another node from where it got to and misses nothing; compaction refuses a watch
//! from before it with the compaction revision; the seeded bug `watch-skip-on-resume`
//! is caught by exactly that resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultline_harness::cluster::{
    LocalCluster, find_node_bin, free_loopback_addrs, status_all_groups,
};
use faultline_node::client::watch::{Observed, WatchCursor, prefix_end};
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::kv_client::KvClient;
use faultline_node::proto::kv::watch_client::WatchClient;
use faultline_node::proto::kv::{CompactRequest, EventType, WatchRequest, WatchResponse};
use tonic::Code;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(root: &std::path::Path, extra: &[&str]) -> LocalCluster {
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

fn endpoint(cluster: &LocalCluster, id: u64) -> Channel {
    faultline_node::server::transport::node_endpoint(cluster.addr(id), None, Duration::from_secs(3))
        .connect_lazy()
}

/// Puts `key` = `value`, retrying while the cluster elects its first leaders.
async fn put(router: &RoutingClient, key: &str, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match router
            .put(
                key.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
                None,
                TIMEOUT,
            )
            .await
        {
            Ok(reply) => return reply.revision,
            Err(status) if Instant::now() < deadline => {
                eprintln!("retrying a put: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the put never succeeded: {status}"),
        }
    }
}

/// (partition, revision, key, value, previous value) of a watch event.
type Seen = (u64, u64, String, String, Option<String>);

fn seen(response: &WatchResponse) -> Vec<Seen> {
    response
        .events
        .iter()
        .map(|e| {
            (
                response.partition,
                e.revision,
                String::from_utf8_lossy(&e.key).into_owned(),
                if e.r#type == EventType::Delete as i32 {
                    "(deleted)".into()
                } else {
                    String::from_utf8_lossy(&e.value).into_owned()
                },
                e.has_prev_value
                    .then(|| String::from_utf8_lossy(&e.prev_value).into_owned()),
            )
        })
        .collect()
}

/// Reads `stream` until `count` events have come (or panics after 20 s).
async fn take_events(
    stream: &mut tonic::Streaming<WatchResponse>,
    cursor: &mut WatchCursor,
    count: usize,
) -> Vec<Seen> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events came: {events:?}", events.len()))
            .expect("the watch stream failed")
            .expect("the watch stream ended");
        assert!(!next.canceled, "canceled: {}", next.cancel_reason);
        cursor.observe(&next);
        events.extend(seen(&next));
    }
    events
}

/// Opens a watch at node `id`, retrying while it has no map yet.
async fn open(
    cluster: &LocalCluster,
    id: u64,
    request: WatchRequest,
) -> tonic::Streaming<WatchResponse> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut client = WatchClient::new(endpoint(cluster, id));
        match client.watch(request.clone()).await {
            Ok(reply) => return reply.into_inner(),
            Err(status) if Instant::now() < deadline => {
                eprintln!("retrying a watch: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the watch never opened: {status}"),
        }
    }
}

/// Waits until node `id` has applied `index` in the partition of keys before "m".
async fn applied_at(cluster: &LocalCluster, id: u64, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = status_all_groups(cluster.addr(id)).await {
            let first = status
                .groups
                .iter()
                .filter(|g| g.group_id != 0)
                .min_by_key(|g| g.group_id);
            if first.is_some_and(|g| g.applied_index >= index) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node {id} never applied {index}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_catches_up_follows_and_resumes_on_another_node_after_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(dir.path(), &[]);
    let router = router(&cluster);
    put(&router, "a", "1").await;
    put(&router, "n", "1").await;
    put(&router, "a", "2").await;

    // From revision 1, every key: the history first, then live changes.
    let mut cursor = WatchCursor {
        key: Vec::new(),
        range_end: vec![0],
        prev_value: true,
        start_revision: 1,
        ..Default::default()
    };
    let mut stream = open(&cluster, 1, cursor.request()).await;
    let mut events = take_events(&mut stream, &mut cursor, 3).await;
    put(&router, "b", "1").await;
    events.extend(take_events(&mut stream, &mut cursor, 1).await);
    let values: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|(_, _, k, v, p)| (k.clone(), v.clone(), p.clone()))
        .collect();
    assert!(
        values.contains(&("a".into(), "2".into(), Some("1".into()))),
        "{events:?}"
    );
    assert!(
        values.contains(&("n".into(), "1".into(), None)),
        "{events:?}"
    );
    assert_eq!(values.last(), Some(&("b".into(), "1".into(), None)));
    let partitions: std::collections::BTreeSet<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(partitions.len(), 2, "both partitions' events: {events:?}");

    // Node 1 dies mid-watch; the watch resumes at node 2 from its cursor. Every change
    // written meanwhile arrives once, in revision order per partition.
    drop(stream);
    cluster.kill(1).expect("kill node 1");
    let mut written = Vec::new();
    for i in 0..10 {
        let key = if i % 2 == 0 { "c" } else { "p" };
        put(&router, key, &i.to_string()).await;
        written.push((key.to_string(), i.to_string()));
    }
    let mut stream = open(&cluster, 2, cursor.request()).await;
    let resumed = take_events(&mut stream, &mut cursor, 10).await;
    let got: Vec<(String, String)> = resumed.iter().map(|e| (e.2.clone(), e.3.clone())).collect();
    let mut expected = written.clone();
    expected.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "each change once after the resume: {resumed:?}"
    );
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (partition, revision, ..) in events.iter().chain(&resumed) {
        let before = last.insert(*partition, *revision).unwrap_or(0);
        assert!(
            *revision > before,
            "partition {partition} went back: {before} then {revision}"
        );
    }
    // Nothing more than was written.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    if let Ok(Ok(Some(response))) = extra {
        assert!(
            response.events.is_empty(),
            "an event never written: {response:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_an_older_start_and_bad_ranges_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), &[]);
    let router = router(&cluster);
    for i in 0..5 {
        put(&router, "a", &i.to_string()).await;
    }
    let last = put(&router, "a", "5").await;
    let mut kv = KvClient::new(endpoint(&cluster, 1));
    let compacted = kv
        .compact(CompactRequest {
            key: b"a".to_vec(),
            revision: last - 1,
        })
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(compacted.compact_revision, last - 1);

    // Wait until node 3 (any replica) has applied the compaction, then ask from below it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        let mut stream = open(
            &cluster,
            3,
            WatchRequest {
                key: b"a".to_vec(),
                start_revision: 2,
                ..Default::default()
            },
        )
        .await;
        let first = stream.message().await.expect("a response").expect("one");
        if first.canceled || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(response.canceled, "{response:?}");
    assert_eq!(response.compact_revision, last - 1, "{response:?}");
    assert!(
        response.cancel_reason.contains("compacted"),
        "{}",
        response.cancel_reason
    );

    // One past the compaction revision is kept: the last put is there.
    let mut cursor = WatchCursor {
        key: b"a".to_vec(),
        start_revision: last,
        ..Default::default()
    };
    let mut stream = open(&cluster, 3, cursor.request()).await;
    let events = take_events(&mut stream, &mut cursor, 1).await;
    assert_eq!(events[0].3, "5");

    // From a future revision: created, then silent until that revision is written.
    let mut future = open(
        &cluster,
        2,
        WatchRequest {
            key: b"q".to_vec(),
            start_revision: 1_000_000,
            ..Default::default()
        },
    )
    .await;
    let created = future.message().await.expect("created").expect("one");
    assert!(
        created.created && created.revision == 999_999,
        "{created:?}"
    );
    put(&router, "q", "1").await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), future.message()).await;
    assert!(
        quiet.is_err(),
        "a change below the start revision was sent: {quiet:?}"
    );

    // An empty range is refused, naming the fix.
    let mut client = WatchClient::new(endpoint(&cluster, 1));
    let refused = client
        .watch(WatchRequest {
            key: b"z".to_vec(),
            range_end: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("an empty range");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("empty"), "{}", refused.message());
    assert_eq!(prefix_end(b"a"), b"b".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_skip_on_resume_loses_the_first_change_after_a_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), &["--unsafe-seeded-bug", "watch-skip-on-resume"]);
    let router = router(&cluster);
    let first = put(&router, "a", "1").await;
    applied_at(&cluster, 1, first).await;
    let mut cursor = WatchCursor {
        key: b"a".to_vec(),
        start_revision: 0,
        ..Default::default()
    };
    let mut stream = open(&cluster, 1, cursor.request()).await;
    // Created from now: the cursor knows where the partition stands.
    let created = stream.message().await.expect("created").expect("one");
    assert!(matches!(cursor.observe(&created), Observed::Progress));
    drop(stream);
    put(&router, "a", "2").await;
    let last = put(&router, "a", "3").await;
    // The resume must find both changes applied at node 1, so that it catches up on them.
    applied_at(&cluster, 1, last).await;
    let mut stream = open(&cluster, 1, cursor.request()).await;
    let events = take_events(&mut stream, &mut cursor, 1).await;
    assert_eq!(
        events[0].3, "3",
        "the resumed watch's first change (\"2\") was skipped: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faultline_kv_watch_prints_the_changes_and_kv_compact_compacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), &[]);
    let router = router(&cluster);
    put(&router, "ab", "1").await;
    let last = put(&router, "ac", "2").await;
    put(&router, "b", "not watched").await;
    let endpoint = cluster.addr(2).to_string();
    let faultline = env!("CARGO_BIN_EXE_faultline");
    let output = tokio::process::Command::new(faultline)
        .args(["kv", "--endpoint", &endpoint, "watch", "a", "--prefix"])
        .args(["--from", "1", "--prev", "--count", "2", "--json"])
        .output()
        .await
        .expect("faultline kv watch");
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["ab", "ac"], "{lines:?}");
    assert_eq!(lines[1]["type"], "put");
    assert_eq!(lines[1]["value"], "2");

    let output = tokio::process::Command::new(faultline)
        .args([
            "kv",
            "--endpoint",
            &endpoint,
            "compact",
            "a",
            &last.to_string(),
        ])
        .output()
        .await
        .expect("faultline kv compact");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("compacted at revision {last}")),
        "{text}"
    );
}
