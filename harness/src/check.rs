//! `faultline check`: check a recorded history: linearizability against a model, causal
//! consistency, or (list-append, rw-register) transactional isolation with Elle's method.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use faultline_checkers::causal::{CausalOptions, ConsistencyLevel};
use faultline_checkers::txn::{self, TxnOptions};
use faultline_checkers::{
    CasFail, CheckOptions, CheckResult, Format, check_causal_file, check_file, check_txn_file,
    report,
};

#[derive(Args)]
pub struct CheckArgs {
    /// The history file.
    history: PathBuf,
    /// The model the history is checked against.
    #[arg(long, value_enum, default_value = "cas-register")]
    model: ModelName,
    /// The file format (default: from the extension: .jsonl, .edn, or .log for a Jepsen log).
    #[arg(long, value_enum)]
    format: Option<FormatName>,
    /// Give up after this many seconds (the verdict is then unknown, exit 2).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// Write a timeline of a failing history to this HTML file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    /// Read a failed cas as "did not happen" (Knossos) rather than "the compare did not match" (Porcupine).
    #[arg(long)]
    cas_fail_did_not_happen: bool,
    /// Transactions: a consistency model the history should satisfy, by Elle's names
    /// (read-committed, snapshot-isolation, serializable, strict-serializable,
    /// strong-session-serializable, ...); repeat for several. Default strict-serializable;
    /// `none` asks for no model (then only --anomalies count).
    #[arg(long = "consistency-model", value_name = "M")]
    consistency_models: Vec<String>,
    /// Transactions: look for these anomalies (and those implying them), e.g. G0,G1c,G2-item.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    anomalies: Vec<String>,
    /// Transactions: milliseconds to search one strongly connected component for cycles.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    cycle_search_timeout: u64,
    /// Transactions: also order by `process` or `realtime` (repeatable).
    #[arg(long = "additional-graph", value_name = "G")]
    additional_graphs: Vec<String>,
    /// rw-register: assume each key is linearizable (version order follows real time).
    #[arg(long)]
    linearizable_keys: bool,
    /// rw-register: assume each key is sequentially consistent (follows process order).
    #[arg(long)]
    sequential_keys: bool,
    /// rw-register: assume writes follow reads within a transaction.
    #[arg(long)]
    wfr_keys: bool,
    /// Transactions: write an SVG diagram of each cycle found into this directory.
    #[arg(long, value_name = "DIR")]
    svg_dir: Option<PathBuf>,
    /// bank: the total every read must see (default: the first read's).
    #[arg(long, value_name = "N")]
    total: Option<i64>,
    /// bank: allow negative balances.
    #[arg(long)]
    negative_balances: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelName {
    Register,
    CasRegister,
    Kv,
    Set,
    Counter,
    /// Causal consistency (CC) of sessions, with the session guarantees.
    Causal,
    /// Causal convergence (CCv, causal+): CC, and one order of conflicting writes every
    /// session agrees with. What runs against the causal keyspace are checked for.
    CausalConvergence,
    /// Transactions of appends to and reads of lists (Elle's list-append).
    ListAppend,
    /// Transactions of writes and reads of registers (Elle's rw-register).
    RwRegister,
    /// Transfers between accounts and reads of every balance (Jepsen's bank).
    Bank,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatName {
    Jsonl,
    Edn,
    /// Jepsen's text log of operations (`jepsen.log`, as Porcupine's etcd histories are).
    JepsenLog,
}

impl FormatName {
    fn format(self) -> Format {
        match self {
            FormatName::Jsonl => Format::Jsonl,
            FormatName::Edn => Format::Edn,
            FormatName::JepsenLog => Format::JepsenLog,
        }
    }
}

fn check_causal(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let format = args.format.map(FormatName::format);
    let options = CausalOptions {
        level: match args.model {
            ModelName::CausalConvergence => ConsistencyLevel::CausalConvergence,
            _ => ConsistencyLevel::CausalConsistency,
        },
        ..CausalOptions::default()
    };
    let (history, verdict) = check_causal_file(&args.history, format, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::causal::json(&history, &verdict))?
        );
    } else {
        print!("{}", report::causal::text(&history, &verdict));
    }
    Ok(ExitCode::from(if verdict.valid { 0 } else { 1 }))
}

fn check_txn(args: &CheckArgs, workload: txn::Workload) -> anyhow::Result<ExitCode> {
    let format = args.format.map(FormatName::format);
    let consistency_models = match args.consistency_models.as_slice() {
        [] => None,
        [none] if none == "none" => Some(Vec::new()),
        models => Some(models.to_vec()),
    };
    let options = TxnOptions {
        consistency_models,
        anomalies: args.anomalies.clone(),
        additional_graphs: args.additional_graphs.clone(),
        cycle_search_timeout: Duration::from_millis(args.cycle_search_timeout),
        sequential_keys: args.sequential_keys,
        linearizable_keys: args.linearizable_keys,
        wfr_keys: args.wfr_keys,
        transaction_order: None,
    };
    let (history, verdict) = check_txn_file(&args.history, format, workload, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", txn::explain::report_text(&history, &verdict));
    }
    if let Some(dir) = &args.svg_dir {
        std::fs::create_dir_all(dir)?;
        let mut written = 0;
        for (kind, cases) in &verdict.anomalies {
            for (i, case) in cases.iter().enumerate() {
                if let Some(cycle) = &case.cycle {
                    let path = dir.join(format!("{kind}-{i}.svg"));
                    std::fs::write(&path, txn::explain::cycle_svg(&history, kind, cycle))?;
                    written += 1;
                }
            }
        }
        eprintln!("{written} cycle diagram(s) written to {}", dir.display());
    }
    Ok(ExitCode::from(verdict.valid.exit_code() as u8))
}

fn check_bank(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    use faultline_checkers::bank::{self, BankOptions};
    let format = args.format.map(FormatName::format);
    let history = faultline_checkers::formats::read_history_file(&args.history, format)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    let options = BankOptions {
        total: args.total,
        negative_balances: args.negative_balances,
        accounts: Vec::new(),
    };
    let verdict = bank::check_bank(&history, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", bank::text(&verdict));
    }
    Ok(ExitCode::from(if verdict.valid { 0 } else { 1 }))
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let model = match args.model {
        ModelName::Bank => return check_bank(&args),
        ModelName::ListAppend => return check_txn(&args, txn::Workload::ListAppend),
        ModelName::RwRegister => return check_txn(&args, txn::Workload::RwRegister),
        ModelName::Register => "register",
        ModelName::CasRegister => "cas-register",
        ModelName::Kv => "kv",
        ModelName::Set => "set",
        ModelName::Counter => "counter",
        ModelName::Causal | ModelName::CausalConvergence => return check_causal(&args),
    };
    let format = args.format.map(FormatName::format);
    let mut options = CheckOptions {
        timeout: Some(Duration::from_secs(args.timeout)),
        ..CheckOptions::default()
    };
    if args.cas_fail_did_not_happen {
        options.cas_fail = CasFail::DidNotHappen;
    }
    let (history, verdict) = check_file(&args.history, format, model, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::json(&history, &verdict))?
        );
    } else {
        print!("{}", report::text(&history, &verdict));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&history, &verdict))?;
        eprintln!("timeline written to {}", path.display());
    }
    Ok(ExitCode::from(match verdict.result {
        CheckResult::Valid => 0,
        CheckResult::Invalid => 1,
        CheckResult::Unknown { .. } => 2,
    }))
}
