//! Gossip membership: SWIM (Das, Gupta and Motivala, 2002) with Lifeguard's refinements
//! (Dadgar et al., 2018, as HashiCorp memberlist ships them), sans-IO.
//!
//! **Why not foca.** foca is a good sans-IO SWIM crate, and this core follows its shape
//! (bytes and timer events in; sends, timer requests and notifications out). It is written
//! here instead because (1) the model checker hashes whole cluster states, and foca's
//! state is neither `Hash` nor `Eq`; (2) foca's suspicion timeout is fixed, while
//! Lifeguard's shrinks as independent suspicions confirm it and its probe timers stretch
//! with the node's own health, which is most of what keeps false positives down under
//! loss; (3) packets here are the node's own protobuf messages, so `grpcurl` and the
//! harness read them with the rest of the API.
//!
//! **The protocol.** Every probe interval a member pings the next member of a shuffled
//! round-robin list. Without an ack within the probe timeout it asks `indirect_probes`
//! others to ping the target for it (so one bad link does not condemn a node); without
//! any ack by the end of the interval it declares the target *suspect*. A suspect that
//! hears of it refutes by raising its incarnation. A suspicion that stands for the
//! suspicion timeout makes the member *dead*. Every state change is an update that rides
//! on later packets (piggybacked, each sent `retransmit_mult × log10(n+1)` times), and a
//! periodic push-pull exchanges whole states, which is how a restarted or partitioned
//! member learns what was said about it and rejoins.
//!
//! **Lifeguard.** (1) *Local health*: a member that misses acks or has to refute counts
//! itself as possibly slow and stretches its probe interval and timeout by its awareness
//! score plus one, so a starved node does not accuse healthy ones. (2) *Dynamic
//! suspicion*: the timeout starts at `suspicion_max_mult` times the minimum and falls
//! towards the minimum as other members independently confirm the suspicion
//! ([`suspicion_timeout_ms`]). (3) *Buddy system*: a ping to a suspect carries the
//! suspicion, so it can refute at once. Not done: Lifeguard's nacks from indirect
//! probers (awareness here rises on any failed probe).
//!
//! **Ordering contract.** Every input appends to an output queue that
//! [`Swim::take_outputs`] drains in order: sends, timer requests (`after_ms` from the
//! input's `now`) and notifications. A timer carries a token (a probe's sequence number, a
//! suspicion's incarnation and confirmation count) and a stale one is ignored, so the
//! shell never has to cancel timers.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use crate::proto::membership::{
    Ack, Gossip, Heartbeat, MemberMeta, MemberState, Packet, Ping, PingReq, PushPull, Update,
    packet::Body,
};

/// The largest datagram a member sends; updates that do not fit wait for the next packet.
pub const PACKET_BYTES_MAX: usize = 60_000;

/// Timings and fan-outs. The defaults are memberlist's LAN profile (1 s probes, 500 ms
/// probe timeout, a suspicion of at least 4 s on ten nodes or fewer), so figures compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SwimConfig {
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub indirect_probes: usize,
    pub suspicion_mult: u64,
    pub suspicion_max_mult: u64,
    pub retransmit_mult: u64,
    pub gossip_interval_ms: u64,
    pub gossip_fanout: usize,
    pub push_pull_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub awareness_max: u64,
    pub updates_per_packet: usize,
    pub seed: u64,
    pub bugs: SwimBugs,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            // memberlist's is 30 s; a test cluster wants a rejoin within seconds.
            push_pull_interval_ms: 5_000,
            heartbeat_interval_ms: 1_000,
            awareness_max: 8,
            updates_per_packet: 32,
            seed: 0,
            bugs: SwimBugs::default(),
        }
    }
}

/// Seeded bugs, for the membership checker to catch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SwimBugs {
    /// A failed probe makes its target dead at once: no suspicion, no chance to refute.
    pub no_suspicion: bool,
    /// The round-robin probe list is filled once and never refilled: after one round
    /// this member probes nobody, and a member killed later is never detected by it.
    pub no_probe_refill: bool,
}

/// A timer the shell fires `after_ms` after the input that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Start the next probe (the token is the probe round, so a restart's old timer drops).
    Probe {
        round: u64,
    },
    /// The direct ack of probe `seq` is late: ask others.
    ProbeTimeout {
        seq: u64,
    },
    /// Forget a ping-req relayed for someone else.
    RelayTimeout {
        seq: u64,
    },
    /// A suspicion of `id` at `incarnation` with `confirmations` others agreeing may have
    /// run its course.
    Suspicion {
        id: u64,
        incarnation: u64,
        confirmations: usize,
    },
    Gossip,
    PushPull,
    Heartbeat,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Notification {
    Joined {
        id: u64,
    },
    Alive {
        id: u64,
        incarnation: u64,
    },
    Suspect {
        id: u64,
        incarnation: u64,
        by: u64,
    },
    Dead {
        id: u64,
        incarnation: u64,
        by: u64,
    },
    Left {
        id: u64,
    },
    /// This member refuted a suspicion (or a death) about itself.
    Refuted {
        incarnation: u64,
    },
    MetaChanged {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Send { to: u64, packet: Packet },
    Schedule { timer: Timer, after_ms: u64 },
    Notify(Notification),
}

/// Why an input was refused. None of them changed any state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwimError {
    /// The bytes are not a membership packet (state unchanged).
    Malformed(String),
    /// Meant for another member id at this address (a node restarted under a new id, or a
    /// stale address; state unchanged).
    NotForMe { to: u64 },
}

