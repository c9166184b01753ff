//! The membership checker: observers' reads of the gossip view (`members` operations,
//! each completing with `[observer, [[member, state, incarnation], ...]]`) against the
//! nemesis's faults.
//!
//! - **Detection.** A node killed for longer than `detect_within` must be seen suspect or
//!   dead, from then until the kill ends, by every observer that answers.
//! - **No false deaths.** An observer may see a member dead only while a fault excuses
//!   it: a kill of either, a pause of either for at least `pause_excuse` (the shortest
//!   suspicion: a shorter pause is refuted in time), a partition with a link between them
//!   or involving either, each until `settle` after it ends (a restarted or reconnected
//!   member takes a round of gossip to be heard again). Under packet loss deaths and
//!   suspicions are counted, not judged: SWIM promises a rate there, not zero.
//! - **False suspicions** (a suspect no fault excuses) are counted: Lifeguard exists to
//!   keep them rare, and a suspicion refuted in time is the protocol working.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{History, Outcome, Value};

/// One fault window, with the nodes it hit (ids from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// "kill", "pause", "partition", "loss", ...
    pub kind: String,
    pub nodes: Vec<u64>,
    pub links: Vec<(u64, u64)>,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub detect_within_ns: u64,
    pub pause_excuse_ns: u64,
    pub settle_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub at_ns: u64,
    pub observer: u64,
    pub member: u64,
    pub state: String,
    pub incarnation: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub node: u64,
    pub killed_at_ns: u64,
    /// From the kill to the first observation of it as suspect (or dead), by anyone.
    pub suspected_after_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MembershipError {
    pub kind: &'static str,
    pub at_ns: u64,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MembershipVerdict {
    pub valid: bool,
    pub observations: usize,
    pub detections: Vec<Detection>,
    /// Kills long enough to be judged.
    pub kills_checked: usize,
    pub false_suspicions: usize,
    pub excused_deaths: usize,
    /// Suspect or dead views of members under packet loss (counted, not judged).
    pub under_loss: usize,
    pub errors: Vec<MembershipError>,
}

impl MembershipVerdict {
    pub fn first_anomaly_ns(&self) -> Option<u64> {
        self.errors.iter().map(|e| e.at_ns).min()
    }
}

/// The observations a history holds, in time order.
pub fn observations(history: &History) -> Vec<Observation> {
    let mut out = Vec::new();
    for op in &history.operations {
        if op.f != "members" || op.outcome != Outcome::Ok {
            continue;
        }
        let (Some(Value::List(parts)), Some(at)) = (&op.output, op.complete_time) else {
            continue;
        };
        let [Value::Int(observer), Value::List(members)] = parts.as_slice() else {
            continue;
        };
        for member in members {
            if let Value::List(fields) = member
                && let [Value::Int(id), Value::Str(state), Value::Int(incarnation)] =
                    fields.as_slice()
            {
                out.push(Observation {
                    at_ns: at,
                    observer: *observer as u64,
                    member: *id as u64,
                    state: state.clone(),
                    incarnation: *incarnation as u64,
                });
            }
        }
    }
    out.sort_by_key(|o| (o.at_ns, o.observer, o.member));
    out
}

fn involves(fault: &Fault, node: u64) -> bool {
    fault.nodes.contains(&node) || fault.links.iter().any(|&(a, b)| a == node || b == node)
}

/// Why a non-alive view of `member` at `observer` is allowed, if it is.
fn excuse<'a>(faults: &'a [Fault], o: &Observation, options: &Options) -> Option<&'a Fault> {
    faults.iter().find(|f| {
        let during = f.start_ns <= o.at_ns && o.at_ns <= f.end_ns + options.settle_ns;
        let hits = involves(f, o.member) || involves(f, o.observer);
        during
            && hits
            && match f.kind.as_str() {
                "kill" | "partition" => true,
                "pause" => f.end_ns - f.start_ns >= options.pause_excuse_ns,
                _ => false,
            }
    })
}

fn under_loss(faults: &[Fault], at_ns: u64, settle_ns: u64) -> bool {
    faults
        .iter()
        .any(|f| f.kind == "loss" && f.start_ns <= at_ns && at_ns <= f.end_ns + settle_ns)
}

