//! Words for anomalies: each operation told as "session 3 wrote x=5 (op 12)", so that an
//! explanation reads as the short story of what the sessions saw.

use super::relations::{Relations, Source};
use crate::history::{History, Value};

/// Tells operations of one history.
pub(super) struct Teller<'a> {
    pub(super) history: &'a History,
    pub(super) relations: &'a Relations,
}

impl Teller<'_> {
    /// The history's operation id of a node.
    pub(super) fn op(&self, node: usize) -> usize {
        self.relations.nodes[node].op
    }

    /// The process (session) number of a node.
    pub(super) fn session(&self, node: usize) -> u64 {
        let session = self.relations.nodes[node].session as usize;
        self.relations.sessions[session].process
    }

    fn key(&self, node: usize) -> &str {
        let key = self.relations.nodes[node].key as usize;
        self.relations.keys[key].as_deref().unwrap_or("register")
    }

    /// `x=5`: the key and the value a node wrote or read.
    pub(super) fn assignment(&self, node: usize) -> String {
        let op = &self.history.operations[self.op(node)];
        let value = if self.relations.nodes[node].is_write {
            &op.input
        } else {
            op.output.as_ref().unwrap_or(&Value::Nil)
        };
        format!("{}={value}", self.key(node))
    }

    /// `wrote x=5 (op 12)`.
    pub(super) fn act(&self, node: usize) -> String {
        let verb = if self.relations.nodes[node].is_write {
            "wrote"
        } else {
            "read"
        };
        format!("{verb} {} (op {})", self.assignment(node), self.op(node))
    }

    /// `session 3 wrote x=5 (op 12)`.
    pub(super) fn told(&self, node: usize) -> String {
        format!("session {} {}", self.session(node), self.act(node))
    }

    /// What a stale read returned, said against the write it should have seen: "x=nil, the
    /// initial value" or "x=3, written by session 2 (op 7) causally before op 12".
    pub(super) fn staleness(&self, read: usize, newer: usize) -> String {
        match self.relations.nodes[read].source {
            Some(Source::Write(older)) => format!(
                ", a value written by session {} (op {}) causally before op {}",
                self.session(older as usize),
                self.op(older as usize),
                self.op(newer)
            ),
            _ => ", the initial value".to_string(),
        }
    }

    /// The operation ids of `nodes`, plus that of the write a stale `read` read from, if any.
    pub(super) fn ops_with_source(&self, nodes: &[usize], read: usize) -> Vec<usize> {
        let mut ops: Vec<usize> = nodes.iter().map(|&n| self.op(n)).collect();
        if let Some(w) = self.relations.read_from(read) {
            ops.push(self.op(w as usize));
        }
        ops
    }
}

impl Teller<'_> {
    /// A cycle told edge by edge, `label(a, b)` naming the relation of each edge:
    /// "session 1 read y=2 (op 3) -po-> session 1 wrote x=1 (op 4) -rf-> ... -rf-> op 3".
    pub(super) fn cycle(&self, cycle: &[u32], label: impl Fn(usize, usize) -> String) -> String {
        let mut text = String::new();
        for (i, &node) in cycle.iter().enumerate() {
            let next = cycle[(i + 1) % cycle.len()] as usize;
            text.push_str(&self.told(node as usize));
            text.push_str(&format!(" -{}-> ", label(node as usize, next)));
        }
        text.push_str(&format!("op {}", self.op(cycle[0] as usize)));
        text
    }

    /// The name of a CO-generating edge `a -> b`: `po` or `rf`.
    pub(super) fn co_edge(&self, a: usize, b: usize) -> String {
        if self.relations.po_predecessor[b] == Some(a as u32) {
            "po".to_string()
        } else {
            debug_assert_eq!(self.relations.read_from(b), Some(a as u32));
            "rf".to_string()
        }
    }
}
