//! `entropy` stage (Universal Neurons §1.8): a neuron's post-activation fixed to each of a list of
//! values at every position; per token the next-token loss, the entropy of the prediction (nats),
//! the rank of the true next token and `ln_final.hook_scale`, averaged over valid tokens (summed
//! exactly, so shards merge bit for bit), beside the unintervened run and a random baseline of
//! neurons drawn by the study's rule.

use super::batches::for_each_batch;
use super::shards::{self, Partial, Sharded};
use super::{TableDecl, CheckCx, Dep, Part, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::weights::{in_out, unit_rows, vocab_cosines};
use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::outputs::{token_stats, Wanted};
use crate::model::{Model, Request, Start};
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp, StageRef};
use crate::stages::prediction_neurons::percentile;
use crate::stats::exact::{self, Exact};
use crate::store::arrays::{Arrays, ArraysFile};
use crate::store::table::Table;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

/// The study's baseline: `n` random neurons of the last `last_layers` layers whose weight-decay
/// penalty is at most its `max_l2_pct` quantile and whose vocab_var is at least its
/// `min_vocab_var_pct` quantile (quantiles over those layers' neurons).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// The `weights` stage of the model (l2_penalty and vocab_var).
    pub weights: StageRef,
    #[serde(default = "default_n")]
    pub n: usize,
    #[serde(default = "default_last")]
    pub last_layers: usize,
    #[serde(default = "default_max_l2")]
    pub max_l2_pct: f64,
    #[serde(default = "default_min_var")]
    pub min_vocab_var_pct: f64,
}

/// Entropy-neuron candidates as the study looks for them: in the last layer, among the neurons
/// with a large weight-decay penalty (at least its `min_l2_pct` quantile), the `n` with the
/// smallest vocab_var (an output direction the unembedding barely reads).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// The `weights` stage of the model.
    pub weights: StageRef,
    #[serde(default = "default_candidates")]
    pub n: usize,
    #[serde(default = "default_min_l2")]
    pub min_l2_pct: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// Neurons `[layer, neuron]` of `mlp.hook_post` to fix …
    #[serde(default)]
    pub neurons: Sp<Vec<[usize; 2]>>,
    /// … and / or candidates chosen from the weights.
    #[serde(default)]
    pub candidates: Option<CandidateSpec>,
    /// Values the post-activation is fixed to (the study: GELU's minimum ≈ −0.17, then 0 … 6).
    #[serde(default = "default_values")]
    pub values: Vec<f32>,
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Split the dataset into this many shards, each its own plan node (`--shard i/n`).
    #[serde(default = "shards::one", skip_serializing_if = "shards::is_one")]
    pub shards: usize,
}

fn default_n() -> usize {
    20
}
fn default_last() -> usize {
    2
}
fn default_max_l2() -> f64 {
    0.9
}
fn default_min_var() -> f64 {
    0.1
}
fn default_candidates() -> usize {
    2
}
fn default_min_l2() -> f64 {
    0.9
}
fn default_values() -> Vec<f32> {
    vec![-0.17, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
}
fn default_batch() -> usize {
    8
}

/// Sums of the per-token metrics of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    /// loss, entropy, rank, reciprocal rank, ln_final scale
    pub sums: [Exact; 5],
    pub tokens: u64,
}

impl Metrics {
    fn mean(&self) -> [f64; 5] {
        let n = self.tokens.max(1) as f64;
        self.sums.map(|s| s.get() / n)
    }

    fn merge(&mut self, o: &Metrics) {
        self.sums.iter_mut().zip(&o.sums).for_each(|(a, b)| a.merge(b));
        self.tokens += o.tokens;
    }
}

/// The metrics of the unintervened run and of every (neuron, value) run over some rows.
pub struct Runs {
    clean: Metrics,
    /// [neuron][value]
    runs: Vec<Vec<Metrics>>,
}

impl Runs {
    /// Every run, the clean one first.
    fn all(&self) -> impl Iterator<Item = &Metrics> {
        std::iter::once(&self.clean).chain(self.runs.iter().flatten())
    }
}

impl Partial for Runs {
    fn save(&self, out: &mut Arrays) {
        let sums: Vec<Exact> = self.all().flat_map(|m| m.sums).collect();
        exact::put(out, "sums", &sums);
        out.put("tokens", &self.all().map(|m| m.tokens).collect::<Vec<u64>>())
            .put("shape", &[self.runs.len() as u64, self.runs.first().map_or(0, |r| r.len()) as u64]);
    }

