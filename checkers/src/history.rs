//! Histories: the events a test recorded, and the operations built from them.
//!
//! A test records *events*: a client process invokes an operation, and later the same process
//! completes it with `ok` (it happened, with this output), `fail` (it certainly did not happen) or
//! `info` (the client does not know, e.g. a timeout). Checkers work on *operations*, one per
//! invocation, made by pairing each invocation with the next completion of the same process
//! ([`History::from_events`]).
//!
//! An `info` completion and an invocation that never completes both give [`Outcome::Unknown`]:
//! the operation may take effect at any point after its invocation, or never (Jepsen's `:info`).
//! Treating such operations as failed would call histories invalid that a correct system can
//! produce, so checkers never do.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::error::Error;

/// A value in a history: what operations take as input and return as output.
///
/// Deliberately small: enough for registers, maps, sets, counters and lists, with a total order
/// and hashing so that model states built from values can be cached by the checker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// No value (a read of a never-written register, an invocation without input).
    #[default]
    Nil,
    /// A signed integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A list, also used for tuples such as a `cas`'s `[from, to]` and for sets read back.
    List(Vec<Value>),
}

impl Value {
    /// The string inside `Str`, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside `Int`, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a `List`, if it is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    /// EDN-like text, short enough for reports: `nil`, `3`, `"x"`, `[1 2]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The kind of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The process starts an operation.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation completed and certainly did not take effect.
    Fail,
    /// The outcome is unknown (a timeout, a crash): it may take effect later, or never.
    Info,
}

impl EventType {
    /// The name used in history files.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }

    /// Parses a history file's name for the type; `None` if it is not one of the four.
    pub fn from_name(name: &str) -> Option<EventType> {
        match name {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }
}

/// Who produced an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProcessId {
    /// A client process, numbered.
    Client(u64),
    /// The fault injector; its events are kept but never checked.
    Nemesis,
}

/// One line of a history file, as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// 1-based line in the file the event came from (0 if not from a file).
    pub line: usize,
    /// The event's `index` field, if the file has one.
    pub index: Option<u64>,
    /// invoke, ok, fail or info.
    pub kind: EventType,
    /// The process that produced it.
    pub process: ProcessId,
    /// Nanoseconds since the start of the run, if recorded.
    pub time: Option<u64>,
    /// The operation's function: `read`, `write`, `cas`, `get`, `put`, `append`, `add`, ...
    pub f: String,
    /// The key the operation acts on, for keyed workloads.
    pub key: Option<String>,
    /// Input on invocations, output on completions.
    pub value: Value,
    /// On a `fail` completion: the operation definitely did not take effect for a
    /// reason other than its own semantics (the node refused it before applying it).
    /// A `cas` failed this way is not read as "the compare did not match". Faultline's
    /// histories say so with `"not_applied": true`.
    pub not_applied: bool,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Completed with `ok`: it took effect, with the recorded output.
    Ok,
    /// Completed with `fail`: by default it did not take effect (see the models for `cas`).
    Fail,
    /// Completed with `info` or never completed: it may take effect at any point after its
    /// invocation, or never.
    Unknown,
}

/// One operation: an invocation and its completion, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Position in [`History::operations`] (operations are ordered by invocation).
    pub id: usize,
    /// The client process that ran it.
    pub process: u64,
    /// The operation's function.
    pub f: String,
    /// The key it acts on, for keyed workloads.
    pub key: Option<String>,
    /// The invocation's value.
    pub input: Value,
    /// The completion's value; `None` when the outcome is unknown.
    pub output: Option<Value>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was invoked (ns, or the event's position when the file has no times).
    pub invoke_time: u64,
    /// When it completed; `None` if it never did. An `info` completion has a time but the
    /// operation may still take effect after it.
    pub complete_time: Option<u64>,
    /// The invocation's line in the history file, for messages (`None` if built by hand).
    pub line: Option<usize>,
    /// Failed, and the history says it definitely did not take effect (see
    /// [`Event::not_applied`]).
    pub not_applied: bool,
}

