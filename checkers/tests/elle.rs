//! Agreement with Elle: every verdict Elle's own tests assert (transcribed, history and
//! options, into `tests/data/elle/*.jsonl`) must be ours too, except the disagreements listed
//! with their reasons in `tests/data/elle/DISAGREEMENTS.md`, which must still disagree (so the
//! list cannot go stale).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use faultline_checkers::formats::{self, jsonl};
use faultline_checkers::history::{Event, EventType, ProcessId, Value};
use faultline_checkers::txn::{self, TxnOptions, Validity, Workload};
use serde_json::Value as Json;

fn data() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/elle"))
}

fn events_from_ops(ops: &[Json]) -> Vec<Event> {
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let kind =
                EventType::from_name(op["type"].as_str().expect("type")).expect("known type");
            let process = match &op["process"] {
                Json::Number(n) => ProcessId::Client(n.as_u64().expect("process")),
                Json::String(s) if s == "nemesis" => ProcessId::Nemesis,
                Json::Null => ProcessId::Client(0),
                other => panic!("process {other}"),
            };
            let value = if op["value"].is_null() {
                Value::Nil
            } else {
                jsonl::from_json(&op["value"]).expect("value")
            };
            Event {
                line: i + 1,
                index: op["index"].as_u64(),
                kind,
                process,
                time: op["time"].as_u64(),
                f: op["f"].as_str().unwrap_or("txn").to_string(),
                key: None,
                value,
                not_applied: false,
            }
        })
        .collect()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a name").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn options(o: &Json) -> TxnOptions {
    let mut options = TxnOptions::default();
    if let Some(models) = o.get("consistency-models") {
        options.consistency_models = Some(strings(models));
    }
    if let Some(a) = o.get("anomalies") {
        options.anomalies = strings(a);
    }
    if let Some(g) = o.get("additional-graphs") {
        options.additional_graphs = strings(g);
    }
    if let Some(ms) = o.get("cycle-search-timeout").and_then(Json::as_u64) {
        options.cycle_search_timeout = Duration::from_millis(ms);
    }
    options.sequential_keys = o
        .get("sequential-keys?")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    options.linearizable_keys = o
        .get("linearizable-keys?")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    options.wfr_keys = o.get("wfr-keys?").and_then(Json::as_bool).unwrap_or(false);
    if let Some(order) = o.get("transaction-order").and_then(Json::as_object) {
        options.transaction_order = Some(
            order
                .iter()
                .map(|(k, v)| (k.parse().expect("an index"), v.as_i64().expect("an order")))
                .collect(),
        );
    }
    options
}

fn validity(v: &Json) -> Validity {
    match v {
        Json::Bool(true) => Validity::Valid,
        Json::Bool(false) => Validity::Invalid,
        Json::String(s) if s == "unknown" => Validity::Unknown,
        other => panic!("valid {other}"),
    }
}

/// Cases listed as deliberate disagreements, by file: lines like
/// ``- `list_append.jsonl` `checker-test / G1a / #2`: why``.
fn disagreements(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(data().join("DISAGREEMENTS.md")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| {
            let (f, rest) = l.split_once('`')?;
            let name = rest.trim_start().strip_prefix('`')?.split('`').next()?;
            (f == file).then(|| name.to_string())
        })
        .collect()
}

/// Runs one file's cases; returns (name, what differed) for each disagreement.
fn run(file: &str, workload: Workload) -> (usize, Vec<(String, String)>) {
    let text = std::fs::read_to_string(data().join(file)).expect("the transcribed cases");
    let mut differ = Vec::new();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Json = serde_json::from_str(line).expect("a case");
        let name = case["name"].as_str().expect("name").to_string();
        let events = if let Some(file) = case.get("history_file").and_then(Json::as_str) {
            let path = data()
                .join("histories")
                .join(Path::new(file).file_name().expect("a file name"));
            if !path.exists() {
                continue;
            }
            formats::read_events_file(&path, None).expect("an EDN history")
        } else {
            events_from_ops(case["history"].as_array().expect("history"))
        };
        count += 1;
        let options = options(&case["options"]);
        let expect = &case["expect"];
        let verdict = match txn::check_events(&events, workload, &options) {
            Ok(v) => v,
            Err(e) => {
                if expect["valid"] != Json::String("unknown".into()) {
                    differ.push((name, format!("error: {e}")));
                }
                continue;
            }
        };
        let mut problems = Vec::new();
        if verdict.valid != validity(&expect["valid"]) {
            problems.push(format!(
                "valid {:?}, Elle {}",
                verdict.valid, expect["valid"]
            ));
        }
        if let Some(types) = expect.get("anomaly-types") {
            let mut want = strings(types);
            want.sort();
            if verdict.anomaly_types != want {
                problems.push(format!(
                    "anomaly types {:?}, Elle {:?}",
                    verdict.anomaly_types, want
                ));
            }
        }
        if let Some(not) = expect.get("not") {
            let want: BTreeSet<String> = strings(not).into_iter().collect();
            if verdict.not != want {
                problems.push(format!("not {:?}, Elle {:?}", verdict.not, want));
            }
        }
        if let Some(also) = expect.get("also-not") {
            let want: BTreeSet<String> = strings(also).into_iter().collect();
            if verdict.also_not != want {
                problems.push(format!("also-not {:?}, Elle {:?}", verdict.also_not, want));
            }
        }
        for present in expect
            .get("anomalies-present")
            .map(strings)
            .unwrap_or_default()
        {
            if !verdict.anomalies.contains_key(&present) {
                problems.push(format!("no {present}, which Elle finds"));
            }
        }
        if !problems.is_empty() {
            differ.push((name, problems.join("; ")));
        }
    }
    (count, differ)
}

