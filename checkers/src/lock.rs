//! The lock checker: mutual exclusion as fencing makes it safe.
//!
//! A lease-based lock cannot promise that two clients never believe they hold it at once:
//! a holder that pauses past its lease still believes it when it wakes. What it can promise,
//! with fencing tokens, is that the register it protects never accepts the paused holder's
//! write once a later holder has written: tokens grow with every holder, and the register
//! refuses a token lower than one it has accepted. So, per lock:
//!
//! - **stale-token-accepted**: an accepted write carries a lower token than an accepted
//!   write that completed before it was invoked. The critical sections whose writes were
//!   accepted then overlap: the older holder wrote inside the newer one's.
//! - **token-order**: an acquire that completed before another was invoked got a token at
//!   least as high (tokens must grow with real time), or two holders got the same token.
//!
//! History form (the `lock` workload): `acquire` with the token as its completion value;
//! `write` with `[value, token]` on completion; `stall` (ms) and `release` are only used to
//! count how often a stalled holder was overtaken (the condition the check needs). Only
//! `ok` operations are used: a write whose outcome is unknown proves nothing either way.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{History, Operation, Outcome};

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockError {
    /// `stale-token-accepted` or `token-order`.
    pub kind: &'static str,
    pub lock: String,
    /// The operations involved (ids), the earlier first.
    pub ops: Vec<usize>,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LockVerdict {
    pub valid: bool,
    /// Acquires that succeeded.
    pub acquires: usize,
    /// Writes accepted, and refused (a stale token's, or one the node turned down).
    pub writes_accepted: usize,
    pub writes_refused: usize,
    /// Stalls during which another client took the same lock: the condition a fencing
    /// bug needs. A run without one tested nothing about fencing.
    pub stalls_overtaken: usize,
    pub errors: Vec<LockError>,
}

struct Write<'a> {
    op: &'a Operation,
    token: i64,
    value: i64,
}

fn token_of_write(op: &Operation) -> Option<(i64, i64)> {
    match op.output.as_ref()?.as_list()? {
        [value, token] => Some((value.as_int()?, token.as_int()?)),
        _ => None,
    }
}

/// Checks a lock workload's history.
pub fn check_lock(history: &History) -> LockVerdict {
    let mut verdict = LockVerdict::default();
    // lock -> accepted writes; lock -> successful acquires (op, token).
    let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut acquires: BTreeMap<String, Vec<(&Operation, i64)>> = BTreeMap::new();
    // The token each process's stall sat in, for counting overtaken stalls.
    let mut held: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    let mut stalls: Vec<(&Operation, String, i64)> = Vec::new();
    for op in &history.operations {
        let Some(lock) = op.key.clone() else {
            continue;
        };
        match (op.f.as_str(), op.outcome) {
            ("acquire", Outcome::Ok) => {
                if let Some(token) = op.output.as_ref().and_then(|v| v.as_int()) {
                    verdict.acquires += 1;
                    acquires.entry(lock.clone()).or_default().push((op, token));
                    held.insert(op.process, (lock, token));
                }
            }
            ("write", Outcome::Ok) => {
                if let Some((value, token)) = token_of_write(op) {
                    verdict.writes_accepted += 1;
                    writes
                        .entry(lock)
                        .or_default()
                        .push(Write { op, token, value });
                }
            }
            ("write", Outcome::Fail) => verdict.writes_refused += 1,
            ("stall", _) => {
                if let Some((held_lock, token)) = held.get(&op.process)
                    && *held_lock == lock
                {
                    stalls.push((op, lock, *token));
                }
            }
            ("release", _) => {
                held.remove(&op.process);
            }
            _ => {}
        }
    }
    for (lock, list) in &writes {
        stale_tokens(lock, list, &mut verdict.errors);
    }
    for (lock, list) in &acquires {
        token_order(lock, list, &mut verdict.errors);
    }
    verdict.stalls_overtaken = stalls
        .iter()
        .filter(|(stall, lock, token)| {
            let end = stall.complete_time.unwrap_or(u64::MAX);
            acquires.get(lock).is_some_and(|list| {
                list.iter().any(|(acquire, other)| {
                    acquire.process != stall.process
                        && other > token
                        && acquire.complete_time.is_some_and(|t| t < end)
                })
            })
        })
        .count();
    verdict.valid = verdict.errors.is_empty();
    verdict
}

/// Accepted writes in invocation order; each is compared with the highest token among the
/// writes that completed before it was invoked.
fn stale_tokens(lock: &str, writes: &[Write], errors: &mut Vec<LockError>) {
    let mut by_completion: Vec<&Write> = writes.iter().collect();
    by_completion.sort_by_key(|w| w.op.complete_time.unwrap_or(u64::MAX));
    let mut by_invocation: Vec<&Write> = writes.iter().collect();
    by_invocation.sort_by_key(|w| w.op.invoke_time);
    let mut done = 0;
    let mut highest: Option<&Write> = None;
    for write in by_invocation {
        while done < by_completion.len()
            && by_completion[done]
                .op
                .complete_time
                .is_some_and(|t| t < write.op.invoke_time)
        {
            let finished = by_completion[done];
            if highest.is_none_or(|h| finished.token > h.token) {
                highest = Some(finished);
            }
            done += 1;
        }
        if let Some(newer) = highest
            && write.token < newer.token
        {
            errors.push(LockError {
                kind: "stale-token-accepted",
                lock: lock.to_string(),
                ops: vec![newer.op.id, write.op.id],
                message: format!(
                    "process {} wrote {} to lock {lock}'s register with token {} after process {}'s \
                     write of {} with the later holder's token {} had completed, and it was \
                     accepted: the older holder wrote inside the newer one's critical section",
                    write.op.process,
                    write.value,
                    write.token,
                    newer.op.process,
                    newer.value,
                    newer.token
                ),
            });
        }
    }
}

