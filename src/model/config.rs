//! Model configuration: the shape and options of a hooked transformer, read from a `config.json`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Architecture families lantern implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Gpt2,
    NeoX,
    Solu,
}

/// The MLP non-linearity.
// Configs and experiment files name it through serde (aliases for other spellings), so the names
// live here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GPT-2's tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// Exact erf GELU.
    Gelu,
    Relu,
    /// x·softmax(x) followed by a LayerNorm over the neurons (TL `solu_ln`).
    SoluLn,
}

/// The shape and options of a model, family independent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub act: Activation,
    pub eps: f64,
    /// Rotary dimensions per head (0 = learned absolute positions).
    pub rotary_dim: usize,
    pub rotary_base: f64,
    /// Attention and MLP read the same residual (GPT-J / NeoX parallel residual).
    pub parallel_attn_mlp: bool,
    /// Attention scores also divided by layer index + 1 (stanford-crfm GPT-2).
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Score written above the diagonal (TL: -inf; NeelNanda checkpoints: -1e5).
    pub masked_score: f32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
}

/// The HF architectures lantern can load, for error messages.
pub const SUPPORTED: &str = "GPT2LMHeadModel (gpt2, distilgpt2, stanford-crfm), \
GPTNeoXForCausalLM (Pythia), and NeelNanda TransformerLens checkpoints (solu-*, gelu-*)";

impl ModelConfig {
    /// Refuse shapes no model has (a zero or an absurd size), before anything is computed or
    /// allocated from them.
    pub fn check(&self) -> Result<()> {
        match self.size_problem() {
            Some((_, msg)) => bail!("{msg}"),
            None => Ok(()),
        }
    }

    /// The first impossible size, by the name of the field that holds it, and why.
    pub fn size_problem(&self) -> Option<(&'static str, String)> {
        let sizes = [
            ("n_layers", self.n_layers, 1 << 16),
            ("d_model", self.d_model, 1 << 20),
            ("n_heads", self.n_heads, 1 << 16),
            ("d_head", self.d_head, 1 << 20),
            ("d_mlp", self.d_mlp, 1 << 24),
            ("d_vocab", self.d_vocab, 1 << 24),
            ("n_ctx", self.n_ctx, 1 << 24),
        ];
        for (name, v, max) in sizes {
            if v == 0 || v > max {
                return Some((name, format!("{name} = {v} is not a model size (1 to {max})")));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0 && self.rotary_base.is_finite()) {
            return Some(("eps", "eps and the rotary base must be finite".into()));
        }
        if self.rotary_dim > self.d_head {
            return Some((
                "rotary_dim",
                format!("rotary_dim {} is larger than d_head {}", self.rotary_dim, self.d_head),
            ));
        }
        None
    }

    /// A GPT-2-architecture configuration of the given shape (gelu_new, LayerNorm eps 1e-5, learned
    /// positions, BOS = EOS = the last token).
    pub fn gpt2(
        n_layers: usize,
        d_model: usize,
        n_heads: usize,
        d_mlp: usize,
        d_vocab: usize,
        n_ctx: usize,
    ) -> ModelConfig {
        ModelConfig {
            family: Family::Gpt2,
            n_layers,
            d_model,
            n_heads,
            d_head: d_model.checked_div(n_heads).unwrap_or(0),
            d_mlp,
            d_vocab,
            n_ctx,
            act: Activation::GeluNew,
            eps: 1e-5,
            rotary_dim: 0,
            rotary_base: 10000.0,
            parallel_attn_mlp: false,
            scale_attn_by_inverse_layer_idx: false,
            masked_score: f32::NEG_INFINITY,
            bos_token_id: (d_vocab as u32).saturating_sub(1),
            eos_token_id: (d_vocab as u32).saturating_sub(1),
        }
    }

    /// Parameters of one MLP neuron layer and of the whole model, for display.
    pub fn n_neurons(&self) -> usize {
        self.n_layers * self.d_mlp
    }
}

pub(super) fn get_usize(v: &Value, keys: &[&str]) -> Result<usize> {
    for k in keys {
        if let Some(x) = v.get(*k).and_then(Value::as_u64) {
            return Ok(x as usize);
        }
    }
    bail!("missing field '{}'", keys[0])
}

pub(super) fn get_f64(v: &Value, keys: &[&str], default: f64) -> f64 {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64)).unwrap_or(default)
}

pub(super) fn token_id(v: &Value, key: &str, default: u32) -> u32 {
    v.get(key).and_then(Value::as_u64).map(|x| x as u32).unwrap_or(default)
}

impl Activation {
    /// The activation a config names.
    pub fn parse(name: &str) -> Result<Activation> {
        serde_json::from_value(Value::String(name.into()))
            .map_err(|_| anyhow::anyhow!("unsupported activation '{name}' (gelu_new, gelu, relu, solu_ln)"))
    }
}
