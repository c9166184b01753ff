//! `faultline suite FILE.yaml`: a list of runs with the verdict each must give — the
//! correct node valid under every fault, each seeded bug caught. Each run is a separate
//! `faultline run` process (each gets its own network namespace).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Args)]
pub struct SuiteArgs {
    /// The suite file (e.g. ci/smoke.yaml).
    file: PathBuf,
    /// Where the runs are stored: STORE/suite-<name>/<case>-seed<seed>/...
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Write the table as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run every case this many times per seed, and report how many runs of each case came
    /// out as expected: a seed fixes the operations and the fault times, not how the
    /// processes are scheduled, so one run per seed does not show that a case holds.
    /// Overrides the suite file's `repeat` (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=REPEAT_MAX as i64))]
    repeat: Option<u32>,
}

/// Most repetitions of a case a suite may ask for.
const REPEAT_MAX: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    /// How many times every case runs per seed, unless `--repeat` says otherwise.
    repeat: Option<u32>,
    #[serde(default)]
    defaults: CaseSettings,
    cases: Vec<Case>,
}

/// Settings a case may give or inherit from the suite's defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSettings {
    nodes: Option<usize>,
    time_limit_secs: Option<u64>,
    concurrency: Option<u32>,
    nemesis_interval_secs: Option<f64>,
    seeds: Option<Vec<u64>>,
    /// Extra arguments for every node (e.g. [--snapshot-interval-entries, "1000000"]);
    /// a case's list replaces the defaults'.
    node_args: Option<Vec<String>>,
    /// Partitions the cluster is formed with (`faultline run --partitions`).
    partitions: Option<u32>,
    /// range or hash (`faultline run --partitioning`).
    partitioning: Option<String>,
    /// node or direct (`faultline run --routing`).
    routing: Option<String>,
    /// For transactional workloads: serializable, snapshot or read-committed
    /// (`faultline run --isolation`).
    isolation: Option<String>,
    /// Failpoints armed on every node for the whole run, as NAME=ACTION
    /// (`faultline run --failpoint`).
    failpoints: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// A builtin workload name or a path relative to the suite file.
    #[serde(default = "default_workload")]
    workload: String,
    /// Replaces the workload's faults.
    nemesis: Option<Vec<String>>,
    /// A seeded bug to switch on in every node.
    bug: Option<String>,
    expect: Expect,
    /// For a transactional case below serializable: what the same history must be as
    /// serializable (the run's `contrast`), which is how a write-skew case shows the
    /// levels apart.
    expect_serializable: Option<Expect>,
    #[serde(flatten)]
    settings: CaseSettings,
}

fn default_workload() -> String {
    "register".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Valid,
    Invalid,
}

/// How a run came out, against what its case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Outcome {
    /// The expected verdict, with every guard satisfied.
    Pass,
    /// A seeded bug's run came out valid although its faults set up what the bug needs.
    Escape,
    /// The correct node's run came out invalid.
    FalseAlarm,
    /// The faults that set up the case's condition never got there: the run shows nothing
    /// either way (not an escape, but not a pass either).
    PreconditionNotReached,
    /// Anything else: no fault injected, an unknown verdict, teardown errors with the
    /// correct node, no results.
    Other,
}

#[derive(Debug, Serialize)]
struct Row {
    case: String,
    seed: u64,
    /// Which repetition of the case and seed (1-based).
    run: u32,
    expected: Expect,
    got: String,
    passed: bool,
    outcome: Outcome,
    operations: u64,
    faults: usize,
    first_anomaly_secs: Option<f64>,
    wall_secs: f64,
    run_dir: String,
    problem: Option<String>,
}

fn load(path: &Path) -> anyhow::Result<Suite> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read suite {}", path.display()))?;
    let suite: Suite = serde_yaml::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {e}", path.display())
    })?;
    if suite.cases.is_empty() {
        anyhow::bail!("{}: the suite has no cases", path.display());
    }
    if let Some(repeat) = suite.repeat
        && !(1..=REPEAT_MAX).contains(&repeat)
    {
        anyhow::bail!(
            "{}: repeat must be between 1 and {REPEAT_MAX}, got {repeat}",
            path.display()
        );
    }
    Ok(suite)
}

fn resolve_workload(suite_file: &Path, workload: &str) -> String {
    if faultline_workloads::builtin(workload).is_some() {
        return workload.to_string();
    }
    let base = suite_file.parent().unwrap_or(Path::new("."));
    base.join(workload).display().to_string()
}

