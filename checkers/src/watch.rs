//! The watch checker: every watcher's event stream, resumed streams included, against
//! the history of what was committed.
//!
//! What was committed, change by change, is not in the writers' operations (a write
//! says neither its revision nor whether another write came between), so it is taken
//! from the final watches: after the run has healed and writes have stopped, each node
//! is watched from revision 1, which replays the store's versions (only committed
//! entries ever reach a store). That reference is checked against the writes (every
//! change must be a write that did not fail; every acknowledged write must be there),
//! and then every watcher's segments against the reference, as etcd's robustness tests
//! validate watches:
//!
//! - **phantom**: a delivered event that the reference does not have at its partition,
//!   revision and key (an uncommitted or invented change), or has with another value;
//! - **missed**: a change of the reference inside a range of revisions that a segment
//!   was told it had been given in full (its progress), but not delivered;
//! - **duplicated** / **reordered**: along one watcher's segments, a partition's events
//!   must have strictly increasing (revision, key);
//! - **wrong-prev**: an event whose previous value is not the reference's;
//! - **lost-write**: an acknowledged write that no final watch shows (not judged once
//!   compaction dropped history);
//! - **never-written**: a change in the reference that no write that could have taken
//!   effect made.
//!
//! History form (the `watch` workload): `write` (key, integer value); `watch` segments and
//! final `watch-all`s whose completion value is `[events, coverage, compactions]`:
//! events `[partition, revision, key, value|nil, prev|nil]`, coverage `[partition, from,
//! to]` (revisions from..=to were delivered in full), compactions `[partition, revision]`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::history::{History, Operation, Outcome, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchError {
    /// phantom, missed, duplicated, reordered, wrong-prev, lost-write, never-written.
    pub kind: &'static str,
    /// The operations involved (ids).
    pub ops: Vec<usize>,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchVerdict {
    pub valid: bool,
    pub writes_acknowledged: usize,
    /// Watch segments checked, and how many resumed a stream (started past revision 1
    /// in some partition after an earlier segment of the same watcher).
    pub segments: usize,
    pub resumed_segments: usize,
    /// Events delivered to the watchers, and changes in the reference.
    pub events: usize,
    pub reference_changes: usize,
    /// Set when there is no reference (no final watch completed).
    pub no_reference: bool,
    pub errors: Vec<WatchError>,
}

/// (partition, revision, key).
type At = (u64, u64, String);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    at: At,
    value: Option<i64>,
    prev: Option<i64>,
}

struct Segment<'a> {
    op: &'a Operation,
    events: Vec<Event>,
    /// partition -> (from, to).
    coverage: BTreeMap<u64, (u64, u64)>,
    compacted: BTreeMap<u64, u64>,
}

fn int_or_nil(value: &Value) -> Option<Option<i64>> {
    match value {
        Value::Nil => Some(None),
        other => other.as_int().map(Some),
    }
}

fn parse(op: &Operation) -> Option<Segment<'_>> {
    let [events, coverage, compacted] = op.output.as_ref()?.as_list()? else {
        return None;
    };
    let mut segment = Segment {
        op,
        events: Vec::new(),
        coverage: BTreeMap::new(),
        compacted: BTreeMap::new(),
    };
    for event in events.as_list()? {
        let [partition, revision, key, value, prev] = event.as_list()? else {
            return None;
        };
        segment.events.push(Event {
            at: (
                partition.as_int()? as u64,
                revision.as_int()? as u64,
                key.as_str()?.to_string(),
            ),
            value: int_or_nil(value)?,
            prev: int_or_nil(prev)?,
        });
    }
    for cover in coverage.as_list()? {
        let [partition, from, to] = cover.as_list()? else {
            return None;
        };
        segment.coverage.insert(
            partition.as_int()? as u64,
            (from.as_int()? as u64, to.as_int()? as u64),
        );
    }
    for compaction in compacted.as_list()? {
        let [partition, revision] = compaction.as_list()? else {
            return None;
        };
        segment
            .compacted
            .insert(partition.as_int()? as u64, revision.as_int()? as u64);
    }
    // A segment that hit a compaction was given nothing at or below it, whatever its
    // coverage says (the harness once counted a compacted final watch from revision 1).
    for (partition, &revision) in &segment.compacted {
        if let Some(range) = segment.coverage.get_mut(partition) {
            range.0 = range.0.max(revision + 1);
        }
    }
    Some(segment)
}

