//! Election safety, watched from outside: at most one leader per term (Raft §5.2).
//!
//! Every status the harness reads is noted here, and a watcher polls every node while the
//! workload runs. Two nodes that each claim to lead the same term make the run invalid,
//! whatever the clients saw: the second leader may be unable to commit anything (with this
//! node, a voter's replies to it report a commit index beyond its log, which it discards),
//! yet the protocol is already broken. MIT 6.824's Raft tests check the same thing the same
//! way, by asking every server for its term and role.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_node::proto::kv::StatusResponse;
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::{LocalCluster, status_all_groups};

/// How often the watcher asks every node.
const POLL: Duration = Duration::from_millis(50);

/// A term of one Raft group that more than one node claimed to lead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharedTerm {
    /// The group (0 is the consistent core; partitions count from 1).
    pub group: u64,
    pub term: u64,
    pub leaders: Vec<u64>,
    /// When the second leader was first seen, since the start of the run.
    pub seen_secs: f64,
}

/// The nodes seen leading one term, and when a second one was first seen.
#[derive(Debug, Default)]
struct TermLeaders {
    nodes: BTreeSet<u64>,
    shared_since: Option<f64>,
}

/// Leaders seen, by group and term.
#[derive(Debug, Default)]
pub struct Leaders {
    by_term: Mutex<BTreeMap<(u64, u64), TermLeaders>>,
}

impl Leaders {
    /// Notes the node's claim if it says it leads; `at_secs` is the time since the start
    /// of the run.
    pub fn note(&self, status: &StatusResponse, at_secs: f64) {
        self.claim(
            status.group_id,
            status.id,
            &status.role,
            status.term,
            at_secs,
        );
        for group in &status.groups {
            self.claim(group.group_id, status.id, &group.role, group.term, at_secs);
        }
    }

    fn claim(&self, group: u64, node: u64, role: &str, term: u64, at_secs: f64) {
        if role != "leader" {
            return;
        }
        let mut by_term = self.by_term.lock().expect("leaders lock");
        let seen = by_term.entry((group, term)).or_default();
        if seen.nodes.insert(node) && seen.nodes.len() > 1 && seen.shared_since.is_none() {
            seen.shared_since = Some(at_secs);
        }
    }

    /// The terms with more than one leader, in term order.
    pub fn shared_terms(&self) -> Vec<SharedTerm> {
        let by_term = self.by_term.lock().expect("leaders lock");
        by_term
            .iter()
            .filter_map(|(&(group, term), seen)| {
                seen.shared_since.map(|seen_secs| SharedTerm {
                    group,
                    term,
                    leaders: seen.nodes.iter().copied().collect(),
                    seen_secs,
                })
            })
            .collect()
    }
}

/// One line for the summary.
pub fn describe(shared: &[SharedTerm]) -> String {
    let terms: Vec<String> = shared
        .iter()
        .map(|s| {
            let nodes: Vec<String> = s.leaders.iter().map(|id| format!("n{id}")).collect();
            let group = if s.group == 0 {
                "the consistent core".to_string()
            } else {
                format!("partition {}", s.group)
            };
            format!(
                "term {} of {group} by {} (seen at {:.2}s)",
                s.term,
                nodes.join(" and "),
                s.seen_secs
            )
        })
        .collect();
    format!(
        "ELECTION SAFETY VIOLATED: more than one node said it led {}",
        terms.join("; ")
    )
}

/// Polls every running node until `stop` turns true. `elapsed_secs` gives the time since
/// the start of the run.
pub async fn watch(
    cluster: Arc<tokio::sync::Mutex<LocalCluster>>,
    leaders: Arc<Leaders>,
    elapsed_secs: impl Fn() -> f64,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let nodes = cluster.lock().await.running();
        for (_, addr) in nodes {
            if let Ok(s) = status_all_groups(addr).await {
                leaders.note(&s, elapsed_secs());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: u64, role: &str, term: u64) -> StatusResponse {
        StatusResponse {
            id,
            role: role.into(),
            term,
            group_id: 1,
            ..Default::default()
        }
    }

    #[test]
    fn one_leader_per_term_is_fine_and_two_are_reported_once() {
        let leaders = Leaders::default();
        leaders.note(&claim(1, "leader", 1), 0.5);
        leaders.note(&claim(1, "leader", 1), 0.6);
        leaders.note(&claim(2, "follower", 1), 0.7);
        leaders.note(&claim(2, "leader", 2), 1.0);
        assert!(leaders.shared_terms().is_empty());
        leaders.note(&claim(3, "leader", 2), 1.5);
        leaders.note(&claim(3, "leader", 2), 1.6);
        let shared = leaders.shared_terms();
        assert_eq!(
            shared,
            [SharedTerm {
                group: 1,
                term: 2,
                leaders: vec![2, 3],
                seen_secs: 1.5
            }]
        );
        assert!(describe(&shared).contains("term 2 of partition 1 by n2 and n3 (seen at 1.50s)"));
    }

    #[test]
    fn the_same_term_led_by_different_nodes_in_different_groups_is_fine() {
        let leaders = Leaders::default();
        let mut status = claim(1, "leader", 3);
        status.groups = vec![faultline_node::proto::kv::GroupStatus {
            group_id: 2,
            role: "follower".into(),
            term: 3,
            ..Default::default()
        }];
        leaders.note(&status, 1.0);
        let mut other = claim(2, "follower", 3);
        other.groups = vec![faultline_node::proto::kv::GroupStatus {
            group_id: 2,
            role: "leader".into(),
            term: 3,
            ..Default::default()
        }];
        leaders.note(&other, 1.1);
        assert!(leaders.shared_terms().is_empty());
        let mut second = claim(3, "follower", 3);
        second.groups = vec![faultline_node::proto::kv::GroupStatus {
            group_id: 2,
            role: "leader".into(),
            term: 3,
            ..Default::default()
        }];
        leaders.note(&second, 1.2);
        assert_eq!(leaders.shared_terms()[0].group, 2);
    }
}
