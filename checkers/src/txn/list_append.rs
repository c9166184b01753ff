//! Inference for list-append histories: every write appends a unique element to a list, and
//! every read returns a whole list, so each read spells out the order of the appends it saw.
//!
//! The longest read of a key is taken as the key's version order (every other read must be a
//! prefix of it, or the orders are incompatible). From that order: an append depends (ww) on
//! the append just before it, a read depends (wr) on the append of its last element, and a
//! read anti-depends (rw) on the append that came right after the state it saw. Appends never
//! read fall after the last element anyone saw, which is all that is known of them.
//!
//! Besides the graph, some anomalies show in a single pass: aborted reads (G1a), intermediate
//! reads (G1b), a transaction disagreeing with itself (internal), reading one's own future
//! append (future-read), an aborted append followed by a committed one (dirty-update),
//! duplicated elements, incompatible orders, and lost updates (two committed transactions
//! read the same state and both appended to it).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::graph::{EdgeList, RW, WR, WW};
use super::history::{Mop, MopF, NIL, TxnHistory, TxnType, ValueId};
use super::{Case, Step};

/// The initial (empty) state of a key, where an element id would go.
const INIT: ValueId = NIL;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

fn map<K, V>() -> Map<K, V> {
    HashMap::with_hasher(ahash::RandomState::with_seeds(7, 11, 13, 17))
}

fn kv(key: u32, element: ValueId) -> u64 {
    ((key as u64) << 32) | element as u64
}

/// What the inference keeps for explaining edges later.
pub struct ListAppend {
    /// (key, element) → the ok or info transaction that appended it.
    writer: Map<u64, u32>,
    /// (key, element) → its position in the key's version order.
    position: Map<u64, u32>,
    /// key → the version order (the longest read, duplicates dropped).
    order: Map<u32, Vec<ValueId>>,
    /// (key, last element or INIT) → the range of `readers` holding its readers.
    reader_ranges: Map<u64, (u32, u32)>,
    readers: Vec<u32>,
}

fn possible(kind: TxnType) -> bool {
    matches!(kind, TxnType::Ok | TxnType::Info)
}

/// Per key, the longest value observed: the longest read of the transactions `include`
/// takes, or the key's one append where it has exactly one (Elle infers `[v]` then). With
/// `count_invocations`, appends in invocations count too (Elle's dirty-update pass does).
fn longest_values(
    h: &TxnHistory,
    include: impl Fn(usize) -> bool,
    count_invocations: bool,
) -> Map<u32, Vec<ValueId>> {
    let mut longest: Map<u32, &[ValueId]> = map();
    let mut appends: Map<u32, (u32, ValueId)> = map();
    let count_append = |m: &Mop, appends: &mut Map<u32, (u32, ValueId)>| {
        let e = appends.entry(m.key).or_insert((0, m.value));
        e.0 += 1;
    };
    for t in 0..h.txns.len() {
        if !include(t) {
            continue;
        }
        for m in h.mops_of(t) {
            match m.f {
                MopF::Read => {
                    let list = h.list(m);
                    let best = longest.entry(m.key).or_insert(&[]);
                    if list.len() > best.len() {
                        *best = list;
                    }
                }
                MopF::Append => count_append(m, &mut appends),
                MopF::Write => {}
            }
        }
        if count_invocations && let Some(&(s, e)) = h.invoke_mops.get(&(t as u32)) {
            for m in &h.mops[s as usize..e as usize] {
                if m.f == MopF::Append {
                    count_append(m, &mut appends);
                }
            }
        }
    }
    let mut out: Map<u32, Vec<ValueId>> = map();
    for (key, list) in longest {
        if !list.is_empty() {
            out.insert(key, list.to_vec());
        }
    }
    for (key, (count, value)) in appends {
        if count == 1 {
            out.entry(key).or_insert_with(|| vec![value]);
        }
    }
    out
}

