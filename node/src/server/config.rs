//! Node configuration: a YAML file (`--config`) with command-line flags on top.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::replication::{RaftConfig, SeededBugs};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub id: u64,
    /// Address of the gRPC server: clients and peers both connect here.
    pub listen: SocketAddr,
    /// Every other node the cluster is formed with: id -> address. Nodes that joined since
    /// are learnt from the cluster (and kept in the data directory's `members` file).
    pub peers: BTreeMap<u64, SocketAddr>,
    /// A node of a running cluster to join through (`--join`).
    pub join: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Outgoing peer connections bind to this address (default: the listen address),
    /// so that firewall rules can match both ends of a link.
    pub peer_source_ip: Option<IpAddr>,
    pub tick_ms: u64,
    pub election_timeout_ticks_min: u32,
    pub election_timeout_ticks_max: u32,
    pub heartbeat_interval_ticks: u32,
    /// Upper bound for a client request; a gRPC deadline may shorten it.
    pub request_timeout_ms: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_interval_entries: u64,
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    /// Client requests queued for the replication thread; beyond it: RESOURCE_EXHAUSTED.
    pub client_queue_max: usize,
    /// Messages queued to one peer; beyond it they are dropped (Raft resends).
    pub peer_queue_max: usize,
    /// Events the replication thread takes in one batch (one fsync per batch).
    pub batch_events_max: usize,
    pub seed: Option<u64>,
    /// Serve `faultline.admin.v1.FaultInjection` (test harnesses only).
    pub fault_injection: bool,
    /// The bootstrap layout (`--partitions`, `--partitioning`, `--split-at`), honoured
    /// only when the cluster is first formed; afterwards the layout comes from the data
    /// directory, and flags that disagree with it are an error.
    pub partitions: Option<u32>,
    pub partitioning: Option<crate::partitioning::Scheme>,
    pub split_at: Vec<String>,
    /// Voting replicas per partition (default 3).
    pub replicas: Option<u32>,
    /// Most keys one scan may return.
    pub scan_limit_max: u32,
    /// Run the placement driver (on whichever node leads the consistent core): it moves
    /// replicas and leaders to keep nodes balanced.
    pub placement: bool,
    /// A range served at this many operations per second or more over a window of
    /// `hot_window_secs` is hot: it splits at a key that divides its load, or (one hot key)
    /// its leadership moves to the least loaded node. 0: never.
    pub hot_ops_per_sec: f64,
    pub hot_window_secs: u64,
    /// The most any two nodes' clocks may differ by (ms): the hybrid logical clock refuses
    /// a timestamp further ahead than this.
    pub max_clock_offset_ms: u64,
    /// Lease reads: how much slower than another node's a node's clock may run, as a
    /// fraction (0.1: 10 %). A leader's lease lasts the shortest election timeout times
    /// (1 - this), by its own clock.
    pub lease_read_drift: f64,
    /// Gossip: how often this node probes another member (ms).
    pub gossip_probe_interval_ms: u64,
    /// How the causal keyspace resolves concurrent writes: keep them as siblings, or keep
    /// the one with the greatest HLC stamp (every node of a cluster must agree).
    pub causal_resolve: crate::time::causal::Resolve,
    /// How often the causal keyspace exchanges digests with a peer (each round, the next
    /// peer in turn).
    pub causal_anti_entropy_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            peers: BTreeMap::new(),
            join: None,
            data_dir: PathBuf::from("data"),
            peer_source_ip: None,
            tick_ms: 10,
            election_timeout_ticks_min: 15,
            election_timeout_ticks_max: 30,
            heartbeat_interval_ticks: 3,
            request_timeout_ms: 5_000,
            key_bytes_max: 4096,
            value_bytes_max: 1 << 20,
            snapshot_interval_entries: 10_000,
            append_entries_max: 256,
            inflight_appends_max: 64,
            client_queue_max: 10_000,
            peer_queue_max: 8_192,
            batch_events_max: 1_024,
            seed: None,
            fault_injection: false,
            partitions: None,
            partitioning: None,
            split_at: Vec::new(),
            replicas: None,
            scan_limit_max: 10_000,
            placement: true,
            hot_ops_per_sec: 500.0,
            hot_window_secs: 10,
            max_clock_offset_ms: crate::time::hlc::DEFAULT_MAX_OFFSET_MS,
            lease_read_drift: 0.1,
            gossip_probe_interval_ms: 1_000,
            causal_resolve: crate::time::causal::Resolve::Siblings,
            causal_anti_entropy_ms: 100,
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("config file {}{at}: {e}", path.display())
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.id == 0 {
            anyhow::bail!("--id is required and must be at least 1");
        }
        if self.peers.contains_key(&self.id) {
            anyhow::bail!(
                "--peer names this node's own id {}; list only the other nodes",
                self.id
            );
        }
        if self.join.is_some()
            && (self.partitions.is_some()
                || self.partitioning.is_some()
                || !self.split_at.is_empty()
                || self.replicas.is_some())
        {
            anyhow::bail!(
                "--join takes the layout from the cluster it joins: leave out --partitions, \
                 --partitioning, --split-at and --replicas"
            );
        }
        if self.join == Some(self.listen) {
            anyhow::bail!(
                "--join names this node's own --listen address; give the address of a node of the running cluster"
            );
        }
        if !(0.0..1.0).contains(&self.lease_read_drift) {
            anyhow::bail!(
                "--lease-read-drift must be in [0, 1) (a fraction: 0.1 is 10 %), got {}",
                self.lease_read_drift
            );
        }
        if !(10..=60_000).contains(&self.gossip_probe_interval_ms) {
            anyhow::bail!(
                "--gossip-probe-interval-ms must be in 10..=60000, got {}",
                self.gossip_probe_interval_ms
            );
        }
        if self.tick_ms == 0 || self.request_timeout_ms == 0 {
            anyhow::bail!("tick_ms and request_timeout_ms must be at least 1");
        }
        if self.key_bytes_max == 0 || self.value_bytes_max == 0 {
            anyhow::bail!("key_bytes_max and value_bytes_max must be at least 1");
        }
        if self.snapshot_interval_entries == 0 {
            anyhow::bail!("snapshot_interval_entries must be at least 1");
        }
        if self.client_queue_max == 0 || self.peer_queue_max == 0 || self.batch_events_max == 0 {
            anyhow::bail!(
                "client_queue_max, peer_queue_max and batch_events_max must be at least 1"
            );
        }
        if self.hot_window_secs == 0 || self.hot_ops_per_sec.is_nan() || self.hot_ops_per_sec < 0.0
        {
            anyhow::bail!("hot_window_secs must be at least 1 and hot_ops_per_sec at least 0");
        }
        if self.scan_limit_max == 0 {
            anyhow::bail!("scan_limit_max must be at least 1");
        }
        self.raft_config(SeededBugs::default()).validate()?;
        Ok(())
    }

    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.peers.keys().copied().collect();
        voters.push(self.id);
        voters.sort_unstable();
        voters
    }

    /// The Raft configuration of one group this node hosts, with `voters` as its
    /// members. Each group draws its election timeouts from its own seed.
    pub fn group_config(&self, group: u64, voters: Vec<u64>, bugs: SeededBugs) -> RaftConfig {
        let mut config = self.raft_config(bugs);
        config.group_id = group;
        config.voters = voters;
        config.seed = crate::partitioning::hashing::mix(
            config.seed ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        config
    }

    pub fn raft_config(&self, bugs: SeededBugs) -> RaftConfig {
        let mut config = RaftConfig::new(self.id, self.voters());
        config.election_timeout_ticks_min = self.election_timeout_ticks_min;
        config.election_timeout_ticks_max = self.election_timeout_ticks_max;
        config.heartbeat_interval_ticks = self.heartbeat_interval_ticks;
        config.append_entries_max = self.append_entries_max;
        config.inflight_appends_max = self.inflight_appends_max;
        config.seed = self.seed.unwrap_or(self.id);
        config.bugs = bugs;
        config
    }

    pub fn source_ip(&self) -> Option<IpAddr> {
        self.peer_source_ip
            .or_else(|| (!self.listen.ip().is_unspecified()).then(|| self.listen.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.yaml");
        std::fs::write(&path, "id: 1\ntick_msec: 5\n").expect("write");
        let error = NodeConfig::load(&path)
            .expect_err("unknown field")
            .to_string();
        assert!(
            error.contains("tick_msec") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn a_node_may_not_list_itself_as_a_peer() {
        let mut config = NodeConfig {
            id: 1,
            ..Default::default()
        };
        config.peers.insert(1, "127.0.0.1:1".parse().expect("addr"));
        assert!(config.validate().is_err());
    }
}
