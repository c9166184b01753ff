//! Teeth: valid generated histories, mutated so that they can no longer be linearizable, must
//! be found invalid. A checker that calls everything valid passes the property tests; these
//! make sure it does not.
//!
//! Generated write and cas values are unique, which is what makes each mutation certainly
//! invalid. Every test asserts it mutated enough histories not to pass vacuously, and names
//! the seed of any failure.

mod common;

use common::{Kind, Plan, generate};
use faultline_checkers::{
    CheckOptions, CheckResult, History, Operation, Outcome, Value, check_by_name,
};

const SEEDS: u64 = 300;
const MUTATED_MIN: usize = 100;

fn plan(kind: Kind, seed: u64) -> Plan {
    Plan {
        kind,
        seed,
        processes: 4,
        operations: 24,
        keys: 0,
        unknown_percent: 10,
    }
}

fn verdict(kind: Kind, h: &History) -> CheckResult {
    check_by_name(h, kind.model_name(), &CheckOptions::default())
        .unwrap()
        .result
}

fn is_ok(op: &Operation, f: &str) -> bool {
    op.outcome == Outcome::Ok && op.f == f
}

/// The value an operation writes, if it writes one (write, or a successful cas's `to`).
fn written(op: &Operation) -> Option<&Value> {
    match op.f.as_str() {
        "write" => Some(&op.input),
        "cas" => op.input.as_list().map(|args| &args[1]),
        _ => None,
    }
}

fn run(kind: Kind, mutate: impl Fn(&mut History) -> bool) {
    let mut mutated = 0;
    for seed in 0..SEEDS {
        let mut h = generate(plan(kind, seed));
        assert_eq!(
            verdict(kind, &h),
            CheckResult::Valid,
            "seed {seed}: generated history"
        );
        if !mutate(&mut h) {
            continue;
        }
        mutated += 1;
        assert_eq!(
            verdict(kind, &h),
            CheckResult::Invalid,
            "seed {seed}: mutation not detected"
        );
    }
    assert!(
        mutated >= MUTATED_MIN,
        "only {mutated} histories could be mutated"
    );
}

/// A read returns a value that no operation ever wrote.
fn read_a_value_never_written(h: &mut History) -> bool {
    let Some(read) = h.operations.iter_mut().find(|op| is_ok(op, "read")) else {
        return false;
    };
    read.output = Some(Value::Int(-999_999));
    true
}

/// Two writes W1 then W2 (W1 completes before W2 starts, different processes) and a read R
/// after W2 that saw W2's value: swapping the writes' values is swapping their order, and R's
/// read becomes stale.
fn swap_two_ordered_writes(h: &mut History) -> bool {
    let ops = &h.operations;
    let before = |a: &Operation, b: &Operation| a.complete_time.is_some_and(|t| t < b.invoke_time);
    for r in ops.iter().filter(|op| is_ok(op, "read")) {
        let Some(seen) = &r.output else { continue };
        let Some(w2) = ops
            .iter()
            .find(|w| is_ok(w, "write") && w.input == *seen && before(w, r))
        else {
            continue;
        };
        let Some(w1) = ops.iter().find(|w| {
            is_ok(w, "write") && w.process != w2.process && before(w, w2) && w.input != w2.input
        }) else {
            continue;
        };
        let (i1, i2) = (w1.id, w2.id);
        let v1 = h.operations[i1].input.clone();
        let v2 = std::mem::replace(&mut h.operations[i2].input, v1.clone());
        h.operations[i1].input = v2.clone();
        for op in &mut h.operations[i1..=i2] {
            if op.output.as_ref() == Some(&v1) && op.f == "write" {
                op.output = Some(v2.clone());
            }
        }
        h.operations[i2].output = Some(v1);
        return true;
    }
    false
}

/// A completed write whose value some read saw is removed: the read now sees a value that was
/// never written.
fn drop_a_write_that_was_read(h: &mut History) -> bool {
    let ops = &h.operations;
    let Some(w) = ops.iter().find(|w| {
        is_ok(w, "write")
            && ops.iter().any(|r| is_ok(r, "read") && r.output.as_ref() == written(w))
            // the value must not also come from a cas
            && !ops.iter().any(|o| o.f == "cas" && written(o) == written(w))
    }) else {
        return false;
    };
    let id = w.id;
    h.operations.remove(id);
    for (i, op) in h.operations.iter_mut().enumerate() {
        op.id = i;
    }
    true
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    run(Kind::Register, read_a_value_never_written);
    run(Kind::CasRegister, read_a_value_never_written);
}

#[test]
fn swapped_writes_are_caught() {
    run(Kind::Register, swap_two_ordered_writes);
    run(Kind::CasRegister, swap_two_ordered_writes);
}

#[test]
fn a_dropped_write_that_was_read_is_caught() {
    run(Kind::Register, drop_a_write_that_was_read);
    run(Kind::CasRegister, drop_a_write_that_was_read);
}
