//! The plan: a petgraph DAG of nodes (tokenization of a dataset for a model, stages, stage parts,
//! plots) built from the references of stage specs, in run order, with Graphviz output. Validation
//! builds it (a cycle is an error there) and the executor runs it.

use crate::model::{ModelSource, ResolvedModel};
use crate::spec::Sp;
use crate::stages::{Dep, Part, PlotStage, Stage, StageSpec};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeMap;

/// What a node computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A dataset tokenized with a model's tokenizer.
    Tokenize {
        dataset: String,
        model: String,
    },
    Stage(String),
    /// One part of a stage that fans out (a seed of `train`, a shard of `correlation`).
    Part {
        stage: String,
        part: Part,
    },
    Plot(String),
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Display name: the stage or plot name, `dataset@model` for tokenization.
    pub name: String,
    pub kind: NodeKind,
    /// `tokenize`, `plot` or the stage's kind.
    pub kind_name: &'static str,
}

/// What a plan is built from: the experiment's stages, plots, resolved models and seed.
pub struct Sources<'a> {
    pub stages: &'a BTreeMap<String, Sp<StageSpec>>,
    pub plots: &'a BTreeMap<String, Sp<PlotStage>>,
    pub models: &'a BTreeMap<String, ResolvedModel>,
    pub seed: u64,
}

/// The stages on a cycle, in edge order, the first repeated at the end.
#[derive(Debug)]
pub struct Cycle(pub Vec<String>);

pub struct Plan {
    pub graph: DiGraph<Node, ()>,
    /// Nodes in a valid run order (dependencies first).
    pub order: Vec<NodeIndex>,
}

/// The node a stage's dependency points at, creating tokenization nodes on the way.
fn dep_node(
    src: &Sources,
    g: &mut DiGraph<Node, ()>,
    index: &mut BTreeMap<String, NodeIndex>,
    d: &Dep,
) -> Option<NodeIndex> {
    match d {
        Dep::Model(m) => match &src.models.get(m.name())?.source {
            ModelSource::Trained { stage, seed } => index.get(&Part::Seed(*seed).node_name(stage)).copied(),
            _ => None,
        },
        Dep::Tokens { dataset, model } => {
            let name = format!("{}@{}", dataset.name(), model.name());
            let ix = *index.entry(name.clone()).or_insert_with(|| {
                g.add_node(Node {
                    name,
                    kind: NodeKind::Tokenize { dataset: dataset.name().into(), model: model.name().into() },
                    kind_name: "tokenize",
                })
            });
            // Tokenizing for a trained model needs its tokenizer first.
            if let Some(train) = dep_node(src, g, index, &Dep::Model(model)) {
                g.update_edge(train, ix, ());
            }
            Some(ix)
        }
        Dep::Stage(s) => index.get(s.name()).copied(),
        Dep::Dataset(_) => None,
    }
}

/// Topological order, ties broken by definition order (stages by name, then plots), so runs list
/// their stages the same way every time; `None` when the graph has a cycle.
fn stable_order(g: &DiGraph<Node, ()>) -> Option<Vec<NodeIndex>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut indeg: Vec<usize> =
        g.node_indices().map(|i| g.neighbors_directed(i, petgraph::Direction::Incoming).count()).collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        g.node_indices().filter(|i| indeg[i.index()] == 0).map(|i| Reverse(i.index())).collect();
    let mut order = Vec::with_capacity(g.node_count());
    while let Some(Reverse(i)) = ready.pop() {
        let ix = NodeIndex::new(i);
        order.push(ix);
        for n in g.neighbors_directed(ix, petgraph::Direction::Outgoing) {
            indeg[n.index()] -= 1;
            if indeg[n.index()] == 0 {
                ready.push(Reverse(n.index()));
            }
        }
    }
    (order.len() == g.node_count()).then_some(order)
}

