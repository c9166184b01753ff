//! The bank checker (Jepsen's `bank`): transfers move money between accounts, reads see every
//! balance at once, and every read must see the same total (and, when configured, no negative
//! balance). A read that sees half of a transfer shows a wrong total: the checker names the
//! transfers that could explain it — those that may have been in flight during the read and
//! move the missing (or extra) amount.
//!
//! History form: `f: "transfer"` with value `[from, to, amount]` (or Jepsen's map
//! `{:from 1 :to 2 :amount 5}`, which EDN reads as key-value pairs); `f: "read"` with value
//! `[[account, balance], ...]` (Jepsen's `{0 10, 1 10}` the same way). Failed transfers did
//! nothing; `info` ones may have happened.

use serde::Serialize;

use crate::error::Error;
use crate::history::{History, Operation, Outcome, Value};

/// What a bank history must satisfy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankOptions {
    /// The total every read must see; `None` takes the first committed read's total (and
    /// says so).
    pub total: Option<i64>,
    /// Whether a negative balance is allowed.
    pub negative_balances: bool,
    /// The accounts every read must show; empty: any.
    pub accounts: Vec<i64>,
}

/// A problem with one read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BankError {
    /// `wrong-total`, `negative-value`, `missing-account`, `unexpected-account`.
    pub kind: &'static str,
    /// The read (operation id).
    pub op: usize,
    /// Its line in the file, if read from one.
    pub line: Option<usize>,
    /// What is wrong, in a sentence, with the transfers that could explain it.
    pub message: String,
    /// Transfers (operation ids) that could explain a wrong total.
    pub involved: Vec<usize>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BankVerdict {
    /// No error.
    pub valid: bool,
    /// Reads checked.
    pub reads: usize,
    /// Transfers seen (committed, failed, unknown).
    pub transfers: (usize, usize, usize),
    /// The total used, and whether it was inferred.
    pub total: i64,
    /// Whether `total` was taken from the first read.
    pub total_inferred: bool,
    /// Every problem found.
    pub errors: Vec<BankError>,
}

struct Transfer {
    op: usize,
    from: i64,
    to: i64,
    amount: i64,
}

fn field(pairs: &[Value], name: &str) -> Option<i64> {
    pairs.iter().find_map(|p| match p.as_list() {
        Some([Value::Str(k), v]) if k == name => v.as_int(),
        _ => None,
    })
}

fn transfer_of(op: &Operation) -> Result<Transfer, Error> {
    let bad = || Error::Model {
        id: op.id,
        line: op.line,
        message: format!(
            "a transfer's value is [from, to, amount] or {{from, to, amount}}; got {}",
            op.input
        ),
    };
    let items = op.input.as_list().ok_or_else(bad)?;
    let (from, to, amount) = match items {
        [Value::Int(f), Value::Int(t), Value::Int(a)] => (*f, *t, *a),
        pairs => (
            field(pairs, "from").ok_or_else(bad)?,
            field(pairs, "to").ok_or_else(bad)?,
            field(pairs, "amount").ok_or_else(bad)?,
        ),
    };
    Ok(Transfer {
        op: op.id,
        from,
        to,
        amount,
    })
}

fn balances_of(op: &Operation) -> Result<Vec<(i64, Option<i64>)>, Error> {
    let value = op.output.as_ref().unwrap_or(&Value::Nil);
    let bad = || Error::Model {
        id: op.id,
        line: op.line,
        message: format!("a read returns [[account, balance], ...]; got {value}"),
    };
    let items = value.as_list().ok_or_else(bad)?;
    items
        .iter()
        .map(|p| match p.as_list() {
            Some([Value::Int(a), Value::Int(b)]) => Ok((*a, Some(*b))),
            Some([Value::Int(a), Value::Nil]) => Ok((*a, None)),
            _ => Err(bad()),
        })
        .collect()
}

