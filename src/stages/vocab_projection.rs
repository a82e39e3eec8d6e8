//! `vocab_projection` stage: chosen neurons' output (or input) weights against the embedding or
//! unembedding (dot or cosine; top and bottom tokens), the reverse search (which neurons of any
//! layer write most to given tokens) and the monotokenic score of the "an" neuron study.

use super::{TableDecl, CheckCx, Cost, CostCx, Dep, Stage, StageEnv};
use crate::analysis::vocab::{extremes, monotokenic, neuron_vectors, scores, token_column, top_entries, Basis, Side};
use crate::spec::{Diagnostic, ModelRef};
use crate::store::table::Table;
use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    /// Neurons to project (`"L31.N892"`).
    #[serde(default)]
    pub neurons: Vec<String>,
    /// Tokens whose top writing neurons are listed (reverse search), e.g. `[" an"]`.
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default = "default_basis")]
    pub basis: Basis,
    #[serde(default = "default_side")]
    pub side: Side,
    /// Cosine instead of dot product.
    #[serde(default)]
    pub cosine: bool,
    #[serde(default = "default_k")]
    pub top_k: usize,
    /// Also list this many neurons with the highest monotokenic score (0 = skip the scan).
    #[serde(default)]
    pub monotokenic: usize,
}

fn default_basis() -> Basis {
    Basis::Unembed
}
fn default_side() -> Side {
    Side::Out
}
fn default_k() -> usize {
    20
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model)]
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("neuron_tokens").texts(["neuron", "which"]).ints(["rank", "token"]).texts(["token_str"]).floats(["score"]),
            TableDecl::new("token_neurons").texts(["token"]).ints(["rank", "layer", "neuron"]).floats(["score"]),
            TableDecl::new("monotokenic").ints(["layer", "neuron"]).floats(["score"]).texts(["token"]),
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let Some(cfg) = cx.config(&self.model) else { return };
        for n in &self.neurons {
            match crate::model::hooks::parse_neuron(n) {
                Some((l, i)) if l < cfg.n_layers && i < cfg.d_mlp => {}
                Some((l, i)) => out.push(Diagnostic::at(
                    self.model.span(),
                    format!(
                        "vocab_projection: neuron {l}.{i} out of range ({} layers × {} neurons)",
                        cfg.n_layers, cfg.d_mlp
                    ),
                )),
                None => out.push(Diagnostic::at(
                    self.model.span(),
                    format!("vocab_projection: '{n}' is not a neuron (write L31.N892)"),
                )),
            }
        }
    }

    fn cost(&self, cx: &CostCx) -> Cost {
        // Each listed neuron against the vocabulary, each listed token against every neuron; with
        // `monotokenic`, every neuron against the vocabulary (chunks of 512), each score read once (at
        // the rate of logits read into statistics).
        let Some(cfg) = cx.config(&self.model) else { return Cost::default() };
        let (d, v, all) = (cfg.d_model as f64, cfg.d_vocab as f64, cfg.n_neurons() as f64);
        let listed = 2.0 * d * (v * self.neurons.len() as f64 + all * self.tokens.len() as f64);
        let scan = if self.monotokenic > 0 { all * v } else { 0.0 };
        let chunk = if self.monotokenic > 0 { 4.0 * 512.0 * v } else { 4.0 * v };
        Cost { logits: scan, ..Cost::new(listed + 2.0 * d * scan, cx.weights(&self.model) + chunk) }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let tok = model.tokenizer()?;
        let d_mlp = model.cfg.d_mlp;
        let mut nt: (Vec<String>, Vec<String>, Vec<u32>, Vec<u32>, Vec<String>, Vec<f32>) = Default::default();
        for name in &self.neurons {
            let (l, n) = crate::model::hooks::parse_neuron(name).with_context(|| format!("'{name}' is not a neuron"))?;
            let w = neuron_vectors(&model, l, self.side)?.get(n)?.unsqueeze(0)?;
            let s: Vec<f32> = scores(&model, &w, self.basis, self.cosine)?.squeeze(0)?.to_vec1()?;
            for (which, lowest) in [("top", false), ("bottom", true)] {
                for (rank, (t, v)) in top_entries(&s, self.top_k, lowest).into_iter().enumerate() {
                    nt.0.push(format!("L{l}.N{n}"));
                    nt.1.push(which.into());
                    nt.2.push(rank as u32);
                    nt.3.push(t as u32);
                    nt.4.push(tok.token_str(t as u32));
                    nt.5.push(v);
                }
            }
        }
        let mut df = Table::new().with("neuron", nt.0).with("which", nt.1).with("rank", nt.2).with("token", nt.3).with("token_str", nt.4).with("score", nt.5).frame()?;
        cx.write_table("neuron_tokens", &mut df)?;
        let mut tn: (Vec<String>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<f32>) = Default::default();
        for t in &self.tokens {
            let id = tok.single_token(t)?;
            let col = token_column(&model, id, self.side, self.basis)?;
            for (rank, (i, v)) in top_entries(&col, self.top_k, false).into_iter().enumerate() {
                tn.0.push(t.clone());
                tn.1.push(rank as u32);
                tn.2.push((i / d_mlp) as u32);
                tn.3.push((i % d_mlp) as u32);
                tn.4.push(v);
            }
        }
        let mut df = Table::new().with("token", tn.0).with("rank", tn.1).with("layer", tn.2).with("neuron", tn.3).with("score", tn.4).frame()?;
        cx.write_table("token_neurons", &mut df)?;
        let mut mono: Vec<(usize, f32, u32)> = Vec::new();
        if self.monotokenic > 0 {
            let mut progress = cx.progress(model.cfg.n_neurons() as u64, "neurons");
            let e = extremes(&model, self.side, self.basis, 512, |n| progress.tick(n as u64))?;
            mono = (0..model.cfg.n_neurons())
                .filter_map(|i| monotokenic(&e, i).map(|s| (i, s, e.neuron_best[i].0)))
                .collect();
            mono.sort_by(|a, b| b.1.total_cmp(&a.1));
            mono.truncate(self.monotokenic);
        }
        let mut df = Table::new().with("layer", mono.iter().map(|m| (m.0 / d_mlp) as u32).collect::<Vec<_>>()).with("neuron", mono.iter().map(|m| (m.0 % d_mlp) as u32).collect::<Vec<_>>()).with("score", mono.iter().map(|m| m.1).collect::<Vec<_>>()).with("token", mono.iter().map(|m| tok.token_str(m.2)).collect::<Vec<_>>()).frame()?;
        cx.write_table("monotokenic", &mut df)
    }
}
