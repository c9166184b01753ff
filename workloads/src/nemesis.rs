//! The nemesis schedule: which fault starts when, for how long, and against which nodes.
//!
//! The schedule is computed up front from the workload and a seed, so a run's faults can be
//! replayed exactly and logged before they happen. Node indices are 0-based positions in the
//! cluster's node list (index 0 is `n1`). Targets that only exist at run time (the leader) are
//! left symbolic for the harness to resolve when the fault starts.
//!
//! Slot `k` (k = 1, 2, ...) starts at `k * interval_secs`: the first fault waits one interval so
//! that the cluster has elected a leader, and no fault starts later than `time_limit_secs -
//! interval_secs` so that the cluster has time to recover before the final reads. Each fault lasts
//! a seeded 25-75% of the interval, which leaves the cluster healthy for a while between faults.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

use crate::generator::{DOMAIN_NEMESIS, derive_rng};
use crate::schema::{ALL_SHAPES, FaultName, KillTarget, ShapeName, Workload};

/// Bounds of a fault's length, as a fraction of the interval.
const MIN_FAULT_FRACTION: f64 = 0.25;
const MAX_FAULT_FRACTION: f64 = 0.75;
/// Bounds of packet loss probability, in percent.
const LOSS_PERCENT: std::ops::RangeInclusive<u32> = 10..=50;
/// Bounds of a clock step: from barely noticeable to far beyond any lease or election timeout.
const MIN_CLOCK_OFFSET_MS: f64 = 10.0;
const MAX_CLOCK_OFFSET_MS: f64 = 60_000.0;
/// Upper bound on schedule length, whatever the workload says.
const MAX_FAULTS: u64 = 1_000_000;

/// One fault in the schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduledFault {
    /// When the fault starts, since the start of the run.
    pub at: Duration,
    /// How long it lasts; the harness heals it at `at + duration`.
    pub duration: Duration,
    /// What to do.
    pub fault: FaultKind,
}

/// A node to hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Target {
    /// The node with this index, chosen by the seed.
    Random(usize),
    /// Whichever node leads when the fault starts.
    Leader,
    /// Every node (only for kill).
    All,
}

