//! The stateright model of the node's Raft core (`faultline_checkers::models::raft`): the
//! correct core satisfies every property at the default bounds, exhaustively, and each seeded
//! bug is caught with a counterexample. The unique-state count of the default bounds is
//! pinned, so that a change to the core or the model that changes the explored space shows up
//! here (update the figure, and BENCHMARKS.md, when the change is meant).

use faultline_checkers::models::raft::{
    Bug, ModelOptions, ModelReport, Verdict, check, read_start, replay,
};

/// Unique states at the default bounds (`faultline model raft` with no options).
const DEFAULT_UNIQUE_STATES: usize = 2_573_935;

fn options() -> ModelOptions {
    ModelOptions {
        threads: 2,
        ..ModelOptions::default()
    }
}

#[test]
fn the_core_satisfies_every_property_at_the_default_bounds() {
    let report = check(options()).expect("valid options");
    assert!(
        report.complete,
        "the default bounds are exhausted:\n{report}"
    );
    assert!(
        report.all_hold(),
        "every always holds and every sometimes is witnessed:\n{report}"
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.unique_states, DEFAULT_UNIQUE_STATES,
        "the explored space changed; if that is meant, pin the new count:\n{report}"
    );
}

/// Representatives at the default bounds with `--symmetry`.
const SYMMETRIC_UNIQUE_STATES: usize = 429_011;

#[test]
fn symmetry_reduction_visits_one_renaming_of_each_state_and_keeps_every_verdict() {
    let report = check(ModelOptions {
        symmetry: true,
        ..options()
    })
    .expect("valid options");
    assert!(report.complete, "exhausted:\n{report}");
    assert!(
        report.all_hold(),
        "every verdict as without symmetry:\n{report}"
    );
    // 3 servers have 6 renamings, so no fewer than a sixth of the states can remain; the
    // sort key leaves few ties, so close to a sixth do.
    assert!(
        report.unique_states * 6 >= DEFAULT_UNIQUE_STATES
            && report.unique_states * 5 < DEFAULT_UNIQUE_STATES,
        "{} representatives of {DEFAULT_UNIQUE_STATES} states",
        report.unique_states
    );
    assert_eq!(
        report.unique_states, SYMMETRIC_UNIQUE_STATES,
        "the explored space changed; if that is meant, pin the new count:\n{report}"
    );
}

#[test]
fn symmetry_reduction_still_catches_the_seeded_bugs_with_readable_counterexamples() {
    for (bug, property) in [
        (Bug::VoteAmnesia, "election safety"),
        (Bug::StaleRead, "linearizable"),
    ] {
        let reduced = ModelOptions {
            symmetry: true,
            ..options()
        };
        let report = caught(bug, reduced.clone());
        assert_counterexample(&report, property);
        // The path is printed unrenamed: it replays step for step without symmetry.
        let found = report.property(property);
        let plain = ModelOptions {
            bug: Some(bug),
            ..options()
        };
        let steps = replay(&plain, found.path.as_ref().expect("a path")).expect("replays");
        assert_eq!(steps, found.steps, "{bug}");
    }
    let refused = check(ModelOptions {
        symmetry: true,
        membership: Some(vec![Vec::new()]),
        ..options()
    });
    assert!(
        refused.is_err_and(|e| e.contains("--symmetry") && e.contains("--membership")),
        "symmetry with membership is refused"
    );
}

/// Checks with `bug` until the first violation and returns the report.
fn caught(bug: Bug, options: ModelOptions) -> ModelReport {
    let report = check(ModelOptions {
        bug: Some(bug),
        stop_at_first_violation: true,
        ..options
    })
    .expect("valid options");
    assert_eq!(report.exit_code(), 1, "{bug} is caught:\n{report}");
    report
}

fn assert_counterexample(report: &ModelReport, property: &str) {
    let found = report.property(property);
    assert_eq!(found.verdict, Verdict::Violated, "{property}:\n{report}");
    assert!(!found.steps.is_empty(), "a counterexample has steps");
    assert!(found.path.is_some(), "a counterexample can be replayed");
}

