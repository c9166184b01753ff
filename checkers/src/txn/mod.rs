//! The transactional checker: Elle's method for list-append and rw-register histories.
//!
//! A history of transactions is valid for a consistency model when its dependency graph has
//! none of the cycles (and none of the direct anomalies) the model forbids. The checker:
//! 1. infers what it can of each key's version order ([`list_append`]: from the longest read;
//!    [`rw_register`]: from the initial nil state, and only as far as options make sound);
//! 2. builds the dependency graph: ww, wr and rw edges from the version orders, plus process
//!    or real-time order when the models asked about need them ([`graph`]);
//! 3. finds strongly connected components and, in each, the worst cycle of each shape
//!    ([`search`]), classifying them as Adya does (G0, G1c, G-single, G-nonadjacent, G2-item,
//!    and their `-process` and `-realtime` forms);
//! 4. relates what it found to models ([`consistency`]): which anomalies the requested models
//!    forbid, which models the anomalies rule out (the weakest under `not`, the rest under
//!    `also_not`).
//!
//! Verdicts, names and options follow Elle's (`jepsen-io/elle`), and its tests' verdicts are
//! checked against ours (`checkers/tests/elle.rs`); the differences are listed in
//! `checkers/tests/data/elle/DISAGREEMENTS.md`. [`explain`] turns an anomaly into sentences
//! and an SVG picture.

pub mod consistency;
pub mod explain;
pub mod generate;
pub mod graph;
pub mod history;
pub mod list_append;
pub mod rw_register;
pub mod search;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;
use crate::history::{Event, Value};
use graph::{EdgeList, Graph, PROCESS, REALTIME, RW, WR, WW};
use history::{MopSet, TxnHistory};

/// Which kind of transactional workload a history comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Appends of unique elements to lists, and reads of whole lists.
    ListAppend,
    /// Writes of unique values to registers, and reads.
    RwRegister,
}

impl Workload {
    /// Parses `list-append` or `rw-register`.
    pub fn from_name(name: &str) -> Option<Workload> {
        match name {
            "list-append" => Some(Workload::ListAppend),
            "rw-register" => Some(Workload::RwRegister),
            _ => None,
        }
    }

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ListAppend => "list-append",
            Workload::RwRegister => "rw-register",
        }
    }
}

/// Options, named as Elle names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOptions {
    /// Models the history should satisfy. `None` is Elle's default, strict-serializable;
    /// `Some(vec![])` asks for none (then only `anomalies` count).
    pub consistency_models: Option<Vec<String>>,
    /// Specific anomalies to look for, with everything that implies them.
    pub anomalies: Vec<String>,
    /// Extra graphs: `process` and/or `realtime` order.
    pub additional_graphs: Vec<String>,
    /// How long to search one component for cycles before reporting a timeout.
    pub cycle_search_timeout: Duration,
    /// rw-register: assume each key is sequentially consistent (versions follow process order).
    pub sequential_keys: bool,
    /// rw-register: assume each key is linearizable (versions follow real-time order).
    pub linearizable_keys: bool,
    /// rw-register: assume writes follow reads within a transaction.
    pub wfr_keys: bool,
    /// rw-register: a known total order of transactions (from the database itself), by
    /// transaction index: each key's versions follow it.
    pub transaction_order: Option<BTreeMap<u64, i64>>,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            consistency_models: None,
            anomalies: Vec::new(),
            additional_graphs: Vec::new(),
            cycle_search_timeout: Duration::from_millis(1000),
            sequential_keys: false,
            linearizable_keys: false,
            wfr_keys: false,
            transaction_order: None,
        }
    }
}

impl TxnOptions {
    /// Refuses model and anomaly names this checker does not know, naming them and the known
    /// ones, before any work.
    pub fn validate(&self) -> Result<(), Error> {
        for m in self.consistency_models.iter().flatten() {
            if !consistency::is_model(m) {
                let known: Vec<&str> = consistency::all_models().into_iter().collect();
                return Err(Error::Options(format!(
                    "unknown consistency model {m:?}; known models: {}",
                    known.join(", ")
                )));
            }
        }
        let known = consistency::all_anomalies();
        for a in &self.anomalies {
            if !known.contains(a.as_str()) && !UNKNOWN_ANOMALIES.contains(&a.as_str()) {
                let names: Vec<&str> = known.iter().copied().collect();
                return Err(Error::Options(format!(
                    "unknown anomaly {a:?}; known anomalies: {}",
                    names.join(", ")
                )));
            }
        }
        for g in &self.additional_graphs {
            if g != "process" && g != "realtime" {
                return Err(Error::Options(format!(
                    "unknown additional graph {g:?}; expected process or realtime"
                )));
            }
        }
        Ok(())
    }

