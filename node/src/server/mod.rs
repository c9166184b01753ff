//! The async shell around the cores: the replication thread (`driver`), the peer
//! transport, the client API and the process lifecycle. The only IO in the node.
//! See README.md in this folder.

pub mod causal;
pub mod clock;
pub mod config;
pub mod driver;
pub mod durable;
pub mod kv_service;
pub mod membership;
pub mod placement;
pub mod transport;
pub mod txn;
pub mod watch_service;

use std::future::Future;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::Channel;

use crate::client::RoutingClient;
use crate::partitioning::core_store::CoreStore;
use crate::partitioning::{CORE_GROUP, DataRange, LayoutSpec, PartitionMap, RangeBugs};
use crate::proto::admin::fault_injection_server::FaultInjectionServer;
use crate::proto::kv::kv_client::KvClient;
use crate::proto::kv::kv_server::KvServer;
use crate::proto::kv::{GetPartitionMapRequest, ReportPartitionRequest};
use crate::proto::raft::PartitionReport;
use crate::proto::raft::raft_server::RaftServer;
use crate::replication::{PersistedState, RaftCore, SeededBugs};
pub use config::NodeConfig;
use driver::{Driver, DriverOptions, Event, View};
use durable::Durable;
use kv_service::KvService;
pub use kv_service::lock_key;
use transport::{RaftService, Transport, TransportOptions};

/// How long a stopping node lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Reports waiting for the consistent core's leader; beyond it they are dropped (the next
/// one carries the same news).
const REPORTS_QUEUE_MAX: usize = 1_024;
/// Hot-range actions waiting for the task that carries them out.
const HOT_ACTIONS_MAX: usize = 64;
/// The shortest lease TTL granted whatever the election timeout (etcd's minimum is a
/// second too).
const LEASE_TTL_FLOOR_MS: u64 = 1_000;
/// How often a node that does not hold the consistent core asks it for the map.
const MAP_PULL_INTERVAL: Duration = Duration::from_secs(1);

/// Seeded bugs, all off unless `--unsafe-seeded-bug` names them.
#[derive(Clone, Debug, Default)]
pub struct NodeBugs {
    pub raft: SeededBugs,
    pub no_fsync: bool,
    pub double_apply: bool,
    /// Forget the vote on restart, as if it had never been persisted.
    pub vote_amnesia: bool,
    /// Acknowledge a write once the leader appended it, before a quorum has it.
    pub early_ack: bool,
    /// Recovery gives one group's WAL records to another.
    pub wal_group_mixup: bool,
    pub route: kv_service::RouteBugs,
    pub range: RangeBugs,
    pub causal: crate::time::causal::CausalBugs,
    pub txn: crate::partitioning::txn::TxnBugs,
    pub lease: crate::cluster::lease::LeaseBugs,
    pub watch: crate::cluster::watch::WatchBugs,
    /// Lease reads count the whole election timeout, with no drift margin.
    pub lease_read_no_drift: bool,
    pub swim: crate::cluster::swim::SwimBugs,
}

impl NodeBugs {
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.raft.names().into_iter().map(String::from).collect();
        if self.no_fsync {
            names.push("no-fsync".into());
        }
        if self.double_apply {
            names.push("double-apply".into());
        }
        if self.vote_amnesia {
            names.push("vote-amnesia".into());
        }
        if self.early_ack {
            names.push("early-ack".into());
        }
        if self.wal_group_mixup {
            names.push("wal-group-mixup".into());
        }
        if self.route.scan_skips_boundary {
            names.push("scan-skips-boundary".into());
        }
        if self.route.stale_leader_route {
            names.push("stale-leader-route".into());
        }
        if self.range.skip_epoch_check {
            names.push("skip-epoch-check".into());
        }
        if self.range.txn_skip_compare {
            names.push("txn-skip-compare".into());
        }
        if self.range.no_uncertainty_restart {
            names.push("no-uncertainty-restart".into());
        }
        if self.range.read_committed_as_si {
            names.push("read-committed-as-si".into());
        }
        if self.range.skip_intent_resolution {
            names.push("skip-intent-resolution".into());
        }
        if self.txn.commit_before_all_prepared {
            names.push("commit-before-all-prepared".into());
        }
        if self.range.txn_no_read_your_writes {
            names.push("txn-no-read-your-writes".into());
        }
        if self.range.split_lose_writes {
            names.push("split-lose-writes".into());
        }
        if self.causal.ignore_causal_context {
            names.push("ignore-causal-context".into());
        }
        if self.causal.vv_merge_drops_sibling {
            names.push("vv-merge-drops-sibling".into());
        }
        if self.causal.lww_wall_clock {
            names.push("lww-wall-clock".into());
        }
        if self.range.no_fencing {
            names.push("no-fencing".into());
        }
        if self.lease.no_extension_on_election {
            names.push("lease-no-extension-on-election".into());
        }
        if self.watch.skip_on_resume {
            names.push("watch-skip-on-resume".into());
        }
        if self.watch.uncommitted {
            names.push("watch-uncommitted".into());
        }
        if self.lease_read_no_drift {
            names.push("lease-read-no-drift".into());
        }
        if self.swim.no_suspicion {
            names.push("gossip-no-suspicion".into());
        }
        if self.swim.no_probe_refill {
            names.push("gossip-no-probe-refill".into());
        }
        names
    }
}

