//! Causal convergence (CCv) in Bouajjani et al., "On Verifying Causal Consistency" (POPL
//! 2017): CC, plus one total *arbitration* order of all writes that every read agrees with.
//!
//! The paper's characterisation for differentiated histories: CCv holds exactly when the CC
//! bad patterns are absent and CF ∪ CO is acyclic (the pattern CyclicCF), where the conflict
//! relation CF puts w1 before w2 when both write key x and some read of x returns w2's value
//! with w1 in its causal past. That read saw both writes and chose w2, so in any arbitration
//! order w1 comes first; a cycle means no order can satisfy every read.
//!
//! Two kinds of CF edge are left out of the graph, neither of which can hide a violation:
//! - w1 CF w2 with w1 CO w2: CO already has that edge.
//! - w1 CF w2 with w2 CO w1: then w2 CO w1 CO r and r reads w2, which is a WriteCORead that the
//!   CC patterns report; counting it again as a two-write CyclicCF would tell nothing new.

use super::graph::{BitMatrix, Digraph};
use super::relations::CausalOrder;
use super::story::Teller;
use super::{Anomaly, AnomalyKind, Findings};

/// CyclicCF: CF ∪ CO is cyclic. One anomaly per strongly connected component, showing a
/// shortest cycle through it and, for each CF edge, the read that forces it.
pub(super) fn cyclic_cf(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    let n = relations.nodes.len();
    let mut rows: Vec<Option<u32>> = vec![None; n];
    let mut row_count = 0u32;
    for (node, row) in relations.nodes.iter().zip(rows.iter_mut()) {
        if node.is_write {
            *row = Some(row_count);
            row_count += 1;
        }
    }
    let mut conflicts = BitMatrix::new(row_count as usize, n);
    let mut any = false;
    for read in 0..n {
        // A read that returned siblings arbitrated nothing: a multi-value register
        // returns every visible write no other visible write overwrote, so a write in
        // its past that it did not return was overwritten by some write, not
        // necessarily by any one of those it returned. Only single values order writes.
        if !relations.nodes[read].also.is_empty() {
            continue;
        }
        for second in relations.reads_from(read) {
            let second = second as usize;
            for &first in &relations.writes_by_key[relations.nodes[read].key as usize] {
                let first = first as usize;
                // A sibling the read returned too was not arbitrated before the other:
                // the read kept both.
                if first == second
                    || relations.reads_from(read).any(|w| w as usize == first)
                    || !co.before(first, read)
                    || co.before(first, second)
                    || co.before(second, first)
                {
                    continue;
                }
                let row = rows[first].expect("writes have rows") as usize;
                conflicts.set(row, second);
                any = true;
            }
        }
    }
    if !any {
        return;
    }
    let graph = Digraph {
        lists: &relations.successors,
        rows: Some((&rows, &conflicts)),
    };
    let mut in_component = vec![false; n];
    for component in graph.components() {
        // No CF edge joins a write to itself, so a cycle needs two nodes.
        if component.len() < 2 {
            continue;
        }
        for &node in &component {
            in_component[node as usize] = true;
        }
        let cycle = graph
            .shortest_cycle(component[0] as usize, &in_component)
            .expect("a component of two or more nodes has a cycle through each");
        for &node in &component {
            in_component[node as usize] = false;
        }
        findings.add(tell(teller, co, &cycle));
    }
}

/// The anomaly for one cycle of CF ∪ CO.
fn tell(teller: &Teller, co: &CausalOrder, cycle: &[u32]) -> Anomaly {
    let relations = teller.relations;
    let is_co_edge = |a: usize, b: usize| {
        relations.po_predecessor[b] == Some(a as u32)
            || relations.reads_from(b).any(|w| w == a as u32)
    };
    let mut ops: Vec<usize> = cycle.iter().map(|&n| teller.op(n as usize)).collect();
    let mut witnesses = Vec::new();
    for (i, &a) in cycle.iter().enumerate() {
        let (a, b) = (a as usize, cycle[(i + 1) % cycle.len()] as usize);
        if is_co_edge(a, b) {
            continue;
        }
        let witness = relations.readers[b]
            .iter()
            .map(|&r| r as usize)
            .find(|&r| co.before(a, r))
            .expect("a CF edge has a read that forces it");
        ops.push(teller.op(witness));
        witnesses.push(format!(
            "{} after op {}",
            teller.told(witness),
            teller.op(a)
        ));
    }
    let label = |a: usize, b: usize| {
        if is_co_edge(a, b) {
            teller.co_edge(a, b)
        } else {
            "cf".to_string()
        }
    };
    Anomaly {
        kind: AnomalyKind::CyclicCF,
        ops,
        explanation: format!(
            "{}: no single order of writes explains every read, since {} (-cf-> means a read \
             returned the second write's value after seeing the first): causal convergence \
             violated (CyclicCF)",
            teller.cycle(cycle, label),
            witnesses.join(", ")
        ),
    }
}