impl std::fmt::Display for SwimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwimError::Malformed(why) => write!(f, "malformed membership packet: {why}"),
            SwimError::NotForMe { to } => {
                write!(f, "membership packet for member {to}, not this one")
            }
        }
    }
}

impl std::error::Error for SwimError {}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: u64,
    pub incarnation: u64,
    pub state: MemberState,
    pub meta: MemberMeta,
    /// When it entered `state` (this node's `now`).
    pub since_ms: u64,
    suspicion: Option<Suspicion>,
}

impl Member {
    pub fn is_live(&self) -> bool {
        matches!(self.state, MemberState::Alive | MemberState::Suspect)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Suspicion {
    started_ms: u64,
    /// Who has said so, the first suspector included.
    by: BTreeSet<u64>,
    /// Independent confirmations that bring the timeout down to its minimum.
    expected: u64,
    min_ms: u64,
    max_ms: u64,
}

impl Suspicion {
    fn confirmations(&self) -> usize {
        self.by.len().saturating_sub(1)
    }

    fn timeout_ms(&self) -> u64 {
        suspicion_timeout_ms(
            self.confirmations() as u64,
            self.expected,
            self.min_ms,
            self.max_ms,
        )
    }
}

/// Lifeguard's dynamic suspicion timeout (memberlist `suspicion.go`): `max` with no
/// confirmations, falling logarithmically to `min` once `expected` other members have
/// independently confirmed; `min` at once when no confirmations can be expected.
pub fn suspicion_timeout_ms(confirmations: u64, expected: u64, min_ms: u64, max_ms: u64) -> u64 {
    if expected == 0 {
        return min_ms;
    }
    let fraction = ((confirmations + 1) as f64).ln() / ((expected + 1) as f64).ln();
    let raw = max_ms as f64 - fraction * (max_ms.saturating_sub(min_ms)) as f64;
    (raw.floor() as u64).max(min_ms)
}

/// The shortest suspicion on `members` nodes: `mult × max(1, log10(n)) × probe interval`.
pub fn suspicion_min_ms(mult: u64, members: usize, probe_interval_ms: u64) -> u64 {
    let scale = (members.max(1) as f64).log10().max(1.0);
    (mult as f64 * scale * probe_interval_ms as f64) as u64
}

/// How many packets each update rides on: `mult × ceil(log10(n + 1))`.
pub fn retransmit_limit(mult: u64, members: usize) -> u64 {
    mult * ((members as f64 + 1.0).log10().ceil() as u64).max(1)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Probe {
    seq: u64,
    target: u64,
    acked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Broadcast {
    update: Update,
    sent: u64,
}

/// The membership core of one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Swim {
    config: SwimConfig,
    me: u64,
    members: BTreeMap<u64, Member>,
    probe_order: Vec<u64>,
    probe_next: usize,
    probe: Option<Probe>,
    round: u64,
    /// Pings sent for someone else's ping-req: our seq -> (who asked, their seq).
    relays: BTreeMap<u64, (u64, u64)>,
    /// The newest update about each member, with how often it has been sent.
    broadcasts: BTreeMap<u64, Broadcast>,
    next_seq: u64,
    /// Lifeguard's local health score, 0..awareness_max.
    awareness: u64,
    rng: u64,
    outputs: Vec<Output>,
}

impl Swim {
    /// A member `me` that knows `seeds` (id, address) as alive at incarnation 0, until it
    /// hears better. Call [`start`](Self::start) before anything else.
    pub fn new(config: SwimConfig, me: u64, meta: MemberMeta, seeds: &[(u64, String)]) -> Self {
        let rng = config.seed ^ me.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
        let mut members = BTreeMap::new();
        members.insert(
            me,
            Member {
                id: me,
                incarnation: 0,
                state: MemberState::Alive,
                meta,
                since_ms: 0,
                suspicion: None,
            },
        );
        for (id, address) in seeds {
            if *id == me {
                continue;
            }
            members.insert(
                *id,
                Member {
                    id: *id,
                    incarnation: 0,
                    state: MemberState::Alive,
                    meta: MemberMeta {
                        address: address.clone(),
                        ..Default::default()
                    },
                    since_ms: 0,
                    suspicion: None,
                },
            );
        }
        Self {
            config,
            me,
            members,
            probe_order: Vec::new(),
            probe_next: 0,
            probe: None,
            round: 0,
            relays: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            next_seq: 1,
            awareness: 0,
            rng,
            outputs: Vec::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.members[&self.me].incarnation
    }

    pub fn awareness(&self) -> u64 {
        self.awareness
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    /// Drains what the inputs so far produced, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The emergent leader: the alive member that started first (ties by id). No
    /// election: every member computes it from its own view, so two may disagree for a
    /// moment, and the chores it runs must be safe to run twice.
    pub fn coordinator(&self) -> Option<u64> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Alive)
            .min_by_key(|m| (m.meta.started_ms, m.id))
            .map(|m| m.id)
    }

    /// Announces this member: a push-pull to every seed (so that a restarted member
    /// learns at once what the others said about it) and the periodic timers.
    pub fn start(&mut self, now_ms: u64) {
        self.members.get_mut(&self.me).expect("me").since_ms = now_ms;
        self.round += 1;
        self.queue_self_alive();
        let peers: Vec<u64> = self.others().collect();
        for peer in peers {
            self.send_push_pull(peer, true);
        }
        self.schedule(Timer::Probe { round: self.round }, self.probe_interval());
        self.schedule(Timer::Gossip, self.config.gossip_interval_ms);
        self.schedule(Timer::PushPull, self.config.push_pull_interval_ms);
        self.schedule(Timer::Heartbeat, self.config.heartbeat_interval_ms);
    }

    /// Changes what this member says about itself: a new incarnation carries it.
    pub fn set_meta(&mut self, meta: MemberMeta) {
        let me = self.members.get_mut(&self.me).expect("me");
        if me.meta == meta {
            return;
        }
        me.meta = meta;
        me.incarnation += 1;
        self.queue_self_alive();
    }

    /// Leaves on purpose: the others record `left`, not a failure.
    pub fn leave(&mut self, now_ms: u64) {
        let me = self.members.get_mut(&self.me).expect("me");
        me.incarnation += 1;
        me.state = MemberState::Left;
        me.since_ms = now_ms;
        let update = Update {
            id: self.me,
            incarnation: me.incarnation,
            state: MemberState::Left as i32,
            from: self.me,
            meta: None,
        };
        self.queue_broadcast(update);
        let peers: Vec<u64> = self.others().collect();
        for peer in peers {
            let packet = self.packet(peer, Body::Gossip(Gossip {}));
            self.outputs.push(Output::Send { to: peer, packet });
        }
    }

    /// Decodes and handles one datagram received at `now_ms`.
    pub fn handle_bytes(&mut self, bytes: &[u8], now_ms: u64) -> Result<(), SwimError> {
        let packet = Packet::decode(bytes).map_err(|e| SwimError::Malformed(e.to_string()))?;
        self.handle_packet(packet, now_ms)
    }

    pub fn handle_packet(&mut self, packet: Packet, now_ms: u64) -> Result<(), SwimError> {
        if packet.to != 0 && packet.to != self.me {
            return Err(SwimError::NotForMe { to: packet.to });
        }
        let Some(body) = packet.body else {
            return Err(SwimError::Malformed("no body".into()));
        };
        if packet.from == self.me {
            return Err(SwimError::Malformed(format!(
                "a packet from member {} (this member's own id): two nodes share an id",
                self.me
            )));
        }
        for update in packet.updates {
            self.apply(update, now_ms, false);
        }
        let from = packet.from;
        self.heard_directly(from, packet.from_incarnation, now_ms);
        match body {
            Body::Ping(Ping { seq }) => {
                let reply = self.packet(from, Body::Ack(Ack { seq }));
                self.outputs.push(Output::Send {
                    to: from,
                    packet: reply,
                });
            }
            Body::Ack(Ack { seq }) => {
                if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    probe.acked = true;
                } else if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
                    let forward = self.packet(origin, Body::Ack(Ack { seq: origin_seq }));
                    self.outputs.push(Output::Send {
                        to: origin,
                        packet: forward,
                    });
                }
            }
            Body::PingReq(PingReq { seq, target }) => {
                if target != self.me && self.members.contains_key(&target) {
                    let ours = self.next_seq();
                    self.relays.insert(ours, (from, seq));
                    let ping = self.ping(target, ours);
                    self.outputs.push(Output::Send {
                        to: target,
                        packet: ping,
                    });
                    self.schedule(Timer::RelayTimeout { seq: ours }, self.probe_interval());
                }
            }
            Body::PushPull(PushPull { members, reply }) => {
                for update in members {
                    self.apply(update, now_ms, true);
                }
                if reply {
                    self.send_push_pull(from, false);
                }
            }
            Body::Gossip(_) | Body::Heartbeat(_) => {}
        }
        Ok(())
    }

    pub fn handle_timer(&mut self, timer: Timer, now_ms: u64) {
        match timer {
            Timer::Probe { round } if round == self.round => self.probe_round(now_ms),
            Timer::Probe { .. } => {}
            Timer::ProbeTimeout { seq } => self.probe_timeout(seq),
            Timer::RelayTimeout { seq } => {
                self.relays.remove(&seq);
            }
            Timer::Suspicion {
                id,
                incarnation,
                confirmations,
            } => self.suspicion_timeout(id, incarnation, confirmations, now_ms),
            Timer::Gossip => {
                if !self.broadcasts.is_empty() {
                    let targets = self.pick(self.config.gossip_fanout, |m| m.is_live(), &[]);
                    for to in targets {
                        let packet = self.packet(to, Body::Gossip(Gossip {}));
                        self.outputs.push(Output::Send { to, packet });
                    }
                }
                self.schedule(Timer::Gossip, self.config.gossip_interval_ms);
            }
            Timer::PushPull => {
                // Dead members too: that is how a partition heals and a restarted member
                // is heard again (serf's reconnect).
                if let Some(&to) = self.pick(1, |_| true, &[]).first() {
                    self.send_push_pull(to, true);
                }
                self.schedule(Timer::PushPull, self.config.push_pull_interval_ms);
            }
            Timer::Heartbeat => {
                let live: Vec<u64> = self
                    .others()
                    .filter(|id| self.members[id].is_live())
                    .collect();
                for to in live {
                    let packet = Packet {
                        from: self.me,
                        to,
                        body: Some(Body::Heartbeat(Heartbeat {})),
                        updates: Vec::new(),
                        from_incarnation: self.incarnation(),
                    };
                    self.outputs.push(Output::Send { to, packet });
                }
                self.schedule(Timer::Heartbeat, self.config.heartbeat_interval_ms);
            }
        }
    }

    // ----- probing ---------------------------------------------------------------

    fn probe_interval(&self) -> u64 {
        self.config.probe_interval_ms * (self.awareness + 1)
    }

    fn probe_round(&mut self, now_ms: u64) {
        if let Some(probe) = self.probe.take() {
            if probe.acked {
                self.awareness = self.awareness.saturating_sub(1);
            } else {
                self.awareness = (self.awareness + 1).min(self.config.awareness_max - 1);
                if let Some(target) = self.members.get(&probe.target).filter(|m| m.is_live()) {
                    let update = Update {
                        id: target.id,
                        incarnation: target.incarnation,
                        state: if self.config.bugs.no_suspicion {
                            MemberState::Dead
                        } else {
                            MemberState::Suspect
                        } as i32,
                        from: self.me,
                        meta: None,
                    };
                    self.apply(update, now_ms, false);
                }
            }
        }
        if self.members[&self.me].state == MemberState::Alive
            && let Some(target) = self.next_target()
        {
            let seq = self.next_seq();
            self.probe = Some(Probe {
                seq,
                target,
                acked: false,
            });
            let ping = self.ping(target, seq);
            self.outputs.push(Output::Send {
                to: target,
                packet: ping,
            });
            let timeout = self.config.probe_timeout_ms * (self.awareness + 1);
            self.schedule(Timer::ProbeTimeout { seq }, timeout);
        }
        self.schedule(Timer::Probe { round: self.round }, self.probe_interval());
    }

    fn probe_timeout(&mut self, seq: u64) {
        let Some(probe) = self.probe.clone().filter(|p| p.seq == seq && !p.acked) else {
            return;
        };
        let helpers = self.pick(
            self.config.indirect_probes,
            |m| m.state == MemberState::Alive,
            &[probe.target],
        );
        for helper in helpers {
            let packet = self.packet(
                helper,
                Body::PingReq(PingReq {
                    seq,
                    target: probe.target,
                }),
            );
            self.outputs.push(Output::Send { to: helper, packet });
        }
    }

    /// The next live member of the shuffled round-robin list, reshuffled once it has been
    /// gone through (so every member is probed within a bounded time).
    fn next_target(&mut self) -> Option<u64> {
        for _ in 0..2 {
            while self.probe_next < self.probe_order.len() {
                let id = self.probe_order[self.probe_next];
                self.probe_next += 1;
                if self.members.get(&id).is_some_and(|m| m.is_live()) {
                    return Some(id);
                }
            }
            if self.config.bugs.no_probe_refill && !self.probe_order.is_empty() {
                return None;
            }
            let mut order: Vec<u64> = self.others().collect();
            self.shuffle(&mut order);
            self.probe_order = order;
            self.probe_next = 0;
        }
        None
    }

    // ----- suspicion -------------------------------------------------------------

    fn suspicion_timeout(&mut self, id: u64, incarnation: u64, confirmations: usize, now: u64) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let Some(suspicion) = member.suspicion.as_ref() else {
            return;
        };
        if member.state != MemberState::Suspect
            || member.incarnation != incarnation
            || suspicion.confirmations() != confirmations
        {
            return;
        }
        let due = suspicion.started_ms + suspicion.timeout_ms();
        if now < due {
            // Early (the shell's timers and its `now` may disagree, under a clock-rate
            // fault say): wait out the rest rather than leave the suspicion standing.
            self.schedule(
                Timer::Suspicion {
                    id,
                    incarnation,
                    confirmations,
                },
                due - now,
            );
            return;
        }
        let update = Update {
            id,
            incarnation,
            state: MemberState::Dead as i32,
            from: self.me,
            meta: None,
        };
        self.apply(update, now, false);
    }

