//! Helpers shared by the integration tests: a terse history notation, a seeded RNG, and a
//! generator of histories from a sequential execution with random concurrency windows.

#![allow(dead_code)] // each test file uses a different subset

pub mod causal;

use faultline_checkers::formats::{Format, read_history};
use faultline_checkers::{History, Operation, Outcome, Value};

/// Builds a history from lines of `process type f value`, e.g. `0 invoke write 1`, where the
/// value is EDN (`nil`, `1`, `[1 2]`, `"s"`) and may be left out. Lines starting with `k=KEY`
/// set the key. Time is the line's position.
pub fn history(text: &str) -> History {
    let mut edn = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, ' ');
        let process = parts.next().expect("process");
        let kind = parts.next().expect("type");
        let f = parts.next().expect("f");
        let value = parts.next().unwrap_or("nil");
        edn.push_str(&format!(
            "{{:process {process} :type :{kind} :f :{f} :value {value}}}\n"
        ));
    }
    read_history(&edn, Format::Edn).expect("test history is well-formed")
}

/// splitmix64, so generated histories replay from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Which sequential object a generated history runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Register,
    CasRegister,
    Kv,
    Set,
    Counter,
}

pub const KINDS: [Kind; 5] = [
    Kind::Register,
    Kind::CasRegister,
    Kind::Kv,
    Kind::Set,
    Kind::Counter,
];

impl Kind {
    pub fn model_name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::CasRegister => "cas-register",
            Kind::Kv => "kv",
            Kind::Set => "set",
            Kind::Counter => "counter",
        }
    }
}

/// The reference object the generator executes against: plain code, independent of the
/// crate's models, so the test compares two implementations.
#[derive(Clone, Debug, Default)]
struct Object {
    register: std::collections::HashMap<Option<String>, Value>,
    strings: std::collections::HashMap<Option<String>, String>,
    sets: std::collections::HashMap<Option<String>, std::collections::BTreeSet<i64>>,
    counters: std::collections::HashMap<Option<String>, i64>,
}

/// A planned operation: (f, key, input).
fn random_call(
    kind: Kind,
    rng: &mut Rng,
    fresh: &mut i64,
    keys: u64,
) -> (String, Option<String>, Value) {
    let key = (keys > 0).then(|| format!("k{}", rng.below(keys)));
    *fresh += 1;
    let (f, input) = match kind {
        Kind::Register => match rng.below(2) {
            0 => ("read", Value::Nil),
            _ => ("write", Value::Int(*fresh)),
        },
        Kind::CasRegister => match rng.below(3) {
            0 => ("read", Value::Nil),
            1 => ("write", Value::Int(*fresh)),
            _ => {
                // Compare against a recent value so that some cas operations succeed.
                let from = if rng.chance(20) {
                    Value::Nil
                } else {
                    Value::Int(*fresh - 1 - rng.below(3) as i64)
                };
                ("cas", Value::List(vec![from, Value::Int(*fresh)]))
            }
        },
        Kind::Kv => match rng.below(3) {
            0 => ("get", Value::Nil),
            1 => ("put", Value::Str(format!("<{fresh}>"))),
            _ => ("append", Value::Str(format!("<{fresh}>"))),
        },
        Kind::Set => match rng.below(2) {
            0 => ("read", Value::Nil),
            _ => ("add", Value::Int(*fresh)),
        },
        Kind::Counter => match rng.below(2) {
            0 => ("read", Value::Nil),
            _ => ("add", Value::Int(rng.below(5) as i64 - 1)),
        },
    };
    let key = if kind == Kind::Kv {
        key.or(Some("k0".into()))
    } else {
        key
    };
    (f.to_string(), key, input)
}

