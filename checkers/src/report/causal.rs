//! A causal verdict for people: plain text, and JSON for `results.json`.
//!
//! Each anomaly is its one-line story ("session 3 wrote x=5 (op 12), session 1 read x=5
//! (op 20) then read x=nil (op 22), the initial value: monotonic reads violated") followed by
//! the operations it names, in full. When more anomalies were found than listed, both forms
//! say so and how many, so that a capped report is never mistaken for a complete one.

use std::fmt::Write as _;

use serde_json::json;

use super::describe_operation;
use crate::causal::CausalVerdict;
use crate::history::History;

fn verdict_word(verdict: &CausalVerdict) -> String {
    let level = verdict.level.name();
    if verdict.valid {
        format!("causally consistent ({level})")
    } else {
        format!("NOT causally consistent ({level})")
    }
}

/// A plain-text report of a causal verdict.
pub fn text(history: &History, verdict: &CausalVerdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} operations, {} checked, {} anomalies",
        verdict_word(verdict),
        history.operations.len(),
        verdict.checked_operations,
        verdict.anomalies_found
    );
    if !verdict.anomaly_counts.is_empty() {
        let counts: Vec<String> = verdict
            .anomaly_counts
            .iter()
            .map(|(kind, count)| format!("{kind:?} {count}"))
            .collect();
        let _ = writeln!(out, "By kind: {}", counts.join(", "));
    }
    for (i, anomaly) in verdict.anomalies.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{:>3}. [{:?}] {}",
            i + 1,
            anomaly.kind,
            anomaly.explanation
        );
        for &id in &anomaly.ops {
            if let Some(op) = history.operations.get(id) {
                let _ = writeln!(out, "       {}", describe_operation(op));
            }
        }
    }
    if verdict.truncated() {
        let _ = writeln!(
            out,
            "\n{} more anomalies not listed; raise anomalies_max to see them.",
            verdict.anomalies_found - verdict.anomalies.len()
        );
    }
    out
}

/// The verdict as JSON: `valid` (a boolean: a causal check never gives up), the level, the
/// counts, whether the list is truncated, and each anomaly with its operations in full.
pub fn json(history: &History, verdict: &CausalVerdict) -> serde_json::Value {
    let anomalies: Vec<serde_json::Value> = verdict
        .anomalies
        .iter()
        .map(|a| {
            let ops: Vec<_> = a
                .ops
                .iter()
                .filter_map(|&id| history.operations.get(id))
                .collect();
            json!({
                "kind": a.kind,
                "explanation": a.explanation,
                "op_ids": a.ops,
                "ops": ops,
            })
        })
        .collect();
    json!({
        "valid": verdict.valid,
        "checker": "causal",
        "level": verdict.level,
        "operations": history.operations.len(),
        "checked_operations": verdict.checked_operations,
        "anomalies_found": verdict.anomalies_found,
        "truncated": verdict.truncated(),
        "anomaly_counts": verdict.anomaly_counts,
        "anomalies": anomalies,
    })
}
