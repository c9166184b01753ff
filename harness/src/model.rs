//! `faultline model raft`, `causal`, `2pc`, `lease` and `membership`: model-check the
//! node's Raft core, its causal replication core, its two-phase commit cores, its lease
//! core and its SWIM gossip core with stateright.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use faultline_checkers::models::raft::{
    Bug, CheckerKind, ModelOptions, NetworkKind, check, read_start, replay,
};
use faultline_node::replication::ConfChange;

#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    model: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// The node's own RaftCore in stateright server actors, with register clients, crashes
    /// and a lossy network; checks election safety, log matching, leader completeness,
    /// state machine safety and linearizability (checkers/src/models/README.md).
    #[command(after_help = RAFT_HELP)]
    Raft(RaftArgs),
    /// The node's own causal replication core as three replicas, with sessions moving
    /// between them and anti-entropy over a lossy network; checks the sessions' history
    /// with the causal checker (CCv), convergence, and that no sibling is lost.
    #[command(after_help = CAUSAL_HELP)]
    Causal(CausalArgs),
    /// The node's own two-phase commit cores: coordinators and two partitions, a lossy
    /// network, coordinator crashes, partition restarts and recovery; checks atomicity, no
    /// commit without every prepare, serializability, and that every transaction is decided
    /// once faults stop.
    #[command(name = "2pc", after_help = TWOPC_HELP)]
    TwoPc(TwoPcArgs),
    /// The node's own lease core (the replicated table and each replica's timers) with
    /// explicit time and clocks that drift, clients holding a lock with a lease and keeping
    /// it alive, and leadership moving; checks that at most one client believes it holds
    /// the lock.
    #[command(after_help = LEASE_HELP)]
    Lease(LeaseArgs),
    /// The node's own SWIM gossip core on a few members, in discrete time, with a network
    /// that may lose packets, one pause and one kill; checks that no live member is
    /// declared dead unless a packet was lost.
    #[command(after_help = MEMBERSHIP_HELP)]
    Membership(MembershipArgs),
}

const MEMBERSHIP_HELP: &str = "The defaults are the bounds CI checks exhaustively (3 members, probe interval 4 ticks, suspicion 16 ticks, 40 ticks, one pause of up to 16 ticks; checkers/src/models/README.md). A pause longer than the probe timeout plus the suspicion (18 ticks) may rightly condemn a member: --max-pause past it shows SWIM doing so. Exit status: 0 every property holds and every `sometimes` was witnessed, 1 a property failed, 2 error or not exhaustive.";