/// A history: client operations to check, and nemesis events kept for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Client operations, ordered by invocation; `operations[i].id == i`.
    pub operations: Vec<Operation>,
    /// Nemesis events, in file order, never checked.
    pub nemesis: Vec<Event>,
}

impl History {
    /// Pairs invocations with completions, process by process.
    ///
    /// Events are taken in the order given (the file's order), which is the order they happened
    /// in. If every client event has a `time`, operations use those times; otherwise they use
    /// the event's position, which preserves real-time order exactly.
    ///
    /// Errors: a process that invokes while it has an operation in flight, a completion with no
    /// invocation, a completion whose `f` or `key` differs from its invocation, or times that go
    /// backwards for one process. Each names the line.
    pub fn from_events(events: Vec<Event>) -> Result<History, Error> {
        let all_timed = events
            .iter()
            .filter(|e| e.process != ProcessId::Nemesis)
            .all(|e| e.time.is_some());
        let mut operations: Vec<Operation> = Vec::new();
        let mut nemesis = Vec::new();
        // process -> index of its in-flight operation
        let mut in_flight: HashMap<u64, usize> = HashMap::new();
        for (position, event) in events.into_iter().enumerate() {
            let process = match event.process {
                ProcessId::Nemesis => {
                    nemesis.push(event);
                    continue;
                }
                ProcessId::Client(p) => p,
            };
            let time = match (all_timed, event.time) {
                (true, Some(t)) => t,
                _ => position as u64,
            };
            if event.kind == EventType::Invoke {
                if let Some(&open) = in_flight.get(&process) {
                    let open_line = operations[open].line.unwrap_or(0);
                    return Err(Error::History {
                        line: event.line,
                        message: format!(
                            "process {process} invokes {:?} while its {:?} invoked at line \
                             {open_line} has not completed; a process runs one operation at a \
                             time (after an `info` completion, use a new process number)",
                            event.f, operations[open].f
                        ),
                    });
                }
                let id = operations.len();
                in_flight.insert(process, id);
                operations.push(Operation {
                    id,
                    process,
                    f: event.f,
                    key: event.key,
                    input: event.value,
                    output: None,
                    outcome: Outcome::Unknown,
                    invoke_time: time,
                    complete_time: None,
                    line: Some(event.line),
                    not_applied: false,
                });
                continue;
            }
            let Some(open) = in_flight.remove(&process) else {
                return Err(Error::History {
                    line: event.line,
                    message: format!(
                        "process {process} completes {:?} with {} but has no operation in flight",
                        event.f,
                        event.kind.name()
                    ),
                });
            };
            let op = &mut operations[open];
            if op.f != event.f || (event.key.is_some() && op.key != event.key) {
                return Err(Error::History {
                    line: event.line,
                    message: format!(
                        "completion f={:?} key={:?} does not match the invocation at line {} \
                         (f={:?} key={:?})",
                        event.f,
                        event.key,
                        op.line.unwrap_or(0),
                        op.f,
                        op.key
                    ),
                });
            }
            if time < op.invoke_time {
                return Err(Error::History {
                    line: event.line,
                    message: format!(
                        "completion time {time} is before its invocation's time {} (line {})",
                        op.invoke_time,
                        op.line.unwrap_or(0)
                    ),
                });
            }
            op.complete_time = Some(time);
            op.not_applied = event.kind == EventType::Fail && event.not_applied;
            match event.kind {
                EventType::Ok => {
                    op.outcome = Outcome::Ok;
                    op.output = Some(event.value);
                }
                EventType::Fail => {
                    op.outcome = Outcome::Fail;
                    op.output = Some(event.value);
                }
                EventType::Info => op.outcome = Outcome::Unknown,
                EventType::Invoke => unreachable!("invocations handled above"),
            }
        }
        // Times may be out of file order across processes; checkers want invocation order.
        if all_timed {
            operations.sort_by_key(|op| (op.invoke_time, op.id));
            for (id, op) in operations.iter_mut().enumerate() {
                op.id = id;
            }
        }
        let history = History {
            operations,
            nemesis,
        };
        history.validate();
        Ok(history)
    }

