//! `faultline run` end to end: each nemesis briefly against a 3-node cluster of real
//! processes in a private network namespace. The run completes, the nemesis events are
//! in the history, no node process is left behind, and the verdict is valid; a seeded
//! bug makes it invalid.
//!
//! Needs root or unprivileged user namespaces; partition and loss need iptables
//! (CI installs it). Without iptables those two print SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: Option<i32>,
    output: String,
    run_dir: PathBuf,
}

fn faultline_run(store: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .args([
            "--nodes",
            "3",
            "--time-limit",
            "6",
            "--nemesis-interval",
            "2",
            "--concurrency",
            "4",
            "--seed",
            "42",
        ])
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run faultline");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let latest = store.join("latest");
    let run_dir = std::fs::canonicalize(&latest)
        .unwrap_or_else(|_| panic!("no {} after the run:\n{text}", latest.display()));
    Run {
        code: output.status.code(),
        output: text,
        run_dir,
    }
}

fn history(run: &Run) -> Vec<Value> {
    let text = std::fs::read_to_string(run.run_dir.join("history.jsonl")).expect("history");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON event"))
        .collect()
}

fn results(run: &Run) -> Value {
    let text = std::fs::read_to_string(run.run_dir.join("results.json")).expect("results");
    serde_json::from_str(&text).expect("results JSON")
}

/// Processes whose command line mentions `needle` (the run's store directory).
fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && cmdline.contains("faultline-node") {
                found.push(cmdline);
            }
        }
    }
    found
}

fn iptables_missing() -> bool {
    let found = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        eprintln!(
            "SKIPPED: iptables is not installed (apt-get install iptables); this nemesis needs it"
        );
    }
    !found
}

fn check_nemesis(nemesis: &str) {
    let store = tempfile::tempdir().expect("tempdir");
    let run = faultline_run(store.path(), &["--nemesis", nemesis]);
    assert_eq!(
        run.code,
        Some(0),
        "a correct cluster under {nemesis} must be valid:\n{}",
        run.output
    );
    let events = history(&run);
    let starts = events
        .iter()
        .filter(|e| e["process"] == "nemesis" && e["f"] == format!("start-{nemesis}"))
        .count();
    let stops = events
        .iter()
        .filter(|e| e["process"] == "nemesis" && e["f"] == format!("stop-{nemesis}"))
        .count();
    assert!(
        starts >= 1 && starts == stops,
        "{starts} starts and {stops} stops of {nemesis}:\n{}",
        run.output
    );
    let results = results(&run);
    assert_eq!(results["valid"], true);
    assert_eq!(results["checker"], "linearizability");
    assert!(
        results["faults"][0]["ok_ops_during"].as_u64().unwrap_or(0) > 0,
        "traffic under the fault"
    );
    assert!(
        processes_mentioning(store.path()).is_empty(),
        "node processes left behind"
    );
}

#[test]
fn kill() {
    check_nemesis("kill");
}

#[test]
fn pause() {
    check_nemesis("pause");
}

#[test]
fn corrupt_wal() {
    check_nemesis("corrupt-wal");
}

#[test]
fn clock() {
    check_nemesis("clock");
}

#[test]
fn partition() {
    if !iptables_missing() {
        check_nemesis("partition");
    }
}

#[test]
fn loss() {
    if !iptables_missing() {
        check_nemesis("loss");
    }
}

#[test]
fn a_leader_that_acknowledges_before_a_quorum_is_caught() {
    if iptables_missing() {
        return;
    }
    let store = tempfile::tempdir().expect("tempdir");
    let workload = store.path().join("isolate-leader.yaml");
    std::fs::write(
        &workload,
        "name: isolate-leader\nchecker: linearizability\nmodel: cas-register\nkeys: {count: 3}\n\
         mix: {read: 2, write: 2, cas: 1}\nconcurrency: 4\ntime_limit_secs: 8\n\
         nemesis: {faults: [partition], interval_secs: 2, partition_shapes: [isolate-leader]}\n",
    )
    .expect("write workload");
    let run = faultline_run(
        store.path(),
        &[
            workload.to_str().expect("utf-8"),
            "--node-arg=--unsafe-seeded-bug",
            "--node-arg=early-ack",
        ],
    );
    assert_eq!(
        run.code,
        Some(1),
        "early-ack must be found invalid:\n{}",
        run.output
    );
    assert_eq!(results(&run)["valid"], false);
    assert!(run.run_dir.join("timeline.html").is_file());
    assert!(
        processes_mentioning(store.path()).is_empty(),
        "node processes left behind"
    );
}

