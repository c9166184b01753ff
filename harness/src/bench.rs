//! `faultline bench`: put and get throughput and latency against a local cluster of
//! real node processes (fsync on). Each client is a routing client with its own
//! connections: by default it sends each request to its partition's leader
//! (`--routing direct`); `--routing node` sends everything through one node per client,
//! which forwards what it does not lead.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use faultline_harness::causal_store::{agree, dump_all};
use faultline_harness::cluster::{LocalCluster, find_node_bin, free_loopback_addrs};
use faultline_node::client::{Routing, RoutingClient};

/// Each operation's deadline.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct BenchArgs {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent clients for the throughput phases.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of each throughput phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Operations in each sequential (one client) latency phase.
    #[arg(long, default_value_t = 2000)]
    sequential_ops: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// The node binary (default: beside this one).
    #[arg(long)]
    node_bin: Option<std::path::PathBuf>,
    /// An extra argument for every node (repeat for several).
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Keep node data and logs here instead of a temporary directory.
    #[arg(long)]
    store: Option<std::path::PathBuf>,
    /// Partitions the cluster is formed with (each its own Raft group).
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// How keys map to partitions (default hash, which spreads the bench's keys).
    #[arg(long, value_name = "SCHEME", default_value = "hash")]
    partitioning: String,
    /// How clients reach partitions: direct (to each partition's leader, as the routing
    /// client does) or node (each client through one node, which forwards).
    #[arg(long, value_name = "ROUTING", default_value = "direct")]
    routing: Routing,
    /// Instead of the load phases: wait for every group to elect and settle, then measure
    /// the nodes' CPU time over this many idle seconds.
    #[arg(long, value_name = "SECS")]
    idle_secs: Option<u64>,
    /// Instead of the linearizable store: the causal keyspace. Put and get latency and
    /// throughput (each client one session at one node, acknowledged by it alone),
    /// replication lag, convergence after a pause-partition heals (p50, p99), and
    /// anti-entropy bytes per second at rest and after the partition.
    #[arg(long)]
    causal: bool,
    /// Rounds of the causal convergence measurement.
    #[arg(long, default_value_t = 20)]
    causal_rounds: usize,
    /// Instead of puts and gets: transactions. Throughput, latency and abort rate by
    /// partitions touched (1, 2, 4) and isolation level, uncontended and under zipf
    /// contention (`--seconds` each), then `--kill-rounds` coordinator kills between
    /// prepare and commit and how long until readers have resolved the intents. Needs
    /// `--partitions 4` or more; the nodes get `--enable-fault-injection`.
    #[arg(long)]
    txn: bool,
    /// Coordinator kills measured by `--txn` (0 for none).
    #[arg(long, default_value_t = 5)]
    kill_rounds: usize,
    /// Instead of puts and gets: watch event latency, on the leader and on followers
    /// (`--sequential-ops` puts to one key, `--watchers` watches of it per node).
    #[arg(long)]
    watch: bool,
    /// Watches per node for `--watch`.
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    /// Instead of a cluster: the gossip core's time to detect a killed member (p50, p99)
    /// and its false suspicions, on 3, 5 and 9 members at 0 % and 5 % loss, with
    /// memberlist's parameters, in virtual time (`--gossip-trials` per row).
    #[arg(long)]
    gossip: bool,
    #[arg(long, default_value_t = 200)]
    gossip_trials: usize,
    /// Instead of puts and gets: grant this many leases (`--clients` at a time), then renew
    /// each every third of its TTL for `--seconds`: keep-alives per second, their latency,
    /// and the nodes' CPU and memory against the same cluster at rest.
    #[arg(long, value_name = "N")]
    leases: Option<usize>,
    /// The TTL of `--leases`' leases, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    lease_ttl_ms: u64,
}

