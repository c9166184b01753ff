//! Finding and classifying cycles in one strongly connected component.
//!
//! Adya's anomalies are cycles of particular shapes in the dependency graph: G0 uses only
//! write-write edges, G1c adds write-read edges, G-single has exactly one anti-dependency (rw)
//! edge, G-nonadjacent has several rw edges none of them adjacent, G2-item has several with
//! two adjacent. Each also comes in a `-process` and a `-realtime` form, which need at least
//! one process-order or real-time edge: those are what session and strict models forbid.
//!
//! For each shape, in order of severity, the search takes every edge of the shape's
//! distinguishing kind (the rw edge for G-single, a real-time edge for G0-realtime, ...) whose
//! ends lie in one component of the shape's own edges, and runs a breadth-first search back
//! from its head to its tail over (vertex, state) pairs, where the state counts rw edges and
//! remembers what the shape still needs. The first closed walk found is cut into simple
//! cycles; one of the shape's type is the answer. Shapes implied by one already found are
//! skipped (a G0 is also a G1c, which says nothing new), and the whole component's search is
//! bounded by a deadline, after which the component is reported as `cycle-search-timeout`.
//!
//! The search is exact for the shapes it finds; it can miss a shape only when the shortest
//! closed walk of that shape through an anchor edge is not simple and none of its simple
//! pieces has the shape (never seen in Elle's test histories). `cycle-exists` fallbacks (a
//! component of a model's edges exists, so the model fails somewhere) are computed as well,
//! as Elle does, and reported only when no specific cycle already rules the model out.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::consistency;
use super::graph::{Graph, PROCESS, REALTIME, RW, WR, WW};

/// A cycle: `txns[i] → txns[i+1]` by `labels[i]`, and the last back to the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// Transaction ids in cycle order.
    pub txns: Vec<u32>,
    /// The relation explaining each edge.
    pub labels: Vec<u8>,
}