/// The file in the data directory that records the layout the cluster was formed with.
const LAYOUT_FILE: &str = "layout";

/// The layout to start with: the stored one (the flags, if given, must agree with it), or
/// on a new data directory the one the flags describe, which is then stored.
fn layout(config: &NodeConfig) -> anyhow::Result<LayoutSpec> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let mut flags = LayoutSpec::from_flags(
        config.partitions,
        config.partitioning.unwrap_or_default(),
        config.split_at.clone(),
        config.voters(),
    )?;
    if let Some(replicas) = config.replicas {
        flags.replicas = replicas;
        flags.validate()?;
    }
    if let Some(bytes) = crate::storage::snapshot_file::read(dir, LAYOUT_FILE)? {
        let stored: LayoutSpec = serde_yaml::from_slice(&bytes).with_context(|| {
            format!(
                "{}: the stored layout does not parse",
                dir.join(LAYOUT_FILE).display()
            )
        })?;
        // Only what the flags give is compared: a flag left out means "as stored".
        let asked = LayoutSpec {
            partitions: config.partitions.unwrap_or(stored.partitions),
            scheme: config.partitioning.unwrap_or(stored.scheme),
            split_keys: if config.split_at.is_empty() {
                stored.split_keys.clone()
            } else {
                config.split_at.clone()
            },
            nodes: flags.nodes.clone(),
            replicas: config.replicas.unwrap_or(stored.replicas),
        };
        let differences = stored.differences(&asked);
        if !differences.is_empty() {
            anyhow::bail!(
                "this node's data directory {} holds a cluster formed with another layout; \
                 the flags ask for {}. The layout is fixed when the cluster is first formed: \
                 leave --partitions, --partitioning, --split-at and --replicas out (or give the stored \
                 values), or start from an empty data directory",
                dir.display(),
                differences.join(", ")
            );
        }
        // A node that joined later is not among the nodes the cluster was formed with;
        // its peers come from the `members` file.
        if stored.nodes.contains(&config.id) && stored.nodes != flags.nodes {
            anyhow::bail!(
                "this node's data directory {} holds a cluster of nodes {:?}, but the flags \
                 name nodes {:?} (this node and its --peer list); membership changes are \
                 not supported yet",
                dir.display(),
                stored.nodes,
                flags.nodes
            );
        }
        return Ok(stored);
    }
    if dir.join("wal").exists() {
        anyhow::bail!(
            "{} has a WAL but no layout file: it was written by an older faultline-node \
             that had one Raft group; remove the data directory so the node rejoins empty",
            dir.display()
        );
    }
    let bytes = serde_yaml::to_string(&flags)?;
    crate::storage::snapshot_file::write_atomic(dir, LAYOUT_FILE, bytes.as_bytes())?;
    Ok(flags)
}

/// The file in the data directory that lists the other nodes of the cluster as this node
/// last learnt them (`ID ADDR` lines), so that a restart reaches nodes that joined since
/// the cluster was formed, without flags.
const MEMBERS_FILE: &str = "members";

