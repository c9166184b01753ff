//! The stateright model of the node's causal replication core, at the bounds
//! `faultline model causal` checks by default: exhaustive, every property holding and
//! every witness seen; each seeded bug caught with a counterexample.

use faultline_checkers::models::causal::{CausalBug, CausalModelOptions, check};

/// Unique states at the default bounds. A change means the core or the model changed
/// what it can reach: look at why before updating it.
const DEFAULT_UNIQUE_STATES: usize = 239_790;

fn options(bug: Option<CausalBug>) -> CausalModelOptions {
    CausalModelOptions {
        bug,
        threads: 2,
        ..CausalModelOptions::default()
    }
}

#[test]
fn the_causal_core_keeps_sessions_causal_converges_and_loses_no_sibling() {
    let report = check(options(None));
    assert!(report.complete, "{report}");
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.unique_states, DEFAULT_UNIQUE_STATES, "{report}");
    for (name, _, verdict, _) in &report.properties {
        assert!(
            matches!(*verdict, "holds" | "witnessed"),
            "{name}: {report}"
        );
    }
}

fn violated(report: &faultline_checkers::models::causal::CausalReport, property: &str) {
    let (_, _, verdict, steps) = report
        .properties
        .iter()
        .find(|p| p.0 == property)
        .expect("the property exists");
    assert_eq!(*verdict, "VIOLATED", "{report}");
    assert!(!steps.is_empty(), "a counterexample: {report}");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn serving_a_session_the_replica_is_behind_breaks_causality() {
    let report = check(CausalModelOptions {
        stop_at_first_violation: true,
        ..options(Some(CausalBug::IgnoreCausalContext))
    });
    violated(&report, "causal sessions");
}

#[test]
fn a_merge_that_drops_an_unseen_sibling_loses_it_and_replicas_diverge() {
    let report = check(options(Some(CausalBug::VvMergeDropsSibling)));
    violated(&report, "no sibling lost");
    violated(&report, "replicas converge");
}
