//! GPT-NeoX / Pythia family (HF `GPTNeoXForCausalLM`): checkpoint names → TransformerLens parameters.

use super::checkpoint::{Checkpoint, Params};
use super::config::{get_f64, get_usize, token_id, Activation, Family, ModelConfig};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// The configuration of an HF GPT-NeoX `config.json`.
pub fn config(v: &Value) -> Result<ModelConfig> {
    let d_model = get_usize(v, &["hidden_size"])?;
    let n_heads = get_usize(v, &["num_attention_heads"])?;
    let d_head = d_model.checked_div(n_heads).unwrap_or(0);
    let pct = get_f64(v, &["partial_rotary_factor", "rotary_pct"], 1.0);
    let act = Activation::parse(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"))?;
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

/// TL's `convert_neox_weights`: query_key_value is laid out (head, qkv, d_head) on its output axis.
pub fn load(ck: &Checkpoint, cfg: &ModelConfig, dev: &Device) -> Result<Params> {
    let pre = if ck.has("gpt_neox.embed_in.weight") { "gpt_neox." } else { "" };
    let get = |n: &str| ck.get(&format!("{pre}{n}"), dev);
    let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
    let mut p = Params::new();
    p.insert("embed.W_E".into(), get("embed_in.weight")?);
    for l in 0..cfg.n_layers {
        let b = format!("layers.{l}.");
        let t = format!("blocks.{l}.");
        p.insert(format!("{t}ln1.w"), get(&format!("{b}input_layernorm.weight"))?);
        p.insert(format!("{t}ln1.b"), get(&format!("{b}input_layernorm.bias"))?);
        // [(head, qkv, d_head), d] -> per qkv: [head, d, d_head]
        let w = get(&format!("{b}attention.query_key_value.weight"))?.reshape((h, 3, dh, d))?;
        let bias = get(&format!("{b}attention.query_key_value.bias"))?.reshape((h, 3, dh))?;
        for (i, n) in ["Q", "K", "V"].iter().enumerate() {
            let wi = w.narrow(1, i, 1)?.squeeze(1)?.permute((0, 2, 1))?.contiguous()?;
            p.insert(format!("{t}attn.W_{n}"), wi);
            p.insert(format!("{t}attn.b_{n}"), bias.narrow(1, i, 1)?.squeeze(1)?.contiguous()?);
        }
        // dense: [d, (head, d_head)] -> [head, d_head, d]
        let wo = get(&format!("{b}attention.dense.weight"))?.reshape((d, h, dh))?.permute((1, 2, 0))?.contiguous()?;
        p.insert(format!("{t}attn.W_O"), wo);
        p.insert(format!("{t}attn.b_O"), get(&format!("{b}attention.dense.bias"))?);
        p.insert(format!("{t}ln2.w"), get(&format!("{b}post_attention_layernorm.weight"))?);
        p.insert(format!("{t}ln2.b"), get(&format!("{b}post_attention_layernorm.bias"))?);
        p.insert(format!("{t}mlp.W_in"), get(&format!("{b}mlp.dense_h_to_4h.weight"))?.t()?.contiguous()?);
        p.insert(format!("{t}mlp.b_in"), get(&format!("{b}mlp.dense_h_to_4h.bias"))?);
        p.insert(format!("{t}mlp.W_out"), get(&format!("{b}mlp.dense_4h_to_h.weight"))?.t()?.contiguous()?);
        p.insert(format!("{t}mlp.b_out"), get(&format!("{b}mlp.dense_4h_to_h.bias"))?);
    }
    p.insert("ln_final.w".into(), get("final_layer_norm.weight")?);
    p.insert("ln_final.b".into(), get("final_layer_norm.bias")?);
    p.insert("unembed.W_U".into(), ck.get("embed_out.weight", dev)?.t()?.contiguous()?);
    p.insert("unembed.b_U".into(), Tensor::zeros(cfg.d_vocab, DType::F32, dev)?);
    Ok(p)
}