fn read_members(dir: &std::path::Path) -> anyhow::Result<BTreeMap<u64, SocketAddr>> {
    let Some(bytes) = crate::storage::snapshot_file::read(dir, MEMBERS_FILE)? else {
        return Ok(BTreeMap::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut members = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line
            .split_once(' ')
            .and_then(|(id, addr)| Some((id.parse().ok()?, addr.parse().ok()?)));
        let Some((id, addr)) = parsed else {
            anyhow::bail!(
                "{}: the line {line:?} is not `ID ADDR`; the data directory is damaged (fix \
                 the line, or remove the file and start with --peer flags)",
                dir.join(MEMBERS_FILE).display()
            );
        };
        members.insert(id, addr);
    }
    Ok(members)
}

fn write_members(dir: &std::path::Path, members: &BTreeMap<u64, SocketAddr>) -> anyhow::Result<()> {
    let text: String = members
        .iter()
        .map(|(id, addr)| format!("{id} {addr}\n"))
        .collect();
    crate::storage::snapshot_file::write_atomic(dir, MEMBERS_FILE, text.as_bytes())?;
    Ok(())
}

/// How long a joining node keeps asking the node it joins through.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Joins the cluster through `seed`: the consistent core registers this node; the layout
/// and the other nodes it answers with go to the data directory, which later starts read.
async fn join_cluster(config: &NodeConfig, seed: SocketAddr) -> anyhow::Result<()> {
    use crate::proto::kv::JoinRequest;
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let endpoint = transport::node_endpoint(seed, config.source_ip(), Duration::from_secs(1))
        .timeout(Duration::from_secs(5));
    let client = KvClient::new(endpoint.connect_lazy());
    let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
    let response = loop {
        let request = JoinRequest {
            id: config.id,
            address: config.listen.to_string(),
        };
        match client.clone().join(request).await {
            Ok(response) => break response.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::AlreadyExists
                        | tonic::Code::InvalidArgument
                        | tonic::Code::Unimplemented
                ) =>
            {
                anyhow::bail!(
                    "the cluster refused to let node {} join: {}",
                    config.id,
                    status.message()
                );
            }
            Err(status) if std::time::Instant::now() >= deadline => {
                anyhow::bail!(
                    "cannot join the cluster through {seed} within {JOIN_TIMEOUT:?}: {} (is \
                     --join the address of a running node?)",
                    status.message()
                );
            }
            Err(status) => {
                tracing::info!(%seed, "join not answered yet, retrying: {}", status.message());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut members = BTreeMap::new();
    for node in &response.nodes {
        if node.id == config.id {
            continue;
        }
        let addr = node.address.parse().map_err(|_| {
            anyhow::anyhow!(
                "the cluster names node {} at {:?}, not HOST:PORT",
                node.id,
                node.address
            )
        })?;
        members.insert(node.id, addr);
    }
    write_members(dir, &members)?;
    crate::storage::snapshot_file::write_atomic(dir, LAYOUT_FILE, response.layout.as_bytes())?;
    tracing::info!(id = config.id, %seed, nodes = members.len() + 1, "joined the cluster");
    Ok(())
}

/// Runs a node until `shutdown` resolves or storage fails.
pub async fn run(
    config: NodeConfig,
    bugs: NodeBugs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    if let Some(seed) = config.join
        && crate::storage::snapshot_file::read(&config.data_dir, LAYOUT_FILE)
            .ok()
            .flatten()
            .is_none()
    {
        join_cluster(&config, seed).await?;
    }
    let spec = layout(&config)?;
    // Every other node: those the cluster was formed with, and those learnt since.
    let mut peers = config.peers.clone();
    for (id, addr) in read_members(&config.data_dir)? {
        if id != config.id {
            peers.entry(id).or_insert(addr);
        }
    }
    let bootstrap_nodes: Vec<(u64, crate::partitioning::NodeRecord)> = spec
        .nodes
        .iter()
        .filter_map(|&id| {
            let addr = if id == config.id {
                Some(config.listen)
            } else {
                peers.get(&id).copied()
            }?;
            Some((
                id,
                crate::partitioning::NodeRecord {
                    address: addr.to_string(),
                    state: crate::partitioning::NodeState::Active,
                },
            ))
        })
        .collect();
    let recovered = Durable::recover(&config.data_dir).with_context(|| {
        format!(
            "cannot recover node {} from {}",
            config.id,
            config.data_dir.display()
        )
    })?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(
            path = %torn.path.display(),
            offset = torn.offset,
            bytes = torn.bytes_dropped,
            "dropped a torn record at the end of the WAL (a write cut off by a crash, never acknowledged)"
        );
    }
    let mut recovered = recovered;
    if bugs.vote_amnesia {
        for state in recovered.groups.values_mut() {
            state.hard_state.voted_for = 0;
        }
    }
    if bugs.wal_group_mixup {
        wal_group_mixup(&mut recovered.groups);
    }
    let initial_map = PartitionMap::new(spec.initial_descriptors())
        .map_err(|e| anyhow::anyhow!("the layout does not make a valid partition map: {e}"))?
        .with_nodes(bootstrap_nodes.clone());
    let core_replicas = spec.core_replicas();
    let initial_descriptors: BTreeMap<u64, crate::partitioning::RangeDescriptor> = initial_map
        .descriptors()
        .map(|d| (d.id, d.clone()))
        .collect();
    let mut starts = Vec::new();
    let recovered_snapshots: Vec<(u64, Vec<u64>)> = recovered
        .groups
        .iter()
        .filter_map(|(&group, state)| {
            let snapshot = state.snapshot.as_ref()?;
            (group != CORE_GROUP).then(|| (group, snapshot.meta.voters.clone()))
        })
        .collect();
    let mut group_of = |group: u64, voters: Vec<u64>, machine: driver::Machine| {
        let persisted = recovered.groups.remove(&group).unwrap_or_default();
        (group, voters, machine, persisted)
    };
    let mut hosted = Vec::new();
    if core_replicas.contains(&config.id) {
        hosted.push(group_of(
            CORE_GROUP,
            core_replicas.clone(),
            driver::Machine::Core(CoreStore::new(initial_map.clone())),
        ));
    }
    for descriptor in initial_map.descriptors() {
        if descriptor.replicas.contains(&config.id)
            && !recovered.tombstones.contains(&descriptor.id)
        {
            hosted.push(group_of(
                descriptor.id,
                descriptor.replicas.clone(),
                driver::Machine::Data(DataRange::new(descriptor.clone())),
            ));
        }
    }
    // Ranges splits made since the layout: each has a snapshot file from its first
    // moment (the split's index), which holds its descriptor and its voters.
    let made: Vec<(u64, Vec<u64>)> = recovered_snapshots
        .iter()
        .filter(|(group, _)| !hosted.iter().any(|(g, ..)| g == group))
        .cloned()
        .collect();
    for (group, voters) in made {
        hosted.push(group_of(
            group,
            voters,
            driver::Machine::Data(DataRange::uninitialized()),
        ));
    }
    if let Some(stray) = recovered.groups.keys().next() {
        tracing::warn!(
            group = stray,
            "the WAL holds records of groups this node does not host under its layout; ignored"
        );
    }
    let mut entries = 0;
    for (group, voters, mut machine, persisted) in hosted {
        if let Some(snapshot) = &persisted.snapshot {
            match &mut machine {
                driver::Machine::Data(range) => {
                    let layout = range.descriptor().cloned();
                    *range = DataRange::restore(&snapshot.data, layout.as_ref()).map_err(|e| {
                        anyhow::anyhow!(
                            "group {group}'s snapshot file: {e}; the data directory is damaged \
                             (restore it, or remove it so the node rejoins empty)"
                        )
                    })?;
                }
                driver::Machine::Core(core) => {
                    *core = CoreStore::restore(&snapshot.data)
                        .map_err(|e| anyhow::anyhow!("the consistent core's snapshot: {e}"))?;
                    core.fill_nodes(&bootstrap_nodes);
                }
            }
        }
        entries += persisted.entries.len();
        // A replica that joined as a learner is not among the voters its snapshot lists:
        // it starts as a joining node, and its membership comes from the snapshot and log.
        let voters = if voters.contains(&config.id) {
            voters
        } else {
            Vec::new()
        };
        let core = RaftCore::new(
            config.group_config(group, voters, bugs.raft.clone()),
            persisted,
        );
        starts.push(driver::GroupStart { core, machine });
    }
    let mut durable = recovered.durable;
    durable.skip_fsync = bugs.no_fsync;
    tracing::info!(
        id = config.id,
        groups = starts.len(),
        partitions = spec.partitions,
        partitioning = ?spec.scheme,
        entries,
        "recovered"
    );
    let map_now = starts
        .iter()
        .find_map(|s| match &s.machine {
            driver::Machine::Core(core) => Some(core.map().clone()),
            driver::Machine::Data(_) => None,
        })
        .unwrap_or(initial_map);
    let (map_tx, map) = watch::channel(Arc::new(map_now));
    let map_tx = Arc::new(map_tx);

    let (events, events_rx) = sync_channel::<Event>(config.client_queue_max);
    let drops = transport::DropRules::default();
    let transport_options = TransportOptions {
        source_ip: config.source_ip(),
        queue_max: config.peer_queue_max,
        batch_messages_max: config.batch_events_max,
        drops: drops.clone(),
    };
    let transport = Transport::start(
        &tokio::runtime::Handle::current(),
        &peers,
        &transport_options,
    );
    let clock = clock::TimerClock::default();
    let clock_guard = clock::ClockGuard::default();
    let (hot_tx, hot_rx) = tokio::sync::mpsc::channel(HOT_ACTIONS_MAX);
    let driver_options = DriverOptions {
        node_id: config.id,
        peers: peers.keys().copied().collect(),
        tick: Duration::from_millis(config.tick_ms),
        clock: clock.clone(),
        snapshot_interval_entries: config.snapshot_interval_entries,
        batch_events_max: config.batch_events_max,
        heartbeat_interval_ticks: config.heartbeat_interval_ticks,
        liveness_ticks: u64::from(config.election_timeout_ticks_max),
        double_apply: bugs.double_apply,
        early_ack: bugs.early_ack,
        range_bugs: bugs.range,
        seeded_bugs: bugs.names(),
        group_config: {
            let config = config.clone();
            let raft_bugs = bugs.raft.clone();
            Arc::new(move |group, voters: Vec<u64>| {
                // A learner of the parent is not among its voters: it starts as a joining
                // node, and its membership comes from the snapshot.
                let voters = if voters.contains(&config.id) {
                    voters
                } else {
                    Vec::new()
                };
                config.group_config(group, voters, raft_bugs.clone())
            })
        },
        hot_ops_per_sec: config.hot_ops_per_sec,
        hot_window_ticks: (config.hot_window_secs * 1000 / config.tick_ms.max(1)).max(1),
        hot_actions: Some(hot_tx),
        max_clock_offset_ms: config.max_clock_offset_ms,
        lease_extension_ms: u64::from(config.election_timeout_ticks_max) * config.tick_ms,
        lease_bugs: bugs.lease,
        watch_bugs: bugs.watch,
        lease_read_ms: {
            let election_min_ms = u64::from(config.election_timeout_ticks_min) * config.tick_ms;
            if bugs.lease_read_no_drift {
                election_min_ms
            } else {
                (election_min_ms as f64 * (1.0 - config.lease_read_drift)) as u64
            }
        },
    };
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(REPORTS_QUEUE_MAX);
    let (driver, published) = Driver::new(
        starts,
        durable,
        transport,
        driver_options,
        map_tx.clone(),
        reports_tx,
    );
    let (driver_done_tx, driver_done) = tokio::sync::oneshot::channel();
    let driver_thread = std::thread::Builder::new()
        .name("replication".into())
        .spawn(move || {
            let result = driver.run(events_rx);
            let _ = driver_done_tx.send(());
            result
        })?;

    let peer_clients: HashMap<u64, KvClient<Channel>> = peers
        .iter()
        .map(|(&id, &addr)| {
            let endpoint =
                transport::node_endpoint(addr, config.source_ip(), Duration::from_millis(500));
            (id, KvClient::new(endpoint.connect_lazy()))
        })
        .collect();
    let views = published.views;
    let core_view = views
        .read()
        .expect("no thread panics holding the views")
        .get(&CORE_GROUP)
        .cloned();
    tokio::spawn(send_reports(
        reports_rx,
        peer_clients.clone(),
        core_replicas.clone(),
        core_view.clone(),
    ));
    if !core_replicas.contains(&config.id) {
        tokio::spawn(pull_map(
            map_tx,
            peer_clients.clone(),
            core_replicas.clone(),
        ));
    }
    // A correction may name this node itself (its replica became leader meanwhile): the
    // forwarding client then asks it like any other.
    let mut channels = peer_clients.clone();
    channels.insert(
        config.id,
        KvClient::new(
            transport::node_endpoint(
                config.listen,
                config.source_ip(),
                Duration::from_millis(500),
            )
            .connect_lazy(),
        ),
    );
    // The hot-spot and placement tasks act through this node's own Kv service.
    let own = channels[&config.id].clone();
    tokio::spawn(hot_spots(hot_rx, own.clone(), map.clone(), config.id));
    if config.placement {
        tokio::spawn(placement::run(
            map.clone(),
            core_view.clone(),
            config.id,
            own,
            spec.replicas as usize,
        ));
    }
    let router = RoutingClient::for_node(map.clone(), channels);
    tokio::spawn(follow_members(
        map.clone(),
        events.clone(),
        peers.clone(),
        config.id,
        config.data_dir.clone(),
    ));
    let mut addresses: Vec<(u64, std::net::SocketAddr)> =
        peers.iter().map(|(&id, &addr)| (id, addr)).collect();
    addresses.push((config.id, config.listen));
    addresses.sort_unstable();
    // The largest request a client may send: a compare-and-swap with two maximal values.
    let kv_request_bytes_max = config.key_bytes_max + 2 * config.value_bytes_max + 4096;
    let failpoints = clock::Failpoints::default();
    let router = Arc::new(router);
    let watch_service = watch_service::WatchService {
        node_id: config.id,
        events: events.clone(),
        views: views.clone(),
        map: map.clone(),
        router: router.clone(),
        key_bytes_max: config.key_bytes_max,
        next_id: std::sync::atomic::AtomicU64::new(1),
    };
    let views_for_membership = views.clone();
    let core_member = core_replicas.contains(&config.id);
    let kv = KvService {
        node_id: config.id,
        events: events.clone(),
        views,
        map,
        core_replicas,
        addresses,
        router: router.clone(),
        txn_clock: Arc::new(txn::TxnClock::new(
            clock.clone(),
            config.max_clock_offset_ms,
        )),
        txn_bugs: bugs.txn,
        txn_blockers: Default::default(),
        txn_stats: Default::default(),
        failpoints: failpoints.clone(),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        scan_limit_max: config.scan_limit_max,
        stale_read: bugs.raft.stale_read,
        bugs: bugs.route,
        range_bugs: bugs.range,
        first_leaders: std::sync::Mutex::new(HashMap::new()),
        initial: Arc::new(initial_descriptors),
        layout: serde_yaml::to_string(&spec)?,
        clock: clock.clone(),
        clock_guard: clock_guard.clone(),
        lease_ttl_min_ms: (3 * u64::from(config.election_timeout_ticks_max) * config.tick_ms)
            .max(LEASE_TTL_FLOOR_MS),
    };
    // The causal keyspace lives on the founding members: nodes that join later know
    // only some of the others at first, and a replica set that changed under running
    // sessions would strand their contexts.
    let mut founders = config.peers.clone();
    if config.join.is_none() {
        founders.insert(config.id, config.listen);
    }
    let causal = causal::start(
        config.id,
        founders,
        config.source_ip(),
        &config.data_dir,
        causal::CausalConfig {
            resolve: config.causal_resolve,
            anti_entropy_ms: config.causal_anti_entropy_ms,
            max_clock_offset_ms: config.max_clock_offset_ms,
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            bugs: bugs.causal,
        },
        clock.clone(),
        clock_guard.clone(),
    )?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in membership::HEALTH_SERVICES.iter().chain(&[""]) {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let (draining_tx, draining) = tokio::sync::watch::channel(false);
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut gossip_seeds: Vec<(u64, String)> = peers
        .iter()
        .map(|(&id, addr)| (id, addr.to_string()))
        .collect();
    gossip_seeds.sort_unstable();
    let membership_service = membership::start(membership::MembershipSetup {
        node_id: config.id,
        listen: config.listen,
        seeds: gossip_seeds,
        config: crate::cluster::swim::SwimConfig {
            probe_interval_ms: config.gossip_probe_interval_ms,
            probe_timeout_ms: (config.gossip_probe_interval_ms / 2).max(1),
            seed: config.seed.unwrap_or(config.id),
            bugs: bugs.swim,
            ..Default::default()
        },
        phi: crate::cluster::phi::PhiConfig::default(),
        clock: clock.clone(),
        clock_guard: clock_guard.clone(),
        views: views_for_membership,
        core_member,
        served: served.clone(),
        health: health.clone(),
        draining,
    })
    .await?;
    tokio::spawn(clock::guard_clock(
        clock.clone(),
        peer_clients.clone(),
        config.max_clock_offset_ms,
        clock_guard,
        events.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another node using it?)",
                config.listen
            )
        })?;
    tracing::info!(id = config.id, listen = %config.listen, peers = ?peers, "serving");
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            _ = driver_done => tracing::error!("the replication thread stopped"),
        }
        let _ = stopping_tx.send(());
        // Gossip says "left", and health NOT_SERVING, for the shutdown grace.
        let _ = draining_tx.send(true);
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            KvServer::new(kv).max_decoding_message_size(kv_request_bytes_max),
            move |request: tonic::Request<()>| {
                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(request)
            },
        ))
        .add_service(
            crate::proto::membership::membership_server::MembershipServer::new(
                membership_service,
            ),
        )
        .add_service(
            RaftServer::new(RaftService {
                events: events.clone(),
            })
            .max_decoding_message_size(transport::PEER_MESSAGE_BYTES_MAX),
        )
        .add_service(
            crate::proto::causal::causal_server::CausalServer::new(causal)
                .max_decoding_message_size(transport::PEER_MESSAGE_BYTES_MAX),
        )
        .add_service(crate::proto::kv::watch_server::WatchServer::new(watch_service))
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(config.fault_injection.then(|| {
            tracing::warn!(
                "fault injection is enabled: this node lets anyone step its clock and drop its messages"
            );
            FaultInjectionServer::new(clock::FaultInjectionService {
                clock: clock.clone(),
                drops: drops.clone(),
                failpoints: failpoints.clone(),
            })
        }))
        .serve_with_incoming_shutdown(incoming, stop);
    // Peers' streams never end by themselves: give in-flight requests a moment to
    // finish, then close what is left.
    let served = tokio::select! {
        served = serve => served,
        () = async {
            let _ = stopping.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    let _ = events.try_send(Event::Shutdown);
    drop(events);
    let driver_result = driver_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the replication thread panicked"))?;
    driver_result.context(
        "storage failed; the node stopped so as not to acknowledge what it cannot persist",
    )?;
    served.context("the gRPC server failed")?;
    Ok(())
}

/// The seeded bug `wal-group-mixup`: the first two data groups recover each other's
/// records, as a recovery that read the group tag wrong would.
fn wal_group_mixup(groups: &mut BTreeMap<u64, PersistedState>) {
    let data: Vec<u64> = groups
        .keys()
        .copied()
        .filter(|&g| g != CORE_GROUP)
        .take(2)
        .collect();
    if let [a, b] = data[..] {
        let first = groups.remove(&a).expect("listed");
        let second = groups.remove(&b).expect("listed");
        groups.insert(a, second);
        groups.insert(b, first);
    }
}

/// Sends data leaders' reports to the consistent core's leader: the one this node's core
/// replica knows of, else each core node in turn. A report that cannot be delivered is
/// dropped; the next one says the same.
async fn send_reports(
    mut reports: tokio::sync::mpsc::Receiver<PartitionReport>,
    peers: HashMap<u64, KvClient<Channel>>,
    core_replicas: Vec<u64>,
    core_view: Option<watch::Receiver<View>>,
) {
    let mut turn = 0usize;
    while let Some(report) = reports.recv().await {
        let request = ReportPartitionRequest {
            descriptors: report.descriptors,
            term: report.term,
            reads_per_sec: report.reads_per_sec,
            writes_per_sec: report.writes_per_sec,
        };
        let known = core_view.as_ref().and_then(|v| v.borrow().leader_id);
        let mut targets: Vec<u64> = known.into_iter().collect();
        for offset in 0..core_replicas.len() {
            targets.push(core_replicas[(turn + offset) % core_replicas.len()]);
        }
        turn += 1;
        for target in targets {
            let Some(client) = peers.get(&target) else {
                continue;
            };
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(1));
            if client.clone().report_partition(call).await.is_ok() {
                break;
            }
        }
    }
}

