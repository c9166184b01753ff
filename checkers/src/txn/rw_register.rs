//! Inference for rw-register histories: writes set a register to a unique value, reads return
//! one value. A read names the write it saw (wr edges are exact), but the order of versions
//! is mostly unknown: unlike a list, a register forgets its past.
//!
//! So the version order is inferred only as far as it is sound, from sources the user vouches
//! for (Elle's options):
//! - always: the initial `nil` comes before every value;
//! - `wfr_keys`: within a transaction, a write follows the read of the same key;
//! - `sequential_keys`: each key is sequentially consistent, so versions follow process order;
//! - `linearizable_keys`: each key is linearizable, so versions follow real-time order.
//!
//! Each source's version edges are added only if they leave every key's version graph
//! acyclic; a source that would close a cycle is reported as `cyclic-versions` and dropped.
//! From the version graph: ww edges between writers of successive versions, rw edges from
//! readers of a version to writers of the next. Only committed transactions' external reads
//! and writes (the first read of a key before writing it, the last write) take part.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::graph::{self, EdgeList, Graph, RW, WR, WW};
use super::history::{MopF, NIL, TxnHistory, TxnType, ValueId};
use super::{Case, Step, TxnOptions};
use crate::error::Error;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

fn map<K, V>() -> Map<K, V> {
    HashMap::with_hasher(ahash::RandomState::with_seeds(5, 6, 7, 8))
}

fn kv(key: u32, value: ValueId) -> u64 {
    ((key as u64) << 32) | value as u64
}

/// Per transaction: first reads of keys not yet written, and last writes.
struct Ext {
    reads: Vec<Vec<(u32, ValueId)>>,
    writes: Vec<Vec<(u32, ValueId)>>,
}

fn ext(h: &TxnHistory) -> Ext {
    let mut reads = Vec::with_capacity(h.txns.len());
    let mut writes = Vec::with_capacity(h.txns.len());
    for t in 0..h.txns.len() {
        let mut r: Vec<(u32, ValueId)> = Vec::new();
        let mut w: Vec<(u32, ValueId)> = Vec::new();
        for m in h.mops_of(t) {
            match m.f {
                MopF::Read => {
                    if !w.iter().any(|&(k, _)| k == m.key) && !r.iter().any(|&(k, _)| k == m.key) {
                        r.push((m.key, m.value));
                    }
                }
                MopF::Write => match w.iter_mut().find(|(k, _)| *k == m.key) {
                    Some(slot) => slot.1 = m.value,
                    None => w.push((m.key, m.value)),
                },
                MopF::Append => {}
            }
        }
        reads.push(r);
        writes.push(w);
    }
    Ext { reads, writes }
}

fn get(list: &[(u32, ValueId)], key: u32) -> Option<ValueId> {
    list.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v)
}

/// What the inference keeps for explaining edges.
pub struct RwRegister {
    ext: Ext,
    /// Accepted version edges, per key.
    versions: Map<u32, HashSet<(ValueId, ValueId), ahash::RandomState>>,
}

type VersionGraphs = Map<u32, HashSet<(ValueId, ValueId), ahash::RandomState>>;

fn add(graphs: &mut VersionGraphs, key: u32, from: ValueId, to: ValueId) {
    graphs
        .entry(key)
        .or_insert_with(|| HashSet::with_hasher(ahash::RandomState::with_seeds(9, 9, 9, 9)))
        .insert((from, to));
}

/// Cycles in each key's version graph: `(key, values in the cycle)`.
fn version_cycles(graphs: &VersionGraphs) -> Vec<(u32, Vec<ValueId>)> {
    let mut out = Vec::new();
    let mut keys: Vec<&u32> = graphs.keys().collect();
    keys.sort();
    for &key in keys {
        let edges = &graphs[&key];
        let mut ids: BTreeMap<ValueId, u32> = BTreeMap::new();
        for &(a, b) in edges {
            let n = ids.len() as u32;
            ids.entry(a).or_insert(n);
            let n = ids.len() as u32;
            ids.entry(b).or_insert(n);
        }
        let values: Vec<ValueId> = {
            let mut v = vec![0; ids.len()];
            for (&value, &i) in &ids {
                v[i as usize] = value;
            }
            v
        };
        let mut self_loops = Vec::new();
        let list: Vec<(u32, u32, u8)> = edges
            .iter()
            .filter_map(|&(a, b)| {
                if a == b {
                    self_loops.push(a);
                    None
                } else {
                    Some((ids[&a], ids[&b], WW))
                }
            })
            .collect();
        let g = Graph::build(ids.len(), list, &[WW]);
        for scc in g.sccs(WW, None) {
            out.push((key, scc.iter().map(|&i| values[i as usize]).collect()));
        }
        for v in self_loops {
            out.push((key, vec![v]));
        }
    }
    out
}