    /// Anomalies that make the history invalid under these options.
    pub fn prohibited(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> =
            consistency::implying(self.anomalies.iter().map(String::as_str))
                .into_iter()
                .map(String::from)
                .collect();
        let default = ["strict-serializable".to_string()];
        let models: &[String] = match &self.consistency_models {
            None => &default,
            Some(m) => m,
        };
        out.extend(
            consistency::prohibited_by(models.iter().map(String::as_str))
                .into_iter()
                .map(String::from),
        );
        out
    }

    /// Anomalies worth reporting: the prohibited ones and those that leave the answer unknown.
    pub fn reportable(&self) -> BTreeSet<String> {
        let mut out = self.prohibited();
        out.extend(UNKNOWN_ANOMALIES.iter().map(|s| s.to_string()));
        out
    }
}

/// Anomalies that make a verdict unknown rather than invalid.
pub const UNKNOWN_ANOMALIES: &[&str] = &[
    "empty-transaction-graph",
    "cycle-search-timeout",
    "duplicate-appends",
];

/// Elle's three-valued verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    /// No reportable anomaly.
    Valid,
    /// A prohibited anomaly was found.
    Invalid,
    /// Only anomalies that leave the answer open (an empty graph, a search timeout).
    Unknown,
}

impl Validity {
    /// Exit code by the project's contract: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }
}

/// One step of a cycle: why the next transaction depends on this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `ww`, `wr`, `rw`, `process` or `realtime`.
    #[serde(rename = "type")]
    pub rel: &'static str,
    /// The key the dependency is on (data edges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// The version the first transaction wrote or read (`nil` for the initial state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The version the second transaction wrote.
    #[serde(rename = "value'", skip_serializing_if = "Option::is_none")]
    pub value2: Option<Value>,
    /// Which micro-op of the first transaction.
    #[serde(rename = "a-mop-index", skip_serializing_if = "Option::is_none")]
    pub a_mop: Option<usize>,
    /// Which micro-op of the second.
    #[serde(rename = "b-mop-index", skip_serializing_if = "Option::is_none")]
    pub b_mop: Option<usize>,
    /// Process order: the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<u64>,
    /// Real-time order: the first's completion and the second's invocation positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between: Option<(u32, u32)>,
}

impl Step {
    fn data(
        rel: u8,
        key: Value,
        value: Value,
        value2: Option<Value>,
        a_mop: Option<usize>,
        b_mop: Option<usize>,
    ) -> Step {
        Step {
            rel: graph::rel_name(rel),
            key: Some(key),
            value: Some(value),
            value2,
            a_mop,
            b_mop,
            process: None,
            between: None,
        }
    }
}

/// A cycle as reported: the transactions (by index) and the step between each and the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleCase {
    /// Transaction indices in cycle order (the first again at the end, as Elle writes it).
    pub cycle: Vec<usize>,
    /// One step per edge.
    pub steps: Vec<Step>,
}

/// One instance of an anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Case {
    /// The transactions involved, by index.
    pub txns: Vec<usize>,
    /// The anomaly in one sentence.
    pub message: String,
    /// For cycles, the cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<CycleCase>,
}

impl Case {
    fn op(txn: usize, message: String) -> Case {
        Case {
            txns: vec![txn],
            message,
            cycle: None,
        }
    }

    fn pair(txn: usize, other: usize, message: String) -> Case {
        Case {
            txns: vec![txn, other],
            message,
            cycle: None,
        }
    }

