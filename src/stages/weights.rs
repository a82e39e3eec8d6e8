//! `weights` stage: per-neuron weight statistics on the model's (processed) weights — norms, input
//! bias, cos(w_in, w_out), weight-decay penalty, moments of cos(W_U, w_out) over the vocabulary
//! (prediction / suppression / partition class) and of cos(W_E, w_in), top and bottom tokens,
//! neuron↔neuron composition (top-k) and neuron↔attention-head composition (Q, K, V, O).

use super::{TableDecl, Ranking, CheckCx, Dep, Stage, StageEnv, Cost, CostCx};
use crate::analysis::weights::{
    head_composition, in_out, moments, neuron_weights, unit_rows, vocab_class, vocab_cosines,
};
use crate::analysis::vocab::top_entries;
use crate::spec::{Diagnostic, ModelRef};
use crate::store::table::Table;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    /// Tokens listed per neuron (top and bottom of cos(W_U, w_out) and cos(W_E, w_in)).
    #[serde(default = "default_vocab_k")]
    pub vocab_k: usize,
    /// Neurons listed per neuron and composition kind.
    #[serde(default = "default_neuron_k")]
    pub neuron_k: usize,
    /// vocab_kurt above this: a prediction (skew > 0) or suppression (skew < 0) neuron.
    #[serde(default = "default_kurt")]
    pub kurt_threshold: f64,
    /// vocab_var above this (with low kurtosis): a partition neuron.
    #[serde(default = "default_var")]
    pub partition_var: f64,
}

