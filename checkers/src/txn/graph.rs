//! The dependency graph over transactions: edges tagged with the relation that explains them,
//! stored compactly (CSR), with Tarjan's strongly connected components.
//!
//! An edge a → b may be explained by several relations at once (b overwrote a's version *and*
//! began after a ended). A cycle is classified by how each of its edges is explained, so each
//! edge carries a *label*: the first relation that explains it, in the order the workload's
//! explainers are consulted (for list-append ww, wr, rw; for rw-register wr, ww, rw; then
//! process or real-time order). Searching on labels means a cycle found is always of the type
//! it was searched as.

use super::history::{TxnHistory, TxnType};

/// Write-write dependency: b overwrote a version a wrote.
pub const WW: u8 = 1;
/// Write-read dependency: b read a version a wrote.
pub const WR: u8 = 2;
/// Read-write anti-dependency: b overwrote the version a read.
pub const RW: u8 = 4;
/// Same process, a before b.
pub const PROCESS: u8 = 8;
/// a completed before b was invoked.
pub const REALTIME: u8 = 16;

/// A relation's short name, as explanations print it.
pub fn rel_name(rel: u8) -> &'static str {
    match rel {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROCESS => "process",
        REALTIME => "realtime",
        _ => "?",
    }
}

/// Edges as collected, before they become a graph.
#[derive(Clone, Debug, Default)]
pub struct EdgeList {
    /// `(from, to, rels)`: relations may repeat; they are merged when the graph is built.
    pub edges: Vec<(u32, u32, u8)>,
}

impl EdgeList {
    /// Adds an edge unless it is a self-edge (a transaction does not depend on itself).
    pub fn link(&mut self, from: u32, to: u32, rel: u8) {
        if from != to {
            self.edges.push((from, to, rel));
        }
    }
}

/// A directed graph over transaction ids `0..n`, edges labelled.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// `offsets[v]..offsets[v+1]` index `targets`/`labels` for v's out-edges.
    pub offsets: Vec<u32>,
    /// Edge targets, sorted within a vertex.
    pub targets: Vec<u32>,
    /// Every relation that holds on the edge.
    pub rels: Vec<u8>,
    /// The relation that explains the edge (one bit of `rels`).
    pub labels: Vec<u8>,
}

impl Graph {
    /// Builds the graph from edges, merging parallel ones; `priority` lists the relations in
    /// the order explainers are consulted.
    pub fn build(n: usize, mut edges: Vec<(u32, u32, u8)>, priority: &[u8]) -> Graph {
        edges.sort_unstable_by_key(|&(a, b, _)| ((a as u64) << 32) | b as u64);
        let mut offsets = vec![0u32; n + 1];
        let mut targets = Vec::with_capacity(edges.len());
        let mut rels: Vec<u8> = Vec::with_capacity(edges.len());
        let mut last: Option<(u32, u32)> = None;
        for (a, b, rel) in edges {
            if last == Some((a, b)) {
                *rels.last_mut().expect("an edge was pushed") |= rel;
                continue;
            }
            last = Some((a, b));
            offsets[a as usize + 1] += 1;
            targets.push(b);
            rels.push(rel);
        }
        for v in 0..n {
            offsets[v + 1] += offsets[v];
        }
        let labels = rels
            .iter()
            .map(|&r| {
                priority
                    .iter()
                    .copied()
                    .find(|&p| r & p != 0)
                    .unwrap_or(r & r.wrapping_neg())
            })
            .collect();
        Graph {
            offsets,
            targets,
            rels,
            labels,
        }
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no vertices.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of edges.
    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// v's out-edges as `(target, label)`.
    pub fn out(&self, v: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let (s, e) = (
            self.offsets[v as usize] as usize,
            self.offsets[v as usize + 1] as usize,
        );
        self.targets[s..e]
            .iter()
            .copied()
            .zip(self.labels[s..e].iter().copied())
    }

    /// The label of edge a → b, if there is one.
    pub fn label(&self, a: u32, b: u32) -> Option<u8> {
        let (s, e) = (
            self.offsets[a as usize] as usize,
            self.offsets[a as usize + 1] as usize,
        );
        self.targets[s..e]
            .binary_search(&b)
            .ok()
            .map(|i| self.labels[s + i])
    }

    /// Strongly connected components with a cycle (two or more vertices; there are no
    /// self-edges), each sorted, in order of their smallest vertex. Iterative Tarjan, so a
    /// million-vertex chain does not overflow the stack; `keep` filters edges by label.
    pub fn sccs(&self, keep: u8, within: Option<&[u32]>) -> Vec<Vec<u32>> {
        let n = self.len();
        const UNSEEN: u32 = u32::MAX;
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut out: Vec<Vec<u32>> = Vec::new();
        let mut counter = 0u32;
        // Restrict to a vertex set by marking the rest as already finished.
        let mut allowed: Option<Vec<bool>> = None;
        if let Some(set) = within {
            let mut mask = vec![false; n];
            for &v in set {
                mask[v as usize] = true;
            }
            allowed = Some(mask);
        }
        let ok = |v: u32| allowed.as_ref().is_none_or(|m| m[v as usize]);
        // (vertex, next edge position)
        let mut call: Vec<(u32, u32)> = Vec::new();
        let roots: Vec<u32> = match within {
            Some(set) => set.to_vec(),
            None => (0..n as u32).collect(),
        };
        for root in roots {
            if index[root as usize] != UNSEEN
                || self.offsets[root as usize] == self.offsets[root as usize + 1]
            {
                continue;
            }
            call.push((root, self.offsets[root as usize]));
            index[root as usize] = counter;
            low[root as usize] = counter;
            counter += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            while let Some(&mut (v, ref mut pos)) = call.last_mut() {
                let end = self.offsets[v as usize + 1];
                let mut descended = false;
                while *pos < end {
                    let i = *pos as usize;
                    *pos += 1;
                    if self.labels[i] & keep == 0 {
                        continue;
                    }
                    let w = self.targets[i];
                    if !ok(w) {
                        continue;
                    }
                    if index[w as usize] == UNSEEN {
                        index[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        call.push((w, self.offsets[w as usize]));
                        descended = true;
                        break;
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                }
                if descended {
                    continue;
                }
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent as usize] = low[parent as usize].min(low[v as usize]);
                }
                if low[v as usize] == index[v as usize] {
                    let mut component = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        on_stack[w as usize] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        out.push(component);
                    }
                }
            }
        }
        out.sort_by_key(|c| c[0]);
        out
    }
}

