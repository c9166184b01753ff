//! `faultline bench --watch`: how long after a write its change reaches watchers, on the
//! partition's leader and on its followers. One client puts `ops` values one after the
//! other; `watchers` watches on every node receive them. Commit is not visible from
//! outside, so two figures bracket it: from the put's sending (an upper bound: it
//! includes the commit) and from its acknowledgement (the leader applies, then answers
//! and notifies at once, so this is about the follower's lag; it can be negative).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_node::client::{Routing, RoutingClient};
use faultline_node::proto::kv::WatchRequest;
use faultline_node::proto::kv::watch_client::WatchClient;

use faultline_harness::cluster::LocalCluster;

/// value -> (sent, acknowledged).
type Sent = Arc<Mutex<HashMap<String, (Instant, Option<Instant>)>>>;
/// node -> (ms from sending, ms from the acknowledgement).
type Received = Arc<Mutex<HashMap<u64, (Vec<f64>, Vec<f64>)>>>;

fn millis(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(
    cluster: &LocalCluster,
    leader: u64,
    ops: usize,
    watchers: usize,
) -> anyhow::Result<std::process::ExitCode> {
    let sent: Sent = Arc::default();
    let received: Received = Arc::default();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1024);
    for id in cluster.ids() {
        for _ in 0..watchers {
            let channel = faultline_node::server::transport::node_endpoint(
                cluster.addr(id),
                None,
                Duration::from_secs(2),
            )
            .connect_lazy();
            let (sent, received, ready) = (sent.clone(), received.clone(), ready_tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = WatchClient::new(channel);
                let request = WatchRequest {
                    key: b"bench/watch".to_vec(),
                    ..Default::default()
                };
                let Ok(reply) = client.watch(request).await else {
                    return;
                };
                let mut stream = reply.into_inner();
                let _ = ready.send(()).await;
                while let Ok(Some(response)) = stream.message().await {
                    let now = Instant::now();
                    for event in response.events {
                        let value = String::from_utf8_lossy(&event.value).into_owned();
                        let Some(&(at, acked)) = sent.lock().expect("lock").get(&value) else {
                            continue;
                        };
                        let mut received = received.lock().expect("lock");
                        let entry = received.entry(id).or_default();
                        entry.0.push((now - at).as_secs_f64() * 1e3);
                        if let Some(acked) = acked {
                            let ms = if now >= acked {
                                (now - acked).as_secs_f64() * 1e3
                            } else {
                                -((acked - now).as_secs_f64() * 1e3)
                            };
                            entry.1.push(ms);
                        }
                    }
                }
            }));
        }
    }
    drop(ready_tx);
    for _ in 0..cluster.ids().len() * watchers {
        ready_rx.recv().await;
    }
    let seeds = cluster.ids().iter().map(|&id| cluster.addr(id)).collect();
    let router = RoutingClient::new(seeds, Routing::Direct, None, Duration::from_secs(2));
    for i in 0..ops {
        let value = format!("v{i}");
        sent.lock()
            .expect("lock")
            .insert(value.clone(), (Instant::now(), None));
        router
            .put(
                b"bench/watch".to_vec(),
                value.clone().into_bytes(),
                None,
                Duration::from_secs(5),
            )
            .await
            .map_err(|s| anyhow::anyhow!("a put failed: {s}"))?;
        if let Some(entry) = sent.lock().expect("lock").get_mut(&value) {
            entry.1 = Some(Instant::now());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for task in tasks {
        task.abort();
    }
    println!(
        "watch event latency: {ops} sequential puts to one key, {watchers} watcher(s) per node"
    );
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "node", "events", "put p50 ms", "put p99 ms", "ack p50 ms", "ack p99 ms"
    );
    let mut received = received.lock().expect("lock");
    let mut ids: Vec<u64> = received.keys().copied().collect();
    ids.sort();
    for id in ids {
        let (from_put, from_ack) = received.get_mut(&id).expect("listed");
        let role = if id == leader { "leader" } else { "follower" };
        println!(
            "{:<10} {:>8} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
            format!("{id} {role}"),
            from_put.len(),
            millis(from_put, 0.5),
            millis(from_put, 0.99),
            millis(from_ack, 0.5),
            millis(from_ack, 0.99),
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