fn default_vocab_k() -> usize {
    10
}
fn default_neuron_k() -> usize {
    10
}
fn default_kurt() -> f64 {
    10.0
}
fn default_var() -> f64 {
    0.005
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model)]
    }

    /// By the kurtosis of the neuron's logit effects: prediction and suppression neurons first.
    fn ranking(&self, table: &str) -> Option<Ranking> {
        (table == "weights").then_some(Ranking::desc("vocab_kurt"))
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("weights").ints(["layer", "neuron"]).floats(["w_in_norm", "w_out_norm", "input_bias", "in_out_sim", "l2_penalty", "vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt", "e_out_mean", "e_out_var", "e_out_skew", "e_out_kurt", "u_in_mean", "u_in_var", "u_in_skew", "u_in_kurt", "e_in_mean", "e_in_var", "e_in_skew", "e_in_kurt"]).texts(["vocab_class"]),
            TableDecl::new("vocab_tokens").ints(["layer", "neuron"]).texts(["basis", "which"]).ints(["rank"]).texts(["token"]).floats(["cos"]),
            TableDecl::new("neuron_comps").ints(["layer", "neuron"]).texts(["kind", "which"]).ints(["rank", "other_layer", "other_neuron"]).floats(["cos"]),
        ]
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // cos(W_U, ·) and cos(W_E, ·) of every neuron's w_out and w_in over the vocabulary, and
        // the neuron-by-neuron similarities (in·in, in·out, out·in, out·out).
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let (n, d, v) = (cfg.n_neurons() as f64, cfg.d_model as f64, cfg.d_vocab as f64);
        let vocab = 2.0 * 4.0 * n * d * v;
        let neurons = 2.0 * 4.0 * n * n * d;
        // Each cosine of a neuron with the vocabulary (four kinds) is read by its moments and two
        // selections (top and bottom), each neuron↔neuron cosine (four kinds) by two selections,
        // in parallel over neurons: one value each at the neuron-statistics rate (measured on GPT-2
        // small's shape).
        let values = 4.0 * n * v + 4.0 * n * n;
        Cost { values, ..Cost::new(vocab + neurons, cx.weights(&self.model) * 2.0 + 4.0 * cfg.d_mlp as f64 * v) }
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let Some(cfg) = cx.config(&self.model) else { return };
        cx.at_most("vocab_k", self.vocab_k, cfg.d_vocab, "the vocabulary", out);
        cx.at_most("neuron_k", self.neuron_k, cfg.n_neurons(), "the model's neurons", out);
        // Four neuron × vocabulary cosine matrices per layer, and 8 × vocab_k rows per neuron.
        let (neurons, vocab) = (cfg.n_neurons() as f64, cfg.d_vocab as f64);
        let per_layer = 8.0 * 4.0 * cfg.d_mlp as f64 * vocab;
        let rows = neurons * (8.0 * self.vocab_k.min(cfg.d_vocab) as f64 + 6.0 * self.neuron_k as f64);
        cx.memory(per_layer + 64.0 * rows, "the weight statistics", "lower vocab_k or neuron_k", out);
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let tok = model.tokenizer.as_ref();
        let cfg = &model.cfg;
        let w_u_unit = unit_rows(&model.weights.w_u.t()?.contiguous()?)?; // [vocab, d]
        let w_e_unit = unit_rows(&model.weights.w_e)?;
        let mut cols: HashMap<&str, Vec<f64>> = HashMap::new();
        // Moments of the other three compositions: e_out_mean … e_in_kurt.
        const STATS: [&str; 4] = ["mean", "var", "skew", "kurt"];
        let mut other_cols: Vec<(String, Vec<f64>)> =
            ["e_out", "u_in", "e_in"].iter().flat_map(|p| STATS.map(|s| (format!("{p}_{s}"), Vec::new()))).collect();
        let (mut layer_c, mut neuron_c, mut class_c) = (Vec::new(), Vec::new(), Vec::new());
        let mut vt: (Vec<u32>, Vec<u32>, Vec<&str>, Vec<&str>, Vec<u32>, Vec<String>, Vec<f32>) = Default::default();
        let mut progress = cx.progress(cfg.n_layers as u64, "layers");
        for l in 0..cfg.n_layers {
            let nw = neuron_weights(&model, l)?;
            let (w_in, w_out) = in_out(&model, l)?;
            let u_out: Vec<Vec<f32>> = vocab_cosines(&w_out, &w_u_unit)?.to_vec2()?;
            let e_out: Vec<Vec<f32>> = vocab_cosines(&w_out, &w_e_unit)?.to_vec2()?;
            let u_in: Vec<Vec<f32>> = vocab_cosines(&w_in, &w_u_unit)?.to_vec2()?;
            let e_in: Vec<Vec<f32>> = vocab_cosines(&w_in, &w_e_unit)?.to_vec2()?;
            // Each neuron's four rows over the vocabulary: moments, top and bottom tokens (in parallel).
            let bases = [("u_out", &u_out), ("e_out", &e_out), ("u_in", &u_in), ("e_in", &e_in)];
            let per_neuron: Vec<_> = (0..cfg.d_mlp)
                .into_par_iter()
                .map(|n| {
                    let m = bases.map(|(_, rows)| moments(&rows[n]));
                    let t = bases.map(|(_, rows)| [false, true].map(|lowest| top_entries(&rows[n], self.vocab_k, lowest)));
                    (m, t)
                })
                .collect();
            for (n, (m, tops)) in per_neuron.into_iter().enumerate() {
                layer_c.push(l as u32);
                neuron_c.push(n as u32);
                let [mu, others @ ..] = m;
                class_c.push(vocab_class(&mu, self.kurt_threshold, self.partition_var));
                for (k, v) in [
                    ("w_in_norm", nw.w_in_norm[n] as f64),
                    ("w_out_norm", nw.w_out_norm[n] as f64),
                    ("input_bias", nw.input_bias[n] as f64),
                    ("in_out_sim", nw.in_out_sim[n] as f64),
                    ("l2_penalty", nw.l2_penalty[n] as f64),
                    ("vocab_mean", mu.mean),
                    ("vocab_var", mu.var),
                    ("vocab_skew", mu.skew),
                    ("vocab_kurt", mu.kurt),
                ] {
                    cols.entry(k).or_default().push(v);
                }
                for (p, m) in others.iter().enumerate() {
                    for (s, v) in [m.mean, m.var, m.skew, m.kurt].into_iter().enumerate() {
                        other_cols[p * STATS.len() + s].1.push(v);
                    }
                }
                for (&(basis, _), ends) in bases.iter().zip(tops) {
                    for (which, entries) in ["top", "bottom"].into_iter().zip(ends) {
                        for (rank, (t, v)) in entries.into_iter().enumerate() {
                            vt.0.push(l as u32);
                            vt.1.push(n as u32);
                            vt.2.push(basis);
                            vt.3.push(which);
                            vt.4.push(rank as u32);
                            vt.5.push(tok.map(|k| k.token_str(t as u32)).unwrap_or_else(|| t.to_string()));
                            vt.6.push(v);
                        }
                    }
                }
            }
            progress.tick(1)?;
        }
        let order = [
            "w_in_norm",
            "w_out_norm",
            "input_bias",
            "in_out_sim",
            "l2_penalty",
            "vocab_mean",
            "vocab_var",
            "vocab_skew",
            "vocab_kurt",
        ];
        let mut table = Table::new().with("layer", layer_c).with("neuron", neuron_c);
        for k in order {
            table.push(k, cols.remove(k).unwrap_or_default());
        }
        for (k, v) in other_cols {
            table.push(&k, v);
        }
        table.push("vocab_class", class_c);
        cx.write_table("weights", &mut table.frame()?)?;
        let mut df = Table::new().with("layer", vt.0).with("neuron", vt.1).with("basis", vt.2).with("which", vt.3).with("rank", vt.4).with("token", vt.5).with("cos", vt.6).frame()?;
        cx.write_table("vocab_tokens", &mut df)?;
        self.compositions(cx, &model)
    }
}

