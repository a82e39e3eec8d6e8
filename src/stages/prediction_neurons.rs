//! `prediction_neurons` stage (Universal Neurons §1.7): output neurons classed by the vocabulary
//! moments of cos(W_U, w_out) — prediction, suppression, partition — with the token feature that
//! best separates the tokens each one promotes or suppresses (difference of means, Welch's t and
//! variance reduction of W_Uᵀw_out over the vocabulary), and the per-layer percentiles of vocab
//! kurtosis and skew across a family of models (seeds), with their min–max band.


use super::{TableDecl, CheckCx, Dep, Stage, StageEnv, Cost, CostCx};
use crate::analysis::weights::{in_out, moments, unit_rows, vocab_class, vocab_cosines, Moments};
use crate::spec::{Diagnostic, ModelRef, Sp, StageRef};
use crate::stats::separation::Separation;
use crate::store::table::{NeuronRows, Table};
use anyhow::{Context, Result};
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
    /// The model whose output neurons are explained.
    pub model: ModelRef,
    /// `weights` stages of a family of models (seeds) for the per-layer percentile bands;
    /// default: this model alone.
    #[serde(default)]
    pub family: Vec<StageRef>,
    /// Classes whose neurons get feature explanations.
    #[serde(default = "default_classes")]
    pub classes: Vec<Sp<String>>,
    #[serde(default = "default_kurt")]
    pub kurt_threshold: f64,
    #[serde(default = "default_var")]
    pub partition_var: f64,
    /// Extra named token sets (each string one token) beside the built-in string features.
    #[serde(default)]
    pub token_sets: BTreeMap<String, Vec<String>>,
    /// Features listed per neuron.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Features holding for fewer tokens are not ranked (Welch's t of a handful of tokens is noise).
    #[serde(default = "default_min_tokens")]
    pub min_tokens: u64,
    #[serde(default = "default_percentiles")]
    pub percentiles: Vec<f64>,
    /// Neurons `[layer, neuron]` whose logit effect on every token is written (`effects` table,
    /// for histograms split by the best feature) …
    #[serde(default)]
    pub show: Vec<[usize; 2]>,
    /// … and as many of the explained neurons whose best feature separates best (largest |t|).
    #[serde(default)]
    pub show_top: usize,
}

const CLASSES: [&str; 4] = ["prediction", "suppression", "partition", "none"];

fn default_classes() -> Vec<Sp<String>> {
    CLASSES[..3].iter().map(|c| Sp::new(c.to_string())).collect()
}
fn default_kurt() -> f64 {
    10.0
}
fn default_var() -> f64 {
    0.005
}
fn default_top_k() -> usize {
    3
}
fn default_min_tokens() -> u64 {
    10
}
fn default_percentiles() -> Vec<f64> {
    vec![5.0, 10.0, 50.0, 90.0, 95.0]
}