pub fn run(args: SuiteArgs) -> anyhow::Result<ExitCode> {
    let suite = load(&args.file)?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let store = args.store.join(format!("suite-{}", suite.name));
    let repeat = args.repeat.or(suite.repeat).unwrap_or(1);
    let mut rows = Vec::new();
    for case in suite.cases.iter().filter(|c| {
        args.only
            .as_ref()
            .is_none_or(|o| c.name.contains(o.as_str()))
    }) {
        let pick = |own: Option<u64>, default: Option<u64>, fallback: u64| {
            own.or(default).unwrap_or(fallback)
        };
        let seeds = case
            .settings
            .seeds
            .clone()
            .or(suite.defaults.seeds.clone())
            .unwrap_or_else(|| vec![1]);
        for seed in seeds {
            let mut command = Command::new(&exe);
            command
                .arg("run")
                .arg(resolve_workload(&args.file, &case.workload));
            let nodes = case.settings.nodes.or(suite.defaults.nodes).unwrap_or(3);
            command.args(["--nodes", &nodes.to_string(), "--seed", &seed.to_string()]);
            let time_limit = pick(
                case.settings.time_limit_secs,
                suite.defaults.time_limit_secs,
                8,
            );
            command.args(["--time-limit", &time_limit.to_string()]);
            if let Some(concurrency) = case.settings.concurrency.or(suite.defaults.concurrency) {
                command.args(["--concurrency", &concurrency.to_string()]);
            }
            if let Some(interval) = case
                .settings
                .nemesis_interval_secs
                .or(suite.defaults.nemesis_interval_secs)
            {
                command.args(["--nemesis-interval", &interval.to_string()]);
            }
            if let Some(nemesis) = &case.nemesis {
                let list = if nemesis.is_empty() {
                    "none".to_string()
                } else {
                    nemesis.join(",")
                };
                command.args(["--nemesis", &list]);
            }
            if let Some(bug) = &case.bug {
                command
                    .arg("--node-arg=--unsafe-seeded-bug")
                    .arg(format!("--node-arg={bug}"));
            }
            let node_args = case
                .settings
                .node_args
                .as_ref()
                .or(suite.defaults.node_args.as_ref());
            for arg in node_args.into_iter().flatten() {
                command.arg(format!("--node-arg={arg}"));
            }
            if let Some(partitions) = case.settings.partitions.or(suite.defaults.partitions) {
                command.args(["--partitions", &partitions.to_string()]);
            }
            if let Some(scheme) = case
                .settings
                .partitioning
                .as_ref()
                .or(suite.defaults.partitioning.as_ref())
            {
                command.args(["--partitioning", scheme]);
            }
            if let Some(isolation) = case
                .settings
                .isolation
                .as_ref()
                .or(suite.defaults.isolation.as_ref())
            {
                command.args(["--isolation", isolation]);
            }
            if let Some(failpoints) = case
                .settings
                .failpoints
                .as_ref()
                .or(suite.defaults.failpoints.as_ref())
            {
                for failpoint in failpoints {
                    command.args(["--failpoint", failpoint]);
                }
            }
            if let Some(routing) = case
                .settings
                .routing
                .as_ref()
                .or(suite.defaults.routing.as_ref())
            {
                command.args(["--routing", routing]);
            }
            for run in 1..=repeat {
                let case_store = if repeat == 1 {
                    store.join(format!("{}-seed{seed}", case.name))
                } else {
                    store.join(format!("{}-seed{seed}-run{run}", case.name))
                };
                let mut command = clone_command(&command);
                command.arg("--store").arg(&case_store);
                let of = if repeat == 1 {
                    String::new()
                } else {
                    format!(", run {run} of {}", repeat)
                };
                eprintln!(
                    "== {} (seed {seed}{of}): expecting {:?}",
                    case.name, case.expect
                );
                let started = Instant::now();
                let output = command
                    .stdin(Stdio::null())
                    .output()
                    .with_context(|| format!("cannot run {}", exe.display()))?;
                let wall_secs = started.elapsed().as_secs_f64();
                let mut row = judge(case, seed, &output, &case_store, wall_secs);
                row.run = run;
                rows.push(row);
            }
        }
    }
    print_table(&rows);
    if repeat > 1 {
        print_rates(&rows);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!(
        "{} of {} runs as expected{}",
        rows.len() - failed,
        rows.len(),
        if failed > 0 { "; FAILED" } else { "" }
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A copy of a command with the same program and arguments (Command is not Clone).
fn clone_command(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    copy
}

fn judge(
    case: &Case,
    seed: u64,
    output: &std::process::Output,
    case_store: &Path,
    wall_secs: f64,
) -> Row {
    let mut row = Row {
        case: case.name.clone(),
        seed,
        run: 1,
        expected: case.expect,
        got: "error".into(),
        passed: false,
        outcome: Outcome::Other,
        operations: 0,
        faults: 0,
        first_anomaly_secs: None,
        wall_secs,
        run_dir: String::new(),
        problem: None,
    };
    let run_dir = std::fs::canonicalize(case_store.join("latest")).ok();
    let results: Option<Value> = run_dir
        .as_ref()
        .and_then(|dir| std::fs::read_to_string(dir.join("results.json")).ok())
        .and_then(|text| serde_json::from_str(&text).ok());
    let Some(results) = results else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        row.problem = Some(format!("the run left no results: {last}"));
        return row;
    };
    let run_dir = run_dir.expect("results came from it");
    row.run_dir = run_dir.display().to_string();
    row.got = match &results["valid"] {
        Value::Bool(true) => "valid".into(),
        Value::Bool(false) => "invalid".into(),
        other => format!("unknown ({})", other.as_str().unwrap_or("?")),
    };
    row.operations = results["totals"]["invoke"].as_u64().unwrap_or(0);
    row.faults = results["faults"].as_array().map_or(0, Vec::len);
    row.first_anomaly_secs = results["first_anomaly_secs"].as_f64();
    let expected = match case.expect {
        Expect::Valid => "valid",
        Expect::Invalid => "invalid",
    };
    let staged: Vec<&Value> = results["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("precondition"))
        .collect();
    let precondition_missed =
        !staged.is_empty() && staged.iter().all(|p| p["reached"].as_bool() != Some(true));
    row.passed = row.got == expected;
    if let Some(contrast) = case.expect_serializable {
        let got = match &results["contrast"]["valid"] {
            Value::Bool(true) => "valid",
            Value::Bool(false) => "invalid",
            _ => "not checked or unknown",
        };
        let wanted = match contrast {
            Expect::Valid => "valid",
            Expect::Invalid => "invalid",
        };
        if row.passed && got != wanted {
            row.passed = false;
            row.problem = Some(format!(
                "as serializable the history should be {wanted}, got {got}"
            ));
            return row;
        }
    }
    if precondition_missed && row.got != "invalid" {
        // An invalid verdict stands (the anomaly is real), but a valid or unknown one
        // after faults that never set up their condition is neither a pass nor an escape.
        row.passed = false;
        row.outcome = Outcome::PreconditionNotReached;
        let first = staged
            .first()
            .and_then(|p| p["detail"].as_str())
            .unwrap_or("?");
        row.problem = Some(format!(
            "precondition not reached in any of {} faults (first: {first})",
            staged.len()
        ));
    } else if !row.passed {
        row.outcome = match (case.expect, row.got.as_str()) {
            (Expect::Invalid, "valid") => Outcome::Escape,
            (Expect::Valid, "invalid") => Outcome::FalseAlarm,
            _ => Outcome::Other,
        };
        let label = match row.outcome {
            Outcome::Escape => "ESCAPE: ",
            Outcome::FalseAlarm => "FALSE ALARM: ",
            _ => "",
        };
        row.problem = Some(format!("{label}expected {expected}, got {}", row.got));
    } else if case.nemesis.as_ref().is_none_or(|n| !n.is_empty()) && row.faults == 0 {
        row.passed = false;
        row.problem = Some("no fault was injected".into());
    } else if let Some(errors) = results["teardown_errors"]
        .as_array()
        .filter(|e| !e.is_empty() && case.expect == Expect::Valid)
    {
        // A seeded bug may well leave the cluster unable to recover; with the correct
        // node that is a failure of its own.
        row.passed = false;
        row.problem = Some(format!(
            "teardown: {}",
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    } else {
        row.outcome = Outcome::Pass;
    }
    row
}

/// Per case, how many of its runs came out as expected, and how the others came out.
fn print_rates(rows: &[Row]) {
    let mut cases: Vec<&str> = Vec::new();
    for row in rows {
        if !cases.contains(&row.case.as_str()) {
            cases.push(&row.case);
        }
    }
    let width = cases.iter().map(|c| c.len()).max().unwrap_or(0).max(24);
    println!(
        "\n{:<width$} {:<9} {:>11} {:>7} {:>12} {:>13} {:>6}",
        "case", "expected", "as expected", "escape", "false alarm", "precond. miss", "other"
    );
    for case in cases {
        let of: Vec<&Row> = rows.iter().filter(|r| r.case == case).collect();
        let count = |outcome: Outcome| of.iter().filter(|r| r.outcome == outcome).count();
        println!(
            "{:<width$} {:<9} {:>11} {:>7} {:>12} {:>13} {:>6}",
            case,
            format!("{:?}", of[0].expected).to_lowercase(),
            format!("{}/{}", count(Outcome::Pass), of.len()),
            count(Outcome::Escape),
            count(Outcome::FalseAlarm),
            count(Outcome::PreconditionNotReached),
            count(Outcome::Other),
        );
    }
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|row| row.case.len())
        .max()
        .unwrap_or(0)
        .max(24);
    println!(
        "\n{:<width$} {:>6} {:>4} {:<9} {:<12} {:>8} {:>6} {:>10} {:>7}  result",
        "case", "seed", "run", "expected", "got", "ops", "faults", "anomaly at", "wall s"
    );
    for row in rows {
        let anomaly = row
            .first_anomaly_secs
            .map_or("-".to_string(), |s| format!("{s:.2}s"));
        let result = match &row.problem {
            None => "PASS".to_string(),
            Some(problem) => format!("FAIL: {problem}"),
        };
        println!(
            "{:<width$} {:>6} {:>4} {:<9} {:<12} {:>8} {:>6} {:>10} {:>7.1}  {result}",
            row.case,
            row.seed,
            row.run,
            format!("{:?}", row.expected).to_lowercase(),
            row.got,
            row.operations,
            row.faults,
            anomaly,
            row.wall_secs
        );
    }
}