/// Keeps a node that holds no core replica up to date with the map: asks a core node
/// every `MAP_PULL_INTERVAL` and takes its map if it is newer.
async fn pull_map(
    map: Arc<watch::Sender<Arc<PartitionMap>>>,
    peers: HashMap<u64, KvClient<Channel>>,
    core_replicas: Vec<u64>,
) {
    let mut turn = 0usize;
    loop {
        tokio::time::sleep(MAP_PULL_INTERVAL).await;
        let target = core_replicas[turn % core_replicas.len()];
        turn += 1;
        let Some(client) = peers.get(&target) else {
            continue;
        };
        let mut call = tonic::Request::new(GetPartitionMapRequest {});
        call.set_timeout(Duration::from_secs(1));
        let Ok(response) = client.clone().get_partition_map(call).await else {
            continue;
        };
        let response = response.into_inner();
        if response.version <= map.borrow().version() {
            continue;
        }
        let mut descriptors = Vec::new();
        let mut loads = Vec::new();
        for wire in &response.partitions {
            match crate::partitioning::convert::from_wire(wire) {
                Ok((descriptor, load)) => {
                    loads.push((descriptor.id, load));
                    descriptors.push(descriptor);
                }
                Err(_) => continue,
            }
        }
        if let Ok(pulled) = PartitionMap::restore(descriptors, loads, response.version) {
            let nodes = response
                .nodes
                .iter()
                .map(crate::partitioning::convert::node_from_wire);
            map.send_replace(Arc::new(pulled.with_nodes(nodes)));
        }
    }
}

