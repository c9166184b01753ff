//! The four session guarantees of Terry, Demers, Petersen, Spreitzer, Theimer and Welch,
//! "Session Guarantees for Weakly Consistent Replicated Data" (PDIS 1994), restated over a
//! history's PO, RF and CO as the parent module's docs define them.
//!
//! Terry et al. speak of the writes a server holds; a history shows only what reads returned,
//! so "a session saw write w" is "a read of the session returned w", and "older than w" is the
//! per-key write order that CO implies: a read *misses* w when it returns nil, or the value of
//! a write CO-before w. MonotonicWrites and WritesFollowReads look at what a session saw
//! directly (a read of the other session's write), not through third sessions: those longer
//! chains are the CC patterns' business.

use std::collections::{BTreeMap, HashMap};

use super::relations::{CausalOrder, Relations, Source};
use super::story::Teller;
use super::{Anomaly, AnomalyKind, Findings};

/// Whether `read` returned an older value than `write` of its key.
/// For siblings: when any of them is older than `write`.
fn misses(relations: &Relations, co: &CausalOrder, read: usize, write: usize) -> bool {
    match relations.nodes[read].source {
        Some(Source::Initial) => true,
        Some(Source::Write(_)) => relations
            .reads_from(read)
            .any(|older| co.before(older as usize, write)),
        Some(Source::ThinAir { .. }) | None => false,
    }
}

/// ReadYourWrites: a read misses a write of its own session, PO-before it, to its key.
///
/// Only the session's latest write to the key needs checking: earlier ones are PO-before it,
/// so a read that misses them misses it too.
pub(super) fn read_your_writes(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    for session in &relations.sessions {
        let mut latest: HashMap<u32, usize> = HashMap::new();
        for &node in &session.nodes {
            let (node, info) = (node as usize, &relations.nodes[node as usize]);
            if info.is_write {
                // An `info` write has no PO successors: a later read may miss it.
                if info.known {
                    latest.insert(info.key, node);
                }
                continue;
            }
            let Some(&write) = latest.get(&info.key) else {
                continue;
            };
            if misses(relations, co, node, write) {
                findings.add_for_read(node, || Anomaly {
                    kind: AnomalyKind::ReadYourWrites,
                    ops: teller.ops_with_source(&[write, node], node),
                    explanation: format!(
                        "{} then {}{}: read your writes violated",
                        teller.told(write),
                        teller.act(node),
                        teller.staleness(node, write)
                    ),
                });
            }
        }
    }
}

/// MonotonicReads: a read misses a write that an earlier read of its session, of its key,
/// returned.
///
/// Per key the session keeps the CO-maximal writes its reads returned (with the first read of
/// each): a read that misses some returned write misses one of those maxima.
pub(super) fn monotonic_reads(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    for session in &relations.sessions {
        let mut maxima: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
        for &node in &session.nodes {
            let (read, info) = (node as usize, &relations.nodes[node as usize]);
            if info.is_write {
                continue;
            }
            let seen = maxima.entry(info.key).or_default();
            if let Some(&(write, earlier)) = seen
                .iter()
                .find(|&&(write, _)| misses(relations, co, read, write))
            {
                findings.add_for_read(read, || Anomaly {
                    kind: AnomalyKind::MonotonicReads,
                    ops: teller.ops_with_source(&[write, earlier, read], read),
                    explanation: format!(
                        "{}, {} then {}{}: monotonic reads violated",
                        teller.told(write),
                        teller.told(earlier),
                        teller.act(read),
                        teller.staleness(read, write)
                    ),
                });
            }
            if let Some(write) = relations.read_from(read) {
                let write = write as usize;
                let covered = seen.iter().any(|&(m, _)| m == write || co.before(write, m));
                if !covered {
                    seen.retain(|&(m, _)| !co.before(m, write));
                    seen.push((write, read));
                }
            }
        }
    }
}

/// What a session has seen of another session A: A's write at the highest position in A that
/// one of its reads returned, and that read.
#[derive(Clone, Copy)]
struct Seen {
    position: u32,
    write: usize,
    read: usize,
}