/// What became of the write of a phantom event's value.
fn write_note(write: Option<&Operation>) -> &'static str {
    match write.map(|w| w.outcome) {
        Some(Outcome::Fail) => " (its write failed)",
        Some(Outcome::Unknown) => " (its write's outcome is unknown)",
        Some(Outcome::Ok) => " (its write was acknowledged: elsewhere)",
        None => " (no write wrote it)",
    }
}

fn show(value: Option<i64>) -> String {
    value.map_or("nothing (a delete)".to_string(), |v| v.to_string())
}

/// Checks a watch workload's history.
pub fn check_watch(history: &History) -> WatchVerdict {
    let mut verdict = WatchVerdict::default();
    let mut segments = Vec::new();
    let mut finals = Vec::new();
    // value -> (write op, outcome), and the acknowledged ones.
    let mut writes: HashMap<i64, &Operation> = HashMap::new();
    for op in &history.operations {
        match (op.f.as_str(), op.outcome) {
            ("write", _) => {
                if let Some(value) = op.input.as_int() {
                    writes.insert(value, op);
                }
                if op.outcome == Outcome::Ok {
                    verdict.writes_acknowledged += 1;
                }
            }
            ("watch", Outcome::Ok) => segments.extend(parse(op)),
            ("watch-all", Outcome::Ok) => finals.extend(parse(op)),
            _ => {}
        }
    }
    verdict.segments = segments.len();
    verdict.events = segments.iter().map(|s| s.events.len()).sum();

    // The reference: the final watches' changes, and how far each partition is known.
    let mut reference: BTreeMap<At, Event> = BTreeMap::new();
    let mut known_to: BTreeMap<u64, u64> = BTreeMap::new();
    // The revisions each final watch gave in full: past a compaction a final watch starts
    // at the compaction point, and what lay below it is not known to be missing.
    let mut covered: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    let mut compacted_any = false;
    for segment in &finals {
        compacted_any |= !segment.compacted.is_empty();
        for (&partition, &(from, to)) in &segment.coverage {
            let known = known_to.entry(partition).or_insert(0);
            *known = (*known).max(to);
            covered.entry(partition).or_default().push((from, to));
        }
        for event in &segment.events {
            match reference.get(&event.at) {
                Some(other) if other != event => verdict.errors.push(WatchError {
                    kind: "phantom",
                    ops: vec![segment.op.id],
                    message: format!(
                        "the final watches disagree on partition {} revision {} key {}: {} and {}",
                        event.at.0,
                        event.at.1,
                        event.at.2,
                        show(event.value),
                        show(other.value)
                    ),
                }),
                Some(_) => {}
                None => {
                    reference.insert(event.at.clone(), event.clone());
                }
            }
        }
    }
    verdict.reference_changes = reference.len();
    if finals.is_empty() {
        verdict.no_reference = true;
    }

    // The reference against the writes.
    let mut in_reference: BTreeSet<i64> = BTreeSet::new();
    for event in reference.values() {
        let Some(value) = event.value else { continue };
        in_reference.insert(value);
        match writes.get(&value) {
            Some(op) if op.outcome != Outcome::Fail && op.key.as_deref() == Some(&event.at.2) => {}
            Some(op) => verdict.errors.push(WatchError {
                kind: "never-written",
                ops: vec![op.id],
                message: format!(
                    "the store holds value {value} at key {} (partition {} revision {}), but \
                     the write of it was to {:?} and {}",
                    event.at.2,
                    event.at.0,
                    event.at.1,
                    op.key,
                    if op.outcome == Outcome::Fail {
                        "definitely failed"
                    } else {
                        "may have happened"
                    }
                ),
            }),
            None => verdict.errors.push(WatchError {
                kind: "never-written",
                ops: Vec::new(),
                message: format!(
                    "the store holds value {value} at key {} (partition {} revision {}), which \
                     no write wrote",
                    event.at.2, event.at.0, event.at.1
                ),
            }),
        }
    }
    if !finals.is_empty() && !compacted_any {
        for (value, op) in &writes {
            if op.outcome == Outcome::Ok && !in_reference.contains(value) {
                verdict.errors.push(WatchError {
                    kind: "lost-write",
                    ops: vec![op.id],
                    message: format!(
                        "the acknowledged write of {value} to {:?} is in no final watch",
                        op.key
                    ),
                });
            }
        }
    }

    // Each watcher's segments, in the order it ran them, against the reference.
    let mut by_process: BTreeMap<u64, Vec<&Segment>> = BTreeMap::new();
    for segment in &segments {
        by_process
            .entry(segment.op.process)
            .or_default()
            .push(segment);
    }
    for chain in by_process.values() {
        let mut last: BTreeMap<u64, (u64, String, usize)> = BTreeMap::new();
        for (position, segment) in chain.iter().enumerate() {
            if position > 0 && segment.coverage.values().any(|&(from, _)| from > 1) {
                verdict.resumed_segments += 1;
            }
            for event in &segment.events {
                let (partition, revision, key) = &event.at;
                if let Some((before_rev, before_key, before_op)) = last.get(partition) {
                    let order = (*revision, key).cmp(&(*before_rev, before_key));
                    if order != std::cmp::Ordering::Greater {
                        verdict.errors.push(WatchError {
                            kind: if order == std::cmp::Ordering::Equal {
                                "duplicated"
                            } else {
                                "reordered"
                            },
                            ops: vec![*before_op, segment.op.id],
                            message: format!(
                                "process {} got partition {partition} revision {revision} key \
                                 {key} after revision {before_rev} key {before_key}",
                                segment.op.process
                            ),
                        });
                    }
                }
                last.insert(*partition, (*revision, key.clone(), segment.op.id));
                if verdict.no_reference {
                    continue;
                }
                let known = covered
                    .get(partition)
                    .is_some_and(|ranges| ranges.iter().any(|&(f, t)| (f..=t).contains(revision)));
                match reference.get(&event.at) {
                    Some(truth) if truth.value != event.value => {
                        let write = event.value.and_then(|v| writes.get(&v));
                        verdict.errors.push(WatchError {
                            kind: "phantom",
                            ops: std::iter::once(segment.op.id)
                                .chain(write.map(|w| w.id))
                                .collect(),
                            message: format!(
                                "process {} was sent {} at partition {partition} revision \
                                 {revision} key {key}, but {} was committed there{}",
                                segment.op.process,
                                show(event.value),
                                show(truth.value),
                                write_note(write.copied())
                            ),
                        });
                    }
                    Some(truth) if truth.prev != event.prev => verdict.errors.push(WatchError {
                        kind: "wrong-prev",
                        ops: vec![segment.op.id],
                        message: format!(
                            "process {} was sent partition {partition} revision {revision} key \
                             {key} with previous value {}, but it was {}",
                            segment.op.process,
                            show(event.prev),
                            show(truth.prev)
                        ),
                    }),
                    Some(_) => {}
                    None if known => {
                        let write = event.value.and_then(|v| writes.get(&v));
                        verdict.errors.push(WatchError {
                            kind: "phantom",
                            ops: std::iter::once(segment.op.id)
                                .chain(write.map(|w| w.id))
                                .collect(),
                            message: format!(
                                "process {} was sent {} at partition {partition} revision \
                                 {revision} key {key}, which was never committed there{}",
                                segment.op.process,
                                show(event.value),
                                write_note(write.copied())
                            ),
                        });
                    }
                    None => {}
                }
            }
            if verdict.no_reference {
                continue;
            }
            let delivered: BTreeSet<&At> = segment.events.iter().map(|e| &e.at).collect();
            for (&partition, &(from, to)) in &segment.coverage {
                let to = to.min(known_to.get(&partition).copied().unwrap_or(0));
                if from > to {
                    continue;
                }
                let start = (partition, from, String::new());
                let end = (partition, to, "\u{10ffff}".to_string());
                for at in reference.range(start..=end).map(|(at, _)| at) {
                    if !delivered.contains(at) {
                        verdict.errors.push(WatchError {
                            kind: "missed",
                            ops: vec![segment.op.id],
                            message: format!(
                                "process {} was told revisions {from}..={} of partition \
                                 {partition} were delivered in full, but not revision {} key {}",
                                segment.op.process, to, at.1, at.2
                            ),
                        });
                    }
                }
            }
        }
    }
    verdict.valid = verdict.errors.is_empty();
    verdict
}

