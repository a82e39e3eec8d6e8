//! `neuron_prediction` stage (the "an" study's step 4): one neuron's activation at every valid
//! position of a dataset against the model's prediction there — per activation bucket, the share
//! of positions whose top prediction is `token`; per position, the activation and the logit
//! difference `token − other`, for a scatter.

use super::batches::for_each_batch;
use super::tables::Ty;
use super::{CheckCx, Cost, CostCx, Dep, Passes, Stage, StageEnv, TableDecl};
use crate::model::hooks::HookPoint;
use crate::model::{Request, Start};
use crate::spec::{DatasetRef, Diagnostic, ModelRef, Sp};
use crate::store::table::Table;
use anyhow::{Context, Result};
use candle_core::Device;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    pub dataset: DatasetRef,
    /// The neuron's hook with its layer (`blocks.31.mlp.hook_post`) …
    pub hook: Sp<String>,
    /// … and its index.
    pub neuron: Sp<usize>,
    /// The token whose being the top prediction is counted (`" an"`) …
    pub token: String,
    /// … and the one subtracted in the logit difference (`" a"`).
    pub other: String,
    /// Activations are rounded to multiples of this (the study's 0.2).
    #[serde(default = "default_width")]
    pub bucket_width: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_width() -> f64 {
    0.2
}
fn default_batch() -> usize {
    4
}

/// Index of the largest entry (the first of ties).
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("buckets").floats(["activation"]).ints(["positions", "top_is_token"]).floats(["share"]),
            TableDecl::new("points")
                .ints(["row", "position"])
                .floats(["activation", "logit_diff"])
                .cols(Ty::Bool, ["top_is_token"])
                .texts(["top_token"]),
        ]
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        cx.passes(&self.model, &self.dataset, Passes::logits(1.0, self.batch_size))
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        cx.at_least("batch_size", self.batch_size, 1, out);
        if !(self.bucket_width.is_finite() && self.bucket_width > 0.0) {
            out.push(cx.error("bucket_width", "bucket_width must be a positive number"));
        }
        let Some(cfg) = cx.config(&self.model) else { return };
        match HookPoint::parse(&self.hook) {
            Some(p) if p.exists_in(cfg) && p.width(cfg).is_some_and(|w| self.neuron.value < w) => {}
            Some(p) if p.exists_in(cfg) => out.push(Diagnostic::at(
                self.neuron.span.clone(),
                format!("neuron {} out of range: {} has {}", self.neuron.value, p, p.width(cfg).unwrap_or(0)),
            )),
            _ => out.push(Diagnostic::at(
                self.hook.span.clone(),
                format!("unknown hook '{}' (write it with its layer: blocks.31.mlp.hook_post)", self.hook.value),
            )),
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let hook = HookPoint::parse(&self.hook).context("bad hook")?;
        let w = hook.width(&model.cfg).context("not a per-position hook")?;
        let tok = model.tokenizer()?;
        let token = tok.single_token(&self.token).map_err(|e| anyhow::anyhow!("token: {e}"))? as usize;
        let other = tok.single_token(&self.other).map_err(|e| anyhow::anyhow!("other: {e}"))? as usize;
        let v = model.cfg.d_vocab;
        // Per position: (row, position, activation, logit difference, top prediction).
        let mut points: Vec<(u32, u32, f32, f32, u32)> = Vec::new();
        let req = Request::capture([hook]).with_logits();
        for_each_batch(cx, &data, 0..data.rows, self.batch_size, &model.device, |batch| {
            let mut acts = None;
            let logits = model
                .forward(Start::Tokens(&batch.tokens), &req, &mut |_, t| {
                    acts = Some(t);
                    Ok(())
                })?
                .context("no logits")?;
            let acts: Vec<f32> = acts.context("no activations")?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            let logits = logits.to_device(&Device::Cpu)?;
            crate::model::forward::with_f32(&logits, |x| {
                let read: Vec<(f32, u32)> =
                    x.par_chunks(v).map(|row| (row[token] - row[other], argmax(row) as u32)).collect();
                for (i, (diff, top)) in read.into_iter().enumerate() {
                    if batch.valid[i] != 0 {
                        let (row, pos) = ((batch.start + i / batch.ctx) as u32, (i % batch.ctx) as u32);
                        points.push((row, pos, acts[i * w + self.neuron.value], diff, top));
                    }
                }
            })
        })?;
        anyhow::ensure!(!points.is_empty(), "no valid positions in the dataset");
        // Buckets: activation rounded to a multiple of the width → (positions, top is `token`).
        let mut buckets: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for p in &points {
            let e = buckets.entry((p.2 as f64 / self.bucket_width).round() as i64).or_default();
            e.0 += 1;
            e.1 += u64::from(p.4 as usize == token);
        }
        let mut b = Table::new()
            .with("activation", buckets.keys().map(|k| *k as f64 * self.bucket_width).collect::<Vec<_>>())
            .with("positions", buckets.values().map(|c| c.0).collect::<Vec<_>>())
            .with("top_is_token", buckets.values().map(|c| c.1).collect::<Vec<_>>())
            .with("share", buckets.values().map(|c| c.1 as f64 / c.0 as f64).collect::<Vec<_>>())
            .frame()?;
        cx.write_table("buckets", &mut b)?;
        let mut p = Table::new()
            .with("row", points.iter().map(|p| p.0).collect::<Vec<_>>())
            .with("position", points.iter().map(|p| p.1).collect::<Vec<_>>())
            .with("activation", points.iter().map(|p| p.2).collect::<Vec<_>>())
            .with("logit_diff", points.iter().map(|p| p.3).collect::<Vec<_>>())
            .with("top_is_token", points.iter().map(|p| p.4 as usize == token).collect::<Vec<_>>())
            .with("top_token", points.iter().map(|p| tok.token_str(p.4)).collect::<Vec<_>>())
            .frame()?;
        cx.write_table("points", &mut p)
    }
}