/// A fault with every detail the seed decides.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum FaultKind {
    /// SIGKILL the node; restart it when the fault ends.
    Kill {
        /// The node.
        target: Target,
    },
    /// Arm the node's `txn-after-prepare` failpoint: it kills itself once a transaction
    /// it coordinates has every participant prepared, before the commit. Restarted when
    /// the fault ends.
    KillCoordinator {
        /// The node.
        target: Target,
        /// At the `txn-after-commit` failpoint instead: committed at the primary, no
        /// other participant told.
        after_commit: bool,
    },
    /// SIGSTOP the node; SIGCONT it when the fault ends.
    Pause {
        /// The node.
        target: Target,
    },
    /// Drop the packets of the links the shape cuts.
    Partition {
        /// Which links.
        shape: Shape,
    },
    /// Drop each packet on the links with this probability.
    Loss {
        /// Probability in [0.1, 0.5] that a packet is dropped.
        probability: f64,
        /// Which links.
        between: Links,
    },
    /// Step the node's clock by `offset_ms` (negative: backwards); step it back when the fault
    /// ends.
    Clock {
        /// The node.
        target: Target,
        /// The step, in milliseconds.
        offset_ms: i64,
    },
    /// Run the node's clock `rate` times as fast as true time (timers and the hybrid
    /// logical clock alike); back to 1.0 when the fault ends.
    ClockRate {
        /// The node.
        target: Target,
        /// 0.25 to 4.
        rate: f64,
    },
    /// Slow the leader's clock to `rate` of true time and cut it off from every other node;
    /// heal both when the fault ends.
    LeaseSkew {
        /// Below 1.
        rate: f64,
    },
    /// Jump the node's clock `amplitude_ms` ahead, then as far behind, and back, every
    /// `period_ms`, until the fault ends.
    ClockStrobe {
        /// The node.
        target: Target,
        amplitude_ms: i64,
        period_ms: u64,
    },
    /// Stop the node, damage the tail of its write-ahead log, restart it; the fault's end is when
    /// the node must have caught up again.
    CorruptWal {
        /// The node.
        target: Target,
        /// How to damage the log.
        mode: CorruptMode,
    },
    /// On three nodes: the leader is cut off until it steps down, then wins the next term
    /// with the vote of one follower over a slowed link; that voter is killed and restarted
    /// before the new leader's first append reaches it, and the third node, which never
    /// heard of the new term, asks it for a vote in that same term. A voter that forgets
    /// its vote elects a second leader. Roles are chosen when the fault starts, from the
    /// nodes' state; the fault ends by healing everything.
    RestartVoter,
    /// The leader is cut off until it has appended entries that nobody else has (a write it
    /// is made to append, and any its clients send) and has stepped down, and until a new
    /// leader has committed entries of a later term at those same indices (past the old
    /// leader's last index, so that the old leader's whole uncommitted suffix conflicts).
    /// Then it heals: a correct follower truncates the suffix, one that keeps it applies
    /// entries no quorum agreed on. Whether that condition was reached is reported.
    DivergeLeader,
    /// Split the range that holds one of the workload's keys at that key. `pick` chooses the
    /// key among those the harness offers (the workload's keys that do not already start a
    /// range) when the fault starts, since which ranges exist then depends on earlier
    /// splits.
    Split {
        /// Seeded; the key is `keys[pick % keys.len()]`.
        pick: u64,
    },
    /// Merge a range with the one after it; `pick` chooses the range among those that
    /// have one after them, when the fault starts.
    Merge {
        /// Seeded.
        pick: u64,
    },
    /// Move a replica of a partition to a node that holds none: `pick` chooses the
    /// partition, the replica and the node among those that exist when the fault starts.
    Move {
        /// Seeded.
        pick: u64,
    },
    /// Hand a partition's leadership to another of its voters; `pick` chooses both when
    /// the fault starts.
    ShuffleLeader {
        /// Seeded.
        pick: u64,
    },
    /// Start one more node, which joins the cluster; when the fault ends, drain it
    /// (its replicas move to the others), remove it and stop it. `pick` chooses the node
    /// it joins through.
    Membership {
        /// Seeded.
        pick: u64,
    },
    /// Add a learner to a partition and, once it has caught up, cut it and one of the
    /// partition's voters off from every other node; heal and remove the learner when the
    /// fault ends. A minority with a learner must not elect a leader.
    LearnerPartition,
    /// Two leaders of one partition each make a one-server membership change from the
    /// same configuration (the 2015 single-server race): its leader appends a removal
    /// alone and is killed, a rival that cannot commit its no-op is asked for another
    /// removal, then the first returns on the other side of a cut. Four replicas.
    ConfigRace,
}

impl FaultKind {
    /// The fault's name as written in YAML (`kill`, `corrupt-wal`, ...), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill { .. } => "kill",
            FaultKind::KillCoordinator {
                after_commit: false,
                ..
            } => "kill-coordinator",
            FaultKind::KillCoordinator {
                after_commit: true, ..
            } => "kill-coordinator-after-commit",
            FaultKind::Pause { .. } => "pause",
            FaultKind::Partition { .. } => "partition",
            FaultKind::Loss { .. } => "loss",
            FaultKind::Clock { .. } => "clock",
            FaultKind::ClockRate { .. } => "clock-rate",
            FaultKind::ClockStrobe { .. } => "clock-strobe",
            FaultKind::LeaseSkew { .. } => "lease-skew",
            FaultKind::CorruptWal { .. } => "corrupt-wal",
            FaultKind::RestartVoter => "restart-voter",
            FaultKind::DivergeLeader => "diverge-leader",
            FaultKind::Split { .. } => "split",
            FaultKind::Merge { .. } => "merge",
            FaultKind::Move { .. } => "move",
            FaultKind::ShuffleLeader { .. } => "shuffle-leader",
            FaultKind::Membership { .. } => "membership",
            FaultKind::LearnerPartition => "learner-partition",
            FaultKind::ConfigRace => "config-race",
        }
    }

    /// Faults that set up a specific condition, and report whether they reached it: a run
    /// in which none did shows nothing about the bug the condition exposes.
    pub fn has_precondition(&self) -> bool {
        matches!(
            self,
            FaultKind::RestartVoter
                | FaultKind::KillCoordinator { .. }
                | FaultKind::DivergeLeader
                | FaultKind::LearnerPartition
                | FaultKind::ConfigRace
        )
    }
}

