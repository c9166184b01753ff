//! A stateright model of the node's own gossip membership core
//! (`faultline_node::cluster::swim`): a few members' `Swim` cores, the timers each asks
//! for, and a network that delivers every packet in any order, loses a bounded number, and
//! holds packets to a paused member until it resumes.
//!
//! Time is discrete and advances to the next moment something is due: a timer, or the end
//! of a pause. A packet is delivered within `latency` ticks of being sent (0: in the tick it
//! was sent, in any order with the tick's other events), except to a paused member, which
//! handles nothing (its timers and packets wait, as a SIGSTOPped process's do) until it
//! resumes. One member may be killed: it never runs again.
//!
//! Properties:
//! - *no live member declared dead without a lost packet*: no member holds another that was
//!   not killed as dead, unless a packet was lost. Pauses are bounded by `max_pause`, which
//!   the defaults keep at most the probe timeout plus the shortest suspicion (2 + 16 ticks):
//!   a member paused for less must be able to refute in time. Longer pauses condemn it, as
//!   SWIM means them to (on 5 members a pause of 20 ticks does).
//!
//! A moment's events happen in one canonical order unless `reorder` is set; pauses and
//! kills start between moments.
//!
//! `sometimes` witnesses: a paused member was suspected (the pause was long enough to
//! matter); a suspected member refuted; a killed member is held dead by every live one.

use std::collections::BTreeSet;
use std::time::Duration;

use faultline_node::cluster::swim::{Notification, Output, Swim, SwimBugs, SwimConfig, Timer};
use faultline_node::proto::membership::{MemberMeta, MemberState, Packet};
use stateright::{Model, Property};

/// Bounds and switches.
#[derive(Clone, Debug)]
pub struct MembershipModelOptions {
    pub members: usize,
    /// Ticks. The probe timeout is half the interval, the suspicion `suspicion_mult`
    /// intervals (fixed: no confirmations shorten it), gossip every half interval.
    pub probe_interval: u64,
    pub suspicion_mult: u64,
    /// A packet arrives within this many ticks of being sent.
    pub latency: u64,
    /// Real time the search runs to.
    pub max_time: u64,
    /// Packets the network may lose over a run.
    pub max_losses: usize,
    /// One pause, of up to this many ticks (0: none).
    pub max_pause: u64,
    /// Whether one member may be killed.
    pub kill: bool,
    /// Whether a moment's events happen in every order (true) or in one canonical order:
    /// timers, then packets by recipient and encoding. Every order multiplies the states
    /// by orders of magnitude for the same bounds; the timing that suspicion depends on
    /// (who pauses, when, for how long; what is lost) is searched either way.
    pub reorder: bool,
    /// The node's seeded bug `gossip-no-suspicion`.
    pub no_suspicion: bool,
    /// The node's seeded bug `gossip-no-probe-refill`.
    pub no_probe_refill: bool,
    pub threads: usize,
    pub timeout: Option<Duration>,
}

