//! TransformerLens weight processing on TL-layout parameters: fold_ln, center_writing_weights,
//! center_unembed, fold_value_biases, refactor_factored_attn_matrices (in TL's order).

use super::checkpoint::Params;
use super::config::{Family, ModelConfig};
use anyhow::{Context, Result};
use candle_core::{Tensor, D};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which processing steps to apply; `default` is TL's `from_pretrained` default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    #[serde(default)]
    pub fold_ln: bool,
    #[serde(default)]
    pub center_writing_weights: bool,
    #[serde(default)]
    pub center_unembed: bool,
    #[serde(default)]
    pub fold_value_biases: bool,
    #[serde(default)]
    pub refactor_factored_attn_matrices: bool,
}

impl Processing {
    pub const NONE: Processing = Processing {
        fold_ln: false,
        center_writing_weights: false,
        center_unembed: false,
        fold_value_biases: false,
        refactor_factored_attn_matrices: false,
    };
    pub const DEFAULT: Processing = Processing {
        fold_ln: true,
        center_writing_weights: true,
        center_unembed: true,
        fold_value_biases: true,
        refactor_factored_attn_matrices: false,
    };

    /// `none`, `default`, or `default+refactor` (TL's setting for the "an" neuron study).
    pub fn from_name(name: &str) -> Option<Processing> {
        match name {
            "none" | "raw" => Some(Self::NONE),
            "default" | "processed" => Some(Self::DEFAULT),
            "default+refactor" => Some(Processing { refactor_factored_attn_matrices: true, ..Self::DEFAULT }),
            _ => None,
        }
    }
}

fn take(p: &mut Params, k: &str) -> Result<Tensor> {
    p.remove(k).with_context(|| format!("missing parameter {k}"))
}

fn get<'a>(p: &'a Params, k: &str) -> Result<&'a Tensor> {
    p.get(k).with_context(|| format!("missing parameter {k}"))
}

/// Subtract the mean over `dim` (keepdim).
fn center(t: &Tensor, dim: usize) -> Result<Tensor> {
    Ok(t.broadcast_sub(&t.mean_keepdim(dim)?)?)
}

/// Fold a LayerNorm (w, b) into weights that read its output along `read_dim` (d_model axis):
/// b_new = b_old + Σ_d lnb[d]·W[.., d, ..]; W_new = lnw[d]·W; optionally centre W over d.
fn fold_into(
    w: &Tensor,
    bias: &Tensor,
    ln_w: &Tensor,
    ln_b: &Tensor,
    read_dim: usize,
    centre: bool,
) -> Result<(Tensor, Tensor)> {
    let mut shape = vec![1usize; w.rank()];
    shape[read_dim] = ln_w.dim(0)?;
    let lw = ln_w.reshape(shape.clone())?;
    let lb = ln_b.reshape(shape)?;
    let new_b = (bias + w.broadcast_mul(&lb)?.sum(read_dim)?)?;
    let mut new_w = w.broadcast_mul(&lw)?;
    if centre {
        new_w = center(&new_w, read_dim)?;
    }
    Ok((new_w, new_b))
}

/// Apply the chosen steps in TL's order.
pub fn process(p: &mut Params, cfg: &ModelConfig, opts: Processing) -> Result<()> {
    if opts.fold_ln {
        fold_layer_norm(p, cfg, opts.center_writing_weights)?;
    }
    if opts.center_writing_weights {
        center_writing_weights(p, cfg)?;
    }
    if opts.center_unembed {
        let w_u = take(p, "unembed.W_U")?;
        p.insert("unembed.W_U".into(), center(&w_u, 1)?);
        let b_u = take(p, "unembed.b_U")?;
        p.insert("unembed.b_U".into(), center(&b_u, 0)?);
    }
    if opts.fold_value_biases {
        fold_value_biases(p, cfg)?;
    }
    if opts.refactor_factored_attn_matrices {
        super::refactor::refactor_factored_attn_matrices(p, cfg)?;
    }
    Ok(())
}

fn fold_layer_norm(p: &mut Params, cfg: &ModelConfig, centre: bool) -> Result<()> {
    for l in 0..cfg.n_layers {
        let t = format!("blocks.{l}.");
        let (w1, b1) = (take(p, &format!("{t}ln1.w"))?, take(p, &format!("{t}ln1.b"))?);
        for n in ["Q", "K", "V"] {
            let (wk, bk) = (format!("{t}attn.W_{n}"), format!("{t}attn.b_{n}"));
            let (w, b) = fold_into(get(p, &wk)?, get(p, &bk)?, &w1, &b1, 1, centre)?;
            p.insert(wk, w);
            p.insert(bk, b);
        }
        let (w2, b2) = (take(p, &format!("{t}ln2.w"))?, take(p, &format!("{t}ln2.b"))?);
        let (wk, bk) = (format!("{t}mlp.W_in"), format!("{t}mlp.b_in"));
        let (w, b) = fold_into(get(p, &wk)?, get(p, &bk)?, &w2, &b2, 0, centre)?;
        p.insert(wk, w);
        p.insert(bk, b);
        if cfg.family == Family::Solu && p.contains_key(&format!("{t}mlp.ln.w")) {
            // The MLP's own LayerNorm folds into W_out, which is then centred over its d_mlp rows.
            let (w3, b3) = (take(p, &format!("{t}mlp.ln.w"))?, take(p, &format!("{t}mlp.ln.b"))?);
            let (wk, bk) = (format!("{t}mlp.W_out"), format!("{t}mlp.b_out"));
            let (w, b) = fold_into(get(p, &wk)?, get(p, &bk)?, &w3, &b3, 0, centre)?;
            p.insert(wk, w);
            p.insert(bk, b);
        }
    }
    let (wf, bf) = (take(p, "ln_final.w")?, take(p, "ln_final.b")?);
    let (w, b) = fold_into(get(p, "unembed.W_U")?, get(p, "unembed.b_U")?, &wf, &bf, 0, centre)?;
    p.insert("unembed.W_U".into(), w);
    p.insert("unembed.b_U".into(), b);
    Ok(())
}

fn center_writing_weights(p: &mut Params, cfg: &ModelConfig) -> Result<()> {
    let mut keys = vec!["embed.W_E".to_string()];
    if p.contains_key("pos_embed.W_pos") {
        keys.push("pos_embed.W_pos".into());
    }
    for l in 0..cfg.n_layers {
        for k in ["attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"] {
            keys.push(format!("blocks.{l}.{k}"));
        }
    }
    for k in keys {
        let t = take(p, &k)?;
        let last = t.rank() - 1;
        p.insert(k, center(&t, last)?);
    }
    Ok(())
}

fn fold_value_biases(p: &mut Params, cfg: &ModelConfig) -> Result<()> {
    for l in 0..cfg.n_layers {
        let t = format!("blocks.{l}.attn.");
        let b_v = take(p, &format!("{t}b_V"))?; // [h, dh]
        let w_o = get(p, &format!("{t}W_O"))?; // [h, dh, d]
        let folded = b_v.unsqueeze(D::Minus1)?.broadcast_mul(w_o)?.sum((0, 1))?;
        let b_o = take(p, &format!("{t}b_O"))?;
        p.insert(format!("{t}b_O"), (b_o + folded)?);
        p.insert(format!("{t}b_V"), b_v.zeros_like()?);
    }
    Ok(())
}