    /// Asserts the structural invariants every constructor must establish.
    pub fn validate(&self) {
        for (i, op) in self.operations.iter().enumerate() {
            assert_eq!(op.id, i, "operation ids are positions");
            if let Some(t) = op.complete_time {
                assert!(
                    t >= op.invoke_time,
                    "operation {i} completes before invocation"
                );
            }
            assert_eq!(
                op.output.is_some(),
                op.outcome != Outcome::Unknown,
                "operation {i}: output present exactly when the outcome is known"
            );
        }
    }

    /// Events for this history in time order (invocations, completions, nemesis), as a writer
    /// needs them. Completions of unknown-outcome operations that completed are written as
    /// `info`; operations that never completed get no completion.
    pub fn to_events(&self) -> Vec<Event> {
        let mut timed: Vec<(u64, u8, usize, Event)> = Vec::new();
        for op in &self.operations {
            let base = Event {
                line: 0,
                index: None,
                kind: EventType::Invoke,
                process: ProcessId::Client(op.process),
                time: Some(op.invoke_time),
                f: op.f.clone(),
                key: op.key.clone(),
                value: op.input.clone(),
                not_applied: false,
            };
            if let Some(t) = op.complete_time {
                let (kind, value) = match op.outcome {
                    Outcome::Ok => (EventType::Ok, op.output.clone().unwrap_or_default()),
                    Outcome::Fail => (EventType::Fail, op.output.clone().unwrap_or_default()),
                    Outcome::Unknown => (EventType::Info, op.input.clone()),
                };
                let done = Event {
                    kind,
                    time: Some(t),
                    value,
                    not_applied: op.not_applied,
                    ..base.clone()
                };
                // At equal times invocations go first: they were concurrent.
                timed.push((t, 1, op.id, done));
            }
            timed.push((op.invoke_time, 0, op.id, base));
        }
        timed.sort_by_key(|(t, order, id, _)| (*t, *order, *id));
        let mut events: Vec<Event> = timed.into_iter().map(|(.., e)| e).collect();
        // Nemesis events keep their place by time when they have one, else go first.
        for n in &self.nemesis {
            let at = n
                .time
                .map(|t| events.partition_point(|e| e.time.unwrap_or(0) <= t))
                .unwrap_or(0);
            events.insert(at, n.clone());
        }
        for (i, e) in events.iter_mut().enumerate() {
            e.index = Some(i as u64);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: usize, kind: EventType, process: u64, f: &str, value: Value) -> Event {
        Event {
            line,
            index: None,
            kind,
            process: ProcessId::Client(process),
            time: None,
            f: f.to_string(),
            key: None,
            value,
            not_applied: false,
        }
    }

    #[test]
    fn pairs_per_process_and_keeps_unknowns() {
        let events = vec![
            event(1, EventType::Invoke, 0, "write", Value::Int(1)),
            event(2, EventType::Invoke, 1, "read", Value::Nil),
            event(3, EventType::Ok, 1, "read", Value::Int(1)),
            event(4, EventType::Info, 0, "write", Value::Int(1)),
            event(5, EventType::Invoke, 2, "read", Value::Nil),
        ];
        let h = History::from_events(events).unwrap();
        assert_eq!(h.operations.len(), 3);
        assert_eq!(h.operations[0].outcome, Outcome::Unknown);
        assert_eq!(h.operations[0].complete_time, Some(3));
        assert_eq!(h.operations[1].output, Some(Value::Int(1)));
        assert_eq!(h.operations[2].complete_time, None);
    }

    #[test]
    fn double_invoke_names_the_line() {
        let events = vec![
            event(1, EventType::Invoke, 0, "write", Value::Int(1)),
            event(2, EventType::Invoke, 0, "read", Value::Nil),
        ];
        let err = History::from_events(events).unwrap_err().to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn completion_without_invocation_is_an_error() {
        let events = vec![event(7, EventType::Ok, 0, "write", Value::Int(1))];
        let err = History::from_events(events).unwrap_err().to_string();
        assert!(err.starts_with("line 7:"), "{err}");
    }
}
