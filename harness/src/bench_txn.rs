//! `faultline bench --txn`: transactions against a local cluster of real node processes.
//! Throughput, latency and abort rate by partitions touched (1: the single-entry fast
//! path; 2 and 4: two-phase commit coordinated by the receiving node) and by isolation
//! level, uncontended and under zipf contention; then how long a dead coordinator's
//! intents hold readers up. Client i sends everything to node i mod n, which coordinates
//! or forwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_harness::cluster::LocalCluster;
use faultline_node::client::{Routing, RoutingClient};
use faultline_node::partitioning::{PartitionMap, convert::from_wire};
use faultline_node::proto::kv::{self as wire, MicroOp, TxnRequest, micro_op};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per partition that contended transactions share.
const HOT_KEYS: usize = 32;
/// Zipf's exponent for picking among them: key 0 takes about a quarter of the picks.
const ZIPF_S: f64 = 1.0;
/// Keys per partition each client owns when uncontended.
const OWN_KEYS: usize = 8;

/// Keys grouped by the partition they hash to.
struct Keys {
    /// Per partition: `HOT_KEYS` shared keys, then `OWN_KEYS` per client.
    by_partition: Vec<Vec<Vec<u8>>>,
}

impl Keys {
    fn new(map: &PartitionMap, clients: usize) -> Keys {
        let partitions = map.len();
        let want = HOT_KEYS + OWN_KEYS * clients;
        let ids: Vec<u64> = map.descriptors().map(|d| d.id).collect();
        let mut by_partition = vec![Vec::new(); partitions];
        let mut i = 0u64;
        while by_partition.iter().any(|k: &Vec<Vec<u8>>| k.len() < want) {
            let key = format!("txn-{i}").into_bytes();
            let id = map.locate(&key).id;
            let slot = ids
                .iter()
                .position(|&p| p == id)
                .expect("located in the map");
            if by_partition[slot].len() < want {
                by_partition[slot].push(key);
            }
            i += 1;
        }
        Keys { by_partition }
    }
}

#[derive(Clone, Copy)]
enum Contention {
    None,
    Zipf,
}

struct TxnPhase {
    touched: usize,
    level: wire::Isolation,
    contention: Contention,
    committed: usize,
    aborted: usize,
    /// Coordinated across partitions, and their attempts, over every node (`Status`).
    coordinated: u64,
    attempts: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn level_name(level: wire::Isolation) -> &'static str {
    match level {
        wire::Isolation::Snapshot => "snapshot",
        wire::Isolation::ReadCommitted => "read-committed",
        _ => "serializable",
    }
}

impl TxnPhase {
    fn print(&self) {
        let at = |p: f64| crate::bench::percentile(&self.latencies, p).as_secs_f64() * 1e3;
        let tried = self.committed + self.aborted;
        // Each attempt past a transaction's first is one aborted by a refusal.
        let retried = if self.coordinated == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.2}",
                100.0 * (self.attempts - self.coordinated) as f64 / self.attempts as f64
            )
        };
        println!(
            "{:>7} {:<15} {:<11} {:>9} {:>9.0} {:>9} {:>7.2} {:>9.2} {:>9.2}",
            self.touched,
            level_name(self.level),
            match self.contention {
                Contention::None => "none",
                Contention::Zipf => "zipf",
            },
            self.committed,
            self.committed as f64 / self.elapsed.as_secs_f64(),
            retried,
            100.0 * self.aborted as f64 / tried.max(1) as f64,
            at(0.5),
            at(0.99),
        );
    }
}

/// The cumulative distribution of zipf over `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(ZIPF_S)).collect();
    let total: f64 = weights.iter().sum();
    let mut sum = 0.0;
    weights
        .iter()
        .map(|w| {
            sum += w / total;
            sum
        })
        .collect()
}

fn op(op: micro_op::Op) -> MicroOp {
    MicroOp { op: Some(op) }
}

