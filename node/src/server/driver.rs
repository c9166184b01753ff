//! The replication thread: the one owner of the Raft core, the state machine and the
//! WAL. It takes events in batches (group commit: one fsync per batch), drives the core,
//! and acts on each `Ready` in the order its contract gives.
//!
//! It is a plain thread, not a tokio task, because fsync blocks.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{oneshot, watch};

use super::durable::Durable;
use super::transport::Transport;
use crate::proto::kv::StatusResponse;
use crate::proto::raft::{ApplyResult, Command, Message, message::Body};
use crate::replication::{RaftCore, Ready, Role};
use crate::store::KvStore;

/// Ticks fired by one forward clock step; more would only repeat elections.
const CLOCK_STEP_TICKS_MAX: i64 = 1_000;

pub enum WriteOutcome {
    Applied(ApplyResult),
    NotLeader(Option<u64>),
    /// Another leader's entry took the proposal's index: it was not applied.
    Superseded,
}

pub enum ReadOutcome {
    Value(Option<(Vec<u8>, u64)>),
    NotLeader(Option<u64>),
    /// Leadership was lost before the read was confirmed.
    Dropped,
}

pub enum Event {
    Peer(Message),
    Write {
        command: Command,
        reply: oneshot::Sender<WriteOutcome>,
    },
    Read {
        key: Vec<u8>,
        serializable: bool,
        reply: oneshot::Sender<ReadOutcome>,
    },
    Status {
        /// The index to report the state digest at (0: the applied index), if wanted.
        digest_index: Option<u64>,
        reply: oneshot::Sender<StatusResponse>,
    },
    Shutdown,
}

/// What request handlers need to know without asking the thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub leader_id: Option<u64>,
    pub term: u64,
    pub lamport_time: u64,
    pub role: &'static str,
}

pub struct DriverOptions {
    pub tick: Duration,
    /// The clock the timers read; the fault-injection service may step it.
    pub clock: super::clock::TimerClock,
    pub snapshot_interval_entries: u64,
    pub batch_events_max: usize,
    pub double_apply: bool,
    pub early_ack: bool,
    pub seeded_bugs: Vec<String>,
}

pub struct Driver {
    core: RaftCore,
    store: KvStore,
    durable: Durable,
    transport: Transport,
    options: DriverOptions,
    view: watch::Sender<View>,
    pending_writes: HashMap<u64, (u64, oneshot::Sender<WriteOutcome>)>,
    pending_reads: HashMap<u64, (Vec<u8>, oneshot::Sender<ReadOutcome>)>,
    /// Confirmed reads waiting for the state machine to reach their index.
    confirmed_reads: Vec<(u64, u64)>,
    next_read_id: u64,
    applied_index: u64,
    /// (applied index, state digest) for the last `DIGESTS_KEPT` states the store passed
    /// through, so that replicas at different indices can still be compared at a common
    /// one after a run (StatusRequest.digest_index).
    digests: VecDeque<(u64, u64)>,
}

/// 16 bytes each: about 1 MiB.
const DIGESTS_KEPT: usize = 65_536;

impl Driver {
    pub fn new(
        core: RaftCore,
        store: KvStore,
        durable: Durable,
        transport: Transport,
        options: DriverOptions,
        view: watch::Sender<View>,
    ) -> Self {
        let applied_index = core.log().snapshot_index();
        let digests = VecDeque::from([(applied_index, store.digest())]);
        Self {
            core,
            store,
            durable,
            transport,
            options,
            view,
            pending_writes: HashMap::new(),
            pending_reads: HashMap::new(),
            confirmed_reads: Vec::new(),
            digests,
            next_read_id: 1,
            applied_index,
        }
    }

