//! Agreement with other projects' checkers on their own histories.
//!
//! Every file listed in `oracles/porcupine-kv/verdicts.tsv` is checked with the kv model and
//! the verdict must match Porcupine's. The oracle directory is `$FAULTLINE_ORACLES` if set,
//! else `shared/oracles` two levels above this crate. Porcupine's etcd histories (Jepsen text
//! logs of a compare-and-set register) are vendored in `tests/data/porcupine-etcd` with
//! Porcupine's verdicts.

use std::path::PathBuf;
use std::time::Instant;

use faultline_checkers::{CheckOptions, CheckResult, Format, Verdict, check_file};

fn oracle_dir() -> PathBuf {
    match std::env::var_os("FAULTLINE_ORACLES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/oracles")),
    }
}

#[test]
fn porcupine_kv_verdicts_agree() {
    let dir = oracle_dir().join("porcupine-kv");
    let table = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/verdicts.tsv: {e}", dir.display()));
    let mut checked = 0;
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = row.split('\t').collect();
        let [file, expected, operations] = fields[..] else {
            panic!("verdicts.tsv row {row:?} does not have 3 fields");
        };
        let expected = expected_verdict(expected);
        let started = Instant::now();
        let (history, verdict) = check_file(
            &dir.join(file),
            Some(Format::Edn),
            "kv",
            &CheckOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let elapsed = started.elapsed();
        println!(
            "{file}: {:?} in {:.3} ms ({} ops, {} partitions)",
            verdict.result,
            elapsed.as_secs_f64() * 1e3,
            history.operations.len(),
            verdict.partitions.len()
        );
        assert_eq!(
            history.operations.len().to_string(),
            operations,
            "{file}: operation count"
        );
        assert_eq!(verdict.result, expected, "{file}");
        assert_explained(&verdict);
        checked += 1;
    }
    assert_eq!(checked, 6, "every oracle file was checked");
}

/// A verdict as `verdicts.tsv` writes it.
fn expected_verdict(word: &str) -> CheckResult {
    match word {
        "linearizable" => CheckResult::Valid,
        "not-linearizable" => CheckResult::Invalid,
        other => panic!("unknown expected verdict {other:?}"),
    }
}

/// An invalid verdict explains itself with a state before and after each prefix op.
fn assert_explained(verdict: &Verdict) {
    if verdict.result == CheckResult::Invalid {
        let explanation = verdict
            .invalid_partitions()
            .next()
            .and_then(|p| p.explanation.as_ref())
            .expect("an invalid verdict explains itself");
        assert_eq!(explanation.states.len(), explanation.prefix.len() + 1);
    }
}

fn etcd_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/porcupine-etcd"
    ))
}

#[test]
fn porcupine_etcd_verdicts_agree() {
    let dir = etcd_dir();
    let table = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/verdicts.tsv: {e}", dir.display()));
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let [file, expected] = row.split('\t').collect::<Vec<_>>()[..] else {
            panic!("verdicts.tsv row {row:?} does not have 2 fields");
        };
        let expected = expected_verdict(expected);
        let (history, verdict) = check_file(
            &dir.join(file),
            None,
            "cas-register",
            &CheckOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!history.operations.is_empty(), "{file}: no operations read");
        if verdict.result != expected {
            disagreements.push(format!(
                "{file}: {:?}, Porcupine {expected:?}",
                verdict.result
            ));
        }
        assert_explained(&verdict);
        checked += 1;
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert_eq!(checked, 102, "every file with a verdict was checked");
}

#[test]
fn the_jepsen_log_format_is_read_from_the_extension_and_by_name() {
    let path = etcd_dir().join("etcd_002.log");
    let (by_extension, _) =
        check_file(&path, None, "cas-register", &CheckOptions::default()).expect("reads");
    let (by_name, _) = check_file(
        &path,
        Some(Format::JepsenLog),
        "cas-register",
        &CheckOptions::default(),
    )
    .expect("reads");
    assert_eq!(by_extension.operations, by_name.operations);
}
