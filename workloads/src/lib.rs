//! Workload definitions (YAML) and their seeded operation generators.
