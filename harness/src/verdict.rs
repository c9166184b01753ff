//! The verdict of a run: the checker's, guarded against a false "valid".

use std::path::Path;
use std::time::Duration;

use faultline_checkers::causal::{CausalOptions, ConsistencyLevel};
use faultline_checkers::{
    CheckOptions, CheckResult, Format, check_causal_file, check_file, report,
};

use crate::leaders;
use crate::replicas::Replicas;
use crate::run::{Results, Validity};

/// How long the checker may take before the verdict is "unknown".
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks the run's history for linearizability and sets `results.valid`; writes the
/// explanation and a timeline (`timeline.html`) next to the history when an anomaly is
/// found.
pub fn check_linearizable(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    let options = CheckOptions {
        timeout: Some(CHECK_TIMEOUT),
        ..CheckOptions::default()
    };
    let path = run_dir.join("history.jsonl");
    let (history, verdict) = check_file(&path, Some(Format::Jsonl), &results.model, &options)
        .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", path.display()))?;
    results.valid = match &verdict.result {
        CheckResult::Valid => Validity::Known(true),
        CheckResult::Invalid => {
            // The earliest operation at which some key could not be linearized: when the
            // anomaly became visible.
            results.first_anomaly_secs = verdict
                .partitions
                .iter()
                .filter_map(|p| p.explanation.as_ref())
                .filter_map(|e| history.operations.get(e.failing_op))
                .map(|op| op.invoke_time as f64 / 1e9)
                .min_by(f64::total_cmp);
            let text = report::text(&history, &verdict);
            std::fs::write(run_dir.join("anomalies.txt"), &text)?;
            std::fs::write(
                run_dir.join("timeline.html"),
                report::html(&history, &verdict),
            )?;
            results.notes.push(text);
            results.notes.push(format!(
                "timeline: {}",
                run_dir.join("timeline.html").display()
            ));
            Validity::Known(false)
        }
        CheckResult::Unknown { reason } => {
            results.notes.push(format!("the checker gave up: {reason}"));
            Validity::Unknown("the checker could not decide")
        }
    };
    apply_guards(results);
    Ok(())
}

/// The set checker: every acknowledged add in the final read, nothing never added.
pub fn check_set(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    let path = run_dir.join("history.jsonl");
    let history = faultline_checkers::formats::read_history_file(&path, Some(Format::Jsonl))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let verdict = faultline_checkers::set::check_set(&history);
    let text = verdict.describe();
    results.valid = if !verdict.read {
        Validity::Unknown("no read of the set succeeded")
    } else {
        Validity::Known(verdict.valid)
    };
    if !verdict.valid {
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
    }
    results.notes.push(text);
    apply_guards(results);
    Ok(())
}

/// Elle's checker for a transactional workload: cycles in the dependency graph, against
/// the consistency model of the isolation level the run asked for (`results.model`).
/// Writes the explanation and one SVG per cycle next to the history when one is found.
pub fn check_txn(
    results: &mut Results,
    run_dir: &Path,
    workload: faultline_checkers::txn::Workload,
) -> anyhow::Result<()> {
    use faultline_checkers::txn::{self, TxnOptions};
    let path = run_dir.join("history.jsonl");
    let options = TxnOptions {
        consistency_models: Some(vec![results.model.clone()]),
        cycle_search_timeout: Duration::from_secs(10),
        ..TxnOptions::default()
    };
    let (history, verdict) =
        faultline_checkers::check_txn_file(&path, Some(Format::Jsonl), workload, &options)
            .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", path.display()))?;
    let text = txn::explain::report_text(&history, &verdict);
    results.valid = match verdict.valid {
        txn::Validity::Valid => Validity::Known(true),
        txn::Validity::Invalid => {
            std::fs::write(run_dir.join("anomalies.txt"), &text)?;
            let dir = run_dir.join("cycles");
            for (kind, cases) in &verdict.anomalies {
                for (i, case) in cases.iter().enumerate() {
                    if let Some(cycle) = &case.cycle {
                        std::fs::create_dir_all(&dir)?;
                        std::fs::write(
                            dir.join(format!("{kind}-{i}.svg")),
                            txn::explain::cycle_svg(&history, kind, cycle),
                        )?;
                    }
                }
            }
            Validity::Known(false)
        }
        txn::Validity::Unknown => Validity::Unknown("the transactional checker could not decide"),
    };
    if verdict.stats.txns == 0 {
        results.valid = Validity::Unknown("no transaction completed");
    }
    results.notes.push(text);
    if !matches!(
        results.model.as_str(),
        "serializable" | "strict-serializable"
    ) {
        let options = TxnOptions {
            consistency_models: Some(vec!["serializable".to_string()]),
            ..options
        };
        let (_, stronger) =
            faultline_checkers::check_txn_file(&path, Some(Format::Jsonl), workload, &options)
                .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", path.display()))?;
        let valid = match stronger.valid {
            txn::Validity::Valid => Some(true),
            txn::Validity::Invalid => Some(false),
            txn::Validity::Unknown => None,
        };
        results.notes.push(match valid {
            Some(true) => format!(
                "For contrast, as serializable the same history is valid: nothing here needed {} to be weaker.",
                results.model
            ),
            Some(false) => format!(
                "For contrast, as serializable the same history is invalid ({}): {} allows what serializable does not.",
                stronger.anomaly_types.join(", "),
                results.model
            ),
            None => "For contrast, the check as serializable could not decide.".to_string(),
        });
        results.contrast = Some(crate::run::Contrast {
            model: "serializable".into(),
            valid,
            anomaly_types: stronger.anomaly_types,
        });
    }
    apply_guards(results);
    Ok(())
}