/// The `p`-th percentile with linear interpolation (numpy's default) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// Per model: (layer, vocab moments) of every neuron.
type NeuronMoments = Vec<(u32, Moments)>;

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        let mut d = vec![Dep::Model(&self.model)];
        d.extend(self.family.iter().map(Dep::Stage));
        d
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("neurons").texts(["hook"]).ints(["layer", "neuron"]).texts(["class"]).floats(["vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt"]),
            TableDecl::new("features").texts(["hook"]).ints(["layer", "neuron"]).texts(["class", "feature", "group"]).ints(["rank", "tokens"]).floats(["mean_diff", "welch_t", "vr"]),
            TableDecl::new("classes").texts(["model"]).ints(["layer"]).texts(["class"]).ints(["neurons"]).floats(["fraction"]),
            TableDecl::new("percentiles").texts(["stat"]).ints(["layer"]).texts(["percentile"]).floats(["value", "low", "high"]),
            TableDecl::new("effects").texts(["hook"]).ints(["layer", "neuron"]).texts(["neuron_name", "token", "best_feature", "in_feature"]).ints(["shown"]).floats(["effect"]),
        ]
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // cos(W_U, w_out) and W_Uᵀw_out of every neuron of the model over the vocabulary, each
        // score read once into its moments and the token features' separation.
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let (n, d, v) = (cfg.n_neurons() as f64, cfg.d_model as f64, cfg.d_vocab as f64);
        let cost = Cost::new(2.0 * 2.0 * n * d * v, cx.weights(&self.model) * 2.0 + 2.0 * 4.0 * cfg.d_mlp as f64 * v);
        Cost { values: 2.0 * n * v, ..cost }
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        for c in &self.classes {
            if !CLASSES.contains(&c.value.as_str()) {
                out.push(Diagnostic::at(
                    c.span.clone(),
                    format!(
                        "unknown class '{}' (classes: {}){}",
                        c.value,
                        CLASSES.join(", "),
                        crate::util::did_you_mean(&c.value, CLASSES)
                    ),
                ));
            }
        }
        for f in &self.family {
            cx.stage::<super::weights::Spec>(f, "family lists weights stages", out);
        }
        if let Some(p) = self.percentiles.iter().find(|p| !(0.0..=100.0).contains(*p)) {
            out.push(Diagnostic::at(self.model.span(), format!("percentile {p} is outside 0–100")));
        }
        if let Some(cfg) = cx.config(&self.model) {
            for [l, n] in &self.show {
                if *l >= cfg.n_layers || *n >= cfg.d_mlp {
                    out.push(Diagnostic::at(
                        self.model.span(),
                        format!(
                            "show: neuron [{l}, {n}] out of range: the model has {} layers of {} neurons",
                            cfg.n_layers, cfg.d_mlp
                        ),
                    ));
                }
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let cfg = &model.cfg;
        let tok =
            model.tokenizer.as_ref().context("prediction_neurons reads token strings: the model has no tokenizer")?;
        let tf = crate::analysis::features::vocabulary_features(tok, cfg.d_vocab, None, &self.token_sets)?;
        let w_u = model.weights.w_u.to_dtype(candle_core::DType::F32)?; // [d, vocab]
        let w_u_unit = unit_rows(&w_u.t()?.contiguous()?)?;
        let wanted: Vec<&str> = self.classes.iter().map(|c| c.value.as_str()).collect();
        let (mut neurons, mut feats) = (NeuronRows::default(), NeuronRows::default());
        // (sort key, neuron, best feature) of the explained and the `show` neurons.
        let mut best_of: Vec<(f64, [usize; 2], usize)> = Vec::new();
        let mut own: NeuronMoments = Vec::new();
        let mut progress = cx.progress(cfg.n_layers as u64, "layers");
        for l in 0..cfg.n_layers {
            let (_, w_out) = in_out(&model, l)?;
            let w_out = w_out.to_dtype(candle_core::DType::F32)?;
            let cos: Vec<Vec<f32>> = vocab_cosines(&w_out, &w_u_unit)?.to_vec2()?;
            // Logit effect of each neuron on each token, [vocab, d_mlp]: rows are vocabulary entries.
            let effect = w_u.t()?.matmul(&w_out.t()?)?.contiguous()?;
            let effect_rows: Vec<f32> = effect.flatten_all()?.to_vec1()?;
            drop(effect);
            let mut sep = Separation::new(tf.features.len(), cfg.d_mlp);
            sep.add(&effect_rows, &tf.of_token);
            for n in 0..cfg.d_mlp {
                let m = moments(&cos[n]);
                let class = vocab_class(&m, self.kurt_threshold, self.partition_var);
                own.push((l as u32, m));
                let key = |c: &mut NeuronRows| c.key("mlp.hook_post", l as u32, n as u32);
                key(&mut neurons);
                neurons.strs(&[("class", class.to_string())]);
                neurons.f64s(&[
                    ("vocab_mean", m.mean),
                    ("vocab_var", m.var),
                    ("vocab_skew", m.skew),
                    ("vocab_kurt", m.kurt),
                ]);
                let shown = self.show.contains(&[l, n]);
                if !wanted.contains(&class) && !shown {
                    continue;
                }
                // Prediction: the features of promoted tokens (largest t); suppression: of suppressed
                // tokens (most negative t); otherwise the largest |t|.
                let sign = match class {
                    "prediction" => 1.0,
                    "suppression" => -1.0,
                    _ => 0.0,
                };
                let key_of = |t: f64| if sign == 0.0 { t.abs() } else { sign * t };
                let mut order: Vec<(usize, f64)> = (0..tf.features.len())
                    .map(|f| (f, sep.score(f, n)))
                    .filter(|(_, s)| s.n1 >= self.min_tokens && s.welch_t.is_finite())
                    .map(|(f, s)| (f, s.welch_t))
                    .collect();
                order.sort_by(|a, b| key_of(b.1).total_cmp(&key_of(a.1)));
                let Some(&(best, best_t)) = order.first() else { continue };
                best_of.push((if shown { f64::INFINITY } else { best_t.abs() }, [l, n], best));
                if !wanted.contains(&class) {
                    continue;
                }
                for (rank, &(f, _)) in order.iter().take(self.top_k).enumerate() {
                    let s = sep.score(f, n);
                    key(&mut feats);
                    feats.strs(&[
                        ("class", class.to_string()),
                        ("feature", tf.features[f].name.clone()),
                        ("group", tf.features[f].group.clone()),
                    ]);
                    feats.ints(&[("rank", rank as i64), ("tokens", s.n1 as i64)]);
                    feats.f64s(&[("mean_diff", s.mean_diff), ("welch_t", s.welch_t), ("vr", s.vr)]);
                }
            }
            progress.tick(1)?;
        }
        let mut family: Vec<(String, NeuronMoments)> = Vec::new();
        for f in &self.family {
            family.push((f.name().to_string(), read_moments(&cx.input(f)?.join("weights.parquet"))?));
        }
        if family.is_empty() {
            family.push((self.model.name().to_string(), own));
        }
        cx.write_table("neurons", &mut neurons.frame()?)?;
        cx.write_table("features", &mut feats.frame()?)?;
        cx.write_table("classes", &mut self.class_counts(&family, cfg.n_layers)?)?;
        cx.write_table("percentiles", &mut self.percentile_bands(&family, cfg.n_layers)?)?;
        // The `show` neurons first, then the best-separated: each one's effect on every token.
        best_of.sort_by(|a, b| b.0.total_cmp(&a.0));
        best_of.truncate(self.show.len() + self.show_top);
        let mut effects = NeuronRows::default();
        for (shown, &(_, [l, n], best)) in best_of.iter().enumerate() {
            let (_, w_out) = in_out(&model, l)?;
            let effect: Vec<f32> =
                w_out.to_dtype(candle_core::DType::F32)?.narrow(0, n, 1)?.matmul(&w_u)?.flatten_all()?.to_vec1()?;
            for (t, e) in effect.into_iter().enumerate() {
                effects.key("mlp.hook_post", l as u32, n as u32);
                let in_best = tf.of_token[t].contains(&(best as u32));
                effects.strs(&[
                    ("neuron_name", format!("L{l}.{n}")),
                    ("token", tok.token_str(t as u32)),
                    ("best_feature", tf.features[best].name.clone()),
                    ("in_feature", if in_best { "yes" } else { "no" }.to_string()),
                ]);
                effects.ints(&[("shown", shown as i64)]);
                effects.f64s(&[("effect", e as f64)]);
            }
        }
        cx.write_table("effects", &mut effects.frame()?)
    }
}

