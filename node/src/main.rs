//! `faultline-node`: one member of a Faultline key-value cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use faultline_node::server::{self, NodeBugs, NodeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "faultline-node",
    version,
    about = "A replicated, durable key-value node (Raft over gRPC): the system Faultline tests",
    after_help = "Example, a 3-node cluster on one machine:\n  \
faultline-node --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --data-dir /tmp/fl/1\n  \
(and the same for ids 2 and 3). Then: faultline kv put greeting hello --endpoint 127.0.0.1:7001"
)]
struct Args {
    /// This node's id, at least 1, unique in the cluster.
    #[arg(long)]
    id: Option<u64>,
    /// Address to serve clients and peers on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Another member of the cluster, as ID=ADDR; repeat for each.
    #[arg(long = "peer", value_name = "ID=ADDR", value_parser = parse_peer)]
    peers: Vec<(u64, SocketAddr)>,
    /// Join a running cluster through the node at ADDR (any node): the consistent core
    /// registers this node, which then learns the layout and every other node from it.
    /// Needs only --id, --listen and --data-dir; later starts read the data directory.
    #[arg(long, value_name = "ADDR")]
    join: Option<SocketAddr>,
    /// Whether this node runs the placement driver when it leads the consistent core:
    /// replicas follow consistent hashing (hash partitioning) or even out past a threshold
    /// (range partitioning), and leaders even out (default on).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    placement: Option<bool>,
    /// A range this node leads that serves at least N operations per second over a window
    /// is hot: it splits at a key that divides its load, or its leadership moves (default
    /// 500; 0 turns load-based splitting off).
    #[arg(long, value_name = "N")]
    hot_ops_per_sec: Option<f64>,
    /// The window the hot-range threshold is measured over, in seconds (default 10).
    #[arg(long, value_name = "SECS")]
    hot_window_secs: Option<u64>,
    /// The most any two nodes' clocks may differ by, in milliseconds (default 500): a
    /// hybrid-logical-clock timestamp further ahead than this is refused and logged.
    #[arg(long, value_name = "MS")]
    max_clock_offset_ms: Option<u64>,
    /// Lease reads (`GetRequest.lease_read`): how much slower than another node's any
    /// node's clock may run, as a fraction (default 0.1). A leader serves lease reads for
    /// the shortest election timeout times (1 - this) after a quorum confirmed it.
    #[arg(long, value_name = "FRACTION")]
    lease_read_drift: Option<f64>,
    /// Gossip (SWIM): how often this node probes another member, in ms (default 1000,
    /// memberlist's; the probe timeout is half of it, the shortest suspicion four times
    /// it on ten nodes or fewer).
    #[arg(long, value_name = "MS")]
    gossip_probe_interval_ms: Option<u64>,
    /// How the causal keyspace resolves concurrent writes: siblings (keep them all; a
    /// read returns each) or lww (the greatest hybrid-logical-clock stamp wins, and every
    /// concurrent write it beat is reported). Every node of a cluster must agree.
    #[arg(long, value_enum, value_name = "MODE")]
    causal_resolve: Option<ResolveArg>,
    /// How often the causal keyspace exchanges digests with a peer, in milliseconds
    /// (default 100; each round the next peer in turn).
    #[arg(long, value_name = "MS")]
    causal_anti_entropy_ms: Option<u64>,
    /// Directory for the WAL and snapshots; created if missing.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// YAML file with any NodeConfig field; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed for election timeouts (default: the node id).
    #[arg(long)]
    seed: Option<u64>,
    /// Take a snapshot and compact the log after this many applied entries (overrides the
    /// config file; default 10000).
    #[arg(long, value_name = "N")]
    snapshot_interval_entries: Option<u64>,
    /// Number of partitions the cluster is formed with (default 1; with --split-at, one
    /// more than the split keys). Honoured only when the cluster is first formed: every
    /// node must be given the same layout flags, and later starts read it from disk.
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// How keys map to partitions: range (contiguous key ranges, split at --split-at or
    /// evenly over the first two key bytes) or hash (buckets by a stable hash of the key).
    #[arg(long, value_enum, value_name = "SCHEME")]
    partitioning: Option<PartitioningArg>,
    /// For --partitioning range: a key where one partition ends and the next begins
    /// (repeat, in increasing order).
    #[arg(long = "split-at", value_name = "KEY")]
    split_at: Vec<String>,
    /// Voting replicas per partition, placed by rendezvous hashing (default 3; fewer if
    /// the cluster is smaller). Fixed when the cluster is first formed, like the layout.
    #[arg(long, value_name = "N")]
    replicas: Option<u32>,
    /// Serve the fault-injection service (clock steps) for a test harness.
    #[arg(long)]
    enable_fault_injection: bool,
    /// UNSAFE: switch on a deliberate bug so tests can show it is caught. Never in production.
    #[arg(long = "unsafe-seeded-bug", value_enum, value_name = "BUG")]
    bugs: Vec<SeededBug>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ResolveArg {
    Siblings,
    Lww,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PartitioningArg {
    Range,
    Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SeededBug {
    /// Serve gets from the contacted node's local state without confirming leadership.
    StaleRead,
    /// Acknowledge writes before the WAL is fsynced.
    NoFsync,
    /// Followers keep a conflicting log suffix instead of truncating it.
    KeepConflicts,
    /// Apply a retried write (same client id and sequence) again.
    DoubleApply,
    /// Grant a second vote in the same term.
    DoubleVote,
    /// Commit an entry of an earlier term by counting replicas.
    CommitOldTerm,
    /// Forget the vote across a restart (it is never read back from the WAL).
    VoteAmnesia,
    /// Acknowledge a write once the leader appended it, before a quorum has it.
    EarlyAck,
    /// A scan across range partitions leaves out the first key of each later partition.
    ScanSkipsBoundary,
    /// Coordinators keep sending reads to the first leader they saw, which serves them
    /// from local state.
    StaleLeaderRoute,
    /// Recovery gives one partition's WAL records to another.
    WalGroupMixup,
    /// A range keeps serving, and applying writes for, keys a split moved away.
    SkipEpochCheck,
    /// A write whose key a split moved while it was in flight is acknowledged but
    /// applied to neither half.
    SplitLoseWrites,
    /// A transaction's reads do not see its own earlier writes (they read the state
    /// before the transaction).
    TxnNoReadYourWrites,
    /// A transaction's compares always hold: guarded writes overwrite what changed since
    /// they were read (lost updates).
    TxnSkipCompare,
    /// A cross-partition transaction's coordinator commits once its primary has
    /// prepared, without waiting for the other participants (atomicity is lost when one
    /// of them refuses).
    CommitBeforeAllPrepared,
    /// A read ignores an undecided transaction's intent on its key and returns the
    /// committed value under it, which is stale once the transaction has committed.
    SkipIntentResolution,
    /// Snapshot isolation across partitions without its write-write check: two
    /// transactions that read the same snapshot both write a key (lost updates).
    ReadCommittedAsSi,
    /// A serializable read across partitions reads at its start timestamp past newer
    /// versions instead of restarting above them: stale reads under clock skew.
    NoUncertaintyRestart,
    /// A learner's vote (and its acknowledgement) counts toward a quorum.
    LearnerVotes,
    /// A leader changes the membership before it has committed an entry of its term.
    ConfigBeforeNoop,
    /// The causal keyspace serves a client whose causal context it has not caught up with.
    IgnoreCausalContext,
    /// Applying a causal write drops the key's siblings it did not carry, concurrent or not.
    VvMergeDropsSibling,
    /// The causal keyspace stamps writes (and resolves LWW) by the raw wall clock.
    LwwWallClock,
    /// A protected write's fencing token is not checked: a lock holder that paused past
    /// its lease writes over its successor's writes.
    NoFencing,
    /// A new leader gives each lease only what it had left by the grant's count, without
    /// the election timeout: a lease kept alive at the old leader can expire early.
    LeaseNoExtensionOnElection,
    /// A watch resumed from a past revision drops the first change it catches up on.
    WatchSkipOnResume,
    /// Watches are sent puts and deletes when their entry is appended, before it commits.
    WatchUncommitted,
    /// Lease reads count the whole election timeout, with no margin for clock drift.
    LeaseReadNoDrift,
    /// Gossip declares a member dead on its first failed probe: no suspicion, no chance
    /// to refute, so a brief pause or a few lost packets condemn a live node.
    GossipNoSuspicion,
    /// Gossip fills its probe list once and never refills it: after one round nobody is
    /// probed, so a node killed later is never detected.
    GossipNoProbeRefill,
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ID=ADDR, e.g. 2=127.0.0.1:7002, got {text:?}"))?;
    let id = id
        .parse()
        .map_err(|_| format!("peer id {id:?} is not a positive integer"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("peer address {addr:?} is not HOST:PORT with an IP host"))?;
    Ok((id, addr))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faultline-node: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::default(),
    };
    if let Some(id) = args.id {
        config.id = id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !args.peers.is_empty() {
        config.peers = args.peers.into_iter().collect();
    }
    if args.join.is_some() {
        config.join = args.join;
    }
    if let Some(placement) = args.placement {
        config.placement = placement;
    }
    if let Some(ops) = args.hot_ops_per_sec {
        config.hot_ops_per_sec = ops;
    }
    if let Some(secs) = args.hot_window_secs {
        config.hot_window_secs = secs;
    }
    if let Some(ms) = args.max_clock_offset_ms {
        config.max_clock_offset_ms = ms;
    }
    if let Some(drift) = args.lease_read_drift {
        config.lease_read_drift = drift;
    }
    if let Some(ms) = args.gossip_probe_interval_ms {
        config.gossip_probe_interval_ms = ms;
    }
    if let Some(mode) = args.causal_resolve {
        config.causal_resolve = match mode {
            ResolveArg::Siblings => faultline_node::time::causal::Resolve::Siblings,
            ResolveArg::Lww => faultline_node::time::causal::Resolve::Lww,
        };
    }
    if let Some(ms) = args.causal_anti_entropy_ms {
        config.causal_anti_entropy_ms = ms;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.seed.is_some() {
        config.seed = args.seed;
    }
    if args.partitions.is_some() {
        config.partitions = args.partitions;
    }
    if let Some(scheme) = args.partitioning {
        config.partitioning = Some(match scheme {
            PartitioningArg::Range => faultline_node::partitioning::Scheme::Range,
            PartitioningArg::Hash => faultline_node::partitioning::Scheme::Hash,
        });
    }
    if !args.split_at.is_empty() {
        config.split_at = args.split_at;
    }
    if args.replicas.is_some() {
        config.replicas = args.replicas;
    }
    if let Some(entries) = args.snapshot_interval_entries {
        config.snapshot_interval_entries = entries;
    }
    if args.enable_fault_injection {
        config.fault_injection = true;
    }
    let mut bugs = NodeBugs::default();
    for bug in &args.bugs {
        match bug {
            SeededBug::StaleRead => bugs.raft.stale_read = true,
            SeededBug::NoFsync => bugs.no_fsync = true,
            SeededBug::KeepConflicts => bugs.raft.keep_conflicts = true,
            SeededBug::DoubleApply => bugs.double_apply = true,
            SeededBug::DoubleVote => bugs.raft.double_vote = true,
            SeededBug::CommitOldTerm => bugs.raft.commit_old_term = true,
            SeededBug::VoteAmnesia => bugs.vote_amnesia = true,
            SeededBug::EarlyAck => bugs.early_ack = true,
            SeededBug::ScanSkipsBoundary => bugs.route.scan_skips_boundary = true,
            SeededBug::StaleLeaderRoute => bugs.route.stale_leader_route = true,
            SeededBug::WalGroupMixup => bugs.wal_group_mixup = true,
            SeededBug::SkipEpochCheck => bugs.range.skip_epoch_check = true,
            SeededBug::SplitLoseWrites => bugs.range.split_lose_writes = true,
            SeededBug::TxnNoReadYourWrites => bugs.range.txn_no_read_your_writes = true,
            SeededBug::TxnSkipCompare => bugs.range.txn_skip_compare = true,
            SeededBug::CommitBeforeAllPrepared => bugs.txn.commit_before_all_prepared = true,
            SeededBug::SkipIntentResolution => bugs.range.skip_intent_resolution = true,
            SeededBug::ReadCommittedAsSi => bugs.range.read_committed_as_si = true,
            SeededBug::NoUncertaintyRestart => bugs.range.no_uncertainty_restart = true,
            SeededBug::LearnerVotes => bugs.raft.learner_votes = true,
            SeededBug::ConfigBeforeNoop => bugs.raft.config_before_noop = true,
            SeededBug::IgnoreCausalContext => bugs.causal.ignore_causal_context = true,
            SeededBug::VvMergeDropsSibling => bugs.causal.vv_merge_drops_sibling = true,
            SeededBug::LwwWallClock => bugs.causal.lww_wall_clock = true,
            SeededBug::NoFencing => bugs.range.no_fencing = true,
            SeededBug::LeaseNoExtensionOnElection => bugs.lease.no_extension_on_election = true,
            SeededBug::WatchSkipOnResume => bugs.watch.skip_on_resume = true,
            SeededBug::WatchUncommitted => bugs.watch.uncommitted = true,
            SeededBug::LeaseReadNoDrift => bugs.lease_read_no_drift = true,
            SeededBug::GossipNoSuspicion => bugs.swim.no_suspicion = true,
            SeededBug::GossipNoProbeRefill => bugs.swim.no_probe_refill = true,
        }
    }
    if !args.bugs.is_empty() {
        tracing::warn!(bugs = ?bugs.names(), "UNSAFE: seeded bugs are switched on; this node will lose or corrupt data on purpose");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::run(config, bugs, shutdown_signal()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
