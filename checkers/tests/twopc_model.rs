//! The stateright model of the node's two-phase commit cores, at the bounds
//! `faultline model 2pc` checks by default: exhaustive, every property holding and every
//! witness seen; each seeded bug caught with a counterexample.

use faultline_checkers::models::twopc::{TwoPcBug, TwoPcOptions, TwoPcReport, check};

/// Unique states at the default bounds. A change means the cores or the model changed what
/// they can reach: look at why before updating it. (1,885,142 until intents carried their
/// transaction's start timestamp, for snapshot reads: after a coordinator crash the
/// intents are the only place it lives, so states that differed only in when the crashed
/// transaction started are now told apart.)
const DEFAULT_UNIQUE_STATES: usize = 1_903_906;

fn options(bug: Option<TwoPcBug>) -> TwoPcOptions {
    TwoPcOptions {
        bug,
        threads: 2,
        ..TwoPcOptions::default()
    }
}

#[test]
fn the_2pc_cores_are_atomic_serializable_and_always_decide() {
    let report = check(options(None));
    eprintln!("{report}");
    assert!(report.complete, "{report}");
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.unique_states, DEFAULT_UNIQUE_STATES, "{report}");
}

fn violated(report: &TwoPcReport, property: &str) {
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
fn committing_before_every_participant_prepared_is_caught() {
    // No restarts needed: a lost prepare is enough.
    let report = check(TwoPcOptions {
        max_restarts: 0,
        ..options(Some(TwoPcBug::CommitBeforeAllPrepared))
    });
    eprintln!("{report}");
    violated(&report, "no commit without every prepare");
}

#[test]
fn a_primary_forgetting_its_decision_on_restart_breaks_atomicity() {
    // No losses needed: a restart of the primary after its decision is enough.
    let report = check(TwoPcOptions {
        max_drops: 0,
        ..options(Some(TwoPcBug::ForgetDecisionOnCrash))
    });
    eprintln!("{report}");
    violated(&report, "atomicity");
}
