//! The set checker, after Jepsen's `set` workload: clients add unique elements, and a final
//! read (after the faults heal) returns the whole set. Every acknowledged add must be in it,
//! and nothing may be in it that was never added.
//!
//! Operations: `add` with the element as input (an integer), and `read` whose output is the
//! list of elements read. Only the last successful read counts: it is the one issued after
//! healing, when every acknowledged add must be visible (earlier reads, if any, may be
//! concurrent with adds).
//!
//! - **lost**: an add that completed `ok`, absent from the final read. Acknowledged data
//!   loss: the history is invalid.
//! - **unexpected**: an element in the final read that no add ever tried. Invalid.
//! - **recovered**: an add whose outcome was unknown (`info`), present in the final read. Fine:
//!   it took effect after all.
//! - An add that `fail`ed but is present is **unexpected** too: the store said it did not
//!   happen.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::history::{History, Outcome, Value};

/// Elements listed in a verdict are capped, so that a huge loss stays readable.
const ELEMENTS_SHOWN_MAX: usize = 50;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetVerdict {
    pub valid: bool,
    /// False if no final read succeeded: then nothing can be said.
    pub read: bool,
    pub attempted: usize,
    pub acknowledged: usize,
    /// Elements the final read returned.
    pub read_count: usize,
    pub lost: Vec<i64>,
    pub unexpected: Vec<i64>,
    pub recovered: Vec<i64>,
}

impl SetVerdict {
    /// One paragraph for people.
    pub fn describe(&self) -> String {
        if !self.read {
            return "set: no read succeeded after the adds, so nothing can be said".into();
        }
        let list = |items: &[i64]| {
            let shown: Vec<String> = items
                .iter()
                .take(ELEMENTS_SHOWN_MAX)
                .map(i64::to_string)
                .collect();
            let more = items.len().saturating_sub(ELEMENTS_SHOWN_MAX);
            if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        let mut text = format!(
            "set: {} adds attempted, {} acknowledged, final read returned {}",
            self.attempted, self.acknowledged, self.read_count
        );
        if !self.lost.is_empty() {
            text.push_str(&format!(
                "\nLOST ({}): acknowledged adds missing from the final read: {}",
                self.lost.len(),
                list(&self.lost)
            ));
        }
        if !self.unexpected.is_empty() {
            text.push_str(&format!(
                "\nUNEXPECTED ({}): read but never successfully added: {}",
                self.unexpected.len(),
                list(&self.unexpected)
            ));
        }
        if !self.recovered.is_empty() {
            text.push_str(&format!(
                "\nrecovered ({}): adds of unknown outcome that took effect: {}",
                self.recovered.len(),
                list(&self.recovered)
            ));
        }
        text
    }
}

/// Checks a set history (see the module doc).
pub fn check_set(history: &History) -> SetVerdict {
    let mut attempted = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut final_read: Option<&[Value]> = None;
    for op in &history.operations {
        match op.f.as_str() {
            "add" => {
                let Some(element) = op.input.as_int() else {
                    continue;
                };
                attempted.insert(element);
                match op.outcome {
                    Outcome::Ok => acknowledged.insert(element),
                    Outcome::Fail => refused.insert(element),
                    Outcome::Unknown => unknown.insert(element),
                };
            }
            "read" if op.outcome == Outcome::Ok => {
                if let Some(items) = op.output.as_ref().and_then(Value::as_list) {
                    final_read = Some(items);
                }
            }
            _ => {}
        }
    }
    let Some(items) = final_read else {
        return SetVerdict {
            valid: true,
            read: false,
            attempted: attempted.len(),
            acknowledged: acknowledged.len(),
            read_count: 0,
            lost: Vec::new(),
            unexpected: Vec::new(),
            recovered: Vec::new(),
        };
    };
    let read: BTreeSet<i64> = items.iter().filter_map(Value::as_int).collect();
    let lost: Vec<i64> = acknowledged.difference(&read).copied().collect();
    let unexpected: Vec<i64> = read
        .iter()
        .copied()
        .filter(|e| !attempted.contains(e) || refused.contains(e))
        .collect();
    let recovered: Vec<i64> = unknown.intersection(&read).copied().collect();
    SetVerdict {
        valid: lost.is_empty() && unexpected.is_empty(),
        read: true,
        attempted: attempted.len(),
        acknowledged: acknowledged.len(),
        read_count: read.len(),
        lost,
        unexpected,
        recovered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Format, read_history};

    fn history(lines: &[&str]) -> History {
        read_history(&lines.join("\n"), Format::Jsonl).unwrap()
    }

    #[test]
    fn every_acknowledged_add_read_back_is_valid() {
        let h = history(&[
            r#"{"type":"invoke","process":0,"f":"add","value":1}"#,
            r#"{"type":"ok","process":0,"f":"add","value":1}"#,
            r#"{"type":"invoke","process":1,"f":"add","value":2}"#,
            r#"{"type":"info","process":1,"f":"add","value":2}"#,
            r#"{"type":"invoke","process":2,"f":"read"}"#,
            r#"{"type":"ok","process":2,"f":"read","value":[1,2]}"#,
        ]);
        let verdict = check_set(&h);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.recovered, [2]);
    }

    #[test]
    fn a_lost_acknowledged_add_and_an_unexpected_element_are_named() {
        let h = history(&[
            r#"{"type":"invoke","process":0,"f":"add","value":1}"#,
            r#"{"type":"ok","process":0,"f":"add","value":1}"#,
            r#"{"type":"invoke","process":0,"f":"add","value":3}"#,
            r#"{"type":"fail","process":0,"f":"add","value":3,"not_applied":true}"#,
            r#"{"type":"invoke","process":2,"f":"read"}"#,
            r#"{"type":"ok","process":2,"f":"read","value":[3,9]}"#,
        ]);
        let verdict = check_set(&h);
        assert!(!verdict.valid);
        assert_eq!(verdict.lost, [1]);
        assert_eq!(verdict.unexpected, [3, 9]);
        let text = verdict.describe();
        assert!(
            text.contains("LOST (1)") && text.contains("UNEXPECTED (2)"),
            "{text}"
        );
    }

    #[test]
    fn without_a_successful_read_nothing_is_claimed() {
        let h = history(&[
            r#"{"type":"invoke","process":0,"f":"add","value":1}"#,
            r#"{"type":"ok","process":0,"f":"add","value":1}"#,
            r#"{"type":"invoke","process":2,"f":"read"}"#,
            r#"{"type":"info","process":2,"f":"read"}"#,
        ]);
        let verdict = check_set(&h);
        assert!(!verdict.read);
        assert!(verdict.describe().contains("nothing can be said"));
    }
}
