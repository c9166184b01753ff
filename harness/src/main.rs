//! `faultline`: run workloads against a real cluster under faults, check histories,
//! and talk to a node by hand.

mod bench;
mod bench_gossip;
mod bench_leases;
mod bench_txn;
mod bench_watch;
mod check;
mod kv;
mod model;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use faultline_harness::cluster::find_node_bin;
use faultline_harness::net::namespace::{NamespaceMode, enter_private_network};
use faultline_harness::run::{self, RunOptions};

// The checker's search allocates and frees one small state per step (kv's strings); mimalloc
// does that about a fifth faster than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "A Jepsen-style harness for the Faultline key-value node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a local cluster under faults and check the history.
    Run(RunArgs),
    /// Run a suite of cases, each with the verdict it must give (e.g. ci/smoke.yaml).
    Suite(suite::SuiteArgs),
    /// Check a recorded history (Faultline JSON Lines or Jepsen EDN).
    Check(check::CheckArgs),
    /// Talk to a node by hand: put, get, delete, cas, status.
    Kv(kv::KvArgs),
    /// Measure put and get throughput and latency against a local cluster.
    Bench(bench::BenchArgs),
    /// Model-check a protocol of the node (its own code) with stateright: `model raft`.
    Model(model::ModelArgs),
}

/// With no arguments: the `register` workload on 5 nodes for 30 s with partitions,
/// kills and pauses, about a minute in all.
#[derive(Args)]
#[command(after_help = NEMESIS_HELP)]
struct RunArgs {
    /// A builtin workload (register, causal) or a path to a workload YAML file.
    #[arg(default_value = "register")]
    workload: String,
    /// Nodes in the cluster (node i listens on 127.0.0.(10+i):7000 in a private network namespace).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of workload (overrides the workload file).
    #[arg(long, value_name = "SECS")]
    time_limit: Option<u64>,
    /// Concurrent client processes (overrides the workload file).
    #[arg(long, value_name = "C")]
    concurrency: Option<u32>,
    /// Open-loop rate in operations per second over all clients (default: the workload's, or closed loop).
    #[arg(long, value_name = "OPS_PER_S")]
    rate: Option<f64>,
    /// Faults to inject, comma-separated: kill, kill-coordinator, kill-coordinator-after-commit, pause, partition, loss, corrupt-wal, clock, restart-voter, diverge-leader, split, merge, move, shuffle-leader, membership, learner-partition, config-race, clock-rate, clock-strobe, lease-skew; or none.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    nemesis: Option<Vec<String>>,
    /// Seconds between the starts of two faults (overrides the workload file).
    #[arg(long, value_name = "SECS")]
    nemesis_interval: Option<f64>,
    /// Seed for operations and faults; printed by every run so it can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where runs are stored: STORE/<workload>/<UTC time>/ and STORE/latest.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// The faultline-node binary (default: beside this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// An extra argument for every node, e.g. --node-arg=--unsafe-seeded-bug --node-arg=stale-read.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Partitions the cluster is formed with, each its own Raft group (default 1).
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// How keys map to partitions: range (split evenly among the workload's keys in key
    /// order) or hash.
    #[arg(long, value_name = "SCHEME", value_parser = ["range", "hash"])]
    partitioning: Option<String>,
    /// How clients reach partitions: node (each client sends everything to its own node,
    /// which serves or forwards it: the coordinator is under test) or direct (the
    /// routing client sends each request to its partition's leader).
    #[arg(long, value_name = "ROUTING", default_value = "node")]
    routing: faultline_node::client::Routing,
    /// For transactional workloads (list-append, rw-register): the isolation level the
    /// transactions ask for, and the consistency model the history is checked against.
    #[arg(long, value_name = "LEVEL", value_parser = ["serializable", "snapshot", "read-committed"])]
    isolation: Option<String>,
    /// Arm a node failpoint on every node for the whole run (repeat for several):
    /// NAME=ACTION with ACTION exit, sleep(MS) or off, e.g. txn-after-prepare=sleep(40)
    /// to hold each cross-partition transaction between its prepares and its commit.
    #[arg(long = "failpoint", value_name = "NAME=ACTION", value_parser = parse_failpoint)]
    failpoints: Vec<(String, String)>,
}

fn parse_failpoint(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, action)) if !name.is_empty() && !action.is_empty() => {
            Ok((name.to_string(), action.to_string()))
        }
        _ => Err(format!(
            "{arg:?} is not NAME=ACTION (e.g. txn-after-prepare=sleep(40))"
        )),
    }
}

