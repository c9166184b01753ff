//! `faultline check`: check a recorded history for linearizability.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use faultline_checkers::causal::{CausalOptions, ConsistencyLevel};
use faultline_checkers::{
    CasFail, CheckOptions, CheckResult, Format, check_causal_file, check_file, report,
};

#[derive(Args)]
pub struct CheckArgs {
    /// The history file.
    history: PathBuf,
    /// The model the history is checked against.
    #[arg(long, value_enum, default_value = "cas-register")]
    model: ModelName,
    /// The file format (default: from the extension: .jsonl or .edn).
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
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatName {
    Jsonl,
    Edn,
}

fn check_causal(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let format = args.format.map(|f| match f {
        FormatName::Jsonl => Format::Jsonl,
        FormatName::Edn => Format::Edn,
    });
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

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let model = match args.model {
        ModelName::Register => "register",
        ModelName::CasRegister => "cas-register",
        ModelName::Kv => "kv",
        ModelName::Set => "set",
        ModelName::Counter => "counter",
        ModelName::Causal | ModelName::CausalConvergence => return check_causal(&args),
    };
    let format = args.format.map(|f| match f {
        FormatName::Jsonl => Format::Jsonl,
        FormatName::Edn => Format::Edn,
    });
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
