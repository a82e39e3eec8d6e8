//! `universal` stage: a reference model's neurons against a family of other seeds (Universal
//! Neurons §1.3): per neuron the best correlation with each seed and with each baseline, their
//! max / mean / min over seeds, `excess_corr = mean_corr − mean_baseline` and
//! `is_universal = excess_corr > threshold`; optionally the null distribution of `excess_corr` from
//! a second draw of the baselines and a threshold derived from it (a high percentile); joined with
//! the neuron table, with each property's percentile within its layer so universal and other
//! neurons can be compared.

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
pub const VERSION: u32 = 2;

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
    /// A second, independent draw of each baseline, in the order of `baselines` (the same stage
    /// with another `seed`): per neuron, mean over seeds of (this draw − `baselines`) is what
    /// `excess_corr` would be if the other seeds' neurons were a random basis, its null
    /// distribution.
    #[serde(default)]
    pub null_baselines: Vec<StageRef>,
    /// The null distribution's percentile taken as the derived threshold (`beats_null`).
    #[serde(default = "default_null_percentile")]
    pub null_percentile: f64,
    /// A `neuron_table` stage of the reference model to join.
    pub neurons: Option<StageRef>,
}

fn default_threshold() -> f64 {
    0.5
}
fn default_null_percentile() -> f64 {
    99.9
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
    Table::new()
        .with("layer", corr.keys.iter().map(|k| k.0).collect::<Vec<u32>>())
        .with("neuron", corr.keys.iter().map(|k| k.1).collect::<Vec<u32>>())
        .with("max_corr", corr.max())
        .with("mean_corr", mean_corr)
        .with("min_corr", corr.min())
        .with("max_baseline", base.max())
        .with("mean_baseline", mean_base)
        .with("min_baseline", base.min())
        .with("excess_corr", excess)
        .with("is_universal", universal)
        .frame()
}

/// The null excess correlation of each neuron: mean over seeds of a second baseline draw's best
/// correlation minus the first's (rows in the order of `classify`'s).
pub fn null_excess(baselines: &[DataFrame], second: &[DataFrame]) -> Result<Vec<f64>> {
    let (base, again) = (Best::collect(baselines)?, Best::collect(second)?);
    ensure!(base.keys == again.keys, "the two baseline draws cover different neurons");
    Ok(again.mean().iter().zip(base.mean()).map(|(a, b)| a - b).collect())
}

