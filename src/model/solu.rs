//! NeelNanda TransformerLens-native checkpoints (SoLU / GELU `*_C4_Code` models): TL config, TL keys.

use super::checkpoint::{Checkpoint, Params};
use super::config::{get_usize, Activation, Family, ModelConfig};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// TL's `convert_neel_model_config`: only these fields matter; eps is always 1e-5.
pub fn config(v: &Value) -> Result<ModelConfig> {
    let act = Activation::parse(v.get("act_fn").and_then(Value::as_str).unwrap_or(""))?;
    if v.get("attn_only").and_then(Value::as_bool).unwrap_or(false) {
        bail!("attention-only models are not supported");
    }
    if v.get("shortformer_pos").and_then(Value::as_bool).unwrap_or(false) {
        bail!("shortformer positional embeddings are not supported");
    }
    if v.get("final_rms").and_then(Value::as_bool).unwrap_or(false) {
        bail!("RMSNorm models (final_rms = true) are not supported");
    }
    let d_model = get_usize(v, &["d_model"])?;
    let n_heads = get_usize(v, &["n_heads"])?;
    let mut cfg = ModelConfig::gpt2(
        get_usize(v, &["n_layers"])?,
        d_model,
        n_heads,
        get_usize(v, &["d_mlp"])?,
        get_usize(v, &["d_vocab"])?,
        get_usize(v, &["n_ctx"])?,
    );
    cfg.family = Family::Solu;
    cfg.d_head = get_usize(v, &["d_head"])?;
    cfg.act = act;
    (cfg.bos_token_id, cfg.eos_token_id) = (0, 0);
    Ok(cfg)
}

/// The checkpoint's keys are TL names already; buffers (mask, IGNORE) are not parameters.
/// Returns the parameters and the masked score the checkpoint's IGNORE buffer holds.
pub fn load(ck: &Checkpoint, cfg: &ModelConfig, dev: &Device) -> Result<(Params, f32)> {
    let mut p = Params::new();
    let mut masked = cfg.masked_score;
    for name in ck.names() {
        if name.ends_with("attn.mask") {
            continue;
        }
        if name.ends_with("attn.IGNORE") {
            masked = ck.get(&name, dev)?.flatten_all()?.to_vec1::<f32>()?[0];
            continue;
        }
        p.insert(name.clone(), ck.get(&name, dev)?);
    }
    if !p.contains_key("unembed.b_U") {
        p.insert("unembed.b_U".into(), Tensor::zeros(cfg.d_vocab, DType::F32, dev)?);
    }
    Ok((p, masked))
}