/// The anomaly type of a cycle by the relations of its edges (Elle's classification).
pub fn classify(labels: &[u8]) -> String {
    let count = |rel: u8| labels.iter().filter(|&&l| l == rel).count();
    let rw = count(RW);
    let n = labels.len();
    let adjacent = (0..n).any(|i| labels[i] == RW && labels[(i + 1) % n] == RW);
    let base = if rw == 1 {
        "G-single-item"
    } else if rw > 1 {
        if adjacent {
            "G2-item"
        } else {
            "G-nonadjacent-item"
        }
    } else if count(WR) > 0 {
        "G1c"
    } else {
        "G0"
    };
    let variant = if count(REALTIME) > 0 {
        "-realtime"
    } else if count(PROCESS) > 0 {
        "-process"
    } else {
        ""
    };
    format!("{base}{variant}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    G0,
    G1c,
    Single,
    Nonadjacent,
    G2Item,
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    base: Base,
    variant: u8,
}

fn specs() -> Vec<Spec> {
    let mut out = Vec::new();
    for (base, name) in [
        (Base::G0, "G0"),
        (Base::G1c, "G1c"),
        (Base::Single, "G-single-item"),
        (Base::Nonadjacent, "G-nonadjacent-item"),
        (Base::G2Item, "G2-item"),
    ] {
        for (variant, suffix) in [(0, ""), (PROCESS, "-process"), (REALTIME, "-realtime")] {
            out.push(Spec {
                name: format!("{name}{suffix}"),
                base,
                variant,
            });
        }
    }
    out.sort_by(|a, b| consistency::by_depth(&a.name, &b.name));
    out
}

impl Spec {
    fn allowed(&self) -> u8 {
        let mut mask = WW | self.variant;
        if self.base != Base::G0 {
            mask |= WR;
        }
        if matches!(self.base, Base::Single | Base::Nonadjacent | Base::G2Item) {
            mask |= RW;
        }
        mask
    }

    fn anchor(&self) -> u8 {
        match self.base {
            Base::Single | Base::Nonadjacent | Base::G2Item => RW,
            _ if self.variant != 0 => self.variant,
            Base::G1c => WR,
            Base::G0 => WW,
        }
    }
}

// Search state bits: rw count (0, 1, 2 = two or more) in the low two bits.
const LAST_RW: u8 = 4;
const ADJACENT: u8 = 8;
const SAW_WR: u8 = 16;
const SAW_VARIANT: u8 = 32;
const STATES: u32 = 64;

fn step(spec: &Spec, state: u8, label: u8) -> Option<u8> {
    if label & spec.allowed() == 0 {
        return None;
    }
    let count = state & 3;
    if label == RW {
        let mut next = (state & !3) | (count + 1).min(2) | LAST_RW;
        match spec.base {
            Base::Single if count >= 1 => return None,
            Base::Nonadjacent if state & LAST_RW != 0 => return None,
            Base::G2Item if state & LAST_RW != 0 => next |= ADJACENT,
            _ => {}
        }
        return Some(next);
    }
    let mut next = state & !LAST_RW;
    if label == WR {
        next |= SAW_WR;
    }
    if label == spec.variant {
        next |= SAW_VARIANT;
    }
    Some(next)
}

fn start_state(spec: &Spec) -> u8 {
    match spec.anchor() {
        RW => 1 | LAST_RW,
        WR => SAW_WR | if spec.variant == WR { SAW_VARIANT } else { 0 },
        a if a == spec.variant && a != 0 => SAW_VARIANT,
        _ => 0,
    }
}

fn accepts(spec: &Spec, state: u8) -> bool {
    if spec.variant != 0 && state & SAW_VARIANT == 0 {
        return false;
    }
    let count = state & 3;
    match spec.base {
        Base::G0 => true,
        Base::G1c => state & SAW_WR != 0,
        Base::Single => count == 1,
        // The anchor is the first edge and an rw: the last must not be one.
        Base::Nonadjacent => count >= 2 && state & LAST_RW == 0,
        Base::G2Item => count >= 2 && state & (ADJACENT | LAST_RW) != 0,
    }
}

/// One component's graph with local vertex numbers.
struct Local {
    global: Vec<u32>,
    offsets: Vec<u32>,
    targets: Vec<u32>,
    labels: Vec<u8>,
    /// Every relation on each edge: existence checks project on all of them, as Elle's do
    /// (an edge labelled rw that is also process order still orders a session).
    rels: Vec<u8>,
}

impl Local {
    fn new(graph: &Graph, scc: &[u32]) -> Local {
        let mut offsets = vec![0u32];
        let mut targets = Vec::new();
        let mut labels = Vec::new();
        let mut rels = Vec::new();
        for &v in scc {
            let (start, end) = (
                graph.offsets[v as usize] as usize,
                graph.offsets[v as usize + 1] as usize,
            );
            for i in start..end {
                if let Ok(local) = scc.binary_search(&graph.targets[i]) {
                    targets.push(local as u32);
                    labels.push(graph.labels[i]);
                    rels.push(graph.rels[i]);
                }
            }
            offsets.push(targets.len() as u32);
        }
        Local {
            global: scc.to_vec(),
            offsets,
            targets,
            labels,
            rels,
        }
    }

    fn len(&self) -> usize {
        self.global.len()
    }

    fn out(&self, v: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let (s, e) = (
            self.offsets[v as usize] as usize,
            self.offsets[v as usize + 1] as usize,
        );
        self.targets[s..e]
            .iter()
            .copied()
            .zip(self.labels[s..e].iter().copied())
    }

    fn as_graph(&self) -> Graph {
        Graph {
            offsets: self.offsets.clone(),
            targets: self.targets.clone(),
            rels: self.labels.clone(),
            labels: self.labels.clone(),
        }
    }

    /// The component's graph filtered by every relation an edge has, not its label.
    fn as_rels_graph(&self) -> Graph {
        Graph {
            offsets: self.offsets.clone(),
            targets: self.targets.clone(),
            rels: self.rels.clone(),
            labels: self.rels.clone(),
        }
    }

    fn out_rels(&self, v: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let (s, e) = (
            self.offsets[v as usize] as usize,
            self.offsets[v as usize + 1] as usize,
        );
        self.targets[s..e]
            .iter()
            .copied()
            .zip(self.rels[s..e].iter().copied())
    }

    /// Component number of each vertex using only `mask` edges (`u32::MAX` if in none).
    fn components(&self, mask: u8) -> Vec<u32> {
        let mut comp = vec![u32::MAX; self.len()];
        for (i, c) in self.as_graph().sccs(mask, None).into_iter().enumerate() {
            for v in c {
                comp[v as usize] = i as u32;
            }
        }
        comp
    }

    fn labels_present(&self) -> u8 {
        self.labels.iter().fold(0, |a, &l| a | l)
    }
}

/// Visited marks and parents for the (vertex, state) search, reused across anchors.
struct Marks {
    dense: Option<(Vec<u32>, Vec<u32>)>,
    sparse: HashMap<u32, u32>,
    generation: u32,
}

impl Marks {
    fn new(n: usize) -> Marks {
        let size = n as u64 * STATES as u64;
        let dense =
            (size <= 1 << 24).then(|| (vec![0u32; size as usize], vec![0u32; size as usize]));
        Marks {
            dense,
            sparse: HashMap::new(),
            generation: 0,
        }
    }

    fn reset(&mut self) {
        self.generation += 1;
        self.sparse.clear();
    }

    /// Marks `node` with `parent` unless already marked; whether it was new.
    fn visit(&mut self, node: u32, parent: u32) -> bool {
        match &mut self.dense {
            Some((stamp, parents)) => {
                if stamp[node as usize] == self.generation {
                    return false;
                }
                stamp[node as usize] = self.generation;
                parents[node as usize] = parent;
                true
            }
            None => {
                if self.sparse.contains_key(&node) {
                    return false;
                }
                self.sparse.insert(node, parent);
                true
            }
        }
    }

    fn parent(&self, node: u32) -> u32 {
        match &self.dense {
            Some((_, parents)) => parents[node as usize],
            None => self.sparse[&node],
        }
    }
}

/// Cuts a closed walk into simple cycles.
fn simple_pieces(vertices: &[u32], labels: &[u8]) -> Vec<(Vec<u32>, Vec<u8>)> {
    let mut pieces = Vec::new();
    let mut stack_v: Vec<u32> = Vec::new();
    let mut stack_l: Vec<u8> = Vec::new();
    // Walk: vertices[i] --labels[i]--> vertices[i+1], closing at vertices[0].
    let n = vertices.len();
    for i in 0..=n {
        let v = vertices[i % n];
        if let Some(at) = stack_v.iter().position(|&w| w == v) {
            let cyc_v: Vec<u32> = stack_v.drain(at..).collect();
            let cyc_l: Vec<u8> = stack_l.drain(at..).collect();
            pieces.push((cyc_v, cyc_l));
        }
        if i < n {
            stack_v.push(v);
            stack_l.push(labels[i]);
        }
    }
    pieces
}

fn search_spec(
    local: &Local,
    spec: &Spec,
    marks: &mut Marks,
    deadline: Instant,
) -> Result<Option<Cycle>, ()> {
    let present = local.labels_present();
    if spec.variant != 0 && present & spec.variant == 0 {
        return Ok(None);
    }
    if spec.allowed() & RW != 0 && present & RW == 0 {
        return Ok(None);
    }
    let comp = local.components(spec.allowed());
    let anchor = spec.anchor();
    let s0 = start_state(spec);
    let mut queue: Vec<u32> = Vec::new();
    let mut anchors_tried = 0u32;
    for u in 0..local.len() as u32 {
        if comp[u as usize] == u32::MAX {
            continue;
        }
        for (v, label) in local.out(u) {
            if label != anchor || comp[v as usize] != comp[u as usize] {
                continue;
            }
            anchors_tried += 1;
            if anchors_tried % 16 == 1 && Instant::now() > deadline {
                return Err(());
            }
            marks.reset();
            queue.clear();
            let start = v * STATES + s0 as u32;
            marks.visit(start, u32::MAX);
            queue.push(start);
            let mut head = 0;
            let mut found: Option<(u32, u8)> = None;
            'bfs: while head < queue.len() {
                let node = queue[head];
                head += 1;
                let (x, state) = (node / STATES, (node % STATES) as u8);
                for (y, l) in local.out(x) {
                    let Some(next) = step(spec, state, l) else {
                        continue;
                    };
                    if y == u {
                        if accepts(spec, next) {
                            found = Some((node, l));
                            break 'bfs;
                        }
                        continue;
                    }
                    let child = y * STATES + next as u32;
                    if marks.visit(child, node) {
                        queue.push(child);
                    }
                }
            }
            let Some((last, last_label)) = found else {
                continue;
            };
            // Rebuild u → v → ... → x → u.
            let mut rev_vertices = Vec::new();
            let mut rev_labels = vec![last_label];
            let mut node = last;
            loop {
                let x = node / STATES;
                rev_vertices.push(x);
                let parent = marks.parent(node);
                if parent == u32::MAX {
                    break;
                }
                // The label into x from its parent.
                let px = parent / STATES;
                let label = local
                    .out(px)
                    .find(|&(w, _)| w == x)
                    .map(|(_, l)| l)
                    .unwrap_or(0);
                rev_labels.push(label);
                node = parent;
            }
            rev_labels.push(anchor);
            rev_vertices.push(u);
            rev_vertices.reverse();
            rev_labels.reverse();
            for (vs, ls) in simple_pieces(&rev_vertices, &rev_labels) {
                if classify(&ls) == spec.name {
                    return Ok(Some(Cycle {
                        txns: vs.iter().map(|&i| local.global[i as usize]).collect(),
                        labels: ls,
                    }));
                }
            }
        }
    }
    Ok(None)
}