/// (layer, vocab moments) of every neuron of a `weights` stage's table.
fn read_moments(path: &std::path::Path) -> Result<NeuronMoments> {
    let df = crate::store::table::read(path)?;
    let layer = df.column("layer")?.u32()?;
    let col =
        |n: &str| -> Result<Vec<f64>> { Ok(df.column(n)?.f64()?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()) };
    let (mean, var, skew, kurt) = (col("vocab_mean")?, col("vocab_var")?, col("vocab_skew")?, col("vocab_kurt")?);
    Ok((0..df.height())
        .map(|i| (layer.get(i).unwrap_or(0), Moments { mean: mean[i], var: var[i], skew: skew[i], kurt: kurt[i] }))
        .collect())
}

impl Spec {
    /// Neurons of each class (by this stage's thresholds) per layer and family member.
    fn class_counts(&self, family: &[(String, NeuronMoments)], layers: usize) -> Result<DataFrame> {
        let mut counts: BTreeMap<(String, u32, &str), u32> = BTreeMap::new();
        for (name, rows) in family {
            for l in 0..layers as u32 {
                for c in CLASSES {
                    counts.insert((name.clone(), l, c), 0);
                }
            }
            for (l, m) in rows {
                *counts
                    .entry((name.clone(), *l, vocab_class(m, self.kurt_threshold, self.partition_var)))
                    .or_default() += 1;
            }
        }
        let total = |k: &(String, u32, &str)| {
            family.iter().find(|f| f.0 == k.0).map(|f| f.1.iter().filter(|r| r.0 == k.1).count()).unwrap_or(0).max(1)
                as f64
        };
        Table::new().with("model", counts.keys().map(|k| k.0.clone()).collect::<Vec<_>>()).with("layer", counts.keys().map(|k| k.1).collect::<Vec<_>>()).with("class", counts.keys().map(|k| k.2).collect::<Vec<_>>()).with("neurons", counts.values().copied().collect::<Vec<_>>()).with("fraction", counts.iter().map(|(k, v)| *v as f64 / total(k)).collect::<Vec<_>>()).frame()
    }

    /// Per layer, statistic and percentile: the mean over the family and the min–max band.
    fn percentile_bands(&self, family: &[(String, NeuronMoments)], layers: usize) -> Result<DataFrame> {
        let (mut stat, mut layer, mut pct, mut mean, mut lo, mut hi) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let stats: [(&str, fn(&Moments) -> f64); 2] = [("vocab_kurt", |m| m.kurt), ("vocab_skew", |m| m.skew)];
        for (name, pick) in stats {
            for l in 0..layers as u32 {
                let per_model: Vec<Vec<f64>> = family
                    .iter()
                    .map(|(_, rows)| {
                        let mut v: Vec<f64> =
                            rows.iter().filter(|r| r.0 == l).map(|r| pick(&r.1)).filter(|x| x.is_finite()).collect();
                        v.sort_by(f64::total_cmp);
                        v
                    })
                    .collect();
                for &p in &self.percentiles {
                    let vals: Vec<f64> = per_model.iter().map(|v| percentile(v, p)).collect();
                    stat.push(name);
                    layer.push(l);
                    pct.push(format!("p{p}"));
                    mean.push(vals.iter().sum::<f64>() / vals.len() as f64);
                    lo.push(vals.iter().copied().fold(f64::INFINITY, f64::min));
                    hi.push(vals.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                }
            }
        }
        Table::new().with("stat", stat).with("layer", layer).with("percentile", pct).with("value", mean).with("low", lo).with("high", hi).frame()
    }
}
