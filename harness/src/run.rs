//! `faultline run`: start a cluster in a private network namespace, drive a workload
//! against it while the nemesis injects faults, heal, read every key once more, stop the
//! nodes, and check the history.

use faultline_node::client::Routing;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use faultline_workloads::{
    DEFAULT_SESSION_HOP, FaultKind, FaultName, Generator, Keyspace, Op, OpKind, OpValue, Workload,
    nemesis_schedule, resolve,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, watch};

use crate::causal_client::CausalSession;
use crate::client::{Client, Completion, FaultlineClient, Operation};
use crate::cluster::LocalCluster;
use crate::history::{Counts, EventType, History, Process};
use crate::leaders::{Leaders, SharedTerm};
use crate::nemesis::{FaultWindow, Nemesis, needs_fault_injection, needs_firewall};
use crate::net::firewall::Firewall;
use crate::net::namespace::node_ip;
use crate::replicas::Replicas;

/// How long a client waits after a failed or unknown operation.
const FAILURE_BACKOFF: Duration = Duration::from_millis(100);
/// Final reads stop after this many failures in a row: the cluster has not recovered.
/// Tries of each final read before it counts as failed.
const FINAL_READ_ATTEMPTS: usize = 3;
const FINAL_READ_FAILURES_TO_GIVE_UP: usize = 3;

/// Every node listens on this port at its own address in the private namespace.
pub const NODE_PORT: u16 = 7000;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub workload: String,
    pub nodes: usize,
    pub time_limit_secs: Option<u64>,
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
    /// Replaces the workload's faults; an empty list means no nemesis.
    pub nemesis: Option<Vec<String>>,
    pub nemesis_interval_secs: Option<f64>,
    pub seed: Option<u64>,
    pub store: PathBuf,
    pub node_bin: PathBuf,
    pub node_args: Vec<String>,
    pub partitions: Option<u32>,
    pub partitioning: Option<String>,
    pub routing: Routing,
    /// Replaces a transactional workload's isolation level.
    pub isolation: Option<faultline_workloads::Isolation>,
    /// Failpoints armed on every node once the cluster is up, as (name, action): what a
    /// demonstration needs to widen a race's window (`sleep(MS)`).
    pub failpoints: Vec<(String, String)>,
}