#[test]
fn a_second_vote_in_one_term_is_caught() {
    // The candidate that also votes for a rival trips the core's own invariant (a leader
    // voted for itself) the moment it wins; without that assertion election safety would.
    let report = caught(Bug::DoubleVote, options());
    let violated: Vec<&str> = report.violations().map(|p| p.name).collect();
    assert!(
        violated
            .iter()
            .any(|&p| p == "core assertions hold" || p == "election safety"),
        "{report}"
    );
    let name = violated[0];
    assert_counterexample(&report, name);
}

#[test]
fn a_vote_forgotten_across_a_crash_elects_two_leaders() {
    let report = caught(Bug::VoteAmnesia, options());
    assert_counterexample(&report, "election safety");
}

#[test]
fn a_read_answered_without_confirming_leadership_is_stale() {
    let report = caught(Bug::StaleRead, options());
    assert_counterexample(&report, "linearizable");
}

#[test]
fn keeping_a_conflicting_suffix_breaks_log_matching() {
    let report = caught(Bug::KeepConflicts, options());
    assert_counterexample(&report, "log matching");
}

#[test]
fn a_counterexample_replays_to_the_same_steps() {
    let options = ModelOptions {
        bug: Some(Bug::VoteAmnesia),
        ..options()
    };
    let report = caught(Bug::VoteAmnesia, options.clone());
    let found = report.property("election safety");
    let path = found.path.as_ref().expect("a path");
    let steps = replay(&options, path).expect("replays");
    assert_eq!(steps, found.steps);
}

/// The bounds `figure8.steps` was written for: one entry per AppendEntries (so an old-term
/// entry can travel without the new leader's no-op), terms up to 6 and 3 messages in flight
/// (the voter's own campaign at term 5 must fail before the overwriting leader wins term
/// 6), and the two crashes the start itself uses, so that none is left for the search.
fn figure8() -> ModelOptions {
    ModelOptions {
        start: read_start("figure8").expect("a built-in start"),
        append_entries_max: 1,
        max_term: 6,
        max_log: 3,
        max_in_flight: 3,
        crashes: 2,
        client_ops: 1,
        ..options()
    }
}

#[test]
fn committing_an_old_term_entry_by_counting_replicas_is_caught_from_figure_8() {
    let report = caught(Bug::CommitOldTerm, figure8());
    assert_counterexample(&report, "leader completeness");
    let found = report.property("leader completeness");
    assert!(
        found.steps.iter().any(|s| s.starts_with("(start) ")),
        "the counterexample shows the start it was found from:\n{report}"
    );
    let path = found.path.as_ref().expect("a path");
    let options = ModelOptions {
        bug: Some(Bug::CommitOldTerm),
        ..figure8()
    };
    assert_eq!(replay(&options, path).expect("replays"), found.steps);
}

#[test]
fn the_correct_core_passes_from_figure_8_under_the_same_bounds() {
    let report = check(figure8()).expect("valid options");
    assert!(report.complete, "exhausted:\n{report}");
    for property in report.properties.iter().filter(|p| p.always) {
        assert_eq!(
            property.verdict,
            Verdict::Holds,
            "{}:\n{report}",
            property.name
        );
    }
    // One operation per client leaves "a read observes a write" unreachable; the rest of
    // the witnesses show the search gets past the start.
    for witness in [
        "a value is committed",
        "a second leader takes over after a crash",
    ] {
        assert_eq!(
            report.property(witness).verdict,
            Verdict::Witnessed,
            "{report}"
        );
    }
}

#[test]
fn a_start_that_cannot_be_played_is_an_error_naming_the_step() {
    let error = check(ModelOptions {
        start: vec!["n1 tick".into(), "n1 -> n2: AppendEntries".into()],
        ..options()
    })
    .expect_err("the second step cannot be played");
    assert!(error.contains("start step 2"), "{error}");
    assert!(
        error.contains("n1 -> n2: RequestVote"),
        "lists what is enabled: {error}"
    );
    let error = read_start("no/such/start").expect_err("no such file");
    assert!(
        error.contains("figure8"),
        "names the built-in starts: {error}"
    );
}

/// `--membership` at pinned bounds (`faultline model raft --servers 2 --membership
/// --clients 0 --max-term 2 --max-log 4 --snapshot-interval-entries 0`): a two-voter group
/// and a third server outside it; the admin client adds it as a voter (a learner first,
/// promoted by the leader once caught up), then removes it. Two voters, so that every
/// broadcast (two messages) fits the in-flight bound: with three voters and a fourth server
/// a broadcast is three messages, and the space at `--max-in-flight 3` is too large for CI.
fn membership() -> ModelOptions {
    use faultline_node::replication::ConfChange;
    ModelOptions {
        servers: 2,
        clients: 0,
        max_term: 2,
        max_log: 4,
        snapshot_interval_entries: 0,
        membership: Some(vec![vec![ConfChange::AddVoter(3), ConfChange::Remove(3)]]),
        ..options()
    }
}

