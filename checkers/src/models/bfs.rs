//! Exhaustive breadth-first checking of a model with timed-out runs reported as unknown,
//! and a report that names every property's verdict and a violation's steps.

use std::time::{Duration, Instant};

use stateright::{Checker, Model};

/// What a check found.
#[derive(Debug)]
pub struct Report {
    /// What was checked, for the first line ("lease model").
    pub name: &'static str,
    pub unique_states: usize,
    pub states: usize,
    pub duration: Duration,
    pub complete: bool,
    /// (property, always?, verdict, counterexample steps).
    pub properties: Vec<(&'static str, bool, &'static str, Vec<String>)>,
}

impl Report {
    /// 0 all hold and every witness seen, 1 a property failed, 2 not exhaustive or a
    /// witness missing.
    pub fn exit_code(&self) -> u8 {
        if self.properties.iter().any(|p| p.2 == "VIOLATED") {
            1
        } else if !self.complete
            || self
                .properties
                .iter()
                .any(|p| p.2 != "holds" && p.2 != "witnessed")
        {
            2
        } else {
            0
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} unique states ({} generated) in {:.1} s, {}",
            self.name,
            self.unique_states,
            self.states,
            self.duration.as_secs_f64(),
            if self.complete {
                "exhaustive"
            } else {
                "NOT exhaustive (stopped early)"
            }
        )?;
        for (name, always, verdict, steps) in &self.properties {
            let kind = if *always { "always" } else { "sometimes" };
            writeln!(f, "  {kind:<9} {name:<48} {verdict}")?;
            for (i, step) in steps.iter().enumerate() {
                writeln!(f, "      {:>2}. {step}", i + 1)?;
            }
        }
        Ok(())
    }
}

/// Checks `model` exhaustively (BFS); `describe` says in words what an action did from a
/// state, for counterexamples.
pub fn check<M>(
    name: &'static str,
    model: M,
    threads: usize,
    timeout: Option<Duration>,
    describe: fn(&M::State, &M::Action) -> String,
) -> Report
where
    M: Model + Send + Sync + 'static,
    M::State: Send + Sync + std::hash::Hash + std::fmt::Debug + Clone + PartialEq,
    M::Action: Send + Sync + std::fmt::Debug + Clone + PartialEq,
{
    let started = Instant::now();
    let mut builder = model.checker().threads(threads.max(1));
    // The checker's own timeout stops its threads, which a caller that only stopped waiting
    // would leave running (and growing their queues) behind it.
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    let checker = builder.spawn_bfs();
    while !checker.is_done() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
    let discoveries = checker.discoveries();
    let model = checker.model();
    let complete = !timed_out;
    let properties = model
        .properties()
        .into_iter()
        .map(|p| {
            let always = p.expectation == stateright::Expectation::Always;
            let found = discoveries.get(p.name);
            let verdict = match (always, found.is_some(), complete) {
                (true, true, _) => "VIOLATED",
                (false, true, _) => "witnessed",
                (true, false, true) => "holds",
                (false, false, true) => "NOT WITNESSED",
                (_, false, false) => "unknown",
            };
            let steps = found
                .filter(|_| always)
                .map(|path| {
                    path.clone()
                        .into_vec()
                        .windows(2)
                        .filter_map(|pair| Some(describe(&pair[0].0, pair[0].1.as_ref()?)))
                        .collect()
                })
                .unwrap_or_default();
            (p.name, always, verdict, steps)
        })
        .collect();
    let report = Report {
        name,
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        duration: started.elapsed(),
        complete,
        properties,
    };
    let _ = checker.join();
    report
}
