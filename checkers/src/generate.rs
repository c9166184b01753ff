//! Generated histories: a simulated linearizable register store, for benchmarks and tests.
//!
//! [`RegisterWorkload::generate`] simulates `processes` client threads against a correct
//! (linearizable) store of `keys` independent registers. Each thread runs one operation at a
//! time: it invokes a `read`, `write` or `cas` on a random key, the operation takes effect at a
//! random instant strictly inside its interval (its linearization point), and it completes
//! later with the output the store gave at that instant. A fraction of the writes complete as
//! `info` (unknown outcome); half of those really took effect at their linearization point and
//! half never did, as when a client times out on a request that may or may not have reached
//! the store. After an `info` the thread goes on under a new process number (Jepsen's
//! convention: `p + processes`), since the old process may still be in flight.
//!
//! The result is linearizable by construction, under both readings of a failed `cas`
//! ([`crate::CasFail`]): a failed cas compared at its linearization point and changed
//! nothing. Everything is a deterministic function of the parameters, seed included.
//!
//! ```
//! use faultline_checkers::generate::RegisterWorkload;
//! use faultline_checkers::{CheckResult, check_by_name};
//!
//! let workload = RegisterWorkload { operations: 2_000, seed: 7, ..Default::default() };
//! let history = workload.generate();
//! assert_eq!(history.operations.len(), 2_000);
//! let verdict = check_by_name(&history, workload.model_name(), &Default::default()).unwrap();
//! assert_eq!(verdict.result, CheckResult::Valid);
//! ```
//!
//! [`write_history`] writes it as JSON Lines (or EDN) that `faultline check` reads back.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::formats::Format;
use crate::history::{History, Operation, Outcome, Value};

/// Parameters of a generated register history. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegisterWorkload {
    /// Concurrent client threads.
    pub processes: u64,
    /// Independent registers, named `"0"`, `"1"`, ...
    pub keys: u64,
    /// Operations in the history.
    pub operations: usize,
    /// Relative weights of `read`, `write` and `cas`. A `cas` weight of 0 makes a plain
    /// register history (model `register`); otherwise the model is `cas-register`.
    pub mix: [u32; 3],
    /// Fraction of writes that complete as `info`; half of them take effect, half do not.
    pub info_fraction: f64,
    /// Writes and cas operations use values `0..values` (Jepsen's cas-register uses 5). Small
    /// domains make equal states common, as in real tests; a large one makes every write
    /// distinguishable.
    pub values: u64,
    /// Operation durations are uniform in `2..=duration_max` time units (ns in files).
    pub duration_max: u64,
    /// Pauses between one thread's operations are uniform in `1..=gap_max` time units.
    pub gap_max: u64,
    /// Seed of the pseudo-random choices.
    pub seed: u64,
}

impl Default for RegisterWorkload {
    /// 10 processes, 16 keys, 1,000 operations, read:write:cas 2:1:1, 1% of writes `info`,
    /// 5 values, threads busy about 90% of the time, seed 0.
    fn default() -> RegisterWorkload {
        RegisterWorkload {
            processes: 10,
            keys: 16,
            operations: 1_000,
            mix: [2, 1, 1],
            info_fraction: 0.01,
            values: 5,
            duration_max: 1_000,
            gap_max: 100,
            seed: 0,
        }
    }
}

/// splitmix64: small, fast and deterministic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for a workload, and no division.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write(i64),
    Cas(i64, i64),
}

/// An operation before the store has run it.
struct Planned {
    process: u64,
    key: u32,
    call: Call,
    invoke: u64,
    complete: u64,
    /// The linearization point, or `None` for an `info` write that never took effect.
    effect: Option<u64>,
    info: bool,
}

