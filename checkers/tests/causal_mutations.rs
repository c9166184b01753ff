//! Teeth for the causal checker: histories from a simulated causally consistent store (see
//! `common::causal::simulate`) are valid, and each mutation below makes them certainly invalid
//! and must be found. Every test asserts it mutated enough histories not to pass vacuously,
//! and names the seed of any failure; a seed replays with `simulate`.
//!
//! Mutation sites are chosen from program order and read-from alone (never from the checker's
//! own relations), so that each mutation is invalid for a reason a person can check.

mod common;

use std::collections::HashMap;

use common::causal::{StorePlan, simulate};
use faultline_checkers::{
    AnomalyKind, CausalOptions, CausalVerdict, ConsistencyLevel, History, Operation, Outcome,
    Value, check_causal,
};

const SEEDS: u64 = 150;
const MUTATED_MIN: usize = 100;

fn plan(seed: u64, convergent: bool) -> StorePlan {
    StorePlan {
        seed,
        sessions: 4,
        operations: 60,
        keys: 3,
        convergent,
        causal_delivery: true,
        unknown_percent: 10,
    }
}

fn check(h: &History, level: ConsistencyLevel) -> CausalVerdict {
    let options = CausalOptions {
        level,
        ..CausalOptions::default()
    };
    check_causal(h, &options).expect("generated histories are well-formed")
}

fn is_ok(op: &Operation, f: &str) -> bool {
    op.outcome == Outcome::Ok && op.f == f
}

/// The write (any outcome) of each (key, value).
fn writers(h: &History) -> HashMap<(Option<String>, Value), usize> {
    h.operations
        .iter()
        .filter(|op| op.f == "write")
        .map(|op| ((op.key.clone(), op.input.clone()), op.id))
        .collect()
}

/// Mutates histories of `SEEDS` seeds; each mutated one must be invalid at CC with one of
/// `expected` among its anomalies.
fn run(expected: &[AnomalyKind], mutate: impl Fn(&mut History, u64) -> bool) {
    let mut mutated = 0;
    for seed in 0..SEEDS {
        let mut h = simulate(plan(seed, true));
        let verdict = check(&h, ConsistencyLevel::CausalConvergence);
        assert!(
            verdict.valid,
            "seed {seed}: generated history: {verdict:#?}"
        );
        if !mutate(&mut h, seed) {
            continue;
        }
        h.validate();
        mutated += 1;
        let verdict = check(&h, ConsistencyLevel::CausalConsistency);
        assert!(!verdict.valid, "seed {seed}: mutation not detected");
        assert!(
            verdict.anomalies.iter().any(|a| expected.contains(&a.kind)),
            "seed {seed}: expected one of {expected:?}: {verdict:#?}"
        );
    }
    assert!(
        mutated >= MUTATED_MIN,
        "only {mutated} histories could be mutated"
    );
}

/// Exchanges what two operations of one process did, keeping ids and times: their program
/// order is swapped.
fn swap(h: &mut History, a: usize, b: usize) {
    let (first, second) = h.operations.split_at_mut(b);
    let (x, y) = (&mut first[a], &mut second[0]);
    std::mem::swap(&mut x.f, &mut y.f);
    std::mem::swap(&mut x.key, &mut y.key);
    std::mem::swap(&mut x.input, &mut y.input);
    std::mem::swap(&mut x.output, &mut y.output);
    std::mem::swap(&mut x.outcome, &mut y.outcome);
}

/// A session wrote a value and later read it back; swapping the two puts the read before the
/// write it read from, in the same session: PO and RF form a cycle.
#[test]
fn swapping_a_write_and_the_read_of_it_is_a_cycle() {
    run(&[AnomalyKind::CyclicCO], |h, _| {
        let ops = &h.operations;
        let Some((w, r)) = ops.iter().filter(|w| is_ok(w, "write")).find_map(|w| {
            ops[w.id + 1..]
                .iter()
                .find(|r| {
                    r.process == w.process
                        && is_ok(r, "read")
                        && r.key == w.key
                        && r.output.as_ref() == Some(&w.input)
                })
                .map(|r| (w.id, r.id))
        }) else {
            return false;
        };
        swap(h, w, r);
        true
    });
}