/// Process order: each process's committed transactions, one after the next.
pub fn process_edges(history: &TxnHistory, edges: &mut EdgeList) {
    let mut last: std::collections::HashMap<u64, u32> = Default::default();
    for (id, txn) in history.txns.iter().enumerate() {
        if txn.kind != TxnType::Ok {
            continue;
        }
        if let Some(prev) = last.insert(txn.process, id as u32) {
            edges.link(prev, id as u32, PROCESS);
        }
    }
}

/// Real-time order, transitively reduced: a → b when a committed before b was invoked and no
/// transaction committed in between that b also follows. Only committed transactions order
/// others: an unknown one may have taken effect at any time after it began.
pub fn realtime_edges(history: &TxnHistory, edges: &mut EdgeList) {
    // The frontier: committed transactions no later commit is known to follow.
    let mut frontier: Vec<u32> = Vec::new();
    let mut position: Vec<u32> = vec![u32::MAX; history.txns.len()];
    // For each transaction, the frontier it was linked from at its invocation.
    let mut preds: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for &(txn, invocation) in &history.events {
        if txn == u32::MAX {
            continue;
        }
        if invocation {
            // Elle leaves invocations that never complete out of the graph entirely.
            if history.txns[txn as usize].kind == TxnType::Pending {
                continue;
            }
            for &a in &frontier {
                edges.link(a, txn, REALTIME);
            }
            if !frontier.is_empty() {
                preds.insert(txn, frontier.clone());
            }
            continue;
        }
        if history.txns[txn as usize].kind != TxnType::Ok {
            preds.remove(&txn);
            continue;
        }
        if let Some(before) = preds.remove(&txn) {
            for a in before {
                let p = position[a as usize];
                if p != u32::MAX {
                    let moved = *frontier.last().expect("a is in the frontier");
                    frontier.swap_remove(p as usize);
                    if moved != a {
                        position[moved as usize] = p;
                    }
                    position[a as usize] = u32::MAX;
                }
            }
        }
        position[txn as usize] = frontier.len() as u32;
        frontier.push(txn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_edges_merge_and_take_the_first_label_by_priority() {
        let g = Graph::build(
            3,
            vec![(0, 1, RW), (0, 1, WW), (1, 2, WR), (2, 0, REALTIME)],
            &[WW, WR, RW, REALTIME],
        );
        assert_eq!(g.edge_count(), 3);
        assert_eq!(g.label(0, 1), Some(WW));
        assert_eq!(g.rels[0], WW | RW);
        assert_eq!(g.sccs(0xff, None), vec![vec![0, 1, 2]]);
        assert!(g.sccs(WW | WR, None).is_empty());
    }

    #[test]
    fn a_long_chain_has_no_component_and_does_not_overflow() {
        let n = 200_000u32;
        let edges: Vec<_> = (0..n - 1).map(|i| (i, i + 1, WW)).collect();
        let g = Graph::build(n as usize, edges, &[WW]);
        assert!(g.sccs(0xff, None).is_empty());
        let mut edges: Vec<_> = (0..n - 1).map(|i| (i, i + 1, WW)).collect();
        edges.push((n - 1, 0, WR));
        let g = Graph::build(n as usize, edges, &[WW, WR]);
        assert_eq!(g.sccs(0xff, None)[0].len(), n as usize);
    }
}
