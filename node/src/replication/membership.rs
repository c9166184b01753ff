//! Who is in a Raft group, as its log says.
//!
//! Membership changes one server at a time (Raft thesis §4.1, with the fix of the 2015
//! raft-dev post "bug in single-server membership changes"): a configuration is an entry,
//! in force on every server from the moment the server appends it, committed or not; a
//! leader proposes a change only when no other change is uncommitted and once it has
//! committed an entry of its own term. Any two majorities of configurations that differ
//! by one voter overlap, so no two leaders can be elected for one term across a change.
//! Joint consensus was not chosen: every change the product needs (add, remove, move a
//! replica as add-then-remove) is a sequence of single-server steps.
//!
//! A new server joins as a *learner*: it receives the log but neither votes nor counts
//! toward a quorum, so a slow newcomer cannot stall commits (thesis §4.2.1). The leader
//! promotes it once it catches up within an election timeout.

use std::collections::BTreeSet;

use crate::proto::raft::{self, Entry, EntryKind};

/// What the refusal to remove a group's leader says; a replica move looks for it.
pub const LEADER_REMOVAL: &str = "transfer leadership before removing it";

/// A group's members. Voters elect and make quorums; learners only receive the log;
/// `promoting` are learners to be promoted once caught up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub promoting: BTreeSet<u64>,
}

impl Membership {
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    pub fn from_wire(wire: &raft::Membership) -> Self {
        let learners: BTreeSet<u64> = wire.learners.iter().copied().collect();
        Self {
            voters: wire.voters.iter().copied().collect(),
            promoting: wire
                .promoting
                .iter()
                .copied()
                .filter(|n| learners.contains(n))
                .collect(),
            learners,
        }
    }

    pub fn to_wire(&self) -> raft::Membership {
        raft::Membership {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            promoting: self.promoting.iter().copied().collect(),
        }
    }

    pub fn is_voter(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_member(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member but `id`: whom a leader replicates to.
    pub fn others(&self, id: u64) -> impl Iterator<Item = u64> + '_ {
        self.voters
            .iter()
            .chain(&self.learners)
            .copied()
            .filter(move |&n| n != id)
    }

    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The membership after `change`, or why it cannot be made. `leader` is the node
    /// proposing it: it may not remove itself (transfer leadership first).
    pub fn apply(&self, change: ConfChange, leader: u64) -> Result<Membership, String> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner(id) | ConfChange::AddVoter(id) if id == 0 => {
                return Err("node id 0 is not a valid member".into());
            }
            ConfChange::AddLearner(id) | ConfChange::AddVoter(id) if self.is_voter(id) => {
                return Err(format!("node {id} is a voter of the group already"));
            }
            ConfChange::AddLearner(id) => {
                if !next.learners.insert(id) {
                    return Err(format!("node {id} is a learner of the group already"));
                }
            }
            ConfChange::AddVoter(id) => {
                // Added as a learner first; the leader promotes it when it has caught up.
                next.learners.insert(id);
                next.promoting.insert(id);
            }
            ConfChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err(format!("node {id} is not a learner of the group"));
                }
                next.promoting.remove(&id);
                next.voters.insert(id);
            }
            ConfChange::Remove(id) => {
                let was_voter = next.voters.remove(&id);
                let was_learner = next.learners.remove(&id);
                next.promoting.remove(&id);
                if !was_voter && !was_learner {
                    return Err(format!("node {id} is not a member of the group"));
                }
                // Before the leader check: the last voter is always the leader, and the
                // way out is not a transfer.
                if next.voters.is_empty() {
                    return Err(format!(
                        "node {id} is the group's last voter: it would have no replica left \
                         (add one before removing this)"
                    ));
                }
                if id == leader {
                    return Err(format!("node {id} leads the group: {LEADER_REMOVAL}"));
                }
            }
        }
        Ok(next)
    }
}

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfChange {
    /// A member that only receives the log.
    AddLearner(u64),
    /// A new voter: added as a learner, promoted by the leader once caught up.
    AddVoter(u64),
    /// A learner becomes a voter.
    Promote(u64),
    Remove(u64),
}

/// The memberships a log holds: the one in force at its base (the snapshot's, or the
/// bootstrap voters) and every configuration entry after it, in log order. The newest is
/// in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfLog {
    base: Membership,
    /// (index, term, membership) of each configuration entry after the base.
    changes: Vec<(u64, u64, Membership)>,
}

impl Membership {
    /// The same membership with every id renamed (see `RaftCore::relabeled`).
    pub fn relabeled(&self, rename: &dyn Fn(u64) -> u64) -> Self {
        Self {
            voters: self.voters.iter().map(|&id| rename(id)).collect(),
            learners: self.learners.iter().map(|&id| rename(id)).collect(),
            promoting: self.promoting.iter().map(|&id| rename(id)).collect(),
        }
    }
}

impl ConfLog {
    /// The same log of memberships with every id renamed, or `None` if the log holds a
    /// configuration entry after the base (its ids are inside the entry's encoded data,
    /// which a renaming would have to rewrite too).
    pub fn relabeled(&self, rename: &dyn Fn(u64) -> u64) -> Option<Self> {
        self.changes
            .is_empty()
            .then(|| Self::new(self.base.relabeled(rename)))
    }

