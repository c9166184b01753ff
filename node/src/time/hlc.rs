//! A hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014),
//! with the maximum-offset guard CockroachDB runs it with.
//!
//! A timestamp is (wall, logical): `wall` is the largest physical time (milliseconds) the
//! node has heard of, `logical` orders events that share it. Like a Lamport clock it
//! captures happens-before (a receive is stamped after its send); unlike one, it stays
//! within the clock offset of physical time, so a timestamp also says roughly *when*.
//!
//! The guard: a message stamped more than `max_offset_ms` ahead of this node's physical
//! clock is refused, not adopted. Adopting it would drag this node's clock, and every
//! timestamp it issues afterwards, into the future with the faulty sender's.
//! [`OffsetMonitor`] is the other half: a node whose own clock is off from most of its
//! peers by more than 80 % of the maximum stops serving rather than issue timestamps the
//! others would refuse.
//!
//! Sans-IO: physical time is an argument; the node passes its injectable clock's reading.

use std::collections::BTreeMap;
use std::fmt;

use super::vector::NodeId;

/// The default maximum clock offset between any two nodes.
pub const DEFAULT_MAX_OFFSET_MS: u64 = 500;

/// Past this fraction of the maximum offset, a node fences itself.
pub const FENCE_FRACTION: f64 = 0.8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    pub wall_ms: u64,
    pub logical: u32,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote timestamp is further ahead of local physical time than the maximum
    /// offset allows: the sender's clock (or this one) is broken.
    #[error(
        "a remote timestamp {remote} is {ahead_ms} ms ahead of this node's clock ({physical_ms} ms), \
         past the maximum offset of {max_offset_ms} ms: refused, not adopted"
    )]
    RemoteTooFarAhead {
        remote: Timestamp,
        physical_ms: u64,
        ahead_ms: u64,
        max_offset_ms: u64,
    },
    /// The logical counter would overflow: more than 4 billion events in one millisecond.
    #[error("the logical counter overflowed at wall time {wall_ms} ms")]
    LogicalOverflow { wall_ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HybridClock {
    last: Timestamp,
    max_offset_ms: u64,
    /// Seeded bug `lww-wall-clock`: timestamps are the raw wall clock, with no logical
    /// part and no memory of what was seen, so a fast clock's writes always win.
    raw_wall_clock: bool,
}

impl HybridClock {
    pub fn new(max_offset_ms: u64) -> Self {
        Self {
            last: Timestamp::default(),
            max_offset_ms,
            raw_wall_clock: false,
        }
    }

    /// The seeded bug `lww-wall-clock` (see the field).
    pub fn with_raw_wall_clock(mut self, raw: bool) -> Self {
        self.raw_wall_clock = raw;
        self
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// The newest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A local event or a send: a timestamp above every one issued or observed before.
    pub fn now(&mut self, physical_ms: u64) -> Result<Timestamp, ClockError> {
        if self.raw_wall_clock {
            return Ok(Timestamp {
                wall_ms: physical_ms,
                logical: 0,
            });
        }
        let next = if physical_ms > self.last.wall_ms {
            Timestamp {
                wall_ms: physical_ms,
                logical: 0,
            }
        } else {
            self.bump(self.last)?
        };
        self.last = next;
        Ok(next)
    }

    /// A receive of a message stamped `remote`: a timestamp above both the send and
    /// every local event before. Refused if `remote` is past the maximum offset ahead.
    pub fn update(&mut self, remote: Timestamp, physical_ms: u64) -> Result<Timestamp, ClockError> {
        if remote.wall_ms > physical_ms.saturating_add(self.max_offset_ms) {
            return Err(ClockError::RemoteTooFarAhead {
                remote,
                physical_ms,
                ahead_ms: remote.wall_ms - physical_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        if self.raw_wall_clock {
            return self.now(physical_ms);
        }
        let wall_ms = physical_ms.max(self.last.wall_ms).max(remote.wall_ms);
        let next = if wall_ms == self.last.wall_ms && wall_ms == remote.wall_ms {
            self.bump(Timestamp {
                wall_ms,
                logical: self.last.logical.max(remote.logical),
            })?
        } else if wall_ms == self.last.wall_ms {
            self.bump(self.last)?
        } else if wall_ms == remote.wall_ms {
            self.bump(remote)?
        } else {
            Timestamp {
                wall_ms,
                logical: 0,
            }
        };
        self.last = next;
        Ok(next)
    }

    fn bump(&self, at: Timestamp) -> Result<Timestamp, ClockError> {
        let logical = at
            .logical
            .checked_add(1)
            .ok_or(ClockError::LogicalOverflow {
                wall_ms: at.wall_ms,
            })?;
        Ok(Timestamp {
            wall_ms: at.wall_ms,
            logical,
        })
    }
}

/// Whether this node's clock agrees with its peers' well enough to serve.
#[derive(Clone, Debug, PartialEq)]
pub enum ClockHealth {
    Healthy,
    /// Off by more than `FENCE_FRACTION` of the maximum offset from a majority of the
    /// cluster: the node refuses work until that changes.
    Fenced {
        /// The median offset to the peers it disagrees with (positive: this node ahead).
        offset_ms: i64,
        limit_ms: u64,
        peers_off: usize,
        cluster: usize,
    },
}

/// Tracks this node's clock offset to each peer, measured on request round trips: a peer
/// that answers at wall time `t` to a request sent at local `s` and received back at
/// local `r` is `t - (s + r) / 2` ahead, within half the round trip.
#[derive(Clone, Debug, Default)]
pub struct OffsetMonitor {
    max_offset_ms: u64,
    /// Peer -> (offset of this node from the peer in ms, half the round trip, measured at).
    samples: BTreeMap<NodeId, (i64, u64, u64)>,
    /// A sample older than this (ms) no longer counts.
    stale_after_ms: u64,
}

impl OffsetMonitor {
    pub fn new(max_offset_ms: u64, stale_after_ms: u64) -> Self {
        Self {
            max_offset_ms,
            samples: BTreeMap::new(),
            stale_after_ms,
        }
    }

    /// A round trip to `peer`: sent at local `sent_ms`, its reply stamped `remote_ms` by
    /// the peer, received at local `received_ms`.
    pub fn observe(&mut self, peer: NodeId, sent_ms: u64, remote_ms: u64, received_ms: u64) {
        let midpoint = sent_ms / 2 + received_ms / 2 + (sent_ms % 2 + received_ms % 2) / 2;
        let offset = midpoint as i64 - remote_ms as i64;
        let uncertainty = received_ms.saturating_sub(sent_ms) / 2;
        self.samples
            .insert(peer, (offset, uncertainty, received_ms));
    }

    pub fn forget(&mut self, peer: NodeId) {
        self.samples.remove(&peer);
    }

    /// This node's offset from `peer` (positive: ahead), if measured.
    pub fn offset_ms(&self, peer: NodeId) -> Option<i64> {
        self.samples.get(&peer).map(|&(o, _, _)| o)
    }

    /// Fenced when the peers this node's clock is off from by more than the limit (less
    /// the measurement's own uncertainty, so a slow network cannot fence a good clock),
    /// together with nobody else, make a majority of a `cluster`-node cluster.
    pub fn health(&self, cluster: usize, now_ms: u64) -> ClockHealth {
        let limit_ms = (self.max_offset_ms as f64 * FENCE_FRACTION) as u64;
        let mut off: Vec<i64> = self
            .samples
            .values()
            .filter(|&&(_, _, at)| now_ms.saturating_sub(at) <= self.stale_after_ms)
            .filter(|&&(offset, uncertainty, _)| {
                offset.unsigned_abs().saturating_sub(uncertainty) > limit_ms
            })
            .map(|&(offset, _, _)| offset)
            .collect();
        // A majority of the cluster (this node counts as agreeing with itself).
        if off.len() < cluster / 2 + 1 {
            return ClockHealth::Healthy;
        }
        off.sort_unstable();
        ClockHealth::Fenced {
            offset_ms: off[off.len() / 2],
            limit_ms,
            peers_off: off.len(),
            cluster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_receive_is_after_its_send_even_from_a_node_ahead() {
        let mut ahead = HybridClock::new(500);
        let mut behind = HybridClock::new(500);
        let sent = ahead.now(10_300).unwrap();
        let received = behind.update(sent, 10_000).unwrap();
        assert!(received > sent);
        assert_eq!(
            received.wall_ms, 10_300,
            "the receiver adopts the newer wall time"
        );
        let local = behind.now(10_001).unwrap();
        assert!(local > received, "and never issues one below it again");
    }

    #[test]
    fn a_timestamp_past_the_maximum_offset_is_refused_and_not_adopted() {
        let mut clock = HybridClock::new(500);
        let before = clock.now(1_000).unwrap();
        let far = Timestamp {
            wall_ms: 1_501,
            logical: 0,
        };
        let error = clock.update(far, 1_000).unwrap_err();
        assert!(error.to_string().contains("501 ms ahead"), "{error}");
        assert_eq!(clock.last(), before, "nothing adopted");
        assert!(
            clock
                .update(
                    Timestamp {
                        wall_ms: 1_500,
                        logical: 7
                    },
                    1_000
                )
                .is_ok(),
            "exactly the maximum offset is allowed"
        );
    }

    #[test]
    fn the_raw_wall_clock_lets_a_fast_node_win_and_a_slow_one_go_backwards() {
        let mut fast = HybridClock::new(500).with_raw_wall_clock(true);
        let mut slow = HybridClock::new(500).with_raw_wall_clock(true);
        let a = fast.now(2_400).unwrap();
        let b = slow.update(a, 2_000).unwrap();
        assert!(b < a, "the seeded bug orders a receive before its send");
    }

    #[test]
    fn a_node_off_from_a_majority_is_fenced_and_a_slow_network_is_not_blamed() {
        let mut monitor = OffsetMonitor::new(500, 10_000);
        // Peers 2 and 3 answer 450 ms behind this node's clock: 450 > 400 (80 %).
        monitor.observe(2, 1_000, 560, 1_020);
        monitor.observe(3, 1_000, 560, 1_020);
        assert!(matches!(
            monitor.health(3, 1_020),
            ClockHealth::Fenced {
                offset_ms: 450,
                peers_off: 2,
                ..
            }
        ));
        // Five nodes: two peers off is not a majority.
        assert_eq!(monitor.health(5, 1_020), ClockHealth::Healthy);
        // A good clock behind a 1 s round trip (the request was quick, the answer slow)
        // looks 500 ms behind, with ±500 ms of doubt: not enough to fence on.
        let mut slow = OffsetMonitor::new(500, 10_000);
        slow.observe(2, 1_000, 1_000, 2_000);
        slow.observe(3, 1_000, 1_000, 2_000);
        assert_eq!(slow.health(3, 2_000), ClockHealth::Healthy);
        // Old samples stop counting.
        assert_eq!(monitor.health(3, 20_000), ClockHealth::Healthy);
    }

    proptest! {
        // Monotonic, within a bound of physical time, and ordered by receive: over random
        // runs of three nodes with clocks off by up to the maximum offset.
        #[test]
        fn the_clock_is_monotonic_bounded_and_captures_happens_before(
            offsets in proptest::collection::vec(0u64..=400, 3),
            steps in proptest::collection::vec((0usize..3, 0usize..3, 0u64..50), 1..60),
        ) {
            let mut clocks = vec![HybridClock::new(500); 3];
            let mut last = [Timestamp::default(); 3];
            let mut real = 1_000u64;
            let max_skew = *offsets.iter().max().unwrap();
            for (from, to, advance) in steps {
                real += advance;
                let physical = |n: usize| real + offsets[n];
                let sent = clocks[from].now(physical(from)).unwrap();
                prop_assert!(sent > last[from], "monotonic at the sender");
                last[from] = sent;
                let received = clocks[to].update(sent, physical(to)).unwrap();
                prop_assert!(received > sent, "a receive is after its send");
                prop_assert!(received > last[to], "monotonic at the receiver");
                last[to] = received;
                for n in [from, to] {
                    let wall = clocks[n].last().wall_ms;
                    prop_assert!(wall >= physical(n), "never behind its own clock");
                    prop_assert!(wall <= real + max_skew, "never past the fastest clock");
                }
            }
        }
    }
}
