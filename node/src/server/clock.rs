//! The clock the replication timers read, and the fault-injection service that steps
//! it. Raft's safety never depends on clocks, but its liveness does: a clock that jumps
//! makes election and heartbeat timers fire early or late, which is what the harness's
//! `clock` nemesis exercises.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use std::sync::mpsc::SyncSender;

use crate::proto::kv::StatusRequest;
use crate::proto::kv::kv_client::KvClient;
use crate::server::driver::Event;
use crate::time::hlc::{ClockHealth, OffsetMonitor};

use crate::proto::admin::fault_injection_server::FaultInjection;
use crate::proto::admin::{
    ClockOffset, ClockRate, DropPeerMessagesRequest, DropPeerMessagesResponse,
};
use crate::server::transport::DropRules;

/// Steps larger than this are refused: they would only stall a node for hours.
pub const CLOCK_OFFSET_MS_MAX: i64 = 3_600_000;

/// Rates outside this range are refused: a clock ten times off is broken beyond what a
/// run learns anything from.
pub const CLOCK_RATE_MIN: f64 = 0.1;
pub const CLOCK_RATE_MAX: f64 = 10.0;

#[derive(Clone, Debug)]
pub struct TimerClock {
    offset_ms: Arc<AtomicI64>,
    /// How fast the clock runs (1.0: true time), with the moment the rate last changed as
    /// (real ms since the epoch, clock reading then, without the offset), so the reading
    /// stays continuous across a change.
    rate: Arc<RwLock<(f64, i64, i64)>>,
}

impl Default for TimerClock {
    fn default() -> Self {
        Self {
            offset_ms: Arc::default(),
            rate: Arc::new(RwLock::new((1.0, 0, 0))),
        }
    }
}

