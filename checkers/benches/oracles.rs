//! Criterion benchmarks of the linearizability checker on the oracle histories.
//!
//! One benchmark per file listed in `porcupine-kv/verdicts.tsv`, checked with the kv model and
//! default options. Each file is parsed once, outside the timed loop, and its verdict is
//! compared with the expected one before timing. The oracle directory is `$FAULTLINE_ORACLES`
//! if set, else `shared/oracles` two levels above this crate.
//!
//! Then Porcupine's etcd histories (`tests/data/porcupine-etcd`, Jepsen logs, cas-register
//! model): `porcupine-etcd/all-102` checks all 102 files with a verdict in one iteration, the
//! figure to put beside the sum of Porcupine's `BenchmarkEtcdJepsen*` results.
//!
//! `cargo bench --bench oracles -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_checkers::model::{CasRegister, Kv};
use faultline_checkers::{CheckOptions, CheckResult, Format, check, formats};

// As in the `faultline` binary: the checker's search allocates and frees one small state per step (kv's strings); mimalloc
// does that about a fifth faster than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn oracle_dir() -> PathBuf {
    match std::env::var_os("FAULTLINE_ORACLES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/oracles")),
    }
}

fn oracles(c: &mut Criterion) {
    let dir = oracle_dir().join("porcupine-kv");
    let table = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/verdicts.tsv: {e}", dir.display()));
    let options = CheckOptions::default();
    let mut group = c.benchmark_group("porcupine-kv");
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = row.split('\t').collect();
        let [file, expected, _operations] = fields[..] else {
            panic!("verdicts.tsv row {row:?} does not have 3 fields");
        };
        let expected = match expected {
            "linearizable" => CheckResult::Valid,
            "not-linearizable" => CheckResult::Invalid,
            other => panic!("unknown expected verdict {other:?}"),
        };
        let history = formats::read_history_file(&dir.join(file), Some(Format::Edn))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let verdict = check(&Kv, &history, &options).expect("kv history");
        assert_eq!(verdict.result, expected, "{file}");
        let name = file.trim_end_matches(".edn");
        group.bench_function(name, |b| {
            b.iter(|| check(&Kv, black_box(&history), &options).expect("kv history"));
        });
    }
    group.finish();
}

fn etcd(c: &mut Criterion) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/porcupine-etcd"
    ));
    let table = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/verdicts.tsv: {e}", dir.display()));
    let options = CheckOptions::default();
    let model = CasRegister::default();
    let histories: Vec<_> = table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|row| {
            let [file, expected] = row.split('\t').collect::<Vec<_>>()[..] else {
                panic!("verdicts.tsv row {row:?} does not have 2 fields");
            };
            let history = formats::read_history_file(&dir.join(file), Some(Format::JepsenLog))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let verdict = check(&model, &history, &options).expect("etcd history");
            let valid = verdict.result == CheckResult::Valid;
            assert_eq!(valid, expected == "linearizable", "{file}");
            history
        })
        .collect();
    let mut group = c.benchmark_group("porcupine-etcd");
    group.bench_function(format!("all-{}", histories.len()), |b| {
        b.iter(|| {
            for history in &histories {
                black_box(check(&model, black_box(history), &options).expect("etcd history"));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, oracles, etcd);
criterion_main!(benches);