/// The bank checker: every read sees the total the run opened the bank with, every
/// account, and no negative balance unless the workload allows them.
pub fn check_bank(
    results: &mut Results,
    run_dir: &Path,
    workload: &faultline_workloads::Workload,
) -> anyhow::Result<()> {
    use faultline_checkers::bank::{self, BankOptions};
    let path = run_dir.join("history.jsonl");
    let history = faultline_checkers::formats::read_history_file(&path, Some(Format::Jsonl))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let setup = workload.bank.clone().unwrap_or_default();
    let options = BankOptions {
        total: Some(setup.total),
        negative_balances: setup.negative_balances,
        accounts: (0..i64::from(workload.keys.count)).collect(),
    };
    let verdict = bank::check_bank(&history, &options)
        .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", path.display()))?;
    let text = bank::text(&verdict);
    results.valid = if verdict.reads == 0 {
        Validity::Unknown("no read of the balances succeeded")
    } else {
        Validity::Known(verdict.valid)
    };
    if !verdict.valid {
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
    }
    results.notes.push(text);
    apply_guards(results);
    Ok(())
}

/// The lock checker: fencing keeps the critical sections whose writes were accepted
/// apart, and no lease runs out within the TTL of an acknowledged renewal. A run in which
/// no stalled holder was overtaken and no lease outlived an outage tested neither: unknown.
pub fn check_lock(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    use faultline_checkers::lock;
    let path = run_dir.join("history.jsonl");
    let history = faultline_checkers::formats::read_history_file(&path, Some(Format::Jsonl))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    // Faults that can make a leader count a lease's TTL short.
    let clock_faults: Vec<(u64, u64)> = results
        .faults
        .iter()
        .filter(|w| w.fault.starts_with("clock") || w.fault == "lease-skew")
        .map(|w| (w.start_ns, w.end_ns))
        .collect();
    let verdict = lock::check_lock_with(&history, &clock_faults);
    let text = lock::text(&verdict);
    results.valid = if !verdict.valid {
        Validity::Known(false)
    } else if verdict.stalls_overtaken == 0 && verdict.renewals_after_outage == 0 {
        Validity::Unknown(
            "no stalled lock holder was overtaken by another, so fencing was not tested, and \
             no lease was renewed after an outage, so neither was its extension",
        )
    } else {
        Validity::Known(true)
    };
    if !verdict.valid {
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
    }
    results.notes.push(text);
    apply_guards(results);
    Ok(())
}

/// The watch checker: every watcher's events against the final watches' reference. A run
/// with no reference, or in which no watcher resumed a stream with changes to catch up
/// on, did not test what matters: unknown.
pub fn check_watch(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    use faultline_checkers::watch;
    let path = run_dir.join("history.jsonl");
    let history = faultline_checkers::formats::read_history_file(&path, Some(Format::Jsonl))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let verdict = watch::check_watch(&history);
    let text = watch::text(&verdict);
    results.valid = if !verdict.valid {
        Validity::Known(false)
    } else if verdict.no_reference {
        Validity::Unknown(
            "no final watch completed, so there was nothing to check the watchers against",
        )
    } else if verdict.resumed_segments == 0 {
        Validity::Unknown("no watcher resumed a stream, so resumption was not tested")
    } else {
        Validity::Known(true)
    };
    if !verdict.valid {
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
    }
    results.notes.push(text);
    apply_guards(results);
    Ok(())
}

