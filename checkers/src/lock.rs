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
//! - **lease-expired-early**: a holder's keep-alive was answered NOT_FOUND (its lease had
//!   run out) before the TTL of an earlier acknowledged renewal of the same lease had
//!   passed since that renewal was invoked. The TTL is a minimum: the leader counts it from
//!   when it took the renewal, which is after the invocation, and a new leader extends
//!   every lease rather than shortening it. Only clock faults excuse it (a leader whose
//!   clock runs fast counts the TTL short): renewals whose span meets a clock fault's
//!   window are not judged. The same is seen by a successor: another client takes the
//!   lock, before the holder's release, within the TTL of an acknowledged renewal of the
//!   holder's lease.
//!
//! History form (the `lock` workload): `acquire` with `[token, lease]` (or the token
//! alone) as its completion value;
//! `write` with `[value, token]` on completion; `stall` (ms) and `release` are only used to
//! count how often a stalled holder was overtaken (the condition the check needs); `hold`
//! is a section held with keep-alives running. `renew` (the keep-alives, processes of their
//! own) has the lease id as its input and the TTL granted (ms) as its output, and fails
//! when the node answered NOT_FOUND. Only `ok` operations are used, and failed renewals:
//! a write whose outcome is unknown proves nothing either way.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{History, Operation, Outcome};

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockError {
    /// `stale-token-accepted`, `token-order` or `lease-expired-early`.
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
    /// Keep-alive renewals acknowledged, and renewals acknowledged after one of the same
    /// lease failed or went unanswered (a lease kept alive across an outage or a leader
    /// change: the condition an extension-on-election bug needs).
    pub renewals: usize,
    pub renewals_after_outage: usize,
    /// Renewals not judged for early expiry because a clock fault was in force.
    pub renewals_excused: usize,
    pub errors: Vec<LockError>,
}

struct Write<'a> {
    op: &'a Operation,
    token: i64,
    value: i64,
}

/// A critical section: a successful acquire, and when its release was invoked.
struct Section<'a> {
    lock: String,
    token: i64,
    lease: i64,
    acquire: &'a Operation,
    released_at: u64,
}

/// An acquire's token, and its lease when the history gives one (`[token, lease]`).
fn acquired(op: &Operation) -> Option<(i64, Option<i64>)> {
    let output = op.output.as_ref()?;
    if let Some(token) = output.as_int() {
        return Some((token, None));
    }
    match output.as_list()? {
        [token, lease] => Some((token.as_int()?, Some(lease.as_int()?))),
        _ => None,
    }
}

fn token_of_write(op: &Operation) -> Option<(i64, i64)> {
    match op.output.as_ref()?.as_list()? {
        [value, token] => Some((value.as_int()?, token.as_int()?)),
        _ => None,
    }
}

/// Checks a lock workload's history with no clock faults.
pub fn check_lock(history: &History) -> LockVerdict {
    check_lock_with(history, &[])
}