/// A key's version order: its longest value with repeated elements dropped.
fn version_orders(longest: &Map<u32, Vec<ValueId>>) -> Map<u32, Vec<ValueId>> {
    let mut orders = map();
    for (&key, value) in longest {
        let mut seen: HashSet<ValueId, ahash::RandomState> =
            HashSet::with_hasher(ahash::RandomState::with_seeds(2, 2, 2, 2));
        let order: Vec<ValueId> = value.iter().copied().filter(|e| seen.insert(*e)).collect();
        orders.insert(key, order);
    }
    orders
}

/// Whether a transaction touches one key twice (only then can it contradict itself).
fn repeats_a_key(mops: &[Mop]) -> bool {
    if mops.len() > 16 {
        return true;
    }
    (0..mops.len()).any(|i| mops[i + 1..].iter().any(|m| m.key == mops[i].key))
}

/// Runs every pass over a list-append history: the anomalies found directly, and the edges.
pub fn infer(
    h: &TxnHistory,
    anomalies: &mut BTreeMap<String, Vec<Case>>,
    edges: &mut EdgeList,
) -> ListAppend {
    let n = h.txns.len();
    let name = |t: u32| h.txns[t as usize].index as usize;

    // Elle checks the invocations: a test that appends one element twice cannot be read.
    let mut appended: HashSet<u64, ahash::RandomState> =
        HashSet::with_hasher(ahash::RandomState::with_seeds(3, 3, 3, 3));
    'dups: for t in 0..n {
        if let Some(&(s, e)) = h.invoke_mops.get(&(t as u32)) {
            for m in &h.mops[s as usize..e as usize] {
                if m.f == MopF::Append && !appended.insert(kv(m.key, m.value)) {
                    anomalies.entry("duplicate-appends".into()).or_default().push(Case::op(
                        name(t as u32),
                        format!(
                            "{} appends {} to {} again: list-append needs every appended element \
                             to be unique per key",
                            h.mop_text(m),
                            h.value(m.value),
                            h.key(m.key)
                        ),
                    ));
                    break 'dups;
                }
            }
        }
    }

    // Failed and intermediate appends.
    let mut failed: Map<u64, u32> = map();
    let mut intermediate: Map<u64, u32> = map();
    for t in 0..n {
        let kind = h.txns[t].kind;
        let mut last_append: Map<u32, ValueId> = map();
        for m in h.mops_of(t) {
            if m.f != MopF::Append {
                continue;
            }
            if kind == TxnType::Fail {
                failed.insert(kv(m.key, m.value), t as u32);
            }
            if let Some(prev) = last_append.insert(m.key, m.value) {
                intermediate.insert(kv(m.key, prev), t as u32);
            }
        }
    }

    for t in 0..n {
        if h.txns[t].kind != TxnType::Ok {
            continue;
        }
        let t32 = t as u32;
        for m in h.mops_of(t) {
            if m.f != MopF::Read {
                continue;
            }
            let list = h.list(m);
            for &e in list {
                if let Some(&w) = failed.get(&kv(m.key, e)) {
                    anomalies.entry("G1a".into()).or_default().push(Case::pair(
                        name(t32),
                        name(w),
                        format!(
                            "T{} read {} and saw {}, appended by T{}, which failed",
                            name(t32),
                            h.mop_text(m),
                            h.value(e),
                            name(w)
                        ),
                    ));
                }
            }
            if let Some(&last) = list.last()
                && let Some(&w) = intermediate.get(&kv(m.key, last))
                && w != t32
            {
                anomalies.entry("G1b".into()).or_default().push(Case::pair(
                    name(t32),
                    name(w),
                    format!(
                        "T{} read {}, ending in {}, which T{} appended but then appended \
                                 more to {}",
                        name(t32),
                        h.mop_text(m),
                        h.value(last),
                        name(w),
                        h.key(m.key)
                    ),
                ));
            }
        }
        if !repeats_a_key(h.mops_of(t)) {
            continue;
        }
        if let Some(case) = internal_case(h, t) {
            anomalies.entry("internal".into()).or_default().push(case);
        }
        if let Some(case) = future_read_case(h, t) {
            anomalies
                .entry("future-read".into())
                .or_default()
                .push(case);
        }
    }

    // Dirty updates: an order over every client operation, as Elle takes it. Only a failed
    // append can be dirty, so without one there is nothing to look for.
    let any_failed_append = (0..n).any(|t| {
        h.txns[t].kind == TxnType::Fail && h.mops_of(t).iter().any(|m| m.f == MopF::Append)
    });
    let all_orders = if any_failed_append {
        version_orders(&longest_values(h, |_| true, true))
    } else {
        map()
    };
    let mut completed_writer: Map<u64, u32> = map();
    for t in 0..n {
        if h.txns[t].kind == TxnType::Pending {
            continue;
        }
        for m in h.mops_of(t) {
            if m.f == MopF::Append {
                completed_writer.insert(kv(m.key, m.value), t as u32);
            }
        }
    }
    let mut dirty_keys: Vec<&u32> = all_orders.keys().collect();
    dirty_keys.sort();
    for &key in dirty_keys {
        let order = &all_orders[&key];
        let mut last_kind = TxnType::Ok;
        let mut last_txn: Option<u32> = None;
        let mut run: Vec<ValueId> = Vec::new();
        for &v in order {
            let Some(&t2) = completed_writer.get(&kv(key, v)) else {
                continue;
            };
            let k2 = h.txns[t2 as usize].kind;
            run.push(v);
            match (last_kind, k2) {
                (TxnType::Fail, TxnType::Ok) => {
                    let values: Vec<String> = run.iter().map(|&e| h.value(e).to_string()).collect();
                    let t1 = last_txn.expect("a failed writer was seen");
                    anomalies.entry("dirty-update".into()).or_default().push(Case::pair(
                        name(t1),
                        name(t2),
                        format!(
                            "key {}: T{} appended {} and failed, yet T{}'s committed append {} came \
                             after it (elements {})",
                            h.key(key),
                            name(t1),
                            run.first().map(|&e| h.value(e).to_string()).unwrap_or_default(),
                            name(t2),
                            h.value(v),
                            values.join(" ")
                        ),
                    ));
                    last_kind = k2;
                    last_txn = Some(t2);
                    run = vec![v];
                }
                (_, TxnType::Info) => {}
                (TxnType::Fail, TxnType::Fail) => {}
                _ => {
                    last_kind = k2;
                    last_txn = Some(t2);
                    run = vec![v];
                }
            }
        }
    }

    // From here on, Elle's "possible" history: transactions that may have committed.
    for t in 0..n {
        if !possible(h.txns[t].kind) {
            continue;
        }
        for m in h.mops_of(t) {
            if m.f != MopF::Read {
                continue;
            }
            let list = h.list(m);
            let mut counts: BTreeMap<ValueId, u32> = BTreeMap::new();
            for &e in list {
                *counts.entry(e).or_default() += 1;
            }
            let dups: Vec<String> = counts
                .iter()
                .filter(|(_, c)| **c > 1)
                .map(|(e, c)| format!("{} ×{c}", h.value(*e)))
                .collect();
            if !dups.is_empty() {
                anomalies
                    .entry("duplicate-elements".into())
                    .or_default()
                    .push(Case::op(
                        name(t as u32),
                        format!(
                            "T{} read {}, which repeats {}",
                            name(t as u32),
                            h.mop_text(m),
                            dups.join(", ")
                        ),
                    ));
            }
        }
    }

    let longest = longest_values(h, |t| possible(h.txns[t].kind), false);
    // Every value seen must be a prefix of the longest, or no one order explains them.
    let mut incompatible: BTreeMap<u32, (Vec<ValueId>, Vec<ValueId>)> = BTreeMap::new();
    for t in 0..n {
        if !possible(h.txns[t].kind) {
            continue;
        }
        for m in h.mops_of(t) {
            let seen: &[ValueId] = match m.f {
                MopF::Read => h.list(m),
                _ => continue,
            };
            if let Some(l) = longest.get(&m.key)
                && !l.starts_with(seen)
                && !incompatible.contains_key(&m.key)
            {
                incompatible.insert(m.key, (seen.to_vec(), l.clone()));
            }
        }
    }
    for (key, (a, b)) in incompatible {
        anomalies
            .entry("incompatible-order".into())
            .or_default()
            .push(Case::note(format!(
                "key {}: reads {} and {} cannot both be prefixes of one order of appends",
                h.key(key),
                list_text(h, &a),
                list_text(h, &b)
            )));
    }

    lost_updates(h, anomalies, true);

    // The graph.
    let order = version_orders(&longest);
    let mut position: Map<u64, u32> = map();
    for (&key, o) in &order {
        for (i, &e) in o.iter().enumerate() {
            position.insert(kv(key, e), i as u32);
        }
    }
    let mut writer: Map<u64, u32> = map();
    let mut reads: Vec<(u64, u32)> = Vec::new();
    for t in 0..n {
        let kind = h.txns[t].kind;
        if !possible(kind) {
            continue;
        }
        for m in h.mops_of(t) {
            match m.f {
                MopF::Append => {
                    writer.insert(kv(m.key, m.value), t as u32);
                }
                MopF::Read => {
                    // An unknown transaction's nil read observed nothing.
                    if kind == TxnType::Info && m.list.is_none() {
                        continue;
                    }
                    let last = h.list(m).last().copied().unwrap_or(INIT);
                    reads.push((kv(m.key, last), t as u32));
                }
                MopF::Write => {}
            }
        }
    }
    reads.sort_unstable();
    reads.dedup();
    let mut reader_ranges: Map<u64, (u32, u32)> = map();
    let mut i = 0;
    while i < reads.len() {
        let mut j = i;
        while j < reads.len() && reads[j].0 == reads[i].0 {
            j += 1;
        }
        reader_ranges.insert(reads[i].0, (i as u32, j as u32));
        i = j;
    }
    let readers: Vec<u32> = reads.iter().map(|&(_, t)| t).collect();
    let la = ListAppend {
        writer,
        position,
        order,
        reader_ranges,
        readers,
    };
    for t in 0..n {
        if !possible(h.txns[t].kind) {
            continue;
        }
        let t32 = t as u32;
        for m in h.mops_of(t) {
            match m.f {
                MopF::Append => {
                    let prev = la.previous(m.key, m.value);
                    if prev != INIT
                        && let Some(&w) = la.writer.get(&kv(m.key, prev))
                    {
                        edges.link(w, t32, WW);
                    }
                    for &r in la.readers_of(m.key, prev) {
                        edges.link(r, t32, RW);
                    }
                }
                MopF::Read => {
                    if let Some(&last) = h.list(m).last()
                        && let Some(&w) = la.writer.get(&kv(m.key, last))
                    {
                        edges.link(w, t32, WR);
                    }
                }
                MopF::Write => {}
            }
        }
    }
    la
}

