//! History file formats: Faultline's JSON Lines, Jepsen's EDN, and Jepsen's text log.
//!
//! Each format reads text into [`Event`]s and writes events back; [`read_history`] then pairs
//! the events into a [`History`].

pub mod edn;
pub mod jepsen_log;
pub mod jsonl;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::history::{Event, History};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One JSON object per line (Faultline's own).
    Jsonl,
    /// Jepsen/Knossos EDN.
    Edn,
    /// Jepsen's text log of operations (read only).
    JepsenLog,
}

impl Format {
    /// Guesses the format from a file name's extension (`.jsonl`, `.json`, `.ndjson`, `.edn`,
    /// `.log` for a Jepsen log).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "edn" => Some(Format::Edn),
            "log" => Some(Format::JepsenLog),
            _ => None,
        }
    }

    /// Parses a format name as a command line would give it.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "jsonl" => Some(Format::Jsonl),
            "edn" => Some(Format::Edn),
            "jepsen-log" => Some(Format::JepsenLog),
            _ => None,
        }
    }

    /// Reads events from text in this format.
    pub fn read_events(self, text: &str) -> Result<Vec<Event>, Error> {
        match self {
            Format::Jsonl => jsonl::read_events(text),
            Format::Edn => edn::read_events(text),
            Format::JepsenLog => jepsen_log::read_events(text),
        }
    }

    /// Writes events in this format; a Jepsen log is written as EDN, which carries
    /// everything the log does.
    pub fn write_events(
        self,
        events: &[Event],
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        match self {
            Format::Jsonl => jsonl::write_events(events, out),
            Format::Edn | Format::JepsenLog => edn::write_events(events, out),
        }
    }
}

/// Reads and pairs a history from text.
pub fn read_history(text: &str, format: Format) -> Result<History, Error> {
    History::from_events(format.read_events(text)?)
}

/// Reads a history file; `format` `None` means guess from the extension.
pub fn read_history_file(path: &Path, format: Option<Format>) -> Result<History, Error> {
    History::from_events(read_events_file(path, format)?)
}

/// Reads a history file's events in file order, unpaired (transaction checkers pair them
/// themselves); `format` `None` means guess from the extension.
pub fn read_events_file(path: &Path, format: Option<Format>) -> Result<Vec<Event>, Error> {
    let format = format
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| Error::UnknownFormat(path.to_path_buf()))?;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    format.read_events(&text)
}