#[test]
fn membership_changes_keep_every_safety_property_exhaustively() {
    let report = check(membership()).expect("valid options");
    assert!(report.complete, "the bounds are exhausted:\n{report}");
    for property in [
        "election safety",
        "leader append-only",
        "log matching",
        "leader completeness",
        "state machine safety",
        "core assertions hold",
    ] {
        assert_eq!(
            report.property(property).verdict,
            Verdict::Holds,
            "{property}:\n{report}"
        );
    }
    for witness in [
        "a joining server is promoted to voter",
        "the joined voter is removed again",
    ] {
        assert_eq!(
            report.property(witness).verdict,
            Verdict::Witnessed,
            "the search reaches the change: {witness}\n{report}"
        );
    }
}

/// The bounds `learner-votes.steps` was written for: 3 voters and a joining server, one
/// put, and 3 messages in flight (a broadcast to the voters and the learner).
fn learner_votes() -> ModelOptions {
    use faultline_node::replication::ConfChange;
    ModelOptions {
        start: read_start("learner-votes").expect("a built-in start"),
        clients: 1,
        client_ops: 1,
        max_term: 2,
        max_log: 3,
        max_in_flight: 3,
        snapshot_interval_entries: 0,
        membership: Some(vec![vec![ConfChange::AddVoter(4), ConfChange::Remove(4)]]),
        ..options()
    }
}

#[test]
fn a_learner_counted_toward_a_quorum_loses_a_committed_write() {
    let report = caught(Bug::LearnerVotes, learner_votes());
    assert_counterexample(&report, "leader completeness");
}

#[test]
fn the_correct_core_passes_from_the_learner_start_exhaustively() {
    let report = check(learner_votes()).expect("valid options");
    assert!(report.complete, "exhausted:\n{report}");
    for property in report.properties.iter().filter(|p| p.always) {
        assert_eq!(
            property.verdict,
            Verdict::Holds,
            "{}:\n{report}",
            property.name
        );
    }
    assert_eq!(
        report.property("a value is committed").verdict,
        Verdict::Witnessed,
        "the search commits the put:\n{report}"
    );
}

/// The bounds `config-before-noop.steps` was written for: 4 voters, a joining server, two
/// admins (c1: add n5 as a learner, remove n4; c2: promote n5), terms up to 4 and the 7
/// messages the start leaves in flight.
fn config_before_noop() -> ModelOptions {
    use faultline_node::replication::ConfChange;
    ModelOptions {
        servers: 4,
        start: read_start("config-before-noop").expect("a built-in start"),
        clients: 0,
        max_term: 4,
        max_log: 4,
        max_in_flight: 7,
        snapshot_interval_entries: 0,
        membership: Some(vec![
            vec![ConfChange::AddLearner(5), ConfChange::Remove(4)],
            vec![ConfChange::Promote(5)],
        ]),
        ..options()
    }
}

#[test]
fn a_change_before_the_leaders_noop_commits_gives_majorities_that_do_not_overlap() {
    let report = caught(Bug::ConfigBeforeNoop, config_before_noop());
    assert_counterexample(&report, "leader completeness");
}

#[test]
fn the_correct_core_refuses_the_change_the_2015_bug_needs() {
    // With the rule in place n2 leaves c2's Promote(5) in the network while its no-op is
    // uncommitted, so its log stays [noop, AddLearner, noop] and the start stops at the
    // append that would have carried the change.
    let error = check(config_before_noop()).expect_err("the start stops after the refusal");
    let refusal = error
        .lines()
        .find(|line| line.trim_start().starts_with("c2 -> n2: Request"))
        .unwrap_or_else(|| panic!("the request was delivered: {error}"));
    assert!(
        refusal.contains("log [1@1 noop, 2@1 config, 3@3 noop]"),
        "n2 appended nothing for it: {refusal}"
    );
    assert!(error.contains("start step 45"), "{error}");
}
