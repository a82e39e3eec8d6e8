//! GPT-2 family (HF `GPT2LMHeadModel`): checkpoint names → TransformerLens parameters.

use super::checkpoint::{Checkpoint, Params};
use super::config::{get_f64, get_usize, token_id, Activation, Family, ModelConfig};
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde_json::Value;

/// The configuration of an HF GPT-2 `config.json`.
pub fn config(v: &Value) -> Result<ModelConfig> {
    let d_model = get_usize(v, &["n_embd"])?;
    let n_heads = get_usize(v, &["n_head"])?;
    let d_mlp = v.get("n_inner").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(d_model.saturating_mul(4));
    let act = Activation::parse(v.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new"))?;
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

/// TL's `convert_gpt2_weights`: split c_attn into per-head W_Q/W_K/W_V, tie W_U to W_E.
pub fn load(ck: &Checkpoint, cfg: &ModelConfig, dev: &Device) -> Result<Params> {
    let pre = if ck.has("transformer.wte.weight") { "transformer." } else { "" };
    let get = |n: &str| ck.get(&format!("{pre}{n}"), dev);
    let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
    let mut p = Params::new();
    let w_e = get("wte.weight")?;
    p.insert("pos_embed.W_pos".into(), get("wpe.weight")?);
    for l in 0..cfg.n_layers {
        let b = format!("h.{l}.");
        let t = format!("blocks.{l}.");
        p.insert(format!("{t}ln1.w"), get(&format!("{b}ln_1.weight"))?);
        p.insert(format!("{t}ln1.b"), get(&format!("{b}ln_1.bias"))?);
        let w = get(&format!("{b}attn.c_attn.weight"))?; // [d, 3d]
        let bias = get(&format!("{b}attn.c_attn.bias"))?; // [3d]
        for (i, n) in ["Q", "K", "V"].iter().enumerate() {
            let wi = w.narrow(1, i * d, d)?.reshape((d, h, dh))?.permute((1, 0, 2))?.contiguous()?;
            p.insert(format!("{t}attn.W_{n}"), wi);
            p.insert(format!("{t}attn.b_{n}"), bias.narrow(0, i * d, d)?.reshape((h, dh))?);
        }
        p.insert(format!("{t}attn.W_O"), get(&format!("{b}attn.c_proj.weight"))?.reshape((h, dh, d))?);
        p.insert(format!("{t}attn.b_O"), get(&format!("{b}attn.c_proj.bias"))?);
        p.insert(format!("{t}ln2.w"), get(&format!("{b}ln_2.weight"))?);
        p.insert(format!("{t}ln2.b"), get(&format!("{b}ln_2.bias"))?);
        p.insert(format!("{t}mlp.W_in"), get(&format!("{b}mlp.c_fc.weight"))?);
        p.insert(format!("{t}mlp.b_in"), get(&format!("{b}mlp.c_fc.bias"))?);
        p.insert(format!("{t}mlp.W_out"), get(&format!("{b}mlp.c_proj.weight"))?);
        p.insert(format!("{t}mlp.b_out"), get(&format!("{b}mlp.c_proj.bias"))?);
    }
    p.insert("ln_final.w".into(), get("ln_f.weight")?);
    p.insert("ln_final.b".into(), get("ln_f.bias")?);
    let w_u = if ck.has("lm_head.weight") { ck.get("lm_head.weight", dev)? } else { w_e.clone() };
    p.insert("unembed.W_U".into(), w_u.t()?.contiguous()?);
    p.insert("unembed.b_U".into(), Tensor::zeros(cfg.d_vocab, candle_core::DType::F32, dev)?);
    p.insert("embed.W_E".into(), w_e);
    Ok(p)
}