/// A model's edges form a cycle somewhere, though no specific one was shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleExists {
    /// `PL-2-cycle-exists` and so on.
    pub kind: String,
    /// The model that cannot hold (friendly name).
    pub not: String,
    /// The relations used, for the report.
    pub subgraph: String,
    /// The smallest component found.
    pub scc: Vec<u32>,
}

/// The component search ran out of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// The shape being looked for when time ran out.
    pub searching: String,
    /// Shapes already looked for and not found.
    pub does_not_contain: Vec<String>,
    /// Transactions in the component.
    pub scc_size: usize,
}

/// Everything found in one component.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Specific cycles, by type.
    pub cycles: Vec<(String, Cycle)>,
    /// Fallback existence results.
    pub exists: Vec<CycleExists>,
    /// Set when the deadline cut the search short.
    pub timeout: Option<Timeout>,
}

struct ExistsSpec {
    model: &'static str,
    edges: u8,
    /// Sequential extension by rw: rw edges may be used only right after another edge.
    extension: bool,
}

const EXISTS: &[ExistsSpec] = &[
    ExistsSpec {
        model: "PL-1",
        edges: WW,
        extension: false,
    },
    ExistsSpec {
        model: "PL-2",
        edges: WW | WR,
        extension: false,
    },
    ExistsSpec {
        model: "PL-SI",
        edges: WW | WR,
        extension: true,
    },
    ExistsSpec {
        model: "PL-2.99",
        edges: WW | WR | RW,
        extension: false,
    },
    ExistsSpec {
        model: "PL-3",
        edges: WW | WR | RW,
        extension: false,
    },
    ExistsSpec {
        model: "strong-session-PL-1",
        edges: WW | PROCESS,
        extension: false,
    },
    ExistsSpec {
        model: "strong-session-PL-2",
        edges: WW | WR | PROCESS,
        extension: false,
    },
    ExistsSpec {
        model: "strong-session-snapshot-isolation",
        edges: WW | WR | PROCESS,
        extension: true,
    },
    ExistsSpec {
        model: "strong-session-serializable",
        edges: WW | WR | RW | PROCESS,
        extension: false,
    },
    ExistsSpec {
        model: "strong-PL-1",
        edges: WW | REALTIME,
        extension: false,
    },
    ExistsSpec {
        model: "strong-PL-2",
        edges: WW | WR | REALTIME,
        extension: false,
    },
    ExistsSpec {
        model: "strong-snapshot-isolation",
        edges: WW | WR | REALTIME,
        extension: true,
    },
    ExistsSpec {
        model: "PL-SS",
        edges: WW | WR | RW | REALTIME,
        extension: false,
    },
];

