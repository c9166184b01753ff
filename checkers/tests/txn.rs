//! The transactional checker on generated histories, seeded bugs and bad input.

use std::time::Duration;

use faultline_checkers::formats::Format;
use faultline_checkers::txn::generate::{TxnBug, TxnWorkload};
use faultline_checkers::txn::history::{MopSet, TxnHistory};
use faultline_checkers::txn::{self, TxnOptions, Validity, Workload};

fn check_text(text: &str, workload: Workload, options: &TxnOptions) -> txn::TxnVerdict {
    let allowed = match workload {
        Workload::ListAppend => MopSet::ListAppend,
        Workload::RwRegister => MopSet::RwRegister,
    };
    let history = TxnHistory::from_jsonl(text, allowed).expect("reads");
    txn::check(&history, workload, options).expect("checks")
}

fn models(m: &[&str]) -> TxnOptions {
    TxnOptions {
        consistency_models: Some(m.iter().map(|s| s.to_string()).collect()),
        ..TxnOptions::default()
    }
}

#[test]
fn generated_histories_of_a_correct_store_are_strict_serializable() {
    for workload in [Workload::ListAppend, Workload::RwRegister] {
        for seed in 1..=4 {
            let w = TxnWorkload {
                workload,
                txns: 3000,
                info_fraction: 0.05,
                seed,
                ..TxnWorkload::default()
            };
            let verdict = check_text(&w.jsonl(), workload, &TxnOptions::default());
            assert_eq!(
                verdict.valid,
                Validity::Valid,
                "{workload:?} seed {seed}: {:?}",
                verdict.anomaly_types
            );
            assert_eq!(verdict.stats.txns, 3000);
            if workload == Workload::ListAppend {
                assert!(
                    verdict.stats.edges > 3000,
                    "a list-append history orders most transactions"
                );
            }
        }
    }
}

#[test]
fn the_fast_reader_builds_what_the_event_reader_builds() {
    for workload in [Workload::ListAppend, Workload::RwRegister] {
        let text = TxnWorkload {
            workload,
            txns: 500,
            info_fraction: 0.1,
            ..TxnWorkload::default()
        }
        .jsonl();
        let allowed = match workload {
            Workload::ListAppend => MopSet::ListAppend,
            Workload::RwRegister => MopSet::RwRegister,
        };
        let fast = TxnHistory::from_jsonl(&text, allowed).unwrap();
        let events = Format::Jsonl.read_events(&text).unwrap();
        let slow = TxnHistory::from_events(&events, allowed).unwrap();
        assert_eq!(fast.txns, slow.txns);
        assert_eq!(fast.mops, slow.mops);
        assert_eq!(fast.elements, slow.elements);
        assert_eq!(fast.events, slow.events);
        assert_eq!(fast.keys, slow.keys);
    }
}

#[test]
fn a_store_serving_stale_reads_is_caught() {
    let w = TxnWorkload {
        txns: 2000,
        bug: Some(TxnBug::StaleRead(0.05)),
        ..TxnWorkload::default()
    };
    let verdict = check_text(&w.jsonl(), Workload::ListAppend, &models(&["serializable"]));
    assert_eq!(verdict.valid, Validity::Invalid);
    assert!(
        verdict
            .anomaly_types
            .iter()
            .any(|t| t.starts_with("G-single")
                || t.starts_with("G2")
                || t.starts_with("G-nonadjacent")),
        "{:?}",
        verdict.anomaly_types
    );
    let cycle = verdict
        .anomalies
        .values()
        .flatten()
        .find_map(|c| c.cycle.as_ref())
        .expect("a cycle");
    assert!(
        cycle.steps.iter().any(|s| s.rel == "rw"),
        "a stale read is an anti-dependency"
    );
}

/// Two transactions each read what the other writes, and both commit: write skew.
const WRITE_SKEW: &str = r#"{"index":0,"type":"invoke","process":0,"f":"txn","value":[["append","x",1],["r","y",null]]}
{"index":1,"type":"invoke","process":1,"f":"txn","value":[["append","y",1],["r","x",null]]}
{"index":2,"type":"ok","process":0,"f":"txn","value":[["append","x",1],["r","y",[]]]}
{"index":3,"type":"ok","process":1,"f":"txn","value":[["append","y",1],["r","x",[]]]}
{"index":4,"type":"invoke","process":0,"f":"txn","value":[["r","x",null],["r","y",null]]}
{"index":5,"type":"ok","process":0,"f":"txn","value":[["r","x",[1]],["r","y",[1]]]}
"#;

#[test]
fn write_skew_is_snapshot_isolation_but_not_serializable() {
    let si = check_text(
        WRITE_SKEW,
        Workload::ListAppend,
        &models(&["snapshot-isolation"]),
    );
    assert_eq!(si.valid, Validity::Valid);
    let ser = check_text(WRITE_SKEW, Workload::ListAppend, &models(&["serializable"]));
    assert_eq!(ser.valid, Validity::Invalid);
    assert_eq!(ser.anomaly_types, vec!["G2-item"]);
    assert_eq!(ser.not.iter().collect::<Vec<_>>(), vec!["repeatable-read"]);
    let case = &ser.anomalies["G2-item"][0];
    assert!(
        case.message.contains("read x empty") || case.message.contains("read \"x\" empty"),
        "{}",
        case.message
    );
    let svg = txn::explain::cycle_svg(
        &TxnHistory::from_jsonl(WRITE_SKEW, MopSet::ListAppend).unwrap(),
        "G2-item",
        case.cycle.as_ref().unwrap(),
    );
    assert!(svg.starts_with("<svg") && svg.contains("T2") && svg.contains("rw"));
}

