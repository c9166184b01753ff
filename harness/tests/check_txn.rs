//! `faultline check` on transactional and bank histories, as a user runs it: exit codes by
//! the contract (0 valid, 1 invalid, 2 unknown or error), the verdict's words, diagrams.

use std::path::{Path, PathBuf};
use std::process::Command;

fn faultline(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .output()
        .expect("faultline runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faultline-check-txn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const WRITE_SKEW: &str = r#"{"index":0,"type":"invoke","process":0,"f":"txn","value":[["append","x",1],["r","y",null]]}
{"index":1,"type":"invoke","process":1,"f":"txn","value":[["append","y",1],["r","x",null]]}
{"index":2,"type":"ok","process":0,"f":"txn","value":[["append","x",1],["r","y",[]]]}
{"index":3,"type":"ok","process":1,"f":"txn","value":[["append","y",1],["r","x",[]]]}
"#;

#[test]
fn write_skew_passes_snapshot_isolation_and_fails_serializable_with_a_diagram() {
    let d = dir("skew");
    let history = write(&d, "skew.jsonl", WRITE_SKEW);
    let (code, out, err) = faultline(&[
        "check",
        &history,
        "--model",
        "list-append",
        "--consistency-model",
        "snapshot-isolation",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("valid"), "{out}");
    let svgs = d.join("svg");
    let (code, out, err) = faultline(&[
        "check",
        &history,
        "--model",
        "list-append",
        "--consistency-model",
        "serializable",
        "--svg-dir",
        svgs.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("anomalies: G2-item") && out.contains("not: repeatable-read"),
        "{out}"
    );
    assert!(out.contains("read \"x\" empty"), "{out}");
    let svg = std::fs::read_to_string(svgs.join("G2-item-0.svg")).expect("a diagram");
    assert!(svg.starts_with("<svg"));
    let (code, out, _) = faultline(&[
        "check",
        &history,
        "--model",
        "list-append",
        "--consistency-model",
        "serializable",
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["valid"], "invalid");
    assert_eq!(v["anomaly-types"][0], "G2-item");
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let d = dir("bad");
    let history = write(&d, "skew.jsonl", WRITE_SKEW);
    let (code, _, err) = faultline(&[
        "check",
        &history,
        "--model",
        "list-append",
        "--consistency-model",
        "serialisable",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown consistency model \"serialisable\""),
        "{err}"
    );
    let broken = write(
        &d,
        "broken.jsonl",
        "{\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"w\",\"x\",1]]}\n",
    );
    let (code, _, err) = faultline(&["check", &broken, "--model", "list-append"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 1") && err.contains("append or r"),
        "{err}"
    );
    // The same history is fine as rw-register, and an empty graph is unknown, not valid.
    let (code, out, _) = faultline(&["check", &broken, "--model", "rw-register"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("empty-transaction-graph"), "{out}");
}

#[test]
fn a_bank_read_of_half_a_transfer_is_explained() {
    let d = dir("bank");
    let history = write(
        &d,
        "bank.edn",
        "{:type :invoke, :process 1, :f :transfer, :value {:from 0, :to 1, :amount 5}}\n\
         {:type :invoke, :process 0, :f :read, :value nil}\n\
         {:type :ok, :process 0, :f :read, :value {0 45, 1 50}}\n\
         {:type :ok, :process 1, :f :transfer, :value {:from 0, :to 1, :amount 5}}\n",
    );
    let (code, out, err) = faultline(&["check", &history, "--model", "bank", "--total", "100"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("wrong-total") && out.contains("5 missing") && out.contains("0→1 5"),
        "{out}"
    );
}
