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

#[test]
fn the_smoke_suite_passes_every_case() {
    let store = tempfile::tempdir().expect("tempdir");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/smoke.yaml");
    let output = suite(&file, store.path());
    // The table is the point of the suite: show it in the test log.
    println!("{}", String::from_utf8_lossy(&output.stdout));
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
        "bug-keep-conflicts",
        "correct-restart-voter",
        "bug-vote-amnesia",
        "bug-double-vote",
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
        text(&output).contains("FAIL: expected invalid, got valid"),
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