/// The membership checker: the observers' views against the nemesis's fault windows.
/// The bounds follow from the nodes' probe interval `p` on `n` nodes: a kill must be seen
/// within (2n + 1)p unless the workload says otherwise; a pause excuses a death once it
/// lasts the shortest suspicion (4 max(1, log10 n) p); views settle 5 s after a fault.
pub fn check_membership(
    results: &mut Results,
    run_dir: &Path,
    workload: &faultline_workloads::Workload,
) -> anyhow::Result<()> {
    use faultline_checkers::membership;
    let path = run_dir.join("history.jsonl");
    let history = faultline_checkers::formats::read_history_file(&path, Some(Format::Jsonl))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let spec = workload.membership.clone().unwrap_or_default();
    let nodes = results.nodes.max(1) as u64;
    let probe_ns = spec.probe_interval_ms * 1_000_000;
    let options = membership::Options {
        detect_within_ns: spec
            .detect_within_ms
            .map_or((2 * nodes + 1) * probe_ns, |ms| ms * 1_000_000),
        pause_excuse_ns: faultline_node::cluster::swim::suspicion_min_ms(
            4,
            nodes as usize,
            spec.probe_interval_ms,
        ) * 1_000_000,
        settle_ns: 5_000_000_000,
    };
    let faults: Vec<membership::Fault> = results
        .faults
        .iter()
        .map(|w| membership::Fault {
            kind: w.fault.clone(),
            nodes: w.nodes.clone(),
            links: w.links.clone(),
            start_ns: w.start_ns,
            end_ns: w.end_ns,
        })
        .collect();
    let verdict = membership::check_membership(&history, &faults, &options);
    let text = membership::text(&verdict);
    results.valid = if !verdict.valid {
        Validity::Known(false)
    } else if verdict.observations == 0 {
        Validity::Unknown("no observer read a view")
    } else {
        Validity::Known(true)
    };
    if let Some(at) = verdict.first_anomaly_ns() {
        results.first_anomaly_secs = Some(at as f64 / 1e9);
    }
    if !verdict.valid {
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
    }
    results.notes.push(text);
    apply_guards(results);
    Ok(())
}

/// The causal checker: bad patterns and session guarantees.
pub fn check_causal(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    let path = run_dir.join("history.jsonl");
    // The causal keyspace promises convergence too (causal+): every replica ends with
    // the same siblings, so sessions must agree on one order of conflicting writes.
    let options = CausalOptions {
        level: if results.causal.is_some() {
            ConsistencyLevel::CausalConvergence
        } else {
            ConsistencyLevel::CausalConsistency
        },
        ..CausalOptions::default()
    };
    let (history, verdict) = check_causal_file(&path, Some(Format::Jsonl), &options)
        .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", path.display()))?;
    results.model = format!("{:?}", verdict.level);
    if verdict.valid {
        results.valid = Validity::Known(true);
    } else {
        let text = report::causal::text(&history, &verdict);
        std::fs::write(run_dir.join("anomalies.txt"), &text)?;
        results.notes.push(text);
        results.valid = Validity::Known(false);
    }
    if results.causal.is_some() {
        check_causal_store(results, run_dir)?;
    }
    apply_guards(results);
    Ok(())
}

/// For the causal keyspace: replicas that did not converge make the run invalid, and the
/// linearizability checker's verdict on the same history is shown beside the causal one
/// (it is not this keyspace's promise, so it does not change the verdict).
fn check_causal_store(results: &mut Results, run_dir: &Path) -> anyhow::Result<()> {
    let path = run_dir.join("history.jsonl");
    let options = CheckOptions {
        timeout: Some(CHECK_TIMEOUT),
        ..CheckOptions::default()
    };
    let linearizable = match check_file(&path, Some(Format::Jsonl), "register", &options) {
        Ok((history, verdict)) => match verdict.result {
            CheckResult::Valid => {
                results.notes.push(
                    "linearizability, for contrast: this history happens to be linearizable".into(),
                );
                Some(true)
            }
            CheckResult::Invalid => {
                let text = report::text(&history, &verdict);
                std::fs::write(run_dir.join("linearizability.txt"), &text)?;
                results.notes.push(format!(
                    "linearizability, for contrast: NOT linearizable, as the causal keyspace \
                     does not promise to be (see {}): {}",
                    run_dir.join("linearizability.txt").display(),
                    text.lines().take(6).collect::<Vec<_>>().join(" / ")
                ));
                Some(false)
            }
            CheckResult::Unknown { reason } => {
                results.notes.push(format!(
                    "linearizability, for contrast: undecided ({reason})"
                ));
                None
            }
        },
        Err(e) => {
            results
                .notes
                .push(format!("linearizability, for contrast: cannot check ({e})"));
            None
        }
    };
    let Some(causal) = results.causal.as_mut() else {
        return Ok(());
    };
    causal.linearizable = linearizable;
    let described = causal.describe();
    let converged = causal.converged;
    let losses = causal.lww_overwritten_shown.clone();
    results.notes.push(described);
    if !losses.is_empty() {
        results.notes.push(format!(
            "LWW overwrote concurrent writes: {}",
            losses.join("; ")
        ));
    }
    if !converged {
        results.valid = Validity::Known(false);
    }
    Ok(())
}

