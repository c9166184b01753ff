use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use faultline_model::raft::{ActorState, ModelOptions, NetworkKind, build_model};
use stateright::Model;

fn main() {
    let options = ModelOptions {
        clients: 0,
        max_term: 2,
        max_log: 3,
        max_in_flight: 2,
        crashes: 1,
        network: NetworkKind::Unordered,
        ..ModelOptions::default()
    };
    let model = build_model(&options);
    let mut seen = HashSet::new();
    let mut queue: VecDeque<_> = model.init_states().into_iter().collect();
    let mut printed = false;
    let mut roles = std::collections::BTreeMap::new();
    let (mut down_any, mut down_with_leader2, mut t2_leaders) = (0, 0, 0);
    while let Some(state) = queue.pop_front() {
        let mut h = DefaultHasher::new();
        state.hash(&mut h);
        if !seen.insert(h.finish()) {
            continue;
        }
        let down = state.actor_states.iter().any(|a| matches!(**a, ActorState::Down));
        let leader2 = state.actor_states.iter().any(|a| matches!(&**a, ActorState::Server(s) if s.core.is_leader() && s.core.term() == 2));
        if leader2 { t2_leaders += 1; }
        if down {
            down_any += 1;
            let key: Vec<String> = state.actor_states.iter().map(|a| match &**a { ActorState::Server(s) => format!("{}{}", s.core.role().as_str(), s.core.term()), ActorState::Down => "DOWN".into(), _ => "c".into() }).collect();
            *roles.entry(key.join(" ")).or_insert(0usize) += 1;
        }
        if down && leader2 {
            down_with_leader2 += 1;
            if down_with_leader2 == 1 { println!("{:?}", state.history.leaders); }
        }
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        if !printed && state.actor_states.iter().any(|a| matches!(&**a, ActorState::Server(s) if s.core.is_leader())) {
            printed = true;
            for a in &actions {
                let next = model.next_state(&state, a.clone());
                println!("{a:?} -> {:?}", next.as_ref().map(|n| model.within_boundary(n)));
            }
        }
        for a in actions {
            if let Some(next) = model.next_state(&state, a) {
                if model.within_boundary(&next) {
                    queue.push_back(next);
                }
            }
        }
    }
    for (k, n) in &roles { println!("{n:>6} {k}"); }
    println!("unique {} down {down_any} t2 leaders {t2_leaders} down+t2 leader {down_with_leader2}", seen.len());
}
