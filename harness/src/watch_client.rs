//! The watch workload's watchers (checkers/src/watch.rs has the history form): a segment
//! resumes the watcher's cursor on one node for a while and records what it was sent and
//! which revisions it was told it had in full; a final `watch-all` replays every change
//! from revision 1 on one node, as the checker's reference.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use faultline_node::client::watch::{Observed, WatchCursor};
use faultline_node::proto::kv::watch_client::WatchClient;
use faultline_node::proto::kv::{EventType, WatchResponse};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How often a watcher asks for progress while nothing changes.
const PROGRESS_MS: u64 = 100;
/// A final watch gives up after this long without having caught up everywhere.
const FINAL_WATCH_LIMIT: Duration = Duration::from_secs(30);

/// A cursor over every key, from revision 1 in partitions not seen yet, with previous
/// values.
pub fn everything() -> WatchCursor {
    WatchCursor {
        key: Vec::new(),
        range_end: vec![0],
        prev_value: true,
        progress_notify_ms: PROGRESS_MS,
        start_revision: 1,
        next: BTreeMap::new(),
    }
}

/// What one segment saw.
#[derive(Default)]
pub struct Segment {
    events: Vec<Value>,
    /// partition -> (from, to): revisions from..=to were delivered in full.
    coverage: BTreeMap<u64, (u64, u64)>,
    compactions: BTreeMap<u64, u64>,
    /// Why it ended early, if it did.
    pub ended: Option<String>,
    /// Partitions that reported since the last event-free response was counted.
    quiet: BTreeMap<u64, bool>,
}

impl Segment {
    /// The completion value: `[events, coverage, compactions]`.
    pub fn value(&self) -> Value {
        let coverage: Vec<Value> = self
            .coverage
            .iter()
            .map(|(p, (from, to))| json!([p, from, to]))
            .collect();
        let compactions: Vec<Value> = self
            .compactions
            .iter()
            .map(|(p, r)| json!([p, r]))
            .collect();
        json!([self.events, coverage, compactions])
    }

    fn take(&mut self, response: &WatchResponse, cursor: &mut WatchCursor) {
        let partition = response.partition;
        let from = cursor
            .next
            .get(&partition)
            .copied()
            .unwrap_or(cursor.start_revision);
        for event in &response.events {
            let decode = |bytes: &[u8]| crate::client::decode(bytes);
            let value = if event.r#type == EventType::Delete as i32 {
                Value::Null
            } else {
                decode(&event.value)
            };
            let prev = if event.has_prev_value {
                decode(&event.prev_value)
            } else {
                Value::Null
            };
            self.events.push(json!([
                partition,
                event.revision,
                String::from_utf8_lossy(&event.key),
                value,
                prev
            ]));
        }
        // A compaction's cancel promises nothing: the revisions below it are gone, and
        // the watch resumes past it with its coverage starting afresh.
        if response.canceled && response.compact_revision > 0 {
            self.coverage.remove(&partition);
        } else {
            let entry = self.coverage.entry(partition).or_insert((from, from - 1));
            entry.1 = entry.1.max(response.revision);
        }
        if !response.created {
            *self.quiet.entry(partition).or_default() |= response.events.is_empty();
        } else {
            self.quiet.entry(partition).or_default();
        }
        if let Observed::Canceled {
            reason, compacted, ..
        } = cursor.observe(response)
        {
            if let Some(revision) = compacted {
                self.compactions.insert(partition, revision);
            }
            self.ended = Some(reason);
        }
    }
}

/// Watches through `addr` (sending from `source`) with `cursor` until `until`, or until
/// the stream ends; `done` may end it sooner.
pub async fn watch_for(
    addr: SocketAddr,
    source: Option<IpAddr>,
    cursor: &mut WatchCursor,
    until: Instant,
    segment: &mut Segment,
    mut done: impl FnMut(&Segment) -> bool,
) {
    let channel =
        faultline_node::server::transport::node_endpoint(addr, source, Duration::from_secs(2))
            .connect_lazy();
    let mut client = WatchClient::new(channel);
    let mut stream = match tokio::time::timeout_at(until, client.watch(cursor.request())).await {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => {
            segment.ended = Some(format!("{:?}: {}", status.code(), status.message()));
            return;
        }
        Err(_) => {
            segment.ended = Some("the watch did not open in time".into());
            return;
        }
    };
    loop {
        match tokio::time::timeout_at(until, stream.message()).await {
            Err(_) => return,
            Ok(Ok(Some(response))) => {
                segment.take(&response, cursor);
                if segment.ended.is_some() || done(segment) {
                    return;
                }
            }
            Ok(Ok(None)) => {
                segment.ended = Some("the stream ended".into());
                return;
            }
            Ok(Err(status)) => {
                segment.ended = Some(format!("{:?}: {}", status.code(), status.message()));
                return;
            }
        }
    }
}

/// The final watch: every change from revision 1 through `addr`, until every partition
/// has caught up (an event-free response after its history), resuming past a compaction.
pub async fn watch_all(addr: SocketAddr, source: Option<IpAddr>) -> Result<Value, String> {
    let mut cursor = everything();
    let mut segment = Segment::default();
    let deadline = Instant::now() + FINAL_WATCH_LIMIT;
    loop {
        segment.ended = None;
        segment.quiet.clear();
        watch_for(addr, source, &mut cursor, deadline, &mut segment, |s| {
            !s.quiet.is_empty() && s.quiet.values().all(|&q| q)
        })
        .await;
        match &segment.ended {
            None if !segment.quiet.is_empty() && segment.quiet.values().all(|&q| q) => {
                return Ok(segment.value());
            }
            None => return Err("the final watch did not catch up in time".into()),
            // Past a compaction the cursor has moved on: watch again from there.
            Some(_) if !segment.compactions.is_empty() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(why) => return Err(format!("the final watch ended: {why}")),
        }
    }
}