    fn start_suspicion(&mut self, id: u64, by: u64, now_ms: u64) -> (u64, usize) {
        let n = self.members.len();
        let min_ms = suspicion_min_ms(self.config.suspicion_mult, n, self.config.probe_interval_ms);
        let max_ms = self.config.suspicion_max_mult * min_ms;
        // memberlist's choice: confirmations are expected from the members other than
        // the suspect and this one, at most suspicion_mult - 2 of them.
        let expected = self.config.suspicion_mult.saturating_sub(2);
        let expected = if (n as u64).saturating_sub(2) < expected {
            0
        } else {
            expected
        };
        let suspicion = Suspicion {
            started_ms: now_ms,
            by: BTreeSet::from([by]),
            expected,
            min_ms,
            max_ms,
        };
        let timeout = suspicion.timeout_ms();
        self.members.get_mut(&id).expect("member").suspicion = Some(suspicion);
        (timeout, 0)
    }

    // ----- updates ---------------------------------------------------------------

    /// Applies what someone said about a member; rebroadcasts it if it was news.
    /// `merging` marks a push-pull's whole state, where a death is taken as a suspicion
    /// (memberlist's rule: the member gets its chance to refute).
    fn apply(&mut self, mut update: Update, now_ms: u64, merging: bool) {
        let Ok(state) = MemberState::try_from(update.state) else {
            return;
        };
        let state = match state {
            MemberState::Dead if merging && update.id != self.me => MemberState::Suspect,
            other => other,
        };
        if update.id == self.me {
            self.about_me(&update, state);
            return;
        }
        let news = match state {
            MemberState::Unspecified => false,
            MemberState::Alive => self.apply_alive(&update, now_ms),
            MemberState::Suspect => self.apply_suspect(&update, now_ms),
            MemberState::Dead | MemberState::Left => self.apply_down(&update, state, now_ms),
        };
        if news {
            update.state = state as i32;
            self.queue_broadcast(update);
        }
    }

