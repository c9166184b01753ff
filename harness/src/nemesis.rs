//! The nemesis: carries out a seeded fault schedule against the cluster — signals to
//! node processes, iptables rules in the private namespace, damage to a WAL — and
//! records when each fault started and ended in the history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use faultline_workloads::{CorruptMode, FaultKind, Links, ScheduledFault, Shape, Target};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, watch};

use crate::choreography::Precondition;
use crate::cluster::{LocalCluster, status};
use crate::diverge_leader::Diverged;
use crate::history::{EventType, History, Process};
use crate::leaders::Leaders;
use crate::net::delay::LinkDelay;
use crate::net::firewall::Firewall;
use crate::net::namespace::node_ip;

/// After a fault heals, how long its recovery counts as part of it (see
/// [`FaultWindow::ok_ops_after`]).
pub const RECOVERY_WINDOW_NS: u64 = 1_000_000_000;
/// A move under other faults may wait out elections and a snapshot.
const MOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What one fault did, for the results: when it ran and how many operations
/// completed successfully while it was active.
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub fault: String,
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub ok_ops_during: u64,
    /// `ok_ops_during` by the node that answered: under a partition, whether each side
    /// kept serving (the causal keyspace's promise; a Raft minority serves nothing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ok_ops_during_by_node: BTreeMap<u64, u64>,
    /// How many completed successfully in the [`RECOVERY_WINDOW`] after it healed, having
    /// been invoked after it started: what a fault that stops every node (kill-all) can be
    /// judged by, since nothing can complete while it lasts.
    #[serde(default)]
    pub ok_ops_after: u64,
    /// For a fault that sets up a condition (restart-voter, diverge-leader): whether it
    /// got there. None for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Precondition>,
    /// The nodes a kill or a pause hit (ids from 1), for checkers that judge nodes, not
    /// operations (membership).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<u64>,
    /// A partition's dropped links, (from, to), ids from 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(u64, u64)>,
}

/// The nodes and links a fault's detail names: "node 3" (kill, pause), "every node", and
/// a partition's "a->b" links.
pub fn affected(fault: &str, detail: &str, node_count: usize) -> (Vec<u64>, Vec<(u64, u64)>) {
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    if detail.starts_with("NOT INJECTED") {
        return (nodes, links);
    }
    match fault {
        "kill" | "pause" => {
            if detail.contains("every node") {
                nodes.extend(1..=node_count as u64);
            }
            let words: Vec<&str> = detail.split_whitespace().collect();
            for pair in words.windows(2) {
                if pair[0] == "node"
                    && let Ok(id) = pair[1].trim_matches(|c: char| !c.is_ascii_digit()).parse()
                {
                    nodes.push(id);
                }
            }
        }
        "partition" => {
            for word in detail.split_whitespace() {
                if let Some((a, b)) = word.split_once("->")
                    && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
                {
                    links.push((a, b));
                }
            }
        }
        _ => {}
    }
    nodes.sort_unstable();
    nodes.dedup();
    (nodes, links)
}

pub struct Nemesis {
    pub cluster: Arc<Mutex<LocalCluster>>,
    pub firewall: Option<Firewall>,
    pub history: Arc<History>,
    /// A short description of the fault in force, for the progress line.
    pub active: Arc<std::sync::Mutex<Option<String>>>,
    pub seed: u64,
    /// Nodes whose clock is stepped now.
    pub clock_stepped: std::sync::Mutex<Vec<u64>>,
    /// The slowed link's packet holder, while a fault needs one.
    pub link_delay: std::sync::Mutex<Option<LinkDelay>>,
    /// Leadership claims the nemesis sees in the statuses it reads.
    pub leaders: Arc<Leaders>,
    /// What diverge-leader set up, until it heals.
    pub diverged: std::sync::Mutex<Option<Diverged>>,
    /// Keys `split` may split at, asked when the fault starts: the workload's own, where
    /// its traffic is now, so that both halves see it.
    pub split_keys: Arc<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>,
    /// Nodes the membership fault started, until it removes them.
    pub added: std::sync::Mutex<Vec<u64>>,
    /// The learner learner-partition added, until it removes it.
    pub learner_added: std::sync::Mutex<Option<crate::learner_partition::Added>>,
    /// The clock-strobe fault's task, until it ends.
    pub strobe: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What config-race set up, until it heals.
    pub raced: std::sync::Mutex<Option<crate::config_race::Raced>>,
}

/// Whether a schedule steps clocks: the nodes must serve the fault-injection service.
pub fn needs_fault_injection(schedule: &[ScheduledFault]) -> bool {
    schedule.iter().any(|f| {
        matches!(
            f.fault,
            FaultKind::Clock { .. }
                | FaultKind::ClockRate { .. }
                | FaultKind::ClockStrobe { .. }
                | FaultKind::LeaseSkew { .. }
                | FaultKind::RestartVoter
                | FaultKind::ConfigRace
                | FaultKind::KillCoordinator { .. }
        )
    })
}

