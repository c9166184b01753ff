//! Configuration of one Raft group member, with the bounds every queue and timer needs.

use thiserror::Error;

/// Bugs a test can switch on to show that the checkers and models catch them. Off
/// unless a test or an explicit `--unsafe-seeded-bug` flag sets them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeededBugs {
    /// Grant a vote even after voting for someone else in the same term.
    pub double_vote: bool,
    /// Commit an entry of an earlier term by counting replicas (Raft §5.4.2, figure 8).
    pub commit_old_term: bool,
    /// A follower keeps a conflicting suffix instead of truncating it.
    pub keep_conflicts: bool,
    /// Answer a linearizable read without confirming leadership with a quorum.
    pub stale_read: bool,
    /// A candidate asks learners for votes too, and counts them.
    pub learner_votes: bool,
    /// A new leader may change the membership before it has committed an entry of its
    /// own term (the single-server change bug the 2015 fix closes).
    pub config_before_noop: bool,
}

impl SeededBugs {
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.double_vote {
            names.push("double-vote");
        }
        if self.commit_old_term {
            names.push("commit-old-term");
        }
        if self.keep_conflicts {
            names.push("keep-conflicts");
        }
        if self.stale_read {
            names.push("stale-read");
        }
        if self.learner_votes {
            names.push("learner-votes");
        }
        if self.config_before_noop {
            names.push("config-before-noop");
        }
        names
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftConfig {
    pub id: u64,
    pub group_id: u64,
    /// Every voter of the group when it was formed, this node included; empty for a node
    /// that joins a running group. The log's configuration entries change it from there.
    pub voters: Vec<u64>,
    pub election_timeout_ticks_min: u32,
    pub election_timeout_ticks_max: u32,
    pub heartbeat_interval_ticks: u32,
    /// Entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Bytes of entry data in one AppendEntries message (beyond one entry).
    pub append_bytes_max: usize,
    /// AppendEntries messages sent to one follower and not yet acknowledged.
    pub inflight_appends_max: usize,
    /// Committed entries handed to the driver in one Ready.
    pub apply_batch_max: usize,
    /// Heartbeat intervals a leader waits for the answer to an InstallSnapshot before it
    /// sends the snapshot again (it may be large, so not on every heartbeat).
    pub snapshot_resend_heartbeats: u32,
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down,
    /// and followers that heard from a leader recently refuse pre-votes (thesis §6.2).
    pub check_quorum: bool,
    pub seed: u64,
    pub bugs: SeededBugs,
}

impl RaftConfig {
    pub fn new(id: u64, voters: Vec<u64>) -> Self {
        Self {
            id,
            group_id: 1,
            voters,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            append_entries_max: 256,
            append_bytes_max: 4 << 20,
            inflight_appends_max: 64,
            apply_batch_max: 1024,
            snapshot_resend_heartbeats: 20,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            bugs: SeededBugs::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError(
                "node id must be at least 1 (0 means \"none\" on the wire)".into(),
            ));
        }
        // Empty voters: a node joining a running group, which learns the membership from
        // the leader's log or snapshot (it is added as a learner first).
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError(format!(
                "node {} is not among the voters {:?}",
                self.id, self.voters
            )));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(ConfigError(format!(
                "voters {:?} name a node twice",
                self.voters
            )));
        }
        if self.snapshot_resend_heartbeats == 0 {
            return Err(ConfigError(
                "snapshot_resend_heartbeats must be at least 1".into(),
            ));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError(
                "heartbeat_interval_ticks must be at least 1".into(),
            ));
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return Err(ConfigError(format!(
                "election_timeout_ticks_min ({}) must exceed heartbeat_interval_ticks ({}), or followers time out between heartbeats",
                self.election_timeout_ticks_min, self.heartbeat_interval_ticks
            )));
        }
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return Err(ConfigError(format!(
                "election_timeout_ticks_max ({}) must exceed election_timeout_ticks_min ({}) so timeouts are randomized",
                self.election_timeout_ticks_max, self.election_timeout_ticks_min
            )));
        }
        if self.append_entries_max == 0
            || self.inflight_appends_max == 0
            || self.apply_batch_max == 0
        {
            return Err(ConfigError(
                "append_entries_max, inflight_appends_max and apply_batch_max must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid raft configuration: {0}")]
pub struct ConfigError(pub String);