/// A valid verdict means little if no operation succeeded while a fault was active: the
/// faults were never tested. Such a run is "unknown". An invalid verdict stands, and
/// replicas that diverged or a term with two leaders make any verdict invalid: whatever
/// the clients saw, the protocol's safety was broken.
pub fn apply_guards(results: &mut Results) {
    if !results.shared_terms.is_empty() {
        results.notes.push(leaders::describe(&results.shared_terms));
        results.valid = Validity::Known(false);
        let seen = results.shared_terms.iter().map(|s| s.seen_secs);
        let first = results.first_anomaly_secs.into_iter().chain(seen);
        results.first_anomaly_secs = first.min_by(f64::total_cmp);
    }
    if let Some(diverged @ Replicas::Diverged { .. }) = &results.replicas {
        results.notes.push(diverged.describe());
        results.valid = Validity::Known(false);
    }
    if !results.refused_recovery.is_empty() {
        results.notes.push(format!(
            "A NODE COULD NOT RECOVER ITS OWN DATA after a crash (no fault of this run damages acknowledged data): {}",
            results.refused_recovery.join("; ")
        ));
        results.valid = Validity::Known(false);
    }
    if results.valid == Validity::Known(false) {
        return;
    }
    if let Some(why) = &results.unrecovered {
        // Safety held as far as the history shows, but a store that stops serving after
        // the faults heal is not a correct one either, and the final reads are missing.
        results
            .notes
            .push(format!("the history is valid, but {why}"));
        results.valid = Validity::Unknown("the cluster did not recover after healing");
        return;
    }
    if results.valid != Validity::Known(true) || results.faults.is_empty() {
        return;
    }
    if let Some(missed) = precondition_missed(results) {
        // The faults that exist to set up one condition never set it up: a pass of the
        // correct node and an escape of a seeded bug would look the same.
        results.notes.push(missed);
        results.valid = Validity::Unknown("no fault reached its precondition");
        return;
    }
    // A fault that stops every node (kill-all) lets nothing complete while it lasts: it is
    // judged by what succeeds as the cluster recovers. Counting only the operations that
    // happened to complete in the moment before the last node died made such runs unknown
    // one time in five (debug build, issue 13).
    let exercised = results
        .faults
        .iter()
        .any(|w| w.ok_ops_during > 0 || w.ok_ops_after > 0);
    if !exercised {
        results.valid = Validity::Unknown(
            "no operation completed while a fault was active or as the cluster recovered",
        );
        results.notes.push(
            "no operation succeeded during any fault window or in the second after it healed: the history says nothing about behaviour under faults"
                .into(),
        );
    }
    if results.totals.ok == 0 {
        results.valid = Validity::Unknown("no operation succeeded");
    }
}

