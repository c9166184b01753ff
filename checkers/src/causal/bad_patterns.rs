//! The bad patterns of causal consistency (CC) in Bouajjani et al., "On Verifying Causal
//! Consistency" (POPL 2017): for a differentiated history, CC holds exactly when none of
//! CyclicCO, WriteCOInitRead, ThinAirRead and WriteCORead occurs.
//!
//! Each pattern is one function, reported at most once per read (once per cycle for
//! CyclicCO), naming the operations that make it up.

use super::relations::{CausalOrder, Source};
use super::story::Teller;
use super::{Anomaly, AnomalyKind, Findings};

/// ThinAirRead: a read returns a value that no write wrote, or only a failed one.
pub(super) fn thin_air_reads(teller: &Teller, findings: &mut Findings) {
    for (read, node) in teller.relations.nodes.iter().enumerate() {
        let Some(Source::ThinAir { failed_write }) = node.source else {
            continue;
        };
        let (ops, why) = match failed_write {
            Some(failed) => (
                vec![teller.op(read), failed],
                format!("the only write of that value, op {failed}, failed"),
            ),
            None => (
                vec![teller.op(read)],
                "no operation wrote that value".to_string(),
            ),
        };
        findings.add_for_read(read, || Anomaly {
            kind: AnomalyKind::ThinAirRead,
            ops,
            explanation: format!("{}, but {why}: thin-air read", teller.told(read)),
        });
    }
}

/// CyclicCO: PO ∪ RF has a cycle, so CO is not a partial order. One anomaly per strongly
/// connected component, showing a shortest cycle through it.
pub(super) fn cyclic_co(teller: &Teller, components: &[Vec<u32>], findings: &mut Findings) {
    let relations = teller.relations;
    let graph = relations.graph();
    let mut in_component = vec![false; relations.nodes.len()];
    for component in components {
        for &node in component {
            in_component[node as usize] = true;
        }
        let cycle = graph
            .shortest_cycle(component[0] as usize, &in_component)
            .expect("a component of two or more nodes has a cycle through each");
        for &node in component {
            in_component[node as usize] = false;
        }
        findings.add(Anomaly {
            kind: AnomalyKind::CyclicCO,
            ops: cycle.iter().map(|&n| teller.op(n as usize)).collect(),
            explanation: format!(
                "{}: causal order is cyclic, so an operation causally precedes itself",
                teller.cycle(&cycle, |a, b| teller.co_edge(a, b))
            ),
        });
    }
}

/// WriteCOInitRead: a read returns nil although a write to its key is CO-before it.
pub(super) fn write_co_init_read(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    for (read, node) in relations.nodes.iter().enumerate() {
        if node.source != Some(Source::Initial) {
            continue;
        }
        // The latest-invoked such write makes the shortest story.
        let writes = &relations.writes_by_key[node.key as usize];
        let Some(&write) = writes.iter().rev().find(|&&w| co.before(w as usize, read)) else {
            continue;
        };
        let write = write as usize;
        findings.add_for_read(read, || Anomaly {
            kind: AnomalyKind::WriteCOInitRead,
            ops: vec![teller.op(write), teller.op(read)],
            explanation: format!(
                "{} causally before {}: a read returned the initial value though a write to \
                 its key is in its causal past (WriteCOInitRead)",
                teller.told(write),
                teller.told(read)
            ),
        });
    }
}

/// WriteCORead: w1 CO w2 CO r on one key, and r reads w1: r returned a value that was
/// overwritten in its causal past.
pub(super) fn write_co_read(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    for read in 0..relations.nodes.len() {
        // Each sibling a read returned must be one its causal past did not overwrite.
        let writes = &relations.writes_by_key[relations.nodes[read].key as usize];
        let Some((first, second)) = relations.reads_from(read).find_map(|first| {
            let first = first as usize;
            writes
                .iter()
                .rev()
                .find(|&&w| {
                    let w = w as usize;
                    w != first && co.before(w, read) && co.before(first, w)
                })
                .map(|&second| (first, second))
        }) else {
            continue;
        };
        let second = second as usize;
        findings.add_for_read(read, || Anomaly {
            kind: AnomalyKind::WriteCORead,
            ops: vec![teller.op(first), teller.op(second), teller.op(read)],
            explanation: format!(
                "{} causally before {}, which is causally before {}: a read returned a value \
                 overwritten in its causal past (WriteCORead)",
                teller.told(first),
                teller.told(second),
                teller.told(read)
            ),
        });
    }
}
