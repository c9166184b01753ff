//! Explores a configuration breadth-first and prints where its states are: a tool for
//! choosing bounds. `cargo run --release --example stats -- [args as for the CLI]`.
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use faultline_model::raft::{ActorState, ModelOptions, NetworkKind, build_model};
use stateright::Model;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .map_or(default.to_string(), |i| args[i + 1].clone())
    };
    let options = ModelOptions {
        clients: get("--clients", "1").parse().unwrap(),
        client_ops: get("--client-ops", "2").parse().unwrap(),
        max_term: get("--max-term", "2").parse().unwrap(),
        max_log: get("--max-log", "3").parse().unwrap(),
        max_in_flight: get("--max-in-flight", "6").parse().unwrap(),
        crashes: get("--crashes", "0").parse().unwrap(),
        network: get("--network", "unordered").parse::<NetworkKind>().unwrap(),
        pre_vote: get("--pre-vote", "true").parse().unwrap(),
        ..ModelOptions::default()
    };
    let limit: usize = get("--limit", "2000000").parse().unwrap();
    let model = build_model(&options);
    let mut seen = HashSet::new();
    let mut queue = VecDeque::new();
    for s in model.init_states() {
        queue.push_back(s);
    }
    let mut buckets: BTreeMap<String, usize> = BTreeMap::new();
    let mut nets: BTreeMap<usize, usize> = BTreeMap::new();
    let mut detail_net: BTreeMap<String, usize> = BTreeMap::new();
    let mut detail_srv: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(state) = queue.pop_front() {
        let mut h = DefaultHasher::new();
        state.hash(&mut h);
        if !seen.insert(h.finish()) {
            continue;
        }
        if seen.len() > limit {
            break;
        }
        let mut key = Vec::new();
        for a in &state.actor_states {
            match &**a {
                ActorState::Server(s) => key.push(format!(
                    "{}{}/L{}C{}",
                    &s.core.role().as_str()[..2],
                    s.core.term(),
                    s.core.log().last_index(),
                    s.core.commit_index()
                )),
                ActorState::Client(c) => key.push(format!("op{}", c.next_op)),
                ActorState::Down => key.push("down".into()),
            }
        }
        let key = key.join(" ");
        if key == "le1/L2C2 fo1/L2C2 fo1/L2C2 op1" {
            let mut net: Vec<String> = state.network.iter_deliverable().map(|e| format!("{}>{}:{}", usize::from(e.src), usize::from(e.dst), e.msg)).collect();
            net.sort();
            *detail_net.entry(net.join(" | ")).or_default() += 1;
            for (i, a) in state.actor_states.iter().enumerate() {
                if let ActorState::Server(s) = &**a {
                    let d = format!("{:?}", s.core);
                    let d = d.split("persisted_index").next().unwrap().split("lamport").nth(1).unwrap_or("").to_string();
                    *detail_srv.entry(format!("{i} {} {:?} {:?} {:?}", d, s.pending_reads, s.confirmed_reads, s.pending_writes)).or_default() += 1;
                }
            }
        }
        *buckets.entry(key).or_default() += 1;
        *nets.entry(state.network.len()).or_default() += 1;
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        for a in actions {
            if let Some(next) = model.next_state(&state, a) {
                if model.within_boundary(&next) {
                    queue.push_back(next);
                }
            }
        }
    }
    println!("unique {} (buckets {})", seen.len(), buckets.len());
    let mut v: Vec<_> = buckets.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, n) in v.iter().take(25) {
        println!("{n:>8} {k}");
    }
    println!("network sizes {nets:?}");
    println!("bucket networks {} server variants {}", detail_net.len(), detail_srv.len());
    let mut v: Vec<_> = detail_net.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, n) in v.iter().take(8) { println!("{n:>6} {k}"); }
    let mut v: Vec<_> = detail_srv.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, n) in v.iter().take(12) { println!("{n:>6} {k}"); }
}
