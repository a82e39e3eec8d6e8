//! Model weights in forward layout (fused QKV, matmul-ready matrices), built from TL parameters,
//! and TL-layout views of them (`blocks.L.attn.W_Q` as [head, d_model, d_head], …) on demand.

use super::checkpoint::Params;
use super::config::{Activation, ModelConfig};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;

/// A LayerNorm's parameters; both `None` = TL's `LNPre` (centre and scale only).
#[derive(Clone, Debug)]
pub struct Ln {
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
}

#[derive(Clone, Debug)]
pub struct BlockWeights {
    pub ln1: Ln,
    pub ln2: Ln,
    /// [d_model, 3·heads·d_head]: q, k, v column blocks, each (head, d_head).
    pub w_qkv: Tensor,
    pub b_qkv: Tensor,
    /// [heads·d_head, d_model]
    pub w_o: Tensor,
    pub b_o: Tensor,
    pub w_in: Tensor,
    pub b_in: Tensor,
    pub w_out: Tensor,
    pub b_out: Tensor,
    /// SoLU's LayerNorm over the neurons.
    pub mlp_ln: Option<Ln>,
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub w_e: Tensor,
    pub w_pos: Option<Tensor>,
    pub blocks: Vec<BlockWeights>,
    pub ln_final: Ln,
    /// [d_model, d_vocab]
    pub w_u: Tensor,
    pub b_u: Tensor,
}

fn take(p: &mut Params, k: &str) -> Result<Tensor> {
    p.remove(k).with_context(|| format!("checkpoint is missing parameter {k}"))
}

fn take_ln(p: &mut Params, prefix: &str) -> Ln {
    Ln { w: p.remove(&format!("{prefix}.w")), b: p.remove(&format!("{prefix}.b")) }
}

