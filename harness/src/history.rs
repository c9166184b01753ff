//! The run's history: every invocation and completion a client saw, and every nemesis
//! event, as JSON Lines (the contract in GUIDE.md). Written as it happens, so a run that
//! is interrupted still leaves the history up to that point.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    /// Failed by its own semantics (a cas whose compare did not match).
    Fail,
    /// Definitely not applied: written as `fail` with `"not_applied": true`, so that the
    /// checker does not read a refused cas as one whose compare did not match.
    #[serde(rename = "fail")]
    Refused,
    Info,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Nemesis(&'static str),
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub process: Process,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub f: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: Value,
    /// Why an operation failed or is unknown; what a nemesis did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node the client talked to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_applied: bool,
    /// On a completion: how many times the client resent the write with the same write id
    /// before this answer (workload `write_retries`).
    #[serde(skip_serializing_if = "is_zero")]
    pub resends: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Default, Clone, Copy, Debug, Serialize)]
pub struct Counts {
    pub invoke: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

pub struct History {
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    next_index: u64,
    out: BufWriter<File>,
    counts: Counts,
    write_error: Option<String>,
}

impl History {
    pub fn create(path: &Path, started: Instant) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let inner = Inner {
            next_index: 0,
            out: BufWriter::new(file),
            counts: Counts::default(),
            write_error: None,
        };
        Ok(Self {
            started,
            inner: Mutex::new(inner),
        })
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Records an event; returns its index. `resends`: on a completion, how many times the
    /// client resent the write before this answer (0 otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        kind: EventType,
        process: Process,
        f: &str,
        key: Option<&str>,
        value: Value,
        error: Option<String>,
        node: Option<u64>,
        resends: u32,
    ) -> u64 {
        let mut inner = self.inner.lock().expect("history lock");
        // The time is taken under the lock so that indices and times agree.
        let time = self.elapsed_ns();
        let index = inner.next_index;
        inner.next_index += 1;
        if matches!(process, Process::Client(_)) {
            match kind {
                EventType::Invoke => inner.counts.invoke += 1,
                EventType::Ok => inner.counts.ok += 1,
                EventType::Fail | EventType::Refused => inner.counts.fail += 1,
                EventType::Info => inner.counts.info += 1,
            }
        }
        let event = Event {
            index,
            kind,
            process,
            time,
            f: f.to_string(),
            key: key.map(str::to_string),
            value,
            error,
            node,
            not_applied: kind == EventType::Refused,
            resends,
        };
        let line = serde_json::to_string(&event).expect("events serialize");
        if let Err(e) = writeln!(inner.out, "{line}") {
            inner.write_error.get_or_insert_with(|| e.to_string());
        }
        index
    }

    pub fn counts(&self) -> Counts {
        self.inner.lock().expect("history lock").counts
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().expect("history lock");
        if let Some(error) = &inner.write_error {
            anyhow::bail!("writing the history failed: {error}");
        }
        inner.out.flush().context("cannot flush the history")?;
        inner
            .out
            .get_ref()
            .sync_all()
            .context("cannot sync the history")?;
        Ok(())
    }
}