/// The node flags that form the cluster with `partitions` partitions. For range
/// partitioning the split keys come from the workload (`Generator::split_keys`), so that
/// every partition holds some of its keys; fewer partitions if the keys do not allow as
/// many.
pub fn partition_args(workload: &Workload, partitions: u32, scheme: &str) -> Vec<String> {
    let mut args = vec!["--partitioning".to_string(), scheme.to_string()];
    if scheme == "range" && partitions > 1 {
        let splits = Generator::new(workload, 0).split_keys(partitions);
        args.extend(["--partitions".to_string(), (splits.len() + 1).to_string()]);
        for key in splits {
            args.extend(["--split-at".to_string(), key]);
        }
    } else {
        args.extend(["--partitions".to_string(), partitions.to_string()]);
    }
    args
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Validity {
    Known(bool),
    Unknown(&'static str),
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub valid: Validity,
    pub workload: String,
    pub checker: String,
    pub model: String,
    pub seed: u64,
    pub nodes: usize,
    pub time_limit_secs: u64,
    pub concurrency: u32,
    pub operations: BTreeMap<String, Counts>,
    pub totals: Counts,
    pub faults: Vec<FaultWindow>,
    /// Why the verdict is what it is: the checker's explanation, or the guard that
    /// refused to call the run valid.
    pub notes: Vec<String>,
    pub teardown_errors: Vec<String>,
    /// Whether the nodes' states agreed after the final reads (none when the run had no
    /// final reads or was interrupted).
    pub replicas: Option<Replicas>,
    /// Why the cluster is not known to have recovered after healing (no leader, the final
    /// reads given up, the replicas never at one applied index); none if it recovered.
    pub unrecovered: Option<String>,
    /// Terms that more than one node claimed to lead (election safety violated).
    pub shared_terms: Vec<SharedTerm>,
    /// Nodes that refused to start because they could not recover their own data
    /// directory after a crash. No fault of a run damages acknowledged data (corrupt-wal
    /// only leaves torn tails, which recovery repairs), so each is a durability bug.
    pub refused_recovery: Vec<String>,
    /// When the earliest operation the checker could not linearize was invoked.
    pub first_anomaly_secs: Option<f64>,
    /// For a workload with load-based splitting on: what the cluster did about it, and the
    /// throughput and latency before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotspot: Option<Hotspot>,
    /// For `keyspace: causal`: convergence after healing, LWW losses, the
    /// linearizability verdict for contrast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causal: Option<crate::causal_store::CausalReport>,
    /// For a transactional run checked below serializable: the same history checked as
    /// serializable, which tells the levels apart (write skew is snapshot-valid and
    /// serializable-invalid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast: Option<Contrast>,
    pub run_dir: PathBuf,
    pub elapsed_secs: f64,
}

/// A history checked against a second consistency model, for contrast with the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Contrast {
    pub model: String,
    /// None when that check could not decide.
    pub valid: Option<bool>,
    pub anomaly_types: Vec<String>,
}

impl Results {
    pub fn exit_code(&self) -> u8 {
        match self.valid {
            Validity::Known(true) => 0,
            Validity::Known(false) => 1,
            Validity::Unknown(_) => 2,
        }
    }
}

/// Applies command-line overrides to the workload and validates the result.
pub fn prepare_workload(options: &RunOptions) -> anyhow::Result<Workload> {
    let mut workload = resolve(&options.workload).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(secs) = options.time_limit_secs {
        workload.time_limit_secs = secs;
        // Phases are scaled to a shorter run by ending where the run ends.
        workload.phases.retain(|_| false);
    }
    if let Some(concurrency) = options.concurrency {
        workload.concurrency = concurrency;
    }
    if let Some(isolation) = options.isolation {
        if !workload.checker.is_transactional() {
            anyhow::bail!(
                "--isolation applies to transactional workloads (list-append, rw-register); {} is not one",
                workload.name
            );
        }
        workload.isolation = Some(isolation);
    }
    if options.rate.is_some() {
        workload.rate = options.rate;
    }
    if let Some(names) = &options.nemesis {
        if names.is_empty() {
            workload.nemesis = None;
        } else {
            let faults = names
                .iter()
                .map(|name| {
                    serde_yaml::from_str::<FaultName>(name).map_err(|_| {
                        anyhow::anyhow!(
                            "unknown nemesis {name:?}; choose from kill, pause, partition, loss, clock, corrupt-wal, restart-voter, diverge-leader (or none)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let nemesis = workload
                .nemesis
                .get_or_insert_with(|| faultline_workloads::Nemesis {
                    faults: Vec::new(),
                    interval_secs: 5.0,
                    partition_shapes: None,
                    kill_target: None,
                    clock_offset_ms: None,
                });
            nemesis.faults = faults;
            if !nemesis.faults.contains(&FaultName::Partition) {
                nemesis.partition_shapes = None;
            }
            if !nemesis.faults.contains(&FaultName::Kill) {
                nemesis.kill_target = None;
            }
            if !nemesis.faults.contains(&FaultName::Clock) {
                nemesis.clock_offset_ms = None;
            }
        }
    }
    if let (Some(interval), Some(nemesis)) =
        (options.nemesis_interval_secs, workload.nemesis.as_mut())
    {
        nemesis.interval_secs = interval;
    }
    let text = serde_yaml::to_string(&workload).context("cannot serialize the workload")?;
    workload
        .validate(&text, "the workload with command-line options applied")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(workload)
}

/// Without iptables, partition and loss cannot run. If the user asked for them
/// (`--nemesis`), that is an error naming the fix; if they came from the workload file,
/// the run goes on without them and says so.
pub fn drop_faults_needing_iptables(
    workload: &mut Workload,
    asked_explicitly: bool,
) -> anyhow::Result<Option<String>> {
    let Some(nemesis) = workload.nemesis.as_mut() else {
        return Ok(None);
    };
    let needs = |f: &FaultName| {
        matches!(
            f,
            FaultName::Partition
                | FaultName::Loss
                | FaultName::RestartVoter
                | FaultName::DivergeLeader
        )
    };
    if !nemesis.faults.iter().any(needs) {
        return Ok(None);
    }
    let Err(error) = Firewall::new() else {
        return Ok(None);
    };
    if asked_explicitly {
        anyhow::bail!("{error}");
    }
    nemesis.faults.retain(|f| !needs(f));
    nemesis.partition_shapes = None;
    let warning = format!(
        "WARNING: {error}\nWARNING: running without the partition, loss, restart-voter and diverge-leader faults"
    );
    if nemesis.faults.is_empty() {
        workload.nemesis = None;
    }
    Ok(Some(warning))
}

fn utc_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

fn make_run_dir(store: &Path, workload: &str) -> anyhow::Result<PathBuf> {
    let dir = store.join(workload).join(utc_timestamp());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let latest = store.join("latest");
    let _ = std::fs::remove_file(&latest);
    let target = dir.strip_prefix(store).unwrap_or(&dir).to_path_buf();
    std::os::unix::fs::symlink(&target, &latest)
        .with_context(|| format!("cannot link {}", latest.display()))?;
    Ok(dir)
}

fn to_operation(op: &Op, isolation: faultline_workloads::Isolation) -> Operation {
    let key = op.key.clone();
    match (op.f, op.value.clone()) {
        (OpKind::Txn, OpValue::Txn(ops)) => Operation::Txn { ops, isolation },
        (OpKind::Transfer, OpValue::Transfer { from, to, amount }) => {
            Operation::Transfer { from, to, amount }
        }
        (OpKind::Balances, _) => Operation::Balances,
        (OpKind::Add, OpValue::Add(element)) => Operation::Add {
            element: element as i64,
        },
        (OpKind::ReadAll, _) => Operation::ReadAll,
        (OpKind::Acquire, _) => Operation::Acquire { lock: key },
        (OpKind::FencedWrite, OpValue::Write(value)) => Operation::FencedWrite {
            lock: key,
            value: value as i64,
        },
        (OpKind::Stall, OpValue::Write(ms)) => Operation::Stall { ms },
        (OpKind::Hold, OpValue::Write(ms)) => Operation::Hold { ms },
        (OpKind::Release, _) => Operation::Release { lock: key },
        (OpKind::WatchSegment, OpValue::Watch { gap_ms, segment_ms }) => {
            Operation::WatchSegment { gap_ms, segment_ms }
        }
        (OpKind::WatchAll, OpValue::Write(node)) => Operation::WatchAll {
            node: node as usize,
        },
        (OpKind::Members, OpValue::Write(poll_ms)) => Operation::Members { poll_ms },
        (OpKind::Write, OpValue::Write(value)) => Operation::Write {
            key,
            value: value as i64,
        },
        (OpKind::Cas, OpValue::Cas { expected, new }) => Operation::Cas {
            key,
            expected: expected.map(|v| v as i64),
            new: new as i64,
        },
        _ => Operation::Read { key },
    }
}

fn invoke_value(op: &Op) -> Value {
    serde_json::to_value(&op.value).unwrap_or(Value::Null)
}

struct Shared {
    history: Arc<History>,
    generator: std::sync::Mutex<Generator>,
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    started: Instant,
    deadline: Instant,
    concurrency: u64,
    open_loop: bool,
    write_retries: u32,
    routing: Routing,
    seed: u64,
    /// The isolation level transactions ask for.
    isolation: faultline_workloads::Isolation,
    /// The bank's accounts and whether balances may go negative.
    bank: Option<(u32, bool)>,
    /// The lock workload's lease TTL, and whether its keep-alives' renewals go in the
    /// history (the lock checker judges early expiry by them).
    lock_ttl_ms: u64,
    record_renewals: bool,
    /// Reads ask for the leader's lease.
    lease_reads: bool,
    /// For `keyspace: causal`: a channel per node, and the sessions' hop chance.
    causal: Option<(Vec<tonic::transport::Channel>, f64)>,
}

/// One worker: a logical process at a time. After an operation with an unknown
/// outcome the process is retired and a fresh one takes its place (Jepsen's rule), so
/// that no process has two operations in flight in the history.
async fn worker(shared: Arc<Shared>, index: u64, mut stop: watch::Receiver<bool>) {
    let mut process = index;
    let node = (index as usize) % shared.addrs.len();
    let mut client = new_client(&shared, node, process);
    while Instant::now() < shared.deadline && !*stop.borrow() {
        let (op, pause) = {
            let mut generator = shared.generator.lock().expect("generator lock");
            let op = generator.next_op(process, shared.started.elapsed());
            let pause = if shared.open_loop {
                generator.next_interval()
            } else {
                None
            };
            (op, pause)
        };
        if let Some(pause) = pause {
            // Each worker carries 1/concurrency of the open-loop rate.
            let pause = pause.mul_f64(shared.concurrency as f64);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        let completion = invoke(&shared, &mut client, process, &op, node).await;
        if matches!(completion, Completion::Info { .. }) {
            process += shared.concurrency;
            client = new_client(&shared, node, process);
        }
        let failed = match &completion {
            Completion::Ok { .. } => false,
            // A cas whose compare did not match is an answer, not a failure.
            Completion::Fail { .. } => false,
            Completion::Refused { .. } | Completion::Info { .. } => true,
        };
        if failed {
            // A node that is down answers at once; without a pause a client would fill
            // the history with thousands of failures that test nothing.
            tokio::select! {
                () = tokio::time::sleep(FAILURE_BACKOFF) => {}
                _ = stop.changed() => break,
            }
        }
    }
}

fn new_client(shared: &Shared, node: usize, process: u64) -> Box<dyn Client> {
    if let Some((channels, hop)) = &shared.causal {
        return Box::new(CausalSession::new(
            channels,
            node,
            *hop,
            shared.seed,
            process,
            shared.timeout,
        ));
    }
    let (addr, source) = route(shared, node);
    let mut client = FaultlineClient::new(
        addr,
        &shared.addrs,
        shared.routing,
        source,
        format!("p{process}"),
        shared.timeout,
    );
    if let Some((accounts, negative)) = shared.bank {
        client.bank_accounts = accounts;
        client.bank_negative = negative;
    }
    client.lock_ttl_ms = shared.lock_ttl_ms;
    if shared.record_renewals {
        client.renewals = Some(shared.history.clone());
    }
    client.lease_reads = shared.lease_reads;
    Box::new(client)
}

/// Opens the bank before the clients start (not part of the history: the checker is
/// told the total instead). Retried until the cluster takes it.
async fn open_bank(
    workload: &Workload,
    addrs: &[SocketAddr],
    routing: Routing,
) -> anyhow::Result<()> {
    let bank = workload.bank.clone().unwrap_or_default();
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut client = FaultlineClient::new(
            addrs[0],
            addrs,
            routing,
            Some(node_ip(0).into()),
            "bank-setup".into(),
            Duration::from_secs(2),
        );
        match client.open_bank(workload.keys.count, bank.total).await {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "could not open the bank ({} accounts, total {}): {last}",
        workload.keys.count,
        bank.total
    )
}

/// Node `node`'s address, and the source address a client of it sends from (the node's
/// own, so that partitions cut clients off with their node).
fn route(shared: &Shared, node: usize) -> (SocketAddr, Option<std::net::IpAddr>) {
    (shared.addrs[node], Some(node_ip(node).into()))
}

async fn invoke(
    shared: &Shared,
    client: &mut Box<dyn Client>,
    process: u64,
    op: &Op,
    node: usize,
) -> Completion {
    let history = &shared.history;
    let f = op.f.as_str();
    history.record(
        EventType::Invoke,
        Process::Client(process),
        f,
        (!op.key.is_empty()).then_some(op.key.as_str()),
        invoke_value(op),
        None,
        Some(node as u64 + 1),
        0,
    );
    let operation = to_operation(op, shared.isolation);
    let mut completion = client.invoke(&operation).await;
    let (mut resends, mut answered_by) = (0, node);
    let mut unknown = None;
    while !matches!(
        op.f,
        OpKind::Read
            | OpKind::ReadAll
            | OpKind::Balances
            | OpKind::Acquire
            | OpKind::FencedWrite
            | OpKind::Stall
            | OpKind::Hold
            | OpKind::Release
            | OpKind::WatchSegment
            | OpKind::WatchAll
            | OpKind::Members
    ) && resends < shared.write_retries
        && Instant::now() < shared.deadline
    {
        match &completion {
            Completion::Info { error } => unknown = Some(error.clone()),
            // Once an attempt may have taken effect, a later refusal says nothing about it.
            Completion::Refused { .. } if unknown.is_some() => {}
            _ => break,
        }
        tokio::time::sleep(FAILURE_BACKOFF).await;
        resends += 1;
        answered_by = (node + resends as usize) % shared.addrs.len();
        let (addr, source) = route(shared, answered_by);
        client.retarget(addr, source);
        completion = client.resend(&operation).await;
    }
    if let (Some(error), Completion::Refused { .. }) = (&unknown, &completion) {
        completion = Completion::Info {
            error: error.clone(),
        };
    }
    if answered_by != node {
        let (addr, source) = route(shared, node);
        client.retarget(addr, source);
    }
    if let Some(at) = client.answered_by() {
        answered_by = at;
    }
    let (kind, value, error) = match &completion {
        Completion::Ok { value } => {
            // A transaction's completion holds what its reads saw.
            let value = if matches!(
                op.f,
                OpKind::Read
                    | OpKind::ReadAll
                    | OpKind::Txn
                    | OpKind::Balances
                    | OpKind::Acquire
                    | OpKind::FencedWrite
                    | OpKind::Release
                    | OpKind::WatchSegment
                    | OpKind::WatchAll
                    | OpKind::Members
            ) {
                value.clone()
            } else {
                invoke_value(op)
            };
            (EventType::Ok, value, None)
        }
        Completion::Fail { error, seen } => {
            // `[from, to, seen]`: what the compare saw is an observation the checker uses.
            let mut value = invoke_value(op);
            if let (OpKind::Cas, Value::Array(items)) = (op.f, &mut value) {
                items.push(seen.clone());
            }
            (EventType::Fail, value, Some(error.clone()))
        }
        Completion::Refused { error } => {
            (EventType::Refused, invoke_value(op), Some(error.clone()))
        }
        Completion::Info { error } => (EventType::Info, invoke_value(op), Some(error.clone())),
    };
    history.record(
        kind,
        Process::Client(process),
        f,
        (!op.key.is_empty()).then_some(op.key.as_str()),
        value,
        error,
        Some(answered_by as u64 + 1),
        resends,
    );
    completion
}

fn progress_line(
    history: &History,
    started: Instant,
    active: &std::sync::Mutex<Option<String>>,
) -> String {
    let counts = history.counts();
    let elapsed = started.elapsed().as_secs_f64();
    let done = counts.ok + counts.fail + counts.info;
    let active = active
        .lock()
        .expect("active lock")
        .clone()
        .unwrap_or_else(|| "none".into());
    format!(
        "[{elapsed:6.1}s] {:7.0} ops/s  ok {}  fail {}  info {}  fault: {active}",
        done as f64 / elapsed.max(0.001),
        counts.ok,
        counts.fail,
        counts.info
    )
}

/// Runs everything after the namespace exists. Returns the results whatever happened
/// after the cluster started, so that a teardown problem never hides the verdict.
pub async fn run(options: RunOptions, workload: Workload) -> anyhow::Result<Results> {
    let seed = options.seed.unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    });
    // Registered before any node starts, so that Ctrl-C (or SIGTERM) at any moment
    // leads to healing, stopping the nodes and checking what was recorded.
    let mut interrupt = interrupt_signals()?;
    let run_dir = make_run_dir(&options.store, &workload.name)?;
    eprintln!(
        "faultline run: workload {} on {} nodes for {} s, seed {seed} (replay with --seed {seed}); results in {}",
        workload.name,
        options.nodes,
        workload.time_limit_secs,
        run_dir.display()
    );
    let schedule = nemesis_schedule(&workload, seed, options.nodes);
    let plan: Vec<String> = schedule
        .iter()
        .map(|f| {
            format!(
                "at {:>7.3}s for {:>6.3}s: {:?}",
                f.at.as_secs_f64(),
                f.duration.as_secs_f64(),
                f.fault
            )
        })
        .collect();
    std::fs::write(run_dir.join("nemesis.log"), plan.join("\n") + "\n")?;
    std::fs::write(
        run_dir.join("workload.yaml"),
        serde_yaml::to_string(&workload)?,
    )?;
    let firewall = if needs_firewall(&schedule) {
        let firewall = Firewall::new().map_err(|e| anyhow::anyhow!("{e}"))?;
        firewall.heal().map_err(|e| anyhow::anyhow!("{e}"))?;
        Some(firewall)
    } else {
        None
    };

    let addrs: Vec<SocketAddr> = (0..options.nodes)
        .map(|i| SocketAddr::new(node_ip(i).into(), NODE_PORT))
        .collect();
    let mut node_args = options.node_args.clone();
    // Every node a voter of every partition unless the user places replicas: the faults
    // then hit a replica of each group wherever they land (as with one Raft group). A
    // schedule that moves replicas needs nodes without one: three replicas each, then.
    if !node_args
        .iter()
        .any(|a| a == "--replicas" || a.starts_with("--replicas="))
    {
        let moves = schedule.iter().any(|f| {
            matches!(
                f.fault,
                FaultKind::Move { .. } | FaultKind::Membership { .. } | FaultKind::LearnerPartition
            )
        });
        let race = schedule
            .iter()
            .any(|f| matches!(f.fault, FaultKind::ConfigRace));
        let replicas = if race {
            4
        } else if moves && options.nodes > 3 {
            3
        } else {
            options.nodes.min(7)
        };
        node_args.extend(["--replicas".to_string(), replicas.to_string()]);
    }
    if let Some(resolve) = workload.causal_resolve
        && !node_args.iter().any(|a| a.starts_with("--causal-resolve"))
    {
        node_args.extend(["--causal-resolve".to_string(), resolve.as_str().to_string()]);
    }
    if workload.checker == faultline_workloads::Checker::Membership
        && let membership = workload.membership.clone().unwrap_or_default()
        && !node_args
            .iter()
            .any(|a| a.starts_with("--gossip-probe-interval-ms"))
    {
        node_args.extend([
            "--gossip-probe-interval-ms".to_string(),
            membership.probe_interval_ms.to_string(),
        ]);
    }
    if let Some(ops) = workload.hot_ops_per_sec
        && !node_args.iter().any(|a| a.starts_with("--hot-ops-per-sec"))
    {
        node_args.extend(["--hot-ops-per-sec".to_string(), ops.to_string()]);
        let window = workload.hot_window_secs.unwrap_or(10);
        node_args.extend(["--hot-window-secs".to_string(), window.to_string()]);
    }
    if let Some(partitions) = options.partitions {
        let scheme = options.partitioning.as_deref().unwrap_or("range");
        node_args.extend(partition_args(&workload, partitions, scheme));
    } else if let Some(scheme) = &options.partitioning {
        node_args.extend(partition_args(&workload, 1, scheme));
    }
    if needs_fault_injection(&schedule) || !options.failpoints.is_empty() {
        node_args.push("--enable-fault-injection".into());
    }
    let mut cluster = LocalCluster::new(&options.node_bin, &run_dir, &addrs, node_args)?;
    cluster.start_all()?;
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .context("the cluster did not elect a leader")?;
    for (name, action) in &options.failpoints {
        for id in cluster.ids() {
            crate::nemesis::set_failpoint(cluster.addr(id), name, action)
                .await
                .with_context(|| format!("--failpoint {name}={action}"))?;
        }
    }
    let cluster = Arc::new(Mutex::new(cluster));
    if workload.checker == faultline_workloads::Checker::Bank {
        open_bank(&workload, &addrs, options.routing).await?;
    }

    let started = Instant::now();
    let history = Arc::new(History::create(&run_dir.join("history.jsonl"), started)?);
    let shared = Arc::new(Shared {
        history: history.clone(),
        generator: std::sync::Mutex::new(Generator::new(&workload, seed)),
        addrs: addrs.clone(),
        timeout: Duration::from_millis(workload.request_timeout_ms),
        started,
        deadline: started + Duration::from_secs(workload.time_limit_secs),
        concurrency: u64::from(workload.concurrency),
        open_loop: workload.rate.is_some(),
        write_retries: workload.write_retries,
        routing: options.routing,
        seed,
        isolation: workload.isolation.unwrap_or_default(),
        bank: (workload.checker == faultline_workloads::Checker::Bank).then(|| {
            let bank = workload.bank.clone().unwrap_or_default();
            (workload.keys.count, bank.negative_balances)
        }),
        lock_ttl_ms: workload.lock.clone().unwrap_or_default().ttl_ms,
        record_renewals: workload.checker == faultline_workloads::Checker::Lock,
        lease_reads: workload.read_mode == faultline_workloads::ReadMode::Lease,
        causal: (workload.keyspace == Keyspace::Causal).then(|| {
            let sources: Vec<std::net::IpAddr> =
                (0..addrs.len()).map(|i| node_ip(i).into()).collect();
            (
                crate::causal_client::channels(&addrs, &sources),
                workload.session_hop.unwrap_or(DEFAULT_SESSION_HOP),
            )
        }),
    });
    let (stop_tx, stop) = watch::channel(false);
    let active = Arc::new(std::sync::Mutex::new(None));
    let leaders = Arc::new(Leaders::default());
    let leaders_task = {
        let (cluster, leaders, history, stop) = (
            cluster.clone(),
            leaders.clone(),
            history.clone(),
            stop.clone(),
        );
        let elapsed = move || history.elapsed_ns() as f64 / 1e9;
        tokio::spawn(crate::leaders::watch(cluster, leaders, elapsed, stop))
    };
    let nemesis = Arc::new(Nemesis {
        cluster: cluster.clone(),
        firewall,
        history: history.clone(),
        active: active.clone(),
        seed,
        clock_stepped: std::sync::Mutex::new(Vec::new()),
        link_delay: std::sync::Mutex::new(None),
        leaders: leaders.clone(),
        diverged: std::sync::Mutex::new(None),
        split_keys: {
            let shared = shared.clone();
            Arc::new(move || {
                let generator = shared.generator.lock().unwrap_or_else(|e| e.into_inner());
                generator
                    .split_candidates()
                    .into_iter()
                    .map(String::into_bytes)
                    .collect()
            })
        },
        added: std::sync::Mutex::new(Vec::new()),
        learner_added: std::sync::Mutex::new(None),
        raced: std::sync::Mutex::new(None),
        strobe: std::sync::Mutex::new(None),
    });
    let nemesis_task = {
        let (nemesis, stop) = (nemesis.clone(), stop.clone());
        tokio::spawn(async move { nemesis.run(schedule, started, stop).await })
    };
    let workers: Vec<_> = (0..shared.concurrency)
        .map(|i| tokio::spawn(worker(shared.clone(), i, stop.clone())))
        .collect();

    let interrupted = drive_until_done(&shared, &history, &active, started, &mut interrupt).await;
    if interrupted {
        eprintln!("\ninterrupted: healing, stopping the nodes and checking what was recorded");
    }
    let _ = stop_tx.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    let mut faults = nemesis_task.await.unwrap_or_default();
    let _ = leaders_task.await;
    let mut teardown_errors = Vec::new();
    if let Err(error) = nemesis.heal_all().await {
        teardown_errors.push(format!("{error:#}"));
    }
    let healed = Instant::now();
    eprintln!();
    let causal = if shared.causal.is_some() && !interrupted {
        let nodes = cluster.lock().await.running();
        Some(crate::causal_store::converge(&nodes, healed).await)
    } else {
        None
    };

    let mut replicas = None;
    let mut unrecovered = None;
    if workload.final_reads && !interrupted {
        unrecovered = final_reads(&shared, &cluster).await;
        let nodes = cluster.lock().await.running();
        let compared = crate::replicas::compare(&nodes, crate::replicas::SETTLE).await;
        if matches!(compared, Replicas::Unsettled { .. }) {
            unrecovered.get_or_insert_with(|| compared.describe());
        }
        replicas = Some(compared);
    }
    teardown_errors.extend(unrecovered.clone());
    let refused_recovery: Vec<String> = cluster
        .lock()
        .await
        .recovery_refusals()
        .into_iter()
        .map(|(id, refusal)| format!("node {id}: {refusal}"))
        .collect();
    {
        let mut cluster = cluster.lock().await;
        for id in cluster.ids() {
            match cluster.stop(id, Duration::from_secs(5)) {
                Ok(true) => {}
                Ok(false) => teardown_errors.push(format!(
                    "node {id} did not exit cleanly on SIGTERM (killed)"
                )),
                Err(error) => teardown_errors.push(format!("node {id}: {error:#}")),
            }
        }
    }
    if let Some(firewall) = &nemesis.firewall
        && let Err(error) = firewall.heal()
    {
        teardown_errors.push(format!("cannot remove the iptables rules: {error}"));
    }
    history.flush()?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let mut results = Results {
        valid: Validity::Unknown("not checked"),
        workload: workload.name.clone(),
        checker: crate::workload::kind(&workload).checker().into(),
        model: crate::workload::kind(&workload).model(&workload),
        seed,
        nodes: options.nodes,
        time_limit_secs: workload.time_limit_secs,
        concurrency: workload.concurrency,
        operations: BTreeMap::new(),
        totals: history.counts(),
        faults: Vec::new(),
        notes: Vec::new(),
        teardown_errors,
        replicas,
        unrecovered,
        shared_terms: leaders.shared_terms(),
        refused_recovery,
        first_anomaly_secs: None,
        hotspot: None,
        contrast: None,
        causal,
        run_dir: run_dir.clone(),
        elapsed_secs,
    };
    count_operations(&run_dir.join("history.jsonl"), &mut results, &mut faults)?;
    if workload.hot_ops_per_sec.is_some() {
        let window = workload.hot_window_secs.unwrap_or(10);
        results.hotspot = Some(hotspot(&run_dir, window, workload.time_limit_secs)?);
    }
    results.faults = faults;
    crate::workload::kind(&workload).check(&mut results, &run_dir, &workload)?;
    std::fs::write(
        run_dir.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    Ok(results)
}

fn interrupt_signals() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Prints the progress line every second until the time limit or Ctrl-C. True if
/// interrupted.
async fn drive_until_done(
    shared: &Shared,
    history: &History,
    active: &std::sync::Mutex<Option<String>>,
    started: Instant,
    interrupt: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> bool {
    // On a terminal the line is redrawn every second; in a log, a line every 5 s.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut ticker = tokio::time::interval(Duration::from_secs(if terminal { 1 } else { 5 }));
    let deadline = tokio::time::Instant::from_std(shared.deadline);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let line = progress_line(history, started, active);
                if terminal { eprint!("\r{line}") } else { eprintln!("{line}") }
            }
            () = tokio::time::sleep_until(deadline) => return false,
            _ = interrupt.recv() => return true,
        }
    }
}

/// After healing: wait for a leader, then read every key once with fresh processes. Says
/// why, if the cluster did not serve them.
async fn final_reads(shared: &Arc<Shared>, cluster: &Arc<Mutex<LocalCluster>>) -> Option<String> {
    if let Err(error) = cluster
        .lock()
        .await
        .wait_for_leader(Duration::from_secs(30))
        .await
    {
        return Some(format!("no leader after healing: {error:#}"));
    }
    let ops = shared
        .generator
        .lock()
        .expect("generator lock")
        .final_read_ops();
    let total = ops.len();
    let mut failures_in_a_row = 0;
    // Fresh process ids, far above the workers', one per final read.
    for (read, op) in ops.into_iter().enumerate() {
        // A read changes nothing, so one that failed is asked again (of the next node, by
        // a fresh process): a cluster that healed a moment ago may still be electing, and
        // a run with one key to read would otherwise lose its verdict to one timeout.
        let mut outcome = None;
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let process = 1_000_000_000u64 + (read * FINAL_READ_ATTEMPTS + attempt) as u64;
            let node = process as usize % shared.addrs.len();
            let mut client = new_client(shared, node, process);
            match invoke(shared, &mut client, process, &op, node).await {
                Completion::Ok { .. } => {
                    outcome = None;
                    break;
                }
                Completion::Fail { error, .. }
                | Completion::Refused { error }
                | Completion::Info { error } => outcome = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match outcome {
            None => failures_in_a_row = 0,
            Some(error) => {
                failures_in_a_row += 1;
                // A cluster that does not serve after healing would otherwise hold the
                // run for a request timeout per key (hours for a large keyspace).
                if failures_in_a_row == FINAL_READ_FAILURES_TO_GIVE_UP {
                    return Some(format!(
                        "the cluster did not recover after healing: {failures_in_a_row} final reads in a row failed (last: {error}); {} of {total} keys not read",
                        total - read - 1
                    ));
                }
            }
        }
    }
    None
}

/// What load-based splitting did in a run, from the nodes' own logs of their decisions,
/// and the run's throughput and p99 latency in its first and last windows (the first is
/// before any decision could be made: the unmitigated load).
#[derive(Clone, Debug, Serialize)]
pub struct Hotspot {
    pub splits: u64,
    pub leader_moves: u64,
    pub window_secs: u64,
    pub before_ops_per_s: f64,
    pub after_ops_per_s: f64,
    pub before_p99_ms: f64,
    pub after_p99_ms: f64,
}

impl Hotspot {
    pub fn describe(&self) -> String {
        format!(
            "hotspot: {} splits, {} leader moves; first {} s: {:.0} ops/s, p99 {:.1} ms; last {} s: {:.0} ops/s, p99 {:.1} ms ({:.2}x)",
            self.splits,
            self.leader_moves,
            self.window_secs,
            self.before_ops_per_s,
            self.before_p99_ms,
            self.window_secs,
            self.after_ops_per_s,
            self.after_p99_ms,
            self.after_ops_per_s / self.before_ops_per_s.max(f64::MIN_POSITIVE)
        )
    }
}

fn hotspot(run_dir: &Path, window_secs: u64, time_limit_secs: u64) -> anyhow::Result<Hotspot> {
    let mut splits = 0;
    let mut leader_moves = 0;
    if let Ok(nodes) = std::fs::read_dir(run_dir.join("nodes")) {
        for node in nodes.flatten() {
            let log = std::fs::read_to_string(node.path().join("log")).unwrap_or_default();
            for line in log.lines() {
                if line.contains("hot range split:") {
                    splits += 1;
                }
                if line.contains("new half's leadership goes to the replica")
                    || line.contains("hot range: leadership moves")
                {
                    leader_moves += 1;
                }
            }
        }
    }
    let text = std::fs::read_to_string(run_dir.join("history.jsonl"))?;
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let window_ns = window_secs * 1_000_000_000;
    let end_ns = time_limit_secs * 1_000_000_000;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)?;
        let Some(process) = event["process"].as_u64() else {
            continue;
        };
        let time = event["time"].as_u64().unwrap_or(0);
        match event["type"].as_str() {
            Some("invoke") => {
                invoked.insert(process, time);
            }
            Some("ok") => {
                let begin = invoked.remove(&process).unwrap_or(time);
                let latency_ms = (time - begin.min(time)) as f64 / 1e6;
                if time < window_ns {
                    before.push(latency_ms);
                } else if time + window_ns >= end_ns && time <= end_ns {
                    after.push(latency_ms);
                }
            }
            _ => {
                invoked.remove(&process);
            }
        }
    }
    let p99 = |mut v: Vec<f64>| {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
    };
    Ok(Hotspot {
        splits,
        leader_moves,
        window_secs,
        before_ops_per_s: before.len() as f64 / window_secs as f64,
        after_ops_per_s: after.len() as f64 / window_secs as f64,
        before_p99_ms: p99(before),
        after_p99_ms: p99(after),
    })
}

/// Operations by type and outcome, and for each fault how many operations completed
/// successfully while it was active.
fn count_operations(
    path: &Path,
    results: &mut Results,
    faults: &mut [FaultWindow],
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)?;
        let Some(process) = event["process"].as_u64() else {
            continue;
        };
        let f = event["f"].as_str().unwrap_or("?").to_string();
        let time = event["time"].as_u64().unwrap_or(0);
        let counts = results.operations.entry(f).or_default();
        match event["type"].as_str() {
            Some("invoke") => {
                counts.invoke += 1;
                invoked.insert(process, time);
            }
            Some("ok") => {
                counts.ok += 1;
                let begin = invoked.remove(&process).unwrap_or(time);
                for window in faults.iter_mut() {
                    if begin < window.end_ns && time > window.start_ns {
                        window.ok_ops_during += 1;
                        if let Some(node) = event["node"].as_u64() {
                            *window.ok_ops_during_by_node.entry(node).or_default() += 1;
                        }
                    } else if begin >= window.start_ns
                        && time >= window.end_ns
                        && time < window.end_ns + crate::nemesis::RECOVERY_WINDOW_NS
                    {
                        window.ok_ops_after += 1;
                    }
                }
            }
            Some("fail") => counts.fail += 1,
            Some("info") => counts.info += 1,
            _ => {}
        }
    }
    Ok(())
}

pub fn print_summary(results: &Results) {
    println!("\noperations (invoke / ok / fail / info):");
    for (f, c) in &results.operations {
        println!(
            "  {f:<8} {:>7} {:>7} {:>7} {:>7}",
            c.invoke, c.ok, c.fail, c.info
        );
    }
    println!("faults injected: {}", results.faults.len());
    for window in &results.faults {
        let by_node = if results.causal.is_some() {
            let each: Vec<String> = window
                .ok_ops_during_by_node
                .iter()
                .map(|(n, c)| format!("n{n} {c}"))
                .collect();
            format!(": {}", each.join(", "))
        } else {
            String::new()
        };
        println!(
            "  {:>7.2}s-{:>7.2}s {:<12} {} ({} ops completed during it{by_node}, {} in the second after)",
            window.start_ns as f64 / 1e9,
            window.end_ns as f64 / 1e9,
            window.fault,
            window.detail,
            window.ok_ops_during,
            window.ok_ops_after
        );
    }
    for error in &results.teardown_errors {
        println!("teardown: {error}");
    }
    // A divergence is among the notes and an unsettled cluster among the teardown errors.
    if let Some(replicas @ Replicas::Agree { .. }) = &results.replicas {
        println!("{}", replicas.describe());
    }
    if let Some(hotspot) = &results.hotspot {
        println!("{}", hotspot.describe());
    }
    for note in &results.notes {
        println!("{note}");
    }
    let verdict = match &results.valid {
        Validity::Known(true) => "VALID".to_string(),
        Validity::Known(false) => "INVALID: anomalies found".to_string(),
        Validity::Unknown(why) => format!("UNKNOWN ({why})"),
    };
    println!(
        "{} checker, {} model: {verdict}",
        results.checker, results.model
    );
    println!("results: {}", results.run_dir.display());
}