#[test]
fn a_bad_workload_file_is_named_with_its_line() {
    let store = tempfile::tempdir().expect("tempdir");
    let workload = store.path().join("bad.yaml");
    std::fs::write(
        &workload,
        "name: bad\nchecker: linearizability\nmixx: {read: 1}\ntime_limit_secs: 5\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", workload.to_str().expect("utf-8"), "--store"])
        .arg(store.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("bad.yaml:3") && stderr.contains("mixx"),
        "{stderr}"
    );
}

/// Starts a long run, waits until clients are recording, then sends `signal` to the
/// harness; returns the store directory and the harness's exit status.
fn interrupt_a_run(signal: i32) -> (tempfile::TempDir, std::process::ExitStatus) {
    let store = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "run",
            "--nodes",
            "3",
            "--time-limit",
            "60",
            "--nemesis",
            "none",
            "--seed",
            "9",
        ])
        .arg("--store")
        .arg(store.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start faultline run");
    let history = store.path().join("latest/history.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::metadata(&history).map_or(true, |m| m.len() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started recording"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !processes_mentioning(store.path()).is_empty(),
        "nodes are running before the signal"
    );
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().expect("wait for the harness");
    (store, status)
}

fn assert_no_node_survives(store: &Path) {
    // The kernel delivers the parent-death signal as the harness exits; give it a moment.
    for _ in 0..50 {
        if processes_mentioning(store).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "node processes outlived the harness: {:?}",
        processes_mentioning(store)
    );
}

#[test]
fn ctrl_c_heals_stops_the_nodes_and_still_checks_the_history() {
    let (store, status) = interrupt_a_run(libc::SIGINT);
    assert_no_node_survives(store.path());
    assert!(
        status.code().is_some(),
        "the harness exits by itself on Ctrl-C: {status}"
    );
    let results = std::fs::read_to_string(store.path().join("latest/results.json"))
        .expect("results after Ctrl-C");
    assert!(results.contains("\"valid\""), "{results}");
}

#[test]
fn no_node_outlives_a_killed_harness() {
    let (store, _) = interrupt_a_run(libc::SIGKILL);
    assert_no_node_survives(store.path());
}

#[test]
fn a_list_append_run_records_micro_ops_and_is_checked_at_the_level_asked_for() {
    let store = tempfile::tempdir().expect("tempdir");
    let run = faultline_run(
        store.path(),
        &[
            "list-append",
            "--nemesis",
            "kill",
            "--isolation",
            "snapshot",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let results = results(&run);
    assert_eq!(results["checker"], "list-append");
    assert_eq!(results["model"], "snapshot-isolation", "{results}");
    let events = history(&run);
    let read = events
        .iter()
        .filter(|e| e["type"] == "ok" && e["f"] == "txn")
        .flat_map(|e| e["value"].as_array().cloned().unwrap_or_default())
        .find(|m| m[0] == "r" && m[2].as_array().is_some_and(|l| !l.is_empty()))
        .expect("some read saw a list");
    assert!(
        read[2][0].is_u64(),
        "elements are the appended integers: {read}"
    );
}

#[test]
fn a_bank_run_conserves_the_total_and_a_skipped_compare_is_caught() {
    let store = tempfile::tempdir().expect("tempdir");
    let run = faultline_run(store.path(), &["bank", "--nemesis", "none"]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(run.output.contains("total 100"), "{}", run.output);
    let store = tempfile::tempdir().expect("tempdir");
    let run = faultline_run(
        store.path(),
        &[
            "bank",
            "--nemesis",
            "none",
            "--node-arg=--unsafe-seeded-bug",
            "--node-arg=txn-skip-compare",
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.output);
    assert!(run.output.contains("wrong-total"), "{}", run.output);
}

#[test]
fn isolation_is_refused_for_a_workload_without_transactions() {
    let store = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "register", "--isolation", "snapshot", "--store"])
        .arg(store.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--isolation applies to transactional workloads"),
        "{stderr}"
    );
}
