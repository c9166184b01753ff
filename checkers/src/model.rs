//! Sequential specifications ("models") that a history is checked against.
//!
//! A model is a deterministic state machine: [`Model::step`] says what state an operation leads
//! to, or that its recorded output is impossible from the given state. Linearizability asks
//! whether the operations can be put in an order, consistent with real time, that the model
//! accepts (Herlihy & Wing 1990).
//!
//! How outcomes are read (the same for every model here):
//! - `ok`: the operation happened and its output is what was recorded.
//! - `fail`: it did not happen, and is dropped before checking — except a `cas` under
//!   [`CasFail::CompareMismatch`] (the default, as Porcupine reads it): the cas happened and
//!   saw a value other than its `from`. When the completion's value is `[from to seen]` (a
//!   store that answers a failed compare with the current value, as Faultline and etcd do),
//!   it saw exactly `seen`.
//! - unknown (`info`, or never completed): it may have happened with any output, or not at all.
//!   A read-only operation with an unknown outcome constrains nothing and is dropped; any other
//!   is kept and its step applies its effect. "Never happened" is covered because the checker
//!   may linearize it after every completed operation, where nothing observes it.
//!
//! Models whose operations carry keys split the history by key ([`Model::partition`]): each key
//! is an independent object, so the history is linearizable iff each key's sub-history is
//! (P-compositionality, Herlihy & Wing 1990 §3.3; Horn & Kroening 2015). The keyed models'
//! states are one key's state.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::history::{Operation, Outcome, Value};

/// A sequential specification.
pub trait Model: Sync {
    /// The state of one partition (one key, for keyed models).
    type State: Clone + Eq + Hash + Debug + Send;

    /// The model's name as used on command lines.
    fn name(&self) -> &'static str;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` when applied to `state`, or `None` if the op's recorded output is
    /// impossible from `state`. `op.output` is `None` when the outcome is unknown: then any
    /// output is possible, and the step must be possible from every state (the checker
    /// relies on it to leave such operations to the end).
    fn step(&self, state: &Self::State, op: &Operation) -> Option<Self::State>;

    /// [`Model::step`], saying `Unchanged` instead of returning a copy when the state stays
    /// the same. The checker calls this one: reads are about half of most histories, and
    /// not copying the state for them saves an allocation and a hash per step. Models that
    /// override it make `step` agree with it ([`Transition::into_step`]).
    fn transition(&self, state: &Self::State, op: &Operation) -> Transition<Self::State> {
        match self.step(state, op) {
            None => Transition::Impossible,
            Some(next) => Transition::To(next),
        }
    }

    /// Groups operations (by index into `ops`) into independent sub-histories. The default is
    /// one group; keyed models group by key.
    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }

    /// Whether this model can interpret `op` (its `f`, input and output shapes); the message
    /// says what was expected. Checked for every operation before checking starts, so that
    /// `step` never sees an operation it cannot read.
    fn validate(&self, op: &Operation) -> Result<(), String> {
        let _ = op;
        Ok(())
    }

    /// Whether `op` never changes the state (a read). Unknown-outcome reads are dropped.
    fn is_read_only(&self, op: &Operation) -> bool {
        let _ = op;
        false
    }

    /// Whether `op`, from any state that accepts it, leaves the state as it is: reads, and
    /// for the cas-register a failed cas read as a compare mismatch. The checker linearizes
    /// such an operation as soon as it can and never tries it later instead: whatever order
    /// works with it later also works with it first, since moving it forward changes no state
    /// and breaks no real-time order. Must be `false` when unsure; the default is
    /// [`Model::is_read_only`].
    fn never_changes_state(&self, op: &Operation) -> bool {
        self.is_read_only(op)
    }

    /// Whether `op` takes part in the check. See the module docs for the rules.
    fn include(&self, op: &Operation) -> bool {
        match op.outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Unknown => !self.is_read_only(op),
        }
    }

    /// A short human-readable form of a state, for reports.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// Heap bytes a state holds, so the checker can bound its cache's memory.
    fn state_heap_bytes(&self, state: &Self::State) -> usize {
        let _ = state;
        0
    }
}

/// The effect of one operation on a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition<S> {
    /// The recorded output cannot come from this state.
    Impossible,
    /// Possible, and the state stays as it is.
    Unchanged,
    /// Possible, and the state becomes this.
    To(S),
}

