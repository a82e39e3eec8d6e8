//! The plan: a petgraph DAG of nodes (tokenization of a dataset for a model, stages, plots) built
//! from references, in run order, with Graphviz output.

pub mod fingerprint;

use crate::spec::Validated;
use crate::stages::{Dep, Part, Stage};
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
}

impl Node {
    pub fn kind_name<'a>(&self, v: &'a Validated) -> &'a str {
        match &self.kind {
            NodeKind::Tokenize { .. } => "tokenize",
            NodeKind::Stage(s) | NodeKind::Part { stage: s, .. } => v.exp.stages[s].value.kind(),
            NodeKind::Plot(_) => "plot",
        }
    }
}

pub struct Plan {
    pub graph: DiGraph<Node, ()>,
    /// Nodes in a valid run order (dependencies first).
    pub order: Vec<NodeIndex>,
}

/// The node a stage's dependency points at, creating tokenization nodes on the way.
fn dep_node(
    v: &Validated,
    g: &mut DiGraph<Node, ()>,
    index: &mut BTreeMap<String, NodeIndex>,
    d: &Dep,
) -> Option<NodeIndex> {
    match d {
        Dep::Model(m) => match &v.models.get(m.name())?.source {
            crate::exec::models::ModelSource::Trained { stage, seed } => {
                index.get(&crate::stages::train::seed_node(stage, *seed)).copied()
            }
            _ => None,
        },
        Dep::Tokens { dataset, model } => {
            let name = format!("{}@{}", dataset.name(), model.name());
            let ix = *index.entry(name.clone()).or_insert_with(|| {
                g.add_node(Node {
                    name,
                    kind: NodeKind::Tokenize { dataset: dataset.name().into(), model: model.name().into() },
                })
            });
            // Tokenizing for a trained model needs its tokenizer first.
            if let Some(train) = dep_node(v, g, index, &Dep::Model(model)) {
                g.update_edge(train, ix, ());
            }
            Some(ix)
        }
        Dep::Stage(s) => index.get(s.name()).copied(),
        Dep::Dataset(_) => None,
    }
}

/// Topological order, ties broken by definition order (stages by name, then plots), so runs list
/// their stages the same way every time.
fn stable_order(g: &DiGraph<Node, ()>) -> Vec<NodeIndex> {
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
    assert_eq!(order.len(), g.node_count(), "validation rejects cycles");
    order
}

impl Plan {
    pub fn build(v: &Validated) -> Plan {
        let mut g = DiGraph::new();
        let mut index = BTreeMap::new();
        let mut seed_nodes = Vec::new();
        for (name, st) in &v.exp.stages {
            let ix = g.add_node(Node { name: name.clone(), kind: NodeKind::Stage(name.clone()) });
            index.insert(name.clone(), ix);
            for part in st.value.stage().parts(v.exp.meta.seed) {
                let n = part.node_name(name);
                let s = g.add_node(Node { name: n.clone(), kind: NodeKind::Part { stage: name.clone(), part } });
                g.update_edge(s, ix, ());
                index.insert(n.clone(), s);
                seed_nodes.push((name.clone(), s));
            }
        }
        for name in v.exp.plots.keys() {
            index.insert(name.clone(), g.add_node(Node { name: name.clone(), kind: NodeKind::Plot(name.clone()) }));
        }
        let deps: Vec<(String, Vec<Dep>)> = v
            .exp
            .stages
            .iter()
            .map(|(n, s)| (n.clone(), s.value.stage().deps()))
            .chain(v.exp.plots.iter().map(|(n, p)| (n.clone(), p.value.deps())))
            .collect();
        for (name, ds) in &deps {
            // A fanned-out stage's inputs feed each of its parts.
            let mut targets = vec![index[name]];
            targets.extend(seed_nodes.iter().filter(|(s, _)| s == name).map(|(_, ix)| *ix));
            for d in ds {
                if let Some(from) = dep_node(v, &mut g, &mut index, d) {
                    for &to in &targets {
                        g.update_edge(from, to, ());
                    }
                }
            }
        }
        let order = stable_order(&g);
        Plan { graph: g, order }
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
    pub fn dot(&self, v: &Validated, state: impl Fn(NodeIndex) -> String) -> String {
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
                n.kind_name(v),
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