#[allow(clippy::too_many_arguments)]
async fn txn_phase(
    endpoints: &[SocketAddr],
    keys: &Arc<Keys>,
    clients: usize,
    touched: usize,
    level: wire::Isolation,
    contention: Contention,
    seconds: u64,
    value: &Arc<Vec<u8>>,
) -> TxnPhase {
    let before = counters(endpoints).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cdf = Arc::new(zipf_cdf(HOT_KEYS));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut seeds = endpoints.to_vec();
        seeds.rotate_left(c % endpoints.len());
        // Through a node: a transaction over several partitions is coordinated by the node
        // that receives it (a routed one must stay within its partition).
        let client = RoutingClient::new(seeds, Routing::Node, None, Duration::from_secs(2));
        let (stop, keys, value, cdf) = (stop.clone(), keys.clone(), value.clone(), cdf.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
            let partitions = keys.by_partition.len();
            let (mut latencies, mut aborted) = (Vec::new(), 0usize);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Consecutive partitions from a client's own first one: primaries spread.
                let first = (c + n) % partitions;
                let ops: Vec<MicroOp> = (0..touched)
                    .flat_map(|i| {
                        let pool = &keys.by_partition[(first + i) % partitions];
                        let index = match contention {
                            Contention::None => HOT_KEYS + c * OWN_KEYS + n % OWN_KEYS,
                            Contention::Zipf => {
                                let u: f64 = rng.random();
                                cdf.partition_point(|&p| p < u).min(HOT_KEYS - 1)
                            }
                        };
                        let key = pool[index].clone();
                        [
                            op(micro_op::Op::Read(wire::TxnRead { key: key.clone() })),
                            op(micro_op::Op::Write(wire::TxnWrite {
                                key,
                                value: value.to_vec(),
                            })),
                        ]
                    })
                    .collect();
                let message = TxnRequest {
                    ops,
                    isolation: level as i32,
                    write_id: None,
                };
                let begin = Instant::now();
                match client.txn(message, OP_TIMEOUT).await {
                    Ok(reply) if reply.committed => latencies.push(begin.elapsed()),
                    _ => aborted += 1,
                }
                n += 1;
            }
            (latencies, aborted)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut aborted) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((latencies, a)) = task.await {
            all.extend(latencies);
            aborted += a;
        }
    }
    all.sort_unstable();
    let elapsed = started.elapsed();
    let after = counters(endpoints).await;
    TxnPhase {
        touched,
        level,
        contention,
        committed: all.len(),
        aborted,
        coordinated: after.0.saturating_sub(before.0),
        attempts: after.1.saturating_sub(before.1),
        elapsed,
        latencies: all,
    }
}

/// Cross-partition transactions coordinated and their attempts, summed over the nodes.
async fn counters(endpoints: &[SocketAddr]) -> (u64, u64) {
    let mut sum = (0, 0);
    for &addr in endpoints {
        if let Ok(s) = faultline_harness::cluster::status(addr).await {
            sum.0 += s.txns_coordinated;
            sum.1 += s.txn_attempts;
        }
    }
    sum
}

