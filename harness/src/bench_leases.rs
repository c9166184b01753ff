//! `faultline bench --leases N`: what it costs a cluster to keep N leases alive. Clients
//! grant the leases, then renew each one every third of its TTL (etcd's client does the
//! same), for `seconds`. Each renewal is a `LeaseRenew` at the lease's partition leader,
//! which renews its clock and confirms its leadership with a quorum before answering, so
//! the cost is the RPC and that round as much as the lease core's work.
//!
//! Printed: grant throughput; keep-alives per second asked for and done, their latency;
//! each node's CPU over an idle window before the grants and over the keep-alive window;
//! each node's resident memory before and after. A lease answered NOT_FOUND within the
//! TTL of its last acknowledged renewal is a lost lease, and fails the bench.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_harness::cluster::LocalCluster;
use faultline_node::client::{Routing, RoutingClient};

const RPC_TIMEOUT: Duration = Duration::from_secs(5);

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS in /proc status")?
        .parse()?;
    Ok(kib / 1024.0)
}

fn cpu_of(pids: &[(u64, u32)]) -> anyhow::Result<Vec<f64>> {
    pids.iter()
        .map(|&(_, pid)| super::bench::cpu_secs(pid))
        .collect()
}

pub async fn run(
    cluster: &LocalCluster,
    leases: usize,
    clients: usize,
    ttl_ms: u64,
    seconds: u64,
) -> anyhow::Result<std::process::ExitCode> {
    let clients = clients.clamp(1, leases.max(1));
    let seeds: Vec<_> = cluster.ids().iter().map(|&id| cluster.addr(id)).collect();
    let router = Arc::new(RoutingClient::new(
        seeds,
        Routing::Direct,
        None,
        Duration::from_secs(2),
    ));
    let pids: Vec<(u64, u32)> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id).map(|pid| (id, pid)))
        .collect();

    // The cluster at rest, for comparison: the same nodes, no leases.
    let idle_secs = seconds.clamp(1, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before: Vec<f64> = pids
        .iter()
        .map(|&(_, pid)| rss_mib(pid))
        .collect::<anyhow::Result<_>>()?;
    let cpu_idle_start = cpu_of(&pids)?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_elapsed = idle_started.elapsed().as_secs_f64();
    let cpu_idle: Vec<f64> = cpu_of(&pids)?
        .iter()
        .zip(&cpu_idle_start)
        .map(|(after, before)| 100.0 * (after - before) / idle_elapsed)
        .collect();

    // Grants, `clients` at a time.
    let granted_started = Instant::now();
    let mut grants = Vec::new();
    for c in 0..clients {
        let router = router.clone();
        let count = leases / clients + usize::from(c < leases % clients);
        grants.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let sent = Instant::now();
                let reply = router
                    .lease_grant(ttl_ms, Vec::new(), RPC_TIMEOUT)
                    .await
                    .map_err(|s| anyhow::anyhow!("a lease grant failed: {}", s.message()))?;
                ids.push((reply.id, reply.ttl_ms, sent));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut owned: Vec<Vec<(u64, u64, Instant)>> = Vec::new();
    for task in grants {
        owned.push(task.await.context("a grant task panicked")??);
    }
    let grant_secs = granted_started.elapsed().as_secs_f64();
    // How far the leader's lease clock fell behind true time over the grants: the first
    // lease's TTL less what it has left, against the true time since its grant was sent.
    let clock = match owned.first().and_then(|ids| ids.first()) {
        Some(&(id, ttl, sent)) => router
            .lease_time_to_live(id, false, RPC_TIMEOUT)
            .await
            .ok()
            .map(|r| {
                (
                    ttl.saturating_sub(r.ttl_ms),
                    sent.elapsed().as_millis() as u64,
                )
            }),
        None => None,
    };
    let ttl_granted = owned
        .iter()
        .flatten()
        .map(|&(_, t, _)| t)
        .min()
        .unwrap_or(ttl_ms);

    // One lease nobody renews: it must be gone by the end, or expiry is not working.
    let lapsing = router
        .lease_grant(ttl_ms, Vec::new(), RPC_TIMEOUT)
        .await
        .map_err(|s| anyhow::anyhow!("a lease grant failed: {}", s.message()))?;
    let lapsing_sent = Instant::now();

    // Keep-alives: each client renews each of its leases once every TTL / 3, spread out.
    let period = Duration::from_millis(ttl_granted / 3);
    let done = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(AtomicUsize::new(0));
    let cpu_start = cpu_of(&pids)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for mut ids in owned {
        let (router, done, lost, late) = (router.clone(), done.clone(), lost.clone(), late.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            if ids.is_empty() {
                return latencies;
            }
            let spacing = period / ids.len() as u32;
            let mut next = Instant::now();
            'run: loop {
                for (id, ttl, promised) in ids.iter_mut() {
                    if Instant::now() >= until {
                        break 'run;
                    }
                    tokio::time::sleep_until(next.into()).await;
                    next += spacing;
                    let sent = Instant::now();
                    match router.lease_renew(*id, RPC_TIMEOUT).await {
                        Ok(reply) => {
                            latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                            done.fetch_add(1, Ordering::Relaxed);
                            *promised = sent;
                            *ttl = reply.ttl_ms;
                        }
                        // Gone before the TTL its last renewal (or its grant) promised,
                        // counted from when that was sent: lost. Later: a renewal failed
                        // or came late, which `failed` counts.
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            if promised.elapsed() < Duration::from_millis(*ttl) {
                                lost.fetch_add(1, Ordering::Relaxed);
                            } else {
                                late.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("a keep-alive task panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = cpu_of(&pids)?
        .iter()
        .zip(&cpu_start)
        .map(|(after, before)| 100.0 * (after - before) / elapsed)
        .collect();
    let rss_after: Vec<f64> = pids
        .iter()
        .map(|&(_, pid)| rss_mib(pid))
        .collect::<anyhow::Result<_>>()?;
    let lapsed = if lapsing_sent.elapsed() > Duration::from_millis(lapsing.ttl_ms + 1_000) {
        match router.lease_renew(lapsing.id, RPC_TIMEOUT).await {
            Err(status) if status.code() == tonic::Code::NotFound => Some(true),
            _ => Some(false),
        }
    } else {
        None
    };
    let done = done.load(Ordering::Relaxed);
    let lost = lost.load(Ordering::Relaxed);
    let failed = late.load(Ordering::Relaxed);

    println!(
        "faultline bench --leases {leases}: {} nodes, TTL {ttl_granted} ms, {clients} clients, \
         each lease renewed every {} ms for {seconds} s",
        pids.len(),
        period.as_millis()
    );
    println!(
        "grants: {leases} in {grant_secs:.2} s ({:.0}/s)",
        leases as f64 / grant_secs
    );
    if let Some((counted, true_ms)) = clock {
        println!(
            "lease clock over the grants: the first lease's leader counted {counted} ms of \
             the {true_ms} ms since it was granted"
        );
    }
    println!(
        "keep-alives: {:.0}/s asked for, {:.0}/s done ({done} ok, {failed} failed, {lost} \
         NOT_FOUND); latency p50 {:.2} ms, p99 {:.2} ms",
        leases as f64 / period.as_secs_f64(),
        done as f64 / elapsed,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99)
    );
    println!(
        "{:<6} {:>14} {:>20} {:>12} {:>12}",
        "node", "CPU % at rest", "CPU % keeping alive", "RSS MiB", "RSS after"
    );
    for (i, (id, _)) in pids.iter().enumerate() {
        println!(
            "n{id:<5} {:>14.1} {:>20.1} {:>12.1} {:>12.1}",
            cpu_idle[i], cpu[i], rss_before[i], rss_after[i]
        );
    }
    match lapsed {
        Some(true) => println!("a lease nobody renewed: gone by the end, as it must be"),
        Some(false) => {
            eprintln!(
                "faultline bench: lease {} was never renewed and was still alive more than \
                 its TTL later: leases do not expire",
                lapsing.id
            );
            return Ok(std::process::ExitCode::from(1));
        }
        None => println!("(--seconds shorter than the TTL: expiry not checked)"),
    }
    if lost > 0 {
        eprintln!(
            "faultline bench: {lost} keep-alives were answered NOT_FOUND within the TTL of \
             their lease's last acknowledged renewal: leases were lost"
        );
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
