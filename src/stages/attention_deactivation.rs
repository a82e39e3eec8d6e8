//! `attention_deactivation` stage (Universal Neurons §1.9): which earlier neurons switch an attention
//! head off by moving its query towards BOS. A heuristic score for every neuron of earlier layers —
//! `(ŵ_out · W_Q) · k_BOS / scale`, the change of the head's BOS attention logit per unit of
//! activation (ignoring LayerNorm scale, b_Q and the rotation of queries), against random unit
//! directions — and a path ablation of chosen neurons that removes `a_n · w_out` from the head's
//! query input only (keys and values restored), correlating the change in the head's output norm
//! and in its attention to BOS with the neuron's activation over every position of the dataset.

use super::batches::for_each_batch;
use super::{TableDecl, CheckCx, Dep, Stage, StageEnv, Cost, CostCx, Passes};
use crate::analysis::weights::{in_out, row_norms, unit_rows};
use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::{Action, Intervention, Model, Request, Start};
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::store::table::Table;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// The attention head `[layer, head]`.
    pub head: Sp<[usize; 2]>,
    /// The MLP layer whose neurons are path-ablated (default: the layer before the head's).
    #[serde(default)]
    pub mlp_layer: Option<usize>,
    /// Neurons of `mlp_layer` to ablate; default: the `top` by |score|.
    #[serde(default)]
    pub neurons: Option<Vec<usize>>,
    #[serde(default = "default_top")]
    pub top: usize,
    /// The neuron's contribution is removed at positions ≥ this (the study: 64).
    #[serde(default = "default_after")]
    pub after_position: usize,
    /// Random unit directions scored as the heuristic's baseline.
    #[serde(default = "default_random")]
    pub random_directions: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_top() -> usize {
    5
}
fn default_after() -> usize {
    64
}
fn default_random() -> usize {
    1000
}
fn default_batch() -> usize {
    8
}

/// The head's key of the prompt made of BOS alone, [d_head].
fn bos_key(model: &Model, layer: usize, head: usize) -> Result<Tensor> {
    let bos = Tensor::new(&[[model.cfg.bos_token_id]], &model.device)?;
    let hook = HookPoint::Block(layer, BlockSite::K);
    let mut k = None;
    model.forward(Start::Tokens(&bos), &Request::capture([hook]), &mut |_, t| {
        k = Some(t);
        Ok(())
    })?;
    let k = k.ok_or_else(|| anyhow::anyhow!("no key captured"))?; // [1, 1, heads, d_head]
    Ok(k.get(0)?.get(0)?.get(head)?.to_dtype(DType::F32)?)
}

/// The change of the head's BOS attention logit per unit along each row of `dirs` [n, d_model]:
/// divided by the scale the model's attention applies — √d_head, and for stanford-crfm models
/// (`scale_attn_by_inverse_layer_idx`) also the head's layer + 1, a factor the study's formula
/// (√d_head only) leaves out, so their scores are the study's / (L + 1), ranks unchanged.
pub fn bos_scores(model: &Model, layer: usize, head: usize, dirs: &Tensor) -> Result<Vec<f32>> {
    let w_q = model.param(&format!("blocks.{layer}.attn.W_Q"))?.get(head)?.to_dtype(DType::F32)?; // [d, dh]
    let k = bos_key(model, layer, head)?;
    let mut scale = (model.cfg.d_head as f64).sqrt();
    if model.cfg.scale_attn_by_inverse_layer_idx {
        scale *= (layer + 1) as f64;
    }
    Ok((dirs.to_dtype(DType::F32)?.matmul(&w_q)?.matmul(&k.unsqueeze(1)?)? / scale)?.squeeze(1)?.to_vec1()?)
}

/// Pearson correlation of two samples.
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut c, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        c += (a - mx) * (b - my);
        vx += (a - mx).powi(2);
        vy += (b - my).powi(2);
    }
    c / (vx * vy).sqrt()
}

