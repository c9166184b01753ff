//! Compares the placement schemes: how evenly partitions' replicas spread over the nodes,
//! and what share of replicas move when a node joins (BENCHMARKS.md, "Placement").
//!
//!     cargo run --release -p faultline-node --example placement
//!
//! Also how evenly keys spread over hash buckets.

use faultline_node::partitioning::hashing::{Placement, bucket_of, placement_stats};

fn main() {
    println!(
        "replicas: 3 per partition; 'moved' = replica placements that change when node n+1 joins"
    );
    println!(
        "{:<16} {:>6} {:>10} {:>9} {:>9} {:>8} {:>8}",
        "scheme", "nodes", "partitions", "max/mean", "min/mean", "moved", "ideal"
    );
    for nodes in [3u64, 5, 10] {
        let ids: Vec<u64> = (1..=nodes).collect();
        for partitions in [64u64, 1_000] {
            for scheme in [
                Placement::Rendezvous,
                Placement::Jump,
                Placement::Ring(16),
                Placement::Ring(256),
            ] {
                let stats = placement_stats(scheme, partitions, &ids, 3, nodes + 1);
                let name = match scheme {
                    Placement::Ring(v) => format!("ring ({v} vnodes)"),
                    other => format!("{other:?}").to_lowercase(),
                };
                println!(
                    "{name:<16} {nodes:>6} {partitions:>10} {:>9.3} {:>9.3} {:>7.1}% {:>7.1}%",
                    stats.max_over_mean,
                    stats.min_over_mean,
                    100.0 * stats.moved_fraction,
                    100.0 * stats.ideal_moved_fraction
                );
            }
        }
    }
    println!("\nkeys k0..k99999 over hash buckets:");
    println!("{:>8} {:>9} {:>9}", "buckets", "max/mean", "min/mean");
    for buckets in [8u32, 64, 1_000] {
        let mut counts = vec![0u64; buckets as usize];
        let keys = 100_000u64;
        for i in 0..keys {
            counts[bucket_of(format!("k{i}").as_bytes(), buckets) as usize] += 1;
        }
        let mean = keys as f64 / f64::from(buckets);
        let max = *counts.iter().max().expect("buckets") as f64;
        let min = *counts.iter().min().expect("buckets") as f64;
        println!("{buckets:>8} {:>9.3} {:>9.3}", max / mean, min / mean);
    }
}
