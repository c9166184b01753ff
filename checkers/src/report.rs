//! A verdict for people: plain text, JSON, and a standalone HTML timeline.
//!
//! The text says, for each partition that is not linearizable, the longest prefix of
//! operations that can be linearized (with the state after each) and the operation whose
//! completion no linearization gets past: that operation together with the last state is
//! usually the anomaly (a read that saw a value the object could not hold at that point).
//!
//! The HTML file draws each failing key's operations as bars on a time axis, one row per
//! process, in the spirit of Porcupine's visualizer: the failing operation is red, the
//! linearizable prefix is green and numbered in linearization order. It has no external
//! resources, so it can be attached to a bug report or opened offline. Time is drawn by rank
//! (each distinct invoke or complete time gets the next column), which keeps short operations
//! visible next to long ones; the real times are in each bar's tooltip.
//!
//! [`causal`] reports a causal verdict ([`crate::causal`]) as text and JSON.

pub mod causal;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::history::{History, Operation, Outcome};
use crate::linearizability::{CheckResult, Explanation, PartitionResult, Verdict};

/// One line describing an operation: id, process, call, result, and where it came from.
pub fn describe_operation(op: &Operation) -> String {
    let key = op
        .key
        .as_deref()
        .map(|k| format!(" {k:?}"))
        .unwrap_or_default();
    let result = match (&op.outcome, &op.output) {
        (Outcome::Ok, Some(out)) => format!("ok {out}"),
        (Outcome::Fail, _) => "fail".to_string(),
        _ => "unknown outcome".to_string(),
    };
    let line = op.line.map(|l| format!(", line {l}")).unwrap_or_default();
    let completed = op
        .complete_time
        .map(|t| t.to_string())
        .unwrap_or_else(|| "never".to_string());
    format!(
        "op {} (process {}): {}{} {} -> {} [t {}..{}{}]",
        op.id, op.process, op.f, key, op.input, result, op.invoke_time, completed, line
    )
}

fn verdict_word(result: &CheckResult) -> String {
    match result {
        CheckResult::Valid => "linearizable".to_string(),
        CheckResult::Invalid => "NOT linearizable".to_string(),
        CheckResult::Unknown { reason } => format!("unknown ({reason})"),
    }
}

/// A plain-text report of a verdict.
pub fn text(history: &History, verdict: &Verdict) -> String {
    let mut out = String::new();
    let count = |pick: fn(&CheckResult) -> bool| {
        verdict
            .partitions
            .iter()
            .filter(|p| pick(&p.result))
            .count()
    };
    let _ = writeln!(
        out,
        "{}: {} operations in {} partitions ({} linearizable, {} not, {} unknown)",
        verdict_word(&verdict.result),
        history.operations.len(),
        verdict.partitions.len(),
        count(|r| *r == CheckResult::Valid),
        count(|r| *r == CheckResult::Invalid),
        count(|r| matches!(r, CheckResult::Unknown { .. })),
    );
    for partition in &verdict.partitions {
        if let Some(explanation) = &partition.explanation {
            write_explanation(&mut out, history, partition, explanation);
        }
    }
    out
}

fn key_label(key: &Option<String>) -> String {
    match key {
        Some(k) => format!("key {k:?}"),
        None => "the history".to_string(),
    }
}

fn write_explanation(
    out: &mut String,
    history: &History,
    partition: &PartitionResult,
    explanation: &Explanation,
) {
    let op = |id: usize| &history.operations[id];
    let _ = writeln!(
        out,
        "\n{} is not linearizable ({} operations checked).",
        key_label(&explanation.key),
        partition.checked_operations
    );
    let _ = writeln!(
        out,
        "Longest linearizable prefix ({} operations), from initial state {}:",
        explanation.prefix.len(),
        explanation.states[0]
    );
    for (i, &id) in explanation.prefix.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>3}. {}\n       state after: {}",
            i + 1,
            describe_operation(op(id)),
            explanation.states[i + 1]
        );
    }
    let last = explanation.states.last().map(String::as_str).unwrap_or("?");
    let _ = writeln!(
        out,
        "No linearization gets past the completion of\n  {}\nwhich must take effect before \
         it completes, but cannot from state {} or any other order of the operations before it.",
        describe_operation(op(explanation.failing_op)),
        last
    );
}

