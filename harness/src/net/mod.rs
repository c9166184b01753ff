//! Network faults for a cluster on one machine: a private network namespace (root or
//! rootless), iptables rules in it, and the shapes of partitions (grudges).

pub mod firewall;
pub mod namespace;
pub mod shapes;