/// Which links a loss fault affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Links {
    /// Every link between nodes.
    All,
    /// Both directions between these two nodes.
    Pair(usize, usize),
}

/// How a write-ahead log is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CorruptMode {
    /// Cut the last segment short, as a crash during a write would.
    Truncate,
    /// Flip bytes near the end of the last segment, as a bad disk would; checksums must catch it.
    FlipBytes,
}

/// A partition with its nodes chosen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Shape {
    /// `node` is cut off from every other node.
    IsolateOne {
        /// The isolated node.
        node: usize,
    },
    /// The leader at the time the fault starts is cut off.
    IsolateLeader,
    /// Nodes in `minority` cannot talk to nodes in `majority`.
    Halves {
        /// The smaller side (`node_count / 2` nodes), sorted.
        minority: Vec<usize>,
        /// The larger side, sorted.
        majority: Vec<usize>,
    },
    /// Nodes placed around a ring; each talks only to its nearest neighbours, enough to form a
    /// majority with itself, so every node sees a majority but no two see the same one.
    MajorityRing {
        /// Every node once, in ring order.
        ring: Vec<usize>,
    },
    /// `left` and `right` cannot talk to each other; `bridge` talks to both.
    Bridge {
        /// One side, sorted.
        left: Vec<usize>,
        /// The node connecting the sides.
        bridge: usize,
        /// The other side, sorted.
        right: Vec<usize>,
    },
    /// One direction of `node`'s traffic is dropped.
    OneWay {
        /// The node.
        node: usize,
        /// Which direction is dropped.
        direction: Direction,
    },
}

/// The dropped direction of a one-way partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    /// The node's messages to others are dropped; it still hears them (a deposed leader that
    /// keeps receiving).
    Outbound,
    /// Messages to the node are dropped; it still sends (a node that keeps campaigning).
    Inbound,
}

impl Shape {
    /// The directed links `(from, to)` whose packets the shape drops, sorted, for a cluster of
    /// `node_count` nodes. `leader` resolves `IsolateLeader`; without one, nothing is cut.
    pub fn dropped_links(&self, node_count: usize, leader: Option<usize>) -> Vec<(usize, usize)> {
        let nodes = 0..node_count;
        let isolate = |node: usize| -> Vec<(usize, usize)> {
            nodes
                .clone()
                .filter(|&other| other != node)
                .flat_map(|other| [(node, other), (other, node)])
                .collect()
        };
        let between = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
            a.iter()
                .flat_map(|&x| b.iter().flat_map(move |&y| [(x, y), (y, x)]))
                .collect()
        };
        let mut links = match self {
            Shape::IsolateOne { node } => isolate(*node),
            Shape::IsolateLeader => leader.map(isolate).unwrap_or_default(),
            Shape::Halves { minority, majority } => between(minority, majority),
            Shape::Bridge { left, right, .. } => between(left, right),
            Shape::OneWay { node, direction } => nodes
                .clone()
                .filter(|other| other != node)
                .map(|other| match direction {
                    Direction::Outbound => (*node, other),
                    Direction::Inbound => (other, *node),
                })
                .collect(),
            Shape::MajorityRing { ring } => {
                let n = ring.len();
                let reach = ring_reach(n);
                let mut links = Vec::new();
                for (i, &a) in ring.iter().enumerate() {
                    for (j, &b) in ring.iter().enumerate() {
                        let distance = i.abs_diff(j).min(n - i.abs_diff(j));
                        if i != j && distance > reach {
                            links.push((a, b));
                        }
                    }
                }
                links
            }
        };
        links.retain(|&(a, b)| a < node_count && b < node_count);
        links.sort_unstable();
        links.dedup();
        links
    }
}

/// How far along the ring (each way) a node sees in a majority ring of `n` nodes: the fewest
/// neighbours that, with the node itself, make a majority.
fn ring_reach(n: usize) -> usize {
    let majority = n / 2 + 1;
    (majority - 1).div_ceil(2)
}

/// The fewest nodes a shape needs to cut anything meaningful: a bridge needs two sides and a
/// bridge; a ring of fewer than four nodes connects everyone.
fn shape_applies(shape: ShapeName, node_count: usize) -> bool {
    match shape {
        ShapeName::IsolateOne | ShapeName::IsolateLeader | ShapeName::Halves => node_count >= 2,
        ShapeName::OneWay => node_count >= 2,
        ShapeName::Bridge => node_count >= 3,
        ShapeName::MajorityRing => node_count >= 4,
    }
}

