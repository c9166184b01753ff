//! Load statistics of one range, sans-IO: what a replica counts so that a hot range can be
//! split at a key that divides its load, as CockroachDB's load-based splitter and TiKV's
//! load-base-split do. Not yet wired into the node: the placement driver and the hot-spot
//! splitter of issue 15 will feed it every request and read it each window.
//!
//! [`SplitFinder`] keeps a reservoir of sampled request keys; every later request counts,
//! for each sample, whether it fell before or after it. A sample with as many requests on
//! each side divides the load evenly; its balance score is `|left - right| / (left + right)`
//! (0 is perfect). A single hot key gives no candidate at all: every sample is that key, and
//! requests for it fall on neither side, so the range cannot be split to spread it (its
//! leadership has to move instead).

/// Samples kept, as CockroachDB's finder does.
pub const SAMPLES: usize = 20;
/// Requests a sample must have counted on its two sides before its score means anything.
pub const MIN_OBSERVATIONS: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Sample {
    key: Vec<u8>,
    left: u64,
    right: u64,
}

/// Where to split a range so that its load divides evenly.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitAdvice {
    pub key: Vec<u8>,
    /// `|left - right| / (left + right)` over the requests counted against the key.
    pub balance: f64,
    pub left: u64,
    pub right: u64,
}

/// A reservoir of request keys with left/right counts. Deterministic: the same seed and
/// the same requests give the same advice.
#[derive(Clone, Debug)]
pub struct SplitFinder {
    samples: Vec<Sample>,
    seen: u64,
    rng: u64,
}

impl SplitFinder {
    pub fn new(seed: u64) -> Self {
        SplitFinder {
            samples: Vec::with_capacity(SAMPLES),
            seen: 0,
            rng: seed,
        }
    }

    /// Requests recorded since the finder started.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Counts one request for `key` against every sample, then offers the key to the
    /// reservoir (Algorithm R: each request ends up sampled with the same probability).
    pub fn record(&mut self, key: &[u8]) {
        for sample in &mut self.samples {
            match key.cmp(sample.key.as_slice()) {
                std::cmp::Ordering::Less => sample.left += 1,
                std::cmp::Ordering::Greater => sample.right += 1,
                // A request for the sample's own key stays with it whichever side it goes.
                std::cmp::Ordering::Equal => {}
            }
        }
        self.seen += 1;
        let fresh = Sample {
            key: key.to_vec(),
            left: 0,
            right: 0,
        };
        if self.samples.len() < SAMPLES {
            self.samples.push(fresh);
        } else {
            let slot = self.next_random() % self.seen;
            if let Some(replaced) = self.samples.get_mut(slot as usize) {
                *replaced = fresh;
            }
        }
    }

    /// The best split key, if some sample has counted enough requests on its sides and
    /// divides them no worse than `max_balance`.
    pub fn advice(&self, max_balance: f64) -> Option<SplitAdvice> {
        self.samples
            .iter()
            .filter(|s| s.left + s.right >= MIN_OBSERVATIONS && s.left > 0 && s.right > 0)
            .map(|s| SplitAdvice {
                key: s.key.clone(),
                balance: s.left.abs_diff(s.right) as f64 / (s.left + s.right) as f64,
                left: s.left,
                right: s.right,
            })
            .filter(|a| a.balance <= max_balance)
            .min_by(|a, b| a.balance.total_cmp(&b.balance).then(a.key.cmp(&b.key)))
    }

    /// splitmix64: small, seedable, and the same on every platform.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Requests and bytes a range served in one window, as rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadWindow {
    pub reads: u64,
    pub writes: u64,
    pub bytes: u64,
}

impl LoadWindow {
    pub fn read(&mut self, bytes: usize) {
        self.reads += 1;
        self.bytes += bytes as u64;
    }

    pub fn write(&mut self, bytes: usize) {
        self.writes += 1;
        self.bytes += bytes as u64;
    }

    /// Operations per second over a window of `seconds` (at least a millisecond).
    pub fn ops_per_sec(&self, seconds: f64) -> f64 {
        (self.reads + self.writes) as f64 / seconds.max(0.001)
    }

    pub fn bytes_per_sec(&self, seconds: f64) -> f64 {
        self.bytes as f64 / seconds.max(0.001)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    #[test]
    fn uniform_load_is_split_near_its_middle() {
        let mut finder = SplitFinder::new(7);
        let mut rng = 1u64;
        for _ in 0..5_000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            finder.record(&key((rng >> 33) as u32 % 1_000));
        }
        let advice = finder.advice(0.25).expect("a balanced key");
        assert!(advice.balance <= 0.25, "{advice:?}");
        assert!(advice.left + advice.right >= MIN_OBSERVATIONS);
        let at: u32 = String::from_utf8(advice.key[1..].to_vec())
            .unwrap()
            .parse()
            .unwrap();
        assert!((250..750).contains(&at), "split at k{at}: {advice:?}");
    }

    #[test]
    fn skewed_load_is_split_where_the_load_divides_not_where_the_keys_do() {
        let mut finder = SplitFinder::new(3);
        // Nine requests in ten go to the ten keys k00000..k00009, the rest spread over
        // k00010..k00999: the load's middle is among the hot ten.
        for i in 0..20_000u32 {
            let k = if i % 10 < 9 {
                i % 10
            } else {
                10 + i.wrapping_mul(7919) % 990
            };
            finder.record(&key(k));
        }
        let advice = finder.advice(0.5).expect("a key inside the hot ten");
        assert!(advice.key <= key(10), "{advice:?}");
    }

    #[test]
    fn one_hot_key_cannot_be_split_and_too_few_requests_give_no_advice() {
        let mut hot = SplitFinder::new(1);
        for _ in 0..10_000 {
            hot.record(b"the-hot-key");
        }
        assert_eq!(hot.advice(1.0), None, "every request is on neither side");

        let mut young = SplitFinder::new(1);
        for i in 0..50 {
            young.record(&key(i));
        }
        assert_eq!(
            young.advice(1.0),
            None,
            "fewer than {MIN_OBSERVATIONS} requests"
        );
    }

    #[test]
    fn the_same_seed_and_requests_give_the_same_advice() {
        let run = |seed| {
            let mut finder = SplitFinder::new(seed);
            for i in 0..3_000u32 {
                finder.record(&key(i.wrapping_mul(2_654_435_761) % 500));
            }
            finder.advice(1.0)
        };
        assert_eq!(run(9), run(9));
        assert!(run(9).is_some());
    }

    #[test]
    fn a_window_gives_rates() {
        let mut window = LoadWindow::default();
        for _ in 0..300 {
            window.read(10);
        }
        for _ in 0..200 {
            window.write(100);
        }
        assert_eq!(window.ops_per_sec(10.0), 50.0);
        assert_eq!(window.bytes_per_sec(10.0), 2_300.0);
        assert_eq!(
            window.ops_per_sec(0.0),
            500_000.0,
            "a zero window counts as 1 ms"
        );
    }
}