/// Checks a bank history.
pub fn check_bank(history: &History, options: &BankOptions) -> Result<BankVerdict, Error> {
    let mut transfers = Vec::new();
    let mut counts = (0, 0, 0);
    for op in &history.operations {
        match op.f.as_str() {
            "transfer" => {
                let t = transfer_of(op)?;
                match op.outcome {
                    Outcome::Ok => counts.0 += 1,
                    Outcome::Fail => counts.1 += 1,
                    Outcome::Unknown => counts.2 += 1,
                }
                if op.outcome != Outcome::Fail {
                    transfers.push(t);
                }
            }
            "read" => {}
            other => {
                return Err(Error::Model {
                    id: op.id,
                    line: op.line,
                    message: format!(
                        "the bank workload has transfer and read operations, not {other:?}"
                    ),
                });
            }
        }
    }
    let reads: Vec<&Operation> = history
        .operations
        .iter()
        .filter(|op| op.f == "read" && op.outcome == Outcome::Ok)
        .collect();
    let mut total = options.total;
    let inferred = total.is_none();
    let mut errors = Vec::new();
    for op in &reads {
        let balances = balances_of(op)?;
        // i128: hostile balances must not overflow the sum.
        let sum: i128 = balances
            .iter()
            .filter_map(|(_, b)| *b)
            .map(i128::from)
            .sum();
        let expected = i128::from(*total.get_or_insert(i64::try_from(sum).unwrap_or(i64::MAX)));
        for &account in &options.accounts {
            if !balances.iter().any(|(a, b)| *a == account && b.is_some()) {
                errors.push(BankError {
                    kind: "missing-account",
                    op: op.id,
                    line: op.line,
                    message: format!("read #{} shows no balance for account {account}", op.id),
                    involved: Vec::new(),
                });
            }
        }
        if !options.accounts.is_empty() {
            for (a, _) in &balances {
                if !options.accounts.contains(a) {
                    errors.push(BankError {
                        kind: "unexpected-account",
                        op: op.id,
                        line: op.line,
                        message: format!(
                            "read #{} shows account {a}, which the test does not have",
                            op.id
                        ),
                        involved: Vec::new(),
                    });
                }
            }
        }
        if !options.negative_balances {
            for (a, b) in &balances {
                if let Some(b) = b
                    && *b < 0
                {
                    errors.push(BankError {
                        kind: "negative-value",
                        op: op.id,
                        line: op.line,
                        message: format!(
                            "read #{} shows account {a} at {b}; negative balances are not allowed",
                            op.id
                        ),
                        involved: Vec::new(),
                    });
                }
            }
        }
        if sum != expected {
            let missing = expected - sum;
            // Transfers that may have been under way while the read ran: invoked before it
            // completed and not completed before it began.
            let read_start = op.invoke_time;
            let read_end = op.complete_time.unwrap_or(u64::MAX);
            let concurrent: Vec<&Transfer> = transfers
                .iter()
                .filter(|t| {
                    let top = &history.operations[t.op];
                    top.invoke_time <= read_end
                        && (top.outcome == Outcome::Unknown
                            || top.complete_time.is_none_or(|c| c >= read_start))
                })
                .collect();
            let matching: Vec<&&Transfer> = concurrent
                .iter()
                .filter(|t| i128::from(t.amount) == missing.abs())
                .collect();
            let explain: Vec<&&Transfer> = if matching.is_empty() {
                concurrent.iter().collect()
            } else {
                matching
            };
            let listed: Vec<String> = explain
                .iter()
                .take(8)
                .map(|t| {
                    let top = &history.operations[t.op];
                    let outcome = match top.outcome {
                        Outcome::Ok => "ok",
                        Outcome::Fail => "failed",
                        Outcome::Unknown => "unknown",
                    };
                    format!("#{} {}→{} {} ({outcome})", t.op, t.from, t.to, t.amount)
                })
                .collect();
            let direction = if missing > 0 { "missing" } else { "extra" };
            let explanation = if listed.is_empty() {
                "no transfer was in flight: money appeared or vanished at rest".to_string()
            } else {
                format!(
                    "it saw one side of {}: {}",
                    if explain.len() == 1 {
                        "this transfer"
                    } else {
                        "one of these transfers"
                    },
                    listed.join(", ")
                )
            };
            errors.push(BankError {
                kind: "wrong-total",
                op: op.id,
                line: op.line,
                message: format!(
                    "read #{} totals {sum}, not {expected} ({} {direction}); {explanation}",
                    op.id,
                    missing.abs()
                ),
                involved: explain.iter().map(|t| t.op).collect(),
            });
        }
    }
    Ok(BankVerdict {
        valid: errors.is_empty(),
        reads: reads.len(),
        transfers: counts,
        total: total.unwrap_or(0),
        total_inferred: inferred,
        errors,
    })
}

