//! `faultline-workloads`: what a Faultline run does to the cluster, as data.
//!
//! A workload is a YAML file naming the operations to issue (their mix, keys, rate and phases),
//! the checker and model its history is judged by, and the faults to inject. This crate parses and
//! validates those files with errors that point at `file:line:column`, and turns a workload plus
//! a seed into a deterministic stream of operations and a deterministic fault schedule. It does
//! no IO besides reading workload files: the harness sends the operations and injects the faults.
//!
//! Layout:
//! - `src/schema.rs`: the YAML schema ([`Workload`] and its parts), validation rules.
//! - `src/error.rs`: [`WorkloadError`], [`Location`].
//! - `src/locate.rs`: finds a field's line and column in the YAML text for validation errors.
//! - `src/suites.rs`: the builtin workloads ([`builtin`], [`resolve`]).
//! - `src/generator.rs`: [`Generator`], the seeded operation stream and open-loop arrivals.
//! - `src/nemesis.rs`: [`nemesis_schedule`], the seeded fault schedule, and partition shapes.
//! - `suites/*.yaml`: the builtin workloads, embedded with `include_str!`.
//! - `tests/workloads.rs`: parsing, error, determinism and distribution tests.

mod error;
mod generator;
mod locate;
mod nemesis;
mod schema;
mod suites;

pub use error::{Location, WorkloadError};
pub use generator::{
    Generator, MicroOp, MicroOpKind, Op, OpKind, OpValue, SET_KEY, SET_PREFIX, key_name,
    set_element_key,
};
pub use nemesis::{
    CorruptMode, Direction, FaultKind, Links, ScheduledFault, Shape, Target, nemesis_schedule,
};
pub use schema::{
    ALL_SHAPES, Bank, CausalResolve, Checker, DEFAULT_SESSION_HOP, Distribution, FaultName,
    Isolation, Keys, Keyspace, KillTarget, MAX_CONCURRENCY, MAX_KEY_COUNT, MAX_RATE,
    MAX_REQUEST_TIMEOUT_MS, MAX_TIME_LIMIT_SECS, MAX_TXN_OPS, MAX_ZIPF_EXPONENT, MIN_INTERVAL_SECS,
    MembershipWorkload, Mix, Model, Nemesis, Phase, ReadMode, ShapeName, TxnShape, Workload,
};
pub use suites::{builtin, builtin_names, resolve};