    /// Runs until `Event::Shutdown` or every sender is gone. An error is a storage
    /// failure: the node must stop rather than acknowledge what it cannot persist.
    pub fn run(mut self, events: Receiver<Event>) -> anyhow::Result<()> {
        let mut next_tick = Instant::now() + self.options.tick;
        let mut clock_offset_ms = self.options.clock.offset_ms();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut handled = 0;
            match events.recv_timeout(wait) {
                Ok(Event::Shutdown) => return Ok(()),
                Ok(event) => {
                    self.handle(event);
                    handled += 1;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Batch what else is queued: one Ready, one fsync for all of it.
            while handled < self.options.batch_events_max {
                match events.try_recv() {
                    Ok(Event::Shutdown) => return Ok(()),
                    Ok(event) => {
                        self.handle(event);
                        handled += 1;
                    }
                    Err(_) => break,
                }
            }
            let offset_ms = self.options.clock.offset_ms();
            if offset_ms != clock_offset_ms {
                self.step_clock(offset_ms - clock_offset_ms, &mut next_tick);
                clock_offset_ms = offset_ms;
            }
            if Instant::now() >= next_tick {
                self.core.tick();
                next_tick += self.options.tick;
                if next_tick < Instant::now() {
                    // Paused (SIGSTOP) or overloaded: do not replay the missed ticks in
                    // a burst, which would start an election at once.
                    next_tick = Instant::now() + self.options.tick;
                }
            }
            self.process_ready()?;
            self.publish_view();
        }
    }

    /// A clock step. Ticks are due on the node's own clock, so every deadline moves with
    /// it: backward holds the next tick back by the step; forward brings it nearer and fires
    /// every tick whose time the step skipped (bounded). A forward step that only undoes an
    /// earlier backward one therefore fires nothing, as on a real clock.
    fn step_clock(&mut self, delta_ms: i64, next_tick: &mut Instant) {
        let (ticks, next) = clock_step(*next_tick, delta_ms, Instant::now(), self.options.tick);
        for _ in 0..ticks {
            self.core.tick();
        }
        *next_tick = next;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Peer(message) => self.core.step(message),
            Event::Write { command, reply } => match self.core.propose(command.encode_to_vec()) {
                Ok(_) if self.options.early_ack => {
                    // The seeded bug: answer from a speculative copy of the state
                    // machine, before the entry is durable on a quorum.
                    let index = self.core.log().last_index();
                    let result =
                        self.store
                            .clone()
                            .apply(index, &command, self.options.double_apply);
                    let _ = reply.send(WriteOutcome::Applied(result));
                }
                Ok((index, term)) => {
                    self.pending_writes.insert(index, (term, reply));
                }
                Err(not_leader) => {
                    let _ = reply.send(WriteOutcome::NotLeader(not_leader.leader_hint));
                }
            },
            Event::Read {
                key,
                serializable: true,
                reply,
            } => {
                let value = self.store.get(&key).map(|(v, r)| (v.to_vec(), r));
                let _ = reply.send(ReadOutcome::Value(value));
            }
            Event::Read {
                key,
                serializable: false,
                reply,
            } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.core.read_index(id) {
                    Ok(()) => {
                        self.pending_reads.insert(id, (key, reply));
                    }
                    Err(not_leader) => {
                        let _ = reply.send(ReadOutcome::NotLeader(not_leader.leader_hint));
                    }
                }
            }
            Event::Status {
                digest_index,
                reply,
            } => {
                let mut status = self.status();
                if let Some(index) = digest_index {
                    let index = if index == 0 {
                        self.applied_index
                    } else {
                        index
                    };
                    status.state_digest = self.digest_at(index);
                    status.digest_index = index;
                }
                let _ = reply.send(status);
            }
            Event::Shutdown => {}
        }
    }

    fn process_ready(&mut self) -> anyhow::Result<()> {
        while self.core.has_ready() {
            let mut ready = self.core.ready();
            let (replication, acknowledgements): (Vec<Message>, Vec<Message>) =
                std::mem::take(&mut ready.messages)
                    .into_iter()
                    .partition(|m| {
                        matches!(
                            m.body,
                            Some(Body::AppendEntries(_)) | Some(Body::InstallSnapshot(_))
                        )
                    });
            self.transport.send(replication.into_iter());
            let core = &self.core;
            self.durable.persist(&ready, || {
                let log = core.log();
                (
                    core.hard_state(),
                    log.slice(log.first_index(), log.last_index(), usize::MAX),
                )
            })?;
            self.transport.send(acknowledgements.into_iter());
            self.core.advance();
            self.apply(ready)?;
        }
        self.serve_confirmed_reads();
        Ok(())
    }

    fn apply(&mut self, ready: Ready) -> anyhow::Result<()> {
        if let Some(snapshot) = &ready.snapshot {
            self.store = KvStore::restore(&snapshot.data)
                .map_err(|e| anyhow::anyhow!("snapshot from the leader does not decode: {e}"))?;
            self.applied_index = snapshot.meta.last_included_index;
            // Earlier digests belong to a history this node no longer holds.
            self.digests.clear();
            self.remember_digest();
        }
        for entry in &ready.committed_entries {
            let result = if entry.data.is_empty() {
                ApplyResult::default()
            } else {
                let command = Command::decode(entry.data.as_slice()).map_err(|e| {
                    anyhow::anyhow!("committed entry {} does not decode: {e}", entry.index)
                })?;
                self.store
                    .apply(entry.index, &command, self.options.double_apply)
            };
            self.applied_index = entry.index;
            self.remember_digest();
            if let Some((term, reply)) = self.pending_writes.remove(&entry.index) {
                let outcome = if term == entry.term {
                    WriteOutcome::Applied(result)
                } else {
                    WriteOutcome::Superseded
                };
                let _ = reply.send(outcome);
            }
        }
        for read in &ready.read_states {
            self.confirmed_reads.push((read.index, read.request_id));
        }
        for id in &ready.dropped_reads {
            if let Some((_, reply)) = self.pending_reads.remove(id) {
                let _ = reply.send(ReadOutcome::Dropped);
            }
        }
        if self.core.role() != Role::Leader && !self.pending_writes.is_empty() {
            // Proposals of a deposed leader may still commit (a new leader can carry
            // them) or be superseded; both resolve when their index applies. Handlers
            // time out meanwhile, with an unknown outcome.
            self.pending_writes
                .retain(|_, (_, reply)| !reply.is_closed());
        }
        self.maybe_snapshot()
    }

    fn serve_confirmed_reads(&mut self) {
        let applied = self.applied_index;
        let store = &self.store;
        let pending = &mut self.pending_reads;
        self.confirmed_reads.retain(|&(index, id)| {
            if index > applied {
                return true;
            }
            if let Some((key, reply)) = pending.remove(&id) {
                let value = store.get(&key).map(|(v, r)| (v.to_vec(), r));
                let _ = reply.send(ReadOutcome::Value(value));
            }
            false
        });
    }

    fn maybe_snapshot(&mut self) -> anyhow::Result<()> {
        let since = self
            .applied_index
            .saturating_sub(self.core.log().snapshot_index());
        if since < self.options.snapshot_interval_entries {
            return Ok(());
        }
        let data = self.store.snapshot();
        self.core.compact(self.applied_index, data);
        let snapshot = self.core.snapshot().expect("just compacted").clone();
        let log = self.core.log();
        let retained = log.slice(log.first_index(), log.last_index(), usize::MAX);
        self.durable
            .write_snapshot(&snapshot, self.core.hard_state(), &retained)?;
        tracing::info!(
            index = self.applied_index,
            "snapshot written, log compacted"
        );
        Ok(())
    }

    fn remember_digest(&mut self) {
        if self.digests.len() == DIGESTS_KEPT {
            self.digests.pop_front();
        }
        self.digests
            .push_back((self.applied_index, self.store.digest()));
    }

    fn digest_at(&self, index: u64) -> Option<u64> {
        // Indices only grow within `digests` (a snapshot clears it).
        let position = self
            .digests
            .binary_search_by_key(&index, |&(i, _)| i)
            .ok()?;
        Some(self.digests[position].1)
    }

    fn status(&self) -> StatusResponse {
        let log = self.core.log();
        StatusResponse {
            id: self.core.id(),
            role: self.core.role().as_str().to_string(),
            term: self.core.term(),
            leader_id: self.core.leader_id().unwrap_or(0),
            commit_index: self.core.commit_index(),
            applied_index: self.applied_index,
            last_index: log.last_index(),
            lamport_time: self.core.lamport_time(),
            snapshot_index: log.snapshot_index(),
            group_id: self.core.group_id(),
            voters: self.core.config().voters.clone(),
            seeded_bugs: self.options.seeded_bugs.clone(),
            state_digest: None,
            digest_index: 0,
        }
    }

    fn publish_view(&self) {
        let view = View {
            leader_id: self.core.leader_id(),
            term: self.core.term(),
            lamport_time: self.core.lamport_time(),
            role: self.core.role().as_str(),
        };
        self.view.send_if_modified(|current| {
            // The Lamport time moves with every message; publish it only with another
            // change so that waiters are not woken for nothing.
            let changed = current.leader_id != view.leader_id
                || current.term != view.term
                || current.role != view.role;
            if changed {
                *current = view;
            } else {
                current.lamport_time = view.lamport_time;
            }
            changed
        });
    }
}