/// Version edges implied by an order over transactions (process or real-time): a key's value
/// in one transaction precedes its value in the next transactions to touch the key.
fn from_txn_order(h: &TxnHistory, ext: &Ext, order: &Graph, graphs: &mut VersionGraphs) {
    let n = h.txns.len();
    let ext_keys = |t: usize| -> Vec<u32> {
        let mut keys: Vec<u32> = match h.txns[t].kind {
            TxnType::Ok => ext.reads[t]
                .iter()
                .chain(&ext.writes[t])
                .map(|&(k, _)| k)
                .collect(),
            TxnType::Info => ext.writes[t].iter().map(|&(k, _)| k).collect(),
            _ => Vec::new(),
        };
        keys.sort_unstable();
        keys.dedup();
        keys
    };
    // The version a transaction leaves a key at (`None`: nothing known), and the first it saw.
    let last_value = |t: usize, k: u32| -> Option<ValueId> {
        match h.txns[t].kind {
            TxnType::Ok => Some(
                get(&ext.writes[t], k)
                    .filter(|&v| v != NIL)
                    .or(get(&ext.reads[t], k))
                    .unwrap_or(NIL),
            ),
            TxnType::Info => get(&ext.writes[t], k),
            _ => None,
        }
    };
    let first_value = |t: usize, k: u32| -> Option<ValueId> {
        match h.txns[t].kind {
            TxnType::Ok => Some(
                get(&ext.reads[t], k)
                    .filter(|&v| v != NIL)
                    .or(get(&ext.writes[t], k))
                    .unwrap_or(NIL),
            ),
            TxnType::Info => get(&ext.writes[t], k),
            _ => None,
        }
    };
    let vertex = |t: usize| order.offsets[t] != order.offsets[t + 1];
    let mut has_in = vec![false; n];
    for &t in &order.targets {
        has_in[t as usize] = true;
    }
    // downstream[t]: key → the next transactions after t to touch it. Process and real-time
    // orders point forward in the history, so one pass from the end fills it.
    let mut downstream: Vec<BTreeMap<u32, BTreeSet<u32>>> = vec![BTreeMap::new(); n];
    let mut by_index: Vec<usize> = (0..n).collect();
    by_index.sort_by_key(|&t| std::cmp::Reverse(h.txns[t].index));
    for &t in &by_index {
        if !vertex(t) {
            continue;
        }
        let mut mine: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        for (o, _) in order.out(t as u32) {
            let keys = ext_keys(o as usize);
            for (&k, set) in &downstream[o as usize] {
                if keys.binary_search(&k).is_err() {
                    mine.entry(k).or_default().extend(set.iter().copied());
                }
            }
            for k in keys {
                mine.entry(k).or_default().insert(o);
            }
        }
        downstream[t] = mine;
    }
    for t in 0..n {
        if !vertex(t) && !has_in[t] {
            continue;
        }
        for (&k, bs) in &downstream[t] {
            let Some(v1) = last_value(t, k) else {
                continue;
            };
            for &b in bs {
                if let Some(v2) = first_value(b as usize, k)
                    && v2 != v1
                {
                    add(graphs, k, v1, v2);
                }
            }
        }
    }
}