    fn load(f: &ArraysFile) -> Result<Runs> {
        let (sums, tokens, shape) = (exact::get(f, "sums")?, f.get::<u64>("tokens")?, f.get::<u64>("shape")?);
        let (neurons, values) = (shape[0] as usize, shape[1] as usize);
        shards::same_len("runs", tokens.len(), 1 + neurons * values)?;
        shards::same_len("sums", sums.len(), 5 * tokens.len())?;
        let mut all = sums
            .chunks_exact(5)
            .zip(tokens)
            .map(|(s, tokens)| Metrics { sums: std::array::from_fn(|i| s[i]), tokens });
        let clean = all.next().expect("one run");
        let runs = (0..neurons).map(|_| all.by_ref().take(values).collect()).collect();
        Ok(Runs { clean, runs })
    }

    fn merge(&mut self, o: Runs) -> Result<()> {
        shards::same_len("neurons", self.runs.len(), o.runs.len())?;
        self.clean.merge(&o.clean);
        for (a, b) in self.runs.iter_mut().flatten().zip(o.runs.iter().flatten()) {
            a.merge(b);
        }
        Ok(())
    }
}

const METRICS: [&str; 5] = ["loss", "entropy", "rank", "reciprocal_rank", "ln_scale"];

/// Add the metrics of the positions `keep[r][t]` of one run (logits [b, pos, vocab], scale [b, pos, 1]).
fn accumulate(m: &mut Metrics, logits: &Tensor, scale: &Tensor, tokens: &Tensor, keep: &[bool]) -> Result<()> {
    let s = token_stats(logits, tokens, Wanted::ALL)?;
    let scale: Vec<f32> = scale.flatten_all()?.to_vec1()?;
    let pos = s.pos + 1;
    for r in 0..s.batch {
        for t in 0..s.pos {
            if !keep[r * pos + t] {
                continue;
            }
            let i = r * s.pos + t;
            let values = [
                s.loss[i] as f64,
                s.entropy[i] as f64,
                s.rank[i] as f64,
                1.0 / (s.rank[i] as f64 + 1.0),
                scale[r * pos + t] as f64,
            ];
            m.sums.iter_mut().zip(values).for_each(|(acc, x)| acc.add(x));
            m.tokens += 1;
        }
    }
    Ok(())
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }];
        d.extend(self.baseline.as_ref().map(|b| Dep::Stage(&b.weights)));
        d.extend(self.candidates.as_ref().map(|c| Dep::Stage(&c.weights)));
        d
    }

    fn uses_seed(&self) -> bool {
        self.baseline.is_some()
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("entropy").texts(["neuron_name"]).ints(["layer", "neuron"]).texts(["kind"]).floats(["value", "loss", "entropy", "rank", "reciprocal_rank", "ln_scale"]).ints(["tokens"]),
            TableDecl::new("summary").texts(["series"]).floats(["value", "loss", "entropy", "rank", "reciprocal_rank", "ln_scale"]),
            TableDecl::new("vocab_cos").texts(["neuron_name"]).floats(["cos"]),
        ]
    }

    fn parts(&self, _experiment_seed: u64) -> Vec<Part> {
        shards::parts(self.shards)
    }

    fn run_part(&self, cx: &mut dyn StageEnv, part: Part) -> Result<()> {
        shards::run_part(self, cx, part)
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // A clean pass, then for each neuron and value the blocks after the neuron's layer and the
        // logits (baseline neurons come from the last `last_layers` layers).
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let clean = cx.passes(&self.model, &self.dataset, Passes::logits(1.0, self.batch_size));
        let values = self.values.len() as f64;
        let mut layers: Vec<usize> = self.neurons.value.iter().map(|n| n[0]).collect();
        layers.extend(std::iter::repeat_n(cfg.n_layers.saturating_sub(1), self.candidates.as_ref().map_or(0, |c| c.n)));
        if let Some(b) = &self.baseline {
            let last = b.last_layers.clamp(1, cfg.n_layers) as f64;
            layers.extend(std::iter::repeat_n(cfg.n_layers - ((last + 1.0) / 2.0) as usize, b.n));
        }
        let mut cost = clean;
        for l in layers {
            let rest = Passes { count: values, layers: Some(cfg.n_layers.saturating_sub(l + 1)), ..Passes::logits(1.0, self.batch_size) };
            cost = cost.then(cx.passes(&self.model, &self.dataset, rest));
        }
        cost.shardable()
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        shards::check(cx, self.shards, out);
        if self.values.is_empty() {
            out.push(cx.error("values", "entropy needs at least one value"));
        }
        if self.neurons.value.is_empty() && self.candidates.is_none() {
            out.push(Diagnostic::at(
                self.model.span(),
                "entropy needs `neurons = [[layer, neuron], …]` or `candidates = { weights = \"…\" }`",
            ));
        }
        let refs = self
            .baseline
            .iter()
            .map(|b| ("baseline", &b.weights))
            .chain(self.candidates.iter().map(|c| ("candidates", &c.weights)));
        for (field, w) in refs {
            let expected = format!("{field}.weights reads a weights stage");
            if let Some(ws) = cx.stage::<super::weights::Spec>(w, &expected, out) {
                if ws.model.name() != self.model.name() {
                    out.push(Diagnostic::at(
                        w.span(),
                        format!("{field}.weights describes model '{}', not '{}'", ws.model.name(), self.model.name()),
                    ));
                }
            }
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        for [l, n] in &self.neurons.value {
            if *l >= cfg.n_layers || *n >= cfg.d_mlp {
                out.push(Diagnostic::at(
                    self.neurons.span.clone(),
                    format!(
                        "neuron [{l}, {n}] out of range: the model has {} layers of {} neurons",
                        cfg.n_layers, cfg.d_mlp
                    ),
                ));
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        shards::run(self, cx)
    }
}

impl Spec {
    /// The studied neurons (listed, then candidates) and the drawn baseline, each with its kind.
    fn all_neurons(&self, cx: &dyn StageEnv) -> Result<Vec<([usize; 2], &'static str)>> {
        let mut studied = self.neurons.value.clone();
        if let Some(c) = &self.candidates {
            for n in candidates(&cx.input(&c.weights)?.join("weights.parquet"), c)? {
                if !studied.contains(&n) {
                    studied.push(n);
                }
            }
        }
        let baseline = match &self.baseline {
            Some(b) => draw_baseline(&cx.input(&b.weights)?.join("weights.parquet"), b, &studied, cx.seed())?,
            None => vec![],
        };
        Ok(studied.iter().map(|n| (*n, "studied")).chain(baseline.iter().map(|n| (*n, "baseline"))).collect())
    }
}

impl Sharded for Spec {
    type State = Runs;

    fn shards(&self) -> usize {
        self.shards
    }

    fn compute(&self, cx: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<Runs> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let all = self.all_neurons(cx)?;
        let (bos, eos) = (model.cfg.bos_token_id, model.cfg.eos_token_id);
        let neurons: Vec<[usize; 2]> = all.iter().map(|a| a.0).collect();
        let mut clean = Metrics::default();
        let mut runs = vec![vec![Metrics::default(); self.values.len()]; all.len()];
        let rows = shards::rows(data.rows, self.batch_size, shard);
        for_each_batch(cx, &data, rows, self.batch_size, &model.device, |batch| {
            // A position counts when it and the next are valid and it is not BOS / EOS.
            let keep: Vec<bool> =
                (0..batch.len()).map(|i| batch.target_counts(i) && batch.ids[i] != bos && batch.ids[i] != eos).collect();
            add_batch(&model, &batch.tokens, &keep, &neurons, &self.values, &mut clean, &mut runs)
        })?;
        Ok(Runs { clean, runs })
    }

    fn finish(&self, cx: &mut dyn StageEnv, runs: Runs) -> Result<()> {
        if runs.clean.tokens == 0 {
            bail!("no valid tokens to average over");
        }
        let model = cx.model(&self.model)?;
        self.write(cx, &model, &self.all_neurons(cx)?, &runs.clean, &runs.runs)
    }
}

/// One batch's clean pass and, per neuron of `neurons` and value of `values`, the pass with the
/// neuron's post-activation fixed to the value at every position, each added to its metrics
/// (`runs[neuron][value]`) at the positions `keep`.
pub fn add_batch(
    model: &Model,
    tokens: &Tensor,
    keep: &[bool],
    neurons: &[[usize; 2]],
    values: &[f32],
    clean: &mut Metrics,
    runs: &mut [Vec<Metrics>],
) -> Result<()> {
    let mut layers: Vec<usize> = neurons.iter().map(|n| n[0]).collect();
    layers.sort();
    layers.dedup();
    let hooks =
        layers.iter().flat_map(|&l| [HookPoint::Block(l, BlockSite::ResidPost), HookPoint::Block(l, BlockSite::Post)]).collect();
    let (logits, mut cache) = run(model, Start::Tokens(tokens), hooks)?;
    let scale = cache.remove(&HookPoint::LnFinalScale).context("no ln_final scale")?;
    accumulate(clean, &logits, &scale, tokens, keep)?;
    for (k, [l, n]) in neurons.iter().enumerate() {
        // Fixing the post-activation to c changes only the layer's MLP output, by
        // (c − a)·w_out: the pass resumes from the clean residual leaving the layer plus that.
        let resid = &cache[&HookPoint::Block(*l, BlockSite::ResidPost)];
        let a = cache[&HookPoint::Block(*l, BlockSite::Post)].narrow(2, *n, 1)?.to_dtype(resid.dtype())?;
        let w_out = in_out(model, *l)?.1.narrow(0, *n, 1)?.unsqueeze(0)?.to_dtype(resid.dtype())?;
        for (v, &value) in values.iter().enumerate() {
            let shifted = (resid + a.affine(-1.0, value as f64)?.broadcast_mul(&w_out)?)?;
            let (logits, mut c) = run(model, Start::Resid { layer: l + 1, resid: shifted }, vec![])?;
            let scale = c.remove(&HookPoint::LnFinalScale).context("no ln_final scale")?;
            accumulate(&mut runs[k][v], &logits, &scale, tokens, keep)?;
        }
    }
    Ok(())
}

/// One forward pass capturing `hooks` and `ln_final.hook_scale`: (logits, captures).
fn run(model: &Model, start: Start, mut hooks: Vec<HookPoint>) -> Result<(Tensor, BTreeMap<HookPoint, Tensor>)> {
    hooks.push(HookPoint::LnFinalScale);
    let (logits, cache) = model.forward_cached(start, &Request::capture(hooks).with_logits())?;
    Ok((logits.context("no logits")?, cache))
}

/// (layer, neuron, l2_penalty, vocab_var) of the neurons of the last `last` layers of a weights
/// table, and the quantile function of a column over them.
struct LastLayers {
    rows: Vec<([usize; 2], f64, f64)>,
}

impl LastLayers {
    fn read(weights: &std::path::Path, last: usize) -> Result<LastLayers> {
        let df = crate::store::table::read(weights)?;
        let (layer, neuron, l2, var) = (
            df.column("layer")?.u32()?,
            df.column("neuron")?.u32()?,
            df.column("l2_penalty")?.f64()?,
            df.column("vocab_var")?.f64()?,
        );
        let first = layer.max().map(|m| m + 1).unwrap_or(0).saturating_sub(last as u32);
        let rows = (0..df.height())
            .filter_map(|i| Some(([layer.get(i)? as usize, neuron.get(i)? as usize], l2.get(i)?, var.get(i)?)))
            .filter(|r| r.0[0] as u32 >= first)
            .collect();
        Ok(LastLayers { rows })
    }

    fn quantile(&self, col: fn(&([usize; 2], f64, f64)) -> f64, q: f64) -> f64 {
        let mut v: Vec<f64> = self.rows.iter().map(col).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 100.0 * q)
    }
}

/// Entropy-neuron candidates: see [`CandidateSpec`].
fn candidates(weights: &std::path::Path, c: &CandidateSpec) -> Result<Vec<[usize; 2]>> {
    let t = LastLayers::read(weights, 1)?;
    let min_l2 = t.quantile(|r| r.1, c.min_l2_pct);
    let mut pool: Vec<&([usize; 2], f64, f64)> = t.rows.iter().filter(|r| r.1 >= min_l2).collect();
    pool.sort_by(|a, b| a.2.total_cmp(&b.2));
    Ok(pool.into_iter().take(c.n).map(|r| r.0).collect())
}

/// The study's random baseline neurons, excluding the studied ones, seeded.
fn draw_baseline(
    weights: &std::path::Path,
    b: &BaselineSpec,
    studied: &[[usize; 2]],
    seed: u64,
) -> Result<Vec<[usize; 2]>> {
    let t = LastLayers::read(weights, b.last_layers)?;
    let (max_l2, min_var) = (t.quantile(|r| r.1, b.max_l2_pct), t.quantile(|r| r.2, b.min_vocab_var_pct));
    let mut pool: Vec<[usize; 2]> =
        t.rows.iter().filter(|r| r.1 <= max_l2 && r.2 >= min_var && !studied.contains(&r.0)).map(|r| r.0).collect();
    pool.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xe7_0b));
    pool.truncate(b.n);
    pool.sort();
    Ok(pool)
}