fn subgraph_text(spec: &ExistsSpec) -> String {
    let names: Vec<&str> = [
        (WW, "ww"),
        (WR, "wr"),
        (RW, "rw"),
        (PROCESS, "process"),
        (REALTIME, "realtime"),
    ]
    .iter()
    .filter(|(r, _)| spec.edges & r != 0)
    .map(|(_, n)| *n)
    .collect();
    if spec.extension {
        format!("[:extension [:union {}] :rw]", names.join(" "))
    } else {
        format!("[:union {}]", names.join(" "))
    }
}

fn exists_component(local: &Local, spec: &ExistsSpec) -> Option<Vec<u32>> {
    if !spec.extension {
        let mut sccs = local.as_rels_graph().sccs(spec.edges, None);
        sccs.sort_by_key(Vec::len);
        return sccs.into_iter().next();
    }
    // g ∪ (g ; rw): an rw edge may follow any g edge.
    let mut edges: Vec<(u32, u32, u8)> = Vec::new();
    for a in 0..local.len() as u32 {
        for (b, l) in local.out_rels(a) {
            if l & spec.edges == 0 {
                continue;
            }
            edges.push((a, b, WW));
            for (c, l2) in local.out_rels(b) {
                if l2 & RW != 0 {
                    if c == a {
                        return Some(vec![a]);
                    }
                    edges.push((a, c, WW));
                }
            }
        }
    }
    let g = Graph::build(local.len(), edges, &[WW]);
    let mut sccs = g.sccs(WW, None);
    sccs.sort_by_key(Vec::len);
    sccs.into_iter().next()
}