/// For a clock step of `delta_ms` at `now`: how many ticks the step skipped (bounded) and
/// when the next tick is due, in real time.
fn clock_step(next_tick: Instant, delta_ms: i64, now: Instant, tick: Duration) -> (i64, Instant) {
    let step = Duration::from_millis(delta_ms.unsigned_abs());
    if delta_ms < 0 {
        return (0, next_tick + step);
    }
    let mut due = next_tick.checked_sub(step).unwrap_or(now);
    let mut skipped = 0;
    while due <= now && skipped < CLOCK_STEP_TICKS_MAX {
        due += tick;
        skipped += 1;
    }
    (skipped, due.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_forward_step_fires_the_ticks_it_skips() {
        let now = Instant::now();
        let (ticks, next) = clock_step(now + TICK, 300, now, TICK);
        assert_eq!(ticks, 30);
        assert_eq!(next, now + TICK);
    }

    #[test]
    fn a_forward_step_that_undoes_a_backward_one_fires_nothing() {
        let now = Instant::now();
        let (ticks, held) = clock_step(now + TICK, -5_000, now, TICK);
        assert_eq!((ticks, held), (0, now + TICK + Duration::from_secs(5)));
        let (ticks, next) = clock_step(held, 5_000, now, TICK);
        assert_eq!((ticks, next), (0, now + TICK));
        // Going past where the clock stood fires what the excess skipped.
        let (ticks, _) = clock_step(held, 5_300, now, TICK);
        assert_eq!(ticks, 30);
    }

    #[test]
    fn a_huge_forward_step_fires_a_bounded_number_of_ticks() {
        let now = Instant::now();
        let (ticks, next) = clock_step(now + TICK, 3_600_000, now, TICK);
        assert_eq!(ticks, CLOCK_STEP_TICKS_MAX);
        assert_eq!(next, now);
    }
}
