//! The crate's error type.
//!
//! Every error here is about the *input* (a history file, a model name, an operation the model
//! does not know) and names where the problem is and what was expected, so that a person can fix
//! the file. Broken invariants of the checker itself are `assert!`s, never errors. A verdict of
//! `Unknown` (deadline, memory bound) is not an error either: it is a result, see
//! [`crate::linearizability::CheckResult`].

use std::path::PathBuf;

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
    /// A model name that is not one of the built-in models.
    #[error("unknown model {0:?}; expected one of register, cas-register, kv, set, counter")]
    UnknownModel(String),
    /// A history format that could not be named or guessed.
    #[error(
        "cannot tell the history format of {0}: use a .jsonl or .edn extension or name the format"
    )]
    UnknownFormat(PathBuf),
}
