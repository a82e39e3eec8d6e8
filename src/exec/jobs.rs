//! How the nodes left to compute become cluster jobs: the shards of a stage as one array job; a
//! stage or plot with resources of its own in a job of its own; every other node in a job with the
//! nodes it is connected to that become ready at the same time (between the same rounds of
//! shards), what those shards read in a job before the rest; each job waiting for the jobs, new or
//! already queued, of the nodes it reads.

use crate::plan::{NodeKind, Plan};
use crate::stages::Part;
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};

/// One job to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// A short name: the stage of an array or of own resources, else the first node's name with
    /// the number of further nodes (`pile@a+3`).
    pub label: String,
    /// Its nodes in plan order (an array's shards, or the nodes one `lantern run --only …` computes).
    pub nodes: Vec<NodeIndex>,
    /// The stage whose shards these are: the job is an array of the shard numbers of `nodes`.
    pub array: Option<String>,
    /// The stage or plot whose `[slurm.stages.NAME]` resources it takes (when it has some).
    pub own: Option<String>,
    /// The jobs of this list it waits for (indices of earlier jobs).
    pub after: Vec<usize>,
    /// The nodes of jobs submitted earlier (still queued or running) it waits for.
    pub after_queued: Vec<NodeIndex>,
}

/// What decides a node's job (in the order jobs of one round are listed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// Nodes that share a job with the nodes they are connected to, and that the arrays or
    /// own-resource jobs of their round read (so those start as soon as they are done).
    Feeds,
    /// Nodes that share a job with the nodes they are connected to.
    Common,
    /// A stage or plot with resources of its own.
    Own(String),
    /// The shards of a stage.
    Array(String),
}

/// The stage (or plot) a node belongs to; `None` for tokenization.
pub fn owner(plan: &Plan, ix: NodeIndex) -> Option<&str> {
    match &plan.graph[ix].kind {
        NodeKind::Stage(s) | NodeKind::Part { stage: s, .. } | NodeKind::Plot(s) => Some(s),
        NodeKind::Tokenize { .. } => None,
    }
}

/// The shard number (1-based) and count of a shard node.
pub fn shard(plan: &Plan, ix: NodeIndex) -> Option<(usize, usize)> {
    match plan.graph[ix].kind {
        NodeKind::Part { part: Part::Shard { index, count }, .. } => Some((index + 1, count)),
        _ => None,
    }
}

/// The jobs computing `todo` (nodes of `plan`, each with its missing inputs in `todo` or in
/// `queued`), in an order where every job comes after the jobs it waits for. `own(name)` says
/// whether a stage or plot has resources of its own.
pub fn jobs(
    plan: &Plan,
    todo: &BTreeSet<NodeIndex>,
    queued: &BTreeSet<NodeIndex>,
    own: impl Fn(&str) -> bool,
) -> Vec<Job> {
    let group = |ix: NodeIndex| match owner(plan, ix) {
        Some(s) if shard(plan, ix).is_some() => Group::Array(s.to_string()),
        Some(s) if own(s) => Group::Own(s.to_string()),
        _ => Group::Common,
    };
    // A node's round: after every round of the shards (or own-resource jobs) it reads.
    let mut round: BTreeMap<NodeIndex, usize> = BTreeMap::new();
    for &ix in plan.order.iter().filter(|ix| todo.contains(ix)) {
        let r = plan
            .inputs(ix)
            .into_iter()
            .filter_map(|p| round.get(&p).map(|r| r + usize::from(group(p) != Group::Common)))
            .max()
            .unwrap_or(0);
        round.insert(ix, r);
    }
    // What the arrays and own-resource jobs of a round read (and what that reads) feeds them.
    let mut feeds: BTreeSet<NodeIndex> = BTreeSet::new();
    for &ix in plan.order.iter().rev().filter(|ix| round.contains_key(ix) && group(**ix) == Group::Common) {
        let reader =
            |n: &NodeIndex| round.get(n) == Some(&round[&ix]) && (feeds.contains(n) || group(*n) != Group::Common);
        if plan.graph.neighbors_directed(ix, petgraph::Direction::Outgoing).any(|n| reader(&n)) {
            feeds.insert(ix);
        }
    }
    let group = |ix: NodeIndex| match group(ix) {
        Group::Common if feeds.contains(&ix) => Group::Feeds,
        g => g,
    };
    // Connected nodes of one round and group share a job (union-find over their edges).
    let mut parent: BTreeMap<NodeIndex, NodeIndex> = round.keys().map(|&ix| (ix, ix)).collect();
    fn root(parent: &mut BTreeMap<NodeIndex, NodeIndex>, ix: NodeIndex) -> NodeIndex {
        let p = parent[&ix];
        if p == ix {
            return ix;
        }
        let r = root(parent, p);
        parent.insert(ix, r);
        r
    }
    let mut join = |a: NodeIndex, b: NodeIndex| {
        let (a, b) = (root(&mut parent, a), root(&mut parent, b));
        parent.insert(a, b);
    };
    // The shards of a stage: one array.
    let mut arrays: BTreeMap<(usize, Group), NodeIndex> = BTreeMap::new();
    for (&ix, &r) in &round {
        if let g @ Group::Array(_) = group(ix) {
            let first = *arrays.entry((r, g)).or_insert(ix);
            join(first, ix);
        }
    }
    for &ix in round.keys() {
        for p in plan.inputs(ix) {
            if round.contains_key(&p) && round[&p] == round[&ix] && group(p) == group(ix) {
                join(p, ix);
            }
        }
    }
    let position: BTreeMap<NodeIndex, usize> = plan.order.iter().enumerate().map(|(i, &ix)| (ix, i)).collect();
    let mut by_root: BTreeMap<NodeIndex, Vec<NodeIndex>> = BTreeMap::new();
    for &ix in plan.order.iter().filter(|ix| round.contains_key(ix)) {
        let r = root(&mut parent, ix);
        by_root.entry(r).or_default().push(ix);
    }
    // Rounds in order; in a round what feeds the others first, then by plan order.
    let mut groups: Vec<Vec<NodeIndex>> = by_root.into_values().collect();
    groups.sort_by_key(|nodes| (round[&nodes[0]], group(nodes[0]), position[&nodes[0]]));
    let job_of: BTreeMap<NodeIndex, usize> =
        groups.iter().enumerate().flat_map(|(j, nodes)| nodes.iter().map(move |&ix| (ix, j))).collect();
    groups
        .iter()
        .enumerate()
        .map(|(j, nodes)| {
            let inputs: BTreeSet<NodeIndex> = nodes.iter().flat_map(|&ix| plan.inputs(ix)).collect();
            let after: BTreeSet<usize> =
                inputs.iter().filter_map(|p| job_of.get(p).copied()).filter(|&a| a != j).collect();
            debug_assert!(after.iter().all(|&a| a < j), "a job waits for a later one");
            let after_queued = inputs.iter().copied().filter(|p| queued.contains(p)).collect();
            let (array, own) = match group(nodes[0]) {
                Group::Array(s) => (Some(s.clone()), own(&s).then_some(s)),
                Group::Own(s) => (None, Some(s)),
                Group::Common | Group::Feeds => (None, None),
            };
            let first = &plan.graph[nodes[0]].name;
            let label = match (&array, &own) {
                (Some(s), _) | (_, Some(s)) => s.clone(),
                _ if nodes.len() > 1 => format!("{first}+{}", nodes.len() - 1),
                _ => first.clone(),
            };
            Job { label, nodes: nodes.clone(), array, own, after: after.into_iter().collect(), after_queued }
        })
        .collect()
}