/// The faults to inject in a run of `workload` on `node_count` nodes, in start order. Empty
/// without a nemesis, or with no nodes. A partition is never chosen when no configured shape
/// applies to `node_count` (e.g. one node).
pub fn nemesis_schedule(workload: &Workload, seed: u64, node_count: usize) -> Vec<ScheduledFault> {
    let Some(nemesis) = &workload.nemesis else {
        return Vec::new();
    };
    let configured_shapes = nemesis.partition_shapes.as_deref().unwrap_or(&ALL_SHAPES);
    let shapes: Vec<ShapeName> = configured_shapes
        .iter()
        .copied()
        .filter(|&shape| shape_applies(shape, node_count))
        .collect();
    let faults: Vec<FaultName> = nemesis
        .faults
        .iter()
        .copied()
        .filter(|&fault| fault != FaultName::Partition || !shapes.is_empty())
        .collect();
    // Whole nanoseconds keep slot times exact multiples of the interval (no float drift).
    let interval_ns = (nemesis.interval_secs * 1e9).round();
    if node_count == 0 || faults.is_empty() || !(1.0..1e18).contains(&interval_ns) {
        return Vec::new();
    }
    let interval_ns = interval_ns as u64;
    let last_start_ns = workload
        .time_limit_secs
        .saturating_mul(1_000_000_000)
        .saturating_sub(interval_ns);

    let mut rng = derive_rng(seed, DOMAIN_NEMESIS);
    let kill_target = nemesis.kill_target.unwrap_or_default();
    // Drawn only for `same`, so that the other targets' schedules stay as they were.
    let same_node = (kill_target == KillTarget::Same).then(|| rng.random_range(0..node_count));
    let mut schedule = Vec::new();
    for slot in 1..=MAX_FAULTS {
        let Some(at_ns) = slot.checked_mul(interval_ns) else {
            break;
        };
        if at_ns > last_start_ns {
            break;
        }
        let fraction = rng.random_range(MIN_FAULT_FRACTION..=MAX_FAULT_FRACTION);
        let duration_ns = (interval_ns as f64 * fraction).round() as u64;
        let name = faults[rng.random_range(0..faults.len())];
        let mut fault = choose_fault(&mut rng, name, node_count, kill_target, same_node, &shapes);
        // Drawn anyway above, so that fixing the size leaves the rest of the schedule be.
        if let (FaultKind::Clock { offset_ms, .. }, Some(fixed)) =
            (&mut fault, nemesis.clock_offset_ms)
        {
            *offset_ms = fixed;
        }
        schedule.push(ScheduledFault {
            at: Duration::from_nanos(at_ns),
            duration: Duration::from_nanos(duration_ns),
            fault,
        });
    }
    schedule
}

