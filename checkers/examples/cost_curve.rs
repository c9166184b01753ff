//! The checker's cost curve on generated cas-register histories (run with `--release`).
//!
//! ```text
//! cargo run --release --example cost_curve [-- OPTIONS]
//!   --sizes 1000,10000,100000,1000000   operations per history
//!   --processes 10,100                  client threads
//!   --keys 16                           registers
//!   --info-fraction 0.01                fraction of writes that end as `info`
//!   --seed 1                            generator seed
//!   --timeout 120                       seconds before a check gives up (`Unknown`)
//!   --cache-mib 1024                    the checker's cache bound per partition
//! ```
//!
//! Each configuration runs in a child process (this example re-executed with `--one ...`) so
//! that its peak memory is its own: the child prints its resident set after generating the
//! history and its peak (`VmHWM` from `/proc/self/status`) over the checks, with the peak
//! reset after generation (`5` written to `/proc/self/clear_refs`). Check time is the median
//! of several runs for small histories, one run for the largest. The parent prints a markdown
//! table.

use std::process::Command;
use std::time::{Duration, Instant};

use faultline_checkers::generate::RegisterWorkload;
use faultline_checkers::{CheckOptions, CheckResult, Outcome, check_by_name};

// As in the `faultline` binary: the checker's search allocates and frees one small state per
// step; mimalloc does that about a fifth faster than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        one(&args[1..]);
        return;
    }
    let mut sizes = vec![1_000, 10_000, 100_000, 1_000_000];
    let mut processes = vec![10, 100];
    let mut keys = 16;
    let mut info_fraction = 0.01;
    let mut seed = 1;
    let mut timeout = 120;
    let mut cache_mib: u64 = 1024;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let list = || -> Vec<u64> {
            value
                .split(',')
                .map(|n| n.parse().expect("a number"))
                .collect()
        };
        match flag.as_str() {
            "--sizes" => sizes = list(),
            "--processes" => processes = list(),
            "--keys" => keys = value.parse().expect("a number"),
            "--info-fraction" => info_fraction = value.parse().expect("a fraction"),
            "--seed" => seed = value.parse().expect("a number"),
            "--timeout" => timeout = value.parse().expect("seconds"),
            "--cache-mib" => cache_mib = value.parse().expect("MiB"),
            other => panic!("unknown option {other}"),
        }
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "keys {keys}, read:write:cas 2:1:1, values 0..5, {}% of writes `info`, seed {seed}, \
         model cas-register, timeout {timeout} s, cache bound {cache_mib} MiB per partition",
        info_fraction * 100.0
    );
    println!();
    println!(
        "| ops | processes | infos | check time (median of runs) | CPU user + sys per run | \
         peak RSS during check | RSS with history | verdict | cache entries |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |");
    for &n in &sizes {
        for &p in &processes {
            let output = Command::new(&exe)
                .args([
                    "--one",
                    &n.to_string(),
                    &p.to_string(),
                    &keys.to_string(),
                    &info_fraction.to_string(),
                    &seed.to_string(),
                    &timeout.to_string(),
                    &cache_mib.to_string(),
                ])
                .output()
                .expect("run the child");
            let stdout = String::from_utf8_lossy(&output.stdout);
            match stdout.lines().find_map(|l| l.strip_prefix("ROW ")) {
                Some(row) if output.status.success() => println!("{row}"),
                _ => println!(
                    "| {n} | {p} | | child failed: {} {} | | | | | |",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            }
        }
    }
}

/// Child: generate one history, check it, print one `ROW` line.
fn one(args: &[String]) {
    let [n, p, k, info, seed, timeout, cache_mib] = args else {
        panic!("--one N P K INFO_FRACTION SEED TIMEOUT_S CACHE_MIB");
    };
    let workload = RegisterWorkload {
        operations: n.parse().expect("N"),
        processes: p.parse().expect("P"),
        keys: k.parse().expect("K"),
        info_fraction: info.parse().expect("fraction"),
        seed: seed.parse().expect("seed"),
        ..Default::default()
    };
    let history = workload.generate();
    let infos = history
        .operations
        .iter()
        .filter(|op| op.outcome == Outcome::Unknown)
        .count();
    let rss_history = status_kib("VmRSS");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let options = CheckOptions {
        timeout: Some(Duration::from_secs(timeout.parse().expect("seconds"))),
        cache_bytes_max: cache_mib.parse::<usize>().expect("MiB") << 20,
        ..Default::default()
    };
    // Small histories: median of up to 7 runs after a warm-up run; large ones: one run.
    let runs = match workload.operations {
        0..=10_000 => 7,
        10_001..=100_000 => 3,
        _ => 1,
    };
    let mut times = Vec::new();
    let mut verdict = None;
    let warm_up = usize::from(runs > 1);
    let started_all = Instant::now();
    let mut cpu = (0.0, 0.0);
    for run in 0..runs + warm_up {
        let started = Instant::now();
        let cpu_before = cpu_seconds();
        let v = check_by_name(&history, workload.model_name(), &options).expect("valid ops");
        if run >= warm_up {
            times.push(started.elapsed().as_secs_f64());
            let after = cpu_seconds();
            cpu.0 += after.0 - cpu_before.0;
            cpu.1 += after.1 - cpu_before.1;
        }
        let gave_up = matches!(v.result, CheckResult::Unknown { .. });
        verdict = Some(v);
        if gave_up || started_all.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let verdict = verdict.expect("one run");
    let peak = status_kib("VmHWM");
    let entries: usize = verdict.partitions.iter().map(|p| p.cache_entries).sum();
    let result = match &verdict.result {
        CheckResult::Valid => "valid".to_string(),
        CheckResult::Invalid => "INVALID".to_string(),
        CheckResult::Unknown { reason } => format!("unknown: {reason}"),
    };
    println!(
        "ROW | {} | {} | {infos} | {} ({} run{}) | {} + {} | {}{} | {} | {result} | {entries} |",
        workload.operations,
        workload.processes,
        human_time(median),
        times.len(),
        if times.len() == 1 { "" } else { "s" },
        human_time(cpu.0 / times.len() as f64),
        human_time(cpu.1 / times.len() as f64),
        mib(peak),
        if reset { "" } else { " (incl. generation)" },
        mib(rss_history),
    );
}

/// (user, system) CPU seconds this process has used, from `/proc/self/stat` (100 ticks/s:
/// coarse, so only meaningful for runs of a second or more).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: indices 11 and 12 after the name.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn human_time(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}