const NEMESIS_HELP: &str =
    "Nemeses (each run's schedule comes from the seed; every fault is recorded in the history):
  kill         SIGKILL a random node (or the leader), restart it when the fault ends
  kill-coordinator  arm a node's txn-after-prepare failpoint: it dies once a cross-partition
               transaction it coordinates has every participant prepared, before the
               commit (every running node is armed if that one gets nowhere within 1 s);
               restarted when the fault ends (reports whether it got there)
  kill-coordinator-after-commit  the same at txn-after-commit: committed at the primary,
               no other participant told; readers must resolve what it leaves
  pause        SIGSTOP a node, SIGCONT it when the fault ends
  partition    drop packets with iptables in the run's network namespace; shapes:
               isolate-one, isolate-leader, halves, majority-ring, bridge, one-way
  loss         drop a random fraction of packets between nodes (iptables statistic)
  corrupt-wal  SIGKILL a node, truncate or flip bytes at the tail of its WAL, restart it
  clock        step a node's timer clock forward or back (through the fault-injection
               service, switched on for the run's nodes); its election and heartbeat
               timers fire early or late
  restart-voter  (3 nodes) the leader is cut off until it steps down, then wins the
               next term with one follower's vote over a slowed link; that voter is
               restarted before the first append reaches it, and the third node asks it
               for a vote in the same term: a voter that forgets votes elects two leaders
  diverge-leader  (3+ nodes) the leader is cut off until it has appended entries nobody
               else has and stepped down, and a new leader has committed other entries
               past them; then it heals: a follower that keeps a conflicting suffix
               applies entries no quorum agreed on
  split        (--partitioning range) split the range holding one of the workload's keys
               at that key, through any node; the new range stays
  merge        (--partitioning range) merge a range with the one after it, through any
               node: the right range freezes, then joins the left one
restart-voter and diverge-leader wait on the nodes' status for each step and report
whether they reached the condition they exist for (\"precondition not reached\" if not).
partition, loss, restart-voter and diverge-leader need iptables (apt-get install iptables); the others
do not.
Exit status: 0 valid, 1 anomalies found, 2 unknown or harness error.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The model checker runs its own threads and may serve the Explorer: no runtime.
    let cli = match cli.command {
        Command::Model(args) => {
            // Counterexamples run long and are piped to `head`: a closed pipe ends the run
            // quietly, as it does any Unix filter, instead of panicking in print!. Only
            // here: the other commands write to sockets, where SIGPIPE must stay ignored.
            // SAFETY: one thread yet, and SIG_DFL is a valid disposition.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            return model::run(args);
        }
        command => Cli { command },
    };
    // The namespace must be entered while this process has one thread: before the
    // async runtime starts.
    let mode = match &cli.command {
        Command::Run(_) => match enter_private_network() {
            Ok(mode) => Some(mode),
            Err(error) => {
                eprintln!(
                    "faultline: error: cannot create the run's private network namespace: {error}"
                );
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faultline: error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_command(args, mode).await,
            Command::Check(args) => check::run(args),
            Command::Suite(args) => suite::run(args),
            Command::Kv(args) => kv::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Model(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("faultline: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run_command(args: RunArgs, mode: Option<NamespaceMode>) -> anyhow::Result<ExitCode> {
    let node_bin = match args.node_bin {
        Some(path) => path,
        None => find_node_bin()?,
    };
    let options = RunOptions {
        workload: args.workload,
        nodes: args.nodes,
        time_limit_secs: args.time_limit,
        concurrency: args.concurrency,
        rate: args.rate,
        nemesis: args.nemesis.map(|list| {
            list.into_iter()
                .filter(|n| n != "none" && !n.is_empty())
                .collect()
        }),
        nemesis_interval_secs: args.nemesis_interval,
        seed: args.seed,
        store: args.store,
        node_bin,
        node_args: args.node_args,
        partitions: args.partitions,
        partitioning: args.partitioning,
        routing: args.routing,
        isolation: args
            .isolation
            .as_deref()
            .and_then(faultline_workloads::Isolation::parse),
        failpoints: args.failpoints,
    };
    if options.nodes == 0 || options.nodes > 9 {
        anyhow::bail!("--nodes must be between 1 and 9, got {}", options.nodes);
    }
    let mut workload = run::prepare_workload(&options)?;
    if let Some(warning) =
        run::drop_faults_needing_iptables(&mut workload, options.nemesis.is_some())?
    {
        eprintln!("{warning}");
    }
    if let Some(mode) = mode {
        eprintln!("faultline run: private network namespace ({mode:?})");
    }
    let results = run::run(options, workload).await?;
    run::print_summary(&results);
    Ok(ExitCode::from(results.exit_code()))
}