#[derive(Args)]
struct MembershipArgs {
    /// Members (2 to 9).
    #[arg(long, default_value_t = faultline_checkers::models::membership::MembershipModelOptions::default().members)]
    members: usize,
    /// Real time the search runs to, in ticks.
    #[arg(long, default_value_t = faultline_checkers::models::membership::MembershipModelOptions::default().max_time)]
    max_time: u64,
    /// The longest pause of one member, in ticks (0: none).
    #[arg(long, default_value_t = faultline_checkers::models::membership::MembershipModelOptions::default().max_pause)]
    max_pause: u64,
    /// Packets the network may lose over a run.
    #[arg(long, default_value_t = faultline_checkers::models::membership::MembershipModelOptions::default().max_losses)]
    losses: usize,
    /// Ticks a packet may take to arrive.
    #[arg(long, default_value_t = faultline_checkers::models::membership::MembershipModelOptions::default().latency)]
    latency: u64,
    /// Let one member be killed (and check that every live one holds it dead).
    #[arg(long)]
    kill: bool,
    /// Search every order of a moment's events, not one canonical order (far more states).
    #[arg(long)]
    reorder: bool,
    /// A seeded bug, the node's: gossip-no-suspicion (a failed probe declares dead at once)
    /// or gossip-no-probe-refill (with --kill: probing stops after one round).
    #[arg(long, value_name = "NAME")]
    bug: Option<String>,
    /// Checker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (verdicts not reached then say unknown).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

fn run_membership(args: MembershipArgs) -> ExitCode {
    use faultline_checkers::models::membership::{MembershipModelOptions, check};
    if !(2..=9).contains(&args.members) {
        eprintln!(
            "faultline model membership: error: --members {} is out of range; choose 2 to 9",
            args.members
        );
        return ExitCode::from(2);
    }
    let mut options = MembershipModelOptions {
        members: args.members,
        max_time: args.max_time,
        max_pause: args.max_pause,
        max_losses: args.losses,
        latency: args.latency,
        kill: args.kill,
        reorder: args.reorder,
        threads: args.threads,
        timeout: args.timeout.map(Duration::from_secs),
        ..MembershipModelOptions::default()
    };
    match args.bug.as_deref() {
        None => {}
        Some("gossip-no-suspicion") => options.no_suspicion = true,
        Some("gossip-no-probe-refill") => options.no_probe_refill = true,
        Some(other) => {
            eprintln!(
                "faultline model membership: error: no membership bug {other:?}; choose \
                 gossip-no-suspicion or gossip-no-probe-refill"
            );
            return ExitCode::from(2);
        }
    }
    let report = check(options);
    print!("{report}");
    ExitCode::from(report.exit_code())
}

const LEASE_HELP: &str = "The defaults are the bounds CI checks exhaustively (2 replicas, 2 \
clients, TTL 4 ticks, drift 1 tick, 8 ticks, one election; checkers/src/models/README.md). \
Exit status: 0 every property holds and every `sometimes` was witnessed, 1 a property failed, 2 \
error or not exhaustive.";

#[derive(Args)]
struct LeaseArgs {
    /// The lease TTL, in ticks.
    #[arg(long, default_value_t = faultline_checkers::models::lease::LeaseModelOptions::default().ttl)]
    ttl: u64,
    /// How far any clock may fall behind real time over a run, in ticks.
    #[arg(long, default_value_t = faultline_checkers::models::lease::LeaseModelOptions::default().max_drift)]
    max_drift: u64,
    /// Real time the search runs to, in ticks.
    #[arg(long, default_value_t = faultline_checkers::models::lease::LeaseModelOptions::default().max_time)]
    max_time: u64,
    /// Leadership changes over a run.
    #[arg(long, default_value_t = faultline_checkers::models::lease::LeaseModelOptions::default().max_elections)]
    max_elections: usize,
    /// A seeded bug: lease-no-extension-on-election (the node's) or client-no-margin (the
    /// client believes for the whole TTL, by a clock that may run slow).
    #[arg(long, value_name = "NAME")]
    bug: Option<String>,
    /// Checker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (verdicts not reached then say unknown).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

fn run_lease(args: LeaseArgs) -> ExitCode {
    use faultline_checkers::models::lease::{LeaseModelOptions, check};
    let mut options = LeaseModelOptions {
        ttl: args.ttl,
        max_drift: args.max_drift,
        max_time: args.max_time,
        max_elections: args.max_elections,
        threads: args.threads,
        timeout: args.timeout.map(Duration::from_secs),
        ..LeaseModelOptions::default()
    };
    match args.bug.as_deref() {
        None => {}
        Some("lease-no-extension-on-election") => options.no_extension_on_election = true,
        Some("client-no-margin") => options.client_no_margin = true,
        Some(other) => {
            eprintln!(
                "faultline model lease: error: no lease bug {other:?}; choose \
                 lease-no-extension-on-election or client-no-margin"
            );
            return ExitCode::from(2);
        }
    }
    if options.ttl <= options.max_drift {
        eprintln!(
            "faultline model lease: error: --ttl ({}) must exceed --max-drift ({}): a client \
             subtracts the drift from the TTL it believes in",
            options.ttl, options.max_drift
        );
        return ExitCode::from(2);
    }
    let report = check(options);
    print!("{report}");
    ExitCode::from(report.exit_code())
}

const TWOPC_HELP: &str = "The defaults are the bounds CI checks exhaustively (a write-skew attempt \
over two partitions; checkers/src/models/README.md). Exit status: 0 every property holds and \
every `sometimes` was witnessed, 1 a property failed, 2 error or not exhaustive.";

#[derive(Args)]
struct TwoPcArgs {
    /// States with more messages in flight are not explored.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_in_flight)]
    max_in_flight: usize,
    /// Messages the network may lose over a run.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_drops)]
    max_drops: usize,
    /// Coordinator crashes over a run.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_coordinator_crashes)]
    max_coordinator_crashes: usize,
    /// Partition restarts over a run.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_restarts)]
    max_restarts: usize,
    /// Timeouts (retries) per coordinator.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_timeouts)]
    max_timeouts: usize,
    /// Recoveries each partition may start.
    #[arg(long, default_value_t = faultline_checkers::models::twopc::TwoPcOptions::default().max_recoveries)]
    max_recoveries: usize,
    /// A seeded bug: commit-before-all-prepared or forget-decision-on-crash.
    #[arg(long, value_name = "NAME")]
    bug: Option<faultline_checkers::models::twopc::TwoPcBug>,
    /// Checker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (verdicts not reached then say unknown).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

fn run_twopc(args: TwoPcArgs) -> ExitCode {
    use faultline_checkers::models::twopc::{TwoPcOptions, check};
    let report = check(TwoPcOptions {
        max_in_flight: args.max_in_flight,
        max_drops: args.max_drops,
        max_coordinator_crashes: args.max_coordinator_crashes,
        max_restarts: args.max_restarts,
        max_timeouts: args.max_timeouts,
        max_recoveries: args.max_recoveries,
        bug: args.bug,
        threads: args.threads,
        timeout: args.timeout.map(Duration::from_secs),
        ..TwoPcOptions::default()
    });
    print!("{report}");
    ExitCode::from(report.exit_code())
}

const CAUSAL_HELP: &str = "The defaults are the bounds CI checks exhaustively (three sessions of \
two steps; see checkers/src/models/README.md). Exit status: 0 every property holds and every \
`sometimes` was witnessed, 1 a property failed, 2 error or not exhaustive.";

#[derive(Args)]
struct CausalArgs {
    /// 0: an exchange and its reply are delivered at once (or the reply is lost); more:
    /// they are messages, reordered and dropped, at most this many in flight.
    #[arg(long, default_value_t = faultline_checkers::models::causal::CausalModelOptions::default().max_in_flight)]
    max_in_flight: usize,
    /// Exchanges opened over a run (the rest are delivered by the convergence property).
    #[arg(long, default_value_t = faultline_checkers::models::causal::CausalModelOptions::default().max_exchanges)]
    max_exchanges: usize,
    /// lossy (messages may be dropped) | unordered (only reordered)
    #[arg(long, default_value = "lossy")]
    network: String,
    /// siblings | lww
    #[arg(long, default_value = "siblings")]
    resolve: String,
    /// A seeded bug: ignore-causal-context or vv-merge-drops-sibling.
    #[arg(long, value_name = "NAME")]
    bug: Option<faultline_checkers::models::causal::CausalBug>,
    /// Checker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (verdicts not reached then say unknown).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

fn run_causal(args: CausalArgs) -> ExitCode {
    use faultline_checkers::models::causal::{CausalModelOptions, check};
    use faultline_node::time::causal::Resolve;
    let lossy = match args.network.as_str() {
        "lossy" => true,
        "unordered" => false,
        other => {
            eprintln!("faultline model: error: --network {other:?}: choose lossy or unordered");
            return ExitCode::from(2);
        }
    };
    let resolve = match args.resolve.as_str() {
        "siblings" => Resolve::Siblings,
        "lww" => Resolve::Lww,
        other => {
            eprintln!("faultline model: error: --resolve {other:?}: choose siblings or lww");
            return ExitCode::from(2);
        }
    };
    let report = check(CausalModelOptions {
        max_in_flight: args.max_in_flight,
        max_exchanges: args.max_exchanges,
        lossy,
        resolve,
        bug: args.bug,
        threads: args.threads,
        timeout: args.timeout.map(Duration::from_secs),
        ..CausalModelOptions::default()
    });
    print!("{report}");
    ExitCode::from(report.exit_code())
}

const RAFT_HELP: &str = "The defaults are the bounds CI checks exhaustively. Exit status: 0 every \
property holds (and every `sometimes` was witnessed in an exhaustive run), 1 a property failed, \
2 error, or a bound was not reached (not exhaustive, or a witness missing).
A counterexample is printed step by step with its path; `--replay PATH` prints it again, and \
`--explore 127.0.0.1:3000` opens it in stateright's Explorer at /#/steps/PATH.";

#[derive(Args)]
struct RaftArgs {
    /// Server actors, each wrapping the node's RaftCore.
    #[arg(long, default_value_t = ModelOptions::default().servers)]
    servers: usize,
    /// Client actors, each running a short script of put, get and cas.
    #[arg(long, default_value_t = ModelOptions::default().clients)]
    clients: usize,
    /// Operations in each client's script.
    #[arg(long, default_value_t = ModelOptions::default().client_ops)]
    client_ops: usize,
    /// States with a server past this term are not explored.
    #[arg(long, default_value_t = ModelOptions::default().max_term)]
    max_term: u64,
    /// States with a server's last log index past this are not explored.
    #[arg(long, default_value_t = ModelOptions::default().max_log)]
    max_log: u64,
    /// States with more peer messages in flight are not explored.
    #[arg(long, default_value_t = ModelOptions::default().max_in_flight)]
    max_in_flight: usize,
    /// unordered | duplicating | lossy
    #[arg(long, default_value = "lossy")]
    network: NetworkKind,
    /// Server crashes over a run (each may be followed by a recovery from disk).
    #[arg(long, default_value_t = ModelOptions::default().crashes)]
    crashes: usize,
    /// bfs | dfs | simulation
    #[arg(long, default_value = "bfs")]
    checker: CheckerKind,
    /// Seeds the cores' RNGs and the simulation checker's walks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A seeded bug: double-vote, commit-old-term, keep-conflicts, stale-read, vote-amnesia,
    /// learner-votes, config-before-noop (the last two with --membership; see the built-in
    /// starts learner-votes and config-before-noop).
    #[arg(long, value_name = "NAME")]
    bug: Option<Bug>,
    /// Change the membership during the search: one more server starts outside the group,
    /// and an admin client adds it as a voter (a learner, promoted once caught up), then
    /// removes it again. Each change is one configuration entry.
    #[arg(long)]
    membership: bool,
    /// The admins' changes instead of `--membership`'s (implies it): changes in order,
    /// separated by commas, and `;` between admin clients, e.g. `add-learner 5, remove 4;
    /// promote 5`. A change is add-learner N, add-voter N, promote N or remove N. The
    /// joining server is still server `--servers` + 1.
    #[arg(long, value_name = "LIST", value_parser = parse_changes)]
    membership_changes: Option<Changes>,
    /// Symmetry reduction: states that differ only in which server is which are visited
    /// once (not with --membership). A counterexample then names servers as each
    /// state's representative does; rerun without it to read one step by step.
    #[arg(long)]
    symmetry: bool,
    /// Serve stateright's Explorer on this address (e.g. 127.0.0.1:3000) instead of checking.
    #[arg(long, value_name = "ADDR")]
    explore: Option<String>,
    /// A server compacts its log after this many applied entries (0: never).
    #[arg(long, default_value_t = ModelOptions::default().snapshot_interval_entries)]
    snapshot_interval_entries: u64,
    /// Pre-vote on, as the node runs it.
    #[arg(long, default_value_t = ModelOptions::default().pre_vote, action = clap::ArgAction::Set)]
    pre_vote: bool,
    /// Most entries per AppendEntries (0: the node's default, 256).
    #[arg(long, default_value_t = 0)]
    append_entries_max: usize,
    /// Checker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many seconds (verdicts not reached then say unknown).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Stop after generating this many states (simulation: 1,000,000 unless set).
    #[arg(long)]
    max_states: Option<usize>,
    /// Stop at the first violated property.
    #[arg(long)]
    first_violation: bool,
    /// Print the steps of a path (as a counterexample prints it) instead of checking.
    #[arg(long, value_name = "PATH")]
    replay: Option<String>,
    /// Start the search from the state these steps reach from the empty cluster: a built-in
    /// start (figure8, learner-votes, config-before-noop) or a file with one step per line, worded as counterexamples print
    /// them (`n1 tick`, `n2 -> n1: RequestVoteResponse`, `n1 crashed`).
    #[arg(long, value_name = "NAME|FILE")]
    start: Option<String>,
}

pub fn run(args: ModelArgs) -> ExitCode {
    let args = match args.model {
        ModelCommand::Raft(args) => args,
        ModelCommand::Causal(args) => return run_causal(args),
        ModelCommand::TwoPc(args) => return run_twopc(args),
        ModelCommand::Lease(args) => return run_lease(args),
        ModelCommand::Membership(args) => return run_membership(args),
    };
    let start = match args.start.as_deref().map(read_start).transpose() {
        Ok(start) => start.unwrap_or_default(),
        Err(error) => {
            eprintln!("faultline model: error: {error}");
            return ExitCode::from(2);
        }
    };
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
        append_entries_max: args.append_entries_max,
        threads: args.threads,
        timeout: args.timeout.map(Duration::from_secs),
        max_states: args.max_states,
        stop_at_first_violation: args.first_violation,
        start,
        symmetry: args.symmetry,
        membership: args.membership_changes.map(|c| c.0).or_else(|| {
            args.membership.then(|| {
                let joining = args.servers as u64 + 1;
                vec![vec![
                    ConfChange::AddVoter(joining),
                    ConfChange::Remove(joining),
                ]]
            })
        }),
    };
    if let Some(path) = args.replay {
        return match replay(&options, &path) {
            Ok(steps) => {
                for (i, step) in steps.iter().enumerate() {
                    println!("{:>3}. {step}", i + 1);
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("faultline model: error: cannot replay {path:?}: {error}");
                ExitCode::from(2)
            }
        };
    }
    match check(options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::from(report.exit_code())
        }
        Err(error) => {
            eprintln!("faultline model: error: {error}");
            ExitCode::from(2)
        }
    }
}

/// The admins' scripts, one value to clap (a `Vec` would be read as a repeated flag).
#[derive(Clone, Debug)]
struct Changes(Vec<Vec<ConfChange>>);

/// `add-learner 5, remove 4; promote 5` → one script per admin, changes in order.
fn parse_changes(list: &str) -> Result<Changes, String> {
    list.split(';')
        .map(parse_script)
        .collect::<Result<_, _>>()
        .map(Changes)
}

fn parse_script(list: &str) -> Result<Vec<ConfChange>, String> {
    let usage = "write changes as `add-learner N`, `add-voter N`, `promote N` or `remove N`, \
                 separated by commas";
    list.split(',')
        .map(|change| {
            let words: Vec<&str> = change.split_whitespace().collect();
            let [kind, id] = words[..] else {
                return Err(format!("{change:?} is not a change: {usage}"));
            };
            let id: u64 = id
                .parse()
                .map_err(|_| format!("{id:?} in {change:?} is not a server id: {usage}"))?;
            match kind {
                "add-learner" => Ok(ConfChange::AddLearner(id)),
                "add-voter" => Ok(ConfChange::AddVoter(id)),
                "promote" => Ok(ConfChange::Promote(id)),
                "remove" => Ok(ConfChange::Remove(id)),
                _ => Err(format!(
                    "{kind:?} in {change:?} is no kind of change: {usage}"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_changes_parses_in_order_and_a_bad_one_says_how_to_write_it() {
        assert_eq!(
            parse_changes("add-learner 5, remove 4; promote 5")
                .unwrap()
                .0,
            vec![
                vec![ConfChange::AddLearner(5), ConfChange::Remove(4)],
                vec![ConfChange::Promote(5)]
            ]
        );
        let error = parse_changes("add-voter 5, drop 1").unwrap_err();
        assert!(
            error.contains("\"drop\"") && error.contains("remove N"),
            "{error}"
        );
        assert!(
            parse_changes("remove")
                .unwrap_err()
                .contains("not a change")
        );
        assert!(
            parse_changes("remove x")
                .unwrap_err()
                .contains("not a server id")
        );
    }
}