impl<S: Clone> Transition<S> {
    /// The same answer in [`Model::step`]'s form.
    pub fn into_step(self, state: &S) -> Option<S> {
        match self {
            Transition::Impossible => None,
            Transition::Unchanged => Some(state.clone()),
            Transition::To(next) => Some(next),
        }
    }

    fn when(possible: bool) -> Transition<S> {
        if possible {
            Transition::Unchanged
        } else {
            Transition::Impossible
        }
    }
}

/// Groups operation indices by key, in order of each key's first operation. Operations without
/// a key form one group of their own.
pub fn partition_by_key(ops: &[Operation]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let group = *by_key.entry(op.key.as_deref()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(i);
    }
    groups
}

fn expect_f(op: &Operation, allowed: &[&str], model: &str) -> Result<(), String> {
    if allowed.contains(&op.f.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "f {:?} is not an operation of the {model} model; expected one of {}",
            op.f,
            allowed.join(", ")
        ))
    }
}

/// How a `cas` completed with `fail` is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CasFail {
    /// The cas happened and its compare did not match: the value was not `from` at its
    /// linearization point (Porcupine's reading).
    #[default]
    CompareMismatch,
    /// The cas did not happen at all, as for any other failed operation (Knossos' reading).
    DidNotHappen,
}

/// A read/write register holding one value, `nil` at first.
///
/// `read` (output: the value), `write` (input: the new value). Partitions by key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = Value;

    fn name(&self) -> &'static str {
        "register"
    }

    fn init(&self) -> Value {
        Value::Nil
    }

    fn step(&self, state: &Value, op: &Operation) -> Option<Value> {
        self.transition(state, op).into_step(state)
    }

    fn transition(&self, state: &Value, op: &Operation) -> Transition<Value> {
        register_transition(state, op)
    }

    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        partition_by_key(ops)
    }

    fn validate(&self, op: &Operation) -> Result<(), String> {
        expect_f(op, &["read", "write"], self.name())
    }

    fn is_read_only(&self, op: &Operation) -> bool {
        op.f == "read"
    }

    fn describe_state(&self, state: &Value) -> String {
        state.to_string()
    }
}

fn register_transition(state: &Value, op: &Operation) -> Transition<Value> {
    match op.f.as_str() {
        "read" => Transition::when(op.output.as_ref().is_none_or(|seen| observed(seen, state))),
        "write" => Transition::To(op.input.clone()),
        _ => Transition::Impossible,
    }
}

/// Whether a read that returned `seen` could have read a register holding `state`. A list
/// (registers hold no lists) is siblings from a leaderless store: any one of them will do.
fn observed(seen: &Value, state: &Value) -> bool {
    match seen {
        Value::List(siblings) => siblings.contains(state),
        seen => seen == state,
    }
}

/// A register with compare-and-set, `nil` at first.
///
/// `read`, `write`, and `cas` with input `[from, to]`: sets `to` if the value is `from`.
/// A failed cas is read as [`CasFail`] says; under [`CasFail::CompareMismatch`] a failed
/// completion `[from, to, seen]` also says the value was `seen`. Partitions by key.
#[derive(Clone, Copy, Debug, Default)]
pub struct CasRegister {
    /// How a `fail` completion of a cas is read.
    pub cas_fail: CasFail,
}

impl CasRegister {
    /// A cas register reading failed cas operations as `cas_fail` says.
    pub fn new(cas_fail: CasFail) -> CasRegister {
        CasRegister { cas_fail }
    }
}

fn cas_arguments(op: &Operation) -> Option<(&Value, &Value)> {
    match op.input.as_list()? {
        [from, to] => Some((from, to)),
        _ => None,
    }
}

/// The value a failed cas reported seeing, when its completion carries one.
fn cas_seen(op: &Operation) -> Option<&Value> {
    match op.output.as_ref()?.as_list()? {
        [_, _, seen] => Some(seen),
        _ => None,
    }
}

impl Model for CasRegister {
    type State = Value;

