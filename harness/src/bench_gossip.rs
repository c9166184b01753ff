//! `faultline bench --gossip`: how long the node's SWIM core takes to detect a killed
//! member, and how often it suspects or condemns a live one, on 3, 5 and 9 members at
//! 0 % and 5 % packet loss, with memberlist's LAN parameters (1 s probes, 500 ms probe
//! timeout, 3 indirect probes, suspicion 4-24 s). It runs the core itself in virtual time
//! (`faultline_node::cluster::swim_sim`), so the figures are the protocol's, replayable
//! from their seeds, not the host's; whole-process detection times are in the notes of
//! `faultline run membership`.

use std::process::ExitCode;

use faultline_node::cluster::swim::SwimConfig;
use faultline_node::cluster::swim_sim::{SimConfig, detection_trial, quantile};

/// Gossip for this long before the kill, so every member has heard of every other.
const WARMUP_MS: u64 = 10_000;
/// And watch this long after it: past the longest suspicion.
const HORIZON_MS: u64 = 40_000;

pub fn run(trials: usize) -> anyhow::Result<ExitCode> {
    println!(
        "SWIM (the node's core, memberlist LAN parameters), {trials} trials per row, 1 ms latency, virtual time"
    );
    println!(
        "{:>5} {:>5}  {:>14} {:>14}  {:>16} {:>16}  {:>10} {:>10} {:>14}",
        "nodes",
        "loss",
        "suspect p50 ms",
        "suspect p99 ms",
        "dead-all p50 ms",
        "dead-all p99 ms",
        "false susp",
        "false dead",
        "susp/member-h"
    );
    for nodes in [3usize, 5, 9] {
        for loss in [0.0, 0.05] {
            let mut suspected = Vec::new();
            let mut dead = Vec::new();
            let (mut false_suspicions, mut false_deaths, mut undetected) = (0, 0, 0);
            for trial in 0..trials {
                let config = SimConfig {
                    nodes,
                    loss,
                    latency_ms: 1,
                    swim: SwimConfig::default(),
                    seed: trial as u64 + 1,
                };
                let result = detection_trial(&config, WARMUP_MS, HORIZON_MS);
                match result.suspected_ms {
                    Some(ms) => suspected.push(ms),
                    None => undetected += 1,
                }
                if let Some(ms) = result.dead_everywhere_ms {
                    dead.push(ms);
                }
                false_suspicions += result.false_suspicions;
                false_deaths += result.false_deaths;
            }
            let show = |v: Option<u64>| v.map_or("-".to_string(), |ms| ms.to_string());
            let member_hours =
                (trials * nodes) as f64 * (WARMUP_MS + HORIZON_MS) as f64 / 3_600_000.0;
            println!(
                "{:>5} {:>4}%  {:>14} {:>14}  {:>16} {:>16}  {:>10} {:>10} {:>14.1}{}",
                nodes,
                (loss * 100.0) as u32,
                show(quantile(&mut suspected, 0.5)),
                show(quantile(&mut suspected, 0.99)),
                show(quantile(&mut dead, 0.5)),
                show(quantile(&mut dead, 0.99)),
                false_suspicions,
                false_deaths,
                false_suspicions as f64 / member_hours,
                if undetected > 0 {
                    format!("  ({undetected} never suspected)")
                } else {
                    String::new()
                }
            );
        }
    }
    println!(
        "false susp / false dead: distinct suspicions and deaths of live members over all trials ({} s of gossip each)",
        (WARMUP_MS + HORIZON_MS) / 1_000
    );
    Ok(ExitCode::SUCCESS)
}