/// A read whose session certainly saw a write w2 of its key before it (its own earlier write,
/// or one an earlier read of the session returned) is made to return an older value: nil, or
/// (odd seeds, when there is one) the value of a write PO-before w2 in w2's session.
#[test]
fn a_read_made_to_return_an_older_value() {
    let stale_kinds = [
        AnomalyKind::ReadYourWrites,
        AnomalyKind::MonotonicReads,
        AnomalyKind::MonotonicWrites,
        AnomalyKind::WritesFollowReads,
        AnomalyKind::WriteCOInitRead,
        AnomalyKind::WriteCORead,
    ];
    run(&stale_kinds, |h, seed| {
        let writer = writers(h);
        let ops = &h.operations;
        // (read, w2): w2 reaches the read through its session, not through the read itself.
        let site = ops.iter().filter(|r| is_ok(r, "read")).find_map(|r| {
            ops[..r.id]
                .iter()
                .rev()
                .filter(|o| o.process == r.process && o.key == r.key && o.outcome == Outcome::Ok)
                .find_map(|o| match o.f.as_str() {
                    "write" => Some(o.id),
                    _ => writer
                        .get(&(o.key.clone(), o.output.clone()?))
                        .copied()
                        .filter(|&w| ops[w].outcome == Outcome::Ok),
                })
                .map(|w2| (r.id, w2))
        });
        let Some((read, w2)) = site else {
            return false;
        };
        let older = ops[..w2]
            .iter()
            .rev()
            .find(|w| is_ok(w, "write") && w.process == ops[w2].process && w.key == ops[w2].key)
            .map(|w| w.input.clone());
        let value = match older {
            Some(v) if seed % 2 == 1 => v,
            _ => Value::Nil,
        };
        h.operations[read].output = Some(value);
        true
    });
}

/// A write whose value a read returned is removed: the read now returns a value never
/// written.
#[test]
fn dropping_a_write_that_was_read() {
    run(&[AnomalyKind::ThinAirRead], |h, _| {
        let writer = writers(h);
        let Some(w) = h
            .operations
            .iter()
            .filter(|r| is_ok(r, "read"))
            .find_map(|r| writer.get(&(r.key.clone(), r.output.clone()?)).copied())
        else {
            return false;
        };
        h.operations.remove(w);
        for (i, op) in h.operations.iter_mut().enumerate() {
            op.id = i;
        }
        true
    });
}

/// A read returns a value nobody wrote.
#[test]
fn a_read_of_a_value_never_written() {
    run(&[AnomalyKind::ThinAirRead], |h, seed| {
        let Some(read) = h.operations.iter().position(|op| is_ok(op, "read")) else {
            return false;
        };
        h.operations[read].output = Some(Value::Int(-1_000_000 - seed as i64));
        true
    });
}

/// Replicas that let the last-delivered write win are causally consistent but need not
/// converge: CC always holds, and CCv fails, with CyclicCF only, in some runs (so the CCv check
/// is seen to bite on histories it did not construct by hand).
#[test]
fn a_store_that_does_not_converge_is_cc_but_not_always_ccv() {
    let mut diverged = 0;
    for seed in 0..SEEDS {
        let h = simulate(plan(seed, false));
        let verdict = check(&h, ConsistencyLevel::CausalConsistency);
        assert!(verdict.valid, "seed {seed}: {verdict:#?}");
        let verdict = check(&h, ConsistencyLevel::CausalConvergence);
        if !verdict.valid {
            diverged += 1;
            assert!(
                verdict
                    .anomalies
                    .iter()
                    .all(|a| a.kind == AnomalyKind::CyclicCF),
                "seed {seed}: {verdict:#?}"
            );
        }
    }
    assert!(diverged >= 15, "only {diverged} runs diverged");
}

/// Replicas that deliver writes in any order, each keeping the last one delivered, break
/// causality in some runs, and the checker must say so there: a `sometimes` witness that
/// causal delivery is what keeps the simulated store's other runs valid. (With last-writer-wins
/// replicas reordering is mostly masked, so the witness uses the non-convergent store.)
#[test]
fn a_store_without_causal_delivery_is_caught_sometimes() {
    let mut caught = 0;
    for seed in 0..SEEDS {
        let h = simulate(StorePlan {
            causal_delivery: false,
            operations: 150,
            ..plan(seed, false)
        });
        if !check(&h, ConsistencyLevel::CausalConsistency).valid {
            caught += 1;
        }
    }
    assert!(caught >= 30, "only {caught} runs were caught");
}