impl Default for MembershipModelOptions {
    /// The bounds CI checks exhaustively.
    fn default() -> Self {
        MembershipModelOptions {
            members: 3,
            probe_interval: 4,
            suspicion_mult: 4,
            latency: 0,
            max_time: 40,
            max_losses: 0,
            max_pause: 16,
            kill: false,
            reorder: false,
            no_suspicion: false,
            no_probe_refill: false,
            threads: 1,
            timeout: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct InFlight {
    /// Delivered no later than this (a paused recipient's wait longer).
    due: u64,
    to: u64,
    packet: PacketKey,
}

/// A packet, ordered by its encoding so that the network is a canonical sorted multiset.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PacketKey(Vec<u8>);

impl PacketKey {
    fn new(packet: &Packet) -> Self {
        use prost::Message as _;
        PacketKey(packet.encode_to_vec())
    }

    fn packet(&self) -> Packet {
        use prost::Message as _;
        Packet::decode(self.0.as_slice()).expect("encoded by the model")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    now: u64,
    cores: Vec<Swim>,
    /// (due, member id, timer), sorted.
    timers: BTreeSet<(u64, u64, Timer)>,
    network: Vec<InFlight>,
    losses: usize,
    /// The paused member and when it resumes; whether the pause was used.
    paused: Option<(u64, u64)>,
    paused_once: bool,
    killed: Option<u64>,
    killed_at: u64,
    /// For the witnesses.
    paused_suspected: bool,
    refuted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver the network's `i`th packet now.
    Deliver(usize),
    Lose(usize),
    /// Fire the `i`th due timer.
    Fire(u64, Timer),
    /// Pause a member for this many ticks.
    Pause(u64, u64),
    Kill(u64),
    /// Time moves to the next moment something is due.
    Advance,
}

pub struct MembershipModel {
    options: MembershipModelOptions,
}

impl MembershipModel {
    fn runs(state: &State, id: u64) -> bool {
        state.killed != Some(id) && state.paused.is_none_or(|(p, _)| p != id)
    }

    /// Drains a core's outputs into the network and the timers.
    fn collect(&self, state: &mut State, id: u64) {
        let outputs = state.cores[id as usize - 1].take_outputs();
        for output in outputs {
            match output {
                Output::Send { to, packet } => {
                    let sent = InFlight {
                        due: state.now + self.options.latency,
                        to,
                        packet: PacketKey::new(&packet),
                    };
                    // Kept sorted: the network is a canonical multiset.
                    let at = state.network.binary_search(&sent).unwrap_or_else(|at| at);
                    state.network.insert(at, sent);
                }
                Output::Schedule { timer, after_ms } => {
                    state
                        .timers
                        .insert((state.now + after_ms.max(1), id, timer));
                }
                Output::Notify(Notification::Suspect { id: suspect, .. })
                    if state.paused.is_some_and(|(p, _)| p == suspect) =>
                {
                    state.paused_suspected = true;
                }
                Output::Notify(Notification::Refuted { .. }) => state.refuted = true,
                Output::Notify(_) => {}
            }
        }
    }

    /// Whether something must happen before time moves on.
    fn overdue(state: &State) -> bool {
        state
            .timers
            .iter()
            .any(|(due, id, _)| *due <= state.now && Self::runs(state, *id))
            || state
                .network
                .iter()
                .any(|p| p.due <= state.now && Self::runs(state, p.to))
    }

    fn next_moment(state: &State) -> Option<u64> {
        let timers = state
            .timers
            .iter()
            .filter(|(_, id, _)| state.killed != Some(*id))
            .map(|(due, _, _)| *due);
        let packets = state
            .network
            .iter()
            .filter(|p| state.killed != Some(p.to))
            .map(|p| p.due);
        let resume = state.paused.map(|(_, until)| until);
        timers
            .chain(packets)
            .chain(resume)
            .map(|t| t.max(state.now + 1))
            .min()
    }

    fn held_dead(state: &State, member: u64) -> bool {
        state.cores.iter().any(|core| {
            core.id() != member
                && state.killed != Some(core.id())
                && core
                    .member(member)
                    .is_some_and(|m| m.state == MemberState::Dead)
        })
    }
}

impl Model for MembershipModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.options.members as u64;
        let interval = self.options.probe_interval;
        let config = SwimConfig {
            probe_interval_ms: interval,
            probe_timeout_ms: (interval / 2).max(1),
            // Two helpers: one for each member but the prober and the target.
            indirect_probes: 2,
            suspicion_mult: self.options.suspicion_mult,
            suspicion_max_mult: 1,
            retransmit_mult: 4,
            gossip_interval_ms: (interval / 2).max(1),
            gossip_fanout: 2,
            // Beyond the horizon: a bounded run learns nothing from whole-state exchanges
            // that piggybacked updates do not already carry, and each one branches.
            push_pull_interval_ms: self.options.max_time * 4 + 1,
            heartbeat_interval_ms: self.options.max_time * 4 + 1,
            awareness_max: 8,
            updates_per_packet: 32,
            seed: 1,
            bugs: SwimBugs {
                no_suspicion: self.options.no_suspicion,
                no_probe_refill: self.options.no_probe_refill,
            },
        };
        let seeds: Vec<(u64, String)> = (1..=n).map(|id| (id, format!("m{id}"))).collect();
        let mut state = State {
            now: 0,
            cores: Vec::new(),
            timers: BTreeSet::new(),
            network: Vec::new(),
            losses: 0,
            paused: None,
            paused_once: false,
            killed: None,
            killed_at: 0,
            paused_suspected: false,
            refuted: false,
        };
        for id in 1..=n {
            let meta = MemberMeta {
                address: format!("m{id}"),
                started_ms: id,
                ..Default::default()
            };
            let mut core = Swim::new(config.clone(), id, meta, &seeds);
            core.start(0);
            state.cores.push(core);
            self.collect(&mut state, id);
        }
        // The start-up push-pulls are delivered before the search begins: every member
        // knows every other from the seeds already, and their order only multiplies states.
        while let Some(p) = state.network.pop() {
            let to = p.to;
            let _ = state.cores[to as usize - 1].handle_packet(p.packet.packet(), 0);
            self.collect(&mut state, to);
        }
        vec![state]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let mut seen = BTreeSet::new();
        let mut canonical = None;
        for (due, id, timer) in &state.timers {
            if *due <= state.now && Self::runs(state, *id) {
                if !self.options.reorder {
                    canonical = Some(Action::Fire(*id, *timer));
                    break;
                }
                actions.push(Action::Fire(*id, *timer));
            }
        }
        for (i, p) in state.network.iter().enumerate() {
            // Equal packets lead to equal states: offer each once.
            if !seen.insert((p.to, &p.packet)) {
                continue;
            }
            if Self::runs(state, p.to) && (self.options.reorder || p.due <= state.now) {
                if self.options.reorder {
                    actions.push(Action::Deliver(i));
                } else if canonical.is_none() {
                    canonical = Some(Action::Deliver(i));
                }
            }
            if state.losses < self.options.max_losses {
                actions.push(Action::Lose(i));
            }
        }
        actions.extend(canonical);
        let n = self.options.members as u64;
        let settled = !Self::overdue(state);
        // Pauses and kills start between moments, once what was due has happened: anywhere
        // within a moment would only reorder it against that moment's deliveries, which the
        // search already reorders, at many times the states.
        if settled && self.options.max_pause > 0 && !state.paused_once && state.killed.is_none() {
            for id in 1..=n {
                for ticks in 1..=self.options.max_pause {
                    actions.push(Action::Pause(id, ticks));
                }
            }
        }
        if settled && self.options.kill && state.killed.is_none() && state.paused.is_none() {
            for id in 1..=n {
                actions.push(Action::Kill(id));
            }
        }
        if settled && Self::next_moment(state).is_some_and(|t| t <= self.options.max_time) {
            actions.push(Action::Advance);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Deliver(i) => {
                let p = state.network.remove(i);
                let now = state.now;
                let _ = state.cores[p.to as usize - 1].handle_packet(p.packet.packet(), now);
                self.collect(&mut state, p.to);
            }
            Action::Lose(i) => {
                state.network.remove(i);
                state.losses += 1;
            }
            Action::Fire(id, timer) => {
                let due = state
                    .timers
                    .iter()
                    .find(|(due, who, t)| *who == id && *t == timer && *due <= state.now)
                    .copied()?;
                state.timers.remove(&due);
                let now = state.now;
                state.cores[id as usize - 1].handle_timer(timer, now);
                self.collect(&mut state, id);
            }
            Action::Pause(id, ticks) => {
                state.paused = Some((id, state.now + ticks));
                state.paused_once = true;
            }
            Action::Kill(id) => {
                state.killed = Some(id);
                state.killed_at = state.now;
                state.timers.retain(|(_, who, _)| *who != id);
                state.network.retain(|p| p.to != id);
            }
            Action::Advance => {
                state.now = Self::next_moment(&state)?;
                if state.paused.is_some_and(|(_, until)| until <= state.now) {
                    state.paused = None;
                }
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "no live member declared dead without a lost packet",
                |_: &MembershipModel, state: &State| {
                    state.losses > 0
                        || state.cores.iter().all(|core| {
                            state.killed == Some(core.id())
                                || !MembershipModel::held_dead(state, core.id())
                        })
                },
            ),
            Property::sometimes("a paused member was suspected", |_, state: &State| {
                state.paused_suspected
            }),
            Property::sometimes("a suspected member refuted", |_, state: &State| {
                state.refuted
            }),
        ];
        if self.options.kill {
            // The membership workload's bound: every member probes each other one within
            // n intervals, and a suspicion takes about as long again.
            properties.push(Property::always(
                "a member killed (2n + 1) probe intervals ago is suspected or dead to all",
                |model: &MembershipModel, state: &State| {
                    let bound =
                        (2 * model.options.members as u64 + 1) * model.options.probe_interval;
                    state.killed.is_none_or(|dead| {
                        state.now < state.killed_at + bound
                            || state.cores.iter().all(|core| {
                                core.id() == dead
                                    || core.member(dead).is_some_and(|m| {
                                        m.state == MemberState::Suspect
                                            || m.state == MemberState::Dead
                                    })
                            })
                    })
                },
            ));
            properties.push(Property::sometimes(
                "every live member holds the killed one dead",
                |_, state: &State| {
                    state.killed.is_some_and(|dead| {
                        state.cores.iter().all(|core| {
                            core.id() == dead
                                || core
                                    .member(dead)
                                    .is_some_and(|m| m.state == MemberState::Dead)
                        })
                    })
                },
            ));
        }
        properties
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.now <= self.options.max_time
    }
}

fn describe(before: &State, action: &Action) -> String {
    let t = before.now;
    match action {
        Action::Deliver(i) => {
            let p = &before.network[*i];
            let packet = p.packet.packet();
            let body = match packet.body {
                Some(body) => format!("{body:?}"),
                None => "nothing".into(),
            };
            let updates: Vec<String> = packet
                .updates
                .iter()
                .map(|u| {
                    format!(
                        "{} is {:?} at {}",
                        u.id,
                        MemberState::try_from(u.state).unwrap_or(MemberState::Alive),
                        u.incarnation
                    )
                })
                .collect();
            format!(
                "t={t}: member {} gets {body} from {}{}",
                p.to,
                packet.from,
                if updates.is_empty() {
                    String::new()
                } else {
                    format!(" saying {}", updates.join(", "))
                }
            )
        }
        Action::Lose(i) => format!(
            "t={t}: the network loses a packet to member {}",
            before.network[*i].to
        ),
        Action::Fire(id, timer) => format!("t={t}: member {id}'s {timer:?} timer fires"),
        Action::Pause(id, ticks) => format!("t={t}: member {id} is paused for {ticks} ticks"),
        Action::Kill(id) => format!("t={t}: member {id} is killed"),
        Action::Advance => "time moves on".into(),
    }
}

/// What a check found.
pub type MembershipReport = super::bfs::Report;

/// Checks the model exhaustively (BFS) at `options`' bounds.
pub fn check(options: MembershipModelOptions) -> MembershipReport {
    let (threads, timeout) = (options.threads, options.timeout);
    super::bfs::check(
        "membership model",
        MembershipModel { options },
        threads,
        timeout,
        describe,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_member_is_suspected_and_refutes_and_nobody_is_declared_dead() {
        let report = check(MembershipModelOptions::default());
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn five_members_hear_a_refutation_even_when_its_retransmissions_miss_one() {
        // Before packets carried their sender's incarnation, this found a member that no
        // retransmission of a refutation reached, which declared the refuter dead.
        let report = check(MembershipModelOptions {
            members: 5,
            max_time: 48,
            ..MembershipModelOptions::default()
        });
        assert_eq!(report.exit_code(), 0, "{report}");
    }

    #[test]
    fn a_pause_past_the_suspicion_timeout_is_declared_dead() {
        // The property is not vacuous: past probe timeout + suspicion (2 + 16 ticks), a
        // pause condemns even the correct core, as SWIM means it to.
        let report = check(MembershipModelOptions {
            max_time: 48,
            max_pause: 24,
            ..MembershipModelOptions::default()
        });
        assert_eq!(report.exit_code(), 1, "{report}");
        assert!(report.to_string().contains("paused for 2"), "{report}");
    }

    #[test]
    fn a_probe_list_never_refilled_leaves_a_killed_member_undetected() {
        let report = check(MembershipModelOptions {
            kill: true,
            no_probe_refill: true,
            ..MembershipModelOptions::default()
        });
        assert_eq!(report.exit_code(), 1, "{report}");
        assert!(report.to_string().contains("is killed"), "{report}");
    }

    #[test]
    fn without_suspicion_a_pause_condemns_a_live_member() {
        let report = check(MembershipModelOptions {
            no_suspicion: true,
            ..MembershipModelOptions::default()
        });
        assert_eq!(report.exit_code(), 1, "{report}");
        assert!(report.to_string().contains("is paused"), "{report}");
    }
}
