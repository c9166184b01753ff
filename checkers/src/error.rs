//! The crate's error type.
//!
//! Every error here is about the *input* (a history file, a model name, an operation the model
//! does not know) and names where the problem is and what was expected, so that a person can fix
//! the file. Broken invariants of the checker itself are `assert!`s, never errors. A verdict of
//! `Unknown` (deadline, memory bound) is not an error either: it is a result, see
//! [`crate::linearizability::CheckResult`].

use std::path::PathBuf;

use crate::history::Value;

/// " (line N)" when the line is known.
fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// `"x"`, or "the register" for key-less operations.
fn key_name(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!("key {k:?}"))
        .unwrap_or_else(|| "the register".to_string())
}

/// Errors from reading histories and setting up a check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The history file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// The text is not well-formed (bad JSON, bad EDN, a field of the wrong type).
    #[error("line {line}{}: {message}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column, where the format tracks it (EDN does).
        column: Option<usize>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Events are well-formed but do not make a history (a process invokes twice without a
    /// completion, a completion without an invocation, ...).
    #[error("line {line}: {message}")]
    History {
        /// 1-based line of the offending event (0 if the events were not read from a file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An operation the chosen model cannot interpret (unknown `f`, wrong value shape).
    #[error("operation {id}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Model {
        /// The operation's id.
        id: usize,
        /// The line of its invocation, when read from a file.
        line: Option<usize>,
        /// What the model expected.
        message: String,
    },
    /// A checker option that names something unknown (a consistency model, an anomaly).
    #[error("{0}")]
    Options(String),
    /// A model name that is not one of the built-in models.
    #[error("unknown model {0:?}; expected one of register, cas-register, kv, set, counter")]
    UnknownModel(String),
    /// A history format that could not be named or guessed.
    #[error(
        "cannot tell the history format of {0}: use a .jsonl or .edn extension or name the format"
    )]
    UnknownFormat(PathBuf),
    /// Two writes of one value to one key: a read of that value could not name the write it
    /// saw, which the causal checker needs (the history must be *differentiated*).
    #[error(
        "operations {first}{} and {second}{} both write {value} to {}; the causal checker \
         needs every value written to a key to be unique, so that a read names the write it \
         saw: make the workload write unique values",
        at_line(first_line),
        at_line(second_line),
        key_name(key)
    )]
    DuplicateWrite {
        /// The key both write.
        key: Option<String>,
        /// The value both write.
        value: Value,
        /// The earlier write's operation id.
        first: usize,
        /// Its invocation's line, when read from a file.
        first_line: Option<usize>,
        /// The later write's operation id.
        second: usize,
        /// Its invocation's line, when read from a file.
        second_line: Option<usize>,
    },
    /// More operations than a checker's bound allows.
    #[error(
        "{operations} operations take part in the causal check, more than its bound of \
         {operations_max} (its causal order takes n^2 / 8 bytes for n operations); split the history \
         into shorter time windows and check each, or raise operations_max"
    )]
    TooManyOperations {
        /// Operations that would take part.
        operations: usize,
        /// The bound.
        operations_max: usize,
    },
}