/// Keeps the node talking to every node of the cluster: when the map registers a node
/// this one does not know (it joined), the replication thread starts sending to it; when
/// one is removed, it stops. What it learns goes to the `members` file for restarts.
async fn follow_members(
    mut map: watch::Receiver<Arc<PartitionMap>>,
    events: std::sync::mpsc::SyncSender<Event>,
    mut known: BTreeMap<u64, SocketAddr>,
    me: u64,
    dir: std::path::PathBuf,
) {
    loop {
        let current = map.borrow_and_update().clone();
        let live: BTreeMap<u64, String> = current
            .live_nodes()
            .map(|(id, n)| (id, n.address.clone()))
            .collect();
        let mut changed = false;
        for (&id, address) in &live {
            if id == me || known.contains_key(&id) {
                continue;
            }
            let Ok(addr) = address.parse::<SocketAddr>() else {
                tracing::warn!(
                    node = id,
                    address,
                    "the map names a node at an address that does not parse; ignored"
                );
                continue;
            };
            if deliver(&events, Event::AddPeer { id, addr }).await.is_err() {
                return;
            }
            known.insert(id, addr);
            changed = true;
        }
        // An empty list is a map from before nodes were registered: it removes nobody.
        if !live.is_empty() {
            let gone: Vec<u64> = known
                .keys()
                .copied()
                .filter(|id| !live.contains_key(id))
                .collect();
            for id in gone {
                if deliver(&events, Event::RemovePeer { id }).await.is_err() {
                    return;
                }
                known.remove(&id);
                changed = true;
            }
        }
        if changed && let Err(error) = write_members(&dir, &known) {
            tracing::warn!("cannot record the cluster's nodes: {error:#}");
        }
        if map.changed().await.is_err() {
            return;
        }
    }
}