    fn note(message: String) -> Case {
        Case {
            txns: Vec::new(),
            message,
            cycle: None,
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TxnVerdict {
    /// Valid, invalid or unknown.
    pub valid: Validity,
    /// Reportable anomalies found, sorted by name (empty when valid).
    #[serde(rename = "anomaly-types")]
    pub anomaly_types: Vec<String>,
    /// Their instances.
    pub anomalies: BTreeMap<String, Vec<Case>>,
    /// The weakest models every anomaly found (reportable or not) rules out.
    pub not: BTreeSet<String>,
    /// Stronger models ruled out as well.
    #[serde(rename = "also-not")]
    pub also_not: BTreeSet<String>,
    /// Size figures: transactions, edges, components.
    pub stats: Stats,
}

/// How big the problem was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Transactions read.
    pub txns: usize,
    /// Edges in the dependency graph.
    pub edges: usize,
    /// Components with a cycle.
    pub sccs: usize,
}

/// Checks events read from a file (either format) as a `workload` history.
pub fn check_events(
    events: &[Event],
    workload: Workload,
    options: &TxnOptions,
) -> Result<TxnVerdict, Error> {
    options.validate()?;
    let allowed = match workload {
        Workload::ListAppend => MopSet::ListAppend,
        Workload::RwRegister => MopSet::RwRegister,
    };
    let history = TxnHistory::from_events(events, allowed)?;
    check(&history, workload, options)
}

/// What an inference leaves for explaining edges.
enum Explainer {
    ListAppend(list_append::ListAppend),
    RwRegister(rw_register::RwRegister),
}

/// Checks a transaction history.
pub fn check(
    history: &TxnHistory,
    workload: Workload,
    options: &TxnOptions,
) -> Result<TxnVerdict, Error> {
    options.validate()?;
    let mut anomalies: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut edges = EdgeList::default();
    let reportable = options.reportable();
    // Elle adds real-time order when any real-time anomaly is reportable (it subsumes process
    // order for that purpose), else process order when a process anomaly is.
    let mut extra: BTreeSet<&str> = options
        .additional_graphs
        .iter()
        .map(String::as_str)
        .collect();
    if reportable.iter().any(|a| a.ends_with("-realtime")) {
        extra.insert("realtime");
    } else if reportable.iter().any(|a| a.ends_with("-process")) {
        extra.insert("process");
    }
    let (explainer, priority, mut has_vertices) = match workload {
        Workload::ListAppend => {
            let la = list_append::infer(history, &mut anomalies, &mut edges);
            (Explainer::ListAppend(la), vec![WW, WR, RW], false)
        }
        Workload::RwRegister => {
            let (rr, vertices) = rw_register::infer(history, options, &mut anomalies, &mut edges)?;
            (Explainer::RwRegister(rr), vec![WR, WW, RW], vertices)
        }
    };
    let mut priority = priority;
    if extra.contains("realtime") {
        graph::realtime_edges(history, &mut edges);
        priority.push(REALTIME);
    }
    if extra.contains("process") {
        graph::process_edges(history, &mut edges);
        priority.push(PROCESS);
    }
    has_vertices |= !edges.edges.is_empty();
    if !has_vertices {
        anomalies.insert(
            "empty-transaction-graph".into(),
            vec![Case::note(
                "no transaction depends on another: nothing to check".into(),
            )],
        );
    }
    let graph = Graph::build(
        history.txns.len(),
        std::mem::take(&mut edges.edges),
        &priority,
    );
    let sccs = graph.sccs(0xff, None);
    let timeout = options.cycle_search_timeout;
    for scc in &sccs {
        let found = search::search_component(&graph, scc, Instant::now() + timeout);
        for (kind, cycle) in found.cycles {
            let case = cycle_case(history, &graph, &explainer, &cycle);
            anomalies.entry(kind).or_default().push(case);
        }
        for e in found.exists {
            let txns: Vec<usize> = e
                .scc
                .iter()
                .map(|&t| history.txns[t as usize].index as usize)
                .collect();
            anomalies.entry(e.kind.clone()).or_default().push(Case {
                message: format!(
                    "{} transactions form a cycle of {} edges, so {} cannot hold (no shorter cycle was named)",
                    txns.len(),
                    e.subgraph,
                    e.not
                ),
                txns,
                cycle: None,
            });
        }
        if let Some(t) = found.timeout {
            anomalies.entry("cycle-search-timeout".into()).or_default().push(Case::note(format!(
                "the search of a component of {} transactions for {} ran out of time after finding no {}; \
                 raise the cycle search timeout",
                t.scc_size,
                t.searching,
                if t.does_not_contain.is_empty() { "other shape".to_string() } else { t.does_not_contain.join(", ") }
            )));
        }
    }
    let stats = Stats {
        txns: history.txns.len(),
        edges: graph.edge_count(),
        sccs: sccs.len(),
    };
    Ok(result(options, anomalies, stats))
}

fn cycle_case(
    history: &TxnHistory,
    graph: &Graph,
    explainer: &Explainer,
    cycle: &search::Cycle,
) -> Case {
    let n = cycle.txns.len();
    let mut steps = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (cycle.txns[i], cycle.txns[(i + 1) % n]);
        let label = cycle.labels[i];
        debug_assert_eq!(graph.label(a, b), Some(label));
        let step = match label {
            PROCESS => Some(Step {
                rel: "process",
                key: None,
                value: None,
                value2: None,
                a_mop: None,
                b_mop: None,
                process: Some(history.txns[a as usize].process),
                between: None,
            }),
            REALTIME => Some(Step {
                rel: "realtime",
                key: None,
                value: None,
                value2: None,
                a_mop: None,
                b_mop: None,
                process: None,
                between: Some((
                    history.txns[a as usize].index,
                    history.txns[b as usize]
                        .invoke_index
                        .unwrap_or(history.txns[b as usize].index),
                )),
            }),
            rel => match explainer {
                Explainer::ListAppend(la) => la.explain(history, a, b, rel),
                Explainer::RwRegister(rr) => rr.explain(history, a, b, rel),
            },
        };
        steps.push(step.unwrap_or(Step {
            rel: graph::rel_name(label),
            key: None,
            value: None,
            value2: None,
            a_mop: None,
            b_mop: None,
            process: None,
            between: None,
        }));
    }
    let mut indices: Vec<usize> = cycle
        .txns
        .iter()
        .map(|&t| history.txns[t as usize].index as usize)
        .collect();
    let txns = indices.clone();
    indices.push(indices[0]);
    let case = CycleCase {
        cycle: indices,
        steps,
    };
    Case {
        txns,
        message: explain::cycle_sentence(history, &case),
        cycle: Some(case),
    }
}

/// Elle's result map: what is prohibited and reportable decides the verdict; every anomaly
/// found decides the boundary.
fn result(
    options: &TxnOptions,
    mut anomalies: BTreeMap<String, Vec<Case>>,
    stats: Stats,
) -> TxnVerdict {
    let prohibited = options.prohibited();
    let reportable = options.reportable();
    let bad = anomalies.keys().any(|k| prohibited.contains(k));
    // A cycle-exists fallback says nothing new once a specific anomaly rules its model out.
    let specific: Vec<&str> = anomalies
        .keys()
        .filter(|k| !k.ends_with("-cycle-exists"))
        .map(String::as_str)
        .collect();
    let impossible = consistency::impossible_models(specific);
    let redundant: Vec<String> = anomalies
        .keys()
        .filter(|k| {
            k.strip_suffix("-cycle-exists")
                .is_some_and(|model| impossible.contains(consistency::canonical(model)))
        })
        .cloned()
        .collect();
    let boundary = consistency::boundary(anomalies.keys().map(String::as_str));
    let reported: Vec<String> = anomalies
        .keys()
        .filter(|k| reportable.contains(*k) && !redundant.contains(k))
        .cloned()
        .collect();
    if reported.is_empty() {
        return TxnVerdict {
            valid: Validity::Valid,
            anomaly_types: Vec::new(),
            anomalies: BTreeMap::new(),
            not: BTreeSet::new(),
            also_not: BTreeSet::new(),
            stats,
        };
    }
    anomalies.retain(|k, _| reported.contains(k));
    TxnVerdict {
        valid: if bad {
            Validity::Invalid
        } else {
            Validity::Unknown
        },
        anomaly_types: reported,
        anomalies,
        not: boundary.not,
        also_not: boundary.also_not,
        stats,
    }
}
