//! Times the checker on Porcupine's etcd histories (run with `--release`).
//!
//! `cargo run --release --example etcd_timing [runs] [FILTER]` prints each file's median check
//! time (parsing excluded), its verdict, operations and cache entries, slowest first, and
//! the sum of the medians: the figure to put beside the sum of Porcupine's
//! `go test -bench BenchmarkEtcdJepsen` results.

use std::path::PathBuf;

use faultline_checkers::model::CasRegister;
use faultline_checkers::{CheckOptions, Format, check, formats};

#[path = "common/timing.rs"]
mod timing;

// As in the `faultline` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21);
    let only = std::env::args().nth(2);
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/porcupine-etcd"
    ));
    let table = std::fs::read_to_string(dir.join("verdicts.tsv")).expect("verdicts.tsv");
    let options = CheckOptions::default();
    let model = CasRegister::default();
    let mut rows = Vec::new();
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let file = row.split('\t').next().expect("a file name");
        if only.as_ref().is_some_and(|o| !file.contains(o.as_str())) {
            continue;
        }
        let history = formats::read_history_file(&dir.join(file), Some(Format::JepsenLog))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (median, verdict) = timing::median_ms(runs, || {
            check(&model, &history, &options).expect("etcd history")
        });
        let entries: usize = verdict.partitions.iter().map(|p| p.cache_entries).sum();
        rows.push((
            median,
            file.to_string(),
            verdict.result,
            history.operations.len(),
            entries,
        ));
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, file, result, ops, entries) in &rows {
        println!("{file:14} median {ms:9.3} ms  {result:?}  {ops} ops, {entries} cache entries");
    }
    let total: f64 = rows.iter().map(|r| r.0).sum();
    println!("sum of medians over {} files: {total:.3} ms", rows.len());
}