    /// A packet straight from a member suspected at an older incarnation than the one it
    /// sends under: it refuted, and this member missed the refutation's retransmissions
    /// (the model checker found a run where one member did, and declared the refuter dead
    /// when its suspicion ran out). Only a suspicion is cleared: a dead member's packet may
    /// come from a restarted process whose metadata this member has not heard.
    fn heard_directly(&mut self, from: u64, incarnation: u64, now_ms: u64) {
        let Some(member) = self.members.get(&from) else {
            return;
        };
        if member.state != MemberState::Suspect || incarnation <= member.incarnation {
            return;
        }
        let update = Update {
            id: from,
            incarnation,
            state: MemberState::Alive as i32,
            from,
            meta: Some(member.meta.clone()),
        };
        self.apply(update, now_ms, false);
    }

    fn about_me(&mut self, update: &Update, state: MemberState) {
        let me = self.members.get_mut(&self.me).expect("me");
        if me.state == MemberState::Left {
            return;
        }
        let refute = match state {
            MemberState::Suspect | MemberState::Dead | MemberState::Left => {
                update.incarnation >= me.incarnation
            }
            // An alive update about me newer than mine: from an earlier life of this id.
            MemberState::Alive => update.incarnation > me.incarnation,
            MemberState::Unspecified => false,
        };
        if !refute {
            return;
        }
        me.incarnation = update.incarnation + 1;
        let incarnation = me.incarnation;
        if state != MemberState::Alive {
            // Lifeguard: being suspected suggests this member is the slow one.
            self.awareness = (self.awareness + 1).min(self.config.awareness_max - 1);
        }
        self.notify(Notification::Refuted { incarnation });
        self.queue_self_alive();
    }