/// Ranks with ties averaged (as scipy's `rankdata`).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// Per ablated neuron, each point (row, position): activation, Δ‖z_head‖, its percentage, Δp(BOS).
#[derive(Default, Clone)]
struct Points {
    act: Vec<f64>,
    d_norm: Vec<f64>,
    d_norm_pct: Vec<f64>,
    d_bos: Vec<f64>,
}

impl Spec {
    fn mlp(&self) -> usize {
        self.mlp_layer.unwrap_or(self.head.value[0].saturating_sub(1))
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn uses_seed(&self) -> bool {
        true
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("scores").ints(["layer", "neuron"]).floats(["score", "score_raw"]).ints(["rank"]).floats(["baseline_pct"]),
            TableDecl::new("baseline").ints(["direction"]).floats(["score"]),
            TableDecl::new("ablation").ints(["layer", "neuron"]).floats(["score"]).ints(["rank"]).floats(["pearson_norm", "spearman_norm", "pearson_bos", "spearman_bos", "mean_d_norm_pct"]).ints(["points"]),
            TableDecl::new("points").texts(["neuron_name"]).floats(["activation", "d_norm", "d_norm_pct", "d_bos"]),
        ]
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // One pass to the head's layer, then that layer again for each ablated neuron.
        let layer = self.head.value[0] + 1;
        let n = self.neurons.as_ref().map_or(self.top, Vec::len);
        let pass = |count| Passes { count, layers: Some(layer), unembed: false, batch: self.batch_size, captured: 0 };
        let clean = cx.passes(&self.model, &self.dataset, pass(1.0));
        let per_layer = Passes { layers: Some(1), ..pass(n as f64) };
        clean.then(cx.passes(&self.model, &self.dataset, per_layer))
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        let [hl, hh] = self.head.value;
        let span = self.head.span.clone();
        if hl == 0 {
            out.push(Diagnostic::at(
                span.clone(),
                "the head must be in layer 1 or later: its earlier-layer neurons are scored",
            ));
        } else if self.mlp() >= hl {
            out.push(Diagnostic::at(
                span.clone(),
                format!("mlp_layer {} must be before the head's layer {hl}", self.mlp()),
            ));
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        if hl >= cfg.n_layers || hh >= cfg.n_heads {
            out.push(Diagnostic::at(
                span.clone(),
                format!(
                    "head [{hl}, {hh}] out of range: the model has {} layers of {} heads",
                    cfg.n_layers, cfg.n_heads
                ),
            ));
        }
        if let Some(bad) = self.neurons.iter().flatten().find(|&&n| n >= cfg.d_mlp) {
            out.push(Diagnostic::at(
                span.clone(),
                format!("neuron {bad} out of range: layers have {} neurons", cfg.d_mlp),
            ));
        }
        if self.after_position + 1 >= cfg.n_ctx {
            out.push(Diagnostic::at(
                span,
                format!("after_position {} leaves no positions in a context of {}", self.after_position, cfg.n_ctx),
            ));
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let [hl, hh] = self.head.value;
        if self.after_position + 1 >= data.ctx {
            bail!("after_position {} leaves no positions in rows of {} tokens", self.after_position, data.ctx);
        }
        // Heuristic scores of every neuron of layers before the head.
        let (mut sl, mut sn, mut score, mut raw) = (vec![], vec![], vec![], vec![]);
        let mut by_mlp: Vec<(usize, f32)> = Vec::new();
        for l in 0..hl {
            let w_out = in_out(&model, l)?.1.to_dtype(DType::F32)?;
            let s = bos_scores(&model, hl, hh, &unit_rows(&w_out)?)?;
            let norms: Vec<f32> = row_norms(&w_out)?.to_vec1()?;
            for (n, (&x, &nn)) in s.iter().zip(&norms).enumerate() {
                sl.push(l as u32);
                sn.push(n as u32);
                score.push(x);
                raw.push(x * nn);
                if l == self.mlp() {
                    by_mlp.push((n, x));
                }
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cx.seed() ^ 0xa77e_0b05);
        let d = model.cfg.d_model;
        let gauss: Vec<f32> = (0..self.random_directions * d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let base = if self.random_directions > 0 {
            bos_scores(
                &model,
                hl,
                hh,
                &unit_rows(
                    &Tensor::from_vec(gauss, (self.random_directions, d), &Device::Cpu)?.to_device(&model.device)?,
                )?,
            )?
        } else {
            vec![]
        };
        let mut base_abs: Vec<f32> = base.iter().map(|x| x.abs()).collect();
        base_abs.sort_by(f32::total_cmp);
        let pct: Vec<f64> = score
            .iter()
            .map(|s| base_abs.partition_point(|b| *b < s.abs()) as f64 / base_abs.len().max(1) as f64)
            .collect();
        let rank_in_layer = {
            let mut r = vec![0u32; score.len()];
            for l in 0..hl {
                let mut idx: Vec<usize> = (0..score.len()).filter(|&i| sl[i] == l as u32).collect();
                idx.sort_by(|&a, &b| score[b].abs().total_cmp(&score[a].abs()));
                for (k, i) in idx.into_iter().enumerate() {
                    r[i] = k as u32;
                }
            }
            r
        };
        let mut scores = Table::new().with("layer", sl).with("neuron", sn).with("score", score).with("score_raw", raw).with("rank", rank_in_layer).with("baseline_pct", pct).frame()?;
        cx.write_table("scores", &mut scores)?;
        let mut bdf = Table::new().with("direction", (0..base.len() as u32).collect::<Vec<_>>()).with("score", base).frame()?;
        cx.write_table("baseline", &mut bdf)?;
        // Path ablation of the chosen neurons.
        let chosen: Vec<usize> = match &self.neurons {
            Some(n) => n.clone(),
            None => {
                by_mlp.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
                by_mlp.iter().take(self.top).map(|x| x.0).collect()
            }
        };
        let points = self.ablate(cx, &model, &data, &chosen)?;
        self.write(cx, &chosen, &by_mlp, points)
    }
}

impl Spec {
    fn ablate(
        &self,
        cx: &mut dyn StageEnv,
        model: &Model,
        data: &crate::data::Tokenized,
        chosen: &[usize],
    ) -> Result<Vec<Points>> {
        let [hl, hh] = self.head.value;
        let ml = self.mlp();
        let (_, w_out) = in_out(model, ml)?;
        let w_out = w_out.to_dtype(DType::F32)?;
        let at = |s: BlockSite, l: usize| HookPoint::Block(l, s);
        let (post, resid, k, v, z, pat) = (
            at(BlockSite::Post, ml),
            at(BlockSite::ResidPre, hl),
            at(BlockSite::K, hl),
            at(BlockSite::V, hl),
            at(BlockSite::Z, hl),
            at(BlockSite::Pattern, hl),
        );
        let mut points = vec![Points::default(); chosen.len()];
        let ctx = data.ctx;
        let after = self.after_position;
        for_each_batch(cx, data, 0..data.rows, self.batch_size, &model.device, |batch| {
            let b = batch.rows;
            let (_, clean) =
                model.forward_cached(Start::Tokens(&batch.tokens), &Request::capture([post, resid, k, v, z, pat]))?;
            let (z0, p0) = head_view(&clean[&z], &clean[&pat], hh)?;
            let acts = clean[&post].to_dtype(DType::F32)?;
            let mask: Vec<f32> = (0..b * ctx).map(|i| if i % ctx >= after { 1.0 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (b, ctx, 1), &model.device)?;
            let restore = [
                Intervention::new(k, Action::Patch(clean[&k].clone())),
                Intervention::new(v, Action::Patch(clean[&v].clone())),
            ];
            for (c, &n) in chosen.iter().enumerate() {
                let a = acts.narrow(2, n, 1)?; // [b, pos, 1]
                let removed = a.broadcast_mul(&mask)?.broadcast_mul(&w_out.narrow(0, n, 1)?.unsqueeze(0)?)?;
                let patched = (clean[&resid].to_dtype(DType::F32)? - removed)?.to_dtype(clean[&resid].dtype())?;
                // No logits: the pass stops after the head's layer.
                let (_, out) = model.forward_cached(
                    Start::Resid { layer: hl, resid: patched },
                    &Request::capture([z, pat]).with_interventions(&restore),
                )?;
                let (z1, p1) = head_view(&out[&z], &out[&pat], hh)?;
                let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
                let p = &mut points[c];
                for i in 0..b * ctx {
                    if i % ctx < after || batch.valid[i] == 0 {
                        continue;
                    }
                    p.act.push(a[i] as f64);
                    p.d_norm.push((z1[i] - z0[i]) as f64);
                    p.d_norm_pct.push(100.0 * (z1[i] - z0[i]) as f64 / z0[i].max(1e-12) as f64);
                    p.d_bos.push((p1[i] - p0[i]) as f64);
                }
            }
            Ok(())
        })?;
        Ok(points)
    }

    fn write(&self, cx: &dyn StageEnv, chosen: &[usize], by_mlp: &[(usize, f32)], points: Vec<Points>) -> Result<()> {
        let score_of = |n: usize| by_mlp.iter().find(|x| x.0 == n).map(|x| x.1).unwrap_or(f32::NAN);
        let rank_of = |n: usize| by_mlp.iter().position(|x| x.0 == n).map(|r| r as u32);
        let corr =
            |p: &Points, y: &[f64], f: fn(&[f64], &[f64]) -> f64| if p.act.len() > 1 { f(&p.act, y) } else { f64::NAN };
        let mut abl = Table::new().with("layer", vec![self.mlp() as u32; chosen.len()]).with("neuron", chosen.iter().map(|&n| n as u32).collect::<Vec<_>>()).with("score", chosen.iter().map(|&n| score_of(n)).collect::<Vec<_>>()).with("rank", chosen.iter().map(|&n| rank_of(n)).collect::<Vec<_>>()).with("pearson_norm", points.iter().map(|p| corr(p, &p.d_norm, pearson)).collect::<Vec<_>>()).with("spearman_norm", points.iter().map(|p| corr(p, &p.d_norm, spearman)).collect::<Vec<_>>()).with("pearson_bos", points.iter().map(|p| corr(p, &p.d_bos, pearson)).collect::<Vec<_>>()).with("spearman_bos", points.iter().map(|p| corr(p, &p.d_bos, spearman)).collect::<Vec<_>>()).with("mean_d_norm_pct", points.iter().map(|p| p.d_norm_pct.iter().sum::<f64>() / p.act.len().max(1) as f64).collect::<Vec<_>>()).with("points", points.iter().map(|p| p.act.len() as u64).collect::<Vec<_>>()).frame()?;
        cx.write_table("ablation", &mut abl)?;
        let name = |n: usize| format!("L{}.{n}", self.mlp());
        let mut pts = Table::new().with("neuron_name", chosen
                    .iter()
                    .zip(&points)
                    .flat_map(|(&n, p)| std::iter::repeat_n(name(n), p.act.len()))
                    .collect::<Vec<_>>()).with("activation", points.iter().flat_map(|p| p.act.clone()).collect::<Vec<_>>()).with("d_norm", points.iter().flat_map(|p| p.d_norm.clone()).collect::<Vec<_>>()).with("d_norm_pct", points.iter().flat_map(|p| p.d_norm_pct.clone()).collect::<Vec<_>>()).with("d_bos", points.iter().flat_map(|p| p.d_bos.clone()).collect::<Vec<_>>()).frame()?;
        cx.write_table("points", &mut pts)
    }
}

/// Per position of the batch (row-major): ‖z‖ of head `h` and its attention to position 0.
fn head_view(z: &Tensor, pattern: &Tensor, h: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let norm: Vec<f32> =
        z.to_dtype(DType::F32)?.narrow(2, h, 1)?.sqr()?.sum(D::Minus1)?.sqrt()?.flatten_all()?.to_vec1()?;
    let bos: Vec<f32> = pattern.to_dtype(DType::F32)?.narrow(1, h, 1)?.narrow(3, 0, 1)?.flatten_all()?.to_vec1()?;
    Ok((norm, bos))
}
