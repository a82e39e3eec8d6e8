//! Saving a trained model as a Hugging Face GPT-2 folder (config.json, model.safetensors with
//! `transformer.*` names, tokenizer.json) that the GPT-2 loader reads unchanged.

use crate::model::Model;
use crate::store::atomic;
use anyhow::{Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Write `model` (tied embeddings) and its tokenizer into `dir`.
pub fn save_hf(model: &Model, tokenizer: &tokenizers::Tokenizer, dir: &Path) -> Result<()> {
    let cfg = &model.cfg;
    let eos = tokenizer.token_to_id(crate::data::bpe::EOS).unwrap_or(0);
    let config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": cfg.n_layers,
        "n_embd": cfg.d_model,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
        "n_positions": cfg.n_ctx,
        "n_ctx": cfg.n_ctx,
        "vocab_size": cfg.d_vocab,
        "activation_function": cfg.act,
        "layer_norm_epsilon": cfg.eps,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": true,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
    });
    std::fs::create_dir_all(dir)?;
    atomic::write(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let w = &model.weights;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |k: String, v: &Tensor| -> Result<()> {
        t.insert(k, v.contiguous()?.copy()?);
        Ok(())
    };
    put("transformer.wte.weight".into(), &w.w_e)?;
    put("transformer.wpe.weight".into(), w.w_pos.as_ref().context("trained GPT-2 has positions")?)?;
    let ln = |l: &crate::model::weights::Ln| -> Result<(Tensor, Tensor)> {
        Ok((l.w.clone().context("LayerNorm weight")?, l.b.clone().context("LayerNorm bias")?))
    };
    for (l, b) in w.blocks.iter().enumerate() {
        let p = format!("transformer.h.{l}.");
        let (w1, b1) = ln(&b.ln1)?;
        let (w2, b2) = ln(&b.ln2)?;
        put(format!("{p}ln_1.weight"), &w1)?;
        put(format!("{p}ln_1.bias"), &b1)?;
        put(format!("{p}ln_2.weight"), &w2)?;
        put(format!("{p}ln_2.bias"), &b2)?;
        put(format!("{p}attn.c_attn.weight"), &b.w_qkv)?;
        put(format!("{p}attn.c_attn.bias"), &b.b_qkv)?;
        put(format!("{p}attn.c_proj.weight"), &b.w_o)?;
        put(format!("{p}attn.c_proj.bias"), &b.b_o)?;
        put(format!("{p}mlp.c_fc.weight"), &b.w_in)?;
        put(format!("{p}mlp.c_fc.bias"), &b.b_in)?;
        put(format!("{p}mlp.c_proj.weight"), &b.w_out)?;
        put(format!("{p}mlp.c_proj.bias"), &b.b_out)?;
    }
    let (wf, bf) = ln(&w.ln_final)?;
    put("transformer.ln_f.weight".into(), &wf)?;
    put("transformer.ln_f.bias".into(), &bf)?;
    atomic::save_tensors(&dir.join("model.safetensors"), &t)?;
    let json = tokenizer.to_string(false).map_err(|e| anyhow::anyhow!("cannot save the tokenizer: {e}"))?;
    atomic::write(&dir.join("tokenizer.json"), json.as_bytes())
}