    fn apply_alive(&mut self, update: &Update, now_ms: u64) -> bool {
        let meta = update.meta.clone().unwrap_or_default();
        match self.members.get_mut(&update.id) {
            None => {
                self.members.insert(
                    update.id,
                    Member {
                        id: update.id,
                        incarnation: update.incarnation,
                        state: MemberState::Alive,
                        meta,
                        since_ms: now_ms,
                        suspicion: None,
                    },
                );
                self.notify(Notification::Joined { id: update.id });
                true
            }
            Some(member) => {
                // An alive update at the member's current incarnation is news only to
                // a member that had not heard its metadata yet (a seed).
                let fresh_meta = update.incarnation == member.incarnation
                    && member.state == MemberState::Alive
                    && member.meta != meta
                    && member.meta.started_ms == 0;
                if update.incarnation <= member.incarnation && !fresh_meta {
                    return false;
                }
                let was = member.state;
                let meta_changed = member.meta != meta;
                member.incarnation = update.incarnation;
                member.state = MemberState::Alive;
                member.meta = meta;
                member.suspicion = None;
                if was != MemberState::Alive {
                    member.since_ms = now_ms;
                    let incarnation = member.incarnation;
                    self.notify(Notification::Alive {
                        id: update.id,
                        incarnation,
                    });
                } else if meta_changed {
                    self.notify(Notification::MetaChanged { id: update.id });
                }
                true
            }
        }
    }

    fn apply_suspect(&mut self, update: &Update, now_ms: u64) -> bool {
        let Some(member) = self.members.get_mut(&update.id) else {
            return false;
        };
        if update.incarnation < member.incarnation || !member.is_live() {
            return false;
        }
        if member.state == MemberState::Suspect && update.incarnation == member.incarnation {
            // A confirmation: news only if it comes from someone new.
            let suspicion = member
                .suspicion
                .as_mut()
                .expect("a suspect has a suspicion");
            if !suspicion.by.insert(update.from) {
                return false;
            }
            let (id, incarnation) = (member.id, member.incarnation);
            let confirmations = suspicion.confirmations();
            let due = (suspicion.started_ms + suspicion.timeout_ms()).saturating_sub(now_ms);
            self.schedule(
                Timer::Suspicion {
                    id,
                    incarnation,
                    confirmations,
                },
                due,
            );
            return true;
        }
        member.state = MemberState::Suspect;
        member.incarnation = update.incarnation;
        member.since_ms = now_ms;
        let (timeout, confirmations) = self.start_suspicion(update.id, update.from, now_ms);
        self.schedule(
            Timer::Suspicion {
                id: update.id,
                incarnation: update.incarnation,
                confirmations,
            },
            timeout,
        );
        self.notify(Notification::Suspect {
            id: update.id,
            incarnation: update.incarnation,
            by: update.from,
        });
        true
    }