/// Searches one component of the full graph.
pub fn search_component(graph: &Graph, scc: &[u32], deadline: Instant) -> Found {
    let local = Local::new(graph, scc);
    let mut found = Found::default();
    // Existence first: models that hold here rule whole shapes out before any search.
    let mut ruled_out: BTreeSet<&'static str> = BTreeSet::new();
    for spec in EXISTS {
        if ruled_out.contains(spec.model) {
            continue;
        }
        if let Some(component) = exists_component(&local, spec) {
            found.exists.push(CycleExists {
                kind: format!("{}-cycle-exists", spec.model),
                not: consistency::friendly(spec.model).to_string(),
                subgraph: subgraph_text(spec),
                scc: component
                    .iter()
                    .map(|&v| local.global[v as usize])
                    .collect(),
            });
            ruled_out.extend(consistency::models_implying([spec.model]));
        }
    }
    let impossible_models =
        consistency::models_implying(found.exists.iter().map(|e| e.not.as_str()));
    let possible: Vec<&str> = EXISTS
        .iter()
        .map(|s| s.model)
        .filter(|m| !impossible_models.contains(m))
        .collect();
    let cannot_exist = consistency::prohibited_by(possible);
    let mut skip: BTreeSet<String> = cannot_exist.iter().map(|s| s.to_string()).collect();
    let mut marks = Marks::new(local.len());
    let mut searched: Vec<String> = Vec::new();
    for spec in specs() {
        if skip.contains(&spec.name) {
            continue;
        }
        match search_spec(&local, &spec, &mut marks, deadline) {
            Ok(Some(cycle)) => {
                for implied in consistency::implied([spec.name.as_str()]) {
                    skip.insert(implied.to_string());
                }
                found.cycles.push((spec.name.clone(), cycle));
            }
            Ok(None) => searched.push(spec.name.clone()),
            Err(()) => {
                found.timeout = Some(Timeout {
                    searching: spec.name.clone(),
                    does_not_contain: searched,
                    scc_size: scc.len(),
                });
                if let Some(cycle) = any_cycle(&local) {
                    found.cycles.push((classify(&cycle.labels), cycle));
                }
                break;
            }
        }
    }
    found
}