    fn name(&self) -> &'static str {
        "cas-register"
    }

    fn init(&self) -> Value {
        Value::Nil
    }

    fn step(&self, state: &Value, op: &Operation) -> Option<Value> {
        self.transition(state, op).into_step(state)
    }

    fn transition(&self, state: &Value, op: &Operation) -> Transition<Value> {
        if op.f != "cas" {
            return register_transition(state, op);
        }
        let Some((from, to)) = cas_arguments(op) else {
            return Transition::Impossible;
        };
        match op.outcome {
            Outcome::Ok if state == from => Transition::To(to.clone()),
            Outcome::Ok => Transition::Impossible,
            // Included only under CompareMismatch: it saw something other than `from`.
            Outcome::Fail => {
                Transition::when(state != from && cas_seen(op).is_none_or(|seen| seen == state))
            }
            // It happened with whichever result the state gives, or never (see module docs).
            Outcome::Unknown if state == from => Transition::To(to.clone()),
            Outcome::Unknown => Transition::Unchanged,
        }
    }

    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        partition_by_key(ops)
    }

    fn validate(&self, op: &Operation) -> Result<(), String> {
        expect_f(op, &["read", "write", "cas"], self.name())?;
        if op.f == "cas" && cas_arguments(op).is_none() {
            return Err(format!("cas input must be [from to]; got {}", op.input));
        }
        Ok(())
    }

    fn is_read_only(&self, op: &Operation) -> bool {
        op.f == "read"
    }

    fn never_changes_state(&self, op: &Operation) -> bool {
        // A failed cas that is checked at all is a compare that did not match.
        op.f == "read" || (op.f == "cas" && op.outcome == Outcome::Fail)
    }

    fn include(&self, op: &Operation) -> bool {
        match op.outcome {
            Outcome::Ok => true,
            Outcome::Fail => {
                op.f == "cas" && self.cas_fail == CasFail::CompareMismatch && !op.not_applied
            }
            Outcome::Unknown => !self.is_read_only(op),
        }
    }

    fn describe_state(&self, state: &Value) -> String {
        state.to_string()
    }
}

/// Porcupine's key-value model: every key starts as `""`.
///
/// `get` (output: the value), `put` (input: the new value), `append` (input: appended to the
/// value). Values are strings. Partitions by key, so a state is one key's value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kv;

/// One key's value in the [`Kv`] model, with a hash kept up to date as it grows.
///
/// Appends make values long (hundreds of bytes in Porcupine's tests) and the checker hashes
/// every new state; a polynomial hash extends by the appended bytes alone, so hashing costs
/// no more than the copy the append makes anyway. Equality compares the hash first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvValue {
    hash: u64,
    text: String,
}

impl KvValue {
    /// Odd, so multiplication is invertible mod 2^64 and no byte's influence is lost.
    const BASE: u64 = 0x100_0000_01b3;

    /// A value holding `text`.
    pub fn new(text: &str) -> KvValue {
        KvValue::default().appended(text)
    }

    /// The value's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn appended(&self, tail: &str) -> KvValue {
        let mut text = String::with_capacity(self.text.len() + tail.len());
        text.push_str(&self.text);
        text.push_str(tail);
        let hash = tail.bytes().fold(self.hash, |h, b| {
            h.wrapping_mul(Self::BASE).wrapping_add(u64::from(b) + 1)
        });
        KvValue { hash, text }
    }
}

impl Hash for KvValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The polynomial hash already covers the text; equal values have equal hashes.
        state.write_u64(self.hash);
    }
}

impl Model for Kv {
    type State = KvValue;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> KvValue {
        KvValue::default()
    }

    fn step(&self, state: &KvValue, op: &Operation) -> Option<KvValue> {
        self.transition(state, op).into_step(state)
    }

    fn transition(&self, state: &KvValue, op: &Operation) -> Transition<KvValue> {
        match (op.f.as_str(), &op.input) {
            ("get", _) => Transition::when(
                op.output
                    .as_ref()
                    .is_none_or(|seen| seen.as_str() == Some(state.as_str())),
            ),
            ("put", Value::Str(value)) => Transition::To(KvValue::new(value)),
            ("append", Value::Str(tail)) => Transition::To(state.appended(tail)),
            _ => Transition::Impossible,
        }
    }

    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        partition_by_key(ops)
    }

    fn validate(&self, op: &Operation) -> Result<(), String> {
        expect_f(op, &["get", "put", "append"], self.name())?;
        if op.key.is_none() {
            return Err(format!("{} needs a key", op.f));
        }
        match op.f.as_str() {
            "get" => match &op.output {
                Some(v) if v.as_str().is_none() => {
                    Err(format!("get must return a string; got {v}"))
                }
                _ => Ok(()),
            },
            _ if op.input.as_str().is_none() => {
                Err(format!("{} input must be a string; got {}", op.f, op.input))
            }
            _ => Ok(()),
        }
    }

    fn is_read_only(&self, op: &Operation) -> bool {
        op.f == "get"
    }

    fn describe_state(&self, state: &KvValue) -> String {
        format!("{:?}", state.text)
    }

    fn state_heap_bytes(&self, state: &KvValue) -> usize {
        state.text.capacity()
    }
}