    fn apply_down(&mut self, update: &Update, state: MemberState, now_ms: u64) -> bool {
        let Some(member) = self.members.get_mut(&update.id) else {
            return false;
        };
        if update.incarnation < member.incarnation || !member.is_live() {
            return false;
        }
        member.state = state;
        member.incarnation = update.incarnation;
        member.since_ms = now_ms;
        member.suspicion = None;
        let note = if state == MemberState::Left {
            Notification::Left { id: update.id }
        } else {
            Notification::Dead {
                id: update.id,
                incarnation: update.incarnation,
                by: update.from,
            }
        };
        self.notify(note);
        true
    }

    // ----- sending ---------------------------------------------------------------

    fn queue_self_alive(&mut self) {
        let me = &self.members[&self.me];
        let update = Update {
            id: self.me,
            incarnation: me.incarnation,
            state: MemberState::Alive as i32,
            from: self.me,
            meta: Some(me.meta.clone()),
        };
        self.queue_broadcast(update);
    }

    fn queue_broadcast(&mut self, update: Update) {
        self.broadcasts
            .insert(update.id, Broadcast { update, sent: 0 });
    }

    fn state_of(&self, member: &Member) -> Update {
        Update {
            id: member.id,
            incarnation: member.incarnation,
            state: member.state as i32,
            from: self.me,
            meta: (member.state == MemberState::Alive || member.id == self.me)
                .then(|| member.meta.clone()),
        }
    }

    fn send_push_pull(&mut self, to: u64, reply: bool) {
        let members = self.members.values().map(|m| self.state_of(m)).collect();
        let packet = Packet {
            from: self.me,
            to,
            body: Some(Body::PushPull(PushPull { members, reply })),
            updates: Vec::new(),
            from_incarnation: self.incarnation(),
        };
        self.outputs.push(Output::Send { to, packet });
    }

    fn ping(&mut self, target: u64, seq: u64) -> Packet {
        let mut packet = self.packet(target, Body::Ping(Ping { seq }));
        // The buddy system: a suspect learns of its suspicion from the probe itself.
        if let Some(member) = self
            .members
            .get(&target)
            .filter(|m| m.state == MemberState::Suspect)
        {
            let suspicion = Update {
                id: target,
                incarnation: member.incarnation,
                state: MemberState::Suspect as i32,
                from: self.me,
                meta: None,
            };
            packet.updates.retain(|u| u.id != target);
            packet.updates.insert(0, suspicion);
        }
        packet
    }

    /// A packet to `to` with as many pending updates as fit, fewest-sent first.
    fn packet(&mut self, to: u64, body: Body) -> Packet {
        let limit = retransmit_limit(self.config.retransmit_mult, self.members.len());
        let mut order: Vec<(u64, u64)> = self
            .broadcasts
            .iter()
            .map(|(&id, b)| (b.sent, id))
            .collect();
        order.sort_unstable();
        let mut updates = Vec::new();
        let mut bytes = 64;
        for (_, id) in order.into_iter().take(self.config.updates_per_packet) {
            let broadcast = self.broadcasts.get_mut(&id).expect("listed");
            let size = broadcast.update.encoded_len() + 4;
            if bytes + size > PACKET_BYTES_MAX {
                break;
            }
            bytes += size;
            updates.push(broadcast.update.clone());
            broadcast.sent += 1;
            if broadcast.sent >= limit {
                self.broadcasts.remove(&id);
            }
        }
        Packet {
            from: self.me,
            to,
            body: Some(body),
            updates,
            from_incarnation: self.incarnation(),
        }
    }

    fn schedule(&mut self, timer: Timer, after_ms: u64) {
        self.outputs.push(Output::Schedule { timer, after_ms });
    }

    fn notify(&mut self, note: Notification) {
        self.outputs.push(Output::Notify(note));
    }

    fn others(&self) -> impl Iterator<Item = u64> + '_ {
        self.members
            .keys()
            .copied()
            .filter(move |&id| id != self.me)
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Up to `count` distinct other members that pass `keep`, none of `except`, at random.
    fn pick(&mut self, count: usize, keep: impl Fn(&Member) -> bool, except: &[u64]) -> Vec<u64> {
        let mut candidates: Vec<u64> = self
            .members
            .values()
            .filter(|m| m.id != self.me && !except.contains(&m.id) && keep(m))
            .map(|m| m.id)
            .collect();
        self.shuffle(&mut candidates);
        candidates.truncate(count);
        candidates
    }