/// Some cycle of a strongly connected component (breadth-first from its first vertex), for
/// when the typed search ran out of time.
fn any_cycle(local: &Local) -> Option<Cycle> {
    let mut parent: Vec<(u32, u8)> = vec![(u32::MAX, 0); local.len()];
    let mut queue = std::collections::VecDeque::from([0u32]);
    parent[0] = (0, 0);
    while let Some(x) = queue.pop_front() {
        for (y, l) in local.out(x) {
            if y == 0 {
                // Walk back from x to 0, then read the path forwards.
                let mut path = vec![x];
                let mut into = Vec::new();
                let mut at = x;
                while at != 0 {
                    let (p, label) = parent[at as usize];
                    into.push(label);
                    path.push(p);
                    at = p;
                }
                path.reverse();
                into.reverse();
                into.push(l);
                return Some(Cycle {
                    txns: path.iter().map(|&i| local.global[i as usize]).collect(),
                    labels: into,
                });
            }
            if parent[y as usize].0 == u32::MAX {
                parent[y as usize] = (x, l);
                queue.push_back(y);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn find(n: usize, edges: &[(u32, u32, u8)]) -> Found {
        let g = Graph::build(n, edges.to_vec(), &[WW, WR, RW, PROCESS, REALTIME]);
        let sccs = g.sccs(0xff, None);
        assert_eq!(sccs.len(), 1);
        search_component(&g, &sccs[0], Instant::now() + Duration::from_secs(5))
    }

    fn types(found: &Found) -> Vec<String> {
        found.cycles.iter().map(|(t, _)| t.clone()).collect()
    }

    #[test]
    fn write_cycles_are_g0_and_nothing_weaker_is_reported() {
        let f = find(2, &[(0, 1, WW), (1, 0, WW)]);
        assert_eq!(types(&f), vec!["G0"]);
    }

    #[test]
    fn one_anti_dependency_is_g_single() {
        let f = find(2, &[(0, 1, WR), (1, 0, RW)]);
        assert_eq!(types(&f), vec!["G-single-item"]);
        assert_eq!(f.cycles[0].1.txns.len(), 2);
    }

    #[test]
    fn two_adjacent_anti_dependencies_are_g2_item_and_separated_ones_nonadjacent() {
        let f = find(2, &[(0, 1, RW), (1, 0, RW)]);
        assert_eq!(types(&f), vec!["G2-item"]);
        let f = find(4, &[(0, 1, RW), (1, 2, WR), (2, 3, RW), (3, 0, WW)]);
        assert_eq!(types(&f), vec!["G-nonadjacent-item"]);
    }

    #[test]
    fn a_cycle_closed_by_real_time_is_the_realtime_variant() {
        let f = find(2, &[(0, 1, WR), (1, 0, REALTIME)]);
        assert_eq!(types(&f), vec!["G1c-realtime"]);
    }

    #[test]
    fn classification_reads_the_labels() {
        assert_eq!(classify(&[WW, WW]), "G0");
        assert_eq!(classify(&[WW, WR, PROCESS]), "G1c-process");
        assert_eq!(classify(&[RW, WR, RW, WR]), "G-nonadjacent-item");
        assert_eq!(classify(&[WR, RW, RW]), "G2-item");
        assert_eq!(
            classify(&[RW, WR, REALTIME, PROCESS]),
            "G-single-item-realtime"
        );
    }
}