/// A client of the node's fault-injection service, connected (so that a node that does
/// not serve it is an error here, naming the node).
async fn fault_injection(
    addr: std::net::SocketAddr,
) -> anyhow::Result<
    faultline_node::proto::admin::fault_injection_client::FaultInjectionClient<
        tonic::transport::Channel,
    >,
> {
    use faultline_node::proto::admin::fault_injection_client::FaultInjectionClient;
    let endpoint = faultline_node::server::transport::node_endpoint(
        addr,
        None,
        std::time::Duration::from_millis(500),
    )
    .timeout(std::time::Duration::from_secs(1));
    Ok(FaultInjectionClient::new(
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach {addr}"))?,
    ))
}

pub(crate) async fn set_clock_offset(
    addr: std::net::SocketAddr,
    offset_ms: i64,
) -> anyhow::Result<()> {
    use faultline_node::proto::admin::ClockOffset;
    fault_injection(addr)
        .await?
        .set_clock_offset(ClockOffset { offset_ms })
        .await
        .with_context(|| format!("cannot step the clock of the node at {addr}"))?;
    Ok(())
}

/// Arms (`exit`) or disarms (`off`) a failpoint on the node at `addr`.
pub async fn set_failpoint(
    addr: std::net::SocketAddr,
    name: &str,
    action: &str,
) -> anyhow::Result<()> {
    use faultline_node::proto::admin::Failpoint;
    fault_injection(addr)
        .await?
        .set_failpoint(Failpoint {
            name: name.to_string(),
            action: action.to_string(),
        })
        .await
        .with_context(|| format!("cannot set failpoint {name} on the node at {addr}"))?;
    Ok(())
}

/// How long kill-coordinator waits for its node to reach the failpoint.
const KILL_COORDINATOR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the chosen node alone is armed before every running node is.
const KILL_COORDINATOR_WIDEN: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn set_clock_rate(addr: std::net::SocketAddr, rate: f64) -> anyhow::Result<()> {
    use faultline_node::proto::admin::ClockRate;
    fault_injection(addr)
        .await?
        .set_clock_rate(ClockRate { rate })
        .await
        .with_context(|| format!("cannot set the clock rate of the node at {addr}"))?;
    Ok(())
}

/// Whether the node at `addr` has fenced itself over its clock, in words.
async fn clock_fence(addr: std::net::SocketAddr) -> String {
    match crate::cluster::group_status_with_digest(addr, None, 0).await {
        Ok(status) if status.clock_fence.is_empty() => "it still serves".to_string(),
        Ok(status) => format!("it fenced itself: {}", status.clock_fence),
        Err(error) => format!("its status did not answer: {error:#}"),
    }
}

/// Whether a schedule needs iptables.
pub fn needs_firewall(schedule: &[ScheduledFault]) -> bool {
    schedule.iter().any(|f| {
        matches!(
            f.fault,
            FaultKind::Partition { .. }
                | FaultKind::Loss { .. }
                | FaultKind::LeaseSkew { .. }
                | FaultKind::RestartVoter
                | FaultKind::DivergeLeader
                | FaultKind::LearnerPartition
                | FaultKind::ConfigRace
        )
    })
}