    /// splitmix64: small, seeded and part of the hashed state, so runs replay.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle(&mut self, items: &mut [u64]) {
        for i in (1..items.len()).rev() {
            let j = (self.random() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    #[test]
    fn suspicion_timeouts_fall_with_confirmations_from_a_table() {
        // (confirmations, expected, min, max) -> timeout; memberlist's suspicion_test.go
        // shape: max with none, min once `expected` agree, min at once if none expected.
        let table = [
            (0, 3, 2_000, 30_000, 30_000),
            (1, 3, 2_000, 30_000, 16_000),
            (2, 3, 2_000, 30_000, 7_810),
            (3, 3, 2_000, 30_000, 2_000),
            (4, 3, 2_000, 30_000, 2_000),
            (0, 0, 2_000, 30_000, 2_000),
        ];
        for (c, k, min, max, want) in table {
            assert_eq!(suspicion_timeout_ms(c, k, min, max), want, "{c} of {k}");
        }
        assert_eq!(suspicion_min_ms(4, 3, 1_000), 4_000);
        assert_eq!(suspicion_min_ms(4, 100, 1_000), 8_000);
        assert_eq!(retransmit_limit(4, 3), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
    }

    /// An in-memory network of cores that encodes every packet, with a drop filter and
    /// per-member pauses; time moves in 10 ms steps.
    struct Net {
        nodes: BTreeMap<u64, Swim>,
        timers: BinaryHeap<std::cmp::Reverse<(u64, u64, Timer)>>,
        inflight: Vec<(u64, u64, Vec<u8>)>,
        now: u64,
        down: BTreeSet<u64>,
        cut: BTreeSet<(u64, u64)>,
        notes: Vec<(u64, u64, Notification)>,
    }

    impl Net {
        fn new(n: u64, config: SwimConfig) -> Self {
            let seeds: Vec<(u64, String)> = (1..=n)
                .map(|id| (id, format!("10.0.0.{id}:7000")))
                .collect();
            let mut net = Net {
                nodes: BTreeMap::new(),
                timers: BinaryHeap::new(),
                inflight: Vec::new(),
                now: 0,
                down: BTreeSet::new(),
                cut: BTreeSet::new(),
                notes: Vec::new(),
            };
            for id in 1..=n {
                let meta = MemberMeta {
                    address: format!("10.0.0.{id}:7000"),
                    started_ms: id,
                    ..Default::default()
                };
                let mut swim = Swim::new(config.clone(), id, meta, &seeds);
                swim.start(0);
                net.nodes.insert(id, swim);
                net.collect(id);
            }
            net
        }

        fn collect(&mut self, id: u64) {
            for output in self.nodes.get_mut(&id).unwrap().take_outputs() {
                match output {
                    Output::Send { to, packet } => {
                        self.inflight.push((id, to, packet.encode_to_vec()));
                    }
                    Output::Schedule { timer, after_ms } => {
                        self.timers
                            .push(std::cmp::Reverse((self.now + after_ms, id, timer)));
                    }
                    Output::Notify(note) => self.notes.push((self.now, id, note)),
                }
            }
        }

        fn run_for(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 10;
                for (from, to, bytes) in std::mem::take(&mut self.inflight) {
                    if self.down.contains(&to)
                        || self.down.contains(&from)
                        || self.cut.contains(&(from, to))
                    {
                        continue;
                    }
                    let _ = self
                        .nodes
                        .get_mut(&to)
                        .unwrap()
                        .handle_bytes(&bytes, self.now);
                    self.collect(to);
                }
                while let Some(std::cmp::Reverse((at, id, timer))) = self.timers.peek().cloned() {
                    if at > self.now {
                        break;
                    }
                    self.timers.pop();
                    if self.down.contains(&id) {
                        // A paused member's timers fire once it resumes.
                        self.timers
                            .push(std::cmp::Reverse((self.now + 10, id, timer)));
                        continue;
                    }
                    self.nodes
                        .get_mut(&id)
                        .unwrap()
                        .handle_timer(timer, self.now);
                    self.collect(id);
                }
            }
        }

        fn state(&self, at: u64, of: u64) -> MemberState {
            self.nodes[&at].member(of).unwrap().state
        }
    }

    #[test]
    fn a_silent_member_is_suspected_then_declared_dead_by_everyone() {
        let mut net = Net::new(5, SwimConfig::default());
        net.run_for(3_000);
        assert!(net.notes.iter().all(|(_, _, n)| !matches!(
            n,
            Notification::Suspect { .. } | Notification::Dead { .. }
        )));
        net.down.insert(3);
        let killed = net.now;
        net.run_for(20_000);
        for at in [1, 2, 4, 5] {
            assert_eq!(net.state(at, 3), MemberState::Dead, "at {at}");
        }
        let suspected = net
            .notes
            .iter()
            .find(|(_, _, n)| matches!(n, Notification::Suspect { id: 3, .. }))
            .map(|(t, _, _)| t - killed)
            .unwrap();
        let dead = net
            .notes
            .iter()
            .find(|(_, _, n)| matches!(n, Notification::Dead { id: 3, .. }))
            .map(|(t, _, _)| t - killed)
            .unwrap();
        assert!(suspected < dead);
        // Nobody else was accused.
        assert!(
            net.notes
                .iter()
                .all(|(_, _, n)| !matches!(n, Notification::Dead { id, .. } if *id != 3))
        );
    }

    #[test]
    fn one_bad_link_does_not_condemn_a_member_thanks_to_indirect_probes() {
        let mut net = Net::new(4, SwimConfig::default());
        net.cut.insert((1, 2));
        net.cut.insert((2, 1));
        net.run_for(30_000);
        for at in 1..=4 {
            for of in 1..=4 {
                assert_eq!(net.state(at, of), MemberState::Alive, "{at} sees {of}");
            }
        }
    }

    #[test]
    fn a_paused_member_refutes_its_suspicion_and_stays_alive() {
        let mut net = Net::new(5, SwimConfig::default());
        net.run_for(2_000);
        // Paused for less than the suspicion timeout: suspected, then it refutes.
        net.down.insert(4);
        net.run_for(2_500);
        net.down.remove(&4);
        net.run_for(10_000);
        for at in 1..=5 {
            assert_eq!(net.state(at, 4), MemberState::Alive, "at {at}");
        }
        assert!(net.nodes[&4].incarnation() >= 1, "it refuted");
    }

    #[test]
    fn a_packet_from_a_suspect_under_a_newer_incarnation_clears_the_suspicion() {
        let seeds: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("m{id}"))).collect();
        let mut swim = Swim::new(SwimConfig::default(), 1, MemberMeta::default(), &seeds);
        let gossip = |from: u64, from_incarnation: u64, updates: Vec<Update>| Packet {
            from,
            to: 1,
            body: Some(Body::Gossip(Gossip {})),
            updates,
            from_incarnation,
        };
        let suspicion = Update {
            id: 2,
            incarnation: 0,
            state: MemberState::Suspect as i32,
            from: 3,
            meta: None,
        };
        swim.handle_packet(gossip(3, 0, vec![suspicion]), 10)
            .unwrap();
        assert_eq!(swim.member(2).unwrap().state, MemberState::Suspect);
        // Its word at the suspected incarnation refutes nothing.
        swim.handle_packet(gossip(2, 0, Vec::new()), 11).unwrap();
        assert_eq!(swim.member(2).unwrap().state, MemberState::Suspect);
        // It refuted, and its refutation's retransmissions missed this member.
        swim.handle_packet(gossip(2, 1, Vec::new()), 12).unwrap();
        let member = swim.member(2).unwrap();
        assert_eq!((member.state, member.incarnation), (MemberState::Alive, 1));
    }

