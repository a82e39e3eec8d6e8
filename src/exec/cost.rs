//! `lantern plan --cost`: each node's estimated work, peak memory and time at this machine's
//! measured rates (f32 matmul, token statistics, neuron statistics; measured once, remembered in
//! `OUT/.lantern/machine.json`), and how to split a stage that would take longer than a day.

use super::Session;
use crate::model::flops::Rates;
use crate::plan::NodeKind;
use crate::stages::{Cost, CostCx};
use crate::store::OutDir;
use anyhow::Result;
use petgraph::graph::NodeIndex;

/// Longer than this, a stage's line says how to shard it.
pub const DAY: f64 = 86_400.0;

/// The estimate of one node.
#[derive(Clone, Debug)]
pub struct NodeCost {
    pub ix: NodeIndex,
    pub cost: Cost,
    /// At the measured rates.
    pub seconds: f64,
    /// Whether its tokens were counted (a cached tokenization) rather than estimated.
    pub counted: bool,
}

/// Every node's estimate, in run order.
pub struct Costs {
    pub nodes: Vec<NodeCost>,
    /// This machine's rates.
    pub rates: Rates,
    /// The rates were measured by this call (not read from the output folder).
    pub measured_now: bool,
}

impl Costs {
    pub fn total(&self) -> (f64, f64, f64) {
        let flops = self.nodes.iter().map(|n| n.cost.flops).sum();

        let bytes = self.nodes.iter().map(|n| n.cost.bytes).fold(0.0, f64::max);
        (flops, bytes, self.nodes.iter().map(|n| n.seconds).sum())
    }

    /// The shards that bring a stage under a day (each a job of `lantern run --shard i/N`).
    pub fn shards_for(seconds: f64) -> usize {
        (seconds / (DAY / 2.0)).ceil().max(2.0) as usize
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Machine {
    threads: usize,
    rates: Rates,
}

/// The rates remembered for this thread count, else measured now and remembered.
fn machine_rates(dirs: &OutDir) -> Result<(Rates, bool)> {
    let path = dirs.machine()?;
    let threads = rayon::current_num_threads();
    let known: Option<Machine> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
    if let Some(m) = known.filter(|m| m.threads == threads && m.rates.matmul > 0.0) {
        return Ok((m.rates, false));
    }
    let rates = Rates::measure();
    let m = Machine { threads, rates };
    crate::store::atomic::write(&path, serde_json::to_string_pretty(&m)?.as_bytes())?;
    Ok((rates, true))
}

impl Session {
    /// The estimated cost of every node of the plan; a stage split into parts is costed on its
    /// parts (each an equal share), its gathering node as nothing.
    pub fn costs(&self) -> Result<Costs> {
        let (rates, measured_now) = machine_rates(&self.store.dirs)?;
        let v = &self.v;
        let counted = |dataset: &str, model: &str| -> Option<(usize, usize)> {
            let ix = v.plan.find(&format!("{dataset}@{model}"))?;
            let fp = self.fps.nodes.get(&ix)?.as_ref().ok()?;
            match self.store.lookup(fp) {
                crate::store::Lookup::Hit(_) => crate::data::Tokenized::shape(&self.store.dirs.entry(fp).ok()?).ok(),
                _ => None,
            }
        };
        let base_dir = v.exp.base_dir();
        let cx = CostCx {
            configs: &v.configs,
            stages: &v.exp.stages,
            datasets: &v.exp.datasets,
            base_dir: &base_dir,
            counted: &counted,
        };
        let mut nodes = Vec::new();
        for &ix in &v.plan.order {
            let (cost, counted_tokens) = match &v.plan.graph[ix].kind {
                NodeKind::Stage(name) | NodeKind::Part { stage: name, .. } => {
                    let spec = &v.exp.stages[name].value;
                    let parts = spec.stage().parts(v.exp.meta.seed).len();
                    let whole = spec.stage().cost(&cx);
                    let is_part = matches!(v.plan.graph[ix].kind, NodeKind::Part { .. });
                    let cost = match (parts, is_part) {
                        (0, _) => whole,
                        (n, true) => whole.part(n),
                        (_, false) => Cost { shardable: whole.shardable, ..Cost::default() },
                    };
                    (cost, datasets_counted(spec, &cx))
                }
                _ => (Cost::default(), false),
            };
            nodes.push(NodeCost { ix, cost, seconds: cost.seconds(&rates), counted: counted_tokens });
        }
        Ok(Costs { nodes, rates, measured_now })
    }
}

/// Whether every dataset a stage reads has a cached tokenization (its tokens were counted).
fn datasets_counted(spec: &crate::stages::StageSpec, cx: &CostCx) -> bool {
    spec.stage().deps().iter().all(|d| match d {
        crate::stages::Dep::Tokens { dataset, model } => cx.rows(dataset, model).counted,
        _ => true,
    })
}
