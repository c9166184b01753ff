//! Agreement with Porcupine on its etcd histories (Jepsen text logs of a compare-and-set
//! register, vendored in `tests/data/porcupine-etcd` with Porcupine's verdicts).

use std::path::PathBuf;

use faultline_checkers::{CheckOptions, CheckResult, Format, check_file};

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/porcupine-etcd"
    ))
}

#[test]
fn porcupine_etcd_verdicts_agree() {
    let dir = data_dir();
    let table = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/verdicts.tsv: {e}", dir.display()));
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let [file, expected] = row.split('\t').collect::<Vec<_>>()[..] else {
            panic!("verdicts.tsv row {row:?} does not have 2 fields");
        };
        let expected = match expected {
            "linearizable" => CheckResult::Valid,
            "not-linearizable" => CheckResult::Invalid,
            other => panic!("unknown expected verdict {other:?}"),
        };
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
        if verdict.result == CheckResult::Invalid {
            let explanation = verdict
                .invalid_partitions()
                .next()
                .and_then(|p| p.explanation.as_ref())
                .expect("an invalid verdict explains itself");
            assert_eq!(explanation.states.len(), explanation.prefix.len() + 1);
        }
        checked += 1;
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert_eq!(checked, 102, "every file with a verdict was checked");
}

#[test]
fn the_log_format_is_read_from_the_extension_and_by_name() {
    let path = data_dir().join("etcd_002.log");
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
