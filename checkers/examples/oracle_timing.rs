//! Times the checker on the Porcupine oracle histories (run with `--release`).
//!
//! `cargo run --release --example oracle_timing [runs]` prints the median check time per file,
//! parsing excluded, and the slowest partition of each.

use std::path::PathBuf;

use faultline_checkers::{CheckOptions, Format, check, formats, model::Kv};

#[path = "common/timing.rs"]
mod timing;

// As in the `faultline` binary: the checker's search allocates and frees one small state per step (kv's strings); mimalloc
// does that about a fifth faster than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21);
    let only = std::env::args().nth(2);
    let dir = std::env::var_os("FAULTLINE_ORACLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/oracles"))
        })
        .join("porcupine-kv");
    for name in [
        "c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad",
    ] {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let path = dir.join(format!("{name}.edn"));
        let history = match formats::read_history_file(&path, Some(Format::Edn)) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        let skip_all = std::env::var_os("SKIP_ALL").is_some();
        for (label, options) in [
            ("default", CheckOptions::default()),
            (
                "all partitions",
                CheckOptions {
                    stop_at_first_invalid: false,
                    ..Default::default()
                },
            ),
            (
                "1 thread",
                CheckOptions {
                    threads_max: 1,
                    ..Default::default()
                },
            ),
        ] {
            if skip_all && label == "all partitions" {
                continue;
            }
            let (median, verdict) =
                timing::median_ms(runs, || check(&Kv, &history, &options).expect("kv history"));
            let slowest = verdict
                .partitions
                .iter()
                .max_by_key(|p| p.elapsed_us)
                .expect("partitions");
            println!(
                "{name:8} {label:22} median {:9.3} ms  {:?}  slowest partition key {:?}: {} us, {} cache entries",
                median, verdict.result, slowest.key, slowest.elapsed_us, slowest.cache_entries
            );
        }
    }
}
