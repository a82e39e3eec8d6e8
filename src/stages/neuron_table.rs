//! `neuron_table` stage: one row per (layer, neuron) of a model joining its weight statistics with
//! its activation statistics, under the Universal Neurons study's column names (`w_in_norm,
//! w_out_norm, input_bias, in_out_sim, l2_penalty, mean, var, skew, kurt, sparsity, vocab_mean,
//! vocab_var, vocab_skew, vocab_kurt`) plus `is_sparse` (sparsity < 0.02), as Parquet and CSV.

use super::tables::Ty;
use super::{TableDecl, Ranking, CheckCx, Dep, Stage, StageEnv};
use crate::spec::{Diagnostic, StageRef};
use crate::stats::BinnedMoments;
use crate::store::table::read;
use anyhow::{Context, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A `weights` stage of the model.
    pub weights: StageRef,
    /// An `activations` stage of the same model; its `mlp.hook_pre` statistics give mean, var,
    /// skew, kurt and sparsity (share of pre-activations > 0), as in the study.
    pub activations: StageRef,
    /// The hook whose statistics are joined (layer-less TL name).
    #[serde(default = "default_hook")]
    pub hook: String,
    /// How mean, var, skew, kurt and sparsity are estimated.
    #[serde(default)]
    pub moments: MomentsFrom,
}

/// The estimator of the activation columns.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MomentsFrom {
    /// lantern's default: exact moments of every activation (accumulated in f64); sparsity =
    /// share of activations > 0.
    #[default]
    Exact,
    /// The study's: rebuilt from the activations stage's histogram (each count at its bin's
    /// centre, values beyond the edges clipped to the end bins); sparsity = share of the counts
    /// from the first edge ≥ 0 up (≈ P(pre > −0.098) with the default edges).
    Histogram,
}

/// A neuron is "sparse" below this activation frequency (the study's `is_sparse`).
pub const SPARSE_BELOW: f64 = 0.02;

fn default_hook() -> String {
    "mlp.hook_pre".into()
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Stage(&self.weights), Dep::Stage(&self.activations)]
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "neurons").then_some(Ranking::desc("vocab_kurt"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("neurons").ints(["layer", "neuron"]).floats(["w_in_norm", "w_out_norm", "input_bias", "in_out_sim", "l2_penalty", "mean", "var", "skew", "kurt", "sparsity", "vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt"]).cols(Ty::Bool, ["is_sparse"]).texts(["vocab_class"]),
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let w = cx.stage::<super::weights::Spec>(&self.weights, "`weights` must name a weights stage", out);
        let a =
            cx.stage::<super::activations::Spec>(&self.activations, "`activations` must name an activations stage", out);
        if let (Some(w), Some(a)) = (w, a) {
            if w.model.name() != a.model.name() {
                out.push(Diagnostic::at(
                    self.activations.span(),
                    format!(
                        "'{}' ran on model '{}' but '{}' on '{}'",
                        self.activations.name(),
                        a.model.name(),
                        self.weights.name(),
                        w.model.name()
                    ),
                ));
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let mut df = read(&cx.input(&self.weights)?.join("weights.parquet"))?;
        let stats = read(&cx.input(&self.activations)?.join("stats.parquet"))?;
        let hook = crate::model::hooks::parse_site(&self.hook).context("unknown hook")?.tl_suffix();
        let (h, l, n) = (stats.column("hook")?.str()?, stats.column("layer")?.u32()?, stats.column("neuron")?.u32()?);
        let mut index: HashMap<(u32, u32), usize> = HashMap::new();
        for i in 0..stats.height() {
            if h.get(i) == Some(hook) {
                index.insert((l.get(i).unwrap_or(0), n.get(i).unwrap_or(0)), i);
            }
        }
        anyhow::ensure!(
            !index.is_empty(),
            "'{}' has no statistics of {}: add it to its hooks",
            self.activations.name(),
            self.hook
        );
        let (layers, neurons) = (df.column("layer")?.u32()?.clone(), df.column("neuron")?.u32()?.clone());
        let rows: Vec<Option<usize>> = (0..df.height())
            .map(|i| index.get(&(layers.get(i).unwrap_or(0), neurons.get(i).unwrap_or(0))).copied())
            .collect();
        match self.moments {
            MomentsFrom::Exact => {
                for (from, to) in [("mean", "mean"), ("var", "var"), ("skew", "skew"), ("kurt", "kurt"), ("freq", "sparsity")] {
                    let c = stats.column(from)?.f64()?;
                    let v: Vec<Option<f64>> = rows.iter().map(|r| r.and_then(|i| c.get(i))).collect();
                    df.with_column(Column::new(to.into(), v))?;
                }
            }
            MomentsFrom::Histogram => {
                let site = crate::model::hooks::parse_site(&self.hook).context("unknown hook")?;
                let hist = candle_core::safetensors::load(
                    cx.input(&self.activations)?.join("histograms.safetensors"),
                    &candle_core::Device::Cpu,
                )?;
                let edges: Vec<f32> = hist.get("edges").context("histograms without edges")?.to_vec1()?;
                let mut per_layer: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
                let mut cols: [Vec<Option<f64>>; 5] = Default::default();
                for i in 0..df.height() {
                    let (l, n) = (layers.get(i).unwrap_or(0), neurons.get(i).unwrap_or(0) as usize);
                    if let std::collections::hash_map::Entry::Vacant(e) = per_layer.entry(l) {
                        let key = crate::model::HookPoint::Block(l as usize, site).to_string();
                        let counts = hist.get(&key).map(|t| t.to_vec2::<u32>()).transpose()?;
                        e.insert(counts.unwrap_or_default());
                    }
                    let m = per_layer[&l].get(n).map(|c| BinnedMoments::of(&edges, c));
                    for (col, v) in cols.iter_mut().zip([
                        m.map(|m| m.mean),
                        m.map(|m| m.var),
                        m.map(|m| m.skew),
                        m.map(|m| m.kurt),
                        m.map(|m| m.above_zero),
                    ]) {
                        col.push(v);
                    }
                }
                for (name, col) in ["mean", "var", "skew", "kurt", "sparsity"].into_iter().zip(cols) {
                    df.with_column(Column::new(name.into(), col))?;
                }
            }
        }
        let sparse: Vec<Option<bool>> =
            df.column("sparsity")?.f64()?.into_iter().map(|v| v.map(|v| v < SPARSE_BELOW)).collect();
        df.with_column(Column::new("is_sparse".into(), sparse))?;
        let order = [
            "layer",
            "neuron",
            "w_in_norm",
            "w_out_norm",
            "input_bias",
            "in_out_sim",
            "l2_penalty",
            "mean",
            "var",
            "skew",
            "kurt",
            "sparsity",
            "vocab_mean",
            "vocab_var",
            "vocab_skew",
            "vocab_kurt",
            "is_sparse",
            "vocab_class",
        ];
        let mut df = df.select(order)?;
        cx.write_table("neurons", &mut df)
    }
}