    pub fn new(base: Membership) -> Self {
        Self {
            base,
            changes: Vec::new(),
        }
    }

    /// The membership in force: the newest in the log.
    pub fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, _, m)| m)
    }

    /// The membership in force once the log ends at `index`.
    pub fn at(&self, index: u64) -> &Membership {
        self.changes
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .map_or(&self.base, |(_, _, m)| m)
    }

    /// Whether `id` is a member of any membership the log holds (its base or a change):
    /// false for a replica created to be added that has not yet received the change that
    /// adds it.
    pub fn has_included(&self, id: u64) -> bool {
        self.base.is_member(id) || self.changes.iter().any(|(_, _, m)| m.is_member(id))
    }

    /// The index of the newest configuration entry (0 if the log holds none).
    pub fn last_change_index(&self) -> u64 {
        self.changes.last().map_or(0, |(i, _, _)| *i)
    }

    /// Takes note of an entry appended at the end of the log.
    pub fn appended(&mut self, entry: &Entry) {
        if entry.kind != EntryKind::Config as i32 {
            return;
        }
        let Ok(wire) = prost::Message::decode(entry.data.as_slice()) else {
            // A configuration entry that does not decode changes nothing; the leader
            // that wrote it encoded it, so only a corrupted log gets here.
            return;
        };
        let membership = Membership::from_wire(&wire);
        let at = self.changes.partition_point(|(i, _, _)| *i < entry.index);
        self.changes.truncate(at);
        self.changes.push((entry.index, entry.term, membership));
    }

    /// Forgets configurations whose entries the log no longer holds as they were
    /// (`term_at` is the log's term at an index): a conflicting suffix was truncated.
    pub fn retain_matching(&mut self, term_at: impl Fn(u64) -> Option<u64>) {
        if let Some(first_gone) = self
            .changes
            .iter()
            .position(|(index, term, _)| term_at(*index) != Some(*term))
        {
            self.changes.truncate(first_gone);
        }
    }

    /// The log was compacted up to `index`: the membership there becomes the base.
    pub fn compact(&mut self, index: u64) {
        self.base = self.at(index).clone();
        self.changes.retain(|(i, _, _)| *i > index);
    }
}

/// The configuration entry for `membership`.
pub fn config_entry(index: u64, term: u64, membership: &Membership) -> Entry {
    Entry {
        term,
        index,
        data: prost::Message::encode_to_vec(&membership.to_wire()),
        kind: EntryKind::Config as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::with_voters([1, 2, 3])
    }

    #[test]
    fn a_new_voter_joins_as_a_learner_and_is_promoted() {
        let added = three().apply(ConfChange::AddVoter(4), 1).expect("add");
        assert!(!added.is_voter(4) && added.is_member(4));
        assert_eq!(
            added.quorum(),
            2,
            "a learner does not count toward a quorum"
        );
        let promoted = added.apply(ConfChange::Promote(4), 1).expect("promote");
        assert!(promoted.is_voter(4) && promoted.promoting.is_empty());
        assert_eq!(promoted.quorum(), 3);
    }

    #[test]
    fn impossible_changes_are_refused_naming_the_problem() {
        let cases = [
            (ConfChange::AddVoter(2), "voter of the group already"),
            (ConfChange::Promote(9), "not a learner"),
            (ConfChange::Remove(9), "not a member"),
            (ConfChange::Remove(1), "transfer leadership"),
            (ConfChange::AddLearner(0), "not a valid member"),
        ];
        for (change, why) in cases {
            let error = three().apply(change, 1).expect_err("refused");
            assert!(error.contains(why), "{change:?}: {error}");
        }
        let alone = Membership::with_voters([2]);
        assert!(
            alone
                .apply(ConfChange::Remove(2), 1)
                .expect_err("last voter")
                .contains("last voter")
        );
    }

    #[test]
    fn a_replica_catching_up_on_history_from_before_it_was_added_was_never_included() {
        // Node 4 is created for a move and receives the log from a snapshot taken when the
        // group was 1-3; an old change removes 3; only a later one adds 4.
        let mut log = ConfLog::new(three());
        let without_three = three().apply(ConfChange::Remove(3), 1).expect("remove");
        log.appended(&config_entry(10, 1, &without_three));
        assert!(!log.has_included(4), "history alone never named node 4");
        assert!(log.has_included(3), "node 3 was a member, then removed");
        let with_four = without_three
            .apply(ConfChange::AddVoter(4), 1)
            .expect("add");
        log.appended(&config_entry(20, 1, &with_four));
        assert!(log.has_included(4));
    }

    #[test]
    fn the_newest_configuration_in_the_log_is_in_force_until_truncated() {
        let mut log = ConfLog::new(three());
        let four = three().apply(ConfChange::AddLearner(4), 1).expect("add");
        log.appended(&config_entry(5, 2, &four));
        assert_eq!(log.current(), &four);
        assert_eq!(log.at(4), &three());
        // A new leader's log replaced entry 5 with one of term 3: the change is gone.
        log.retain_matching(|index| if index >= 5 { Some(3) } else { Some(2) });
        assert_eq!(log.current(), &three());
        log.appended(&config_entry(6, 3, &four));
        log.compact(6);
        assert_eq!(log.current(), &four);
        assert_eq!(log.last_change_index(), 0);
    }
}
