//! History checkers for Faultline.
//!
//! Module layout, one concept each:
//! - [`history`]: events, operations and the pairing of one into the other.
//! - [`formats`]: reading and writing history files ([`formats::jsonl`], [`formats::edn`]).
//! - [`generate`]: simulated linearizable histories, for benchmarks and tests.
//! - [`model`]: sequential specifications (register, cas-register, kv, set, counter).
//! - [`linearizability`]: the checker (Wing & Gong's search with Lowe's cache, per partition).
//! - [`causal`]: the causal checker (Bouajjani et al.'s bad patterns for CC and CCv, and the
//!   four session guarantees), for read/write histories with unique written values.
//! - [`bank`]: the bank checker (Jepsen's `bank`: totals conserved, no negative balances,
//!   a wrong total explained by the transfers in flight).
//! - [`set`]: the set checker (Jepsen's `set`: lost, unexpected and recovered elements).
//! - [`report`]: a verdict as text, JSON, or a standalone HTML timeline; [`report::causal`]
//!   does the same (text and JSON) for a causal verdict.
//! - [`txn`]: the transactional checker (Elle's list-append and rw-register analyses:
//!   version orders, dependency graphs, cycle classification, consistency models).
//! - [`models`]: stateright models of the node's protocols, on the node's own code
//!   ([`models::raft`], behind `faultline model raft`).
//! - [`error`]: the crate's error type.
//!
//! [`check_file`] ties them together for a command line, with the models by name
//! ([`model::MODEL_NAMES`]); [`check_causal_file`] does the same for the checker called
//! `causal` (a workload's `checker: causal`):
//!
//! ```
//! use faultline_checkers::{causal, formats, linearizability, model};
//!
//! let text = r#"{"type":"invoke","process":0,"f":"write","value":1}
//! {"type":"ok","process":0,"f":"write","value":1}
//! {"type":"invoke","process":1,"f":"read"}
//! {"type":"ok","process":1,"f":"read","value":1}"#;
//! let history = formats::read_history(text, formats::Format::Jsonl).unwrap();
//! let verdict = linearizability::check(&model::Register, &history, &Default::default()).unwrap();
//! assert_eq!(verdict.result, linearizability::CheckResult::Valid);
//!
//! // The same history is causally consistent; a session that then reads nil is not.
//! let causal = causal::check_causal(&history, &Default::default()).unwrap();
//! assert!(causal.valid);
//! let stale = format!("{text}\n{}\n{}",
//!     r#"{"type":"invoke","process":1,"f":"read"}"#,
//!     r#"{"type":"ok","process":1,"f":"read","value":null}"#);
//! let history = formats::read_history(&stale, formats::Format::Jsonl).unwrap();
//! let causal = causal::check_causal(&history, &Default::default()).unwrap();
//! assert_eq!(causal.anomalies[0].kind, causal::AnomalyKind::MonotonicReads);
//! ```

pub mod bank;
pub mod causal;
pub mod error;
pub mod formats;
pub mod generate;
pub mod history;
pub mod linearizability;
pub mod lock;
pub mod membership;
pub mod model;
pub mod models;
pub mod report;
pub mod set;
pub mod txn;
pub mod watch;

use std::path::Path;

pub use causal::{
    Anomaly, AnomalyKind, CausalOptions, CausalVerdict, ConsistencyLevel, check_causal,
};
pub use error::Error;
pub use formats::Format;
pub use history::{History, Operation, Outcome, Value};
pub use linearizability::{CheckOptions, CheckResult, Verdict, check};
pub use model::{CasFail, Model};

/// Reads a history file and checks it for linearizability against a built-in model.
///
/// `format` `None` guesses from the extension; `model_name` is one of
/// [`model::MODEL_NAMES`]. Returns the history too, since reports need its operations.
pub fn check_file(
    path: &Path,
    format: Option<Format>,
    model_name: &str,
    options: &CheckOptions,
) -> Result<(History, Verdict), Error> {
    // Reject a bad model name before reading a possibly large file.
    if !model::MODEL_NAMES.contains(&model_name) {
        return Err(Error::UnknownModel(model_name.to_string()));
    }
    let history = formats::read_history_file(path, format)?;
    let verdict = check_by_name(&history, model_name, options)?;
    Ok((history, verdict))
}

/// Checks a history against the built-in model called `model_name`.
pub fn check_by_name(
    history: &History,
    model_name: &str,
    options: &CheckOptions,
) -> Result<Verdict, Error> {
    match model_name {
        "register" => check(&model::Register, history, options),
        "cas-register" => check(&model::CasRegister::new(options.cas_fail), history, options),
        "kv" => check(&model::Kv, history, options),
        "set" => check(&model::Set, history, options),
        "counter" => check(&model::Counter, history, options),
        other => Err(Error::UnknownModel(other.to_string())),
    }
}

/// Reads a transaction history file and checks it with the transactional checker
/// ([`txn::check`]): `workload` says how to read its micro-ops.
pub fn check_txn_file(
    path: &Path,
    format: Option<Format>,
    workload: txn::Workload,
    options: &txn::TxnOptions,
) -> Result<(txn::history::TxnHistory, txn::TxnVerdict), Error> {
    options.validate()?;
    let allowed = match workload {
        txn::Workload::ListAppend => txn::history::MopSet::ListAppend,
        txn::Workload::RwRegister => txn::history::MopSet::RwRegister,
    };
    let format = format
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| Error::UnknownFormat(path.to_path_buf()))?;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // JSON Lines go straight to transactions; a million need no events in memory.
    let history = match format {
        Format::Jsonl => txn::history::TxnHistory::from_jsonl(&text, allowed)?,
        Format::Edn | Format::JepsenLog => {
            txn::history::TxnHistory::from_events(&format.read_events(&text)?, allowed)?
        }
    };
    drop(text);
    let verdict = txn::check(&history, workload, options)?;
    Ok((history, verdict))
}

/// Reads a history file and checks it for causal consistency ([`causal::check_causal`]).
///
/// `format` `None` guesses from the extension. Returns the history too, since reports need
/// its operations.
pub fn check_causal_file(
    path: &Path,
    format: Option<Format>,
    options: &CausalOptions,
) -> Result<(History, CausalVerdict), Error> {
    let history = formats::read_history_file(path, format)?;
    let verdict = check_causal(&history, options)?;
    Ok((history, verdict))
}
