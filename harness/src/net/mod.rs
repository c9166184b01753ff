//! Network faults for a cluster on one machine: a private network namespace (root or
//! rootless), iptables rules in it, packets held back on slow links, and the shapes of
//! partitions (grudges).

pub mod delay;
pub mod firewall;
pub mod namespace;
pub mod shapes;
