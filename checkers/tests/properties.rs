//! Property tests.
//!
//! 1. Histories produced by a sequential execution with random concurrency windows (every
//!    operation's interval contains its linearization point) are linearizable, for every
//!    model, with and without keys and unknown outcomes.
//! 2. On small random histories (mostly not linearizable), the checker agrees with a naive
//!    reference that tries every order of the operations.
//!
//! proptest prints the failing `Plan` (with its seed), which replays with `common::generate`.

mod common;

use common::{KINDS, Kind, Plan, Rng, generate};
use faultline_checkers::model::{CasRegister, Register};
use faultline_checkers::{
    CheckOptions, CheckResult, History, Model, Operation, Outcome, Value, check, check_by_name,
};
use proptest::prelude::*;

fn plans() -> impl Strategy<Value = Plan> {
    (
        0..KINDS.len(),
        any::<u64>(),
        1u64..6,
        0usize..40,
        0u64..4,
        0u64..30,
    )
        .prop_map(
            |(kind, seed, processes, operations, keys, unknown_percent)| Plan {
                kind: KINDS[kind],
                seed,
                processes,
                operations,
                keys,
                unknown_percent,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // Many unknown outcomes: what the search's dominance pruning works on (a configuration
    // with fewer of them linearized covers one with more).
    #[test]
    fn agrees_with_brute_force_when_many_outcomes_are_unknown(seed in any::<u64>(), cas in any::<bool>()) {
        let h = random_history(seed, cas, 8, 5);
        if cas {
            let model = CasRegister::default();
            prop_assert_eq!(checker_says(&model, &h), brute_force(&model, &h), "seed {}", seed);
        } else {
            prop_assert_eq!(checker_says(&Register, &h), brute_force(&Register, &h), "seed {}", seed);
        }
    }

    #[test]
    fn sequential_executions_are_linearizable(plan in plans()) {
        let h = generate(plan);
        let v = check_by_name(&h, plan.kind.model_name(), &CheckOptions::default()).unwrap();
        prop_assert_eq!(v.result, CheckResult::Valid, "{:?}", plan);
    }

    #[test]
    fn agrees_with_brute_force(seed in any::<u64>(), cas in any::<bool>()) {
        let h = small_random_history(seed, cas);
        if cas {
            let model = CasRegister::default();
            prop_assert_eq!(checker_says(&model, &h), brute_force(&model, &h), "seed {}", seed);
        } else {
            prop_assert_eq!(checker_says(&Register, &h), brute_force(&Register, &h), "seed {}", seed);
        }
    }
}

#[test]
fn every_kind_is_exercised_with_invalid_outcomes_too() {
    // A sometimes-witness for the generator: it must make failed cas and unknown outcomes,
    // or the property above would pass without testing them.
    let mut failed_cas = 0;
    let mut unknown = 0;
    for seed in 0..50 {
        let plan = Plan {
            kind: Kind::CasRegister,
            seed,
            processes: 3,
            operations: 30,
            keys: 0,
            unknown_percent: 20,
        };
        let h = generate(plan);
        failed_cas += h
            .operations
            .iter()
            .filter(|o| o.f == "cas" && o.outcome == Outcome::Fail)
            .count();
        unknown += h
            .operations
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count();
    }
    assert!(
        failed_cas > 10 && unknown > 10,
        "failed cas {failed_cas}, unknown {unknown}"
    );
}

fn checker_says<M: Model>(model: &M, h: &History) -> bool {
    match check(model, h, &CheckOptions::default()).unwrap().result {
        CheckResult::Valid => true,
        CheckResult::Invalid => false,
        CheckResult::Unknown { reason } => panic!("small history gave unknown: {reason}"),
    }
}

/// Up to 6 operations on 3 processes with random values from a small range, so that valid
/// and invalid histories both come up.
fn small_random_history(seed: u64, cas: bool) -> History {
    random_history(seed, cas, 6, 1)
}

/// Up to `ops_max` operations on 3 processes, `unknown_in_10` in ten of them with an unknown
/// outcome.
fn random_history(seed: u64, cas: bool, ops_max: u64, unknown_in_10: u64) -> History {
    let mut rng = Rng(seed);
    let count = 1 + rng.below(ops_max) as usize;
    let small = |rng: &mut Rng| match rng.below(3) {
        0 => Value::Nil,
        n => Value::Int(n as i64),
    };
    let mut ops = Vec::new();
    let mut busy_until = [0u64; 3];
    for id in 0..count {
        let process = rng.below(3);
        let invoke_time = busy_until[process as usize] + rng.below(4);
        let length = 1 + rng.below(6);
        let (f, input) = match rng.below(if cas { 3 } else { 2 }) {
            0 => ("read", Value::Nil),
            1 => ("write", small(&mut rng)),
            _ => ("cas", Value::List(vec![small(&mut rng), small(&mut rng)])),
        };
        let outcome = match rng.below(10) {
            n if n < unknown_in_10 => Outcome::Unknown,
            n if n == unknown_in_10 && f == "cas" => Outcome::Fail,
            _ => Outcome::Ok,
        };
        let output = match (outcome, f) {
            (Outcome::Unknown, _) => None,
            (_, "read") => Some(small(&mut rng)),
            _ => Some(input.clone()),
        };
        let complete_time = invoke_time + length;
        busy_until[process as usize] = complete_time + 1;
        ops.push(Operation {
            id,
            process,
            f: f.into(),
            key: None,
            input,
            output,
            outcome,
            invoke_time,
            complete_time: Some(complete_time),
            line: None,
            not_applied: false,
        });
    }
    ops.sort_by_key(|o| o.invoke_time);
    for (i, o) in ops.iter_mut().enumerate() {
        o.id = i;
    }
    History {
        operations: ops,
        nemesis: Vec::new(),
    }
}

/// The definition, directly: some order of the included operations respects real time
/// (a completed operation precedes every operation invoked after its completion) and the
/// model accepts it step by step.
fn brute_force<M: Model>(model: &M, h: &History) -> bool {
    let ops: Vec<&Operation> = h.operations.iter().filter(|o| model.include(o)).collect();
    let returns = |o: &Operation| match o.outcome {
        Outcome::Unknown => u64::MAX,
        _ => o.complete_time.unwrap_or(u64::MAX),
    };
    fn search<M: Model>(
        model: &M,
        ops: &[&Operation],
        returns: &dyn Fn(&Operation) -> u64,
        used: &mut Vec<bool>,
        state: M::State,
    ) -> bool {
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // i may go next only if no unused op returned strictly before i was invoked.
            let blocked =
                (0..ops.len()).any(|j| !used[j] && j != i && returns(ops[j]) < ops[i].invoke_time);
            if blocked {
                continue;
            }
            if let Some(next) = model.step(&state, ops[i]) {
                used[i] = true;
                if search(model, ops, returns, used, next) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    let mut used = vec![false; ops.len()];
    search(model, &ops, &returns, &mut used, model.init())
}

#[test]
fn brute_force_comparison_sees_both_verdicts() {
    // The sometimes-witness for `agrees_with_brute_force`: random small histories must be
    // valid and invalid often enough for agreement to mean something.
    for (ops_max, unknown_in_10) in [(6, 1), (8, 5)] {
        let (mut valid, mut invalid) = (0, 0);
        for seed in 0..500 {
            let h = random_history(seed, seed % 2 == 0, ops_max, unknown_in_10);
            let says = if seed % 2 == 0 {
                brute_force(&CasRegister::default(), &h)
            } else {
                brute_force(&Register, &h)
            };
            if says { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid > 100 && invalid > 100,
            "{ops_max} ops at most, {unknown_in_10} in 10 unknown: valid {valid}, invalid {invalid}"
        );
    }
}
