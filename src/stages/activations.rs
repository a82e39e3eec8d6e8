//! `activations` stage: streaming per-neuron statistics of chosen hooks over a dataset (moments,
//! activation frequency, histogram, top/bottom-k examples, per-token mean and max, and on labelled
//! datasets how mixed the labels of each neuron's top examples are), in f64 and with memory
//! independent of the number of tokens.

use super::{Dep, Stage};
use crate::exec::RunCx;
use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::{ModelConfig, Request, Start};
use crate::spec::validate::{select_hook, select_hooks};
use crate::spec::{CheckCx, DatasetRef, Diagnostic, ModelRef, Sp};
use crate::stats::labels::LabelMix;
use crate::stats::{Histogram, NeuronStats, Position, TokenStats};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Histogram edges `linspace(start, stop, edges)`; values beyond fall in two open end bins.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistogramSpec {
    pub start: f32,
    pub stop: f32,
    pub edges: usize,
}

impl Default for HistogramSpec {
    /// The Universal Neurons study's edges: linspace(-10, 15, 256).
    fn default() -> Self {
        HistogramSpec { start: -10.0, stop: 15.0, edges: 256 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// Hooks to summarise. Layer-less names (`mlp.hook_post`, `post`) select every layer.
    #[serde(default = "default_hooks")]
    pub hooks: Vec<Sp<String>>,
    #[serde(default)]
    pub histogram: HistogramSpec,
    /// Largest activations kept per neuron, with their token index.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Smallest activations kept per neuron.
    #[serde(default = "default_bottom_k")]
    pub bottom_k: usize,
    /// Per-token-id mean and max of the `mlp.hook_post` hooks (memory: neurons × vocabulary).
    #[serde(default = "yes")]
    pub token_stats: bool,
    /// Tokens listed per neuron (by mean and by max activation).
    #[serde(default = "default_token_k")]
    pub token_top_k: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_hooks() -> Vec<Sp<String>> {
    vec![Sp::new("mlp.hook_pre".into()), Sp::new("mlp.hook_post".into())]
}
fn default_top_k() -> usize {
    50
}
fn default_bottom_k() -> usize {
    10
}
fn default_token_k() -> usize {
    20
}
fn default_batch() -> usize {
    8
}
fn yes() -> bool {
    true
}

/// Per-token statistics above this many bytes are refused (turn them off or pick fewer hooks).
const TOKEN_STATS_LIMIT: usize = 4 << 30;

/// Check hook selectors against a model, reporting hooks over pairs of positions as something
/// `stage_reads` (e.g. "activations summarises") per-position hooks only; the hook points, when
/// the model's configuration is known.
pub(crate) fn check_per_position(
    cx: &CheckCx,
    model: &ModelRef,
    hooks: &[Sp<String>],
    stage_reads: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<HookPoint>> {
    let cfg = cx.config(model)?;
    for h in hooks {
        if select_hook(cfg, h).is_ok_and(|points| points.iter().any(|p| width(cfg, *p).is_none())) {
            out.push(Diagnostic::at(
                h.span.clone(),
                format!("'{}' is per pair of positions; {stage_reads} per-position hooks", h.value),
            ));
        }
    }
    cx.hooks(model, hooks, out)
}

/// Width of a hook's per-position vector (hooks over position pairs are not per-neuron data).
pub(crate) fn width(cfg: &ModelConfig, h: HookPoint) -> Option<usize> {
    let shape = h.shape(cfg, 1, 1);
    match h.site() {
        Some(BlockSite::AttnScores | BlockSite::Pattern) => None,
        _ => Some(shape[2..].iter().product()),
    }
}

impl Spec {
    fn token_hooks(&self, hooks: &[HookPoint]) -> usize {
        if self.token_stats {
            hooks.iter().filter(|h| h.site() == Some(BlockSite::Post)).count()
        } else {
            0
        }
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn tables(&self) -> Vec<&'static str> {
        vec!["stats", "examples", "tokens"]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        if self.histogram.edges < 2 || self.histogram.stop <= self.histogram.start {
            out.push(cx.error("histogram", "activations: histogram needs stop > start and at least 2 edges"));
        }
        if self.hooks.is_empty() {
            out.push(cx.error("hooks", "activations: list at least one hook (e.g. \"mlp.hook_post\")"));
        }
        if let Some(positions) = cx.positions(&self.dataset) {
            let positions = usize::try_from(positions).unwrap_or(usize::MAX);
            cx.at_most("top_k", self.top_k, positions, "the dataset's positions", out);
            cx.at_most("bottom_k", self.bottom_k, positions, "the dataset's positions", out);
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        if let Some(points) = check_per_position(cx, &self.model, &self.hooks, "activations summarises", out) {
            let bytes: f64 = points
                .iter()
                .map(|&h| {
                    let vocab = (self.token_stats && h.site() == Some(BlockSite::Post)).then_some(cfg.d_vocab);
                    let n = width(cfg, h).unwrap_or(0);
                    NeuronStats::bytes(n, self.histogram.edges, self.top_k, self.bottom_k, vocab)
                })
                .sum();
            cx.memory(
                bytes,
                "the statistics of these hooks",
                "lower top_k, bottom_k or histogram.edges, set token_stats = false, or list fewer hooks",
                out,
            );
            let bytes = TokenStats::bytes(self.token_hooks(&points) * cfg.d_mlp, cfg.d_vocab);
            if bytes > TOKEN_STATS_LIMIT {
                let span = self.hooks.first().map(|h| h.span.clone()).unwrap_or(0..0);
                out.push(
                    Diagnostic::at(
                        span,
                        format!("per-token statistics of these hooks need {:.1} GB", bytes as f64 / 1e9),
                    )
                    .help(
                        "set token_stats = false, or list fewer mlp.hook_post layers (e.g. \"blocks.5.mlp.hook_post\")",
                    ),
                );
            }
        }
    }

    fn run(&self, cx: &mut RunCx) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let cfg = &model.cfg;
        let hooks = select_hooks(cfg, &self.hooks)?;
        let edges = Histogram::linspace(self.histogram.start, self.histogram.stop, self.histogram.edges);
        let mut stats: BTreeMap<HookPoint, NeuronStats> = hooks
            .iter()
            .map(|&h| {
                let vocab = (self.token_stats && h.site() == Some(BlockSite::Post)).then_some(cfg.d_vocab);
                let n = width(cfg, h).unwrap_or(0);
                let positions = data.rows * data.ctx;
                (h, NeuronStats::new(n, &edges, self.top_k.min(positions), self.bottom_k.min(positions), vocab))
            })
            .collect();
        let (rows, ctx) = (data.rows, data.ctx);
        let mut progress = cx.progress((rows * ctx) as u64, "tok");
        for start in (0..rows).step_by(self.batch_size) {
            let b = self.batch_size.min(rows - start);
            let ids = &data.tokens[start * ctx..(start + b) * ctx];
            let tokens = Tensor::from_slice(ids, (b, ctx), &Device::Cpu)?.to_device(&model.device)?;
            let positions: Vec<Position> = (0..b * ctx)
                .filter(|&i| data.valid[start * ctx + i] != 0)
                .map(|i| Position { row: i, index: (start * ctx + i) as u64, token: ids[i] })
                .collect();
            let req = Request::capture(hooks.iter().copied());
            model.forward(Start::Tokens(&tokens), &req, &mut |h, t| {
                let s = stats.get_mut(&h).expect("captured hook has reducers");
                let t = t.to_device(&Device::Cpu)?;
                crate::model::forward::with_f32(&t, |x| s.add(x, &positions))
            })?;
            cx.tick(&mut progress, (b * ctx) as u64)?;
        }
        self.write(cx, &stats, &data, &model)
    }
}

impl Spec {
    fn write(
        &self,
        cx: &RunCx,
        stats: &BTreeMap<HookPoint, NeuronStats>,
        data: &crate::data::Tokenized,
        model: &crate::model::Model,
    ) -> Result<()> {
        if stats.values().all(|s| s.count() == 0) {
            bail!("no valid positions in the dataset: every position is masked");
        }
        let tok = model.tokenizer.as_ref();
        let token_str = |t: u32| tok.map(|k| k.token_str(t)).unwrap_or_else(|| t.to_string());
        let mut summary = Columns::default();
        let mut examples = Columns::default();
        let mut tokens = Columns::default();
        let mut hist = std::collections::HashMap::new();
        let label_of = |index: u64| data.label_at(index as usize);
        // Label mixes only mean something when the dataset has several labels.
        let labelled = data.doc_labels.iter().collect::<std::collections::BTreeSet<_>>().len() > 1;
        for (h, s) in stats {
            let site = h.site().map(|s| s.tl_suffix()).unwrap_or("?");
            let layer = h.layer().unwrap_or(0) as u32;
            let mut counts = Vec::with_capacity(s.n * (s.edges.len() + 1));
            for i in 0..s.n {
                let m = s.summary(i);
                summary.key(site, layer, i as u32);
                summary.ints(&[("count", s.count() as i64)]);
                summary.f64s(&[
                    ("mean", m.mean),
                    ("var", m.var),
                    ("skew", m.skew),
                    ("kurt", m.kurt),
                    ("freq", m.freq),
                    ("min", m.min as f64),
                    ("max", m.max as f64),
                ]);
                if labelled {
                    let mix = LabelMix::of(s.top(i).iter().map(|&(_, index)| label_of(index)));
                    let (top, share, entropy, distinct) =
                        mix.map(|m| (m.top, m.top_share, m.entropy, m.distinct)).unwrap_or_default();
                    summary.strs(&[("top_label", top)]);
                    summary.f64s(&[("top_label_share", share), ("label_entropy", entropy)]);
                    summary.ints(&[("labels", distinct as i64)]);
                }
                for (which, list) in [("top", s.top(i)), ("bottom", s.bottom(i))] {
                    for (rank, (value, index)) in list.into_iter().enumerate() {
                        examples.key(site, layer, i as u32);
                        examples.strs(&[("which", which.to_string())]);
                        let (row, pos) = (index as usize / data.ctx, index as usize % data.ctx);
                        let t = data.tokens[index as usize];
                        examples.ints(&[
                            ("rank", rank as i64),
                            ("index", index as i64),
                            ("row", row as i64),
                            ("position", pos as i64),
                            ("token", t as i64),
                        ]);
                        examples.f64s(&[("value", value as f64)]);
                        examples.strs(&[("token_str", token_str(t)), ("label", label_of(index).to_string())]);
                    }
                }
                for by_max in [false, true] {
                    for (rank, (t, value, count)) in
                        s.top_tokens(i, self.token_top_k, by_max).unwrap_or_default().into_iter().enumerate()
                    {
                        tokens.key(site, layer, i as u32);
                        tokens.strs(&[
                            ("by", if by_max { "max" } else { "mean" }.to_string()),
                            ("token_str", token_str(t)),
                        ]);
                        tokens.ints(&[("rank", rank as i64), ("token", t as i64), ("count", count as i64)]);
                        tokens.f64s(&[("value", value as f64)]);
                    }
                }
                counts.extend_from_slice(s.histogram(i));
            }
            hist.insert(h.to_string(), Tensor::from_vec(counts, (s.n, s.edges.len() + 1), &Device::Cpu)?);
        }
        let edges = stats.values().next().map(|s| s.edges.clone()).unwrap_or_default();
        hist.insert("edges".into(), Tensor::from_vec(edges.clone(), edges.len(), &Device::Cpu)?);
        cx.write_table("stats", &mut summary.frame()?, false)?;
        cx.write_table("examples", &mut examples.frame()?, false)?;
        if self.token_stats {
            cx.write_table("tokens", &mut tokens.frame()?, false)?;
        }
        candle_core::safetensors::save(&hist, cx.out().join("histograms.safetensors"))?;
        Ok(())
    }
}

/// Column-wise builder of a long table keyed by (hook, layer, neuron).
#[derive(Default)]
pub struct Columns {
    hook: Vec<String>,
    layer: Vec<u32>,
    neuron: Vec<u32>,
    cols: Vec<(&'static str, Col)>,
}

enum Col {
    F(Vec<f64>),
    I(Vec<i64>),
    S(Vec<String>),
}

impl Columns {
    pub fn key(&mut self, hook: &str, layer: u32, neuron: u32) {
        self.hook.push(hook.to_string());
        self.layer.push(layer);
        self.neuron.push(neuron);
    }
    fn col(&mut self, k: &'static str, empty: impl FnOnce() -> Col) -> &mut Col {
        let i = match self.cols.iter().position(|c| c.0 == k) {
            Some(i) => i,
            None => {
                self.cols.push((k, empty()));
                self.cols.len() - 1
            }
        };
        &mut self.cols[i].1
    }
    pub fn f64s(&mut self, vals: &[(&'static str, f64)]) {
        for (k, v) in vals {
            if let Col::F(c) = self.col(k, || Col::F(vec![])) {
                c.push(*v);
            }
        }
    }
    pub fn ints(&mut self, vals: &[(&'static str, i64)]) {
        for (k, v) in vals {
            if let Col::I(c) = self.col(k, || Col::I(vec![])) {
                c.push(*v);
            }
        }
    }
    pub fn strs(&mut self, vals: &[(&'static str, String)]) {
        for (k, v) in vals {
            if let Col::S(c) = self.col(k, || Col::S(vec![])) {
                c.push(v.clone());
            }
        }
    }
    pub fn frame(self) -> Result<DataFrame> {
        let mut cols = vec![
            Column::new("hook".into(), self.hook),
            Column::new("layer".into(), self.layer),
            Column::new("neuron".into(), self.neuron),
        ];
        for (k, c) in self.cols {
            cols.push(match c {
                Col::F(v) => Column::new(k.into(), v),
                Col::I(v) => Column::new(k.into(), v),
                Col::S(v) => Column::new(k.into(), v),
            });
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }
}
