//! The phi-accrual failure detector (Hayashibara et al., 2004, as Akka and Cassandra use
//! it), sans-IO: instead of a yes/no timeout it says how unlikely the silence since the
//! last heartbeat is, given the intervals seen so far. `phi = -log10(P(a heartbeat
//! arrives later than now))`: phi 1 means a 10 % chance of being wrong to suspect, phi 8
//! (the default threshold) one in a hundred million. A link that is usually jittery gets
//! a wide distribution and so a lenient detector; a steady one, a strict one.
//!
//! The node keeps one detector per member, fed by the gossip heartbeats
//! ([`super::swim::Timer::Heartbeat`]), each with its receipt time. SWIM decides what the
//! cluster agrees on (suspect, dead); phi is this node's own reading of each link, shown
//! by `faultline kv members` and used by the health service to tell whether a quorum of
//! the cluster is reachable from here.

use std::collections::VecDeque;

/// Akka's defaults (`akka.cluster.failure-detector`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiConfig {
    pub threshold: f64,
    /// Intervals remembered.
    pub window: usize,
    /// A floor under the standard deviation, so that a perfectly regular link does not
    /// make the detector trip on the first late heartbeat.
    pub min_std_dev_ms: u64,
    /// The heartbeat interval the history starts from, before any has been measured.
    pub first_interval_ms: u64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        Self {
            threshold: 8.0,
            window: 1_000,
            min_std_dev_ms: 100,
            first_interval_ms: 1_000,
        }
    }
}

/// phi for a silence of `elapsed_ms`, under a normal distribution of intervals with
/// `mean_ms` and `std_dev_ms`; Akka's logistic approximation of the normal CDF, which
/// stays finite far into the tail.
pub fn phi(elapsed_ms: f64, mean_ms: f64, std_dev_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_dev_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed_ms > mean_ms {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// One member's heartbeat history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhiDetector {
    window: usize,
    min_std_dev_ms: u64,
    intervals: VecDeque<u64>,
    sum: u64,
    sum_squares: u128,
    last_ms: Option<u64>,
}

impl PhiDetector {
    pub fn new(config: &PhiConfig) -> Self {
        let mut detector = Self {
            window: config.window.max(2),
            min_std_dev_ms: config.min_std_dev_ms.max(1),
            intervals: VecDeque::new(),
            sum: 0,
            sum_squares: 0,
            last_ms: None,
        };
        // As Akka does: two made-up intervals a quarter of the interval either side of
        // it, so that the first silences are judged against the expected rate.
        let first = config.first_interval_ms.max(1);
        detector.record(first - first / 4);
        detector.record(first + first / 4);
        detector
    }

    /// A heartbeat arrived at `now_ms` (its receipt time, by this node's clock).
    pub fn heartbeat(&mut self, now_ms: u64) {
        if let Some(last) = self.last_ms
            && now_ms >= last
        {
            self.record(now_ms - last);
        }
        self.last_ms = Some(now_ms.max(self.last_ms.unwrap_or(0)));
    }

    fn record(&mut self, interval: u64) {
        if self.intervals.len() == self.window
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_squares -= u128::from(old) * u128::from(old);
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_squares += u128::from(interval) * u128::from(interval);
    }

    pub fn mean_ms(&self) -> f64 {
        self.sum as f64 / self.intervals.len() as f64
    }

    pub fn std_dev_ms(&self) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.mean_ms();
        let variance = (self.sum_squares as f64 / n - mean * mean).max(0.0);
        variance.sqrt().max(self.min_std_dev_ms as f64)
    }

    /// phi at `now_ms`; 0 before the first heartbeat (nothing to be late against).
    pub fn phi(&self, now_ms: u64) -> f64 {
        match self.last_ms {
            None => 0.0,
            Some(last) => phi(
                now_ms.saturating_sub(last) as f64,
                self.mean_ms(),
                self.std_dev_ms(),
            ),
        }
    }

    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_from_a_table() {
        // (elapsed, mean, std dev) -> phi, to four places.
        let table = [
            (0.0, 1_000.0, 100.0, 0.0),
            (1_000.0, 1_000.0, 100.0, std::f64::consts::LOG10_2),
            (1_100.0, 1_000.0, 100.0, 0.7995),
            (1_200.0, 1_000.0, 100.0, 1.6428),
            (1_500.0, 1_000.0, 100.0, 7.2999),
            (2_000.0, 1_000.0, 100.0, 37.5847),
        ];
        for (elapsed, mean, sd, want) in table {
            let got = phi(elapsed, mean, sd);
            assert!(
                (got - want).abs() < 1e-4,
                "phi({elapsed}) = {got}, not {want}"
            );
        }
    }

    #[test]
    fn a_steady_member_stays_under_the_threshold_and_a_silent_one_crosses_it() {
        let config = PhiConfig::default();
        let mut detector = PhiDetector::new(&config);
        assert_eq!(detector.phi(5_000), 0.0, "no heartbeat yet");
        for beat in 0..100u64 {
            // 1 s apart, ±50 ms.
            detector.heartbeat(beat * 1_000 + (beat % 3) * 50);
        }
        let last = detector.last_heartbeat_ms().unwrap();
        assert!(detector.phi(last + 1_000) < 1.0);
        assert!(detector.phi(last + 1_300) < config.threshold);
        assert!(detector.phi(last + 2_000) > config.threshold);
        // The window forgets: after 1,000 more intervals of 2 s the mean is 2 s.
        for beat in 1..=1_000u64 {
            detector.heartbeat(last + beat * 2_000);
        }
        assert!((detector.mean_ms() - 2_000.0).abs() < 1e-9);
        assert_eq!(detector.std_dev_ms(), 100.0, "the floor");
    }

    #[test]
    fn a_clock_that_steps_back_is_not_an_interval() {
        let mut detector = PhiDetector::new(&PhiConfig::default());
        detector.heartbeat(10_000);
        let mean = detector.mean_ms();
        detector.heartbeat(9_000);
        assert_eq!(detector.mean_ms(), mean);
        assert_eq!(detector.last_heartbeat_ms(), Some(10_000));
    }
}
