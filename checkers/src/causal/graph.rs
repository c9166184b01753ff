//! Graph machinery for the causal checker: bit matrices, strongly connected components, and
//! shortest cycles.
//!
//! Relations over a history's operations are rows of bits, one row per operation, so that the
//! transitive closure of a relation with two generating edges per operation (program order and
//! read-from) costs two row unions per operation: `n² / 64` word operations and `n² / 8` bytes
//! for `n` operations. That quadratic memory is what bounds the checker (see
//! [`super::CausalOptions::operations_max`]).
//!
//! Cycle search is Tarjan's ("Depth-first search and linear graph algorithms", SIAM J.
//! Computing 1972), iterative so that a 10,000-operation session cannot overflow the stack.

use std::collections::VecDeque;

/// A square-or-not matrix of bits: `rows` rows of `columns` bits each.
#[derive(Clone, Debug)]
pub(super) struct BitMatrix {
    words_per_row: usize,
    words: Vec<u64>,
}

impl BitMatrix {
    /// An all-zero matrix.
    pub(super) fn new(rows: usize, columns: usize) -> BitMatrix {
        let words_per_row = columns.div_ceil(64);
        BitMatrix {
            words_per_row,
            words: vec![0; rows * words_per_row],
        }
    }

    fn row(&self, row: usize) -> &[u64] {
        &self.words[row * self.words_per_row..(row + 1) * self.words_per_row]
    }

    /// Whether bit `column` of `row` is set.
    pub(super) fn get(&self, row: usize, column: usize) -> bool {
        self.row(row)[column / 64] & (1u64 << (column % 64)) != 0
    }

    /// Sets bit `column` of `row`.
    pub(super) fn set(&mut self, row: usize, column: usize) {
        self.words[row * self.words_per_row + column / 64] |= 1u64 << (column % 64);
    }

    /// `row[destination] |= row[source]`; the two rows must differ.
    pub(super) fn union_row(&mut self, destination: usize, source: usize) {
        assert_ne!(destination, source, "a row unioned with itself");
        let n = self.words_per_row;
        let (low, high) = (destination.min(source), destination.max(source));
        let (head, tail) = self.words.split_at_mut(high * n);
        let low_row = &mut head[low * n..(low + 1) * n];
        let high_row = &mut tail[..n];
        let (into, from) = if destination < source {
            (low_row, &*high_row)
        } else {
            (high_row, &*low_row)
        };
        for (a, b) in into.iter_mut().zip(from) {
            *a |= *b;
        }
    }

    /// The first set bit of `row` at or after `from`.
    pub(super) fn next_set(&self, row: usize, from: usize) -> Option<usize> {
        let words = self.row(row);
        let mut word_index = from / 64;
        if word_index >= words.len() {
            return None;
        }
        let mut word = words[word_index] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                return Some(word_index * 64 + word.trailing_zeros() as usize);
            }
            word_index += 1;
            if word_index == words.len() {
                return None;
            }
            word = words[word_index];
        }
    }
}

/// A directed graph over nodes `0..n`: explicit successor lists, plus, for some nodes, a row
/// of a bit matrix whose set bits are further successors (the conflict relation, which can be
/// quadratic in size and is therefore never listed edge by edge).
pub(super) struct Digraph<'a> {
    /// Explicit successors of each node.
    pub(super) lists: &'a [Vec<u32>],
    /// More successors: for each node, the row of the matrix holding them, if any.
    pub(super) rows: Option<(&'a [Option<u32>], &'a BitMatrix)>,
}

