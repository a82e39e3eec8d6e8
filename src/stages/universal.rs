//! `universal` stage: a reference model's neurons against a family of other seeds (Universal
//! Neurons §1.3): per neuron the best correlation with each seed and with each baseline, their
//! max / mean / min over seeds, `excess_corr = mean_corr − mean_baseline` and
//! `is_universal = excess_corr > threshold`; joined with the neuron table, with each property's
//! percentile within its layer so universal and other neurons can be compared.

use super::tables::Ty;
use super::{TableDecl, Ranking, CheckCx, Dep, Stage, StageEnv};
use crate::spec::{Diagnostic, StageRef};
use crate::store::table::read;
use crate::store::table::Table;
use anyhow::{ensure, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `correlation` stages of the reference model (as `a`) against each other seed.
    pub correlations: Vec<StageRef>,
    /// The same against each seed's baseline (`baseline = "rotation"`, …).
    pub baselines: Vec<StageRef>,
    /// Universal when `excess_corr` is above this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// A `neuron_table` stage of the reference model to join.
    pub neurons: Option<StageRef>,
}

fn default_threshold() -> f64 {
    0.5
}

/// Columns of the neuron table compared between universal and other neurons.
const PROPERTIES: &[&str] = &[
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
];

/// Per (layer, neuron): the best correlation with each of several models, and max / mean / min.
pub struct Best {
    pub keys: Vec<(u32, u32)>,
    /// [neuron][model]
    pub values: Vec<Vec<f64>>,
}

impl Best {
    /// Collect `max_corr` of `matches` tables (all over the same neurons of the same model).
    pub fn collect(tables: &[DataFrame]) -> Result<Best> {
        let mut by_key: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
        for df in tables {
            let (l, n, v) = (df.column("layer")?.u32()?, df.column("neuron")?.u32()?, df.column("max_corr")?.f64()?);
            for i in 0..df.height() {
                by_key.entry((l.get(i).unwrap_or(0), n.get(i).unwrap_or(0))).or_default().push(v.get(i).unwrap_or(0.0));
            }
        }
        ensure!(
            by_key.values().all(|v| v.len() == tables.len()),
            "the correlation stages cover different neurons of the reference model"
        );
        let (keys, values) = by_key.into_iter().unzip();
        Ok(Best { keys, values })
    }

