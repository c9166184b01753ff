//! Anomalies in words and pictures.
//!
//! A cycle is explained one edge at a time, naming the transactions T1, T2, ... in cycle
//! order: "T2 read x ending in 3, which T1 appended; T1 read y up to 5, missing T2's next
//! append 6". [`cycle_text`] gives the long form with each transaction's operations;
//! [`cycle_svg`] draws the cycle as a ring of transactions with labelled arrows, as a
//! standalone SVG (no graphviz needed).

use std::fmt::Write as _;

use super::history::TxnHistory;
use super::{CycleCase, Step};
use crate::history::Value;

fn value_text(v: &Option<Value>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into())
}

/// One step as a clause, with the two transactions' short names.
pub fn step_clause(step: &Step, a: &str, b: &str, register: bool) -> String {
    let key = value_text(&step.key);
    let value = value_text(&step.value);
    let value2 = value_text(&step.value2);
    let initial = matches!(step.value, Some(Value::Nil));
    match (step.rel, register) {
        ("ww", false) => format!("{b} appended {value2} to {key} right after {a}'s {value}"),
        ("wr", false) => format!("{b} read {key} ending in {value}, which {a} appended"),
        ("rw", false) if initial => {
            format!("{a} read {key} empty, and {b} appended its first element {value2}")
        }
        ("rw", false) => {
            format!("{a} read {key} up to {value}, missing {b}'s next append {value2}")
        }
        ("ww", true) => format!("{b} overwrote {a}'s {key} = {value} with {value2}"),
        ("wr", true) => format!("{b} read {key} = {value}, which {a} wrote"),
        ("rw", true) if initial => format!("{a} read {key} = nil, and {b} wrote it {value2}"),
        ("rw", true) => format!("{a} read {key} = {value}, which {b} overwrote with {value2}"),
        ("process", _) => format!(
            "{b} ran after {a} in process {}",
            step.process.map(|p| p.to_string()).unwrap_or_default()
        ),
        ("realtime", _) => match step.between {
            Some((done, began)) => {
                format!("{b} began (event {began}) after {a} committed (event {done})")
            }
            None => format!("{b} began after {a} committed"),
        },
        (other, _) => format!("{a} precedes {b} by {other}"),
    }
}

fn is_register(history: &TxnHistory) -> bool {
    history
        .mops
        .iter()
        .any(|m| m.f == super::history::MopF::Write)
}

/// The cycle in one sentence: each step, then the contradiction.
pub fn cycle_sentence(history: &TxnHistory, case: &CycleCase) -> String {
    let register = is_register(history);
    let n = case.steps.len();
    let names: Vec<String> = (1..=n).map(|i| format!("T{i}")).collect();
    let clauses: Vec<String> = case
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_clause(s, &names[i], &names[(i + 1) % n], register))
        .collect();
    let ids: Vec<String> = case.cycle[..n]
        .iter()
        .enumerate()
        .map(|(i, idx)| format!("T{} = #{idx}", i + 1))
        .collect();
    format!(
        "{}; so T1 precedes itself ({})",
        clauses.join("; "),
        ids.join(", ")
    )
}

/// The long form: the transactions, then why each precedes the next.
pub fn cycle_text(history: &TxnHistory, kind: &str, case: &CycleCase) -> String {
    let register = is_register(history);
    let n = case.steps.len();
    let mut out = String::new();
    let _ = writeln!(out, "{kind}: a cycle of {n} transactions");
    for (i, &idx) in case.cycle[..n].iter().enumerate() {
        let text = txn_by_index(history, idx)
            .map(|t| history.txn_text(t))
            .unwrap_or_default();
        let _ = writeln!(out, "  T{} = #{idx} {text}", i + 1);
    }
    for (i, s) in case.steps.iter().enumerate() {
        let (a, b) = (format!("T{}", i + 1), format!("T{}", (i + 1) % n + 1));
        let lead = if i + 1 == n { "and yet" } else { "" };
        let _ = writeln!(
            out,
            "  - {a} < {b}: {lead}{}{}",
            if lead.is_empty() { "" } else { " " },
            step_clause(s, &a, &b, register)
        );
    }
    let _ = writeln!(
        out,
        "  so T1 < T1: no order of these transactions explains what they saw."
    );
    out
}

