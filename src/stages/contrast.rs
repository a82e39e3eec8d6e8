//! `contrast` stage: which neurons tell two datasets apart. From two `activations` stages of one
//! model, per neuron the difference of means in units of the pooled standard deviation
//! (d = (mean_b − mean_a) / sqrt((var_a + var_b) / 2)), ranked, and the activation histograms of the
//! top neurons on both datasets (for plots).

use super::{TableDecl, Ranking, CheckCx, Dep, Stage, StageEnv};
use crate::spec::{Diagnostic, StageRef};
use crate::store::table::read;
use crate::store::table::Table;
use anyhow::{bail, Context, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The baseline `activations` stage (e.g. English text).
    pub a: StageRef,
    /// The `activations` stage of interest (e.g. German text) on the same model.
    pub b: StageRef,
    /// The hook compared (TL name without the layer, e.g. `mlp.hook_post`).
    #[serde(default = "default_hook")]
    pub hook: String,
    /// Neurons whose histograms are kept.
    #[serde(default = "default_top")]
    pub top_k: usize,
}

fn default_hook() -> String {
    "mlp.hook_post".into()
}
fn default_top() -> usize {
    10
}

/// Per-neuron (layer, neuron) → (mean, var) of one activations stage's hook.
fn moments(df: &DataFrame, hook: &str) -> Result<HashMap<(u32, u32), (f64, f64)>> {
    let hooks = df.column("hook")?.str()?.clone();
    let (layer, neuron) = (df.column("layer")?.u32()?.clone(), df.column("neuron")?.u32()?.clone());
    let (mean, var) = (df.column("mean")?.f64()?.clone(), df.column("var")?.f64()?.clone());
    let mut out = HashMap::new();
    for i in 0..df.height() {
        if hooks.get(i) == Some(hook) {
            out.insert(
                (layer.get(i).unwrap_or(0), neuron.get(i).unwrap_or(0)),
                (mean.get(i).unwrap_or(0.0), var.get(i).unwrap_or(0.0)),
            );
        }
    }
    Ok(out)
}

/// Finite bins (left, right, count) of one neuron's histogram and the total count.
fn bins(edges: &[f32], counts: &[u32]) -> (Vec<(f32, f32, u32)>, u64) {
    let total = counts.iter().map(|&c| c as u64).sum();
    // Bin k counts (e[k-1], e[k]]; bins 0 and len are open-ended and left out.
    let b = (1..edges.len()).map(|k| (edges[k - 1], edges[k], counts[k])).collect();
    (b, total)
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Stage(&self.a), Dep::Stage(&self.b)]
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "contrast").then_some(Ranking::desc("d"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("contrast").ints(["rank", "layer", "neuron"]).texts(["name"]).floats([&self.a, &self.b].map(|r| format!("mean_{}", r.name()))).floats([&self.a, &self.b].map(|r| format!("std_{}", r.name()))).floats(["d"]),
            TableDecl::new("histograms").ints(["rank"]).texts(["neuron", "dataset"]).floats(["left", "right", "density"]),
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        for r in [&self.a, &self.b] {
            cx.stage::<super::activations::Spec>(r, "contrast reads activations stages", out);
        }
        if crate::model::hooks::parse_site(&self.hook).is_none() {
            out.push(Diagnostic::global(format!("contrast: unknown hook '{}' (e.g. mlp.hook_post)", self.hook)));
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let (da, db) = (cx.input(&self.a)?, cx.input(&self.b)?);
        let (ma, mb) = (
            moments(&read(&da.join("stats.parquet"))?, &self.hook)?,
            moments(&read(&db.join("stats.parquet"))?, &self.hook)?,
        );
        if ma.is_empty() {
            bail!("stage '{}' has no statistics of {}", self.a.name(), self.hook);
        }
        let mut rows: Vec<((u32, u32), f64, f64, f64, f64, f64)> = Vec::new();
        for (k, &(mean_a, var_a)) in &ma {
            let &(mean_b, var_b) =
                mb.get(k).with_context(|| format!("stage '{}' lacks neuron {}.{}", self.b.name(), k.0, k.1))?;
            let pooled = ((var_a + var_b) / 2.0).sqrt();
            let d = if pooled > 0.0 { (mean_b - mean_a) / pooled } else { 0.0 };
            rows.push((*k, mean_a, mean_b, var_a.sqrt(), var_b.sqrt(), d));
        }
        rows.sort_by(|x, y| y.5.total_cmp(&x.5).then(x.0.cmp(&y.0)));
        let mut table = Table::new().with("rank", (0..rows.len() as u32).collect::<Vec<_>>()).with("layer", rows.iter().map(|r| r.0 .0).collect::<Vec<_>>()).with("neuron", rows.iter().map(|r| r.0 .1).collect::<Vec<_>>()).with("name", rows.iter().map(|r| format!("L{}.N{}", r.0 .0, r.0 .1)).collect::<Vec<_>>()).with(&format!("mean_{}", self.a.name()), rows.iter().map(|r| r.1).collect::<Vec<_>>()).with(&format!("mean_{}", self.b.name()), rows.iter().map(|r| r.2).collect::<Vec<_>>()).with(&format!("std_{}", self.a.name()), rows.iter().map(|r| r.3).collect::<Vec<_>>()).with(&format!("std_{}", self.b.name()), rows.iter().map(|r| r.4).collect::<Vec<_>>()).with("d", rows.iter().map(|r| r.5).collect::<Vec<_>>()).frame()?;
        cx.write_table("contrast", &mut table)?;
        // Histograms of the top neurons on both datasets, as densities.
        let (ha, hb) = (
            candle_core::safetensors::load(da.join("histograms.safetensors"), &candle_core::Device::Cpu)?,
            candle_core::safetensors::load(db.join("histograms.safetensors"), &candle_core::Device::Cpu)?,
        );
        let edges: Vec<f32> = ha.get("edges").context("no histogram edges")?.to_vec1()?;
        let mut cols: (Vec<u32>, Vec<String>, Vec<String>, Vec<f32>, Vec<f32>, Vec<f64>) = Default::default();
        for (rank, r) in rows.iter().take(self.top_k).enumerate() {
            let (l, n) = r.0;
            let name = format!("blocks.{l}.{}", self.hook);
            let mut per = Vec::new();
            for (label, h) in [(self.a.name(), &ha), (self.b.name(), &hb)] {
                let counts: Vec<u32> =
                    h.get(&name).with_context(|| format!("no histogram of {name}"))?.get(n as usize)?.to_vec1()?;
                per.push((label, bins(&edges, &counts)));
            }
            // Keep the bins between the first and the last non-empty one of either dataset.
            let used: Vec<usize> = (0..per[0].1 .0.len()).filter(|&i| per.iter().any(|p| p.1 .0[i].2 > 0)).collect();
            let (Some(&lo), Some(&hi)) = (used.first(), used.last()) else { continue };
            for (label, (b, total)) in &per {
                for &(left, right, c) in &b[lo..=hi] {
                    cols.0.push(rank as u32);
                    cols.1.push(format!("L{l}.N{n}"));
                    cols.2.push(label.to_string());
                    cols.3.push(left);
                    cols.4.push(right);
                    cols.5.push(c as f64 / (*total).max(1) as f64);
                }
            }
        }
        let mut hist = Table::new().with("rank", cols.0).with("neuron", cols.1).with("dataset", cols.2).with("left", cols.3).with("right", cols.4).with("density", cols.5).frame()?;
        cx.write_table("histograms", &mut hist)
    }
}
