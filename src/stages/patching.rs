//! `patching` stage: activation patching from clean into corrupted prompts (a `pairs` dataset):
//! sweeps over resid_pre / attn_out / mlp_out × layer × position, over heads, and over the neurons
//! of a layer; raw metric and normalised score, with token labels for heatmaps.

use super::{TableDecl, Ranking, CheckCx, Dep, Stage, StageEnv, Cost, CostCx};
use crate::analysis::patching::{
    head_patches, layer_position_patches, neuron_patches, normalise, prompt, Metric, Patch, Prepared,
};
use crate::model::hooks::BlockSite;
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::store::table::Table;
use anyhow::{bail, Context, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

/// What is read off the last position.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// logit[answer] − logit[wrong]
    LogitDiff,
    /// probability of the answer
    Prob,
    /// cross-entropy of the answer
    Loss,
}

/// A sweep: a residual component over (layer, position), heads, or neurons.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    ResidPre,
    AttnOut,
    MlpOut,
    Heads,
    Neurons,
}

impl Sweep {
    /// The name written in experiment files and tables (`resid_pre`, …).
    pub fn name(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    /// A dataset of `pairs`.
    pub dataset: DatasetRef,
    #[serde(default = "default_metric")]
    pub metric: MetricKind,
    #[serde(default = "default_sweeps")]
    pub sweeps: Vec<Sweep>,
    /// Layer of the neuron sweep.
    #[serde(default)]
    pub neuron_layer: Option<Sp<usize>>,
    /// Neurons patched (default: all of the layer).
    #[serde(default)]
    pub neurons: Option<Sp<Vec<usize>>>,
    /// Position patched in head and neuron sweeps (default: all positions at once).
    #[serde(default)]
    pub position: Option<i64>,
    /// Patched copies per forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_metric() -> MetricKind {
    MetricKind::LogitDiff
}
fn default_sweeps() -> Vec<Sweep> {
    vec![Sweep::ResidPre, Sweep::AttnOut, Sweep::MlpOut]
}
fn default_batch() -> usize {
    32
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "neurons").then_some(Ranking::desc("score"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("positions").ints(["pair"]).texts(["sweep"]).ints(["layer", "position"]).texts(["token"]).ints(["head", "neuron"]).floats(["metric", "score"]),
            TableDecl::new("heads").ints(["pair"]).texts(["sweep"]).ints(["layer", "position"]).texts(["token"]).ints(["head", "neuron"]).floats(["metric", "score"]),
            TableDecl::new("neurons").ints(["pair"]).texts(["sweep"]).ints(["layer", "position"]).texts(["token"]).ints(["head", "neuron"]).floats(["metric", "score"]),
            TableDecl::new("summary").ints(["pair"]).floats(["metric_clean", "metric_corrupted"]),
        ]
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // Per pair: the clean and corrupted runs, then each patched run from its layer to the
        // end (half the blocks on average over a layer sweep; from `neuron_layer` for neurons),
        // the metric read at one position.
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let rows = cx.rows(&self.dataset, &self.model);
        let (pairs, n_pos, layers) = (rows.rows.div_ceil(2), rows.ctx, cfg.n_layers as f64);
        // (patched runs, blocks each runs)
        let runs = self.sweeps.iter().map(|s| match s {
            Sweep::ResidPre | Sweep::AttnOut | Sweep::MlpOut => ((cfg.n_layers * n_pos) as f64, layers / 2.0),
            Sweep::Heads => ((cfg.n_layers * cfg.n_heads) as f64, layers / 2.0),
            Sweep::Neurons => (
                self.neurons.as_ref().map_or(cfg.d_mlp, |n| n.value.len()) as f64,
                layers - self.neuron_layer.as_ref().map_or(0.0, |l| l.value as f64),
            ),
        });
        let block = crate::model::flops::forward_flops(cfg, n_pos, 1, false);
        let unembed = crate::model::flops::unembed_flops(cfg);
        let full = crate::model::flops::forward_flops(cfg, n_pos, cfg.n_layers, true) * n_pos as f64;
        let patched: f64 = runs.map(|(n, blocks)| n * (block * n_pos as f64 * blocks + unembed)).sum();
        let batch = crate::model::flops::activation_bytes(cfg, self.batch_size, n_pos, false, 0);
        Cost::new(pairs as f64 * (2.0 * full + patched), cx.weights(&self.model) + batch)
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        if let Some(ds) = cx.dataset(self.dataset.name()) {
            if ds.pairs.is_none() {
                out.push(Diagnostic::at(
                    self.dataset.span(),
                    format!("patching needs a dataset of clean/corrupted `pairs`; '{}' has none", self.dataset.name()),
                ));
            }
        }
        if self.sweeps.contains(&Sweep::Neurons) && self.neuron_layer.is_none() {
            out.push(Diagnostic::at(self.model.span(), "the neuron sweep needs `neuron_layer`"));
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        if let Some(l) = &self.neuron_layer {
            cx.layer(cfg, l, out);
        }
        if let Some(n) = &self.neurons {
            cx.indices("neuron", n, cfg.d_mlp, out);
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let pairs = data.pairs.as_ref().context("the dataset has no pairs")?;
        let tok = model.tokenizer()?;
        let cfg = &model.cfg;
        let mut pos_rows = Rows::default();
        let (mut head_rows, mut neuron_rows) = (Rows::default(), Rows::default());
        let mut summary: (Vec<u32>, Vec<f32>, Vec<f32>) = Default::default();
        for (pi, pair) in pairs.iter().enumerate() {
            let metric = match self.metric {
                MetricKind::LogitDiff => Metric::LogitDiff { answer: pair.answer, wrong: pair.wrong },
                MetricKind::Prob => Metric::Prob { answer: pair.answer },
                MetricKind::Loss => Metric::Loss { answer: pair.answer },
            };
            let n_pos = pair.clean.len();
            let position = match self.position {
                Some(p) if p < 0 => Some((n_pos as i64 + p).max(0) as usize),
                Some(p) if (p as usize) < n_pos => Some(p as usize),
                Some(p) => bail!("position {p} is beyond pair {pi}'s {n_pos} tokens"),
                None => None,
            };
            let labels: Vec<String> =
                pair.clean.iter().enumerate().map(|(i, &t)| format!("{i} '{}'", tok.token_str(t))).collect();
            let mut jobs: Vec<(Sweep, Vec<Patch>)> = Vec::new();
            for s in &self.sweeps {
                let patches = match s {
                    Sweep::ResidPre => layer_position_patches(cfg.n_layers, n_pos, BlockSite::ResidPre),
                    Sweep::AttnOut => layer_position_patches(cfg.n_layers, n_pos, BlockSite::AttnOut),
                    Sweep::MlpOut => layer_position_patches(cfg.n_layers, n_pos, BlockSite::MlpOut),
                    Sweep::Heads => head_patches(cfg.n_layers, cfg.n_heads, position),
                    Sweep::Neurons => {
                        let all: Vec<usize> = (0..cfg.d_mlp).collect();
                        let ns = self.neurons.as_ref().map(|n| n.value.clone()).unwrap_or(all);
                        neuron_patches(
                            self.neuron_layer.as_ref().map(|l| l.value).context("neuron_layer")?,
                            &ns,
                            position,
                        )
                    }
                };
                jobs.push((*s, patches));
            }
            let every: Vec<Patch> = jobs.iter().flat_map(|j| j.1.clone()).collect();
            let (clean, corrupt) = (prompt(&model, &pair.clean)?, prompt(&model, &pair.corrupted)?);
            let prep = Prepared::new(&model, &clean, &corrupt, metric, &every)?;
            summary.0.push(pi as u32);
            summary.1.push(prep.clean_metric);
            summary.2.push(prep.corrupt_metric);
            let mut progress = cx.progress(every.len() as u64, "patches");
            for (sweep, patches) in &jobs {
                let raw = prep.run_batched(patches, self.batch_size, |n| progress.tick(n as u64))?;
                let rows = match sweep {
                    Sweep::Heads => &mut head_rows,
                    Sweep::Neurons => &mut neuron_rows,
                    _ => &mut pos_rows,
                };
                for (p, m) in patches.iter().zip(raw) {
                    let label = p.position.map(|q| labels[q].clone()).unwrap_or_else(|| "all".into());
                    rows.push(pi, sweep.name(), p, label, m, normalise(m, prep.clean_metric, prep.corrupt_metric));
                }
            }
        }
        cx.write_table("positions", &mut pos_rows.frame()?)?;
        cx.write_table("heads", &mut head_rows.frame()?)?;
        cx.write_table("neurons", &mut neuron_rows.frame()?)?;
        let mut s = Table::new().with("pair", summary.0).with("metric_clean", summary.1).with("metric_corrupted", summary.2).frame()?;
        cx.write_table("summary", &mut s)
    }
}

/// Long-table rows of patching results.
#[derive(Default)]
struct Rows {
    pair: Vec<u32>,
    sweep: Vec<String>,
    layer: Vec<u32>,
    position: Vec<Option<u32>>,
    token: Vec<String>,
    head: Vec<Option<u32>>,
    neuron: Vec<Option<u32>>,
    metric: Vec<f32>,
    score: Vec<f32>,
}

impl Rows {
    fn push(&mut self, pair: usize, sweep: String, p: &Patch, token: String, metric: f32, score: f32) {
        self.pair.push(pair as u32);
        self.sweep.push(sweep);
        self.layer.push(p.layer as u32);
        self.position.push(p.position.map(|x| x as u32));
        self.token.push(token);
        self.head.push(p.head.map(|x| x as u32));
        self.neuron.push(p.index.map(|x| x as u32));
        self.metric.push(metric);
        self.score.push(score);
    }

    fn frame(self) -> Result<DataFrame> {
        Table::new().with("pair", self.pair).with("sweep", self.sweep).with("layer", self.layer).with("position", self.position).with("token", self.token).with("head", self.head).with("neuron", self.neuron).with("metric", self.metric).with("score", self.score).frame()
    }
}