impl Weights {
    /// Consume TL parameters (each tensor is moved, so weights are never held twice).
    pub fn from_params(mut p: Params, cfg: &ModelConfig) -> Result<Weights> {
        let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let t = format!("blocks.{l}.");
            let mut ws = Vec::new();
            let mut bs = Vec::new();
            for n in ["Q", "K", "V"] {
                // [h, d, dh] -> [d, h·dh]
                ws.push(take(&mut p, &format!("{t}attn.W_{n}"))?.permute((1, 0, 2))?.reshape((d, h * dh))?);
                bs.push(take(&mut p, &format!("{t}attn.b_{n}"))?.reshape(h * dh)?);
            }
            let mlp_ln = (cfg.act == Activation::SoluLn).then(|| take_ln(&mut p, &format!("{t}mlp.ln")));
            blocks.push(BlockWeights {
                ln1: take_ln(&mut p, &format!("{t}ln1")),
                ln2: take_ln(&mut p, &format!("{t}ln2")),
                w_qkv: Tensor::cat(&ws, 1)?.contiguous()?,
                b_qkv: Tensor::cat(&bs, 0)?.contiguous()?,
                w_o: take(&mut p, &format!("{t}attn.W_O"))?.reshape((h * dh, d))?,
                b_o: take(&mut p, &format!("{t}attn.b_O"))?,
                w_in: take(&mut p, &format!("{t}mlp.W_in"))?.contiguous()?,
                b_in: take(&mut p, &format!("{t}mlp.b_in"))?,
                w_out: take(&mut p, &format!("{t}mlp.W_out"))?.contiguous()?,
                b_out: take(&mut p, &format!("{t}mlp.b_out"))?,
                mlp_ln,
            });
        }
        let w = Weights {
            w_e: take(&mut p, "embed.W_E")?.contiguous()?,
            w_pos: p.remove("pos_embed.W_pos"),
            blocks,
            ln_final: take_ln(&mut p, "ln_final"),
            w_u: take(&mut p, "unembed.W_U")?.contiguous()?,
            b_u: take(&mut p, "unembed.b_U")?,
        };
        if cfg.rotary_dim == 0 && w.w_pos.is_none() {
            bail!("checkpoint has no positional embedding (pos_embed.W_pos)");
        }
        Ok(w)
    }

    /// A parameter by its TL name, in TL layout.
    pub fn param(&self, cfg: &ModelConfig, name: &str) -> Result<Tensor> {
        let missing = || anyhow::anyhow!("model has no parameter '{name}'");
        let ln = |ln: &Ln, which: &str| -> Result<Tensor> {
            match which {
                "w" => ln.w.clone().ok_or_else(missing),
                "b" => ln.b.clone().ok_or_else(missing),
                _ => Err(missing()),
            }
        };
        match name {
            "embed.W_E" => return Ok(self.w_e.clone()),
            "pos_embed.W_pos" => return self.w_pos.clone().ok_or_else(missing),
            "unembed.W_U" => return Ok(self.w_u.clone()),
            "unembed.b_U" => return Ok(self.b_u.clone()),
            "ln_final.w" => return ln(&self.ln_final, "w"),
            "ln_final.b" => return ln(&self.ln_final, "b"),
            _ => {}
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(missing)?;
        let (l, key) = rest.split_once('.').ok_or_else(missing)?;
        let l: usize = l.parse().map_err(|_| missing())?;
        let b = self.blocks.get(l).ok_or_else(missing)?;
        let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
        let qkv = |i: usize| -> Result<Tensor> {
            Ok(b.w_qkv.narrow(1, i * h * dh, h * dh)?.reshape((d, h, dh))?.permute((1, 0, 2))?.contiguous()?)
        };
        let qkv_b = |i: usize| -> Result<Tensor> { Ok(b.b_qkv.narrow(0, i * h * dh, h * dh)?.reshape((h, dh))?) };
        Ok(match key {
            "ln1.w" => ln(&b.ln1, "w")?,
            "ln1.b" => ln(&b.ln1, "b")?,
            "ln2.w" => ln(&b.ln2, "w")?,
            "ln2.b" => ln(&b.ln2, "b")?,
            "mlp.ln.w" => ln(b.mlp_ln.as_ref().ok_or_else(missing)?, "w")?,
            "mlp.ln.b" => ln(b.mlp_ln.as_ref().ok_or_else(missing)?, "b")?,
            "attn.W_Q" => qkv(0)?,
            "attn.W_K" => qkv(1)?,
            "attn.W_V" => qkv(2)?,
            "attn.b_Q" => qkv_b(0)?,
            "attn.b_K" => qkv_b(1)?,
            "attn.b_V" => qkv_b(2)?,
            "attn.W_O" => b.w_o.reshape((h, dh, d))?,
            "attn.b_O" => b.b_o.clone(),
            "mlp.W_in" => b.w_in.clone(),
            "mlp.b_in" => b.b_in.clone(),
            "mlp.W_out" => b.w_out.clone(),
            "mlp.b_out" => b.b_out.clone(),
            _ => return Err(missing()),
        })
    }

    /// Every TL parameter name this model has.
    pub fn param_names(&self) -> Vec<String> {
        let mut out = vec!["embed.W_E".to_string()];
        if self.w_pos.is_some() {
            out.push("pos_embed.W_pos".into());
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let mut keys = vec![];
            for (ln, n) in [(&b.ln1, "ln1"), (&b.ln2, "ln2")] {
                if ln.w.is_some() {
                    keys.push(format!("{n}.w"));
                    keys.push(format!("{n}.b"));
                }
            }
            for k in ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"] {
                keys.push(format!("attn.{k}"));
            }
            for k in ["W_in", "b_in", "W_out", "b_out"] {
                keys.push(format!("mlp.{k}"));
            }
            if b.mlp_ln.as_ref().is_some_and(|m| m.w.is_some()) {
                keys.push("mlp.ln.w".into());
                keys.push("mlp.ln.b".into());
            }
            out.extend(keys.into_iter().map(|k| format!("blocks.{l}.{k}")));
        }
        if self.ln_final.w.is_some() {
            out.push("ln_final.w".into());
            out.push("ln_final.b".into());
        }
        out.push("unembed.W_U".into());
        out.push("unembed.b_U".into());
        out
    }
}
