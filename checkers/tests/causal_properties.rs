//! Property: a history produced by a sequential execution (one copy of the data, every
//! operation taking effect at one instant inside its interval, some outcomes unknown) is
//! linearizable, hence causally consistent and convergent: the causal checker must find no
//! anomaly at any level. The histories come from `common::generate`, the generator the
//! linearizability tests use, which shares no code with the causal checker.
//!
//! proptest prints the failing `Plan` (with its seed), which replays with `common::generate`.

mod common;

use common::causal::{StorePlan, simulate};
use common::{Kind, Plan, generate};
use faultline_checkers::{CausalOptions, ConsistencyLevel, check_causal};
use proptest::prelude::*;

fn sequential_plans() -> impl Strategy<Value = Plan> {
    (any::<u64>(), 1u64..6, 0usize..80, 0u64..4, 0u64..30).prop_map(
        |(seed, processes, operations, keys, unknown_percent)| Plan {
            kind: Kind::Register,
            seed,
            processes,
            operations,
            keys,
            unknown_percent,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sequential_executions_are_causally_convergent(plan in sequential_plans()) {
        let history = generate(plan);
        for level in [ConsistencyLevel::CausalConsistency, ConsistencyLevel::CausalConvergence] {
            let options = CausalOptions { level, ..CausalOptions::default() };
            let verdict = check_causal(&history, &options).expect("well-formed");
            prop_assert!(verdict.valid, "{:?}: {:#?}", level, verdict);
            prop_assert_eq!(verdict.anomalies_found, 0);
        }
    }

    /// The simulated store with convergent replicas is CCv by construction, with any number
    /// of sessions (one session is a sequential execution).
    #[test]
    fn simulated_convergent_stores_are_valid(
        seed in any::<u64>(),
        sessions in 1usize..6,
        operations in 0usize..120,
        keys in 1u64..5,
    ) {
        let plan = StorePlan {
            seed, sessions, operations, keys, convergent: true, causal_delivery: true, unknown_percent: 15,
        };
        let history = simulate(plan);
        let options = CausalOptions { level: ConsistencyLevel::CausalConvergence, ..CausalOptions::default() };
        let verdict = check_causal(&history, &options).expect("well-formed");
        prop_assert!(verdict.valid, "{:?}: {:#?}", plan, verdict);
    }
}
