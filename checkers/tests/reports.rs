//! Reports and the file-level entry point.

mod common;

use std::path::PathBuf;

use common::{Kind, Plan, generate};
use faultline_checkers::formats::{Format, read_history};
use faultline_checkers::{CheckOptions, CheckResult, Error, check_by_name, check_file, report};

fn oracle(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FAULTLINE_ORACLES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/oracles")),
    };
    dir.join("porcupine-kv").join(file)
}

#[test]
fn reports_explain_an_invalid_history() {
    // Format guessed from the extension.
    let (history, verdict) =
        check_file(&oracle("c01-bad.edn"), None, "kv", &CheckOptions::default()).unwrap();
    assert_eq!(verdict.result, CheckResult::Invalid);

    let text = report::text(&history, &verdict);
    assert!(text.starts_with("NOT linearizable"), "{text}");
    assert!(text.contains("Longest linearizable prefix"), "{text}");
    assert!(text.contains("No linearization gets past"), "{text}");

    let json = report::json(&history, &verdict);
    assert_eq!(json["valid"], serde_json::json!(false));
    assert!(!json["failures"].as_array().unwrap().is_empty());
    let back: faultline_checkers::Verdict =
        serde_json::from_value(serde_json::to_value(&verdict).unwrap()).unwrap();
    assert_eq!(back, verdict);

    let html = report::html(&history, &verdict);
    assert!(
        html.contains("rect class=\"op failing\""),
        "the failing op is drawn"
    );
    assert!(html.contains(" prefix\""), "the prefix is drawn");
    for external in ["http:", "https:", "src=", "href=", "@import"] {
        assert!(
            !html.contains(external),
            "no external resources: found {external}"
        );
    }
}

#[test]
fn valid_report_says_so() {
    let (history, verdict) = check_file(
        &oracle("c01-ok.edn"),
        Some(Format::Edn),
        "kv",
        &CheckOptions::default(),
    )
    .unwrap();
    assert!(report::text(&history, &verdict).starts_with("linearizable"));
    assert_eq!(
        report::json(&history, &verdict)["valid"],
        serde_json::json!(true)
    );
}

#[test]
fn check_file_errors_name_the_problem() {
    let err = check_file(
        &oracle("c01-ok.edn"),
        None,
        "queue",
        &CheckOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownModel(_)), "{err}");
    let err = check_file(
        &oracle("verdicts.tsv"),
        None,
        "kv",
        &CheckOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownFormat(_)), "{err}");
    let err = check_file(&oracle("missing.edn"), None, "kv", &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing.edn"), "{err}");
    // A register history checked as kv names the operation and the line.
    let h = read_history(
        "{\"type\":\"invoke\",\"process\":0,\"f\":\"write\",\"value\":1}\n",
        Format::Jsonl,
    )
    .unwrap();
    let err = check_by_name(&h, "kv", &CheckOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "operation 0 (line 1): f \"write\" is not an operation of the kv model; expected one of get, put, append"
    );
}

#[test]
fn written_histories_read_back_with_the_same_verdict() {
    // EDN for Knossos and JSON Lines for Faultline both round-trip a generated history,
    // unknown outcomes included.
    for seed in 0..20 {
        let plan = Plan {
            kind: Kind::CasRegister,
            seed,
            processes: 3,
            operations: 20,
            keys: 2,
            unknown_percent: 20,
        };
        let h = generate(plan);
        for format in [Format::Edn, Format::Jsonl] {
            let mut out = Vec::new();
            format.write_events(&h.to_events(), &mut out).unwrap();
            let back = read_history(std::str::from_utf8(&out).unwrap(), format).unwrap();
            assert_eq!(
                back.operations.len(),
                h.operations.len(),
                "seed {seed} {format:?}"
            );
            let a = check_by_name(&h, "cas-register", &CheckOptions::default())
                .unwrap()
                .result;
            let b = check_by_name(&back, "cas-register", &CheckOptions::default())
                .unwrap()
                .result;
            assert_eq!(a, b, "seed {seed} {format:?}");
        }
    }
}