/// A grow-only set, empty at first.
///
/// `add` (input: the element), `read` (output: every element, in any order). Partitions by key.
/// The state is the elements, sorted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Set;

impl Model for Set {
    type State = Vec<Value>;

    fn name(&self) -> &'static str {
        "set"
    }

    fn init(&self) -> Vec<Value> {
        Vec::new()
    }

    fn step(&self, state: &Vec<Value>, op: &Operation) -> Option<Vec<Value>> {
        self.transition(state, op).into_step(state)
    }

    fn transition(&self, state: &Vec<Value>, op: &Operation) -> Transition<Vec<Value>> {
        match op.f.as_str() {
            "add" => match state.binary_search(&op.input) {
                Ok(_) => Transition::Unchanged,
                Err(at) => {
                    let mut next = Vec::with_capacity(state.len() + 1);
                    next.extend_from_slice(&state[..at]);
                    next.push(op.input.clone());
                    next.extend_from_slice(&state[at..]);
                    Transition::To(next)
                }
            },
            "read" => match op.output.as_ref().map(|v| v.as_list()) {
                None => Transition::Unchanged,
                Some(Some(seen)) => Transition::when(same_elements(seen, state)),
                Some(None) => Transition::Impossible,
            },
            _ => Transition::Impossible,
        }
    }

    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        partition_by_key(ops)
    }

    fn validate(&self, op: &Operation) -> Result<(), String> {
        expect_f(op, &["add", "read"], self.name())?;
        match &op.output {
            Some(v) if op.f == "read" && v.as_list().is_none() => {
                Err(format!("set read must return a list; got {v}"))
            }
            _ => Ok(()),
        }
    }

    fn is_read_only(&self, op: &Operation) -> bool {
        op.f == "read"
    }

    fn describe_state(&self, state: &Vec<Value>) -> String {
        Value::List(state.clone()).to_string()
    }

    fn state_heap_bytes(&self, state: &Vec<Value>) -> usize {
        state.capacity() * std::mem::size_of::<Value>()
    }
}

/// Whether `seen` (any order, maybe with duplicates) holds exactly the elements of `sorted`.
fn same_elements(seen: &[Value], sorted: &[Value]) -> bool {
    if seen.windows(2).all(|w| w[0] < w[1]) {
        // The common case (sets written sorted) needs no allocation.
        return seen == sorted;
    }
    let mut copy = seen.to_vec();
    copy.sort();
    copy.dedup();
    copy == sorted
}

/// A counter, 0 at first.
///
/// `add` (input: an integer, may be negative), `read` (output: the count). Partitions by key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter;

impl Model for Counter {
    type State = i64;

    fn name(&self) -> &'static str {
        "counter"
    }

    fn init(&self) -> i64 {
        0
    }

    fn step(&self, state: &i64, op: &Operation) -> Option<i64> {
        self.transition(state, op).into_step(state)
    }

    fn transition(&self, state: &i64, op: &Operation) -> Transition<i64> {
        match op.f.as_str() {
            "add" => match op.input.as_int().and_then(|n| state.checked_add(n)) {
                Some(next) => Transition::To(next),
                None => Transition::Impossible,
            },
            "read" => Transition::when(
                op.output
                    .as_ref()
                    .is_none_or(|seen| seen.as_int() == Some(*state)),
            ),
            _ => Transition::Impossible,
        }
    }

    fn partition(&self, ops: &[Operation]) -> Vec<Vec<usize>> {
        partition_by_key(ops)
    }

    fn validate(&self, op: &Operation) -> Result<(), String> {
        expect_f(op, &["add", "read"], self.name())?;
        if op.f == "add" && op.input.as_int().is_none() {
            return Err(format!("add input must be an integer; got {}", op.input));
        }
        match &op.output {
            Some(v) if op.f == "read" && v.as_int().is_none() => {
                Err(format!("counter read must return an integer; got {v}"))
            }
            _ => Ok(()),
        }
    }

    fn is_read_only(&self, op: &Operation) -> bool {
        op.f == "read"
    }

    fn describe_state(&self, state: &i64) -> String {
        state.to_string()
    }
}