fn agree(file: &str, workload: Workload) {
    let listed = disagreements(file);
    let (count, differ) = run(file, workload);
    assert!(count > 0, "{file} holds cases");
    let unexpected: Vec<_> = differ.iter().filter(|(n, _)| !listed.contains(n)).collect();
    let differing: BTreeSet<&String> = differ.iter().map(|(n, _)| n).collect();
    let stale: Vec<&String> = listed.iter().filter(|n| !differing.contains(n)).collect();
    let report: Vec<String> = unexpected
        .iter()
        .map(|(n, p)| format!("{n}: {p}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {count} cases in {file} disagree with Elle:\n{}",
        unexpected.len(),
        report.join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed disagreements that now agree (remove them): {stale:?}"
    );
    eprintln!(
        "{file}: {count} cases, {} listed disagreements",
        differ.len()
    );
}

#[test]
fn list_append_verdicts_agree_with_elle() {
    agree("list_append.jsonl", Workload::ListAppend);
}

#[test]
fn rw_register_verdicts_agree_with_elle() {
    agree("rw_register.jsonl", Workload::RwRegister);
}

#[test]
fn the_consistency_model_lattice_agrees_with_elle() {
    use faultline_checkers::txn::consistency as cm;
    let text = std::fs::read_to_string(data().join("consistency_models.jsonl")).expect("cases");
    let set = |v: &Json| -> BTreeSet<String> { strings(v).into_iter().collect() };
    let friendly = |s: BTreeSet<&str>| -> BTreeSet<String> {
        s.into_iter().map(|m| cm::friendly(m).to_string()).collect()
    };
    let mut differ = Vec::new();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Json = serde_json::from_str(line).expect("a case");
        let name = case["name"].as_str().unwrap_or_default().to_string();
        let input = strings(&case["input"]);
        let inputs = || input.iter().map(String::as_str);
        let expect = &case["expect"];
        let (ours, theirs): (String, String) = match case["function"].as_str().unwrap_or_default() {
            "all-anomalies (as vector)" => {
                let ours: BTreeSet<String> =
                    cm::all_anomalies().into_iter().map(String::from).collect();
                (format!("{ours:?}"), format!("{:?}", set(expect)))
            }
            "all-implied-anomalies (as seq)" => {
                let ours: BTreeSet<String> = cm::implied(inputs())
                    .into_iter()
                    .map(String::from)
                    .collect();
                (format!("{ours:?}"), format!("{:?}", set(expect)))
            }
            "weakest-models, then friendly-model-name, as a set" => (
                format!("{:?}", friendly(cm::weakest_models(inputs()))),
                format!("{:?}", set(expect)),
            ),
            "strongest-models, then friendly-model-name, as a set" => (
                format!("{:?}", friendly(cm::strongest_models(inputs()))),
                format!("{:?}", set(expect)),
            ),
            "anomalies-prohibited-by (as a set)" => {
                let ours: BTreeSet<String> = cm::prohibited_by(inputs())
                    .into_iter()
                    .map(String::from)
                    .collect();
                (format!("{ours:?}"), format!("{:?}", set(expect)))
            }
            "anomalies-prohibited-by" => {
                // An unknown model is refused.
                let options = TxnOptions {
                    consistency_models: Some(input.clone()),
                    ..TxnOptions::default()
                };
                let refused = options
                    .validate()
                    .is_err_and(|e| e.to_string().contains("unknown consistency model"));
                (refused.to_string(), "true".into())
            }
            "anomalies->impossible-models, then friendly-model-name, as a set" => (
                format!("{:?}", friendly(cm::impossible_models(inputs()))),
                format!("{:?}", set(expect)),
            ),
            "friendly-boundary" => {
                let b = cm::boundary(inputs());
                (
                    format!("{:?} {:?}", b.not, b.also_not),
                    format!("{:?} {:?}", set(&expect["not"]), set(&expect["also-not"])),
                )
            }
            "(:not (friendly-boundary ...))" => (
                format!("{:?}", cm::boundary(inputs()).not),
                format!("{:?}", set(expect)),
            ),
            "all-impossible-models (as a set)" => {
                let ours: BTreeSet<String> = cm::models_implying(inputs())
                    .into_iter()
                    .map(String::from)
                    .collect();
                (format!("{ours:?}"), format!("{:?}", set(expect)))
            }
            _ => continue,
        };
        count += 1;
        if ours != theirs {
            differ.push(format!("{name}:\n  ours  {ours}\n  Elle  {theirs}"));
        }
    }
    assert!(count >= 25, "only {count} lattice cases ran");
    assert!(
        differ.is_empty(),
        "{} lattice cases disagree:\n{}",
        differ.len(),
        differ.join("\n")
    );
}