impl ListAppend {
    /// The element appended just before `element` (INIT if it was first, or if nothing is
    /// known to come before it); an element never read follows the last one read.
    fn previous(&self, key: u32, element: ValueId) -> ValueId {
        let order = self.order.get(&key);
        match self.position.get(&kv(key, element)) {
            Some(&0) => INIT,
            Some(&p) => order.expect("a positioned element has an order")[p as usize - 1],
            None => order.and_then(|o| o.last().copied()).unwrap_or(INIT),
        }
    }

    fn readers_of(&self, key: u32, state: ValueId) -> &[u32] {
        match self.reader_ranges.get(&kv(key, state)) {
            Some(&(s, e)) => &self.readers[s as usize..e as usize],
            None => &[],
        }
    }

    /// Why b depends on a by `rel`.
    pub fn explain(&self, h: &TxnHistory, a: u32, b: u32, rel: u8) -> Option<Step> {
        let a_mops = h.mops_of(a as usize);
        for (bi, m) in h.mops_of(b as usize).iter().enumerate() {
            match (rel, m.f) {
                (WW, MopF::Append) => {
                    let prev = self.previous(m.key, m.value);
                    if prev != INIT && self.writer.get(&kv(m.key, prev)) == Some(&a) {
                        let ai = a_mops
                            .iter()
                            .position(|x| x.f == MopF::Append && x.key == m.key && x.value == prev);
                        return Some(Step::data(
                            WW,
                            h.key(m.key).clone(),
                            h.value(prev),
                            Some(h.value(m.value)),
                            ai,
                            Some(bi),
                        ));
                    }
                }
                (WR, MopF::Read) => {
                    if let Some(&last) = h.list(m).last()
                        && self.writer.get(&kv(m.key, last)) == Some(&a)
                    {
                        let ai = a_mops
                            .iter()
                            .position(|x| x.f == MopF::Append && x.key == m.key && x.value == last);
                        return Some(Step::data(
                            WR,
                            h.key(m.key).clone(),
                            h.value(last),
                            None,
                            ai,
                            Some(bi),
                        ));
                    }
                }
                (RW, MopF::Append) => {
                    let prev = self.previous(m.key, m.value);
                    if self.readers_of(m.key, prev).contains(&a) {
                        let ai = a_mops.iter().position(|x| {
                            x.f == MopF::Read
                                && x.key == m.key
                                && h.list(x).last().copied().unwrap_or(INIT) == prev
                        });
                        return Some(Step::data(
                            RW,
                            h.key(m.key).clone(),
                            h.value(prev),
                            Some(h.value(m.value)),
                            ai,
                            Some(bi),
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Elle's check of a transaction against itself: each read must show what the transaction's
/// own earlier reads and appends make of the key.
fn internal_case(h: &TxnHistory, t: usize) -> Option<Case> {
    enum State {
        // The whole list is known.
        Known(Vec<ValueId>),
        // Only what this transaction appended to an unknown prefix.
        Suffix(Vec<ValueId>),
        // Read as nil.
        Nil,
    }
    let mut state: Map<u32, State> = map();
    for m in h.mops_of(t) {
        match m.f {
            MopF::Append => {
                let next = match state.remove(&m.key) {
                    Some(State::Known(mut l)) => {
                        l.push(m.value);
                        State::Known(l)
                    }
                    Some(State::Suffix(mut s)) => {
                        s.push(m.value);
                        State::Suffix(s)
                    }
                    Some(State::Nil) | None => State::Suffix(vec![m.value]),
                };
                state.insert(m.key, next);
            }
            MopF::Read => {
                let read = h.list(m);
                let nil = m.list.is_none();
                let bad = match state.get(&m.key) {
                    None => false,
                    Some(State::Nil) => !nil,
                    Some(State::Known(l)) => nil || l.as_slice() != read,
                    Some(State::Suffix(s)) => {
                        nil || read.len() < s.len() || &read[read.len() - s.len()..] != s.as_slice()
                    }
                };
                if bad {
                    let expected = match &state[&m.key] {
                        State::Known(l) => list_text(h, l),
                        State::Suffix(s) => {
                            format!("[... {}]", list_text(h, s).trim_matches(['[', ']']))
                        }
                        State::Nil => "nil".to_string(),
                    };
                    return Some(Case::op(
                        h.txns[t].index as usize,
                        format!(
                            "T{} read {} but its own earlier operations make {} {}",
                            h.txns[t].index,
                            h.mop_text(m),
                            h.key(m.key),
                            expected
                        ),
                    ));
                }
                state.insert(
                    m.key,
                    if nil {
                        State::Nil
                    } else {
                        State::Known(read.to_vec())
                    },
                );
            }
            MopF::Write => {}
        }
    }
    None
}

fn list_text(h: &TxnHistory, l: &[ValueId]) -> String {
    let items: Vec<String> = l.iter().map(|&e| h.value(e).to_string()).collect();
    format!("[{}]", items.join(" "))
}

fn future_read_case(h: &TxnHistory, t: usize) -> Option<Case> {
    let mut read: Map<u64, usize> = map();
    let mops = h.mops_of(t);
    for (i, m) in mops.iter().enumerate() {
        match m.f {
            MopF::Read => {
                for &e in h.list(m) {
                    read.entry(kv(m.key, e)).or_insert(i);
                }
            }
            MopF::Append => {
                if let Some(&r) = read.get(&kv(m.key, m.value)) {
                    return Some(Case::op(
                        h.txns[t].index as usize,
                        format!(
                            "T{} read {}, which holds {} before T{} itself appended it",
                            h.txns[t].index,
                            h.mop_text(&mops[r]),
                            h.value(m.value),
                            h.txns[t].index
                        ),
                    ));
                }
            }
            MopF::Write => {}
        }
    }
    None
}

/// Two committed transactions that read the same state of a key and both wrote it (appended,
/// for lists): whatever both did, one of the updates cannot be in the other's past.
pub(super) fn lost_updates(
    h: &TxnHistory,
    anomalies: &mut BTreeMap<String, Vec<Case>>,
    lists: bool,
) {
    // (key, state read, read nil) → transactions
    type State<'h> = (u32, &'h [ValueId], bool);
    let mut by_state: HashMap<State<'_>, Vec<u32>, ahash::RandomState> =
        HashMap::with_hasher(ahash::RandomState::with_seeds(4, 4, 4, 4));
    let mut first_read: Vec<(u32, &[ValueId], bool)> = Vec::new();
    let mut wrote: Vec<u32> = Vec::new();
    for t in 0..h.txns.len() {
        if h.txns[t].kind != TxnType::Ok {
            continue;
        }
        first_read.clear();
        wrote.clear();
        for m in h.mops_of(t) {
            // As Elle does: the first write of a key after a read of it counts; a write with
            // no read before it is not an update of a state seen.
            if m.f != MopF::Read && !wrote.contains(&m.key) {
                if let Some(&(k, state, nil)) = first_read.iter().find(|(k, _, _)| *k == m.key) {
                    by_state.entry((k, state, nil)).or_default().push(t as u32);
                    wrote.push(m.key);
                }
                continue;
            }
            if m.f == MopF::Read && !first_read.iter().any(|(k, _, _)| *k == m.key) {
                let state: (&[ValueId], bool) = if lists {
                    (h.list(m), m.list.is_none())
                } else {
                    (std::slice::from_ref(&m.value), m.value == NIL)
                };
                first_read.push((m.key, state.0, state.1));
            }
        }
    }
    let mut cases: Vec<(State<'_>, Vec<u32>)> = by_state
        .into_iter()
        .filter(|(_, txns)| txns.len() >= 2)
        .collect();
    cases.sort();
    for ((key, state, nil), txns) in cases {
        let names: Vec<String> = txns
            .iter()
            .map(|&t| format!("T{}", h.txns[t as usize].index))
            .collect();
        let state_text = match (nil, lists) {
            (true, _) => "nil".to_string(),
            (false, true) => list_text(h, state),
            (false, false) => h.value(state[0]).to_string(),
        };
        anomalies
            .entry("lost-update".into())
            .or_default()
            .push(Case {
                txns: txns
                    .iter()
                    .map(|&t| h.txns[t as usize].index as usize)
                    .collect(),
                message: format!(
                    "{} all read {} = {} and each wrote it: all but one of their updates is lost",
                    names.join(", "),
                    h.key(key),
                    state_text
                ),
                cycle: None,
            });
    }
}