fn token_order(lock: &str, acquires: &[(&Operation, i64)], errors: &mut Vec<LockError>) {
    let mut by_completion: Vec<&(&Operation, i64)> = acquires.iter().collect();
    by_completion.sort_by_key(|(op, _)| op.complete_time.unwrap_or(u64::MAX));
    let mut by_invocation: Vec<&(&Operation, i64)> = acquires.iter().collect();
    by_invocation.sort_by_key(|(op, _)| op.invoke_time);
    let mut done = 0;
    let mut highest: Option<&(&Operation, i64)> = None;
    for acquire in by_invocation {
        while done < by_completion.len()
            && by_completion[done]
                .0
                .complete_time
                .is_some_and(|t| t < acquire.0.invoke_time)
        {
            let finished = by_completion[done];
            if highest.is_none_or(|h| finished.1 > h.1) {
                highest = Some(finished);
            }
            done += 1;
        }
        if let Some(earlier) = highest
            && acquire.1 <= earlier.1
        {
            errors.push(LockError {
                kind: "token-order",
                lock: lock.to_string(),
                ops: vec![earlier.0.id, acquire.0.id],
                message: format!(
                    "process {} took lock {lock} with token {} though process {} had taken it \
                     with token {} before it asked: a later holder's token must be higher",
                    acquire.0.process, acquire.1, earlier.0.process, earlier.1
                ),
            });
        }
    }
}

/// The verdict in words.
pub fn text(verdict: &LockVerdict) -> String {
    let mut out = format!(
        "lock: {} acquires, {} writes accepted, {} refused, {} stalled holders overtaken: {}\n",
        verdict.acquires,
        verdict.writes_accepted,
        verdict.writes_refused,
        verdict.stalls_overtaken,
        if verdict.valid {
            "fencing held"
        } else {
            "INVALID"
        }
    );
    for error in verdict.errors.iter().take(10) {
        out.push_str(&format!("  {}: {}\n", error.kind, error.message));
    }
    if verdict.errors.len() > 10 {
        out.push_str(&format!("  ... and {} more\n", verdict.errors.len() - 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    fn op(
        id: usize,
        process: u64,
        f: &str,
        output: Value,
        outcome: Outcome,
        (invoke, complete): (u64, u64),
    ) -> Operation {
        Operation {
            id,
            process,
            f: f.into(),
            key: Some("k0".into()),
            input: Value::Nil,
            output: Some(output),
            outcome,
            invoke_time: invoke,
            complete_time: Some(complete),
            line: None,
            not_applied: outcome == Outcome::Fail,
        }
    }

    fn write(value: i64, token: i64) -> Value {
        Value::List(vec![Value::Int(value), Value::Int(token)])
    }

    /// A holder stalls; another takes the lock and writes; the stalled one writes late.
    fn paused_holder(late_write: Outcome) -> History {
        History {
            operations: vec![
                op(0, 1, "acquire", Value::Int(5), Outcome::Ok, (0, 10)),
                op(1, 1, "write", write(1, 5), Outcome::Ok, (11, 20)),
                op(2, 1, "stall", Value::Int(3000), Outcome::Ok, (21, 3021)),
                op(3, 2, "acquire", Value::Int(9), Outcome::Ok, (5, 1500)),
                op(4, 2, "write", write(2, 9), Outcome::Ok, (1501, 1510)),
                op(5, 1, "write", write(3, 5), late_write, (3022, 3030)),
            ],
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn a_stale_tokens_write_refused_is_valid_and_counts_the_overtaken_stall() {
        let verdict = check_lock(&paused_holder(Outcome::Fail));
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.stalls_overtaken, 1);
        assert_eq!((verdict.writes_accepted, verdict.writes_refused), (2, 1));
    }

    #[test]
    fn a_stale_tokens_write_accepted_is_caught() {
        let verdict = check_lock(&paused_holder(Outcome::Ok));
        assert!(!verdict.valid);
        assert_eq!(verdict.errors.len(), 1);
        assert_eq!(verdict.errors[0].kind, "stale-token-accepted");
        assert_eq!(verdict.errors[0].ops, vec![4, 5]);
        assert!(
            text(&verdict).contains("token 5 after process 2"),
            "{}",
            text(&verdict)
        );
    }

    #[test]
    fn concurrent_writes_prove_nothing() {
        let mut history = paused_holder(Outcome::Ok);
        // The late write was in flight while the newer one completed: it may have
        // applied first.
        history.operations[5].invoke_time = 1505;
        assert!(check_lock(&history).valid);
    }

    #[test]
    fn tokens_must_grow_with_real_time() {
        let history = History {
            operations: vec![
                op(0, 1, "acquire", Value::Int(7), Outcome::Ok, (0, 10)),
                op(1, 1, "release", Value::Int(1), Outcome::Ok, (11, 20)),
                op(2, 2, "acquire", Value::Int(7), Outcome::Ok, (30, 40)),
            ],
            nemesis: Vec::new(),
        };
        let verdict = check_lock(&history);
        assert_eq!(verdict.errors.len(), 1);
        assert_eq!(verdict.errors[0].kind, "token-order");
    }
}