impl Nemesis {
    /// Runs the schedule until it ends or `stop` turns true; heals whatever is active
    /// before returning. Returns the windows of the faults that ran.
    pub async fn run(
        &self,
        schedule: Vec<ScheduledFault>,
        started: Instant,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<FaultWindow> {
        let mut windows = Vec::new();
        for (number, fault) in schedule.into_iter().enumerate() {
            let begin = started + fault.at;
            if wait_until(begin, &mut stop).await {
                break;
            }
            let start_ns = self.history.elapsed_ns();
            let (detail, mut precondition) = match self.start(&fault.fault, number as u64).await {
                Ok(started) => started,
                Err(error) => {
                    let message = format!("{error:#}");
                    self.record("error", fault.fault.name(), json!(message));
                    // Shown in the summary; with no time span it counts as no
                    // traffic under fault.
                    windows.push(FaultWindow {
                        fault: fault.fault.name().to_string(),
                        detail: format!("NOT INJECTED: {message}"),
                        start_ns,
                        end_ns: start_ns,
                        ok_ops_during: 0,
                        ok_ops_during_by_node: Default::default(),
                        ok_ops_after: 0,
                        precondition: None,
                        nodes: Vec::new(),
                        links: Vec::new(),
                    });
                    continue;
                }
            };
            *self.active.lock().expect("active lock") =
                Some(format!("{} {detail}", fault.fault.name()));
            // The duration counts from when the fault is in force: restart-voter takes a
            // second or two to set up, the others milliseconds.
            let _ = wait_until(Instant::now() + fault.duration, &mut stop).await;
            match self.end(&fault.fault).await {
                Ok(Some(last_word)) => precondition = Some(last_word),
                Ok(None) => {}
                Err(error) => self.record(
                    "error",
                    fault.fault.name(),
                    json!(format!("healing failed: {error:#}")),
                ),
            }
            if let Some(precondition) = precondition.as_ref().filter(|p| !p.reached) {
                self.record(
                    "precondition-not-reached",
                    fault.fault.name(),
                    json!(precondition.detail),
                );
            }
            *self.active.lock().expect("active lock") = None;
            let node_count = self.cluster.lock().await.ids().len();
            let (nodes, links) = affected(fault.fault.name(), &detail, node_count);
            windows.push(FaultWindow {
                fault: fault.fault.name().to_string(),
                detail,
                start_ns,
                end_ns: self.history.elapsed_ns(),
                ok_ops_during: 0,
                ok_ops_during_by_node: Default::default(),
                ok_ops_after: 0,
                precondition,
                nodes,
                links,
            });
        }
        windows
    }

    fn record(&self, phase: &str, fault: &str, value: serde_json::Value) {
        let f = format!("{phase}-{fault}");
        self.history.record(
            EventType::Info,
            Process::Nemesis("nemesis"),
            &f,
            None,
            value,
            None,
            None,
            0,
        );
    }

    async fn resolve(&self, target: Target) -> anyhow::Result<u64> {
        match target {
            Target::Random(index) => Ok(index as u64 + 1),
            Target::All => anyhow::bail!("only kill can target every node"),
            Target::Leader => {
                let cluster = self.cluster.lock().await;
                let mut best: Option<(u64, u64)> = None;
                for id in cluster
                    .ids()
                    .into_iter()
                    .filter(|&id| cluster.is_running(id))
                {
                    if let Ok(s) = status(cluster.addr(id)).await
                        && s.role == "leader"
                        && best.is_none_or(|(_, term)| s.term > term)
                    {
                        best = Some((id, s.term));
                    }
                }
                // No leader (an election is under way): hit node 1 rather than nothing.
                Ok(best.map_or(1, |(id, _)| id))
            }
        }
    }

    async fn leader_index(&self) -> Option<usize> {
        self.resolve(Target::Leader)
            .await
            .ok()
            .map(|id| id as usize - 1)
    }

    /// Injects the fault; returns what was done and, for a fault that sets up a
    /// condition, whether it got there.
    async fn start(
        &self,
        fault: &FaultKind,
        number: u64,
    ) -> anyhow::Result<(String, Option<Precondition>)> {
        let mut precondition = None;
        let detail = match fault {
            FaultKind::Kill {
                target: Target::All,
            } => {
                let mut cluster = self.cluster.lock().await;
                for id in cluster.ids() {
                    cluster.kill(id)?;
                }
                "every node".to_string()
            }
            FaultKind::Kill { target } => {
                let id = self.resolve(*target).await?;
                self.cluster.lock().await.kill(id)?;
                format!("node {id}")
            }
            FaultKind::KillCoordinator {
                target,
                after_commit,
            } => {
                let id = self.resolve(*target).await?;
                let (point, between) = if *after_commit {
                    (
                        "txn-after-commit",
                        "its commit at the primary and telling the others",
                    )
                } else {
                    (
                        "txn-after-prepare",
                        "a transaction's prepares and its commit",
                    )
                };
                // A node coordinates only the transactions whose first key's partition it
                // leads, and the chosen node may lead none just then (leadership moves with
                // kills and partitions). So the chosen node is armed first and, if it has not
                // got there within a second, every running node is: the fault then always
                // kills some coordinator between the two steps, and the record names which.
                let addr = self.cluster.lock().await.addr(id);
                set_failpoint(addr, point, "exit").await?;
                let asked = Instant::now();
                let mut armed = vec![id];
                let died = loop {
                    let dead: Vec<u64> = {
                        let mut cluster = self.cluster.lock().await;
                        let mut dead = Vec::new();
                        for &armed_id in &armed {
                            if cluster.exited(armed_id)? {
                                dead.push(armed_id);
                            }
                        }
                        dead
                    };
                    if !dead.is_empty() {
                        break Some(dead);
                    }
                    if asked.elapsed() >= KILL_COORDINATOR_WAIT {
                        break None;
                    }
                    if armed.len() == 1 && asked.elapsed() >= KILL_COORDINATOR_WIDEN {
                        let others: Vec<(u64, std::net::SocketAddr)> = {
                            let cluster = self.cluster.lock().await;
                            cluster
                                .ids()
                                .into_iter()
                                .filter(|&other| other != id && cluster.is_running(other))
                                .map(|other| (other, cluster.addr(other)))
                                .collect()
                        };
                        for (other, other_addr) in others {
                            // A node that cannot be reached now is not coordinating anything.
                            if set_failpoint(other_addr, point, "exit").await.is_ok() {
                                armed.push(other);
                            }
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                };
                // Disarmed everywhere it did not fire, so that no node dies later, outside
                // the fault.
                let live: Vec<std::net::SocketAddr> = {
                    let cluster = self.cluster.lock().await;
                    armed
                        .iter()
                        .filter(|&&a| !died.as_ref().is_some_and(|d| d.contains(&a)))
                        .map(|&a| cluster.addr(a))
                        .collect()
                };
                for other_addr in live {
                    let _ = set_failpoint(other_addr, point, "off").await;
                }
                match died {
                    Some(dead) => {
                        let names: Vec<String> = dead.iter().map(|d| format!("node {d}")).collect();
                        let widened = if armed.len() > 1 {
                            format!(" (node {id} first, then every running node)")
                        } else {
                            String::new()
                        };
                        let detail = format!(
                            "{} died between {between}, {} ms after the failpoint was armed{widened}",
                            names.join(" and "),
                            asked.elapsed().as_millis()
                        );
                        precondition = Some(Precondition::reached(detail.clone()));
                        detail
                    }
                    None => {
                        let detail = format!(
                            "no node coordinated a transaction to {point} within {} s (node {id} armed first, then {} running nodes)",
                            KILL_COORDINATOR_WAIT.as_secs(),
                            armed.len()
                        );
                        precondition = Some(Precondition::missed(detail.clone()));
                        detail
                    }
                }
            }
            FaultKind::Pause { target } => {
                let id = self.resolve(*target).await?;
                self.cluster.lock().await.signal(id, libc::SIGSTOP)?;
                format!("node {id}")
            }
            FaultKind::Partition { shape } => {
                let firewall = self.firewall()?;
                let node_count = self.cluster.lock().await.ids().len();
                let links = shape.dropped_links(node_count, self.leader_index().await);
                let ip_links: Vec<_> = links
                    .iter()
                    .map(|&(a, b)| (node_ip(a), node_ip(b)))
                    .collect();
                firewall.drop_links(&ip_links)?;
                let named: Vec<String> = links
                    .iter()
                    .map(|(a, b)| format!("{}->{}", a + 1, b + 1))
                    .collect();
                format!("{shape:?} dropping {}", named.join(" "))
            }
            FaultKind::Loss {
                probability,
                between,
            } => {
                let firewall = self.firewall()?;
                let node_count = self.cluster.lock().await.ids().len();
                let pairs: Vec<(usize, usize)> = match between {
                    Links::All => (0..node_count)
                        .flat_map(|a| {
                            (0..node_count)
                                .filter(move |&b| b != a)
                                .map(move |b| (a, b))
                        })
                        .collect(),
                    Links::Pair(a, b) => vec![(*a, *b), (*b, *a)],
                };
                for (a, b) in &pairs {
                    firewall.lossy_link(node_ip(*a), node_ip(*b), *probability)?;
                }
                format!("p={probability:.2} on {between:?}")
            }
            FaultKind::Clock { target, offset_ms } => {
                let id = self.resolve(*target).await?;
                let addr = self.cluster.lock().await.addr(id);
                set_clock_offset(addr, *offset_ms).await?;
                self.clock_stepped.lock().expect("clock lock").push(id);
                // Past 80 % of the maximum offset the node fences itself: say whether it
                // did, once its guard has measured (two rounds).
                tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
                format!("node {id} by {offset_ms} ms; {}", clock_fence(addr).await)
            }
            FaultKind::ClockRate { target, rate } => {
                let id = self.resolve(*target).await?;
                let addr = self.cluster.lock().await.addr(id);
                set_clock_rate(addr, *rate).await?;
                self.clock_stepped.lock().expect("clock lock").push(id);
                format!("node {id} at {rate}x")
            }
            FaultKind::LeaseSkew { rate } => {
                // The clock first: the lease the leader then confirms is counted on the
                // slow clock, and outlasts the election the cut starts.
                let id = self.resolve(Target::Leader).await?;
                let addr = self.cluster.lock().await.addr(id);
                set_clock_rate(addr, *rate).await?;
                self.clock_stepped.lock().expect("clock lock").push(id);
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let firewall = self.firewall()?;
                let node_count = self.cluster.lock().await.ids().len();
                let links = Shape::IsolateLeader.dropped_links(node_count, Some(id as usize - 1));
                let ip_links: Vec<_> = links
                    .iter()
                    .map(|&(a, b)| (node_ip(a), node_ip(b)))
                    .collect();
                firewall.drop_links(&ip_links)?;
                format!("node {id} at {rate}x and cut off")
            }
            FaultKind::ClockStrobe {
                target,
                amplitude_ms,
                period_ms,
            } => {
                let id = self.resolve(*target).await?;
                let addr = self.cluster.lock().await.addr(id);
                self.clock_stepped.lock().expect("clock lock").push(id);
                let (amplitude, period) = (*amplitude_ms, *period_ms);
                let strobe = tokio::spawn(async move {
                    for step in [amplitude, -amplitude, 0].into_iter().cycle() {
                        let _ = set_clock_offset(addr, step).await;
                        tokio::time::sleep(std::time::Duration::from_millis(period)).await;
                    }
                });
                if let Some(old) = self.strobe.lock().expect("strobe lock").replace(strobe) {
                    old.abort();
                }
                format!("node {id} by ±{amplitude} ms every {period} ms")
            }
            FaultKind::CorruptWal { target, mode } => {
                let id = self.resolve(*target).await?;
                let mut cluster = self.cluster.lock().await;
                cluster.kill(id)?;
                let data_dir = cluster
                    .nodes()
                    .iter()
                    .find(|n| n.id == id)
                    .with_context(|| format!("node {id} is not part of the cluster"))?
                    .data_dir
                    .clone();
                let damage = corrupt_wal_tail(&data_dir, *mode, self.seed ^ number)?;
                format!("node {id}: {damage}")
            }
            FaultKind::RestartVoter => {
                let (detail, reached) = crate::restart_voter::start(self).await?;
                precondition = Some(reached);
                detail
            }
            FaultKind::DivergeLeader => {
                let (detail, reached) = crate::diverge_leader::start(self).await?;
                precondition = Some(reached);
                detail
            }
            FaultKind::Split { pick } => self.split(*pick).await?,
            FaultKind::Merge { pick } => self.merge(*pick).await?,
            FaultKind::Move { pick } => self.move_replica(*pick).await?,
            FaultKind::ShuffleLeader { pick } => self.shuffle_leader(*pick).await?,
            FaultKind::Membership { pick } => self.add_node(*pick).await?,
            FaultKind::LearnerPartition => {
                let (detail, reached) = crate::learner_partition::start(self).await?;
                precondition = Some(reached);
                detail
            }
            FaultKind::ConfigRace => {
                let (detail, reached) = crate::config_race::start(self).await?;
                precondition = Some(reached);
                detail
            }
        };
        self.record("start", fault.name(), json!(detail));
        Ok((detail, precondition))
    }

    /// Heals the fault. A fault that sets up a condition may have the last word on
    /// whether it reached it (diverge-leader checks how the healed node caught up).
    async fn end(&self, fault: &FaultKind) -> anyhow::Result<Option<Precondition>> {
        let mut last_word = None;
        match fault {
            FaultKind::Kill { .. }
            | FaultKind::KillCoordinator { .. }
            | FaultKind::CorruptWal { .. } => {
                let mut cluster = self.cluster.lock().await;
                for id in cluster.ids() {
                    if !cluster.is_running(id) {
                        cluster.start(id)?;
                    }
                }
            }
            FaultKind::Pause { .. } => {
                let cluster = self.cluster.lock().await;
                for id in cluster
                    .ids()
                    .into_iter()
                    .filter(|&id| cluster.is_running(id))
                {
                    cluster.signal(id, libc::SIGCONT)?;
                }
            }
            FaultKind::Partition { .. } | FaultKind::Loss { .. } => self.firewall()?.heal()?,
            FaultKind::LeaseSkew { .. } => {
                self.firewall()?.heal()?;
                self.reset_clocks().await?;
            }
            FaultKind::RestartVoter => crate::restart_voter::end(self).await?,
            FaultKind::DivergeLeader => last_word = crate::diverge_leader::end(self).await?,
            FaultKind::Clock { .. }
            | FaultKind::ClockRate { .. }
            | FaultKind::ClockStrobe { .. } => self.reset_clocks().await?,
            // A split is not undone: the new range is the cluster's shape from now on.
            FaultKind::Split { .. }
            | FaultKind::Merge { .. }
            | FaultKind::Move { .. }
            | FaultKind::ShuffleLeader { .. } => {}
            FaultKind::Membership { .. } => self.remove_added_node().await?,
            FaultKind::LearnerPartition => crate::learner_partition::end(self).await?,
            FaultKind::ConfigRace => crate::config_race::end(self).await?,
        }
        self.record("stop", fault.name(), json!(null));
        Ok(last_word)
    }

    /// Merges a range with the one after it, through a running node. A merge needs both
    /// ranges on the same nodes; when replica moves have made them differ, the right range's
    /// replicas are moved onto the left's first (as TiKV's placement driver does before a
    /// merge), then the merge is asked for.
    async fn merge(&self, pick: u64) -> anyhow::Result<String> {
        use faultline_node::proto::kv::{MergeRequest, MoveReplicaRequest};
        let (mut kv, map) = self.range_map(pick, "merge").await?;
        let mut ranges: Vec<_> = map.partitions.iter().collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        anyhow::ensure!(ranges.len() > 1, "one range only: nothing to merge");
        let sorted = |r: &[u64]| {
            let mut r = r.to_vec();
            r.sort_unstable();
            r
        };
        // Pairs already on the same nodes first; else any pair, aligned by moves.
        let pairs: Vec<(usize, bool)> = (0..ranges.len() - 1)
            .map(|i| {
                (
                    i,
                    sorted(&ranges[i].replicas) == sorted(&ranges[i + 1].replicas),
                )
            })
            .collect();
        let aligned: Vec<usize> = pairs.iter().filter(|(_, a)| *a).map(|(i, _)| *i).collect();
        let index = if aligned.is_empty() {
            pairs[((pick >> 8) % pairs.len() as u64) as usize].0
        } else {
            aligned[((pick >> 8) % aligned.len() as u64) as usize]
        };
        let (left, right) = (ranges[index].clone(), ranges[index + 1].clone());
        let mut moves = 0;
        if aligned.is_empty() {
            let mut mover = self.any_node_with(pick, MOVE_TIMEOUT).await?;
            let extra: Vec<u64> = right
                .replicas
                .iter()
                .copied()
                .filter(|n| !left.replicas.contains(n))
                .collect();
            let missing: Vec<u64> = left
                .replicas
                .iter()
                .copied()
                .filter(|n| !right.replicas.contains(n))
                .collect();
            for (&from, &to) in extra.iter().zip(&missing) {
                mover
                    .move_replica(MoveReplicaRequest {
                        partition: right.id,
                        from,
                        to,
                    })
                    .await
                    .with_context(|| {
                        format!(
                            "aligning partition {}'s replicas with partition {}'s for a merge (n{from} -> n{to})",
                            right.id, left.id
                        )
                    })?;
                moves += 1;
            }
            // The merge checks replicas against the map, which learns of the moves from
            // reports.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while Instant::now() < deadline {
                let now = kv
                    .get_partition_map(faultline_node::proto::kv::GetPartitionMapRequest {})
                    .await?
                    .into_inner();
                let replicas_of = |id: u64| {
                    now.partitions
                        .iter()
                        .find(|p| p.id == id)
                        .map(|p| sorted(&p.replicas))
                };
                if replicas_of(left.id).is_some() && replicas_of(left.id) == replicas_of(right.id) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let merged = kv
            .merge(MergeRequest { partition: left.id })
            .await
            .with_context(|| format!("merge of partition {}", left.id))?
            .into_inner()
            .merged
            .unwrap_or_default();
        let end = if merged.end.is_empty() {
            "+inf".to_string()
        } else {
            String::from_utf8_lossy(&merged.end).into_owned()
        };
        let aligned_by = if moves > 0 {
            format!(
                " (after {moves} replica moves put partition {} on the same nodes)",
                right.id
            )
        } else {
            String::new()
        };
        Ok(format!(
            "partition {} with the range after it: now [{}, {end}){aligned_by}",
            left.id,
            String::from_utf8_lossy(&merged.start)
        ))
    }

    /// Moves a replica of a partition to a node that holds none, through a running node.
    async fn move_replica(&self, pick: u64) -> anyhow::Result<String> {
        use faultline_node::proto::kv::{GetPartitionMapRequest, MoveReplicaRequest};
        let mut kv = self.any_node_with(pick, MOVE_TIMEOUT).await?;
        let map = kv
            .get_partition_map(GetPartitionMapRequest {})
            .await
            .context("cannot read the partition map")?
            .into_inner();
        let nodes: Vec<u64> = map.nodes.iter().map(|n| n.id).collect();
        let spare = |p: &faultline_node::proto::kv::PartitionDescriptor| -> Vec<u64> {
            nodes
                .iter()
                .copied()
                .filter(|n| !p.replicas.contains(n) && !p.learners.contains(n))
                .collect()
        };
        let candidates: Vec<_> = map
            .partitions
            .iter()
            .filter(|p| !spare(p).is_empty() && !p.replicas.is_empty())
            .collect();
        anyhow::ensure!(
            !candidates.is_empty(),
            "every node holds a replica of every partition: move needs more nodes than \
             replicas (run with --nodes 4, say)"
        );
        let partition = candidates[((pick >> 8) % candidates.len() as u64) as usize];
        let from = partition.replicas[((pick >> 16) % partition.replicas.len() as u64) as usize];
        let targets = spare(partition);
        let to = targets[((pick >> 24) % targets.len() as u64) as usize];
        let moved = kv
            .move_replica(MoveReplicaRequest {
                partition: partition.id,
                from,
                to,
            })
            .await
            .with_context(|| {
                format!(
                    "move of partition {}'s replica n{from} to n{to}",
                    partition.id
                )
            })?
            .into_inner()
            .descriptor
            .unwrap_or_default();
        Ok(format!(
            "partition {}: replica n{from} -> n{to}, replicas now {:?}",
            partition.id, moved.replicas
        ))
    }

    /// Starts one more node, which joins the cluster through a running node (chosen by
    /// `pick`), and waits until the cluster lists it.
    async fn add_node(&self, pick: u64) -> anyhow::Result<String> {
        use faultline_node::proto::kv::GetPartitionMapRequest;
        let (id, via) = {
            let mut cluster = self.cluster.lock().await;
            let running = cluster.running();
            anyhow::ensure!(!running.is_empty(), "no node is running to join through");
            let (via, via_addr) = running[(pick % running.len() as u64) as usize];
            // Its own address, never one a removed node had: ids are not reused.
            let index = cluster.next_id() as usize - 1;
            let addr = std::net::SocketAddr::new(
                crate::net::namespace::node_ip(index).into(),
                via_addr.port(),
            );
            let id = cluster.add_joining_node(addr, via)?;
            cluster.start(id)?;
            (id, via)
        };
        self.added.lock().expect("added lock").push(id);
        let mut kv = self.any_node(pick).await?;
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let map = kv
                .get_partition_map(GetPartitionMapRequest {})
                .await
                .map(|r| r.into_inner());
            if let Ok(map) = map
                && map.nodes.iter().any(|n| n.id == id)
            {
                // One replica moves onto it, so that its removal drains something.
                let moved = match map
                    .partitions
                    .get((pick >> 8) as usize % map.partitions.len().max(1))
                {
                    Some(p) if !p.replicas.is_empty() => {
                        let from = p.replicas[((pick >> 16) % p.replicas.len() as u64) as usize];
                        let mut kv = self.any_node_with(pick, MOVE_TIMEOUT).await?;
                        kv.move_replica(faultline_node::proto::kv::MoveReplicaRequest {
                            partition: p.id,
                            from,
                            to: id,
                        })
                        .await
                        .map(|_| format!(", took partition {}'s replica from n{from}", p.id))
                        .unwrap_or_else(|s| {
                            format!(", but no replica moved to it: {}", s.message())
                        })
                    }
                    _ => String::new(),
                };
                return Ok(format!("node {id} joined through node {via}{moved}"));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {id} was started to join through node {via} but the cluster did not list it within 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Drains the node `add_node` started (its replicas move to the others), removes it
    /// from the cluster and stops it.
    async fn remove_added_node(&self) -> anyhow::Result<()> {
        use faultline_node::proto::kv::RemoveNodeRequest;
        let Some(id) = self.added.lock().expect("added lock").pop() else {
            return Ok(());
        };
        let mut kv = self.any_node_with(id, MOVE_TIMEOUT * 3).await?;
        let removed = kv
            .remove_node(RemoveNodeRequest { node: id })
            .await
            .with_context(|| format!("removing node {id} (it keeps running)"))?
            .into_inner();
        self.record(
            "removed",
            "membership",
            json!(format!(
                "node {id}: {} replicas moved off it",
                removed.moved.len()
            )),
        );
        self.cluster.lock().await.forget(id)?;
        Ok(())
    }

    /// Hands a partition's leadership to another of its voters, through a running node.
    async fn shuffle_leader(&self, pick: u64) -> anyhow::Result<String> {
        use faultline_node::proto::kv::{GetPartitionMapRequest, TransferLeaderRequest};
        let mut kv = self.any_node(pick).await?;
        let map = kv
            .get_partition_map(GetPartitionMapRequest {})
            .await
            .context("cannot read the partition map")?
            .into_inner();
        let candidates: Vec<_> = map
            .partitions
            .iter()
            .filter(|p| p.replicas.len() > 1)
            .collect();
        anyhow::ensure!(
            !candidates.is_empty(),
            "every partition has one replica: there is no other voter to lead"
        );
        let partition = candidates[((pick >> 8) % candidates.len() as u64) as usize];
        let others: Vec<u64> = partition
            .replicas
            .iter()
            .copied()
            .filter(|&n| n != partition.leader)
            .collect();
        let to = others[((pick >> 16) % others.len() as u64) as usize];
        let from = kv
            .transfer_leader(TransferLeaderRequest {
                partition: partition.id,
                to,
            })
            .await
            .with_context(|| format!("leadership of partition {} to n{to}", partition.id))?
            .into_inner()
            .from;
        Ok(format!(
            "partition {}: leader n{from} -> n{to}",
            partition.id
        ))
    }

    /// A running node (chosen by `pick`) and its partition map, which must be of ranges
    /// for `fault` to act on it.
    async fn range_map(
        &self,
        pick: u64,
        fault: &str,
    ) -> anyhow::Result<(
        faultline_node::proto::kv::kv_client::KvClient<tonic::transport::Channel>,
        faultline_node::proto::kv::GetPartitionMapResponse,
    )> {
        let mut kv = self.any_node(pick).await?;
        let map = kv
            .get_partition_map(faultline_node::proto::kv::GetPartitionMapRequest {})
            .await
            .context("cannot read the partition map")?
            .into_inner();
        anyhow::ensure!(
            map.partitions.iter().all(|p| p.bucket_count == 0),
            "{fault} needs range partitioning (--partitioning range)"
        );
        Ok((kv, map))
    }

    /// A client of a running node, chosen by `pick`.
    async fn any_node(
        &self,
        pick: u64,
    ) -> anyhow::Result<faultline_node::proto::kv::kv_client::KvClient<tonic::transport::Channel>>
    {
        self.any_node_with(pick, std::time::Duration::from_secs(3))
            .await
    }

    /// The same, with requests that may take up to `timeout`.
    async fn any_node_with(
        &self,
        pick: u64,
        timeout: std::time::Duration,
    ) -> anyhow::Result<faultline_node::proto::kv::kv_client::KvClient<tonic::transport::Channel>>
    {
        let running = self.cluster.lock().await.running();
        anyhow::ensure!(!running.is_empty(), "no node is running to ask");
        let (_, addr) = running[(pick % running.len() as u64) as usize];
        let endpoint = faultline_node::server::transport::node_endpoint(
            addr,
            None,
            std::time::Duration::from_millis(500),
        )
        .timeout(timeout);
        Ok(faultline_node::proto::kv::kv_client::KvClient::new(
            endpoint.connect_lazy(),
        ))
    }

    /// Splits the range holding one of `split_keys` at it, through a running node (which
    /// routes it to the range's leader). Keys that start a range already are skipped.
    async fn split(&self, pick: u64) -> anyhow::Result<String> {
        use faultline_node::proto::kv::SplitRequest;
        let (mut kv, map) = self.range_map(pick, "split").await?;
        let keys = (self.split_keys)();
        let candidates: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| !map.partitions.iter().any(|p| &p.start == *k))
            .collect();
        anyhow::ensure!(!candidates.is_empty(), "every key starts a range already");
        let key = candidates[((pick >> 8) % candidates.len() as u64) as usize].clone();
        let reply = kv
            .split(SplitRequest { key: key.clone() })
            .await
            .with_context(|| format!("split at {}", String::from_utf8_lossy(&key)))?
            .into_inner();
        let (left, right) = (
            reply.left.unwrap_or_default(),
            reply.right.unwrap_or_default(),
        );
        Ok(format!(
            "at {}: partition {} keeps the keys before it, {} holds the rest",
            String::from_utf8_lossy(&key),
            left.id,
            right.id
        ))
    }

    pub(crate) fn firewall(&self) -> anyhow::Result<&Firewall> {
        self.firewall
            .as_ref()
            .context("this fault needs iptables, which was not set up for the run")
    }

    /// Steps every clock the nemesis stepped back to real time. A node restarted since
    /// keeps real time already and is skipped.
    pub(crate) async fn reset_clocks(&self) -> anyhow::Result<()> {
        if let Some(strobe) = self.strobe.lock().expect("strobe lock").take() {
            strobe.abort();
        }
        let stepped: Vec<u64> =
            std::mem::take(&mut *self.clock_stepped.lock().expect("clock lock"));
        let mut errors = Vec::new();
        let cluster = self.cluster.lock().await;
        for id in stepped.into_iter().filter(|&id| cluster.is_running(id)) {
            if let Err(error) = set_clock_offset(cluster.addr(id), 0).await {
                errors.push(format!("{error:#}"));
            }
            if let Err(error) = set_clock_rate(cluster.addr(id), 1.0).await {
                errors.push(format!("{error:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", errors.join("; "))
        }
    }

    /// Ends every fault that may be active: restart killed nodes, continue paused ones,
    /// remove every rule. Safe to call whatever state the cluster is in.
    pub async fn heal_all(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if let Some(strobe) = self.strobe.lock().expect("strobe lock").take() {
            strobe.abort();
        }
        if let Some(firewall) = &self.firewall
            && let Err(error) = firewall.heal()
        {
            errors.push(format!("{error}"));
        }
        let delay = self.link_delay.lock().expect("link delay lock").take();
        if let Some(delay) = delay
            && let Err(error) = delay.stop()
        {
            errors.push(format!("{error}"));
        }
        let mut cluster = self.cluster.lock().await;
        for id in cluster.ids() {
            let result = if cluster.is_running(id) {
                cluster.signal(id, libc::SIGCONT)
            } else {
                cluster.start(id)
            };
            if let Err(error) = result {
                errors.push(format!("node {id}: {error:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("healing failed: {}", errors.join("; "))
        }
    }
}

/// Sleeps until `deadline`; true if `stop` turned true first.
async fn wait_until(deadline: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
    tokio::select! {
        () = sleep => {}
        _ = stop.wait_for(|stopped| *stopped) => return true,
    }
    *stop.borrow()
}

/// Leaves what a crash in the middle of a write would leave at the end of a stopped
/// node's newest WAL segment: a record cut short (`Truncate`) or one whose bytes are not
/// those written (`FlipBytes`). Records already there were fsynced and acknowledged;
/// damaging them would model a disk that breaks its fsync promise, which no consensus
/// protocol can mask (the `no-fsync` seeded bug shows what that costs).
pub fn corrupt_wal_tail(
    data_dir: &std::path::Path,
    mode: CorruptMode,
    seed: u64,
) -> anyhow::Result<String> {
    use std::io::Write as _;
    let wal_dir = data_dir.join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .with_context(|| format!("cannot list {}", wal_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let segment = segments
        .last()
        .with_context(|| format!("no WAL segment in {}", wal_dir.display()))?;
    let payload_len = 16 + (seed % 200) as u32;
    let written = (seed / 7 % u64::from(payload_len)) as u32;
    let (bytes, description) = match mode {
        CorruptMode::Truncate => (
            faultline_node::storage::wal::torn_record(payload_len, written, false),
            format!("appended a record cut short ({written} of {payload_len} payload bytes)"),
        ),
        CorruptMode::FlipBytes => (
            faultline_node::storage::wal::torn_record(payload_len, payload_len, true),
            format!("appended a {payload_len}-byte record with garbled bytes"),
        ),
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(segment)
        .with_context(|| format!("cannot open {}", segment.display()))?;
    file.write_all(&bytes)
        .with_context(|| format!("cannot write {}", segment.display()))?;
    Ok(format!("{description} to {}", segment.display()))
}

#[cfg(test)]
mod affected_tests {
    use super::affected;

    #[test]
    fn the_nodes_and_links_a_fault_names_are_read_from_its_detail() {
        assert_eq!(affected("kill", "node 3", 3), (vec![3], vec![]));
        assert_eq!(affected("pause", "every node", 3), (vec![1, 2, 3], vec![]));
        assert_eq!(
            affected("partition", "IsolateOne dropping 1->2 2->1", 3),
            (vec![], vec![(1, 2), (2, 1)])
        );
        assert_eq!(
            affected("kill", "NOT INJECTED: node 2 is gone", 3),
            (vec![], vec![])
        );
        assert_eq!(affected("loss", "p=0.30 on All", 3), (vec![], vec![]));
    }
}