fn txn_by_index(history: &TxnHistory, index: usize) -> Option<usize> {
    history
        .txns
        .binary_search_by_key(&(index as u32), |t| t.index)
        .ok()
        .or_else(|| history.txns.iter().position(|t| t.index as usize == index))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The cycle as an SVG ring: one circle per transaction, an arrow per dependency, labelled
/// with its kind and key. Colours: ww blue, wr green, rw red, process/realtime grey.
pub fn cycle_svg(history: &TxnHistory, kind: &str, case: &CycleCase) -> String {
    let n = case.steps.len().max(1);
    let radius = 60.0 + 28.0 * n as f64;
    let size = 2.0 * radius + 260.0;
    let (cx, cy) = (size / 2.0, size / 2.0 + 10.0);
    let at = |i: usize| {
        let angle = -std::f64::consts::FRAC_PI_2 + 2.0 * std::f64::consts::PI * i as f64 / n as f64;
        (cx + radius * angle.cos(), cy + radius * angle.sin())
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size:.0}" height="{:.0}" font-family="sans-serif" font-size="12">"##,
        size + 20.0
    );
    let _ = write!(
        svg,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>"##
    );
    let _ = write!(
        svg,
        r##"<text x="{:.0}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"##,
        cx,
        escape(kind)
    );
    let node_r = 22.0;
    let register = is_register(history);
    for (i, step) in case.steps.iter().enumerate() {
        let (x1, y1) = at(i);
        let (x2, y2) = at((i + 1) % n);
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        let (sx, sy) = (x1 + ux * node_r, y1 + uy * node_r);
        let (ex, ey) = (x2 - ux * node_r, y2 - uy * node_r);
        // Bend outwards so two-transaction cycles show two arrows.
        let (mx, my) = ((sx + ex) / 2.0, (sy + ey) / 2.0);
        let (ox, oy) = (mx - cx, my - cy);
        let olen = (ox * ox + oy * oy).sqrt().max(1.0);
        let bend = if n == 2 { 50.0 } else { 18.0 };
        let (qx, qy) = (mx + ox / olen * bend, my + oy / olen * bend);
        let colour = match step.rel {
            "ww" => "#1f5fbf",
            "wr" => "#2e8b3a",
            "rw" => "#c0392b",
            _ => "#777777",
        };
        let _ = write!(
            svg,
            r##"<path d="M{sx:.1},{sy:.1} Q{qx:.1},{qy:.1} {ex:.1},{ey:.1}" fill="none" stroke="{colour}" stroke-width="2" marker-end="url(#arrow)"/>"##
        );
        let label = match (&step.key, step.rel) {
            (Some(k), rel) => format!("{rel} {k}"),
            (None, rel) => rel.to_string(),
        };
        let (lx, ly) = (qx + ox / olen * 14.0, qy + oy / olen * 14.0);
        let _ = write!(
            svg,
            r##"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" fill="{colour}">{}</text>"##,
            escape(&label)
        );
        let clause = step_clause(
            step,
            &format!("T{}", i + 1),
            &format!("T{}", (i + 1) % n + 1),
            register,
        );
        let _ = write!(
            svg,
            r##"<text x="12" y="{:.0}" fill="{colour}">{}</text>"##,
            size - 10.0 - 16.0 * (n - i) as f64 + 16.0,
            escape(&clause)
        );
    }
    for i in 0..n {
        let (x, y) = at(i);
        let idx = case.cycle.get(i).copied().unwrap_or(0);
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{node_r}" fill="#fff8e0" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">T{}</text><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="9">#{idx}</text>"##,
            y - 1.0,
            i + 1,
            y + 11.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A verdict as text for a terminal: the answer, the models ruled out, then each anomaly
/// (cycles in long form; at most `SHOWN` cases of each kind).
pub fn report_text(history: &TxnHistory, verdict: &super::TxnVerdict) -> String {
    const SHOWN: usize = 5;
    let mut out = String::new();
    let s = &verdict.stats;
    let answer = match verdict.valid {
        super::Validity::Valid => "valid",
        super::Validity::Invalid => "INVALID",
        super::Validity::Unknown => "unknown",
    };
    let _ = writeln!(
        out,
        "{answer}: {} transactions, {} dependency edges, {} cyclic component(s)",
        s.txns, s.edges, s.sccs
    );
    if !verdict.anomaly_types.is_empty() {
        let _ = writeln!(out, "anomalies: {}", verdict.anomaly_types.join(", "));
    }
    if !verdict.not.is_empty() {
        let not: Vec<&str> = verdict.not.iter().map(String::as_str).collect();
        let _ = writeln!(out, "not: {}", not.join(", "));
    }
    if !verdict.also_not.is_empty() {
        let also: Vec<&str> = verdict.also_not.iter().map(String::as_str).collect();
        let _ = writeln!(out, "also not: {}", also.join(", "));
    }
    for (kind, cases) in &verdict.anomalies {
        let _ = writeln!(out, "\n{kind} ({}):", cases.len());
        for case in cases.iter().take(SHOWN) {
            match &case.cycle {
                Some(cycle) => {
                    for line in cycle_text(history, kind, cycle).lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
                None => {
                    let _ = writeln!(out, "  {}", case.message);
                }
            }
        }
        if cases.len() > SHOWN {
            let _ = writeln!(
                out,
                "  ... and {} more (--json lists them all)",
                cases.len() - SHOWN
            );
        }
    }
    out
}
