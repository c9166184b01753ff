//! Workloads as plug-ins. A workload kind binds what its YAML asks for (the schema and
//! the seeded generator live in `faultline-workloads`; the client adapter maps each of its
//! operations in `client.rs`) to the checker its history goes to and the model that checker
//! uses. `run.rs` asks the kind; it has no branch per workload. A new workload is a new
//! generator arm, a client operation, a checker, and one value here.

use std::path::Path;

use faultline_workloads::{Checker, Workload};

use crate::run::Results;
use crate::verdict;

/// What the harness needs to know about a kind of workload.
pub trait WorkloadKind: Sync {
    /// The checker's name, as `results.json` gives it.
    fn checker(&self) -> &'static str;
    /// The model the checker judges against, for the summary.
    fn model(&self, workload: &Workload) -> String;
    /// Checks the run's history and sets the verdict, with every guard applied.
    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        workload: &Workload,
    ) -> anyhow::Result<()>;
}

/// Registers, checked for linearizability per key (Wing–Gong–Lowe with P-compositionality).
struct Linearizable;
/// Sessions of reads and writes, checked for causal consistency.
struct Causal;
/// Unique adds and a final read of the whole set (Jepsen's `set`).
struct Set;

impl WorkloadKind for Linearizable {
    fn checker(&self) -> &'static str {
        "linearizability"
    }

    fn model(&self, workload: &Workload) -> String {
        match workload.model() {
            Some(faultline_workloads::Model::Register) => "register".into(),
            Some(faultline_workloads::Model::Kv) => "kv".into(),
            _ => "cas-register".into(),
        }
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_linearizable(results, run_dir)
    }
}

impl WorkloadKind for Causal {
    fn checker(&self) -> &'static str {
        "causal"
    }

    fn model(&self, _workload: &Workload) -> String {
        "causal".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_causal(results, run_dir)
    }
}

impl WorkloadKind for Set {
    fn checker(&self) -> &'static str {
        "set"
    }

    fn model(&self, _workload: &Workload) -> String {
        "set".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_set(results, run_dir)
    }
}

/// Transactions of micro-ops, checked with Elle's method.
struct Transactional(faultline_checkers::txn::Workload);

impl WorkloadKind for Transactional {
    fn checker(&self) -> &'static str {
        self.0.name()
    }

    /// The consistency model of the isolation level asked for.
    fn model(&self, workload: &Workload) -> String {
        workload
            .isolation
            .unwrap_or_default()
            .consistency_model()
            .into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_txn(results, run_dir, self.0)
    }
}

/// Jepsen's bank: totals conserved, no negative balance unless allowed.
struct BankKind;

impl WorkloadKind for BankKind {
    fn checker(&self) -> &'static str {
        "bank"
    }

    fn model(&self, _workload: &Workload) -> String {
        "bank".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_bank(results, run_dir, workload)
    }
}

/// Locks with leases protecting a register through fencing tokens.
struct LockKind;

impl WorkloadKind for LockKind {
    fn checker(&self) -> &'static str {
        "lock"
    }

    fn model(&self, _workload: &Workload) -> String {
        "fenced-lock".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_lock(results, run_dir)
    }
}

/// Writers and watchers: every watcher's stream against the committed history.
struct WatchKind;

impl WorkloadKind for WatchKind {
    fn checker(&self) -> &'static str {
        "watch"
    }

    fn model(&self, _workload: &Workload) -> String {
        "watch-stream".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        _workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_watch(results, run_dir)
    }
}

/// Observers of the gossip view against the faults.
struct MembershipKind;

impl WorkloadKind for MembershipKind {
    fn checker(&self) -> &'static str {
        "membership"
    }

    fn model(&self, _workload: &Workload) -> String {
        "swim".into()
    }

    fn check(
        &self,
        results: &mut Results,
        run_dir: &Path,
        workload: &Workload,
    ) -> anyhow::Result<()> {
        verdict::check_membership(results, run_dir, workload)
    }
}

/// The kind a workload's `checker` names.
pub fn kind(workload: &Workload) -> &'static dyn WorkloadKind {
    match workload.checker {
        Checker::Linearizability => &Linearizable,
        Checker::Causal => &Causal,
        Checker::Set => &Set,
        Checker::ListAppend => &Transactional(faultline_checkers::txn::Workload::ListAppend),
        Checker::RwRegister => &Transactional(faultline_checkers::txn::Workload::RwRegister),
        Checker::Bank => &BankKind,
        Checker::Lock => &LockKind,
        Checker::Watch => &WatchKind,
        Checker::Membership => &MembershipKind,
    }
}
