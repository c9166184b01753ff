//! From a history to the relations of Bouajjani et al., "On Verifying Causal Consistency"
//! (POPL 2017): program order PO, read-from RF, and causal order CO = (PO ∪ RF)+.
//!
//! Which operations take part, and why:
//! - `ok` reads and writes: their effects are known.
//! - `info` writes: they may or may not have happened. One that some read saw certainly
//!   happened; one nobody saw may be taken not to have, and as it has no outgoing edge (see
//!   below) it cannot take part in any bad pattern, so keeping it changes nothing.
//! - `info` reads: they returned nothing we know, so they constrain nothing and are dropped.
//! - `fail` operations did not happen and are dropped; a read of a failed write's value is a
//!   thin-air read.
//!
//! PO orders a session's (a process's) operations by invocation. An `info` write gets its PO
//! predecessors (it was invoked after them, so it carries them in its causal past) but no PO
//! successors: it may take effect after any later operation of its process, so a later read
//! that misses it is no anomaly.
//!
//! Histories must be *differentiated* (the paper's assumption for its polynomial-time
//! characterisation, which makes RF a function of the history): every value written to a key is unique and none is nil, the initial value.
//! Histories that are not are refused with an error naming both writes.

use std::collections::HashMap;

use super::graph::{BitMatrix, Digraph};
use crate::error::Error;
use crate::history::{History, Operation, Outcome, Value};

/// Where a read's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The initial value, nil.
    Initial,
    /// The write (a node) that wrote the value.
    Write(u32),
    /// No write that may have happened wrote the value; `failed_write` is the operation id of
    /// a failed write of it, if there is one.
    ThinAir { failed_write: Option<usize> },
}

/// An operation taking part in the check.
#[derive(Clone, Debug)]
pub(super) struct Node {
    /// The operation's id in the history.
    pub(super) op: usize,
    /// Index into [`Relations::sessions`].
    pub(super) session: u32,
    /// Index into [`Relations::keys`].
    pub(super) key: u32,
    /// A write (else a read).
    pub(super) is_write: bool,
    /// Completed `ok` (else an `info` write).
    pub(super) known: bool,
    /// For reads, where the value came from (for siblings, the first of them).
    pub(super) source: Option<Source>,
    /// For a read that returned siblings (a list of concurrent values), the writes of the
    /// siblings after the first: the read reads from each of them.
    pub(super) also: Vec<u32>,
    /// Index into its session's `nodes`.
    pub(super) position: u32,
}

/// One session: a process's nodes in program order.
#[derive(Clone, Debug)]
pub(super) struct Session {
    /// The process number.
    pub(super) process: u64,
    /// Its nodes, by invocation.
    pub(super) nodes: Vec<u32>,
}

/// Nodes and the generating edges of CO.
#[derive(Debug)]
pub(super) struct Relations {
    pub(super) nodes: Vec<Node>,
    /// Key names, indexed by [`Node::key`].
    pub(super) keys: Vec<Option<String>>,
    pub(super) sessions: Vec<Session>,
    /// Per key, its writes (nodes) in invocation order.
    pub(super) writes_by_key: Vec<Vec<u32>>,
    /// Per node, the reads that read from it (empty for reads).
    pub(super) readers: Vec<Vec<u32>>,
    /// Per node, its immediate PO predecessor: the latest earlier `ok` node of its session.
    pub(super) po_predecessor: Vec<Option<u32>>,
    /// PO and RF edges as successor lists (immediate PO successor, and readers).
    pub(super) successors: Vec<Vec<u32>>,
}

impl Relations {
    /// The write a read read from, if it read a write (the first, for siblings).
    pub(super) fn read_from(&self, node: usize) -> Option<u32> {
        match self.nodes[node].source {
            Some(Source::Write(w)) => Some(w),
            _ => None,
        }
    }

    /// Every write a read read from: one, or each of its siblings.
    pub(super) fn reads_from(&self, node: usize) -> impl Iterator<Item = u32> + '_ {
        self.read_from(node)
            .into_iter()
            .chain(self.nodes[node].also.iter().copied())
    }

    /// The graph of PO ∪ RF edges.
    pub(super) fn graph(&self) -> Digraph<'_> {
        Digraph {
            lists: &self.successors,
            rows: None,
        }
    }
}

/// Whether `op` is a write (else a read), or why the causal checker cannot read it.
fn is_write(op: &Operation) -> Result<bool, Error> {
    let model_error = |message: String| Error::Model {
        id: op.id,
        line: op.line,
        message,
    };
    match op.f.as_str() {
        "read" => Ok(false),
        "write" if op.input == Value::Nil => Err(model_error(
            "writes nil, which the causal checker reads as the initial value; write non-nil \
             values"
                .into(),
        )),
        "write" => Ok(true),
        other => Err(model_error(format!(
            "the causal checker knows only `read` and `write`; got {other:?}"
        ))),
    }
}

