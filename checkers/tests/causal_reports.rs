//! Causal verdicts as reports, the file-level entry point, and the size bound.

mod common;

use std::time::Instant;

use common::causal::{StorePlan, ops, simulate};
use faultline_checkers::formats::Format;
use faultline_checkers::{
    AnomalyKind, CausalOptions, CausalVerdict, ConsistencyLevel, check_causal, check_causal_file,
    report,
};

#[test]
fn text_and_json_tell_each_anomaly_as_a_story() {
    let h = ops("3 w x 5
                 1 r x 5
                 1 r x nil
                 0 w y 1
                 0 r y nil");
    let options = CausalOptions {
        anomalies_max: 1,
        ..CausalOptions::default()
    };
    let verdict = check_causal(&h, &options).unwrap();
    let text = report::causal::text(&h, &verdict);
    assert!(
        text.starts_with("NOT causally consistent (CC): 5 operations, 5 checked, 2 anomalies"),
        "{text}"
    );
    assert!(
        text.contains("By kind: ReadYourWrites 1, MonotonicReads 1"),
        "{text}"
    );
    assert!(
        text.contains("[ReadYourWrites] session 0 wrote y=1 (op 3) then read y=nil (op 4)"),
        "{text}"
    );
    assert!(
        text.contains("op 4 (process 0): read \"y\" nil -> ok nil"),
        "{text}"
    );
    assert!(text.contains("1 more anomalies not listed"), "{text}");

    let json = report::causal::json(&h, &verdict);
    assert_eq!(json["valid"], false);
    assert_eq!(json["level"], "cc");
    assert_eq!(json["truncated"], true);
    assert_eq!(json["anomalies_found"], 2);
    assert_eq!(json["anomaly_counts"]["MonotonicReads"], 1);
    assert_eq!(json["anomalies"][0]["kind"], "ReadYourWrites");
    assert_eq!(json["anomalies"][0]["op_ids"], serde_json::json!([3, 4]));
    assert_eq!(json["anomalies"][0]["ops"][1]["f"], "read");
    let back: CausalVerdict =
        serde_json::from_value(serde_json::to_value(&verdict).unwrap()).unwrap();
    assert_eq!(back, verdict);

    let valid = ops("0 w x 1\n1 r x 1");
    let verdict = check_causal(&valid, &CausalOptions::default()).unwrap();
    let text = report::causal::text(&valid, &verdict);
    assert_eq!(
        text,
        "causally consistent (CC): 2 operations, 2 checked, 0 anomalies\n"
    );
    assert_eq!(report::causal::json(&valid, &verdict)["truncated"], false);
}

#[test]
fn check_causal_file_reads_and_checks() {
    let h = ops("0 w x 1
                 0 w x 2
                 1 r x 2
                 1 r x 1");
    let path = std::env::temp_dir().join(format!("faultline-causal-{}.jsonl", std::process::id()));
    let mut bytes = Vec::new();
    Format::Jsonl
        .write_events(&h.to_events(), &mut bytes)
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let result = check_causal_file(&path, None, &CausalOptions::default());
    std::fs::remove_file(&path).unwrap();
    let (history, verdict) = result.unwrap();
    assert_eq!(history.operations.len(), 4);
    assert_eq!(verdict.anomalies[0].kind, AnomalyKind::MonotonicReads);
    let missing = check_causal_file(&path, None, &CausalOptions::default()).unwrap_err();
    assert!(missing.to_string().starts_with("cannot read"), "{missing}");
}

/// The documented bound: a history of about 10,000 operations checks at CCv in well under a
/// minute even in a debug build.
#[test]
fn ten_thousand_operations_check_in_time() {
    let h = simulate(StorePlan {
        seed: 7,
        sessions: 10,
        operations: 10_000,
        keys: 5,
        convergent: true,
        causal_delivery: true,
        unknown_percent: 2,
    });
    let options = CausalOptions {
        level: ConsistencyLevel::CausalConvergence,
        ..CausalOptions::default()
    };
    let started = Instant::now();
    let verdict = check_causal(&h, &options).unwrap();
    let elapsed = started.elapsed();
    assert!(verdict.valid, "{verdict:#?}");
    assert!(verdict.checked_operations > 9_000);
    assert!(elapsed.as_secs() < 60, "took {elapsed:?}");
    eprintln!("10,000 operations at CCv: {elapsed:?}");
}