/// The details of one fault. `node_count >= 1`; `shapes` is non-empty when `name` is partition.
fn choose_fault(
    rng: &mut ChaCha8Rng,
    name: FaultName,
    node_count: usize,
    kill_target: KillTarget,
    same_node: Option<usize>,
    shapes: &[ShapeName],
) -> FaultKind {
    let random_node = |rng: &mut ChaCha8Rng| rng.random_range(0..node_count);
    match name {
        FaultName::Kill => FaultKind::Kill {
            target: match kill_target {
                KillTarget::Random => Target::Random(random_node(rng)),
                KillTarget::Leader => Target::Leader,
                KillTarget::All => Target::All,
                KillTarget::Same => Target::Random(same_node.unwrap_or(0)),
            },
        },
        FaultName::KillCoordinator => FaultKind::KillCoordinator {
            target: Target::Random(random_node(rng)),
            after_commit: false,
        },
        FaultName::KillCoordinatorAfterCommit => FaultKind::KillCoordinator {
            target: Target::Random(random_node(rng)),
            after_commit: true,
        },
        FaultName::Pause => FaultKind::Pause {
            target: leader_or_random(rng, node_count),
        },
        FaultName::Partition => {
            let shape = shapes[rng.random_range(0..shapes.len())];
            FaultKind::Partition {
                shape: choose_shape(rng, shape, node_count),
            }
        }
        FaultName::Loss => {
            let probability = f64::from(rng.random_range(LOSS_PERCENT)) / 100.0;
            let between = if node_count >= 2 && rng.random_bool(0.5) {
                let mut nodes: Vec<usize> = (0..node_count).collect();
                let (pair, _) = nodes.partial_shuffle(rng, 2);
                Links::Pair(pair[0].min(pair[1]), pair[0].max(pair[1]))
            } else {
                Links::All
            };
            FaultKind::Loss {
                probability,
                between,
            }
        }
        FaultName::Clock => {
            // Log-uniform magnitude: small skews (which leases must tolerate) are as common as
            // huge ones (which must not break safety).
            let log_ms = rng.random_range(MIN_CLOCK_OFFSET_MS.ln()..=MAX_CLOCK_OFFSET_MS.ln());
            let magnitude_ms = log_ms.exp().round() as i64;
            let sign = if rng.random_bool(0.5) { 1 } else { -1 };
            FaultKind::Clock {
                target: leader_or_random(rng, node_count),
                offset_ms: sign * magnitude_ms,
            }
        }
        FaultName::ClockRate => {
            // Fast or slow by up to 4x, as often one as the other.
            let factor = rng.random_range(1.25f64..=4.0);
            let rate = if rng.random_bool(0.5) {
                factor
            } else {
                1.0 / factor
            };
            FaultKind::ClockRate {
                target: leader_or_random(rng, node_count),
                rate: (rate * 100.0).round() / 100.0,
            }
        }
        FaultName::ClockStrobe => FaultKind::ClockStrobe {
            target: leader_or_random(rng, node_count),
            amplitude_ms: rng.random_range(50..=2_000),
            period_ms: rng.random_range(50..=500),
        },
        FaultName::LeaseSkew => FaultKind::LeaseSkew { rate: 0.1 },
        FaultName::RestartVoter => FaultKind::RestartVoter,
        FaultName::DivergeLeader => FaultKind::DivergeLeader,
        FaultName::Split => FaultKind::Split { pick: rng.random() },
        FaultName::Merge => FaultKind::Merge { pick: rng.random() },
        FaultName::Move => FaultKind::Move { pick: rng.random() },
        FaultName::ShuffleLeader => FaultKind::ShuffleLeader { pick: rng.random() },
        FaultName::Membership => FaultKind::Membership { pick: rng.random() },
        FaultName::LearnerPartition => FaultKind::LearnerPartition,
        FaultName::ConfigRace => FaultKind::ConfigRace,
        FaultName::CorruptWal => FaultKind::CorruptWal {
            target: Target::Random(random_node(rng)),
            mode: if rng.random_bool(0.5) {
                CorruptMode::Truncate
            } else {
                CorruptMode::FlipBytes
            },
        },
    }
}

/// Pauses and clock steps hurt most on the leader, so half of them go there.
fn leader_or_random(rng: &mut ChaCha8Rng, node_count: usize) -> Target {
    if rng.random_bool(0.5) {
        Target::Leader
    } else {
        Target::Random(rng.random_range(0..node_count))
    }
}

fn choose_shape(rng: &mut ChaCha8Rng, name: ShapeName, node_count: usize) -> Shape {
    let mut nodes: Vec<usize> = (0..node_count).collect();
    nodes.shuffle(rng);
    let sorted = |slice: &[usize]| {
        let mut v = slice.to_vec();
        v.sort_unstable();
        v
    };
    match name {
        ShapeName::IsolateOne => Shape::IsolateOne { node: nodes[0] },
        ShapeName::IsolateLeader => Shape::IsolateLeader,
        ShapeName::Halves => {
            let (minority, majority) = nodes.split_at(node_count / 2);
            Shape::Halves {
                minority: sorted(minority),
                majority: sorted(majority),
            }
        }
        ShapeName::MajorityRing => Shape::MajorityRing { ring: nodes },
        ShapeName::Bridge => {
            let (left, right) = nodes[1..].split_at((node_count - 1) / 2);
            Shape::Bridge {
                left: sorted(left),
                bridge: nodes[0],
                right: sorted(right),
            }
        }
        ShapeName::OneWay => Shape::OneWay {
            node: nodes[0],
            direction: if rng.random_bool(0.5) {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
        },
    }
}