/// Runs every pass over an rw-register history. Returns the explainer and whether the graph
/// has any vertex (Elle counts transactions linked to themselves).
pub fn infer(
    h: &TxnHistory,
    options: &TxnOptions,
    anomalies: &mut BTreeMap<String, Vec<Case>>,
    edges: &mut EdgeList,
) -> Result<(RwRegister, bool), Error> {
    let n = h.txns.len();
    let name = |t: usize| h.txns[t].index as usize;
    let ext = ext(h);

    // Internal consistency, aborted and intermediate reads.
    let mut failed: Map<u64, usize> = map();
    let mut intermediate: Map<u64, usize> = map();
    for t in 0..n {
        let mut last: Map<u32, ValueId> = map();
        for m in h.mops_of(t) {
            if m.f != MopF::Write {
                continue;
            }
            if h.txns[t].kind == TxnType::Fail {
                failed.insert(kv(m.key, m.value), t);
            }
            if let Some(prev) = last.insert(m.key, m.value) {
                intermediate.insert(kv(m.key, prev), t);
            }
        }
    }
    for t in 0..n {
        if h.txns[t].kind != TxnType::Ok {
            continue;
        }
        let mut state: Map<u32, ValueId> = map();
        let mut internal_done = false;
        for m in h.mops_of(t) {
            match m.f {
                MopF::Write => {
                    state.insert(m.key, m.value);
                }
                MopF::Read => {
                    if let Some(&w) = failed.get(&kv(m.key, m.value)) {
                        anomalies.entry("G1a".into()).or_default().push(Case::pair(
                            name(t),
                            name(w),
                            format!(
                                "T{} read {}, written by T{}, which failed",
                                name(t),
                                h.mop_text(m),
                                name(w)
                            ),
                        ));
                    }
                    if let Some(&w) = intermediate.get(&kv(m.key, m.value))
                        && w != t
                    {
                        anomalies.entry("G1b".into()).or_default().push(Case::pair(
                                name(t),
                                name(w),
                                format!(
                                    "T{} read {}, which T{} wrote and then overwrote in the same transaction",
                                    name(t),
                                    h.mop_text(m),
                                    name(w)
                                ),
                            ));
                    }
                    match state.get(&m.key) {
                        Some(&s) if s != m.value && !internal_done => {
                            internal_done = true;
                            anomalies
                                .entry("internal".into())
                                .or_default()
                                .push(Case::op(
                                    name(t),
                                    format!(
                                        "T{} read {} but its own earlier operations make {} {}",
                                        name(t),
                                        h.mop_text(m),
                                        h.key(m.key),
                                        h.value(s)
                                    ),
                                ));
                        }
                        _ => {
                            state.insert(m.key, m.value);
                        }
                    }
                }
                MopF::Append => {}
            }
        }
    }
    super::list_append::lost_updates(h, anomalies, false);

    // Version graphs, source by source.
    let mut graphs: VersionGraphs = map();
    let mut cyclic: Vec<Case> = Vec::new();
    let mut sources: Vec<&str> = Vec::new();
    let mut try_source =
        |name: &'static str,
         candidate: VersionGraphs,
         graphs: &mut VersionGraphs,
         cyclic: &mut Vec<Case>| {
            let mut merged = graphs.clone();
            for (k, set) in candidate {
                for (a, b) in set {
                    add(&mut merged, k, a, b);
                }
            }
            let cycles = version_cycles(&merged);
            if cycles.is_empty() {
                *graphs = merged;
                sources.push(name);
            } else {
                for (key, values) in cycles {
                    let vs: Vec<String> = values.iter().map(|&v| h.value(v).to_string()).collect();
                    cyclic.push(Case::note(format!(
                    "key {}: the versions {} form a cycle once {} order is assumed (with {}); that \
                     order cannot hold",
                    h.key(key),
                    vs.join(", "),
                    name,
                    if sources.is_empty() { "nothing else".to_string() } else { sources.join(", ") }
                )));
                }
            }
        };
    let mut initial: VersionGraphs = map();
    for t in 0..n {
        let kind = h.txns[t].kind;
        if !matches!(kind, TxnType::Ok | TxnType::Info) {
            continue;
        }
        for &(k, v) in &ext.writes[t] {
            if v != NIL {
                add(&mut initial, k, NIL, v);
            }
        }
        if kind == TxnType::Ok {
            for &(k, v) in &ext.reads[t] {
                if v != NIL {
                    add(&mut initial, k, NIL, v);
                }
            }
        }
    }
    try_source("initial-state", initial, &mut graphs, &mut cyclic);
    if let Some(order) = &options.transaction_order {
        // Each key's written values, sorted by the order of the transactions that wrote them.
        let mut by_key: BTreeMap<u32, Vec<(Option<i64>, usize, ValueId)>> = BTreeMap::new();
        for t in 0..n {
            if !matches!(h.txns[t].kind, TxnType::Ok | TxnType::Info) {
                continue;
            }
            let version = order.get(&(h.txns[t].index as u64)).copied();
            for &(k, v) in &ext.writes[t] {
                by_key.entry(k).or_default().push((version, t, v));
            }
        }
        let mut candidate: VersionGraphs = map();
        for (k, mut vs) in by_key {
            vs.sort_by_key(|&(version, t, _)| (version, t));
            for pair in vs.windows(2) {
                add(&mut candidate, k, pair[0].2, pair[1].2);
            }
        }
        try_source("transaction-order", candidate, &mut graphs, &mut cyclic);
    }
    if options.wfr_keys {
        let mut wfr: VersionGraphs = map();
        for t in 0..n {
            if h.txns[t].kind != TxnType::Ok {
                continue;
            }
            for &(k, v) in &ext.reads[t] {
                if v == NIL {
                    continue;
                }
                if let Some(w) = get(&ext.writes[t], k) {
                    add(&mut wfr, k, v, w);
                }
            }
        }
        try_source("wfr-keys", wfr, &mut graphs, &mut cyclic);
    }
    if options.sequential_keys {
        let mut list = EdgeList::default();
        graph::process_edges(h, &mut list);
        let order = Graph::build(n, list.edges, &[graph::PROCESS]);
        let mut candidate: VersionGraphs = map();
        from_txn_order(h, &ext, &order, &mut candidate);
        try_source("sequential-keys", candidate, &mut graphs, &mut cyclic);
    }
    if options.linearizable_keys {
        let mut list = EdgeList::default();
        graph::realtime_edges(h, &mut list);
        let order = Graph::build(n, list.edges, &[graph::REALTIME]);
        let mut candidate: VersionGraphs = map();
        from_txn_order(h, &ext, &order, &mut candidate);
        try_source("linearizable-keys", candidate, &mut graphs, &mut cyclic);
    }
    if !cyclic.is_empty() {
        anomalies.insert("cyclic-versions".into(), cyclic);
    }

    // Indexes of committed transactions' external reads and writes.
    let mut readers: Map<u64, Vec<u32>> = map();
    let mut writers: Map<u64, Vec<u32>> = map();
    for t in 0..n {
        if h.txns[t].kind != TxnType::Ok {
            continue;
        }
        for &(k, v) in &ext.reads[t] {
            readers.entry(kv(k, v)).or_default().push(t as u32);
        }
        for &(k, v) in &ext.writes[t] {
            writers.entry(kv(k, v)).or_default().push(t as u32);
        }
    }
    // wr: a value's one writer to its readers.
    let mut has_vertices = false;
    let mut keys: Vec<(&u64, &Vec<u32>)> = readers.iter().collect();
    keys.sort_by_key(|(k, _)| **k);
    for (kv_, rs) in keys {
        let Some(ws) = writers.get(kv_) else {
            continue;
        };
        if ws.len() > 1 {
            let key = (*kv_ >> 32) as u32;
            let value = (*kv_ & 0xffff_ffff) as u32;
            return Err(Error::History {
                line: h.txns[ws[1] as usize].line,
                message: format!(
                    "key {} had value {} written by more than one transaction (T{} and T{}); \
                     rw-register needs every written value to be unique per key",
                    h.key(key),
                    h.value(value),
                    h.txns[ws[0] as usize].index,
                    h.txns[ws[1] as usize].index
                ),
            });
        }
        for &r in rs {
            has_vertices = true;
            edges.link(ws[0], r, WR);
        }
    }
    // ww and rw from each version edge.
    let mut vkeys: Vec<&u32> = graphs.keys().collect();
    vkeys.sort();
    for &k in vkeys {
        let mut vedges: Vec<&(ValueId, ValueId)> = graphs[&k].iter().collect();
        vedges.sort();
        for &(v1, v2) in vedges {
            let empty = Vec::new();
            let w1 = writers.get(&kv(k, v1)).unwrap_or(&empty);
            let r1 = readers.get(&kv(k, v1)).unwrap_or(&empty);
            let w2 = writers.get(&kv(k, v2)).unwrap_or(&empty);
            for &b in w2 {
                for &a in w1 {
                    has_vertices = true;
                    edges.link(a, b, WW);
                }
                for &a in r1 {
                    has_vertices = true;
                    edges.link(a, b, RW);
                }
            }
        }
    }
    Ok((
        RwRegister {
            ext,
            versions: graphs,
        },
        has_vertices,
    ))
}

