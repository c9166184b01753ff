//! `faultline`: run workloads against a real cluster under faults, check histories,
//! and talk to a node by hand.

mod bench;
mod kv;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "A Jepsen-style harness for the Faultline key-value node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to a node by hand: put, get, delete, cas, status.
    Kv(kv::KvArgs),
    /// Measure put and get throughput and latency against a local cluster.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faultline: error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Kv(args) => kv::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("faultline: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