    #[test]
    fn the_seeded_bug_condemns_a_briefly_paused_member() {
        let config = SwimConfig {
            bugs: SwimBugs {
                no_suspicion: true,
                ..SwimBugs::default()
            },
            ..SwimConfig::default()
        };
        let mut net = Net::new(5, config);
        net.run_for(2_000);
        net.down.insert(4);
        net.run_for(2_500);
        net.down.remove(&4);
        net.run_for(500);
        assert!(
            net.notes
                .iter()
                .any(|(_, _, n)| matches!(n, Notification::Dead { id: 4, .. }))
        );
    }

    #[test]
    fn a_dead_member_that_comes_back_rejoins_with_a_higher_incarnation() {
        let mut net = Net::new(3, SwimConfig::default());
        net.run_for(2_000);
        net.down.insert(2);
        net.run_for(15_000);
        assert_eq!(net.state(1, 2), MemberState::Dead);
        // Restarted: a fresh core, incarnation 0, that knows only the seeds.
        let seeds: Vec<(u64, String)> = (1..=3)
            .map(|id| (id, format!("10.0.0.{id}:7000")))
            .collect();
        let meta = MemberMeta {
            address: "10.0.0.2:7000".into(),
            started_ms: 99,
            ..Default::default()
        };
        let mut fresh = Swim::new(SwimConfig::default(), 2, meta, &seeds);
        fresh.start(net.now);
        // The old process's timers died with it.
        net.timers = net.timers.drain().filter(|t| t.0.1 != 2).collect();
        net.nodes.insert(2, fresh);
        net.down.remove(&2);
        net.collect(2);
        net.run_for(10_000);
        for at in [1, 3] {
            assert_eq!(net.state(at, 2), MemberState::Alive, "at {at}");
            assert_eq!(net.nodes[&at].member(2).unwrap().meta.started_ms, 99);
        }
        assert!(net.nodes[&2].incarnation() >= 1);
    }

    #[test]
    fn metadata_spreads_and_the_oldest_alive_member_coordinates() {
        let mut net = Net::new(4, SwimConfig::default());
        net.run_for(2_000);
        for at in 1..=4 {
            assert_eq!(net.nodes[&at].coordinator(), Some(1));
        }
        let mut meta = net.nodes[&3].member(3).unwrap().meta.clone();
        meta.leads = vec![7, 9];
        net.nodes.get_mut(&3).unwrap().set_meta(meta);
        net.collect(3);
        net.down.insert(1);
        net.run_for(20_000);
        for at in 2..=4 {
            assert_eq!(net.nodes[&at].member(3).unwrap().meta.leads, vec![7, 9]);
            assert_eq!(net.nodes[&at].coordinator(), Some(2), "at {at}");
        }
    }

    #[test]
    fn bad_bytes_and_misaddressed_packets_change_nothing() {
        let mut swim = Swim::new(SwimConfig::default(), 1, MemberMeta::default(), &[]);
        let before = swim.clone();
        assert!(matches!(
            swim.handle_bytes(b"\xff\xff\xff", 5),
            Err(SwimError::Malformed(_))
        ));
        let packet = Packet {
            from: 2,
            to: 9,
            body: Some(Body::Ping(Ping { seq: 1 })),
            updates: Vec::new(),
            from_incarnation: 0,
        };
        assert_eq!(
            swim.handle_packet(packet, 5),
            Err(SwimError::NotForMe { to: 9 })
        );
        assert_eq!(swim, before);
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn heartbeats_go_to_every_live_member_and_decode_as_heartbeats() {
        let seeds = vec![
            (1, "a".to_string()),
            (2, "b".to_string()),
            (3, "c".to_string()),
        ];
        let mut swim = Swim::new(SwimConfig::default(), 1, MemberMeta::default(), &seeds);
        swim.start(0);
        swim.take_outputs();
        swim.handle_timer(Timer::Heartbeat, 1_000);
        let sent: Vec<(u64, Packet)> = swim
            .take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { to, packet } => Some((to, packet)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let bytes = sent[0].1.encode_to_vec();
        let back = Packet::decode(bytes.as_slice()).unwrap();
        assert!(matches!(back.body, Some(Body::Heartbeat(_))), "{back:?}");
    }
}