impl RwRegister {
    /// Why b depends on a by `rel`.
    pub fn explain(&self, h: &TxnHistory, a: u32, b: u32, rel: u8) -> Option<Step> {
        let (a, b) = (a as usize, b as usize);
        let index_of = |t: usize, f: MopF, k: u32, v: ValueId| {
            h.mops_of(t)
                .iter()
                .position(|m| m.f == f && m.key == k && m.value == v)
        };
        match rel {
            WR => {
                for &(k, v) in &self.ext.writes[a] {
                    if get(&self.ext.reads[b], k) == Some(v) {
                        return Some(Step::data(
                            WR,
                            h.key(k).clone(),
                            h.value(v),
                            None,
                            index_of(a, MopF::Write, k, v),
                            index_of(b, MopF::Read, k, v),
                        ));
                    }
                }
                None
            }
            WW | RW => {
                let (from, f) = if rel == WW {
                    (&self.ext.writes[a], MopF::Write)
                } else {
                    (&self.ext.reads[a], MopF::Read)
                };
                for &(k, v) in from {
                    let Some(v2) = get(&self.ext.writes[b], k) else {
                        continue;
                    };
                    if self.versions.get(&k).is_some_and(|g| g.contains(&(v, v2))) {
                        return Some(Step::data(
                            rel,
                            h.key(k).clone(),
                            h.value(v),
                            Some(h.value(v2)),
                            index_of(a, f, k, v),
                            index_of(b, MopF::Write, k, v2),
                        ));
                    }
                }
                None
            }
            _ => None,
        }
    }
}