struct Phase {
    name: &'static str,
    clients: usize,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn print(&self) {
        println!(
            "{:<22} {:>7} {:>9} {:>6} {:>11.0} {:>9.3} {:>9.3} {:>9.3}",
            self.name,
            self.clients,
            self.ops,
            self.errors,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.percentile(1.0).as_secs_f64() * 1e3,
        );
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

async fn phase(
    name: &'static str,
    op: Op,
    endpoints: &[std::net::SocketAddr],
    routing: Routing,
    clients: usize,
    limit: Limit,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        // Client i starts from node i: with `--routing node` that is the node it uses.
        let mut seeds = endpoints.to_vec();
        seeds.rotate_left(client_index % endpoints.len());
        let client = RoutingClient::new(seeds, routing, None, Duration::from_secs(2));
        let (stop, value) = (stop.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = 0usize;
            loop {
                match limit {
                    Limit::Ops(max) if n >= max => break,
                    _ if stop.load(Ordering::Relaxed) => break,
                    _ => {}
                }
                let key = format!("bench-{client_index}-{}", n % 1024).into_bytes();
                let begin = Instant::now();
                let ok = match op {
                    Op::Put => client
                        .put(key, value.to_vec(), None, OP_TIMEOUT)
                        .await
                        .is_ok(),
                    Op::Get => client.get(key, false, OP_TIMEOUT).await.is_ok(),
                };
                if ok {
                    latencies.push(begin.elapsed());
                } else {
                    errors += 1;
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    gather(name, clients, started, limit, &stop, tasks).await
}

/// Each client's latencies and its count of failed operations.
type ClientTask = tokio::task::JoinHandle<(Vec<Duration>, usize)>;

/// Ends a timed phase when its time is up, then gathers every client's results.
async fn gather(
    name: &'static str,
    clients: usize,
    started: Instant,
    limit: Limit,
    stop: &AtomicBool,
    tasks: Vec<ClientTask>,
) -> anyhow::Result<Phase> {
    if let Limit::Time(duration) = limit {
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, task_errors) = task.await?;
        all.extend(latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    Ok(Phase {
        name,
        clients,
        ops: all.len(),
        errors,
        elapsed,
        latencies: all,
    })
}

#[derive(Clone, Copy)]
enum Limit {
    Time(Duration),
    Ops(usize),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.gossip {
        return crate::bench_gossip::run(args.gossip_trials.max(1));
    }
    let node_bin = match &args.node_bin {
        Some(path) => path.clone(),
        None => find_node_bin()?,
    };
    let temp;
    let root = match &args.store {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let addrs = free_loopback_addrs(args.nodes)?;
    let mut node_args = args.node_args.clone();
    if args.txn {
        node_args.push("--enable-fault-injection".to_string());
    }
    if let Some(partitions) = args.partitions {
        node_args.extend([
            "--partitions".to_string(),
            partitions.to_string(),
            "--partitioning".to_string(),
            args.partitioning.clone(),
        ]);
    }
    let mut cluster = LocalCluster::new(&node_bin, &root, &addrs, node_args)?;
    cluster.start_all()?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    if let Some(secs) = args.idle_secs {
        let code = idle(&cluster, args.partitions.unwrap_or(1), secs).await;
        for id in cluster.ids() {
            cluster.stop(id, Duration::from_secs(5))?;
        }
        return code;
    }
    if args.txn {
        let result =
            crate::bench_txn::run(&mut cluster, args.clients, args.seconds, args.kill_rounds).await;
        for id in cluster.ids() {
            cluster.stop(id, Duration::from_secs(5))?;
        }
        return result;
    }
    if let Some(leases) = args.leases {
        let result = crate::bench_leases::run(
            &cluster,
            leases,
            args.clients,
            args.lease_ttl_ms,
            args.seconds,
        )
        .await;
        for id in cluster.ids() {
            cluster.stop(id, Duration::from_secs(5))?;
        }
        return result;
    }
    if args.watch {
        let result =
            crate::bench_watch::run(&cluster, leader, args.sequential_ops, args.watchers).await;
        for id in cluster.ids() {
            cluster.stop(id, Duration::from_secs(5))?;
        }
        return result;
    }
    if args.causal {
        let result = causal(&cluster, &args).await;
        for id in cluster.ids() {
            cluster.stop(id, Duration::from_secs(5))?;
        }
        return result;
    }
    let endpoint = cluster.addr(leader);
    // Direct clients find every leader themselves. Through nodes: with partitions the
    // leaders spread over the nodes, and so do the clients; without, they all talk to
    // the one leader.
    let endpoints: Vec<std::net::SocketAddr> =
        if args.routing == Routing::Direct || args.partitions.is_some_and(|p| p > 1) {
            let mut all: Vec<_> = cluster.ids().iter().map(|&id| cluster.addr(id)).collect();
            all.sort_by_key(|a| *a != endpoint);
            all
        } else {
            vec![endpoint]
        };
    let value = Arc::new(vec![b'v'; args.value_bytes]);
    println!(
        "faultline bench: {} nodes (fsync on), leader {leader} at {endpoint}, routing {}, {}-byte values, node binary {}",
        args.nodes,
        args.routing,
        args.value_bytes,
        node_bin.display()
    );
    // Warm up connections and the leader's first commit.
    phase(
        "warmup",
        Op::Put,
        &endpoints,
        args.routing,
        4,
        Limit::Ops(50),
        value.clone(),
    )
    .await?;
    println!(
        "{:<22} {:>7} {:>9} {:>6} {:>11} {:>9} {:>9} {:>9}",
        "phase", "clients", "ops", "errors", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    let sequential = Limit::Ops(args.sequential_ops);
    let timed = Limit::Time(Duration::from_secs(args.seconds));
    phase(
        "put sequential",
        Op::Put,
        &endpoints,
        args.routing,
        1,
        sequential,
        value.clone(),
    )
    .await?
    .print();
    phase(
        "get sequential (lin.)",
        Op::Get,
        &endpoints,
        args.routing,
        1,
        sequential,
        value.clone(),
    )
    .await?
    .print();
    phase(
        "put concurrent",
        Op::Put,
        &endpoints,
        args.routing,
        args.clients,
        timed,
        value.clone(),
    )
    .await?
    .print();
    phase(
        "get concurrent (lin.)",
        Op::Get,
        &endpoints,
        args.routing,
        args.clients,
        timed,
        value.clone(),
    )
    .await?
    .print();
    for id in cluster.ids() {
        cluster.stop(id, Duration::from_secs(5))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// CPU seconds (user + system) the process has used, from /proc.
pub(crate) fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let clock_ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / clock_ticks)
}

/// Waits until every group has a leader and has had time to quiesce, then measures each
/// node's CPU over `secs` idle seconds.
async fn idle(cluster: &LocalCluster, partitions: u32, secs: u64) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let groups = partitions as usize + 1;
    loop {
        let mut led = std::collections::BTreeSet::new();
        for id in cluster.ids() {
            if let Ok(s) = faultline_harness::cluster::status_all_groups(cluster.addr(id)).await {
                led.extend(
                    s.groups
                        .iter()
                        .filter(|g| g.role == "leader")
                        .map(|g| g.group_id),
                );
            }
        }
        if led.len() >= groups {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!(
                "only {} of {groups} groups elected a leader in 120 s",
                led.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elected = started.elapsed();
    // Long enough for idle groups to quiesce.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids: Vec<(u64, u32)> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id).map(|pid| (id, pid)))
        .collect();
    let before: Vec<f64> = pids
        .iter()
        .map(|&(_, pid)| cpu_secs(pid))
        .collect::<anyhow::Result<_>>()?;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = window.elapsed().as_secs_f64();
    let mut quiesced = 0;
    let mut hosted = 0;
    for id in cluster.ids() {
        if let Ok(s) = faultline_harness::cluster::status_all_groups(cluster.addr(id)).await {
            hosted += s.groups.len();
            quiesced += s.groups.iter().filter(|g| g.quiesced).count();
        }
    }
    println!(
        "faultline bench --idle-secs {secs}: {} nodes, {partitions} partitions ({groups} groups, every one led after {:.1} s); {quiesced} of {hosted} replicas quiesced",
        pids.len(),
        elected.as_secs_f64()
    );
    println!("{:<6} {:>12}", "node", "CPU % of a core");
    for ((id, pid), before) in pids.iter().zip(before) {
        let used = cpu_secs(*pid)? - before;
        println!("n{id:<5} {:>12.2}", 100.0 * used / elapsed);
    }
    Ok(ExitCode::SUCCESS)
}

fn causal_client(
    addr: std::net::SocketAddr,
) -> faultline_node::proto::causal::causal_client::CausalClient<tonic::transport::Channel> {
    faultline_harness::causal_client::connect(addr, OP_TIMEOUT)
}

/// One causal phase: each client a session at node `i % nodes`.
async fn causal_phase(
    name: &'static str,
    op: Op,
    addrs: &[std::net::SocketAddr],
    clients: usize,
    limit: Limit,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<Phase> {
    use faultline_node::proto::causal::{CausalGetRequest, CausalPutRequest};
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = causal_client(addrs[c % addrs.len()]);
        let (stop, value) = (stop.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut n) = (Vec::new(), 0usize, 0usize);
            let mut context = Vec::new();
            loop {
                match limit {
                    Limit::Ops(max) if n >= max => break,
                    _ if stop.load(Ordering::Relaxed) => break,
                    _ => {}
                }
                let key = format!("bench-{c}-{}", n % 1024).into_bytes();
                let begin = Instant::now();
                let reply = match op {
                    Op::Put => client
                        .put(CausalPutRequest {
                            key,
                            value: value.to_vec(),
                            context: context.clone(),
                            wait_ms: 0,
                        })
                        .await
                        .map(|r| r.into_inner().context),
                    Op::Get => client
                        .get(CausalGetRequest {
                            key,
                            context: context.clone(),
                            wait_ms: 0,
                        })
                        .await
                        .map(|r| r.into_inner().context),
                };
                match reply {
                    Ok(next) => {
                        latencies.push(begin.elapsed());
                        context = next;
                    }
                    Err(_) => errors += 1,
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    gather(name, clients, started, limit, &stop, tasks).await
}

async fn exchange_bytes(cluster: &LocalCluster) -> u64 {
    dump_all(&cluster.running(), false)
        .await
        .values()
        .filter_map(|d| d.as_ref().ok())
        .map(|d| d.exchange_bytes_sent)
        .sum()
}

async fn digests_agree(cluster: &LocalCluster) -> bool {
    agree(&dump_all(&cluster.running(), false).await)
}

/// The `p`-th quantile of `sorted` (zero when empty), by nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// p50, p99 and max of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| percentile(&samples, p).as_secs_f64() * 1e3;
    (at(0.5), at(0.99), at(1.0))
}

/// `faultline bench --causal`.
async fn causal(cluster: &LocalCluster, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use faultline_node::proto::causal::{CausalGetRequest, CausalPutRequest};
    let addrs: Vec<std::net::SocketAddr> =
        cluster.ids().iter().map(|&id| cluster.addr(id)).collect();
    let value = Arc::new(vec![b'v'; args.value_bytes]);
    println!(
        "faultline bench --causal: {} nodes (fsync on), {}-byte values, anti-entropy as the nodes are configured",
        args.nodes, args.value_bytes
    );
    causal_phase("warmup", Op::Put, &addrs, 4, Limit::Ops(50), value.clone()).await?;
    println!(
        "{:<22} {:>7} {:>9} {:>6} {:>11} {:>9} {:>9} {:>9}",
        "phase", "clients", "ops", "errors", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    let sequential = Limit::Ops(args.sequential_ops);
    let timed = Limit::Time(Duration::from_secs(args.seconds));
    causal_phase(
        "causal put sequential",
        Op::Put,
        &addrs,
        1,
        sequential,
        value.clone(),
    )
    .await?
    .print();
    causal_phase(
        "causal get sequential",
        Op::Get,
        &addrs,
        1,
        sequential,
        value.clone(),
    )
    .await?
    .print();
    causal_phase(
        "causal put concurrent",
        Op::Put,
        &addrs,
        args.clients,
        timed,
        value.clone(),
    )
    .await?
    .print();
    causal_phase(
        "causal get concurrent",
        Op::Get,
        &addrs,
        args.clients,
        timed,
        value.clone(),
    )
    .await?
    .print();

    // Replication lag: a write acknowledged by n1, then a read of its token at every
    // other node, which answers once it has the write.
    let mut lag = Vec::new();
    let mut n1 = causal_client(addrs[0]);
    for i in 0..args.causal_rounds.max(1) * 10 {
        let token = n1
            .put(CausalPutRequest {
                key: format!("lag-{i}").into_bytes(),
                value: value.to_vec(),
                context: Vec::new(),
                wait_ms: 0,
            })
            .await?
            .into_inner()
            .context;
        let acked = Instant::now();
        for &addr in &addrs[1..] {
            causal_client(addr)
                .get(CausalGetRequest {
                    key: b"lag".to_vec(),
                    context: token.clone(),
                    wait_ms: 5_000,
                })
                .await?;
        }
        lag.push(acked.elapsed());
    }
    let (p50, p99, max) = percentiles(lag);
    println!(
        "replication lag (write at n1 to served by every other node): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );

    // At rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, at) = (exchange_bytes(cluster).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rest = (exchange_bytes(cluster).await - before) as f64 / at.elapsed().as_secs_f64();
    println!("anti-entropy at rest: {rest:.0} bytes/s over the cluster");

    // A pause-partition: every node but n1 stopped (SIGSTOP) while n1 takes writes, then
    // resumed; convergence is the time from the resume until every digest agrees.
    let mut converge = Vec::new();
    let mut after_bytes = 0u64;
    let mut after_secs = 0f64;
    let others: Vec<u64> = cluster.ids().into_iter().skip(1).collect();
    for round in 0..args.causal_rounds {
        // Counted before the pause: a paused node answers no dump.
        let before = exchange_bytes(cluster).await;
        for &id in &others {
            cluster.signal(id, libc::SIGSTOP)?;
        }
        for i in 0..100 {
            n1.put(CausalPutRequest {
                key: format!("part-{round}-{}", i % 16).into_bytes(),
                value: value.to_vec(),
                context: Vec::new(),
                wait_ms: 0,
            })
            .await?;
        }
        for &id in &others {
            cluster.signal(id, libc::SIGCONT)?;
        }
        let healed = Instant::now();
        while !digests_agree(cluster).await {
            if healed.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the replicas did not converge within 30 s of round {round}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        converge.push(healed.elapsed());
        after_bytes += exchange_bytes(cluster).await - before;
        after_secs += healed.elapsed().as_secs_f64();
    }
    let (p50, p99, max) = percentiles(converge);
    println!(
        "convergence after a pause-partition heals ({} rounds, 100 writes at n1 each): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        args.causal_rounds
    );
    println!(
        "exchanges from each pause to convergence: {} bytes per round over the cluster (100 writes of {} bytes), {:.0} bytes/s while converging",
        after_bytes / args.causal_rounds.max(1) as u64,
        args.value_bytes,
        after_bytes as f64 / after_secs.max(1e-9),
    );
    Ok(ExitCode::SUCCESS)
}