/// Applies a call at its linearization point: (outcome, output).
fn execute(
    kind: Kind,
    object: &mut Object,
    f: &str,
    key: &Option<String>,
    input: &Value,
) -> (Outcome, Value) {
    match (kind, f) {
        (Kind::Register | Kind::CasRegister, "read") => (
            Outcome::Ok,
            object.register.get(key).cloned().unwrap_or_default(),
        ),
        (Kind::Register | Kind::CasRegister, "write") => {
            object.register.insert(key.clone(), input.clone());
            (Outcome::Ok, input.clone())
        }
        (Kind::CasRegister, "cas") => {
            let Value::List(args) = input else {
                unreachable!()
            };
            let current = object.register.get(key).cloned().unwrap_or_default();
            if current == args[0] {
                object.register.insert(key.clone(), args[1].clone());
                (Outcome::Ok, input.clone())
            } else {
                (Outcome::Fail, input.clone())
            }
        }
        (Kind::Kv, "get") => (
            Outcome::Ok,
            Value::Str(object.strings.get(key).cloned().unwrap_or_default()),
        ),
        (Kind::Kv, "put") => {
            object
                .strings
                .insert(key.clone(), input.as_str().unwrap().to_string());
            (Outcome::Ok, input.clone())
        }
        (Kind::Kv, "append") => {
            object
                .strings
                .entry(key.clone())
                .or_default()
                .push_str(input.as_str().unwrap());
            (Outcome::Ok, input.clone())
        }
        (Kind::Set, "add") => {
            object
                .sets
                .entry(key.clone())
                .or_default()
                .insert(input.as_int().unwrap());
            (Outcome::Ok, input.clone())
        }
        (Kind::Set, "read") => {
            let items = object
                .sets
                .get(key)
                .map(|s| s.iter().rev().map(|&n| Value::Int(n)).collect())
                .unwrap_or_default();
            (Outcome::Ok, Value::List(items))
        }
        (Kind::Counter, "add") => {
            *object.counters.entry(key.clone()).or_default() += input.as_int().unwrap();
            (Outcome::Ok, input.clone())
        }
        (Kind::Counter, "read") => (
            Outcome::Ok,
            Value::Int(object.counters.get(key).copied().unwrap_or(0)),
        ),
        _ => unreachable!("{kind:?} {f}"),
    }
}

/// Parameters of a generated history.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub kind: Kind,
    pub seed: u64,
    pub processes: u64,
    pub operations: usize,
    /// Keys for keyed kinds; 0 means operations carry no key.
    pub keys: u64,
    /// Percent of operations whose completion is recorded as unknown.
    pub unknown_percent: u64,
}

/// Runs `plan`: each operation is invoked, takes effect at a later instant (its linearization
/// point, where the reference object computes its output), and completes later still, with
/// processes interleaved at random. Some completions are recorded as unknown, and some of
/// those never take effect at all. The result is linearizable by construction.
pub fn generate(plan: Plan) -> History {
    #[derive(Clone)]
    struct InFlight {
        op: usize,
        applied: bool,
        lost: bool,
    }
    let mut rng = Rng(plan.seed);
    let mut object = Object::default();
    let mut fresh = 0;
    let mut ops: Vec<Operation> = Vec::new();
    let mut in_flight: Vec<Option<InFlight>> = vec![None; plan.processes as usize];
    let mut next_process_id: Vec<u64> = (0..plan.processes).collect();
    let mut time = 0u64;
    let mut started = 0;
    loop {
        time += 1;
        let p = rng.below(plan.processes) as usize;
        match in_flight[p].clone() {
            None if started < plan.operations => {
                let (f, key, input) = random_call(plan.kind, &mut rng, &mut fresh, plan.keys);
                let id = ops.len();
                ops.push(Operation {
                    id,
                    process: next_process_id[p],
                    f,
                    key,
                    input,
                    output: None,
                    outcome: Outcome::Unknown,
                    invoke_time: time,
                    complete_time: None,
                    line: None,
                    not_applied: false,
                });
                let lost = rng.chance(plan.unknown_percent / 2);
                in_flight[p] = Some(InFlight {
                    op: id,
                    applied: false,
                    lost,
                });
                started += 1;
            }
            None => {
                if in_flight.iter().all(Option::is_none) {
                    break;
                }
            }
            Some(InFlight {
                op,
                applied: false,
                lost,
            }) => {
                let o = &mut ops[op];
                if !lost {
                    let (outcome, output) = execute(plan.kind, &mut object, &o.f, &o.key, &o.input);
                    o.outcome = outcome;
                    o.output = Some(output);
                }
                in_flight[p] = Some(InFlight {
                    op,
                    applied: true,
                    lost,
                });
            }
            Some(InFlight {
                op,
                applied: true,
                lost,
            }) => {
                let o = &mut ops[op];
                o.complete_time = Some(time);
                if lost || rng.chance(plan.unknown_percent) {
                    o.outcome = Outcome::Unknown;
                    o.output = None;
                    // Jepsen's convention: a process that timed out is replaced by a new one.
                    next_process_id[p] += plan.processes;
                }
                in_flight[p] = None;
            }
        }
    }
    let history = History {
        operations: ops,
        nemesis: Vec::new(),
    };
    history.validate();
    history
}
