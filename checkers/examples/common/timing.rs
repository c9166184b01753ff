//! Timing shared by the checker's timing examples.

use std::time::Instant;

/// Runs `check` `runs + 3` times and returns the median time in ms of all but the first
/// three (which warm the caches and the allocator), with the last run's result.
pub fn median_ms<V>(runs: usize, mut check: impl FnMut() -> V) -> (f64, V) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for run in 0..runs + 3 {
        let started = Instant::now();
        let v = check();
        if run >= 3 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        last = Some(v);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], last.expect("at least one run"))
}