pub fn check_membership(
    history: &History,
    faults: &[Fault],
    options: &Options,
) -> MembershipVerdict {
    let seen = observations(history);
    let mut verdict = MembershipVerdict {
        observations: seen.len(),
        ..Default::default()
    };
    // Each (observer, member)'s false death is reported once per fault-free stretch.
    let mut reported: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for o in &seen {
        if o.state == "alive" || o.state == "left" || o.observer == o.member {
            continue;
        }
        if excuse(faults, o, options).is_some() {
            if o.state == "dead" {
                verdict.excused_deaths += 1;
            }
            continue;
        }
        if under_loss(faults, o.at_ns, options.settle_ns) {
            verdict.under_loss += 1;
            continue;
        }
        if o.state == "suspect" {
            verdict.false_suspicions += 1;
            continue;
        }
        let last = reported.entry((o.observer, o.member)).or_insert(0);
        if *last == 0 || o.at_ns > *last + options.settle_ns {
            verdict.errors.push(MembershipError {
                kind: "false-death",
                at_ns: o.at_ns,
                message: format!(
                    "at {:.3}s node {} saw node {} dead (incarnation {}), and no kill, pause of at least {} ms, or partition involving either excuses it",
                    o.at_ns as f64 / 1e9,
                    o.observer,
                    o.member,
                    o.incarnation,
                    options.pause_excuse_ns / 1_000_000
                ),
            });
        }
        *last = o.at_ns;
    }
    for f in faults.iter().filter(|f| f.kind == "kill") {
        for &node in &f.nodes {
            let after = |o: &&Observation| o.member == node && o.at_ns >= f.start_ns;
            let first = |state: &str| {
                seen.iter()
                    .filter(after)
                    .filter(|o| o.at_ns <= f.end_ns && o.observer != node)
                    .find(|o| o.state == state || (state == "suspect" && o.state == "dead"))
                    .map(|o| (o.at_ns - f.start_ns) / 1_000_000)
            };
            verdict.detections.push(Detection {
                node,
                killed_at_ns: f.start_ns,
                suspected_after_ms: first("suspect"),
                dead_after_ms: first("dead"),
            });
            if f.end_ns - f.start_ns < options.detect_within_ns || f.nodes.len() > 1 {
                continue;
            }
            verdict.kills_checked += 1;
            let judged_from = f.start_ns + options.detect_within_ns;
            let mut failed: BTreeMap<u64, &Observation> = BTreeMap::new();
            for o in seen.iter().filter(|o| {
                o.member == node
                    && o.observer != node
                    && (judged_from..=f.end_ns).contains(&o.at_ns)
                    && o.state == "alive"
            }) {
                failed.entry(o.observer).or_insert(o);
            }
            for (observer, o) in failed {
                verdict.errors.push(MembershipError {
                    kind: "undetected",
                    at_ns: o.at_ns,
                    message: format!(
                        "node {node} was killed at {:.3}s, and at {:.3}s ({} ms later, past the {} ms bound) node {observer} still saw it alive",
                        f.start_ns as f64 / 1e9,
                        o.at_ns as f64 / 1e9,
                        (o.at_ns - f.start_ns) / 1_000_000,
                        options.detect_within_ns / 1_000_000
                    ),
                });
            }
        }
    }
    verdict.errors.sort_by_key(|e| e.at_ns);
    verdict.valid = verdict.errors.is_empty();
    verdict
}

