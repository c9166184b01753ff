//! What a run against the causal keyspace adds to the verdict: whether every replica
//! holds the same values and siblings once the faults heal (convergence), how long that
//! took, what LWW overwrote, and what anti-entropy cost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_node::proto::causal::causal_client::CausalClient;
use faultline_node::proto::causal::{DumpRequest, DumpResponse, ListOverwrittenRequest};
use serde::Serialize;

/// How long the replicas have to converge after healing.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Differences listed when they do not.
const DIFFERENCES_SHOWN: usize = 5;
/// LWW losses listed by value.
const LOSSES_SHOWN: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct CausalReport {
    pub resolve: String,
    /// Every replica held the same data (values, siblings, tombstones and their clocks).
    pub converged: bool,
    /// From the heal to the first moment every replica's digest agreed.
    pub converged_after_ms: Option<u64>,
    pub digests: BTreeMap<u64, String>,
    pub keys: u64,
    /// Keys holding concurrent values (siblings) on every replica, after converging.
    pub keys_with_siblings: u64,
    /// When the replicas did not converge: how they differ.
    pub differences: Vec<String>,
    /// Concurrent writes LWW overwrote (distinct writes, over all replicas).
    pub lww_overwritten: u64,
    pub lww_overwritten_shown: Vec<String>,
    /// Bytes of exchange messages (anti-entropy, pushes, read repair) the nodes sent.
    pub exchange_bytes_sent: u64,
    /// The linearizability checker's verdict on the same history, for contrast: the
    /// causal keyspace does not promise it, and under partitions a history shows why.
    pub linearizable: Option<bool>,
}

/// A stored value as text; a tombstone (a delete) has none.
pub fn value_text(value: &Option<Vec<u8>>) -> String {
    match value {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "(deleted)".into(),
    }
}

fn client(addr: SocketAddr) -> CausalClient<tonic::transport::Channel> {
    crate::causal_client::connect(addr, Duration::from_secs(5))
}

/// Every node's dump, by node id (an error for a node that did not answer).
pub async fn dump_all(
    nodes: &[(u64, SocketAddr)],
    include_data: bool,
) -> BTreeMap<u64, Result<DumpResponse, String>> {
    let mut out = BTreeMap::new();
    for &(id, addr) in nodes {
        let reply = client(addr)
            .dump(DumpRequest { include_data })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
        out.insert(id, reply);
    }
    out
}

/// Every node answered with the same digest and nothing held back.
pub fn agree(dumps: &BTreeMap<u64, Result<DumpResponse, String>>) -> bool {
    let mut digests = dumps
        .values()
        .map(|d| d.as_ref().map(|d| (d.digest, d.pending)));
    let Some(Ok((first, 0))) = digests.next() else {
        return false;
    };
    digests.all(|d| matches!(d, Ok((digest, 0)) if digest == first))
}

/// Waits for the replicas of `nodes` (every running node) to agree, then reports.
pub async fn converge(nodes: &[(u64, SocketAddr)], healed: Instant) -> CausalReport {
    let mut converged_after_ms = None;
    let deadline = healed + CONVERGE_WITHIN;
    loop {
        let dumps = dump_all(nodes, false).await;
        if agree(&dumps) {
            converged_after_ms = Some(healed.elapsed().as_millis() as u64);
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dumps = dump_all(nodes, true).await;
    let mut report = CausalReport {
        resolve: String::new(),
        converged: converged_after_ms.is_some() && agree(&dumps),
        converged_after_ms,
        digests: BTreeMap::new(),
        keys: 0,
        keys_with_siblings: 0,
        differences: Vec::new(),
        lww_overwritten: 0,
        lww_overwritten_shown: Vec::new(),
        exchange_bytes_sent: 0,
        linearizable: None,
    };
    // key -> node -> sorted sibling values as text
    let mut by_key: BTreeMap<Vec<u8>, BTreeMap<u64, Vec<String>>> = BTreeMap::new();
    for (&id, dump) in &dumps {
        match dump {
            Ok(d) => {
                report.resolve = d.resolve.clone();
                report.digests.insert(id, format!("{:016x}", d.digest));
                report.keys = report.keys.max(d.keys);
                report.exchange_bytes_sent += d.exchange_bytes_sent;
                if d.pending > 0 {
                    report.differences.push(format!(
                        "n{id} still holds {} writes back for missing dependencies",
                        d.pending
                    ));
                }
                for key in &d.data {
                    let mut values: Vec<String> =
                        key.siblings.iter().map(|s| value_text(&s.value)).collect();
                    values.sort();
                    by_key
                        .entry(key.key.clone())
                        .or_default()
                        .insert(id, values);
                }
            }
            Err(e) => report
                .differences
                .push(format!("n{id} did not answer a dump: {e}")),
        }
    }
    for (key, holders) in &by_key {
        let shown = String::from_utf8_lossy(key);
        let distinct: std::collections::BTreeSet<&Vec<String>> = holders.values().collect();
        if distinct.len() > 1 || holders.len() < dumps.len() {
            if report.differences.len() < DIFFERENCES_SHOWN {
                let each: Vec<String> = dumps
                    .keys()
                    .map(|id| match holders.get(id) {
                        Some(v) => format!("n{id} {v:?}"),
                        None => format!("n{id} (absent)"),
                    })
                    .collect();
                report
                    .differences
                    .push(format!("key {shown}: {}", each.join(", ")));
            }
        } else if holders.values().next().is_some_and(|v| v.len() > 1) {
            report.keys_with_siblings += 1;
        }
    }
    if !report.converged && report.differences.is_empty() {
        report.differences.push(
            "the replicas' digests differ (the same values, but different causal clocks)".into(),
        );
    }
    let mut lost = BTreeMap::new();
    for &(id, addr) in nodes {
        if let Ok(reply) = client(addr)
            .list_overwritten(ListOverwrittenRequest {})
            .await
        {
            for o in reply.into_inner().overwritten {
                let dot = o.lost.map(|d| (d.node, d.counter)).unwrap_or_default();
                lost.entry(dot).or_insert_with(|| {
                    let text = value_text;
                    format!(
                        "key {}: {} (n{}'s write {}) lost to {} (n{}), seen at n{id}",
                        String::from_utf8_lossy(&o.key),
                        text(&o.lost_value),
                        dot.0,
                        dot.1,
                        text(&o.winner_value),
                        o.winner.map(|d| d.node).unwrap_or_default(),
                    )
                });
            }
        }
    }
    report.lww_overwritten = lost.len() as u64;
    report.lww_overwritten_shown = lost.into_values().take(LOSSES_SHOWN).collect();
    report
}

impl CausalReport {
    pub fn describe(&self) -> String {
        if self.converged {
            format!(
                "causal keyspace ({}): every replica converged {} ms after healing, {} keys, {} with siblings{}",
                self.resolve,
                self.converged_after_ms.unwrap_or_default(),
                self.keys,
                self.keys_with_siblings,
                if self.resolve == "lww" {
                    format!("; LWW overwrote {} concurrent writes", self.lww_overwritten)
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "THE CAUSAL KEYSPACE'S REPLICAS DID NOT CONVERGE within {:?} of healing: {}",
                CONVERGE_WITHIN,
                self.differences.join("; ")
            )
        }
    }
}