/// The stages on a cycle of the graph, in edge order, the first repeated at the end (`c1 → c2 →
/// c1`); a stage's parts count as the stage, tokenization nodes are passed through.
fn cycle(g: &DiGraph<Node, ()>) -> Vec<String> {
    let scc = petgraph::algo::tarjan_scc(g)
        .into_iter()
        .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
        .unwrap_or_default();
    let stage = |ix: NodeIndex| match &g[ix].kind {
        NodeKind::Stage(s) | NodeKind::Part { stage: s, .. } | NodeKind::Plot(s) => Some(s.clone()),
        NodeKind::Tokenize { .. } => None,
    };
    let Some(&start) =
        scc.iter().filter(|&&ix| matches!(g[ix].kind, NodeKind::Stage(_))).min_by_key(|&&ix| &g[ix].name)
    else {
        return vec![];
    };
    // Breadth-first inside the component, back to the start.
    let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    'search: while let Some(ix) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = g.neighbors(ix).filter(|n| scc.contains(n)).collect();
        next.sort_by_key(|&n| &g[n].name);
        for n in next {
            if n == start {
                prev.insert(start, ix);
                break 'search;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(n) {
                e.insert(ix);
                queue.push_back(n);
            }
        }
    }
    let mut path = vec![start];
    let mut at = prev[&start];
    while at != start {
        path.push(at);
        at = prev[&at];
    }
    path.push(start);
    path.reverse();
    let mut names: Vec<String> = path.into_iter().filter_map(stage).collect();
    names.dedup();
    names
}

impl Plan {
    /// The plan of an experiment's stages and plots; `Err` names the stages on a cycle.
    pub fn build(src: &Sources) -> Result<Plan, Cycle> {
        let mut g = DiGraph::new();
        let mut index = BTreeMap::new();
        let mut part_nodes = Vec::new();
        for (name, st) in src.stages {
            let kind_name = st.value.kind();
            let ix = g.add_node(Node { name: name.clone(), kind: NodeKind::Stage(name.clone()), kind_name });
            index.insert(name.clone(), ix);
            for part in st.value.stage().parts(src.seed) {
                let n = part.node_name(name);
                let kind = NodeKind::Part { stage: name.clone(), part };
                let s = g.add_node(Node { name: n.clone(), kind, kind_name });
                g.update_edge(s, ix, ());
                index.insert(n.clone(), s);
                part_nodes.push((name.clone(), s));
            }
        }
        for name in src.plots.keys() {
            let node = Node { name: name.clone(), kind: NodeKind::Plot(name.clone()), kind_name: "plot" };
            index.insert(name.clone(), g.add_node(node));
        }
        let deps: Vec<(String, Vec<Dep>)> = src
            .stages
            .iter()
            .map(|(n, s)| (n.clone(), s.value.stage().deps()))
            .chain(src.plots.iter().map(|(n, p)| (n.clone(), p.value.deps())))
            .collect();
        for (name, ds) in &deps {
            // A fanned-out stage's inputs feed each of its parts.
            let mut targets = vec![index[name]];
            targets.extend(part_nodes.iter().filter(|(s, _)| s == name).map(|(_, ix)| *ix));
            for d in ds {
                if let Some(from) = dep_node(src, &mut g, &mut index, d) {
                    for &to in &targets {
                        g.update_edge(from, to, ());
                    }
                }
            }
        }
        match stable_order(&g) {
            Some(order) => Ok(Plan { graph: g, order }),
            None => Err(Cycle(cycle(&g))),
        }
    }

    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.graph.node_indices().find(|&i| self.graph[i].name == name)
    }

    /// Direct dependencies of a node.
    pub fn inputs(&self, ix: NodeIndex) -> Vec<NodeIndex> {
        self.graph.neighbors_directed(ix, petgraph::Direction::Incoming).collect()
    }

    /// A node and everything it needs, transitively.
    pub fn with_ancestors(&self, ix: NodeIndex) -> Vec<NodeIndex> {
        let mut seen = vec![ix];
        let mut i = 0;
        while i < seen.len() {
            for p in self.inputs(seen[i]) {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
            i += 1;
        }
        seen
    }

    /// Graphviz of the plan, each node labelled with its kind and, when given, its state.
    pub fn dot(&self, state: impl Fn(NodeIndex) -> String) -> String {
        let mut s = String::from("digraph lantern {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n");
        for &ix in &self.order {
            let n = &self.graph[ix];
            let st = state(ix);
            let color = match st.split_whitespace().next().unwrap_or("") {
                "cached" => "palegreen",
                "stale" => "khaki",
                _ => "lightblue",
            };
            s += &format!(
                "  n{} [label=\"{}\\n{} · {}\", style=filled, fillcolor={color}];\n",
                ix.index(),
                n.name,
                n.kind_name,
                st.replace('"', "'")
            );
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).expect("edge");
            s += &format!("  n{} -> n{};\n", a.index(), b.index());
        }
        s + "}\n"
    }
}