impl Spec {
    /// Neuron↔neuron composition (cos of in/out vectors, self excluded; top-k per kind) and
    /// neuron↔head composition tensors.
    fn compositions(&self, cx: &dyn StageEnv, model: &crate::model::Model) -> Result<()> {
        let cfg = &model.cfg;
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for l in 0..cfg.n_layers {
            let (i, o) = in_out(model, l)?;
            ins.push(unit_rows(&i)?);
            outs.push(unit_rows(&o)?);
        }
        let (all_in, all_out) = (Tensor::cat(&ins, 0)?, Tensor::cat(&outs, 0)?); // [L·d_mlp, d]
        let total = all_in.dim(0)?;
        let mut nc: (Vec<u32>, Vec<u32>, Vec<&str>, Vec<&str>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<f32>) =
            Default::default();
        for (kind, a, b) in [
            ("in_in", &all_in, &all_in),
            ("in_out", &all_in, &all_out),
            ("out_in", &all_out, &all_in),
            ("out_out", &all_out, &all_out),
        ] {
            for start in (0..total).step_by(1024) {
                let n = 1024.min(total - start);
                let sims: Vec<Vec<f32>> = a.narrow(0, start, n)?.matmul(&b.t()?)?.to_vec2()?;
                // Top and bottom of each row, itself excluded (in parallel).
                let ends: Vec<_> = sims
                    .into_par_iter()
                    .enumerate()
                    .map(|(i, mut row)| {
                        row[start + i] = 0.0;
                        [false, true].map(|lowest| top_entries(&row, self.neuron_k, lowest))
                    })
                    .collect();
                for (i, ends) in ends.into_iter().enumerate() {
                    let me = start + i;
                    for (which, entries) in ["top", "bottom"].into_iter().zip(ends) {
                        for (rank, (j, v)) in entries.into_iter().enumerate() {
                            nc.0.push((me / cfg.d_mlp) as u32);
                            nc.1.push((me % cfg.d_mlp) as u32);
                            nc.2.push(kind);
                            nc.3.push(which);
                            nc.4.push(rank as u32);
                            nc.5.push((j / cfg.d_mlp) as u32);
                            nc.6.push((j % cfg.d_mlp) as u32);
                            nc.7.push(v);
                        }
                    }
                }
            }
        }
        let mut df = Table::new().with("layer", nc.0).with("neuron", nc.1).with("kind", nc.2).with("which", nc.3).with("rank", nc.4).with("other_layer", nc.5).with("other_neuron", nc.6).with("cos", nc.7).frame()?;
        cx.write_table("neuron_comps", &mut df)?;
        // Head composition: [neuron layer · d_mlp, head layer · heads] per kind.
        let mut heads: HashMap<String, Vec<Tensor>> = HashMap::new();
        for nl in 0..cfg.n_layers {
            let mut row: HashMap<&str, Vec<Tensor>> = HashMap::new();
            for hl in 0..cfg.n_layers {
                let c = head_composition(model, nl, hl)?;
                for (k, t) in [("q", c.q), ("k", c.k), ("v", c.v), ("o", c.o)] {
                    row.entry(k).or_default().push(t);
                }
            }
            for (k, ts) in row {
                heads.entry(format!("{k}_comp")).or_default().push(Tensor::cat(&ts, 1)?);
            }
        }
        let mut out = HashMap::new();
        for (k, ts) in heads {
            out.insert(k, Tensor::cat(&ts, 0)?.to_device(&Device::Cpu)?);
        }
        crate::store::atomic::save_tensors(&cx.out().join("head_comps.safetensors"), &out)
    }
}