/// Hands an event to the replication thread, waiting while its queue is full.
async fn deliver(events: &std::sync::mpsc::SyncSender<Event>, mut event: Event) -> Result<(), ()> {
    loop {
        match events.try_send(event) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                event = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}

/// Carries out what the hot-spot detector decided, with the node's own RPCs: a split (then
/// the new half's leadership goes to the replica leading the fewest partitions, so that the
/// halves' leaders spread), or, for a load no key divides, a leadership move to that
/// replica. Merges are never automatic, so a split range stays split.
async fn hot_spots(
    mut actions: tokio::sync::mpsc::Receiver<driver::HotAction>,
    own: KvClient<Channel>,
    map: watch::Receiver<Arc<PartitionMap>>,
    me: u64,
) {
    use crate::proto::kv::{SplitRequest, TransferLeaderRequest};
    // The replica of `partition` (not this node) that leads the fewest partitions.
    let least_loaded = |partition: u64| {
        let map = map.borrow().clone();
        let descriptor = map.get(partition)?.clone();
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for d in map.descriptors() {
            if let Some(leader) = d.leader {
                *led.entry(leader).or_default() += 1;
            }
        }
        descriptor
            .replicas
            .iter()
            .copied()
            .filter(|&n| n != me)
            .min_by_key(|n| (led.get(n).copied().unwrap_or(0), *n))
            .map(|n| (n, led.get(&n).copied().unwrap_or(0)))
    };
    let transfer = |partition: u64, to: u64| {
        let mut request = tonic::Request::new(TransferLeaderRequest { partition, to });
        request.set_timeout(Duration::from_secs(5));
        let mut own = own.clone();
        async move { own.transfer_leader(request).await }
    };
    while let Some(action) = actions.recv().await {
        match action {
            driver::HotAction::Split { group, key, why } => {
                let mut request = tonic::Request::new(SplitRequest { key: key.clone() });
                request.set_timeout(Duration::from_secs(10));
                match own.clone().split(request).await {
                    Ok(response) => {
                        let right = response.into_inner().right.unwrap_or_default();
                        tracing::info!(group, right = right.id, "hot range split: {why}");
                        // The map learns of the new half from this node's report.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Some((to, leads)) = least_loaded(right.id) {
                            match transfer(right.id, to).await {
                                Ok(_) => tracing::info!(
                                    partition = right.id,
                                    to,
                                    leads,
                                    "hot range: the new half's leadership goes to the replica leading the fewest partitions"
                                ),
                                Err(s) => tracing::warn!(
                                    partition = right.id,
                                    to,
                                    "hot range split: leadership not moved: {}",
                                    s.message()
                                ),
                            }
                        }
                    }
                    Err(status) => {
                        tracing::warn!(group, "hot range not split: {}", status.message())
                    }
                }
            }
            driver::HotAction::MoveLeader { group, why } => {
                let Some((to, leads)) = least_loaded(group) else {
                    continue;
                };
                match transfer(group, to).await {
                    Ok(_) => tracing::info!(
                        group,
                        to,
                        leads,
                        "hot range: leadership moves to the replica leading the fewest partitions: {why}"
                    ),
                    Err(s) => tracing::warn!(
                        group,
                        to,
                        "hot range: leadership not moved: {}",
                        s.message()
                    ),
                }
            }
        }
    }
}
