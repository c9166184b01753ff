//! The transactional checker's time and memory against history size (run with `--release`).
//!
//! ```text
//! cargo run --release -p faultline-checkers --example txn_scale [-- OPTIONS]
//!   --sizes 10000,100000,1000000   transactions per history
//!   --workload list-append         or rw-register
//!   --stale-read 0                 probability a read misses the latest write (a seeded bug)
//!   --seed 1
//!   --write FILE                   only write the largest history as JSON Lines, for timing
//!                                  `faultline check FILE --model list-append` by hand
//! ```
//!
//! Each size runs in a child process (this example re-executed with `--one ...`), which
//! generates the history as JSON Lines in memory, then reads and checks it (parse, pair,
//! infer, search) with the peak resident set reset in between (`5` to
//! `/proc/self/clear_refs`), and prints the read and check times and the peak (`VmHWM`).

use std::process::Command;
use std::time::Instant;

use faultline_checkers::txn::generate::{TxnBug, TxnWorkload};
use faultline_checkers::txn::history::{MopSet, TxnHistory};
use faultline_checkers::txn::{self, TxnOptions, Workload};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn workload(args: &[String]) -> TxnWorkload {
    let mut w = TxnWorkload::default();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--workload" => {
                w.workload = Workload::from_name(&value).expect("list-append or rw-register")
            }
            "--stale-read" => {
                let p: f64 = value.parse().expect("a probability");
                w.bug = (p > 0.0).then_some(TxnBug::StaleRead(p));
            }
            "--seed" => w.seed = value.parse().expect("a seed"),
            "--txns" => w.txns = value.parse().expect("a count"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    w
}

fn one(args: &[String]) {
    let w = workload(args);
    let text = w.jsonl();
    let bytes = text.len();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let allowed = match w.workload {
        Workload::ListAppend => MopSet::ListAppend,
        Workload::RwRegister => MopSet::RwRegister,
    };
    let history = TxnHistory::from_jsonl(&text, allowed).expect("a generated history reads back");
    drop(text);
    let read = start.elapsed();
    let check_start = Instant::now();
    let verdict = txn::check(&history, w.workload, &TxnOptions::default()).expect("checks");
    let check = check_start.elapsed();
    println!(
        "| {} | {:.0} MB | {:.2} s | {:.2} s | {:.2} s | {:.0} | {} MiB | {:?} {} |",
        w.txns,
        bytes as f64 / 1e6,
        read.as_secs_f64(),
        check.as_secs_f64(),
        (read + check).as_secs_f64(),
        w.txns as f64 / (read + check).as_secs_f64(),
        status("VmHWM:") / 1024,
        verdict.valid,
        verdict.anomaly_types.join(",")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        one(&args[1..]);
        return;
    }
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    let mut rest = Vec::new();
    let mut write: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--sizes" => {
                sizes = args[i + 1]
                    .split(',')
                    .map(|s| s.parse().expect("a size"))
                    .collect();
                i += 2;
            }
            "--write" => {
                write = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                rest.push(args[i].clone());
                i += 1;
            }
        }
    }
    if let Some(path) = write {
        let mut w = workload(&rest);
        w.txns = *sizes.iter().max().expect("a size");
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(&path).expect("the output file"));
        let events = w.write_jsonl(&mut file).expect("writes");
        eprintln!(
            "{events} events ({} transactions) written to {path}",
            w.txns
        );
        return;
    }
    println!("| transactions | JSON | read | check | total | txn/s | peak RSS | verdict |");
    println!("|---|---|---|---|---|---|---|---|");
    let me = std::env::current_exe().expect("this example's path");
    for size in sizes {
        let status = Command::new(&me)
            .arg("--one")
            .args(&rest)
            .args(["--txns", &size.to_string()])
            .status()
            .expect("the child runs");
        assert!(status.success(), "the child for {size} failed");
    }
}
