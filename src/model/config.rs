//! Model configuration: the shape and options of a hooked transformer, read from a `config.json`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Architecture families lantern implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Gpt2,
    NeoX,
    Solu,
}

/// The MLP non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GPT-2's tanh approximation.
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
    /// Read a Hugging Face `config.json` (or a NeelNanda TL config).
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model config {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_json(&v).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn from_json(v: &Value) -> Result<ModelConfig> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let cfg = match model_type {
            "gpt2" => gpt2_config(v),
            "gpt_neox" => neox_config(v),
            "" if v.get("act_fn").is_some() && v.get("d_model").is_some() => super::solu::tl_config(v),
            other => {
                let arch = v.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or(other);
                bail!("unsupported architecture '{arch}'; lantern supports {SUPPORTED}")
            }
        }?;
        cfg.check()?;
        Ok(cfg)
    }

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

fn token_id(v: &Value, key: &str, default: u32) -> u32 {
    v.get(key).and_then(Value::as_u64).map(|x| x as u32).unwrap_or(default)
}

fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluNew,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        "solu_ln" => Activation::SoluLn,
        other => bail!("unsupported activation '{other}' (gelu_new, gelu, relu, solu_ln)"),
    })
}

fn gpt2_config(v: &Value) -> Result<ModelConfig> {
    let d_model = get_usize(v, &["n_embd"])?;
    let n_heads = get_usize(v, &["n_head"])?;
    let d_mlp = v.get("n_inner").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(d_model.saturating_mul(4));
    let act = activation(v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"))?;
    let vocab = get_usize(v, &["vocab_size"])?;
    Ok(ModelConfig {
        family: Family::Gpt2,
        n_layers: get_usize(v, &["n_layer"])?,
        d_model,
        n_heads,
        d_head: d_model.checked_div(n_heads).unwrap_or(0),
        d_mlp,
        d_vocab: vocab,
        n_ctx: get_usize(v, &["n_positions", "n_ctx"])?,
        act,
        eps: get_f64(v, &["layer_norm_epsilon"], 1e-5),
        rotary_dim: 0,
        rotary_base: 10000.0,
        parallel_attn_mlp: false,
        scale_attn_by_inverse_layer_idx: v
            .get("scale_attn_by_inverse_layer_idx")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        masked_score: f32::NEG_INFINITY,
        bos_token_id: token_id(v, "bos_token_id", (vocab as u32).saturating_sub(1)),
        eos_token_id: token_id(v, "eos_token_id", (vocab as u32).saturating_sub(1)),
    })
}

fn neox_config(v: &Value) -> Result<ModelConfig> {
    let d_model = get_usize(v, &["hidden_size"])?;
    let n_heads = get_usize(v, &["num_attention_heads"])?;
    let d_head = d_model.checked_div(n_heads).unwrap_or(0);
    let pct = get_f64(v, &["partial_rotary_factor", "rotary_pct"], 1.0);
    let act = activation(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"))?;
    Ok(ModelConfig {
        family: Family::NeoX,
        n_layers: get_usize(v, &["num_hidden_layers"])?,
        d_model,
        n_heads,
        d_head,
        d_mlp: get_usize(v, &["intermediate_size"])?,
        d_vocab: get_usize(v, &["vocab_size"])?,
        n_ctx: get_usize(v, &["max_position_embeddings"])?,
        act,
        eps: get_f64(v, &["layer_norm_eps"], 1e-5),
        rotary_dim: (pct * d_head as f64) as usize,
        rotary_base: get_f64(v, &["rope_theta", "rotary_emb_base"], 10000.0),
        parallel_attn_mlp: v.get("use_parallel_residual").and_then(Value::as_bool).unwrap_or(true),
        scale_attn_by_inverse_layer_idx: false,
        masked_score: f32::NEG_INFINITY,
        bos_token_id: token_id(v, "bos_token_id", 0),
        eos_token_id: token_id(v, "eos_token_id", 0),
    })
}
