//! Criterion benchmarks of the node's lease core (`faultline_node::cluster::lease`) with
//! 10,000 leases on one range: what the leader pays per keep-alive (a renewal) and per tick
//! (the scan for leases that ran out), and what a new leader pays to start every lease's
//! clock. The RPC around a keep-alive (a ReadIndex round) is measured by the node's own
//! bench, not here.
//!
//! `cargo bench -p faultline-checkers --bench leases -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use faultline_node::cluster::lease::{LeaseTable, LeaseTimers, lease_id};

const LEASES: u64 = 10_000;
const TTL_MS: u64 = 5_000;

fn setup() -> (LeaseTable, LeaseTimers) {
    let mut table = LeaseTable::default();
    let mut timers = LeaseTimers::default();
    timers.promote(&table, 0, 300);
    for i in 1..=LEASES {
        let id = lease_id(1, i);
        table.grant(id, TTL_MS);
        table.attach(format!("key{i:06}").as_bytes(), id);
        timers.granted(id, TTL_MS, 0);
    }
    (table, timers)
}

fn leases(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease-core-10k");
    let (table, mut timers) = setup();
    let mut now = 1;
    group.bench_function("renew-every-lease-once", |b| {
        b.iter(|| {
            now += 1;
            for i in 1..=LEASES {
                black_box(timers.renew(lease_id(1, i), TTL_MS, now));
            }
        })
    });
    let (_, mut timers) = setup();
    group.bench_function("tick-scan-none-due", |b| {
        b.iter(|| black_box(timers.due(1_000)))
    });
    let (_, mut timers) = setup();
    group.bench_function("promote-new-leader", |b| {
        b.iter(|| {
            timers.demote();
            timers.promote(black_box(&table), 2_000, 300);
        })
    });
    group.finish();
}

criterion_group!(benches, leases);
criterion_main!(benches);