pub fn text(verdict: &MembershipVerdict) -> String {
    let mut out = format!(
        "membership: {} observations; {} kills judged; {} false suspicions, {} views under loss, {} deaths excused by faults",
        verdict.observations,
        verdict.kills_checked,
        verdict.false_suspicions,
        verdict.under_loss,
        verdict.excused_deaths
    );
    for d in &verdict.detections {
        out.push_str(&format!(
            "\n  node {} killed at {:.3}s: suspected after {}, dead after {}",
            d.node,
            d.killed_at_ns as f64 / 1e9,
            d.suspected_after_ms
                .map_or("never".to_string(), |ms| format!("{ms} ms")),
            d.dead_after_ms
                .map_or("never (before it came back)".to_string(), |ms| format!(
                    "{ms} ms"
                ))
        ));
    }
    for e in &verdict.errors {
        out.push_str(&format!("\n  {}: {}", e.kind, e.message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, EventType, ProcessId};

    fn event(kind: EventType, process: u64, value: Value, at_ns: u64) -> Event {
        Event {
            line: 0,
            index: None,
            kind,
            process: ProcessId::Client(process),
            time: Some(at_ns),
            f: "members".into(),
            key: None,
            value,
            not_applied: false,
        }
    }

    fn poll(index: &mut u64, at_ms: u64, observer: u64, view: &[(u64, &str)]) -> Vec<Event> {
        let members = Value::List(
            view.iter()
                .map(|&(id, state)| {
                    Value::List(vec![
                        Value::Int(id as i64),
                        Value::Str(state.into()),
                        Value::Int(0),
                    ])
                })
                .collect(),
        );
        // One process per poll, so that polls never overlap within a process.
        let process = *index;
        *index += 1;
        let invoke = event(
            EventType::Invoke,
            process,
            Value::Int(100),
            at_ms * 1_000_000 - 1,
        );
        let ok = event(
            EventType::Ok,
            process,
            Value::List(vec![Value::Int(observer as i64), members]),
            at_ms * 1_000_000,
        );
        vec![invoke, ok]
    }

    fn options() -> Options {
        Options {
            detect_within_ns: 1_000_000_000,
            pause_excuse_ns: 800_000_000,
            settle_ns: 2_000_000_000,
        }
    }

    fn kill(node: u64, from_ms: u64, to_ms: u64) -> Fault {
        Fault {
            kind: "kill".into(),
            nodes: vec![node],
            links: vec![],
            start_ns: from_ms * 1_000_000,
            end_ns: to_ms * 1_000_000,
        }
    }

    fn history(events: Vec<Event>) -> History {
        History::from_events(events).expect("well-formed")
    }

    #[test]
    fn a_detected_kill_is_valid_and_an_undetected_one_is_named() {
        let mut i = 0;
        let mut events = Vec::new();
        events.extend(poll(
            &mut i,
            100,
            1,
            &[(1, "alive"), (2, "alive"), (3, "alive")],
        ));
        events.extend(poll(
            &mut i,
            1_600,
            1,
            &[(1, "alive"), (2, "alive"), (3, "suspect")],
        ));
        events.extend(poll(
            &mut i,
            2_500,
            1,
            &[(1, "alive"), (2, "alive"), (3, "dead")],
        ));
        let good = check_membership(
            &history(events.clone()),
            &[kill(3, 1_000, 3_000)],
            &options(),
        );
        assert!(good.valid, "{}", text(&good));
        assert_eq!(good.kills_checked, 1);
        assert_eq!(good.detections[0].suspected_after_ms, Some(600));
        assert_eq!(good.detections[0].dead_after_ms, Some(1_500));

        events.extend(poll(
            &mut i,
            2_600,
            2,
            &[(1, "alive"), (2, "alive"), (3, "alive")],
        ));
        let bad = check_membership(&history(events), &[kill(3, 1_000, 3_000)], &options());
        assert!(!bad.valid);
        assert_eq!(bad.errors[0].kind, "undetected");
        assert!(
            bad.errors[0].message.contains("node 2 still saw it alive"),
            "{}",
            text(&bad)
        );
    }

    #[test]
    fn a_death_after_a_short_pause_is_false_and_after_a_long_one_excused() {
        let mut i = 0;
        let mut events = Vec::new();
        events.extend(poll(
            &mut i,
            1_500,
            1,
            &[(1, "alive"), (2, "dead"), (3, "alive")],
        ));
        events.extend(poll(
            &mut i,
            1_600,
            3,
            &[(1, "alive"), (2, "suspect"), (3, "alive")],
        ));
        let pause = |ms: u64| Fault {
            kind: "pause".into(),
            nodes: vec![2],
            links: vec![],
            start_ns: 1_000_000_000,
            end_ns: (1_000 + ms) * 1_000_000,
        };
        let short = check_membership(&history(events.clone()), &[pause(400)], &options());
        assert!(!short.valid);
        assert_eq!(short.errors[0].kind, "false-death");
        assert_eq!(short.false_suspicions, 1);
        let long = check_membership(&history(events.clone()), &[pause(900)], &options());
        assert!(long.valid, "{}", text(&long));
        assert_eq!(long.excused_deaths, 1);
        // Under loss: counted, not judged.
        let loss = Fault {
            kind: "loss".into(),
            nodes: vec![],
            links: vec![],
            start_ns: 1_000_000_000,
            end_ns: 2_000_000_000,
        };
        let lossy = check_membership(&history(events), &[loss], &options());
        assert!(lossy.valid);
        assert_eq!(lossy.under_loss, 2);
    }
}