#[test]
fn a_stale_read_after_a_commit_is_serializable_but_not_strict() {
    let text = r#"{"type":"invoke","process":0,"f":"txn","value":[["append","x",1]]}
{"type":"ok","process":0,"f":"txn","value":[["append","x",1]]}
{"type":"invoke","process":1,"f":"txn","value":[["r","x",null]]}
{"type":"ok","process":1,"f":"txn","value":[["r","x",[]]]}
"#;
    assert_eq!(
        check_text(text, Workload::ListAppend, &models(&["serializable"])).valid,
        Validity::Valid
    );
    let strict = check_text(text, Workload::ListAppend, &TxnOptions::default());
    assert_eq!(strict.valid, Validity::Invalid);
    assert_eq!(strict.anomaly_types, vec!["G-single-item-realtime"]);
}

#[test]
fn a_search_out_of_time_makes_the_verdict_unknown_not_valid() {
    let options = TxnOptions {
        consistency_models: Some(vec!["serializable".into()]),
        cycle_search_timeout: Duration::ZERO,
        ..TxnOptions::default()
    };
    let verdict = check_text(WRITE_SKEW, Workload::ListAppend, &options);
    assert!(
        verdict
            .anomaly_types
            .contains(&"cycle-search-timeout".to_string()),
        "{:?}",
        verdict.anomaly_types
    );
    assert_ne!(verdict.valid, Validity::Valid);
}

#[test]
fn bad_histories_and_options_are_refused_with_the_line_and_the_fix() {
    let allowed = MopSet::ListAppend;
    let bad_json = "{\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n{\"type\":\"ok\",";
    let err = TxnHistory::from_jsonl(bad_json, allowed)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("line 2"), "{err}");
    let bad_mop = r#"{"type":"ok","process":0,"f":"txn","value":[["w","x",1]]}"#;
    let err = TxnHistory::from_jsonl(bad_mop, allowed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("append or r") && err.contains("--model"),
        "{err}"
    );
    let not_txn = r#"{"type":"ok","process":0,"f":"read","value":1}"#;
    let err = TxnHistory::from_jsonl(not_txn, allowed)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f=\"read\"") && err.contains("txn"), "{err}");
    let edn = "{:type :ok, :process 0, :f :txn, :value [[:append :x 1]]}\n{:type :ok :process 0 :f :txn :value [[:append :x }";
    let err = Format::Edn.read_events(edn).unwrap_err().to_string();
    assert!(err.starts_with("line 2, column"), "{err}");
    let unknown = TxnOptions {
        consistency_models: Some(vec!["serialisable".into()]),
        ..TxnOptions::default()
    };
    let err = unknown.validate().unwrap_err().to_string();
    assert!(
        err.contains("unknown consistency model \"serialisable\"") && err.contains("serializable"),
        "{err}"
    );
    let unknown = TxnOptions {
        anomalies: vec!["G3".into()],
        ..TxnOptions::default()
    };
    assert!(
        unknown
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unknown anomaly \"G3\"")
    );
}

#[test]
fn an_rw_register_value_written_twice_is_refused() {
    let text = r#"{"type":"ok","process":0,"f":"txn","value":[["w","x",1]]}
{"type":"ok","process":1,"f":"txn","value":[["w","x",1]]}
{"type":"ok","process":2,"f":"txn","value":[["r","x",1]]}
"#;
    let history = TxnHistory::from_jsonl(text, MopSet::RwRegister).unwrap();
    let err = txn::check(&history, Workload::RwRegister, &TxnOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than one transaction") && err.contains("unique"),
        "{err}"
    );
}

#[test]
fn a_session_cycle_through_an_edge_labelled_rw_still_rules_out_strong_session_read_committed() {
    // Process 0: Ta reads x empty and y = [1], then Tb appends 1 to both; process 1 reads x.
    // Ta -> Tb is both rw and process order; Tb -> Ta is wr: a cycle in session order and
    // write-read edges, as Elle reports it (strong-session-PL-2-cycle-exists).
    let text = r#"{"type":"ok","process":0,"f":"txn","value":[["r","x",[]],["r","y",[1]]]}
{"type":"ok","process":0,"f":"txn","value":[["append","x",1],["append","y",1]]}
{"type":"ok","process":1,"f":"txn","value":[["r","x",[1]]]}
"#;
    let verdict = check_text(
        text,
        Workload::ListAppend,
        &models(&["strong-session-read-committed"]),
    );
    assert_eq!(
        verdict.valid,
        Validity::Invalid,
        "{:?}",
        verdict.anomaly_types
    );
}

#[test]
fn a_committed_transaction_without_a_value_is_refused_not_read_as_empty() {
    let text = r#"{"type":"invoke","process":0,"f":"txn","value":[["r","x",null]]}
{"type":"ok","process":0,"f":"txn","value":null}
"#;
    let err = TxnHistory::from_jsonl(text, MopSet::ListAppend)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("line 2") && err.contains("list of micro-ops"),
        "{err}"
    );
}
