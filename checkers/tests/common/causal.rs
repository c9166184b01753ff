//! Histories for the causal checker: a terse notation for hand-written ones, and a simulated
//! causally consistent store for generated ones.

use std::collections::HashMap;

use super::Rng;
use faultline_checkers::{History, Operation, Outcome, Value};

/// Builds a history from lines `PROCESS r|w KEY VALUE [info|fail]`, e.g. `0 w x 1`,
/// `1 r x nil`, `2 w y 3 info`. Each line is one operation, invoked and completed before the
/// next; ids are line numbers from 0.
pub fn ops(text: &str) -> History {
    let mut operations = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(parts.len() == 4 || parts.len() == 5, "bad line {line:?}");
        let value = match parts[3] {
            "nil" => Value::Nil,
            // `1+2`: siblings, as a leaderless store returns concurrent values.
            n if n.contains('+') => Value::List(
                n.split('+')
                    .map(|v| Value::Int(v.parse().expect("an integer")))
                    .collect(),
            ),
            n => Value::Int(n.parse().expect("an integer or nil")),
        };
        let outcome = match parts.get(4) {
            None => Outcome::Ok,
            Some(&"info") => Outcome::Unknown,
            Some(&"fail") => Outcome::Fail,
            Some(other) => panic!("bad outcome {other:?}"),
        };
        let (f, input, output) = match parts[1] {
            "w" => ("write", value.clone(), Some(value)),
            "r" => ("read", Value::Nil, Some(value)),
            other => panic!("bad f {other:?}"),
        };
        let id = operations.len();
        operations.push(Operation {
            id,
            process: parts[0].parse().expect("a process number"),
            f: f.to_string(),
            key: Some(parts[2].to_string()),
            input,
            output: if outcome == Outcome::Unknown {
                None
            } else {
                output
            },
            outcome,
            invoke_time: 2 * id as u64,
            complete_time: Some(2 * id as u64 + 1),
            line: None,
            not_applied: false,
        });
    }
    let history = History {
        operations,
        nemesis: Vec::new(),
    };
    history.validate();
    history
}

/// Parameters of a simulated store run.
#[derive(Clone, Copy, Debug)]
pub struct StorePlan {
    pub seed: u64,
    pub sessions: usize,
    pub operations: usize,
    pub keys: u64,
    /// Replicas order concurrent writes by Lamport timestamp (last writer wins), so they
    /// converge: the history is CCv. Otherwise the last write delivered wins, which is CC only.
    pub convergent: bool,
    /// Replicas deliver a write only once its causal dependencies are delivered. Otherwise
    /// they deliver pending writes in any order, which breaks causality in some runs.
    pub causal_delivery: bool,
    /// Percent of operations recorded with an unknown (`info`) outcome or as failed.
    pub unknown_percent: u64,
}

/// A replicated write on its way to other replicas.
#[derive(Clone, Debug)]
struct Message {
    origin: usize,
    /// The origin's vector clock after the write: the write's causal dependencies, itself
    /// included (at `origin`).
    clock: Vec<u64>,
    key: String,
    value: i64,
    lamport: u64,
}

#[derive(Clone, Debug, Default)]
struct Replica {
    /// key -> (lamport, origin, value)
    store: HashMap<String, (u64, usize, i64)>,
    /// Writes delivered from each origin (its own count for itself).
    clock: Vec<u64>,
    lamport: u64,
    pending: Vec<Message>,
}

impl Replica {
    fn apply(&mut self, message: &Message, convergent: bool) {
        self.lamport = self.lamport.max(message.lamport);
        let incoming = (message.lamport, message.origin, message.value);
        let keep = convergent
            && self
                .store
                .get(&message.key)
                .is_some_and(|&(l, o, _)| (l, o) > (message.lamport, message.origin));
        if !keep {
            self.store.insert(message.key.clone(), incoming);
        }
    }

