//! Agreement with other projects' checkers on their own histories.
//!
//! Every file listed in `oracles/porcupine-kv/verdicts.tsv` is checked with the kv model and
//! the verdict must match Porcupine's. The oracle directory is `$FAULTLINE_ORACLES` if set,
//! else `shared/oracles` two levels above this crate.

use std::path::PathBuf;
use std::time::Instant;

use faultline_checkers::{CheckOptions, CheckResult, Format, check_file};

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
        let expected = match expected {
            "linearizable" => CheckResult::Valid,
            "not-linearizable" => CheckResult::Invalid,
            other => panic!("unknown expected verdict {other:?}"),
        };
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
        if expected == CheckResult::Invalid {
            let explanation = verdict
                .invalid_partitions()
                .next()
                .and_then(|p| p.explanation.as_ref())
                .expect("an invalid verdict explains itself");
            assert_eq!(explanation.states.len(), explanation.prefix.len() + 1);
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "every oracle file was checked");
}
