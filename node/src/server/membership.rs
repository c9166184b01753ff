//! The gossip membership shell: one UDP socket on the node's own address (the gRPC port's
//! number), the SWIM core's timers, the phi-accrual detectors, the `Membership` service
//! (`faultline kv members`) and the `grpc.health.v1` statuses that follow from them.
//!
//! Why UDP and not the peer gRPC streams: a failure detector that rides the data path
//! calls a node dead when its streams are merely backed up, and alive while its process
//! is wedged behind a healthy kernel socket; SWIM's probes want to be cheap, unordered
//! and lossy, as memberlist's are. The harness's faults cut UDP as they cut TCP (its
//! rules match addresses, not protocols).

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::clock::{ClockGuard, TimerClock};
use super::driver::Views;
use crate::cluster::phi::{PhiConfig, PhiDetector};
use crate::cluster::swim::{Notification, Output, Swim, SwimConfig, Timer};
use crate::proto::membership::membership_server::Membership;
use crate::proto::membership::{
    MemberInfo, MemberMeta, MemberState, MembersRequest, MembersResponse, Packet, ServiceHealth,
    packet::Body,
};

/// How often the node re-reads what it says about itself (roles, leaders, load, health).
const META_INTERVAL: Duration = Duration::from_millis(1_000);
/// phi past this is shown as this: certain silence, and JSON has no infinity.
const PHI_SHOWN_MAX: f64 = 1_000.0;
/// How often health is re-judged.
const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// The services `grpc.health.v1` reports, by the names clients ask for. Txn and Lease are
/// RPC families of the Kv service with their own health: a node may serve reads while
/// its clock is fenced from issuing transaction timestamps, say (today they turn
/// together).
pub const HEALTH_SERVICES: &[&str] = &[
    "faultline.kv.v1.Kv",
    "faultline.kv.v1.Txn",
    "faultline.kv.v1.Lease",
    "faultline.kv.v1.Watch",
    "faultline.raft.v1.Raft",
];

struct Shared {
    swim: Swim,
    phi: BTreeMap<u64, PhiDetector>,
    phi_config: PhiConfig,
    started: Instant,
    /// The statuses last reported, by service name: (serving, reason).
    health: BTreeMap<String, (bool, String)>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether this node reaches a majority of the cluster's members (itself included):
    /// not dead by gossip and under the phi threshold by its own heartbeats.
    fn reaches_quorum(&self, now_ms: u64) -> (usize, usize) {
        let me = self.swim.id();
        let mut total = 0;
        let mut reachable = 0;
        for member in self.swim.members() {
            if member.state == MemberState::Left {
                continue;
            }
            total += 1;
            let phi = self.phi.get(&member.id).map_or(0.0, |d| d.phi(now_ms));
            if member.id == me || (member.is_live() && phi < self.phi_config.threshold) {
                reachable += 1;
            }
        }
        (reachable, total)
    }
}

/// What the membership task needs from the rest of the node.
pub struct MembershipSetup {
    pub node_id: u64,
    pub listen: SocketAddr,
    pub seeds: Vec<(u64, String)>,
    pub config: SwimConfig,
    pub phi: PhiConfig,
    pub clock: TimerClock,
    pub clock_guard: ClockGuard,
    pub views: Views,
    pub core_member: bool,
    /// Requests the Kv service has served (for the load figure).
    pub served: Arc<AtomicU64>,
    pub health: tonic_health::server::HealthReporter,
    /// Turns true when the node starts shutting down.
    pub draining: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct MembershipService {
    shared: Arc<Mutex<Shared>>,
    node_id: u64,
}

/// Binds the gossip socket and starts the membership and health tasks.
pub async fn start(setup: MembershipSetup) -> anyhow::Result<MembershipService> {
    let socket = UdpSocket::bind(setup.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot bind UDP {} for gossip: {e} (another process uses the port: pick another --listen)",
            setup.listen
        )
    })?;
    let started_ms = setup.clock.wall_ms();
    let meta = MemberMeta {
        address: setup.listen.to_string(),
        roles: roles(setup.core_member),
        started_ms,
        ..Default::default()
    };
    let swim = Swim::new(setup.config.clone(), setup.node_id, meta, &setup.seeds);
    let shared = Arc::new(Mutex::new(Shared {
        swim,
        phi: BTreeMap::new(),
        phi_config: setup.phi,
        started: Instant::now(),
        health: BTreeMap::new(),
    }));
    let service = MembershipService {
        shared: shared.clone(),
        node_id: setup.node_id,
    };
    tokio::spawn(health_task(
        shared.clone(),
        setup.clock_guard.clone(),
        setup.health.clone(),
        setup.draining.clone(),
    ));
    tokio::spawn(gossip_task(shared, socket, setup, started_ms));
    Ok(service)
}