/// The verdict as JSON, for `--json` and `results.json`: `valid` is `true`, `false` or
/// `"unknown"`, as the harness contract says; `failures` spell out each explanation with the
/// operations in full.
pub fn json(history: &History, verdict: &Verdict) -> serde_json::Value {
    let valid = match verdict.result {
        CheckResult::Valid => json!(true),
        CheckResult::Invalid => json!(false),
        CheckResult::Unknown { .. } => json!("unknown"),
    };
    let reason = match &verdict.result {
        CheckResult::Unknown { reason } => Some(reason.clone()),
        _ => None,
    };
    let failures: Vec<serde_json::Value> = verdict
        .partitions
        .iter()
        .filter_map(|p| p.explanation.as_ref())
        .map(|e| {
            let prefix: Vec<serde_json::Value> = e
                .prefix
                .iter()
                .zip(&e.states[1..])
                .map(|(&id, state)| json!({"op": history.operations[id], "state_after": state}))
                .collect();
            json!({
                "key": e.key,
                "initial_state": e.states[0],
                "prefix": prefix,
                "failing_op": history.operations[e.failing_op],
            })
        })
        .collect();
    json!({
        "valid": valid,
        "reason": reason,
        "result": verdict.result,
        "operations": history.operations.len(),
        "partitions": verdict.partitions,
        "failures": failures,
    })
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HTML_STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:32px}\
.bad{color:#b00020}.good{color:#1b5e20}\
svg{border:1px solid #ddd;background:#fafafa}\
rect.op{fill:#cfd8dc;stroke:#607d8b}rect.op.unknown{stroke-dasharray:4 3;fill:#eceff1}\
rect.op.prefix{fill:#a5d6a7;stroke:#2e7d32}rect.op.failing{fill:#ef9a9a;stroke:#b00020;stroke-width:2}\
rect.op.hover{stroke:#000;stroke-width:2}\
text{font:11px monospace;pointer-events:none}text.proc{font-weight:bold}\
#detail{white-space:pre-wrap;font:12px monospace;background:#f5f5f5;padding:8px;min-height:3em}\
ol{font:12px monospace}";

const HTML_SCRIPT: &str = "document.querySelectorAll('rect.op').forEach(function(r){\
r.addEventListener('mouseenter',function(){r.classList.add('hover');\
document.getElementById('detail').textContent=r.dataset.detail;});\
r.addEventListener('mouseleave',function(){r.classList.remove('hover');});});";

/// A standalone HTML page drawing each failing partition as a timeline.
pub fn html(history: &History, verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Faultline: {}</title>\
         <style>{HTML_STYLE}</style></head><body>",
        escape(&verdict_word(&verdict.result))
    );
    let class = if verdict.result == CheckResult::Valid {
        "good"
    } else {
        "bad"
    };
    let _ = write!(
        out,
        "<h1 class=\"{class}\">{}</h1><p>{} operations, {} partitions.</p>\
         <div id=\"detail\">Hover over an operation for details.</div>",
        escape(&verdict_word(&verdict.result)),
        history.operations.len(),
        verdict.partitions.len()
    );
    for partition in &verdict.partitions {
        if let Some(explanation) = &partition.explanation {
            write_timeline(&mut out, history, partition, explanation);
        }
    }
    let _ = write!(out, "<script>{HTML_SCRIPT}</script></body></html>");
    out
}

fn write_timeline(
    out: &mut String,
    history: &History,
    partition: &PartitionResult,
    explanation: &Explanation,
) {
    const ROW_PX: usize = 28;
    const COLUMN_PX: usize = 14;
    const LABEL_PX: usize = 90;
    let ops: Vec<&Operation> = partition
        .operations
        .iter()
        .map(|&id| &history.operations[id])
        .collect();
    // Rank-compress time: every distinct instant gets a column; unknown ends go past the last.
    let mut instants: Vec<u64> = ops
        .iter()
        .flat_map(|op| std::iter::once(op.invoke_time).chain(op.complete_time))
        .collect();
    instants.sort_unstable();
    instants.dedup();
    let column = |t: u64| instants.partition_point(|&x| x < t);
    let end_column = instants.len() + 1;
    let processes: BTreeMap<u64, usize> = ops
        .iter()
        .map(|op| op.process)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(row, p)| (p, row))
        .collect();
    let order: BTreeMap<usize, usize> = explanation
        .prefix
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i + 1))
        .collect();
    let width = LABEL_PX + (end_column + 1) * COLUMN_PX;
    let height = processes.len() * ROW_PX + 10;
    let _ = write!(
        out,
        "<h2 class=\"bad\">{} is not linearizable</h2>\
         <p>Red: the operation whose completion no linearization gets past. Green, numbered: \
         the longest linearizable prefix, in linearization order. Dashed: unknown outcome.</p>\
         <svg width=\"{width}\" height=\"{height}\">",
        escape(&key_label(&explanation.key))
    );
    for (&process, &row) in &processes {
        let _ = write!(
            out,
            "<text class=\"proc\" x=\"4\" y=\"{}\">process {process}</text>",
            row * ROW_PX + 22
        );
    }
    for op in &ops {
        let row = processes[&op.process];
        let start = column(op.invoke_time);
        let end = match (op.outcome, op.complete_time) {
            (Outcome::Unknown, _) | (_, None) => end_column,
            (_, Some(t)) => column(t),
        };
        let mut classes = String::from("op");
        if op.outcome == Outcome::Unknown {
            classes.push_str(" unknown");
        }
        let mut label = op.f.clone();
        if op.id == explanation.failing_op {
            classes.push_str(" failing");
        } else if let Some(n) = order.get(&op.id) {
            classes.push_str(" prefix");
            label = format!("{n}. {label}");
        }
        let x = LABEL_PX + start * COLUMN_PX;
        let w = ((end - start) * COLUMN_PX).max(COLUMN_PX / 2);
        let y = row * ROW_PX + 6;
        let _ = write!(
            out,
            "<rect class=\"{classes}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{}\" \
             data-detail=\"{}\"><title>{}</title></rect><text x=\"{}\" y=\"{}\">{}</text>",
            ROW_PX - 8,
            escape(&describe_operation(op)),
            escape(&describe_operation(op)),
            x + 3,
            y + 14,
            escape(&label)
        );
    }
    out.push_str("</svg><p>Longest linearizable prefix, with the state after each:</p><ol>");
    for (i, &id) in explanation.prefix.iter().enumerate() {
        let _ = write!(
            out,
            "<li>{} &rarr; {}</li>",
            escape(&describe_operation(&history.operations[id])),
            escape(&explanation.states[i + 1])
        );
    }
    let _ = write!(
        out,
        "</ol><p class=\"bad\">Cannot get past: {}<br>from state {}</p>",
        escape(&describe_operation(
            &history.operations[explanation.failing_op]
        )),
        escape(explanation.states.last().map(String::as_str).unwrap_or("?"))
    );
}