    /// A pending message that may be delivered here, searching from `start`: with `causal`
    /// delivery, one whose dependencies have all been delivered (the next one from its
    /// origin, and no more than this replica has from every other origin); otherwise any.
    fn deliverable(&self, causal: bool, start: usize) -> Option<usize> {
        let n = self.pending.len();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let m = &self.pending[i];
            !causal
                || m.clock.iter().enumerate().all(|(k, &c)| {
                    if k == m.origin {
                        c == self.clock[k] + 1
                    } else {
                        c <= self.clock[k]
                    }
                })
        })
    }
}

/// Runs a replicated store where each session talks to its own replica and replicas deliver
/// each other's writes in causal order after random delays. Every read is served by the
/// session's replica, so the history is causally consistent by construction (and CCv when
/// `convergent`). Written values are unique. Some writes time out (`info`; half of those never
/// happened) or fail (never happened); some reads time out. A process whose operation timed
/// out is replaced by a new process number on the same replica, as in Jepsen.
pub fn simulate(plan: StorePlan) -> History {
    let mut rng = Rng(plan.seed);
    let n = plan.sessions.max(1);
    let mut replicas: Vec<Replica> = (0..n)
        .map(|_| Replica {
            clock: vec![0; n],
            ..Replica::default()
        })
        .collect();
    let mut process: Vec<u64> = (0..n as u64).collect();
    let mut operations: Vec<Operation> = Vec::new();
    let mut fresh = 0i64;
    let mut time = 0u64;
    while operations.len() < plan.operations {
        time += 1;
        let i = rng.below(n as u64) as usize;
        // Deliver sometimes, a few messages at once, so that replicas lag behind one another
        // but keep up on average (each write sends `n - 1` messages).
        if rng.chance(40) {
            for _ in 0..=rng.below(n as u64) {
                let start = rng.below(replicas[i].pending.len() as u64) as usize;
                let Some(ready) = replicas[i].deliverable(plan.causal_delivery, start) else {
                    break;
                };
                let m = replicas[i].pending.remove(ready);
                // Out of order, the clock counts deliveries; it is consulted only in order.
                replicas[i].clock[m.origin] += 1;
                replicas[i].apply(&m, plan.convergent);
            }
            continue;
        }
        let key = format!("k{}", rng.below(plan.keys.max(1)));
        let id = operations.len();
        let unknown = rng.chance(plan.unknown_percent);
        let mut op = Operation {
            id,
            process: process[i],
            f: String::new(),
            key: Some(key.clone()),
            input: Value::Nil,
            output: None,
            outcome: Outcome::Ok,
            invoke_time: time,
            complete_time: Some(time),
            line: None,
            not_applied: false,
        };
        if rng.chance(50) {
            fresh += 1;
            op.f = "write".into();
            op.input = Value::Int(fresh);
            op.output = Some(Value::Int(fresh));
            // Unknown writes: half happened (applied, replicated), half did not; failed ones
            // did not happen.
            let happened = !(unknown && rng.chance(50));
            if unknown {
                op.outcome = Outcome::Unknown;
                op.output = None;
            } else if rng.chance(plan.unknown_percent / 2) {
                op.outcome = Outcome::Fail;
            }
            if happened && op.outcome != Outcome::Fail {
                let replica = &mut replicas[i];
                replica.lamport += 1;
                replica.clock[i] += 1;
                let message = Message {
                    origin: i,
                    clock: replica.clock.clone(),
                    key,
                    value: fresh,
                    lamport: replica.lamport,
                };
                replica.apply(&message, plan.convergent);
                for (j, other) in replicas.iter_mut().enumerate() {
                    if j != i {
                        other.pending.push(message.clone());
                    }
                }
            }
        } else {
            op.f = "read".into();
            let value = replicas[i]
                .store
                .get(&key)
                .map_or(Value::Nil, |&(_, _, v)| Value::Int(v));
            if unknown {
                op.outcome = Outcome::Unknown;
            } else {
                op.output = Some(value);
            }
        }
        if op.outcome == Outcome::Unknown {
            process[i] += n as u64;
        }
        operations.push(op);
    }
    let history = History {
        operations,
        nemesis: Vec::new(),
    };
    history.validate();
    history
}
