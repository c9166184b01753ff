//! Errors from loading a workload. Every error about a file's content names the file, and, when
//! known, the line and column, so that a person can jump straight to the mistake.

use std::fmt;

/// A 1-based position in a workload file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column (in characters), starting at 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a workload could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The workload file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (unknown field, wrong type, unknown
    /// name). `message` is serde_yaml's, which starts with the field path when the field is
    /// nested, e.g. `nemesis.faults[1]: unknown variant ...`.
    #[error("{file}:{}{message}", OptionalLocation(*at))]
    Yaml {
        /// The file the text came from.
        file: String,
        /// Where serde_yaml stopped, if it knows.
        at: Option<Location>,
        /// serde_yaml's message without its trailing "at line L column C".
        message: String,
    },
    /// The YAML fits the schema but breaks a rule (a range, or a rule between fields).
    #[error("{file}:{at}: {field}: {message}")]
    Invalid {
        /// The file the text came from.
        file: String,
        /// Where the offending field is written (best effort; see `locate`).
        at: Location,
        /// The field's path, e.g. `phases[1].duration_secs`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// Neither a builtin workload name nor an existing file.
    #[error("unknown workload `{name}`: no such file, and not a builtin (builtins: {builtins})")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The builtin names, comma separated.
        builtins: String,
    },
}

impl WorkloadError {
    /// Where in the file the error is, if it is about a file's content and the place is known.
    pub fn location(&self) -> Option<Location> {
        match self {
            WorkloadError::Yaml { at, .. } => *at,
            WorkloadError::Invalid { at, .. } => Some(*at),
            WorkloadError::Io { .. } | WorkloadError::Unknown { .. } => None,
        }
    }

    /// The path of the offending field, for validation errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            WorkloadError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Wraps a serde_yaml error, moving its position to the front where editors and terminals
    /// recognise `file:line:column:` as a link.
    pub(crate) fn from_yaml(file: &str, error: &serde_yaml::Error) -> WorkloadError {
        let at = error.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        let mut message = error.to_string();
        if let Some(at) = at {
            let suffix = format!(" at line {} column {}", at.line, at.column);
            if let Some(start) = message.find(&suffix) {
                message.replace_range(start..start + suffix.len(), "");
            }
        }
        WorkloadError::Yaml {
            file: file.to_owned(),
            at,
            message,
        }
    }
}

/// Formats `line:column: ` or, when the position is unknown, a single space.
struct OptionalLocation(Option<Location>);

impl fmt::Display for OptionalLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, "{at}: "),
            None => f.write_str(" "),
        }
    }
}
