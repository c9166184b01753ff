//! What a check found, in words: counts, a verdict per property, and each
//! counterexample or witness as a list of steps.

use std::fmt;
use std::time::Duration;

use stateright::actor::{ActorModelAction, Id};
use stateright::{Checker, Expectation, Model};

use super::{ActorState, CheckerKind, ModelOptions, Msg, NetworkKind, RaftModel, RaftState, Timer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An `always` property held in every state explored, and every state was explored.
    Holds,
    /// An `always` property failed: `steps` is the counterexample.
    Violated,
    /// A `sometimes` property was reached: `steps` is the example.
    Witnessed,
    /// The whole bounded space was explored and a `sometimes` property was never reached:
    /// the bounds are too tight for the properties it witnesses to mean anything.
    NotWitnessed,
    /// The run stopped early (timeout, simulation, first violation) before a verdict.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct PropertyReport {
    pub name: &'static str,
    pub always: bool,
    pub verdict: Verdict,
    /// Action indices joined by `/` (for `replay` and the Explorer's `/#/steps/PATH`),
    /// always of the unreduced model (a run with `symmetry` replays without it).
    pub path: Option<String>,
    pub steps: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ModelReport {
    pub configuration: String,
    pub states: usize,
    pub unique_states: usize,
    pub max_depth: usize,
    pub duration: Duration,
    /// The checker explored every state within the bounds.
    pub complete: bool,
    /// States were reduced by symmetry (`unique_states` counts representatives).
    pub symmetry: bool,
    pub properties: Vec<PropertyReport>,
}

impl ModelReport {
    pub fn property(&self, name: &str) -> &PropertyReport {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no property {name:?}"))
    }

    pub fn violations(&self) -> impl Iterator<Item = &PropertyReport> {
        self.properties
            .iter()
            .filter(|p| p.verdict == Verdict::Violated)
    }

    /// Every `always` holds, every `sometimes` was witnessed, the space was exhausted.
    pub fn all_hold(&self) -> bool {
        self.complete
            && self
                .properties
                .iter()
                .all(|p| matches!(p.verdict, Verdict::Holds | Verdict::Witnessed))
    }

    /// 0: everything holds; 1: a property failed; 2: a bound was not reached (a witness
    /// missing, or the run stopped before exhausting the space).
    pub fn exit_code(&self) -> u8 {
        if self.violations().next().is_some() {
            1
        } else if self.all_hold() {
            0
        } else {
            2
        }
    }

    pub fn states_per_second(&self) -> f64 {
        self.states as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model raft: {}", self.configuration)?;
        writeln!(
            f,
            "states {} (unique {}), max depth {}, {:.2?} ({:.0} states/s){}",
            self.states,
            self.unique_states,
            self.max_depth,
            self.duration,
            self.states_per_second(),
            if self.complete {
                ", exhaustive"
            } else {
                ", NOT exhaustive"
            }
        )?;
        for p in &self.properties {
            let kind = if p.always { "always   " } else { "sometimes" };
            let verdict = match p.verdict {
                Verdict::Holds => "holds",
                Verdict::Violated => "VIOLATED",
                Verdict::Witnessed => "witnessed",
                Verdict::NotWitnessed => "NOT WITNESSED",
                Verdict::Unknown => "unknown",
            };
            writeln!(f, "  {kind} {:<42} {verdict}", p.name)?;
        }
        for p in self.violations() {
            writeln!(
                f,
                "\ncounterexample to \"{}\" ({} steps):",
                p.name,
                p.steps.len()
            )?;
            for (i, step) in p.steps.iter().enumerate() {
                writeln!(f, "  {:>3}. {step}", i + 1)?;
            }
            if let Some(path) = &p.path {
                let note = if self.symmetry {
                    " (without --symmetry)"
                } else {
                    ""
                };
                writeln!(f, "  replay: path {path}{note}")?;
            }
        }
        Ok(())
    }
}

pub(super) fn build<C: Checker<RaftModel>>(
    options: &ModelOptions,
    checker: &C,
    duration: Duration,
    timed_out: bool,
) -> ModelReport {
    let model = checker.model();
    let discoveries = checker.discoveries();
    let budget_spent = options
        .max_states
        .is_some_and(|max| checker.state_count() >= max);
    let stopped_early = options.stop_at_first_violation
        && model
            .properties()
            .iter()
            .any(|p| p.expectation == Expectation::Always && discoveries.contains_key(p.name));
    let complete =
        options.checker != CheckerKind::Simulation && !timed_out && !budget_spent && !stopped_early;
    let properties = model
        .properties()
        .into_iter()
        .map(|property| {
            let always = property.expectation == Expectation::Always;
            let found = discoveries.get(property.name);
            let verdict = match (always, found.is_some(), complete) {
                (true, true, _) => Verdict::Violated,
                (false, true, _) => Verdict::Witnessed,
                (true, false, true) => Verdict::Holds,
                (false, false, true) => Verdict::NotWitnessed,
                (_, false, false) => Verdict::Unknown,
            };
            let (path, steps) = match found {
                Some(path) => {
                    let mut encoded = path.encode(model);
                    let mut states = path.clone().into_vec();
                    // Under symmetry the path's states are representatives, whose server
                    // names can change from step to step: print the same run unrenamed.
                    if model.cfg.symmetry
                        && let Some((plain, plain_path)) =
                            super::symmetry::unreduced(model, &states)
                    {
                        states = plain;
                        encoded = plain_path;
                    }
                    let start = model.start_steps().iter().map(|s| format!("(start) {s}"));
                    let steps = start
                        .chain(states.windows(2).filter_map(|pair| {
                            let action = pair[0].1.as_ref()?;
                            Some(describe_step(model, &pair[0].0, action, &pair[1].0))
                        }))
                        .collect();
                    (Some(encoded), steps)
                }
                None => (None, Vec::new()),
            };
            PropertyReport {
                name: property.name,
                always,
                verdict,
                path,
                steps,
            }
        })
        .collect();
    ModelReport {
        configuration: describe_options(options),
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        duration,
        complete,
        symmetry: options.symmetry,
        properties,
    }
}

pub fn describe_options(o: &ModelOptions) -> String {
    format!(
        "servers {} clients {} (ops {}) max-term {} max-log {} max-in-flight {} network {:?} crashes {} \
         snapshot-every {} pre-vote {} append-entries-max {} checker {:?} seed {} bug {}{}{}",
        o.servers,
        o.clients,
        o.client_ops,
        o.max_term,
        o.max_log,
        o.max_in_flight,
        o.network,
        o.crashes,
        o.snapshot_interval_entries,
        o.pre_vote,
        o.append_entries_max,
        o.checker,
        o.seed,
        o.bug.map_or("none".to_string(), |b| b.to_string()),
        if o.start.is_empty() {
            String::new()
        } else {
            format!(" start {} steps in", o.start.len())
        },
        if o.symmetry { " symmetry" } else { "" },
    )
}

fn actor_name(model: &RaftModel, id: Id) -> String {
    let index = usize::from(id);
    if index < model.cfg.servers {
        format!("n{}", index + 1)
    } else {
        format!("c{}", index - model.cfg.servers + 1)
    }
}

fn after(model: &RaftModel, id: Id, next: &RaftState) -> String {
    match next.actor_states.get(usize::from(id)).map(|s| &**s) {
        Some(ActorState::Server(server)) => {
            format!("  ⇒ {}: {}", actor_name(model, id), server.summary())
        }
        Some(ActorState::Down) | None => String::new(),
        Some(ActorState::Client(client)) => match client.accepted.last() {
            Some((op, ret)) => format!("  ⇒ {} accepts {op:?} = {ret:?}", actor_name(model, id)),
            None => String::new(),
        },
    }
}

/// One step in words: `n1 -> n2: RequestVote{term 2, last 1@1}  ⇒ n2: follower t2 ...`.
pub fn describe_step(
    model: &RaftModel,
    previous: &RaftState,
    action: &ActorModelAction<Msg, Timer, ()>,
    next: &RaftState,
) -> String {
    match action {
        ActorModelAction::Deliver { src, dst, msg } => format!(
            "{} -> {}: {msg}{}",
            actor_name(model, *src),
            actor_name(model, *dst),
            after(model, *dst, next)
        ),
        ActorModelAction::Drop(envelope) => format!(
            "network loses {} -> {}: {}",
            actor_name(model, envelope.src),
            actor_name(model, envelope.dst),
            envelope.msg
        ),
        ActorModelAction::Timeout(id, Timer::Tick) => {
            let mut lost = Vec::new();
            if model.cfg.network == NetworkKind::Lossy {
                for envelope in previous.network.iter_deliverable() {
                    let touches = envelope.src == *id || envelope.dst == *id;
                    if touches && matches!(envelope.msg, Msg::Raft(_)) {
                        lost.push(format!(
                            "{} -> {}: {}",
                            actor_name(model, envelope.src),
                            actor_name(model, envelope.dst),
                            envelope.msg
                        ));
                    }
                }
            }
            let lost = if lost.is_empty() {
                String::new()
            } else {
                format!(" (the network lost {})", lost.join("; "))
            };
            format!(
                "{} tick{lost}{}",
                actor_name(model, *id),
                after(model, *id, next)
            )
        }
        ActorModelAction::Crash(id) => format!("{} crashed", actor_name(model, *id)),
        ActorModelAction::Recover(id) => {
            format!(
                "{} recovered{}",
                actor_name(model, *id),
                after(model, *id, next)
            )
        }
        ActorModelAction::SelectRandom { actor, .. } => {
            format!("{} random choice", actor_name(model, *actor))
        }
    }
}