/// Walks each session B's reads in program order, calling `check(read, A, seen)` for every
/// other session A that an earlier read of B saw a write of.
fn for_reads_after_seeing(relations: &Relations, mut check: impl FnMut(usize, u32, &Seen) -> bool) {
    for (b, session) in relations.sessions.iter().enumerate() {
        // BTreeMap: the first witness found must not depend on hashing.
        let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
        for &node in &session.nodes {
            let read = node as usize;
            if relations.nodes[read].is_write {
                continue;
            }
            for (&a, s) in &seen {
                if check(read, a, s) {
                    break;
                }
            }
            // Every sibling the read returned was seen.
            for write in relations.reads_from(read) {
                let written = &relations.nodes[write as usize];
                if written.session as usize == b {
                    continue;
                }
                let position = written.position;
                let entry = seen.entry(written.session).or_insert(Seen {
                    position,
                    write: write as usize,
                    read,
                });
                if position > entry.position {
                    *entry = Seen {
                        position,
                        write: write as usize,
                        read,
                    };
                }
            }
        }
    }
}

/// Per (session, key): the `ok` nodes of that session on that key satisfying `pick`, as
/// (position in session, node), in program order.
fn index_by_session_and_key(
    relations: &Relations,
    pick: impl Fn(usize) -> bool,
) -> HashMap<(u32, u32), Vec<(u32, usize)>> {
    let mut index: HashMap<(u32, u32), Vec<(u32, usize)>> = HashMap::new();
    for session in &relations.sessions {
        for &node in &session.nodes {
            let info = &relations.nodes[node as usize];
            if info.known && pick(node as usize) {
                index
                    .entry((info.session, info.key))
                    .or_default()
                    .push((info.position, node as usize));
            }
        }
    }
    index
}

/// MonotonicWrites: a session B read a write w2 of session A, then read the key of an earlier
/// write w1 of A (w1 PO w2) and missed w1.
///
/// Only A's latest write to that key before w2 needs checking, for the reason given at
/// [`read_your_writes`].
pub(super) fn monotonic_writes(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    let writes = index_by_session_and_key(relations, |n| relations.nodes[n].is_write);
    for_reads_after_seeing(relations, |read, a, seen| {
        let key = relations.nodes[read].key;
        let Some(list) = writes.get(&(a, key)) else {
            return false;
        };
        let before = list.partition_point(|&(position, _)| position < seen.position);
        let Some(&(_, first)) = before.checked_sub(1).map(|i| &list[i]) else {
            return false;
        };
        if !misses(relations, co, read, first) {
            return false;
        }
        findings.add_for_read(read, || Anomaly {
            kind: AnomalyKind::MonotonicWrites,
            ops: teller.ops_with_source(&[first, seen.write, seen.read, read], read),
            explanation: format!(
                "{} then {}, {} then {}{}: monotonic writes violated",
                teller.told(first),
                teller.act(seen.write),
                teller.told(seen.read),
                teller.act(read),
                teller.staleness(read, first)
            ),
        });
        true
    });
}

/// WritesFollowReads: a session A read w1 and then wrote w2; a session B read w2, then read
/// w1's key and missed w1.
pub(super) fn writes_follow_reads(teller: &Teller, co: &CausalOrder, findings: &mut Findings) {
    let relations = teller.relations;
    let reads = index_by_session_and_key(relations, |n| relations.read_from(n).is_some());
    for_reads_after_seeing(relations, |read, a, seen| {
        let key = relations.nodes[read].key;
        let Some(list) = reads.get(&(a, key)) else {
            return false;
        };
        let before = list.partition_point(|&(position, _)| position < seen.position);
        // The latest such read first: it makes the shortest story.
        let Some((earlier, observed)) = list[..before].iter().rev().find_map(|&(_, r)| {
            let w = relations.read_from(r).expect("indexed reads read a write") as usize;
            misses(relations, co, read, w).then_some((r, w))
        }) else {
            return false;
        };
        findings.add_for_read(read, || Anomaly {
            kind: AnomalyKind::WritesFollowReads,
            ops: teller.ops_with_source(&[observed, earlier, seen.write, seen.read, read], read),
            explanation: format!(
                "{}, {} then {}, {} then {}{}: writes follow reads violated",
                teller.told(observed),
                teller.told(earlier),
                teller.act(seen.write),
                teller.told(seen.read),
                teller.act(read),
                teller.staleness(read, observed)
            ),
        });
        true
    });
}
