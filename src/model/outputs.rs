//! What is read off the logits: per-token cross-entropy loss, entropy, rank of the true next token, top-k.

use super::forward::with_f32;
use super::kernels;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Per-token statistics of next-token prediction; each is [batch, pos - 1] (position t predicts t + 1).
#[derive(Clone, Debug)]
pub struct TokenStats {
    pub loss: Vec<f32>,
    pub entropy: Vec<f32>,
    /// Number of vocabulary entries with a strictly larger logit than the true next token (0 = top).
    pub rank: Vec<u32>,
    pub batch: usize,
    pub pos: usize,
}

/// Loss, entropy and rank of the true next token from logits [batch, pos, vocab] and tokens [batch, pos].
pub fn token_stats(logits: &Tensor, tokens: &Tensor) -> Result<TokenStats> {
    let (b, t, v) = logits.dims3()?;
    if tokens.dims2()? != (b, t) {
        bail!("tokens {:?} do not match logits {:?}", tokens.dims(), logits.dims());
    }
    let logits = logits.to_device(&candle_core::Device::Cpu)?;
    let ids: Vec<u32> = tokens.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    with_f32(&logits, |x| {
        let rows = kernels::logit_rows(x, v);
        let n = t.saturating_sub(1);
        let mut out = TokenStats {
            loss: Vec::with_capacity(b * n),
            entropy: Vec::with_capacity(b * n),
            rank: Vec::with_capacity(b * n),
            batch: b,
            pos: n,
        };
        for bi in 0..b {
            for ti in 0..n {
                let r = bi * t + ti;
                let target = ids[bi * t + ti + 1] as usize;
                let row = &x[r * v..(r + 1) * v];
                let lt = row[target];
                out.loss.push(rows[r].lse - lt);
                out.entropy.push(rows[r].entropy);
                out.rank.push(row.iter().filter(|&&z| z > lt).count() as u32);
            }
        }
        out
    })
}

/// Per-token loss [batch, pos - 1] as a tensor (TL's `loss_per_token=True`).
pub fn loss_per_token(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let s = token_stats(logits, tokens)?;
    Ok(Tensor::from_vec(s.loss, (s.batch, s.pos), &candle_core::Device::Cpu)?)
}

/// The k largest entries of the last axis: (values, indices), each [.., k].
pub fn top_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let idx = x.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?.contiguous()?;
    let vals = x.gather(&idx, D::Minus1)?;
    Ok((vals, idx))
}