fn real_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TimerClock {
    /// Wall time in milliseconds since the Unix epoch, at the injected rate and with the
    /// injected offset: what the hybrid logical clock reads, so a clock fault moves it as
    /// it moves the timers.
    pub fn wall_ms(&self) -> u64 {
        (self.reading_ms(real_ms()) + self.offset_ms()).max(0) as u64
    }

    fn reading_ms(&self, real: i64) -> i64 {
        let (rate, since_real, since_reading) = *self.rate.read().expect("rate lock");
        if rate == 1.0 && since_real == 0 {
            return real;
        }
        since_reading + ((real - since_real) as f64 * rate) as i64
    }

    /// How fast the clock runs: timers fire `rate` times as often as on a true clock.
    pub fn rate(&self) -> f64 {
        self.rate.read().expect("rate lock").0
    }

    /// Sets the rate from now on (the reading goes on from where it is). Returns the
    /// previous rate. A rate of 1.0 puts the clock back on true time, dropping the skew
    /// the earlier rates built up: that is how a rate fault is healed, and a node left
    /// behind by it would otherwise stay fenced by its offset guard for good.
    pub fn set_rate(&self, rate: f64) -> f64 {
        let real = real_ms();
        let reading = self.reading_ms(real);
        let mut guard = self.rate.write().expect("rate lock");
        let previous = guard.0;
        *guard = if rate == 1.0 {
            (1.0, 0, 0)
        } else {
            (rate, real, reading)
        };
        previous
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn set_offset_ms(&self, offset_ms: i64) -> i64 {
        self.offset_ms.swap(offset_ms, Ordering::Relaxed)
    }
}

pub struct FaultInjectionService {
    pub clock: TimerClock,
    pub drops: DropRules,
    pub failpoints: Failpoints,
}

/// Named failpoints, armed only through the fault-injection service (so only on a node
/// started with `--enable-fault-injection`).
#[derive(Clone, Default)]
pub struct Failpoints {
    armed: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

/// Every failpoint the node has, for the error that names them.
pub const FAILPOINTS: &[&str] = &["txn-after-reads", "txn-after-prepare", "txn-after-commit"];

impl Failpoints {
    /// Called where the failpoint `name` sits: carries out its action, if armed. "exit"
    /// kills the process as SIGKILL would (no flush, no goodbye), which is what the
    /// harness's kill-coordinator needs at this exact point; "sleep(MS)" holds this task
    /// there (gofail's sleep), which widens the window a race needs without changing
    /// what the code does in it.
    pub async fn hit(&self, name: &str) {
        let action = self
            .armed
            .lock()
            .expect("the failpoints lock is never poisoned")
            .get(name)
            .cloned();
        match action.as_deref().map(parse_action) {
            Some(Ok(Action::Exit)) => {
                tracing::warn!(
                    failpoint = name,
                    "fault injection: failpoint reached, exiting"
                );
                // SAFETY: kill(2) on our own pid with a valid signal has no memory effects.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
            Some(Ok(Action::Sleep(ms))) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            _ => {}
        }
    }

    /// Whether `name` has an action: where arming a failpoint splits a step in two (so
    /// that it has a point between them to sit at), the code asks first.
    pub fn armed(&self, name: &str) -> bool {
        self.armed
            .lock()
            .expect("the failpoints lock is never poisoned")
            .contains_key(name)
    }

    fn set(&self, name: &str, action: &str) -> Result<String, Status> {
        if !FAILPOINTS.contains(&name) {
            return Err(Status::invalid_argument(format!(
                "no failpoint named {name:?}; the node has {FAILPOINTS:?}"
            )));
        }
        let parsed = parse_action(action).map_err(Status::invalid_argument)?;
        let mut armed = self
            .armed
            .lock()
            .expect("the failpoints lock is never poisoned");
        let previous = match parsed {
            Action::Off => armed.remove(name),
            Action::Exit | Action::Sleep(_) => armed.insert(name.to_string(), action.to_string()),
        };
        Ok(previous.unwrap_or_else(|| "off".to_string()))
    }
}

/// What an armed failpoint does.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Off,
    Exit,
    Sleep(u64),
}

/// The longest `sleep(MS)` a failpoint takes: longer would outlast every request deadline
/// and only look like a hung node.
const FAILPOINT_SLEEP_MS_MAX: u64 = 10_000;

fn parse_action(action: &str) -> Result<Action, String> {
    match action {
        "off" => Ok(Action::Off),
        "exit" => Ok(Action::Exit),
        other => other
            .strip_prefix("sleep(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms <= FAILPOINT_SLEEP_MS_MAX)
            .map(Action::Sleep)
            .ok_or_else(|| {
                format!(
                    "failpoint action {other:?} is not one: use exit, sleep(MS) with MS at most {FAILPOINT_SLEEP_MS_MAX}, or off"
                )
            }),
    }
}

/// More rules than any harness scenario needs; a bound keeps the send path's check short.
const DROP_RULES_MAX: usize = 64;

#[tonic::async_trait]
impl FaultInjection for FaultInjectionService {
    async fn set_failpoint(
        &self,
        request: Request<crate::proto::admin::Failpoint>,
    ) -> Result<Response<crate::proto::admin::Failpoint>, Status> {
        let failpoint = request.into_inner();
        let previous = self.failpoints.set(&failpoint.name, &failpoint.action)?;
        tracing::warn!(name = %failpoint.name, action = %failpoint.action, "fault injection: failpoint set");
        Ok(Response::new(crate::proto::admin::Failpoint {
            name: failpoint.name,
            action: previous,
        }))
    }

    async fn set_clock_offset(
        &self,
        request: Request<ClockOffset>,
    ) -> Result<Response<ClockOffset>, Status> {
        let offset_ms = request.into_inner().offset_ms;
        if offset_ms.abs() > CLOCK_OFFSET_MS_MAX {
            return Err(Status::invalid_argument(format!(
                "clock offset {offset_ms} ms is beyond ±{CLOCK_OFFSET_MS_MAX} ms"
            )));
        }
        tracing::warn!(offset_ms, "fault injection: the timer clock was stepped");
        let previous = self.clock.set_offset_ms(offset_ms);
        Ok(Response::new(ClockOffset {
            offset_ms: previous,
        }))
    }

    async fn set_clock_rate(
        &self,
        request: Request<ClockRate>,
    ) -> Result<Response<ClockRate>, Status> {
        let rate = request.into_inner().rate;
        if !(CLOCK_RATE_MIN..=CLOCK_RATE_MAX).contains(&rate) {
            return Err(Status::invalid_argument(format!(
                "clock rate {rate} is outside {CLOCK_RATE_MIN}..={CLOCK_RATE_MAX} (1.0 is true time)"
            )));
        }
        tracing::warn!(rate, "fault injection: the clock's rate was changed");
        let previous = self.clock.set_rate(rate);
        Ok(Response::new(ClockRate { rate: previous }))
    }

    async fn drop_peer_messages(
        &self,
        request: Request<DropPeerMessagesRequest>,
    ) -> Result<Response<DropPeerMessagesResponse>, Status> {
        let request = request.into_inner();
        let rules = self
            .drops
            .update(request.clear, &request.add, DROP_RULES_MAX)
            .map_err(Status::invalid_argument)?;
        tracing::warn!(?rules, "fault injection: peer message drop rules changed");
        Ok(Response::new(DropPeerMessagesResponse { rules }))
    }
}

/// How often a node measures its clock against each peer.
pub const OFFSET_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A measurement older than this no longer counts toward fencing.
const OFFSET_STALE_AFTER_MS: u64 = 5_000;

/// Whether this node's clock lets it serve: shared by the task that measures the offsets
/// and the Kv service that refuses requests while fenced.
#[derive(Clone, Default)]
pub struct ClockGuard {
    fence: Arc<RwLock<Option<String>>>,
    offsets: Arc<RwLock<BTreeMap<u64, i64>>>,
}

impl ClockGuard {
    /// Why the node serves nothing now, if it does not.
    pub fn fence(&self) -> Option<String> {
        self.fence.read().expect("fence lock").clone()
    }

    pub fn offsets_ms(&self) -> BTreeMap<u64, i64> {
        self.offsets.read().expect("offsets lock").clone()
    }
}

/// Measures this node's clock against every peer's on a round trip of `Status` (each
/// reply carries the peer's wall clock), and fences the node while it is off from a
/// majority of the cluster by more than 80 % of `max_offset_ms`: the node would issue
/// timestamps its peers refuse. Health says NOT_SERVING meanwhile (see `membership.rs`).
pub async fn guard_clock(
    clock: TimerClock,
    peers: HashMap<u64, KvClient<Channel>>,
    max_offset_ms: u64,
    guard: ClockGuard,
    events: SyncSender<Event>,
) {
    let mut monitor = OffsetMonitor::new(max_offset_ms, OFFSET_STALE_AFTER_MS);
    let cluster = peers.len() + 1;
    loop {
        tokio::time::sleep(OFFSET_PROBE_INTERVAL).await;
        for (&peer, client) in &peers {
            let sent = clock.wall_ms();
            let mut call = Request::new(StatusRequest::default());
            call.set_timeout(Duration::from_secs(1));
            let Ok(reply) = client.clone().status(call).await else {
                continue;
            };
            let remote = reply.into_inner().wall_clock_ms;
            if remote > 0 {
                monitor.observe(peer, sent, remote, clock.wall_ms());
            }
        }
        *guard.offsets.write().expect("offsets lock") = peers
            .keys()
            .filter_map(|&p| monitor.offset_ms(p).map(|o| (p, o)))
            .collect();
        let fence = match monitor.health(cluster, clock.wall_ms()) {
            ClockHealth::Healthy => None,
            ClockHealth::Fenced {
                offset_ms,
                limit_ms,
                peers_off,
                cluster,
            } => Some(format!(
                "this node's clock is {offset_ms} ms off from {peers_off} of the {cluster} nodes, past {limit_ms} ms (80 % of the {max_offset_ms} ms maximum offset): it serves no reads or writes and leads nothing until its clock agrees again (check its time sync)"
            )),
        };
        // Every round, not only on a change: a full queue drops one, the next one lands.
        let _ = events.try_send(Event::ClockFence(fence.is_some()));
        let before = guard.fence.read().expect("fence lock").is_some();
        if before != fence.is_some() {
            match &fence {
                Some(reason) => tracing::error!(%reason, "clock fence up"),
                None => {
                    tracing::warn!("clock fence down: the clock agrees with the cluster again");
                }
            }
        }
        *guard.fence.write().expect("fence lock") = fence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_change_keeps_the_reading_continuous_and_scales_what_follows() {
        let clock = TimerClock::default();
        assert_eq!(
            clock.reading_ms(1_000),
            1_000,
            "true time until a rate is set"
        );
        *clock.rate.write().unwrap() = (2.0, 1_000, 1_000);
        assert_eq!(
            clock.reading_ms(1_500),
            2_000,
            "twice as fast from the change on"
        );
        // Back to true time at real 1,500: the reading goes on from 2,000.
        let reading = clock.reading_ms(1_500);
        *clock.rate.write().unwrap() = (1.0, 1_500, reading);
        assert_eq!(clock.reading_ms(1_600), 2_100);
        clock.set_offset_ms(-100);
        assert_eq!(clock.offset_ms(), -100);
    }

    #[test]
    fn setting_true_rate_drops_the_skew_a_slow_rate_built_up() {
        let clock = TimerClock::default();
        // Ten seconds at a tenth of true time: nine seconds behind.
        let real = real_ms();
        *clock.rate.write().unwrap() = (0.1, real - 10_000, real - 10_000);
        assert!(real_ms() - clock.wall_ms() as i64 >= 8_000);
        assert_eq!(clock.set_rate(1.0), 0.1);
        assert!((clock.wall_ms() as i64 - real_ms()).abs() < 1_000);
    }

    #[test]
    fn failpoint_actions_parse_and_bad_ones_name_the_fix() {
        assert_eq!(parse_action("sleep(40)"), Ok(Action::Sleep(40)));
        assert_eq!(parse_action("exit"), Ok(Action::Exit));
        for bad in ["sleep", "sleep(x)", "sleep(99999999)", "panic"] {
            let why = parse_action(bad).unwrap_err();
            assert!(why.contains("sleep(MS)"), "{bad}: {why}");
        }
        let points = Failpoints::default();
        assert_eq!(points.set("txn-after-prepare", "sleep(5)").unwrap(), "off");
        assert_eq!(points.set("txn-after-prepare", "off").unwrap(), "sleep(5)");
        assert!(points.set("txn-after-prepare", "sleep(").is_err());
    }
}