/// A verdict as text.
pub fn text(verdict: &BankVerdict) -> String {
    let mut out = format!(
        "{}: {} reads, {} transfers committed, {} failed, {} unknown; total {}{}\n",
        if verdict.valid { "valid" } else { "INVALID" },
        verdict.reads,
        verdict.transfers.0,
        verdict.transfers.1,
        verdict.transfers.2,
        verdict.total,
        if verdict.total_inferred {
            " (from the first read; give --total to fix it)"
        } else {
            ""
        }
    );
    for e in verdict.errors.iter().take(20) {
        out.push_str(&format!("  {}: {}\n", e.kind, e.message));
    }
    if verdict.errors.len() > 20 {
        out.push_str(&format!(
            "  ... and {} more (--json lists them all)\n",
            verdict.errors.len() - 20
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Format, read_history};

    const HISTORY: &str = r#"{"type":"invoke","process":0,"f":"read","value":null}
{"type":"ok","process":0,"f":"read","value":[[0,50],[1,50]]}
{"type":"invoke","process":1,"f":"transfer","value":[0,1,5]}
{"type":"invoke","process":0,"f":"read","value":null}
{"type":"ok","process":0,"f":"read","value":[[0,45],[1,50]]}
{"type":"ok","process":1,"f":"transfer","value":[0,1,5]}
{"type":"invoke","process":0,"f":"read","value":null}
{"type":"ok","process":0,"f":"read","value":[[0,45],[1,55]]}
"#;

    #[test]
    fn a_read_of_half_a_transfer_names_the_transfer() {
        let history = read_history(HISTORY, Format::Jsonl).unwrap();
        let v = check_bank(
            &history,
            &BankOptions {
                total: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!v.valid);
        assert_eq!(v.errors.len(), 1);
        let e = &v.errors[0];
        assert_eq!(e.kind, "wrong-total");
        assert_eq!(e.involved, vec![1]);
        assert!(
            e.message.contains("totals 95, not 100 (5 missing)") && e.message.contains("0→1 5"),
            "{}",
            e.message
        );
    }

    #[test]
    fn negative_balances_count_only_when_forbidden_and_jepsen_maps_read() {
        let edn = "{:type :invoke, :process 0, :f :transfer, :value {:from 0, :to 1, :amount 60}}\n\
                   {:type :ok, :process 0, :f :transfer, :value {:from 0, :to 1, :amount 60}}\n\
                   {:type :invoke, :process 0, :f :read, :value nil}\n\
                   {:type :ok, :process 0, :f :read, :value {0 -10, 1 110}}\n";
        let history = read_history(edn, Format::Edn).unwrap();
        let strict = check_bank(
            &history,
            &BankOptions {
                total: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            strict.errors.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec!["negative-value"]
        );
        let loose = check_bank(
            &history,
            &BankOptions {
                total: Some(100),
                negative_balances: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(loose.valid);
    }

    #[test]
    fn a_bad_value_names_its_line() {
        let text = "{\"type\":\"invoke\",\"process\":0,\"f\":\"transfer\",\"value\":[0,1]}\n";
        let history = read_history(text, Format::Jsonl).unwrap();
        let err = check_bank(&history, &BankOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("[from, to, amount]"),
            "{err}"
        );
    }
}
