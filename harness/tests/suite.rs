//! The CI fault-injection suite (`ci/smoke.yaml`) runs as part of `cargo test`, and the
//! suite runner itself fails when a run does not give the expected verdict.

use std::path::Path;
use std::process::{Command, Output};

fn suite(file: &Path, store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("suite")
        .arg(file)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run faultline suite")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A failing case's run lives in a temporary directory that is gone once the test ends:
/// print what a diagnosis needs first (its notes, the nemesis log, each node's last lines).
fn print_failed_runs(store: &Path, table: &str) {
    let failed: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("FAIL:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let Ok(suites) = std::fs::read_dir(store) else {
        return;
    };
    for suite in suites.flatten() {
        let Ok(runs) = std::fs::read_dir(suite.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let name = run.file_name().to_string_lossy().into_owned();
            if !failed
                .iter()
                .any(|case| name.starts_with(&format!("{case}-seed")))
            {
                continue;
            }
            let latest = run.path().join("latest");
            println!("==== {name}");
            for file in ["results.json", "nemesis.log"] {
                let text = std::fs::read_to_string(latest.join(file)).unwrap_or_default();
                println!("---- {file}\n{}", tail(&text, 60));
            }
            let Ok(nodes) = std::fs::read_dir(latest.join("nodes")) else {
                continue;
            };
            for node in nodes.flatten() {
                let text = std::fs::read_to_string(node.path().join("log")).unwrap_or_default();
                println!(
                    "---- node {}\n{}",
                    node.file_name().to_string_lossy(),
                    tail(&text, 40)
                );
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn the_smoke_suite_passes_every_case() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/smoke.yaml");
    let output = suite(&file, store.path());
    // The table is the point of the suite: show it in the test log.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    if output.status.code() != Some(0) {
        print_failed_runs(store.path(), &String::from_utf8_lossy(&output.stdout));
    }
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for case in [
        "correct-all-faults",
        "bug-early-ack",
        "bug-stale-read",
        "bug-no-fsync",
        "correct-resend-kill",
        "bug-double-apply",
        "correct-isolate-leader-long",
        "correct-diverge-leader",
        "bug-keep-conflicts",
        "correct-restart-voter",
        "bug-vote-amnesia",
        "bug-double-vote",
        "correct-partitions-kill",
        "bug-wal-group-mixup",
        "correct-set-partitions",
        "bug-scan-skips-boundary",
        "correct-isolate-leader-partitions",
        "bug-stale-leader-route",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(case) && l.ends_with("PASS")),
            "{case}:\n{stdout}"
        );
    }
}

#[test]
fn a_run_that_does_not_give_the_expected_verdict_fails_the_suite() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = store.path().join("wrong.yaml");
    std::fs::write(
        &file,
        "name: wrong\ncases:\n  - name: healthy-said-invalid\n    nemesis: []\n    time_limit_secs: 3\n    expect: invalid\n",
    )
    .expect("write suite");
    let output = suite(&file, store.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("FAIL: ESCAPE: expected invalid, got valid"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_bad_suite_file_is_named_with_its_line() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = store.path().join("bad.yaml");
    std::fs::write(&file, "name: bad\ncases:\n  - name: x\n    expect: maybe\n")
        .expect("write suite");
    let output = suite(&file, store.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("bad.yaml:4"), "{}", text(&output));
}

#[test]
fn repeat_runs_every_case_n_times_and_reports_its_rate() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = store.path().join("twice.yaml");
    std::fs::write(
        &file,
        "name: twice\ncases:\n  - name: healthy\n    nemesis: []\n    time_limit_secs: 2\n    expect: valid\n",
    )
    .expect("write suite");
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("suite")
        .arg(&file)
        .arg("--store")
        .arg(store.path())
        .args(["--repeat", "2"])
        .output()
        .expect("run faultline suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let rate = stdout
        .lines()
        .rfind(|l| l.starts_with("healthy"))
        .expect("a rate row");
    assert!(rate.contains("2/2"), "{stdout}");
    for run in [1, 2] {
        assert!(
            store
                .path()
                .join(format!(
                    "suite-twice/healthy-seed1-run{run}/latest/results.json"
                ))
                .exists()
        );
    }
}

/// A new leader that snapshots after every entry always sends the healed old leader a
/// snapshot, never the conflicting entries: diverge-leader cannot set up its conflict, and
/// the suite must say so rather than count the valid verdict as a pass or an escape.
#[test]
fn a_fault_that_never_reaches_its_precondition_is_marked_apart_from_an_escape() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = store.path().join("unreachable.yaml");
    std::fs::write(
        &file,
        "name: unreachable\ncases:\n  - name: keep-conflicts-without-conflicts\n    \
         nemesis: [diverge-leader]\n    node_args: [--snapshot-interval-entries, \"1\"]\n    \
         bug: keep-conflicts\n    time_limit_secs: 4\n    nemesis_interval_secs: 2\n    \
         expect: invalid\n",
    )
    .expect("write suite");
    let output = suite(&file, store.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        stdout.contains("FAIL: precondition not reached") && stdout.contains("compacted its log"),
        "{}",
        text(&output)
    );
    assert!(!stdout.contains("ESCAPE"), "{stdout}");
}

#[test]
fn a_suite_file_asking_for_zero_repetitions_is_refused() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = store.path().join("zero.yaml");
    std::fs::write(
        &file,
        "name: zero\nrepeat: 0\ncases:\n  - name: x\n    nemesis: []\n    expect: valid\n",
    )
    .expect("write suite");
    let output = suite(&file, store.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("repeat must be between 1 and 1000, got 0"),
        "{}",
        text(&output)
    );
}