/// Builds the relations, or says why the history cannot be checked.
pub(super) fn build(history: &History, operations_max: usize) -> Result<Relations, Error> {
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut key_ids: HashMap<Option<String>, u32> = HashMap::new();
    let mut sessions: Vec<Session> = Vec::new();
    let mut session_ids: HashMap<u64, u32> = HashMap::new();
    // (key, value) -> operation id of the first write of it, of any outcome.
    let mut written: HashMap<(u32, &Value), usize> = HashMap::new();
    // (key, value) -> node of a write that may have happened.
    let mut happened: HashMap<(u32, &Value), u32> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    for op in &history.operations {
        let is_write = is_write(op)?;
        let next_key = keys.len() as u32;
        let key = *key_ids.entry(op.key.clone()).or_insert_with(|| {
            keys.push(op.key.clone());
            next_key
        });
        if is_write {
            if let Some(&first) = written.get(&(key, &op.input)) {
                let first_op = &history.operations[first];
                return Err(Error::DuplicateWrite {
                    key: op.key.clone(),
                    value: op.input.clone(),
                    first,
                    first_line: first_op.line,
                    second: op.id,
                    second_line: op.line,
                });
            }
            written.insert((key, &op.input), op.id);
        }
        let takes_part = match op.outcome {
            Outcome::Ok => true,
            Outcome::Unknown => is_write,
            Outcome::Fail => false,
        };
        if !takes_part {
            continue;
        }
        let next_session = sessions.len() as u32;
        let session = *session_ids.entry(op.process).or_insert_with(|| {
            sessions.push(Session {
                process: op.process,
                nodes: Vec::new(),
            });
            next_session
        });
        let node = nodes.len();
        if node >= operations_max.min(u32::MAX as usize) {
            let operations = history
                .operations
                .iter()
                .filter(|o| {
                    o.outcome == Outcome::Ok || (o.outcome == Outcome::Unknown && o.f == "write")
                })
                .count();
            return Err(Error::TooManyOperations {
                operations,
                operations_max,
            });
        }
        let position = sessions[session as usize].nodes.len() as u32;
        sessions[session as usize].nodes.push(node as u32);
        if is_write {
            happened.insert((key, &op.input), node as u32);
        }
        nodes.push(Node {
            op: op.id,
            session,
            key,
            is_write,
            known: op.outcome == Outcome::Ok,
            source: None,
            also: Vec::new(),
            position,
        });
    }
    // Reads are resolved once every write is known: a read may name a write invoked after it.
    for node in &mut nodes {
        if node.is_write {
            continue;
        }
        let op = &history.operations[node.op];
        let Some(value) = op.output.as_ref() else {
            return Err(Error::Model {
                id: op.id,
                line: op.line,
                message: "completed ok but has no value; an ok read returns a value or nil".into(),
            });
        };
        let resolve = |value: &Value| match happened.get(&(node.key, value)) {
            Some(&w) => Source::Write(w),
            None => Source::ThinAir {
                failed_write: written.get(&(node.key, value)).copied(),
            },
        };
        node.source = Some(match value {
            Value::Nil => Source::Initial,
            // Written values are never lists, so a list is siblings: concurrent values a
            // leaderless store kept side by side. The read read from each one.
            Value::List(siblings) if !siblings.is_empty() => {
                let sources: Vec<Source> = siblings.iter().map(resolve).collect();
                match sources.iter().find(|s| matches!(s, Source::ThinAir { .. })) {
                    Some(thin_air) => *thin_air,
                    None => {
                        node.also = sources[1..]
                            .iter()
                            .filter_map(|s| match s {
                                Source::Write(w) => Some(*w),
                                _ => None,
                            })
                            .collect();
                        sources[0]
                    }
                }
            }
            Value::List(_) => Source::Initial,
            value => resolve(value),
        });
    }
    Ok(link(nodes, keys, sessions))
}

/// Adds PO and RF edges to the nodes.
fn link(nodes: Vec<Node>, keys: Vec<Option<String>>, sessions: Vec<Session>) -> Relations {
    let n = nodes.len();
    let mut writes_by_key = vec![Vec::new(); keys.len()];
    let mut readers = vec![Vec::new(); n];
    let mut po_predecessor = vec![None; n];
    let mut successors: Vec<Vec<u32>> = vec![Vec::new(); n];
    for session in &sessions {
        let mut last_known: Option<u32> = None;
        for &node in &session.nodes {
            po_predecessor[node as usize] = last_known;
            if let Some(p) = last_known {
                successors[p as usize].push(node);
            }
            if nodes[node as usize].known {
                last_known = Some(node);
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.is_write {
            writes_by_key[node.key as usize].push(i as u32);
        } else if let Some(Source::Write(w)) = node.source {
            for w in std::iter::once(w).chain(node.also.iter().copied()) {
                readers[w as usize].push(i as u32);
                successors[w as usize].push(i as u32);
            }
        }
    }
    Relations {
        nodes,
        keys,
        sessions,
        writes_by_key,
        readers,
        po_predecessor,
        successors,
    }
}

/// CO as a matrix: row `b` holds the nodes strictly CO-before `b`.
pub(super) struct CausalOrder {
    ancestors: BitMatrix,
}

impl CausalOrder {
    /// Whether `a` is strictly CO-before `b`.
    pub(super) fn before(&self, a: usize, b: usize) -> bool {
        self.ancestors.get(b, a)
    }
}

/// CO = (PO ∪ RF)+, or, if it is cyclic, the strongly connected components with a cycle.
pub(super) fn causal_order(relations: &Relations) -> Result<CausalOrder, Vec<Vec<u32>>> {
    let n = relations.nodes.len();
    let components = relations.graph().components();
    // PO and RF have no self-loops, so a component is cyclic exactly when it has two or more nodes.
    let cyclic: Vec<Vec<u32>> = components.iter().filter(|c| c.len() > 1).cloned().collect();
    if !cyclic.is_empty() {
        return Err(cyclic);
    }
    let mut ancestors = BitMatrix::new(n, n);
    // Tarjan completes a node after everything reachable from it: reversed, predecessors
    // come first, so each row is final before any successor unions it.
    for component in components.iter().rev() {
        let node = component[0] as usize;
        let predecessors = relations.po_predecessor[node]
            .into_iter()
            .chain(relations.reads_from(node));
        for p in predecessors {
            ancestors.union_row(node, p as usize);
            ancestors.set(node, p as usize);
        }
    }
    Ok(CausalOrder { ancestors })
}