impl RegisterWorkload {
    /// The built-in model this workload's histories are for: `cas-register`, or `register`
    /// when the mix has no `cas`.
    pub fn model_name(&self) -> &'static str {
        if self.mix[2] == 0 {
            "register"
        } else {
            "cas-register"
        }
    }

    /// Generates the history. Operations are ordered by invocation; every operation completes
    /// (`ok`, `fail` for a cas whose compare did not match, or `info`).
    ///
    /// # Panics
    ///
    /// If `processes`, `keys` or the mix's total is 0, or `duration_max < 2`.
    pub fn generate(&self) -> History {
        assert!(self.processes > 0, "at least one process");
        assert!(self.keys > 0, "at least one key");
        assert!(
            self.duration_max >= 2,
            "an interval needs room for its effect"
        );
        let weight: u64 = self.mix.iter().map(|&w| u64::from(w)).sum();
        assert!(weight > 0, "the mix needs a non-zero weight");
        let values = self.values.max(1);
        let mut rng = Rng(self.seed);

        // 1. Intervals: always extend the thread that is free first, so operations come out in
        //    invocation order and threads interleave.
        let mut free: BinaryHeap<Reverse<(u64, u64)>> = (0..self.processes)
            .map(|t| Reverse((rng.between(0, self.gap_max), t)))
            .collect();
        let mut process_of: Vec<u64> = (0..self.processes).collect();
        let mut planned: Vec<Planned> = Vec::with_capacity(self.operations);
        while planned.len() < self.operations {
            let Reverse((invoke, thread)) = free.pop().expect("threads never run out");
            let draw = rng.below(weight);
            let value = |rng: &mut Rng| rng.below(values) as i64;
            let call = if draw < u64::from(self.mix[0]) {
                Call::Read
            } else if draw < u64::from(self.mix[0] + self.mix[1]) {
                Call::Write(value(&mut rng))
            } else {
                let from = value(&mut rng);
                Call::Cas(from, value(&mut rng))
            };
            let key = rng.below(self.keys) as u32;
            let complete = invoke + rng.between(2, self.duration_max);
            let mut effect = Some(rng.between(invoke + 1, complete - 1));
            let info = matches!(call, Call::Write(_)) && rng.chance(self.info_fraction);
            if info && rng.chance(0.5) {
                effect = None;
            }
            let process = process_of[thread as usize];
            if info {
                process_of[thread as usize] += self.processes;
            }
            planned.push(Planned {
                process,
                key,
                call,
                invoke,
                complete,
                effect,
                info,
            });
            free.push(Reverse((complete + rng.between(1, self.gap_max), thread)));
        }

        // 2. Run the store in linearization-point order to learn each operation's output.
        let mut order: Vec<u32> = (0..planned.len() as u32)
            .filter(|&i| planned[i as usize].effect.is_some())
            .collect();
        order.sort_unstable_by_key(|&i| (planned[i as usize].effect, i));
        let mut store: Vec<Option<i64>> = vec![None; self.keys as usize];
        // (outcome, output) per operation; unknown outcomes keep `None`.
        let mut results: Vec<(Outcome, Option<Value>)> =
            vec![(Outcome::Unknown, None); planned.len()];
        let int = |v: Option<i64>| v.map_or(Value::Nil, Value::Int);
        for i in order {
            let op = &planned[i as usize];
            let cell = &mut store[op.key as usize];
            let result = match op.call {
                Call::Read => (Outcome::Ok, Some(int(*cell))),
                Call::Write(v) => {
                    *cell = Some(v);
                    (Outcome::Ok, Some(Value::Int(v)))
                }
                Call::Cas(from, to) => {
                    let input = Some(cas_input(from, to));
                    if *cell == Some(from) {
                        *cell = Some(to);
                        (Outcome::Ok, input)
                    } else {
                        (Outcome::Fail, input)
                    }
                }
            };
            if !op.info {
                results[i as usize] = result;
            }
        }

        // 3. The history.
        let keys: Vec<String> = (0..self.keys).map(|k| k.to_string()).collect();
        let operations = planned
            .into_iter()
            .zip(results)
            .enumerate()
            .map(|(id, (op, (outcome, output)))| {
                let (f, input) = match op.call {
                    Call::Read => ("read", Value::Nil),
                    Call::Write(v) => ("write", Value::Int(v)),
                    Call::Cas(from, to) => ("cas", cas_input(from, to)),
                };
                Operation {
                    id,
                    process: op.process,
                    f: f.to_string(),
                    key: Some(keys[op.key as usize].clone()),
                    input,
                    output,
                    outcome,
                    invoke_time: op.invoke,
                    complete_time: Some(op.complete),
                    line: None,
                    not_applied: false,
                }
            })
            .collect();
        let history = History {
            operations,
            nemesis: Vec::new(),
        };
        history.validate();
        history
    }
}

fn cas_input(from: i64, to: i64) -> Value {
    Value::List(vec![Value::Int(from), Value::Int(to)])
}

/// Writes `history` as a history file in `format`, one event per line, which
/// [`crate::formats::read_history`] (and so `faultline check`) reads back to an equal history
/// (operation lines aside).
pub fn write_history(
    history: &History,
    format: Format,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    format.write_events(&history.to_events(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_from_the_seed() {
        let w = RegisterWorkload {
            operations: 500,
            seed: 3,
            ..Default::default()
        };
        assert_eq!(w.generate(), w.generate());
        let other = RegisterWorkload { seed: 4, ..w };
        assert_ne!(w.generate(), other.generate());
    }

    #[test]
    fn infos_and_new_processes() {
        let w = RegisterWorkload {
            operations: 4_000,
            info_fraction: 0.2,
            ..Default::default()
        };
        let h = w.generate();
        let infos = h
            .operations
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count();
        assert!(infos > 50, "{infos} infos");
        assert!(
            h.operations
                .iter()
                .all(|op| op.f == "write" || op.outcome != Outcome::Unknown)
        );
        // After an info its thread goes on as a new process.
        assert!(h.operations.iter().any(|op| op.process >= w.processes));
        assert!(h.operations.iter().any(|op| op.outcome == Outcome::Fail));
    }
}