/// If the run had faults that set up a condition (restart-voter, diverge-leader) and none
/// of them reached it, says so, with each one's reason.
pub fn precondition_missed(results: &Results) -> Option<String> {
    let staged: Vec<_> = results
        .faults
        .iter()
        .filter_map(|w| w.precondition.as_ref().map(|p| (w, p)))
        .collect();
    if staged.is_empty() || staged.iter().any(|(_, p)| p.reached) {
        return None;
    }
    let reasons: Vec<String> = staged
        .iter()
        .map(|(w, p)| {
            format!(
                "{} at {:.2}s: {}",
                w.fault,
                w.start_ns as f64 / 1e9,
                p.detail
            )
        })
        .collect();
    Some(format!(
        "PRECONDITION NOT REACHED: none of the {} faults that set up a condition got there, so \
         this run shows nothing about the bug that condition exposes ({})",
        staged.len(),
        reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Counts;
    use crate::leaders::SharedTerm;

    fn valid_results() -> Results {
        Results {
            valid: Validity::Known(true),
            workload: "w".into(),
            checker: "linearizability".into(),
            model: "cas-register".into(),
            seed: 1,
            nodes: 3,
            time_limit_secs: 1,
            concurrency: 1,
            operations: Default::default(),
            totals: Counts {
                ok: 10,
                ..Counts::default()
            },
            faults: Vec::new(),
            notes: Vec::new(),
            teardown_errors: Vec::new(),
            replicas: None,
            unrecovered: None,
            shared_terms: Vec::new(),
            refused_recovery: Vec::new(),
            first_anomaly_secs: None,
            hotspot: None,
            contrast: None,
            causal: None,
            run_dir: "/nonexistent".into(),
            elapsed_secs: 1.0,
        }
    }

    #[test]
    fn a_fault_that_stops_every_node_counts_what_succeeds_as_the_cluster_recovers() {
        use crate::nemesis::FaultWindow;
        let kill_all = |during, after| FaultWindow {
            fault: "kill".into(),
            detail: "every node".into(),
            start_ns: 2_000_000_000,
            end_ns: 2_600_000_000,
            ok_ops_during: during,
            ok_ops_during_by_node: Default::default(),
            ok_ops_after: after,
            precondition: None,
            nodes: vec![1, 2, 3],
            links: Vec::new(),
        };
        let mut recovered = valid_results();
        recovered.faults = vec![kill_all(0, 12)];
        apply_guards(&mut recovered);
        assert_eq!(recovered.valid, Validity::Known(true));
        let mut idle = valid_results();
        idle.faults = vec![kill_all(0, 0)];
        apply_guards(&mut idle);
        assert!(matches!(idle.valid, Validity::Unknown(_)));
    }

    #[test]
    fn a_cluster_that_did_not_recover_makes_a_valid_history_unknown() {
        let mut results = valid_results();
        apply_guards(&mut results);
        assert_eq!(results.valid, Validity::Known(true));
        results.unrecovered = Some("no leader after healing".into());
        apply_guards(&mut results);
        assert_eq!(results.exit_code(), 2);
        assert!(results.notes[0].contains("no leader after healing"));
    }

    #[test]
    fn a_valid_run_whose_staged_faults_all_missed_their_precondition_is_unknown() {
        use crate::choreography::Precondition;
        use crate::nemesis::FaultWindow;
        let window = |precondition: Option<Precondition>| FaultWindow {
            fault: "diverge-leader".into(),
            detail: String::new(),
            start_ns: 2_000_000_000,
            end_ns: 3_000_000_000,
            ok_ops_during: 5,
            ok_ops_during_by_node: Default::default(),
            ok_ops_after: 0,
            precondition,
            nodes: Vec::new(),
            links: Vec::new(),
        };
        let mut results = valid_results();
        results.faults = vec![
            window(Some(Precondition::missed("no new leader"))),
            window(None),
        ];
        apply_guards(&mut results);
        assert_eq!(
            results.valid,
            Validity::Unknown("no fault reached its precondition")
        );
        assert!(results.notes[0].contains("diverge-leader at 2.00s: no new leader"));

        let mut one_reached = valid_results();
        one_reached.faults = vec![
            window(Some(Precondition::missed("no new leader"))),
            window(Some(Precondition::reached("conflict stood"))),
        ];
        apply_guards(&mut one_reached);
        assert_eq!(one_reached.valid, Validity::Known(true));

        // An anomaly found stands whatever the faults reached.
        let mut invalid = valid_results();
        invalid.valid = Validity::Known(false);
        invalid.faults = vec![window(Some(Precondition::missed("no new leader")))];
        apply_guards(&mut invalid);
        assert_eq!(invalid.valid, Validity::Known(false));
    }

    #[test]
    fn a_term_with_two_leaders_makes_any_run_invalid_and_dates_the_anomaly() {
        let mut results = valid_results();
        results.unrecovered = Some("no leader after healing".into());
        results.shared_terms = vec![SharedTerm {
            group: 1,
            term: 4,
            leaders: vec![1, 3],
            seen_secs: 5.5,
        }];
        apply_guards(&mut results);
        assert_eq!(results.valid, Validity::Known(false));
        assert_eq!(results.first_anomaly_secs, Some(5.5));
        assert!(results.notes[0].contains("ELECTION SAFETY VIOLATED"));
    }

    #[test]
    fn a_node_that_cannot_recover_its_own_data_makes_the_run_invalid() {
        let mut results = valid_results();
        results.refused_recovery =
            vec!["node 2: cannot recover node 2 from data: group 1's log has a gap".into()];
        apply_guards(&mut results);
        assert_eq!(results.valid, Validity::Known(false));
        assert!(
            results.notes[0].contains("COULD NOT RECOVER"),
            "{:?}",
            results.notes
        );
        assert!(results.notes[0].contains("group 1's log has a gap"));
    }
}