impl Spec {
    fn write(
        &self,
        cx: &dyn StageEnv,
        model: &Model,
        all: &[([usize; 2], &str)],
        clean: &Metrics,
        runs: &[Vec<Metrics>],
    ) -> Result<()> {
        let name = |n: &[usize; 2]| format!("L{}.{}", n[0], n[1]);
        let mut rows: Vec<(String, u32, u32, String, f32, [f64; 5], u64)> = Vec::new();
        for (k, (n, kind)) in all.iter().enumerate() {
            for (v, &value) in self.values.iter().enumerate() {
                rows.push((
                    name(n),
                    n[0] as u32,
                    n[1] as u32,
                    kind.to_string(),
                    value,
                    runs[k][v].mean(),
                    runs[k][v].tokens,
                ));
            }
        }
        let mut table = Table::new()
            .with("neuron_name", rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
            .with("layer", rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .with("neuron", rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .with("kind", rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
            .with("value", rows.iter().map(|r| r.4).collect::<Vec<_>>());
        for (m, metric) in METRICS.iter().enumerate() {
            table.push(metric, rows.iter().map(|r| r.5[m]).collect::<Vec<_>>());
        }
        table.push("tokens", rows.iter().map(|r| r.6).collect::<Vec<_>>());
        cx.write_table("entropy", &mut table.frame()?)?;
        // For plots: each studied neuron, the baseline mean and the unintervened run, per value.
        let n_base = all.iter().filter(|a| a.1 == "baseline").count();
        let mut series: Vec<(String, f32, [f64; 5])> = Vec::new();
        for (v, &value) in self.values.iter().enumerate() {
            for (k, (n, kind)) in all.iter().enumerate() {
                if *kind == "studied" {
                    series.push((name(n), value, runs[k][v].mean()));
                }
            }
            if n_base > 0 {
                let mut mean = [0.0; 5];
                for (k, _) in all.iter().enumerate().filter(|(_, a)| a.1 == "baseline") {
                    for (m, x) in runs[k][v].mean().iter().enumerate() {
                        mean[m] += x / n_base as f64;
                    }
                }
                series.push((format!("baseline (mean of {n_base})"), value, mean));
            }
            series.push(("unintervened".into(), value, clean.mean()));
        }
        let mut table = Table::new()
            .with("series", series.iter().map(|s| s.0.clone()).collect::<Vec<_>>())
            .with("value", series.iter().map(|s| s.1).collect::<Vec<_>>());
        for (m, metric) in METRICS.iter().enumerate() {
            table.push(metric, series.iter().map(|s| s.2[m]).collect::<Vec<_>>());
        }
        cx.write_table("summary", &mut table.frame()?)?;
        // cos(W_U, w_out) of each studied neuron over the vocabulary (an entropy neuron's is narrow).
        let w_u_unit = unit_rows(&model.weights.w_u.t()?.contiguous()?)?;
        let (mut who, mut cos) = (Vec::new(), Vec::new());
        for (n, _) in all.iter().filter(|a| a.1 == "studied") {
            let (_, w_out) = in_out(model, n[0])?;
            let c: Vec<f32> = vocab_cosines(&w_out.narrow(0, n[1], 1)?, &w_u_unit)?.flatten_all()?.to_vec1()?;
            who.extend(std::iter::repeat_n(name(n), c.len()));
            cos.extend(c);
        }
        let mut df =
            Table::new().with("neuron_name", who).with("cos", cos).frame()?;
        cx.write_table("vocab_cos", &mut df)
    }
}