impl Digraph<'_> {
    fn len(&self) -> usize {
        self.lists.len()
    }

    /// The successor of `node` at `cursor` or after, and the cursor for the next one. Cursors
    /// `0..list.len()` walk the list, the rest walk the matrix row's bits.
    fn successor_from(&self, node: usize, cursor: usize) -> Option<(usize, usize)> {
        let list = &self.lists[node];
        if cursor < list.len() {
            return Some((list[cursor] as usize, cursor + 1));
        }
        let (rows, matrix) = self.rows?;
        let row = rows[node]?;
        let bit = matrix.next_set(row as usize, cursor - list.len())?;
        Some((bit, list.len() + bit + 1))
    }

    /// Every successor of `node`.
    pub(super) fn successors(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        let mut cursor = 0;
        std::iter::from_fn(move || {
            let (next, after) = self.successor_from(node, cursor)?;
            cursor = after;
            Some(next)
        })
    }

    /// Strongly connected components, each listed once, in the order Tarjan's algorithm
    /// completes them: a component comes after every component reachable from it, so the
    /// reverse of this order is a topological order of the condensation.
    pub(super) fn components(&self) -> Vec<Vec<u32>> {
        let n = self.len();
        let mut state = Tarjan {
            index: vec![UNVISITED; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            calls: Vec::new(),
            next_index: 0,
        };
        let mut components = Vec::new();
        for root in 0..n {
            if state.index[root] != UNVISITED {
                continue;
            }
            state.visit(root);
            while let Some(&(node, cursor)) = state.calls.last() {
                match self.successor_from(node, cursor) {
                    Some((next, after)) => {
                        state.calls.last_mut().expect("not empty").1 = after;
                        if state.index[next] == UNVISITED {
                            state.visit(next);
                        } else if state.on_stack[next] {
                            state.low[node] = state.low[node].min(state.index[next]);
                        }
                    }
                    None => {
                        state.calls.pop();
                        if let Some(&(parent, _)) = state.calls.last() {
                            state.low[parent] = state.low[parent].min(state.low[node]);
                        }
                        if state.low[node] == state.index[node] {
                            components.push(state.pop_component(node));
                        }
                    }
                }
            }
        }
        components
    }

    /// A shortest cycle through `start` that stays inside `component` (whose members are
    /// marked in `in_component`), as the nodes in order from `start`; the last node's edge
    /// leads back to `start`. `None` if there is none (a single node without a self-loop).
    pub(super) fn shortest_cycle(&self, start: usize, in_component: &[bool]) -> Option<Vec<u32>> {
        const NONE: u32 = u32::MAX;
        let mut parent = vec![NONE; self.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(node) {
                if next == start {
                    let mut cycle = vec![node as u32];
                    let mut at = node;
                    while at != start {
                        at = parent[at] as usize;
                        cycle.push(at as u32);
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if in_component[next] && parent[next] == NONE {
                    parent[next] = node as u32;
                    queue.push_back(next);
                }
            }
        }
        None
    }
}

const UNVISITED: u32 = u32::MAX;

/// The state of Tarjan's depth-first search, with an explicit call stack.
struct Tarjan {
    index: Vec<u32>,
    low: Vec<u32>,
    on_stack: Vec<bool>,
    stack: Vec<u32>,
    /// (node, cursor into its successors)
    calls: Vec<(usize, usize)>,
    next_index: u32,
}

impl Tarjan {
    fn visit(&mut self, node: usize) {
        self.index[node] = self.next_index;
        self.low[node] = self.next_index;
        self.next_index += 1;
        self.stack.push(node as u32);
        self.on_stack[node] = true;
        self.calls.push((node, 0));
    }

    /// Pops the component whose root is `root` off the stack.
    fn pop_component(&mut self, root: usize) -> Vec<u32> {
        let mut component = Vec::new();
        loop {
            let member = self.stack.pop().expect("the root is on the stack");
            self.on_stack[member as usize] = false;
            component.push(member);
            if member as usize == root {
                return component;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_union_and_scan_across_words() {
        let mut m = BitMatrix::new(3, 130);
        m.set(0, 3);
        m.set(0, 129);
        m.set(2, 64);
        m.union_row(1, 0);
        m.union_row(1, 2);
        let bits: Vec<usize> =
            std::iter::successors(m.next_set(1, 0), |&b| m.next_set(1, b + 1)).collect();
        assert_eq!(bits, vec![3, 64, 129]);
        m.union_row(2, 1);
        assert!(m.get(2, 3) && m.get(2, 129));
        assert_eq!(m.next_set(0, 130), None);
    }

    #[test]
    fn components_come_in_reverse_topological_order() {
        // 0 -> 1 -> 2 -> 1, 2 -> 3; plus a matrix edge 3 -> 0 makes everything one cycle.
        let lists = vec![vec![1], vec![2], vec![1, 3], vec![]];
        let g = Digraph {
            lists: &lists,
            rows: None,
        };
        let components = g.components();
        assert_eq!(components.len(), 3);
        assert_eq!(components[0], vec![3]);
        let mut middle = components[1].clone();
        middle.sort_unstable();
        assert_eq!(middle, vec![1, 2]);
        assert_eq!(components[2], vec![0]);

        let mut matrix = BitMatrix::new(1, 4);
        matrix.set(0, 0);
        let rows = vec![None, None, None, Some(0)];
        let g = Digraph {
            lists: &lists,
            rows: Some((&rows, &matrix)),
        };
        assert_eq!(g.components().len(), 1);
        let cycle = g.shortest_cycle(0, &[true; 4]).unwrap();
        assert_eq!(cycle, vec![0, 1, 2, 3]);
    }
}
