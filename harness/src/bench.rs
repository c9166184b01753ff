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
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[rank]
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
    if let Limit::Time(duration) = limit {
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    let mut errors = 0;
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
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
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
