//! `faultline-model raft [--servers 3] [--clients 1] ...`: checks the Raft model and
//! prints the report. Exit 0: every property holds; 1: a property failed; 2: error, or
//! a bound was not reached (a witness missing, or the run was not exhaustive).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use faultline_model::raft::{Bug, CheckerKind, ModelOptions, NetworkKind, check, replay};

#[derive(Parser)]
#[command(name = "faultline-model", about = "Model-check the node's Raft core with stateright")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the Raft model (servers wrap the node's own RaftCore).
    Raft(RaftArgs),
}

#[derive(clap::Args)]
struct RaftArgs {
    #[arg(long, default_value_t = 3)]
    servers: usize,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 2)]
    client_ops: usize,
    #[arg(long, default_value_t = 2)]
    max_term: u64,
    #[arg(long, default_value_t = 3)]
    max_log: u64,
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// unordered | duplicating | lossy
    #[arg(long, default_value = "lossy")]
    network: NetworkKind,
    #[arg(long, default_value_t = 1)]
    crashes: usize,
    /// bfs | dfs | simulation
    #[arg(long, default_value = "bfs")]
    checker: CheckerKind,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// double_vote | commit_old_term | keep_conflicts | stale_read | vote_amnesia
    #[arg(long)]
    bug: Option<Bug>,
    /// Serve stateright's Explorer here (e.g. 127.0.0.1:3000) instead of checking.
    #[arg(long)]
    explore: Option<String>,
    #[arg(long, default_value_t = 2)]
    snapshot_interval_entries: u64,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pre_vote: bool,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Stop after generating this many states (simulation: 1,000,000 unless set).
    #[arg(long)]
    max_states: Option<usize>,
    /// Stop at the first violated property.
    #[arg(long)]
    first_violation: bool,
    /// Print the steps of a path (as a report prints it) instead of checking.
    #[arg(long)]
    replay: Option<String>,
}

fn main() -> ExitCode {
    let Command::Raft(args) = Cli::parse().command;
    let options = ModelOptions {
        servers: args.servers,
        clients: args.clients,
        client_ops: args.client_ops,
        max_term: args.max_term,
        max_log: args.max_log,
        max_in_flight: args.max_in_flight,
        network: args.network,
        crashes: args.crashes,
        checker: args.checker,
        seed: args.seed,
        bug: args.bug,
        explore: args.explore,
        snapshot_interval_entries: args.snapshot_interval_entries,
        pre_vote: args.pre_vote,
        threads: args.threads,
        timeout: args.timeout_secs.map(Duration::from_secs),
        max_states: args.max_states,
        stop_at_first_violation: args.first_violation,
    };
    if let Some(path) = args.replay {
        return match replay(&options, &path) {
            Ok(steps) => {
                for (i, step) in steps.iter().enumerate() {
                    println!("{:>3}. {step}", i + 1);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("replay: {e}");
                ExitCode::from(2)
            }
        };
    }
    let report = check(options);
    print!("{report}");
    ExitCode::from(report.exit_code() as u8)
}