/// The current map, fetched from the cluster.
async fn map(endpoints: &[SocketAddr]) -> anyhow::Result<PartitionMap> {
    let client = RoutingClient::new(
        endpoints.to_vec(),
        Routing::Direct,
        None,
        Duration::from_secs(2),
    );
    let response = client
        .partition_map(OP_TIMEOUT)
        .await
        .context("cannot fetch the partition map")?;
    let descriptors = response
        .partitions
        .iter()
        .map(|d| from_wire(d).map(|(d, _)| d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("a descriptor did not decode: {e}"))?;
    PartitionMap::new(descriptors).map_err(|e| anyhow::anyhow!("the map is not whole: {e}"))
}

/// Whether the node at `addr` leads the partition of either key.
async fn leads(addr: SocketAddr, map: &PartitionMap, pair: &(Vec<u8>, Vec<u8>)) -> bool {
    let wanted = [map.locate(&pair.0).id, map.locate(&pair.1).id];
    faultline_harness::cluster::status_all_groups(addr)
        .await
        .map(|s| {
            s.groups
                .iter()
                .any(|g| g.role == "leader" && wanted.contains(&g.group_id))
        })
        .unwrap_or(false)
}

/// How long a restarted coordinator is given before the next round's kill. With 3 s, a
/// kill within seconds of the previous node's restart left the surviving replicas of a
/// group without a known leader for about 5 s (BENCHMARKS.md), which measured that stall
/// and not the intents' resolution.
const REJOIN_SETTLE: Duration = Duration::from_secs(10);

/// One coordinator kill: node `coordinator` dies with a two-partition transaction
/// prepared; the time from its death until a reader (a routing client, straight to each
/// partition's leader, never the dead node) has read both keys
/// (each read settles the intent it meets, recovering it once stale).
async fn kill_round(
    cluster: &mut LocalCluster,
    coordinator: u64,
    keys: (&[u8], &[u8]),
    value: &[u8],
) -> anyhow::Result<Duration> {
    let addr = cluster.addr(coordinator);
    faultline_harness::nemesis::set_failpoint(addr, "txn-after-prepare", "exit").await?;
    let via = RoutingClient::new(vec![addr], Routing::Node, None, Duration::from_secs(2));
    let message = TxnRequest {
        ops: [keys.0, keys.1]
            .iter()
            .map(|k| {
                op(micro_op::Op::Write(wire::TxnWrite {
                    key: k.to_vec(),
                    value: value.to_vec(),
                }))
            })
            .collect(),
        isolation: wire::Isolation::Serializable as i32,
        write_id: None,
    };
    let _ = via.txn(message, OP_TIMEOUT).await;
    let asked = Instant::now();
    while !cluster.exited(coordinator)? {
        if asked.elapsed() > OP_TIMEOUT {
            anyhow::bail!("node {coordinator} did not die at txn-after-prepare");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let died = Instant::now();
    let others: Vec<SocketAddr> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != coordinator)
        .map(|id| cluster.addr(id))
        .collect();
    let reader = RoutingClient::new(others, Routing::Direct, None, Duration::from_secs(2));
    for key in [keys.0, keys.1] {
        loop {
            if reader
                .get(key.to_vec(), false, Duration::from_secs(1))
                .await
                .is_ok()
            {
                break;
            }
            if died.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("the intents were not resolved within 60 s of the kill");
            }
        }
    }
    let resolved = died.elapsed();
    cluster.start(coordinator)?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    // Every group led again before the next round.
    tokio::time::sleep(REJOIN_SETTLE).await;
    Ok(resolved)
}

pub async fn run(
    cluster: &mut LocalCluster,
    clients: usize,
    seconds: u64,
    kill_rounds: usize,
) -> anyhow::Result<ExitCode> {
    let endpoints: Vec<SocketAddr> = cluster.ids().iter().map(|&id| cluster.addr(id)).collect();
    let map = map(&endpoints).await?;
    if map.len() < 4 {
        anyhow::bail!(
            "--txn needs at least 4 partitions to touch 4 (got {}): pass --partitions 4",
            map.len()
        );
    }
    let keys = Arc::new(Keys::new(&map, clients));
    let value = Arc::new(vec![b'v'; 64]);
    println!(
        "faultline bench --txn: {} nodes (fsync on), {} partitions (hash), {clients} clients, {seconds} s a phase; each transaction reads and writes one key per partition touched",
        endpoints.len(),
        map.len()
    );
    // Warm up connections and every partition's first commit.
    txn_phase(
        &endpoints,
        &keys,
        4,
        4,
        wire::Isolation::Serializable,
        Contention::None,
        2,
        &value,
    )
    .await;
    println!(
        "{:>7} {:<15} {:<11} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "touched",
        "isolation",
        "contention",
        "committed",
        "txn/s",
        "retried%",
        "failed%",
        "p50 ms",
        "p99 ms"
    );
    for contention in [Contention::None, Contention::Zipf] {
        for touched in [1, 2, 4] {
            for level in [
                wire::Isolation::Serializable,
                wire::Isolation::Snapshot,
                wire::Isolation::ReadCommitted,
            ] {
                txn_phase(
                    &endpoints, &keys, clients, touched, level, contention, seconds, &value,
                )
                .await
                .print();
            }
        }
    }
    if kill_rounds > 0 {
        // Two keys on different partitions; each round kills the next node, so that the
        // dead coordinator sometimes led a participant too (then an election comes first).
        let pair = (
            keys.by_partition[0][HOT_KEYS].clone(),
            keys.by_partition[1][HOT_KEYS].clone(),
        );
        let ids = cluster.ids();
        let mut times = BTreeMap::new();
        for round in 0..kill_rounds {
            let coordinator = ids[round % ids.len()];
            let led = leads(cluster.addr(coordinator), &map, &pair).await;
            let t = kill_round(cluster, coordinator, (&pair.0, &pair.1), &value).await?;
            println!(
                "  kill round {round}: coordinator n{coordinator} ({}), intents resolved {:.2} s after its death",
                if led {
                    "it led a participant"
                } else {
                    "it led no participant"
                },
                t.as_secs_f64()
            );
            times.insert(round, t);
        }
        let mut sorted: Vec<Duration> = times.values().copied().collect();
        sorted.sort_unstable();
        let at = |p: f64| crate::bench::percentile(&sorted, p).as_secs_f64();
        println!(
            "coordinator killed between prepare and commit ({kill_rounds} rounds): intents resolved by readers {:.2} s after the kill (p50), {:.2} s (max); TTL {} s",
            at(0.5),
            at(1.0),
            faultline_node::server::txn::TXN_TTL.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}