/// The names of the built-in models, as [`crate::check_file`] accepts them.
pub const MODEL_NAMES: [&str; 5] = ["register", "cas-register", "kv", "set", "counter"];

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, input: Value, output: Option<Value>, outcome: Outcome) -> Operation {
        Operation {
            id: 0,
            process: 0,
            f: f.into(),
            key: Some("k".into()),
            input,
            output,
            outcome,
            invoke_time: 0,
            complete_time: Some(1),
            line: None,
            not_applied: false,
        }
    }

    fn cas(from: i64, to: i64, outcome: Outcome) -> Operation {
        let out = (outcome != Outcome::Unknown).then_some(Value::Nil);
        op(
            "cas",
            Value::List(vec![Value::Int(from), Value::Int(to)]),
            out,
            outcome,
        )
    }

    #[test]
    fn a_read_of_siblings_is_satisfied_by_any_one_of_them() {
        let siblings = Value::List(vec![Value::Int(1), Value::Int(2)]);
        let read = op("read", Value::Nil, Some(siblings), Outcome::Ok);
        for state in [Value::Int(1), Value::Int(2)] {
            assert!(matches!(
                register_transition(&state, &read),
                Transition::Unchanged
            ));
        }
        assert!(matches!(
            register_transition(&Value::Int(3), &read),
            Transition::Impossible
        ));
    }

    #[test]
    fn cas_steps_by_outcome() {
        let m = CasRegister::default();
        let one = Value::Int(1);
        assert_eq!(m.step(&one, &cas(1, 2, Outcome::Ok)), Some(Value::Int(2)));
        assert_eq!(m.step(&one, &cas(3, 2, Outcome::Ok)), None);
        assert_eq!(m.step(&one, &cas(1, 2, Outcome::Fail)), None);
        assert_eq!(m.step(&one, &cas(3, 2, Outcome::Fail)), Some(one.clone()));
        assert_eq!(
            m.step(&one, &cas(3, 2, Outcome::Unknown)),
            Some(one.clone())
        );
        assert!(m.include(&cas(3, 2, Outcome::Fail)));
        let saw = |seen: i64| Operation {
            output: Some(Value::List(vec![
                Value::Int(3),
                Value::Int(2),
                Value::Int(seen),
            ])),
            ..cas(3, 2, Outcome::Fail)
        };
        assert_eq!(m.step(&one, &saw(1)), Some(one.clone()));
        assert_eq!(m.step(&one, &saw(4)), None);
        assert!(!CasRegister::new(CasFail::DidNotHappen).include(&cas(3, 2, Outcome::Fail)));
    }

    #[test]
    fn kv_appends_and_reads() {
        let m = Kv;
        let s = m
            .step(
                &m.init(),
                &op(
                    "append",
                    Value::Str("ab".into()),
                    Some(Value::Nil),
                    Outcome::Ok,
                ),
            )
            .unwrap();
        assert_eq!(s.as_str(), "ab");
        assert_eq!(s, KvValue::new("ab"));
        let get = |v: &str| op("get", Value::Nil, Some(Value::Str(v.into())), Outcome::Ok);
        assert!(m.step(&s, &get("ab")).is_some());
        assert!(m.step(&s, &get("a")).is_none());
        assert!(!m.include(&op("get", Value::Nil, None, Outcome::Unknown)));
        assert!(
            m.validate(&op("cas", Value::Nil, None, Outcome::Unknown))
                .is_err()
        );
    }

    #[test]
    fn set_reads_in_any_order() {
        let m = Set;
        let state = vec![Value::Int(1), Value::Int(2)];
        let read = |items: Vec<i64>| {
            let items = items.into_iter().map(Value::Int).collect();
            op("read", Value::Nil, Some(Value::List(items)), Outcome::Ok)
        };
        assert!(m.step(&state, &read(vec![2, 1])).is_some());
        assert!(m.step(&state, &read(vec![1, 2])).is_some());
        assert!(m.step(&state, &read(vec![1])).is_none());
    }

    #[test]
    fn counter_overflow_is_impossible_not_a_panic() {
        let add = op("add", Value::Int(1), Some(Value::Nil), Outcome::Ok);
        assert_eq!(Counter.step(&i64::MAX, &add), None);
    }
}
