//! A deterministic network of the node's own SWIM cores in virtual time: every packet is
//! encoded and decoded, delivered after a fixed latency or dropped with a seeded
//! probability, and every timer fires at its virtual deadline. What `faultline bench
//! --gossip` measures detection times and false positives on: the protocol's timing with
//! memberlist's parameters, free of the host's scheduling (the real-process figures come
//! from `faultline run membership`, whose checker reports each kill's detection times).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use prost::Message as _;

use super::swim::{Notification, Output, Swim, SwimConfig, Timer};
use crate::proto::membership::{MemberMeta, MemberState};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    /// Each packet is lost with this probability, independently.
    pub loss: f64,
    pub latency_ms: u64,
    pub swim: SwimConfig,
    pub seed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trial {
    /// From the kill to the first suspicion of the killed node, by anyone.
    pub suspected_ms: Option<u64>,
    /// From the kill until every live member holds it dead.
    pub dead_everywhere_ms: Option<u64>,
    /// Suspicions of live members during the trial (each once, however many heard it).
    pub false_suspicions: usize,
    /// Deaths of live members during the trial (each once).
    pub false_deaths: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver { to: u64, slot: usize },
    Fire { node: u64, timer: Timer },
}

struct Sim {
    nodes: Vec<Swim>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    packets: Vec<Option<Vec<u8>>>,
    seq: u64,
    now: u64,
    rng: u64,
    loss: f64,
    latency: u64,
    down: BTreeSet<u64>,
    notes: Vec<(u64, u64, Notification)>,
}

impl Sim {
    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn collect(&mut self, id: u64) {
        let outputs = self.nodes[id as usize - 1].take_outputs();
        for output in outputs {
            match output {
                Output::Send { to, packet } => {
                    if self.random() < self.loss {
                        continue;
                    }
                    self.packets.push(Some(packet.encode_to_vec()));
                    let slot = self.packets.len() - 1;
                    self.push(self.now + self.latency, Ev::Deliver { to, slot });
                }
                Output::Schedule { timer, after_ms } => {
                    self.push(self.now + after_ms, Ev::Fire { node: id, timer });
                }
                Output::Notify(note) => self.notes.push((self.now, id, note)),
            }
        }
    }

    fn run_until(&mut self, end: u64) {
        while let Some(Reverse((at, _, ev))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            match ev {
                Ev::Deliver { to, slot } => {
                    let bytes = self.packets[slot].take().expect("delivered once");
                    if self.down.contains(&to) {
                        continue;
                    }
                    let _ = self.nodes[to as usize - 1].handle_bytes(&bytes, at);
                    self.collect(to);
                }
                Ev::Fire { node, timer } => {
                    if self.down.contains(&node) {
                        continue;
                    }
                    self.nodes[node as usize - 1].handle_timer(timer, at);
                    self.collect(node);
                }
            }
        }
        self.now = end;
    }
}

/// One trial: `config.nodes` members gossip for `warmup_ms`, then the last is killed and
/// the run goes on for `horizon_ms`.
pub fn detection_trial(config: &SimConfig, warmup_ms: u64, horizon_ms: u64) -> Trial {
    let n = config.nodes as u64;
    let seeds: Vec<(u64, String)> = (1..=n).map(|id| (id, format!("node-{id}"))).collect();
    let mut sim = Sim {
        nodes: Vec::new(),
        queue: BinaryHeap::new(),
        packets: Vec::new(),
        seq: 0,
        now: 0,
        rng: config.seed ^ 0xA5A5_5A5A,
        loss: config.loss,
        latency: config.latency_ms.max(1),
        down: BTreeSet::new(),
        notes: Vec::new(),
    };
    for id in 1..=n {
        let swim = SwimConfig {
            seed: config.seed.wrapping_mul(31).wrapping_add(id),
            ..config.swim.clone()
        };
        let meta = MemberMeta {
            address: format!("node-{id}"),
            started_ms: id,
            ..Default::default()
        };
        let mut core = Swim::new(swim, id, meta, &seeds);
        // Members start at unrelated moments within a probe interval, as processes do,
        // so that their probe rounds do not line up.
        let offset = (sim.random() * config.swim.probe_interval_ms as f64) as u64;
        sim.now = offset;
        core.start(offset);
        sim.nodes.push(core);
        sim.collect(id);
    }
    sim.now = 0;
    // And the kill lands anywhere within a probe interval.
    let jitter = (sim.random() * config.swim.probe_interval_ms as f64) as u64;
    sim.run_until(warmup_ms + jitter);
    let killed = n;
    let killed_at = sim.now;
    sim.down.insert(killed);
    let mut trial = Trial::default();
    let step = 10;
    let mut t = killed_at;
    while t < killed_at + horizon_ms {
        t += step;
        sim.run_until(t);
        if trial.dead_everywhere_ms.is_none()
            && sim.nodes[..killed as usize - 1].iter().all(|core| {
                core.member(killed)
                    .is_some_and(|m| m.state == MemberState::Dead)
            })
        {
            trial.dead_everywhere_ms = Some(t - killed_at);
        }
    }
    // A suspicion is one event however many members hear of it: counted by (member,
    // incarnation).
    let mut suspicions = BTreeSet::new();
    let mut deaths = BTreeSet::new();
    for (at, _, note) in &sim.notes {
        match note {
            Notification::Suspect { id, .. } if *id == killed && *at >= killed_at => {
                trial.suspected_ms.get_or_insert(at - killed_at);
            }
            Notification::Suspect {
                id, incarnation, ..
            } if *id != killed => {
                suspicions.insert((*id, *incarnation));
            }
            Notification::Dead {
                id, incarnation, ..
            } if *id != killed => {
                deaths.insert((*id, *incarnation));
            }
            _ => {}
        }
    }
    trial.false_suspicions = suspicions.len();
    trial.false_deaths = deaths.len();
    trial
}

/// The `q` quantile (0..=1) of `values`, by nearest rank.
pub fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_is_detected_within_memberlists_bounds_and_replays_from_its_seed() {
        let config = SimConfig {
            nodes: 5,
            loss: 0.0,
            latency_ms: 1,
            swim: SwimConfig::default(),
            seed: 7,
        };
        let trial = detection_trial(&config, 5_000, 60_000);
        let suspected = trial.suspected_ms.expect("suspected");
        let dead = trial.dead_everywhere_ms.expect("dead everywhere");
        // A probe round reaches it within 2(n-1) intervals; the suspicion lasts at least
        // the minimum (4 s on 5 nodes) and at most six times that.
        assert!(suspected <= 2 * 4 * 1_000 + 1_000, "{trial:?}");
        assert!(
            dead >= 4_000 && dead <= suspected + 24_000 + 1_000,
            "{trial:?}"
        );
        assert_eq!(trial.false_suspicions + trial.false_deaths, 0);
        assert_eq!(detection_trial(&config, 5_000, 60_000), trial, "seeded");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut values = vec![5, 1, 4, 2, 3];
        assert_eq!(quantile(&mut values, 0.5), Some(3));
        assert_eq!(quantile(&mut values, 0.99), Some(5));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