/// The verdict as text, the first problems of each kind first.
pub fn text(verdict: &WatchVerdict) -> String {
    let mut out = format!(
        "watch: {} ({} segments, {} resumed; {} events delivered; {} changes in the reference; \
         {} writes acknowledged)\n",
        if verdict.valid { "valid" } else { "INVALID" },
        verdict.segments,
        verdict.resumed_segments,
        verdict.events,
        verdict.reference_changes,
        verdict.writes_acknowledged
    );
    let mut by_kind: BTreeMap<&str, Vec<&WatchError>> = BTreeMap::new();
    for error in &verdict.errors {
        by_kind.entry(error.kind).or_default().push(error);
    }
    for (kind, errors) in by_kind {
        out.push_str(&format!("  {kind}: {}\n", errors.len()));
        for error in errors.iter().take(5) {
            out.push_str(&format!("    {} (ops {:?})\n", error.message, error.ops));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event as HistoryEvent, EventType, ProcessId};

    fn list(items: Vec<Value>) -> Value {
        Value::List(items)
    }

    fn event(p: i64, rev: i64, key: &str, value: Option<i64>, prev: Option<i64>) -> Value {
        let v = |x: Option<i64>| x.map_or(Value::Nil, Value::Int);
        list(vec![
            Value::Int(p),
            Value::Int(rev),
            Value::Str(key.to_string()),
            v(value),
            v(prev),
        ])
    }

    fn segment(events: Vec<Value>, coverage: Vec<(i64, i64, i64)>) -> Value {
        list(vec![
            list(events),
            list(
                coverage
                    .into_iter()
                    .map(|(p, f, t)| list(vec![Value::Int(p), Value::Int(f), Value::Int(t)]))
                    .collect(),
            ),
            list(Vec::new()),
        ])
    }

    /// A history: writes of 1 and 2 to k (ok), 3 to k (failed); a watcher's two segments;
    /// one final watch.
    fn history(first: Value, second: Value, reference: Value) -> History {
        let mut events = Vec::new();
        let mut add = |process: u64, f: &str, key: Option<&str>, input: Value, kind, output| {
            let base = HistoryEvent {
                line: 0,
                index: None,
                kind: EventType::Invoke,
                process: ProcessId::Client(process),
                time: None,
                f: f.to_string(),
                key: key.map(str::to_string),
                value: input,
                not_applied: false,
            };
            events.push(base.clone());
            events.push(HistoryEvent {
                kind,
                value: output,
                ..base
            });
        };
        for (value, kind) in [(1, EventType::Ok), (2, EventType::Ok), (3, EventType::Fail)] {
            add(
                1,
                "write",
                Some("k"),
                Value::Int(value),
                kind,
                Value::Int(value),
            );
        }
        add(0, "watch", None, Value::Nil, EventType::Ok, first);
        add(0, "watch", None, Value::Nil, EventType::Ok, second);
        add(9, "watch-all", None, Value::Nil, EventType::Ok, reference);
        History::from_events(events).expect("a history")
    }

    fn reference() -> Value {
        segment(
            vec![
                event(1, 2, "k", Some(1), None),
                event(1, 3, "k", Some(2), Some(1)),
            ],
            vec![(1, 1, 3)],
        )
    }

    #[test]
    fn below_a_final_watchs_compaction_nothing_is_judged_whatever_its_coverage_says() {
        // The final watch hit a compaction at revision 2 and gave only revision 3, but
        // its coverage claims 1..=3 (as the harness once recorded): the watcher's event
        // at revision 2 is not a phantom, and one at 3 that differs still is.
        let mut compacted = segment(vec![event(1, 3, "k", Some(2), Some(1))], vec![(1, 1, 3)]);
        if let Value::List(parts) = &mut compacted {
            parts[2] = list(vec![list(vec![Value::Int(1), Value::Int(2)])]);
        }
        let verdict = check_watch(&history(
            segment(vec![event(1, 2, "k", Some(1), None)], vec![(1, 1, 2)]),
            segment(vec![event(1, 3, "k", Some(2), Some(1))], vec![(1, 3, 3)]),
            compacted.clone(),
        ));
        assert!(verdict.valid, "{}", text(&verdict));
        let verdict = check_watch(&history(
            segment(vec![event(1, 2, "k", Some(1), None)], vec![(1, 1, 2)]),
            segment(vec![event(1, 3, "k", Some(1), Some(1))], vec![(1, 3, 3)]),
            compacted,
        ));
        let kinds: Vec<&str> = verdict.errors.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&"phantom"), "{}", text(&verdict));
    }

    #[test]
    fn a_stream_resumed_in_order_is_valid() {
        let verdict = check_watch(&history(
            segment(vec![event(1, 2, "k", Some(1), None)], vec![(1, 1, 2)]),
            segment(vec![event(1, 3, "k", Some(2), Some(1))], vec![(1, 3, 3)]),
            reference(),
        ));
        assert!(verdict.valid, "{}", text(&verdict));
        assert_eq!(verdict.resumed_segments, 1);
    }

    #[test]
    fn a_resume_that_skips_a_change_is_missed() {
        let verdict = check_watch(&history(
            segment(vec![], vec![(1, 1, 1)]),
            segment(vec![event(1, 3, "k", Some(2), Some(1))], vec![(1, 2, 3)]),
            reference(),
        ));
        assert_eq!(verdict.errors.len(), 1, "{}", text(&verdict));
        assert_eq!(verdict.errors[0].kind, "missed");
    }

    #[test]
    fn an_uncommitted_change_is_a_phantom_and_a_repeat_is_duplicated() {
        let verdict = check_watch(&history(
            segment(
                vec![
                    event(1, 2, "k", Some(1), None),
                    event(1, 3, "k", Some(3), Some(1)),
                ],
                vec![(1, 1, 3)],
            ),
            segment(vec![event(1, 3, "k", Some(2), Some(1))], vec![(1, 3, 3)]),
            reference(),
        ));
        let kinds: Vec<&str> = verdict.errors.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&"phantom"), "{}", text(&verdict));
        assert!(kinds.contains(&"duplicated"), "{}", text(&verdict));
        assert!(
            text(&verdict).contains("its write failed"),
            "{}",
            text(&verdict)
        );
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_reference_is_lost() {
        let verdict = check_watch(&history(
            segment(vec![], vec![]),
            segment(vec![], vec![]),
            segment(vec![event(1, 2, "k", Some(1), None)], vec![(1, 1, 3)]),
        ));
        let kinds: Vec<&str> = verdict.errors.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["lost-write"], "{}", text(&verdict));
    }
}