    fn stat(&self, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        self.values.iter().map(|v| f(v)).collect()
    }
    pub fn max(&self) -> Vec<f64> {
        self.stat(|v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    }
    pub fn min(&self) -> Vec<f64> {
        self.stat(|v| v.iter().copied().fold(f64::INFINITY, f64::min))
    }
    pub fn mean(&self) -> Vec<f64> {
        self.stat(|v| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The percentile (0–100) of each value among the values of its group: the share of the group at
/// or below it, ties sharing their average rank.
pub fn percentiles(groups: &[u32], values: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::NAN; values.len()];
    let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        if !values[i].is_nan() {
            by_group.entry(*g).or_default().push(i);
        }
    }
    for idx in by_group.values_mut() {
        idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let n = idx.len() as f64;
        let mut start = 0;
        while start < idx.len() {
            let mut end = start;
            while end + 1 < idx.len() && values[idx[end + 1]] == values[idx[start]] {
                end += 1;
            }
            let rank = (start + end) as f64 / 2.0 + 1.0;
            for &i in &idx[start..=end] {
                out[i] = 100.0 * rank / n;
            }
            start = end + 1;
        }
    }
    out
}

/// The universality table of a reference model from its `matches` tables against other seeds and
/// against their baselines: one row per (layer, neuron).
pub fn classify(correlations: &[DataFrame], baselines: &[DataFrame], threshold: f64) -> Result<DataFrame> {
    let (corr, base) = (Best::collect(correlations)?, Best::collect(baselines)?);
    ensure!(corr.keys == base.keys, "the correlation and baseline stages cover different neurons");
    let (mean_corr, mean_base) = (corr.mean(), base.mean());
    let excess: Vec<f64> = mean_corr.iter().zip(&mean_base).map(|(c, b)| c - b).collect();
    let universal: Vec<bool> = excess.iter().map(|e| *e > threshold).collect();
    Table::new().with("layer", corr.keys.iter().map(|k| k.0).collect::<Vec<u32>>()).with("neuron", corr.keys.iter().map(|k| k.1).collect::<Vec<u32>>()).with("max_corr", corr.max()).with("mean_corr", mean_corr).with("min_corr", corr.min()).with("max_baseline", base.max()).with("mean_baseline", mean_base).with("min_baseline", base.min()).with("excess_corr", excess).with("is_universal", universal).frame()
}

impl Spec {
    /// The correlation stages `refs` name, each with its reference.
    fn correlation_stages<'a>(
        cx: &'a CheckCx,
        refs: &'a [StageRef],
        out: &mut Vec<Diagnostic>,
    ) -> Vec<(&'a StageRef, &'a super::correlation::Spec)> {
        refs.iter()
            .filter_map(|r| cx.stage(r, "universal reads correlation stages", out).map(|c| (r, c)))
            .collect()
    }
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d: Vec<Dep> = self.correlations.iter().chain(&self.baselines).map(Dep::Stage).collect();
        d.extend(self.neurons.as_ref().map(Dep::Stage));
        d
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "universal").then_some(Ranking::desc("excess_corr"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("universal").ints(["layer", "neuron"]).floats(["max_corr", "mean_corr", "min_corr", "max_baseline", "mean_baseline", "min_baseline", "excess_corr"]).cols(Ty::Bool, ["is_universal"]).optional(Ty::Float, PROPERTIES.iter().copied())
                .optional(Ty::Text, ["vocab_class"])
                .optional(Ty::Float, PROPERTIES.iter().map(|p| format!("{p}_pct"))),
            TableDecl::new("layers").ints(["layer", "neurons", "universal"]).floats(["fraction"]),
            TableDecl::new("properties").texts(["property", "class"]).floats(["percentile"]),
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        if self.correlations.is_empty() || self.baselines.is_empty() {
            out.push(Diagnostic::global(
                "universal: list at least one correlation stage in `correlations` and one in `baselines`",
            ));
        }
        let corr = Spec::correlation_stages(cx, &self.correlations, out);
        let base = Spec::correlation_stages(cx, &self.baselines, out);
        let reference = corr.first().map(|(_, c)| c.a.name().to_string());
        for &(r, c) in corr.iter().chain(&base) {
            if Some(c.a.name()) != reference.as_deref() {
                out.push(Diagnostic::at(
                    r.span(),
                    format!(
                        "'{}' correlates model '{}', but '{}' correlates '{}': all must share the reference model `a`",
                        r.name(),
                        c.a.name(),
                        corr[0].0.name(),
                        reference.as_deref().unwrap_or("?")
                    ),
                ));
            }
        }
        for &(r, c) in &corr {
            if c.baseline.is_random() {
                out.push(Diagnostic::at(
                    r.span(),
                    format!("'{}' is a baseline ({:?}): list it under `baselines`", r.name(), c.baseline),
                ));
            }
        }
        for &(r, c) in &base {
            if !c.baseline.is_random() {
                out.push(Diagnostic::at(
                    r.span(),
                    format!(
                        "'{}' has no baseline: set baseline = \"rotation\" in it, or list it under `correlations`",
                        r.name()
                    ),
                ));
            }
        }
        if let Some(n) = &self.neurons {
            cx.stage::<super::neuron_table::Spec>(n, "`neurons` must name a neuron_table stage", out);
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let load = |refs: &[StageRef]| -> Result<Vec<DataFrame>> {
            refs.iter().map(|r| read(&cx.input(r)?.join("matches.parquet"))).collect()
        };
        let mut df = classify(&load(&self.correlations)?, &load(&self.baselines)?, self.threshold)?;
        let layers: Vec<u32> = df.column("layer")?.u32()?.into_no_null_iter().collect();
        let universal: Vec<bool> = df.column("is_universal")?.bool()?.into_no_null_iter().collect();
        let mut props = (Vec::<String>::new(), Vec::<&str>::new(), Vec::<f64>::new());
        if let Some(n) = &self.neurons {
            let table = read(&cx.input(n)?.join("neurons.parquet"))?;
            df = df.join(&table, ["layer", "neuron"], ["layer", "neuron"], JoinArgs::new(JoinType::Left), None)?;
            for p in PROPERTIES {
                let Ok(col) = df.column(p) else { continue };
                let values: Vec<f64> =
                    col.cast(&DataType::Float64)?.f64()?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
                let pct = percentiles(&layers, &values);
                for (i, &q) in pct.iter().enumerate() {
                    if !q.is_nan() {
                        props.0.push(p.to_string());
                        props.1.push(if universal[i] { "universal" } else { "other" });
                        props.2.push(q);
                    }
                }
                df.with_column(Column::new(format!("{p}_pct").into(), pct))?;
            }
        }
        let mut per_layer: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        for (l, u) in layers.iter().zip(&universal) {
            let e = per_layer.entry(*l).or_default();
            e.0 += 1;
            e.1 += *u as u32;
        }
        let mut counts = Table::new().with("layer", per_layer.keys().copied().collect::<Vec<u32>>()).with("neurons", per_layer.values().map(|v| v.0).collect::<Vec<u32>>()).with("universal", per_layer.values().map(|v| v.1).collect::<Vec<u32>>()).with("fraction", per_layer.values().map(|v| v.1 as f64 / v.0 as f64).collect::<Vec<f64>>()).frame()?;
        let mut properties = Table::new().with("property", props.0).with("class", props.1.into_iter().map(String::from).collect::<Vec<String>>()).with("percentile", props.2).frame()?;
        let n_universal = universal.iter().filter(|u| **u).count();
        let summary = serde_json::json!({
            "neurons": universal.len(),
            "universal": n_universal,
            "fraction": n_universal as f64 / universal.len().max(1) as f64,
            "threshold": self.threshold,
        });
        cx.write_table("universal", &mut df)?;
        cx.write_table("layers", &mut counts)?;
        cx.write_table("properties", &mut properties)?;
        crate::store::atomic::write(&cx.out().join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())
    }
}