fn roles(core_member: bool) -> Vec<String> {
    let mut roles = vec!["data".to_string()];
    if core_member {
        roles.insert(0, "core".to_string());
    }
    roles
}

/// Two significant digits: load moves all the time, and every change of what a member
/// says about itself costs a new incarnation and a round of gossip.
fn rounded(rate: u64) -> u64 {
    if rate < 100 {
        return rate;
    }
    let scale = 10u64.pow(rate.ilog10() - 1);
    (rate / scale) * scale
}

async fn gossip_task(
    shared: Arc<Mutex<Shared>>,
    socket: UdpSocket,
    mut setup: MembershipSetup,
    started_ms: u64,
) {
    let mut timers: BinaryHeap<std::cmp::Reverse<(Instant, u64, Timer)>> = BinaryHeap::new();
    let mut timer_seq = 0u64;
    let mut addresses: HashMap<u64, SocketAddr> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut meta_tick = tokio::time::interval(META_INTERVAL);
    let mut last_served = (Instant::now(), 0u64);
    let mut load = 0u64;
    {
        let mut s = shared.lock().expect("membership lock");
        let now = s.now_ms();
        s.swim.start(now);
    }
    let mut left = false;
    loop {
        let outputs = shared.lock().expect("membership lock").swim.take_outputs();
        for output in outputs {
            match output {
                Output::Send { to, packet } => {
                    let address = match addresses.get(&to) {
                        Some(a) => Some(*a),
                        None => {
                            let s = shared.lock().expect("membership lock");
                            let parsed = s
                                .swim
                                .member(to)
                                .and_then(|m| m.meta.address.parse::<SocketAddr>().ok());
                            if let Some(a) = parsed {
                                addresses.insert(to, a);
                            }
                            parsed
                        }
                    };
                    if let Some(address) = address {
                        // Loss is the protocol's business: a failed send is a lost packet.
                        let _ = socket.send_to(&packet.encode_to_vec(), address).await;
                    }
                }
                Output::Schedule { timer, after_ms } => {
                    // Timers run at the injected clock's rate, as Raft's ticks do.
                    let rate = setup.clock.rate();
                    let after = Duration::from_millis(after_ms).div_f64(rate);
                    timer_seq += 1;
                    timers.push(std::cmp::Reverse((
                        Instant::now() + after,
                        timer_seq,
                        timer,
                    )));
                }
                Output::Notify(note) => log_notification(&note),
            }
        }
        if left {
            return;
        }
        let next = timers
            .peek()
            .map_or(Instant::now() + Duration::from_secs(3_600), |t| t.0.0);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, from_addr)) = received else { continue };
                let mut s = shared.lock().expect("membership lock");
                let now = s.now_ms();
                match Packet::decode(&buf[..len]) {
                    Ok(packet) => {
                        let from = packet.from;
                        let heartbeat = matches!(packet.body, Some(Body::Heartbeat(_)));
                        match s.swim.handle_packet(packet, now) {
                            Ok(()) => {
                                addresses.insert(from, from_addr);
                                // First contact starts the member's detector (a member
                                // killed before its first heartbeat still goes past the
                                // threshold); after that only heartbeats count, since
                                // their spacing is what phi models.
                                let config = s.phi_config;
                                let mut fresh = false;
                                let detector = s.phi.entry(from).or_insert_with(|| {
                                    fresh = true;
                                    PhiDetector::new(&config)
                                });
                                if heartbeat || fresh {
                                    detector.heartbeat(now);
                                }
                            }
                            Err(error) => tracing::debug!(%from_addr, %error, "gossip packet refused"),
                        }
                    }
                    Err(error) => tracing::debug!(%from_addr, %error, "malformed gossip packet"),
                }
            }
            () = tokio::time::sleep_until(next) => {
                let mut s = shared.lock().expect("membership lock");
                while let Some(std::cmp::Reverse((at, _, timer))) = timers.peek().copied() {
                    if at > Instant::now() {
                        break;
                    }
                    timers.pop();
                    let now = s.now_ms();
                    s.swim.handle_timer(timer, now);
                }
            }
            _ = meta_tick.tick() => {
                let served = setup.served.load(Ordering::Relaxed);
                let elapsed = last_served.0.elapsed().as_secs_f64().max(0.001);
                let rate = rounded(((served - last_served.1) as f64 / elapsed) as u64);
                last_served = (Instant::now(), served);
                // Republished only on a real change: each one costs an incarnation.
                if rate.abs_diff(load) > (load / 4).max(10) {
                    load = rate;
                }
                let leads = leads(&setup.views, setup.node_id);
                let mut s = shared.lock().expect("membership lock");
                let services = s
                    .health
                    .iter()
                    .map(|(name, (serving, reason))| ServiceHealth {
                        name: name.clone(),
                        serving: *serving,
                        reason: reason.clone(),
                    })
                    .collect();
                let meta = MemberMeta {
                    address: setup.listen.to_string(),
                    roles: roles(setup.core_member),
                    leads,
                    load,
                    started_ms,
                    services,
                };
                s.swim.set_meta(meta);
            }
            changed = setup.draining.changed() => {
                if changed.is_err() || *setup.draining.borrow() {
                    let mut s = shared.lock().expect("membership lock");
                    let now = s.now_ms();
                    s.swim.leave(now);
                    left = true;
                }
            }
        }
    }
}