/// The `p`-th percentile (0–100) of `values` by nearest rank: the smallest value with at least
/// p% of the values at or below it.
pub fn nearest_rank(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    // Less a hair, so that 99.9% of 1,000 values is rank 999 despite 99.9 not being exact.
    let rank = (p / 100.0 * v.len() as f64 - 1e-9).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl Spec {
    /// `null_baselines`: one per baseline, each the same baseline of the same models drawn with
    /// another seed.
    fn check_null(
        &self,
        cx: &CheckCx,
        base: &[(&StageRef, &super::correlation::Spec)],
        out: &mut Vec<Diagnostic>,
    ) {
        if !(self.null_percentile > 0.0 && self.null_percentile < 100.0) {
            out.push(cx.error(
                "null_percentile",
                format!("universal: null_percentile is a percentile, above 0 and below 100, not {}", self.null_percentile),
            ));
        }
        if self.null_baselines.is_empty() {
            return;
        }
        if self.null_baselines.len() != self.baselines.len() {
            out.push(cx.error(
                "null_baselines",
                format!(
                    "universal: list one null baseline per baseline ({} baselines, {} null baselines), in the same order",
                    self.baselines.len(),
                    self.null_baselines.len()
                ),
            ));
            return;
        }
        let null = Spec::correlation_stages(cx, &self.null_baselines, out);
        for (&(r, n), &(br, b)) in null.iter().zip(base) {
            let same = n.a.name() == b.a.name() && n.b.name() == b.b.name() && n.baseline == b.baseline;
            if !same {
                out.push(Diagnostic::at(
                    r.span(),
                    format!(
                        "'{}' must draw the same baseline of the same models as '{}' ({} vs {}, {:?}), with another seed",
                        r.name(),
                        br.name(),
                        b.a.name(),
                        b.b.name(),
                        b.baseline
                    ),
                ));
            } else if n.seed == b.seed {
                out.push(
                    Diagnostic::at(r.span(), format!("'{}' draws the same baseline as '{}'", r.name(), br.name()))
                        .help("set another `seed` in it: the null is the difference of two independent draws"),
                );
            }
        }
    }

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
        let mut d: Vec<Dep> =
            self.correlations.iter().chain(&self.baselines).chain(&self.null_baselines).map(Dep::Stage).collect();
        d.extend(self.neurons.as_ref().map(Dep::Stage));
        d
    }

    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "universal").then_some(Ranking::desc("excess_corr"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        let null = !self.null_baselines.is_empty();
        let mut universal = TableDecl::new("universal")
            .ints(["layer", "neuron"])
            .floats(["max_corr", "mean_corr", "min_corr", "max_baseline", "mean_baseline", "min_baseline", "excess_corr"])
            .cols(Ty::Bool, ["is_universal"]);
        let mut layers = TableDecl::new("layers").ints(["layer", "neurons", "universal"]).floats(["fraction"]);
        let mut excess = TableDecl::new("excess").texts(["series"]).floats(["excess_corr", "threshold"]);
        if null {
            universal = universal.floats(["null_excess"]).cols(Ty::Bool, ["beats_null"]);
            layers = layers.ints(["beats_null"]).floats(["fraction_null"]);
            excess = excess.floats(["null_threshold"]);
        }
        let universal = universal
            .optional(Ty::Float, PROPERTIES.iter().copied())
            .optional(Ty::Text, ["vocab_class"])
            .optional(Ty::Bool, ["is_sparse"])
            .optional(Ty::Float, PROPERTIES.iter().map(|p| format!("{p}_pct")));
        vec![
            universal,
            layers,
            TableDecl::new("properties").texts(["property", "rule", "class"]).floats(["percentile"]),
            excess,
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        if self.correlations.is_empty() || self.baselines.is_empty() {
            let field = if self.correlations.is_empty() { "correlations" } else { "baselines" };
            out.push(cx.error(
                field,
                "universal: list at least one correlation stage in `correlations` and one in `baselines`",
            ));
        }
        let corr = Spec::correlation_stages(cx, &self.correlations, out);
        let base = Spec::correlation_stages(cx, &self.baselines, out);
        // The first stage listed (a correlation, else a baseline) sets the reference model.
        let first = corr.iter().chain(&base).next().map(|(r, c)| (r.name(), c.a.name()));
        for &(r, c) in corr.iter().chain(&base) {
            if let Some((first, reference)) = first.filter(|(_, reference)| c.a.name() != *reference) {
                out.push(Diagnostic::at(
                    r.span(),
                    format!(
                        "'{}' correlates model '{}', but '{first}' correlates '{reference}': all must share the reference model `a`",
                        r.name(),
                        c.a.name(),
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
        self.check_null(cx, &base, out);
        if let Some(n) = &self.neurons {
            cx.stage::<super::neuron_table::Spec>(n, "`neurons` must name a neuron_table stage", out);
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let load = |refs: &[StageRef]| -> Result<Vec<DataFrame>> {
            refs.iter().map(|r| read(&cx.input(r)?.join("matches.parquet"))).collect()
        };
        let baselines = load(&self.baselines)?;
        let mut df = classify(&load(&self.correlations)?, &baselines, self.threshold)?;
        let layers: Vec<u32> = df.column("layer")?.u32()?.into_no_null_iter().collect();
        let excess: Vec<f64> = df.column("excess_corr")?.f64()?.into_no_null_iter().collect();
        // Each rule: (name, threshold, per neuron whether it is above).
        let mut rules: Vec<(&str, f64, Vec<bool>)> =
            vec![("threshold", self.threshold, excess.iter().map(|e| *e > self.threshold).collect())];
        let mut null = Vec::new();
        if !self.null_baselines.is_empty() {
            null = null_excess(&baselines, &load(&self.null_baselines)?)?;
            let t = nearest_rank(&null, self.null_percentile);
            let beats: Vec<bool> = excess.iter().map(|e| *e > t).collect();
            df.with_column(Column::new("null_excess".into(), null.clone()))?;
            df.with_column(Column::new("beats_null".into(), beats.clone()))?;
            rules.push(("null", t, beats));
        }
        let mut props = (Vec::<String>::new(), Vec::<&str>::new(), Vec::<&str>::new(), Vec::<f64>::new());
        if let Some(n) = &self.neurons {
            let table = read(&cx.input(n)?.join("neurons.parquet"))?;
            // The rules' flags above are in the classify table's row order: the join must keep it.
            let mut args = JoinArgs::new(JoinType::Left);
            args.maintain_order = MaintainOrderJoin::Left;
            df = df.join(&table, ["layer", "neuron"], ["layer", "neuron"], args, None)?;
            let joined: Vec<u32> = df.column("layer")?.u32()?.into_no_null_iter().collect();
            ensure!(joined == layers, "the neuron table join reordered the rows");
            for p in PROPERTIES {
                let Ok(col) = df.column(p) else { continue };
                let values: Vec<f64> =
                    col.cast(&DataType::Float64)?.f64()?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
                let pct = percentiles(&layers, &values);
                for (rule, _, above) in &rules {
                    for (i, &q) in pct.iter().enumerate() {
                        if !q.is_nan() {
                            props.0.push(p.to_string());
                            props.1.push(*rule);
                            props.2.push(if above[i] { "universal" } else { "other" });
                            props.3.push(q);
                        }
                    }
                }
                df.with_column(Column::new(format!("{p}_pct").into(), pct))?;
            }
        }
        let per_layer = |above: &[bool]| {
            let mut m: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
            for (l, u) in layers.iter().zip(above) {
                let e = m.entry(*l).or_default();
                e.0 += 1;
                e.1 += *u as u32;
            }
            m
        };
        let study = per_layer(&rules[0].2[..]);
        let mut counts = Table::new()
            .with("layer", study.keys().copied().collect::<Vec<u32>>())
            .with("neurons", study.values().map(|v| v.0).collect::<Vec<u32>>())
            .with("universal", study.values().map(|v| v.1).collect::<Vec<u32>>())
            .with("fraction", study.values().map(|v| v.1 as f64 / v.0 as f64).collect::<Vec<f64>>());
        if let Some((_, _, beats)) = rules.get(1) {
            let by_null = per_layer(&beats[..]);
            counts = counts
                .with("beats_null", by_null.values().map(|v| v.1).collect::<Vec<u32>>())
                .with("fraction_null", by_null.values().map(|v| v.1 as f64 / v.0 as f64).collect::<Vec<f64>>());
        }
        let mut counts = counts.frame()?;
        let mut properties = Table::new()
            .with("property", props.0)
            .with("rule", props.1.into_iter().map(String::from).collect::<Vec<String>>())
            .with("class", props.2.into_iter().map(String::from).collect::<Vec<String>>())
            .with("percentile", props.3)
            .frame()?;
        // Both distributions in one column for an overlaid histogram, each threshold beside them.
        let n = excess.len() + null.len();
        let mut distributions = Table::new()
            .with(
                "series",
                std::iter::repeat_n("seeds", excess.len())
                    .chain(std::iter::repeat_n("null", null.len()))
                    .map(String::from)
                    .collect::<Vec<String>>(),
            )
            .with("excess_corr", excess.iter().chain(&null).copied().collect::<Vec<f64>>())
            .with("threshold", vec![self.threshold; n]);
        if let Some((_, t, _)) = rules.get(1) {
            distributions = distributions.with("null_threshold", vec![*t; n]);
        }
        let mut distributions = distributions.frame()?;
        let share = |k: usize| k as f64 / excess.len().max(1) as f64;
        let count = |above: &[bool]| above.iter().filter(|u| **u).count();
        let mut summary = serde_json::json!({
            "neurons": excess.len(),
            "universal": count(&rules[0].2[..]),
            "fraction": share(count(&rules[0].2[..])),
            "threshold": self.threshold,
        });
        if let Some((_, t, beats)) = rules.get(1) {
            summary["null_percentile"] = self.null_percentile.into();
            summary["null_threshold"] = (*t).into();
            summary["beats_null"] = count(&beats[..]).into();
            summary["fraction_null"] = share(count(&beats[..])).into();
        }
        cx.write_table("universal", &mut df)?;
        cx.write_table("layers", &mut counts)?;
        cx.write_table("properties", &mut properties)?;
        cx.write_table("excess", &mut distributions)?;
        crate::store::atomic::write(&cx.out().join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())
    }
}