/// Checks a lock workload's history; `clock_faults` are the (start, end) ns windows of
/// faults that may make a leader's clock run fast.
pub fn check_lock_with(history: &History, clock_faults: &[(u64, u64)]) -> LockVerdict {
    let mut verdict = LockVerdict::default();
    // lock -> accepted writes; lock -> successful acquires (op, token).
    let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut acquires: BTreeMap<String, Vec<(&Operation, i64)>> = BTreeMap::new();
    // The token each process's stall sat in, for counting overtaken stalls.
    let mut held: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    let mut stalls: Vec<(&Operation, String, i64)> = Vec::new();
    // lease -> its renewals, in invocation order.
    let mut renewals: BTreeMap<i64, Vec<&Operation>> = BTreeMap::new();
    // Critical sections whose lease is known, and each process's open one.
    let mut sections: Vec<Section> = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for op in &history.operations {
        let Some(lock) = op.key.clone() else {
            continue;
        };
        match (op.f.as_str(), op.outcome) {
            ("acquire", Outcome::Ok) => {
                if let Some((token, lease)) = acquired(op) {
                    verdict.acquires += 1;
                    acquires.entry(lock.clone()).or_default().push((op, token));
                    if let Some(lease) = lease {
                        sections.push(Section {
                            lock: lock.clone(),
                            token,
                            lease,
                            acquire: op,
                            released_at: u64::MAX,
                        });
                        open.insert(op.process, sections.len() - 1);
                    }
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
                if let Some(index) = open.remove(&op.process) {
                    sections[index].released_at = op.invoke_time;
                }
            }
            ("renew", _) => {
                if let Some(lease) = op.input.as_int() {
                    renewals.entry(lease).or_default().push(op);
                }
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
    for (lease, list) in &renewals {
        early_expiry(*lease, list, clock_faults, &mut verdict);
    }
    for section in &sections {
        taken_early(section, &acquires, &renewals, clock_faults, &mut verdict);
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

/// One lease's renewals in invocation order: each NOT_FOUND is compared with the
/// acknowledged renewal that promised the latest expiry among those completed before it
/// was invoked.
fn early_expiry(
    lease: i64,
    renewals: &[&Operation],
    clock_faults: &[(u64, u64)],
    verdict: &mut LockVerdict,
) {
    // (promised until, the renewal), for acknowledged renewals completed so far.
    let mut promised: Option<(u64, &Operation)> = None;
    let mut outage = false;
    for op in renewals {
        match op.outcome {
            Outcome::Ok => {
                verdict.renewals += 1;
                if outage {
                    verdict.renewals_after_outage += 1;
                    outage = false;
                }
                let Some(ttl_ms) = op.output.as_ref().and_then(|v| v.as_int()) else {
                    continue;
                };
                let until = op
                    .invoke_time
                    .saturating_add((ttl_ms.max(0) as u64).saturating_mul(1_000_000));
                if promised.is_none_or(|(u, _)| until > u) {
                    promised = Some((until, op));
                }
            }
            Outcome::Unknown => outage = true,
            Outcome::Fail => {
                let (Some((until, renewed)), Some(answered)) = (promised, op.complete_time) else {
                    continue;
                };
                if answered >= until {
                    continue;
                }
                let (from, to) = (renewed.invoke_time, answered);
                if clock_faults.iter().any(|&(s, e)| s <= to && from <= e) {
                    verdict.renewals_excused += 1;
                    continue;
                }
                let ttl_ms = renewed
                    .output
                    .as_ref()
                    .and_then(|v| v.as_int())
                    .unwrap_or(0);
                verdict.errors.push(LockError {
                    kind: "lease-expired-early",
                    lock: op.key.clone().unwrap_or_default(),
                    ops: vec![renewed.id, op.id],
                    message: format!(
                        "lease {lease} was renewed for {ttl_ms} ms by a keep-alive invoked at \
                         {:.3} s, yet a keep-alive answered at {:.3} s found it gone, {} ms \
                         before that TTL had passed: the lease ran out early (did a new \
                         leader forget the renewal?)",
                        renewed.invoke_time as f64 / 1e9,
                        answered as f64 / 1e9,
                        (until - answered) / 1_000_000
                    ),
                });
            }
        }
    }
}

/// Whether a later holder took `section`'s lock before its release while an acknowledged
/// renewal still promised its lease: the lease ran out early, seen by the successor.
fn taken_early(
    section: &Section,
    acquires: &BTreeMap<String, Vec<(&Operation, i64)>>,
    renewals: &BTreeMap<i64, Vec<&Operation>>,
    clock_faults: &[(u64, u64)],
    verdict: &mut LockVerdict,
) {
    let Some(renewed) = renewals.get(&section.lease) else {
        return;
    };
    let successor = acquires
        .get(&section.lock)
        .into_iter()
        .flatten()
        .filter(|(op, token)| *token > section.token && op.id != section.acquire.id)
        .filter_map(|(op, _)| Some((op.complete_time?, *op)))
        .filter(|(taken, _)| *taken < section.released_at)
        .min_by_key(|(taken, _)| *taken);
    let Some((taken, successor)) = successor else {
        return;
    };
    // The renewal, completed before the successor's acquire did, that promised the most.
    let promise = renewed
        .iter()
        .filter(|r| r.outcome == Outcome::Ok && r.complete_time.is_some_and(|c| c < taken))
        .filter_map(|r| {
            let ttl_ms = r.output.as_ref()?.as_int()?.max(0) as u64;
            Some((r.invoke_time.saturating_add(ttl_ms * 1_000_000), ttl_ms, *r))
        })
        .max_by_key(|(until, _, _)| *until);
    let Some((until, ttl_ms, renewal)) = promise else {
        return;
    };
    if taken >= until {
        return;
    }
    if clock_faults
        .iter()
        .any(|&(s, e)| s <= taken && renewal.invoke_time <= e)
    {
        verdict.renewals_excused += 1;
        return;
    }
    verdict.errors.push(LockError {
        kind: "lease-expired-early",
        lock: section.lock.clone(),
        ops: vec![section.acquire.id, renewal.id, successor.id],
        message: format!(
            "process {} took lock {} with token {} at {:.3} s while process {} held it with \
             token {}, unreleased, and its lease {} had been renewed for {ttl_ms} ms by a \
             keep-alive invoked at {:.3} s: the lease ran out {} ms early (did a new leader \
             forget the renewal?)",
            successor.process,
            section.lock,
            acquired(successor).map_or(0, |(t, _)| t),
            taken as f64 / 1e9,
            section.acquire.process,
            section.token,
            section.lease,
            renewal.invoke_time as f64 / 1e9,
            (until - taken) / 1_000_000
        ),
    });
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
        "lock: {} acquires, {} writes accepted, {} refused, {} stalled holders overtaken, \
         {} renewals ({} after an outage, {} not judged under clock faults): {}\n",
        verdict.acquires,
        verdict.writes_accepted,
        verdict.writes_refused,
        verdict.stalls_overtaken,
        verdict.renewals,
        verdict.renewals_after_outage,
        verdict.renewals_excused,
        if verdict.valid {
            "fencing held, no lease ran out early"
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

    const MS: u64 = 1_000_000;

    fn renew(id: usize, outcome: Outcome, (invoke, complete): (u64, u64)) -> Operation {
        let mut renewal = op(
            id,
            1 << 32,
            "renew",
            match outcome {
                Outcome::Ok => Value::Int(2_000),
                _ => Value::Nil,
            },
            outcome,
            (invoke * MS, complete * MS),
        );
        renewal.input = Value::Int(77);
        if outcome == Outcome::Unknown {
            renewal.output = None;
        }
        renewal
    }

    /// Renewals of one 2 s lease every 700 ms; one unanswered (the leader killed), then
    /// NOT_FOUND `gone_at` ms in.
    fn renewals(gone_at: u64) -> History {
        History {
            operations: vec![
                renew(0, Outcome::Ok, (700, 705)),
                renew(1, Outcome::Ok, (1_400, 1_405)),
                renew(2, Outcome::Unknown, (2_100, 2_800)),
                renew(3, Outcome::Fail, (gone_at - 5, gone_at)),
            ],
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn a_lease_gone_within_the_ttl_of_a_renewal_is_caught() {
        let verdict = check_lock(&renewals(3_000));
        assert!(!verdict.valid);
        assert_eq!(verdict.errors[0].kind, "lease-expired-early");
        assert_eq!(verdict.errors[0].ops, vec![1, 3]);
        assert_eq!(verdict.renewals, 2);
        assert!(
            text(&verdict).contains("400 ms before"),
            "{}",
            text(&verdict)
        );
    }

    #[test]
    fn a_lease_gone_after_the_ttl_is_valid_and_a_clock_fault_excuses_an_early_one() {
        let verdict = check_lock(&renewals(3_401));
        assert!(verdict.valid, "{verdict:?}");
        let verdict = check_lock_with(&renewals(3_000), &[(2_500 * MS, 2_600 * MS)]);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.renewals_excused, 1);
    }

    #[test]
    fn a_lock_taken_within_the_ttl_of_the_holders_renewal_is_caught() {
        let mut history = renewals(3_000);
        history.operations.truncate(3);
        let mut held = op(
            3,
            1,
            "acquire",
            Value::List(vec![Value::Int(5), Value::Int(77)]),
            Outcome::Ok,
            (0, 10 * MS),
        );
        held.id = 3;
        let taken = |at: u64| {
            op(
                4,
                2,
                "acquire",
                Value::List(vec![Value::Int(9), Value::Int(78)]),
                Outcome::Ok,
                (100 * MS, at * MS),
            )
        };
        history.operations.push(held);
        history.operations.push(taken(3_000));
        let verdict = check_lock(&history);
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.errors[0].kind, "lease-expired-early");
        assert_eq!(verdict.errors[0].ops, vec![3, 1, 4]);
        // After the promise ran out, or after the holder's release, it is the lock's due.
        history.operations[4] = taken(3_401);
        assert!(check_lock(&history).valid);
        history.operations[4] = taken(3_000);
        history.operations.push(op(
            5,
            1,
            "release",
            Value::Int(1),
            Outcome::Ok,
            (2_950 * MS, 3_010 * MS),
        ));
        assert!(check_lock(&history).valid);
    }

    #[test]
    fn a_renewal_after_an_outage_is_counted() {
        let mut history = renewals(3_000);
        history.operations[3] = renew(3, Outcome::Ok, (2_900, 2_905));
        let verdict = check_lock(&history);
        assert!(verdict.valid);
        assert_eq!((verdict.renewals, verdict.renewals_after_outage), (3, 1));
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