fn leads(views: &Views, me: u64) -> Vec<u64> {
    let views = views.read().expect("no thread panics holding the views");
    let mut leads: Vec<u64> = views
        .iter()
        .filter(|(_, view)| view.borrow().leader_id == Some(me))
        .map(|(&id, _)| id)
        .collect();
    leads.sort_unstable();
    leads
}

fn log_notification(note: &Notification) {
    match note {
        Notification::Suspect {
            id,
            incarnation,
            by,
        } => {
            tracing::warn!(member = id, incarnation, by, "gossip: member suspected");
        }
        Notification::Dead {
            id,
            incarnation,
            by,
        } => {
            tracing::warn!(member = id, incarnation, by, "gossip: member declared dead");
        }
        Notification::Refuted { incarnation } => {
            tracing::warn!(incarnation, "gossip: refuted a suspicion about this node");
        }
        Notification::Alive { id, incarnation } => {
            tracing::info!(member = id, incarnation, "gossip: member alive again");
        }
        Notification::Joined { id } => tracing::info!(member = id, "gossip: member joined"),
        Notification::Left { id } => tracing::info!(member = id, "gossip: member left"),
        Notification::MetaChanged { .. } => {}
    }
}

/// Judges every service's health from the node's state and reports changes through
/// `grpc.health.v1`: the client-facing services turn NOT_SERVING when the node is fenced
/// (its clock is off), out of quorum (it reaches no majority of the members) or
/// draining; Raft only when draining, since peers must reach a node cut off from the
/// majority to bring it back.
async fn health_task(
    shared: Arc<Mutex<Shared>>,
    guard: ClockGuard,
    health: tonic_health::server::HealthReporter,
    draining: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    loop {
        let verdicts = {
            let s = shared.lock().expect("membership lock");
            let now = s.now_ms();
            let (reachable, total) = s.reaches_quorum(now);
            let draining = *draining.borrow();
            let fenced = guard.fence();
            let client_reason = if draining {
                Some("draining: the node is shutting down".to_string())
            } else if let Some(why) = fenced {
                Some(format!("fenced: {why}"))
            } else if reachable * 2 <= total {
                Some(format!(
                    "out of quorum: this node reaches {reachable} of the {total} members"
                ))
            } else {
                None
            };
            HEALTH_SERVICES
                .iter()
                .map(|&name| {
                    let reason = if name == "faultline.raft.v1.Raft" {
                        draining.then(|| "draining: the node is shutting down".to_string())
                    } else {
                        client_reason.clone()
                    };
                    (name, reason)
                })
                .collect::<Vec<_>>()
        };
        for (name, reason) in verdicts {
            let serving = reason.is_none();
            let reason = reason.unwrap_or_default();
            let changed = {
                let mut s = shared.lock().expect("membership lock");
                let entry = (serving, reason.clone());
                s.health.insert(name.to_string(), entry.clone()) != Some(entry)
            };
            if changed {
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                if serving {
                    tracing::info!(service = name, "health: serving");
                } else {
                    tracing::warn!(service = name, %reason, "health: not serving");
                }
                health.set_service_status(name, status).await;
                if name == "faultline.kv.v1.Kv" {
                    // The server as a whole ("") follows its main service.
                    health.set_service_status("", status).await;
                }
            }
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let s = self.shared.lock().expect("membership lock");
        let now = s.now_ms();
        let members = s
            .swim
            .members()
            .map(|m| MemberInfo {
                id: m.id,
                state: m.state as i32,
                incarnation: m.incarnation,
                meta: Some(m.meta.clone()),
                phi: if m.id == self.node_id {
                    0.0
                } else {
                    s.phi
                        .get(&m.id)
                        .map_or(0.0, |d| d.phi(now))
                        .min(PHI_SHOWN_MAX)
                },
                state_for_ms: now.saturating_sub(m.since_ms),
            })
            .collect();
        Ok(Response::new(MembersResponse {
            node_id: self.node_id,
            coordinator: s.swim.coordinator().unwrap_or(0),
            members,
            phi_threshold: s.phi_config.threshold,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_rounded_to_two_significant_digits() {
        for (rate, want) in [
            (0, 0),
            (99, 99),
            (123, 120),
            (4_567, 4_500),
            (10_001, 10_000),
        ] {
            assert_eq!(rounded(rate), want);
        }
    }
}
